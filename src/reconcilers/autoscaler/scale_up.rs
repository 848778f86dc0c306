//! The scale-up decision, a pure function of a simulated cluster: which pools get how many
//! new nodes for the pending work, and which work no pool can take, and why.
//!
//! Rules (cluster-autoscaler's and Karpenter's, kept):
//! - the whole batch is decided at once (10 pending tasks → the nodes they need, one decision);
//! - first-fit decreasing: items, largest first, go onto existing free capacity first —
//!   including the pools' upcoming nodes (created, not in Swarm yet), modelled as empty
//!   template nodes, so work waiting for a booting node never asks for another;
//! - then onto new template nodes: each eligible pool packs what it can take (its template
//!   satisfies the constraints and is big enough) onto as few new nodes as FFD finds; the pool
//!   wasting least (unused memory and CPU share of its new nodes) wins, then the higher
//!   priority, then the name; repeated for what is left, so items only one pool can take
//!   still get a node;
//! - never beyond a pool's `maxReplicas` or the project's quota.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::fmt;

use crate::api::nodepool::PendingWork;

use super::constraints::{Constraint, all_match};
use super::model::{Resources, SimNode, WorkItem, ffd_sort, first_fit};
use super::template::TemplateNode;

/// A pool the autoscaler may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolCandidate {
    pub template: TemplateNode,
    /// Nodes the pool has or is creating: the count it is converging to now.
    pub replicas: u32,
    /// Of those, the ones not among the simulation's nodes yet — being created, booting, or
    /// not even created (`replicas` minus the pool's nodes in Swarm) — modelled as empty
    /// template nodes, so a decision made again before they join (a controller restart, the
    /// next pass) does not ask for them twice.
    pub upcoming: u32,
    pub max_replicas: u32,
    /// Tie-break: higher wins.
    pub priority: u32,
}

/// Room left in the project's compute quota; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    pub instances: Option<u32>,
    /// vCPUs (Nova's `cores`).
    pub cores: Option<u64>,
    pub ram_mb: Option<u64>,
}

impl Quota {
    /// No limit at all.
    pub const UNLIMITED: Quota = Quota {
        instances: None,
        cores: None,
        ram_mb: None,
    };

    /// How many servers of `flavor_size` still fit.
    pub fn nodes_of(&self, flavor_size: &Resources) -> u32 {
        let by = |left: Option<u64>, each: u64| match left {
            None => u32::MAX,
            Some(_) if each == 0 => u32::MAX,
            Some(l) => u32::try_from(l / each).unwrap_or(u32::MAX),
        };
        let cores = flavor_size.cpu_millis.div_ceil(1000);
        self.instances
            .unwrap_or(u32::MAX)
            .min(by(self.cores, cores))
            .min(by(self.ram_mb, flavor_size.memory_mb))
    }

    fn consume(&mut self, flavor_size: &Resources, n: u32) {
        let cores = flavor_size.cpu_millis.div_ceil(1000);
        self.instances = self.instances.map(|i| i.saturating_sub(n));
        self.cores = self.cores.map(|c| c.saturating_sub(cores * u64::from(n)));
        self.ram_mb = self
            .ram_mb
            .map(|r| r.saturating_sub(flavor_size.memory_mb * u64::from(n)));
    }
}

/// Condition reason (on the Function) for work no pool's node can take at all.
pub const NO_POOL_FITS: &str = "NoPoolFits";

/// Why an item gets no node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unplaceable {
    /// No autoscaled pool's nodes satisfy its constraints.
    NoMatchingPool { constraints: Vec<String> },
    /// Bigger than the template node of every pool it may go to.
    TooLarge {
        needed: Resources,
        /// The biggest of those pools' template nodes: (pool, flavor, allocatable).
        largest: Option<(String, String, Resources)>,
    },
    /// It would fit these pools' nodes, and all are at `maxReplicas`.
    AtMaxReplicas { pools: Vec<String> },
    /// It would fit these pools' nodes, and the project's quota has no room for one.
    QuotaExhausted { pools: Vec<String> },
}

impl Unplaceable {
    /// The condition reason to report it under (`NoPoolFits` on the Function).
    pub fn reason(&self) -> &'static str {
        match self {
            Unplaceable::NoMatchingPool { .. } | Unplaceable::TooLarge { .. } => NO_POOL_FITS,
            Unplaceable::AtMaxReplicas { .. } => "PoolAtMaxReplicas",
            Unplaceable::QuotaExhausted { .. } => "QuotaExceeded",
        }
    }
}

impl fmt::Display for Unplaceable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unplaceable::NoMatchingPool { constraints } => write!(
                f,
                "no autoscaled pool's nodes satisfy its placement constraints ({})",
                constraints.join(", ")
            ),
            Unplaceable::TooLarge {
                needed,
                largest: Some((pool, flavor, alloc)),
            } => write!(
                f,
                "needs {needed}, more than any pool's node offers: the largest, {flavor} of \
                 pool {pool}, offers {alloc} after the system reserve"
            ),
            Unplaceable::TooLarge { needed, .. } => {
                write!(f, "needs {needed}, more than any pool's node offers")
            }
            Unplaceable::AtMaxReplicas { pools } => {
                write!(
                    f,
                    "the pools it fits are at maxReplicas: {}",
                    pools.join(", ")
                )
            }
            Unplaceable::QuotaExhausted { pools } => write!(
                f,
                "the project's quota has no room for another node of {}",
                pools.join(", ")
            ),
        }
    }
}

/// An item that gets no node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaced {
    pub item: String,
    pub owner: String,
    pub demand: Resources,
    pub why: Unplaceable,
}

/// New nodes for one pool. Invariant: `to > from`, `to <= maxReplicas`, and `items` all fit
/// on the `to - from` new nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolGrowth {
    pub pool: String,
    pub flavor: String,
    pub from: u32,
    pub to: u32,
    /// Ids of the items that go onto the new nodes.
    pub items: Vec<String>,
    /// Owner → how many of the items are theirs.
    pub owners: BTreeMap<String, u32>,
    /// The items' summed reservations.
    pub requested: Resources,
    /// E.g. `scale up 1 → 3: 5 pending tasks of fn/resize need 2 × m1.small`.
    pub reason: String,
}

impl PoolGrowth {
    /// How many nodes to add.
    pub fn new_nodes(&self) -> u32 {
        self.to - self.from
    }

    /// The status summary of the work behind it.
    pub fn pending(&self) -> PendingWork {
        PendingWork {
            tasks: self.items.len() as u32,
            requested: self.requested.into(),
            owners: self.owners.keys().cloned().collect(),
        }
    }
}

/// The decision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScaleUp {
    /// Pools to grow, by name.
    pub growth: Vec<PoolGrowth>,
    /// Items that fit existing or upcoming nodes (Swarm will place them without new nodes).
    pub on_existing: Vec<String>,
    pub unplaced: Vec<Unplaced>,
}

impl ScaleUp {
    /// The growth of `pool`, if it grows.
    pub fn growth_of(&self, pool: &str) -> Option<&PoolGrowth> {
        self.growth.iter().find(|g| g.pool == pool)
    }
}

/// One pool's packing of the remaining items onto new nodes.
struct Packing {
    pool: usize,
    nodes: Vec<SimNode>,
    /// Indices into the remaining items.
    placed: Vec<usize>,
    waste: f64,
}

fn fits_template(t: &TemplateNode, it: &WorkItem) -> bool {
    it.demand.fits_in(&t.node.allocatable) && all_match(&it.constraints, &t.node.attributes)
}

fn pack(pi: usize, p: &PoolCandidate, left: &[&WorkItem], room: u32, first: u32) -> Packing {
    let mut nodes: Vec<SimNode> = Vec::new();
    let mut placed = Vec::new();
    for (i, it) in left.iter().enumerate() {
        if !fits_template(&p.template, it) {
            continue;
        }
        if first_fit(it, &mut nodes).is_some() {
            placed.push(i);
        } else if (nodes.len() as u32) < room {
            let mut n = p.template.instantiate(format!(
                "{}-new-{}",
                p.template.pool,
                first + nodes.len() as u32
            ));
            n.take(it);
            nodes.push(n);
            placed.push(i);
        }
    }
    let total = nodes
        .iter()
        .fold(Resources::ZERO, |a, n| a.plus(&n.allocatable));
    let used = nodes
        .iter()
        .fold(Resources::ZERO, |a, n| a.plus(&n.reserved));
    let unused = |u: u64, t: u64| {
        if t == 0 {
            0.0
        } else {
            1.0 - u as f64 / t as f64
        }
    };
    let waste =
        (unused(used.memory_mb, total.memory_mb) + unused(used.cpu_millis, total.cpu_millis)) / 2.0;
    Packing {
        pool: pi,
        nodes,
        placed,
        waste,
    }
}

/// Least waste first (equal within rounding), then higher priority, then the pool's name.
fn better(a: &Packing, b: &Packing, pools: &[PoolCandidate]) -> bool {
    let waste = if (a.waste - b.waste).abs() < 1e-9 {
        Ordering::Equal
    } else {
        a.waste.total_cmp(&b.waste)
    };
    let (pa, pb) = (&pools[a.pool], &pools[b.pool]);
    waste
        .then_with(|| pb.priority.cmp(&pa.priority))
        .then_with(|| pa.template.pool.cmp(&pb.template.pool))
        == Ordering::Less
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn growth_reason(from: u32, to: u32, flavor: &str, owners: &BTreeMap<String, u32>) -> String {
    let mut by_count: Vec<(&String, &u32)> = owners.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let total: u32 = owners.values().sum();
    let mut parts: Vec<String> = by_count
        .iter()
        .take(3)
        .enumerate()
        .map(|(i, (o, n))| {
            if i == 0 {
                format!(
                    "{} of {o}",
                    plural(**n as usize, "pending task", "pending tasks")
                )
            } else {
                format!("{n} of {o}")
            }
        })
        .collect();
    if by_count.len() > 3 {
        parts.push(format!("{} more", by_count.len() - 3));
    }
    let verb = if total == 1 { "needs" } else { "need" };
    format!(
        "scale up {from} → {to}: {} {verb} {} × {flavor}",
        parts.join(", "),
        to - from
    )
}

fn classify(it: &WorkItem, pools: &[PoolCandidate], room_left: &[u32]) -> Unplaceable {
    let matching: Vec<usize> = (0..pools.len())
        .filter(|&i| all_match(&it.constraints, &pools[i].template.node.attributes))
        .collect();
    if matching.is_empty() {
        return Unplaceable::NoMatchingPool {
            constraints: it.constraints.iter().map(Constraint::to_string).collect(),
        };
    }
    let fitting: Vec<usize> = matching
        .iter()
        .copied()
        .filter(|&i| fits_template(&pools[i].template, it))
        .collect();
    if fitting.is_empty() {
        let largest = matching
            .iter()
            .map(|&i| &pools[i].template)
            .max_by_key(|t| (t.node.allocatable.memory_mb, t.node.allocatable.cpu_millis))
            .map(|t| (t.pool.clone(), t.flavor.clone(), t.node.allocatable));
        return Unplaceable::TooLarge {
            needed: it.demand,
            largest,
        };
    }
    let names = fitting
        .iter()
        .map(|&i| pools[i].template.pool.clone())
        .collect();
    if fitting.iter().all(|&i| room_left[i] == 0) {
        Unplaceable::AtMaxReplicas { pools: names }
    } else {
        Unplaceable::QuotaExhausted { pools: names }
    }
}

/// Decides the scale-up for `items` given the cluster's `nodes` (with their current
/// reservations), the autoscaled `pools` and the project's `quota`.
pub fn decide(
    items: &[WorkItem],
    nodes: &[SimNode],
    pools: &[PoolCandidate],
    mut quota: Quota,
) -> ScaleUp {
    let mut sim: Vec<SimNode> = nodes.to_vec();
    for p in pools {
        for i in 0..p.upcoming {
            sim.push(
                p.template
                    .instantiate(format!("{}-upcoming-{i}", p.template.pool)),
            );
        }
    }
    let mut order: Vec<&WorkItem> = items.iter().collect();
    ffd_sort(&mut order);
    let mut out = ScaleUp::default();
    let mut left: Vec<&WorkItem> = Vec::new();
    for it in order {
        if first_fit(it, &mut sim).is_some() {
            out.on_existing.push(it.id.clone());
        } else {
            left.push(it);
        }
    }
    let mut added = vec![0u32; pools.len()];
    let mut on_new: Vec<Vec<&WorkItem>> = vec![Vec::new(); pools.len()];
    let max_room = |i: usize, added: &[u32]| {
        pools[i]
            .max_replicas
            .saturating_sub(pools[i].replicas + added[i])
    };
    while !left.is_empty() {
        let mut best: Option<Packing> = None;
        for (i, p) in pools.iter().enumerate() {
            let room = max_room(i, &added).min(quota.nodes_of(&p.template.flavor_size));
            if room == 0 {
                continue;
            }
            let o = pack(i, p, &left, room, added[i]);
            if !o.placed.is_empty() && best.as_ref().is_none_or(|b| better(&o, b, pools)) {
                best = Some(o);
            }
        }
        let Some(b) = best else { break };
        let n = b.nodes.len() as u32;
        added[b.pool] += n;
        quota.consume(&pools[b.pool].template.flavor_size, n);
        for &i in &b.placed {
            on_new[b.pool].push(left[i]);
        }
        let placed: HashSet<usize> = b.placed.iter().copied().collect();
        left = left
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !placed.contains(i))
            .map(|(_, it)| it)
            .collect();
    }
    for (i, p) in pools.iter().enumerate() {
        if added[i] == 0 {
            continue;
        }
        let mut owners = BTreeMap::new();
        for it in &on_new[i] {
            *owners.entry(it.owner.clone()).or_insert(0) += 1;
        }
        let (from, to) = (p.replicas, p.replicas + added[i]);
        out.growth.push(PoolGrowth {
            pool: p.template.pool.clone(),
            flavor: p.template.flavor.clone(),
            from,
            to,
            items: on_new[i].iter().map(|it| it.id.clone()).collect(),
            requested: on_new[i]
                .iter()
                .fold(Resources::ZERO, |a, it| a.plus(&it.demand)),
            reason: growth_reason(from, to, &p.template.flavor, &owners),
            owners,
        });
    }
    out.growth.sort_by(|a, b| a.pool.cmp(&b.pool));
    let room_left: Vec<u32> = (0..pools.len()).map(|i| max_room(i, &added)).collect();
    out.unplaced = left
        .iter()
        .map(|it| Unplaced {
            item: it.id.clone(),
            owner: it.owner.clone(),
            demand: it.demand,
            why: classify(it, pools, &room_left),
        })
        .collect();
    out
}

// The tests (simulated clusters) are in `scale_up/tests.rs`, to keep this file readable.
#[cfg(test)]
mod tests;
