//! The scaling decision of a node pool, as a pure function of what the pool's nodes look like
//! (so every rule is unit-tested without etcd or a cloud).
//!
//! Rules:
//! - unhealthy nodes (condition `Healthy` False) are deleted; they are replaced like missing
//!   ones;
//! - scaling up creates at most `maxSurge` nodes at a time: nodes not Ready yet count against
//!   it; nothing is created while the pool has no image to boot;
//! - scaling down deletes the surplus, preferring the nodes the autoscaler chose
//!   (`status.autoscaler.scaleDownNodes`: it simulated that their tasks fit elsewhere), then
//!   nodes that are not Ready, then outdated ones, then the ones running the fewest tasks,
//!   then the newest;
//! - rolling onto a new template (image, flavor, network, …) goes one node at a time: one new
//!   node beyond the desired count, and one outdated node deleted each time a new one is Ready
//!   (so Ready capacity never drops below the desired count while the old nodes still run).

use std::cmp::Reverse;

/// What the plan needs to know about one node of the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    /// Condition `Ready` is True.
    pub ready: bool,
    /// Condition `Healthy` is not False.
    pub healthy: bool,
    /// Its spec equals the pool's current node template.
    pub current: bool,
    /// Running tasks on its Swarm node.
    pub tasks: u32,
    /// Creation order (larger is newer), e.g. the uid's create revision.
    pub created: i64,
    /// Named by the autoscaler's scale-down decision.
    pub chosen: bool,
}

/// What to do now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// How many new nodes to create.
    pub create: u32,
    /// Which nodes to delete, and why.
    pub delete: Vec<(String, &'static str)>,
}

impl Plan {
    /// True when nothing is to be done.
    pub fn is_empty(&self) -> bool {
        self.create == 0 && self.delete.is_empty()
    }
}

/// Decides creations and deletions for `nodes` (the live ones: not being deleted) given the
/// `desired` count, `max_surge` and whether there is an image to boot new nodes from.
pub fn decide(nodes: &[NodeView], desired: u32, max_surge: u32, can_create: bool) -> Plan {
    let mut plan = Plan::default();
    let max_surge = max_surge.max(1);
    let (healthy, unhealthy): (Vec<&NodeView>, Vec<&NodeView>) =
        nodes.iter().partition(|n| n.healthy);
    for n in unhealthy {
        plan.delete.push((n.name.clone(), "Unhealthy"));
    }
    let (current, outdated): (Vec<&NodeView>, Vec<&NodeView>) = if can_create {
        healthy.iter().partition(|n| n.current)
    } else {
        // No image to roll onto: every node counts as current.
        (healthy.clone(), Vec::new())
    };
    let desired_n = desired as usize;
    if outdated.is_empty() {
        if current.len() > desired_n {
            let mut victims = current.clone();
            victims.sort_by_key(|n| (!n.chosen, n.ready, n.tasks, Reverse(n.created)));
            for n in victims.into_iter().take(current.len() - desired_n) {
                plan.delete.push((n.name.clone(), "ScaleDown"));
            }
        } else if can_create {
            let not_ready = current.iter().filter(|n| !n.ready).count() as u32;
            let budget = max_surge.saturating_sub(not_ready);
            plan.create = (desired - current.len() as u32).min(budget);
        }
        return plan;
    }
    // Rolling: outdated nodes that are not Ready serve nothing; delete them at once.
    let (old_ready, old_not_ready): (Vec<&NodeView>, Vec<&NodeView>) =
        outdated.iter().partition(|n| n.ready);
    for n in &old_not_ready {
        plan.delete.push((n.name.clone(), "Outdated"));
    }
    let cur_ready = current.iter().filter(|n| n.ready).count();
    let cur_not_ready = current.len() - cur_ready;
    // Ready capacity beyond the desired count is removed, outdated nodes first.
    let mut excess = (cur_ready + old_ready.len()).saturating_sub(desired_n);
    let mut old = old_ready.clone();
    old.sort_by_key(|n| (n.tasks, Reverse(n.created)));
    let mut old_left = old.len();
    for n in old {
        if excess == 0 {
            break;
        }
        plan.delete.push((n.name.clone(), "Outdated"));
        excess -= 1;
        old_left -= 1;
    }
    if excess > 0 {
        let mut cur: Vec<&&NodeView> = current.iter().filter(|n| n.ready).collect();
        cur.sort_by_key(|n| (!n.chosen, n.tasks, Reverse(n.created)));
        for n in cur.into_iter().take(excess) {
            plan.delete.push((n.name.clone(), "ScaleDown"));
        }
    }
    // One new node at a time, at most one beyond the desired count.
    if current.len() < desired_n && cur_not_ready == 0 && current.len() + old_left < desired_n + 1 {
        plan.create = 1;
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str, ready: bool, current: bool, tasks: u32, created: i64) -> NodeView {
        NodeView {
            name: name.into(),
            ready,
            healthy: true,
            current,
            tasks,
            created,
            chosen: false,
        }
    }

    fn deleted(p: &Plan) -> Vec<&str> {
        p.delete.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn scale_up_respects_max_surge_and_counts_nodes_not_ready() {
        assert_eq!(decide(&[], 5, 2, true).create, 2);
        let nodes = [n("a", false, true, 0, 1), n("b", true, true, 0, 2)];
        assert_eq!(decide(&nodes, 5, 2, true).create, 1);
        assert_eq!(decide(&nodes, 5, 1, true).create, 0);
        assert_eq!(decide(&[], 3, 5, true).create, 3);
        assert_eq!(
            decide(&[], 3, 5, false),
            Plan::default(),
            "no image: nothing created"
        );
    }

    #[test]
    fn scale_down_prefers_not_ready_then_fewest_tasks_then_newest() {
        let nodes = [
            n("busy", true, true, 9, 1),
            n("idle-old", true, true, 0, 2),
            n("idle-new", true, true, 0, 3),
            n("starting", false, true, 0, 4),
        ];
        assert_eq!(
            deleted(&decide(&nodes, 2, 1, true)),
            ["starting", "idle-new"]
        );
        assert_eq!(deleted(&decide(&nodes, 0, 1, true)).len(), 4);
        assert!(decide(&nodes, 4, 1, true).is_empty());
        // Scaling down works without an image too.
        assert_eq!(deleted(&decide(&nodes, 3, 1, false)), ["starting"]);
    }

    #[test]
    fn scale_down_takes_the_autoscalers_choice_first() {
        let mut chosen = n("chosen", true, true, 4, 1);
        chosen.chosen = true;
        let nodes = [
            n("idle", true, true, 0, 2),
            chosen,
            n("busy", true, true, 9, 3),
        ];
        assert_eq!(deleted(&decide(&nodes, 2, 1, true)), ["chosen"]);
        assert_eq!(deleted(&decide(&nodes, 1, 1, true)), ["chosen", "idle"]);
    }

    #[test]
    fn unhealthy_nodes_are_replaced() {
        let mut sick = n("sick", false, true, 0, 1);
        sick.healthy = false;
        let p = decide(&[sick, n("ok", true, true, 0, 2)], 2, 1, true);
        assert_eq!(p.delete, vec![("sick".to_string(), "Unhealthy")]);
        assert_eq!(p.create, 1);
    }

    /// Simulates a rollout: each step applies the plan; new nodes become Ready one step later.
    #[test]
    fn rolling_replaces_one_at_a_time_without_losing_ready_capacity() {
        let mut nodes = vec![n("o1", true, false, 3, 1), n("o2", true, false, 1, 2)];
        let mut next = 10;
        let mut steps = 0;
        while nodes.iter().any(|x| !x.current || !x.ready) || nodes.len() != 2 {
            steps += 1;
            assert!(steps < 20, "rollout does not converge: {nodes:?}");
            // Becoming ready happens between passes.
            let p = decide(&nodes, 2, 1, true);
            let ready_before = nodes.iter().filter(|x| x.ready).count();
            nodes.retain(|x| !p.delete.iter().any(|(d, _)| *d == x.name));
            assert!(p.create <= 1);
            assert!(
                nodes.len() <= 3,
                "at most one node beyond desired: {nodes:?}"
            );
            assert!(
                nodes.iter().filter(|x| x.ready).count() >= 2.min(ready_before),
                "ready capacity dropped: {nodes:?}"
            );
            for x in nodes.iter_mut() {
                x.ready = true;
            }
            for _ in 0..p.create {
                next += 1;
                nodes.push(n(&format!("c{next}"), false, true, 0, next));
            }
        }
        assert!(nodes.iter().all(|x| x.current && x.ready));
        // new c1 → (c1 boots) → old o2 out, new c2 → (c2 boots) → old o1 out.
        assert_eq!(steps, 5);
    }

    #[test]
    fn rolling_deletes_outdated_nodes_that_are_not_ready() {
        let nodes = [n("o1", false, false, 0, 1), n("c1", true, true, 0, 2)];
        let p = decide(&nodes, 2, 1, true);
        assert_eq!(deleted(&p), ["o1"]);
        assert_eq!(p.create, 1);
    }

    #[test]
    fn scale_down_during_rollout_removes_outdated_first() {
        let nodes = [
            n("o1", true, false, 0, 1),
            n("o2", true, false, 0, 2),
            n("c1", true, true, 5, 3),
        ];
        let p = decide(&nodes, 1, 1, true);
        assert_eq!(deleted(&p), ["o2", "o1"]);
        assert_eq!(p.create, 0);
    }
}
