//! The routing table: every Function's invocation settings and its ready endpoints, kept in
//! step with etcd (the function reconciler's status) — never a Docker call per request.
//! Each endpoint carries its in-flight count for least-in-flight balancing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::api::{Conditions, Function, Object};

/// One replica's address and load.
#[derive(Debug)]
pub struct Endpoint {
    /// `host:port`
    pub address: String,
    /// `http://host:port/invoke`, parsed once (not per request).
    pub invoke_uri: Option<axum::http::Uri>,
    /// Swarm task id: the same address reused by a new task is a new endpoint.
    pub task_id: String,
    inflight: AtomicUsize,
    /// Idle keep-alive connections to its agent (closed with the endpoint).
    pub conns: Arc<super::upstream::Pool>,
}

impl Endpoint {
    /// An idle endpoint.
    pub fn new(address: &str, task_id: &str) -> Self {
        Endpoint {
            address: address.into(),
            invoke_uri: format!("http://{address}/invoke").parse().ok(),
            task_id: task_id.into(),
            inflight: AtomicUsize::new(0),
            conns: Default::default(),
        }
    }

    /// Requests in flight to this endpoint.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }
}

/// What the gateway needs to know to invoke one function.
#[derive(Debug)]
pub struct Route {
    pub namespace: String,
    pub name: String,
    /// `namespace/name`, as agents know the function (`X-Lambda-Function`).
    pub agent_name: axum::http::HeaderValue,
    pub timeout: Duration,
    pub max_payload: usize,
    /// Invocations one replica serves at once.
    pub concurrency: usize,
    pub http: bool,
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Why it has no replica yet, when its status says (the autoscaler's `Schedulable`
    /// condition False: its reason and message — the pool adding a node for it, or that no
    /// pool fits it) — what a caller the gateway cannot hold long enough is told.
    pub unplaced: Option<(String, String)>,
    /// This function's metric handles (no label allocation per request).
    pub metrics: super::metrics::RouteMetrics,
    /// Rotates the starting point of the scan so ties spread over replicas.
    cursor: AtomicUsize,
    /// Requests held or waiting for a slot at most (`spec.autoscaling.maxHeldRequests`).
    pub max_held: usize,
    /// Waiters and load counters, shared by every version of the route (they survive
    /// status updates).
    pub load: Arc<RouteLoad>,
    /// Its one endpoint is a warm pool container specialised for it (the function has no
    /// ready replica of its own yet).
    pub warm: bool,
}

/// A function's load as this process sees it, beyond the in-flight counts of its endpoints:
/// what the load reporter samples for the function autoscaler.
#[derive(Debug, Default)]
pub struct RouteLoad {
    /// Signalled (one waiter) whenever a lease ends: a slot may be free.
    pub freed: tokio::sync::Notify,
    /// Callers waiting in [`Route::acquire_within`] for a slot right now.
    waiting: AtomicUsize,
    /// Requests held for a first ready replica right now.
    held: AtomicUsize,
    /// Requests and executions that arrived (ever; the reporter takes differences).
    arrivals: AtomicU64,
    /// Executions put back for want of a replica (ever): demand the listener does not hold.
    deferred: AtomicU64,
}

impl RouteLoad {
    /// Counts one request or execution for the function.
    pub fn arrived(&self) {
        self.arrivals.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an execution put back because the function has no replica.
    pub fn deferred(&self) {
        self.deferred.fetch_add(1, Ordering::Relaxed);
    }

    /// Executions put back so far.
    pub fn deferrals(&self) -> u64 {
        self.deferred.load(Ordering::Relaxed)
    }

    /// Requests and executions counted so far.
    pub fn arrivals(&self) -> u64 {
        self.arrivals.load(Ordering::Relaxed)
    }

    /// Callers waiting for a slot or held for a first replica.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Relaxed) + self.held.load(Ordering::Relaxed)
    }

    /// Holds a request for a first replica unless `max` are held already; the request counts
    /// as held while the guard lives. The flag says it is the first one held.
    pub fn hold(self: &Arc<Self>, max: usize) -> Option<(Held, bool)> {
        let mut cur = self.held.load(Ordering::Relaxed);
        loop {
            if cur >= max {
                return None;
            }
            match self
                .held
                .compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some((Held(self.clone()), cur == 0)),
                Err(now) => cur = now,
            }
        }
    }
}

/// A request held for a function's first replica (see [`RouteLoad::hold`]).
pub struct Held(Arc<RouteLoad>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A reserved slot on an endpoint; releases it when dropped, so no path can leak a slot.
pub struct Lease {
    pub endpoint: Arc<Endpoint>,
    load: Arc<RouteLoad>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.endpoint.inflight.fetch_sub(1, Ordering::Relaxed);
        self.load.freed.notify_one();
    }
}

impl Route {
    /// Picks the endpoint with the fewest requests in flight, if one is under the function's
    /// concurrency; `None` means every replica is full (429) or there is none.
    pub fn acquire(&self) -> Option<Lease> {
        self.acquire_except(&[])
    }

    /// Requests in flight to its replicas, waiting for a slot or held for a first replica:
    /// what the function autoscaler sizes the function for.
    pub fn demand(&self) -> usize {
        self.endpoints.iter().map(|e| e.inflight()).sum::<usize>() + self.load.queued()
    }

    /// [`Route::acquire`], waiting up to `patience` for a slot to free when every replica is
    /// full, unless `max_waiting` callers already wait (then `None` at once: the caller puts
    /// the work back rather than queue without bound). `None` also when there is no replica.
    pub async fn acquire_within(&self, patience: Duration, max_waiting: usize) -> Option<Lease> {
        if let Some(l) = self.acquire() {
            return Some(l);
        }
        if self.endpoints.is_empty() || self.load.waiting.load(Ordering::Relaxed) >= max_waiting {
            return None;
        }
        self.load.waiting.fetch_add(1, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + patience;
        let lease = loop {
            // Register before looking again, so a release in between is not missed.
            let freed = self.load.freed.notified();
            if let Some(l) = self.acquire() {
                break Some(l);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                break self.acquire();
            }
        };
        self.load.waiting.fetch_sub(1, Ordering::Relaxed);
        if lease.is_none() {
            // Pass the wake-up on: another waiter may find a slot this one did not take.
            self.load.freed.notify_one();
        }
        lease
    }

    /// [`Route::acquire`] among the endpoints whose address is not in `skip` (replicas that
    /// refused a connection for this request).
    pub fn acquire_except(&self, skip: &[&str]) -> Option<Lease> {
        // Ties rotate (round robin among the least loaded); a CAS loop keeps the per-endpoint
        // limit exact under races.
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        loop {
            let best = (0..n)
                .map(|i| &self.endpoints[(start + i) % n])
                .filter(|e| !skip.contains(&e.address.as_str()))
                .min_by_key(|e| e.inflight())?;
            let cur = best.inflight();
            if cur >= self.concurrency {
                return None;
            }
            if best
                .inflight
                .compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return Some(Lease {
                    endpoint: best.clone(),
                    load: self.load.clone(),
                });
            }
        }
    }
}

/// All routes by `namespace/name`, with a notification on every change (for requests
/// waiting for a function's first endpoint).
#[derive(Default)]
pub struct Table {
    /// namespace → name → route: lookups by `&str`, without building a key per request.
    routes: RwLock<HashMap<String, HashMap<String, Arc<Route>>>>,
    /// `namespace/name` → the warm pool container specialised for that function: used while
    /// the function has no ready replica of its own, and only for the incarnation (uid) and
    /// generation it was specialised with.
    warm: RwLock<HashMap<String, WarmEndpoint>>,
    pub changed: tokio::sync::Notify,
}

/// A warm pool container serving one function incarnation and generation.
#[derive(Debug, Clone)]
struct WarmEndpoint {
    uid: String,
    generation: i64,
    endpoint: Arc<Endpoint>,
}

impl Table {
    /// The route of a function.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Route>> {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(namespace)
            .and_then(|m| m.get(name))
            .cloned()
    }

    /// Routes `f` to `endpoint` (a warm pool container specialised for it) while it has no
    /// replica of its own, or stops doing so (`None`); `f` is its latest state.
    pub fn set_warm(
        &self,
        f: &Function,
        endpoint: Option<Arc<Endpoint>>,
        metrics: &super::metrics::GatewayMetrics,
    ) {
        let key = format!("{}/{}", f.metadata.namespace(), f.metadata.name);
        {
            let mut warm = self.warm.write().unwrap_or_else(|p| p.into_inner());
            match endpoint {
                Some(endpoint) => warm.insert(
                    key,
                    WarmEndpoint {
                        uid: f.metadata.uid.clone().unwrap_or_default(),
                        generation: f.generation(),
                        endpoint,
                    },
                ),
                None => warm.remove(&key),
            };
        }
        self.upsert(f, metrics);
    }

    /// Forgets a warm endpoint of a function that is gone (nothing to re-route).
    pub fn clear_warm(&self, ns: &str, name: &str) {
        self.warm
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&format!("{ns}/{name}"));
    }

    /// The warm endpoint `f` may use now, if any.
    fn warm_for(&self, f: &Function) -> Option<Arc<Endpoint>> {
        let warm = self.warm.read().unwrap_or_else(|p| p.into_inner());
        let w = warm.get(&format!("{}/{}", f.metadata.namespace(), f.metadata.name))?;
        (Some(w.uid.as_str()) == f.metadata.uid.as_deref() && w.generation == f.generation())
            .then(|| w.endpoint.clone())
    }

    /// Installs the route of a function from its latest state, keeping the in-flight counts
    /// of endpoints that stay (same task, same address).
    pub fn upsert(&self, f: &Function, metrics: &super::metrics::GatewayMetrics) {
        let (ns, name) = (f.metadata.namespace(), f.metadata.name.as_str());
        let warm = self.warm_for(f);
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        let old = routes.get(ns).and_then(|m| m.get(name)).cloned();
        let status = f.status.clone().unwrap_or_default();
        let mut endpoints: Vec<Arc<Endpoint>> = status
            .endpoints
            .iter()
            .map(|e| {
                old.as_ref()
                    .and_then(|o| {
                        o.endpoints
                            .iter()
                            .find(|x| x.address == e.address && x.task_id == e.task_id)
                            .cloned()
                    })
                    .unwrap_or_else(|| Arc::new(Endpoint::new(&e.address, &e.task_id)))
            })
            .collect();
        // Its own replicas first: the warm container only stands in until one is ready.
        let warm = match warm {
            Some(w) if endpoints.is_empty() => {
                endpoints.push(w);
                true
            }
            _ => false,
        };
        routes.entry(ns.to_string()).or_default().insert(
            name.to_string(),
            Arc::new(Route {
                namespace: f.metadata.namespace().to_string(),
                name: f.metadata.name.clone(),
                agent_name: axum::http::HeaderValue::from_str(&format!("{ns}/{name}"))
                    .unwrap_or_else(|_| axum::http::HeaderValue::from_static("-")),
                timeout: Duration::from_secs(u64::from(f.spec.timeout_seconds)),
                max_payload: f.spec.max_payload_bytes as usize,
                concurrency: f.spec.concurrency.max(1) as usize,
                http: f.spec.triggers.http && !f.is_deleting(),
                endpoints,
                unplaced: status
                    .condition(crate::reconcilers::autoscaler::run::SCHEDULABLE)
                    .filter(|c| c.status == crate::api::ConditionStatus::False)
                    .map(|c| (c.reason.clone(), c.message.clone())),
                metrics: metrics.route(ns, name),
                cursor: AtomicUsize::new(0),
                load: old
                    .as_ref()
                    .map_or_else(Default::default, |o| o.load.clone()),
                max_held: f.spec.autoscaling.max_held_requests.max(1) as usize,
                warm,
            }),
        );
        drop(routes);
        self.changed.notify_waiters();
    }

    /// Removes a deleted function.
    pub fn remove<K: crate::api::Resource>(&self, f: &Object<K>) {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = routes.get_mut(f.metadata.namespace()) {
            m.remove(&f.metadata.name);
            if m.is_empty() {
                routes.remove(f.metadata.namespace());
            }
        }
        drop(routes);
        self.changed.notify_waiters();
    }

    /// Every route, for the load reporter.
    pub fn routes(&self) -> Vec<Arc<Route>> {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// Number of functions known.
    pub fn len(&self) -> usize {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(HashMap::len)
            .sum()
    }

    /// True when no function is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(n: usize, concurrency: usize) -> Route {
        Route {
            namespace: "default".into(),
            name: "f".into(),
            agent_name: axum::http::HeaderValue::from_static("default/f"),
            timeout: Duration::from_secs(1),
            max_payload: 10,
            concurrency,
            http: true,
            endpoints: (0..n)
                .map(|i| Arc::new(Endpoint::new(&format!("10.0.0.{i}:80"), &format!("t{i}"))))
                .collect(),
            unplaced: None,
            metrics: crate::gateway::metrics::GatewayMetrics::default().route("default", "f"),
            cursor: AtomicUsize::new(0),
            load: Default::default(),
            max_held: 10,
            warm: false,
        }
    }

    #[test]
    fn least_inflight_and_limits() {
        let r = route(2, 2);
        let a = r.acquire().unwrap();
        let b = r.acquire().unwrap();
        assert_ne!(
            a.endpoint.address, b.endpoint.address,
            "spread over replicas"
        );
        let c = r.acquire().unwrap();
        let d = r.acquire().unwrap();
        assert!(r.acquire().is_none(), "2 replicas x 2 concurrency are full");
        drop(c);
        assert!(r.acquire().is_some());
        drop((a, b, d));
        assert!(r.endpoints.iter().all(|e| e.inflight() <= 1));
    }

    #[test]
    fn no_endpoints_no_lease() {
        assert!(route(0, 4).acquire().is_none());
    }

    #[test]
    fn upsert_keeps_counts_of_surviving_endpoints() {
        use crate::api::{FunctionSpec, FunctionStatus, function::Endpoint as E};
        let spec: FunctionSpec =
            serde_saphyr::from_str("runtime: shell\ncode: {inline: cat}\nconcurrency: 4\n")
                .unwrap();
        let mut f = Function::new("default", "f", spec);
        let ep = |a: &str, t: &str| E {
            address: a.into(),
            task_id: t.into(),
            node_id: String::new(),
        };
        f.status = Some(FunctionStatus {
            endpoints: vec![ep("a:1", "t1"), ep("b:1", "t2")],
            ..Default::default()
        });
        let table = Table::default();
        let m = super::super::metrics::GatewayMetrics::default();
        table.upsert(&f, &m);
        let lease = table.get("default", "f").unwrap().acquire().unwrap();
        let addr = lease.endpoint.address.clone();
        f.status = Some(FunctionStatus {
            endpoints: vec![
                ep(&addr, if addr == "a:1" { "t1" } else { "t2" }),
                ep("c:1", "t3"),
            ],
            ..Default::default()
        });
        table.upsert(&f, &m);
        let r = table.get("default", "f").unwrap();
        let kept = r.endpoints.iter().find(|e| e.address == addr).unwrap();
        assert_eq!(kept.inflight(), 1);
        drop(lease);
        assert_eq!(kept.inflight(), 0);
    }
}
