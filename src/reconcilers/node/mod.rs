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
//!   (drained, removed from the Swarm), then deletes the server and waits until Nova says it
//!   is gone.
//! - A periodic [`sweep`] deletes servers tagged with this platform instance whose Node is gone.

pub mod sweep;
pub mod userdata;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{ConditionStatus, Conditions, NodeSpec, Object, ObjectKey, node::NodeStatus};
use crate::openstack::{self, NetworkSpec, Server, ServerFilter, ServerSpec, ServerStatus};
use crate::runtime::conditions::{rollup, set_condition};
use crate::runtime::finalizer::FinalizerError;
use crate::runtime::{
    Action, Cache, Controller, ControllerConfig, EventType, FinalizerEvent, Metrics, Recorder,
    finalizer,
};
use crate::store::{Store, StoreError};
use crate::swarm::SwarmError;

use super::ControllersConfig;
use super::cluster::{ClusterConfig, META_POOL, backoff, owner_tag, server_name};

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

    async fn event(&self, n: &Object<NodeSpec>, type_: EventType, reason: &str, message: &str) {
        if let Err(e) = self.recorder.publish(n, type_, reason, message).await {
            tracing::warn!(node = %n.key(), error = %e, "recording event");
        }
    }

    /// Changes the node's current status with `change` (its own fields), then rolls `Ready` up.
    async fn write(
        &self,
        n: &Object<NodeSpec>,
        change: impl Fn(&mut NodeStatus),
    ) -> Result<(), NodeError> {
        let generation = n.generation();
        self.store
            .modify_status(n, |s| {
                change(s);
                s.observed_generation = Some(generation);
                roll_up(s, generation);
            })
            .await
            .map(|_| ())
            .map_err(|source| NodeError::Status {
                node: n.key(),
                source,
            })
    }
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
        ctx.event(n, EventType::Warning, "DuplicateServer", &msg)
            .await;
        delete_server(n, ctx, &extra.id).await?;
    }
    Ok(keep)
}

async fn tagged_servers(n: &Object<NodeSpec>, ctx: &Context) -> Result<Vec<Server>, NodeError> {
    let filter = ServerFilter {
        tags: vec![owner_tag(&uid_of(n))],
        ..Default::default()
    };
    let mut found = ctx
        .cluster
        .cloud
        .compute()
        .list_servers(&filter)
        .await
        .map_err(Context::cloud_err(n, "listing the node's servers"))?;
    found.retain(|s| !gone(s));
    Ok(found)
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
        Some(s) => observe(n, ctx, s).await,
        None => {
            let had = n.status.as_ref().and_then(|s| s.server_id.clone());
            if let Some(id) = had
                && n.status.as_ref().and_then(|s| s.vm_state.as_deref()) != Some("ERROR")
            {
                let msg = format!(
                    "server {id} is gone (deleted outside the platform?); creating a new one"
                );
                ctx.event(n, EventType::Warning, "ServerGone", &msg).await;
            }
            create(n, ctx).await
        }
    }
}

fn not_ready(s: &mut NodeStatus, generation: i64, reason: &str, message: &str) {
    set_condition(
        &mut s.conditions,
        SERVER_READY,
        ConditionStatus::False,
        reason,
        message,
        Some(generation),
    );
}

async fn create(n: &Object<NodeSpec>, ctx: &Context) -> Result<Action, NodeError> {
    let uid = uid_of(n);
    let generation = n.generation();
    if let Some(at) = ctx.retry_at.lock().ok().and_then(|m| m.get(&uid).copied())
        && at > Instant::now()
    {
        return Ok(Action::requeue(at - Instant::now()));
    }
    let key = n.key();
    let token = ctx
        .cluster
        .swarm
        .join_tokens()
        .await
        .map_err(|source| NodeError::JoinToken {
            node: key.clone(),
            source,
        })?
        .worker
        .unwrap_or_default();
    let Some(script) = userdata::render(&userdata::JoinScript {
        node: &key.to_string(),
        token: &token,
        join_addr: &ctx.cluster.join_addr,
    }) else {
        let msg = format!(
            "cannot write the join script: unexpected characters in the join token or in --swarm-join-addr {:?}",
            ctx.cluster.join_addr
        );
        ctx.write(n, |s| not_ready(s, generation, "InvalidJoinConfig", &msg))
            .await?;
        return Ok(Action::requeue(CLOUD_RETRY));
    };
    let ns = n.metadata.namespace();
    let name = server_name("lambda", ns, &n.metadata.name);
    let owner = ctx.cluster.owner(KIND, ns, &n.metadata.name, &uid);
    let mut metadata = owner.metadata();
    metadata.insert(META_POOL.to_string(), n.spec.pool.clone());
    let spec = ServerSpec {
        name: name.clone(),
        flavor: n.spec.flavor.clone(),
        image: n.spec.image.clone(),
        networks: match &n.spec.network {
            Some(net) => NetworkSpec::Named(vec![net.clone()]),
            None => NetworkSpec::Auto,
        },
        key_name: n.spec.key_pair.clone(),
        security_groups: n.spec.security_groups.clone(),
        availability_zone: n.spec.availability_zone.clone(),
        user_data: Some(script.into_bytes()),
        metadata,
        tags: owner.tags(),
    };
    match ctx.cluster.cloud.create_server(&spec).await {
        Ok(id) => {
            let msg = format!("server {id} ({name}) requested from image {}", n.spec.image);
            ctx.event(n, EventType::Normal, "ServerCreated", &msg).await;
            ctx.write(n, |s| {
                s.server_id = Some(id.clone());
                s.server_name = Some(name.clone());
                s.vm_state = Some("BUILD".into());
                s.addresses.clear();
                not_ready(s, generation, "Building", &msg);
            })
            .await?;
            Ok(Action::requeue(ctx.cluster.timings.poll))
        }
        Err(e) => {
            let (reason, msg) = match &e {
                openstack::Error::QuotaExceeded(_) => ("QuotaExceeded", e.to_string()),
                openstack::Error::NoSuchResource { resource, name } => (
                    "InvalidCloudRef",
                    format!(
                        "{resource} {name:?} does not exist in the cloud (spec of the node pool)"
                    ),
                ),
                openstack::Error::BadRequest(_) => ("InvalidServerSpec", e.to_string()),
                _ => return Err(Context::cloud_err(n, "creating the server")(e)),
            };
            let first = n
                .status
                .as_ref()
                .and_then(|s| s.condition(SERVER_READY))
                .is_none_or(|c| c.reason != reason);
            if first {
                ctx.event(n, EventType::Warning, reason, &msg).await;
            }
            ctx.write(n, |s| {
                not_ready(s, generation, reason, &msg);
                s.last_error = Some(msg.clone());
            })
            .await?;
            Ok(Action::requeue(CLOUD_RETRY))
        }
    }
}

fn addresses(s: &Server) -> Vec<String> {
    let mut v: Vec<String> = s
        .addresses
        .values()
        .flatten()
        .map(|a| a.addr.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}

fn status_name(s: &Server) -> String {
    serde_json::to_value(s.status)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| "UNKNOWN".into())
}

async fn observe(n: &Object<NodeSpec>, ctx: &Context, server: Server) -> Result<Action, NodeError> {
    let generation = n.generation();
    let vm = status_name(&server);
    let addrs = addresses(&server);
    let id = server.id.clone();
    let base = |s: &mut NodeStatus| {
        s.server_id = Some(id.clone());
        s.server_name = Some(server.name.clone());
        s.vm_state = Some(vm.clone());
        s.addresses = addrs.clone();
    };
    match server.status {
        ServerStatus::Active => {
            if let Ok(mut m) = ctx.retry_at.lock() {
                m.remove(&uid_of(n));
            }
            ctx.write(n, |s| {
                base(s);
                s.server_failures = 0;
                s.last_error = None;
                set_condition(
                    &mut s.conditions,
                    SERVER_READY,
                    ConditionStatus::True,
                    "Active",
                    &format!("server {id} is ACTIVE at {}", addrs.join(", ")),
                    Some(generation),
                );
            })
            .await?;
            Ok(Action::requeue(ACTIVE_RECHECK))
        }
        ServerStatus::Error => {
            let fault = server
                .fault
                .as_ref()
                .map(|f| f.message.clone())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "no fault message".into());
            let failures = n.status.as_ref().map_or(0, |s| s.server_failures) + 1;
            let wait = backoff(
                ctx.cluster.timings.error_backoff,
                ctx.cluster.timings.error_backoff_max,
                failures,
            );
            let reason = if fault.to_ascii_lowercase().contains("quota") {
                "QuotaExceeded"
            } else {
                "ServerError"
            };
            let msg = format!(
                "server {id} is in ERROR: {fault}; deleting it, a new one in {}s (failure {failures})",
                wait.as_secs()
            );
            ctx.event(n, EventType::Warning, reason, &msg).await;
            delete_server(n, ctx, &id).await?;
            if let Ok(mut m) = ctx.retry_at.lock() {
                m.insert(uid_of(n), Instant::now() + wait);
            }
            ctx.write(n, |s| {
                base(s);
                s.server_id = None;
                s.addresses.clear();
                s.server_failures = failures;
                s.last_error = Some(fault.clone());
                not_ready(s, generation, reason, &msg);
            })
            .await?;
            Ok(Action::requeue(wait))
        }
        ServerStatus::Build => {
            ctx.write(n, |s| {
                base(s);
                not_ready(
                    s,
                    generation,
                    "Building",
                    &format!("server {id} is building"),
                );
            })
            .await?;
            Ok(Action::requeue(ctx.cluster.timings.poll))
        }
        _ => {
            let msg = format!("server {id} is {vm}");
            ctx.write(n, |s| {
                base(s);
                not_ready(s, generation, "NotActive", &msg);
            })
            .await?;
            Ok(Action::requeue(ctx.cluster.timings.poll * 5))
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
    let mut servers = tagged_servers(n, ctx).await?;
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
        not_ready(
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
