//! The node autoscaler's loop (leader only, like every reconciler): every `autoscale_every` it
//! reads pools, Nodes, Swarm's nodes, tasks and services and the pools' flavors, decides one
//! pass ([`super::pass::decide`]) and writes each autoscaled pool's `status.desiredReplicas`
//! and `status.autoscaler` (only when they change), an event per new decision, the metrics,
//! and the `Schedulable` condition of functions no pool's flavor can take. The nodepool
//! reconciler then creates or removes the nodes.
//!
//! Restart safety comes from the status, not memory: a pool's upcoming nodes (its desired
//! count minus its nodes in Swarm) count as capacity, so a pass repeated after a restart asks
//! for nothing twice, and the scale-down windows are read back from `status.autoscaler`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::api::nodepool::AutoscalerDecision;
use crate::api::{ConditionStatus, Conditions, FunctionSpec, NodePoolSpec, NodeSpec, Object};
use crate::openstack::Flavor;
use crate::runtime::conditions::set_condition;
use crate::runtime::metrics::{DecisionLabel, PoolLabel};
use crate::runtime::{EventType, Metrics, Recorder};
use crate::store::{Store, StoreError};
use crate::swarm::{SwarmError, TaskFilter};

use super::super::ControllersConfig;
use super::super::cluster::{ClusterConfig, backoff};
use super::pass::{Decided, Observed, decide};

/// The Function condition the autoscaler owns: False while a replica has no node — no pool's
/// flavor can take it ([`NO_POOL_FITS`]) or it waits for nodes being added
/// ([`WAITING_FOR_NODE`]) —; True again once neither holds.
pub const SCHEDULABLE: &str = "Schedulable";
/// `Schedulable` False: no pool's flavor can take one replica.
pub const NO_POOL_FITS: &str = super::scale_up::NO_POOL_FITS;
/// `Schedulable` False: replicas wait for nodes the autoscaler is adding.
pub const WAITING_FOR_NODE: &str = "WaitingForNode";
/// How long a flavor read from Nova is trusted.
const FLAVOR_TTL: Duration = Duration::from_secs(60);

/// Errors of one pass.
#[derive(Debug, thiserror::Error)]
pub enum AutoscalerError {
    #[error("autoscaler: listing {what} in etcd: {source}")]
    Store {
        what: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("autoscaler: listing Swarm {what}: {source}")]
    Swarm {
        what: &'static str,
        #[source]
        source: SwarmError,
    },
    #[error("autoscaler: writing the status of NodePool {pool}: {source}")]
    Status {
        pool: String,
        #[source]
        source: StoreError,
    },
}

/// Flavors by name, read from Nova at most once a minute each.
#[derive(Default)]
struct Flavors(HashMap<String, (Flavor, Instant)>);

impl Flavors {
    async fn get(&mut self, c: &ClusterConfig, name: &str) -> Option<Flavor> {
        if let Some((f, at)) = self.0.get(name)
            && at.elapsed() < FLAVOR_TTL
        {
            return Some(f.clone());
        }
        match c.cloud.compute().find_flavor(name).await {
            Ok(f) => {
                self.0.insert(name.to_string(), (f.clone(), Instant::now()));
                Some(f)
            }
            Err(e) => {
                tracing::warn!(flavor = name, error = %e, "autoscaler: reading a flavor");
                // A stale flavor beats none while Nova is unreachable.
                self.0.get(name).map(|(f, _)| f.clone())
            }
        }
    }
}

struct Loop {
    store: Store,
    cluster: ClusterConfig,
    namespace: Option<String>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    flavors: Flavors,
}

/// Runs the node autoscaler until `stop` (the leader's term).
pub async fn run(
    store: Store,
    metrics: Arc<Metrics>,
    cfg: &ControllersConfig,
    cluster: ClusterConfig,
    stop: CancellationToken,
) {
    let every = cluster.timings.autoscale_every;
    let mut l = Loop {
        recorder: Recorder::new(store.clone(), "autoscaler", cfg.event_ttl),
        store,
        cluster,
        namespace: cfg.namespace.clone(),
        metrics,
        flavors: Flavors::default(),
    };
    let m = l.metrics.controller("autoscaler");
    let mut failures = 0u32;
    loop {
        let wait = if failures == 0 {
            every
        } else {
            backoff(every, Duration::from_secs(30), failures)
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let started = Instant::now();
        m.reconciles.inc();
        match l.pass().await {
            Ok(()) => failures = 0,
            Err(e) => {
                m.errors.inc();
                failures += 1;
                tracing::warn!(error = %e, failures, "autoscaler pass failed");
            }
        }
        m.duration.observe(started.elapsed().as_secs_f64());
    }
}

impl Loop {
    async fn pass(&mut self) -> Result<(), AutoscalerError> {
        let ns = self.namespace.as_deref();
        let store_err = |what| move |source| AutoscalerError::Store { what, source };
        let pools = self
            .store
            .list::<NodePoolSpec>(ns)
            .await
            .map_err(store_err("node pools"))?
            .items;
        let scaled: Vec<&Object<NodePoolSpec>> = pools
            .iter()
            .filter(|p| !p.is_deleting())
            .filter(|p| p.spec.autoscaling.as_ref().is_some_and(|a| a.enabled))
            .collect();
        if scaled.is_empty() {
            return Ok(());
        }
        let nodes = self
            .store
            .list::<NodeSpec>(ns)
            .await
            .map_err(store_err("nodes"))?
            .items;
        let swarm = &self.cluster.swarm;
        let swarm_err = |what| move |source| AutoscalerError::Swarm { what, source };
        let swarm_nodes = swarm.list_nodes().await.map_err(swarm_err("nodes"))?;
        let tasks = swarm
            .list_tasks(&TaskFilter::default())
            .await
            .map_err(swarm_err("tasks"))?;
        let services = swarm
            .list_services(&[])
            .await
            .map_err(swarm_err("services"))?;
        let mut flavors = HashMap::new();
        for p in &scaled {
            if let Some(f) = self.flavors.get(&self.cluster, &p.spec.flavor).await {
                flavors.insert(p.key().to_string(), f);
            }
        }
        let mut observed = Observed {
            pools: scaled.clone(),
            nodes: &nodes,
            swarm_nodes: &swarm_nodes,
            tasks: &tasks,
            services: &services,
            flavors: &flavors,
            limits: None,
            instance: &self.cluster.instance,
            namespace: ns,
        };
        let now = chrono::Utc::now();
        let mut d = decide(&observed, now);
        if d.wants_growth {
            // The quota matters only when growing: read it then, and decide again within it.
            match self.cluster.cloud.compute().limits().await {
                Ok(l) => {
                    observed.limits = Some(l);
                    d = decide(&observed, now);
                }
                Err(e) => tracing::warn!(error = %e, "autoscaler: reading the project's limits"),
            }
        }
        for p in &scaled {
            self.write_pool(p, &d).await?;
        }
        self.mark_functions(&d).await;
        Ok(())
    }

    async fn write_pool(
        &self,
        p: &Object<NodePoolSpec>,
        d: &Decided,
    ) -> Result<(), AutoscalerError> {
        let key = p.key().to_string();
        let label = PoolLabel { pool: key.clone() };
        let am = &self.metrics.autoscaler;
        if let Some(why) = d.broken.get(&key) {
            let changed = self
                .store
                .modify_status(p, |s| {
                    set_condition(
                        &mut s.conditions,
                        "Autoscaling",
                        ConditionStatus::False,
                        "TemplateUnavailable",
                        why,
                        p.metadata.generation,
                    );
                })
                .await
                .map_err(|source| AutoscalerError::Status {
                    pool: key.clone(),
                    source,
                })?;
            if changed.is_some() {
                self.recorder
                    .emit(p, EventType::Warning, "TemplateUnavailable", why)
                    .await;
            }
            return Ok(());
        }
        let Some(o) = d.pools.get(&key) else {
            return Ok(());
        };
        am.pending_tasks
            .get_or_create(&label)
            .set(i64::from(o.status.pending.tasks));
        am.reserved_memory_mb
            .get_or_create(&label)
            .set(o.status.reserved.memory_mb as i64);
        am.allocatable_memory_mb
            .get_or_create(&label)
            .set(o.status.allocatable.memory_mb as i64);
        am.desired_nodes
            .get_or_create(&label)
            .set(i64::from(o.desired_replicas));
        let written = self
            .store
            .modify_status(p, |s| {
                s.desired_replicas = Some(o.desired_replicas);
                s.autoscaler = Some(o.status.clone());
                let (st, reason) = match o.status.decision {
                    AutoscalerDecision::Blocked => (ConditionStatus::False, "Blocked"),
                    _ => (ConditionStatus::True, "Active"),
                };
                set_condition(
                    &mut s.conditions,
                    "Autoscaling",
                    st,
                    reason,
                    &o.status.reason,
                    p.metadata.generation,
                );
            })
            .await
            .map_err(|source| AutoscalerError::Status {
                pool: key.clone(),
                source,
            })?;
        if written.is_some() && o.news {
            let decision = format!("{:?}", o.status.decision);
            am.decisions
                .get_or_create(&DecisionLabel {
                    pool: key.clone(),
                    decision: decision.clone(),
                })
                .inc();
            let type_ = match o.status.decision {
                AutoscalerDecision::Blocked => EventType::Warning,
                _ => EventType::Normal,
            };
            tracing::info!(pool = %key, decision, reason = %o.status.reason, "autoscaler decision");
            self.recorder
                .emit(p, type_, &decision, &o.status.reason)
                .await;
        }
        Ok(())
    }

    /// Sets `Schedulable` False (`NoPoolFits`) on functions no pool's flavor takes, and back to
    /// True on those that had it and now fit. Best effort: a failure is logged, retried next pass.
    async fn mark_functions(&self, d: &Decided) {
        let Ok(fns) = self
            .store
            .list::<FunctionSpec>(self.namespace.as_deref())
            .await
        else {
            return;
        };
        for f in &fns.items {
            let owner = format!("fn/{}/{}", f.metadata.namespace(), f.metadata.name);
            let had = f
                .status
                .as_ref()
                .and_then(|s| s.condition(SCHEDULABLE))
                .is_some_and(|c| c.status == ConditionStatus::False);
            let (status, reason, msg) = match (d.no_pool_fits.get(&owner), d.waiting.get(&owner)) {
                (Some(m), _) => (ConditionStatus::False, NO_POOL_FITS, m.clone()),
                (None, Some(m)) => (ConditionStatus::False, WAITING_FOR_NODE, m.clone()),
                (None, None) if had => (
                    ConditionStatus::True,
                    "PoolFits",
                    "a pool's flavor can take its replicas".to_string(),
                ),
                (None, None) => continue,
            };
            let r = self
                .store
                .modify_status(f, |s| {
                    set_condition(
                        &mut s.conditions,
                        SCHEDULABLE,
                        status,
                        reason,
                        &msg,
                        f.metadata.generation,
                    );
                })
                .await;
            match r {
                Ok(Some(_)) if reason == NO_POOL_FITS => {
                    self.recorder
                        .emit(f, EventType::Warning, NO_POOL_FITS, &msg)
                        .await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(function = %owner, error = %e, "autoscaler: marking a function")
                }
            }
        }
    }
}
