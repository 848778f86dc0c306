//! The chaos test bed: etcd, `lambda cloud` on the project bridge, two `lambda controller`
//! processes (restartable) behind one builder endpoint front; how the plan's operations are
//! carried out; waiting for convergence.

use std::time::{Duration, Instant};

use super::common::cloud::CloudProc;
use super::common::controller::Controller;
use super::common::{Etcd, free_port, lambda, runtime_images};
use lambda::api::{FunctionSpec, NodePoolSpec, NodeSpec, Resource};
use lambda::openstack::OpenStack;
use lambda::store::Store;
use lambda::swarm::Swarm;
use tokio_util::sync::CancellationToken;

use super::audit::{Scope, audit};
use super::findings::Audit;
use super::model::{Op, World};

/// First address of this test's servers on the project bridge.
pub const FIRST_HOST: u8 = 210;
/// The metric of writes the fence refused.
const FENCED: &str = "lambda_leader_fenced_writes_total";
/// How long the platform may take to converge after the chaos.
pub const CONVERGE: Duration = Duration::from_secs(300);

/// The test bed: etcd, `lambda cloud`, two controllers and a builder endpoint in front of
/// them; dropping it stops the controllers and removes what this run left in the Swarm, then
/// (fields) the cloud's engines and namespaces and etcd.
pub struct Bed {
    pub controllers: [Option<Controller>; 2],
    started: [u32; 2],
    /// Until when a controller is held by SIGSTOP.
    stopped_until: [Option<Instant>; 2],
    /// Writes refused by the fence, counted by controllers since killed.
    fenced_before: f64,
    builder_ports: [u16; 2],
    builder_url: String,
    join_addr: String,
    host: String,
    instance: String,
    ns: String,
    store: Store,
    os: OpenStack,
    swarm: Swarm,
    logs: tempfile::TempDir,
    stop: CancellationToken,
    cloud: CloudProc,
    pub etcd: Etcd,
    _tmp: tempfile::TempDir,
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.stop.cancel();
        for c in self.controllers.iter_mut().flatten() {
            c.kill9();
        }
        super::common::swarm::remove_instance_objects(&self.host, &self.instance);
        super::common::swarm::remove_nodes_named(&self.host, &format!("-{}-", self.ns));
        // Then the fields: the cloud's drop ends every engine and namespace it made.
    }
}

impl Bed {
    pub async fn start() -> Bed {
        let (swarm, host, join_addr) = super::common::swarm::shared().await;
        let tmp = tempfile::tempdir().unwrap();
        let (cloud, os) = CloudProc::on_bridge(
            &tmp.path().join("cloud"),
            FIRST_HOST,
            &["--boot-delay", "1s", "--max-instances", "20"],
        )
        .await;
        let etcd = Etcd::start();
        let store = etcd.store().await;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let stop = CancellationToken::new();
        let builder_ports = [free_port(), free_port()];
        let builder_url = builder_front(builder_ports, stop.clone()).await;
        let mut bed = Bed {
            controllers: [None, None],
            started: [0, 0],
            stopped_until: [None, None],
            fenced_before: 0.0,
            builder_ports,
            builder_url,
            join_addr,
            host,
            instance: format!("c-{}", &id[..8]),
            ns: format!("chaos-{}", &id[8..14]),
            store,
            os,
            swarm,
            logs: tempfile::tempdir().unwrap(),
            stop,
            cloud,
            etcd,
            _tmp: tmp,
        };
        bed.start_controller(0);
        bed.start_controller(1);
        bed
    }

    /// Starts controller `slot` (again), as `a1`, `a2`, … / `b1`, …
    pub fn start_controller(&mut self, slot: usize) {
        self.started[slot] += 1;
        let id = format!("{}{}", ["a", "b"][slot], self.started[slot]);
        let images = runtime_images();
        let shell = format!("shell={}", images.0[&lambda::api::function::Runtime::Shell]);
        let builder = format!("10.251.0.1:{}", self.builder_ports[slot]);
        let constraint = format!(
            "node.labels.{}=={}",
            lambda::swarm::labels::INSTANCE,
            self.instance
        );
        let openrc = self.cloud.dir.join("openrc");
        let args = [
            "--openrc",
            openrc.to_str().unwrap(),
            "--docker-host",
            &self.host,
            "--swarm-join-addr",
            &self.join_addr,
            "--builder-listen",
            &builder,
            "--builder-url",
            &self.builder_url,
            "--instance",
            &self.instance,
            "--watch-namespace",
            &self.ns,
            "--runtime-image",
            &shell,
            "--function-constraint",
            &constraint,
            "--node-down-grace",
            "5s",
            "--node-drain-timeout",
            "10s",
            "--node-join-timeout",
            "60s",
            "--function-stuck-after",
            "10s",
            "--sweep-every",
            "5s",
            "--resync",
            "30s",
        ];
        let log = self.logs.path().join(format!("{id}.log"));
        self.controllers[slot] = Some(Controller::spawn(
            &self.etcd.endpoint(),
            &id,
            &log,
            &args,
            &[("LAMBDA_LOG", "info")],
        ));
    }

    /// Kills controller `slot` with SIGKILL and starts it again (its fence count kept).
    pub fn kill_and_restart(&mut self, slot: usize) {
        let held = self.stopped_until[slot].is_some_and(|t| t > Instant::now());
        if let Some(c) = self.controllers[slot].as_mut() {
            if !held {
                self.fenced_before += c.metric(FENCED).unwrap_or(0.0);
            }
            c.kill9();
        }
        self.stopped_until[slot] = None;
        self.start_controller(slot);
    }

    /// Holds controller `slot` with SIGSTOP for `ms`, then lets it go on (SIGCONT), while the
    /// caller carries on.
    pub fn stop_for(&mut self, slot: usize, ms: u64) {
        let Some(c) = self.controllers[slot].as_ref() else {
            return;
        };
        c.signal("STOP");
        let pid = c.pid().to_string();
        self.stopped_until[slot] = Some(Instant::now() + Duration::from_millis(ms));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            // Killed meanwhile: nothing to wake (a pid is not reused within seconds).
            let _ = tokio::process::Command::new("kill")
                .args(["-CONT", &pid])
                .status()
                .await;
        });
    }

    /// Writes refused by the fence so far, over every controller of the run (once none is
    /// held by SIGSTOP any more).
    pub async fn fenced_writes(&self) -> f64 {
        if let Some(until) = self.stopped_until.iter().flatten().max() {
            tokio::time::sleep_until((*until + Duration::from_millis(500)).into()).await;
        }
        let live: f64 = self
            .controllers
            .iter()
            .flatten()
            .filter_map(|c| c.metric(FENCED))
            .sum();
        self.fenced_before + live
    }

    /// The slot of the leading controller, by the leader key's value.
    pub async fn leader(&self) -> Option<usize> {
        let mut kv = self.store.client().kv_client();
        let r = kv.get("/lambda/leader/controller", None).await.ok()?;
        let who = String::from_utf8_lossy(r.kvs().first()?.value()).into_owned();
        (0..2).find(|&i| who == format!("{}{}", ["a", "b"][i], self.started[i]))
    }

    fn scope(&self) -> Scope<'_> {
        Scope {
            store: &self.store,
            os: &self.os,
            swarm: &self.swarm,
            cloud: &self.cloud,
            instance: &self.instance,
            ns: &self.ns,
        }
    }

    /// Runs `lambda` with `args` (and `stdin`) until it succeeds (etcd may be restarting).
    async fn cli(&self, args: &[&str], stdin: Option<&str>) {
        let t = Instant::now();
        loop {
            let (ok, out, err) = lambda(&self.etcd, args, stdin);
            if ok {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "lambda {args:?} kept failing: {out}{err}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub async fn apply(&self, yaml: &str) {
        self.cli(&["apply", "-n", &self.ns, "-f", "-"], Some(yaml))
            .await;
    }

    /// `etcdctl del KEY`, retried while etcd restarts.
    async fn etcdctl_del(&self, key: &str) {
        let t = Instant::now();
        while let Err(e) = self.etcd.etcdctl(&["del", key]) {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "etcdctl del {key}: {e}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Waits (bounded) until no object `name` of `K` is being deleted: an apply racing a
    /// deletion would land on the object about to go (as `lambda delete --wait` avoids).
    async fn settle_deletion<K: Resource>(&self, name: &str) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(90) {
            match self.store.get::<K>(&self.ns, name).await {
                Ok(o) if o.is_deleting() => {}
                Ok(_) => return,
                Err(e) if e.is_not_found() => return,
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    fn key(&self, plural: &str, name: &str) -> String {
        format!("/lambda/registry/{plural}/{}/{name}", self.ns)
    }

    /// Carries out one operation.
    pub async fn run(&self, op: &Op) {
        match op {
            Op::CreateFunction { name, version } | Op::UpdateFunction { name, version } => {
                self.settle_deletion::<FunctionSpec>(name).await;
                self.apply(&function_yaml(name, *version)).await;
            }
            Op::DeleteFunction { name } => {
                self.cli(&["delete", "fn", name, "-n", &self.ns], None)
                    .await
            }
            Op::EtcdDelFunction { name } => {
                self.etcdctl_del(&self.key(FunctionSpec::PLURAL, name))
                    .await
            }
            Op::ScalePool { pool, replicas } => {
                self.settle_deletion::<NodePoolSpec>(pool).await;
                self.apply(&pool_yaml(pool, *replicas)).await;
            }
            Op::DeletePool { pool } => {
                self.cli(&["delete", "nodepool", pool, "-n", &self.ns], None)
                    .await
            }
            Op::EtcdDelPool { pool } => {
                self.etcdctl_del(&self.key(NodePoolSpec::PLURAL, pool))
                    .await
            }
            Op::EtcdDelNode { pick } => {
                let nodes = loop {
                    match self.store.list::<NodeSpec>(Some(&self.ns)).await {
                        Ok(l) => break l.items,
                        Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
                    }
                };
                if !nodes.is_empty() {
                    let n = &nodes[*pick as usize % nodes.len()];
                    self.etcdctl_del(&self.key(NodeSpec::PLURAL, &n.metadata.name))
                        .await;
                }
            }
            Op::ChangeSnapshot { version } => self.apply(&snapshot_yaml(*version)).await,
        }
    }

    /// Audits until converged (twice in a row) or `timeout`; the last audit.
    pub async fn converge(&self, world: &World, timeout: Duration) -> (Audit, Duration) {
        let t = Instant::now();
        let mut last = String::new();
        let mut streak = 0;
        loop {
            match audit(&self.scope(), world).await {
                Ok(a) if a.converged() => {
                    streak += 1;
                    if streak == 2 {
                        return (a, t.elapsed());
                    }
                }
                Ok(a) => {
                    streak = 0;
                    let now = a.summary();
                    if now != last {
                        eprintln!("[{:>5.1}s] {now}", t.elapsed().as_secs_f64());
                        last = now;
                    }
                    if t.elapsed() > timeout {
                        return (a, t.elapsed());
                    }
                }
                Err(e) => {
                    streak = 0;
                    eprintln!("[{:>5.1}s] audit: {e}", t.elapsed().as_secs_f64());
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Copies the controllers' and the cloud's logs where they outlive the test; the path.
    pub fn keep_logs(&self, seed: u64) -> std::path::PathBuf {
        let to = std::env::temp_dir().join(format!("lambda-chaos-{seed}-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&to);
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(self.logs.path())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.push(self.cloud.dir.with_extension("log"));
        for f in files {
            if let Some(name) = f.file_name() {
                let _ = std::fs::copy(&f, to.join(name));
            }
        }
        // And what the Swarm says about this run's services and nodes.
        let docker = |args: &[&str]| {
            std::process::Command::new("docker")
                .env("DOCKER_HOST", &self.host)
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let label = format!(
            "label={}={}",
            lambda::swarm::labels::INSTANCE,
            self.instance
        );
        let mut swarm = docker(&["node", "ls"]);
        for svc in docker(&["service", "ls", "-q", "--filter", &label]).split_whitespace() {
            swarm += &docker(&["service", "ps", "--no-trunc", svc]);
            swarm += &docker(&["service", "inspect", svc]);
        }
        let _ = std::fs::write(to.join("swarm.txt"), swarm);
        to
    }

    /// The last lines of every controller's log (for a failure's message).
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        let mut files: Vec<_> = std::fs::read_dir(self.logs.path())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out += &format!("--- {} (last 40 lines)\n", f.display());
            for l in &lines[lines.len().saturating_sub(40)..] {
                out += l;
                out.push('\n');
            }
        }
        out
    }
}

/// A TCP front for the builder endpoints on 10.251.0.1 (what an operator's load balancer is):
/// each connection goes to whichever controller accepts, so a build outlives the controller
/// that started it. Returns its URL.
async fn builder_front(ports: [u16; 2], stop: CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("10.251.0.1:0")
        .await
        .expect("listen on the project bridge");
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.cancelled() => return,
            };
            let Ok((mut client, _)) = accepted else {
                continue;
            };
            tokio::spawn(async move {
                for p in ports {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(("10.251.0.1", p)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                        return;
                    }
                }
            });
        }
    });
    format!("http://10.251.0.1:{port}")
}

pub fn function_yaml(name: &str, version: u32) -> String {
    format!(
        "apiVersion: lambda/v1alpha1\nkind: Function\nmetadata:\n  name: {name}\nspec:\n  runtime: shell\n  code:\n    inline: \"cat\\n# v{version}\\n\"\n  minReplicas: 1\n  maxReplicas: 1\n"
    )
}

pub fn pool_yaml(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: lambda/v1alpha1\nkind: NodePool\nmetadata:\n  name: {name}\nspec:\n  image:\n    snapshotImage: worker\n  flavor: m1.small\n  network: lambda-net\n  replicas: {replicas}\n  maxSurge: 2\n"
    )
}

pub fn snapshot_yaml(version: u32) -> String {
    format!(
        "apiVersion: lambda/v1alpha1\nkind: SnapshotImage\nmetadata:\n  name: worker\nspec:\n  baseImage: debian-12\n  flavor: m1.small\n  network: lambda-net\n  runtimes: [shell]\n  setupScript: \"echo v{version} > /dev/null\"\n"
    )
}
