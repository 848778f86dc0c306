//! The test bed of the node pool tests: etcd, `lambda cloud` on the project bridge, the Swarm
//! manager, an in-process controller (restartable, killable) with its builder endpoint, and the
//! gateway; dropping it removes this run's Swarm objects, engines and namespaces.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::cloud::CloudProc;
use crate::common::{Etcd, lambda, runtime_images, start_gateway};
use lambda::api::{Conditions, NodePoolSpec, NodeSpec, Object};
use lambda::openstack::{OpenStack, ServerFilter};
use lambda::reconcilers::cluster::{ClusterConfig, ClusterTimings, instance_tag};
use lambda::reconcilers::function::FunctionsConfig;
use lambda::reconcilers::{self, ControllersConfig};
use lambda::runtime::Metrics;
use lambda::swarm::{Swarm, labels};
use tokio_util::sync::CancellationToken;

/// Everything one test runs on; cleans up Swarm objects, engines and namespaces when dropped.
pub struct Bed {
    pub etcd: Etcd,
    pub store: lambda::store::Store,
    pub cloud: CloudProc,
    pub os: OpenStack,
    pub swarm: Swarm,
    pub host: String,
    pub instance: String,
    pub ns: String,
    pub gateway: String,
    pub token: String,
    pub cfg: ControllersConfig,
    pub controller: Option<(tokio::task::JoinHandle<()>, CancellationToken)>,
    pub stop: CancellationToken,
    pub _tmp: tempfile::TempDir,
}

impl Bed {
    pub async fn start(first_host: u8) -> Bed {
        Self::start_with(first_host, &[]).await
    }

    /// [`Bed::start`] with more `lambda cloud` flags.
    pub async fn start_with(first_host: u8, cloud_flags: &[&str]) -> Bed {
        let (swarm, host, join_addr) = crate::common::swarm::shared().await;
        let images = runtime_images();
        let tmp = tempfile::tempdir().unwrap();
        let (cloud, os) =
            CloudProc::on_bridge(&tmp.path().join("cloud"), first_host, cloud_flags).await;
        let etcd = Etcd::start();
        let store = etcd.store().await;
        let instance = format!("n-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let ns = format!("nodes-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let mut functions = FunctionsConfig::new(swarm.clone(), images.clone(), &instance);
        // Functions run on this test's workers only (not the manager, not other tests' nodes).
        functions.constraints = vec![format!("node.labels.{}=={instance}", labels::INSTANCE)];
        let cluster = ClusterConfig {
            cloud: os.clone(),
            swarm: swarm.clone(),
            join_addr,
            advertise_addr: None,
            instance: instance.clone(),
            images,
            builder_url: None,
            timings: ClusterTimings {
                poll: Duration::from_millis(500),
                join_timeout: Duration::from_secs(60),
                down_grace: Duration::from_secs(5),
                drain_timeout: Duration::from_secs(30),
                error_backoff: Duration::from_secs(1),
                error_backoff_max: Duration::from_secs(10),
                sweep_every: Duration::from_secs(5),
                max_build_timeout: None,
                autoscale_every: Duration::from_millis(250),
            },
        };
        let stop = CancellationToken::new();
        // The builder endpoint, where snapshot builders in the bridge's namespaces reach it.
        let (endpoint, _) = lambda::reconcilers::snapshot::endpoint::serve(
            "10.251.0.1:0".parse().unwrap(),
            store.clone(),
            cluster.clone(),
            stop.clone(),
        )
        .await
        .expect("builder endpoint on the project bridge");
        let mut cluster = cluster;
        cluster.builder_url = Some(format!("http://{endpoint}"));
        let cfg = ControllersConfig {
            namespace: Some(ns.clone()),
            functions: Some(functions),
            cluster: Some(cluster),
            ..Default::default()
        };
        let (gateway, token) = start_gateway(&store, stop.clone(), "nodes-test").await;
        let mut bed = Bed {
            etcd,
            store,
            cloud,
            os,
            swarm,
            host,
            instance,
            ns,
            gateway,
            token,
            cfg,
            controller: None,
            stop,
            _tmp: tmp,
        };
        bed.start_controller();
        bed
    }

    pub fn start_controller(&mut self) {
        let stop = self.stop.child_token();
        let h = tokio::spawn(reconcilers::run_all(
            self.store.clone(),
            Metrics::new(),
            self.cfg.clone(),
            stop.clone(),
        ));
        self.controller = Some((h, stop));
    }

    /// Aborts the controller mid-flight, like a crash (no graceful stop).
    pub async fn kill_controller(&mut self) {
        if let Some((h, _)) = self.controller.take() {
            h.abort();
            let _ = h.await;
        }
    }

    pub fn apply(&self, yaml: &str) {
        let (ok, out, err) = lambda(
            &self.etcd,
            &["apply", "-n", &self.ns, "-f", "-"],
            Some(yaml),
        );
        assert!(ok, "lambda apply failed: {out}{err}");
    }

    pub async fn nodes(&self) -> Vec<Object<NodeSpec>> {
        self.store
            .list::<NodeSpec>(Some(&self.ns))
            .await
            .unwrap()
            .items
    }

    pub async fn servers(&self) -> Vec<lambda::openstack::Server> {
        self.os
            .compute()
            .list_servers(&ServerFilter {
                tags: vec![instance_tag(&self.instance)],
                ..Default::default()
            })
            .await
            .unwrap()
    }

    /// Swarm nodes labelled as this instance's: id → (state, availability).
    pub async fn swarm_nodes(&self) -> HashMap<String, String> {
        self.swarm
            .list_nodes()
            .await
            .unwrap()
            .into_iter()
            .filter(|n| {
                n.spec
                    .as_ref()
                    .and_then(|s| s.labels.as_ref())
                    .and_then(|l| l.get(labels::INSTANCE))
                    == Some(&self.instance)
            })
            .map(|n| {
                let st = n
                    .status
                    .and_then(|s| s.state)
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                (n.id.unwrap_or_default(), st)
            })
            .collect()
    }

    /// Waits until the pool has `n` Ready nodes, `n` servers and `n` ready Swarm workers, and
    /// nothing else; returns the nodes.
    pub async fn wait_pool(
        &self,
        pool: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<Object<NodeSpec>> {
        let mut last = String::new();
        let start = Instant::now();
        loop {
            let nodes = self.nodes().await;
            let servers = self.servers().await;
            let swarm = self.swarm_nodes().await;
            let p = self
                .store
                .get::<NodePoolSpec>(&self.ns, pool)
                .await
                .unwrap();
            let ready = nodes
                .iter()
                .filter(|x| x.status.as_ref().is_some_and(|s| s.is_true("Ready")))
                .count();
            let ps = p.status.clone().unwrap_or_default();
            let now = format!(
                "nodes {} (ready {ready}), servers {}, swarm {:?}, pool {}/{} {:?}",
                nodes.len(),
                servers.len(),
                swarm.values().collect::<Vec<_>>(),
                ps.ready_replicas,
                ps.replicas,
                ps.condition("Ready")
                    .map(|c| format!("{} {}", c.reason, c.message))
            );
            if nodes.len() == n
                && ready == n
                && servers.len() == n
                && swarm.len() == n
                && swarm.values().all(|s| s == "ready")
                && ps.ready_replicas == n as u32
                && ps.is_true("Ready")
            {
                eprintln!("pool {pool} at {n} after {:?}: {now}", start.elapsed());
                return nodes;
            }
            if now != last {
                eprintln!("[{:>5.1}s] {now}", start.elapsed().as_secs_f64());
                last = now;
            }
            assert!(
                start.elapsed() < timeout,
                "pool {pool} not at {n} after {timeout:?}: {last}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub async fn invoke(&self, http: &reqwest::Client, name: &str) -> Result<String, String> {
        let url = format!(
            "{}/v1/namespaces/{}/functions/{name}/invoke",
            self.gateway, self.ns
        );
        let r = http
            .post(&url)
            .bearer_auth(&self.token)
            .body("{\"n\": 1}")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let text = r.text().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(format!("{status}: {text}"))
        }
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.stop.cancel();
        crate::common::swarm::remove_instance_objects(&self.host, &self.instance);
        // CloudProc's own drop then stops the emulator and every engine and namespace it made.
    }
}

/// A load loop: `workers` tasks invoking one function through the gateway, back to back,
/// counting successes and keeping every failure's status and body.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(bed: &Bed, http: &reqwest::Client, function: &str, workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let url = format!(
            "{}/v1/namespaces/{}/functions/{function}/invoke",
            bed.gateway, bed.ns
        );
        let tasks = (0..workers)
            .map(|_| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                let (url, token, http) = (url.clone(), bed.token.clone(), http.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match http.post(&url).bearer_auth(&token).body("{}").send().await {
                            Ok(r) if r.status().is_success() => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => {
                                let s = r.status();
                                let text = r.text().await.unwrap_or_default();
                                failures.lock().unwrap().push(format!("{s}: {text}"));
                            }
                            Err(e) => failures.lock().unwrap().push(e.to_string()),
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            tasks,
        }
    }

    /// Stops the loop; returns (successes, failures).
    pub async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

pub const SNAPSHOT: &str = "apiVersion: lambda/v1alpha1\nkind: SnapshotImage\nmetadata:\n  name: worker\nspec:\n  baseImage: debian-12\n  flavor: m1.small\n  network: lambda-net\n  runtimes: [shell]\n";

pub fn pool_yaml(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: lambda/v1alpha1\nkind: NodePool\nmetadata:\n  name: {name}\nspec:\n  image:\n    snapshotImage: worker\n  flavor: m1.small\n  network: lambda-net\n  replicas: {replicas}\n  maxSurge: 3\n  nodeLabels:\n    tier: test\n"
    )
}

pub fn netns_count(cloud: &CloudProc) -> usize {
    cloud.namespaces().len()
}
