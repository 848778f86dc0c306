//! The scale-down decision: consolidation of under-used nodes, a pure function of a simulated
//! cluster, the time `now` and each pool's "unneeded since" map (which it returns updated, so
//! that the caller persists it in `status.autoscaler.unneededSince` and a controller restart
//! forgets no window). Node names need only be unique within their pool.
//!
//! Rules (cluster-autoscaler's, kept):
//! - a node of an autoscaled pool is *unneeded* while its reserved share (the larger of memory
//!   and CPU) is below the pool's `scaleDownUtilizationThreshold` and its tasks fit on the
//!   other nodes' free capacity (first-fit decreasing, honouring their constraints); nodes
//!   are examined empty first, then least used, and each one found unneeded gives its tasks
//!   to the others in the simulation, so the unneeded set is removable as a whole;
//! - never below `minReplicas`; a node annotated `lambda/do-not-disrupt: "true"`, one not
//!   Ready, or one already being deleted is never a candidate;
//! - a node unneeded for `scaleDownUnneededSeconds` is removed, unless its pool scaled up
//!   less than `scaleDownDelayAfterAddSeconds` ago;
//! - empty nodes go first and in bulk; a node with tasks goes alone, and only while no other
//!   node with tasks is being drained.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, TimeDelta, Utc};

use crate::api::{NodePoolSpec, Object, ObjectMeta};

use super::model::{SimNode, WorkItem, ffd_sort};

/// Annotation on a `Node` that keeps the autoscaler from removing it.
pub const DO_NOT_DISRUPT: &str = "lambda/do-not-disrupt";

/// True when a Node's metadata asks to be kept (`lambda/do-not-disrupt: "true"`).
pub fn do_not_disrupt(meta: &ObjectMeta) -> bool {
    meta.annotations
        .get(DO_NOT_DISRUPT)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// A node as consolidation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownNode {
    pub node: SimNode,
    /// The tasks on it, as they would have to be placed elsewhere.
    pub tasks: Vec<WorkItem>,
    /// Ready and active: may be removed, and may receive tasks.
    pub ready: bool,
    /// Being deleted (drained): neither a candidate nor a destination.
    pub deleting: bool,
    pub do_not_disrupt: bool,
}

/// A pool's scale-down policy and state.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolPolicy {
    /// The pool's key, `namespace/name`, as in [`SimNode::pool`].
    pub pool: String,
    /// Nodes the pool is converging to now.
    pub replicas: u32,
    pub min_replicas: u32,
    pub threshold: f64,
    pub unneeded_for: TimeDelta,
    pub delay_after_add: TimeDelta,
    pub last_scale_up: Option<DateTime<Utc>>,
    /// Node name → since when it has been unneeded, as the last decision left it.
    pub unneeded_since: BTreeMap<String, DateTime<Utc>>,
    /// Nodes an earlier decision removed (`status.autoscaler.scaleDownNodes`): they count as
    /// being deleted even before the nodepool reconciler acts on them, so a second pass
    /// never removes them, or others in their stead, again.
    pub removing: BTreeSet<String>,
}

impl PoolPolicy {
    /// The policy of an autoscaled `pool` now at `replicas`; `None` when autoscaling is off.
    pub fn of(pool: &Object<NodePoolSpec>, replicas: u32) -> Option<PoolPolicy> {
        let a = pool.spec.autoscaling.as_ref().filter(|a| a.enabled)?;
        let status = pool.status.as_ref().and_then(|s| s.autoscaler.as_ref());
        Some(PoolPolicy {
            pool: pool.key().to_string(),
            replicas,
            min_replicas: pool.spec.min_replicas,
            threshold: a.scale_down_utilization_threshold,
            unneeded_for: TimeDelta::seconds(i64::from(a.scale_down_unneeded_seconds)),
            delay_after_add: TimeDelta::seconds(i64::from(a.scale_down_delay_after_add_seconds)),
            last_scale_up: status.and_then(|a| a.last_scale_up),
            unneeded_since: status.map(|a| a.unneeded_since.clone()).unwrap_or_default(),
            removing: status
                .map(|a| a.scale_down_nodes.iter().cloned().collect())
                .unwrap_or_default(),
        })
    }
}

/// One node to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub node: String,
    pub pool: String,
    /// It runs no tasks.
    pub empty: bool,
}

/// A pool that shrinks. Invariant: `to >= minReplicas` and `from - to == nodes.len()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolShrink {
    pub pool: String,
    pub from: u32,
    pub to: u32,
    pub nodes: Vec<String>,
    /// E.g. `scale down 3 → 1: 2 empty nodes unneeded for 10m (w-1, w-2)`.
    pub reason: String,
}

/// The decision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScaleDown {
    /// Pool → node name → since when it has been unneeded: exactly the nodes unneeded now
    /// (a pool with none has no entry).
    pub unneeded_since: BTreeMap<String, BTreeMap<String, DateTime<Utc>>>,
    pub remove: Vec<Removal>,
    /// Pools that shrink, by name.
    pub shrink: Vec<PoolShrink>,
}

fn may_remove(p: &PoolPolicy, since: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now - since >= p.unneeded_for && p.last_scale_up.is_none_or(|t| now - t >= p.delay_after_add)
}

fn human(d: TimeDelta) -> String {
    humantime::format_duration(d.to_std().unwrap_or_default()).to_string()
}

/// Decides the scale-down of the autoscaled `pools` over all the cluster's `nodes` at `now`.
pub fn decide(nodes: &[DownNode], pools: &[PoolPolicy], now: DateTime<Utc>) -> ScaleDown {
    let policy: HashMap<&str, &PoolPolicy> = pools.iter().map(|p| (p.pool.as_str(), p)).collect();
    let policy_of = |n: &DownNode| n.node.pool.as_deref().and_then(|p| policy.get(p).copied());
    let deleting = |n: &DownNode| {
        n.deleting || policy_of(n).is_some_and(|p| p.removing.contains(&n.node.name))
    };
    // The simulation: nodes that can hold tasks, with what they hold.
    let live: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].ready && !deleting(&nodes[i]))
        .collect();
    let mut sim: Vec<SimNode> = live.iter().map(|&i| nodes[i].node.clone()).collect();
    let mut held: Vec<Vec<&WorkItem>> = live
        .iter()
        .map(|&i| nodes[i].tasks.iter().collect())
        .collect();
    let mut gone = vec![false; live.len()];
    let mut order: Vec<usize> = (0..live.len())
        .filter(|&s| {
            let n = &nodes[live[s]];
            !n.do_not_disrupt && policy_of(n).is_some()
        })
        .collect();
    order.sort_by(|&a, &b| {
        let key = |s: usize| {
            (
                !held[s].is_empty(),
                sim[s].reserved.share_of(&sim[s].allocatable),
            )
        };
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0)
            .then(ka.1.total_cmp(&kb.1))
            .then_with(|| sim[a].name.cmp(&sim[b].name))
    });
    let mut marked_in: HashMap<&str, u32> = HashMap::new();
    // Unneeded nodes, in order, with whether they were empty when found.
    let mut unneeded: Vec<(usize, bool)> = Vec::new();
    for s in order {
        let n = &nodes[live[s]];
        let Some(p) = policy_of(n) else { continue };
        let marked = marked_in.get(p.pool.as_str()).copied().unwrap_or(0);
        if p.replicas.saturating_sub(marked) <= p.min_replicas {
            continue;
        }
        if sim[s].reserved.share_of(&sim[s].allocatable) >= p.threshold {
            continue;
        }
        let mut tasks = held[s].clone();
        ffd_sort(&mut tasks);
        let mut trial = sim.clone();
        let mut moves = Vec::new();
        let all_fit = tasks.iter().all(|t| {
            let dest = (0..trial.len()).find(|&d| d != s && !gone[d] && trial[d].take(t));
            dest.inspect(|&d| moves.push((d, *t))).is_some()
        });
        if !all_fit {
            continue;
        }
        sim = trial;
        for (d, t) in moves {
            held[d].push(t);
        }
        unneeded.push((s, tasks.is_empty()));
        gone[s] = true;
        *marked_in.entry(p.pool.as_str()).or_insert(0) += 1;
    }
    let mut out = ScaleDown::default();
    let mut eligible: Vec<(usize, bool)> = Vec::new();
    for &(s, empty) in &unneeded {
        let Some(p) = policy_of(&nodes[live[s]]) else {
            continue;
        };
        let name = &sim[s].name;
        let since = p.unneeded_since.get(name).copied().unwrap_or(now);
        out.unneeded_since
            .entry(p.pool.clone())
            .or_default()
            .insert(name.clone(), since);
        if may_remove(p, since, now) {
            eligible.push((s, empty));
        }
    }
    let empties: Vec<usize> = eligible.iter().filter(|e| e.1).map(|e| e.0).collect();
    let draining = nodes
        .iter()
        .any(|n| deleting(n) && !n.tasks.is_empty() && policy_of(n).is_some());
    let chosen: Vec<(usize, bool)> = if !empties.is_empty() {
        empties.iter().map(|&s| (s, true)).collect()
    } else if draining {
        Vec::new()
    } else {
        eligible.into_iter().take(1).collect()
    };
    let mut by_pool: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &(s, empty) in &chosen {
        let Some(p) = policy_of(&nodes[live[s]]) else {
            continue;
        };
        by_pool.entry(p.pool.as_str()).or_default().push(s);
        out.remove.push(Removal {
            node: sim[s].name.clone(),
            pool: p.pool.clone(),
            empty,
        });
    }
    let empty_removal = chosen.iter().any(|c| c.1);
    for (pool, picked) in by_pool {
        let Some(p) = policy.get(pool) else { continue };
        let names: Vec<String> = picked.iter().map(|&s| sim[s].name.clone()).collect();
        let window = human(p.unneeded_for);
        let to = p.replicas - picked.len() as u32;
        let reason = if empty_removal {
            let what = match names.len() {
                1 => "1 empty node".to_string(),
                n => format!("{n} empty nodes"),
            };
            format!(
                "scale down {} → {to}: {what} unneeded for {window} ({})",
                p.replicas,
                names.join(", ")
            )
        } else {
            // One node with tasks: the simulation's view of it when it was found unneeded.
            let s = picked[0];
            format!(
                "scale down {} → {to}: {} at {:.0} % reserved for {window}, its {} fit elsewhere",
                p.replicas,
                names.join(", "),
                sim[s].reserved.share_of(&sim[s].allocatable) * 100.0,
                match held[s].len() {
                    1 => "1 task".to_string(),
                    n => format!("{n} tasks"),
                }
            )
        };
        out.shrink.push(PoolShrink {
            pool: pool.to_string(),
            from: p.replicas,
            to,
            nodes: names,
            reason,
        });
    }
    out
}

// The tests (simulated clusters on a fixed clock) are in `scale_down/tests.rs`.
#[cfg(test)]
mod tests;
