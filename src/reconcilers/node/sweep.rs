//! The orphan sweep of node servers: a server tagged with this platform instance whose owning
//! `Node` no longer exists (removed behind the controller's back, e.g. `etcdctl del`) is deleted,
//! and once it is gone, the Swarm node its engine left ([`leftovers`]).
//! Snapshot builders (`lambda:kind` SnapshotImage) belong to the snapshot controller's sweep.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::api::ObjectKey;
use crate::openstack::ServerFilter;
use crate::runtime::periodic;
use crate::swarm::labels::Owner;

use super::super::cluster::{ServerOwner, TAG_MANAGED, instance_tag};
use super::{Context, KIND, leftovers};

/// How long a sweep waits for the servers it deleted to be gone (then their Swarm nodes go).
const SERVER_GONE_WAIT: Duration = Duration::from_secs(60);

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
    let mut deleted = Vec::new();
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
        if let Err(e) = leftovers::adopt(&ctx.cluster.swarm, &s.name, &Owner::from(&owner)).await {
            // Its Swarm node is still removed below once the server is gone.
            tracing::warn!(server = %s.id, error = %e, "labelling the Swarm node of an orphaned server");
        }
        match compute.delete_server(&s.id).await {
            Ok(()) => deleted.push((s, owner)),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    // Once a server is gone its engine cannot join any more: its Swarm node (unlabelled when
    // the Node went before membership saw it) goes too. The next pass no longer sees the
    // server, so this waits here (bounded).
    let gone = deleted
        .iter()
        .map(|(s, _)| compute.wait_for_server_gone(&s.id, SERVER_GONE_WAIT));
    let waited = futures::future::join_all(gone).await;
    for ((s, owner), w) in deleted.iter().zip(waited) {
        if let Err(e) = w {
            tracing::warn!(server = %s.id, error = %e, "deleted orphaned server not gone yet");
            continue;
        }
        // A Node of the same name made since (by hand) may have a server of that name too.
        if ctx
            .nodes
            .get(&ObjectKey::new(&owner.namespace, &owner.name))
            .is_some()
        {
            continue;
        }
        match leftovers::remove(&ctx.cluster.swarm, &s.name, &owner.uid).await {
            Ok(ids) if !ids.is_empty() => {
                tracing::info!(server = %s.id, swarm_nodes = ?ids, "removed the Swarm node(s) of an orphaned server")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(server = %s.id, error = %e, "removing the Swarm node of an orphaned server")
            }
        }
    }
    Ok(deleted.len())
}
