//! The membership reconciler (Swarm side) of `Node`s.
//!
//! - The manager's swarm is initialised at start (idempotent).
//! - Each Node's Swarm node is found by its labels, else by the server's address or host name
//!   ([`matching`]); it is labelled (owner, `lambda.pool`, `lambda.flavor`, the pool's
//!   `nodeLabels`) and kept `active`. Status: `swarmNodeId`, `swarmState`,
//!   `swarmAvailability`, condition `Joined`; earlier incarnations of the same VM that are down
//!   are removed.
//! - A Swarm node `down` longer than the grace period, or a server ACTIVE longer than the join
//!   timeout without a Swarm node, makes condition `Healthy` False: the pool replaces the Node.
//! - Finalizer [`FINALIZER`]: on deletion the Swarm node is drained, its tasks get a bounded
//!   time to move ([`ClusterTimings::drain_timeout`] from the deletion), then it is removed and
//!   the finalizer released, so the node reconciler may delete the VM.
//! - A periodic [`sweep`] removes Swarm nodes labelled as this instance's whose Node is gone.
//!
//! [`ClusterTimings::drain_timeout`]: super::cluster::ClusterTimings::drain_timeout

mod drain;
pub mod matching;
pub mod sweep;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::models::{Node as SwarmNode, NodeSpecAvailabilityEnum, NodeState};
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::api::{
    ConditionStatus, Conditions, NodePoolSpec, NodeSpec, Object, ObjectKey, node::NodeStatus,
};
use crate::runtime::conditions::set_condition;
use crate::runtime::finalizer::FinalizerError;
use crate::runtime::{
    Action, Cache, Controller, ControllerConfig, EventType, FinalizerEvent, Metrics, Recorder,
    finalizer,
};
use crate::store::{Store, StoreError};
use crate::swarm::labels::Owner;
use crate::swarm::{EventKind, SwarmError, SwarmEvent};

use super::ControllersConfig;
use super::cluster::ClusterConfig;
use super::node::{HEALTHY, JOINED, KIND, SERVER_READY, write_status};

/// The finalizer this controller puts on nodes.
pub const FINALIZER: &str = "lambda/node-membership";
/// Swarm node label: the node pool.
pub const LABEL_POOL: &str = "lambda.pool";
/// Swarm node label: the server's flavor.
pub const LABEL_FLAVOR: &str = "lambda.flavor";
/// How often a joined node is looked at again (Swarm marks a lost node `down` on its own).
const READY_RECHECK: Duration = Duration::from_secs(10);

/// Errors of the membership reconciler.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("Node {node}: {op}: {source}")]
    Swarm {
        node: ObjectKey,
        op: &'static str,
        #[source]
        source: SwarmError,
    },
    #[error("writing status of Node {node}: {source}")]
    Status {
        node: ObjectKey,
        #[source]
        source: StoreError,
    },
}

/// What the reconciles share.
pub struct Context {
    pub store: Store,
    pub cluster: ClusterConfig,
    pub recorder: Recorder,
    /// The controller's cache of nodes.
    pub nodes: Cache<NodeSpec>,
    /// Pools (their `nodeLabels`).
    pub pools: Cache<NodePoolSpec>,
    pub namespace: Option<String>,
}

impl Context {
    fn swarm_err(n: &Object<NodeSpec>, op: &'static str) -> impl Fn(SwarmError) -> MembershipError {
        let node = n.key();
        move |source| MembershipError::Swarm {
            node: node.clone(),
            op,
            source,
        }
    }

    async fn write(
        &self,
        n: &Object<NodeSpec>,
        change: impl Fn(&mut NodeStatus),
    ) -> Result<(), MembershipError> {
        write_status(&self.store, n, change)
            .await
            .map_err(|source| MembershipError::Status {
                node: n.key(),
                source,
            })
    }

    /// The labels a node's Swarm node carries.
    fn labels(&self, n: &Object<NodeSpec>) -> HashMap<String, String> {
        let owner = Owner {
            instance: self.cluster.instance.clone(),
            kind: KIND.to_string(),
            namespace: n.metadata.namespace().to_string(),
            name: n.metadata.name.clone(),
            uid: n.metadata.uid.clone().unwrap_or_default(),
        };
        let mut l = HashMap::new();
        if let Some(pool) = self
            .pools
            .get(&ObjectKey::new(n.metadata.namespace(), &n.spec.pool))
        {
            l.extend(pool.spec.node_labels.clone());
        }
        l.extend(owner.labels());
        l.insert(LABEL_POOL.into(), n.spec.pool.clone());
        l.insert(LABEL_FLAVOR.into(), n.spec.flavor.clone());
        l
    }
}

/// Reconciles one node's membership (finalizer, apply or cleanup).
pub async fn reconcile(
    node: Arc<Object<NodeSpec>>,
    ctx: Arc<Context>,
) -> Result<Action, FinalizerError<MembershipError>> {
    let store = ctx.store.clone();
    finalizer(&store, FINALIZER, node, |ev| async move {
        match ev {
            FinalizerEvent::Apply(n) => apply(&n, &ctx).await,
            FinalizerEvent::Cleanup(n) => drain::cleanup(&n, &ctx).await,
        }
    })
    .await
}

fn state_name(sn: &SwarmNode) -> String {
    sn.status
        .as_ref()
        .and_then(|s| s.state)
        .map(|s| s.to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn availability(sn: &SwarmNode) -> Option<NodeSpecAvailabilityEnum> {
    sn.spec.as_ref().and_then(|s| s.availability)
}

async fn remove_stale(
    n: &Object<NodeSpec>,
    ctx: &Context,
    stale: &[&SwarmNode],
) -> Result<(), MembershipError> {
    for s in stale {
        let id = s.id.clone().unwrap_or_default();
        tracing::info!(node = %n.key(), swarm_node = %id, "removing a stale Swarm node of this VM");
        ctx.cluster
            .swarm
            .remove_node(&id, true)
            .await
            .map_err(Context::swarm_err(n, "removing a stale Swarm node"))?;
    }
    Ok(())
}

async fn apply(n: &Object<NodeSpec>, ctx: &Context) -> Result<Action, MembershipError> {
    let all = ctx
        .cluster
        .swarm
        .list_nodes()
        .await
        .map_err(Context::swarm_err(n, "listing Swarm nodes"))?;
    let m = matching::find(n, &all);
    remove_stale(n, ctx, &m.stale).await?;
    let status = n.status.clone().unwrap_or_default();
    let generation = n.generation();
    let timings = &ctx.cluster.timings;
    let Some(sn) = m.node else {
        // Not joined (yet): unhealthy once the VM has been ACTIVE for the join timeout.
        let active_since = status
            .condition(SERVER_READY)
            .filter(|c| c.status == ConditionStatus::True)
            .map(|c| c.last_transition_time);
        let late = active_since
            .is_some_and(|t| (Utc::now() - t).to_std().unwrap_or_default() > timings.join_timeout);
        let (reason, msg) = match active_since {
            None => (
                "WaitingForServer",
                "waiting for the server to be ACTIVE".to_string(),
            ),
            Some(_) => (
                "WaitingForJoin",
                "waiting for the server's engine to join the Swarm".to_string(),
            ),
        };
        if late
            && !status
                .condition(HEALTHY)
                .is_some_and(|c| c.status == ConditionStatus::False)
        {
            let m = format!(
                "the server has been ACTIVE for more than {}s without joining the Swarm; replacing it",
                timings.join_timeout.as_secs()
            );
            ctx.recorder
                .emit(n, EventType::Warning, "JoinTimeout", &m)
                .await;
        }
        ctx.write(n, |s| {
            s.swarm_node_id = None;
            s.swarm_state = None;
            s.swarm_availability = None;
            set_condition(
                &mut s.conditions,
                JOINED,
                ConditionStatus::False,
                reason,
                &msg,
                Some(generation),
            );
            if late {
                let m = format!(
                    "not joined {}s after the server became ACTIVE",
                    timings.join_timeout.as_secs()
                );
                set_condition(
                    &mut s.conditions,
                    HEALTHY,
                    ConditionStatus::False,
                    "JoinTimeout",
                    &m,
                    Some(generation),
                );
            }
        })
        .await?;
        return Ok(Action::requeue(timings.poll));
    };
    let id = sn.id.clone().unwrap_or_default();
    // Labels and availability, written only when they differ.
    let want = ctx.labels(n);
    let have = sn
        .spec
        .as_ref()
        .and_then(|s| s.labels.clone())
        .unwrap_or_default();
    let missing: Vec<(&str, Option<&str>)> = want
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, v)| (k.as_str(), Some(v.as_str())))
        .collect();
    if !missing.is_empty() {
        ctx.cluster
            .swarm
            .label_node(&id, &missing)
            .await
            .map_err(Context::swarm_err(n, "labelling the Swarm node"))?;
    }
    if availability(sn) != Some(NodeSpecAvailabilityEnum::ACTIVE) {
        ctx.cluster
            .swarm
            .set_availability(&id, NodeSpecAvailabilityEnum::ACTIVE)
            .await
            .map_err(Context::swarm_err(n, "activating the Swarm node"))?;
    }
    let state = state_name(sn);
    let ready = sn.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY);
    if ready && status.swarm_node_id.as_deref() != Some(id.as_str()) {
        let host = matching::hostname(sn).unwrap_or_default();
        let msg = format!("joined the Swarm as node {id} ({host})");
        ctx.recorder
            .emit(n, EventType::Normal, "Joined", &msg)
            .await;
    }
    // Down since: when Joined last flipped to False for being down.
    let down_since = status
        .condition(JOINED)
        .filter(|c| c.status == ConditionStatus::False && c.reason == "NodeDown")
        .map(|c| c.last_transition_time);
    let down_for = down_since
        .map(|t| (Utc::now() - t).to_std().unwrap_or_default())
        .unwrap_or_default();
    let unhealthy = !ready && down_since.is_some() && down_for > timings.down_grace;
    if unhealthy
        && !status
            .condition(HEALTHY)
            .is_some_and(|c| c.status == ConditionStatus::False)
    {
        let m = format!(
            "Swarm node {id} has been {state} for {}s (grace {}s); replacing the node",
            down_for.as_secs(),
            timings.down_grace.as_secs()
        );
        ctx.recorder
            .emit(n, EventType::Warning, "NodeDown", &m)
            .await;
    }
    ctx.write(n, |s| {
        s.swarm_node_id = Some(id.clone());
        s.swarm_state = Some(state.clone());
        s.swarm_availability = Some("active".into());
        if ready {
            set_condition(
                &mut s.conditions,
                JOINED,
                ConditionStatus::True,
                "Ready",
                &format!("Swarm node {id} is ready and active"),
                Some(generation),
            );
            set_condition(
                &mut s.conditions,
                HEALTHY,
                ConditionStatus::True,
                "Healthy",
                "",
                Some(generation),
            );
        } else {
            set_condition(
                &mut s.conditions,
                JOINED,
                ConditionStatus::False,
                "NodeDown",
                &format!("Swarm node {id} is {state}"),
                Some(generation),
            );
            if unhealthy {
                set_condition(
                    &mut s.conditions,
                    HEALTHY,
                    ConditionStatus::False,
                    "NodeDown",
                    &format!(
                        "Swarm node {id} {state} for more than {}s",
                        timings.down_grace.as_secs()
                    ),
                    Some(generation),
                );
            }
        }
    })
    .await?;
    Ok(Action::requeue(if ready {
        READY_RECHECK
    } else {
        timings.poll
    }))
}

/// Runs the membership controller (and its sweep) until `stop`.
pub async fn run(
    store: Store,
    metrics: Arc<Metrics>,
    cfg: &ControllersConfig,
    cluster: ClusterConfig,
    stop: CancellationToken,
) {
    let advertise = cluster.advertise_addr.clone().unwrap_or_else(|| {
        cluster
            .join_addr
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_else(|| cluster.join_addr.clone())
    });
    if let Err(e) = cluster.swarm.init_swarm(&advertise, "0.0.0.0:2377").await {
        tracing::error!(error = %e, "initialising the swarm");
    }
    let ns = cfg.namespace.as_deref();
    let mut ccfg = ControllerConfig::named("membership");
    ccfg.runner.resync = Some(cfg.resync);
    let pools = Cache::new();
    let controller = Controller::<NodeSpec>::new(store.clone(), ns, ccfg)
        .with_metrics(metrics)
        .graceful_shutdown_on(stop.clone());
    let nodes = controller.cache();
    let mapper_nodes = nodes.clone();
    // A pool's nodeLabels change relabels its nodes.
    let controller = controller.watches(pools.clone(), move |p: &Object<NodePoolSpec>| {
        let uid = p.metadata.uid.clone().unwrap_or_default();
        mapper_nodes
            .by_owner(&uid)
            .iter()
            .map(|n| n.key())
            .collect()
    });
    let sweep_every = cluster.timings.sweep_every;
    let tx = controller.trigger_sender();
    let ctx = Arc::new(Context {
        store: store.clone(),
        cluster,
        recorder: Recorder::new(store, "controller/membership", cfg.event_ttl),
        nodes,
        pools,
        namespace: cfg.namespace.clone(),
    });
    // Swarm's node events (a join, a node going down) trigger the Nodes they may concern at
    // once, rather than at their next poll.
    let events = {
        let ctx = ctx.clone();
        let stop = stop.clone();
        async move {
            let all = || ctx.nodes.keys();
            ctx.cluster
                .swarm
                .follow_events(
                    stop,
                    |ev| {
                        for k in keys_for_node_event(&ctx.nodes, ev) {
                            let _ = tx.send(k);
                        }
                    },
                    || {
                        for k in all() {
                            let _ = tx.send(k);
                        }
                    },
                )
                .await
        }
    };
    tokio::join!(
        controller.run(reconcile, |_, _, _| Action::backoff(), ctx.clone()),
        sweep::run(ctx, sweep_every, stop),
        events,
    );
}

/// The Nodes a Swarm event may concern: for a node event, the Node of that Swarm node, and every
/// Node not joined yet (a new Swarm node is not known to be theirs before a lookup).
pub fn keys_for_node_event(nodes: &Cache<NodeSpec>, ev: &SwarmEvent) -> Vec<ObjectKey> {
    if ev.kind != EventKind::Node {
        return Vec::new();
    }
    nodes
        .list()
        .iter()
        .filter(|n| {
            let s = n.status.as_ref();
            s.and_then(|s| s.swarm_node_id.as_deref()) == Some(ev.id.as_str())
                || !s.is_some_and(|s| s.is_true(JOINED))
        })
        .map(|n| n.key())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::node::NodeStatus;
    use crate::runtime::conditions::set_condition;
    use crate::runtime::watcher::WatcherEvent;
    use crate::store::ObjectList;

    fn node(name: &str, swarm_id: Option<&str>, joined: bool) -> Object<NodeSpec> {
        let mut n = Object::new(
            "default",
            name,
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
        let mut s = NodeStatus {
            swarm_node_id: swarm_id.map(String::from),
            ..Default::default()
        };
        if joined {
            set_condition(
                &mut s.conditions,
                JOINED,
                ConditionStatus::True,
                "Ready",
                "",
                None,
            );
        }
        n.status = Some(s);
        n
    }

    #[test]
    fn node_events_trigger_their_node_and_the_ones_not_joined_yet() {
        let c = Cache::<NodeSpec>::new();
        c.apply(WatcherEvent::Listed(ObjectList {
            items: vec![
                node("joined", Some("s1"), true),
                node("other", Some("s2"), true),
                node("new", None, false),
            ],
            invalid: vec![],
            revision: 1,
        }));
        let ev = |kind, id: &str| SwarmEvent {
            kind,
            action: "update".into(),
            id: id.into(),
            attributes: Default::default(),
        };
        let mut keys: Vec<String> = keys_for_node_event(&c, &ev(EventKind::Node, "s1"))
            .iter()
            .map(|k| k.name.clone())
            .collect();
        keys.sort();
        assert_eq!(keys, ["joined", "new"]);
        assert!(keys_for_node_event(&c, &ev(EventKind::Container, "s1")).is_empty());
    }
}
