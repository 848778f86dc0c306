//! Test harness: a real etcd (Debian's `etcd-server`) per test, on free loopback ports with a
//! temporary data dir, stopped when dropped. Fails loudly when etcd cannot start.
#![allow(dead_code)]

pub mod cloud;
pub mod controller;
pub mod platform;
pub mod rabbitmq;
pub mod replica;
pub mod swarm;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lambda::store::{Store, StoreConfig};

/// A running etcd owned by one test.
pub struct Etcd {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    peer_port: u16,
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

impl Etcd {
    /// Starts etcd and waits until it answers; panics with its log when it does not.
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut e = Etcd {
            child: None,
            dir,
            port: free_port(),
            peer_port: free_port(),
        };
        e.spawn();
        e
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("etcd log");
        let child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(["--experimental-watch-progress-notify-interval=1s"])
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start etcd (install Debian's etcd-server; the test command does): {e}"
                )
            });
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if self.etcdctl(&["endpoint", "health"]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        panic!("etcd did not become healthy in 20 s; log:\n{log}");
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Store settings for this etcd.
    pub fn config(&self) -> StoreConfig {
        StoreConfig::from_endpoints(&self.endpoint())
    }

    /// A connected store.
    pub async fn store(&self) -> Store {
        Store::connect(&self.config())
            .await
            .expect("connect to test etcd")
    }

    /// Runs etcdctl against this etcd; `Ok(stdout)` on success.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .args(args)
            .output()
            .map_err(|e| format!("cannot run etcdctl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `etcdctl put KEY VALUE`, panicking on failure.
    pub fn put(&self, key: &str, value: &str) {
        self.etcdctl(&["put", key, value]).expect("etcdctl put");
    }

    /// SIGKILLs etcd (data dir kept).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd again on the same data dir and ports.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the `lambda` binary with this etcd; returns (status ok, stdout, stderr).
pub fn lambda(etcd: &Etcd, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    lambda_in(etcd, Path::new(env!("CARGO_MANIFEST_DIR")), args, stdin)
}

/// Like [`lambda`], in a working directory.
pub fn lambda_in(
    etcd: &Etcd,
    cwd: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String, String) {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lambda"));
    cmd.current_dir(cwd)
        .env("LAMBDA_ETCD_ENDPOINTS", etcd.endpoint())
        // Hermetic: never the user's contexts (a machine that ran `lambda up` has one).
        .env("LAMBDA_CONFIG", "/nonexistent/lambda-tests/config.yaml")
        .env_remove("LAMBDA_CONTEXT")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run lambda");
    if let Some(mut si) = child.stdin.take() {
        let _ = si.write_all(stdin.unwrap_or("").as_bytes());
    }
    let out = child.wait_with_output().expect("lambda output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A minimal valid function object.
pub fn function(name: &str) -> lambda::api::Function {
    let spec: lambda::api::FunctionSpec =
        serde_saphyr::from_str("runtime: shell\ncode:\n  inline: cat\n").expect("spec");
    lambda::api::Function::new("default", name, spec)
}

/// The project checkout.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One `export KEY=value` of `scripts/swarm.sh env` (the Swarm the test command started).
pub fn swarm_env(key: &str) -> String {
    let out = Command::new(root().join("scripts/swarm.sh"))
        .arg("env")
        .output()
        .expect("scripts/swarm.sh env");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("export {key}="))
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("scripts/swarm.sh env prints no {key}: run scripts/swarm.sh up"))
}

/// The project's state directory: `$LAMBDA_HOME`, else the checkout's `.lambda`.
pub fn home() -> PathBuf {
    std::env::var("LAMBDA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join(".lambda"))
}

/// Keeps what a test measured as `$LAMBDA_HOME/reports/NAME` (a CI artefact: `cargo test`
/// shows a passing test's output to no one). A report that cannot be written is only said.
#[allow(dead_code)] // used by some test binaries only
pub fn report(name: &str, text: &str) {
    let dir = home().join("reports");
    if let Err(e) =
        std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join(name), text))
    {
        eprintln!("cannot keep the report {name} in {}: {e}", dir.display());
    }
}

/// The runtime images `scripts/images.sh` built (fails loudly when it has not run).
pub fn runtime_images() -> lambda::reconcilers::function::spec::RuntimeImages {
    let home = home();
    let versions = home.join("images/versions.env");
    lambda::reconcilers::function::spec::RuntimeImages::from_env_file(&versions).unwrap_or_else(
        |e| panic!("runtime images missing ({e}): run scripts/images.sh (scripts/test.sh does)"),
    )
}

/// Polls `f` every 50 ms until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the gateway on a free loopback port until `stop`, with a new API key named `key_name`;
/// returns its base URL and the key's token.
pub async fn start_gateway(
    store: &Store,
    stop: tokio_util::sync::CancellationToken,
    key_name: &str,
) -> (String, String) {
    let port = free_port();
    let cfg = lambda::gateway::GatewayConfig {
        listen: format!("127.0.0.1:{port}")
            .parse()
            .expect("loopback address"),
        insecure_no_auth: false,
        amqp_url: None,
        limits: Default::default(),
    };
    tokio::spawn(lambda::gateway::run(store.clone(), cfg, async move {
        stop.cancelled().await
    }));
    let (_, token) =
        lambda::gateway::apikeys::create(store, key_name, &lambda::gateway::authz::Access::admin())
            .await
            .expect("create an API key");
    (format!("http://127.0.0.1:{port}"), token)
}

/// Runs a gateway without authentication that publishes asynchronous invocations and events to
/// the broker at `amqp_url`, on a free loopback port until `stop`; returns its base URL.
pub fn start_broker_gateway(
    store: &Store,
    amqp_url: String,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> String {
    let port = free_port();
    let cfg = lambda::gateway::GatewayConfig {
        listen: format!("127.0.0.1:{port}")
            .parse()
            .expect("loopback address"),
        insecure_no_auth: true,
        amqp_url: Some(amqp_url),
        limits: Default::default(),
    };
    tokio::spawn(lambda::gateway::run(store.clone(), cfg, stop));
    format!("http://127.0.0.1:{port}")
}
