//! Write fencing: a leader paused past its lease (SIGSTOP) with writes in flight wakes up after
//! another controller took over; etcd refuses those late writes (they would have created Nodes
//! nobody wanted), the ex-leader counts and logs them and stands by, and the objects hold the
//! new leader's values. Also: a leader key deleted by hand ends the term at once.
//!
//! The writes "in flight" are pinned by a TCP proxy between the first controller and etcd that
//! holds what the controller sends (as a stalled network would) while letting etcd's answers
//! and watch events through; so whatever the controller decides in that window reaches etcd
//! only when the test releases it, after the takeover.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::controller::Controller;
use common::{Etcd, eventually};
use lambda::api::{NodePoolSpec, NodeSpec};
use lambda::store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const LEADER_KEY: &str = "/lambda/leader/controller";

/// A TCP proxy to etcd whose client-to-etcd direction can be held: bytes are read and kept,
/// then forwarded in order on release. The other direction always flows.
struct Proxy {
    port: u16,
    hold: watch::Sender<bool>,
    held: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Proxy {
    async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (hold, rx) = watch::channel(false);
        let held = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (h, s) = (held.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    c = listener.accept() => c,
                    _ = s.cancelled() => return,
                };
                let Ok((client, _)) = conn else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(up(cr, sw, rx.clone(), h.clone(), s.clone()));
                tokio::spawn(down(sr, cw, s.clone()));
            }
        });
        Proxy {
            port,
            hold,
            held,
            stop,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn hold(&self, on: bool) {
        self.hold.send_replace(on);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Client → etcd: forwarded, or kept while held (counting the bytes kept).
async fn up(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut hold: watch::Receiver<bool>,
    held: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut open = true;
    loop {
        let holding = *hold.borrow_and_update();
        if !holding && !kept.is_empty() {
            if to.write_all(&kept).await.is_err() {
                return;
            }
            kept.clear();
        }
        if !open && !holding {
            return;
        }
        tokio::select! {
            n = from.read(&mut buf), if open => match n {
                Ok(0) | Err(_) => open = false,
                Ok(n) if holding => {
                    kept.extend_from_slice(&buf[..n]);
                    held.fetch_add(n, Ordering::SeqCst);
                }
                Ok(n) => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            },
            r = hold.changed() => if r.is_err() { return },
            _ = stop.cancelled() => return,
        }
    }
}

/// etcd → client: always forwarded.
async fn down(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            n = from.read(&mut buf) => n,
            _ = stop.cancelled() => return,
        };
        match n {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn pool_yaml(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: lambda/v1alpha1\nkind: NodePool\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  image:\n    glanceImage: worker\n  flavor: m1.small\n  replicas: {replicas}\n  maxSurge: 5\n"
    )
}

async fn leader(store: &Store) -> Option<(String, i64)> {
    let mut kv = store.client().kv_client();
    let r = kv.get(LEADER_KEY, None).await.ok()?;
    let kv = r.kvs().first()?;
    Some((
        String::from_utf8_lossy(kv.value()).into_owned(),
        kv.create_revision(),
    ))
}

/// Every Node created after `revision`, as etcd's history has them: (name, create revision).
async fn nodes_created_since(store: &Store, revision: i64) -> Vec<(String, i64)> {
    let prefix = store.keys().spec_prefix("nodes", None);
    let mut w = store.client().watch_client();
    let opts = etcd_client::WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let mut stream = w.watch(prefix.clone(), Some(opts)).await.unwrap();
    let now = store.client().kv_client().get("/", None).await.unwrap();
    let head = now.header().unwrap().revision();
    let mut created = Vec::new();
    loop {
        let Ok(Ok(Some(resp))) =
            tokio::time::timeout(Duration::from_secs(2), stream.message()).await
        else {
            break;
        };
        let mut last = 0;
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            last = kv.mod_revision();
            if ev.event_type() == etcd_client::EventType::Put
                && kv.create_revision() == kv.mod_revision()
            {
                created.push((
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.create_revision(),
                ));
            }
        }
        if last >= head {
            break;
        }
    }
    created
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_ex_leaders_late_writes_are_refused() {
    const POOLS: usize = 4;
    const REPLICAS: u32 = 2;
    let etcd = Etcd::start();
    let store = etcd.store().await;
    let proxy = Proxy::start(etcd.port).await;
    let logs = tempfile::tempdir().unwrap();
    // A's requests may wait in the proxy and in the pause: a deadline longer than both, so A
    // reads etcd's verdict on them rather than its own timeout.
    let a = Controller::spawn(
        &proxy.endpoint(),
        "a",
        &logs.path().join("a.log"),
        &["--etcd-timeout", "30s"],
        &[],
    );
    eventually("a leads", Duration::from_secs(15), async || {
        leader(&store).await.filter(|(who, _)| who == "a")
    })
    .await;
    let b = Controller::spawn(&etcd.endpoint(), "b", &logs.path().join("b.log"), &[], &[]);
    for i in 0..POOLS {
        etcd.put(
            &format!("/lambda/registry/nodepools/default/p{i}"),
            &pool_yaml(&format!("p{i}"), 0),
        );
    }
    eventually(
        "a reconciled the pools at 0",
        Duration::from_secs(15),
        async || {
            let pools = store.list::<NodePoolSpec>(None).await.ok()?.items;
            (pools.len() == POOLS
                && pools
                    .iter()
                    .all(|p| p.status.is_some() && !p.metadata.finalizers.is_empty()))
            .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A's writes stall on their way to etcd; then every pool wants nodes. A sees that (etcd's
    // side flows), creates a Node per pool — held — and is paused before it can notice
    // anything, its lease still alive.
    let before = store.client().kv_client().get("/", None).await.unwrap();
    let r0 = before.header().unwrap().revision();
    proxy.hold(true);
    let held0 = proxy.held.load(Ordering::SeqCst);
    for mut p in store.list::<NodePoolSpec>(None).await.unwrap().items {
        p.spec.replicas = REPLICAS;
        store.update(&p).await.expect("scale the pool");
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    a.signal("STOP");
    let paused = Instant::now();
    let held = proxy.held.load(Ordering::SeqCst) - held0;
    eprintln!("a paused with {held} bytes of requests held on their way to etcd");
    assert!(held > 0, "a sent nothing after the pools changed");

    // Its lease expires; B takes over and converges the pools itself.
    let (_, term_b) = eventually("b takes over", Duration::from_secs(10), async || {
        leader(&store).await.filter(|(who, _)| who == "b")
    })
    .await;
    eprintln!("b leads {:?} after a was paused", paused.elapsed());
    eventually(
        "b created the wanted nodes",
        Duration::from_secs(15),
        async || {
            let nodes = store.list::<NodeSpec>(None).await.ok()?.items;
            (nodes.len() == POOLS * REPLICAS as usize).then_some(())
        },
    )
    .await;

    // The network heals — A's late writes reach etcd — and A wakes up.
    proxy.hold(false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.signal("CONT");
    let fenced = eventually(
        "a counts its refused writes and stands by",
        Duration::from_secs(15),
        async || {
            let n = a.metric("lambda_leader_fenced_writes_total")?;
            (n >= 1.0 && a.metric("lambda_leader ") == Some(0.0)).then_some(n)
        },
    )
    .await;
    eprintln!("a: {fenced} write(s) refused by the fence");
    let log = std::fs::read_to_string(logs.path().join("a.log")).unwrap();
    assert!(log.contains("write fenced"), "{log}");

    // Nothing of A's landed: every Node created since the pools changed is B's (created in its
    // term), exactly as many as wanted; a late create of A's would be one more.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let created = nodes_created_since(&store, r0).await;
    assert_eq!(
        created.len(),
        POOLS * REPLICAS as usize,
        "Node creations since the pools changed: {created:?}"
    );
    assert!(
        created.iter().all(|(_, rev)| *rev > term_b),
        "a Node was created before b's term: {created:?}"
    );
    let nodes = store.list::<NodeSpec>(None).await.unwrap().items;
    assert_eq!(nodes.len(), POOLS * REPLICAS as usize);
    for p in store.list::<NodePoolSpec>(None).await.unwrap().items {
        let s = p.status.clone().unwrap_or_default();
        assert_eq!(s.replicas, REPLICAS, "{}: {s:?}", p.metadata.name);
        assert_eq!(
            s.nodes.len(),
            REPLICAS as usize,
            "{}: {s:?}",
            p.metadata.name
        );
    }
    assert_eq!(leader(&store).await.map(|(w, _)| w), Some("b".into()));
    assert_eq!(b.metric("lambda_leader_fenced_writes_total"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_key_deleted_by_hand_ends_the_term_and_its_writes() {
    use lambda::runtime::leader::{LeaderConfig, run_elected};
    use std::sync::Mutex;

    let etcd = Etcd::start();
    let store = etcd.store().await;
    let cfg = LeaderConfig {
        key: LEADER_KEY.into(),
        identity: "me".into(),
        ttl: Duration::from_secs(30),
        request_timeout: Duration::from_secs(2),
    };
    // Each term: its fenced store, when it began and when it ended.
    type Terms = Arc<Mutex<Vec<(Store, Instant, Option<Instant>)>>>;
    let terms: Terms = Arc::default();
    let stop = CancellationToken::new();
    let (t, s) = (terms.clone(), store.clone());
    let task = tokio::spawn(run_elected(
        store.client(),
        cfg,
        None,
        stop.clone(),
        move |term| {
            let (t, s) = (t.clone(), s.clone());
            async move {
                let i = {
                    let mut g = t.lock().unwrap();
                    g.push((s.fenced(term.fence), Instant::now(), None));
                    g.len() - 1
                };
                term.stop.cancelled().await;
                t.lock().unwrap()[i].2 = Some(Instant::now());
            }
        },
    ));
    eventually("leads", Duration::from_secs(5), async || {
        (terms.lock().unwrap().len() == 1).then_some(())
    })
    .await;
    let first = terms.lock().unwrap()[0].0.clone();
    first
        .create(&common::function("in-term"))
        .await
        .expect("a write within the term");

    // An operator deletes the leader key: with a 30 s lease the old leader would go on for
    // half a minute; the key's watch ends its term at once and a new term begins.
    let deleting = Instant::now();
    etcd.etcdctl(&["del", LEADER_KEY]).unwrap();
    let ended = eventually("the term ends", Duration::from_secs(5), async || {
        terms.lock().unwrap()[0].2
    })
    .await;
    eprintln!(
        "term ended {:?} after etcdctl del started",
        ended.saturating_duration_since(deleting)
    );
    let late = first.create(&common::function("late")).await.unwrap_err();
    assert!(late.is_fenced(), "{late}");
    eventually("a new term", Duration::from_secs(10), async || {
        (terms.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    let second = terms.lock().unwrap()[1].0.clone();
    second
        .create(&common::function("next-term"))
        .await
        .expect("a write within the new term");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops")
        .unwrap();
}
