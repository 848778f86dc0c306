//! The orphan sweep of node servers: a server tagged with this platform instance whose owning
//! `Node` no longer exists (removed behind the controller's back, e.g. `etcdctl del`) is deleted.
//! Snapshot builders (`lambda:kind` SnapshotImage) belong to the snapshot controller's sweep.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::api::ObjectKey;
use crate::openstack::ServerFilter;
use crate::runtime::periodic;

use super::super::cluster::{ServerOwner, TAG_MANAGED, instance_tag};
use super::{Context, KIND};

/// Sweeps every `every` until `stop`, once the node cache is filled.
pub async fn run(ctx: Arc<Context>, every: Duration, stop: CancellationToken) {
    let ready = ctx.nodes.clone();
    periodic::every(ready.wait_ready(), every, stop, || async {
        match sweep_once(&ctx).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "swept orphaned node servers"),
            Err(e) => tracing::warn!(error = %e, "node server sweep"),
        }
    })
    .await;
}

/// One pass; returns how many servers it deleted.
pub async fn sweep_once(ctx: &Context) -> Result<usize, crate::openstack::Error> {
    let compute = ctx.cluster.cloud.compute();
    let servers = compute
        .list_servers(&ServerFilter {
            tags: vec![TAG_MANAGED.to_string(), instance_tag(&ctx.cluster.instance)],
            ..Default::default()
        })
        .await?;
    let mut deleted = 0;
    for s in servers {
        let Some(owner) = ServerOwner::of(&s) else {
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
        tracing::info!(server = %s.id, name = %s.name, node = %key, uid = %owner.uid,
            "deleting a server whose Node is gone");
        match compute.delete_server(&s.id).await {
            Ok(()) => deleted += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}
