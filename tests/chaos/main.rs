//! The chaos suite: two `lambda controller` processes run the platform on `lambda cloud` and
//! the real Swarm while a seeded plan makes 200 mixed operations — functions created, updated
//! and deleted, pools scaled, created and deleted, the snapshot image's spec changed, objects
//! deleted behind the controllers' backs with etcdctl — the leading controller is killed -9 at
//! random points (and started again) or paused with SIGSTOP past its lease (and resumed), and
//! etcd is restarted once. Afterwards the platform must
//! converge to what the operations asked for, with nothing leaked (Nova servers, Glance images,
//! Swarm services, configs, secrets and nodes, network namespaces), no Node with two servers,
//! and every status matching reality; the counts are printed as a table.
//!
//! `LAMBDA_CHAOS_SEED` replays a run (the seed is printed first; by default it is drawn from
//! the clock); `LAMBDA_CHAOS_OPS` (200) and `LAMBDA_CHAOS_KILLS` (about 10 leader kills) size
//! it. Needs `scripts/swarm.sh up` and `scripts/images.sh` (the test command runs both); uses
//! addresses 10.251.0.210–254 of the project bridge.

mod audit;
mod bed;
#[path = "../common/mod.rs"]
mod common;
mod findings;
mod model;

use std::time::{Duration, Instant};

use bed::{Bed, CONVERGE, function_yaml, pool_yaml, snapshot_yaml};
use model::{Step, World};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_platform_converges_and_leaks_nothing_under_chaos() {
    let seed: u64 = env_or(
        "LAMBDA_CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1),
    );
    let ops: usize = env_or("LAMBDA_CHAOS_OPS", 200);
    let kills: usize = env_or("LAMBDA_CHAOS_KILLS", 10);
    eprintln!(
        "chaos seed {seed} (LAMBDA_CHAOS_SEED={seed} replays it): {ops} operations, ~{kills} leader kills"
    );
    let plan = model::plan(seed, ops, kills);
    let began = Instant::now();
    let mut bed = Bed::start().await;

    // The starting state, converged before the chaos begins.
    let mut world = World::initial();
    let mut start = snapshot_yaml(world.snapshot_version);
    for (p, r) in &world.pools {
        start += &format!("---\n{}", pool_yaml(p, *r));
    }
    for (f, v) in &world.functions {
        start += &format!("---\n{}", function_yaml(f, *v));
    }
    bed.apply(&start).await;
    let (a, took) = bed.converge(&world, Duration::from_secs(240)).await;
    assert!(
        a.converged(),
        "the starting state did not converge:\n{}\n{}{}",
        a.table(),
        a.details(),
        bed.log_tails()
    );
    eprintln!("starting state converged in {took:?}");

    // The chaos.
    let chaos = Instant::now();
    let (mut killed, mut stopped, mut restarts) = (0, 0, 0);
    for (
        i,
        Step {
            pause_ms,
            op,
            kill_after_ms,
            restart_etcd,
            stop_leader_ms,
        },
    ) in plan.iter().enumerate()
    {
        if *restart_etcd {
            eprintln!("[op {i}] etcd restarted");
            bed.etcd.restart();
            restarts += 1;
        }
        tokio::time::sleep(Duration::from_millis(*pause_ms)).await;
        bed.run(op).await;
        world.apply(op);
        if let Some(after) = kill_after_ms {
            tokio::time::sleep(Duration::from_millis(*after)).await;
            if let Some(slot) = bed.leader().await {
                bed.kill_and_restart(slot);
                killed += 1;
                eprintln!(
                    "[op {i}] leader {} killed -9 after {op:?}",
                    ["a", "b"][slot]
                );
            }
        }
        if let Some(ms) = stop_leader_ms
            && let Some(slot) = bed.leader().await
        {
            bed.stop_for(slot, *ms);
            stopped += 1;
            eprintln!(
                "[op {i}] leader {} stopped (SIGSTOP) for {ms} ms after {op:?}",
                ["a", "b"][slot]
            );
        }
    }
    let chaos_took = chaos.elapsed();
    eprintln!(
        "{ops} operations in {chaos_took:?}: {killed} leader kills, {stopped} leader pauses, {restarts} etcd restart; desired: {} functions, pools {:?}, snapshot v{}",
        world.functions.len(),
        world.pools,
        world.snapshot_version
    );

    // Convergence, then the counts.
    let (a, took) = bed.converge(&world, CONVERGE).await;
    let fenced = bed.fenced_writes().await;
    let summary = format!(
        "chaos seed {seed}: {ops} operations, {killed} leader kills (-9), {stopped} leader pauses (SIGSTOP past the lease), {restarts} etcd restart; converged: {} after {took:?}; whole test {:?}\n\n{}\nlate writes refused by the fence: {fenced}\n",
        a.converged(),
        began.elapsed(),
        a.table()
    );
    eprintln!("\n{summary}");
    common::report("chaos.txt", &summary);
    for slot in 0..2 {
        assert!(
            bed.controllers[slot].as_mut().is_some_and(|c| c.running()),
            "controller {slot} exited:\n{}",
            bed.log_tails()
        );
    }
    if !a.converged() {
        let kept = bed.keep_logs(seed);
        panic!(
            "not converged {took:?} after the chaos (seed {seed}; logs kept in {}):\n{}{}",
            kept.display(),
            a.details(),
            bed.log_tails()
        );
    }
    let _ = (&mut bed, chaos_took);
}
