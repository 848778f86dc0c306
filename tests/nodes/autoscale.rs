//! The node autoscaler end to end on `lambda cloud` + the real Swarm + the gateway: a pool at
//! zero grows for a function invoked at once (the call is held, then answered; a function
//! whose timeout is shorter than a boot gets a 503 naming the booting pool); a burst needing
//! three nodes makes exactly three; idle nodes are consolidated away after the (short)
//! window while a load loop on the remaining function sees no failure; the project's quota
//! holds a pool below its max (Blocked); a function no flavor can take is marked `NoPoolFits`.
//! With two pools of different flavors the least-wasting one grows, and a node annotated
//! `lambda/do-not-disrupt` outlives the scale-down window until the annotation goes. Uses addresses 10.251.0.120–149 of the project bridge.

use std::time::{Duration, Instant};

use lambda::api::nodepool::AutoscalerDecision;
use lambda::api::{Conditions, FunctionSpec, NodePoolSpec, NodeSpec, Object, SnapshotImageSpec};

use super::common::eventually;
use super::harness::{Bed, Load, SNAPSHOT};

fn pool(max: u32) -> String {
    format!(
        "apiVersion: lambda/v1alpha1\nkind: NodePool\nmetadata:\n  name: auto\nspec:\n  image:\n    snapshotImage: worker\n  flavor: m1.small\n  network: lambda-net\n  replicas: 0\n  minReplicas: 0\n  maxReplicas: {max}\n  maxSurge: 5\n  autoscaling:\n    enabled: true\n    scaleDownUnneededSeconds: 5\n    scaleDownDelayAfterAddSeconds: 5\n    systemReserveMb: 256\n"
    )
}

fn function(name: &str, memory: u32, replicas: u32, timeout: u32) -> String {
    format!(
        "apiVersion: lambda/v1alpha1\nkind: Function\nmetadata:\n  name: {name}\nspec:\n  runtime: shell\n  code:\n    inline: \"cat\"\n  timeoutSeconds: {timeout}\n  resources:\n    memoryMb: {memory}\n  minReplicas: {replicas}\n  maxReplicas: {replicas}\n"
    )
}

async fn autoscaler(bed: &Bed) -> (u32, lambda::api::nodepool::AutoscalerStatus) {
    let p = bed
        .store
        .get::<NodePoolSpec>(&bed.ns, "auto")
        .await
        .unwrap();
    let s = p.status.unwrap_or_default();
    (
        s.desired_replicas.unwrap_or(0),
        s.autoscaler.unwrap_or_default(),
    )
}

/// Invokes once the gateway knows the function (a 404 only means its watch has not seen it).
async fn invoke_new(bed: &Bed, http: &reqwest::Client, name: &str) -> Result<String, String> {
    for _ in 0..100 {
        match bed.invoke(http, name).await {
            Err(e) if e.starts_with("404") => tokio::time::sleep(Duration::from_millis(20)).await,
            r => return r,
        }
    }
    Err(format!("the gateway never routed {name}"))
}

fn delete(bed: &Bed, kind: &str, name: &str, timeout: &str) {
    let (ok, out, err) = super::common::lambda(
        &bed.etcd,
        &[
            "delete",
            "-n",
            &bed.ns,
            kind,
            name,
            "--wait",
            "--timeout",
            timeout,
        ],
        None,
    );
    assert!(ok, "lambda delete {kind} {name}: {out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pools_follow_pending_work_from_zero_and_back_without_failures() {
    // Servers take 4 s to "boot" (as VMs do, if faster), and the project may have 3.
    let mut bed = Bed::start_with(120, &["--boot-delay", "4s", "--max-instances", "3"]).await;
    bed.apply(&format!("{SNAPSHOT}---\n{}", pool(4)));
    eventually(
        "the snapshot image built",
        Duration::from_secs(120),
        async || {
            let si = bed
                .store
                .get::<SnapshotImageSpec>(&bed.ns, "worker")
                .await
                .ok()?;
            si.status
                .as_ref()
                .is_some_and(|s| s.is_true("Ready"))
                .then_some(())
        },
    )
    .await;
    // Nothing pending: the pool stays at zero.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(bed.nodes().await.is_empty());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(150))
        .build()
        .unwrap();

    // From zero, a function whose timeout (3 s) is shorter than a boot: held 3 s, then 503
    // with Retry-After and the pool that is adding a node for it.
    bed.apply(&function("short", 128, 1, 3));
    let t = Instant::now();
    let err = invoke_new(&bed, &http, "short").await.unwrap_err();
    assert!(t.elapsed() >= Duration::from_millis(2900), "{err}");
    assert!(err.starts_with("503"), "{err}");
    let fst = bed
        .store
        .get::<FunctionSpec>(&bed.ns, "short")
        .await
        .unwrap()
        .status;
    assert!(
        err.contains(&format!("pool {}/auto is adding 1 × m1.small node", bed.ns)),
        "the 503 names the booting pool: {err}\npool: {:?}\nfunction: {fst:?}",
        autoscaler(&bed).await
    );
    let (desired, st) = autoscaler(&bed).await;
    assert_eq!(desired, 1, "{st:?}");
    assert!(st.last_scale_up.is_some(), "{st:?}");

    // Invoked at once while the node boots: held, then answered (timeout 60 s).
    bed.apply(&function("cold", 128, 1, 60));
    let t = Instant::now();
    let r = invoke_new(&bed, &http, "cold").await;
    let from_zero = t.elapsed();
    assert_eq!(r, Ok("{\"n\": 1}".to_string()), "held until a node joined");
    eprintln!("from zero nodes to the first answer: {from_zero:?}");
    bed.wait_pool("auto", 1, Duration::from_secs(60)).await;

    // Burst: 6 replicas of 850 MiB. The node has 2048 - 256 MiB left for 2 of them; each new
    // m1.small template takes 2 (1792 MiB): first-fit decreasing needs 2 more nodes → 3.
    let burst = Instant::now();
    bed.apply(&function("big", 850, 6, 30));
    let (desired, st) = eventually("the scale-up", Duration::from_secs(30), async || {
        let (d, st) = autoscaler(&bed).await;
        (d >= 3).then_some((d, st))
    })
    .await;
    eprintln!("burst: decision after {:?}: {}", burst.elapsed(), st.reason);
    assert_eq!(desired, 3, "{st:?}");
    assert_eq!(st.decision, AutoscalerDecision::ScaleUp, "{st:?}");
    assert!(st.reason.contains("scale up 1 → 3"), "{st:?}");
    assert!(st.reason.contains("need 2 × m1.small"), "{st:?}");
    // Its event follows the status write, best effort as Kubernetes events are (a crash in
    // between loses it, as seen in CI): waited for, so what an operator reads below is whole.
    eventually("the scale-up event", Duration::from_secs(10), async || {
        let (ok, out, _) =
            super::common::lambda(&bed.etcd, &["describe", "np", "auto", "-n", &bed.ns], None);
        (ok && out.contains("scale up 1 → 3")).then_some(())
    })
    .await;
    // A controller crash right after the decision neither forgets it nor scales twice: the
    // restarted autoscaler counts the nodes being added as capacity.
    bed.kill_controller().await;
    bed.start_controller();
    bed.wait_pool("auto", 3, Duration::from_secs(90)).await;
    eventually(
        "every big replica running",
        Duration::from_secs(60),
        async || {
            let f = bed.store.get::<FunctionSpec>(&bed.ns, "big").await.ok()?;
            let s = f.status?;
            (s.is_true("Ready") && s.endpoints.len() == 6).then_some(())
        },
    )
    .await;
    eprintln!(
        "burst: 6 replicas running on 3 nodes after {:?}",
        burst.elapsed()
    );
    // What an operator sees: ready/desired and the decision; the decisions as events.
    let (ok, out, err) =
        super::common::lambda(&bed.etcd, &["get", "np", "-n", &bed.ns, "-o", "wide"], None);
    assert!(
        ok && out.contains("3/3") && out.contains("AUTOSCALER"),
        "{out}{err}"
    );
    let (ok, out, err) =
        super::common::lambda(&bed.etcd, &["describe", "np", "auto", "-n", &bed.ns], None);
    assert!(
        ok && out.contains("scale up 1 → 3") && out.contains("scale up 0 → 1"),
        "{out}{err}"
    );
    // Packing: exactly the FFD count, nothing more asked for.
    let (desired, st) = autoscaler(&bed).await;
    assert_eq!(desired, 3, "{st:?}");
    let packed = st.reserved.memory_mb as f64 / st.allocatable.memory_mb as f64;
    assert!(packed >= 0.8, "packing {packed:.2}: {st:?}");
    eprintln!(
        "packing after scale-up: {} of {} MiB reserved ({:.0} %)",
        st.reserved.memory_mb,
        st.allocatable.memory_mb,
        packed * 100.0
    );

    // The quota (3 instances) holds: more work that needs a 4th node waits, Blocked, though
    // maxReplicas (4) would allow it.
    bed.apply(&function("more", 850, 1, 30));
    let st = eventually(
        "blocked by the quota",
        Duration::from_secs(30),
        async || {
            let (_, st) = autoscaler(&bed).await;
            (st.decision == AutoscalerDecision::Blocked).then_some(st)
        },
    )
    .await;
    assert!(st.reason.contains("quota"), "{st:?}");
    assert_eq!(st.pending.tasks, 1, "{st:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(autoscaler(&bed).await.0, 3, "never beyond the quota");
    assert_eq!(bed.servers().await.len(), 3);
    delete(&bed, "fn", "more", "30s");

    // A function no flavor can take: NoPoolFits on it, naming its memory and the flavor.
    bed.apply(&function("huge", 4096, 1, 30));
    let msg = eventually("NoPoolFits", Duration::from_secs(30), async || {
        let f = bed.store.get::<FunctionSpec>(&bed.ns, "huge").await.ok()?;
        let c = f.status?.condition("Schedulable")?.clone();
        (c.reason == "NoPoolFits").then_some(c.message)
    })
    .await;
    assert!(msg.contains("4096"), "{msg}");
    assert!(msg.contains("m1.small"), "{msg}");
    // A call to it is not held: no wait mends it.
    let t = Instant::now();
    let err = eventually(
        "the gateway knows it fits no pool",
        Duration::from_secs(10),
        async || {
            bed.invoke(&http, "huge")
                .await
                .err()
                .filter(|e| e.contains("NoPoolFits"))
        },
    )
    .await;
    assert!(err.starts_with("503"), "{err}");
    assert!(err.contains("4096"), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "not held for its 30 s timeout"
    );
    let (desired, _) = autoscaler(&bed).await;
    assert_eq!(desired, 3, "no node for work no node can take");
    delete(&bed, "fn", "huge", "30s");
    delete(&bed, "fn", "big", "30s");

    // Idle: the empty nodes go after the short window, while calls to `cold` all succeed.
    let load = Load::start(&bed, &http, "cold", 3);
    let idle = Instant::now();
    bed.wait_pool("auto", 1, Duration::from_secs(120)).await;
    eprintln!("idle: back to 1 node after {:?}", idle.elapsed());
    // The remaining node is kept: `cold` needs it (and min is 0 only for empty pools).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (n_ok, failures) = load.finish().await;
    let (desired, st) = autoscaler(&bed).await;
    assert_eq!(desired, 1, "{st:?}");
    assert!(st.last_scale_down.is_some(), "{st:?}");
    assert_eq!(bed.nodes().await.len(), 1);
    eprintln!(
        "load during the scale-down: {n_ok} ok, {} failed",
        failures.len()
    );
    assert!(n_ok > 50, "the load loop ran: {n_ok}");
    assert!(failures.is_empty(), "{failures:?}");

    // Deleting the pool and the functions leaves nothing behind (the Bed's drop checks servers).
    delete(&bed, "fn", "cold", "60s");
    delete(&bed, "fn", "short", "60s");
    delete(&bed, "np", "auto", "120s");
    assert!(bed.servers().await.is_empty(), "no server left");
}

fn pool_of(name: &str, flavor: &str) -> String {
    format!(
        "apiVersion: lambda/v1alpha1\nkind: NodePool\nmetadata:\n  name: {name}\nspec:\n  image:\n    snapshotImage: worker\n  flavor: {flavor}\n  network: lambda-net\n  minReplicas: 0\n  maxReplicas: 3\n  maxSurge: 3\n  autoscaling:\n    enabled: true\n    scaleDownUnneededSeconds: 3\n    scaleDownDelayAfterAddSeconds: 3\n"
    )
}

/// Ready Nodes of `pool`, once there are exactly `n` and the autoscaler wants `n`.
async fn settled(bed: &Bed, pool: &str, n: usize, timeout: Duration) -> Vec<Object<NodeSpec>> {
    eventually(
        &format!("pool {pool} at {n} Ready nodes"),
        timeout,
        async || {
            let nodes: Vec<Object<NodeSpec>> = bed
                .nodes()
                .await
                .into_iter()
                .filter(|x| x.spec.pool == pool)
                .collect();
            let ready = nodes
                .iter()
                .filter(|x| x.status.as_ref().is_some_and(|s| s.is_true("Ready")))
                .count();
            let p = bed.store.get::<NodePoolSpec>(&bed.ns, pool).await.ok()?;
            let desired = p.status.and_then(|s| s.desired_replicas).unwrap_or(0);
            (nodes.len() == n && ready == n && desired == n as u32).then_some(nodes)
        },
    )
    .await
}

async fn decision(bed: &Bed, pool: &str) -> lambda::api::nodepool::AutoscalerStatus {
    bed.store
        .get::<NodePoolSpec>(&bed.ns, pool)
        .await
        .unwrap()
        .status
        .and_then(|s| s.autoscaler)
        .unwrap_or_default()
}

async fn set_do_not_disrupt(bed: &Bed, node: &str, on: bool) {
    let mut n = bed.store.get::<NodeSpec>(&bed.ns, node).await.unwrap();
    if on {
        n.metadata
            .annotations
            .insert("lambda/do-not-disrupt".into(), "true".into());
    } else {
        n.metadata.annotations.remove("lambda/do-not-disrupt");
    }
    bed.store.update(&n).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_least_wasting_pool_grows_and_do_not_disrupt_is_kept() {
    let bed = Bed::start(140).await;
    bed.apply(&format!(
        "{SNAPSHOT}---\n{}---\n{}",
        pool_of("small", "m1.small"),
        pool_of("medium", "m1.medium")
    ));
    // 1500 MiB fits both flavors' template nodes (1792 and 3840 MiB): m1.small wastes less.
    bed.apply(&function("mid", 1500, 1, 30));
    settled(&bed, "small", 1, Duration::from_secs(150)).await;
    let st = decision(&bed, "medium").await;
    assert_ne!(st.decision, AutoscalerDecision::ScaleUp, "{st:?}");
    assert!(
        st.last_scale_up.is_none(),
        "the wasteful pool stayed at 0: {st:?}"
    );
    // 3000 MiB fits only m1.medium's template, one per node: 4 replicas want 4 nodes, and
    // maxReplicas (3) holds the 4th back (Blocked, naming it).
    bed.apply(&function("wide", 3000, 4, 30));
    let nodes = settled(&bed, "medium", 3, Duration::from_secs(90)).await;
    let st = eventually("blocked at max", Duration::from_secs(30), async || {
        let st = decision(&bed, "medium").await;
        (st.decision == AutoscalerDecision::Blocked).then_some(st)
    })
    .await;
    assert!(st.reason.contains("maxReplicas"), "{st:?}");
    assert_eq!(st.pending.tasks, 1, "{st:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        settled(&bed, "medium", 3, Duration::from_secs(5))
            .await
            .len(),
        3,
        "never beyond maxReplicas"
    );
    // One node is marked do-not-disrupt, then all are emptied: the two others go (in bulk,
    // being empty), the marked one stays past the windows (3 s + 3 s).
    let keep = nodes[0].metadata.name.clone();
    set_do_not_disrupt(&bed, &keep, true).await;
    delete(&bed, "fn", "wide", "30s");
    let left = settled(&bed, "medium", 1, Duration::from_secs(60)).await;
    assert_eq!(left[0].metadata.name, keep);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let kept = settled(&bed, "medium", 1, Duration::from_secs(5)).await;
    assert_eq!(
        kept[0].metadata.name,
        keep,
        "{:?}",
        decision(&bed, "medium").await
    );
    // Without the annotation it goes.
    set_do_not_disrupt(&bed, &keep, false).await;
    settled(&bed, "medium", 0, Duration::from_secs(60)).await;
    assert!(decision(&bed, "medium").await.last_scale_down.is_some());
    delete(&bed, "fn", "mid", "60s");
    delete(&bed, "np", "medium", "120s");
    delete(&bed, "np", "small", "120s");
    assert!(bed.servers().await.is_empty(), "no server left");
}
