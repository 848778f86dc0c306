//! A `lambda controller` process on a test's etcd: with [`Controller::start`], a broker and no
//! Swarm and no cloud (the scheduler and the event sources are what runs); with
//! [`Controller::spawn`], whatever flags the test gives. Signals for chaos (SIGSTOP, SIGCONT,
//! SIGKILL), its `/metrics`; killed with SIGKILL when dropped.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{Etcd, free_port};

/// A running `lambda controller`.
pub struct Controller {
    child: Child,
    /// Where it serves `/metrics`, `/healthz` and `/readyz`.
    pub metrics_port: u16,
}

impl Controller {
    /// Starts one with identity `id` and the broker `amqp`, logging to `log`, with `env` added
    /// to its environment.
    pub fn start(
        etcd: &Etcd,
        amqp: &str,
        id: &str,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Controller {
        Self::spawn(&etcd.endpoint(), id, log, &["--amqp-url", amqp], env)
    }

    /// Starts one on the etcd at `endpoint` (e.g. through a proxy) with identity `id`, a 3 s
    /// lease, metrics on a free port and `args`, logging to `log`; no Swarm, no cloud and no
    /// broker unless `args` or `env` give them.
    pub fn spawn(
        endpoint: &str,
        id: &str,
        log: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Controller {
        let metrics_port = free_port();
        let log = std::fs::File::create(log).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_lambda"))
            .args(["controller", "--lease-ttl", "3s", "--identity", id])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(args)
            .env("LAMBDA_ETCD_ENDPOINTS", endpoint)
            .env("LAMBDA_CONFIG", "/nonexistent/lambda-tests/config.yaml")
            .env("LAMBDA_LOG", "info")
            .env_remove("DOCKER_HOST")
            .env_remove("OS_CLOUD")
            .env_remove("OS_AUTH_URL")
            .env_remove("LAMBDA_OPENRC")
            .env_remove("LAMBDA_CONTEXT")
            .env_remove("LAMBDA_AMQP_URL")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start lambda controller");
        Controller {
            child,
            metrics_port,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`, …) with kill(1).
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} {}", self.pid());
    }

    /// Kills it with SIGKILL and reaps it (a stopped process dies too).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for it to exit.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait for lambda controller")
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The value of the first line of its `/metrics` starting with `line_prefix`.
    pub fn metric(&self, line_prefix: &str) -> Option<f64> {
        metric(self.metrics_port, line_prefix)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // SIGKILL also ends a process held by SIGSTOP.
        self.kill9();
    }
}

/// `GET path` on a loopback port; the whole response (status line, headers, body).
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The value of the first `/metrics` line on `port` starting with `line_prefix`.
pub fn metric(port: u16, line_prefix: &str) -> Option<f64> {
    let body = http_get(port, "/metrics")?;
    body.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}
