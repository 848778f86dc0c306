//! The controller runtime against a real etcd: compaction during a watch, etcd killed and
//! restarted mid-watch, hand edits with etcdctl, the gc controller (finalizer, orphan sweep,
//! events on leases), and two `lambda controller` processes with leader failover.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::controller::{Controller, http_get, metric};
use common::{Etcd, eventually, function, lambda};
use lambda::api::{FunctionSpec, NodePoolSpec, NodeSpec, Object};
use lambda::reconcilers::{self, ControllersConfig};
use lambda::runtime::watcher::watcher_from;
use lambda::runtime::{Cache, EventType, Metrics, Recorder, WatcherConfig, watcher};
use lambda::store::Store;
use tokio_util::sync::CancellationToken;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn fast() -> WatcherConfig {
    WatcherConfig {
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(500),
    }
}

/// name → (resourceVersion, status) of every function: what "the same contents" means.
type Snapshot = BTreeMap<String, (Option<String>, Option<String>)>;

fn snap<'a>(objs: impl Iterator<Item = &'a Object<FunctionSpec>>) -> Snapshot {
    objs.map(|o| {
        (
            o.metadata.name.clone(),
            (
                o.metadata.resource_version.clone(),
                o.status.as_ref().map(|s| format!("{s:?}")),
            ),
        )
    })
    .collect()
}

async fn etcd_snapshot(store: &Store) -> Snapshot {
    let list = store.list::<FunctionSpec>(None).await.expect("list");
    snap(list.items.iter())
}

fn cache_snapshot(cache: &Cache<FunctionSpec>) -> Snapshot {
    let items = cache.list();
    snap(items.iter().map(|a| a.as_ref()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_during_a_watch_relists_and_converges() {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    for n in ["a", "b", "c"] {
        store.create(&function(n)).await.unwrap();
    }
    let cache = Cache::<FunctionSpec>::new();
    let list = store.list::<FunctionSpec>(None).await.unwrap();
    let resume = list.revision + 1;
    cache.apply(lambda::runtime::WatcherEvent::Listed(list));
    // While the watcher is "away", objects change and the history is compacted.
    store.delete::<FunctionSpec>("default", "b").await.unwrap();
    store.create(&function("d")).await.unwrap();
    let mut a = store.get::<FunctionSpec>("default", "a").await.unwrap();
    a.spec.timeout_seconds = 9;
    store.update(&a).await.unwrap();
    let head = store.list::<FunctionSpec>(None).await.unwrap().revision;
    etcd.etcdctl(&["compact", &head.to_string()]).unwrap();

    let metrics = Metrics::new();
    let km = metrics.kind("Function");
    let stream =
        watcher_from::<FunctionSpec>(store.clone(), None, fast(), Some(km.clone()), resume);
    let c = cache.clone();
    let task = tokio::spawn(async move { c.run(stream, |_| {}).await });
    let want = etcd_snapshot(&store).await;
    eventually(
        "cache converges after compaction",
        Duration::from_secs(10),
        async || (cache_snapshot(&cache) == want).then_some(()),
    )
    .await;
    assert_eq!(km.relists.get(), 1, "exactly one re-list");
    assert!(
        metrics
            .encode()
            .contains("lambda_relists_total{kind=\"Function\"} 1")
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_killed_and_restarted_mid_watch_loses_nothing() {
    let mut etcd = Etcd::start();
    let store = etcd.store().await;
    for i in 0..20 {
        store.create(&function(&format!("f{i}"))).await.unwrap();
    }
    let metrics = Metrics::new();
    let km = metrics.kind("Function");
    let cache = Cache::<FunctionSpec>::new();
    let stream = watcher::<FunctionSpec>(store.clone(), None, fast(), Some(km.clone()));
    let c = cache.clone();
    let task = tokio::spawn(async move { c.run(stream, |_| {}).await });
    eventually("initial list", Duration::from_secs(10), async || {
        (cache.len() == 20).then_some(())
    })
    .await;

    etcd.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    etcd.restart();
    // Changes right after the restart, while the watcher is still reconnecting.
    let store2 = etcd.store().await;
    for i in 20..30 {
        store2.create(&function(&format!("f{i}"))).await.unwrap();
    }
    for i in 0..5 {
        store2
            .delete::<FunctionSpec>("default", &format!("f{i}"))
            .await
            .unwrap();
    }
    let f7 = store2.get::<FunctionSpec>("default", "f7").await.unwrap();
    let st = lambda::api::FunctionStatus {
        replicas: 3,
        ..Default::default()
    };
    store2.update_status(&f7, &st).await.unwrap();

    let want = etcd_snapshot(&store2).await;
    assert_eq!(want.len(), 25);
    eventually(
        "cache converges after restart",
        Duration::from_secs(20),
        async || (cache_snapshot(&cache) == want).then_some(()),
    )
    .await;
    assert!(km.watch_restarts.get() >= 1, "the watch was resumed");
    assert_eq!(km.relists.get(), 1, "resumed, not re-listed");
    task.abort();
}

fn pool_yaml(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: lambda/v1alpha1\nkind: NodePool\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  image:\n    glanceImage: worker\n  flavor: m1.small\n  replicas: {replicas}\n  maxSurge: 5\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_controller_bookkeeping_finalizer_orphans_and_events() {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    let stop = CancellationToken::new();
    let metrics = Metrics::new();
    let cfg = ControllersConfig {
        event_ttl: Duration::from_secs(60),
        ..Default::default()
    };
    let ctl = tokio::spawn(reconcilers::run_all(
        store.clone(),
        metrics.clone(),
        cfg,
        stop.clone(),
    ));

    // A pool written by hand with etcdctl is reconciled: finalizer added, status written.
    etcd.put("/lambda/registry/nodepools/default/p1", &pool_yaml("p1", 2));
    eventually(
        "hand-written pool reconciled",
        Duration::from_secs(10),
        async || {
            let p = store.get::<NodePoolSpec>("default", "p1").await.ok()?;
            (p.metadata.finalizers == [reconcilers::nodepool::FINALIZER] && p.status.is_some())
                .then_some(())
        },
    )
    .await;
    // The pool makes its nodes (no cloud here: just the objects), owned by it and listed.
    eventually(
        "pool status lists its nodes",
        Duration::from_secs(10),
        async || {
            let p = store.get::<NodePoolSpec>("default", "p1").await.ok()?;
            let uid = p.metadata.uid.clone()?;
            let s = p.status?;
            let nodes = store.list::<NodeSpec>(Some("default")).await.ok()?.items;
            let mut names: Vec<String> = nodes.iter().map(|n| n.metadata.name.clone()).collect();
            names.sort();
            (s.nodes == names
                && s.replicas == 2
                && nodes.iter().all(|n| {
                    n.metadata.name.starts_with("p1-")
                        && n.metadata.owner_references[0].uid == uid
                        && n.spec.image == "worker"
                }))
            .then_some(())
        },
    )
    .await;
    // An unchanged status is not rewritten: the pool is requeued while its nodes are not
    // Ready (no cloud here), and those reconciles leave the status key alone (no write storms).
    let status_rev = || {
        let json = etcd
            .etcdctl(&["get", "/lambda/status/nodepools/default/p1", "-w", "json"])
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["kvs"][0]["mod_revision"].as_i64().unwrap()
    };
    let runs = metrics.controller("nodepool").reconciles;
    let n0 = runs.get();
    eventually(
        "a reconcile after the status settled",
        Duration::from_secs(10),
        async || (runs.get() > n0).then_some(()),
    )
    .await;
    let before = status_rev();
    let n1 = runs.get();
    eventually("two more reconciles", Duration::from_secs(10), async || {
        (runs.get() >= n1 + 2).then_some(())
    })
    .await;
    assert_eq!(status_rev(), before, "unchanged status was rewritten");

    // Deleting the pool runs its finalizer: nodes first, then the pool.
    store.delete::<NodePoolSpec>("default", "p1").await.unwrap();
    eventually(
        "pool and its nodes gone",
        Duration::from_secs(10),
        async || {
            let nodes = store.list::<NodeSpec>(None).await.ok()?.items;
            let pool = store.get::<NodePoolSpec>("default", "p1").await;
            (nodes.is_empty() && pool.is_err_and(|e| e.is_not_found())).then_some(())
        },
    )
    .await;

    // A pool removed behind the controller's back: its node is an orphan and is swept.
    etcd.put("/lambda/registry/nodepools/default/p2", &pool_yaml("p2", 1));
    let orphan = eventually("p2 has its node", Duration::from_secs(10), async || {
        let nodes = store.list::<NodeSpec>(Some("default")).await.ok()?.items;
        nodes.first().map(|n| n.metadata.name.clone())
    })
    .await;
    etcd.etcdctl(&["del", "/lambda/registry/nodepools/default/p2"])
        .unwrap();
    eventually("orphan swept", Duration::from_secs(10), async || {
        let gone = store
            .get::<NodeSpec>("default", &orphan)
            .await
            .is_err_and(|e| e.is_not_found());
        gone.then_some(())
    })
    .await;
    let (ok, out, err) = lambda(&etcd, &["get", "events"], None);
    assert!(ok, "{err}");
    assert!(
        out.contains("OwnerGone") && out.contains(&format!("node/{orphan}")),
        "{out}"
    );
    // Events live on a lease.
    let evs = store
        .list::<lambda::api::EventSpec>(Some("default"))
        .await
        .unwrap()
        .items;
    let key = format!("/lambda/registry/events/default/{}", evs[0].metadata.name);
    let json = etcd.etcdctl(&["get", &key, "-w", "json"]).unwrap();
    assert!(json.contains("\"lease\":"), "event has no lease: {json}");

    let m = metrics.encode();
    assert!(
        m.contains("lambda_reconciles_total{controller=\"nodepool\"}"),
        "{m}"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), ctl)
        .await
        .expect("controllers stop on request")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_aggregate_and_show_in_describe() {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    etcd.put("/lambda/registry/nodepools/default/p", &pool_yaml("p", 0));
    let p = store.get::<NodePoolSpec>("default", "p").await.unwrap();
    let rec = Recorder::new(store.clone(), "test", Duration::from_secs(60));
    for _ in 0..3 {
        rec.publish(&p, EventType::Warning, "QuotaExceeded", "no room for 2 VMs")
            .await
            .unwrap();
    }
    rec.publish(&p, EventType::Normal, "Scaled", "1 → 2")
        .await
        .unwrap();
    let evs = store
        .list::<lambda::api::EventSpec>(Some("default"))
        .await
        .unwrap()
        .items;
    assert_eq!(evs.len(), 2);
    let q = evs
        .iter()
        .find(|e| e.spec.reason == "QuotaExceeded")
        .unwrap();
    assert_eq!(q.spec.count, 3);
    assert!(q.spec.last_timestamp >= q.spec.first_timestamp);
    let (ok, out, err) = lambda(&etcd, &["describe", "np", "p"], None);
    assert!(ok, "{err}");
    assert!(out.contains("Events:"), "{out}");
    assert!(
        out.contains("QuotaExceeded") && out.contains("Scaled"),
        "{out}"
    );
}

fn controller(etcd: &Etcd, id: &str, logs: &std::path::Path) -> Controller {
    Controller::spawn(
        &etcd.endpoint(),
        id,
        &logs.join(format!("{id}.log")),
        &[],
        &[],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_one_leader_and_failover_within_ttl() {
    let etcd = Etcd::start();
    let store = etcd.store().await;
    let logs = tempfile::tempdir().unwrap();
    let mut procs = [
        controller(&etcd, "a", logs.path()),
        controller(&etcd, "b", logs.path()),
    ];
    let leader_key = "/lambda/leader/controller";
    let leader = eventually("a leader is elected", Duration::from_secs(10), async || {
        let v = etcd
            .etcdctl(&["get", leader_key, "--print-value-only"])
            .ok()?;
        let v = v.trim().to_string();
        (!v.is_empty()).then_some(v)
    })
    .await;
    let (li, si) = if leader == "a" { (0, 1) } else { (1, 0) };
    let (lport, sport) = (procs[li].metrics_port, procs[si].metrics_port);
    eventually(
        "metrics agree on the leader",
        Duration::from_secs(10),
        async || {
            (metric(lport, "lambda_leader ") == Some(1.0)
                && metric(sport, "lambda_leader ") == Some(0.0))
            .then_some(())
        },
    )
    .await;
    assert!(http_get(lport, "/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200")));
    assert!(http_get(sport, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")));

    etcd.put("/lambda/registry/nodepools/default/p1", &pool_yaml("p1", 2));
    eventually(
        "the leader reconciles",
        Duration::from_secs(10),
        async || {
            store
                .get::<NodePoolSpec>("default", "p1")
                .await
                .ok()?
                .status
                .map(|_| ())
        },
    )
    .await;
    let reconciles = |port| metric(port, "lambda_reconciles_total{controller=\"nodepool\"}");
    assert!(reconciles(lport).unwrap_or(0.0) >= 1.0);
    assert_eq!(
        reconciles(sport).unwrap_or(0.0),
        0.0,
        "the standby reconciled"
    );

    // kill -9 the leader: the standby leads within TTL + 2 s.
    procs[li].kill9();
    let killed = Instant::now();
    eventually(
        "the standby takes over",
        Duration::from_secs(8),
        async || (metric(sport, "lambda_leader ") == Some(1.0)).then_some(()),
    )
    .await;
    let takeover = killed.elapsed();
    eprintln!("takeover after kill -9: {takeover:?}");
    assert!(
        takeover <= Duration::from_secs(5),
        "takeover took {takeover:?}"
    );
    etcd.put("/lambda/registry/nodepools/default/p2", &pool_yaml("p2", 0));
    eventually(
        "the new leader reconciles",
        Duration::from_secs(10),
        async || {
            store
                .get::<NodePoolSpec>("default", "p2")
                .await
                .ok()?
                .status
                .map(|_| ())
        },
    )
    .await;

    // SIGTERM: finishes and releases the lease at once.
    procs[si].signal("TERM");
    let status = procs[si].wait();
    assert!(status.success(), "{status:?}");
    let v = etcd
        .etcdctl(&["get", leader_key, "--print-value-only"])
        .unwrap();
    assert!(v.trim().is_empty(), "lease not released: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_steps_down_before_its_lease_expires_when_etcd_is_gone() {
    use lambda::runtime::leader::{LeaderConfig, run_elected};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let mut etcd = Etcd::start();
    let store = etcd.store().await;
    let leading = Arc::new(AtomicBool::new(false));
    let cfg = LeaderConfig {
        key: "/lambda/leader/test".into(),
        identity: "me".into(),
        ttl: Duration::from_secs(3),
        request_timeout: Duration::from_secs(1),
    };
    let stop = CancellationToken::new();
    let l = leading.clone();
    let task = tokio::spawn(run_elected(
        store.client(),
        cfg,
        None,
        stop.clone(),
        move |term| {
            let l = l.clone();
            async move {
                l.store(true, Ordering::SeqCst);
                term.stop.cancelled().await;
                l.store(false, Ordering::SeqCst);
            }
        },
    ));
    eventually("leads", Duration::from_secs(5), async || {
        leading.load(Ordering::SeqCst).then_some(())
    })
    .await;
    etcd.kill();
    let killed = Instant::now();
    eventually("steps down", Duration::from_secs(5), async || {
        (!leading.load(Ordering::SeqCst)).then_some(())
    })
    .await;
    let after = killed.elapsed();
    assert!(
        after < Duration::from_secs(3),
        "stepped down only after {after:?}"
    );
    // Back: the old lease expires and the elector leads again.
    etcd.restart();
    eventually("leads again", Duration::from_secs(15), async || {
        leading.load(Ordering::SeqCst).then_some(())
    })
    .await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_controller_runs_and_cleans_up() {
    let etcd = Etcd::start();
    let (ok, out, err) = lambda(
        &etcd,
        &[
            "bench",
            "controller",
            "--objects",
            "50",
            "--idle-seconds",
            "1",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("write→reconcile start p99") && out.contains("idle CPU"),
        "{out}"
    );
    let store = etcd.store().await;
    assert!(
        store
            .list::<FunctionSpec>(None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_watch_stays_up() {
    // etcd answers client pings below its minimum interval with GOAWAY (too_many_pings); the
    // store's keep-alive must respect it or idle watches break every few seconds. The harness'
    // etcd sends progress notifications every second, which hides this, so this test runs a
    // stock-configured etcd.
    let etcd = StockEtcd::start();
    let store =
        lambda::store::Store::connect(&lambda::store::StoreConfig::from_endpoints(&etcd.endpoint))
            .await
            .unwrap();
    store.create(&function("a")).await.unwrap();
    let metrics = Metrics::new();
    let km = metrics.kind("Function");
    let cache = Cache::<FunctionSpec>::new();
    let stream = watcher::<FunctionSpec>(store.clone(), None, fast(), Some(km.clone()));
    let c = cache.clone();
    let task = tokio::spawn(async move { c.run(stream, |_| {}).await });
    cache.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert_eq!(km.watch_restarts.get(), 0, "the idle watch was broken");
    store.create(&function("b")).await.unwrap();
    eventually("still delivering", Duration::from_secs(5), async || {
        (cache.len() == 2).then_some(())
    })
    .await;
    task.abort();
}

/// etcd with default settings (no progress notifications), killed when dropped.
struct StockEtcd {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl StockEtcd {
    fn start() -> StockEtcd {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let child = Command::new("etcd")
            .args(["--name", "stock", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("stock={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        let e = StockEtcd {
            child,
            endpoint,
            _dir: dir,
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            let ok = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", e.endpoint))
                .args(["endpoint", "health"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return e;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("stock etcd did not start");
    }
}

impl Drop for StockEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
