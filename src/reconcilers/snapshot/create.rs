//! Creating things in the cloud: the builder server (with its token and user-data) and the
//! image saved from it; the names, timeouts and runtime images they are made with.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;

use crate::api::{ConditionStatus, Resource, SnapshotImage, SnapshotImageSpec};
use crate::openstack::{Error as CloudError, Image, NetworkSpec, ServerSpec};
use crate::reconcilers::cluster::{ClusterTimings, server_name};
use crate::reconcilers::function::spec::RuntimeImages;
use crate::runtime::{Action, EventType};

use super::build::{FIX_RETRY, pending, set_ready, write_status};
use super::decide::{phase, reason};
use super::record::{self, BuildRecord};
use super::userdata::{BuilderScript, valid_image_ref};
use super::{BUILDER_PREFIX, Context, META_GENERATION, META_RUNTIME_PREFIX, SnapshotError};

/// How much longer than its build a record lives before etcd expires it.
const RECORD_GRACE: Duration = Duration::from_secs(600);

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

/// Runtime → reference, from an image's `lambda:runtime:*` properties.
pub fn runtime_images_of(image: &Image) -> BTreeMap<String, String> {
    image
        .properties
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(META_RUNTIME_PREFIX)?, v.as_str()?)))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
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

/// Issues a token, stores the record and boots the builder.
pub(super) async fn create_builder(
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
            ctx.recorder
                .emit(si, EventType::Normal, "BuilderCreated", &msg)
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
pub(super) async fn snapshot(
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
    ctx.recorder
        .emit(si, EventType::Normal, reason::SNAPSHOTTING, &msg)
        .await;
    Ok(Action::requeue(ctx.cluster.timings.poll))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Runtime;
    use crate::openstack::Server;
    use crate::reconcilers::snapshot::build::generation_of;

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
    fn cloud_errors_a_person_must_fix_name_the_field() {
        let api = |status: u16, message: &str| crate::openstack::ApiContext {
            service: "compute".into(),
            method: "POST".into(),
            url: "http://nova/servers".into(),
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            request_id: None,
            fault: None,
            message: message.into(),
        };
        let unknown = CloudError::NoSuchResource {
            resource: "flavor",
            name: "m9.huge".into(),
        };
        let (why, msg) = classify(&unknown).unwrap();
        assert_eq!(why, reason::INVALID_CLOUD_REF);
        assert!(msg.starts_with("spec.flavor: flavor \"m9.huge\""), "{msg}");
        let (_, msg) = classify(&CloudError::NoSuchResource {
            resource: "image",
            name: "x".into(),
        })
        .unwrap();
        assert!(msg.starts_with("spec.baseImage:"), "{msg}");
        let sg = CloudError::BadRequest(Box::new(api(
            400,
            "Unable to find security_group with name or id 'web'",
        )));
        let (why, msg) = classify(&sg).unwrap();
        assert_eq!(why, reason::INVALID_CLOUD_REF);
        assert!(msg.starts_with("spec.securityGroups:"), "{msg}");
        let quota = CloudError::QuotaExceeded(Box::new(api(403, "Quota exceeded for instances")));
        assert_eq!(classify(&quota).unwrap().0, reason::QUOTA_EXCEEDED);
        let busy = CloudError::ServerError(Box::new(api(503, "try later")));
        assert_eq!(classify(&busy), None);
    }
}
