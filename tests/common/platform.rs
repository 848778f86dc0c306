//! A platform for end-to-end tests on the real Swarm: etcd, the controllers (functions and
//! their autoscaler) limited to one namespace, and an in-process gateway with a bearer token.
//! Needs the Swarm of `scripts/swarm.sh up` and the images of `scripts/images.sh` (the test
//! command builds both; the tests fail, never skip, when they are missing).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use lambda::api::{Conditions, FunctionSpec};
use lambda::reconcilers::function::FunctionsConfig;
use lambda::reconcilers::function::spec::{RuntimeImages, service_name};
use lambda::reconcilers::{self, ControllersConfig};
use lambda::runtime::Metrics;
use lambda::swarm::{Swarm, labels};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Etcd, lambda, root, start_gateway, swarm_env};

/// Removes every Swarm object of this test's instance, also when the test fails.
pub struct Cleanup {
    host: String,
    instance: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let f = format!("label={}={}", labels::INSTANCE, self.instance);
        for kind in ["service", "config"] {
            let out = Command::new("docker")
                .env("DOCKER_HOST", &self.host)
                .args([kind, "ls", "-q", "--filter", &f])
                .output();
            if let Ok(o) = out {
                for id in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("docker")
                        .env("DOCKER_HOST", &self.host)
                        .args([kind, "rm", id])
                        .output();
                }
            }
        }
    }
}

pub struct Platform {
    pub etcd: Etcd,
    pub store: lambda::store::Store,
    pub swarm: Swarm,
    pub ns: String,
    pub gateway: String,
    pub token: String,
    pub http: reqwest::Client,
    pub stop: CancellationToken,
    _cleanup: Cleanup,
}

impl Platform {
    pub async fn start() -> Platform {
        let host = swarm_env("DOCKER_HOST");
        let versions = PathBuf::from(
            std::env::var("LAMBDA_HOME")
                .unwrap_or_else(|_| root().join(".lambda").display().to_string()),
        )
        .join("images/versions.env");
        let images = RuntimeImages::from_env_file(&versions).unwrap_or_else(|e| {
            panic!("runtime images missing ({e}): run scripts/images.sh (scripts/test.sh does)")
        });
        let swarm = Swarm::connect(Some(&host))
            .await
            .expect("the Swarm manager is not running: run scripts/swarm.sh up");
        let etcd = Etcd::start();
        let store = etcd.store().await;
        let instance = format!("p-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let ns = format!("plat-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        let stop = CancellationToken::new();
        let cfg = ControllersConfig {
            namespace: Some(ns.clone()),
            functions: Some(FunctionsConfig::new(swarm.clone(), images, &instance)),
            ..Default::default()
        };
        tokio::spawn(reconcilers::run_all(
            store.clone(),
            Metrics::new(),
            cfg,
            stop.clone(),
        ));
        let (gateway, token) = start_gateway(&store, stop.clone(), "platform-test").await;
        Platform {
            etcd,
            store,
            swarm,
            ns,
            gateway,
            token,
            http: reqwest::Client::builder()
                // Beyond the 30 s default function timeout: the gateway's own answer (504,
                // 503 with its reason) is what a slow call fails the test with.
                .timeout(Duration::from_secs(40))
                .build()
                .unwrap(),
            stop,
            _cleanup: Cleanup { host, instance },
        }
    }

    pub fn apply(&self, name: &str, spec: &str) {
        self.apply_kind("Function", &self.ns, name, spec);
    }

    /// `lambda apply` of one object of `kind` in namespace `ns`.
    pub fn apply_kind(&self, kind: &str, ns: &str, name: &str, spec: &str) {
        let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
        let yaml = format!(
            "apiVersion: lambda/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}"
        );
        let (ok, out, err) = lambda(&self.etcd, &["apply", "-f", "-"], Some(&yaml));
        assert!(ok, "lambda apply: {out}{err}");
    }

    pub async fn wait_ready(&self, name: &str, timeout: Duration) {
        let t = Instant::now();
        loop {
            if let Ok(f) = self.store.get::<FunctionSpec>(&self.ns, name).await {
                let s = f.status.clone().unwrap_or_default();
                if s.is_true("Ready")
                    && s.observed_generation == Some(f.generation())
                    && s.ready_replicas >= 1
                {
                    return;
                }
                if t.elapsed() > timeout {
                    panic!(
                        "{name} not Ready after {timeout:?}: {:#?}\n{}",
                        f.status,
                        self.tasks(name)
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the function is Ready with reason `ScaledToZero` (serves on demand).
    pub async fn wait_scaled_to_zero(&self, name: &str, timeout: Duration) {
        let t = Instant::now();
        loop {
            let s = self
                .store
                .get::<FunctionSpec>(&self.ns, name)
                .await
                .ok()
                .and_then(|f| f.status)
                .unwrap_or_default();
            if s.is_true("Ready")
                && s.condition("Ready")
                    .is_some_and(|c| c.reason == "ScaledToZero")
            {
                return;
            }
            assert!(
                t.elapsed() < timeout,
                "{name} not Ready ScaledToZero after {timeout:?}: {s:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What Swarm says about a function's tasks, for failure messages.
    pub fn tasks(&self, name: &str) -> String {
        Command::new("docker")
            .env("DOCKER_HOST", swarm_env("DOCKER_HOST"))
            .args(["service", "ps", "--no-trunc"])
            .arg(service_name(&self.ns, name))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    pub async fn invoke(&self, name: &str, body: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!(
                "{}/v1/namespaces/{}/functions/{name}/invoke",
                self.gateway, self.ns
            ))
            .bearer_auth(&self.token)
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("gateway answers {name}: {e:?}\n{}", self.tasks(name)));
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or(Value::Null))
    }

    /// Sends `total` calls to the function, `concurrency` at a time; returns those that were
    /// not 200 (status and body, or the transport error).
    pub async fn load(
        &self,
        name: &str,
        body: &str,
        total: usize,
        concurrency: usize,
    ) -> Vec<String> {
        use futures::StreamExt;
        let url = format!(
            "{}/v1/namespaces/{}/functions/{name}/invoke",
            self.gateway, self.ns
        );
        futures::stream::iter(0..total)
            .map(|_| {
                let req = self
                    .http
                    .post(&url)
                    .bearer_auth(&self.token)
                    .body(body.to_string());
                async move {
                    match req.send().await {
                        Ok(r) if r.status() == 200 => None,
                        Ok(r) => Some(format!(
                            "{} {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        )),
                        Err(e) => Some(format!("transport: {e}")),
                    }
                }
            })
            .buffer_unordered(concurrency)
            .filter_map(|r| async move { r })
            .collect()
            .await
    }

    /// Invokes until the gateway routes the function (it follows etcd).
    pub async fn invoke_ready(&self, name: &str, body: &str) -> (u16, Value) {
        for _ in 0..100 {
            let r = self.invoke(name, body).await;
            if r.0 != 503 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("gateway never routed {name}");
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.stop.cancel();
        std::thread::sleep(Duration::from_millis(500));
    }
}
