//! Execution records against a real etcd: create-once with duplicate detection (also under
//! concurrent deliveries), optimistic updates, newest-first pages with status filters and
//! continue tokens, retention sweeps, and unreadable values.

mod common;

use chrono::{DateTime, Utc};
use common::Etcd;
use lambda::api::ObjectKey;
use lambda::events::cloudevent::CloudEvent;
use lambda::events::execution::retention::Retention;
use lambda::events::execution::store::{self, Begin, ExecutionError};
use lambda::events::execution::{
    EventRef, Execution, ExecutionStatus, Outcome, Trigger, execution_id,
};

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("time")
}

fn record(function: &str, event_id: &str, created: DateTime<Utc>) -> Execution {
    let key = ObjectKey::new("alice", function);
    let event = CloudEvent::new(event_id, "S1", "FileCreate").expect("event");
    Execution::new(
        execution_id(&key, &event),
        &key,
        Trigger::Event { index: 0 },
        Some(EventRef::of(&event)),
        created,
    )
}

async fn finished(s: &lambda::store::Store, e: &Execution, status: ExecutionStatus) {
    let mut stored = store::get(s, &e.namespace, &e.id).await.expect("get");
    let x = &mut stored.execution;
    x.start_attempt(e.created_at).expect("start");
    x.finish_attempt(e.created_at, Outcome::Succeeded, Some(200), None)
        .expect("end");
    x.finish(status, None, e.created_at).expect("final");
    store::update(s, &stored).await.expect("update");
}

#[tokio::test]
async fn a_redelivered_execution_is_a_duplicate_and_updates_are_optimistic() {
    let etcd = Etcd::start();
    let s = etcd.store().await;
    let e = record("on-create", "e-1", at(0));
    let Begin::New(first) = store::begin(&s, &e).await.expect("begin") else {
        panic!("first delivery must be new");
    };
    assert_eq!(first.execution, e);
    let got = store::get(&s, "alice", &e.id).await.expect("get");
    assert_eq!(got, first);
    for n in 1..=2 {
        match store::begin(&s, &e).await.expect("again") {
            Begin::Duplicate(d) => assert_eq!(d.execution.duplicates, n),
            Begin::New(_) => panic!("a redelivery must be recognised"),
        }
    }
    // The stale copy (read before the duplicates were counted) cannot overwrite.
    let mut stale = first.clone();
    stale.execution.start_attempt(at(1)).expect("start");
    let err = store::update(&s, &stale).await.expect_err("stale");
    assert!(matches!(err, ExecutionError::Conflict { .. }), "{err}");
    let mut fresh = store::get(&s, "alice", &e.id).await.expect("get");
    fresh.execution.start_attempt(at(1)).expect("start");
    let written = store::update(&s, &fresh).await.expect("update");
    assert!(written.revision > fresh.revision);
    let back = store::get(&s, "alice", &e.id).await.expect("get");
    assert_eq!(back.execution.status, ExecutionStatus::Running);
    assert_eq!(back.execution.duplicates, 2);
    // The record is plain JSON that etcdctl shows.
    let raw = etcd
        .etcdctl(&[
            "get",
            "--print-value-only",
            &format!("/lambda/executions/alice/{}", e.id),
        ])
        .expect("etcdctl");
    assert!(raw.contains("\"status\":\"Running\""), "{raw}");
}

#[tokio::test]
async fn concurrent_deliveries_start_one_execution() {
    let etcd = Etcd::start();
    let s = etcd.store().await;
    let e = record("on-create", "e-race", at(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (s, e) = (s.clone(), e.clone());
            tokio::spawn(async move { store::begin(&s, &e).await })
        })
        .collect();
    let mut new = 0;
    for t in tasks {
        if let Begin::New(_) = t.await.expect("join").expect("begin") {
            new += 1;
        }
    }
    assert_eq!(new, 1);
    let got = store::get(&s, "alice", &e.id).await.expect("get");
    assert_eq!(got.execution.duplicates, 7);
}

#[tokio::test]
async fn history_lists_newest_first_with_filters_and_pages() {
    let etcd = Etcd::start();
    let s = etcd.store().await;
    let mut all = Vec::new();
    for i in 0..7 {
        let e = record("lister", &format!("e-{i}"), at(i));
        store::begin(&s, &e).await.expect("begin");
        if i % 2 == 0 {
            finished(&s, &e, ExecutionStatus::Succeeded).await;
        }
        all.push(e);
    }
    // Another function's records never show.
    store::begin(&s, &record("other", "e-0", at(100)))
        .await
        .expect("other");
    let ids = |p: &store::Page| {
        p.items
            .iter()
            .map(|e| e.event.as_ref().map(|r| r.id.clone()).unwrap_or_default())
            .collect::<Vec<_>>()
    };

    let p1 = store::list(&s, "alice", "lister", None, 3, None)
        .await
        .expect("list");
    assert_eq!(ids(&p1), ["e-6", "e-5", "e-4"]);
    let t1 = p1.continue_token.clone().expect("more");
    let p2 = store::list(&s, "alice", "lister", None, 3, Some(&t1))
        .await
        .expect("page 2");
    assert_eq!(ids(&p2), ["e-3", "e-2", "e-1"]);
    let t2 = p2.continue_token.clone().expect("more");
    let p3 = store::list(&s, "alice", "lister", None, 3, Some(&t2))
        .await
        .expect("page 3");
    assert_eq!(ids(&p3), ["e-0"]);
    assert_eq!(p3.continue_token, None);

    let done = store::list(
        &s,
        "alice",
        "lister",
        Some(ExecutionStatus::Succeeded),
        2,
        None,
    )
    .await
    .expect("filtered");
    assert_eq!(ids(&done), ["e-6", "e-4"]);
    let rest = store::list(
        &s,
        "alice",
        "lister",
        Some(ExecutionStatus::Succeeded),
        2,
        done.continue_token.as_deref(),
    )
    .await
    .expect("filtered 2");
    assert_eq!(ids(&rest), ["e-2", "e-0"]);
    let queued = store::list(
        &s,
        "alice",
        "lister",
        Some(ExecutionStatus::Queued),
        100,
        None,
    )
    .await
    .expect("queued");
    assert_eq!(ids(&queued), ["e-5", "e-3", "e-1"]);
    assert_eq!(queued.continue_token, None);

    let err = store::list(&s, "alice", "lister", None, 3, Some("garbage"))
        .await
        .expect_err("token");
    assert!(
        matches!(err, ExecutionError::InvalidContinue { .. }),
        "{err}"
    );
    let empty = store::list(&s, "alice", "nobody", None, 3, None)
        .await
        .expect("empty");
    assert!(empty.items.is_empty() && empty.continue_token.is_none());
}

#[tokio::test]
async fn retention_prunes_by_count_and_age_but_keeps_in_flight_records() {
    let etcd = Etcd::start();
    let s = etcd.store().await;
    // f: five finished (t=0..4) and one in flight (t=1); g: one old finished one.
    let mut f = Vec::new();
    for i in 0..5 {
        let e = record("f", &format!("e-{i}"), at(i));
        store::begin(&s, &e).await.expect("begin");
        finished(&s, &e, ExecutionStatus::Failed).await;
        f.push(e);
    }
    let inflight = record("f", "e-open", at(1));
    store::begin(&s, &inflight).await.expect("begin");
    let old = record("g", "e-old", at(-10_000));
    store::begin(&s, &old).await.expect("begin");
    finished(&s, &old, ExecutionStatus::Succeeded).await;

    let policy = Retention {
        max_age: std::time::Duration::from_secs(3600),
        max_per_function: 2,
    };
    let removed = store::prune_all(&s, &policy, at(10)).await.expect("prune");
    // f keeps its two newest finished records (4, 3) and the in-flight one; g's is too old.
    assert_eq!(removed, 4);
    let left = store::list(&s, "alice", "f", None, 100, None)
        .await
        .expect("list");
    let ids: Vec<_> = left.items.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, [f[4].id.clone(), f[3].id.clone(), inflight.id.clone()]);
    for gone in [&f[0], &f[1], &f[2], &old] {
        let err = store::get(&s, "alice", &gone.id).await.expect_err("pruned");
        assert!(matches!(err, ExecutionError::NotFound { .. }), "{err}");
    }
    // Nothing else to do on a second sweep.
    assert_eq!(
        store::prune_all(&s, &policy, at(10)).await.expect("again"),
        0
    );
    // Beyond the age, in-flight records go too.
    assert_eq!(
        store::prune_all(&s, &policy, at(4000)).await.expect("old"),
        3
    );
}

#[tokio::test]
async fn unreadable_values_and_bad_ids_are_clear_errors() {
    let etcd = Etcd::start();
    let s = etcd.store().await;
    etcd.put("/lambda/executions/alice/deadbeef", "not json");
    etcd.put(
        "/lambda/executionindex/alice/f/0001800000000-deadbeef",
        "{\"status\":\"Queued\"}",
    );
    etcd.put("/lambda/executionindex/alice/f/nonsense", "x");
    let err = store::get(&s, "alice", "deadbeef")
        .await
        .expect_err("garbage");
    assert!(
        err.to_string()
            .contains("/lambda/executions/alice/deadbeef is unreadable"),
        "{err}"
    );
    // A list skips what it cannot read; a sweep skips malformed index keys.
    let page = store::list(&s, "alice", "f", None, 10, None)
        .await
        .expect("list");
    assert!(page.items.is_empty());
    store::prune_all(&s, &Retention::default(), at(0))
        .await
        .expect("prune");
    let err = store::get(&s, "alice", "a/../b").await.expect_err("bad id");
    assert!(matches!(err, ExecutionError::InvalidId { .. }), "{err}");
    let err = store::get(&s, "Alice", "abc").await.expect_err("bad ns");
    assert!(
        err.to_string().contains("invalid namespace \"Alice\""),
        "{err}"
    );
    let err = store::get(&s, "alice", "abc").await.expect_err("missing");
    assert_eq!(
        err.to_string(),
        "execution abc not found in namespace alice"
    );
}

#[tokio::test]
async fn the_cli_lists_shows_and_prints_the_logs_of_records() {
    let etcd = Etcd::start();
    let s = etcd.store().await;
    let old = record("resize", "e-old", at(0));
    let new = record("resize", "e-new", at(60));
    store::begin(&s, &old).await.expect("begin");
    store::begin(&s, &new).await.expect("begin");
    let mut stored = store::get(&s, "alice", &old.id).await.expect("get");
    let x = &mut stored.execution;
    x.start_attempt(at(1)).expect("start");
    x.finish_attempt(
        at(2),
        Outcome::FunctionError,
        Some(502),
        Some("ValueError: boom"),
    )
    .expect("end");
    x.set_logs("resizing test.py\ntraceback …\n");
    x.finish(ExecutionStatus::Failed, Some("RetriesExhausted"), at(2))
        .expect("final");
    store::update(&s, &stored).await.expect("update");

    let (ok, out, err) = common::lambda(&etcd, &["executions", "resize", "-n", "alice"], None);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATUS"),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&new.id) && lines[1].contains("Queued"),
        "{out}"
    );
    assert!(
        lines[2].starts_with(&old.id)
            && lines[2].contains("Failed")
            && lines[2].contains("RetriesExhausted"),
        "{out}"
    );

    let (ok, out, err) = common::lambda(
        &etcd,
        &[
            "executions",
            "resize",
            "-n",
            "alice",
            "--status",
            "failed",
            "-o",
            "json",
        ],
        None,
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["kind"], "ExecutionList");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(1), "{out}");
    assert_eq!(v["items"][0]["attempts"][0]["error"], "ValueError: boom");

    let (ok, out, err) = common::lambda(&etcd, &["execution", "get", &old.id, "-n", "alice"], None);
    assert!(ok, "{err}");
    assert!(
        out.contains("status: Failed") && out.contains("FileCreate"),
        "{out}"
    );
    let (ok, out, err) =
        common::lambda(&etcd, &["execution", "logs", &old.id, "-n", "alice"], None);
    assert!(ok, "{err}");
    assert_eq!(out, "resizing test.py\ntraceback …\n");

    // Unknown and malformed ids and a bad status are clear errors.
    let (ok, _, err) = common::lambda(
        &etcd,
        &["execution", "get", &"0".repeat(32), "-n", "alice"],
        None,
    );
    assert!(!ok && err.contains("not found"), "{err}");
    let (ok, _, err) = common::lambda(&etcd, &["execution", "logs", "../x", "-n", "alice"], None);
    assert!(!ok && err.contains("../x"), "{err}");
    let (ok, _, err) = common::lambda(&etcd, &["executions", "resize", "--status", "Done"], None);
    assert!(!ok && err.contains("Done"), "{err}");
}

#[tokio::test]
async fn many_records_are_read_at_once_in_order_and_peeks_see_them() {
    let etcd = Etcd::start();
    let s = etcd.store().await;
    let mut ids = Vec::new();
    for i in 0..150 {
        let e = record("many", &format!("e-{i}"), at(i));
        assert!(store::create(&s, &e).await.expect("create").is_some());
        // A second create of the same id writes nothing.
        assert!(store::create(&s, &e).await.expect("again").is_none());
        ids.push(e.id.clone());
        if i == 70 {
            ids.push("missing".into());
        }
    }
    let got = store::get_many(&s, "alice", &ids).await.expect("many");
    assert_eq!(got.len(), 151);
    for (id, e) in ids.iter().zip(&got) {
        match e {
            Some(e) => assert_eq!(&e.id, id),
            None => assert_eq!(id, "missing"),
        }
    }
    let peeked = store::peek(&s, "alice", &ids[0]).await.expect("peek");
    assert_eq!(peeked.execution.status, ExecutionStatus::Queued);
    assert!(matches!(
        store::get_many(&s, "alice", &["a/b".to_string()]).await,
        Err(ExecutionError::InvalidId { .. })
    ));
}
