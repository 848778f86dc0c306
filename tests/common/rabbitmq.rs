//! A private RabbitMQ (Debian's `rabbitmq-server`) per test: its own epmd, AMQP and
//! distribution ports on loopback, data and log dirs in a temp dir, a generated user (no
//! `guest`), all in one process group that is killed when dropped.

use super::free_port;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running broker owned by one test.
pub struct RabbitMq {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    dist: u16,
    pub user: String,
    pub password: String,
    node: String,
    epmd_port: u16,
}

impl RabbitMq {
    /// Starts the broker and waits until it accepts AMQP logins; panics with its log if not.
    pub fn start() -> RabbitMq {
        let r = Self::spawn();
        r.wait_ready();
        r
    }

    /// Starts the broker without waiting for it (for tests of clients that must wait).
    pub fn spawn() -> RabbitMq {
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, dist, epmd_port) = (free_port(), free_port(), free_port());
        let user = format!("lambda-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let password = uuid::Uuid::new_v4().simple().to_string();
        let d = dir.path();
        let conf = format!(
            "listeners.tcp.default = 127.0.0.1:{port}\ndefault_user = {user}\ndefault_pass = {password}\n"
        );
        std::fs::write(d.join("rabbitmq.conf"), conf).expect("config");
        std::fs::write(d.join("env.conf"), "").expect("env");
        std::fs::write(d.join("plugins"), "[].\n").expect("plugins");
        let node = format!("lambdatest{port}@localhost");
        let mut r = RabbitMq {
            child: None,
            dir,
            port,
            dist,
            user,
            password,
            node,
            epmd_port,
        };
        r.launch();
        r
    }

    /// Starts the broker's process group on this broker's dir and ports.
    fn launch(&mut self) {
        let (d, node, port, dist, epmd_port) = (
            self.dir.path(),
            &self.node,
            self.port,
            self.dist,
            self.epmd_port,
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("server.log"))
            .expect("log");
        // sh starts the private epmd and then becomes rabbitmq-server, all in a new process
        // group (process_group(0)), so one kill of the group stops beam, epmd and helpers.
        let script = format!(
            "epmd -port {epmd_port} -address 127.0.0.1 & exec /usr/lib/rabbitmq/bin/rabbitmq-server"
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .envs(Self::env(d, node, port, dist, epmd_port))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start rabbitmq-server (install Debian's rabbitmq-server): {e}")
            });
        self.child = Some(child);
    }

    /// Kills the broker with SIGKILL (no clean shutdown), keeping its data for [`Self::restart`].
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.wait();
        }
    }

    /// Starts the broker again on the same data, ports and user, and waits until it is up.
    pub fn restart(&mut self) {
        self.launch();
        self.wait_ready();
    }

    fn env(
        d: &std::path::Path,
        node: &str,
        port: u16,
        dist: u16,
        epmd: u16,
    ) -> Vec<(String, String)> {
        let p = |name: &str| d.join(name).display().to_string();
        vec![
            ("HOME".into(), p("")),
            ("RABBITMQ_CONF_ENV_FILE".into(), p("env.conf")),
            ("RABBITMQ_CONFIG_FILE".into(), p("rabbitmq.conf")),
            ("RABBITMQ_ADVANCED_CONFIG_FILE".into(), p("advanced.config")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE".into(), p("plugins")),
            ("RABBITMQ_MNESIA_BASE".into(), p("mnesia")),
            ("RABBITMQ_LOG_BASE".into(), p("log")),
            ("RABBITMQ_PID_FILE".into(), p("pid")),
            ("RABBITMQ_NODENAME".into(), node.into()),
            ("RABBITMQ_NODE_PORT".into(), port.to_string()),
            ("RABBITMQ_DIST_PORT".into(), dist.to_string()),
            ("ERL_EPMD_PORT".into(), epmd.to_string()),
            (
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS".into(),
                "-kernel inet_dist_use_interface {127,0,0,1}".into(),
            ),
        ]
    }

    /// Waits until the broker is up; panics with its log after 90 s.
    pub fn wait_ready(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(90) {
            if self.ctl(&["await_startup"]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        panic!("rabbitmq did not start in 90 s; log:\n{log}");
    }

    /// `amqp://user:password@127.0.0.1:PORT/%2f`
    pub fn url(&self) -> String {
        format!(
            "amqp://{}:{}@127.0.0.1:{}/%2f",
            self.user, self.password, self.port
        )
    }

    /// Runs rabbitmqctl against this node; `Ok(stdout)` on success.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl")
            .envs(
                Self::env(self.dir.path(), &self.node, self.port, 0, self.epmd_port)
                    .into_iter()
                    .filter(|(k, _)| k != "RABBITMQ_DIST_PORT"),
            )
            .args(["-n", &self.node, "-q"])
            .args(args)
            .output()
            .map_err(|e| format!("cannot run rabbitmqctl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The group id is the shell's pid (process_group(0)): kill exactly that group.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.wait();
        }
    }
}

/// Publishes `body` to `lambda.events` with python3-pika (a client that is not the project's).
pub fn pika_publish(url: &str, routing_key: &str, body: &str) {
    let script = r#"
import sys, pika
params = pika.URLParameters(sys.argv[1])
conn = pika.BlockingConnection(params)
ch = conn.channel()
ch.confirm_delivery()
ch.basic_publish(exchange='lambda.events', routing_key=sys.argv[2], body=sys.argv[3].encode(),
                 properties=pika.BasicProperties(delivery_mode=2), mandatory=True)
conn.close()
"#;
    // Debian's interpreter, where python3-pika lives (not a pyenv one earlier on PATH).
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script, url, routing_key, body])
        .output()
        .expect("run python3 (install Debian's python3-pika: scripts/test.sh does)");
    assert!(
        out.status.success(),
        "python3-pika publish failed (is python3-pika installed?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the queue listener on `store` and the broker at `url` until `stop` (no metrics
/// endpoint, default retention and callback policy).
pub fn spawn_listener(
    store: &lambda::store::Store,
    url: String,
    stop: tokio_util::sync::CancellationToken,
) {
    let cfg = lambda::events::listener::ListenerConfig {
        amqp_url: url,
        prefetch: 64,
        connect_patience: Duration::from_secs(20),
        metrics_listen: None,
        retention: Default::default(),
        callbacks: Default::default(),
    };
    tokio::spawn(lambda::events::listener::run(
        store.clone(),
        cfg,
        async move { stop.cancelled().await },
    ));
}
