//! Nothing lost: asynchronous invocations submitted while RabbitMQ is killed -9 and restarted
//! once and one of two `lambda events` processes is killed -9. Every invocation the gateway
//! answered 202 must reach a final record; none may be lost; duplicates (at-least-once
//! redeliveries) are counted and reported. Real etcd, real RabbitMQ, real listener processes;
//! the replica follows the agent's contract and is served by the test.
//!
//! `LAMBDA_CHAOS_INVOCATIONS` (default 10000) sets the count.

mod common;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Etcd;
use common::rabbitmq::RabbitMq;
use common::replica::replica;
use lambda::events::execution::ExecutionStatus;
use lambda::events::execution::store as records;
use serde_json::Value;

/// Submitters running at once.
const CLIENTS: usize = 32;

/// A `lambda events` process; killed with SIGKILL when dropped.
struct Listener(Child);

impl Listener {
    fn start(etcd: &Etcd, url: &str, log: &std::path::Path) -> Listener {
        let log = std::fs::File::create(log).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_lambda"))
            .args(["events", "--prefetch", "128", "--amqp-url", url])
            .env("LAMBDA_ETCD_ENDPOINTS", etcd.endpoint())
            .env("LAMBDA_CONFIG", "/nonexistent/lambda-tests/config.yaml")
            .env_remove("LAMBDA_CONTEXT")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start lambda events");
        Listener(child)
    }

    fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_accepted_invocation_is_lost_when_the_broker_and_a_listener_die() {
    let n: usize = std::env::var("LAMBDA_CHAOS_INVOCATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let etcd = Etcd::start();
    let mut rabbit = RabbitMq::start();
    let store = etcd.store().await;
    let hits = Arc::new(AtomicUsize::new(0));
    let replica = replica(hits.clone()).await;
    common::replica::function_on(
        &store,
        "default",
        "sink",
        "runtime: shell\ncode: {inline: cat}\nconcurrency: 1000\nretry: {maxAttempts: 5, backoffSeconds: 1}\n",
        replica,
    )
    .await;

    let gateway = common::start_broker_gateway(&store, rabbit.url(), std::future::pending());
    let url = format!("{gateway}/v1/functions/sink/invoke");
    let http = reqwest::Client::new();
    let logs = tempfile::tempdir().expect("temp dir");
    let mut a = Listener::start(&etcd, &rabbit.url(), &logs.path().join("a.log"));
    let _b = Listener::start(&etcd, &rabbit.url(), &logs.path().join("b.log"));
    // The gateway routes the function once it has seen it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http.post(&url).body("{}").send().await;
        if r.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "gateway never routed sink");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Submitters: each invocation carries its own id and is retried (same id) until a 202.
    let next = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (http, url, next, refused) = (http.clone(), url.clone(), next.clone(), refused.clone());
        clients.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    return accepted;
                }
                let inv = format!("chaos-{i}");
                loop {
                    let r = http
                        .post(&url)
                        .header("prefer", "respond-async")
                        .header("x-lambda-invocation-id", &inv)
                        .body(format!(r#"{{"i": {i}}}"#))
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 202 => {
                            let v: Value = r.json().await.expect("json");
                            accepted.push(v["executionId"].as_str().expect("id").to_string());
                            break;
                        }
                        Ok(r) => {
                            assert_eq!(r.status(), 503, "only the broker's absence may refuse");
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }

    // Chaos, while submissions run: a listener dies, then the broker dies and comes back.
    let wait_for = |fraction: f64| {
        let next = next.clone();
        async move {
            while (next.load(Ordering::SeqCst) as f64) < fraction * n as f64 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_for(0.3).await;
    a.kill9();
    eprintln!(
        "listener A killed -9 after {} submissions",
        next.load(Ordering::SeqCst)
    );
    wait_for(0.5).await;
    rabbit.kill9();
    eprintln!(
        "broker killed -9 after {} submissions",
        next.load(Ordering::SeqCst)
    );
    let rabbit = tokio::task::spawn_blocking(move || {
        rabbit.restart();
        rabbit
    })
    .await
    .expect("restart");
    eprintln!("broker back after {:?}", started.elapsed());

    let mut ids = Vec::new();
    for c in clients {
        ids.extend(c.await.expect("client"));
    }
    let submitted = started.elapsed();
    assert_eq!(ids.len(), n, "every invocation was eventually accepted");
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        n,
        "distinct invocation ids are distinct executions"
    );

    // Every accepted execution reaches a final record.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut pending: Vec<String> = ids.clone();
    let mut duplicates = 0u64;
    let mut failed = Vec::new();
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for id in pending {
            match records::get(&store, "default", &id).await {
                Ok(s) if s.execution.status.is_terminal() => {
                    duplicates += u64::from(s.execution.duplicates);
                    if s.execution.status != ExecutionStatus::Succeeded {
                        failed.push(s.execution);
                    }
                }
                _ => still.push(id),
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let total = started.elapsed();
    let runs = hits.load(Ordering::SeqCst);
    eprintln!(
        "chaos: {n} accepted in {submitted:?} ({} refused while the broker was away), all final in {total:?}; \
         lost {}, not succeeded {}, replica runs {runs} (extra runs {}), duplicate deliveries recorded {duplicates}",
        refused.load(Ordering::Relaxed),
        pending.len(),
        failed.len(),
        runs.saturating_sub(n + 1),
    );
    drop(rabbit);
    assert!(
        pending.is_empty(),
        "lost (never final): {} e.g. {:?}",
        pending.len(),
        pending.first()
    );
    assert!(failed.is_empty(), "not succeeded: {:?}", failed.first());
    assert!(runs > n, "every execution ran on the replica");
}
