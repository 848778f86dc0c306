//! `lambda bench autoscale`: the node autoscaler on an OpenStack (`lambda cloud`) with the
//! real Swarm, by an in-process controller (functions, nodes and the autoscaler at their
//! production timings), next to the physical limit measured in the same run — the same number
//! of servers created straight through Nova with the join script until they are ready Swarm
//! workers.
//!
//! Each round deploys a function whose replicas fill `nodes` nodes of an autoscaled pool at
//! zero (two replicas per node, each just under half a node's allocatable memory), polls every
//! 20 ms for: its first task going pending, the pool's `desiredReplicas` written (the
//! decision), each server appearing in Nova (the create request) and every replica Running;
//! then deletes it and waits for the pool to be back at zero. The poll interval bounds the
//! resolution of every figure.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::api::nodepool::AutoscalingPolicy;
use crate::api::{FunctionSpec, NodePoolSpec, Object, ObjectKey};
use crate::reconcilers::autoscaler::observe::is_unplaceable;
use crate::reconcilers::cluster::instance_tag;
use crate::reconcilers::function::FunctionsConfig;
use crate::reconcilers::{self, ControllersConfig};
use crate::runtime::Metrics;
use crate::store::Store;
use crate::swarm::{TaskFilter, labels};

use super::super::stats::{ms, percentile};
use super::limit::raw;
use super::{NodesBench, NodesBenchError, observe, pool_object, secs};

const POLL: Duration = Duration::from_millis(20);
const RESERVE_MB: u32 = 256;
const POOL: &str = "bench-auto";

/// What one round saw, from the function's creation.
#[derive(Debug, Default)]
struct Round {
    pending: Option<Duration>,
    decided: Option<Duration>,
    /// Server id → first seen in Nova.
    created: BTreeMap<String, Duration>,
    /// Every node of the pool Ready (joined, labelled).
    nodes_ready: Option<Duration>,
    running: Option<Duration>,
    /// Reserved / allocatable memory of the pool once every replica ran, and its node count.
    packing: Option<(u64, u64, usize)>,
}

fn pool(cfg: &NodesBench) -> Object<NodePoolSpec> {
    let autoscaling = AutoscalingPolicy {
        enabled: true,
        scale_down_unneeded_seconds: 1,
        scale_down_delay_after_add_seconds: 0,
        system_reserve_mb: RESERVE_MB,
        ..AutoscalingPolicy::default()
    };
    pool_object(cfg, POOL, 0, Some(autoscaling))
}

fn function(
    ns: &str,
    name: &str,
    memory_mb: u32,
    replicas: u32,
) -> Result<Object<FunctionSpec>, NodesBenchError> {
    let yaml = format!(
        "runtime: shell\ncode: {{inline: cat}}\nresources: {{memoryMb: {memory_mb}}}\nminReplicas: {replicas}\nmaxReplicas: {replicas}\n"
    );
    let spec: FunctionSpec = serde_saphyr::from_str(&yaml)
        .map_err(|e| NodesBenchError::Failed(format!("bench function spec: {e}")))?;
    Ok(Object::new(ns, name, spec))
}

async fn round(
    cfg: &NodesBench,
    store: &Store,
    name: &str,
    memory_mb: u32,
) -> Result<Round, NodesBenchError> {
    let c = &cfg.cluster;
    let tag = instance_tag(&c.instance);
    let replicas = 2 * cfg.nodes as u32;
    let key = ObjectKey::new(&cfg.namespace, POOL);
    let t0 = Instant::now();
    store
        .create(&function(&cfg.namespace, name, memory_mb, replicas)?)
        .await?;
    let mut r = Round::default();
    loop {
        let now = t0.elapsed();
        if r.pending.is_none() {
            let services = c.swarm.list_services(&[(labels::NAME, name)]).await?;
            if let Some(id) = services.first().and_then(|s| s.id.clone()) {
                let tasks = c
                    .swarm
                    .list_tasks(&TaskFilter {
                        service: Some(id),
                        ..Default::default()
                    })
                    .await?;
                if tasks.iter().any(is_unplaceable) {
                    r.pending = Some(now);
                }
            }
        }
        let p = store.get::<NodePoolSpec>(&key.namespace, &key.name).await?;
        let ps = p.status.clone().unwrap_or_default();
        if r.decided.is_none() && ps.desired_replicas.unwrap_or(0) > 0 {
            r.decided = Some(now);
        }
        if r.nodes_ready.is_none() && ps.ready_replicas as usize >= cfg.nodes {
            r.nodes_ready = Some(now);
        }
        let (servers, _) = observe(&c.cloud, &c.swarm, &tag).await?;
        for s in servers {
            r.created.entry(s.id).or_insert(now);
        }
        let f = store.get::<FunctionSpec>(&cfg.namespace, name).await?;
        if f.status
            .as_ref()
            .is_some_and(|s| s.ready_replicas >= replicas)
        {
            r.running = Some(now);
            let a = ps.autoscaler.unwrap_or_default();
            r.packing = Some((
                a.reserved.memory_mb,
                a.allocatable.memory_mb,
                ps.ready_replicas as usize,
            ));
            break;
        }
        if now > cfg.timeout {
            return Err(NodesBenchError::Failed(format!(
                "round {name}: {} replicas not Running after {:?} (pool status {ps:?})",
                replicas, cfg.timeout
            )));
        }
        tokio::time::sleep(POLL).await;
    }
    store.delete::<FunctionSpec>(&cfg.namespace, name).await?;
    // Back to zero before the next round (the unneeded window is 1 s).
    let t = Instant::now();
    while !observe(&c.cloud, &c.swarm, &tag).await?.0.is_empty() {
        if t.elapsed() > cfg.timeout {
            return Err(NodesBenchError::Failed(format!(
                "round {name}: the pool did not scale back to zero in {:?}",
                cfg.timeout
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(r)
}

/// Runs `rounds` rounds and prints the figures.
pub async fn run(store: &Store, cfg: &NodesBench, rounds: usize) -> Result<(), NodesBenchError> {
    let flavor = cfg.cluster.cloud.compute().find_flavor(&cfg.flavor).await?;
    // Two replicas per node, just under half of what the autoscaler's template offers.
    let per = u32::try_from(flavor.ram)
        .unwrap_or(u32::MAX)
        .saturating_sub(RESERVE_MB)
        / 2
        - 16;
    if per < 32 {
        return Err(NodesBenchError::Failed(format!(
            "flavor {} is too small for the bench ({} MiB)",
            cfg.flavor, flavor.ram
        )));
    }
    println!(
        "physical limit: {} servers straight through Nova with the join script (no controller)",
        cfg.nodes
    );
    let (raw_up, _) = raw(cfg).await?;
    println!("  all ready Swarm workers {}", secs(raw_up));

    let mut functions = FunctionsConfig::new(
        cfg.cluster.swarm.clone(),
        cfg.cluster.images.clone(),
        &cfg.cluster.instance,
    );
    // The bench's replicas go to the bench's nodes only.
    functions.constraints = vec![format!(
        "node.labels.{}=={}",
        labels::INSTANCE,
        cfg.cluster.instance
    )];
    let stop = CancellationToken::new();
    let ctl = tokio::spawn(reconcilers::run_all(
        store.clone(),
        Metrics::new(),
        ControllersConfig {
            namespace: Some(cfg.namespace.clone()),
            cluster: Some(cfg.cluster.clone()),
            functions: Some(functions),
            ..Default::default()
        },
        stop.clone(),
    ));
    store.create(&pool(cfg)).await?;
    let mut results = Vec::new();
    let mut failure = None;
    for i in 0..rounds {
        match round(cfg, store, &format!("bench-fn-{i}"), per).await {
            Ok(r) => results.push(r),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let _ = store.delete::<NodePoolSpec>(&cfg.namespace, POOL).await;
    let t = Instant::now();
    while store
        .get::<NodePoolSpec>(&cfg.namespace, POOL)
        .await
        .is_ok()
        && t.elapsed() < cfg.timeout
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    let _ = ctl.await;
    if let Some(e) = failure {
        return Err(e);
    }

    let mut to_create: Vec<Duration> = Vec::new();
    let mut to_decision: Vec<Duration> = Vec::new();
    let mut to_running: Vec<Duration> = Vec::new();
    let mut to_nodes: Vec<Duration> = Vec::new();
    println!();
    println!(
        "autoscaler: {rounds} rounds, each a function of {} × {per} MiB on a pool of {} at 0 (FFD optimum {} nodes)",
        2 * cfg.nodes,
        cfg.flavor,
        cfg.nodes
    );
    for (i, r) in results.iter().enumerate() {
        let Some(p) = r.pending else { continue };
        if let Some(d) = r.decided {
            to_decision.push(d.saturating_sub(p));
        }
        for c in r.created.values() {
            to_create.push(c.saturating_sub(p));
        }
        if let Some(run) = r.running {
            to_running.push(run.saturating_sub(p));
        }
        if let Some(n) = r.nodes_ready {
            to_nodes.push(n.saturating_sub(p));
        }
        if let Some((reserved, alloc, nodes)) = r.packing {
            println!(
                "  round {i}: {} servers, {nodes} nodes Ready; reserved / allocatable {reserved} / {alloc} MiB = {:.0} %; pending → all Running {}",
                r.created.len(),
                100.0 * reserved as f64 / alloc.max(1) as f64,
                secs(r.running.unwrap_or_default().saturating_sub(p)),
            );
        }
    }
    for v in [
        &mut to_create,
        &mut to_decision,
        &mut to_running,
        &mut to_nodes,
    ] {
        v.sort();
    }
    println!(
        "  task pending → decision (desiredReplicas written): p50 {}, p99 {}",
        ms(percentile(&to_decision, 50.0)),
        ms(percentile(&to_decision, 99.0))
    );
    println!(
        "  task pending → Nova create request: p50 {}, p99 {}   (target p99 ≤ 1 s; {} servers; poll {})",
        ms(percentile(&to_create, 50.0)),
        ms(percentile(&to_create, 99.0)),
        to_create.len(),
        ms(POLL)
    );
    println!(
        "  task pending → every node Ready: p50 {}, p99 {}",
        secs(percentile(&to_nodes, 50.0)),
        secs(percentile(&to_nodes, 99.0))
    );
    println!(
        "  task pending → every replica Running: p50 {}, p99 {}   (physical limit, servers → ready workers: {})",
        secs(percentile(&to_running, 50.0)),
        secs(percentile(&to_running, 99.0)),
        secs(raw_up)
    );
    Ok(())
}
