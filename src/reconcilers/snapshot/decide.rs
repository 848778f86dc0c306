//! The build's state machine as a pure function: from the object's status, the builder Nova
//! reports, the build record in etcd and the pending image's status, the next [`Step`].
//! Nothing here talks to a service, so every transition is unit-tested (see the tests below).
//!
//! ```text
//!  new generation ──Start──▶ Pending ──CreateBuilder/Adopt──▶ Building ──phone home ok──▶
//!  CreateImage ──▶ Snapshotting ──image active──▶ Succeed ──▶ Ready
//!  Building/Snapshotting ──ERROR, timeout, ok:false, image killed──▶ Fail ──▶ Failed
//! ```
//! `Ready` and `Failed` are final for their generation ([`Step::Settled`]): only a spec
//! change (a new generation) starts another build.

use chrono::{DateTime, Utc};

use crate::api::SnapshotImageStatus;
use crate::openstack::{ImageStatus, Server, ServerStatus};

use super::record::BuildRecord;

/// `status.phase` values.
pub mod phase {
    /// The build of the current generation has not got a builder yet.
    pub const PENDING: &str = "Pending";
    /// The builder runs its setup.
    pub const BUILDING: &str = "Building";
    /// The builder is being saved as an image.
    pub const SNAPSHOTTING: &str = "Snapshotting";
    /// The current generation's image is built.
    pub const READY: &str = "Ready";
    /// The current generation's build failed.
    pub const FAILED: &str = "Failed";
}

/// Reasons of the `Ready` condition.
pub mod reason {
    /// A build is under way (or about to start).
    pub const BUILDING: &str = "Building";
    /// The builder is being saved as an image.
    pub const SNAPSHOTTING: &str = "Snapshotting";
    /// The image of the current generation is active.
    pub const BUILT: &str = "Built";
    /// The builder server went to ERROR or disappeared.
    pub const BUILDER_FAILED: &str = "BuilderFailed";
    /// The build did not end within its timeout.
    pub const BUILD_TIMEOUT: &str = "BuildTimeout";
    /// The builder phoned home a failure, or without every runtime image.
    pub const SETUP_FAILED: &str = "SetupFailed";
    /// The image was killed or deleted while it was saved.
    pub const IMAGE_FAILED: &str = "ImageFailed";
    /// The controller has no builder endpoint URL (`--builder-listen` / `--builder-url`).
    pub const NO_BUILDER_ENDPOINT: &str = "NoBuilderEndpoint";
    /// The cloud does not know a flavor, image, network, key pair or security group of the spec.
    pub const INVALID_CLOUD_REF: &str = "InvalidCloudRef";
    /// The project is out of quota for the builder.
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    /// No (valid) image is configured for a runtime the spec asks for.
    pub const RUNTIME_IMAGE_MISSING: &str = "RuntimeImageMissing";
    /// The spec does not validate.
    pub const INVALID_SPEC: &str = "InvalidSpec";
}

/// The pending image as Glance reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageSeen {
    /// 404.
    Missing,
    Status(ImageStatus),
}

/// What one reconcile observed.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The object's generation.
    pub generation: i64,
    pub status: &'a SnapshotImageStatus,
    pub now: DateTime<Utc>,
    /// Whether the controller has a builder endpoint URL.
    pub has_endpoint: bool,
    /// The builder of this generation, if Nova lists one.
    pub builder: Option<&'a Server>,
    /// The build record of this generation, if etcd has one.
    pub record: Option<&'a BuildRecord>,
    /// The pending image (`status.pendingImageId`), when there is one.
    pub image: Option<ImageSeen>,
}

/// The next thing to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A new generation: drop the previous build's builder, record and pending image, and
    /// start this one (phase Pending).
    Start,
    /// The current generation is Ready or Failed: only make sure nothing is left running.
    Settled,
    /// No builder endpoint: nothing can be built.
    NoEndpoint,
    /// Issue a token and create the builder.
    CreateBuilder,
    /// A builder of this generation exists that the status does not name (the controller
    /// stopped between creating it and writing the status): take it over.
    Adopt { server_id: String },
    /// Nothing to do but wait; the `Ready` condition gets this reason and message.
    Wait {
        reason: &'static str,
        message: String,
    },
    /// The builder phoned home with everything: save it as an image.
    CreateImage { server_id: String },
    /// The pending image is active.
    Succeed { image_id: String },
    /// The build failed.
    Fail {
        reason: &'static str,
        message: String,
    },
}

fn fail(reason: &'static str, message: String) -> Step {
    Step::Fail { reason, message }
}

/// The runtime images the record expects that the report does not list.
pub fn missing_images(record: &BuildRecord, reported: &[String]) -> Vec<String> {
    record
        .images
        .values()
        .filter(|r| !reported.contains(r))
        .cloned()
        .collect()
}

/// Decides the next step (see the module docs).
pub fn decide(o: &Observed) -> Step {
    let st = o.status;
    let current = st.observed_generation == Some(o.generation);
    if !current {
        return Step::Start;
    }
    let phase = st.phase.as_deref().unwrap_or(phase::PENDING);
    if phase == phase::READY || phase == phase::FAILED {
        return Step::Settled;
    }
    let timed_out = st.build_deadline.is_some_and(|d| o.now >= d);
    let limit = match (st.build_started_at, st.build_deadline) {
        (Some(s), Some(d)) => format!("{} s", (d - s).num_seconds()),
        _ => "the build timeout".into(),
    };
    match phase {
        phase::BUILDING => {
            let Some(b) = o.builder else {
                let id = st.builder_server_id.as_deref().unwrap_or("(unknown)");
                return fail(
                    reason::BUILDER_FAILED,
                    format!("builder server {id} disappeared before the build finished"),
                );
            };
            if b.status == ServerStatus::Error {
                let fault = b
                    .fault
                    .as_ref()
                    .map(|f| f.message.clone())
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| "no fault reported".into());
                return fail(
                    reason::BUILDER_FAILED,
                    format!("builder server {} went to ERROR: {fault}", b.id),
                );
            }
            let Some(rec) = o.record else {
                return fail(
                    reason::BUILDER_FAILED,
                    format!(
                        "the build record of builder {} vanished from etcd: it can no longer phone home",
                        b.id
                    ),
                );
            };
            let Some(report) = &rec.phone_home else {
                if timed_out {
                    return fail(
                        reason::BUILD_TIMEOUT,
                        format!(
                            "builder server {} ({:?}) did not phone home within {limit}",
                            b.id, b.status
                        ),
                    );
                }
                let state = match b.status {
                    ServerStatus::Active => "runs its setup".to_string(),
                    s => format!("is {s:?}"),
                };
                return Step::Wait {
                    reason: reason::BUILDING,
                    message: format!("builder server {} {state}", b.id),
                };
            };
            if !report.ok {
                let msg = if report.message.is_empty() {
                    "no message".into()
                } else {
                    report.message.clone()
                };
                return fail(
                    reason::SETUP_FAILED,
                    format!("builder server {} reported a failed setup: {msg}", b.id),
                );
            }
            let missing = missing_images(rec, &report.images);
            if !missing.is_empty() {
                return fail(
                    reason::SETUP_FAILED,
                    format!(
                        "builder server {} phoned home without the runtime image(s) {}",
                        b.id,
                        missing.join(", ")
                    ),
                );
            }
            if timed_out {
                return fail(
                    reason::BUILD_TIMEOUT,
                    format!("the build did not finish within {limit}"),
                );
            }
            if b.status != ServerStatus::Active || b.task_state.is_some() {
                return Step::Wait {
                    reason: reason::BUILDING,
                    message: format!(
                        "builder server {} phoned home; waiting for it to be idle ({:?}, task {})",
                        b.id,
                        b.status,
                        b.task_state.as_deref().unwrap_or("none")
                    ),
                };
            }
            Step::CreateImage {
                server_id: b.id.clone(),
            }
        }
        phase::SNAPSHOTTING => {
            let id = st.pending_image_id.clone().unwrap_or_default();
            match o.image {
                None | Some(ImageSeen::Missing) => fail(
                    reason::IMAGE_FAILED,
                    format!("image {id} was deleted while it was being saved"),
                ),
                Some(ImageSeen::Status(ImageStatus::Active)) => Step::Succeed { image_id: id },
                Some(ImageSeen::Status(
                    s @ (ImageStatus::Killed
                    | ImageStatus::Deleted
                    | ImageStatus::PendingDelete
                    | ImageStatus::Deactivated),
                )) => fail(
                    reason::IMAGE_FAILED,
                    format!("image {id} went to {s:?} while it was being saved"),
                ),
                Some(ImageSeen::Status(s)) if timed_out => fail(
                    reason::BUILD_TIMEOUT,
                    format!("image {id} was not active within {limit} (it is {s:?})"),
                ),
                Some(ImageSeen::Status(s)) => Step::Wait {
                    reason: reason::SNAPSHOTTING,
                    message: format!("saving the builder as image {id} ({s:?})"),
                },
            }
        }
        // Pending (or an unknown phase written by hand).
        _ => {
            if !o.has_endpoint {
                return Step::NoEndpoint;
            }
            match o.builder {
                Some(b) => Step::Adopt {
                    server_id: b.id.clone(),
                },
                None => Step::CreateBuilder,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeDelta;

    use super::super::record::PhoneHome;
    use super::*;

    fn server(status: &str, task: Option<&str>, fault: Option<&str>) -> Server {
        let mut v =
            serde_json::json!({"id": "srv1", "status": status, "OS-EXT-STS:task_state": task});
        if let Some(f) = fault {
            v["fault"] = serde_json::json!({"code": 500, "message": f});
        }
        serde_json::from_value(v).unwrap()
    }

    fn record(report: Option<(bool, &[&str], &str)>) -> BuildRecord {
        BuildRecord {
            namespace: "ns".into(),
            name: "img".into(),
            uid: "u".into(),
            generation: 5,
            images: BTreeMap::from([
                ("python3".into(), "py:1".into()),
                ("shell".into(), "sh:1".into()),
            ]),
            created_at: Utc::now(),
            phone_home: report.map(|(ok, images, message)| PhoneHome {
                ok,
                images: images.iter().map(|s| s.to_string()).collect(),
                message: message.into(),
                at: Utc::now(),
            }),
        }
    }

    fn status(phase: &str, generation: i64, now: DateTime<Utc>) -> SnapshotImageStatus {
        SnapshotImageStatus {
            observed_generation: Some(generation),
            phase: Some(phase.into()),
            builder_server_id: Some("srv1".into()),
            build_started_at: Some(now - TimeDelta::seconds(30)),
            build_deadline: Some(now + TimeDelta::seconds(30)),
            pending_image_id: Some("img1".into()),
            ..Default::default()
        }
    }

    fn obs<'a>(
        st: &'a SnapshotImageStatus,
        now: DateTime<Utc>,
        builder: Option<&'a Server>,
        record: Option<&'a BuildRecord>,
        image: Option<ImageSeen>,
    ) -> Observed<'a> {
        Observed {
            generation: 5,
            status: st,
            now,
            has_endpoint: true,
            builder,
            record,
            image,
        }
    }

    fn reason_of(s: Step) -> &'static str {
        match s {
            Step::Fail { reason, .. } | Step::Wait { reason, .. } => reason,
            other => panic!("not a failure or wait: {other:?}"),
        }
    }

    #[test]
    fn a_new_generation_starts_and_a_settled_one_stays() {
        let now = Utc::now();
        let st = status(phase::READY, 4, now);
        assert_eq!(decide(&obs(&st, now, None, None, None)), Step::Start);
        assert_eq!(
            decide(&obs(&SnapshotImageStatus::default(), now, None, None, None)),
            Step::Start
        );
        for p in [phase::READY, phase::FAILED] {
            let st = status(p, 5, now);
            assert_eq!(decide(&obs(&st, now, None, None, None)), Step::Settled);
        }
    }

    #[test]
    fn pending_creates_or_adopts_the_builder_unless_there_is_no_endpoint() {
        let now = Utc::now();
        let st = status(phase::PENDING, 5, now);
        assert_eq!(
            decide(&obs(&st, now, None, None, None)),
            Step::CreateBuilder
        );
        let b = server("BUILD", Some("spawning"), None);
        assert_eq!(
            decide(&obs(&st, now, Some(&b), None, None)),
            Step::Adopt {
                server_id: "srv1".into()
            }
        );
        let mut o = obs(&st, now, None, None, None);
        o.has_endpoint = false;
        assert_eq!(decide(&o), Step::NoEndpoint);
    }

    #[test]
    fn building_waits_for_the_phone_home_then_snapshots_an_idle_builder() {
        let now = Utc::now();
        let st = status(phase::BUILDING, 5, now);
        let active = server("ACTIVE", None, None);
        let waiting = record(None);
        assert_eq!(
            reason_of(decide(&obs(&st, now, Some(&active), Some(&waiting), None))),
            reason::BUILDING
        );
        let done = record(Some((true, &["py:1", "sh:1", "other:2"], "loaded")));
        assert_eq!(
            decide(&obs(&st, now, Some(&active), Some(&done), None)),
            Step::CreateImage {
                server_id: "srv1".into()
            }
        );
        let busy = server("ACTIVE", Some("image_snapshot"), None);
        assert_eq!(
            reason_of(decide(&obs(&st, now, Some(&busy), Some(&done), None))),
            reason::BUILDING
        );
    }

    #[test]
    fn building_failures_have_their_reasons() {
        let now = Utc::now();
        let st = status(phase::BUILDING, 5, now);
        let active = server("ACTIVE", None, None);
        let error = server("ERROR", None, Some("No valid host was found."));
        let waiting = record(None);
        let step = decide(&obs(&st, now, Some(&error), Some(&waiting), None));
        assert!(
            matches!(&step, Step::Fail { reason: reason::BUILDER_FAILED, message } if message.contains("No valid host")),
            "{step:?}"
        );
        assert_eq!(
            reason_of(decide(&obs(&st, now, None, Some(&waiting), None))),
            reason::BUILDER_FAILED
        );
        assert_eq!(
            reason_of(decide(&obs(&st, now, Some(&active), None, None))),
            reason::BUILDER_FAILED
        );
        let bad = record(Some((false, &[], "step setup-script failed (exit 3)")));
        let step = decide(&obs(&st, now, Some(&active), Some(&bad), None));
        assert!(
            matches!(&step, Step::Fail { reason: reason::SETUP_FAILED, message } if message.contains("setup-script")),
            "{step:?}"
        );
        let partial = record(Some((true, &["sh:1"], "")));
        let step = decide(&obs(&st, now, Some(&active), Some(&partial), None));
        assert!(
            matches!(&step, Step::Fail { reason: reason::SETUP_FAILED, message } if message.contains("py:1")),
            "{step:?}"
        );
    }

    #[test]
    fn the_deadline_ends_a_build_that_never_phones_home() {
        let start = Utc::now();
        let st = status(phase::BUILDING, 5, start);
        let active = server("ACTIVE", None, None);
        let waiting = record(None);
        let before = start + TimeDelta::seconds(29);
        assert_eq!(
            reason_of(decide(&obs(
                &st,
                before,
                Some(&active),
                Some(&waiting),
                None
            ))),
            reason::BUILDING
        );
        let after = start + TimeDelta::seconds(30);
        let step = decide(&obs(&st, after, Some(&active), Some(&waiting), None));
        assert!(
            matches!(&step, Step::Fail { reason: reason::BUILD_TIMEOUT, message } if message.contains("within 60 s")),
            "{step:?}"
        );
    }

    #[test]
    fn snapshotting_follows_the_image() {
        let now = Utc::now();
        let st = status(phase::SNAPSHOTTING, 5, now);
        let seen = |s| Some(ImageSeen::Status(s));
        assert_eq!(
            decide(&obs(&st, now, None, None, seen(ImageStatus::Active))),
            Step::Succeed {
                image_id: "img1".into()
            }
        );
        assert_eq!(
            reason_of(decide(&obs(
                &st,
                now,
                None,
                None,
                seen(ImageStatus::Saving)
            ))),
            reason::SNAPSHOTTING
        );
        for s in [ImageStatus::Killed, ImageStatus::Deleted] {
            assert_eq!(
                reason_of(decide(&obs(&st, now, None, None, seen(s)))),
                reason::IMAGE_FAILED
            );
        }
        assert_eq!(
            reason_of(decide(&obs(&st, now, None, None, Some(ImageSeen::Missing)))),
            reason::IMAGE_FAILED
        );
        let late = now + TimeDelta::seconds(31);
        assert_eq!(
            reason_of(decide(&obs(
                &st,
                late,
                None,
                None,
                seen(ImageStatus::Saving)
            ))),
            reason::BUILD_TIMEOUT
        );
    }
}
