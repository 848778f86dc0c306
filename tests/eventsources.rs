//! Event sources end to end, through the interfaces a user has (`lambda apply`, `get`,
//! `delete`): a `lambda controller` process runs them, the queue listener turns their events into
//! executions of a replica that follows the agent's contract. Real etcd, real RabbitMQ (which
//! also plays the cloud's notification bus here; the real Nova's is in openstack_contract.rs).
//!
//! - directory: files there at start are not events; 100 files → 100 executions with their
//!   names; a missing directory is a condition naming it; a deleted source stops watching.
//! - openstack: the real Nova's captured notifications (versioned and legacy, oslo envelopes)
//!   published on exchange `nova` start the functions subscribed by type, the event id being
//!   the notification's message_id; a malformed one is counted and skipped; an unreachable bus
//!   is `Connected=False` with its address (no password); a deleted source's queue is gone.
//!
//! Prints directory create → function start and notification → function start p50/p99.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::controller::Controller;
use common::rabbitmq::RabbitMq;
use common::replica::{function_on, replica};
use common::{Etcd, eventually, lambda};
use lambda::api::{Condition, ConditionStatus, EventSourceSpec, Object};
use lambda::events::broker::Broker;
use lambda::events::execution::store as records;
use lambda::events::execution::{Execution, ExecutionStatus};
use lapin::options::ExchangeDeclareOptions;
use lapin::{BasicProperties, ExchangeKind};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const NS: &str = "alice";

async fn executions(store: &lambda::store::Store, function: &str) -> Vec<Execution> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = records::list(store, NS, function, None, 100, token.as_deref())
            .await
            .expect("list executions");
        out.extend(page.items);
        match page.continue_token {
            Some(t) => token = Some(t),
            None => return out,
        }
    }
}

/// The executions of `function` once `n` of them are final.
async fn final_executions(
    store: &lambda::store::Store,
    function: &str,
    n: usize,
) -> Vec<Execution> {
    eventually(
        &format!("{n} final executions of {function}"),
        Duration::from_secs(60),
        async || {
            let all = executions(store, function).await;
            (all.len() >= n && all.iter().all(|e| e.status.is_terminal())).then_some(all)
        },
    )
    .await
}

async fn source(store: &lambda::store::Store, name: &str) -> Option<Object<EventSourceSpec>> {
    store.get::<EventSourceSpec>(NS, name).await.ok()
}

fn condition(es: &Object<EventSourceSpec>, t: &str) -> Option<Condition> {
    es.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == t).cloned())
}

/// The source's `Connected` condition once it has the status `want`.
async fn connected(store: &lambda::store::Store, name: &str, want: ConditionStatus) -> Condition {
    eventually(
        &format!("EventSource {name} Connected={want}"),
        Duration::from_secs(30),
        async || {
            let es = source(store, name).await?;
            condition(&es, "Connected").filter(|c| c.status == want)
        },
    )
    .await
}

fn percentiles(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

fn started(e: &Execution) -> DateTime<Utc> {
    e.attempts.first().expect("an attempt").started_at
}

fn apply(etcd: &Etcd, manifest: &str) {
    let (ok, out, err) = lambda(etcd, &["apply", "-n", NS, "-f", "-"], Some(manifest));
    assert!(ok, "lambda apply: {out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn directory_and_notification_sources_start_functions() {
    let etcd = Etcd::start();
    let rabbit = RabbitMq::start();
    let store = etcd.store().await;
    let stop = CancellationToken::new();
    common::rabbitmq::spawn_listener(&store, rabbit.url(), stop.clone());
    let hits = Arc::new(AtomicUsize::new(0));
    let replica = replica(hits.clone()).await;
    let logs = tempfile::tempdir().expect("temp dir");
    let drop_dir = tempfile::tempdir().expect("drop dir");
    std::fs::write(drop_dir.path().join("there-before.txt"), "old").expect("old file");
    let _controller = Controller::start(
        &etcd,
        &rabbit.url(),
        "a",
        &logs.path().join("controller.log"),
        &[
            ("OS_NOTIFICATION_URL", rabbit.url().as_str()),
            ("BAD_BUS_URL", "rabbit://nova:s3cret@127.0.0.1:9/"),
        ],
    );
    for (name, spec) in [
        (
            "ondrop",
            "runtime: shell\ncode: {inline: cat}\nconcurrency: 64\ntriggers:\n  events:\n    - {source: S1, type: FileCreate}\n",
        ),
        (
            "onvm",
            "runtime: shell\ncode: {inline: cat}\ntriggers:\n  events:\n    - {sourcePrefix: openstack/nova-compute, type: instance.create.end}\n    - {sourcePrefix: openstack/compute., type: compute.instance.create.end}\n",
        ),
    ] {
        function_on(&store, NS, name, spec, replica).await;
    }
    let d = drop_dir.path().display();
    apply(
        &etcd,
        &format!(
            "kind: EventSource\napiVersion: lambda/v1alpha1\nmetadata: {{name: drop}}\nspec:\n  source: S1\n  directory: {{path: {d}, recursive: false, events: [FileCreate]}}\n---\n\
             kind: EventSource\napiVersion: lambda/v1alpha1\nmetadata: {{name: nodir}}\nspec:\n  directory: {{path: /nonexistent/lambda-drop}}\n---\n\
             kind: EventSource\napiVersion: lambda/v1alpha1\nmetadata: {{name: badbus}}\nspec:\n  openstack: {{transportUrlEnv: BAD_BUS_URL}}\n---\n\
             kind: EventSource\napiVersion: lambda/v1alpha1\nmetadata: {{name: nova}}\nspec:\n  openstack: {{transportUrlEnv: OS_NOTIFICATION_URL, exchange: nova, topic: versioned_notifications.info, eventTypes: [instance.create.end]}}\n---\n\
             kind: EventSource\napiVersion: lambda/v1alpha1\nmetadata: {{name: legacy}}\nspec:\n  openstack: {{transportUrlEnv: OS_NOTIFICATION_URL, topic: notifications.info, eventTypes: [\"compute.instance.*\"]}}\n"
        ),
    );
    // A manifest with a bad field is refused with its path.
    let (ok, _, err) = lambda(
        &etcd,
        &["apply", "-n", NS, "-f", "-"],
        Some(
            "kind: EventSource\napiVersion: lambda/v1alpha1\nmetadata: {name: bad}\nspec:\n  openstack: {transportUrlEnv: \"rabbit://a:b@h/\"}\n",
        ),
    );
    assert!(
        !ok && err.contains("spec.openstack.transportUrlEnv"),
        "{err}"
    );

    // --- directory ---
    connected(&store, "drop", ConditionStatus::True).await;
    let mut written = std::collections::HashMap::new();
    for i in 0..100 {
        let name = format!("file-{i:03}.csv");
        let row = format!("row {i}\n");
        written.insert(name.clone(), (Utc::now(), row.len()));
        std::fs::write(drop_dir.path().join(&name), row).expect("write");
    }
    let done = final_executions(&store, "ondrop", 100).await;
    assert_eq!(done.len(), 100, "one execution per file");
    let mut names = BTreeSet::new();
    let mut latency = Vec::new();
    for e in &done {
        assert_eq!(e.status, ExecutionStatus::Succeeded, "{e:?}");
        let ev = e.event.as_ref().expect("event");
        assert_eq!(
            (ev.source.as_str(), ev.type_.as_str()),
            ("S1", "FileCreate")
        );
        let echoed: Value =
            serde_json::from_str(e.result.as_deref().expect("result")).expect("json");
        let name = echoed["echo"]["name"].as_str().expect("name").to_string();
        let path = echoed["echo"]["path"].as_str().expect("path");
        assert_eq!(path, format!("{d}/{name}"));
        let (at, len) = written[&name];
        assert_eq!(echoed["echo"]["size"], len, "{echoed}");
        latency.push((started(e) - at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        names.insert(name);
    }
    assert_eq!(names, written.keys().cloned().collect::<BTreeSet<_>>());
    let (p50, p99) = percentiles(latency);
    eprintln!(
        "directory create -> function start, a burst of 100 files: p50 {p50:.1} ms, p99 {p99:.1} ms"
    );
    // One file at a time: the latency of the path itself, not of a queue.
    let mut paced = std::collections::HashMap::new();
    for i in 0..20 {
        let name = format!("paced-{i:02}.txt");
        paced.insert(name.clone(), Utc::now());
        std::fs::write(drop_dir.path().join(&name), "x").expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = final_executions(&store, "ondrop", 120).await;
    let latency: Vec<f64> = done
        .iter()
        .filter_map(|e| {
            let r: Value = serde_json::from_str(e.result.as_deref()?).ok()?;
            let at = paced.get(r["echo"]["name"].as_str()?)?;
            Some((started(e) - *at).num_microseconds().unwrap_or(0) as f64 / 1000.0)
        })
        .collect();
    assert_eq!(latency.len(), 20, "one execution per paced file");
    let (p50, p99) = percentiles(latency);
    eprintln!(
        "directory create -> function start, 20 files 100 ms apart: p50 {p50:.1} ms, p99 {p99:.1} ms"
    );
    let drop_es = eventually(
        "drop counts 120 published",
        Duration::from_secs(10),
        async || {
            source(&store, "drop")
                .await
                .filter(|s| s.status.as_ref().is_some_and(|s| s.events_published == 120))
        },
    )
    .await;
    assert_eq!(
        condition(&drop_es, "Ready").map(|c| c.reason).as_deref(),
        Some("Publishing")
    );

    let nodir = connected(&store, "nodir", ConditionStatus::False).await;
    assert_eq!(nodir.reason, "DirectoryUnavailable");
    assert!(
        nodir.message.contains("/nonexistent/lambda-drop"),
        "{nodir:?}"
    );
    let bus = connected(&store, "badbus", ConditionStatus::False).await;
    assert_eq!(bus.reason, "NotConnected");
    assert!(
        bus.message.contains("127.0.0.1:9") && !bus.message.contains("s3cret"),
        "{bus:?}"
    );
    let (ok, out, err) = lambda(&etcd, &["get", "es", "-n", NS], None);
    assert!(ok, "{err}");
    for want in [
        "drop",
        "nodir",
        "badbus",
        "DirectoryUnavailable",
        "NotConnected",
    ] {
        assert!(out.contains(want), "lambda get es lacks {want}:\n{out}");
    }

    // --- notifications: the real Nova's, captured (tests/fixtures), on exchange nova ---
    connected(&store, "nova", ConditionStatus::True).await;
    connected(&store, "legacy", ConditionStatus::True).await;
    let bus = Broker::connect(&rabbit.url()).await.expect("bus");
    bus.declare_exchange_with(
        "nova",
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
    )
    .await
    .expect("exchange nova, as oslo declares it");
    let fixture =
        |f: &str| std::fs::read(common::root().join("tests/fixtures").join(f)).expect("fixture");
    let notify = async |topic: &str, body: &[u8]| {
        let props = BasicProperties::default().with_content_type("application/json".into());
        bus.publish("nova", topic, body, props)
            .await
            .expect("publish notification");
    };
    notify(
        "versioned_notifications.info",
        b"{\"oslo.version\": \"2.0\", \"oslo.message\": \"{nope\"}",
    )
    .await;
    notify(
        "versioned_notifications.info",
        &fixture("nova-instance-delete-end.json"),
    )
    .await;
    let sent = Utc::now();
    notify(
        "versioned_notifications.info",
        &fixture("nova-instance-create-end.json"),
    )
    .await;
    notify(
        "notifications.info",
        &fixture("nova-legacy-instance-create-end.json"),
    )
    .await;
    let done = final_executions(&store, "onvm", 2).await;
    assert_eq!(
        done.len(),
        2,
        "the versioned and the legacy instance.create.end: {done:?}"
    );
    let real: Value =
        serde_json::from_slice(&fixture("nova-instance-create-end.json")).expect("json");
    let inner: Value =
        serde_json::from_str(real["oslo.message"].as_str().expect("inner")).expect("inner json");
    let versioned = done
        .iter()
        .find(|e| {
            e.event
                .as_ref()
                .is_some_and(|ev| ev.type_ == "instance.create.end")
        })
        .expect("the versioned notification's execution");
    let ev = versioned.event.as_ref().expect("event");
    assert_eq!(ev.id, inner["message_id"].as_str().expect("message_id"));
    assert_eq!(ev.source, "openstack/nova-compute:lambda-compute");
    let echoed: Value =
        serde_json::from_str(versioned.result.as_deref().expect("result")).expect("json");
    assert_eq!(
        echoed["echo"]["nova_object.data"]["uuid"], inner["payload"]["nova_object.data"]["uuid"],
        "the server id reaches the function"
    );
    assert!(done.iter().any(|e| {
        e.event
            .as_ref()
            .is_some_and(|ev| ev.type_ == "compute.instance.create.end")
    }));
    eprintln!(
        "notification -> function start (one, on the test bus): {:.1} ms",
        (started(versioned) - sent).num_microseconds().unwrap_or(0) as f64 / 1000.0
    );
    let nova = eventually(
        "nova counts the malformed one",
        Duration::from_secs(10),
        async || {
            source(&store, "nova").await.filter(|s| {
                s.status
                    .as_ref()
                    .is_some_and(|s| s.events_skipped == 1 && s.events_published == 1)
            })
        },
    )
    .await;
    let status = nova.status.expect("status");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("oslo.message")),
        "{status:?}"
    );
    assert!(status.last_event_time.is_some());

    // --- deletion: the consumer and its queue, the watch, go ---
    let queues = || rabbit.ctl(&["list_queues", "name"]).expect("list queues");
    assert!(
        queues().contains("lambda.eventsource.alice.nova."),
        "{}",
        queues()
    );
    for name in ["nova", "drop"] {
        let (ok, out, err) = lambda(
            &etcd,
            &["delete", "es", name, "-n", NS, "--wait", "--timeout", "30s"],
            None,
        );
        assert!(ok, "lambda delete es {name}: {out}{err}");
    }
    assert!(
        !queues().contains("lambda.eventsource.alice.nova."),
        "{}",
        queues()
    );
    std::fs::write(drop_dir.path().join("after-delete.csv"), "x").expect("write");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        executions(&store, "ondrop").await.len(),
        120,
        "a deleted source publishes nothing"
    );
    stop.cancel();
}
