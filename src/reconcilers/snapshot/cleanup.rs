//! Removal of what a build leaves: builder servers (found by the object's owner tag), images
//! this object no longer uses, build records; and everything on deletion (the finalizer's
//! cleanup).

use std::time::Duration;

use crate::api::{Resource, SnapshotImage, SnapshotImageSpec};
use crate::openstack::{Error as CloudError, Server, ServerFilter, ServerStatus};
use crate::reconcilers::cluster::{META_UID, ServerOwner, owner_tag};
use crate::runtime::{Action, EventType};

use super::build::write_status;
use super::create::image_name;
use super::{Context, SnapshotError, record};

/// The live builder servers of the object incarnation `uid` (this platform instance's only).
pub async fn builders(ctx: &Context, uid: &str) -> Result<Vec<Server>, CloudError> {
    let filter = ServerFilter {
        tags: vec![owner_tag(uid)],
        ..Default::default()
    };
    let servers = ctx.cluster.cloud.compute().list_servers(&filter).await?;
    Ok(servers
        .into_iter()
        .filter(|s| {
            ServerOwner::of(s).is_some_and(|o| {
                o.instance == ctx.cluster.instance
                    && o.kind == SnapshotImageSpec::KIND
                    && o.uid == uid
            })
        })
        .filter(|s| !matches!(s.status, ServerStatus::Deleted | ServerStatus::SoftDeleted))
        .collect())
}

/// Deletes servers (those already being deleted are left to Nova).
pub async fn delete_servers(
    ctx: &Context,
    si: &SnapshotImage,
    servers: &[Server],
) -> Result<(), SnapshotError> {
    for s in servers {
        if s.task_state.as_deref() == Some("deleting") {
            continue;
        }
        match ctx.cluster.cloud.compute().delete_server(&s.id).await {
            Ok(()) => {
                tracing::info!(snapshot = %si.key(), server = %s.id, "deleted builder server");
                let msg = format!("deleted builder server {} ({})", s.id, s.name);
                ctx.recorder
                    .emit(si, EventType::Normal, "BuilderDeleted", &msg)
                    .await;
            }
            Err(e) if e.is_not_found() => {}
            // A task (e.g. the snapshot) still runs: the next reconcile tries again.
            Err(CloudError::Conflict(c)) => {
                tracing::info!(snapshot = %si.key(), server = %s.id, "builder cannot be deleted yet: {}", c.message);
            }
            Err(e) => return Err(ctx.cloud_err(si)(e)),
        }
    }
    Ok(())
}

/// Deletes an image; true when it is gone.
async fn delete_image(ctx: &Context, si: &SnapshotImage, id: &str) -> Result<bool, SnapshotError> {
    match ctx.cluster.cloud.image().delete_image(id).await {
        Ok(()) => {
            tracing::info!(snapshot = %si.key(), image = %id, "deleted image");
            Ok(true)
        }
        Err(e) if e.is_not_found() => Ok(true),
        Err(CloudError::Conflict(c)) => {
            tracing::warn!(snapshot = %si.key(), image = %id, "image cannot be deleted yet: {}", c.message);
            Ok(false)
        }
        Err(e) => Err(ctx.cloud_err(si)(e)),
    }
}

/// After a build ended (or while nothing builds): deletes `servers`, the object's build
/// records and its retired images (dropping them from the status). True when nothing was
/// left to delete, i.e. the object is tidy.
pub async fn tidy(
    ctx: &Context,
    si: &SnapshotImage,
    servers: &[Server],
) -> Result<bool, SnapshotError> {
    let uid = si.metadata.uid.clone().unwrap_or_default();
    delete_servers(ctx, si, servers).await?;
    record::delete_for_uid(&ctx.store, &uid).await?;
    let st = si.status.clone().unwrap_or_default();
    let mut gone = Vec::new();
    for id in &st.retired_image_ids {
        if st.image_id.as_deref() == Some(id.as_str()) || delete_image(ctx, si, id).await? {
            gone.push(id.clone());
        }
    }
    if !gone.is_empty() {
        let msg = format!("deleted image(s) no longer used: {}", gone.join(", "));
        write_status(ctx, si, |s| {
            s.retired_image_ids.retain(|i| !gone.contains(i))
        })
        .await?;
        ctx.recorder
            .emit(si, EventType::Normal, "ImagesDeleted", &msg)
            .await;
    }
    Ok(servers.is_empty() && gone.len() == st.retired_image_ids.len())
}

/// The finalizer's cleanup: builders, every image of the object, its build records. Done
/// (the finalizer goes) once Nova lists no builder of it any more.
pub(super) async fn cleanup(si: &SnapshotImage, ctx: &Context) -> Result<Action, SnapshotError> {
    let uid = si.metadata.uid.clone().unwrap_or_default();
    let err = ctx.cloud_err(si);
    let servers = builders(ctx, &uid).await.map_err(&err)?;
    delete_servers(ctx, si, &servers).await?;
    record::delete_for_uid(&ctx.store, &uid).await?;
    let st = si.status.clone().unwrap_or_default();
    let mut ids: Vec<String> = st
        .image_id
        .iter()
        .chain(st.pending_image_id.iter())
        .chain(st.retired_image_ids.iter())
        .cloned()
        .collect();
    // An image createImage made just before the controller stopped, not in the status yet.
    let generation = st.observed_generation.unwrap_or_else(|| si.generation());
    let name = image_name(si.metadata.namespace(), &si.metadata.name, generation);
    for i in ctx
        .cluster
        .cloud
        .image()
        .list_images_by_name(&name)
        .await
        .map_err(&err)?
    {
        let owned = i.properties.get(META_UID).and_then(|v| v.as_str()) == Some(uid.as_str());
        if owned && !ids.contains(&i.id) {
            ids.push(i.id);
        }
    }
    let mut left = 0;
    for id in &ids {
        if !delete_image(ctx, si, id).await? {
            left += 1;
        }
    }
    if !ids.is_empty() {
        ctx.recorder
            .emit(
                si,
                EventType::Normal,
                "ImagesDeleted",
                &format!("deleted image(s) {}", ids.join(", ")),
            )
            .await;
    }
    if servers.is_empty() && left == 0 {
        tracing::info!(snapshot = %si.key(), "cleaned up");
        Ok(Action::await_change())
    } else {
        // Wait for Nova to finish the deletions (the finalizer stays until then).
        Ok(Action::requeue(
            ctx.cluster.timings.poll.max(Duration::from_secs(1)),
        ))
    }
}
