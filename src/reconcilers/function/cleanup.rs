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

/// Removes the function's configs other than `keep` (old code versions). A config a service
/// still references (e.g. for rollback) is refused by Swarm and kept.
pub(super) async fn remove_old_configs(ctx: &Context, f: &Function, keep: &str) {
    let ns = f.metadata.namespace();
    let filter = [
        (labels::MANAGED, "true"),
        (labels::INSTANCE, ctx.cfg.instance.as_str()),
        (labels::NAMESPACE, ns),
        (labels::NAME, f.metadata.name.as_str()),
    ];
    let configs = match ctx.cfg.swarm.list_configs(&filter).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(function = %f.key(), error = %e, "listing old configs");
            return;
        }
    };
    for c in configs {
        let Some(id) = c.id else { continue };
        if id == keep {
            continue;
        }
        match ctx.cfg.swarm.remove_config(&id).await {
            Ok(()) => tracing::info!(function = %f.key(), config = %id, "removed old code config"),
            Err(e) if e.is_conflict() => {}
            Err(e) => tracing::warn!(function = %f.key(), error = %e, "removing old config"),
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
