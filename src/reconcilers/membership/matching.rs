//! Which Swarm node is a `Node`'s: the one labelled with its uid, else a worker whose address is
//! one of the server's or whose host name is the server's. Managers are never claimed, nor
//! nodes labelled for another Node.

use bollard::models::{Node as SwarmNode, NodeSpecRoleEnum, NodeState};

use crate::api::{NodeSpec, Object};
use crate::openstack::hostname_of;
use crate::swarm::labels::UID;
use crate::swarm::node_address;

/// The result of a lookup.
#[derive(Debug, Default)]
pub struct Match<'a> {
    /// The Swarm node of the Node (ready ones first, then the newest).
    pub node: Option<&'a SwarmNode>,
    /// Earlier incarnations of the same VM that are not ready (to be removed).
    pub stale: Vec<&'a SwarmNode>,
}

/// A Swarm node's host name.
pub fn hostname(sn: &SwarmNode) -> Option<String> {
    sn.description.as_ref()?.hostname.clone()
}

fn ready(sn: &SwarmNode) -> bool {
    sn.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY)
}

fn uid_label(sn: &SwarmNode) -> Option<&str> {
    sn.spec
        .as_ref()?
        .labels
        .as_ref()?
        .get(UID)
        .map(String::as_str)
}

/// Finds the Swarm node of `n` among `all`.
pub fn find<'a>(n: &Object<NodeSpec>, all: &'a [SwarmNode]) -> Match<'a> {
    let uid = n.metadata.uid.as_deref().unwrap_or_default();
    let status = n.status.clone().unwrap_or_default();
    let host = status.server_name.as_deref().map(hostname_of);
    let mut candidates: Vec<&SwarmNode> = all
        .iter()
        .filter(|sn| sn.spec.as_ref().and_then(|s| s.role) != Some(NodeSpecRoleEnum::MANAGER))
        .filter(|sn| match uid_label(sn) {
            Some(l) => l == uid,
            None => {
                status.swarm_node_id.is_some() && sn.id == status.swarm_node_id
                    || node_address(sn).is_some_and(|a| status.addresses.contains(&a))
                    || (host.is_some() && hostname(sn) == host)
            }
        })
        .collect();
    candidates.sort_by(|a, b| {
        ready(b)
            .cmp(&ready(a))
            .then(b.created_at.cmp(&a.created_at))
    });
    let mut it = candidates.into_iter();
    let node = it.next();
    Match {
        node,
        stale: it.filter(|sn| !ready(sn)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{NodeDescription, NodeSpec as SwarmSpec, NodeStatus as SwarmStatus};
    use std::collections::HashMap;

    fn sn(id: &str, addr: &str, host: &str, state: NodeState, created: &str) -> SwarmNode {
        SwarmNode {
            id: Some(id.into()),
            created_at: Some(created.into()),
            spec: Some(SwarmSpec {
                role: Some(NodeSpecRoleEnum::WORKER),
                ..Default::default()
            }),
            status: Some(SwarmStatus {
                state: Some(state),
                addr: Some(addr.into()),
                ..Default::default()
            }),
            description: Some(NodeDescription {
                hostname: Some(host.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn node(addrs: &[&str], server: &str) -> Object<NodeSpec> {
        let mut n = Object::new(
            "default",
            "p-1",
            NodeSpec {
                pool: "p".into(),
                image: "i".into(),
                flavor: "f".into(),
                network: None,
                key_pair: None,
                security_groups: vec![],
                availability_zone: None,
            },
        );
        n.metadata.uid = Some("u-1".into());
        n.status = Some(crate::api::node::NodeStatus {
            addresses: addrs.iter().map(|a| a.to_string()).collect(),
            server_name: Some(server.into()),
            ..Default::default()
        });
        n
    }

    #[test]
    fn by_address_then_host_name_ready_and_newest_first() {
        let all = vec![
            sn(
                "old",
                "10.0.0.5",
                "x",
                NodeState::DOWN,
                "2026-01-01T00:00:00Z",
            ),
            sn(
                "new",
                "10.0.0.5",
                "x",
                NodeState::READY,
                "2026-01-02T00:00:00Z",
            ),
            sn(
                "other",
                "10.0.0.6",
                "y",
                NodeState::READY,
                "2026-01-02T00:00:00Z",
            ),
        ];
        let m = find(&node(&["10.0.0.5"], "z"), &all);
        assert_eq!(m.node.and_then(|n| n.id.as_deref()), Some("new"));
        assert_eq!(m.stale.len(), 1);
        assert_eq!(m.stale[0].id.as_deref(), Some("old"));
        let by_host = [sn(
            "h",
            "1.1.1.1",
            "lambda-default-y",
            NodeState::READY,
            "t",
        )];
        let m = find(&node(&[], "Lambda_default-Y"), &by_host);
        assert_eq!(m.node.and_then(|n| n.id.as_deref()), Some("h"));
        assert!(find(&node(&["10.9.9.9"], "q"), &all).node.is_none());
    }

    #[test]
    fn never_claims_managers_or_nodes_labelled_for_another_node() {
        let mut mgr = sn("m", "10.0.0.5", "x", NodeState::READY, "t");
        mgr.spec.as_mut().unwrap().role = Some(NodeSpecRoleEnum::MANAGER);
        let mut other = sn("o", "10.0.0.5", "x", NodeState::READY, "t");
        other.spec.as_mut().unwrap().labels =
            Some(HashMap::from([(UID.to_string(), "u-2".to_string())]));
        let mut mine = sn("mine", "10.0.0.7", "q", NodeState::READY, "t");
        mine.spec.as_mut().unwrap().labels =
            Some(HashMap::from([(UID.to_string(), "u-1".to_string())]));
        let all = vec![mgr, other, mine];
        let m = find(&node(&["10.0.0.5"], "x"), &all);
        assert_eq!(m.node.and_then(|n| n.id.as_deref()), Some("mine"));
    }
}
