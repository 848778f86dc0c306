//! One reconcile of a live `SnapshotImage`: observe (status, builders by owner tag, the build
//! record, the pending image), [`decide`], and carry the step out.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;

use crate::api::{
    ConditionStatus, Resource, SnapshotImage, SnapshotImageSpec, SnapshotImageStatus,
};
use crate::openstack::{Error as CloudError, Image, NetworkSpec, Server, ServerSpec};
use crate::reconcilers::cluster::{ClusterTimings, server_name};
use crate::reconcilers::function::spec::RuntimeImages;
use crate::runtime::conditions::set_condition;
use crate::runtime::status::patch_status;
use crate::runtime::{Action, EventType};
use crate::store::StoreError;

use super::cleanup::{builders, delete_servers, tidy};
use super::decide::{ImageSeen, Observed, Step, decide, phase, reason};
use super::record::{self, BuildRecord};
use super::userdata::{BuilderScript, valid_image_ref};
use super::{BUILDER_PREFIX, Context, META_GENERATION, META_RUNTIME_PREFIX, READY, SnapshotError};

/// How much longer than its build a record lives before etcd expires it.
const RECORD_GRACE: Duration = Duration::from_secs(600);
/// Retry delay of conditions a person has to fix (cloud names, quota, configuration).
const FIX_RETRY: Duration = Duration::from_secs(30);

/// The build timeout in force: the spec's, capped by the controller's test knob.
pub fn build_timeout(spec: &SnapshotImageSpec, timings: &ClusterTimings) -> Duration {
    let t = Duration::from_secs(u64::from(spec.build_timeout_seconds));
    timings.max_build_timeout.map_or(t, |max| t.min(max))
}

/// Runtime → image reference the snapshot must hold: the spec's runtimes, or every configured
/// one when the spec names none. `Err` says what is missing.
pub fn expected_images(
    spec: &SnapshotImageSpec,
    images: &RuntimeImages,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    if spec.runtimes.is_empty() {
        for (rt, r) in &images.0 {
            out.insert(rt.as_str().to_string(), r.clone());
        }
        if out.is_empty() {
            return Err("no runtime images are configured in the controller (--runtime-image or $LAMBDA_HOME/images/versions.env)".into());
        }
    }
    for rt in &spec.runtimes {
        match images.0.get(rt) {
            Some(r) => {
                out.insert(rt.as_str().to_string(), r.clone());
            }
            None => {
                return Err(format!(
                    "no image is configured for runtime {} (lambda controller --runtime-image {}=IMAGE)",
                    rt.as_str(),
                    rt.as_str()
                ));
            }
        }
    }
    if let Some(bad) = out.values().find(|r| !valid_image_ref(r)) {
        return Err(format!("runtime image reference {bad:?} is not valid"));
    }
    Ok(out)
}

/// The Glance name of a generation's image.
pub fn image_name(namespace: &str, name: &str, generation: i64) -> String {
    format!("lambda-{namespace}-{name}-g{generation}")
}

/// The generation a builder builds (its metadata).
pub fn generation_of(s: &Server) -> Option<i64> {
    s.metadata.get(META_GENERATION)?.parse().ok()
}

/// Runtime → reference, from an image's `lambda:runtime:*` properties.
pub fn runtime_images_of(image: &Image) -> BTreeMap<String, String> {
    image
        .properties
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(META_RUNTIME_PREFIX)?, v.as_str()?)))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn set_ready(s: &mut SnapshotImageStatus, status: ConditionStatus, why: &str, msg: &str, g: i64) {
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
    change: impl FnOnce(&mut SnapshotImageStatus),
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
async fn pending(
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
        ctx.event(si, EventType::Warning, why, &msg).await;
    }
    Ok(Action::requeue(retry))
}

/// The `Ready` reason and message of a failed builder creation a person has to fix; `None`
/// for errors worth retrying as they are.
fn classify(e: &CloudError) -> Option<(&'static str, String)> {
    fn field(what: &str) -> &str {
        match what {
            "flavor" => "flavor",
            "image" => "baseImage",
            "network" => "network",
            "key pair" => "keyPair",
            "security group" => "securityGroups",
            other => other,
        }
    }
    match e {
        CloudError::NoSuchResource { resource, .. } | CloudError::Ambiguous { resource, .. } => {
            Some((
                reason::INVALID_CLOUD_REF,
                format!("spec.{}: {e}", field(resource)),
            ))
        }
        CloudError::BadRequest(c) => {
            let m = c.message.to_ascii_lowercase();
            let hint = ["security group", "key pair", "flavor", "image", "network"]
                .into_iter()
                .find(|w| m.contains(w) || m.contains(&w.replace(' ', "_")))
                .map(|w| format!("spec.{}: ", field(w)))
                .unwrap_or_default();
            Some((
                reason::INVALID_CLOUD_REF,
                format!("{hint}the cloud refused the builder server: {}", c.message),
            ))
        }
        CloudError::QuotaExceeded(_) => Some((reason::QUOTA_EXCEEDED, e.to_string())),
        _ => None,
    }
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
        ctx.event(si, EventType::Warning, reason::INVALID_SPEC, msg)
            .await;
    }
    let clean = tidy(ctx, si, &servers).await?;
    Ok(if clean {
        Action::await_change()
    } else {
        Action::requeue(ctx.cluster.timings.poll)
    })
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
    let everything: Vec<Server> = builder.iter().cloned().chain(stale).collect();
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
        Step::Settled => {
            let clean = tidy(ctx, si, &everything).await?;
            Ok(if clean {
                Action::await_change()
            } else {
                Action::requeue(poll.max(Duration::from_secs(2)))
            })
        }
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
            ctx.event(si, EventType::Normal, reason::BUILT, &msg).await;
            finish(ctx, si, &everything).await
        }
        Step::Fail {
            reason: why,
            message,
        } => {
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
            ctx.event(si, EventType::Warning, why, &message).await;
            finish(ctx, si, &everything).await
        }
    }
}

/// After a build ended: the builder, the record and retired images go.
async fn finish(
    ctx: &Context,
    si: &SnapshotImage,
    servers: &[Server],
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
    let clean = tidy(ctx, &fresh, servers).await?;
    Ok(if clean {
        Action::await_change()
    } else {
        Action::requeue(ctx.cluster.timings.poll.max(Duration::from_secs(2)))
    })
}

/// Issues a token, stores the record and boots the builder.
async fn create_builder(
    ctx: &Context,
    si: &SnapshotImage,
    uid: &str,
) -> Result<Action, SnapshotError> {
    let (ns, name) = (si.metadata.namespace(), si.metadata.name.as_str());
    let g = si.generation();
    let images = match expected_images(&si.spec, &ctx.cluster.images) {
        Ok(m) => m,
        Err(msg) => {
            return pending(ctx, si, reason::RUNTIME_IMAGE_MISSING, msg, FIX_RETRY).await;
        }
    };
    let Some(url) = ctx.cluster.builder_url.clone() else {
        return Ok(Action::requeue(Duration::ZERO));
    };
    record::delete_for_uid(&ctx.store, uid).await?;
    let timeout = build_timeout(&si.spec, &ctx.cluster.timings);
    let rec = BuildRecord {
        namespace: ns.to_string(),
        name: name.to_string(),
        uid: uid.to_string(),
        generation: g,
        images: images.clone(),
        created_at: Utc::now(),
        phone_home: None,
    };
    let token = record::create(&ctx.store, &rec, timeout + RECORD_GRACE).await?;
    let object = format!("{ns}/{name}");
    let script = BuilderScript {
        object: &object,
        generation: g,
        url: &url,
        token: &token,
        images: &images,
        setup_script: si.spec.setup_script.as_deref(),
    }
    .render();
    let owner = ctx.cluster.owner(SnapshotImageSpec::KIND, ns, name, uid);
    let mut metadata = owner.metadata();
    metadata.insert(META_GENERATION.into(), g.to_string());
    let spec = ServerSpec {
        name: server_name(BUILDER_PREFIX, ns, name),
        flavor: si.spec.flavor.clone(),
        image: si.spec.base_image.clone(),
        // A builder must reach the platform: without a named network, Nova picks one.
        networks: match &si.spec.network {
            Some(n) => NetworkSpec::Named(vec![n.clone()]),
            None => NetworkSpec::Auto,
        },
        key_name: si.spec.key_pair.clone(),
        security_groups: si.spec.security_groups.clone(),
        availability_zone: None,
        user_data: Some(script.into_bytes()),
        metadata,
        tags: owner.tags(),
    };
    match ctx.cluster.cloud.create_server(&spec).await {
        Ok(id) => {
            let now = Utc::now();
            let deadline = now + timeout;
            let msg = format!(
                "builder server {id} is booting from {} ({})",
                si.spec.base_image, si.spec.flavor
            );
            write_status(ctx, si, |s| {
                s.phase = Some(phase::BUILDING.into());
                s.builder_server_id = Some(id.clone());
                s.build_started_at = Some(now);
                s.build_deadline = Some(deadline);
                s.last_error = None;
                set_ready(s, ConditionStatus::False, reason::BUILDING, &msg, g);
            })
            .await?;
            tracing::info!(snapshot = %si.key(), server = %id, generation = g, "builder created");
            ctx.event(si, EventType::Normal, "BuilderCreated", &msg)
                .await;
            Ok(Action::requeue(ctx.cluster.timings.poll))
        }
        Err(e) => match classify(&e) {
            Some((why, msg)) => {
                // Nothing was created: the token is of no use.
                if let Err(e) = record::delete_for_uid(&ctx.store, uid).await {
                    tracing::warn!(snapshot = %si.key(), error = %e, "deleting the unused build record");
                }
                pending(ctx, si, why, msg, FIX_RETRY).await
            }
            // Maybe created after all (a lost answer): the next reconcile finds it by its tag
            // and adopts it, with this record.
            None => Err(ctx.cloud_err(si)(e)),
        },
    }
}

/// Saves the builder as this generation's image (or adopts the one an earlier attempt made).
async fn snapshot(
    ctx: &Context,
    si: &SnapshotImage,
    uid: &str,
    server_id: &str,
    images: &BTreeMap<String, String>,
) -> Result<Action, SnapshotError> {
    let (ns, name) = (si.metadata.namespace(), si.metadata.name.as_str());
    let g = si.generation();
    let err = ctx.cloud_err(si);
    let iname = image_name(ns, name, g);
    let prop = |i: &Image, k: &str| {
        i.properties
            .get(k)
            .and_then(|v| v.as_str().map(String::from))
    };
    let existing = ctx
        .cluster
        .cloud
        .image()
        .list_images_by_name(&iname)
        .await
        .map_err(&err)?
        .into_iter()
        .find(|i| {
            prop(i, crate::reconcilers::cluster::META_UID).as_deref() == Some(uid)
                && prop(i, META_GENERATION) == Some(g.to_string())
        });
    let id = match existing {
        Some(i) => i.id,
        None => {
            let owner = ctx.cluster.owner(SnapshotImageSpec::KIND, ns, name, uid);
            let mut meta = owner.metadata();
            meta.insert(META_GENERATION.into(), g.to_string());
            for (rt, r) in images {
                meta.insert(format!("{META_RUNTIME_PREFIX}{rt}"), r.clone());
            }
            match ctx
                .cluster
                .cloud
                .compute()
                .create_image(server_id, &iname, &meta)
                .await
            {
                Ok(id) => id,
                // A task still runs on the builder: try again shortly.
                Err(CloudError::Conflict(c)) => {
                    tracing::info!(snapshot = %si.key(), "createImage must wait: {}", c.message);
                    return Ok(Action::requeue(ctx.cluster.timings.poll));
                }
                Err(e) => return Err(err(e)),
            }
        }
    };
    let msg = format!("saving builder server {server_id} as image {id} ({iname})");
    write_status(ctx, si, |s| {
        s.phase = Some(phase::SNAPSHOTTING.into());
        s.pending_image_id = Some(id.clone());
        set_ready(s, ConditionStatus::False, reason::SNAPSHOTTING, &msg, g);
    })
    .await?;
    tracing::info!(snapshot = %si.key(), image = %id, "snapshotting the builder");
    ctx.event(si, EventType::Normal, reason::SNAPSHOTTING, &msg)
        .await;
    Ok(Action::requeue(ctx.cluster.timings.poll))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Runtime;

    fn spec(yaml: &str) -> SnapshotImageSpec {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn expected_images_follow_the_spec_or_take_all() {
        let images = RuntimeImages::parse_env(
            "LAMBDA_IMAGE_SHELL=lambda/runtime-shell:1\nLAMBDA_IMAGE_PYTHON3=lambda/runtime-python3:2\n",
        );
        let s = spec("baseImage: b\nflavor: f\nruntimes: [shell]\n");
        assert_eq!(
            expected_images(&s, &images).unwrap(),
            BTreeMap::from([("shell".into(), "lambda/runtime-shell:1".into())])
        );
        let all = spec("baseImage: b\nflavor: f\n");
        assert_eq!(expected_images(&all, &images).unwrap().len(), 2);
        let node = spec("baseImage: b\nflavor: f\nruntimes: [node]\n");
        let e = expected_images(&node, &images).unwrap_err();
        assert!(e.contains("runtime node"), "{e}");
        assert!(expected_images(&all, &RuntimeImages::default()).is_err());
        let mut bad = RuntimeImages::default();
        bad.0.insert(Runtime::Shell, "x y".into());
        assert!(expected_images(&s, &bad).is_err());
    }

    #[test]
    fn timeouts_names_and_properties() {
        let s = spec("baseImage: b\nflavor: f\nbuildTimeoutSeconds: 600\n");
        let mut t = ClusterTimings::default();
        assert_eq!(build_timeout(&s, &t), Duration::from_secs(600));
        t.max_build_timeout = Some(Duration::from_secs(5));
        assert_eq!(build_timeout(&s, &t), Duration::from_secs(5));
        assert_eq!(image_name("team-a", "base", 42), "lambda-team-a-base-g42");
        let i: Image = serde_json::from_value(serde_json::json!({
            "id": "i", "status": "active", "lambda:runtime:shell": "lambda/runtime-shell:1",
            "lambda:uid": "u"
        }))
        .unwrap();
        assert_eq!(
            runtime_images_of(&i),
            BTreeMap::from([("shell".into(), "lambda/runtime-shell:1".into())])
        );
        let srv: Server = serde_json::from_value(serde_json::json!({
            "id": "s", "status": "ACTIVE", "metadata": {"lambda:generation": "17"}
        }))
        .unwrap();
        assert_eq!(generation_of(&srv), Some(17));
    }

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
