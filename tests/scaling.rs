//! Function autoscaling end to end on the real Swarm, as a user sees it: a function declared
//! with `minReplicas: 0` is Ready `ScaledToZero`, a call to it waits for the Swarm task the
//! autoscaler asks for and succeeds, a burst raises the replicas within seconds, idle takes it
//! back to zero, and a load from zero and a scale-in under load fail no request.
//!
//! The controllers and gateway run on the test's runtime (multi-threaded, as in the platform
//! tests).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::eventually;
use common::platform::Platform;
use lambda::api::function::FunctionScaleDecision;
use lambda::api::{FunctionSpec, FunctionStatus};
use lambda::reconcilers::function::spec::service_name;

const FN: &str = "runtime: python3\nhandler: main.handler\ncode:\n  inline: |\n    import time\n    def handler(event, context):\n        time.sleep(event.get('sleep', 0))\n        return {'n': event.get('n')}\ntimeoutSeconds: 30\n";

async fn status(p: &Platform, name: &str) -> FunctionStatus {
    p.store
        .get::<FunctionSpec>(&p.ns, name)
        .await
        .ok()
        .and_then(|f| f.status)
        .unwrap_or_default()
}

async fn decision(p: &Platform, name: &str) -> Option<FunctionScaleDecision> {
    status(p, name).await.autoscaler
}

/// Replicas of the function's Swarm service, as Swarm has them.
fn service_replicas(p: &Platform, name: &str) -> Option<u64> {
    let out = std::process::Command::new("docker")
        .env("DOCKER_HOST", common::swarm_env("DOCKER_HOST"))
        .args([
            "service",
            "inspect",
            "--format",
            "{{.Spec.Mode.Replicated.Replicas}}",
        ])
        .arg(service_name(&p.ns, name))
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_follow_the_load_from_zero_to_a_burst_and_back_to_zero() {
    let p = Platform::start().await;
    p.apply(
        "burst",
        &format!(
            "{FN}concurrency: 2\nminReplicas: 0\nmaxReplicas: 4\nscaleToZeroAfterSeconds: 10\nautoscaling: {{stableWindowSeconds: 10, panicWindowSeconds: 2}}\n"
        ),
    );
    // Declared at zero: Ready, ScaledToZero, no task.
    p.wait_scaled_to_zero("burst", Duration::from_secs(60))
        .await;
    assert_eq!(service_replicas(&p, "burst"), Some(0));

    // From zero without a pool: the call is held, the autoscaler asks for a replica at once,
    // and the call is answered by the Swarm task.
    let t = Instant::now();
    let (code, v) = p.invoke("burst", r#"{"n": 1}"#).await;
    let cold = t.elapsed();
    assert_eq!((code, &v["n"]), (200, &serde_json::json!(1)), "{v}");
    let d = decision(&p, "burst").await.expect("the autoscaler decided");
    assert!(d.desired_replicas >= 1, "{d:?}");
    println!("cold start through a Swarm task: {cold:?}");

    // A burst of 16 at once against one replica of concurrency 2 (1.4 per replica): panic,
    // the ceiling of 4 asked for within seconds, and no call fails meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let burst = {
        let (stop, failures) = (stop.clone(), failures.clone());
        let (http, token) = (p.http.clone(), p.token.clone());
        let url = format!(
            "{}/v1/namespaces/{}/functions/burst/invoke",
            p.gateway, p.ns
        );
        tokio::spawn(async move {
            let mut calls = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let batch = (0..16).map(|_| {
                    http.post(&url)
                        .bearer_auth(&token)
                        .body(r#"{"sleep": 0.3}"#)
                        .send()
                });
                for r in futures::future::join_all(batch).await {
                    calls += 1;
                    if !r.is_ok_and(|r| r.status() == 200) {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            calls
        })
    };
    let t = Instant::now();
    let d = eventually(
        "4 replicas asked for",
        Duration::from_secs(10),
        async || {
            decision(&p, "burst")
                .await
                .filter(|d| d.desired_replicas == 4)
        },
    )
    .await;
    println!("burst → 4 replicas decided after {:?}: {d:?}", t.elapsed());
    assert!(d.reason == "Panic" || d.reason == "ScaleUp", "{d:?}");
    eventually("4 replicas ready", Duration::from_secs(90), async || {
        (status(&p, "burst").await.ready_replicas == 4).then_some(())
    })
    .await;
    assert_eq!(service_replicas(&p, "burst"), Some(4));
    stop.store(true, Ordering::SeqCst);
    let calls = burst.await.expect("burst loop");
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "of {calls} calls during the burst"
    );

    // Idle: back to zero once the 10 s window passed without a request.
    let idle = Instant::now();
    let d = eventually("scaled to zero", Duration::from_secs(60), async || {
        decision(&p, "burst")
            .await
            .filter(|d| d.desired_replicas == 0)
    })
    .await;
    assert_eq!(d.reason, "ScaleToZero", "{d:?}");
    assert!(
        idle.elapsed() >= Duration::from_secs(9),
        "not before its window"
    );
    eventually("service at zero", Duration::from_secs(30), async || {
        (service_replicas(&p, "burst") == Some(0)).then_some(())
    })
    .await;
    p.wait_scaled_to_zero("burst", Duration::from_secs(30))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_calls_from_zero_and_a_scale_in_under_load_fail_none() {
    let p = Platform::start().await;
    p.apply(
        "zero",
        &format!(
            "{FN}concurrency: 8\nminReplicas: 0\nmaxReplicas: 3\nautoscaling: {{stableWindowSeconds: 8, panicWindowSeconds: 2}}\n"
        ),
    );
    p.wait_scaled_to_zero("zero", Duration::from_secs(60)).await;
    // 10,000 calls, 200 at a time, to a function at zero: held, then served as replicas come.
    let t = Instant::now();
    let bad = p.load("zero", r#"{"n": 2}"#, 10_000, 200).await;
    let took = t.elapsed();
    assert!(
        bad.is_empty(),
        "{} of 10000 failed: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    let s = status(&p, "zero").await;
    println!(
        "10000 calls at c=200 from zero in {took:?}; replicas {} ({:?})",
        s.ready_replicas, s.autoscaler
    );
    assert!(s.desired_replicas.unwrap_or(0) >= 2, "{:?}", s.autoscaler);

    // A light load loop while the stable window takes it down to one: no call fails.
    let t = Instant::now();
    let mut failed = Vec::new();
    let mut calls = 0;
    let scaled_in = loop {
        failed.extend(p.load("zero", r#"{"sleep": 0.05}"#, 20, 2).await);
        calls += 20;
        let s = status(&p, "zero").await;
        if s.desired_replicas == Some(1) && s.ready_replicas == 1 {
            break true;
        }
        if t.elapsed() > Duration::from_secs(90) {
            break false;
        }
    };
    assert!(
        scaled_in,
        "not scaled in to 1 under a light load: {:?}",
        status(&p, "zero").await.autoscaler
    );
    assert!(
        failed.is_empty(),
        "{} of {calls} failed during the scale-in: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(
        decision(&p, "zero").await.map(|d| d.reason),
        Some("ScaleDown".into())
    );
}
