//! A deleted Node's way out of the Swarm: drain, a bounded wait for its tasks to move, removal.

use bollard::models::{NodeSpecAvailabilityEnum, NodeState, TaskState};
use chrono::Utc;

use crate::api::{ConditionStatus, NodeSpec, Object};
use crate::runtime::conditions::set_condition;
use crate::runtime::{Action, EventType};
use crate::swarm::TaskFilter;

use super::super::node::JOINED;
use super::{Context, MembershipError, availability, matching, remove_stale};

/// Task states after which a task holds nothing on its node any more.
fn finished(s: Option<TaskState>) -> bool {
    matches!(
        s,
        Some(
            TaskState::COMPLETE
                | TaskState::SHUTDOWN
                | TaskState::FAILED
                | TaskState::REJECTED
                | TaskState::ORPHANED
                | TaskState::REMOVE
        )
    )
}

pub(super) async fn cleanup(
    n: &Object<NodeSpec>,
    ctx: &Context,
) -> Result<Action, MembershipError> {
    let all = ctx
        .cluster
        .swarm
        .list_nodes()
        .await
        .map_err(Context::swarm_err(n, "listing Swarm nodes"))?;
    let m = matching::find(n, &all);
    remove_stale(n, ctx, &m.stale).await?;
    let Some(sn) = m.node else {
        return Ok(Action::await_change());
    };
    let id = sn.id.clone().unwrap_or_default();
    let swarm = &ctx.cluster.swarm;
    if availability(sn) != Some(NodeSpecAvailabilityEnum::DRAIN) {
        swarm
            .set_availability(&id, NodeSpecAvailabilityEnum::DRAIN)
            .await
            .map_err(Context::swarm_err(n, "draining the Swarm node"))?;
        ctx.recorder
            .emit(
                n,
                EventType::Normal,
                "Draining",
                &format!("draining Swarm node {id}"),
            )
            .await;
        let generation = n.generation();
        ctx.write(n, |s| {
            s.swarm_availability = Some("drain".into());
            set_condition(
                &mut s.conditions,
                JOINED,
                ConditionStatus::False,
                "Draining",
                &format!("Swarm node {id} is draining"),
                Some(generation),
            );
        })
        .await?;
    }
    let down = sn.status.as_ref().and_then(|s| s.state) != Some(NodeState::READY);
    let tasks = swarm
        .list_tasks(&TaskFilter {
            node: Some(id.clone()),
            ..Default::default()
        })
        .await
        .map_err(Context::swarm_err(n, "listing the node's tasks"))?;
    let busy = tasks
        .iter()
        .filter(|t| !finished(t.status.as_ref().and_then(|s| s.state)))
        .count();
    let since = n.metadata.deletion_timestamp.unwrap_or_else(Utc::now);
    let waited = (Utc::now() - since).to_std().unwrap_or_default();
    let timed_out = waited > ctx.cluster.timings.drain_timeout;
    if busy > 0 && !down && !timed_out {
        return Ok(Action::requeue(ctx.cluster.timings.poll));
    }
    if busy > 0 && timed_out {
        let msg = format!(
            "{busy} task(s) still on Swarm node {id} after {}s; removing it anyway",
            waited.as_secs()
        );
        ctx.recorder
            .emit(n, EventType::Warning, "DrainTimeout", &msg)
            .await;
    }
    swarm
        .remove_node(&id, true)
        .await
        .map_err(Context::swarm_err(n, "removing the Swarm node"))?;
    ctx.recorder
        .emit(
            n,
            EventType::Normal,
            "LeftSwarm",
            &format!("Swarm node {id} removed"),
        )
        .await;
    Ok(Action::await_change())
}
