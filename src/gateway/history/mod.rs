//! The short history the console's charts draw, kept in this gateway's memory (it starts
//! empty when the gateway starts, and each gateway keeps what it saw):
//! - per function, its invocations through this gateway over the last hour ([`series`]);
//! - per node pool, its node counts and the autoscaler's decisions over the last hour
//!   ([`pools`]), followed through a watch of the NodePools.
//!
//! Worst-case memory: [`MAX_FUNCTIONS`] series of at most ~54 KB (~28 MB) plus
//! [`MAX_POOLS`] timelines of at most ~60 KB (~8 MB); a function or pool beyond the bound has
//! no history (its endpoint says so), and a deleted one frees its place.

pub mod pools;
pub mod series;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::{NodePoolSpec, ObjectKey};
use crate::runtime::{WatcherConfig, watcher};
use crate::store::{CacheChange, Store};

use super::Gateway;
use super::authz::{Permission, Principal};
use super::error::HttpError;

pub use series::Series;

/// Functions with an invocation history at most.
pub const MAX_FUNCTIONS: usize = 512;
/// Node pools with a timeline at most.
pub const MAX_POOLS: usize = 128;

/// The histories of one gateway.
#[derive(Debug)]
pub struct History {
    functions: Mutex<HashMap<ObjectKey, Arc<Series>>>,
    pools: Mutex<HashMap<ObjectKey, pools::Timeline>>,
    /// When this history started: nothing before it is known.
    since: chrono::DateTime<chrono::Utc>,
}

impl Default for History {
    fn default() -> Self {
        History {
            functions: Mutex::default(),
            pools: Mutex::default(),
            since: chrono::Utc::now(),
        }
    }
}

/// Seconds since the Unix epoch (0 for a clock before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl History {
    /// The series of a function, made on first use unless [`MAX_FUNCTIONS`] exist already
    /// (then `None`: its calls are not kept).
    pub fn series(&self, ns: &str, name: &str) -> Option<Arc<Series>> {
        let mut m = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        let key = ObjectKey::new(ns, name);
        if let Some(s) = m.get(&key) {
            return Some(s.clone());
        }
        if m.len() >= MAX_FUNCTIONS {
            return None;
        }
        Some(m.entry(key).or_default().clone())
    }

    /// Forgets a deleted function's series.
    pub fn forget_function(&self, key: &ObjectKey) {
        self.functions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    fn function_points(&self, key: &ObjectKey) -> Option<Vec<series::Point>> {
        let s = self
            .functions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()?;
        Some(s.points(unix_now()))
    }

    /// Follows the node pools in etcd into their timelines (forever).
    pub async fn follow_pools(self: Arc<Self>, store: Store) {
        let cache = crate::runtime::Cache::<NodePoolSpec>::new();
        let stream = watcher::<NodePoolSpec>(store, None, WatcherConfig::default(), None);
        cache
            .run(stream, |change| {
                let now = chrono::Utc::now();
                let mut m = self.pools.lock().unwrap_or_else(|p| p.into_inner());
                match change {
                    CacheChange::Applied(p) => {
                        let key = p.key();
                        if m.len() < MAX_POOLS || m.contains_key(&key) {
                            m.entry(key).or_default().observe(p, now);
                        }
                    }
                    CacheChange::Deleted(p) => {
                        m.remove(&p.key());
                    }
                    CacheChange::Invalid(..) => {}
                }
            })
            .await;
    }

    fn pool_timeline(&self, key: &ObjectKey) -> Option<pools::Timeline> {
        let mut m = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let tl = m.get_mut(key)?;
        tl.prune(chrono::Utc::now());
        Some(tl.clone())
    }
}

/// `GET /v1/namespaces/{ns}/functions/{name}/history`: the function's invocations through
/// this gateway over the last hour, in buckets with calls (oldest first).
pub async fn function_history(
    State(gw): State<Arc<Gateway>>,
    Path((ns, name)): Path<(String, String)>,
    principal: Principal,
) -> Response {
    if let Err(e) = principal.check(&ns, Permission::FunctionsRead) {
        return e.into_response();
    }
    let key = ObjectKey::new(&ns, &name);
    if gw.table.get(&ns, &name).is_none() {
        return HttpError::unknown_function(&ns, &name).into_response();
    }
    match gw.metrics.history.function_points(&key) {
        Some(points) => Json(json!({
            "namespace": ns,
            "name": name,
            "bucketSeconds": series::BUCKET_SECS,
            "windowSeconds": series::BUCKET_SECS * series::BUCKETS as u64,
            "now": unix_now(),
            "since": gw.metrics.history.since.timestamp(),
            "buckets": points,
        }))
        .into_response(),
        None => HttpError::new(
            StatusCode::NOT_FOUND,
            "NoHistory",
            format!(
                "this gateway keeps the invocations of {MAX_FUNCTIONS} functions at most and {ns}/{name} is not among them"
            ),
        )
        .into_response(),
    }
}

/// `GET /v1/namespaces/{ns}/nodepools/{name}/history`: the pool's node counts over the last
/// hour (a sample at every change, the first one giving the counts at the window's start) and
/// the marks that explain them.
pub async fn pool_history(
    State(gw): State<Arc<Gateway>>,
    Path((ns, name)): Path<(String, String)>,
    principal: Principal,
) -> Response {
    if let Err(e) = principal.check_platform(Permission::NodePoolsRead) {
        return e.into_response();
    }
    match gw
        .metrics
        .history
        .pool_timeline(&ObjectKey::new(&ns, &name))
    {
        Some(tl) => Json(json!({
            "namespace": ns,
            "name": name,
            "windowSeconds": pools::WINDOW.num_seconds(),
            "now": chrono::Utc::now(),
            "since": gw.metrics.history.since,
            "samples": tl.samples,
            "marks": tl.marks,
        }))
        .into_response(),
        None => HttpError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("node pool {ns}/{name} not found (or not followed yet)"),
        )
        .into_response(),
    }
}
