//! One test's platform for the snapshot tests: a real etcd, a cloud (`lambda cloud` as a child
//! process, or the real OpenStack of `scripts/openstack/up.sh`), the real Swarm manager of
//! `scripts/swarm.sh up` (its engine holds the runtime images builders download), the builder
//! endpoint and the in-process controllers (`reconcilers::run_all`), in a namespace and
//! platform instance of the test's own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lambda::api::{Conditions, SnapshotImage, SnapshotImageSpec};
use lambda::openstack::{CloudConfig, OpenStack, Server, ServerFilter};
use lambda::reconcilers::cluster::{ClusterConfig, ClusterTimings, instance_tag};
use lambda::reconcilers::function::spec::RuntimeImages;
use lambda::reconcilers::{self, ControllersConfig, snapshot};
use lambda::runtime::Metrics;
use lambda::store::Store;
use lambda::swarm::Swarm;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::cloud::CloudProc;
use crate::common::{Etcd, lambda};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A value of `scripts/swarm.sh env`.
pub fn swarm_env(key: &str) -> String {
    let out = Command::new(root().join("scripts/swarm.sh"))
        .arg("env")
        .output()
        .expect("run scripts/swarm.sh env");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("export {key}="))
                .map(str::to_string)
        })
        .map(|v| v.trim_matches(|c| c == '"' || c == '\'').to_string())
        .unwrap_or_else(|| panic!("scripts/swarm.sh env prints no {key}"))
}

/// The runtime images of `scripts/images.sh`.
pub fn runtime_images() -> RuntimeImages {
    let home = std::env::var("LAMBDA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join(".lambda"));
    let path = home.join("images/versions.env");
    RuntimeImages::from_env_file(&path).unwrap_or_else(|e| {
        panic!("runtime images missing ({e}): run scripts/images.sh (scripts/test.sh does)")
    })
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

pub fn netns_list() -> String {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// `docker -H host args...` stdout (empty on failure).
pub fn docker(host: &str, args: &[&str]) -> String {
    Command::new("docker")
        .arg("-H")
        .arg(host)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The test's platform.
pub struct Harness {
    pub etcd: Etcd,
    pub store: Store,
    pub cloud: OpenStack,
    /// `lambda cloud` and its data dir (None on the real OpenStack).
    pub emulator: Option<CloudProc>,
    pub instance: String,
    pub ns: String,
    pub images: RuntimeImages,
    pub endpoint: SocketAddr,
    cfg: ControllersConfig,
    /// Stops the builder endpoint.
    stop: CancellationToken,
    served: Option<JoinHandle<()>>,
    /// Stops the controllers.
    controllers: Option<(CancellationToken, JoinHandle<()>)>,
    _tmp: Option<tempfile::TempDir>,
}

/// Where the cloud comes from.
pub enum Target {
    /// `lambda cloud` on lambda0 handing out addresses from this host index.
    Emulator { first_host: u8 },
    /// An openrc file (the real OpenStack).
    Openrc(PathBuf),
}

impl Harness {
    /// Starts everything; the builder endpoint listens on `listen_ip` (port chosen).
    pub async fn start(target: Target, listen_ip: &str, timings: ClusterTimings) -> Harness {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "lambda=info".into()),
            )
            .with_test_writer()
            .try_init();
        let host = swarm_env("DOCKER_HOST");
        let swarm = Swarm::connect(Some(&host)).await.unwrap_or_else(|e| {
            panic!("the Swarm manager is not running ({e}): run scripts/swarm.sh up")
        });
        let images = runtime_images();
        let (emulator, tmp, config) = match target {
            Target::Emulator { first_host } => {
                let tmp = tempfile::tempdir().expect("temp dir");
                let dir = tmp.path().join("cloud");
                let emu = CloudProc::start(&dir, "lambda0", "10.251.0.1/24", first_host);
                let config = CloudConfig::from_openrc_file(&dir.join("openrc"))
                    .expect("lambda cloud openrc");
                (Some(emu), Some(tmp), config)
            }
            Target::Openrc(path) => (
                None,
                None,
                CloudConfig::from_openrc_file(&path)
                    .unwrap_or_else(|e| panic!("openrc {}: {e}", path.display())),
            ),
        };
        let cloud = OpenStack::connect(config)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the cloud: {e}"));
        let etcd = Etcd::start();
        let store = etcd.store().await;
        let instance = unique("si");
        let ns = unique("snap");
        let mut cluster = ClusterConfig {
            cloud: cloud.clone(),
            swarm,
            join_addr: swarm_env("LAMBDA_SWARM_JOIN_ADDR"),
            advertise_addr: None,
            instance: instance.clone(),
            images: images.clone(),
            builder_url: None,
            timings,
        };
        let stop = CancellationToken::new();
        let listen: SocketAddr = format!("{listen_ip}:0").parse().expect("listen address");
        let (endpoint, served) =
            snapshot::endpoint::serve(listen, store.clone(), cluster.clone(), stop.clone())
                .await
                .unwrap_or_else(|e| panic!("builder endpoint on {listen}: {e}"));
        cluster.builder_url = Some(format!("http://{endpoint}"));
        let cfg = ControllersConfig {
            namespace: Some(ns.clone()),
            resync: Duration::from_secs(5),
            cluster: Some(cluster),
            ..Default::default()
        };
        let mut h = Harness {
            etcd,
            store,
            cloud,
            emulator,
            instance,
            ns,
            images,
            endpoint,
            cfg,
            stop,
            served: Some(served),
            controllers: None,
            _tmp: tmp,
        };
        h.start_controllers();
        h
    }

    /// Starts the in-process controllers (`reconcilers::run_all`).
    pub fn start_controllers(&mut self) {
        let stop = CancellationToken::new();
        let task = tokio::spawn(reconcilers::run_all(
            self.store.clone(),
            Metrics::new(),
            self.cfg.clone(),
            stop.clone(),
        ));
        self.controllers = Some((stop, task));
    }

    /// Stops the controllers (the builder endpoint keeps serving).
    pub async fn stop_controllers(&mut self) {
        if let Some((stop, task)) = self.controllers.take() {
            stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }

    /// The emulator's data dir.
    pub fn dir(&self) -> &Path {
        &self.emulator.as_ref().expect("lambda cloud").dir
    }

    /// The Docker socket of an emulated server.
    pub fn engine(&self, server_id: &str) -> String {
        format!(
            "unix://{}",
            self.dir()
                .join("servers")
                .join(&server_id[..8])
                .join("docker.sock")
                .display()
        )
    }

    /// `lambda apply -f -` of a SnapshotImage in the test namespace.
    pub fn apply(&self, name: &str, spec: &str) {
        let indented: String = spec.lines().map(|l| format!("  {l}\n")).collect();
        let yaml = format!(
            "apiVersion: lambda/v1alpha1\nkind: SnapshotImage\nmetadata:\n  name: {name}\n  namespace: {}\nspec:\n{indented}",
            self.ns
        );
        let (ok, out, err) = lambda(&self.etcd, &["apply", "-f", "-"], Some(&yaml));
        assert!(ok, "lambda apply failed: {out}{err}\n{yaml}");
    }

    /// `lambda CLI args` in the test namespace; panics on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-n", &self.ns]);
        let (ok, out, err) = lambda(&self.etcd, &all, None);
        assert!(ok, "lambda {all:?} failed: {out}{err}");
        out
    }

    pub async fn get(&self, name: &str) -> Option<SnapshotImage> {
        self.store
            .get::<SnapshotImageSpec>(&self.ns, name)
            .await
            .ok()
    }

    /// This instance's servers.
    pub async fn servers(&self) -> Vec<Server> {
        self.cloud
            .compute()
            .list_servers(&ServerFilter {
                tags: vec![instance_tag(&self.instance)],
                ..Default::default()
            })
            .await
            .expect("list servers")
    }

    /// What a failure message should show: the object, the servers, builder consoles.
    pub async fn state(&self, name: &str) -> String {
        let mut out = format!(
            "object: {:#?}\nservers: {:#?}\n",
            self.get(name).await.map(|o| o.status),
            self.servers()
                .await
                .iter()
                .map(|s| (s.id.clone(), s.name.clone(), s.status, s.task_state.clone()))
                .collect::<Vec<_>>()
        );
        if let Some(emu) = &self.emulator
            && let Ok(dirs) = std::fs::read_dir(emu.dir.join("servers"))
        {
            for d in dirs.flatten() {
                let console =
                    std::fs::read_to_string(d.path().join("console.log")).unwrap_or_default();
                out.push_str(&format!(
                    "--- console of {} ---\n{console}\n",
                    d.file_name().to_string_lossy()
                ));
            }
        }
        let (_, events, _) = lambda(&self.etcd, &["describe", "si", name, "-n", &self.ns], None);
        out.push_str(&format!("--- lambda describe ---\n{events}"));
        out
    }

    /// Waits until `check` holds for the stored object, printing the state on timeout.
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&SnapshotImage) -> bool,
    ) -> SnapshotImage {
        let start = Instant::now();
        loop {
            if let Some(o) = self.get(name).await
                && check(&o)
            {
                return o;
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.state(name).await
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until the current generation has a builder; returns the object and the builder id.
    pub async fn wait_builder(&self, name: &str) -> (SnapshotImage, String) {
        let o = self
            .wait_for(name, "a builder", Duration::from_secs(60), |o| {
                o.status.as_ref().is_some_and(|s| {
                    s.observed_generation == Some(o.generation()) && s.builder_server_id.is_some()
                })
            })
            .await;
        let id = o
            .status
            .as_ref()
            .and_then(|s| s.builder_server_id.clone())
            .unwrap_or_default();
        (o, id)
    }

    /// Waits for `Ready=True` of the current generation.
    pub async fn wait_ready(&self, name: &str, timeout: Duration) -> SnapshotImage {
        self.wait_for(name, "Ready", timeout, |o| {
            let s = o.status.clone().unwrap_or_default();
            s.is_true("Ready") && s.observed_generation == Some(o.generation())
        })
        .await
    }

    /// Waits for `Ready=False` with `reason` on the current generation.
    pub async fn wait_reason(&self, name: &str, reason: &str, timeout: Duration) -> SnapshotImage {
        self.wait_for(name, &format!("Ready reason {reason}"), timeout, |o| {
            let s = o.status.clone().unwrap_or_default();
            s.observed_generation == Some(o.generation())
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.reason == reason)
        })
        .await
    }

    /// Waits until Nova no longer knows the server.
    pub async fn wait_server_gone(&self, id: &str, timeout: Duration) {
        if let Err(e) = self.cloud.compute().wait_for_server_gone(id, timeout).await {
            panic!("server {id} not gone: {e}\n{:#?}", self.servers().await);
        }
    }

    /// Waits until this instance has no server left, and (on lambda cloud) their engines and
    /// namespaces are gone.
    pub async fn assert_nothing_left(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            let servers = self.servers().await;
            let dirs: Vec<String> = self
                .emulator
                .as_ref()
                .and_then(|e| std::fs::read_dir(e.dir.join("servers")).ok())
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            let ns = netns_list();
            let leaked_ns: Vec<&String> = dirs
                .iter()
                .filter(|d| ns.contains(&format!("lc-{d}")))
                .collect();
            if servers.is_empty() && dirs.is_empty() && leaked_ns.is_empty() {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "left behind after {timeout:?}: servers {:#?}, server dirs {dirs:?}, namespaces {leaked_ns:?}",
                servers
                    .iter()
                    .map(|s| (s.id.clone(), s.name.clone(), s.status))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops the controllers and the endpoint.
    pub async fn shutdown(&mut self) {
        self.stop_controllers().await;
        self.stop.cancel();
        if let Some(t) = self.served.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some((stop, _)) = &self.controllers {
            stop.cancel();
        }
        self.stop.cancel();
    }
}

/// Test timings: quick polls and sweeps.
pub fn fast_timings() -> ClusterTimings {
    ClusterTimings {
        poll: Duration::from_millis(300),
        sweep_every: Duration::from_secs(2),
        ..ClusterTimings::default()
    }
}
