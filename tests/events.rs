//! The queue listener and asynchronous invocation end to end against a real RabbitMQ and a
//! real etcd: events in every accepted form (the original system's message published by a
//! client that is not ours: Debian's python3-pika) run the functions subscribed to them; async
//! invocations answer 202 after the broker's confirm, run, call back, retry into a dead-letter
//! queue read with a plain AMQP client; unknown and deleted functions; concurrency deferral
//! without head-of-line blocking. The replicas follow the agent's HTTP contract and are served
//! by the test (the function reconciler's part, ready endpoints in status, is played by it).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use common::Etcd;
use common::rabbitmq::{RabbitMq, pika_publish};
use common::replica::replica;
use lambda::api::FunctionSpec;
use lambda::events::broker::{EVENTS_EXCHANGE, POISON_QUEUE};
use lambda::events::delay::ATTEMPTS_HEADER;
use lambda::events::execution::retention::Retention;
use lambda::events::execution::store as records;
use lambda::events::execution::{Execution, ExecutionStatus};
use lambda::events::listener::{self, ListenerConfig};
use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct Platform {
    _etcd: Etcd,
    rabbit: RabbitMq,
    store: lambda::store::Store,
    base: String,
    metrics: String,
    http: reqwest::Client,
    replica: SocketAddr,
    listener: Option<CancellationToken>,
}

/// The execution id of an asynchronous submission, which must have been accepted (202).
async fn accepted_id(r: reqwest::Response) -> String {
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.expect("json")["executionId"]
        .as_str()
        .expect("id")
        .to_string()
}

async fn wait_http(http: &reqwest::Client, url: &str) {
    for _ in 0..200 {
        if http.get(url).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered");
}

impl Platform {
    /// etcd, RabbitMQ, a gateway with the broker (no auth: auth is the gateway suite's), one
    /// replica; the listener when `listener`.
    async fn start(listener: bool) -> Platform {
        let etcd = Etcd::start();
        let rabbit = RabbitMq::start();
        let store = etcd.store().await;
        let base = common::start_broker_gateway(&store, rabbit.url(), std::future::pending());
        let http = reqwest::Client::new();
        wait_http(&http, &format!("{base}/healthz")).await;
        let mut p = Platform {
            _etcd: etcd,
            rabbit,
            store,
            base,
            metrics: String::new(),
            http,
            replica: replica(Arc::new(AtomicUsize::new(0))).await,
            listener: None,
        };
        if listener {
            p.start_listener().await;
        }
        p
    }

    async fn start_listener(&mut self) {
        let m = common::free_port();
        let cfg = ListenerConfig {
            amqp_url: self.rabbit.url(),
            prefetch: 64,
            connect_patience: Duration::from_secs(20),
            metrics_listen: Some(format!("127.0.0.1:{m}").parse().expect("addr")),
            retention: Retention::default(),
            // The test's callback receiver is on loopback.
            callbacks: listener::CallbackPolicy {
                allow: vec!["127.0.0.0/8".parse().expect("net")],
            },
        };
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(listener::run(self.store.clone(), cfg, async move {
            s.cancelled().await
        }));
        self.metrics = format!("http://127.0.0.1:{m}/metrics");
        wait_http(&self.http, &self.metrics).await;
        self.listener = Some(stop);
    }

    /// A function in `ns` whose status lists the test's replica as its ready endpoint.
    async fn function(&self, ns: &str, name: &str, extra: &str) {
        common::replica::function_on(
            &self.store,
            ns,
            name,
            &format!("runtime: shell\ncode: {{inline: cat}}\n{extra}"),
            self.replica,
        )
        .await;
        // Gateway and listener follow etcd: wait until the gateway routes it.
        for _ in 0..200 {
            let r = self
                .http
                .get(format!("{}/v1/namespaces/{ns}/functions/{name}", self.base))
                .send()
                .await
                .expect("get");
            if r.status() == 200 && self.routed(ns, name).await {
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{ns}/{name} never routed");
    }

    async fn routed(&self, ns: &str, name: &str) -> bool {
        // An invoke of an unknown function is 404; anything else means the route exists.
        let r = self
            .http
            .post(format!(
                "{}/v1/namespaces/{ns}/functions/{name}/invoke",
                self.base
            ))
            .body("{}")
            .send()
            .await
            .expect("invoke");
        r.status() != 404
    }

    async fn submit(
        &self,
        ns: &str,
        name: &str,
        body: &str,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!(
                "{}/v1/namespaces/{ns}/functions/{name}/invoke",
                self.base
            ))
            .header("prefer", "respond-async")
            .body(body.to_string());
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        req.send().await.expect("submit")
    }

    /// Polls a record until it is final (or `until` holds), for at most `secs`.
    async fn wait_record(
        &self,
        ns: &str,
        id: &str,
        secs: u64,
        until: impl Fn(&Execution) -> bool,
    ) -> Execution {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Ok(s) = records::get(&self.store, ns, id).await
                && until(&s.execution)
            {
                return s.execution;
            }
            if Instant::now() > deadline {
                panic!(
                    "record {ns}/{id} not there in {secs} s: {:?}",
                    records::get(&self.store, ns, id).await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The newest records of a function once there are `n` final ones.
    async fn finished_records(&self, ns: &str, name: &str, n: usize) -> Vec<Execution> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let page = records::list(&self.store, ns, name, None, 50, None)
                .await
                .expect("list");
            let done: Vec<_> = page
                .items
                .into_iter()
                .filter(|e| e.status.is_terminal())
                .collect();
            if done.len() >= n {
                return done;
            }
            assert!(
                Instant::now() < deadline,
                "{ns}/{name}: {} of {n} final records",
                done.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(&self.metrics)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Publishes an asynchronous invocation's job straight to the executions queue, as a
    /// gateway accepted it at `created` (no record written).
    async fn publish_job(
        &self,
        id: &str,
        function: &str,
        data: Value,
        created: chrono::DateTime<chrono::Utc>,
    ) {
        let mut event = lambda::events::cloudevent::CloudEvent::new(
            id,
            format!("/v1/namespaces/default/functions/{function}"),
            "lambda.invoke.async",
        )
        .expect("event");
        event.data = Some(lambda::events::cloudevent::Data::Json(data));
        let job = listener::Job {
            execution_id: id.into(),
            function: lambda::api::ObjectKey::new("default", function),
            callback: None,
            event,
            created_at: Some(created),
        };
        self.amqp()
            .await
            .basic_publish(
                "".into(),
                listener::EXECUTIONS_QUEUE.into(),
                BasicPublishOptions::default(),
                &job.body(),
                job.properties(),
            )
            .await
            .expect("publish");
    }

    async fn amqp(&self) -> lapin::Channel {
        let c = Connection::connect(&self.rabbit.url(), ConnectionProperties::default())
            .await
            .expect("connect");
        let ch = c.create_channel().await.expect("channel");
        std::mem::forget(c);
        ch
    }
}

#[tokio::test]
async fn events_in_every_form_run_the_functions_subscribed_to_them() {
    let p = Platform::start(true).await;
    p.function(
        "alice",
        "resize",
        "triggers:\n  events:\n    - {source: S1, type: FileCreate}\n",
    )
    .await;
    p.function(
        "alice",
        "audit",
        "triggers:\n  events:\n    - {source: '*', typePrefix: File}\n",
    )
    .await;
    p.function(
        "default",
        "thumbs",
        "triggers:\n  events:\n    - {sourceSuffix: /uploads, typeSuffix: .created}\n",
    )
    .await;

    // The original system's message, exactly as it was, by a foreign client: two functions.
    let original = r#"{"event_source": "S1", "user_name": "alice", "event_data": {"type": "FileCreate", "filename": "test.py"}}"#;
    pika_publish(&p.rabbit.url(), "FileCreate", original);
    let resize = p.finished_records("alice", "resize", 1).await;
    let audit = p.finished_records("alice", "audit", 1).await;
    for e in [&resize[0], &audit[0]] {
        assert_eq!(e.status, ExecutionStatus::Succeeded, "{e:?}");
        let ev = e.event.as_ref().expect("event ref");
        assert_eq!(
            (ev.source.as_str(), ev.type_.as_str()),
            ("S1", "FileCreate")
        );
        // The function got the whole message as its event.
        let result: Value =
            serde_json::from_str(e.result.as_deref().expect("result")).expect("json");
        assert_eq!(
            result["echo"]["event_data"]["filename"], "test.py",
            "{result}"
        );
        // Its own output, as the agent captured it for this invocation.
        assert_eq!(e.logs, format!("handling {}\n", e.id));
    }
    assert_ne!(resize[0].id, audit[0].id, "one execution per function");

    // CloudEvents binary mode over AMQP (ce-* headers), suffix matching.
    let ch = p.amqp().await;
    let mut h = FieldTable::default();
    for (k, v) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "b-1"),
        ("ce-source", "storage/uploads"),
        ("ce-type", "image.created"),
    ] {
        h.insert(k.into(), AMQPValue::LongString(v.into()));
    }
    ch.basic_publish(
        EVENTS_EXCHANGE.into(),
        "image.created".into(),
        BasicPublishOptions::default(),
        br#"{"name": "cat.png"}"#,
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_headers(h),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm");
    let thumbs = p.finished_records("default", "thumbs", 1).await;
    let r: Value =
        serde_json::from_str(thumbs[0].result.as_deref().expect("result")).expect("json");
    assert_eq!(r["echo"]["name"], "cat.png");

    // Structured mode over HTTP, and binary mode over HTTP to the namespaced endpoint.
    let structured = json!({"specversion": "1.0", "id": "s-1", "source": "web/uploads", "type": "doc.created", "data": {"n": 2}});
    let r = p
        .http
        .post(format!("{}/v1/events", p.base))
        .header("content-type", "application/cloudevents+json")
        .body(structured.to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().await.expect("json")["id"], "s-1");
    let r = p
        .http
        .post(format!("{}/v1/namespaces/alice/events", p.base))
        .header("ce-specversion", "1.0")
        .header("ce-id", "h-1")
        .header("ce-source", "S2")
        .header("ce-type", "FileDelete")
        .header("content-type", "application/json")
        .body(r#"{"filename": "old.py"}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 202);
    assert_eq!(p.finished_records("default", "thumbs", 2).await.len(), 2);
    let audit = p.finished_records("alice", "audit", 2).await;
    assert_eq!(audit[0].event.as_ref().map(|e| e.id.as_str()), Some("h-1"));
    // resize wants S1/FileCreate only.
    assert_eq!(
        records::list(&p.store, "alice", "resize", None, 50, None)
            .await
            .expect("list")
            .items
            .len(),
        1
    );

    // Unmatched and unparseable: counted, moved aside, the queue keeps flowing.
    let r = p
        .http
        .post(format!("{}/v1/events", p.base))
        .header("content-type", "application/cloudevents+json")
        .body(
            json!({"specversion": "1.0", "id": "u-1", "source": "nobody", "type": "nothing"})
                .to_string(),
        )
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 202);
    let r = p
        .http
        .post(format!("{}/v1/events", p.base))
        .body("not json")
        .send()
        .await
        .expect("post");
    assert_eq!(
        r.status(),
        400,
        "a bad event over HTTP is the caller's error"
    );
    ch.basic_publish(
        EVENTS_EXCHANGE.into(),
        "x".into(),
        BasicPublishOptions::default(),
        b"not json",
        BasicProperties::default(),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm");
    let deadline = Instant::now() + Duration::from_secs(20);
    let poisoned = loop {
        if let Some(m) = ch
            .basic_get(POISON_QUEUE.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
        {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "nothing reached the poison queue"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(poisoned.delivery.data, b"not json");
    assert!(p.metric("lambda_events_unmatched_total").await >= 1.0);
    assert!(p.metric("lambda_events_poison_total").await >= 1.0);
    let text = p
        .http
        .get(&p.metrics)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains("lambda_queue_depth{queue=\"lambda.executions\"}"),
        "{text}"
    );
    // And a later event still runs.
    pika_publish(
        &p.rabbit.url(),
        "FileCreate",
        &original.replace("test.py", "next.py"),
    );
    p.finished_records("alice", "resize", 1).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while records::list(&p.store, "alice", "audit", None, 50, None)
        .await
        .expect("list")
        .items
        .len()
        < 2
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn async_invocations_answer_after_the_confirm_run_retry_and_dead_letter() {
    let mut p = Platform::start(false).await;
    p.function("default", "ok", "").await;
    p.function("default", "gone", "").await;
    p.function(
        "default",
        "flaky",
        "retry: {maxAttempts: 3, backoffSeconds: 1, deadLetterQueue: flaky-dlq}\n",
    )
    .await;
    p.function("default", "slow", "concurrency: 1\n").await;

    // Submitted while no listener runs: queued, durable. Then the function goes away.
    let r = p.submit("default", "gone", "{}", &[]).await;
    let gone_id = accepted_id(r).await;
    p.store
        .delete::<FunctionSpec>("default", "gone")
        .await
        .expect("delete");
    p.start_listener().await;
    let e = p
        .wait_record("default", &gone_id, 30, |e| e.status.is_terminal())
        .await;
    assert_eq!(
        (e.status, e.reason.as_deref()),
        (ExecutionStatus::Failed, Some("FunctionNotFound"))
    );

    // 202 with the id and Location; the record reaches Succeeded with the result; callback.
    let (cb_tx, mut cb_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String, String)>();
    let cb = axum::Router::new().route(
        "/done",
        axum::routing::post(move |h: axum::http::HeaderMap, body: String| {
            let tx = cb_tx.clone();
            async move {
                let get = |k: &str| {
                    h.get(k)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                let _ = tx.send((
                    get("x-lambda-execution-id"),
                    get("x-lambda-execution-status"),
                    body,
                ));
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let cb_url = format!("http://{}/done", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, cb).await });
    let r = p
        .submit(
            "default",
            "ok",
            r#"{"n": 1}"#,
            &[
                ("x-callback-url", &cb_url),
                ("x-lambda-invocation-id", "inv-1"),
            ],
        )
        .await;
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    let body: Value = r.json().await.expect("json");
    let id = body["executionId"].as_str().expect("id").to_string();
    assert_eq!(location, format!("/v1/namespaces/default/executions/{id}"));
    // Following Location at once finds the execution (its record is written behind the 202).
    let now = p
        .http
        .get(format!("{}{location}", p.base))
        .send()
        .await
        .expect("get");
    assert_eq!(now.status(), 200);
    let e = p
        .wait_record("default", &id, 30, |e| e.status.is_terminal())
        .await;
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{e:?}");
    let got: Value = p
        .http
        .get(format!("{}{location}", p.base))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(got["status"], "Succeeded");
    assert_eq!(
        serde_json::from_str::<Value>(got["result"].as_str().expect("result")).expect("json")["echo"]
            ["n"],
        1
    );
    let (cb_id, cb_status, cb_body) = tokio::time::timeout(Duration::from_secs(20), cb_rx.recv())
        .await
        .expect("callback within 20 s")
        .expect("callback");
    assert_eq!(
        (cb_id.as_str(), cb_status.as_str()),
        (id.as_str(), "Succeeded")
    );
    assert_eq!(
        serde_json::from_str::<Value>(&cb_body).expect("json")["echo"]["n"],
        1
    );
    // The same invocation id again is the same execution, not a second run.
    let again = p
        .submit(
            "default",
            "ok",
            r#"{"n": 1}"#,
            &[("x-lambda-invocation-id", "inv-1")],
        )
        .await;
    assert_eq!(again.status(), 202);
    assert_eq!(
        again.json::<Value>().await.expect("json")["executionId"],
        id.as_str()
    );

    // A callback to the cloud's metadata service is refused by the listener's policy; the
    // execution itself runs.
    let r = p
        .submit(
            "default",
            "ok",
            "{}",
            &[("x-callback-url", "http://169.254.169.254/latest/meta-data")],
        )
        .await;
    let meta_id = accepted_id(r).await;
    let e = p
        .wait_record("default", &meta_id, 30, |e| e.status.is_terminal())
        .await;
    assert_eq!(e.status, ExecutionStatus::Succeeded);
    let deadline = Instant::now() + Duration::from_secs(10);
    while p
        .metric(r#"lambda_execution_callbacks_total{outcome="refused"}"#)
        .await
        < 1.0
    {
        assert!(Instant::now() < deadline, "the refused callback is counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        p.metric(r#"lambda_execution_callbacks_total{outcome="delivered"}"#)
            .await
            >= 1.0
    );

    // The gateway counts its submissions and says it is ready (etcd and broker).
    let text = p
        .http
        .get(format!("{}/metrics", p.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.lines().any(|l| {
            l.starts_with("lambda_gateway_async_submissions_total{")
                && l.contains(r#"function="ok""#)
                && l.contains(r#"code="202""#)
                && !l.ends_with(" 0")
        }),
        "{text}"
    );
    let ready = p
        .http
        .get(format!("{}/readyz", p.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.expect("json"),
        json!({"etcd": "ok", "broker": "ok"})
    );

    // A job whose record was never written (the gateway's write after the 202 failed): the
    // listener writes the record from the job and runs it.
    let created = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 3);
    p.publish_job("orphan-1", "ok", json!({"n": 2}), created)
        .await;
    let e = p
        .wait_record("default", "orphan-1", 30, |e| e.status.is_terminal())
        .await;
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{e:?}");
    assert_eq!(e.trigger, lambda::events::execution::Trigger::Async);
    assert_eq!(e.created_at, created);

    // Submit-time errors.
    assert_eq!(p.submit("default", "nope", "{}", &[]).await.status(), 404);
    assert_eq!(
        p.submit("default", "ok", "not json", &[]).await.status(),
        400
    );
    assert_eq!(
        p.submit("default", "ok", "{}", &[("x-callback-url", "ftp://x")])
            .await
            .status(),
        400
    );
    let big = format!(r#"{{"pad": "{}"}}"#, "x".repeat(7 * 1024 * 1024));
    assert_eq!(p.submit("default", "ok", &big, &[]).await.status(), 413);

    // Every attempt fails: retried with backoff, then the dead-letter queue with the history.
    let r = p.submit("default", "flaky", r#"{"fail": true}"#, &[]).await;
    let id = accepted_id(r).await;
    let e = p
        .wait_record("default", &id, 40, |e| e.status.is_terminal())
        .await;
    assert_eq!(
        (e.status, e.reason.as_deref()),
        (ExecutionStatus::DeadLettered, Some("RetriesExhausted"))
    );
    assert_eq!(e.attempts.len(), 3);
    // Every attempt's output, in order.
    assert_eq!(
        e.logs,
        format!(
            "handling {0}\n--- attempt 2 ---\nhandling {0}\n--- attempt 3 ---\nhandling {0}\n",
            e.id
        )
    );
    assert!(
        e.attempts
            .iter()
            .all(|a| a.http_status == Some(502) && a.error.as_deref() == Some("ValueError: boom")),
        "{e:?}"
    );
    let gap = e.attempts[1].started_at - e.attempts[0].ended_at.expect("ended");
    assert!(
        gap >= chrono::Duration::milliseconds(450),
        "backoff of at least half a second: {gap}"
    );
    let ch = p.amqp().await;
    let dead = ch
        .basic_get("flaky-dlq".into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
        .expect("a dead letter");
    let headers = dead.delivery.properties.headers().clone().expect("headers");
    let attempts = match headers.inner().get(ATTEMPTS_HEADER) {
        Some(AMQPValue::LongString(s)) => {
            serde_json::from_slice::<Value>(s.as_bytes()).expect("json")
        }
        other => panic!("no attempts header: {other:?}"),
    };
    assert_eq!(attempts.as_array().map(Vec::len), Some(3), "{attempts}");
    assert!(p.metric("lambda_executions_retries_total").await >= 2.0);
    // And a Warning event on the function says so (`lambda get events`).
    let events = p
        .store
        .list::<lambda::api::EventSpec>(Some("default"))
        .await
        .expect("events")
        .items;
    assert!(
        events.iter().any(|e| e.spec.reason == "DeadLettered"
            && e.spec.involved_object.name == "flaky"
            && e.spec.message.contains("flaky-dlq")),
        "{events:?}"
    );

    // Past its maximum age (6 h by default) when taken: not run, dead-lettered as too old.
    let old = chrono::Utc::now() - chrono::Duration::hours(7);
    p.publish_job("too-old-1", "flaky", json!({"fail": true}), old)
        .await;
    let e = p
        .wait_record("default", "too-old-1", 30, |e| e.status.is_terminal())
        .await;
    assert_eq!(
        (e.status, e.reason.as_deref(), e.attempts.len()),
        (ExecutionStatus::DeadLettered, Some("EventTooOld"), 0),
        "{e:?}"
    );
    let dead = ch
        .basic_get("flaky-dlq".into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
        .expect("the too old one's dead letter");
    let headers = dead.delivery.properties.headers().clone().expect("headers");
    let text = |name: &str| match headers.inner().get(name) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(
        (
            text(lambda::events::delay::EXECUTION_HEADER).as_str(),
            text(lambda::events::delay::REASON_HEADER).as_str()
        ),
        ("too-old-1", "EventTooOld")
    );

    // A function at its concurrency gets its jobs back later, while another's run at once.
    let mut slow = Vec::new();
    for i in 0..3 {
        let r = p
            .submit(
                "default",
                "slow",
                &format!(r#"{{"sleep_ms": 1500, "i": {i}}}"#),
                &[],
            )
            .await;
        slow.push(accepted_id(r).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = p.submit("default", "ok", r#"{"fast": true}"#, &[]).await;
    let id = accepted_id(r).await;
    let fast = p
        .wait_record("default", &id, 10, |e| {
            e.status == ExecutionStatus::Succeeded
        })
        .await;
    let mut last_slow_start = None;
    for id in &slow {
        let e = p
            .wait_record("default", id, 30, |e| e.status.is_terminal())
            .await;
        assert_eq!(e.status, ExecutionStatus::Succeeded, "{e:?}");
        assert_eq!(e.attempts.len(), 1, "deferrals are not attempts: {e:?}");
        last_slow_start = last_slow_start.max(Some(e.attempts[0].started_at));
    }
    // The slow function ran its three one at a time; the fast one did not wait behind them.
    let fast_end = fast.finished_at.expect("finished");
    assert!(
        Some(fast_end) < last_slow_start,
        "fast ended {fast_end}, last slow start {last_slow_start:?}"
    );
    assert!(p.metric("lambda_executions_deferred_total").await >= 1.0);
    if let Some(stop) = p.listener.take() {
        stop.cancel();
    }
}
