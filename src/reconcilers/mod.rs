//! The reconcilers the `lambda controller` process runs, one module each (design §3).

pub mod autoscaler;
pub mod cluster;
pub mod eventsource;
pub mod function;
pub mod gc;
pub mod membership;
pub mod node;
pub mod nodepool;
pub mod scaler;
pub mod schedule;
pub mod snapshot;
pub mod warmpool;
pub mod workload;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::runtime::Metrics;
use crate::store::Store;

/// Settings shared by the registered controllers.
#[derive(Debug, Clone)]
pub struct ControllersConfig {
    /// Namespace to watch; all when `None`.
    pub namespace: Option<String>,
    /// How long events live.
    pub event_ttl: Duration,
    /// Every object is reconciled at least this often.
    pub resync: Duration,
    /// The function controller's settings; `None` runs without it (no Docker configured).
    pub functions: Option<function::FunctionsConfig>,
    /// The node-side controllers' settings (snapshot, node, membership); `None` runs without
    /// them (no cloud configured). Node pools are reconciled either way.
    pub cluster: Option<cluster::ClusterConfig>,
    /// The scheduler's settings; `None` runs without it (no broker: schedules do not fire).
    pub schedules: Option<schedule::SchedulesConfig>,
    /// The event sources' settings; `None` runs without them (no broker: sources do not run).
    pub eventsources: Option<eventsource::EventSourcesConfig>,
}

impl Default for ControllersConfig {
    fn default() -> Self {
        ControllersConfig {
            namespace: None,
            event_ttl: crate::runtime::events::DEFAULT_EVENT_TTL,
            resync: Duration::from_secs(300),
            functions: None,
            schedules: None,
            eventsources: None,
            cluster: None,
        }
    }
}

/// Runs every registered controller until `stop` (graceful: runs in flight finish).
pub async fn run_all(
    store: Store,
    metrics: Arc<Metrics>,
    cfg: ControllersConfig,
    stop: CancellationToken,
) {
    let functions = async {
        match cfg.functions.clone() {
            Some(f) => {
                tokio::join!(
                    function::run(
                        store.clone(),
                        metrics.clone(),
                        &cfg,
                        f.clone(),
                        stop.clone()
                    ),
                    warmpool::run(store.clone(), metrics.clone(), &cfg, f, stop.clone()),
                    scaler::run(store.clone(), metrics.clone(), &cfg, stop.clone()),
                );
            }
            None => tracing::info!("function controller not started: no Docker host configured"),
        }
    };
    let cluster = async {
        match cfg.cluster.clone() {
            Some(c) => {
                tokio::join!(
                    snapshot::run(
                        store.clone(),
                        metrics.clone(),
                        &cfg,
                        c.clone(),
                        stop.clone()
                    ),
                    node::run(
                        store.clone(),
                        metrics.clone(),
                        &cfg,
                        c.clone(),
                        stop.clone()
                    ),
                    membership::run(
                        store.clone(),
                        metrics.clone(),
                        &cfg,
                        c.clone(),
                        stop.clone()
                    ),
                    autoscaler::run::run(store.clone(), metrics.clone(), &cfg, c, stop.clone()),
                );
            }
            None => tracing::info!(
                "snapshot, node and membership controllers not started: no cloud configured"
            ),
        }
    };
    let schedules = async {
        match cfg.schedules.clone() {
            Some(s) => schedule::run(store.clone(), cfg.namespace.clone(), s, stop.clone()).await,
            None => tracing::info!("scheduler not started: no broker configured"),
        }
    };
    let eventsources = async {
        match cfg.eventsources.clone() {
            Some(e) => {
                eventsource::run(store.clone(), metrics.clone(), &cfg, e, stop.clone()).await
            }
            None => tracing::info!("event sources not started: no broker configured"),
        }
    };
    tokio::join!(
        schedules,
        eventsources,
        gc::run(store.clone(), metrics.clone(), &cfg, stop.clone()),
        nodepool::run(store.clone(), metrics.clone(), &cfg, stop.clone()),
        functions,
        cluster,
    );
}
