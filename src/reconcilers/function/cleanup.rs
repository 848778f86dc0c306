//! Removal of a function's Swarm objects: old code configs after a rollout, and everything on
//! deletion (the finalizer's cleanup).

use std::collections::HashSet;
use std::time::Duration;

use bollard::models::TaskState;
use chrono::Utc;

use crate::api::Function;
use crate::runtime::{Action, EventType};
use crate::swarm::{TaskFilter, labels, task_state};

use super::spec::service_name;
use super::{Context, FunctionError, TASK_DRAIN_LIMIT, owned_by_us};

/// Removes the function's configs and secrets other than those it runs now (`keep`: old code
/// versions, old versions of platform secrets). One a service still references (e.g. for
/// rollback) is refused by Swarm and kept for a later pass.
pub(super) async fn remove_old_objects(ctx: &Context, f: &Function, keep: &[&str]) {
    let ns = f.metadata.namespace();
    let filter = [
        (labels::MANAGED, "true"),
        (labels::INSTANCE, ctx.cfg.instance.as_str()),
        (labels::NAMESPACE, ns),
        (labels::NAME, f.metadata.name.as_str()),
    ];
    let swarm = &ctx.cfg.swarm;
    let configs = swarm.list_configs(&filter).await.map(|c| {
        c.into_iter()
            .filter_map(|c| c.id)
            .map(|id| (id, "config"))
            .collect::<Vec<_>>()
    });
    let secrets = swarm.list_secrets(&filter).await.map(|c| {
        c.into_iter()
            .filter_map(|c| c.id)
            .map(|id| (id, "secret"))
            .collect::<Vec<_>>()
    });
    let (configs, secrets) = match (configs, secrets) {
        (Ok(c), Ok(s)) => (c, s),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(function = %f.key(), error = %e, "listing old configs and secrets");
            return;
        }
    };
    for (id, what) in configs.into_iter().chain(secrets) {
        if keep.contains(&id.as_str()) {
            continue;
        }
        let removed = if what == "config" {
            swarm.remove_config(&id).await
        } else {
            swarm.remove_secret(&id).await
        };
        match removed {
            Ok(()) => tracing::info!(function = %f.key(), id = %id, "removed old {what}"),
            Err(e) if e.is_conflict() => {}
            Err(e) => tracing::warn!(function = %f.key(), error = %e, "removing old {what}"),
        }
    }
}

pub(super) async fn cleanup(f: &Function, ctx: &Context) -> Result<Action, FunctionError> {
    let swarm = &ctx.cfg.swarm;
    let err = ctx.swarm_err(f);
    let sname = service_name(f.metadata.namespace(), &f.metadata.name);
    let mut service_ids: HashSet<String> = f
        .status
        .as_ref()
        .and_then(|s| s.service_id.clone())
        .into_iter()
        .collect();
    if let Some(svc) = swarm.inspect_service(&sname).await.map_err(&err)?
        && owned_by_us(&svc, f, &ctx.cfg.instance)
    {
        service_ids.extend(svc.id.clone());
        swarm.remove_service(&sname).await.map_err(&err)?;
        tracing::info!(function = %f.key(), service = %sname, "removed service");
        ctx.recorder
            .emit(
                f,
                EventType::Normal,
                "Deleted",
                &format!("removed service {sname}"),
            )
            .await;
    }
    // Tasks outlive their service for the stop grace period; wait (bounded) so the function is
    // gone when its object is.
    let since = f.metadata.deletion_timestamp.unwrap_or_else(Utc::now);
    if !service_ids.is_empty() && Utc::now() - since < TASK_DRAIN_LIMIT {
        let tasks = swarm
            .list_tasks(&TaskFilter::default())
            .await
            .map_err(&err)?;
        let left = tasks
            .iter()
            .filter(|t| {
                t.service_id
                    .as_ref()
                    .is_some_and(|s| service_ids.contains(s))
                    && t.status
                        .as_ref()
                        .and_then(|s| s.container_status.as_ref())
                        .and_then(|c| c.container_id.as_ref())
                        .is_some()
                    && !matches!(
                        task_state(t),
                        Some(
                            TaskState::SHUTDOWN
                                | TaskState::FAILED
                                | TaskState::COMPLETE
                                | TaskState::REJECTED
                                | TaskState::ORPHANED
                                | TaskState::REMOVE
                        )
                    )
            })
            .count();
        if left > 0 {
            tracing::debug!(function = %f.key(), tasks = left, "waiting for tasks to stop");
            return Ok(Action::requeue(Duration::from_millis(500)));
        }
    }
    let uid = f.metadata.uid.clone().unwrap_or_default();
    let filter = [
        (labels::MANAGED, "true"),
        (labels::INSTANCE, ctx.cfg.instance.as_str()),
        (labels::NAMESPACE, f.metadata.namespace()),
        (labels::NAME, f.metadata.name.as_str()),
        (labels::UID, uid.as_str()),
    ];
    for c in swarm.list_configs(&filter).await.map_err(&err)? {
        if let Some(id) = c.id {
            swarm.remove_config(&id).await.map_err(&err)?;
        }
    }
    for s in swarm.list_secrets(&filter).await.map_err(&err)? {
        if let Some(id) = s.id {
            swarm.remove_secret(&id).await.map_err(&err)?;
        }
    }
    ctx.attempted.forget(&f.key());
    Ok(Action::await_change())
}
