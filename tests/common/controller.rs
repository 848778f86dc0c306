//! A `lambda controller` process on a test's etcd and broker, with no Swarm and no cloud (the
//! scheduler and the event sources are what runs); killed with SIGKILL when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::Etcd;

/// A running `lambda controller`.
pub struct Controller(Child);

impl Controller {
    /// Starts one with identity `id`, logging to `log`, with `env` added to its environment.
    pub fn start(
        etcd: &Etcd,
        amqp: &str,
        id: &str,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Controller {
        let log = std::fs::File::create(log).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_lambda"))
            .args(["controller", "--lease-ttl", "3s", "--identity", id])
            .args(["--amqp-url", amqp])
            .env("LAMBDA_ETCD_ENDPOINTS", etcd.endpoint())
            .env("LAMBDA_CONFIG", "/nonexistent/lambda-tests/config.yaml")
            .env("LAMBDA_LOG", "info")
            .env_remove("DOCKER_HOST")
            .env_remove("OS_CLOUD")
            .env_remove("OS_AUTH_URL")
            .env_remove("LAMBDA_OPENRC")
            .env_remove("LAMBDA_CONTEXT")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start lambda controller");
        Controller(child)
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill9();
    }
}
