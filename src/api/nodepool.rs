//! `NodePool`: a group of identical worker VMs booted from one snapshot image.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::{Condition, Conditions};
use super::object::Resource;
use super::validation::{FieldErrors, check_dns_label};

/// Where the pool's VMs boot from: exactly one of the two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageRef {
    /// A `SnapshotImage` object in the pool's namespace (its built Glance image is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_image: Option<String>,
    /// A Glance image name or id, used as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glance_image: Option<String>,
}

/// Node autoscaling driven by the functions' demand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoscalingPolicy {
    #[serde(default)]
    pub enabled: bool,
    /// Scale up when reserved memory on the pool exceeds this share (10–100 %).
    #[serde(default = "default_target")]
    pub target_memory_percent: u32,
    /// Minimum time between two scale-downs (0–86400 s).
    #[serde(default = "default_cooldown")]
    pub scale_down_cooldown_seconds: u32,
}

fn default_target() -> u32 {
    75
}
fn default_cooldown() -> u32 {
    300
}

/// Desired state of a node pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodePoolSpec {
    pub image: ImageRef,
    /// Nova flavor name or id.
    pub flavor: String,
    /// Neutron network name or id; none attaches no network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pair: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// Desired node count; the autoscaler's decision (in status) overrides it, both clamped to min/max.
    #[serde(default)]
    pub replicas: u32,
    #[serde(default)]
    pub min_replicas: u32,
    #[serde(default = "default_max")]
    pub max_replicas: u32,
    /// Nodes created at once while scaling up or rolling (1–20).
    #[serde(default = "default_surge")]
    pub max_surge: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingPolicy>,
    /// Swarm node labels set on every node of the pool.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_labels: BTreeMap<String, String>,
}

fn default_max() -> u32 {
    10
}
fn default_surge() -> u32 {
    1
}

/// Observed state of a node pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodePoolStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub replicas: u32,
    #[serde(default)]
    pub ready_replicas: u32,
    /// The autoscaler's wanted count (before clamping), when it has an opinion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<u32>,
    /// Why the autoscaler wants `desiredReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler_reason: Option<String>,
    /// Names of the pool's `Node` objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
}

impl Conditions for NodePoolStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

impl Resource for NodePoolSpec {
    type Status = NodePoolStatus;
    const KIND: &'static str = "NodePool";
    const PLURAL: &'static str = "nodepools";
    const SHORT: &'static [&'static str] = &["nodepool", "np", "nps"];

    fn validate(&self, e: &mut FieldErrors) {
        e.scoped("image", |e| {
            match (&self.image.snapshot_image, &self.image.glance_image) {
                (Some(_), Some(_)) => e.push(
                    "",
                    "set exactly one of snapshotImage and glanceImage, not both",
                ),
                (None, None) => e.push("", "set exactly one of snapshotImage and glanceImage"),
                (Some(s), None) => {
                    if let Err(why) = check_dns_label(s) {
                        e.push("snapshotImage", why);
                    }
                }
                (None, Some(g)) => e.non_empty("glanceImage", g),
            }
        });
        e.non_empty("flavor", &self.flavor);
        validate_cloud_refs(e, &self.network, &self.key_pair, &self.security_groups);
        e.range("maxReplicas", self.max_replicas, 0, 500);
        if self.min_replicas > self.max_replicas {
            e.push(
                "minReplicas",
                format!(
                    "must be <= maxReplicas ({} > {})",
                    self.min_replicas, self.max_replicas
                ),
            );
        }
        if self.replicas > self.max_replicas || self.replicas < self.min_replicas {
            e.push(
                "replicas",
                format!(
                    "must be between minReplicas and maxReplicas ({}..={}), got {}",
                    self.min_replicas, self.max_replicas, self.replicas
                ),
            );
        }
        e.range("maxSurge", self.max_surge, 1, 20);
        if let Some(a) = &self.autoscaling {
            e.scoped("autoscaling", |e| {
                e.range("targetMemoryPercent", a.target_memory_percent, 10, 100);
                e.range(
                    "scaleDownCooldownSeconds",
                    a.scale_down_cooldown_seconds,
                    0,
                    86400,
                );
            });
        }
        for k in self.node_labels.keys() {
            if k.starts_with("lambda.") {
                e.push(
                    &format!("nodeLabels.{k}"),
                    "the lambda. prefix is reserved for the platform",
                );
            }
        }
    }
}

/// Shared checks of the OpenStack references a pool, node or snapshot image names.
pub(crate) fn validate_cloud_refs(
    e: &mut FieldErrors,
    network: &Option<String>,
    key_pair: &Option<String>,
    security_groups: &[String],
) {
    if let Some(n) = network {
        e.non_empty("network", n);
    }
    if let Some(k) = key_pair {
        e.non_empty("keyPair", k);
    }
    for (i, g) in security_groups.iter().enumerate() {
        e.non_empty(&format!("securityGroups[{i}]"), g);
    }
}
