//! The function reconciler end to end: a real etcd per test and the real Docker Swarm manager
//! of `scripts/swarm.sh up` (the test command starts it; these tests fail, never skip, when it
//! is not running). Functions run a stand-in image (busybox httpd serving the mounted code on
//! 8080, built here) until the runtime agent's images exist.
//!
//! Each test uses its own namespace and its own `lambda.instance` label, so tests run in
//! parallel on one Swarm without seeing each other's objects, and a guard removes everything
//! labelled with the test's instance when the test ends (also when it fails).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Etcd, lambda, root, swarm_env};
use lambda::api::{ConditionStatus, Conditions, Function, FunctionSpec};
use lambda::reconcilers::function::FunctionsConfig;
use lambda::reconcilers::function::spec::{RuntimeImages, service_name};
use lambda::reconcilers::{self, ControllersConfig};
use lambda::runtime::Metrics;
use lambda::store::Store;
use lambda::swarm::{Swarm, labels};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// DOCKER_HOST of the manager `scripts/swarm.sh` runs.
fn docker_host() -> String {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| swarm_env("DOCKER_HOST")).clone()
}

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .env("DOCKER_HOST", docker_host())
        .args(args)
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Builds the stand-in image once per test process; returns its tag.
fn standin_image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let src = root().join("tests/standin");
            let dir = tempfile::tempdir().expect("temp dir");
            let rootfs = dir.path().join("rootfs");
            for d in ["bin", "www", "var/lambda", "tmp"] {
                std::fs::create_dir_all(rootfs.join(d)).expect("mkdir");
            }
            std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
                .expect("static busybox at /bin/busybox (apt busybox-static)");
            for applet in ["sh", "httpd", "wget", "cat", "sleep", "kill"] {
                std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
                    .expect("symlink");
            }
            std::fs::write(rootfs.join("www/healthz"), "ok\n").expect("healthz");
            let copy_exec = |from: &str, to: &Path| {
                std::fs::copy(src.join(from), to).expect("copy");
                let mut p = std::fs::metadata(to).expect("meta").permissions();
                std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
                std::fs::set_permissions(to, p).expect("chmod");
            };
            copy_exec("run.sh", &rootfs.join("run.sh"));
            // The code, served as a static file (with Content-Length) from the config mount.
            std::os::unix::fs::symlink("/var/lambda/code", rootfs.join("www/code"))
                .expect("symlink");
            std::fs::copy(src.join("Dockerfile"), dir.path().join("Dockerfile")).expect("copy");
            let tag = "lambda/test-standin:2";
            let ctx = dir.path().to_string_lossy().into_owned();
            docker(&["build", "-q", "-t", tag, &ctx]).expect("build the stand-in image");
            tag.to_string()
        })
        .clone()
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn unique(prefix: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let r = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}-{n}", &r[..6])
}

/// Removes every Swarm object labelled with the test's instance when dropped.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let f = format!("label={}={}", labels::INSTANCE, self.0);
        for kind in ["service", "config", "secret"] {
            if let Ok(ids) = docker(&[kind, "ls", "-q", "--filter", &f]) {
                let ids: Vec<&str> = ids.split_whitespace().collect();
                if !ids.is_empty() {
                    let mut args = vec![kind, "rm"];
                    args.extend(ids);
                    let _ = docker(&args);
                }
            }
        }
    }
}

/// One test's platform: etcd, the Swarm, and an in-process controller.
struct Platform {
    etcd: Etcd,
    store: Store,
    swarm: Swarm,
    instance: String,
    ns: String,
    image: String,
    controller: Option<(CancellationToken, JoinHandle<()>)>,
    _cleanup: Cleanup,
}

impl Platform {
    async fn start() -> Platform {
        let image = standin_image();
        let swarm = Swarm::connect(Some(&docker_host())).await.expect(
            "the Swarm manager is not running: run scripts/swarm.sh up (scripts/test.sh does)",
        );
        assert!(
            swarm
                .inspect_swarm()
                .await
                .expect("inspect swarm")
                .is_some(),
            "the Docker daemon at {} is not a Swarm manager: run scripts/swarm.sh up",
            docker_host()
        );
        let etcd = Etcd::start();
        let store = etcd.store().await;
        let instance = unique("t");
        let mut p = Platform {
            etcd,
            store,
            swarm,
            _cleanup: Cleanup(instance.clone()),
            instance,
            ns: unique("fn"),
            image,
            controller: None,
        };
        p.start_controller();
        p
    }

    fn functions_config(&self) -> FunctionsConfig {
        let mut images = RuntimeImages::default();
        images
            .set_flag(&format!("shell={}", self.image))
            .expect("flag");
        let mut cfg = FunctionsConfig::new(self.swarm.clone(), images, &self.instance);
        cfg.sweep_every = Duration::from_secs(1);
        cfg
    }

    fn start_controller(&mut self) {
        self.start_controller_with(self.functions_config());
    }

    fn start_controller_with(&mut self, functions: FunctionsConfig) {
        let stop = CancellationToken::new();
        let cfg = ControllersConfig {
            namespace: Some(self.ns.clone()),
            functions: Some(functions),
            ..Default::default()
        };
        let h = tokio::spawn(reconcilers::run_all(
            self.store.clone(),
            Metrics::new(),
            cfg,
            stop.clone(),
        ));
        self.controller = Some((stop, h));
    }

    async fn stop_controller(&mut self) {
        if let Some((stop, h)) = self.controller.take() {
            stop.cancel();
            let _ = h.await;
        }
    }

    /// `lambda apply -f -` of a function manifest in the test namespace.
    fn apply(&self, name: &str, spec: &str) {
        let yaml = format!(
            "apiVersion: lambda/v1alpha1\nkind: Function\nmetadata:\n  name: {name}\n  namespace: {}\nspec:\n{}",
            self.ns,
            indent(spec)
        );
        let (ok, out, err) = lambda(&self.etcd, &["apply", "-f", "-"], Some(&yaml));
        assert!(ok, "lambda apply failed: {out}{err}\n{yaml}");
    }

    async fn get(&self, name: &str) -> Option<Function> {
        self.store.get::<FunctionSpec>(&self.ns, name).await.ok()
    }

    /// Waits until `check` holds for the function (stored status), printing it on timeout.
    async fn wait_for(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Function) -> bool,
    ) -> Function {
        let start = Instant::now();
        loop {
            let f = self.get(name).await;
            if let Some(f) = &f
                && check(f)
            {
                return f.clone();
            }
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}; function: {:#?}; services: {}",
                f.map(|f| f.status),
                docker(&["service", "ps", "--no-trunc", &service_name(&self.ns, name)])
                    .unwrap_or_else(|e| e)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_ready(&self, name: &str, replicas: u32, timeout: Duration) -> Function {
        self.wait_for(name, "Ready", timeout, |f| {
            let s = f.status.clone().unwrap_or_default();
            s.is_true("Ready")
                && s.observed_generation == Some(f.generation())
                && s.ready_replicas == replicas
                && s.endpoints.len() == replicas as usize
        })
        .await
    }

    async fn services(&self) -> Vec<bollard::models::Service> {
        self.swarm
            .list_services(&[(labels::INSTANCE, self.instance.as_str())])
            .await
            .expect("list services")
    }

    async fn configs(&self, name: &str) -> Vec<String> {
        self.swarm
            .list_configs(&[
                (labels::INSTANCE, self.instance.as_str()),
                (labels::NAME, name),
            ])
            .await
            .expect("list configs")
            .into_iter()
            .filter_map(|c| c.spec.and_then(|s| s.name))
            .collect()
    }
}

impl Drop for Platform {
    /// Stops the controller before the cleanup guard runs: a controller still running after a
    /// failed assertion would re-create the services the guard removes.
    fn drop(&mut self) {
        if let Some((stop, h)) = self.controller.take() {
            stop.cancel();
            h.abort();
            // A create already sent when the task was aborted lands within this.
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(2))
        // busybox httpd closes every connection; never race a reused one.
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client")
}

async fn code_at(client: &reqwest::Client, address: &str) -> Result<String, String> {
    let t0 = Instant::now();
    let resp = client
        .get(format!("http://{address}/code"))
        .send()
        .await
        .map_err(|e| {
            let mut msg = format!("{address} after {:?}: {e}", t0.elapsed());
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            msg
        })?;
    if !resp.status().is_success() {
        return Err(format!("{address}: HTTP {}", resp.status()));
    }
    resp.text().await.map_err(|e| format!("{address}: {e}"))
}

fn shell_fn(code: &str, replicas: u32) -> String {
    format!("runtime: shell\ncode:\n  inline: \"{code}\"\nminReplicas: {replicas}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_ready_rolling_code_change_without_failures_and_scaling() {
    let mut p = Platform::start().await;
    let client = http();

    // Applied as a user would: Ready, with an endpoint that serves the code.
    p.apply("hello", &shell_fn("v1", 1));
    let f = p.wait_ready("hello", 1, Duration::from_secs(60)).await;
    let st = f.status.clone().unwrap();
    assert!(st.service_id.is_some());
    assert_eq!(st.replicas, 1);
    assert_eq!(st.condition("Ready").unwrap().reason, "Running");
    let ep = &st.endpoints[0];
    assert!(!ep.task_id.is_empty() && !ep.node_id.is_empty(), "{ep:?}");
    assert_eq!(code_at(&client, &ep.address).await.unwrap(), "v1");
    assert_eq!(p.configs("hello").await.len(), 1);
    let events = lambda::runtime::events::events_for(&p.store, "Function", &p.ns, "hello")
        .await
        .expect("events");
    assert!(
        events.iter().any(|e| e.spec.reason == "Created"),
        "{events:?}"
    );

    // A code change rolls out (new config, start-first) while a client keeps calling whatever
    // endpoints the status lists: no request fails.
    let done = CancellationToken::new();
    let load = {
        let store = p.store.clone();
        let ns = p.ns.clone();
        let done = done.clone();
        let client = client.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            let mut i = 0usize;
            let started = Instant::now();
            while !done.is_cancelled() {
                let f = store.get::<FunctionSpec>(&ns, "hello").await.expect("get");
                let eps = f.status.map(|s| s.endpoints).unwrap_or_default();
                if eps.is_empty() {
                    failed.push("no endpoints".to_string());
                } else {
                    i += 1;
                    let ep = &eps[i % eps.len()];
                    match code_at(&client, &ep.address).await {
                        Ok(_) => ok += 1,
                        Err(e) => failed.push(format!(
                            "{e} (task {}, {:?} after the load started)",
                            ep.task_id,
                            started.elapsed()
                        )),
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rollout = Instant::now();
    p.apply("hello", &shell_fn("v2", 1));
    let f = p.wait_ready("hello", 1, Duration::from_secs(60)).await;
    let addr = f.status.clone().unwrap().endpoints[0].address.clone();
    assert_eq!(code_at(&client, &addr).await.unwrap(), "v2");
    let took = rollout.elapsed();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    done.cancel();
    let (ok, failed) = load.await.expect("load loop");
    assert!(ok > 20, "too few requests during the rollout: {ok}");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the rollout: {failed:?}",
        failed.len(),
        ok as usize + failed.len()
    );
    eprintln!("rollout took {took:?}; {ok} requests, none failed");
    // The old code's config goes once no service needs it.
    let start = Instant::now();
    loop {
        let c = p.configs("hello").await;
        if c.len() == 1 && c[0].ends_with(&lambda::reconcilers::function::spec::code_hash("v2")) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "old config not removed: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Replicas follow minReplicas: 1 → 3 → 1, each replica with its own endpoint.
    p.apply("hello", &shell_fn("v2", 3));
    let f = p.wait_ready("hello", 3, Duration::from_secs(60)).await;
    let eps = f.status.unwrap().endpoints;
    let mut addrs: Vec<_> = eps.iter().map(|e| e.address.clone()).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 3, "{eps:?}");
    for a in &addrs {
        assert_eq!(code_at(&client, a).await.unwrap(), "v2");
    }
    p.apply("hello", &shell_fn("v2", 1));
    p.wait_ready("hello", 1, Duration::from_secs(60)).await;
    assert_eq!(p.services().await.len(), 1);
    p.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_and_invalid_specs_are_reported() {
    let mut p = Platform::start().await;

    // An image no node has: Ready=False with reason ImageMissing.
    p.apply(
        "noimage",
        "runtime: image\nimage: lambda/does-not-exist:1\n",
    );
    let f = p
        .wait_for("noimage", "ImageMissing", Duration::from_secs(60), |f| {
            f.conditions()
                .iter()
                .any(|c| c.type_ == "Ready" && c.reason == "ImageMissing")
        })
        .await;
    let st = f.status.unwrap();
    assert_eq!(
        st.condition("Ready").unwrap().status,
        ConditionStatus::False
    );
    let events = lambda::runtime::events::events_for(&p.store, "Function", &p.ns, "noimage")
        .await
        .expect("events");
    assert!(
        events.iter().any(|e| e.spec.reason == "ImageMissing"
            && e.spec.type_ == lambda::runtime::EventType::Warning),
        "{events:?}"
    );
    assert!(
        st.last_error
            .as_deref()
            .unwrap_or("")
            .contains("No such image"),
        "{st:?}"
    );

    // A hand edit that parses but does not validate: InvalidSpec naming the field.
    p.apply("edited", &shell_fn("v1", 1));
    p.wait_ready("edited", 1, Duration::from_secs(60)).await;
    let key = format!("/lambda/registry/functions/{}/edited", p.ns);
    let bad = format!(
        "apiVersion: lambda/v1alpha1\nkind: Function\nmetadata:\n  name: edited\n  namespace: {}\n  finalizers: [lambda/function-cleanup]\nspec:\n  runtime: shell\n  code:\n    inline: v1\n  resources:\n    memoryMb: 1\n",
        p.ns
    );
    p.etcd.put(&key, &bad);
    let f = p
        .wait_for("edited", "InvalidSpec", Duration::from_secs(20), |f| {
            f.conditions()
                .iter()
                .any(|c| c.reason == "InvalidSpec" && c.observed_generation == Some(f.generation()))
        })
        .await;
    let st = f.status.unwrap();
    let msg = &st.condition("Ready").unwrap().message;
    assert!(msg.contains("spec.resources.memoryMb"), "{msg}");
    // The running service was left alone.
    assert_eq!(p.services().await.len(), 2);

    // One that does not even parse: still InvalidSpec (read fresh from etcd), nothing crashes.
    let unparsable = bad.replace("memoryMb: 1", "memoryMB: 64");
    p.etcd.put(&key, &unparsable);
    let status_key = format!("/lambda/status/functions/{}/edited", p.ns);
    let start = Instant::now();
    loop {
        let st = p
            .etcd
            .etcdctl(&["get", "--print-value-only", &status_key])
            .unwrap_or_default();
        if st.contains("InvalidSpec") && st.contains("memoryMB") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no InvalidSpec for the unparsable edit: {st}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The controller still converges other functions.
    p.apply("after", &shell_fn("ok", 1));
    p.wait_ready("after", 1, Duration::from_secs(60)).await;
    p.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_service_and_configs_restart_does_not_duplicate() {
    let mut p = Platform::start().await;
    p.apply("keep", &shell_fn("k1", 1));
    // Restart the controller as soon as the service exists (mid-way to Ready).
    let start = Instant::now();
    while p.services().await.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no service created"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first_id = p.services().await[0].id.clone();
    p.stop_controller().await;
    p.start_controller();
    p.wait_ready("keep", 1, Duration::from_secs(60)).await;
    let svcs = p.services().await;
    assert_eq!(
        svcs.len(),
        1,
        "a restarted controller must not duplicate the service"
    );
    assert_eq!(svcs[0].id, first_id, "nor replace it");

    // Delete through the CLI: the finalizer removes the service and its config, then the
    // object goes.
    let (ok, out, err) = lambda(&p.etcd, &["delete", "fn", "keep", "-n", &p.ns], None);
    assert!(ok, "{out}{err}");
    let start = Instant::now();
    loop {
        let gone = p.get("keep").await.is_none();
        let svcs = p.services().await;
        let cfgs = p.configs("keep").await;
        if gone && svcs.is_empty() && cfgs.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "after delete: object gone {gone}, services {}, configs {cfgs:?}",
            svcs.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    p.stop_controller().await;
}

fn raw_service(
    name: String,
    image: &str,
    l: std::collections::HashMap<String, String>,
) -> bollard::models::ServiceSpec {
    use bollard::models::*;
    ServiceSpec {
        name: Some(name),
        labels: Some(l),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(image.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(0) }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_with_our_labels_are_swept_others_are_not() {
    let mut p = Platform::start().await;
    let owner = |instance: &str, name: &str| labels::Owner {
        instance: instance.to_string(),
        kind: "Function".into(),
        namespace: p.ns.clone(),
        name: name.to_string(),
        uid: "00000000-0000-0000-0000-000000000001".into(),
    };
    let orphan = format!("lambda-{}-ghost", p.ns);
    p.swarm
        .create_service(raw_service(
            orphan.clone(),
            &p.image,
            owner(&p.instance, "ghost").labels(),
        ))
        .await
        .expect("create orphan");
    p.swarm
        .ensure_config(
            &format!("{orphan}-00000000"),
            b"x",
            owner(&p.instance, "ghost").labels(),
        )
        .await
        .expect("create orphan config");
    // Another platform's object (other instance): never ours to sweep.
    let other_instance = format!("{}-other", p.instance);
    let foreign = format!("lambda-{}-foreign", p.ns);
    let _other_cleanup = Cleanup(other_instance.clone());
    p.swarm
        .create_service(raw_service(
            foreign.clone(),
            &p.image,
            owner(&other_instance, "foreign").labels(),
        ))
        .await
        .expect("create foreign");
    let start = Instant::now();
    loop {
        let orphan_left = p.swarm.inspect_service(&orphan).await.unwrap().is_some();
        let cfg_left = !p.configs("ghost").await.is_empty();
        if !orphan_left && !cfg_left {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "orphans not swept: service {orphan_left}, config {cfg_left}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        p.swarm.inspect_service(&foreign).await.unwrap().is_some(),
        "another instance's service was swept"
    );
    p.swarm.remove_service(&foreign).await.unwrap();
    p.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_controller_process_runs_functions() {
    let mut p = Platform::start().await;
    p.stop_controller().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_lambda"))
        .env("LAMBDA_ETCD_ENDPOINTS", p.etcd.endpoint())
        .env_remove("DOCKER_HOST")
        .env("LAMBDA_HOME", "/nonexistent")
        .args(["controller", "--docker-host", &docker_host()])
        .args(["--runtime-image", &format!("shell={}", p.image)])
        .args(["--instance", &p.instance, "--watch-namespace", &p.ns])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start lambda controller");
    p.apply("proc", &shell_fn("p1", 1));
    let res = tokio::time::timeout(
        Duration::from_secs(60),
        p.wait_ready("proc", 1, Duration::from_secs(60)),
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let f = res.expect("Ready in time");
    let addr = f.status.unwrap().endpoints[0].address.clone();
    assert_eq!(code_at(&http(), &addr).await.unwrap(), "p1");
}

/// The tasks of a service as (id, desired state, current state), from `docker service ps`.
fn service_tasks(service: &str) -> Vec<(String, String, String)> {
    docker(&[
        "service",
        "ps",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.DesiredState}} {{.CurrentState}}",
        service,
    ])
    .unwrap_or_default()
    .lines()
    .filter_map(|l| {
        let mut w = l.split_whitespace();
        Some((
            w.next()?.to_string(),
            w.next()?.to_string(),
            w.next()?.to_string(),
        ))
    })
    .collect()
}

/// Swarm stops replacing a task, reproduced as it happened: the restart policy the controller
/// used to write (`on-failure`) and a SIGTERM from outside the orchestrator (an engine shutting
/// down, a health-check kill), on which the replica — like the agent — exits 0. The task ends
/// `Complete`, which `on-failure` does not restart. The service sits at 0 of 1 with no task on the
/// way; the watchdog forces an update, with an event naming the task, and the function serves
/// again on its own spec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_swarm_stopped_replacing_is_rekicked() {
    let mut p = Platform::start().await;
    p.stop_controller().await;
    let mut cfg = p.functions_config();
    cfg.stuck_after = Duration::from_secs(4);
    p.start_controller_with(cfg);
    p.apply("steady", &shell_fn("v1", 1));
    p.wait_ready("steady", 1, Duration::from_secs(60)).await;
    let svc = service_name(&p.ns, "steady");

    // Behind the controller's back (its labels stay, so the spec looks current): the old
    // restart policy, and the task on the manager, where this test can reach its container.
    docker(&[
        "service",
        "update",
        "--detach",
        "--restart-condition",
        "on-failure",
        "--constraint-add",
        "node.role==manager",
        &svc,
    ])
    .expect("docker service update");
    let deadline = Instant::now() + Duration::from_secs(60);
    let container = loop {
        let state = docker(&[
            "service",
            "inspect",
            "--format",
            "{{.UpdateStatus.State}}",
            &svc,
        ])
        .unwrap_or_default();
        let ids = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={svc}"),
        ])
        .unwrap_or_default();
        let running: Vec<_> = service_tasks(&svc)
            .into_iter()
            .filter(|t| t.1 == "Running" && t.2.starts_with("Running"))
            .collect();
        if state.trim() == "completed" && running.len() == 1 && ids.lines().count() == 1 {
            break ids.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the hand-made update did not settle: {state} {:?}",
            service_tasks(&svc)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let killed_task = service_tasks(&svc)
        .into_iter()
        .find(|t| t.1 == "Running")
        .expect("running task")
        .0;
    docker(&["kill", "--signal", "TERM", &container]).expect("docker kill");

    // The stuck state: the task ended, Swarm made no replacement.
    let t0 = Instant::now();
    loop {
        let tasks = service_tasks(&svc);
        let live = tasks.iter().filter(|t| t.1 == "Running").count();
        let ended = tasks
            .iter()
            .any(|t| t.0 == killed_task && t.1 == "Shutdown" && !t.2.starts_with("Running"));
        if live == 0 && ended {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the task did not end: {tasks:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stuck_at = Instant::now();
    let ended = service_tasks(&svc)
        .into_iter()
        .find(|t| t.0 == killed_task)
        .expect("the killed task");
    assert!(
        ended.2.starts_with("Complete"),
        "the replica exited 0 on SIGTERM: {ended:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tasks = service_tasks(&svc);
    assert_eq!(
        tasks.iter().filter(|t| t.1 == "Running").count(),
        0,
        "Swarm replaced the task by itself, nothing was stuck: {tasks:?}"
    );

    // The watchdog: a forced update, a new task, the function Ready on its own spec again.
    let f = p
        .wait_for("steady", "Ready again", Duration::from_secs(60), |f| {
            let s = f.status.clone().unwrap_or_default();
            s.is_true("Ready")
                && s.ready_replicas == 1
                && s.endpoints.iter().all(|e| e.task_id != killed_task)
                && s.endpoints.len() == 1
        })
        .await;
    eprintln!(
        "recovered {:?} after the stuck state began",
        stuck_at.elapsed()
    );
    let ep = &f.status.unwrap().endpoints[0];
    assert_eq!(code_at(&http(), &ep.address).await.unwrap(), "v1");
    let policy = docker(&[
        "service",
        "inspect",
        "--format",
        "{{.Spec.TaskTemplate.RestartPolicy.Condition}} {{.Spec.TaskTemplate.ForceUpdate}}",
        &svc,
    ])
    .unwrap();
    let mut w = policy.split_whitespace();
    assert_eq!(w.next(), Some("any"), "{policy}");
    assert!(w.next().unwrap().parse::<u64>().unwrap() >= 1, "{policy}");
    let events = p
        .store
        .list::<lambda::api::EventSpec>(Some(&p.ns))
        .await
        .unwrap()
        .items;
    let rekick = events
        .iter()
        .find(|e| e.spec.reason == "Rekicked")
        .unwrap_or_else(|| panic!("no Rekicked event: {events:#?}"));
    assert!(
        rekick.spec.message.contains(&killed_task)
            && rekick.spec.message.contains("0 of 1 replicas running"),
        "{}",
        rekick.spec.message
    );
}
