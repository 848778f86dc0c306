//! `lambda bench nodes`: a node pool scaled 0 → N → 0 on an OpenStack (`lambda cloud`) with
//! the real Swarm, by an in-process controller, next to the physical limit measured in the same
//! run: N servers created straight through Nova with the same image and join script, waited
//! until their engines are ready Swarm workers, then removed — no controller involved.
//!
//! The scale-up is split per node into what the bench observes every 50 ms: the controller
//! before Nova (replicas edited → server requested), Nova (requested → ACTIVE), the VM and
//! Swarm (ACTIVE → a ready Swarm worker) and the controller after the join (→ Node Ready).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::api::nodepool::ImageRef;
use crate::api::{Conditions, NodePoolSpec, NodeSpec, Object, ObjectKey};
use crate::openstack::{OpenStack, ServerFilter, ServerStatus};
use crate::reconcilers::cluster::{ClusterConfig, instance_tag, owner_tag};
use crate::reconcilers::{self, ControllersConfig};
use crate::runtime::Metrics;
use crate::store::{Store, StoreError};
use crate::swarm::{Swarm, SwarmError, node_address};

use super::stats::percentile;

pub mod autoscale;
mod limit;
pub use limit::prepare_image;
use limit::raw;

/// Errors of the nodes benchmark.
#[derive(Debug, thiserror::Error)]
pub enum NodesBenchError {
    #[error(transparent)]
    OpenStack(#[from] crate::openstack::Error),
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Failed(String),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct NodesBench {
    /// The cloud, Swarm, join address, instance and timings the controller uses.
    pub cluster: ClusterConfig,
    pub nodes: usize,
    pub flavor: String,
    pub network: Option<String>,
    /// Glance image the workers boot from (holding the runtime images).
    pub image: String,
    /// Scratch namespace (purged of the bench's pool at the end).
    pub namespace: String,
    /// Longest wait for one phase.
    pub timeout: Duration,
}

/// When the bench first saw each step of one node.
#[derive(Debug, Default, Clone)]
struct Seen {
    requested: Option<Duration>,
    active: Option<Duration>,
    joined: Option<Duration>,
    ready: Option<Duration>,
}

/// What the cloud and the Swarm look like now: server id → (status, addresses), and the ready
/// worker addresses.
async fn observe(
    os: &OpenStack,
    swarm: &Swarm,
    tag: &str,
) -> Result<(Vec<crate::openstack::Server>, Vec<String>), NodesBenchError> {
    let servers = os
        .compute()
        .list_servers(&ServerFilter {
            tags: vec![tag.to_string()],
            ..Default::default()
        })
        .await?;
    let ready = swarm
        .list_nodes()
        .await?
        .iter()
        .filter(|n| {
            n.status.as_ref().and_then(|s| s.state) == Some(bollard::models::NodeState::READY)
        })
        .filter_map(node_address)
        .collect();
    Ok((servers, ready))
}

fn addresses(s: &crate::openstack::Server) -> Vec<String> {
    s.addresses
        .values()
        .flatten()
        .map(|a| a.addr.clone())
        .collect()
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The bench's pool `name` of the bench's image, flavor and network, up to `cfg.nodes`.
fn pool_object(
    cfg: &NodesBench,
    name: &str,
    replicas: u32,
    autoscaling: Option<crate::api::nodepool::AutoscalingPolicy>,
) -> Object<NodePoolSpec> {
    let spec = NodePoolSpec {
        image: ImageRef {
            snapshot_image: None,
            glance_image: Some(cfg.image.clone()),
        },
        flavor: cfg.flavor.clone(),
        network: cfg.network.clone(),
        key_pair: None,
        security_groups: Vec::new(),
        availability_zone: None,
        replicas,
        min_replicas: 0,
        max_replicas: cfg.nodes as u32,
        max_surge: cfg.nodes as u32,
        autoscaling,
        node_labels: BTreeMap::new(),
    };
    Object::new(&cfg.namespace, name, spec)
}

async fn set_replicas(store: &Store, key: &ObjectKey, n: u32) -> Result<(), NodesBenchError> {
    for _ in 0..10 {
        let mut p = store.get::<NodePoolSpec>(&key.namespace, &key.name).await?;
        p.spec.replicas = n;
        match store.update(&p).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(NodesBenchError::Failed("the pool keeps changing".into()))
}

/// Scale-up, polled every 50 ms: per node (by name) what was seen when.
async fn scale_up(
    cfg: &NodesBench,
    store: &Store,
    key: &ObjectKey,
) -> Result<(Duration, BTreeMap<String, Seen>), NodesBenchError> {
    let c = &cfg.cluster;
    let tag = instance_tag(&c.instance);
    let t0 = Instant::now();
    set_replicas(store, key, cfg.nodes as u32).await?;
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    loop {
        let now = t0.elapsed();
        let nodes = store.list::<NodeSpec>(Some(&key.namespace)).await?.items;
        let (servers, ready_addrs) = observe(&c.cloud, &c.swarm, &tag).await?;
        let by_owner: HashMap<String, &crate::openstack::Server> = servers
            .iter()
            .filter_map(|s| {
                let uid = s.metadata.get(crate::reconcilers::cluster::META_UID)?;
                Some((uid.clone(), s))
            })
            .collect();
        for n in &nodes {
            let e = seen.entry(n.metadata.name.clone()).or_default();
            let uid = n.metadata.uid.clone().unwrap_or_default();
            let server = by_owner
                .get(&uid)
                .filter(|s| s.tags.contains(&owner_tag(&uid)));
            if let Some(s) = server {
                e.requested.get_or_insert(now);
                if s.status == ServerStatus::Active {
                    e.active.get_or_insert(now);
                }
                if addresses(s).iter().any(|a| ready_addrs.contains(a)) {
                    e.joined.get_or_insert(now);
                }
            }
            if n.status.as_ref().is_some_and(|s| s.is_true("Ready")) {
                e.ready.get_or_insert(now);
            }
        }
        let ready = seen.values().filter(|s| s.ready.is_some()).count();
        if ready >= cfg.nodes {
            return Ok((now, seen));
        }
        if now > cfg.timeout {
            return Err(NodesBenchError::Failed(format!(
                "{ready}/{} nodes Ready after {:?}",
                cfg.nodes, cfg.timeout
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Scale-down: (all Swarm nodes removed, all servers gone, all Node objects gone).
async fn scale_down(
    cfg: &NodesBench,
    store: &Store,
    key: &ObjectKey,
    addrs: &[String],
) -> Result<(Duration, Duration, Duration), NodesBenchError> {
    let c = &cfg.cluster;
    let tag = instance_tag(&c.instance);
    let t0 = Instant::now();
    set_replicas(store, key, 0).await?;
    let (mut swarm_gone, mut servers_gone) = (None, None);
    loop {
        let now = t0.elapsed();
        let in_swarm = c
            .swarm
            .list_nodes()
            .await?
            .iter()
            .filter_map(node_address)
            .filter(|a| addrs.contains(a))
            .count();
        if in_swarm == 0 {
            swarm_gone.get_or_insert(now);
        }
        let (servers, _) = observe(&c.cloud, &c.swarm, &tag).await?;
        if servers.is_empty() {
            servers_gone.get_or_insert(now);
        }
        let nodes = store.list::<NodeSpec>(Some(&key.namespace)).await?.items;
        tracing::debug!(
            ?now,
            in_swarm,
            servers = servers.len(),
            nodes = nodes.len(),
            "scale-down"
        );
        if let (Some(s), Some(v), true) = (swarm_gone, servers_gone, nodes.is_empty()) {
            return Ok((s, v, now));
        }
        if now > cfg.timeout {
            return Err(NodesBenchError::Failed(format!(
                "after {:?}: {in_swarm} Swarm nodes, {} servers, {} Nodes left",
                cfg.timeout,
                servers.len(),
                nodes.len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    percentile(&v, 50.0)
}

/// Runs the benchmark and prints its figures.
pub async fn run(store: &Store, cfg: &NodesBench) -> Result<(), NodesBenchError> {
    println!(
        "physical limit: {} servers straight through Nova with the join script (no controller)",
        cfg.nodes
    );
    let (raw_up, raw_down) = raw(cfg).await?;
    println!(
        "  all ready Swarm workers {}, all removed {}",
        secs(raw_up),
        secs(raw_down)
    );

    let stop = CancellationToken::new();
    let ccfg = ControllersConfig {
        namespace: Some(cfg.namespace.clone()),
        cluster: Some(cfg.cluster.clone()),
        ..Default::default()
    };
    let ctl = tokio::spawn(reconcilers::run_all(
        store.clone(),
        Metrics::new(),
        ccfg,
        stop.clone(),
    ));
    let pool = pool_object(cfg, "bench-pool", 0, None);
    let key = ObjectKey::new(&cfg.namespace, "bench-pool");
    let _ = store
        .delete::<NodePoolSpec>(&key.namespace, &key.name)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    store.create(&pool).await?;
    // Let the controller settle on the empty pool first.
    let t = Instant::now();
    while !store
        .get::<NodePoolSpec>(&key.namespace, &key.name)
        .await?
        .status
        .is_some_and(|s| s.is_true("Ready"))
    {
        if t.elapsed() > Duration::from_secs(30) {
            stop.cancel();
            return Err(NodesBenchError::Failed(
                "the empty pool never became Ready".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outcome = async {
        let (up, seen) = scale_up(cfg, store, &key).await?;
        let nodes = store.list::<NodeSpec>(Some(&key.namespace)).await?.items;
        let addrs: Vec<String> = nodes
            .iter()
            .filter_map(|n| n.status.clone())
            .flat_map(|s| s.addresses)
            .collect();
        let down = scale_down(cfg, store, &key, &addrs).await?;
        Ok::<_, NodesBenchError>((up, seen, down))
    }
    .await;
    let _ = store
        .delete::<NodePoolSpec>(&key.namespace, &key.name)
        .await;
    let t = Instant::now();
    while store
        .get::<NodePoolSpec>(&key.namespace, &key.name)
        .await
        .is_ok()
        && t.elapsed() < cfg.timeout
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    let _ = ctl.await;
    let (up, seen, (swarm_gone, servers_gone, nodes_gone)) = outcome?;

    // Phases per node: controller before Nova, Nova, VM + Swarm join, controller after join.
    let mut phases: [Vec<Duration>; 4] = Default::default();
    let mut critical: Option<(&String, &Seen)> = None;
    for (name, s) in &seen {
        let (Some(r), Some(a), Some(j), Some(d)) = (s.requested, s.active, s.joined, s.ready)
        else {
            continue;
        };
        phases[0].push(r);
        phases[1].push(a.saturating_sub(r));
        phases[2].push(j.saturating_sub(a));
        phases[3].push(d.saturating_sub(j));
        if critical.is_none_or(|(_, c)| c.ready < s.ready) {
            critical = Some((name, s));
        }
    }
    println!();
    println!(
        "controller: pool 0 → {} → 0 ({} on the pool's scale-up)",
        cfg.nodes, cfg.namespace
    );
    println!(
        "  all {} Nodes Ready: {}   (physical limit {}; target ≤ 10 s)",
        cfg.nodes,
        secs(up),
        secs(raw_up)
    );
    if let Some((name, s)) = critical {
        let (r, a, j, d) = (
            s.requested.unwrap_or_default(),
            s.active.unwrap_or_default(),
            s.joined.unwrap_or_default(),
            s.ready.unwrap_or_default(),
        );
        let nova = a.saturating_sub(r);
        let swarm = j.saturating_sub(a);
        let controller = r + d.saturating_sub(j);
        println!(
            "  last node {name}: controller {} (edit → server requested {}, joined → Ready {}), Nova {} (requested → ACTIVE), VM + Swarm {} (ACTIVE → ready worker)",
            secs(controller),
            secs(r),
            secs(d.saturating_sub(j)),
            secs(nova),
            secs(swarm)
        );
        println!(
            "  shares of the last node's path: Nova {:.0} %, VM + Swarm {:.0} %, controller {:.0} %   (target: controller ≤ 3 s)",
            100.0 * nova.as_secs_f64() / d.as_secs_f64().max(1e-9),
            100.0 * swarm.as_secs_f64() / d.as_secs_f64().max(1e-9),
            100.0 * controller.as_secs_f64() / d.as_secs_f64().max(1e-9),
        );
    }
    let [p0, p1, p2, p3] = phases;
    println!(
        "  medians per node: edit → requested {}, Nova {}, VM + Swarm {}, joined → Ready {}",
        secs(median(p0)),
        secs(median(p1)),
        secs(median(p2)),
        secs(median(p3))
    );
    println!(
        "  overhead over the physical limit: {}",
        secs(up.saturating_sub(raw_up))
    );
    println!(
        "  scale to 0: Swarm nodes drained and removed {}, servers gone {}, Nodes gone {}   (physical limit {})",
        secs(swarm_gone),
        secs(servers_gone),
        secs(nodes_gone),
        secs(raw_down)
    );
    Ok(())
}
