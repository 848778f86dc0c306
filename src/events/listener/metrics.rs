//! The listener's metrics (Prometheus text format): events received, matched, unmatched and
//! poisoned; executions by final status; attempts by outcome; retries, deferrals, dead
//! letters, duplicates; callbacks by outcome; and the end-to-end latency from acceptance to the final record.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// Counters and histograms of one listener process.
pub struct ListenerMetrics {
    registry: Mutex<Registry>,
    pub events_received: Counter,
    pub events_matched: Counter,
    pub events_unmatched: Counter,
    pub poison: Counter,
    pub duplicates: Counter,
    pub retries: Counter,
    pub deferrals: Counter,
    pub dead_letters: Counter,
    executions: Family<StatusLabels, Counter>,
    attempts: Family<OutcomeLabels, Counter>,
    callbacks: Family<OutcomeLabels, Counter>,
    latency: Histogram,
    depth: Family<QueueLabels, Gauge>,
}

impl Default for ListenerMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let events_received = counter(
            "lambda_events_received",
            "Events consumed from the ingest queue",
        );
        let events_matched = counter(
            "lambda_events_matched",
            "Events that started at least one execution",
        );
        let events_unmatched = counter(
            "lambda_events_unmatched",
            "Events no function subscribes to",
        );
        let poison = counter("lambda_events_poison", "Messages moved to the poison queue");
        let duplicates = counter(
            "lambda_executions_duplicate",
            "Redelivered executions recognised as duplicates",
        );
        let retries = counter(
            "lambda_executions_retries",
            "Retries scheduled through the delay queues",
        );
        let deferrals = counter(
            "lambda_executions_deferred",
            "Executions put back because the function was at its concurrency",
        );
        let dead_letters = counter(
            "lambda_executions_dead_lettered",
            "Executions sent to a dead-letter queue",
        );
        let executions = Family::<StatusLabels, Counter>::default();
        let attempts = Family::<OutcomeLabels, Counter>::default();
        let latency = Histogram::new(exponential_buckets(0.001, 2.0, 20));
        let depth = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "lambda_queue_depth",
            "Messages ready in the platform's queues",
            depth.clone(),
        );
        registry.register(
            "lambda_executions",
            "Executions by final status",
            executions.clone(),
        );
        registry.register(
            "lambda_execution_attempts",
            "Attempts by outcome",
            attempts.clone(),
        );
        let callbacks = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "lambda_execution_callbacks",
            "X-Callback-Url POSTs by outcome (delivered, failed after 3 tries, refused by the policy)",
            callbacks.clone(),
        );
        registry.register(
            "lambda_execution_latency_seconds",
            "From acceptance (202 or event consumed) to the final record",
            latency.clone(),
        );
        ListenerMetrics {
            registry: Mutex::new(registry),
            events_received,
            events_matched,
            events_unmatched,
            poison,
            duplicates,
            retries,
            deferrals,
            dead_letters,
            executions,
            attempts,
            callbacks,
            latency,
            depth,
        }
    }
}

impl ListenerMetrics {
    /// One execution reached its final `status` `latency` after it was accepted.
    pub fn finished(&self, status: &str, latency: Duration) {
        self.executions
            .get_or_create(&StatusLabels {
                status: status.into(),
            })
            .inc();
        self.latency.observe(latency.as_secs_f64());
    }

    /// One callback ended with `outcome` (`delivered`, `failed`, `refused`).
    pub fn callback(&self, outcome: &str) {
        self.callbacks
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// One attempt ended with `outcome`.
    pub fn attempt(&self, outcome: &str) {
        self.attempts
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// `queue` holds `n` ready messages.
    pub fn queue_depth(&self, queue: &str, n: u32) {
        self.depth
            .get_or_create(&QueueLabels {
                queue: queue.into(),
            })
            .set(i64::from(n));
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        crate::runtime::metrics::encode_registry(&reg)
    }
}
