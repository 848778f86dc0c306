//! Warm pools end to end on the real Swarm, through the gateway as a caller uses it: a call to a
//! function at zero is answered by a pool container specialised for it (no Swarm task start on
//! the way), with its code, environment and platform secrets; the function's own replica takes
//! over and the container is released, exits and is replaced (its secrets gone with it); a
//! container specialised for one function never answers for another (same name in another
//! namespace included); two gateways never specialise the same container.

mod common;

use std::time::{Duration, Instant};

use bollard::models::TaskState;
use common::eventually;
use common::platform::Platform;
use lambda::api::{ObjectKey, WarmPoolSpec, WarmPoolStatus};
use lambda::reconcilers::function::spec::service_name;
use lambda::reconcilers::warmpool::claims;
use lambda::swarm::{TaskFilter, task_state};
use serde_json::Value;

/// Reports who answered: its container (hostname), function, environment and secret files.
const WHO: &str = r#"runtime: python3
code:
  inline: |
    import os, socket
    def handler(event, context):
        path = os.environ.get("DB_FILE")
        try:
            files = sorted(os.listdir("/run/secrets"))
        except OSError:
            files = []
        return {"host": socket.gethostname(), "fn": context.function_name,
                "greeting": os.environ.get("GREETING"), "files": files,
                "secret": open(path).read() if path and os.path.exists(path) else None}
minReplicas: 0
scaleToZeroAfterSeconds: 600
timeoutSeconds: 20
resources: {memoryMb: 128, cpuMillis: 250}
concurrency: 4
"#;

async fn pool_status(p: &Platform, name: &str) -> WarmPoolStatus {
    p.store
        .get::<WarmPoolSpec>(&p.ns, name)
        .await
        .ok()
        .and_then(|o| o.status)
        .unwrap_or_default()
}

/// Applies a python3 pool of `replicas` whose claimed containers are released after
/// `release_after` seconds idle, and waits until they are all idle.
async fn python_pool(p: &Platform, name: &str, replicas: u32, release_after: u32) {
    p.apply_kind(
        "WarmPool",
        &p.ns,
        name,
        &format!("runtime: python3\nreplicas: {replicas}\nmemoryMb: 256\ncpuMillis: 500\nworkers: 2\nreleaseAfterIdleSeconds: {release_after}\n"),
    );
    eventually(
        &format!("pool {name} with {replicas} idle containers"),
        Duration::from_secs(90),
        async || {
            let s = pool_status(p, name).await;
            (s.idle == replicas && s.is_ready()).then_some(())
        },
    )
    .await;
}

trait Ready {
    fn is_ready(&self) -> bool;
}

impl Ready for WarmPoolStatus {
    fn is_ready(&self) -> bool {
        use lambda::api::Conditions;
        self.is_true("Ready")
    }
}

/// Invokes `ns/name` and returns the status, the cold-start header and the body.
async fn call(p: &Platform, ns: &str, name: &str) -> (u16, Option<String>, Value) {
    let r = p
        .http
        .post(format!(
            "{}/v1/namespaces/{ns}/functions/{name}/invoke",
            p.gateway
        ))
        .bearer_auth(&p.token)
        .body("{}")
        .send()
        .await
        .expect("the gateway answers");
    let code = r.status().as_u16();
    let path = r
        .headers()
        .get("x-lambda-cold-start")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    (code, path, r.json().await.unwrap_or(Value::Null))
}

/// Running tasks of the function's own service.
async fn running_tasks(p: &Platform, name: &str) -> usize {
    p.swarm
        .list_tasks(&TaskFilter {
            service: Some(service_name(&p.ns, name)),
            ..Default::default()
        })
        .await
        .map(|ts| {
            ts.iter()
                .filter(|t| task_state(t) == Some(TaskState::RUNNING))
                .count()
        })
        .unwrap_or(0)
}

/// True while the container (on the manager, where the test Swarm runs its tasks) runs.
async fn container_running(p: &Platform, host: &str) -> bool {
    p.swarm
        .docker()
        .inspect_container(
            host,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .ok()
        .and_then(|c| c.state)
        .and_then(|s| s.running)
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_from_zero_is_served_by_a_specialised_pool_container_and_its_secret_leaves_with_it()
{
    let p = Platform::start().await;
    python_pool(&p, "py", 2, 5).await;
    let (ok, out, err) = common::lambda(
        &p.etcd,
        &[
            "secret",
            "create",
            "db",
            "-n",
            &p.ns,
            "--from-literal",
            "s3cr3t",
        ],
        None,
    );
    assert!(ok, "lambda secret create: {out}{err}");
    let spec = format!(
        "{WHO}env: [{{name: GREETING, value: hello}}]\nsecrets: [{{name: db, env: DB_FILE}}]\n"
    );
    p.apply("a", &spec);
    p.wait_scaled_to_zero("a", Duration::from_secs(60)).await;

    let t = Instant::now();
    let (code, path, body) = call(&p, &p.ns, "a").await;
    let took = t.elapsed();
    let own = running_tasks(&p, "a").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(path.as_deref(), Some("pool"), "{body}");
    assert_eq!(own, 0, "answered before the function's own task ran");
    eprintln!("first response from zero through the pool: {took:?}");
    assert_eq!(body["fn"], format!("{}/a", p.ns));
    assert_eq!(body["greeting"], "hello");
    assert_eq!(body["secret"], "s3cr3t");
    let served_by = body["host"].as_str().expect("hostname").to_string();

    // `lambda get pools` shows the claim.
    let (ok, out, _) = common::lambda(&p.etcd, &["get", "pools", "-n", &p.ns], None);
    assert!(
        ok && out.contains("IDLE") && out.contains("CLAIMED"),
        "{out}"
    );
    eventually(
        "the pool to count the claim",
        Duration::from_secs(10),
        async || (pool_status(&p, "py").await.claimed == 1).then_some(()),
    )
    .await;

    // The function's own replica takes over; the container is released and exits.
    p.wait_ready("a", Duration::from_secs(60)).await;
    eventually(
        "the warm container to exit",
        Duration::from_secs(30),
        async || (!container_running(&p, &served_by).await).then_some(()),
    )
    .await;
    let (code, path, body) = call(&p, &p.ns, "a").await;
    assert_eq!((code, path), (200, None), "{body}");
    assert_ne!(
        body["host"],
        served_by.as_str(),
        "served by its own replica now"
    );

    // Swarm replaces it: the pool is back to two idle containers, none claimed.
    eventually("the pool refilled", Duration::from_secs(60), async || {
        let s = pool_status(&p, "py").await;
        (s.idle == 2 && s.claimed == 0).then_some(())
    })
    .await;

    // A function specialised into a fresh container finds none of a's secrets there.
    p.apply("b", WHO);
    p.wait_scaled_to_zero("b", Duration::from_secs(60)).await;
    let (code, path, body) = call(&p, &p.ns, "b").await;
    assert_eq!((code, path.as_deref()), (200, Some("pool")), "{body}");
    assert_eq!(body["files"], serde_json::json!([]), "{body}");
    assert_eq!(body["secret"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_specialised_container_serves_its_function_only() {
    let p = Platform::start().await;
    python_pool(&p, "py", 2, 60).await;
    // `a` lives in a namespace no controller of this test runs: it never gets a replica of its
    // own, so its pool container keeps serving it for the whole test.
    let other = format!("{}-a", p.ns);
    p.apply_kind(
        "Function",
        &other,
        "echo",
        &format!("{WHO}env: [{{name: GREETING, value: first}}]\n"),
    );
    let (code, path, a) = loop {
        let r = call(&p, &other, "echo").await;
        if r.0 != 404 {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((code, path.as_deref()), (200, Some("pool")), "{a}");
    assert_eq!(
        (a["fn"].as_str(), a["greeting"].as_str()),
        (Some(format!("{other}/echo").as_str()), Some("first"))
    );

    // The same name deployed afterwards in another namespace gets a container of its own.
    p.apply(
        "echo",
        &format!("{WHO}env: [{{name: GREETING, value: second}}]\n"),
    );
    p.wait_scaled_to_zero("echo", Duration::from_secs(60)).await;
    let (code, path, b) = call(&p, &p.ns, "echo").await;
    assert_eq!((code, path.as_deref()), (200, Some("pool")), "{b}");
    assert_eq!(b["fn"], format!("{}/echo", p.ns));
    assert_eq!(b["greeting"], "second");
    assert_ne!(a["host"], b["host"], "each function its own container");
    // And the first one still answers as itself, from its container.
    let (_, _, again) = call(&p, &other, "echo").await;
    assert_eq!(
        (&again["host"], &again["greeting"]),
        (&a["host"], &a["greeting"])
    );

    // Straight at the first container: a call naming the other function is refused, and so is
    // a second specialisation, and a release without the token.
    let pool = ObjectKey::new(&p.ns, "py");
    let held = claims::list(&p.store, &pool).await.expect("claims");
    let mine = held
        .values()
        .find(|c| c.function == format!("{other}/echo"))
        .unwrap_or_else(|| panic!("a claim for {other}/echo in {held:?}"));
    let token = claims::token(&p.store, &pool)
        .await
        .unwrap()
        .expect("token");
    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://{}/invoke", mine.address))
        .header("x-lambda-function", format!("{}/echo", p.ns))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        421,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let r = http
        .post(format!("http://{}/specialize", mine.address))
        .bearer_auth(&token)
        .body(
            serde_json::json!({"function": format!("{}/echo", p.ns), "runtime": "python3",
                "code": "def handler(e, c): return 'hijacked'", "timeoutMs": 1000,
                "maxPayloadBytes": 100, "concurrency": 1})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    let r = http
        .post(format!("http://{}/release", mine.address))
        .bearer_auth("not-the-token-0000000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (_, _, last) = call(&p, &other, "echo").await;
    assert_eq!(last["host"], a["host"], "still serving, as itself");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_never_specialise_the_same_container() {
    let p = Platform::start().await;
    python_pool(&p, "py", 1, 5).await;
    let (second, token2) = common::start_gateway(&p.store, p.stop.clone(), "second").await;
    p.apply("race", WHO);
    p.wait_scaled_to_zero("race", Duration::from_secs(60)).await;
    // Both gateways must route the function before the race starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let url = |base: &str| format!("{base}/v1/namespaces/{}/functions/race/invoke", p.ns);
    let one = p
        .http
        .post(url(&p.gateway))
        .bearer_auth(&p.token)
        .body("{}")
        .send();
    let two = p
        .http
        .post(url(&second))
        .bearer_auth(&token2)
        .body("{}")
        .send();
    let (one, two) = tokio::join!(one, two);
    let mut paths = Vec::new();
    for r in [one.expect("first gateway"), two.expect("second gateway")] {
        assert_eq!(r.status().as_u16(), 200);
        paths.push(
            r.headers()
                .get("x-lambda-cold-start")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_string(),
        );
    }
    paths.sort();
    // The pool's one container went to one gateway; the other waited for the Swarm task.
    assert_eq!(paths, ["pool", "swarm"], "{paths:?}");
    let held = claims::list(&p.store, &ObjectKey::new(&p.ns, "py"))
        .await
        .unwrap();
    assert!(held.len() <= 1, "{held:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_calls_from_zero_through_a_pool_fail_none() {
    let p = Platform::start().await;
    python_pool(&p, "py", 1, 5).await;
    p.apply("zero", &WHO.replace("concurrency: 4", "concurrency: 8"));
    p.wait_scaled_to_zero("zero", Duration::from_secs(60)).await;
    // The pool container takes the first calls; the function's own replicas take over and the
    // container is released (drained first) while the calls keep coming.
    let t = Instant::now();
    let bad = p.load("zero", "{}", 10_000, 200).await;
    let took = t.elapsed();
    assert!(
        bad.is_empty(),
        "{} of 10000 failed: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    eprintln!("10000 calls at c=200 from zero through a pool in {took:?}");
    eventually(
        "the container released",
        Duration::from_secs(30),
        async || (pool_status(&p, "py").await.claimed == 0).then_some(()),
    )
    .await;
}
