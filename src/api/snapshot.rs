//! `SnapshotImage`: a prepared worker image (Docker + runtime images) built on a builder VM.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::function::Runtime;
use super::meta::{Condition, Conditions};
use super::nodepool::validate_cloud_refs;
use super::object::Resource;
use super::validation::FieldErrors;

/// Desired state of a snapshot image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotImageSpec {
    /// Glance image name or id the builder boots from.
    pub base_image: String,
    /// Flavor of the builder server.
    pub flavor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pair: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    /// Runtime images baked into the snapshot; all runtimes when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtimes: Vec<Runtime>,
    /// Extra shell run on the builder after Docker is installed (cloud-init user-data part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_script: Option<String>,
    /// Time allowed from builder boot to an active image (60–7200 s).
    #[serde(default = "default_build_timeout")]
    pub build_timeout_seconds: u32,
}

fn default_build_timeout() -> u32 {
    1200
}

/// Observed state of a snapshot image build.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotImageStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Informational phase of the build of `observedGeneration` (`Pending`, `Building`,
    /// `Snapshotting`, `Ready`, `Failed`); the conditions carry the truth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Nova id of the builder server while one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builder_server_id: Option<String>,
    /// When the builder of the current build was created (the build timeout counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_started_at: Option<DateTime<Utc>>,
    /// When the current build times out: `buildStartedAt` + the build timeout in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_deadline: Option<DateTime<Utc>>,
    /// Glance id of the image being saved from the builder (not usable yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_image_id: Option<String>,
    /// Glance id of the built image: the last build that succeeded (kept while a newer
    /// generation builds, and when it fails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The generation `imageId` was built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_generation: Option<i64>,
    /// Runtime → image reference the built image holds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub runtime_images: BTreeMap<String, String>,
    /// Images this object no longer uses (superseded or failed) that are still being deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_image_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Conditions for SnapshotImageStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

impl Resource for SnapshotImageSpec {
    type Status = SnapshotImageStatus;
    const KIND: &'static str = "SnapshotImage";
    const PLURAL: &'static str = "snapshotimages";
    const SHORT: &'static [&'static str] = &["snapshotimage", "si"];

    fn validate(&self, e: &mut FieldErrors) {
        e.non_empty("baseImage", &self.base_image);
        e.non_empty("flavor", &self.flavor);
        validate_cloud_refs(e, &self.network, &self.key_pair, &self.security_groups);
        for (i, r) in self.runtimes.iter().enumerate() {
            if *r == Runtime::Image {
                e.push(
                    &format!("runtimes[{i}]"),
                    "custom images are not baked into snapshots",
                );
            }
        }
        e.range("buildTimeoutSeconds", self.build_timeout_seconds, 60, 7200);
    }
}
