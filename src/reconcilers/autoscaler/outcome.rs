//! One pass's outcome for each pool — `status.desiredReplicas` and `status.autoscaler` — and
//! for each function whose work no pool can take (`NoPoolFits`), from the scale-up and
//! scale-down decisions. Pure, so what survives a restart is tested: the timestamps and
//! windows come from the previous status, never from memory.
//!
//! Precedence per pool: a scale-up (pending work is waiting now) beats a scale-down; work that
//! fits the pool but is held back by its max or the quota makes it `Blocked`; otherwise
//! `NoChange`. `decisionTime` moves only when the decision or its reason changes, so a steady
//! pool's status is not rewritten every pass.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::api::nodepool::{AutoscalerDecision, AutoscalerStatus, PendingWork};

use super::model::Resources;
use super::scale_down::ScaleDown;
use super::scale_up::{NO_POOL_FITS, ScaleUp, Unplaceable, Unplaced};

/// What the outcome needs to know about one autoscaled pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolPass<'a> {
    /// The pool's key, `namespace/name`, as the decisions name it.
    pub key: String,
    /// The count it converges to now (what both decisions started from).
    pub replicas: u32,
    pub previous: Option<&'a AutoscalerStatus>,
    /// Names of its nodes that still exist (not yet deleted).
    pub nodes: BTreeSet<String>,
    /// Summed over its nodes.
    pub reserved: Resources,
    pub allocatable: Resources,
}

/// What to write for one pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolOutcome {
    pub desired_replicas: u32,
    pub status: AutoscalerStatus,
    /// The decision or its reason changed: worth an event.
    pub news: bool,
}

fn summary(items: &[&Unplaced]) -> PendingWork {
    let owners: BTreeSet<String> = items.iter().map(|u| u.owner.clone()).collect();
    PendingWork {
        tasks: items.len() as u32,
        requested: items
            .iter()
            .fold(Resources::ZERO, |a, u| a.plus(&u.demand))
            .into(),
        owners: owners.into_iter().collect(),
    }
}

fn blocked_here(u: &Unplaced, key: &str) -> bool {
    match &u.why {
        Unplaceable::AtMaxReplicas { pools } | Unplaceable::QuotaExhausted { pools } => {
            pools.iter().any(|p| p == key)
        }
        _ => false,
    }
}

fn tasks(n: usize) -> String {
    match n {
        1 => "1 pending task".into(),
        n => format!("{n} pending tasks"),
    }
}

/// The outcome for `pool` of a pass that decided `up` and `down` at `now`.
pub fn pool_outcome(
    pool: &PoolPass,
    up: &ScaleUp,
    down: &ScaleDown,
    now: DateTime<Utc>,
) -> PoolOutcome {
    let prev = pool.previous.cloned().unwrap_or_default();
    let mut st = AutoscalerStatus {
        reserved: pool.reserved.into(),
        allocatable: pool.allocatable.into(),
        last_scale_up: prev.last_scale_up,
        last_scale_down: prev.last_scale_down,
        unneeded_since: down
            .unneeded_since
            .get(&pool.key)
            .cloned()
            .unwrap_or_default(),
        // Removals decided earlier stay listed until their nodes are gone.
        scale_down_nodes: prev
            .scale_down_nodes
            .iter()
            .filter(|n| pool.nodes.contains(*n))
            .cloned()
            .collect(),
        ..AutoscalerStatus::default()
    };
    let blocked: Vec<&Unplaced> = up
        .unplaced
        .iter()
        .filter(|u| blocked_here(u, &pool.key))
        .collect();
    let desired = if let Some(g) = up.growth_of(&pool.key) {
        st.decision = AutoscalerDecision::ScaleUp;
        st.reason = g.reason.clone();
        st.pending = g.pending();
        st.last_scale_up = Some(now);
        g.to
    } else if let Some(s) = down.shrink.iter().find(|s| s.pool == pool.key) {
        st.decision = AutoscalerDecision::ScaleDown;
        st.reason = s.reason.clone();
        st.last_scale_down = Some(now);
        for n in &s.nodes {
            if !st.scale_down_nodes.contains(n) {
                st.scale_down_nodes.push(n.clone());
            }
        }
        s.to
    } else if let Some(first) = blocked.first() {
        st.decision = AutoscalerDecision::Blocked;
        st.reason = format!("{} wait: {}", tasks(blocked.len()), first.why);
        st.pending = summary(&blocked);
        pool.replicas
    } else {
        st.decision = AutoscalerDecision::NoChange;
        st.reason = format!(
            "no pending work; {} of {} reserved",
            pool.reserved, pool.allocatable
        );
        if !st.unneeded_since.is_empty() {
            let names: Vec<&str> = st.unneeded_since.keys().map(String::as_str).collect();
            st.reason
                .push_str(&format!("; unneeded: {}", names.join(", ")));
        }
        pool.replicas
    };
    let news = prev.decision != st.decision || prev.reason != st.reason;
    st.decision_time = if news || prev.decision_time.is_none() {
        Some(now)
    } else {
        prev.decision_time
    };
    PoolOutcome {
        desired_replicas: desired,
        status: st,
        news,
    }
}

/// Owner → (reason, message) for the work no pool's node can take at all (`NoPoolFits`): the
/// condition the function reconciler sets on the Function. One message per owner (its
/// first item's), as all replicas of a function reserve the same.
pub fn no_pool_fits(up: &ScaleUp) -> BTreeMap<String, (&'static str, String)> {
    let mut out = BTreeMap::new();
    for u in &up.unplaced {
        if u.why.reason() == NO_POOL_FITS {
            out.entry(u.owner.clone())
                .or_insert_with(|| (u.why.reason(), u.why.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests;
