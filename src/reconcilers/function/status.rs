//! Status of a function computed from what Swarm reports: ready replicas, endpoints, and the
//! `Ready` condition with a specific reason when not ready.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    Node, NodeSpecAvailabilityEnum, NodeState, Service, ServiceUpdateStatusStateEnum, Task,
    TaskState,
};
use chrono::{DateTime, Utc};

use crate::api::ConditionStatus;
use crate::api::function::Endpoint;
use crate::swarm::{node_address, published_ports, task_state, task_time};

use super::spec::AGENT_PORT;

/// Reasons of the `Ready` condition.
pub mod reason {
    /// Every desired replica runs (and passed its health check) on the current spec.
    pub const RUNNING: &str = "Running";
    /// A rollout or (re)start is under way.
    pub const PROGRESSING: &str = "Progressing";
    /// A node has no such image (none can be pulled here).
    pub const IMAGE_MISSING: &str = "ImageMissing";
    /// No node can take a replica (resources, constraints, no nodes).
    pub const NO_SUITABLE_NODE: &str = "NoSuitableNode";
    /// A task failed; the message is its error.
    pub const TASK_FAILED: &str = "TaskFailed";
    /// Swarm rolled a failed update back; the function runs its previous spec.
    pub const ROLLOUT_FAILED: &str = "RolloutFailed";
    /// The spec does not validate; the message names the fields.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A secret the function mounts does not exist.
    pub const SECRET_MISSING: &str = "SecretMissing";
    /// The service name is held by a service this controller does not own.
    pub const NAME_CONFLICT: &str = "NameConflict";
    /// Scaled to zero replicas.
    pub const SCALED_TO_ZERO: &str = "ScaledToZero";
    /// (Event) Swarm stopped replacing the service's tasks; the controller forced an update.
    pub const REKICKED: &str = "Rekicked";
}

/// What the reconciler writes into the status after looking at Swarm.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub ready_replicas: u32,
    pub endpoints: Vec<Endpoint>,
    pub status: ConditionStatus,
    pub reason: &'static str,
    pub message: String,
}

impl Observed {
    /// True when `Ready` is True.
    pub fn is_ready(&self) -> bool {
        self.status == ConditionStatus::True
    }
}

fn parse_time(s: &Option<String>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.as_deref()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// True while a task Swarm means to run is on its way — placed on a node and preparing,
/// starting or waiting for its first health check — and has been for less than `fresh`: the
/// function is looked at again soon, for the gateway's held calls wait for exactly that task.
/// A task Swarm cannot place (pending) or one stuck starting (a crash loop, a health check that
/// never passes) is not, so that neither is polled at that pace.
pub fn task_starting(tasks: &[Task], now: DateTime<Utc>, fresh: Duration) -> bool {
    tasks.iter().any(|t| {
        t.desired_state == Some(TaskState::RUNNING)
            && matches!(
                task_state(t),
                Some(
                    TaskState::ASSIGNED
                        | TaskState::ACCEPTED
                        | TaskState::PREPARING
                        | TaskState::READY
                        | TaskState::STARTING
                )
            )
            && parse_time(&t.created_at)
                .and_then(|c| (now - c).to_std().ok())
                .is_some_and(|age| age < fresh)
    })
}

/// True while Swarm rolls the service out (an update or a rollback under way).
pub fn update_in_progress(service: &Service) -> bool {
    service
        .update_status
        .as_ref()
        .and_then(|u| u.state)
        .is_some_and(|s| {
            matches!(
                s,
                ServiceUpdateStatusStateEnum::UPDATING
                    | ServiceUpdateStatusStateEnum::ROLLBACK_STARTED
            )
        })
}

/// Computes the observed state of a function's service.
///
/// - `readyReplicas`: tasks desired and observed `running` (Swarm keeps a task with a health
///   check in `starting` until it is healthy);
/// - endpoints: each such task's `<node address>:<published port of 8080>`;
/// - `Ready` True (`Running`) when ready == desired, the service carries the desired spec
///   (`up_to_date`) and no rollout is in progress; otherwise the first of: `RolloutFailed`
///   (Swarm rolled our spec back), `NoSuitableNode` (a pending task Swarm cannot place),
///   `ImageMissing` / `TaskFailed` (the latest failure since the service was last updated),
///   `Progressing`.
pub fn observe(
    service: &Service,
    tasks: &[Task],
    nodes: &[Node],
    replicas: u32,
    up_to_date: bool,
    rolled_back: bool,
) -> Observed {
    // A draining or down node's tasks are on their way out: the gateway stops sending them
    // new requests at once (in-flight ones finish; the agent drains on SIGTERM).
    let serving = |n: &&Node| {
        let draining =
            n.spec.as_ref().and_then(|s| s.availability) == Some(NodeSpecAvailabilityEnum::DRAIN);
        let state = n.status.as_ref().and_then(|s| s.state);
        !draining && state.is_none_or(|s| s == NodeState::READY)
    };
    let addrs: HashMap<String, String> = nodes
        .iter()
        .filter(serving)
        .filter_map(|n| Some((n.id.clone()?, node_address(n)?)))
        .collect();
    let live = |t: &&Task| t.desired_state == Some(TaskState::RUNNING);
    let running: Vec<&Task> = tasks
        .iter()
        .filter(live)
        .filter(|t| task_state(t) == Some(TaskState::RUNNING))
        .collect();
    let mut endpoints: Vec<Endpoint> = running
        .iter()
        .filter_map(|t| {
            let node_id = t.node_id.clone()?;
            let host = addrs.get(&node_id)?;
            // The first entry of a port is its IPv4 one (node addresses are IPv4).
            let port = published_ports(t)
                .into_iter()
                .find(|p| p.target == AGENT_PORT)?;
            Some(Endpoint {
                address: format!("{host}:{}", port.published),
                task_id: t.id.clone()?,
                node_id,
            })
        })
        .collect();
    endpoints.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    let ready = running.len() as u32;
    let updating = update_in_progress(service);
    let out = |status, reason, message: String| Observed {
        ready_replicas: ready,
        endpoints: endpoints.clone(),
        status,
        reason,
        message,
    };
    if rolled_back {
        let msg = service
            .update_status
            .as_ref()
            .and_then(|u| u.message.clone())
            .unwrap_or_else(|| "update rolled back".into());
        return out(
            ConditionStatus::False,
            reason::ROLLOUT_FAILED,
            format!("the last update failed and was rolled back: {msg}"),
        );
    }
    if up_to_date && !updating && ready == replicas {
        return if replicas == 0 {
            out(
                ConditionStatus::True,
                reason::SCALED_TO_ZERO,
                "no replicas desired".into(),
            )
        } else {
            out(
                ConditionStatus::True,
                reason::RUNNING,
                format!("{ready}/{replicas} replicas running"),
            )
        };
    }
    // A task Swarm cannot place stays pending with the scheduler's reason in Err.
    if let Some(t) = tasks.iter().filter(live).find(|t| {
        task_err(t).is_some_and(|e| e.contains("no suitable node"))
            && task_state(t) == Some(TaskState::PENDING)
    }) {
        return out(
            ConditionStatus::False,
            reason::NO_SUITABLE_NODE,
            task_err(t).unwrap_or_default(),
        );
    }
    // The latest failure since the service last changed (older ones are history).
    let since = parse_time(&service.updated_at);
    let failed = tasks
        .iter()
        .filter(|t| {
            matches!(task_state(t), Some(TaskState::FAILED | TaskState::REJECTED))
                && task_err(t).is_some()
        })
        .filter(|t| match (since, task_time(t)) {
            (Some(s), Some(tt)) => tt >= s,
            _ => true,
        })
        .max_by_key(|t| task_time(t));
    if let Some(t) = failed {
        let err = task_err(t).unwrap_or_default();
        let reason = if err.contains("No such image") {
            reason::IMAGE_MISSING
        } else {
            reason::TASK_FAILED
        };
        return out(ConditionStatus::False, reason, err);
    }
    out(
        ConditionStatus::False,
        reason::PROGRESSING,
        format!(
            "{ready}/{replicas} replicas running{}",
            if updating || !up_to_date {
                "; rolling out the current spec"
            } else {
                ""
            }
        ),
    )
}

fn task_err(t: &Task) -> Option<String> {
    t.status
        .as_ref()?
        .err
        .clone()
        .filter(|e| !e.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        EndpointPortConfig, NodeStatus, PortStatus, ServiceUpdateStatus, TaskStatus,
    };

    fn task(id: &str, node: &str, desired: TaskState, state: TaskState, port: i64) -> Task {
        Task {
            id: Some(id.into()),
            node_id: Some(node.into()),
            desired_state: Some(desired),
            status: Some(TaskStatus {
                state: Some(state),
                timestamp: Some("2026-11-25T10:00:05Z".into()),
                port_status: (port > 0).then(|| PortStatus {
                    ports: Some(vec![
                        EndpointPortConfig {
                            target_port: Some(8080),
                            published_port: Some(port),
                            ..Default::default()
                        };
                        2
                    ]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn failed(id: &str, state: TaskState, err: &str, at: &str) -> Task {
        let mut t = task(id, "n1", TaskState::SHUTDOWN, state, 0);
        let s = t.status.as_mut().unwrap();
        s.err = Some(err.into());
        s.timestamp = Some(at.into());
        t
    }

    fn nodes() -> Vec<Node> {
        vec![Node {
            id: Some("n1".into()),
            status: Some(NodeStatus {
                addr: Some("10.251.0.2".into()),
                ..Default::default()
            }),
            ..Default::default()
        }]
    }

    fn service() -> Service {
        Service {
            updated_at: Some("2026-11-25T10:00:00Z".into()),
            ..Default::default()
        }
    }

    #[test]
    fn ready_with_endpoints_when_all_replicas_run() {
        let tasks = [
            task("t2", "n1", TaskState::RUNNING, TaskState::RUNNING, 32769),
            task("t1", "n1", TaskState::RUNNING, TaskState::RUNNING, 32768),
            task("t0", "n1", TaskState::SHUTDOWN, TaskState::SHUTDOWN, 32767),
        ];
        let o = observe(&service(), &tasks, &nodes(), 2, true, false);
        assert!(o.is_ready(), "{o:?}");
        assert_eq!(o.reason, reason::RUNNING);
        assert_eq!(o.ready_replicas, 2);
        let addrs: Vec<_> = o.endpoints.iter().map(|e| e.address.as_str()).collect();
        assert_eq!(addrs, ["10.251.0.2:32768", "10.251.0.2:32769"]);
        assert_eq!(o.endpoints[0].node_id, "n1");
    }

    #[test]
    fn no_endpoints_on_draining_or_down_nodes() {
        let tasks = [task(
            "t1",
            "n1",
            TaskState::RUNNING,
            TaskState::RUNNING,
            32768,
        )];
        let mut n = nodes();
        n[0].spec = Some(bollard::models::NodeSpec {
            availability: Some(NodeSpecAvailabilityEnum::DRAIN),
            ..Default::default()
        });
        assert!(
            observe(&service(), &tasks, &n, 1, true, false)
                .endpoints
                .is_empty()
        );
        let mut n = nodes();
        n[0].status.as_mut().unwrap().state = Some(NodeState::DOWN);
        assert!(
            observe(&service(), &tasks, &n, 1, true, false)
                .endpoints
                .is_empty()
        );
        let mut n = nodes();
        n[0].status.as_mut().unwrap().state = Some(NodeState::READY);
        assert_eq!(
            observe(&service(), &tasks, &n, 1, true, false)
                .endpoints
                .len(),
            1
        );
    }

    #[test]
    fn not_ready_while_starting_or_rolling_out() {
        let tasks = [
            task("t1", "n1", TaskState::RUNNING, TaskState::RUNNING, 32768),
            task("t2", "n1", TaskState::RUNNING, TaskState::STARTING, 0),
        ];
        let o = observe(&service(), &tasks, &nodes(), 2, true, false);
        assert_eq!(
            (o.status, o.reason),
            (ConditionStatus::False, reason::PROGRESSING)
        );
        assert_eq!(o.endpoints.len(), 1, "only running tasks are endpoints");
        let mut s = service();
        s.update_status = Some(ServiceUpdateStatus {
            state: Some(ServiceUpdateStatusStateEnum::UPDATING),
            ..Default::default()
        });
        let o = observe(&s, &tasks[..1], &nodes(), 1, true, false);
        assert_eq!(o.reason, reason::PROGRESSING);
        let o = observe(&service(), &tasks[..1], &nodes(), 1, false, false);
        assert_eq!(o.reason, reason::PROGRESSING, "service not yet on our spec");
    }

    #[test]
    fn failure_reasons() {
        let img = failed(
            "t1",
            TaskState::REJECTED,
            "No such image: lambda/nope:1",
            "2026-11-25T10:00:03Z",
        );
        let o = observe(&service(), &[img], &nodes(), 1, true, false);
        assert_eq!(o.reason, reason::IMAGE_MISSING);
        assert!(o.message.contains("lambda/nope"));
        let crash = failed(
            "t2",
            TaskState::FAILED,
            "task: non-zero exit (1)",
            "2026-11-25T10:00:04Z",
        );
        let o = observe(
            &service(),
            std::slice::from_ref(&crash),
            &nodes(),
            1,
            true,
            false,
        );
        assert_eq!(
            (o.reason, o.message.as_str()),
            (reason::TASK_FAILED, "task: non-zero exit (1)")
        );
        // A failure from before the last service update is history.
        let old = failed("t3", TaskState::FAILED, "old", "2026-11-25T09:59:00Z");
        let o = observe(&service(), &[old], &nodes(), 1, true, false);
        assert_eq!(o.reason, reason::PROGRESSING);
        let mut pending = task("t4", "", TaskState::RUNNING, TaskState::PENDING, 0);
        pending.status.as_mut().unwrap().err =
            Some("no suitable node (insufficient resources on 1 node)".into());
        let o = observe(&service(), &[crash, pending], &nodes(), 1, true, false);
        assert_eq!(o.reason, reason::NO_SUITABLE_NODE);
        let o = observe(&service(), &[], &nodes(), 1, true, true);
        assert_eq!(o.reason, reason::ROLLOUT_FAILED);
    }

    #[test]
    fn zero_replicas_is_ready() {
        let o = observe(&service(), &[], &nodes(), 0, true, false);
        assert!(o.is_ready());
        assert_eq!(o.reason, reason::SCALED_TO_ZERO);
    }

    #[test]
    fn a_task_on_its_way_is_starting_and_a_running_pending_stuck_or_dead_one_is_not() {
        use TaskState as S;
        let created = |mut t: Task| {
            t.created_at = Some("2026-11-25T10:00:00Z".into());
            t
        };
        let on_the_way = |state| created(task("t", "n", S::RUNNING, state, 0));
        let now: DateTime<Utc> = "2026-11-25T10:00:02Z".parse().unwrap();
        let fresh = Duration::from_secs(30);
        let starting = |tasks: &[Task]| task_starting(tasks, now, fresh);
        for state in [S::ASSIGNED, S::PREPARING, S::STARTING] {
            assert!(starting(&[on_the_way(state)]), "{state:?}");
        }
        assert!(!starting(&[]));
        assert!(!starting(&[on_the_way(S::RUNNING)]));
        assert!(!starting(&[on_the_way(S::FAILED)]));
        // Not placed: polled at the not-ready pace.
        assert!(!starting(&[on_the_way(S::PENDING)]));
        // One being shut down is not coming.
        assert!(!starting(&[created(task(
            "t",
            "n",
            S::SHUTDOWN,
            S::STARTING,
            0
        ))]));
        // Starting for longer than `fresh`: stuck, not on its way.
        let later: DateTime<Utc> = "2026-11-25T10:01:00Z".parse().unwrap();
        assert!(!task_starting(&[on_the_way(S::STARTING)], later, fresh));
        // No creation time: not known to be fresh.
        assert!(!starting(&[task("t", "n", S::RUNNING, S::STARTING, 0)]));
        assert!(starting(&[on_the_way(S::RUNNING), on_the_way(S::STARTING)]));
    }
}
