//! Pool outcomes over passes, on a fixed clock.

use chrono::TimeDelta;

use super::super::model::testing::{item, node};
use super::super::model::{SimNode, WorkItem};
use super::super::scale_down::{self, DownNode, PoolPolicy, PoolShrink};
use super::super::scale_up::{self, PoolCandidate, Quota};
use super::super::template::TemplateNode;
use super::*;

const KEY: &str = "default/workers";

fn t(secs: i64) -> DateTime<Utc> {
    "2026-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + TimeDelta::seconds(secs)
}

fn candidate(replicas: u32, max: u32) -> PoolCandidate {
    let mut n: SimNode = node("template", KEY, (1792, 1000), (0, 0));
    n.attributes.hostname.clear();
    PoolCandidate {
        template: TemplateNode {
            pool: KEY.into(),
            flavor: "m1.small".into(),
            flavor_size: Resources::new(2048, 1000),
            node: n,
        },
        replicas,
        upcoming: 0,
        max_replicas: max,
        priority: 0,
    }
}

fn work(n: usize, mb: u64) -> Vec<WorkItem> {
    (0..n)
        .map(|i| item(&format!("t{i}"), "fn/default/resize", mb, &[]))
        .collect()
}

fn pass<'a>(replicas: u32, previous: Option<&'a AutoscalerStatus>, nodes: &[&str]) -> PoolPass<'a> {
    PoolPass {
        key: KEY.into(),
        replicas,
        previous,
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        reserved: Resources::new(512, 0),
        allocatable: Resources::new(1792, 1000),
    }
}

#[test]
fn a_scale_up_is_recorded_with_its_work() {
    let up = scale_up::decide(&work(10, 512), &[], &[candidate(1, 10)], Quota::UNLIMITED);
    let o = pool_outcome(&pass(1, None, &["w-1"]), &up, &ScaleDown::default(), t(0));
    assert_eq!(o.desired_replicas, 5);
    assert!(o.news);
    let s = &o.status;
    assert_eq!(s.decision, AutoscalerDecision::ScaleUp);
    assert_eq!(
        s.reason,
        "scale up 1 → 5: 10 pending tasks of fn/default/resize need 4 × m1.small"
    );
    assert_eq!(s.pending.tasks, 10);
    assert_eq!(s.pending.requested.memory_mb, 5120);
    assert_eq!(s.last_scale_up, Some(t(0)));
    assert_eq!(s.decision_time, Some(t(0)));
    assert_eq!(s.reserved.memory_mb, 512);
    assert_eq!(s.allocatable.memory_mb, 1792);
}

#[test]
fn a_steady_pool_keeps_its_times() {
    let mut prev = AutoscalerStatus {
        last_scale_up: Some(t(0)),
        ..Default::default()
    };
    let quiet = ScaleUp::default();
    let o = pool_outcome(
        &pass(2, Some(&prev), &[]),
        &quiet,
        &ScaleDown::default(),
        t(10),
    );
    assert_eq!(o.status.decision, AutoscalerDecision::NoChange);
    assert_eq!(
        o.status.reason,
        "no pending work; 512 MiB of 1792 MiB and 1000m CPU reserved"
    );
    assert_eq!(o.desired_replicas, 2);
    assert_eq!(o.status.last_scale_up, Some(t(0)), "survives the pass");
    assert!(o.news);
    prev = o.status;
    let o = pool_outcome(
        &pass(2, Some(&prev), &[]),
        &quiet,
        &ScaleDown::default(),
        t(20),
    );
    assert!(!o.news);
    assert_eq!(o.status.decision_time, Some(t(10)), "not rewritten");
    assert_eq!(o.status, prev);
}

#[test]
fn a_scale_down_lists_its_nodes_until_they_are_gone() {
    let nodes: Vec<DownNode> = ["w-1", "w-2", "w-3"]
        .iter()
        .map(|n| DownNode {
            node: node(n, KEY, (1792, 1000), (0, 0)),
            tasks: vec![],
            ready: true,
            deleting: false,
            do_not_disrupt: false,
        })
        .collect();
    let policy = PoolPolicy {
        pool: KEY.into(),
        replicas: 3,
        min_replicas: 1,
        threshold: 0.5,
        unneeded_for: TimeDelta::seconds(60),
        delay_after_add: TimeDelta::seconds(60),
        last_scale_up: None,
        unneeded_since: BTreeMap::new(),
        removing: BTreeSet::new(),
    };
    let quiet = ScaleUp::default();
    let first = scale_down::decide(&nodes, std::slice::from_ref(&policy), t(0));
    let o = pool_outcome(&pass(3, None, &["w-1", "w-2", "w-3"]), &quiet, &first, t(0));
    assert_eq!(o.status.decision, AutoscalerDecision::NoChange);
    assert!(
        o.status.reason.ends_with("; unneeded: w-1, w-2"),
        "{}",
        o.status.reason
    );
    // The next pass reads the windows back from status.
    let prev = o.status;
    let p = PoolPolicy {
        unneeded_since: prev.unneeded_since.clone(),
        ..policy
    };
    let second = scale_down::decide(&nodes, &[p], t(60));
    let all = ["w-1", "w-2", "w-3"];
    let o = pool_outcome(&pass(3, Some(&prev), &all), &quiet, &second, t(60));
    assert_eq!(o.desired_replicas, 1);
    assert_eq!(o.status.decision, AutoscalerDecision::ScaleDown);
    assert_eq!(o.status.scale_down_nodes, ["w-1", "w-2"]);
    assert_eq!(o.status.last_scale_down, Some(t(60)));
    // Listed while the nodes exist, dropped once they are gone.
    let prev = o.status;
    let o = pool_outcome(
        &pass(1, Some(&prev), &all),
        &quiet,
        &ScaleDown::default(),
        t(70),
    );
    assert_eq!(o.status.scale_down_nodes, ["w-1", "w-2"]);
    let o = pool_outcome(
        &pass(1, Some(&prev), &["w-3"]),
        &quiet,
        &ScaleDown::default(),
        t(80),
    );
    assert!(o.status.scale_down_nodes.is_empty());
    assert_eq!(o.desired_replicas, 1);
}

#[test]
fn work_held_back_by_max_blocks_the_pool() {
    let up = scale_up::decide(&work(3, 1500), &[], &[candidate(2, 2)], Quota::UNLIMITED);
    let o = pool_outcome(&pass(2, None, &[]), &up, &ScaleDown::default(), t(0));
    assert_eq!(o.status.decision, AutoscalerDecision::Blocked);
    assert_eq!(o.desired_replicas, 2);
    assert_eq!(
        o.status.reason,
        "3 pending tasks wait: the pools it fits are at maxReplicas: default/workers"
    );
    assert_eq!(o.status.pending.tasks, 3);
    assert_eq!(o.status.pending.requested.memory_mb, 4500);
    assert_eq!(o.status.pending.owners, ["fn/default/resize"]);
}

#[test]
fn a_scale_up_beats_a_scale_down() {
    let up = scale_up::decide(&work(1, 1500), &[], &[candidate(2, 5)], Quota::UNLIMITED);
    let down = ScaleDown {
        shrink: vec![PoolShrink {
            pool: KEY.into(),
            from: 2,
            to: 1,
            nodes: vec!["w-1".into()],
            reason: "scale down 2 → 1".into(),
        }],
        ..Default::default()
    };
    let o = pool_outcome(&pass(2, None, &["w-1", "w-2"]), &up, &down, t(0));
    assert_eq!(o.status.decision, AutoscalerDecision::ScaleUp);
    assert_eq!(o.desired_replicas, 3);
    assert!(o.status.scale_down_nodes.is_empty());
}

#[test]
fn functions_no_pool_fits_are_named_once() {
    let mut items = work(2, 4000);
    items.push(item("ok", "fn/default/small", 100, &[]));
    let up = scale_up::decide(&items, &[], &[candidate(0, 5)], Quota::UNLIMITED);
    let c = no_pool_fits(&up);
    assert_eq!(c.len(), 1);
    let (reason, message) = &c["fn/default/resize"];
    assert_eq!(*reason, "NoPoolFits");
    assert_eq!(
        message,
        "needs 4000 MiB, more than any pool's node offers: the largest, m1.small of pool \
         default/workers, offers 1792 MiB and 1000m CPU after the system reserve"
    );
}
