//! Prometheus metrics of the runtime and the HTTP server for `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Errors of the metrics server.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics server on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// `controller="<name>"`
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: String,
}

/// `kind="<Kind>"`
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// `pool="<namespace>/<name>"`
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabel {
    pub pool: String,
}

/// `pool="…",decision="ScaleUp"`
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabel {
    pub pool: String,
    pub decision: String,
}

/// `function="<namespace>/<name>"`
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabel {
    pub function: String,
}

/// `function="…",reason="ScaleUp"`
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScaleLabel {
    pub function: String,
    pub reason: String,
}

/// The function autoscaler's metrics, per function.
#[derive(Clone, Default)]
pub struct FunctionScalerMetrics {
    /// Changes of a function's desired replicas, by reason.
    pub decisions: Family<ScaleLabel, Counter>,
    /// Replicas the autoscaler wants.
    pub desired_replicas: Family<FunctionLabel, Gauge>,
    /// Replicas ready (from the status).
    pub ready_replicas: Family<FunctionLabel, Gauge>,
    /// Demand summed over every gateway and listener (in flight + held), last sample.
    pub demand: Family<FunctionLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Requests or executions held for a replica, summed over every instance.
    pub held: Family<FunctionLabel, Gauge>,
}

/// The node autoscaler's metrics, per pool.
#[derive(Clone, Default)]
pub struct AutoscalerMetrics {
    /// Decisions that changed a pool's decision or reason.
    pub decisions: Family<DecisionLabel, Counter>,
    /// Tasks waiting for a node of the pool.
    pub pending_tasks: Family<PoolLabel, Gauge>,
    /// MiB reserved by the tasks on the pool's nodes.
    pub reserved_memory_mb: Family<PoolLabel, Gauge>,
    /// MiB the pool's nodes offer.
    pub allocatable_memory_mb: Family<PoolLabel, Gauge>,
    /// The autoscaler's wanted node count.
    pub desired_nodes: Family<PoolLabel, Gauge>,
}

type HistogramFamily = Family<ControllerLabel, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 1 ms … ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric the runtime exports. Shared by all controllers of a process.
///
/// Invariant: each metric is registered once, in [`Metrics::new`].
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabel, Counter>,
    errors: Family<ControllerLabel, Counter>,
    duration: HistogramFamily,
    queue_depth: Family<ControllerLabel, Gauge>,
    watch_restarts: Family<KindLabel, Counter>,
    relists: Family<KindLabel, Counter>,
    /// 1 while this process holds the leader lease.
    pub leader: Gauge,
    /// Writes etcd refused because this process no longer led (see `store::Fence`).
    pub fenced_writes: Counter,
    /// The node autoscaler's.
    pub autoscaler: AutoscalerMetrics,
    pub scaler: FunctionScalerMetrics,
    ready: AtomicBool,
}

/// The metrics of one controller.
#[derive(Clone)]
pub struct ControllerMetrics {
    pub reconciles: Counter,
    pub errors: Counter,
    pub duration: Histogram,
    pub queue_depth: Gauge,
}

/// The metrics of one watched kind.
#[derive(Clone)]
pub struct KindMetrics {
    pub watch_restarts: Counter,
    pub relists: Counter,
}

impl Metrics {
    /// A registry with every runtime metric.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let reconciles = Family::<ControllerLabel, Counter>::default();
        let errors = Family::<ControllerLabel, Counter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let queue_depth = Family::<ControllerLabel, Gauge>::default();
        let watch_restarts = Family::<KindLabel, Counter>::default();
        let relists = Family::<KindLabel, Counter>::default();
        let leader = Gauge::default();
        registry.register(
            "lambda_reconciles",
            "Reconciles started",
            reconciles.clone(),
        );
        registry.register(
            "lambda_reconcile_errors",
            "Reconciles that failed",
            errors.clone(),
        );
        registry.register(
            "lambda_reconcile_duration_seconds",
            "Duration of reconciles",
            duration.clone(),
        );
        registry.register(
            "lambda_queue_depth",
            "Keys waiting in the work queue",
            queue_depth.clone(),
        );
        registry.register(
            "lambda_watch_restarts",
            "Watches resumed after an error",
            watch_restarts.clone(),
        );
        registry.register(
            "lambda_relists",
            "Full lists (first, and after compaction)",
            relists.clone(),
        );
        registry.register(
            "lambda_leader",
            "1 while this process is the leader",
            leader.clone(),
        );
        let fenced_writes = Counter::default();
        registry.register(
            "lambda_leader_fenced_writes",
            "Writes etcd refused because this process no longer held the leadership it won",
            fenced_writes.clone(),
        );
        let autoscaler = AutoscalerMetrics::default();
        registry.register(
            "lambda_autoscaler_decisions",
            "Node autoscaler decisions (changes of a pool's decision or reason)",
            autoscaler.decisions.clone(),
        );
        registry.register(
            "lambda_autoscaler_pending_tasks",
            "Tasks waiting for a node of the pool",
            autoscaler.pending_tasks.clone(),
        );
        registry.register(
            "lambda_autoscaler_reserved_memory_mb",
            "MiB reserved by the tasks on the pool's nodes",
            autoscaler.reserved_memory_mb.clone(),
        );
        registry.register(
            "lambda_autoscaler_allocatable_memory_mb",
            "MiB the pool's nodes offer to tasks",
            autoscaler.allocatable_memory_mb.clone(),
        );
        registry.register(
            "lambda_autoscaler_desired_nodes",
            "The node autoscaler's wanted node count",
            autoscaler.desired_nodes.clone(),
        );
        let scaler = FunctionScalerMetrics::default();
        registry.register(
            "lambda_function_autoscaler_decisions",
            "Function autoscaler decisions (changes of a function's desired replicas), by reason",
            scaler.decisions.clone(),
        );
        registry.register(
            "lambda_function_desired_replicas",
            "Replicas the function autoscaler wants",
            scaler.desired_replicas.clone(),
        );
        registry.register(
            "lambda_function_ready_replicas",
            "Replicas of the function ready",
            scaler.ready_replicas.clone(),
        );
        registry.register(
            "lambda_function_demand",
            "Requests in flight or held for the function, summed over every gateway and listener",
            scaler.demand.clone(),
        );
        registry.register(
            "lambda_function_held_requests",
            "Requests and executions waiting for a replica of the function",
            scaler.held.clone(),
        );
        Arc::new(Metrics {
            registry,
            autoscaler,
            scaler,
            reconciles,
            errors,
            duration,
            queue_depth,
            watch_restarts,
            relists,
            leader,
            fenced_writes,
            ready: AtomicBool::new(false),
        })
    }

    /// The metrics of one controller.
    pub fn controller(&self, name: &str) -> ControllerMetrics {
        let l = ControllerLabel {
            controller: name.to_string(),
        };
        ControllerMetrics {
            reconciles: self.reconciles.get_or_create(&l).clone(),
            errors: self.errors.get_or_create(&l).clone(),
            duration: self.duration.get_or_create(&l).clone(),
            queue_depth: self.queue_depth.get_or_create(&l).clone(),
        }
    }

    /// The metrics of one watched kind.
    pub fn kind(&self, kind: &str) -> KindMetrics {
        let l = KindLabel {
            kind: kind.to_string(),
        };
        KindMetrics {
            watch_restarts: self.watch_restarts.get_or_create(&l).clone(),
            relists: self.relists.get_or_create(&l).clone(),
        }
    }

    /// Marks the process ready (`/readyz` answers 200).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        encode_registry(&self.registry)
    }
}

/// The OpenMetrics text exposition of a registry (shared by every component's `/metrics`).
pub fn encode_registry(registry: &prometheus_client::registry::Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Binds `addr` (so a bad address fails at start-up) and returns the server future, which
/// serves `/metrics`, `/healthz` and `/readyz` until `stop`.
pub async fn serve(
    addr: SocketAddr,
    m: Arc<Metrics>,
    stop: CancellationToken,
) -> Result<impl Future<Output = Result<(), MetricsError>>, MetricsError> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(m);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    Ok(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .map_err(|source| MetricsError::Serve { addr, source })
    })
}
