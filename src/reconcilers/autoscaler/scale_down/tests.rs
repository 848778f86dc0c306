//! Consolidation on simulated clusters, on a fixed clock.

use super::super::model::Resources;
use super::super::model::testing::{item, node};
use std::collections::BTreeSet;

use super::*;

fn t0() -> DateTime<Utc> {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(secs)
}

/// A Ready node of 1792 MiB in `pool` running tasks of these sizes.
fn dn(name: &str, pool: &str, tasks: &[u64]) -> DownNode {
    let tasks: Vec<WorkItem> = tasks
        .iter()
        .enumerate()
        .map(|(i, mb)| item(&format!("{name}-t{i}"), "fn/f", *mb, &[]))
        .collect();
    let reserved = tasks.iter().map(|t| t.demand.memory_mb).sum();
    DownNode {
        node: node(name, pool, (1792, 1000), (reserved, 0)),
        tasks,
        ready: true,
        deleting: false,
        do_not_disrupt: false,
    }
}

fn policy(pool: &str, replicas: u32, min: u32) -> PoolPolicy {
    PoolPolicy {
        pool: pool.into(),
        replicas,
        min_replicas: min,
        threshold: 0.5,
        unneeded_for: TimeDelta::seconds(600),
        delay_after_add: TimeDelta::seconds(600),
        last_scale_up: None,
        unneeded_since: BTreeMap::new(),
        removing: BTreeSet::new(),
    }
}

/// Runs the decision with every pool's map set to `since`.
fn decide(
    nodes: &[DownNode],
    pools: &[PoolPolicy],
    now: DateTime<Utc>,
    since: &BTreeMap<String, DateTime<Utc>>,
) -> ScaleDown {
    let pools: Vec<PoolPolicy> = pools
        .iter()
        .map(|p| PoolPolicy {
            unneeded_since: since.clone(),
            ..p.clone()
        })
        .collect();
    let mut d = super::decide(nodes, &pools, now);
    // Flattened (the tests use one pool) into the pool "*" for `names` and `flat`.
    let all = d
        .unneeded_since
        .values()
        .flatten()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    d.unneeded_since = BTreeMap::from([("*".to_string(), all)]);
    d
}

fn flat(d: &ScaleDown) -> &BTreeMap<String, DateTime<Utc>> {
    &d.unneeded_since["*"]
}

fn removed(d: &ScaleDown) -> Vec<&str> {
    d.remove.iter().map(|r| r.node.as_str()).collect()
}

fn names(d: &ScaleDown) -> Vec<&str> {
    flat(d).keys().map(String::as_str).collect()
}

#[test]
fn empty_nodes_go_in_bulk_then_others_one_at_a_time() {
    let nodes = vec![
        dn("a", "p", &[]),
        dn("b", "p", &[]),
        dn("c", "p", &[500]),
        dn("d", "p", &[1200]),
    ];
    let pools = [policy("p", 4, 1)];
    // Found unneeded now; the window has not passed.
    let d = decide(&nodes, &pools, t0(), &BTreeMap::new());
    assert_eq!(names(&d), ["a", "b", "c"]);
    assert!(flat(&d).values().all(|t| *t == t0()));
    assert!(d.remove.is_empty() && d.shrink.is_empty());
    // 10 minutes later: the empty ones, together; not the one with a task.
    let d = decide(&nodes, &pools, at(600), flat(&d));
    assert_eq!(removed(&d), ["a", "b"]);
    assert!(d.remove.iter().all(|r| r.empty && r.pool == "p"));
    assert_eq!(
        d.shrink,
        [PoolShrink {
            pool: "p".into(),
            from: 4,
            to: 2,
            nodes: vec!["a".into(), "b".into()],
            reason: "scale down 4 → 2: 2 empty nodes unneeded for 10m (a, b)".into(),
        }]
    );
    // They are gone; c's task fits on d.
    let rest = &nodes[2..];
    let d = decide(rest, &[policy("p", 2, 1)], at(601), flat(&d));
    assert_eq!(removed(&d), ["c"]);
    assert!(!d.remove[0].empty);
    assert_eq!(
        d.shrink[0].reason,
        "scale down 2 → 1: c at 28 % reserved for 10m, its 1 task fit elsewhere"
    );
}

#[test]
fn never_below_min_replicas() {
    let nodes = vec![dn("a", "p", &[]), dn("b", "p", &[]), dn("c", "p", &[])];
    let d = decide(&nodes, &[policy("p", 3, 2)], t0(), &BTreeMap::new());
    assert_eq!(names(&d), ["a"]);
    let d = decide(&nodes, &[policy("p", 3, 2)], at(600), flat(&d));
    assert_eq!(removed(&d), ["a"]);
    assert_eq!(d.shrink[0].to, 2);
    let d = decide(&nodes, &[policy("p", 3, 3)], at(600), &BTreeMap::new());
    assert!(flat(&d).is_empty());
}

#[test]
fn tasks_must_fit_elsewhere_in_the_simulation() {
    // a's 800 fits on b; then b holds 1600 (89 %) and is needed.
    let nodes = vec![dn("a", "p", &[800]), dn("b", "p", &[800])];
    let d = decide(&nodes, &[policy("p", 2, 0)], t0(), &BTreeMap::new());
    assert_eq!(names(&d), ["a"]);
    // A task pinned to its node cannot move: that node stays, the other one moves onto it.
    let mut pinned = nodes.clone();
    pinned[0].tasks[0] = item("a-t0", "fn/f", 800, &["node.hostname==a"]);
    let d = decide(&pinned, &[policy("p", 2, 0)], t0(), &BTreeMap::new());
    assert_eq!(names(&d), ["b"]);
    // Nothing fits anywhere: nothing is unneeded.
    let big = vec![dn("a", "p", &[950]), dn("b", "p", &[950])];
    let tight = [PoolPolicy {
        threshold: 0.9,
        ..policy("p", 2, 0)
    }];
    let d = decide(&big, &tight, t0(), &BTreeMap::new());
    assert!(flat(&d).is_empty());
}

#[test]
fn the_threshold_is_strict_and_uses_the_larger_share() {
    let mut n = dn("a", "p", &[896]); // exactly 50 %
    let other = dn("b", "p", &[]);
    let pools = [policy("p", 2, 1)];
    let d = decide(&[n.clone(), other.clone()], &pools, t0(), &BTreeMap::new());
    assert_eq!(names(&d), ["b"]);
    // Low memory but 60 % of the CPU reserved: needed.
    n.node.reserved = Resources::new(100, 600);
    n.tasks[0].demand = n.node.reserved;
    let d = decide(&[n, dn("c", "p", &[1200])], &pools, t0(), &BTreeMap::new());
    assert!(flat(&d).is_empty(), "{d:?}");
}

#[test]
fn no_scale_down_within_the_delay_after_a_scale_up() {
    let nodes = vec![dn("a", "p", &[]), dn("b", "p", &[])];
    let mut p = policy("p", 2, 0);
    p.last_scale_up = Some(at(300));
    let since = BTreeMap::from([("a".to_string(), t0()), ("b".to_string(), t0())]);
    let d = decide(&nodes, &[p.clone()], at(899), &since);
    assert_eq!(names(&d), ["a", "b"], "still counted");
    assert!(d.remove.is_empty());
    let d = decide(&nodes, &[p], at(900), &since);
    assert_eq!(removed(&d), ["a", "b"]);
}

#[test]
fn kept_nodes_are_kept() {
    let mut keep = dn("keep", "p", &[]);
    keep.do_not_disrupt = true;
    let mut booting = dn("booting", "p", &[]);
    booting.ready = false;
    let mut going = dn("going", "p", &[]);
    going.deleting = true;
    let mut other = dn("other", "q", &[]);
    other.node.pool = Some("not-autoscaled".into());
    let nodes = vec![keep, booting, going, other];
    let d = decide(&nodes, &[policy("p", 4, 0)], at(10_000), &BTreeMap::new());
    assert!(flat(&d).is_empty(), "{d:?}");
    let mut meta = ObjectMeta::named("default", "w-1");
    assert!(!do_not_disrupt(&meta));
    meta.annotations
        .insert(DO_NOT_DISRUPT.into(), "true".into());
    assert!(do_not_disrupt(&meta));
    meta.annotations
        .insert(DO_NOT_DISRUPT.into(), "false".into());
    assert!(!do_not_disrupt(&meta));
}

#[test]
fn one_node_with_tasks_at_a_time() {
    let nodes = vec![
        dn("a", "p", &[200]),
        dn("b", "p", &[100]),
        dn("c", "p", &[300]),
    ];
    let since: BTreeMap<String, DateTime<Utc>> =
        ["a", "b", "c"].map(|n| (n.to_string(), t0())).into();
    let d = decide(&nodes, &[policy("p", 3, 0)], at(600), &since);
    // All three are unneeded (their tasks fit on each other); the least used goes first.
    assert_eq!(names(&d), ["a", "b"]);
    assert_eq!(removed(&d), ["b"]);
    // While a node with tasks drains, no other one starts.
    let mut draining = nodes.clone();
    draining[1].deleting = true;
    let d = decide(&draining, &[policy("p", 3, 0)], at(600), &since);
    assert_eq!(names(&d), ["a"]);
    assert!(d.remove.is_empty());
}

#[test]
fn the_map_keeps_old_times_and_drops_needed_nodes() {
    let since = BTreeMap::from([("a".to_string(), t0()), ("gone".to_string(), t0())]);
    let nodes = vec![dn("a", "p", &[]), dn("b", "p", &[]), dn("c", "p", &[1500])];
    let d = decide(&nodes, &[policy("p", 3, 0)], at(60), &since);
    assert_eq!(flat(&d)["a"], t0());
    assert_eq!(flat(&d)["b"], at(60));
    assert!(!flat(&d).contains_key("gone"));
    assert!(!flat(&d).contains_key("c"));
}

#[test]
fn policy_comes_from_the_pool() {
    let spec: NodePoolSpec = serde_saphyr::from_str(
        "image: {glanceImage: b}\nflavor: f\nminReplicas: 1\nautoscaling:\n  enabled: true\n  scaleDownUnneededSeconds: 30\n  scaleDownDelayAfterAddSeconds: 5\n  scaleDownUtilizationThreshold: 0.3\n",
    )
    .unwrap();
    let mut pool = Object::new("default", "workers", spec);
    pool.status = Some(crate::api::NodePoolStatus {
        autoscaler: Some(crate::api::nodepool::AutoscalerStatus {
            last_scale_up: Some(t0()),
            unneeded_since: BTreeMap::from([("w-1".to_string(), t0())]),
            scale_down_nodes: vec!["w-2".into()],
            ..Default::default()
        }),
        ..Default::default()
    });
    let p = PoolPolicy::of(&pool, 4).unwrap();
    assert_eq!(p.pool, "default/workers");
    assert_eq!(p.replicas, 4);
    assert_eq!(p.min_replicas, 1);
    assert_eq!(p.threshold, 0.3);
    assert_eq!(p.unneeded_for, TimeDelta::seconds(30));
    assert_eq!(p.delay_after_add, TimeDelta::seconds(5));
    assert_eq!(p.last_scale_up, Some(t0()));
    assert_eq!(p.unneeded_since["w-1"], t0());
    assert!(p.removing.contains("w-2"));
    pool.spec.autoscaling.as_mut().unwrap().enabled = false;
    assert!(PoolPolicy::of(&pool, 4).is_none());
}

#[test]
fn windows_are_kept_per_pool() {
    // The same node name in two pools (of two namespaces): two windows.
    let nodes = vec![dn("w", "a/p", &[]), dn("w", "b/p", &[])];
    let mut a = policy("a/p", 1, 0);
    a.unneeded_since = BTreeMap::from([("w".to_string(), t0())]);
    let b = policy("b/p", 1, 0);
    let d = super::decide(&nodes, &[a, b], at(600));
    assert_eq!(d.unneeded_since["a/p"]["w"], t0());
    assert_eq!(d.unneeded_since["b/p"]["w"], at(600));
    assert_eq!(
        d.remove,
        [Removal {
            node: "w".into(),
            pool: "a/p".into(),
            empty: true,
        }]
    );
}

#[test]
fn nodes_already_removed_are_not_removed_twice() {
    // The last pass removed a and b (4 → 2); the nodepool has not acted yet.
    let nodes = vec![
        dn("a", "p", &[]),
        dn("b", "p", &[]),
        dn("c", "p", &[100]),
        dn("d", "p", &[1500]),
    ];
    let mut p = policy("p", 2, 1);
    p.removing = BTreeSet::from(["a".to_string(), "b".to_string()]);
    p.unneeded_since = BTreeMap::from([("c".to_string(), t0())]);
    let d = super::decide(&nodes, &[p.clone()], at(600));
    // Not a and b again, nor others in their stead: c goes, 2 → 1.
    assert_eq!(removed(&d), ["c"]);
    assert_eq!((d.shrink[0].from, d.shrink[0].to), (2, 1));
    assert!(!d.unneeded_since["p"].contains_key("a"));
    // While a node with tasks is being removed, no other node with tasks goes.
    p.removing = BTreeSet::from(["d".to_string()]);
    p.unneeded_since = ["a", "b", "c"].map(|n| (n.to_string(), t0())).into();
    p.replicas = 3;
    p.min_replicas = 0;
    let d = super::decide(&nodes, &[p], at(600));
    assert_eq!(removed(&d), ["a", "b"]);
    assert!(d.remove.iter().all(|r| r.empty), "{d:?}");
}
