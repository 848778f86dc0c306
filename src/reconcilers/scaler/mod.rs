//! The function autoscaler (design §3, "autoscaler", function side): on the leading controller,
//! it follows every gateway's and listener's load reports ([`crate::gateway::load`]) and the
//! Functions, and every [`TICK`] decides each function's replicas ([`decide::decide`]), writing
//! `status.desiredReplicas` and `status.autoscaler` (only when the decision changes), an event
//! per change and the `lambda_function_*` metrics. The function reconciler then asks Swarm for
//! that many. A report with requests held for a function at zero is decided on arrival, not at
//! the next tick.

pub mod decide;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::function::FunctionScaleDecision;
use crate::api::{Function, FunctionSpec};
use crate::gateway::load::{self, LoadReport};
use crate::runtime::metrics::{FunctionLabel, ScaleLabel};
use crate::runtime::{Cache, EventType, Metrics, Recorder, WatcherConfig, watcher};
use crate::store::{Store, StoreError};

use super::ControllersConfig;
use decide::{Knobs, Memory};

/// How often every function is decided.
pub const TICK: Duration = Duration::from_millis(250);
/// A report older than this no longer counts (its instance stopped reporting load).
const STALE: Duration = Duration::from_secs(3);

/// Errors following the load reports.
#[derive(Debug, thiserror::Error)]
pub enum ScalerError {
    #[error("function autoscaler: reading the load reports: {0}")]
    Reports(#[source] StoreError),
    #[error("function autoscaler: watching the load reports: {0}")]
    Watch(#[source] etcd_client::Error),
    #[error("function autoscaler: writing the status of Function {function}: {source}")]
    Status {
        function: String,
        #[source]
        source: StoreError,
    },
}

/// The latest report of every instance, when it arrived.
#[derive(Default)]
struct Reports {
    by_instance: HashMap<String, (LoadReport, Instant)>,
    /// Functions with arrivals, work in flight or held since the last tick.
    active: HashSet<String>,
}

impl Reports {
    /// Records an instance's report (by its etcd key); returns the functions with demand held
    /// for a replica or waiting for a slot, to decide at once.
    fn add(&mut self, key: &str, r: LoadReport, now: Instant) -> Vec<String> {
        let mut activate = Vec::new();
        for (f, l) in &r.functions {
            if l.arrivals > 0 || l.queued > 0 || l.concurrency > 0.0 {
                self.active.insert(f.clone());
            }
            if l.queued > 0 {
                activate.push(f.clone());
            }
        }
        self.by_instance.insert(key.to_string(), (r, now));
        activate
    }

    /// A function's demand over the fresh reports, summed over the instances.
    fn load_of(&self, function: &str, now: Instant) -> Load {
        self.by_instance
            .values()
            .filter(|(_, at)| now.duration_since(*at) <= STALE)
            .filter_map(|(r, _)| r.functions.get(function))
            .fold(Load::default(), |t, l| Load {
                average: t.average + l.concurrency,
                queued: t.queued + l.queued,
                current: t.current + l.current as f64,
            })
    }
}

/// A function's load summed over the instances' latest reports.
#[derive(Debug, Default, Clone, Copy)]
struct Load {
    /// Average demand over their periods.
    average: f64,
    /// Held for a first replica or waiting for a slot.
    queued: u64,
    /// Demand when each report was written.
    current: f64,
}

struct Scaler {
    store: Store,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    functions: Cache<FunctionSpec>,
    reports: Reports,
    memory: HashMap<String, Memory>,
}

/// Runs the function autoscaler until `stop` (the leader's term).
pub async fn run(
    store: Store,
    metrics: Arc<Metrics>,
    cfg: &ControllersConfig,
    stop: CancellationToken,
) {
    let functions = Cache::<FunctionSpec>::new();
    let feed = {
        let (cache, store, ns) = (functions.clone(), store.clone(), cfg.namespace.clone());
        async move {
            let stream = watcher::<FunctionSpec>(store, ns, WatcherConfig::default(), None);
            cache.run(stream, |_| {}).await;
        }
    };
    let mut s = Scaler {
        recorder: Recorder::new(store.clone(), "autoscaler/function", cfg.event_ttl),
        store,
        metrics,
        functions,
        reports: Reports::default(),
        memory: HashMap::new(),
    };
    tokio::select! {
        () = stop.cancelled() => {}
        () = feed => {}
        () = s.follow(&stop) => {}
    }
}

impl Scaler {
    /// Lists and watches the reports (again after any failure), deciding every tick.
    async fn follow(&mut self, stop: &CancellationToken) {
        self.functions.wait_ready().await;
        let mut failures = 0u32;
        loop {
            match self.session(stop).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "function autoscaler: following the load reports");
                }
            }
            if stop.is_cancelled() {
                return;
            }
            let wait = super::cluster::backoff(TICK, Duration::from_secs(10), failures);
            tokio::time::sleep(wait).await;
        }
    }

    async fn session(&mut self, stop: &CancellationToken) -> Result<(), ScalerError> {
        let listed = load::read_all(&self.store)
            .await
            .map_err(ScalerError::Reports)?;
        let now = Instant::now();
        self.reports = Reports::default();
        for (key, r) in listed.reports {
            self.reports.add(&key, r, now);
        }
        let prefix = load::prefix(&self.store);
        let mut client = self.store.client();
        let mut stream = client
            .watch(
                prefix.clone(),
                Some(
                    etcd_client::WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(listed.revision + 1),
                ),
            )
            .await
            .map_err(ScalerError::Watch)?;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                _ = tick.tick() => self.tick().await,
                msg = stream.message() => {
                    let resp = match msg {
                        Ok(Some(r)) if r.canceled() => return Ok(()),
                        Ok(Some(r)) => r,
                        Ok(None) => return Ok(()),
                        Err(e) => return Err(ScalerError::Watch(e)),
                    };
                    let now = Instant::now();
                    let mut activate = Vec::new();
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        match ev.event_type() {
                            etcd_client::EventType::Put => {
                                if let Some(r) = load::decode(kv.key(), kv.value()) {
                                    activate.extend(self.reports.add(&String::from_utf8_lossy(kv.key()), r, now));
                                }
                            }
                            etcd_client::EventType::Delete => {
                                self.reports.by_instance.remove(String::from_utf8_lossy(kv.key()).as_ref());
                            }
                        }
                    }
                    // Held requests for a function at zero, callers waiting for a slot of a
                    // busy one: decided now, not at the next tick (and not sampled: the
                    // averages keep one sample per tick).
                    for key in activate {
                        if let Some(f) = self.function(&key) {
                            self.scale(&f, now, false).await;
                        }
                    }
                }
            }
        }
    }

    fn function(&self, key: &str) -> Option<Arc<Function>> {
        let (ns, name) = key.split_once('/')?;
        self.functions
            .get(&crate::api::ObjectKey::new(ns, name))
            .filter(|f| !f.is_deleting())
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        let functions: Vec<Arc<Function>> = self
            .functions
            .list()
            .into_iter()
            .filter(|f| !f.is_deleting())
            .collect();
        let live: HashSet<String> = functions.iter().map(|f| key_of(f)).collect();
        self.memory.retain(|k, _| live.contains(k));
        for f in &functions {
            self.scale(f, now, true).await;
        }
        self.reports.active.clear();
    }

    /// Samples (on a tick), decides and, when the decision changed, writes one function.
    async fn scale(&mut self, f: &Function, now: Instant, sample: bool) {
        let key = key_of(f);
        let knobs = Knobs::of(&f.spec);
        let load = self.reports.load_of(&key, now);
        let (demand, queued) = (load.average, load.queued);
        let active = self.reports.active.contains(&key);
        let mem = self
            .memory
            .entry(key.clone())
            .or_insert_with(|| Memory::new(now));
        if sample {
            mem.observe(now, demand, active, knobs.stable);
        }
        let status = f.status.as_ref();
        let ready = status.map_or(0, |s| s.ready_replicas);
        // What was last decided: this memory's own write (the cache may lag behind it), else
        // the status.
        let last = mem.written.or_else(|| {
            let s = status?;
            Some((
                s.desired_replicas?,
                s.autoscaler.as_ref().is_some_and(|a| a.panic),
            ))
        });
        let current = last.map_or_else(|| current_of(f), |(n, _)| n);
        let seen = decide::Seen {
            current,
            ready,
            queued,
            demand_now: load.current,
        };
        let d = decide::decide(mem, &knobs, &seen, now);
        let last_active = mem.last_active;
        let label = FunctionLabel {
            function: key.clone(),
        };
        let m = &self.metrics.scaler;
        m.desired_replicas
            .get_or_create(&label)
            .set(i64::from(d.desired));
        m.ready_replicas.get_or_create(&label).set(i64::from(ready));
        m.demand.get_or_create(&label).set(demand);
        m.held.get_or_create(&label).set(queued as i64);
        // Nothing new, or only a Hold on a function the autoscaler never touched.
        let untouched_hold = last.is_none() && d.desired == current && !d.panic;
        if last == Some((d.desired, d.panic)) || untouched_hold {
            return;
        }
        let wall = chrono::Utc::now();
        let idle = now.duration_since(last_active);
        let decision = FunctionScaleDecision {
            desired_replicas: d.desired,
            reason: d.reason.to_string(),
            message: d.message.clone(),
            panic: d.panic,
            stable_concurrency: (d.stable * 100.0).round() / 100.0,
            panic_concurrency: (d.panic_avg * 100.0).round() / 100.0,
            last_request_time: chrono::TimeDelta::from_std(idle).ok().map(|i| wall - i),
            decided_at: wall,
        };
        let written = self
            .store
            .modify_status(f, |s| {
                s.desired_replicas = Some(decision.desired_replicas);
                s.autoscaler = Some(decision.clone());
            })
            .await;
        match written {
            Ok(_) => {
                if let Some(mem) = self.memory.get_mut(&key) {
                    mem.written = Some((d.desired, d.panic));
                }
            }
            Err(e) if e.is_not_found() => return,
            Err(source) => {
                let e = ScalerError::Status {
                    function: key,
                    source,
                };
                tracing::warn!(error = %e, "function autoscaler");
                return;
            }
        }
        if d.desired != current {
            m.decisions
                .get_or_create(&ScaleLabel {
                    function: key.clone(),
                    reason: d.reason.to_string(),
                })
                .inc();
            let msg = format!("{current} → {} replicas: {}", d.desired, d.message);
            tracing::info!(function = %key, reason = d.reason, "{msg}");
            self.recorder
                .emit(f, EventType::Normal, d.reason, &msg)
                .await;
        }
    }
}

fn key_of(f: &Function) -> String {
    format!("{}/{}", f.metadata.namespace(), f.metadata.name)
}

/// The replicas a function has been given: the autoscaler's last decision, else what the
/// function reconciler asked Swarm for.
fn current_of(f: &Function) -> u32 {
    let s = f.status.as_ref();
    s.and_then(|s| s.desired_replicas)
        .or_else(|| s.map(|s| s.replicas))
        .unwrap_or(f.spec.min_replicas)
}
