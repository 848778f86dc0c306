//! Background work of the function controller: the orphan sweep and the Docker event trigger.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::api::{FunctionSpec, ObjectKey, Resource};
use crate::runtime::periodic;
use crate::swarm::labels::{self, Owner};
use crate::swarm::{EventKind, SwarmError, SwarmEvent};

use super::Context;
use super::spec::service_name;

/// What one sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub services: usize,
    pub configs: usize,
    pub secrets: usize,
}

/// True when the Function `owner` names (same incarnation) still exists. Asks etcd when the
/// cache does not have it (the cache may lag); an unreadable object or an unreachable etcd
/// counts as alive: deleting a running function's service by mistake is worse than a late sweep.
async fn alive(ctx: &Context, owner: &Owner) -> bool {
    let key = ObjectKey::new(&owner.namespace, &owner.name);
    if ctx
        .functions
        .get(&key)
        .is_some_and(|f| f.metadata.uid.as_deref() == Some(owner.uid.as_str()))
    {
        return true;
    }
    match ctx
        .store
        .get::<FunctionSpec>(&owner.namespace, &owner.name)
        .await
    {
        Ok(f) => f.metadata.uid.as_deref() == Some(owner.uid.as_str()),
        Err(e) if e.is_not_found() => false,
        Err(e) => {
            tracing::warn!(function = %key, error = %e, "sweep: cannot tell whether the function exists; keeping its objects");
            true
        }
    }
}

/// The owner of an object, if it is a Function of this instance inside the swept namespace.
fn ours(ctx: &Context, l: Option<&std::collections::HashMap<String, String>>) -> Option<Owner> {
    let o = Owner::from_labels(l?)?;
    let in_scope = ctx.namespace.as_deref().is_none_or(|ns| ns == o.namespace);
    (o.instance == ctx.cfg.instance && o.kind == FunctionSpec::KIND && in_scope).then_some(o)
}

/// Removes services, configs and secrets labelled as this instance's whose Function is gone.
pub async fn sweep(ctx: &Context) -> Result<Swept, SwarmError> {
    let swarm = &ctx.cfg.swarm;
    let filter = [
        (labels::MANAGED, "true"),
        (labels::INSTANCE, ctx.cfg.instance.as_str()),
        (labels::KIND, FunctionSpec::KIND),
    ];
    let mut out = Swept::default();
    for svc in swarm.list_services(&filter).await? {
        let spec = svc.spec.as_ref();
        let (Some(o), Some(name)) = (
            ours(ctx, spec.and_then(|s| s.labels.as_ref())),
            spec.and_then(|s| s.name.clone()),
        ) else {
            continue;
        };
        if !alive(ctx, &o).await {
            tracing::info!(service = %name, owner = %format!("{}/{}", o.namespace, o.name), "sweep: removing orphaned service");
            swarm.remove_service(&name).await?;
            out.services += 1;
        }
    }
    for c in swarm.list_configs(&filter).await? {
        let (Some(o), Some(id)) = (
            ours(ctx, c.spec.as_ref().and_then(|s| s.labels.as_ref())),
            c.id,
        ) else {
            continue;
        };
        if !alive(ctx, &o).await {
            // Still used by a service that is going away: the next sweep gets it.
            match swarm.remove_config(&id).await {
                Ok(()) => out.configs += 1,
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
    }
    for s in swarm.list_secrets(&filter).await? {
        let (Some(o), Some(id)) = (
            ours(ctx, s.spec.as_ref().and_then(|s| s.labels.as_ref())),
            s.id,
        ) else {
            continue;
        };
        if !alive(ctx, &o).await {
            match swarm.remove_secret(&id).await {
                Ok(()) => out.secrets += 1,
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(out)
}

/// Sweeps once the function cache is ready, then every `sweep_every`, until `stop`.
pub async fn sweep_periodically(ctx: Arc<Context>, stop: CancellationToken) {
    let functions = ctx.functions.clone();
    let every = ctx.cfg.sweep_every;
    periodic::every(functions.wait_ready(), every, stop, || async {
        match sweep(&ctx).await {
            Ok(s) if s != Swept::default() => tracing::info!(?s, "sweep removed orphans"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweep failed"),
        }
    })
    .await;
}

/// Container actions that change a task's state (exec_* of health checks are not).
const CONTAINER_ACTIONS: &[&str] = &[
    "create",
    "start",
    "die",
    "kill",
    "stop",
    "oom",
    "destroy",
    "health_status",
];

/// The functions an event is about.
pub fn keys_for_event(ctx: &Context, ev: &SwarmEvent) -> Vec<ObjectKey> {
    match ev.kind {
        EventKind::Container => {
            if !CONTAINER_ACTIONS.iter().any(|a| ev.action.starts_with(a)) {
                return Vec::new();
            }
            let o = Owner::from_labels(&ev.attributes);
            o.filter(|o| o.instance == ctx.cfg.instance && o.kind == FunctionSpec::KIND)
                .map(|o| vec![ObjectKey::new(&o.namespace, &o.name)])
                .unwrap_or_default()
        }
        EventKind::Service => {
            let Some(name) = ev.attributes.get("name") else {
                return Vec::new();
            };
            ctx.functions
                .list()
                .iter()
                .filter(|f| service_name(f.metadata.namespace(), &f.metadata.name) == *name)
                .map(|f| f.key())
                .collect()
        }
        // A node going down or coming back moves tasks of any function.
        EventKind::Node => ctx.functions.keys(),
        _ => Vec::new(),
    }
}

/// Follows Docker's event stream and triggers the functions each event is about; after a
/// reconnect every function, since events were missed.
pub async fn trigger_on_swarm_events(
    ctx: Arc<Context>,
    tx: UnboundedSender<ObjectKey>,
    stop: CancellationToken,
) {
    let swarm = ctx.cfg.swarm.clone();
    swarm
        .follow_events(
            stop,
            |ev| {
                for k in keys_for_event(&ctx, ev) {
                    let _ = tx.send(k);
                }
            },
            || {
                for k in ctx.functions.keys() {
                    let _ = tx.send(k);
                }
            },
        )
        .await;
}
