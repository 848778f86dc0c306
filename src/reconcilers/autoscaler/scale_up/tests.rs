//! Scale-up on simulated clusters.

use super::super::constraints::Role;
use super::super::model::testing::{item, node};
use super::*;

fn tmpl(pool: &str, flavor: &str, ram: u64, alloc: u64) -> TemplateNode {
    let mut n = node(&format!("{pool}-template"), pool, (alloc, 1000), (0, 0));
    n.attributes.id.clear();
    n.attributes.hostname.clear();
    n.attributes
        .labels
        .insert("lambda.flavor".into(), flavor.into());
    TemplateNode {
        pool: pool.into(),
        flavor: flavor.into(),
        flavor_size: Resources::new(ram, 1000),
        node: n,
    }
}

fn small(pool: &str) -> TemplateNode {
    tmpl(pool, "m1.small", 2048, 1792)
}

fn medium(pool: &str) -> TemplateNode {
    tmpl(pool, "m1.medium", 4096, 3840)
}

fn cand(template: TemplateNode, replicas: u32, max: u32) -> PoolCandidate {
    PoolCandidate {
        template,
        replicas,
        upcoming: 0,
        max_replicas: max,
        priority: 0,
    }
}

fn items(owner: &str, sizes: &[u64]) -> Vec<WorkItem> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, mb)| item(&format!("{owner}#{i}"), owner, *mb, &[]))
        .collect()
}

fn grows(d: &ScaleUp) -> Vec<(&str, u32, u32)> {
    d.growth
        .iter()
        .map(|g| (g.pool.as_str(), g.from, g.to))
        .collect()
}

#[test]
fn ffd_finds_the_optimum_node_count() {
    let pools = [cand(tmpl("p", "f", 1024, 1000), 0, 50)];
    // Sum 2000 on nodes of 1000: FFD packs 500+400+100 and 300+300+200+200.
    let d = decide(
        &items("fn/a", &[100, 200, 300, 500, 200, 300, 400]),
        &[],
        &pools,
        Quota::UNLIMITED,
    );
    assert_eq!(grows(&d), [("p", 0, 2)]);
    assert!(d.unplaced.is_empty() && d.on_existing.is_empty());
    // 7 × 600 and 7 × 400: each node holds one of each, 7 nodes.
    let mut sizes = vec![600; 7];
    sizes.extend([400; 7]);
    let d = decide(&items("fn/a", &sizes), &[], &pools, Quota::UNLIMITED);
    assert_eq!(grows(&d), [("p", 0, 7)]);
    // 9 × 333 + 1 × 1: three per node, the small one on top of a full-ish node.
    let mut sizes = vec![333; 9];
    sizes.push(1);
    let d = decide(&items("fn/a", &sizes), &[], &pools, Quota::UNLIMITED);
    assert_eq!(grows(&d), [("p", 0, 3)]);
}

#[test]
fn a_batch_is_one_decision() {
    let pools = [cand(small("workers"), 1, 10)];
    let batch = items("fn/resize", &[512; 10]);
    let d = decide(&batch, &[], &pools, Quota::UNLIMITED);
    // 3 × 512 per 1792 MiB node: 4 nodes for 10 items, decided at once.
    assert_eq!(grows(&d), [("workers", 1, 5)]);
    let g = &d.growth[0];
    assert_eq!(g.items.len(), 10);
    assert_eq!(g.new_nodes(), 4);
    assert_eq!(g.requested, Resources::new(5120, 0));
    assert_eq!(
        g.reason,
        "scale up 1 → 5: 10 pending tasks of fn/resize need 4 × m1.small"
    );
    let p = g.pending();
    assert_eq!(p.tasks, 10);
    assert_eq!(p.owners, ["fn/resize"]);
}

#[test]
fn a_pool_at_zero_grows() {
    let pools = [cand(small("workers"), 0, 3)];
    let d = decide(&items("fn/hello", &[128]), &[], &pools, Quota::UNLIMITED);
    assert_eq!(grows(&d), [("workers", 0, 1)]);
    assert_eq!(
        d.growth[0].reason,
        "scale up 0 → 1: 1 pending task of fn/hello needs 1 × m1.small"
    );
}

#[test]
fn existing_and_upcoming_capacity_is_used_first() {
    let nodes = [node("w1", "workers", (1792, 1000), (1192, 0))];
    let pools = [cand(small("workers"), 1, 10)];
    let d = decide(
        &items("fn/a", &[300, 300]),
        &nodes,
        &pools,
        Quota::UNLIMITED,
    );
    assert!(d.growth.is_empty(), "{d:?}");
    assert_eq!(d.on_existing.len(), 2);
    // A node that is booting takes what it can: only the rest asks for more.
    let mut booting = cand(small("workers"), 2, 10);
    booting.upcoming = 1;
    let d = decide(
        &items("fn/a", &[1500, 1500]),
        &nodes,
        &[booting],
        Quota::UNLIMITED,
    );
    assert_eq!(grows(&d), [("workers", 2, 3)]);
    assert_eq!(d.on_existing.len(), 1);
}

#[test]
fn least_waste_chooses_the_flavor() {
    let pools = [cand(small("small"), 0, 10), cand(medium("medium"), 0, 10)];
    // 3 × 1000: one per small node (44 % unused) or all on one medium (22 %).
    let d = decide(&items("fn/a", &[1000; 3]), &[], &pools, Quota::UNLIMITED);
    assert_eq!(grows(&d), [("medium", 0, 1)]);
    // 2 × 800: one small node (11 % unused) beats a medium (58 %).
    let d = decide(&items("fn/a", &[800; 2]), &[], &pools, Quota::UNLIMITED);
    assert_eq!(grows(&d), [("small", 0, 1)]);
}

#[test]
fn priority_then_name_break_ties() {
    let mut a = cand(small("a"), 0, 10);
    let mut b = cand(small("b"), 0, 10);
    let work = items("fn/a", &[256]);
    assert_eq!(
        grows(&decide(
            &work,
            &[],
            &[a.clone(), b.clone()],
            Quota::UNLIMITED
        )),
        [("a", 0, 1)]
    );
    b.priority = 5;
    assert_eq!(
        grows(&decide(
            &work,
            &[],
            &[a.clone(), b.clone()],
            Quota::UNLIMITED
        )),
        [("b", 0, 1)]
    );
    a.priority = 9;
    assert_eq!(
        grows(&decide(&work, &[], &[a, b], Quota::UNLIMITED)),
        [("a", 0, 1)]
    );
}

#[test]
fn max_replicas_is_respected() {
    let pools = [cand(small("workers"), 1, 3)];
    let d = decide(&items("fn/a", &[900; 5]), &[], &pools, Quota::UNLIMITED);
    assert_eq!(grows(&d), [("workers", 1, 3)]);
    assert_eq!(d.growth[0].items.len(), 2);
    assert_eq!(d.unplaced.len(), 3);
    for u in &d.unplaced {
        assert_eq!(
            u.why,
            Unplaceable::AtMaxReplicas {
                pools: vec!["workers".into()]
            }
        );
        assert_eq!(u.why.reason(), "PoolAtMaxReplicas");
    }
    let full = [cand(small("workers"), 3, 3)];
    let d = decide(&items("fn/a", &[900]), &[], &full, Quota::UNLIMITED);
    assert!(d.growth.is_empty());
    assert_eq!(d.unplaced.len(), 1);
}

#[test]
fn quota_is_respected_across_pools() {
    let pools = [cand(small("a"), 0, 10), cand(small("b"), 0, 10)];
    let one = Quota {
        instances: Some(1),
        ..Quota::UNLIMITED
    };
    // Each item needs its own node; one server is left in the quota.
    let d = decide(&items("fn/a", &[1500; 3]), &[], &pools, one);
    assert_eq!(grows(&d), [("a", 0, 1)]);
    assert_eq!(d.unplaced.len(), 2);
    assert_eq!(d.unplaced[0].why.reason(), "QuotaExceeded");
    assert!(d.unplaced[0].why.to_string().contains("quota"));
    // RAM: 5000 MiB leave room for two 2048 MiB servers; cores: 1 for one.
    let ram = Quota {
        ram_mb: Some(5000),
        ..Quota::UNLIMITED
    };
    assert_eq!(
        grows(&decide(&items("fn/a", &[1500; 3]), &[], &pools[..1], ram)),
        [("a", 0, 2)]
    );
    let cores = Quota {
        cores: Some(1),
        ..Quota::UNLIMITED
    };
    assert_eq!(
        grows(&decide(&items("fn/a", &[1500; 3]), &[], &pools[..1], cores)),
        [("a", 0, 1)]
    );
}

#[test]
fn constraints_are_honoured() {
    let mut gpu = small("gpu");
    gpu.node
        .attributes
        .labels
        .insert("accel".into(), "gpu".into());
    let pools = [cand(small("plain"), 0, 10), cand(gpu, 0, 10)];
    let mut manager = node("mgr", "none", (8000, 4000), (0, 0));
    manager.pool = None;
    manager.attributes.role = Role::Manager;
    let work = vec![
        item("g1", "fn/train", 1000, &["node.labels.accel==gpu"]),
        item(
            "p1",
            "fn/web",
            1000,
            &["node.role==worker", "node.labels.accel!=gpu"],
        ),
        item("p2", "fn/web", 1000, &["node.labels.lambda.pool==plain"]),
        item("h1", "fn/pinned", 100, &["node.hostname==elsewhere"]),
        item("m1", "fn/web", 100, &["node.role==manager"]),
    ];
    let d = decide(&work, &[manager], &pools, Quota::UNLIMITED);
    // The manager takes what may run on it, and only that.
    assert_eq!(d.on_existing, ["m1"]);
    assert_eq!(grows(&d), [("gpu", 0, 1), ("plain", 0, 2)]);
    assert_eq!(d.growth_of("gpu").unwrap().items, ["g1"]);
    assert_eq!(d.unplaced.len(), 1);
    assert_eq!(d.unplaced[0].item, "h1");
    assert_eq!(
        d.unplaced[0].why.to_string(),
        "no autoscaled pool's nodes satisfy its placement constraints (node.hostname==elsewhere)"
    );
    assert_eq!(d.unplaced[0].why.reason(), "NoPoolFits");
}

#[test]
fn too_large_names_the_largest_flavor() {
    let pools = [cand(small("small"), 0, 10), cand(medium("big"), 0, 10)];
    let d = decide(&items("fn/huge", &[5000]), &[], &pools, Quota::UNLIMITED);
    assert!(d.growth.is_empty());
    let why = &d.unplaced[0].why;
    assert_eq!(why.reason(), "NoPoolFits");
    assert_eq!(
        why.to_string(),
        "needs 5000 MiB, more than any pool's node offers: the largest, m1.medium of pool big, \
         offers 3840 MiB and 1000m CPU after the system reserve"
    );
    // No pool at all: nothing matches.
    let d = decide(&items("fn/huge", &[5000]), &[], &[], Quota::UNLIMITED);
    assert!(matches!(
        d.unplaced[0].why,
        Unplaceable::NoMatchingPool { .. }
    ));
}

#[test]
fn reason_names_the_owners() {
    let pools = [cand(small("workers"), 1, 10)];
    let mut work = items("fn/resize", &[700; 5]);
    work.extend(items("fn/thumb", &[700; 2]));
    let d = decide(&work, &[], &pools, Quota::UNLIMITED);
    assert_eq!(
        d.growth[0].reason,
        "scale up 1 → 5: 5 pending tasks of fn/resize, 2 of fn/thumb need 4 × m1.small"
    );
    let mut many = Vec::new();
    for o in ["fn/a", "fn/b", "fn/c", "fn/d", "fn/e"] {
        many.extend(items(o, &[100]));
    }
    let d = decide(&many, &[], &pools, Quota::UNLIMITED);
    assert_eq!(
        d.growth[0].reason,
        "scale up 1 → 2: 1 pending task of fn/a, 1 of fn/b, 1 of fn/c, 2 more need 1 × m1.small"
    );
}
