//! The store against a real etcd: CRUD, optimistic concurrency, finalizers, watch and resume,
//! compaction, hand-written and garbage values, unreachable etcd.

mod common;

use std::time::{Duration, Instant};

use common::{Etcd, function};
use lambda::api::{Condition, ConditionStatus, FunctionSpec, FunctionStatus};
use lambda::store::{DeleteOutcome, Store, StoreConfig, StoreError, UpdateOutcome, WatchEvent};

#[tokio::test]
async fn create_get_list_and_generation() {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    let created = store.create(&function("a")).await.unwrap();
    let gen0 = created.generation();
    assert!(gen0 > 0);
    assert!(created.metadata.creation_timestamp.is_some());
    let got = store.get::<FunctionSpec>("default", "a").await.unwrap();
    assert_eq!(got.metadata.uid, created.metadata.uid);
    assert_eq!(got.generation(), gen0);
    assert!(matches!(
        store.create(&function("a")).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    store.create(&function("b")).await.unwrap();
    let list = store.list::<FunctionSpec>(Some("default")).await.unwrap();
    assert_eq!(
        list.items
            .iter()
            .map(|o| o.metadata.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(list.revision >= gen0);
    // A spec change bumps the generation; a status write does not.
    let mut next = got.clone();
    next.spec.timeout_seconds = 7;
    let updated = store.update(&next).await.unwrap().into_object().unwrap();
    assert!(updated.generation() > gen0);
    store
        .update_status(
            &updated,
            &FunctionStatus {
                replicas: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let again = store.get::<FunctionSpec>("default", "a").await.unwrap();
    assert_eq!(again.generation(), updated.generation());
    assert_eq!(again.status.unwrap().replicas, 1);
    assert!(
        store
            .get::<FunctionSpec>("default", "zzz")
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn racing_writers_one_conflicts() {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    store.create(&function("race")).await.unwrap();
    let mut a = store.get::<FunctionSpec>("default", "race").await.unwrap();
    let mut b = a.clone();
    a.spec.timeout_seconds = 11;
    b.spec.timeout_seconds = 22;
    let (ra, rb) = tokio::join!(store.update(&a), store.update(&b));
    let conflicts = [&ra, &rb]
        .iter()
        .filter(|r| matches!(r, Err(e) if e.is_conflict()))
        .count();
    let oks = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
    assert_eq!((oks, conflicts), (1, 1), "{ra:?} {rb:?}");
    let winner = if ra.is_ok() { 11 } else { 22 };
    assert_eq!(
        store
            .get::<FunctionSpec>("default", "race")
            .await
            .unwrap()
            .spec
            .timeout_seconds,
        winner
    );
}

#[tokio::test]
async fn finalizer_deletion_flow() {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    let mut f = function("fin");
    f.metadata.finalizers = vec!["lambda/cleanup".into()];
    let created = store.create(&f).await.unwrap();
    store
        .update_status(&created, &FunctionStatus::default())
        .await
        .unwrap();
    let DeleteOutcome::Terminating(obj) = store
        .delete::<FunctionSpec>("default", "fin")
        .await
        .unwrap()
    else {
        panic!("expected terminating");
    };
    assert!(obj.metadata.deletion_timestamp.is_some());
    // Still readable while terminating; a second delete changes nothing.
    let t = store.get::<FunctionSpec>("default", "fin").await.unwrap();
    assert!(t.is_deleting());
    assert!(matches!(
        store
            .delete::<FunctionSpec>("default", "fin")
            .await
            .unwrap(),
        DeleteOutcome::Terminating(_)
    ));
    let mut release = store.get::<FunctionSpec>("default", "fin").await.unwrap();
    release.metadata.finalizers.clear();
    assert_eq!(
        store.update(&release).await.unwrap(),
        UpdateOutcome::Deleted
    );
    assert!(
        store
            .get::<FunctionSpec>("default", "fin")
            .await
            .unwrap_err()
            .is_not_found()
    );
    // Both keys are gone.
    let left = etcd
        .etcdctl(&["get", "--prefix", "/lambda/", "--keys-only"])
        .unwrap();
    assert!(left.trim().is_empty(), "left: {left}");
    // Without finalizers, delete removes at once.
    store.create(&function("plain")).await.unwrap();
    assert_eq!(
        store
            .delete::<FunctionSpec>("default", "plain")
            .await
            .unwrap(),
        DeleteOutcome::Deleted
    );
}

#[tokio::test]
async fn status_never_lands_on_a_recreated_object() {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    let old = store.create(&function("re")).await.unwrap();
    store.delete::<FunctionSpec>("default", "re").await.unwrap();
    store.create(&function("re")).await.unwrap();
    let err = store
        .update_status(&old, &FunctionStatus::default())
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn hand_written_yaml_via_etcdctl() {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    etcd.put(
        "/lambda/registry/functions/team-a/by-hand",
        "apiVersion: lambda/v1alpha1\nkind: Function\nmetadata:\n  name: by-hand\nspec:\n  runtime: python3\n  code:\n    inline: |\n      def handler(e, c):\n          return 1\n  minReplicas: 2\n",
    );
    let f = store
        .get::<FunctionSpec>("team-a", "by-hand")
        .await
        .unwrap();
    assert_eq!(f.metadata.namespace(), "team-a");
    assert_eq!(f.spec.min_replicas, 2);
    assert!(f.metadata.uid.is_some());
    assert!(f.generation() > 0);
    f.validate().unwrap();
    // A status written by hand is read too.
    etcd.put(
        "/lambda/status/functions/team-a/by-hand",
        "replicas: 2\nreadyReplicas: 1\nconditions:\n- type: Ready\n  status: \"False\"\n  reason: Scaling\n  lastTransitionTime: 2026-01-01T00:00:00Z\n",
    );
    let f = store
        .get::<FunctionSpec>("team-a", "by-hand")
        .await
        .unwrap();
    let st = f.status.unwrap();
    assert_eq!(st.ready_replicas, 1);
    assert_eq!(st.conditions[0].status, ConditionStatus::False);
}

#[tokio::test]
async fn garbage_in_etcd_is_reported_not_fatal() {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    store.create(&function("good")).await.unwrap();
    etcd.put("/lambda/registry/functions/default/bad", "{{{ not: yaml: [");
    etcd.put(
        "/lambda/registry/functions/default/wrongkind",
        "apiVersion: lambda/v1alpha1\nkind: Node\nmetadata: {name: wrongkind}\nspec: {}\n",
    );
    etcd.put("/lambda/registry/functions/default/typo", "apiVersion: lambda/v1alpha1\nkind: Function\nmetadata: {name: typo}\nspec:\n  runtime: shell\n  replica: 3\n");
    // Not even UTF-8.
    store
        .client()
        .put(
            "/lambda/status/functions/default/good",
            vec![0xff, 0x00, 0xfe],
            None,
        )
        .await
        .unwrap();
    let err = store
        .get::<FunctionSpec>("default", "bad")
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Invalid { .. }));
    assert!(
        msg.contains("/lambda/registry/functions/default/bad"),
        "{msg}"
    );
    let typo = store
        .get::<FunctionSpec>("default", "typo")
        .await
        .unwrap_err()
        .to_string();
    assert!(typo.contains("replica"), "{typo}");
    let list = store.list::<FunctionSpec>(None).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].metadata.name, "good");
    assert!(list.items[0].status.is_none(), "garbage status is left out");
    assert_eq!(list.invalid.len(), 4, "{:?}", list.invalid);
}

#[tokio::test]
async fn watch_from_revision_sees_every_change_and_resumes() {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    let start = store.create(&function("w")).await.unwrap().generation();
    let mut obj = store.get::<FunctionSpec>("default", "w").await.unwrap();
    let mut revs = vec![start];
    for i in 1..=5 {
        obj.spec.timeout_seconds = i;
        obj = store.update(&obj).await.unwrap().into_object().unwrap();
        revs.push(obj.generation());
    }
    let st_rev = store
        .update_status(
            &obj,
            &FunctionStatus {
                replicas: 3,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    store.delete::<FunctionSpec>("default", "w").await.unwrap();

    let collect = |from: i64, n: usize| {
        let store = store.clone();
        async move {
            let mut w = store
                .watch::<FunctionSpec>(Some("default"), from)
                .await
                .unwrap();
            let mut out = Vec::new();
            while out.len() < n {
                match tokio::time::timeout(Duration::from_secs(5), w.next())
                    .await
                    .unwrap()
                    .unwrap()
                {
                    WatchEvent::Progress(_) => {}
                    ev => out.push(ev),
                }
            }
            out
        }
    };
    // From the first revision: 6 spec writes, 1 status write, 2 deletes (spec + status).
    let all = collect(start, 9).await;
    let timeouts: Vec<u32> = all
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Spec(o) => Some(o.spec.timeout_seconds),
            _ => None,
        })
        .collect();
    assert_eq!(timeouts, [30, 1, 2, 3, 4, 5]);
    assert!(
        all.iter()
            .any(|e| matches!(e, WatchEvent::Status(_, s) if s.replicas == 3))
    );
    assert!(
        all.iter()
            .any(|e| matches!(e, WatchEvent::SpecDeleted(k) if k.name == "w"))
    );
    // Resumed from the middle: exactly the changes from that revision on. (Spec and status are
    // two watchers on one stream: their events may interleave in either order.)
    let tail = collect(revs[3], 6).await;
    let tail_timeouts: Vec<u32> = tail
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Spec(o) => Some(o.spec.timeout_seconds),
            _ => None,
        })
        .collect();
    assert_eq!(tail_timeouts, [3, 4, 5]);
    assert!(st_rev > revs[5]);
}

#[tokio::test]
async fn watch_below_compaction_reports_compacted() {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    let first = store.create(&function("c")).await.unwrap().generation();
    let mut obj = store.get::<FunctionSpec>("default", "c").await.unwrap();
    for i in 1..=3 {
        obj.spec.timeout_seconds = i;
        obj = store.update(&obj).await.unwrap().into_object().unwrap();
    }
    etcd.etcdctl(&["compaction", &obj.generation().to_string()])
        .unwrap();
    let mut w = store.watch::<FunctionSpec>(None, first).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match w.next().await {
                Ok(_) => continue,
                Err(e) => return e,
            }
        }
    })
    .await
    .unwrap();
    match err {
        StoreError::Compacted {
            compact_revision, ..
        } => assert_eq!(compact_revision, obj.generation()),
        e => panic!("expected Compacted, got {e}"),
    }
}

#[tokio::test]
async fn watch_delivers_quickly_and_carries_status() {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    let mut w = store.watch::<FunctionSpec>(None, 0).await.unwrap();
    let created = store.create(&function("fast")).await.unwrap();
    let mut status = FunctionStatus::default();
    status.conditions.push(Condition {
        type_: "Ready".into(),
        status: ConditionStatus::True,
        reason: "Running".into(),
        message: String::new(),
        last_transition_time: chrono::Utc::now(),
        observed_generation: Some(created.generation()),
    });
    store.update_status(&created, &status).await.unwrap();
    let mut got_spec = false;
    let mut got_status = false;
    while !(got_spec && got_status) {
        match tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .unwrap()
            .unwrap()
        {
            WatchEvent::Spec(o) => got_spec = o.metadata.name == "fast",
            WatchEvent::Status(k, s) => got_status = k.name == "fast" && s == status,
            _ => {}
        }
    }
}

#[tokio::test]
async fn unreachable_etcd_fails_within_seconds() {
    // A port nobody listens on, and one that accepts but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    for endpoint in [
        "http://127.0.0.1:1".to_string(),
        format!("http://127.0.0.1:{silent_port}"),
    ] {
        let mut cfg = StoreConfig::from_endpoints(&endpoint);
        cfg.request_timeout = Duration::from_secs(2);
        let t = Instant::now();
        let err = Store::connect(&cfg).await.err().expect("must fail");
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "took {:?}",
            t.elapsed()
        );
        let msg = err.to_string();
        assert!(
            msg.contains("unreachable") && msg.contains(&endpoint),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn invalid_objects_are_rejected_on_write() {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    let mut f = function("Bad_Name");
    f.spec.min_replicas = 5;
    f.spec.max_replicas = 1;
    let err = store.create(&f).await.unwrap_err().to_string();
    assert!(
        err.contains("metadata.name") && err.contains("spec.minReplicas"),
        "{err}"
    );
    let left = etcd
        .etcdctl(&["get", "--prefix", "/lambda/", "--keys-only"])
        .unwrap();
    assert!(left.trim().is_empty());
}

#[tokio::test]
async fn create_clears_a_status_left_by_a_hand_deleted_spec() {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    let f = store.create(&function("ghost")).await.unwrap();
    store
        .update_status(
            &f,
            &FunctionStatus {
                replicas: 9,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    etcd.etcdctl(&["del", "/lambda/registry/functions/default/ghost"])
        .unwrap();
    let again = store.create(&function("ghost")).await.unwrap();
    assert_ne!(again.metadata.uid, f.metadata.uid);
    assert!(
        store
            .get::<FunctionSpec>("default", "ghost")
            .await
            .unwrap()
            .status
            .is_none(),
        "stale status cleared"
    );
    assert!(matches!(
        store.create(&function("ghost")).await,
        Err(StoreError::AlreadyExists { .. })
    ));
}

#[tokio::test]
async fn conditional_writes_are_group_committed_and_each_keeps_its_precondition() {
    use lambda::store::{CondWrite, Precondition};
    let etcd = Etcd::start();
    let store = etcd.store().await;
    let root = store.keys().root().to_string();
    let create = |key: String, value: &str| CondWrite {
        puts: vec![(key.clone(), value.as_bytes().to_vec())],
        key,
        when: Precondition::Absent,
    };
    // 300 creates at once: every one lands, in far fewer transactions than writes.
    let written = futures::future::join_all(
        (0..300).map(|i| store.write_if(create(format!("{root}/batch/k{i}"), "v1"))),
    )
    .await;
    let revisions: Vec<i64> = written
        .into_iter()
        .map(|r| r.expect("write").expect("absent before"))
        .collect();
    let mut distinct = revisions.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        distinct.len() < 100,
        "300 writes took {} transactions",
        distinct.len()
    );
    // The same key created twice at once: exactly one wins (never both in one transaction).
    let twice = futures::future::join_all(
        ["a", "b"].map(|v| store.write_if(create(format!("{root}/batch/same"), v))),
    )
    .await;
    let wins: Vec<bool> = twice
        .into_iter()
        .map(|r| r.expect("write").is_some())
        .collect();
    assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");
    // Updates at their revisions, one of them stale: only the stale one fails.
    let updates = (0..20).map(|i| {
        let key = format!("{root}/batch/k{i}");
        let at = if i == 7 { 1 } else { revisions[i] };
        store.write_if(CondWrite {
            puts: vec![(key.clone(), b"v2".to_vec())],
            key,
            when: Precondition::AtRevision(at),
        })
    });
    let updated: Vec<bool> = futures::future::join_all(updates)
        .await
        .into_iter()
        .map(|r| r.expect("write").is_some())
        .collect();
    for (i, applied) in updated.iter().enumerate() {
        assert_eq!(*applied, i != 7, "update {i}");
    }
    let mut kv = store.client().kv_client();
    let value = |key: String| {
        let mut kv = kv.clone();
        async move {
            let r = kv.get(key, None).await.expect("get");
            String::from_utf8_lossy(r.kvs()[0].value()).into_owned()
        }
    };
    assert_eq!(value(format!("{root}/batch/k3")).await, "v2");
    assert_eq!(value(format!("{root}/batch/k7")).await, "v1");
    assert_eq!(value(format!("{root}/batch/k299")).await, "v1");
    let all = kv
        .get(
            format!("{root}/batch/k"),
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .expect("count");
    assert_eq!(all.count(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_store_writes_only_within_its_term() {
    use lambda::store::{CondWrite, Fence, Precondition};
    use std::sync::Arc;
    let etcd = Etcd::start();
    let store = etcd.store().await;
    let root = store.keys().root().to_string();
    let leader_key = format!("{root}/leader/controller");
    let kv = store.client().kv_client();
    let take = |who: &'static str| {
        let (mut kv, key) = (kv.clone(), leader_key.clone());
        async move {
            let r = kv.put(key, who, None).await.expect("put leader key");
            r.header().expect("header").revision()
        }
    };
    let term = take("a").await;
    let fence = Arc::new(Fence::new(&leader_key, term));
    let leader = store.fenced(fence.clone());
    let create = |key: String| CondWrite {
        puts: vec![(key.clone(), b"v".to_vec())],
        key,
        when: Precondition::Absent,
    };

    // Within the term every kind of write applies, and a write's own precondition still
    // decides it (a stale one is a conflict, not a fence).
    let f = leader.create(&function("in-term")).await.expect("create");
    let mut edited = f.clone();
    edited.spec.timeout_seconds = 9;
    let f = leader.update(&edited).await.unwrap().into_object().unwrap();
    leader
        .modify_status(&f, |s| s.replicas = 2)
        .await
        .expect("status");
    let stale = leader.update(&edited).await.unwrap_err();
    assert!(stale.is_conflict() && !stale.is_fenced(), "{stale}");
    let batched = futures::future::join_all(
        (0..20).map(|i| leader.write_if(create(format!("{root}/fenced/in{i}")))),
    )
    .await;
    assert!(
        batched.iter().all(|r| matches!(r, Ok(Some(_)))),
        "{batched:?}"
    );
    assert!(!fence.lost().is_cancelled());
    assert_eq!(fence.rejected(), 0);

    // The lease ran out (the key goes) and another process leads: the same writes are refused
    // by etcd as fenced, and nothing lands.
    kv.clone().delete(leader_key.clone(), None).await.unwrap();
    let next = take("b").await;
    assert!(next > term);
    let late = leader.create(&function("late")).await.unwrap_err();
    assert!(late.is_fenced() && !late.is_conflict(), "{late}");
    assert!(
        fence.lost().is_cancelled(),
        "the term ends at the first refusal"
    );
    let late_status = leader.modify_status(&f, |s| s.replicas = 5).await;
    assert!(
        matches!(&late_status, Err(e) if e.is_fenced()),
        "{late_status:?}"
    );
    let mut late_edit = f.clone();
    late_edit.spec.timeout_seconds = 99;
    assert!(leader.update(&late_edit).await.unwrap_err().is_fenced());
    let late_batch = futures::future::join_all(
        (0..20).map(|i| leader.write_if(create(format!("{root}/fenced/late{i}")))),
    )
    .await;
    assert!(
        late_batch
            .iter()
            .all(|r| matches!(r, Err(e) if e.is_fenced())),
        "{late_batch:?}"
    );
    assert!(fence.rejected() >= 4, "{}", fence.rejected());
    let now = store
        .get::<FunctionSpec>("default", "in-term")
        .await
        .unwrap();
    assert_eq!(now.spec.timeout_seconds, 9);
    assert_eq!(now.status.unwrap().replicas, 2);
    let count = |prefix: String| {
        let mut kv = kv.clone();
        async move {
            kv.get(
                prefix,
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_count_only(),
                ),
            )
            .await
            .unwrap()
            .count()
        }
    };
    assert_eq!(count(format!("{root}/fenced/late")).await, 0);
    assert!(
        store
            .get::<FunctionSpec>("default", "late")
            .await
            .unwrap_err()
            .is_not_found()
    );
    // The control: the very same write without the fence applies.
    store
        .create(&function("late"))
        .await
        .expect("unfenced create");
    assert_eq!(count(format!("{root}/fenced/in")).await, 20);
}

/// Platform secrets and API keys are records beside the objects: written, read back, listed
/// (one edited by hand into garbage is reported by its key, not hiding the others) and deleted.
#[tokio::test]
async fn secrets_and_api_keys_round_trip_and_a_mangled_record_is_named() {
    use lambda::gateway::apikeys::{self, ApiKeyError, Verifier};
    use lambda::gateway::authz::Access;
    use lambda::store::secrets::{self, SecretError};

    let etcd = Etcd::start();
    let store = etcd.store().await;
    let s = secrets::put(&store, "team-a", "db-password", b"hunter2")
        .await
        .unwrap();
    let got = secrets::get(&store, "team-a", "db-password").await.unwrap();
    assert_eq!(
        got.as_ref().map(|g| g.value().unwrap()),
        Some(b"hunter2".to_vec())
    );
    assert_eq!(got, Some(s));
    assert!(
        secrets::get(&store, "team-b", "db-password")
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        secrets::put(&store, "team-a", "Bad_Name", b"x").await,
        Err(SecretError::BadName { .. })
    ));
    let names: Vec<String> = secrets::list(&store, "team-a")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["db-password"]);
    secrets::delete(&store, "team-a", "db-password")
        .await
        .unwrap();
    assert!(matches!(
        secrets::delete(&store, "team-a", "db-password").await,
        Err(SecretError::NotFound(_))
    ));

    let (key, token) = apikeys::create(&store, "ci", &Access::admin())
        .await
        .unwrap();
    let verifier = Verifier::new(store.clone());
    assert!(verifier.verify(&token).await.is_some());
    assert!(verifier.verify(&format!("{token}x")).await.is_none());
    etcd.etcdctl(&["put", "/lambda/apikeys/mangled", "{not: [yaml"])
        .unwrap();
    let (keys, bad) = apikeys::list(&store).await.unwrap();
    assert_eq!(keys.iter().map(|k| &k.id).collect::<Vec<_>>(), [&key.id]);
    match bad.as_slice() {
        [ApiKeyError::Invalid { key, .. }] => assert_eq!(key, "/lambda/apikeys/mangled"),
        other => panic!("{other:?}"),
    }
    apikeys::delete(&store, &key.id).await.unwrap();
    assert!(matches!(
        apikeys::delete(&store, &key.id).await,
        Err(ApiKeyError::NotFound(_))
    ));
}
