//! The orphan sweep of Swarm nodes: a worker labelled as this platform instance's `Node` whose
//! Node is gone (removed behind the controller's back) is drained and removed.

use std::sync::Arc;
use std::time::Duration;

use bollard::models::{NodeSpecAvailabilityEnum, NodeSpecRoleEnum};
use tokio_util::sync::CancellationToken;

use crate::api::ObjectKey;
use crate::runtime::periodic;
use crate::swarm::SwarmError;
use crate::swarm::labels::Owner;

use super::super::node::KIND;
use super::Context;

/// Sweeps every `every` until `stop`, once the node cache is filled.
pub async fn run(ctx: Arc<Context>, every: Duration, stop: CancellationToken) {
    let ready = ctx.nodes.clone();
    periodic::every(ready.wait_ready(), every, stop, || async {
        match sweep_once(&ctx).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "swept orphaned Swarm nodes"),
            Err(e) => tracing::warn!(error = %e, "Swarm node sweep"),
        }
    })
    .await;
}

/// One pass; returns how many Swarm nodes it removed.
pub async fn sweep_once(ctx: &Context) -> Result<usize, SwarmError> {
    let swarm = &ctx.cluster.swarm;
    let mut removed = 0;
    for sn in swarm.list_nodes().await? {
        let spec = sn.spec.clone().unwrap_or_default();
        if spec.role == Some(NodeSpecRoleEnum::MANAGER) {
            continue;
        }
        let Some(owner) = spec.labels.as_ref().and_then(Owner::from_labels) else {
            continue;
        };
        if owner.kind != KIND
            || owner.instance != ctx.cluster.instance
            || ctx
                .namespace
                .as_deref()
                .is_some_and(|ns| ns != owner.namespace)
        {
            continue;
        }
        let key = ObjectKey::new(&owner.namespace, &owner.name);
        if periodic::still_exists(&ctx.store, &ctx.nodes, &key, &owner.uid).await {
            continue;
        }
        let id = sn.id.clone().unwrap_or_default();
        tracing::info!(swarm_node = %id, node = %key, "removing a Swarm node whose Node is gone");
        if spec.availability != Some(NodeSpecAvailabilityEnum::DRAIN) {
            swarm
                .set_availability(&id, NodeSpecAvailabilityEnum::DRAIN)
                .await?;
        }
        swarm.remove_node(&id, true).await?;
        removed += 1;
    }
    Ok(removed)
}
