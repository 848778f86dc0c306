//! The stuck-service watchdog: a decision, from what Swarm reports, that a function's service
//! runs fewer tasks than it should and Swarm has stopped trying to replace them.
//!
//! Swarm's orchestrator replaces a dead task only when its restart policy says so and only on
//! the task event; a replacement it never created (a task that ended while its node was being
//! removed, a restart policy that did not apply, an allocator that lost the event) leaves the
//! service short for good. Seen here: the only task of a service `Shutdown / Complete`, no
//! new task, for minutes. The decision below is level-triggered and derived from Swarm's own
//! timestamps (not from memory), so a restarted controller reaches the same verdict, and a
//! re-kick (which moves the service's `UpdatedAt`) is not repeated before the bound passes
//! again.
//!
//! A second way to be stuck: a task Swarm left `Pending` with no node ("no suitable node")
//! for the bound although a node can take it now (ready, active, its constraints met, room for
//! its reservation next to what the node's tasks hold): Swarm dropped it from its retry queue
//! (seen after a service update that replaced no task while the eligible nodes were away, and
//! after the node's resources were freed; moby/moby#53722, #32999). A forced update replaces it
//! with a task Swarm places at once. Only then: re-kicking while no node can take the task
//! would only pile up more pending tasks (a start-first update keeps the old one).

use std::time::Duration;

use std::collections::HashMap;

use bollard::models::{Node as SwarmNode, Service, Task, TaskState};
use chrono::{DateTime, Utc};

use crate::reconcilers::autoscaler::model::SimNode;
use crate::reconcilers::autoscaler::observe::{self, is_unplaceable};
use crate::swarm::{task_state, task_time};

/// A service short of running tasks with nothing on its way.
#[derive(Debug, Clone, PartialEq)]
pub struct Stuck {
    /// Tasks desired and running.
    pub running: u32,
    /// Replicas wanted.
    pub desired: u32,
    /// The most recently ended task: id, state and message (Swarm's `Status.Err`, else
    /// `Status.Message`).
    pub last_task: Option<(String, String, String)>,
    /// Time since the service or any of its tasks last changed.
    pub quiet_for: Duration,
    /// The last task is one Swarm left pending although a node can take it.
    pub forgotten: bool,
}

impl Stuck {
    /// The event message: what was seen and what is done about it.
    pub fn message(&self, service: &str) -> String {
        if self.forgotten {
            let (id, msg) = self
                .last_task
                .as_ref()
                .map(|(id, _, msg)| (id.as_str(), msg.as_str()))
                .unwrap_or_default();
            return format!(
                "service {service}: task {id} pending for {}s ({msg}) although a node can take it now: Swarm stopped retrying it; forcing an update",
                self.quiet_for.as_secs()
            );
        }
        let last = match &self.last_task {
            Some((id, state, msg)) if msg.is_empty() => format!("; last task {id} ended {state}"),
            Some((id, state, msg)) => format!("; last task {id} ended {state} ({msg})"),
            None => String::new(),
        };
        format!(
            "service {service}: {} of {} replicas running and Swarm started no replacement for {}s{last}; forcing an update",
            self.running,
            self.desired,
            self.quiet_for.as_secs()
        )
    }
}

/// States of a task on its way to running.
fn on_its_way(s: TaskState) -> bool {
    matches!(
        s,
        TaskState::NEW
            | TaskState::ALLOCATED
            | TaskState::PENDING
            | TaskState::ASSIGNED
            | TaskState::ACCEPTED
            | TaskState::PREPARING
            | TaskState::READY
            | TaskState::STARTING
    )
}

fn parse(t: Option<&String>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The nodes Swarm may place tasks on now (ready, active), each with what its tasks hold
/// (`tasks`: every task of the Swarm).
pub fn capacity(nodes: &[SwarmNode], tasks: &[Task]) -> Vec<SimNode> {
    let (load, _) = observe::load_by_node(tasks, &HashMap::new());
    nodes
        .iter()
        .filter(|n| observe::schedulable(n))
        .filter_map(|n| {
            let id = n.id.clone().unwrap_or_default();
            let reserved = load.get(&id).map(|l| l.reserved).unwrap_or_default();
            observe::sim_node(n, id, None, reserved)
        })
        .collect()
}

/// The task of `tasks` Swarm has left unplaced for at least `bound` at `now` although one of
/// `nodes` (see [`capacity`]) can take it.
fn forgotten<'a>(
    tasks: &'a [Task],
    nodes: &[SimNode],
    now: DateTime<Utc>,
    bound: Duration,
) -> Option<(&'a Task, Duration)> {
    tasks.iter().filter(|t| is_unplaceable(t)).find_map(|t| {
        let waited = (now - task_time(t)?).to_std().ok()?;
        let item = observe::work_item(t, &HashMap::new()).ok()?;
        (waited >= bound && nodes.iter().any(|n| n.can_take(&item))).then_some((t, waited))
    })
}

/// Decides whether `service` (wanting `desired` replicas, its tasks `tasks`) is stuck at `now`:
/// fewer tasks running than desired, and either none starting or pending, no rollout under way
/// and nothing about the service or its tasks changed for `bound`; or a task left unplaced for
/// `bound` although one of `nodes` (see [`capacity`]; empty when no task waits) can take it,
/// and the service itself was not updated (by a re-kick, say) within `bound`.
pub fn stuck(
    service: &Service,
    tasks: &[Task],
    desired: u32,
    nodes: &[SimNode],
    now: DateTime<Utc>,
    bound: Duration,
) -> Option<Stuck> {
    if desired == 0 {
        return None;
    }
    let wanted = |t: &&Task| matches!(t.desired_state, Some(TaskState::RUNNING | TaskState::READY));
    let running = tasks
        .iter()
        .filter(wanted)
        .filter(|t| task_state(t) == Some(TaskState::RUNNING))
        .count() as u32;
    if running >= desired {
        return None;
    }
    // A re-kick moves the service's `UpdatedAt` and leaves the old pending task in place
    // (start-first): without this, every reconcile the update itself triggers would find that
    // task again and force one more update, each adding a task (28 in 2 s were seen while the
    // workers joined, then run at once and starved the node).
    let updated_within_bound = parse(service.updated_at.as_ref())
        .and_then(|u| (now - u).to_std().ok())
        .is_some_and(|d| d < bound);
    if let Some((t, waited)) = forgotten(tasks, nodes, now, bound).filter(|_| !updated_within_bound)
    {
        return Some(Stuck {
            running,
            desired,
            last_task: Some(describe(t)),
            quiet_for: waited,
            forgotten: true,
        });
    }
    if super::status::update_in_progress(service) {
        return None;
    }
    if tasks
        .iter()
        .filter(wanted)
        .any(|t| task_state(t).is_none_or(on_its_way))
    {
        return None;
    }
    let last_change = tasks
        .iter()
        .filter_map(task_time)
        .chain(parse(service.updated_at.as_ref()))
        .max()?;
    let quiet = (now - last_change).to_std().ok()?;
    if quiet < bound {
        return None;
    }
    let last_task = tasks
        .iter()
        .filter(|t| task_state(t).is_some_and(|s| s != TaskState::RUNNING))
        .max_by_key(|t| task_time(t))
        .map(describe);
    Some(Stuck {
        running,
        desired,
        last_task,
        quiet_for: quiet,
        forgotten: false,
    })
}

/// A task's id, state and message (Swarm's `Status.Err`, else `Status.Message`).
fn describe(t: &Task) -> (String, String, String) {
    let st = t.status.as_ref();
    let msg = st
        .and_then(|s| s.err.clone())
        .or_else(|| st.and_then(|s| s.message.clone()))
        .unwrap_or_default();
    let state = task_state(t).map(|s| s.to_string()).unwrap_or_default();
    (t.id.clone().unwrap_or_default(), state, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ServiceUpdateStatus, ServiceUpdateStatusStateEnum, TaskStatus};

    const T0: &str = "2026-12-02T10:00:00Z";

    fn at(secs: i64) -> DateTime<Utc> {
        parse(Some(&T0.to_string())).unwrap() + chrono::TimeDelta::seconds(secs)
    }

    fn task(id: &str, desired: TaskState, state: TaskState, secs: i64) -> Task {
        Task {
            id: Some(id.into()),
            desired_state: Some(desired),
            status: Some(TaskStatus {
                state: Some(state),
                timestamp: Some(at(secs).to_rfc3339()),
                message: Some("finished".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn service() -> Service {
        Service {
            updated_at: Some(T0.into()),
            ..Default::default()
        }
    }

    const BOUND: Duration = Duration::from_secs(20);

    #[test]
    fn a_completed_task_with_no_replacement_is_stuck_after_the_bound() {
        let tasks = [task("t1", TaskState::SHUTDOWN, TaskState::COMPLETE, 5)];
        assert_eq!(
            stuck(&service(), &tasks, 1, &[], at(24), BOUND),
            None,
            "too early"
        );
        let s = stuck(&service(), &tasks, 1, &[], at(26), BOUND).expect("stuck");
        assert_eq!((s.running, s.desired), (0, 1));
        assert_eq!(
            s.last_task,
            Some(("t1".into(), "complete".into(), "finished".into()))
        );
        let m = s.message("lambda-x");
        assert!(
            m.contains("0 of 1") && m.contains("t1") && m.contains("complete"),
            "{m}"
        );
    }

    #[test]
    fn tasks_on_their_way_a_rollout_or_enough_replicas_are_not_stuck() {
        let done = task("t1", TaskState::SHUTDOWN, TaskState::COMPLETE, 0);
        let late = at(600);
        for s in [
            TaskState::PENDING,
            TaskState::NEW,
            TaskState::STARTING,
            TaskState::ASSIGNED,
        ] {
            let tasks = [done.clone(), task("t2", TaskState::RUNNING, s, 0)];
            assert_eq!(
                stuck(&service(), &tasks, 1, &[], late, BOUND),
                None,
                "{s:?}"
            );
        }
        let tasks = [
            done.clone(),
            task("t2", TaskState::RUNNING, TaskState::RUNNING, 0),
        ];
        assert_eq!(stuck(&service(), &tasks, 1, &[], late, BOUND), None);
        assert_eq!(
            stuck(&service(), std::slice::from_ref(&done), 0, &[], late, BOUND),
            None
        );
        let mut svc = service();
        svc.update_status = Some(ServiceUpdateStatus {
            state: Some(ServiceUpdateStatusStateEnum::UPDATING),
            ..Default::default()
        });
        assert_eq!(stuck(&svc, &[done], 1, &[], late, BOUND), None);
    }

    #[test]
    fn one_of_two_running_counts_and_a_rekick_restarts_the_clock() {
        let tasks = [
            task("a", TaskState::RUNNING, TaskState::RUNNING, 0),
            task("b", TaskState::SHUTDOWN, TaskState::FAILED, 1),
        ];
        let s = stuck(&service(), &tasks, 2, &[], at(30), BOUND).expect("stuck");
        assert_eq!(s.running, 1);
        assert_eq!(s.last_task.unwrap().0, "b");
        // The forced update moved UpdatedAt: quiet again only after the bound.
        let mut svc = service();
        svc.updated_at = Some(at(30).to_rfc3339());
        assert_eq!(stuck(&svc, &tasks, 2, &[], at(40), BOUND), None);
        assert!(stuck(&svc, &tasks, 2, &[], at(51), BOUND).is_some());
    }

    #[test]
    fn a_service_without_tasks_counts_from_its_update_time() {
        assert_eq!(stuck(&service(), &[], 1, &[], at(10), BOUND), None);
        let s = stuck(&service(), &[], 1, &[], at(21), BOUND).expect("stuck");
        assert_eq!(s.last_task, None);
    }

    #[test]
    fn a_pending_task_swarm_left_although_a_node_can_take_it_is_stuck() {
        use crate::reconcilers::autoscaler::model::testing::node;
        use bollard::models::{ResourceObject, TaskSpec, TaskSpecPlacement, TaskSpecResources};
        let pending = Task {
            id: Some("p".into()),
            desired_state: Some(TaskState::RUNNING),
            spec: Some(TaskSpec {
                resources: Some(TaskSpecResources {
                    reservations: Some(ResourceObject {
                        memory_bytes: Some(128 << 20),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                placement: Some(TaskSpecPlacement {
                    constraints: Some(vec!["node.labels.pool==a".into()]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(TaskStatus {
                state: Some(TaskState::PENDING),
                timestamp: Some(at(0).to_rfc3339()),
                err: Some("no suitable node (1 node not available for new tasks)".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut svc = service();
        svc.update_status = Some(ServiceUpdateStatus {
            state: Some(ServiceUpdateStatusStateEnum::UPDATING),
            ..Default::default()
        });
        let tasks = std::slice::from_ref(&pending);
        let labelled = |mut n: SimNode, pool: &str| {
            n.attributes.labels.insert("pool".into(), pool.into());
            n
        };
        let roomy = labelled(node("n1", "p", (2048, 1000), (256, 0)), "a");
        let full = labelled(node("n2", "p", (2048, 1000), (2000, 0)), "a");
        let elsewhere = labelled(node("n3", "p", (2048, 1000), (0, 0)), "b");
        // No node can take it (none, full, constraints): waiting for capacity, not stuck.
        for nodes in [vec![], vec![full.clone()], vec![elsewhere.clone()]] {
            assert_eq!(stuck(&svc, tasks, 1, &nodes, at(600), BOUND), None);
        }
        // One can: stuck once pending for the bound (even mid-update).
        let nodes = [full, elsewhere, roomy];
        assert_eq!(stuck(&svc, tasks, 1, &nodes, at(19), BOUND), None);
        let s = stuck(&svc, tasks, 1, &nodes, at(21), BOUND).expect("stuck");
        assert!(s.forgotten);
        let m = s.message("lambda-x");
        assert!(
            m.contains("task p pending for 21s") && m.contains("no suitable node"),
            "{m}"
        );
        // Re-kicked (UpdatedAt moved) with the old task still pending: not again before the
        // bound passed since.
        let mut kicked = svc.clone();
        kicked.updated_at = Some(at(21).to_rfc3339());
        for t in [22, 30, 40] {
            assert_eq!(stuck(&kicked, tasks, 1, &nodes, at(t), BOUND), None, "{t}");
        }
        assert!(stuck(&kicked, tasks, 1, &nodes, at(41), BOUND).is_some_and(|s| s.forgotten));
        // A placed task is Swarm's business again.
        let mut placed = pending.clone();
        placed.node_id = Some("n1".into());
        assert_eq!(
            stuck(
                &svc,
                std::slice::from_ref(&placed),
                1,
                &nodes,
                at(600),
                BOUND
            ),
            None
        );
    }
}
