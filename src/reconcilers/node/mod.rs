//! The node reconciler (compute side): one Nova server per `Node`.
//!
//! - The server boots from `spec.image` with user-data that joins the Swarm (the manager's
//!   current worker token and address, see [`userdata`]), and carries the ownership tags and
//!   metadata of [`ClusterConfig::owner`] plus `lambda:pool`.
//! - Idempotent across controller crashes: the server is looked up by the Node's owner tag
//!   before anything is created, so a crash between Nova's answer and the status write finds
//!   the server again; should two ever exist, the oldest is kept and the others deleted.
//! - Status: server id and name, addresses, Nova's status as `vmState`, condition
//!   [`SERVER_READY`]; `Ready` rolls it up with the membership reconciler's conditions
//!   ([`roll_up`]). Status writes are read-modify-write on the current status
//!   ([`Store::modify_status`]) because the membership reconciler writes the same object.
//! - A server in ERROR is deleted and recreated after an exponential backoff, its fault
//!   message in status; quota errors are a condition (`QuotaExceeded`) retried slowly, not a
//!   crash loop; an unknown flavor/image/network is `InvalidCloudRef`.
//! - Finalizer [`FINALIZER`]: on deletion it waits for the membership finalizer to let go
//!   (drained, removed from the Swarm), then deletes the server, waits until Nova says it is
//!   gone and removes the Swarm node its engine may have left after all ([`leftovers`]).
//! - A periodic [`sweep`] deletes servers tagged with this platform instance whose Node is
//!   gone, and then their engines' Swarm nodes.

pub mod leftovers;
mod server;
pub mod sweep;
pub mod userdata;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{ConditionStatus, Conditions, NodeSpec, Object, ObjectKey, node::NodeStatus};
use crate::openstack::{self, Server, ServerFilter, ServerStatus};
use crate::runtime::conditions::{rollup, set_condition};
use crate::runtime::finalizer::FinalizerError;
use crate::runtime::{
    Action, Cache, Controller, ControllerConfig, EventType, FinalizerEvent, Metrics, Recorder,
    finalizer,
};
use crate::store::{Store, StoreError};
use crate::swarm::SwarmError;

use super::ControllersConfig;
use super::cluster::{ClusterConfig, owner_tag};

/// How long past the drain timeout a deleting Node waits for Nova to forget its server.
const GONE_PATIENCE: Duration = Duration::from_secs(120);

/// The finalizer this controller puts on nodes.
pub const FINALIZER: &str = "lambda/node-server";
/// Condition: the node's server exists and is ACTIVE.
pub const SERVER_READY: &str = "ServerReady";
/// Condition (membership): the node's engine is a ready, active Swarm worker.
pub const JOINED: &str = "Joined";
/// Condition (membership): False when the node must be replaced (down too long, never joined).
pub const HEALTHY: &str = "Healthy";
/// The roll-up condition.
pub const READY: &str = "Ready";
/// The `Node` kind in server metadata.
pub const KIND: &str = "Node";

/// Requeue while a cloud reference is wrong or the quota is exhausted: a fix on the cloud side
/// (image uploaded, quota raised, servers freed) heals it without anyone touching the Node.
const CLOUD_RETRY: Duration = Duration::from_secs(30);
/// How often an ACTIVE server is looked at again (it may go to ERROR or vanish).
const ACTIVE_RECHECK: Duration = Duration::from_secs(30);

/// Errors of the node reconciler.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("Node {node}: {op}: {source}")]
    Cloud {
        node: ObjectKey,
        op: &'static str,
        #[source]
        source: openstack::Error,
    },
    #[error("Node {node}: reading the Swarm join token: {source}")]
    JoinToken {
        node: ObjectKey,
        #[source]
        source: SwarmError,
    },
    #[error("writing status of Node {node}: {source}")]
    Status {
        node: ObjectKey,
        #[source]
        source: StoreError,
    },
    #[error("Node {node}: removing the Swarm node its deleted server left: {source}")]
    Leftover {
        node: ObjectKey,
        #[source]
        source: SwarmError,
    },
}

/// What the reconciles share.
pub struct Context {
    pub store: Store,
    pub cluster: ClusterConfig,
    pub recorder: Recorder,
    /// The controller's cache of nodes (the sweep reads it).
    pub nodes: Cache<NodeSpec>,
    /// Namespace the controller watches; the sweep stays inside it.
    pub namespace: Option<String>,
    /// Node uid → earliest time its server may be recreated after an ERROR.
    retry_at: Mutex<HashMap<String, Instant>>,
}

impl Context {
    /// A context; `nodes` should be the controller's cache.
    pub fn new(
        store: Store,
        cluster: ClusterConfig,
        recorder: Recorder,
        nodes: Cache<NodeSpec>,
        namespace: Option<String>,
    ) -> Self {
        Context {
            store,
            cluster,
            recorder,
            nodes,
            namespace,
            retry_at: Mutex::new(HashMap::new()),
        }
    }

    fn cloud_err(
        node: &Object<NodeSpec>,
        op: &'static str,
    ) -> impl Fn(openstack::Error) -> NodeError {
        let node = node.key();
        move |source| NodeError::Cloud {
            node: node.clone(),
            op,
            source,
        }
    }

    /// Changes the node's current status with `change` (its own fields), then rolls `Ready` up.
    async fn write(
        &self,
        n: &Object<NodeSpec>,
        change: impl Fn(&mut NodeStatus),
    ) -> Result<(), NodeError> {
        let generation = n.generation();
        write_status(&self.store, n, |s| {
            change(s);
            s.observed_generation = Some(generation);
        })
        .await
        .map_err(|source| NodeError::Status {
            node: n.key(),
            source,
        })
    }
}

/// Applies `change` (the caller's own fields) to a Node's *current* status and rolls `Ready` up,
/// in one compare-and-write: the compute and membership reconcilers both write Node status.
pub(crate) async fn write_status(
    store: &Store,
    n: &Object<NodeSpec>,
    change: impl Fn(&mut NodeStatus),
) -> Result<(), StoreError> {
    let generation = n.generation();
    store
        .modify_status(n, |s| {
            change(s);
            roll_up(s, generation);
        })
        .await
        .map(|_| ())
}

/// Sets `Ready` from [`SERVER_READY`], [`JOINED`] and [`HEALTHY`] (a missing `Healthy` counts
/// as healthy).
pub fn roll_up(s: &mut NodeStatus, generation: i64) {
    let (mut status, mut reason, mut message) = rollup(&s.conditions, &[SERVER_READY, JOINED]);
    if let Some(h) = s
        .condition(HEALTHY)
        .filter(|c| c.status == ConditionStatus::False)
    {
        (status, reason, message) = (ConditionStatus::False, h.reason.clone(), h.message.clone());
    }
    if status == ConditionStatus::True {
        reason = "Ready".into();
        message = "the server is ACTIVE and a ready Swarm worker".into();
    }
    set_condition(
        &mut s.conditions,
        READY,
        status,
        &reason,
        &message,
        Some(generation),
    );
}

/// Reconciles one node (finalizer, apply or cleanup).
pub async fn reconcile(
    node: Arc<Object<NodeSpec>>,
    ctx: Arc<Context>,
) -> Result<Action, FinalizerError<NodeError>> {
    let store = ctx.store.clone();
    finalizer(&store, FINALIZER, node, |ev| async move {
        match ev {
            FinalizerEvent::Apply(n) => apply(&n, &ctx).await,
            FinalizerEvent::Cleanup(n) => cleanup(&n, &ctx).await,
        }
    })
    .await
}

fn uid_of(n: &Object<NodeSpec>) -> String {
    n.metadata.uid.clone().unwrap_or_default()
}

fn gone(s: &Server) -> bool {
    matches!(s.status, ServerStatus::Deleted | ServerStatus::SoftDeleted)
}

/// The node's server: the one in status if Nova still has it, else the one carrying the node's
/// owner tag (the oldest, deleting any others: never two servers for one Node).
async fn find_server(n: &Object<NodeSpec>, ctx: &Context) -> Result<Option<Server>, NodeError> {
    let compute = ctx.cluster.cloud.compute();
    if let Some(id) = n.status.as_ref().and_then(|s| s.server_id.as_deref()) {
        match compute.get_server(id).await {
            Ok(s) if !gone(&s) => return Ok(Some(s)),
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(Context::cloud_err(n, "reading the server")(e)),
        }
    }
    let mut found = tagged_servers(n, ctx).await?;
    found.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    let mut it = found.into_iter();
    let keep = it.next();
    for extra in it {
        let msg = format!(
            "deleting server {} ({}): a second server for this node",
            extra.id, extra.name
        );
        ctx.recorder
            .emit(n, EventType::Warning, "DuplicateServer", &msg)
            .await;
        delete_server(n, ctx, &extra.id).await?;
    }
    Ok(keep)
}

async fn tagged_servers(n: &Object<NodeSpec>, ctx: &Context) -> Result<Vec<Server>, NodeError> {
    let mut found = listed_servers(n, ctx).await?;
    found.retain(|s| !gone(s));
    Ok(found)
}

/// The servers Nova lists with the node's owner tag, deleted ones it still shows included.
async fn listed_servers(n: &Object<NodeSpec>, ctx: &Context) -> Result<Vec<Server>, NodeError> {
    let filter = ServerFilter {
        tags: vec![owner_tag(&uid_of(n))],
        ..Default::default()
    };
    ctx.cluster
        .cloud
        .compute()
        .list_servers(&filter)
        .await
        .map_err(Context::cloud_err(n, "listing the node's servers"))
}

async fn delete_server(n: &Object<NodeSpec>, ctx: &Context, id: &str) -> Result<(), NodeError> {
    match ctx.cluster.cloud.compute().delete_server(id).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(Context::cloud_err(n, "deleting the server")(e)),
    }
}

async fn apply(n: &Object<NodeSpec>, ctx: &Context) -> Result<Action, NodeError> {
    match find_server(n, ctx).await? {
        Some(s) => server::observe(n, ctx, s).await,
        None => {
            let had = n.status.as_ref().and_then(|s| s.server_id.clone());
            if let Some(id) = had
                && n.status.as_ref().and_then(|s| s.vm_state.as_deref()) != Some("ERROR")
            {
                let msg = format!(
                    "server {id} is gone (deleted outside the platform?); creating a new one"
                );
                ctx.recorder
                    .emit(n, EventType::Warning, "ServerGone", &msg)
                    .await;
            }
            server::create(n, ctx).await
        }
    }
}

async fn cleanup(n: &Object<NodeSpec>, ctx: &Context) -> Result<Action, NodeError> {
    // Membership drains and removes the Swarm node first; only then may the VM go.
    if n.metadata
        .finalizers
        .iter()
        .any(|f| f == crate::reconcilers::membership::FINALIZER)
    {
        return Ok(Action::requeue(ctx.cluster.timings.poll));
    }
    let listed = listed_servers(n, ctx).await?;
    let mut servers: Vec<Server> = listed.iter().filter(|s| !gone(s)).cloned().collect();
    if let Some(id) = n.status.as_ref().and_then(|s| s.server_id.clone())
        && !servers.iter().any(|s| s.id == id)
    {
        match ctx.cluster.cloud.compute().get_server(&id).await {
            Ok(s) if !gone(&s) => servers.push(s),
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(Context::cloud_err(n, "reading the server")(e)),
        }
    }
    if servers.is_empty() {
        // Deleted, but Nova still shows it so: its engine may still run (and join). Waited
        // for a bounded time (a teardown that never ends must not keep the Node forever).
        let since = n
            .metadata
            .deletion_timestamp
            .unwrap_or_else(chrono::Utc::now);
        let waited = (chrono::Utc::now() - since).to_std().unwrap_or_default();
        if listed.iter().any(|s| s.status == ServerStatus::Deleted)
            && waited < ctx.cluster.timings.drain_timeout + GONE_PATIENCE
        {
            return Ok(Action::requeue(ctx.cluster.timings.poll));
        }
        // The engine may have joined after membership let go: gone with its server now.
        let name = super::cluster::server_name("lambda", n.metadata.namespace(), &n.metadata.name);
        let removed = leftovers::remove(&ctx.cluster.swarm, &name, &uid_of(n))
            .await
            .map_err(|source| NodeError::Leftover {
                node: n.key(),
                source,
            })?;
        if !removed.is_empty() {
            let msg = format!(
                "removed Swarm node(s) {} of the deleted server",
                removed.join(", ")
            );
            ctx.recorder
                .emit(n, EventType::Normal, "LeftSwarm", &msg)
                .await;
        }
        if let Ok(mut m) = ctx.retry_at.lock() {
            m.remove(&uid_of(n));
        }
        return Ok(Action::await_change());
    }
    let generation = n.generation();
    for s in &servers {
        delete_server(n, ctx, &s.id).await?;
    }
    let ids: Vec<String> = servers.iter().map(|s| s.id.clone()).collect();
    ctx.write(n, |s| {
        s.vm_state = Some("DELETING".into());
        server::not_ready(
            s,
            generation,
            "Deleting",
            &format!("deleting server {}", ids.join(", ")),
        );
    })
    .await?;
    Ok(Action::requeue(ctx.cluster.timings.poll))
}

/// Runs the node controller (and its orphan sweep) until `stop`.
pub async fn run(
    store: Store,
    metrics: Arc<Metrics>,
    cfg: &ControllersConfig,
    cluster: ClusterConfig,
    stop: CancellationToken,
) {
    let ns = cfg.namespace.as_deref();
    let mut ccfg = ControllerConfig::named("node");
    ccfg.runner.resync = Some(cfg.resync);
    let controller = Controller::<NodeSpec>::new(store.clone(), ns, ccfg)
        .with_metrics(metrics)
        .graceful_shutdown_on(stop.clone());
    let sweep_every = cluster.timings.sweep_every;
    let ctx = Arc::new(Context::new(
        store.clone(),
        cluster,
        Recorder::new(store, "controller/node", cfg.event_ttl),
        controller.cache(),
        cfg.namespace.clone(),
    ));
    tokio::join!(
        controller.run(reconcile, |_, _, _| Action::backoff(), ctx.clone()),
        sweep::run(ctx, sweep_every, stop),
    );
}
