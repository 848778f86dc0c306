//! Swarm nodes a deleted server leaves behind. A server's engine joins the Swarm from its
//! user-data, which can happen after membership last looked (its Node was already being
//! deleted) or before membership labelled it (its Node was removed with `etcdctl del`); once
//! the server is gone that Swarm node is `down` for good and nothing else would remove it.
//! So whoever deletes a node's server removes, once the server is gone, the Swarm workers that
//! were its engine: found by the engine's host name (the server's name: it carries the Node's
//! name, random suffix included), unless labelled for another Node. Whatever state the Swarm
//! still shows: it marks a dead engine `down` only after missed heartbeats, seconds later.

use bollard::models::{Node as SwarmNode, NodeSpecRoleEnum};

use crate::openstack::hostname_of;
use crate::swarm::labels::{Owner, UID};
use crate::swarm::{Swarm, SwarmError};

use super::super::membership::matching::hostname;

/// The Swarm nodes among `all` that were the engine of the server named `server_name`, owned
/// by the Node `uid`: workers with the server's host name, unlabelled or labelled with `uid`.
/// Call it only once that server is gone (and no other server of that name can exist).
pub fn of_server<'a>(all: &'a [SwarmNode], server_name: &str, uid: &str) -> Vec<&'a SwarmNode> {
    let host = hostname_of(server_name);
    all.iter()
        .filter(|sn| sn.spec.as_ref().and_then(|s| s.role) != Some(NodeSpecRoleEnum::MANAGER))
        .filter(|sn| hostname(sn).as_deref() == Some(host.as_str()))
        .filter(|sn| uid_label(sn).is_none_or(|l| l == uid))
        .collect()
}

/// The Node uid a Swarm node is labelled with, if any (membership labels a worker once it
/// matched it to a Node).
fn uid_label(sn: &SwarmNode) -> Option<&str> {
    sn.spec
        .as_ref()?
        .labels
        .as_ref()?
        .get(UID)
        .map(String::as_str)
}

/// Removes the Swarm nodes [`of_server`] finds; returns their ids.
pub async fn remove(
    swarm: &Swarm,
    server_name: &str,
    uid: &str,
) -> Result<Vec<String>, SwarmError> {
    let all = swarm.list_nodes().await?;
    let mut removed = Vec::new();
    for sn in of_server(&all, server_name, uid) {
        let id = sn.id.clone().unwrap_or_default();
        match swarm.remove_node(&id, true).await {
            Ok(()) => removed.push(id),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// Labels the unlabelled Swarm nodes [`of_server`] finds as `owner`'s, before its server is
/// deleted: the membership sweep removes a labelled Swarm node whose Node is gone on any
/// leader's pass, so the engine is not forgotten should this controller die between deleting
/// the server and [`remove`]. Returns their ids.
pub async fn adopt(
    swarm: &Swarm,
    server_name: &str,
    owner: &Owner,
) -> Result<Vec<String>, SwarmError> {
    let all = swarm.list_nodes().await?;
    let labels = owner.labels();
    let labels: Vec<(&str, Option<&str>)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), Some(v.as_str())))
        .collect();
    let mut adopted = Vec::new();
    for sn in unlabelled(of_server(&all, server_name, &owner.uid)) {
        let id = sn.id.clone().unwrap_or_default();
        match swarm.label_node(&id, &labels).await {
            Ok(()) => adopted.push(id),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(adopted)
}

/// Those of `nodes` no Node claims yet.
fn unlabelled(nodes: Vec<&SwarmNode>) -> Vec<&SwarmNode> {
    nodes
        .into_iter()
        .filter(|sn| uid_label(sn).is_none())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        NodeDescription, NodeSpec as SwarmSpec, NodeState, NodeStatus as SwarmStatus,
    };
    use std::collections::HashMap;

    fn sn(
        id: &str,
        host: &str,
        state: NodeState,
        role: NodeSpecRoleEnum,
        uid: Option<&str>,
    ) -> SwarmNode {
        SwarmNode {
            id: Some(id.into()),
            spec: Some(SwarmSpec {
                role: Some(role),
                labels: uid.map(|u| HashMap::from([(UID.to_string(), u.to_string())])),
                ..Default::default()
            }),
            description: Some(NodeDescription {
                hostname: Some(host.into()),
                ..Default::default()
            }),
            status: Some(SwarmStatus {
                state: Some(state),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_servers_own_engine_and_never_anothers() {
        use NodeSpecRoleEnum::{MANAGER, WORKER};
        use NodeState::{DOWN, READY};
        let all = vec![
            sn(
                "unlabelled-down",
                "lambda-ns-pool-a-1f2e3",
                DOWN,
                WORKER,
                None,
            ),
            sn(
                "labelled-down",
                "lambda-ns-pool-a-1f2e3",
                DOWN,
                WORKER,
                Some("u1"),
            ),
            // The Swarm has not noticed yet that the engine died with its server.
            sn("still-ready", "lambda-ns-pool-a-1f2e3", READY, WORKER, None),
            sn(
                "anothers",
                "lambda-ns-pool-a-1f2e3",
                DOWN,
                WORKER,
                Some("u2"),
            ),
            sn("other-host", "lambda-ns-pool-a-9d8c7", DOWN, WORKER, None),
            sn("manager", "lambda-ns-pool-a-1f2e3", DOWN, MANAGER, None),
        ];
        let ids = |name: &str| -> Vec<String> {
            of_server(&all, name, "u1")
                .into_iter()
                .filter_map(|n| n.id.clone())
                .collect()
        };
        assert_eq!(
            ids("lambda-ns-pool-a-1f2e3"),
            ["unlabelled-down", "labelled-down", "still-ready"]
        );
        // The host name is the server name as a VM gets it (lowercase, `-` for the rest).
        assert_eq!(ids("lambda-ns-Pool_a-1f2e3").len(), 3);
    }

    #[test]
    fn only_unclaimed_engines_are_adopted() {
        use NodeSpecRoleEnum::WORKER;
        use NodeState::DOWN;
        let all = vec![
            sn("bare", "lambda-ns-pool-a-1f2e3", DOWN, WORKER, None),
            sn("ours", "lambda-ns-pool-a-1f2e3", DOWN, WORKER, Some("u1")),
        ];
        let ids: Vec<_> = unlabelled(of_server(&all, "lambda-ns-pool-a-1f2e3", "u1"))
            .into_iter()
            .filter_map(|n| n.id.as_deref())
            .collect();
        assert_eq!(ids, ["bare"]);
    }
}
