//! `Node`: one worker VM that should exist, owned by a `NodePool`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::{Condition, Conditions};
use super::nodepool::validate_cloud_refs;
use super::object::Resource;
use super::validation::FieldErrors;

/// Desired state of one node: everything needed to boot its server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// The owning pool's name.
    pub pool: String,
    /// Glance image name or id to boot from.
    pub image: String,
    /// Nova flavor name or id.
    pub flavor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pair: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
}

/// Observed state of one node: its server and its Swarm membership.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Nova server id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    /// Nova server name (also the VM's host name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Consecutive servers of this node that ended in ERROR (recreated with backoff).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub server_failures: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Nova's server status (`BUILD`, `ACTIVE`, `ERROR`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm_node_id: Option<String>,
    /// Swarm node state (`ready`, `down`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm_state: Option<String>,
    /// Swarm availability (`active`, `drain`, `pause`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm_availability: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Conditions for NodeStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

impl Resource for NodeSpec {
    type Status = NodeStatus;
    const KIND: &'static str = "Node";
    const PLURAL: &'static str = "nodes";
    const SHORT: &'static [&'static str] = &["node", "no"];

    fn validate(&self, e: &mut FieldErrors) {
        e.dns_label("pool", &self.pool);
        e.non_empty("image", &self.image);
        e.non_empty("flavor", &self.flavor);
        validate_cloud_refs(e, &self.network, &self.key_pair, &self.security_groups);
    }
}
