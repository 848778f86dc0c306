//! What the node-side reconcilers (`snapshot`, `nodepool`, `node`, `membership`) share: the
//! cloud and Swarm connections, this platform's identity, their timings, and how the Nova
//! servers the platform creates are marked as its own.
//!
//! Ownership of a server is written twice: as Nova **tags** (listable with `?tags=`, so a
//! crashed controller finds a node's server before creating another) and as **metadata**
//! (readable by operators). Nova's metadata keys cannot contain `/` and tags cannot contain `/`
//! or `,`, so keys use `lambda:` and tags `lambda-…-<value>`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::openstack::{OpenStack, Server};
use crate::reconcilers::function::spec::RuntimeImages;
use crate::swarm::Swarm;

/// Tag on every server the platform creates.
pub const TAG_MANAGED: &str = "lambda-managed";
/// Metadata key: the platform instance owning the server.
pub const META_INSTANCE: &str = "lambda:instance";
/// Metadata key: kind of the owning object (`Node`, `SnapshotImage`).
pub const META_KIND: &str = "lambda:kind";
/// Metadata key: namespace of the owning object.
pub const META_NAMESPACE: &str = "lambda:namespace";
/// Metadata key: name of the owning object.
pub const META_NAME: &str = "lambda:name";
/// Metadata key: uid of the owning object's incarnation.
pub const META_UID: &str = "lambda:uid";
/// Metadata key: the node pool (nodes only).
pub const META_POOL: &str = "lambda:pool";

/// The tag naming the platform instance.
pub fn instance_tag(instance: &str) -> String {
    format!("lambda-instance-{instance}")
}

/// The tag naming the owning object's uid (unique per incarnation: the lookup key).
pub fn owner_tag(uid: &str) -> String {
    format!("lambda-owner-{uid}")
}

/// Who owns a server, as written into (and read back from) its tags and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOwner {
    pub instance: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The same owner, as the labels of the Swarm objects it has (its engine's Swarm node).
impl From<&ServerOwner> for crate::swarm::labels::Owner {
    fn from(o: &ServerOwner) -> Self {
        crate::swarm::labels::Owner {
            instance: o.instance.clone(),
            kind: o.kind.clone(),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
            uid: o.uid.clone(),
        }
    }
}

impl ServerOwner {
    /// The tags to create the server with.
    pub fn tags(&self) -> Vec<String> {
        vec![
            TAG_MANAGED.to_string(),
            instance_tag(&self.instance),
            owner_tag(&self.uid),
        ]
    }

    /// The metadata to create the server with.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (META_INSTANCE.to_string(), self.instance.clone()),
            (META_KIND.to_string(), self.kind.clone()),
            (META_NAMESPACE.to_string(), self.namespace.clone()),
            (META_NAME.to_string(), self.name.clone()),
            (META_UID.to_string(), self.uid.clone()),
        ])
    }

    /// Reads the owner back from a server; `None` unless it carries every part.
    pub fn of(server: &Server) -> Option<ServerOwner> {
        let get = |k: &str| server.metadata.get(k).filter(|v| !v.is_empty()).cloned();
        if !server.tags.iter().any(|t| t == TAG_MANAGED) {
            return None;
        }
        Some(ServerOwner {
            instance: get(META_INSTANCE)?,
            kind: get(META_KIND)?,
            namespace: get(META_NAMESPACE)?,
            name: get(META_NAME)?,
            uid: get(META_UID)?,
        })
    }
}

/// A server name from its owner: DNS-label-ish, at most 63 characters (it becomes the VM's
/// host name, and so the Swarm node's).
pub fn server_name(prefix: &str, namespace: &str, name: &str) -> String {
    let mut s = format!("{prefix}-{namespace}-{name}");
    s.truncate(63);
    s.trim_end_matches('-').to_string()
}

/// Timings of the node-side reconcilers.
#[derive(Debug, Clone)]
pub struct ClusterTimings {
    /// Requeue while a server builds, an image saves, a node joins.
    pub poll: Duration,
    /// An ACTIVE server whose engine has not joined the Swarm after this is unhealthy.
    pub join_timeout: Duration,
    /// A Swarm node `down` longer than this marks its Node unhealthy (it gets replaced).
    pub down_grace: Duration,
    /// Longest wait for a draining node's tasks to move before it is removed anyway.
    pub drain_timeout: Duration,
    /// First delay before a server in ERROR is recreated (doubles per failure).
    pub error_backoff: Duration,
    /// Cap of that delay.
    pub error_backoff_max: Duration,
    /// How often orphaned servers and Swarm nodes are swept.
    pub sweep_every: Duration,
    /// Caps every snapshot build's `spec.buildTimeoutSeconds` (whose minimum is 60 s): tests
    /// use a few seconds; `None` leaves the spec in charge.
    pub max_build_timeout: Option<Duration>,
    /// How often the node autoscaler decides (its pending-to-decision latency is at most this
    /// plus one pass).
    pub autoscale_every: Duration,
}

impl Default for ClusterTimings {
    fn default() -> Self {
        ClusterTimings {
            poll: Duration::from_secs(1),
            join_timeout: Duration::from_secs(300),
            down_grace: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(60),
            error_backoff: Duration::from_secs(5),
            error_backoff_max: Duration::from_secs(300),
            sweep_every: Duration::from_secs(30),
            max_build_timeout: None,
            autoscale_every: Duration::from_millis(500),
        }
    }
}

/// Settings of the node-side reconcilers. Credentials stay in the controller's environment
/// (openrc `OS_*` variables or clouds.yaml): nothing here comes from etcd objects.
#[derive(Clone)]
pub struct ClusterConfig {
    /// The OpenStack cloud.
    pub cloud: OpenStack,
    /// The Swarm manager: workers join it, membership labels, drains and removes them.
    pub swarm: Swarm,
    /// `host:port` workers join, e.g. `10.251.0.1:2377`.
    pub join_addr: String,
    /// Address the manager advertises if it must initialise the swarm (`None`: the host part
    /// of `join_addr`).
    pub advertise_addr: Option<String>,
    /// This platform's id in tags, metadata and Swarm labels.
    pub instance: String,
    /// Runtime → image, baked into snapshot images.
    pub images: RuntimeImages,
    /// Base URL builder servers reach the controller's builder endpoint at (runtime image
    /// download, phone home); `None`: builds fail with a clear condition.
    pub builder_url: Option<String>,
    pub timings: ClusterTimings,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("swarm", &self.swarm)
            .field("join_addr", &self.join_addr)
            .field("instance", &self.instance)
            .field("builder_url", &self.builder_url)
            .field("timings", &self.timings)
            .finish_non_exhaustive()
    }
}

impl ClusterConfig {
    /// The tags and metadata owner of a server for `kind` `namespace/name` (`uid`).
    pub fn owner(&self, kind: &str, namespace: &str, name: &str, uid: &str) -> ServerOwner {
        ServerOwner {
            instance: self.instance.clone(),
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: uid.to_string(),
        }
    }
}

/// Exponential delay for the `failures`-th consecutive failure: `base · 2^(n-1)`, capped.
pub fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(20);
    base.saturating_mul(1u32 << shift).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_round_trips_through_tags_and_metadata() {
        let o = ServerOwner {
            instance: "abc123".into(),
            kind: "Node".into(),
            namespace: "default".into(),
            name: "pool-x1".into(),
            uid: "1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
        };
        for t in o.tags() {
            assert!(t.len() <= 60 && !t.contains('/') && !t.contains(','), "{t}");
        }
        for k in o.metadata().keys() {
            assert!(!k.contains('/'), "{k}");
        }
        let server: Server = serde_json::from_value(serde_json::json!({
            "id": "s1", "status": "ACTIVE", "tags": o.tags(), "metadata": o.metadata(),
        }))
        .unwrap();
        assert_eq!(ServerOwner::of(&server), Some(o));
        let foreign: Server =
            serde_json::from_value(serde_json::json!({"id": "s2", "status": "ACTIVE"})).unwrap();
        assert_eq!(ServerOwner::of(&foreign), None);
    }

    #[test]
    fn server_names_are_bounded() {
        assert_eq!(
            server_name("lambda", "default", "p-1"),
            "lambda-default-p-1"
        );
        let long = server_name("lambda", &"n".repeat(40), &"x".repeat(40));
        assert_eq!(long.len(), 63);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let (b, m) = (Duration::from_secs(5), Duration::from_secs(60));
        let got: Vec<u64> = (1..=6).map(|n| backoff(b, m, n).as_secs()).collect();
        assert_eq!(got, vec![5, 10, 20, 40, 60, 60]);
        assert_eq!(backoff(b, m, 0).as_secs(), 5);
        assert_eq!(backoff(b, m, 99), m);
    }
}
