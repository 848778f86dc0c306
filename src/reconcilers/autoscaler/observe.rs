//! From what Swarm reports to the simulation's inputs: the pending work (tasks Swarm tried
//! and failed to place), what each node's tasks reserve and would have to move, and the nodes
//! themselves. Pure over bollard's models, so it is unit-tested without a Swarm.
//!
//! Swarm's accounting, kept: a task holds its reservation on its node from `pending` through
//! `running` (swarmkit's scheduler drops it from the node beyond that); a task Swarm cannot
//! place stays `pending` with no node and the scheduler's `no suitable node (…)` in
//! `Status.Err`, whether resources or constraints are what is missing.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    Node as SwarmNode, NodeSpecAvailabilityEnum, NodeSpecRoleEnum, NodeState, Task, TaskState,
};

use super::constraints::{ConstraintError, NodeAttributes, Role};
use super::model::{Resources, SimNode, WorkItem};

/// What Swarm's scheduler writes into a task it cannot place.
pub const NO_SUITABLE_NODE: &str = "no suitable node";

/// Errors of observation: a task whose constraints Swarm's syntax rejects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObserveError {
    #[error("task {task} of {owner}: {source}")]
    Constraint {
        task: String,
        owner: String,
        #[source]
        source: ConstraintError,
    },
}

fn state(t: &Task) -> Option<TaskState> {
    t.status.as_ref()?.state
}

fn node_of(t: &Task) -> Option<&str> {
    t.node_id.as_deref().filter(|n| !n.is_empty())
}

/// True when Swarm tried and failed to place the task: wanted running, still `pending`, with
/// the scheduler's "no suitable node".
pub fn is_unplaceable(t: &Task) -> bool {
    t.desired_state == Some(TaskState::RUNNING)
        && state(t) == Some(TaskState::PENDING)
        && node_of(t).is_none()
        && t.status
            .as_ref()
            .and_then(|s| s.err.as_deref())
            .is_some_and(|e| e.contains(NO_SUITABLE_NODE))
}

/// True when the task holds its reservation on its node now.
pub fn holds_resources(t: &Task) -> bool {
    node_of(t).is_some()
        && state(t).is_some_and(|s| (TaskState::PENDING..=TaskState::RUNNING).contains(&s))
}

/// The task's reservation (memory and CPU).
pub fn reservation(t: &Task) -> Resources {
    let r = t
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.reservations.as_ref());
    Resources::from_swarm_demand(
        r.and_then(|r| r.memory_bytes).unwrap_or(0),
        r.and_then(|r| r.nano_cpus).unwrap_or(0),
    )
}

/// The task as a piece of work: its reservation and placement constraints, named by its owner
/// (`owners`: service id → name; others are `service <id>`).
pub fn work_item(t: &Task, owners: &HashMap<String, String>) -> Result<WorkItem, ObserveError> {
    let id = t.id.clone().unwrap_or_default();
    let service = t.service_id.clone().unwrap_or_default();
    let owner = owners
        .get(&service)
        .cloned()
        .unwrap_or_else(|| format!("service {service}"));
    let constraints: Vec<String> = t
        .spec
        .as_ref()
        .and_then(|s| s.placement.as_ref())
        .and_then(|p| p.constraints.clone())
        .unwrap_or_default();
    WorkItem::new(id.clone(), owner.clone(), reservation(t), &constraints).map_err(|source| {
        ObserveError::Constraint {
            task: id,
            owner,
            source,
        }
    })
}

/// The pending work among `tasks`, each named by its owner (`owners`: service id → e.g.
/// `fn/default/resize`; others are `service <id>`). Tasks with constraints Swarm's syntax
/// rejects are returned as errors beside the items, not dropped silently.
pub fn pending_work(
    tasks: &[Task],
    owners: &HashMap<String, String>,
) -> (Vec<WorkItem>, Vec<ObserveError>) {
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for t in tasks.iter().filter(|t| is_unplaceable(t)) {
        match work_item(t, owners) {
            Ok(i) => items.push(i),
            Err(e) => errors.push(e),
        }
    }
    (items, errors)
}

/// What the tasks on one node hold, and those of them that would have to move if it went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeLoad {
    pub reserved: Resources,
    /// Tasks wanted running (those being shut down go away by themselves).
    pub movable: Vec<WorkItem>,
}

/// Per Swarm node id, what its tasks hold. A task whose constraints do not parse is still
/// counted in `reserved` and returned as an error (it cannot be re-placed in the simulation,
/// so its node must be treated as not removable).
pub fn load_by_node(
    tasks: &[Task],
    owners: &HashMap<String, String>,
) -> (BTreeMap<String, NodeLoad>, Vec<(String, ObserveError)>) {
    let mut out: BTreeMap<String, NodeLoad> = BTreeMap::new();
    let mut errors = Vec::new();
    for t in tasks.iter().filter(|t| holds_resources(t)) {
        let Some(node) = node_of(t) else { continue };
        let load = out.entry(node.to_string()).or_default();
        load.reserved = load.reserved.plus(&reservation(t));
        if t.desired_state == Some(TaskState::RUNNING) {
            match work_item(t, owners) {
                Ok(i) => load.movable.push(i),
                Err(e) => errors.push((node.to_string(), e)),
            }
        }
    }
    (out, errors)
}

/// True when Swarm may place new tasks on the node: `ready` and `active`.
pub fn schedulable(n: &SwarmNode) -> bool {
    n.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY)
        && n.spec.as_ref().and_then(|s| s.availability) == Some(NodeSpecAvailabilityEnum::ACTIVE)
}

/// A Swarm node as the simulation sees it, named `name`, in `pool` (its key), with
/// `reserved` held by its tasks; `None` when Swarm reports no resources for it (not joined
/// far enough to be planned on).
pub fn sim_node(
    n: &SwarmNode,
    name: String,
    pool: Option<String>,
    reserved: Resources,
) -> Option<SimNode> {
    let d = n.description.as_ref()?;
    let r = d.resources.as_ref()?;
    let allocatable =
        Resources::from_swarm_capacity(r.memory_bytes.unwrap_or(0), r.nano_cpus.unwrap_or(0));
    let spec = n.spec.as_ref();
    let map = |m: Option<&HashMap<String, String>>| -> BTreeMap<String, String> {
        m.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    };
    let platform = d.platform.as_ref();
    Some(SimNode {
        name,
        pool,
        attributes: NodeAttributes {
            id: n.id.clone().unwrap_or_default(),
            hostname: d.hostname.clone().unwrap_or_default(),
            role: match spec.and_then(|s| s.role) {
                Some(NodeSpecRoleEnum::MANAGER) => Role::Manager,
                _ => Role::Worker,
            },
            os: platform.and_then(|p| p.os.clone()).unwrap_or_default(),
            arch: platform
                .and_then(|p| p.architecture.clone())
                .unwrap_or_default(),
            labels: map(spec.and_then(|s| s.labels.as_ref())),
            engine_labels: map(d.engine.as_ref().and_then(|e| e.labels.as_ref())),
        },
        allocatable,
        reserved,
    })
}

#[cfg(test)]
mod tests {
    use bollard::models::{
        EngineDescription, NodeDescription, NodeSpec, NodeStatus, Platform, ResourceObject,
        TaskSpec, TaskSpecPlacement, TaskSpecResources, TaskStatus,
    };

    use super::*;

    const MIB: i64 = 1024 * 1024;

    fn task(id: &str, node: Option<&str>, st: TaskState, err: Option<&str>, mb: i64) -> Task {
        Task {
            id: Some(id.into()),
            service_id: Some("svc1".into()),
            node_id: node.map(Into::into),
            desired_state: Some(TaskState::RUNNING),
            spec: Some(TaskSpec {
                resources: Some(TaskSpecResources {
                    reservations: Some(ResourceObject {
                        memory_bytes: Some(mb * MIB),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                placement: Some(TaskSpecPlacement {
                    constraints: Some(vec!["node.role==worker".into()]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(TaskStatus {
                state: Some(st),
                err: err.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn owners() -> HashMap<String, String> {
        HashMap::from([("svc1".to_string(), "fn/default/resize".to_string())])
    }

    #[test]
    fn pending_work_is_what_swarm_could_not_place() {
        let no_node = "no suitable node (insufficient resources on 2 nodes)";
        let constraint = "no suitable node (scheduling constraints not satisfied on 3 nodes)";
        let mut shutting = task("t5", None, TaskState::PENDING, Some(no_node), 128);
        shutting.desired_state = Some(TaskState::SHUTDOWN);
        let mut bad = task("t6", None, TaskState::PENDING, Some(no_node), 128);
        bad.spec.as_mut().unwrap().placement = Some(TaskSpecPlacement {
            constraints: Some(vec!["node.role=worker".into()]),
            ..Default::default()
        });
        let tasks = [
            task("t1", None, TaskState::PENDING, Some(no_node), 512),
            task("t2", None, TaskState::PENDING, Some(constraint), 256),
            task("t3", None, TaskState::PENDING, None, 128),
            task("t4", Some("n1"), TaskState::RUNNING, None, 128),
            shutting,
            bad,
        ];
        let (items, errors) = pending_work(&tasks, &owners());
        let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["t1", "t2"]);
        assert_eq!(items[0].owner, "fn/default/resize");
        assert_eq!(items[0].demand, Resources::new(512, 0));
        assert_eq!(items[0].constraints.len(), 1);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .to_string()
                .starts_with("task t6 of fn/default/resize")
        );
        let (items, _) = pending_work(&tasks[..1], &HashMap::new());
        assert_eq!(items[0].owner, "service svc1");
    }

    #[test]
    fn nodes_hold_what_their_live_tasks_reserve() {
        let mut stopping = task("t4", Some("n1"), TaskState::RUNNING, None, 64);
        stopping.desired_state = Some(TaskState::SHUTDOWN);
        let tasks = [
            task("t1", Some("n1"), TaskState::RUNNING, None, 512),
            task("t2", Some("n1"), TaskState::STARTING, None, 256),
            task("t3", Some("n1"), TaskState::SHUTDOWN, None, 1024),
            stopping,
            task("t5", Some("n2"), TaskState::ASSIGNED, None, 100),
            task(
                "t6",
                None,
                TaskState::PENDING,
                Some("no suitable node"),
                999,
            ),
        ];
        let (load, errors) = load_by_node(&tasks, &owners());
        assert!(errors.is_empty());
        assert_eq!(load["n1"].reserved, Resources::new(512 + 256 + 64, 0));
        let ids: Vec<&str> = load["n1"].movable.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["t1", "t2"]);
        assert_eq!(load["n2"].reserved, Resources::new(100, 0));
        assert_eq!(load.len(), 2);
    }

    #[test]
    fn swarm_nodes_become_sim_nodes() {
        let n = SwarmNode {
            id: Some("abc".into()),
            spec: Some(NodeSpec {
                labels: Some(HashMap::from([("lambda.pool".into(), "workers".into())])),
                role: Some(NodeSpecRoleEnum::WORKER),
                availability: Some(NodeSpecAvailabilityEnum::ACTIVE),
                ..Default::default()
            }),
            description: Some(NodeDescription {
                hostname: Some("workers-1a2b3".into()),
                platform: Some(Platform {
                    architecture: Some("x86_64".into()),
                    os: Some("linux".into()),
                }),
                resources: Some(ResourceObject {
                    memory_bytes: Some(2048 * MIB),
                    nano_cpus: Some(2_000_000_000),
                    ..Default::default()
                }),
                engine: Some(EngineDescription {
                    labels: Some(HashMap::from([("disk".into(), "ssd".into())])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: Some(NodeState::READY),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(schedulable(&n));
        let s = sim_node(
            &n,
            "workers-1a2b3".into(),
            Some("default/workers".into()),
            Resources::new(512, 0),
        )
        .unwrap();
        assert_eq!(s.allocatable, Resources::new(2048, 2000));
        assert_eq!(s.free(), Resources::new(1536, 2000));
        assert_eq!(s.attributes.role, Role::Worker);
        assert_eq!(s.attributes.hostname, "workers-1a2b3");
        assert_eq!(s.attributes.labels["lambda.pool"], "workers");
        assert_eq!(s.attributes.engine_labels["disk"], "ssd");
        let mut drained = n.clone();
        drained.spec.as_mut().unwrap().availability = Some(NodeSpecAvailabilityEnum::DRAIN);
        assert!(!schedulable(&drained));
        let mut down = n.clone();
        down.status.as_mut().unwrap().state = Some(NodeState::DOWN);
        assert!(!schedulable(&down));
        let bare = SwarmNode::default();
        assert!(sim_node(&bare, "x".into(), None, Resources::ZERO).is_none());
    }
}
