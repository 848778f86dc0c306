//! Schedules fire exactly once per tick across the platform: a function scheduled every 2 s
//! for about 20 s, two `lambda controller` processes (the leader killed -9 in the middle, the
//! standby taking over), the queue listener and a replica that counts its calls. Every tick is
//! one execution (none twice, none dropped), those missed during the failover fire late, and the
//! Function's status shows the last and next fire. Real etcd, real RabbitMQ; the replica
//! follows the agent's contract. Prints the fire jitter (record creation − tick).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::controller::Controller;
use common::rabbitmq::RabbitMq;
use common::replica::replica;
use common::{Etcd, eventually};
use lambda::api::{Function, FunctionSpec};
use lambda::events::execution::store as records;
use lambda::events::execution::{Execution, ExecutionStatus, Trigger};
use tokio_util::sync::CancellationToken;

/// The tick an execution fired for, from its event id (`<index>@<tick ms>`).
fn tick_ms(e: &Execution) -> i64 {
    let id = &e.event.as_ref().expect("event").id;
    id.split_once('@')
        .and_then(|(_, ms)| ms.parse().ok())
        .unwrap_or_else(|| panic!("event id {id:?} is not <index>@<ms>"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedules_fire_once_per_tick_across_a_leader_failover() {
    let etcd = Etcd::start();
    let rabbit = RabbitMq::start();
    let store = etcd.store().await;
    let hits = Arc::new(AtomicUsize::new(0));
    let replica = replica(hits.clone()).await;
    let stop = CancellationToken::new();
    common::rabbitmq::spawn_listener(&store, rabbit.url(), stop.clone());
    let logs = tempfile::tempdir().expect("temp dir");
    let mut controllers = [
        Controller::start(&etcd, &rabbit.url(), "a", &logs.path().join("a.log"), &[]),
        Controller::start(&etcd, &rabbit.url(), "b", &logs.path().join("b.log"), &[]),
    ];
    common::replica::function_on(
        &store,
        "default",
        "tick",
        "runtime: shell\ncode: {inline: cat}\ntriggers:\n  schedules:\n    - cron: \"*/2 * * * * *\"\n      payload: {report: daily}\n",
        replica,
    )
    .await;

    // A schedule edited by hand in etcd past validation is not fired; its status says why.
    let broken_spec: FunctionSpec = serde_saphyr::from_str(
        "runtime: shell\ncode: {inline: cat}\ntriggers:\n  schedules:\n    - cron: \"0 0 1 1 *\"\n",
    )
    .expect("spec");
    store
        .create(&Function::new("default", "broken", broken_spec))
        .await
        .expect("create");
    let key = store
        .keys()
        .spec_key::<FunctionSpec>(&lambda::api::ObjectKey::new("default", "broken"));
    let stored = etcd
        .etcdctl(&["get", &key, "--print-value-only"])
        .expect("get");
    assert!(stored.contains("0 0 1 1 *"), "{stored}");
    etcd.put(
        &key,
        &stored.trim_end().replace("0 0 1 1 *", "every tuesday"),
    );

    let started = Instant::now();
    let leader = eventually("a leader is elected", Duration::from_secs(20), async || {
        let v = etcd
            .etcdctl(&["get", "/lambda/leader/controller", "--print-value-only"])
            .ok()?;
        let v = v.trim().to_string();
        (!v.is_empty()).then_some(v)
    })
    .await;
    // Ten seconds of fires, then the leader dies; ten more under the standby.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let li = if leader == "a" { 0 } else { 1 };
    controllers[li].kill9();
    let killed_at = chrono::Utc::now();
    eprintln!("leader {leader} killed -9 after {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_secs(12)).await;
    // The status the scheduler keeps: last and next fire of schedules[0].
    let got = store
        .get::<FunctionSpec>("default", "tick")
        .await
        .expect("get");
    let sched = got.status.clone().expect("status").schedules;
    assert_eq!(sched.len(), 1, "{sched:?}");
    let (last, next) = (
        sched[0].last_fire_time.expect("last fire"),
        sched[0].next_fire_time.expect("next fire"),
    );
    assert_eq!(next - last, chrono::Duration::seconds(2), "{sched:?}");
    let broken = store
        .get::<FunctionSpec>("default", "broken")
        .await
        .expect("get broken");
    let why = broken
        .status
        .and_then(|s| s.schedules.first().and_then(|s| s.error.clone()))
        .expect("the broken schedule's error in its status");
    assert!(
        why.contains("spec.triggers.schedules[0]") && why.contains("every tuesday"),
        "{why}"
    );
    // Stop firing: the schedule goes (the function stays), and what it fired finishes.
    let mut unscheduled = got.clone();
    unscheduled.spec.triggers.schedules.clear();
    unscheduled.status = None;
    store
        .update(&unscheduled)
        .await
        .expect("remove the schedule");
    let done: Vec<Execution> =
        eventually("every fire is final", Duration::from_secs(30), async || {
            let page = records::list(&store, "default", "tick", None, 100, None)
                .await
                .ok()?;
            page.items
                .iter()
                .all(|e| e.status.is_terminal())
                .then_some(page.items)
        })
        .await;
    stop.cancel();

    let mut ticks: Vec<i64> = done.iter().map(tick_ms).collect();
    ticks.sort_unstable();
    let n = ticks.len();
    ticks.dedup();
    assert_eq!(ticks.len(), n, "a tick fired twice: {ticks:?}");
    assert!(
        n >= 8,
        "only {n} fires in ~22 s of a 2 s schedule: {ticks:?}"
    );
    // Every record is a scheduled execution that ran once and succeeded with the payload.
    for e in &done {
        assert_eq!(e.trigger, Trigger::Schedule { index: 0 });
        assert_eq!(e.status, ExecutionStatus::Succeeded, "{e:?}");
        let echoed: serde_json::Value =
            serde_json::from_str(e.result.as_deref().unwrap_or("{}")).expect("json");
        assert_eq!(echoed["echo"]["report"], "daily");
        assert_eq!(
            e.event.as_ref().map(|ev| ev.source.as_str()),
            Some("lambda/schedule/default/tick")
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        n,
        "the replica ran a fire twice (or ran something else)"
    );
    // No tick dropped: those missed while no leader existed fired late, each once.
    let gaps: Vec<i64> = ticks.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g == 2000),
        "a tick was dropped: {gaps:?}"
    );
    let late: Vec<i64> = done
        .iter()
        .map(|e| e.created_at.timestamp_millis() - tick_ms(e))
        .filter(|ms| *ms > 1000)
        .collect();
    assert!(
        !late.is_empty() && late.len() <= 4,
        "the failover's missed ticks fire late, and only they: {late:?}"
    );
    // Fire jitter: record creation − tick, for fires not delayed by the failover.
    let mut jitter: Vec<i64> = done
        .iter()
        .filter(|e| {
            let tick = chrono::DateTime::from_timestamp_millis(tick_ms(e)).expect("tick");
            !(killed_at - chrono::Duration::seconds(1)..killed_at + chrono::Duration::seconds(8))
                .contains(&tick)
        })
        .map(|e| (e.created_at.timestamp_millis() - tick_ms(e)).max(0))
        .collect();
    jitter.sort_unstable();
    let pct = |p: usize| jitter[(jitter.len() * p / 100).min(jitter.len() - 1)];
    eprintln!(
        "schedules: {n} fires, ticks {ticks:?}, gaps {gaps:?}; jitter (fire − tick) p50 {} ms, p99 {} ms over {} on-time fires",
        pct(50),
        pct(99),
        jitter.len()
    );
}
