//! Swarm membership: inspect/init (idempotent), join tokens, nodes.

use std::collections::HashMap;

use bollard::models::{
    JoinTokens, Node, NodeSpec, NodeSpecAvailabilityEnum, Swarm as SwarmInfo, SwarmInitRequest,
};
use bollard::query_parameters::{
    DeleteNodeOptionsBuilder, ListNodesOptionsBuilder, UpdateNodeOptionsBuilder,
};

use super::{Swarm, SwarmError};

const UPDATE_ATTEMPTS: u32 = 5;

impl Swarm {
    /// The swarm this daemon manages; `None` when it is not a manager of an active swarm.
    pub async fn inspect_swarm(&self) -> Result<Option<SwarmInfo>, SwarmError> {
        match self.docker.inspect_swarm().await {
            Ok(s) => Ok(Some(s)),
            Err(e) => match SwarmError::from_bollard("inspect", "swarm", e) {
                SwarmError::NotManager { .. } => Ok(None),
                e => Err(e),
            },
        }
    }

    /// Initialises a swarm advertising `advertise_addr`, unless this daemon already manages one;
    /// returns the swarm id either way.
    pub async fn init_swarm(
        &self,
        advertise_addr: &str,
        listen_addr: &str,
    ) -> Result<String, SwarmError> {
        if let Some(s) = self.inspect_swarm().await? {
            return Ok(super::opt_string(&s.id));
        }
        let req = SwarmInitRequest {
            advertise_addr: Some(advertise_addr.to_string()),
            listen_addr: Some(listen_addr.to_string()),
            ..Default::default()
        };
        self.docker
            .init_swarm(req)
            .await
            .map_err(|e| SwarmError::from_bollard("init", "swarm", e))
    }

    /// The worker and manager join tokens.
    pub async fn join_tokens(&self) -> Result<JoinTokens, SwarmError> {
        let s = self.inspect_swarm().await?.ok_or(SwarmError::NotManager {
            op: "inspect",
            object: "swarm".into(),
            message: "no active swarm".into(),
        })?;
        s.join_tokens.ok_or(SwarmError::Unexpected {
            op: "inspect",
            object: "swarm".into(),
            message: "no join tokens in the answer".into(),
        })
    }

    /// Every node of the swarm.
    pub async fn list_nodes(&self) -> Result<Vec<Node>, SwarmError> {
        let opts = ListNodesOptionsBuilder::default()
            .filters(&HashMap::<String, Vec<String>>::new())
            .build();
        self.docker
            .list_nodes(Some(opts))
            .await
            .map_err(|e| SwarmError::from_bollard("list", "nodes", e))
    }

    /// One node by id or name.
    pub async fn inspect_node(&self, id: &str) -> Result<Node, SwarmError> {
        self.docker
            .inspect_node(id)
            .await
            .map_err(|e| SwarmError::from_bollard("inspect", &format!("node {id}"), e))
    }

    /// Changes a node's spec with `change`, at its current version index (re-read and retried
    /// when another writer got there first).
    pub async fn update_node(
        &self,
        id: &str,
        change: impl Fn(&mut NodeSpec),
    ) -> Result<(), SwarmError> {
        let object = format!("node {id}");
        for _ in 0..UPDATE_ATTEMPTS {
            let node = self.inspect_node(id).await?;
            let version = node.version.and_then(|v| v.index).unwrap_or(0);
            let mut spec = node.spec.unwrap_or_default();
            change(&mut spec);
            let opts = UpdateNodeOptionsBuilder::default()
                .version(version as i64)
                .build();
            match self.docker.update_node(id, spec, opts).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let e = SwarmError::from_bollard("update", &object, e);
                    if !e.is_out_of_sequence() {
                        return Err(e);
                    }
                }
            }
        }
        Err(SwarmError::OutOfSequence {
            op: "update",
            object,
            attempts: UPDATE_ATTEMPTS,
        })
    }

    /// Sets (or, with `None` values, removes) labels of a node.
    pub async fn label_node(
        &self,
        id: &str,
        labels: &[(&str, Option<&str>)],
    ) -> Result<(), SwarmError> {
        self.update_node(id, |spec| {
            let l = spec.labels.get_or_insert_with(HashMap::new);
            for (k, v) in labels {
                match v {
                    Some(v) => l.insert(k.to_string(), v.to_string()),
                    None => l.remove(*k),
                };
            }
        })
        .await
    }

    /// Sets a node's availability (`Drain` moves its tasks elsewhere).
    pub async fn set_availability(
        &self,
        id: &str,
        availability: NodeSpecAvailabilityEnum,
    ) -> Result<(), SwarmError> {
        self.update_node(id, |spec| spec.availability = Some(availability))
            .await
    }

    /// Removes a node from the swarm (`force` for a node that is still up); absent is fine.
    pub async fn remove_node(&self, id: &str, force: bool) -> Result<(), SwarmError> {
        let opts = DeleteNodeOptionsBuilder::default().force(force).build();
        match self.docker.delete_node(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) => match SwarmError::from_bollard("remove", &format!("node {id}"), e) {
                e if e.is_not_found() => Ok(()),
                e => Err(e),
            },
        }
    }
}

/// The address a node's tasks answer on from outside: `Status.Addr`, or for a manager that
/// reports `0.0.0.0` (or nothing), the host part of its advertise address.
pub fn node_address(node: &Node) -> Option<String> {
    let status = node
        .status
        .as_ref()
        .and_then(|s| s.addr.clone())
        .filter(|a| !a.is_empty() && a != "0.0.0.0");
    status.or_else(|| {
        let addr = node.manager_status.as_ref()?.addr.as_ref()?;
        let host = match addr.rsplit_once(':') {
            Some((h, _)) => h,
            None => addr.as_str(),
        };
        Some(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        )
        .filter(|h| !h.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ManagerStatus, NodeStatus};

    #[test]
    fn node_address_prefers_status_then_manager_advertise_address() {
        let mut n = Node {
            status: Some(NodeStatus {
                addr: Some("10.251.0.2".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(node_address(&n).as_deref(), Some("10.251.0.2"));
        n.status.as_mut().unwrap().addr = Some("0.0.0.0".into());
        assert_eq!(node_address(&n), None);
        n.manager_status = Some(ManagerStatus {
            addr: Some("10.251.0.1:2377".into()),
            ..Default::default()
        });
        assert_eq!(node_address(&n).as_deref(), Some("10.251.0.1"));
    }
}
