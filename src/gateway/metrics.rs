//! Gateway metrics (Prometheus text format): invocations by function and status code, and
//! their duration.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::history::{History, Series};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InvocationLabels {
    namespace: String,
    function: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabels {
    namespace: String,
    function: String,
}

/// `path`: how the first replica came (`swarm`: a Swarm task started for it; `pool`: a warm
/// pool container specialised for it).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ColdStartLabels {
    namespace: String,
    function: String,
    path: &'static str,
}

/// `outcome` of an attempt to serve a cold start from a warm pool.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WarmLabels {
    outcome: &'static str,
}

/// The gateway's metrics registry.
pub struct GatewayMetrics {
    registry: Mutex<Registry>,
    /// The short history the console's charts draw (not exported to Prometheus).
    pub history: Arc<History>,
    invocations: Family<InvocationLabels, Counter>,
    duration: Family<FunctionLabels, Histogram>,
    submissions: Family<InvocationLabels, Counter>,
    submit_duration: Family<FunctionLabels, Histogram>,
    cold_starts: Family<ColdStartLabels, Histogram>,
    warm: Family<WarmLabels, Counter>,
    specialise: Histogram,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        let invocations = Family::<InvocationLabels, Counter>::default();
        let duration = Family::<FunctionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let mut registry = Registry::default();
        registry.register(
            "lambda_gateway_invocations",
            "Invocations by function and HTTP status",
            invocations.clone(),
        );
        registry.register(
            "lambda_gateway_invocation_duration_seconds",
            "Time from request to response",
            duration.clone(),
        );
        let submissions = Family::<InvocationLabels, Counter>::default();
        let submit_duration = Family::<FunctionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register(
            "lambda_gateway_async_submissions",
            "Asynchronous invocations by function and HTTP status of the submission (202: accepted)",
            submissions.clone(),
        );
        registry.register(
            "lambda_gateway_async_submit_duration_seconds",
            "Time from an asynchronous request to its answer (the broker's confirm included)",
            submit_duration.clone(),
        );
        let cold_starts = Family::<ColdStartLabels, Histogram>::new_with_constructor(|| {
            // 2 ms … ~4 min: a pool start takes milliseconds, a node's boot minutes.
            Histogram::new(exponential_buckets(0.002, 2.0, 18))
        });
        registry.register(
            "lambda_gateway_cold_start_seconds",
            "Time a request was held until its function had a ready replica, by how it came",
            cold_starts.clone(),
        );
        let warm = Family::<WarmLabels, Counter>::default();
        registry.register(
            "lambda_gateway_warm_pool_activations",
            "Cold starts the gateway tried to serve from a warm pool, by outcome (specialised, no_pool, no_idle, ineligible, failed)",
            warm.clone(),
        );
        let specialise = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "lambda_gateway_warm_pool_specialise_seconds",
            "Time from a held request to a warm pool container specialised for its function (claim included)",
            specialise.clone(),
        );
        GatewayMetrics {
            registry: Mutex::new(registry),
            warm,
            specialise,
            history: Arc::default(),
            invocations,
            duration,
            submissions,
            submit_duration,
            cold_starts,
        }
    }
}

/// Status codes the gateway answers, with a counter handle each.
const CODES: [u16; 10] = [200, 400, 401, 404, 413, 429, 502, 503, 504, 500];

/// One function's metric handles, resolved once per route change.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    by_code: Vec<(u16, Counter)>,
    duration: Histogram,
    /// Held requests that got a replica started through Swarm.
    pub cold_start_swarm: Histogram,
    /// Held requests that got a warm pool container specialised for them.
    pub cold_start_pool: Histogram,
    /// The function's recent calls for the console's charts (`None` beyond the bound).
    history: Option<Arc<Series>>,
}

impl RouteMetrics {
    /// Records one invocation without allocating.
    pub fn observe(&self, code: u16, elapsed: Duration) {
        if let Some((_, c)) = self.by_code.iter().find(|(k, _)| *k == code) {
            c.inc();
        }
        self.duration.observe(elapsed.as_secs_f64());
        if let Some(h) = &self.history {
            h.record(super::history::unix_now(), code, elapsed);
        }
    }
}

impl GatewayMetrics {
    /// The handles of one function.
    pub fn route(&self, ns: &str, name: &str) -> RouteMetrics {
        RouteMetrics {
            by_code: CODES
                .iter()
                .map(|&code| {
                    let labels = InvocationLabels {
                        namespace: ns.into(),
                        function: name.into(),
                        code,
                    };
                    (code, self.invocations.get_or_create(&labels).clone())
                })
                .collect(),
            duration: self
                .duration
                .get_or_create(&FunctionLabels {
                    namespace: ns.into(),
                    function: name.into(),
                })
                .clone(),
            cold_start_swarm: self.cold_start(ns, name, "swarm"),
            cold_start_pool: self.cold_start(ns, name, "pool"),
            history: self.history.series(ns, name),
        }
    }

    fn cold_start(&self, ns: &str, name: &str, path: &'static str) -> Histogram {
        self.cold_starts
            .get_or_create(&ColdStartLabels {
                namespace: ns.into(),
                function: name.into(),
                path,
            })
            .clone()
    }

    /// Counts one attempt to serve a cold start from a warm pool.
    pub fn warm_outcome(&self, outcome: &'static str) {
        self.warm.get_or_create(&WarmLabels { outcome }).inc();
    }

    /// Records how long a specialisation took (from the held request).
    pub fn warm_specialised(&self, took: Duration) {
        self.specialise.observe(took.as_secs_f64());
    }

    /// Records one invocation.
    pub fn observe(&self, ns: &str, name: &str, code: u16, elapsed: Duration) {
        self.invocations
            .get_or_create(&InvocationLabels {
                namespace: ns.into(),
                function: name.into(),
                code,
            })
            .inc();
        self.duration
            .get_or_create(&FunctionLabels {
                namespace: ns.into(),
                function: name.into(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one asynchronous submission (its answer, not the execution's outcome).
    pub fn observe_submit(&self, ns: &str, name: &str, code: u16, elapsed: Duration) {
        self.submissions
            .get_or_create(&InvocationLabels {
                namespace: ns.into(),
                function: name.into(),
                code,
            })
            .inc();
        self.submit_duration
            .get_or_create(&FunctionLabels {
                namespace: ns.into(),
                function: name.into(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        crate::runtime::metrics::encode_registry(&reg)
    }
}
