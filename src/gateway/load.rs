//! The load reporter: what the function autoscaler sizes functions from. Every gateway and
//! every queue listener samples, every 50 ms, each function's demand (requests in flight to its
//! replicas, waiting for a slot, or held for a first replica) and publishes once a second the
//! averages, arrivals and held counts under `<root>/load/<instance>` in etcd, on a lease, so a
//! dead instance's load disappears with it. A request held for a function with no replica is
//! published at once, so scaling from zero does not wait for the next report.
//!
//! A burst is published early too: when callers start waiting for a slot of a function whose
//! replicas are all busy (none waited at the sample before), the report goes out at the next
//! sample rather than at the end of the period (at most one such report per [`BURST_GAP`]),
//! carrying the demand of that moment ([`FunctionLoad::current`]) for the autoscaler to size
//! from.
//!
//! An idle instance writes nothing: a report without load is written once, then the key is
//! left to expire.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::PutOptions;
use serde::{Deserialize, Serialize};

use super::Gateway;
use crate::store::{Store, StoreError};

/// How often demand is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// How often a report is published.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Reports published on a wake-up come at least this far apart.
const MIN_GAP: Duration = Duration::from_millis(20);
/// Early reports for a burst come at least this far apart (the autoscaler decides on them at
/// once; a function saturated for long would otherwise write one per sample).
pub const BURST_GAP: Duration = Duration::from_millis(250);
/// Lifetime of a report's key without a newer one (a dead instance's load fades this fast).
const LEASE_TTL_SECONDS: i64 = 4;

/// One instance's report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    /// `gateway-…` or `listener-…`.
    pub instance: String,
    pub at: chrono::DateTime<chrono::Utc>,
    /// The functions with load in the period, by `namespace/name`.
    #[serde(default)]
    pub functions: BTreeMap<String, FunctionLoad>,
}

/// One function's load in one instance over one period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionLoad {
    /// Average demand over the period.
    pub concurrency: f64,
    /// Highest sampled demand.
    pub max: u64,
    /// Requests and executions that arrived in the period.
    pub arrivals: u64,
    /// Held for a first replica or waiting for a slot when the report was written, plus the
    /// executions put back in the period for want of a replica.
    pub queued: u64,
    /// Demand when the report was written (in flight, waiting for a slot, held): with callers
    /// waiting, what the capacity must cover now, before any average catches up.
    #[serde(default)]
    pub current: u64,
}

/// The etcd prefix of the reports.
pub fn prefix(store: &Store) -> String {
    format!("{}/load/", store.keys().root())
}

/// Accumulates samples between two reports.
#[derive(Default)]
struct Period {
    samples: u32,
    sums: HashMap<String, (u64, u64)>,
    /// Arrivals and deferrals per function when the period started.
    counts_at_start: HashMap<String, (u64, u64)>,
    /// Functions with callers waiting for a slot at the last sample (kept across periods).
    waiting: std::collections::HashSet<String>,
}

impl Period {
    /// Takes one sample; true when a function has callers waiting for a slot that had none at
    /// the sample before (a burst beyond its ready replicas).
    fn sample(&mut self, gw: &Gateway) -> bool {
        self.samples += 1;
        let mut waiting = std::collections::HashSet::new();
        for r in gw.table.routes() {
            if r.load.waiting() > 0 {
                waiting.insert(format!("{}/{}", r.namespace, r.name));
            }
            let d = r.demand() as u64;
            if d == 0 {
                continue;
            }
            let e = self
                .sums
                .entry(format!("{}/{}", r.namespace, r.name))
                .or_default();
            e.0 += d;
            e.1 = e.1.max(d);
        }
        let burst = waiting.iter().any(|k| !self.waiting.contains(k));
        self.waiting = waiting;
        burst
    }

    /// The report of the period, and the arrival counters to measure the next one from.
    fn report(&mut self, gw: &Gateway, instance: &str) -> LoadReport {
        let mut functions = BTreeMap::new();
        let mut next_start = HashMap::new();
        for r in gw.table.routes() {
            let key = format!("{}/{}", r.namespace, r.name);
            let total = (r.load.arrivals(), r.load.deferrals());
            let start = self.counts_at_start.get(&key).copied().unwrap_or_default();
            let arrivals = total.0.saturating_sub(start.0);
            let (sum, max) = self.sums.get(&key).copied().unwrap_or_default();
            // Executions put back for want of a replica wait as surely as held requests.
            let queued = r.load.queued() as u64 + total.1.saturating_sub(start.1);
            if arrivals > 0 || sum > 0 || queued > 0 {
                functions.insert(
                    key.clone(),
                    FunctionLoad {
                        concurrency: sum as f64 / f64::from(self.samples.max(1)),
                        max,
                        arrivals,
                        queued,
                        current: r.demand() as u64,
                    },
                );
            }
            next_start.insert(key, total);
        }
        self.samples = 0;
        self.sums.clear();
        self.counts_at_start = next_start;
        LoadReport {
            instance: instance.to_string(),
            at: chrono::Utc::now(),
            functions,
        }
    }
}

/// Writes reports for one instance, each on a lease of its own: a key outlives its last
/// report by at most the lease's TTL, whatever happened to the instance.
struct Writer {
    store: Store,
    key: String,
    lease: Option<i64>,
}

impl Writer {
    async fn put(&mut self, report: &LoadReport) -> Result<(), StoreError> {
        let value = serde_json::to_vec(report).unwrap_or_default();
        let mut c = self.store.client();
        let g = self
            .store
            .call(
                "grant load lease",
                &self.key,
                c.lease_grant(LEASE_TTL_SECONDS, None),
            )
            .await?;
        let put = c.put(
            self.key.clone(),
            value,
            Some(PutOptions::new().with_lease(g.id())),
        );
        self.store.call("put load report", &self.key, put).await?;
        self.lease = Some(g.id());
        Ok(())
    }

    async fn delete(&mut self) {
        let mut c = self.store.client();
        let _ = self
            .store
            .call(
                "delete load report",
                &self.key,
                c.delete(self.key.clone(), None),
            )
            .await;
        if let Some(l) = self.lease.take() {
            let _ = self
                .store
                .call("revoke load lease", &self.key, c.lease_revoke(l))
                .await;
        }
    }
}

/// Samples and reports `gw`'s load as instance `<kind>-<random>` until `stop`, then deletes its
/// report (its load leaves with it).
pub async fn report(gw: Arc<Gateway>, kind: &str, stop: tokio_util::sync::CancellationToken) {
    let instance = format!("{kind}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut writer = Writer {
        key: format!("{}{instance}", prefix(&gw.store)),
        store: gw.store.clone(),
        lease: None,
    };
    let mut period = Period::default();
    let mut sample = tokio::time::interval(SAMPLE_EVERY);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut publish = tokio::time::interval(REPORT_EVERY);
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_empty = false;
    let mut last_publish = tokio::time::Instant::now();
    // A burst seen within BURST_GAP of the last report: published once the gap has passed.
    let mut burst = false;
    loop {
        let now = tokio::select! {
            _ = stop.cancelled() => break,
            _ = sample.tick() => {
                burst |= period.sample(&gw);
                burst && last_publish.elapsed() >= BURST_GAP
            }
            _ = publish.tick() => true,
            _ = gw.load_wake.notified() => {
                // Wake-ups come in bursts (many executions put back at once): one report per
                // MIN_GAP at most.
                tokio::time::sleep_until(last_publish + MIN_GAP).await;
                burst |= period.sample(&gw);
                true
            }
        };
        if !now {
            continue;
        }
        last_publish = tokio::time::Instant::now();
        burst = false;
        let report = period.report(&gw, &instance);
        let empty = report.functions.is_empty();
        if empty && last_empty {
            continue;
        }
        match writer.put(&report).await {
            Ok(()) => last_empty = empty,
            Err(e) => tracing::warn!(error = %e, "load report not written"),
        }
    }
    writer.delete().await;
}

/// Every instance's latest report, keyed by its etcd key, as of `revision`.
pub struct Listed {
    pub revision: i64,
    pub reports: Vec<(String, LoadReport)>,
}

/// Lists every instance's latest report (unreadable ones skipped, with a warning).
pub async fn read_all(store: &Store) -> Result<Listed, StoreError> {
    let p = prefix(store);
    let mut c = store.client();
    let resp = store
        .call(
            "list load reports",
            &p,
            c.get(
                p.clone(),
                Some(etcd_client::GetOptions::new().with_prefix()),
            ),
        )
        .await?;
    Ok(Listed {
        revision: resp.header().map_or(0, |h| h.revision()),
        reports: resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                Some((
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    decode(kv.key(), kv.value())?,
                ))
            })
            .collect(),
    })
}

/// One stored report; `None`, with a warning naming the key, when it cannot be read.
pub fn decode(key: &[u8], value: &[u8]) -> Option<LoadReport> {
    serde_json::from_slice(value)
        .map_err(|e| {
            tracing::warn!(key = %String::from_utf8_lossy(key), error = %e, "unreadable load report");
        })
        .ok()
}
