//! Ownership bookkeeping and garbage collection of `Node`s.
//!
//! - `nodepool-nodes`: keeps `NodePool.status.nodes`, `replicas` and `readyReplicas` equal to the
//!   `Node`s the pool owns (by `ownerReferences` uid), and on deletion of a pool deletes its nodes
//!   (finalizer `lambda/nodepool-nodes`) before the pool goes.
//! - `node-orphans`: deletes a `Node` whose controlling `NodePool` no longer exists (removed
//!   behind the controller's back, e.g. `etcdctl del`, or recreated with another uid), with a
//!   Warning event `OwnerGone`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::api::{Conditions, NodePoolSpec, NodeSpec, Object, ObjectKey, Resource};
use crate::runtime::finalizer::FinalizerError;
use crate::runtime::{
    Action, Cache, Controller, ControllerConfig, EventType, FinalizerEvent, Metrics, Recorder,
    finalizer,
};
use crate::store::{Store, StoreError};

use super::ControllersConfig;

/// The finalizer this module puts on node pools.
pub const POOL_FINALIZER: &str = "lambda/nodepool-nodes";

/// Errors of the gc reconcilers.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("writing status of NodePool {pool}: {source}")]
    Status {
        pool: ObjectKey,
        #[source]
        source: StoreError,
    },
    #[error("deleting Node {node}: {source}")]
    Delete {
        node: ObjectKey,
        #[source]
        source: StoreError,
    },
    #[error("reading NodePool {pool}: {source}")]
    Read {
        pool: ObjectKey,
        #[source]
        source: StoreError,
    },
}

/// What the gc reconcilers share.
pub struct Context {
    pub store: Store,
    /// Nodes, fed by the pool controller's `owns()` watch (so a pool is triggered only after
    /// this cache holds the change that triggered it).
    pub nodes: Cache<NodeSpec>,
    /// Pools, fed by the node controller's `watches()` watch.
    pub pools: Cache<NodePoolSpec>,
    pub recorder: Recorder,
}

/// Converges one pool's bookkeeping (see the module docs).
pub async fn reconcile_pool(
    pool: Arc<Object<NodePoolSpec>>,
    ctx: Arc<Context>,
) -> Result<Action, FinalizerError<GcError>> {
    let store = ctx.store.clone();
    finalizer(&store, POOL_FINALIZER, pool, |ev| async move {
        match ev {
            FinalizerEvent::Apply(pool) => {
                let uid = pool.metadata.uid.clone().unwrap_or_default();
                let owned = ctx.nodes.by_owner(&uid);
                let mut names: Vec<String> =
                    owned.iter().map(|n| n.metadata.name.clone()).collect();
                names.sort();
                let ready = owned
                    .iter()
                    .filter(|n| n.status.as_ref().is_some_and(|s| s.is_true("Ready")))
                    .count() as u32;
                crate::runtime::status::patch_status(&ctx.store, &pool, |s| {
                    s.replicas = names.len() as u32;
                    s.ready_replicas = ready;
                    s.nodes = names;
                })
                .await
                .map_err(|source| GcError::Status {
                    pool: pool.key(),
                    source,
                })?;
                Ok(Action::await_change())
            }
            FinalizerEvent::Cleanup(pool) => {
                let uid = pool.metadata.uid.clone().unwrap_or_default();
                let owned = ctx.nodes.by_owner(&uid);
                if owned.is_empty() {
                    return Ok(Action::await_change());
                }
                for n in owned.iter().filter(|n| !n.is_deleting()) {
                    delete_node(&ctx.store, n).await?;
                }
                // Nodes may have cleanup of their own (their servers); wait for them to go.
                Ok(Action::requeue(Duration::from_secs(1)))
            }
        }
    })
    .await
}

async fn delete_node(store: &Store, n: &Object<NodeSpec>) -> Result<(), GcError> {
    match store
        .delete::<NodeSpec>(n.metadata.namespace(), &n.metadata.name)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(source) => Err(GcError::Delete {
            node: n.key(),
            source,
        }),
    }
}

/// Deletes one node if its controlling pool is gone (see the module docs).
pub async fn reconcile_node(
    node: Arc<Object<NodeSpec>>,
    ctx: Arc<Context>,
) -> Result<Action, GcError> {
    let Some(owner) = node
        .metadata
        .controller_owner()
        .filter(|o| o.kind == NodePoolSpec::KIND)
    else {
        return Ok(Action::await_change());
    };
    if node.is_deleting() {
        return Ok(Action::await_change());
    }
    let pool_key = ObjectKey::new(node.metadata.namespace(), &owner.name);
    let alive = |p: &Object<NodePoolSpec>| p.metadata.uid.as_deref() == Some(owner.uid.as_str());
    if ctx.pools.get(&pool_key).is_some_and(|p| alive(&p)) {
        return Ok(Action::await_change());
    }
    // The pool cache may lag behind the node cache (two watches): ask etcd before deleting.
    match ctx
        .store
        .get::<NodePoolSpec>(&pool_key.namespace, &pool_key.name)
        .await
    {
        Ok(p) if alive(&p) => return Ok(Action::await_change()),
        Ok(_) => {}
        Err(e) if e.is_not_found() => {}
        Err(source) => {
            return Err(GcError::Read {
                pool: pool_key,
                source,
            });
        }
    }
    let msg = format!(
        "owner NodePool {} (uid {}) no longer exists; deleting the orphaned node",
        owner.name, owner.uid
    );
    if let Err(e) = ctx
        .recorder
        .publish(&node, EventType::Warning, "OwnerGone", &msg)
        .await
    {
        tracing::warn!(error = %e, "recording event");
    }
    tracing::info!(node = %node.key(), "{msg}");
    delete_node(&ctx.store, &node).await?;
    Ok(Action::await_change())
}

/// Runs both gc controllers until `stop`.
pub async fn run(
    store: Store,
    metrics: Arc<Metrics>,
    cfg: &ControllersConfig,
    stop: CancellationToken,
) {
    let ns = cfg.namespace.as_deref();
    let mut pool_cfg = ControllerConfig::named("nodepool-nodes");
    pool_cfg.runner.resync = Some(cfg.resync);
    let mut node_cfg = ControllerConfig::named("node-orphans");
    node_cfg.runner.resync = Some(cfg.resync);

    let pools_ctl = Controller::<NodePoolSpec>::new(store.clone(), ns, pool_cfg)
        .with_metrics(metrics.clone())
        .graceful_shutdown_on(stop.clone());
    let nodes_ctl = Controller::<NodeSpec>::new(store.clone(), ns, node_cfg)
        .with_metrics(metrics)
        .graceful_shutdown_on(stop);
    let ctx = Arc::new(Context {
        store: store.clone(),
        nodes: Cache::new(),
        pools: Cache::new(),
        recorder: Recorder::new(store, "controller/gc", cfg.event_ttl),
    });
    // Each controller feeds its own cache and a copy of the other kind.
    let nodes_for_mapper = nodes_ctl.cache();
    let pools_ctl = pools_ctl.owns(ctx.nodes.clone());
    let nodes_ctl = nodes_ctl.watches(ctx.pools.clone(), move |pool| {
        let uid = pool.metadata.uid.clone().unwrap_or_default();
        nodes_for_mapper
            .by_owner(&uid)
            .iter()
            .map(|n| n.key())
            .collect()
    });
    tokio::join!(
        pools_ctl.run(reconcile_pool, |_, _, _| Action::backoff(), ctx.clone()),
        nodes_ctl.run(reconcile_node, |_, _, _| Action::backoff(), ctx),
    );
}
