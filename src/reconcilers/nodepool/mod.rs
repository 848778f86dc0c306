//! The nodepool reconciler: keeps `replicas` (the autoscaler's `status.desiredReplicas` when it
//! has one; both clamped to min/max) `Node` objects owned by each pool, built from the pool's
//! node template (its image — a `SnapshotImage`'s built Glance image or a Glance image —,
//! flavor, network, key pair, security groups, availability zone). The decision itself is the
//! pure [`plan::decide`] (max surge, scale-down victims — the autoscaler's choice first, then
//! by fewest tasks —, rolling one at a time).
//!
//! - Creations and deletions are remembered until the node cache shows them (Kubernetes'
//!   "expectations"), so a reconcile that runs before the watch delivers its own writes does not
//!   create or delete twice.
//! - Status: `replicas`, `readyReplicas`, `nodes`, conditions `ImageReady` and `Ready`.
//! - Finalizer [`FINALIZER`]: deleting a pool deletes its nodes (each drained and its server
//!   deleted by their own finalizers) and waits for them to go.

pub mod plan;
pub mod template;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{ConditionStatus, NodePoolSpec, NodeSpec, Object, ObjectKey, SnapshotImageSpec};
use crate::runtime::conditions::set_condition;
use crate::runtime::finalizer::FinalizerError;
use crate::runtime::status::patch_status;
use crate::runtime::{
    Action, Cache, Controller, ControllerConfig, EventType, FinalizerEvent, Metrics, Recorder,
    finalizer,
};
use crate::store::{Store, StoreError};
use crate::swarm::{Swarm, TaskFilter};

use super::ControllersConfig;
use super::node::READY;
use plan::{NodeView, decide};
use template::{autoscaler_victims, new_node, views};
pub use template::{desired, resolve_image, template};

/// The finalizer this controller puts on node pools.
pub const FINALIZER: &str = "lambda/nodepool-nodes";
/// Label on every node naming its pool.
pub const POOL_LABEL: &str = "lambda.pool";
/// Condition: the pool has an image to boot nodes from.
pub const IMAGE_READY: &str = "ImageReady";
/// How long a write is expected to show up in the cache before it is forgotten.
const EXPECTATION_TTL: Duration = Duration::from_secs(30);
/// Requeue while the pool converges (node changes trigger it anyway).
const PROGRESS_REQUEUE: Duration = Duration::from_secs(2);

/// Errors of the nodepool reconciler.
#[derive(Debug, thiserror::Error)]
pub enum NodePoolError {
    #[error("NodePool {pool}: {op} Node {node}: {source}")]
    Node {
        pool: ObjectKey,
        op: &'static str,
        node: String,
        #[source]
        source: StoreError,
    },
    #[error("writing status of NodePool {pool}: {source}")]
    Status {
        pool: ObjectKey,
        #[source]
        source: StoreError,
    },
}

#[derive(Default)]
struct Expectations {
    created: HashMap<String, Instant>,
    deleted: HashMap<String, Instant>,
}

/// What the reconciles share.
pub struct Context {
    pub store: Store,
    /// Nodes (fed by the controller's `owns()`).
    pub nodes: Cache<NodeSpec>,
    /// Snapshot images (their built image ids).
    pub snapshots: Cache<SnapshotImageSpec>,
    /// The Swarm manager, to count tasks per node (scale-down victims); `None`: all count 0.
    pub swarm: Option<Swarm>,
    pub recorder: Recorder,
    /// Pool uid → writes not yet seen in the cache.
    expectations: Mutex<HashMap<String, Expectations>>,
}

impl Context {
    /// A context around the caches the controller feeds.
    pub fn new(
        store: Store,
        nodes: Cache<NodeSpec>,
        snapshots: Cache<SnapshotImageSpec>,
        swarm: Option<Swarm>,
        recorder: Recorder,
    ) -> Self {
        Context {
            store,
            nodes,
            snapshots,
            swarm,
            recorder,
            expectations: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets expectations the cache now shows (or that are too old); returns the names
    /// created but not yet seen, and those deleted but not yet seen as deleting.
    fn pending(
        &self,
        pool_uid: &str,
        owned: &[Arc<Object<NodeSpec>>],
    ) -> (Vec<String>, Vec<String>) {
        let Ok(mut all) = self.expectations.lock() else {
            return (Vec::new(), Vec::new());
        };
        let e = all.entry(pool_uid.to_string()).or_default();
        let now = Instant::now();
        let seen = |name: &str| owned.iter().find(|n| n.metadata.name == name);
        e.created
            .retain(|name, at| seen(name).is_none() && now - *at < EXPECTATION_TTL);
        e.deleted.retain(|name, at| {
            seen(name).is_some_and(|n| !n.is_deleting()) && now - *at < EXPECTATION_TTL
        });
        (
            e.created.keys().cloned().collect(),
            e.deleted.keys().cloned().collect(),
        )
    }

    fn remember(&self, pool_uid: &str, created: Option<String>, deleted: Option<String>) {
        if let Ok(mut all) = self.expectations.lock() {
            let e = all.entry(pool_uid.to_string()).or_default();
            let now = Instant::now();
            if let Some(c) = created {
                e.created.insert(c, now);
            }
            if let Some(d) = deleted {
                e.deleted.insert(d, now);
            }
        }
    }

    /// Running tasks per Swarm node id.
    async fn tasks_per_node(&self) -> HashMap<String, u32> {
        let mut m = HashMap::new();
        let Some(swarm) = &self.swarm else {
            return m;
        };
        let filter = TaskFilter {
            desired_state: Some("running".into()),
            ..Default::default()
        };
        match swarm.list_tasks(&filter).await {
            Ok(tasks) => {
                for t in tasks {
                    if let Some(n) = t.node_id {
                        *m.entry(n).or_insert(0) += 1;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "counting tasks per node; scale-down ignores load")
            }
        }
        m
    }
}

async fn apply(pool: &Object<NodePoolSpec>, ctx: &Context) -> Result<Action, NodePoolError> {
    let key = pool.key();
    let uid = pool.metadata.uid.clone().unwrap_or_default();
    let generation = pool.generation();
    let image = resolve_image(pool, &ctx.snapshots);
    let tmpl = image.as_ref().ok().map(|i| template(pool, i));
    let want = desired(pool);
    let owned = ctx.nodes.by_owner(&uid);
    let (pending_created, pending_deleted) = ctx.pending(&uid, &owned);
    let live: Vec<&Arc<Object<NodeSpec>>> = owned
        .iter()
        .filter(|n| !n.is_deleting() && !pending_deleted.contains(&n.metadata.name))
        .collect();
    let tasks = ctx.tasks_per_node().await;
    let victims = autoscaler_victims(pool);
    let nodes = views(&live, &pending_created, tmpl.as_ref(), &tasks, &victims);
    let plan = decide(&nodes, want, pool.spec.max_surge, tmpl.is_some());

    for (name, why) in &plan.delete {
        match ctx.store.delete::<NodeSpec>(&key.namespace, name).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(source) => {
                return Err(NodePoolError::Node {
                    pool: key,
                    op: "deleting",
                    node: name.clone(),
                    source,
                });
            }
        }
        ctx.remember(&uid, None, Some(name.clone()));
        let msg = format!("deleting node {name} ({why})");
        ctx.recorder
            .emit(pool, EventType::Normal, "DeletingNode", &msg)
            .await;
    }
    if let Some(t) = &tmpl {
        for _ in 0..plan.create {
            let n = new_node(pool, t.clone());
            let name = n.metadata.name.clone();
            ctx.store
                .create(&n)
                .await
                .map_err(|source| NodePoolError::Node {
                    pool: key.clone(),
                    op: "creating",
                    node: name.clone(),
                    source,
                })?;
            ctx.remember(&uid, Some(name.clone()), None);
            let msg = format!("created node {name} (image {})", t.image);
            ctx.recorder
                .emit(pool, EventType::Normal, "CreatedNode", &msg)
                .await;
        }
    }

    let deleted: Vec<&str> = plan.delete.iter().map(|(n, _)| n.as_str()).collect();
    let remaining: Vec<&NodeView> = nodes
        .iter()
        .filter(|n| !deleted.contains(&n.name.as_str()))
        .collect();
    let replicas = remaining.len() as u32 + plan.create;
    let ready = remaining.iter().filter(|n| n.ready).count() as u32;
    let outdated = remaining.iter().filter(|n| !n.current).count();
    let mut names: Vec<String> = owned.iter().map(|n| n.metadata.name.clone()).collect();
    names.extend(pending_created.iter().cloned());
    names.sort();
    names.dedup();
    let (status, reason, message) = if let Err((r, m)) = &image
        && ready < want
    {
        (ConditionStatus::False, r.to_string(), m.clone())
    } else if outdated > 0 {
        (
            ConditionStatus::False,
            "RollingUpdate".into(),
            format!("{outdated} node(s) to move onto the current template; {ready}/{want} ready"),
        )
    } else if replicas < want || !plan.is_empty() && plan.create > 0 {
        (
            ConditionStatus::False,
            "ScalingUp".into(),
            format!("{ready}/{want} nodes ready"),
        )
    } else if replicas > want || !plan.delete.is_empty() {
        (
            ConditionStatus::False,
            "ScalingDown".into(),
            format!("{replicas} nodes, want {want}"),
        )
    } else if ready < want {
        (
            ConditionStatus::False,
            "NodesNotReady".into(),
            format!("{ready}/{want} nodes ready"),
        )
    } else {
        (
            ConditionStatus::True,
            "Ready".into(),
            format!("{ready}/{want} nodes ready"),
        )
    };
    let converged = status == ConditionStatus::True;
    patch_status(&ctx.store, pool, |s| {
        s.observed_generation = Some(generation);
        s.replicas = replicas;
        s.ready_replicas = ready;
        s.nodes = names.clone();
        match &image {
            Ok(i) => set_condition(
                &mut s.conditions,
                IMAGE_READY,
                ConditionStatus::True,
                "Resolved",
                &format!("new nodes boot from image {i}"),
                Some(generation),
            ),
            Err((r, m)) => set_condition(
                &mut s.conditions,
                IMAGE_READY,
                ConditionStatus::False,
                r,
                m,
                Some(generation),
            ),
        };
        set_condition(
            &mut s.conditions,
            READY,
            status,
            &reason,
            &message,
            Some(generation),
        );
    })
    .await
    .map_err(|source| NodePoolError::Status { pool: key, source })?;
    Ok(if converged {
        Action::await_change()
    } else {
        Action::requeue(PROGRESS_REQUEUE)
    })
}

async fn cleanup(pool: &Object<NodePoolSpec>, ctx: &Context) -> Result<Action, NodePoolError> {
    let uid = pool.metadata.uid.clone().unwrap_or_default();
    let owned = ctx.nodes.by_owner(&uid);
    if owned.is_empty() {
        return Ok(Action::await_change());
    }
    for n in owned.iter().filter(|n| !n.is_deleting()) {
        match ctx
            .store
            .delete::<NodeSpec>(n.metadata.namespace(), &n.metadata.name)
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(source) => {
                return Err(NodePoolError::Node {
                    pool: pool.key(),
                    op: "deleting",
                    node: n.metadata.name.clone(),
                    source,
                });
            }
        }
    }
    // Nodes have cleanup of their own (drain, server): wait for them to go.
    Ok(Action::requeue(PROGRESS_REQUEUE))
}

/// Reconciles one pool (finalizer, apply or cleanup).
pub async fn reconcile(
    pool: Arc<Object<NodePoolSpec>>,
    ctx: Arc<Context>,
) -> Result<Action, FinalizerError<NodePoolError>> {
    let store = ctx.store.clone();
    finalizer(&store, FINALIZER, pool, |ev| async move {
        match ev {
            FinalizerEvent::Apply(p) => apply(&p, &ctx).await,
            FinalizerEvent::Cleanup(p) => cleanup(&p, &ctx).await,
        }
    })
    .await
}

/// Runs the nodepool controller until `stop`.
pub async fn run(
    store: Store,
    metrics: Arc<Metrics>,
    cfg: &ControllersConfig,
    stop: CancellationToken,
) {
    let ns = cfg.namespace.as_deref();
    let mut ccfg = ControllerConfig::named("nodepool");
    ccfg.runner.resync = Some(cfg.resync);
    let controller = Controller::<NodePoolSpec>::new(store.clone(), ns, ccfg)
        .with_metrics(metrics)
        .graceful_shutdown_on(stop);
    let swarm = cfg
        .cluster
        .as_ref()
        .map(|c| c.swarm.clone())
        .or_else(|| cfg.functions.as_ref().map(|f| f.swarm.clone()));
    let ctx = Arc::new(Context::new(
        store.clone(),
        Cache::new(),
        Cache::new(),
        swarm,
        Recorder::new(store, "controller/nodepool", cfg.event_ttl),
    ));
    let pools = controller.cache();
    let controller = controller
        .owns(ctx.nodes.clone())
        // A snapshot image built (or rebuilt) triggers the pools booting from it.
        .watches(
            ctx.snapshots.clone(),
            move |si: &Object<SnapshotImageSpec>| {
                pools
                    .list()
                    .iter()
                    .filter(|p| {
                        p.metadata.namespace() == si.metadata.namespace()
                            && p.spec.image.snapshot_image.as_deref()
                                == Some(si.metadata.name.as_str())
                    })
                    .map(|p| p.key())
                    .collect()
            },
        );
    controller
        .run(reconcile, |_, _, _| Action::backoff(), ctx)
        .await;
}
