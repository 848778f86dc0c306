//! The whole invocation path end to end, as a user drives it: `lambda apply` → the function
//! reconciler runs the real runtime images (with the real agent) as Swarm services → Ready →
//! invoke through the gateway over HTTP (bearer token) and with `lambda invoke`. Needs the
//! Swarm of `scripts/swarm.sh up` and the images of `scripts/images.sh` (the test command
//! builds both; these tests fail, never skip, when they are missing).
//!
//! The controller and gateway run on the test's runtime, so the tests use a multi-threaded one:
//! the blocking `lambda` CLI calls must not stall the servers they talk to.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::lambda;
use common::platform::Platform;
use lambda::reconcilers::function::spec::service_name;
use lambda::swarm::labels;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Held by the tests whose timing a busy machine would upset (a 1.5 s call within a 2 s
/// timeout) and by the one that loads it most (a broker starting, 5 s functions), so that
/// those two never run at the same time on the 2-core CI machine.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PY: &str = "runtime: python3\nhandler: main.handler\ncode:\n  inline: |\n    import time\n    def handler(event, context):\n        if event.get('fail'):\n            raise ValueError('bad input: ' + str(event['fail']))\n        if event.get('sleep'):\n            time.sleep(event['sleep'])\n        print('handled', event.get('x'))\n        return {'py': event.get('x'), 'fn': context.function_name}\ntimeoutSeconds: 2\nmaxPayloadBytes: 1000\nconcurrency: 2\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_runtime_on_the_swarm_through_the_gateway() {
    let _heavy = HEAVY.lock().await;
    let p = Platform::start().await;
    p.apply("py", PY);
    p.apply("js", "runtime: node\nhandler: index.handler\ncode:\n  inline: |\n    exports.handler = async (event) => ({js: event.x * 2});\n");
    p.apply("sh", "runtime: shell\ncode:\n  inline: |\n    #!/bin/sh\n    read ev\n    printf '{\"sh\": %s}' \"$ev\"\n");
    for f in ["py", "js", "sh"] {
        p.wait_ready(f, Duration::from_secs(120)).await;
    }
    let (code, v) = p.invoke_ready("py", r#"{"x": 7}"#).await;
    assert_eq!((code, &v["py"]), (200, &json!(7)), "{v}");
    let (code, v) = p.invoke_ready("js", r#"{"x": 21}"#).await;
    assert_eq!((code, v), (200, json!({"js": 42})));
    let (code, v) = p.invoke_ready("sh", r#"{"x": 1}"#).await;
    assert_eq!((code, v), (200, json!({"sh": {"x": 1}})));

    // Exception → 502 with the structured error.
    let (code, v) = p.invoke("py", r#"{"fail": "nope"}"#).await;
    assert_eq!(code, 502, "{v}");
    assert_eq!(v["errorType"], "ValueError");
    assert!(
        v["errorMessage"]
            .as_str()
            .unwrap()
            .contains("bad input: nope")
    );
    assert!(v["stackTrace"].as_array().is_some_and(|s| !s.is_empty()));
    // Overrun → 504, and the next call succeeds.
    let (code, v) = p.invoke("py", r#"{"sleep": 5}"#).await;
    assert_eq!(code, 504, "{v}");
    assert_eq!(p.invoke("py", r#"{"x": 1}"#).await.0, 200);
    // Oversize → 413.
    let (code, _) = p
        .invoke("py", &format!(r#"{{"x": "{}"}}"#, "a".repeat(2000)))
        .await;
    assert_eq!(code, 413);
    // Over the concurrency (2 per replica x 1): the third call waits for a slot, then is
    // served (429 only past maxHeldRequests: the gateway tests).
    let slow: Vec<_> = (0..2)
        .map(|_| p.invoke("py", r#"{"sleep": 1.5}"#))
        .collect();
    let probe = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        p.invoke("py", r#"{"x": 3}"#).await
    };
    let (done, (code, v)) = tokio::join!(futures::future::join_all(slow), probe);
    assert_eq!((code, &v["py"]), (200, &json!(3)), "{v}");
    assert!(done.iter().all(|r| r.0 == 200), "{done:?}");
    // Unknown → 404; no token → 401.
    assert_eq!(p.invoke("ghost", "{}").await.0, 404);
    let r = p
        .http
        .post(format!(
            "{}/v1/namespaces/{}/functions/py/invoke",
            p.gateway, p.ns
        ))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Malformed JSON to the CRUD API → 400 naming the problem.
    let r = p
        .http
        .post(format!("{}/v1/namespaces/{}/functions", p.gateway, p.ns))
        .bearer_auth(&p.token)
        .body("{\"spec\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("malformed JSON at line 1"));

    // `lambda invoke` as a user types it.
    let (ok, out, err) = lambda(
        &p.etcd,
        &[
            "-n",
            &p.ns,
            "invoke",
            "js",
            "-d",
            r#"{"x": 5}"#,
            "--gateway",
            &p.gateway,
            "--token",
            &p.token,
        ],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(out.trim()).unwrap(),
        json!({"js": 10})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn code_update_rolls_out_without_failed_requests_and_delete_cleans_up() {
    let p = Platform::start().await;
    let v1 = "runtime: python3\ncode:\n  inline: |\n    def handler(event, context):\n        return {'v': 1}\nconcurrency: 4\n";
    p.apply("roll", v1);
    p.wait_ready("roll", Duration::from_secs(120)).await;
    assert_eq!(p.invoke_ready("roll", "{}").await, (200, json!({"v": 1})));

    // A load loop runs during the rollout; every request must succeed.
    let failures = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let seen_v2 = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let load = {
        let (failures, total, seen_v2, stop) = (
            failures.clone(),
            total.clone(),
            seen_v2.clone(),
            stop.clone(),
        );
        let (http, url, token) = (
            p.http.clone(),
            format!("{}/v1/namespaces/{}/functions/roll/invoke", p.gateway, p.ns),
            p.token.clone(),
        );
        tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.is_cancelled() {
                total.fetch_add(1, Ordering::Relaxed);
                match http.post(&url).bearer_auth(&token).body("{}").send().await {
                    Ok(r) if r.status() == 200 => {
                        if r.json::<Value>()
                            .await
                            .map(|v| v["v"] == 2)
                            .unwrap_or(false)
                        {
                            seen_v2.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(r) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        errors.push(format!(
                            "{} {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        ));
                    }
                    Err(e) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        errors.push(e.to_string());
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            errors
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    p.apply("roll", &v1.replace("'v': 1", "'v': 2"));
    let t = Instant::now();
    while seen_v2.load(Ordering::Relaxed) < 20 {
        assert!(t.elapsed() < Duration::from_secs(120), "v2 never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.wait_ready("roll", Duration::from_secs(60)).await;
    stop.cancel();
    let errors = load.await.unwrap();
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "failed requests during the rollout: {errors:?}"
    );
    assert!(total.load(Ordering::Relaxed) > 50);

    // Delete → service and configs gone.
    let (ok, _, err) = lambda(
        &p.etcd,
        &[
            "-n",
            &p.ns,
            "delete",
            "fn",
            "roll",
            "--wait",
            "--timeout",
            "60s",
        ],
        None,
    );
    assert!(ok, "{err}");
    let svc = service_name(&p.ns, "roll");
    assert!(
        p.swarm
            .list_services(&[(labels::NAME, "roll"), (labels::NAMESPACE, p.ns.as_str())])
            .await
            .unwrap()
            .is_empty(),
        "service {svc} left"
    );
    assert!(
        p.swarm
            .list_configs(&[(labels::NAME, "roll"), (labels::NAMESPACE, p.ns.as_str())])
            .await
            .unwrap()
            .is_empty(),
        "configs left"
    );
    assert_eq!(p.invoke("roll", "{}").await.0, 404);
}

/// Events and asynchronous invocations through the real agent on the Swarm: the original
/// system's message (published by python3-pika) and an async invocation run a python function
/// whose record holds its own output; under load, a function sleeping 5 s does not hold up
/// another function's executions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_and_async_invocations_run_on_the_real_agent() {
    use common::rabbitmq::{RabbitMq, pika_publish};
    let _heavy = HEAVY.lock().await;
    use lambda::events::execution::store as records;
    use lambda::events::execution::{Execution, ExecutionStatus};

    let p = Platform::start().await;
    let rabbit = RabbitMq::start();
    // A gateway and a listener with the broker, on this test's runtime.
    let stop = p.stop.clone();
    let gw = common::start_broker_gateway(
        &p.store,
        rabbit.url(),
        async move { stop.cancelled().await },
    );
    let listener = lambda::events::listener::ListenerConfig {
        amqp_url: rabbit.url(),
        prefetch: 64,
        connect_patience: Duration::from_secs(20),
        metrics_listen: None,
        retention: Default::default(),
        callbacks: Default::default(),
    };
    let stop = p.stop.clone();
    tokio::spawn(lambda::events::listener::run(
        p.store.clone(),
        listener,
        async move { stop.cancelled().await },
    ));

    let resize = "runtime: python3\nhandler: main.handler\ncode:\n  inline: |\n    import time\n    def handler(event, context):\n        if event.get('sleep'):\n            time.sleep(event['sleep'])\n        name = event.get('event_data', {}).get('filename', event.get('x'))\n        print('resizing', name)\n        return {'resized': name}\nconcurrency: 4\ntriggers:\n  events:\n    - {source: S1, type: FileCreate}\n";
    let slow = "runtime: python3\nhandler: main.handler\ncode:\n  inline: |\n    import time\n    def handler(event, context):\n        time.sleep(5)\n        return 'slept'\ntimeoutSeconds: 10\nconcurrency: 1\n";
    p.apply("resize", resize);
    p.apply("slow", slow);
    p.wait_ready("resize", Duration::from_secs(120)).await;
    p.wait_ready("slow", Duration::from_secs(120)).await;
    p.invoke_ready("resize", r#"{"x": "warm"}"#).await;

    let wait_final = |id: String| {
        let store = p.store.clone();
        let ns = p.ns.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(s) = records::get(&store, &ns, &id).await
                    && s.execution.status.is_terminal()
                {
                    return s.execution;
                }
                assert!(
                    Instant::now() < deadline,
                    "execution {id} not final in 60 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    // The original message, exactly as it was, by a foreign client.
    let original = format!(
        r#"{{"event_source": "S1", "user_name": "{}", "event_data": {{"type": "FileCreate", "filename": "test.py"}}}}"#,
        p.ns
    );
    pika_publish(&rabbit.url(), "FileCreate", &original);
    let deadline = Instant::now() + Duration::from_secs(60);
    let e: Execution = loop {
        let page = records::list(&p.store, &p.ns, "resize", None, 10, None)
            .await
            .expect("list");
        if let Some(e) = page.items.into_iter().find(|e| e.status.is_terminal()) {
            break e;
        }
        assert!(Instant::now() < deadline, "the event never ran resize");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{e:?}");
    assert_eq!(e.result.as_deref(), Some(r#"{"resized":"test.py"}"#));
    assert_eq!(
        e.logs, "resizing test.py\n",
        "the record holds the function's own output"
    );
    assert_eq!(
        e.event.as_ref().map(|r| r.type_.as_str()),
        Some("FileCreate")
    );

    // Head of line: the slow function gets 3 jobs (one slot), then 10 quick async invocations
    // of another function all finish before the slow one's last execution starts.
    let submit = |name: &'static str, body: String| {
        let (http, url) = (
            p.http.clone(),
            format!("{gw}/v1/namespaces/{}/functions/{name}/invoke", p.ns),
        );
        async move {
            let r = http
                .post(url)
                .header("prefer", "respond-async")
                .body(body)
                .send()
                .await
                .expect("submit");
            assert_eq!(r.status(), 202);
            let v: Value = r.json().await.expect("json");
            v["executionId"].as_str().expect("id").to_string()
        }
    };
    let mut slow_ids = Vec::new();
    for i in 0..3 {
        slow_ids.push(submit("slow", format!(r#"{{"i": {i}}}"#)).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut quick = Vec::new();
    for i in 0..10 {
        quick.push(submit("resize", format!(r#"{{"x": "q{i}"}}"#)).await);
    }
    let mut quick_done = Vec::new();
    for id in quick {
        let e = wait_final(id).await;
        assert_eq!(e.status, ExecutionStatus::Succeeded, "{e:?}");
        assert!(e.logs.starts_with("resizing q"), "{:?}", e.logs);
        quick_done.push(e.finished_at.expect("finished"));
    }
    let mut slow_starts = Vec::new();
    for id in slow_ids {
        let e = wait_final(id).await;
        assert_eq!(e.status, ExecutionStatus::Succeeded, "{e:?}");
        slow_starts.push(e.attempts.last().expect("attempt").started_at);
    }
    let last_quick = quick_done.iter().max().expect("quick");
    let last_slow_start = slow_starts.iter().max().expect("slow");
    assert!(
        last_quick < last_slow_start,
        "a quick execution waited behind the slow function: quick ended {last_quick}, slow's last started {last_slow_start}"
    );

    // A function at zero: its execution waits (no attempt spent), the listener's load report
    // brings a replica up, and it runs once.
    p.apply(
        "dormant",
        "runtime: shell\ncode:\n  inline: |\n    #!/bin/sh\n    cat\nminReplicas: 0\nretry: {maxAttempts: 1}\n",
    );
    p.wait_scaled_to_zero("dormant", Duration::from_secs(60))
        .await;
    let id = submit("dormant", r#"{"woken": true}"#.into()).await;
    let e = wait_final(id).await;
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{e:?}");
    assert_eq!(e.attempts.len(), 1, "{e:?}");
    assert_eq!(e.result.as_deref(), Some(r#"{"woken":true}"#));
}
