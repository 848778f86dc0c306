//! Garbage collection of `Node`s (the pool's own bookkeeping is the nodepool reconciler's).
//!
//! - `node-orphans`: deletes a `Node` whose controlling `NodePool` no longer exists (removed
//!   behind the controller's back, e.g. `etcdctl del`, or recreated with another uid), with a
//!   Warning event `OwnerGone`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::api::{NodePoolSpec, NodeSpec, Object, ObjectKey, Resource};
use crate::runtime::{Action, Cache, Controller, ControllerConfig, EventType, Metrics, Recorder};
use crate::store::{Store, StoreError};

use super::ControllersConfig;

/// Errors of the gc reconcilers.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
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
    /// Pools, fed by the node controller's `watches()` watch.
    pub pools: Cache<NodePoolSpec>,
    pub recorder: Recorder,
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
    ctx.recorder
        .emit(&node, EventType::Warning, "OwnerGone", &msg)
        .await;
    tracing::info!(node = %node.key(), "{msg}");
    delete_node(&ctx.store, &node).await?;
    Ok(Action::await_change())
}

/// Runs the gc controller until `stop`.
pub async fn run(
    store: Store,
    metrics: Arc<Metrics>,
    cfg: &ControllersConfig,
    stop: CancellationToken,
) {
    let ns = cfg.namespace.as_deref();
    let mut node_cfg = ControllerConfig::named("node-orphans");
    node_cfg.runner.resync = Some(cfg.resync);
    let nodes_ctl = Controller::<NodeSpec>::new(store.clone(), ns, node_cfg)
        .with_metrics(metrics)
        .graceful_shutdown_on(stop);
    let ctx = Arc::new(Context {
        store: store.clone(),
        pools: Cache::new(),
        recorder: Recorder::new(store, "controller/gc", cfg.event_ttl),
    });
    let nodes_for_mapper = nodes_ctl.cache();
    let nodes_ctl = nodes_ctl.watches(ctx.pools.clone(), move |pool| {
        let uid = pool.metadata.uid.clone().unwrap_or_default();
        nodes_for_mapper
            .by_owner(&uid)
            .iter()
            .map(|n| n.key())
            .collect()
    });
    nodes_ctl
        .run(reconcile_node, |_, _, _| Action::backoff(), ctx)
        .await;
}
