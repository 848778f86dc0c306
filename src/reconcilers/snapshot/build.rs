//! One reconcile of a live `SnapshotImage`: observe (status, builders by owner tag, the build
//! record, the pending image), [`decide`], and carry the step out.

use std::time::Duration;

use chrono::Utc;

use crate::api::{ConditionStatus, SnapshotImage, SnapshotImageSpec, SnapshotImageStatus};
use crate::openstack::{Image, Server};
use crate::runtime::conditions::set_condition;
use crate::runtime::status::patch_status;
use crate::runtime::{Action, EventType};
use crate::store::StoreError;

use super::cleanup::{builders, delete_servers, tidy};
use super::create::{build_timeout, create_builder, image_name, runtime_images_of, snapshot};
use super::decide::{ImageSeen, Observed, Step, decide, phase, reason};
use super::record;
use super::{Context, META_GENERATION, READY, SnapshotError};

/// Retry delay of conditions a person has to fix (cloud names, quota, configuration).
pub(super) const FIX_RETRY: Duration = Duration::from_secs(30);

/// The generation a builder builds (its metadata).
pub fn generation_of(s: &Server) -> Option<i64> {
    s.metadata.get(META_GENERATION)?.parse().ok()
}

pub(super) fn set_ready(
    s: &mut SnapshotImageStatus,
    status: ConditionStatus,
    why: &str,
    msg: &str,
    g: i64,
) {
    set_condition(&mut s.conditions, READY, status, why, msg, Some(g));
}

/// Moves an image this object no longer uses to the deletion list.
pub fn retire(s: &mut SnapshotImageStatus, id: String) {
    if s.image_id.as_deref() != Some(id.as_str()) && !s.retired_image_ids.contains(&id) {
        s.retired_image_ids.push(id);
    }
}

fn ready_reason(si: &SnapshotImage) -> Option<String> {
    si.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| c.reason.clone())
}

/// Writes the status computed by `change` (nothing when unchanged).
pub async fn write_status(
    ctx: &Context,
    si: &SnapshotImage,
    change: impl Fn(&mut SnapshotImageStatus),
) -> Result<(), SnapshotError> {
    match patch_status(&ctx.store, si, change).await {
        Ok(_) => Ok(()),
        // Deleted or recreated meanwhile: the next reconcile sees the new state.
        Err(e) if e.is_not_found() => Ok(()),
        Err(source) => Err(SnapshotError::Status {
            object: si.key(),
            source: Box::new(source),
        }),
    }
}

/// A build that cannot start yet: phase Pending with `why`, retried after `retry`.
pub(super) async fn pending(
    ctx: &Context,
    si: &SnapshotImage,
    why: &'static str,
    msg: String,
    retry: Duration,
) -> Result<Action, SnapshotError> {
    let g = si.generation();
    write_status(ctx, si, |s| {
        s.phase = Some(phase::PENDING.into());
        s.last_error = Some(msg.clone());
        set_ready(s, ConditionStatus::False, why, &msg, g);
    })
    .await?;
    if ready_reason(si).as_deref() != Some(why) {
        tracing::warn!(snapshot = %si.key(), "{msg}");
        ctx.recorder.emit(si, EventType::Warning, why, &msg).await;
    }
    Ok(Action::requeue(retry))
}

/// A spec that does not validate: nothing can be built; the running build (if any) stops.
async fn invalid_spec(
    si: &SnapshotImage,
    ctx: &Context,
    msg: &str,
    servers: Vec<Server>,
) -> Result<Action, SnapshotError> {
    let g = si.generation();
    write_status(ctx, si, |s| {
        s.observed_generation = Some(g);
        s.phase = Some(phase::FAILED.into());
        s.builder_server_id = None;
        if let Some(p) = s.pending_image_id.take() {
            retire(s, p);
        }
        s.last_error = Some(msg.to_string());
        set_ready(s, ConditionStatus::False, reason::INVALID_SPEC, msg, g);
    })
    .await?;
    if ready_reason(si).as_deref() != Some(reason::INVALID_SPEC) {
        ctx.recorder
            .emit(si, EventType::Warning, reason::INVALID_SPEC, msg)
            .await;
    }
    finish(ctx, si, &servers, false).await
}

/// Converges one live snapshot image (see the module docs of `snapshot`).
pub(super) async fn apply(cached: &SnapshotImage, ctx: &Context) -> Result<Action, SnapshotError> {
    let (ns, name) = (cached.metadata.namespace(), cached.metadata.name.as_str());
    // A fresh read: the cache may not hold this controller's last status write yet.
    let si = match ctx.store.get::<SnapshotImageSpec>(ns, name).await {
        Ok(o) if o.metadata.uid == cached.metadata.uid && !o.is_deleting() => o,
        // Deleted or replaced meanwhile: the change triggers its own reconcile.
        Ok(_) => return Ok(Action::await_change()),
        Err(e) if e.is_not_found() => return Ok(Action::await_change()),
        Err(StoreError::Invalid { message, .. }) => {
            let g = cached.generation();
            write_status(ctx, cached, |s| {
                s.last_error = Some(message.clone());
                set_ready(s, ConditionStatus::False, reason::INVALID_SPEC, &message, g);
            })
            .await?;
            return Ok(Action::await_change());
        }
        Err(source) => {
            return Err(SnapshotError::Read {
                object: cached.key(),
                source: Box::new(source),
            });
        }
    };
    let si = &si;
    let g = si.generation();
    let uid = si.metadata.uid.clone().unwrap_or_default();
    let st = si.status.clone().unwrap_or_default();
    let err = ctx.cloud_err(si);
    let poll = ctx.cluster.timings.poll;

    let servers = builders(ctx, &uid).await.map_err(&err)?;
    if let Err(errors) = si.validate() {
        return invalid_spec(si, ctx, &errors.to_string(), servers).await;
    }
    let current = st.observed_generation == Some(g);
    let live = current
        && !matches!(
            st.phase.as_deref(),
            Some(phase::READY) | Some(phase::FAILED)
        );
    // This generation's builder (the one the status names, else the oldest); all else is stale.
    let (mut mine, mut stale): (Vec<Server>, Vec<Server>) = servers
        .into_iter()
        .partition(|s| live && generation_of(s) == Some(g));
    mine.sort_by_key(|s| {
        (
            Some(s.id.as_str()) != st.builder_server_id.as_deref(),
            s.created.clone(),
        )
    });
    let builder = (!mine.is_empty()).then(|| mine.remove(0));
    stale.append(&mut mine);
    delete_servers(ctx, si, &stale).await?;
    // Deleted servers stay listed until Nova is done: the object is not tidy before then.
    let deleting = !stale.is_empty();

    let record = if live {
        let (all, _) = record::list(&ctx.store).await?;
        record::find(&all, &uid, g)
    } else {
        None
    };
    let mut image: Option<Image> = None;
    let seen = match (&st.pending_image_id, st.phase.as_deref()) {
        (Some(id), Some(phase::SNAPSHOTTING)) if live => {
            match ctx.cluster.cloud.image().get_image(id).await {
                Ok(i) => {
                    let s = i.status;
                    image = Some(i);
                    Some(ImageSeen::Status(s))
                }
                Err(e) if e.is_not_found() => Some(ImageSeen::Missing),
                Err(e) => return Err(err(e)),
            }
        }
        _ => None,
    };
    let step = decide(&Observed {
        generation: g,
        status: &st,
        now: Utc::now(),
        has_endpoint: ctx.cluster.builder_url.is_some(),
        builder: builder.as_ref(),
        record: record.as_ref().map(|r| &r.record),
        image: seen,
    });
    tracing::debug!(snapshot = %si.key(), generation = g, ?step, "snapshot step");
    let builders: Vec<Server> = builder.iter().cloned().collect();
    match step {
        Step::Start => {
            let msg = match &st.image_id {
                Some(id) => format!(
                    "building generation {g}; image {id} stays in use until the new one is ready"
                ),
                None => format!("building generation {g}"),
            };
            write_status(ctx, si, |s| {
                s.observed_generation = Some(g);
                s.phase = Some(phase::PENDING.into());
                if let Some(p) = s.pending_image_id.take() {
                    retire(s, p);
                }
                s.builder_server_id = None;
                s.build_started_at = None;
                s.build_deadline = None;
                s.last_error = None;
                set_ready(s, ConditionStatus::False, reason::BUILDING, &msg, g);
            })
            .await?;
            record::delete_for_uid(&ctx.store, &uid).await?;
            Ok(Action::requeue(Duration::ZERO))
        }
        Step::Settled => finish(ctx, si, &builders, deleting).await,
        Step::NoEndpoint => {
            let msg = "the controller has no builder endpoint (lambda controller --builder-listen ADDR, or --builder-url URL): a builder could neither fetch the runtime images nor phone home".to_string();
            pending(ctx, si, reason::NO_BUILDER_ENDPOINT, msg, FIX_RETRY).await
        }
        Step::CreateBuilder => create_builder(ctx, si, &uid).await,
        Step::Adopt { server_id } => {
            let deadline = Utc::now() + build_timeout(&si.spec, &ctx.cluster.timings);
            let msg = format!("builder server {server_id} is booting");
            write_status(ctx, si, |s| {
                s.phase = Some(phase::BUILDING.into());
                s.builder_server_id = Some(server_id.clone());
                s.build_started_at.get_or_insert_with(Utc::now);
                s.build_deadline.get_or_insert(deadline);
                set_ready(s, ConditionStatus::False, reason::BUILDING, &msg, g);
            })
            .await?;
            Ok(Action::requeue(poll))
        }
        Step::Wait {
            reason: why,
            message,
        } => {
            write_status(ctx, si, |s| {
                set_ready(s, ConditionStatus::False, why, &message, g);
            })
            .await?;
            Ok(Action::requeue(poll))
        }
        Step::CreateImage { server_id } => {
            let images = record.map(|r| r.record.images).unwrap_or_default();
            snapshot(ctx, si, &uid, &server_id, &images).await
        }
        Step::Succeed { image_id } => {
            let mut held = image.as_ref().map(runtime_images_of).unwrap_or_default();
            if held.is_empty() {
                // A cloud that dropped the createImage metadata: the record knows.
                held = record.map(|r| r.record.images).unwrap_or_default();
            }
            let started = st.build_started_at;
            let took = started.map(|t| (Utc::now() - t).num_seconds()).unwrap_or(0);
            let refs: Vec<String> = held.values().cloned().collect();
            let msg = format!(
                "image {image_id} ({}) holds {}; built in {took} s",
                image_name(ns, name, g),
                refs.join(", ")
            );
            write_status(ctx, si, |s| {
                if let Some(old) = s.image_id.replace(image_id.clone())
                    && old != image_id
                {
                    s.retired_image_ids.push(old);
                }
                s.retired_image_ids.retain(|i| *i != image_id);
                s.image_generation = Some(g);
                s.runtime_images = held.clone();
                s.pending_image_id = None;
                s.builder_server_id = None;
                s.phase = Some(phase::READY.into());
                s.last_error = None;
                set_ready(s, ConditionStatus::True, reason::BUILT, &msg, g);
            })
            .await?;
            tracing::info!(snapshot = %si.key(), image = %image_id, seconds = took, "snapshot image built");
            ctx.recorder
                .emit(si, EventType::Normal, reason::BUILT, &msg)
                .await;
            finish(ctx, si, &builders, deleting).await
        }
        Step::Fail {
            reason: why,
            message,
        } => {
            let message = match (&ctx.cluster.builder_url, st.phase.as_deref()) {
                (Some(url), Some(phase::BUILDING)) if why == reason::BUILD_TIMEOUT => format!(
                    "{message}: it must reach {url} (its console log shows the step it got to)"
                ),
                _ => message,
            };
            write_status(ctx, si, |s| {
                s.phase = Some(phase::FAILED.into());
                s.builder_server_id = None;
                if let Some(p) = s.pending_image_id.take() {
                    retire(s, p);
                }
                s.last_error = Some(message.clone());
                set_ready(s, ConditionStatus::False, why, &message, g);
            })
            .await?;
            tracing::warn!(snapshot = %si.key(), reason = why, "snapshot build failed: {message}");
            ctx.recorder
                .emit(si, EventType::Warning, why, &message)
                .await;
            finish(ctx, si, &builders, deleting).await
        }
    }
}

/// After a build ended (and while nothing builds): `servers`, the record and retired images
/// go; reconciled again until that is done (`deleting`: other servers are still going).
async fn finish(
    ctx: &Context,
    si: &SnapshotImage,
    servers: &[Server],
    deleting: bool,
) -> Result<Action, SnapshotError> {
    // `tidy` reads the retired images from the object: take the status just written.
    let fresh = match ctx
        .store
        .get::<SnapshotImageSpec>(si.metadata.namespace(), &si.metadata.name)
        .await
    {
        Ok(o) if o.metadata.uid == si.metadata.uid => o,
        _ => return Ok(Action::requeue(Duration::ZERO)),
    };
    let clean = tidy(ctx, &fresh, servers).await? && !deleting;
    Ok(if clean {
        Action::await_change()
    } else {
        Action::requeue(ctx.cluster.timings.poll.max(Duration::from_secs(2)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retiring_never_retires_the_image_in_use() {
        let mut s = SnapshotImageStatus {
            image_id: Some("a".into()),
            ..Default::default()
        };
        retire(&mut s, "a".into());
        retire(&mut s, "b".into());
        retire(&mut s, "b".into());
        assert_eq!(s.retired_image_ids, vec!["b".to_string()]);
    }
}
