//! The orphan sweep: builder servers and build records whose `SnapshotImage` is gone (deleted
//! behind the controller's back, e.g. `etcdctl del`, or recreated with another uid).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::api::{ObjectKey, Resource, SnapshotImageSpec};
use crate::openstack::ServerFilter;
use crate::reconcilers::cluster::{ServerOwner, TAG_MANAGED, instance_tag};
use crate::runtime::periodic;

use super::{Context, SnapshotError, record};

/// What one sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub servers: usize,
    pub records: usize,
}

/// True when the SnapshotImage `namespace/name` with `uid` still exists (see
/// [`periodic::still_exists`]: when in doubt, its builder is kept).
async fn alive(ctx: &Context, namespace: &str, name: &str, uid: &str) -> bool {
    periodic::still_exists(
        &ctx.store,
        &ctx.images,
        &ObjectKey::new(namespace, name),
        uid,
    )
    .await
}

fn in_scope(ctx: &Context, namespace: &str) -> bool {
    ctx.namespace.as_deref().is_none_or(|ns| ns == namespace)
}

/// Deletes this instance's builder servers and build records whose object is gone.
pub async fn sweep(ctx: &Context) -> Result<Swept, SnapshotError> {
    let mut out = Swept::default();
    let filter = ServerFilter {
        tags: vec![TAG_MANAGED.into(), instance_tag(&ctx.cluster.instance)],
        ..Default::default()
    };
    let sweep_err = |source| SnapshotError::Sweep {
        source: Box::new(source),
    };
    let servers = ctx
        .cluster
        .cloud
        .compute()
        .list_servers(&filter)
        .await
        .map_err(sweep_err)?;
    for s in servers {
        let Some(o) = ServerOwner::of(&s) else {
            continue;
        };
        if o.instance != ctx.cluster.instance
            || o.kind != SnapshotImageSpec::KIND
            || !in_scope(ctx, &o.namespace)
            || s.task_state.as_deref() == Some("deleting")
        {
            continue;
        }
        if !alive(ctx, &o.namespace, &o.name, &o.uid).await {
            tracing::info!(server = %s.id, owner = %format!("{}/{}", o.namespace, o.name), "sweep: deleting orphaned builder server");
            match ctx.cluster.cloud.compute().delete_server(&s.id).await {
                Ok(()) => out.servers += 1,
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(sweep_err(e)),
            }
        }
    }
    let (records, unreadable) = record::list(&ctx.store).await?;
    for s in records {
        let r = &s.record;
        if in_scope(ctx, &r.namespace) && !alive(ctx, &r.namespace, &r.name, &r.uid).await {
            record::delete(&ctx.store, &s.key).await?;
            out.records += 1;
        }
    }
    // An unreadable record unlocks nothing; its namespace is unknown, so only an unscoped
    // controller removes it.
    if ctx.namespace.is_none() {
        for key in unreadable {
            record::delete(&ctx.store, &key).await?;
            out.records += 1;
        }
    }
    Ok(out)
}

/// Sweeps once the cache is ready, then every `sweep_every`, until `stop`.
pub async fn sweep_periodically(ctx: Arc<Context>, stop: CancellationToken) {
    let images = ctx.images.clone();
    let every = ctx.cluster.timings.sweep_every;
    periodic::every(images.wait_ready(), every, stop, || async {
        match sweep(&ctx).await {
            Ok(s) if s != Swept::default() => tracing::info!(?s, "snapshot sweep removed orphans"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "snapshot sweep failed"),
        }
    })
    .await;
}
