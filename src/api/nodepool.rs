//! `NodePool`: a group of identical worker VMs booted from one snapshot image.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
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

/// Node autoscaling driven by the functions' demand (design §3 "autoscaler"): the autoscaler
/// grows the pool when pending work fits its template node, and consolidates under-used nodes.
/// Its decisions go to `status.desiredReplicas` and `status.autoscaler`, never into the spec,
/// and the nodepool reconciler clamps them to `minReplicas`/`maxReplicas`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoscalingPolicy {
    /// The autoscaler owns this pool's size; `spec.replicas` is ignored while it has an opinion.
    #[serde(default)]
    pub enabled: bool,
    /// A node whose reserved share (the larger of memory and CPU, reserved / allocatable) is
    /// below this is a scale-down candidate (0–1; cluster-autoscaler's default 0.5).
    #[serde(default = "default_threshold")]
    pub scale_down_utilization_threshold: f64,
    /// How long a node must stay a candidate (under the threshold, its tasks placeable
    /// elsewhere) before it is removed (0–86400 s).
    #[serde(default = "default_unneeded")]
    pub scale_down_unneeded_seconds: u32,
    /// No scale-down of this pool for this long after it last scaled up (0–86400 s), so new
    /// nodes are not consolidated away before the work that asked for them lands on them.
    #[serde(default = "default_delay_after_add")]
    pub scale_down_delay_after_add_seconds: u32,
    /// Memory per node held back from the flavor's RAM for the OS, the kernel and Docker when
    /// the autoscaler models a node that does not exist yet (0–65536 MiB). The default 256 MiB
    /// covers a Debian guest with dockerd, and keeps the template at or below what Swarm will
    /// report for a booted VM of the flavor, so planned work really fits.
    #[serde(default = "default_system_reserve")]
    pub system_reserve_mb: u32,
    /// Tie-break between pools whose nodes would waste equally (0–1000): the higher wins.
    #[serde(default)]
    pub priority: u32,
}

/// Default `scaleDownUtilizationThreshold`.
pub const DEFAULT_SCALE_DOWN_UTILIZATION_THRESHOLD: f64 = 0.5;
/// Default `scaleDownUnneededSeconds`.
pub const DEFAULT_SCALE_DOWN_UNNEEDED_SECONDS: u32 = 600;
/// Default `scaleDownDelayAfterAddSeconds`.
pub const DEFAULT_SCALE_DOWN_DELAY_AFTER_ADD_SECONDS: u32 = 600;
/// Default `systemReserveMb`.
pub const DEFAULT_SYSTEM_RESERVE_MB: u32 = 256;

fn default_threshold() -> f64 {
    DEFAULT_SCALE_DOWN_UTILIZATION_THRESHOLD
}
fn default_unneeded() -> u32 {
    DEFAULT_SCALE_DOWN_UNNEEDED_SECONDS
}
fn default_delay_after_add() -> u32 {
    DEFAULT_SCALE_DOWN_DELAY_AFTER_ADD_SECONDS
}
fn default_system_reserve() -> u32 {
    DEFAULT_SYSTEM_RESERVE_MB
}

impl Default for AutoscalingPolicy {
    /// Disabled, with the documented defaults for every knob.
    fn default() -> Self {
        AutoscalingPolicy {
            enabled: false,
            scale_down_utilization_threshold: default_threshold(),
            scale_down_unneeded_seconds: default_unneeded(),
            scale_down_delay_after_add_seconds: default_delay_after_add(),
            system_reserve_mb: default_system_reserve(),
            priority: 0,
        }
    }
}

impl AutoscalingPolicy {
    fn validate(&self, e: &mut FieldErrors) {
        let t = self.scale_down_utilization_threshold;
        // `range` alone would let NaN through (every comparison with NaN is false).
        if !t.is_finite() || !(0.0..=1.0).contains(&t) {
            e.push(
                "scaleDownUtilizationThreshold",
                format!("must be between 0 and 1, got {t}"),
            );
        }
        e.range(
            "scaleDownUnneededSeconds",
            self.scale_down_unneeded_seconds,
            0,
            86400,
        );
        e.range(
            "scaleDownDelayAfterAddSeconds",
            self.scale_down_delay_after_add_seconds,
            0,
            86400,
        );
        e.range("systemReserveMb", self.system_reserve_mb, 0, 65536);
        e.range("priority", self.priority, 0, 1000);
    }
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

/// What the autoscaler decided last for a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AutoscalerDecision {
    /// Nothing to change.
    #[default]
    NoChange,
    /// Pending work needs new nodes.
    ScaleUp,
    /// Under-used nodes are consolidated away.
    ScaleDown,
    /// Work is pending that no node of this pool can take (limit, quota or size).
    Blocked,
}

/// Memory and CPU amounts as the autoscaler counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceAmounts {
    /// MiB.
    #[serde(default)]
    pub memory_mb: u64,
    /// Millicores.
    #[serde(default)]
    pub cpu_millis: u64,
}

/// Work the autoscaler found waiting for a node of this pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PendingWork {
    /// Pending tasks (or replicas wanted but not placed) this pool was asked to take.
    #[serde(default)]
    pub tasks: u32,
    /// Their summed reservations.
    #[serde(default)]
    pub requested: ResourceAmounts,
    /// Who they belong to, e.g. `fn/default/resize` (a short, sorted list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<String>,
}

/// The autoscaler's view of a pool (`status.autoscaler`), written by the autoscaler only.
///
/// Invariant: `unneededSince` and `scaleDownNodes` name only nodes of this pool; the
/// timestamps survive a controller restart, so a restart neither forgets a scale-down window
/// nor restarts it, and `lastScaleUp` keeps the delay after a scale-up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoscalerStatus {
    #[serde(default)]
    pub decision: AutoscalerDecision,
    /// Human-readable, e.g. `scale up 1 → 3: 5 pending tasks of fn/resize need 2 × m1.small`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// When the decision was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub pending: PendingWork,
    /// Summed reservations of the tasks on the pool's nodes.
    #[serde(default)]
    pub reserved: ResourceAmounts,
    /// What the pool's nodes offer to tasks (as Swarm reports it).
    #[serde(default)]
    pub allocatable: ResourceAmounts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_up: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_down: Option<DateTime<Utc>>,
    /// Node name → since when it has been a scale-down candidate.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unneeded_since: BTreeMap<String, DateTime<Utc>>,
    /// Nodes the autoscaler decided to remove (drained and deleted by the nodepool reconciler).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scale_down_nodes: Vec<String>,
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
    /// The autoscaler's last decision, why, and what it saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<AutoscalerStatus>,
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
            e.scoped("autoscaling", |e| a.validate(e));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(autoscaling: &str) -> NodePoolSpec {
        let yaml =
            format!("image: {{glanceImage: b}}\nflavor: m1.small\nmaxReplicas: 3\n{autoscaling}");
        serde_saphyr::from_str(&yaml).unwrap()
    }

    fn errors(s: &NodePoolSpec) -> Vec<String> {
        let mut e = FieldErrors::default();
        e.scoped("spec", |e| s.validate(e));
        e.errors().iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn autoscaling_knobs_default_as_documented() {
        let s = spec("autoscaling: {enabled: true}\n");
        let a = s.autoscaling.clone().unwrap();
        assert_eq!(
            a,
            AutoscalingPolicy {
                enabled: true,
                ..AutoscalingPolicy::default()
            }
        );
        assert_eq!(a.scale_down_utilization_threshold, 0.5);
        assert_eq!(a.scale_down_unneeded_seconds, 600);
        assert_eq!(a.scale_down_delay_after_add_seconds, 600);
        assert_eq!(a.system_reserve_mb, 256);
        assert_eq!(a.priority, 0);
        assert!(errors(&s).is_empty(), "{:?}", errors(&s));
    }

    #[test]
    fn autoscaling_knobs_are_validated_with_their_paths() {
        let s = spec(
            "autoscaling:\n  scaleDownUtilizationThreshold: 1.5\n  scaleDownUnneededSeconds: 90000\n  scaleDownDelayAfterAddSeconds: 86401\n  systemReserveMb: 70000\n  priority: 1001\n",
        );
        assert_eq!(
            errors(&s),
            [
                "spec.autoscaling.scaleDownUtilizationThreshold: must be between 0 and 1, got 1.5",
                "spec.autoscaling.scaleDownUnneededSeconds: must be between 0 and 86400, got 90000",
                "spec.autoscaling.scaleDownDelayAfterAddSeconds: must be between 0 and 86400, got 86401",
                "spec.autoscaling.systemReserveMb: must be between 0 and 65536, got 70000",
                "spec.autoscaling.priority: must be between 0 and 1000, got 1001",
            ]
        );
        let nan = spec("autoscaling: {scaleDownUtilizationThreshold: .nan}\n");
        assert_eq!(
            errors(&nan),
            ["spec.autoscaling.scaleDownUtilizationThreshold: must be between 0 and 1, got NaN"]
        );
    }

    #[test]
    fn the_old_knobs_are_rejected() {
        for old in ["targetMemoryPercent: 75", "scaleDownCooldownSeconds: 300"] {
            let yaml = format!("image: {{glanceImage: b}}\nflavor: f\nautoscaling: {{{old}}}\n");
            assert!(
                serde_saphyr::from_str::<NodePoolSpec>(&yaml).is_err(),
                "{old}"
            );
        }
    }

    #[test]
    fn autoscaler_status_round_trips() {
        let t = "2026-01-02T03:04:05Z".parse::<DateTime<Utc>>().unwrap();
        let st = NodePoolStatus {
            desired_replicas: Some(3),
            autoscaler: Some(AutoscalerStatus {
                decision: AutoscalerDecision::ScaleUp,
                reason: "scale up 1 → 3: 5 pending tasks of fn/resize need 2 × m1.small".into(),
                decision_time: Some(t),
                pending: PendingWork {
                    tasks: 5,
                    requested: ResourceAmounts {
                        memory_mb: 2560,
                        cpu_millis: 0,
                    },
                    owners: vec!["fn/default/resize".into()],
                },
                reserved: ResourceAmounts {
                    memory_mb: 512,
                    cpu_millis: 0,
                },
                allocatable: ResourceAmounts {
                    memory_mb: 1792,
                    cpu_millis: 1000,
                },
                last_scale_up: Some(t),
                last_scale_down: None,
                unneeded_since: BTreeMap::from([("w-1".to_string(), t)]),
                scale_down_nodes: vec![],
            }),
            ..NodePoolStatus::default()
        };
        let yaml = serde_saphyr::to_string(&st).unwrap();
        assert!(yaml.contains("decision: ScaleUp"), "{yaml}");
        assert!(yaml.contains("lastScaleUp:"), "{yaml}");
        let back: NodePoolStatus = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(back, st);
    }
}
