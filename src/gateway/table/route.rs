//! One function's route: its ready endpoints with their in-flight counts (least-in-flight
//! balancing within the function's concurrency), the callers waiting for a slot, and the
//! load the reporter samples. An endpoint taken out of service is never leased again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

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
    /// Taken out of service: no new lease is handed out on it (see [`Endpoint::retire`]).
    retired: AtomicBool,
    /// Idle keep-alive connections to its agent (closed with the endpoint).
    pub conns: Arc<crate::gateway::upstream::Pool>,
}

impl Endpoint {
    /// An idle endpoint.
    pub fn new(address: &str, task_id: &str) -> Self {
        Endpoint {
            address: address.into(),
            invoke_uri: format!("http://{address}/invoke").parse().ok(),
            task_id: task_id.into(),
            inflight: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            conns: Default::default(),
        }
    }

    /// Requests in flight to this endpoint.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Takes the endpoint out of service for good: once this returned, no lease on it is
    /// handed out any more, even to a caller still holding a route that lists it, so that
    /// [`Endpoint::drained`] turning true means nothing will be sent to it again (a warm pool
    /// container can then be told to exit). Waiters are woken by [`super::Table::retire`].
    pub fn retire(&self) {
        // SeqCst pairs with the lease's increment-then-check in `acquire_except`: either the
        // leaser sees the flag or the drain sees its lease.
        self.retired.store(true, Ordering::SeqCst);
    }

    /// Whether it was taken out of service.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    /// Retired and without a request in flight: nothing is or will be sent to it.
    pub fn drained(&self) -> bool {
        self.is_retired() && self.inflight.load(Ordering::SeqCst) == 0
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
    pub metrics: crate::gateway::metrics::RouteMetrics,
    /// Rotates the starting point of the scan so ties spread over replicas.
    pub(super) cursor: AtomicUsize,
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

    /// Callers waiting for a slot (every replica busy) right now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
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

    /// Whether it lists an endpoint still in service. A route whose endpoints were all retired
    /// is stale: the table holds a newer one, and a caller waiting on it should move there.
    pub fn live(&self) -> bool {
        self.endpoints.iter().any(|e| !e.is_retired())
    }

    /// Requests in flight to its replicas, waiting for a slot or held for a first replica:
    /// what the function autoscaler sizes the function for.
    pub fn demand(&self) -> usize {
        self.endpoints.iter().map(|e| e.inflight()).sum::<usize>() + self.load.queued()
    }

    /// [`Route::acquire`], waiting up to `patience` for a slot to free when every replica is
    /// full, unless `max_waiting` callers already wait (then `None` at once: the caller puts
    /// the work back rather than queue without bound). `None` also when there is no replica,
    /// or as soon as the route is stale (its endpoints retired while waiting: see
    /// [`Route::live`]).
    pub async fn acquire_within(&self, patience: Duration, max_waiting: usize) -> Option<Lease> {
        if let Some(l) = self.acquire() {
            return Some(l);
        }
        if !self.live() || self.load.waiting.load(Ordering::Relaxed) >= max_waiting {
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
            if !self.live() {
                break None;
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

    /// [`Route::acquire`] among the endpoints in service whose address is not in `skip`
    /// (replicas that refused a connection for this request).
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
                .filter(|e| !e.is_retired() && !skip.contains(&e.address.as_str()))
                .min_by_key(|e| e.inflight())?;
            let cur = best.inflight();
            if cur >= self.concurrency {
                return None;
            }
            if best
                .inflight
                .compare_exchange(cur, cur + 1, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
            {
                // Retired meanwhile: the drain may have seen no lease, so this one must not
                // be used; the next pass leaves the endpoint out.
                if best.is_retired() {
                    best.inflight.fetch_sub(1, Ordering::SeqCst);
                    self.load.freed.notify_one();
                    continue;
                }
                return Some(Lease {
                    endpoint: best.clone(),
                    load: self.load.clone(),
                });
            }
        }
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
    fn a_retired_endpoint_gets_no_new_lease() {
        let r = route(2, 1);
        let a = r.acquire().unwrap();
        let gone = a.endpoint.clone();
        gone.retire();
        assert!(r.live(), "the other replica serves");
        assert!(!gone.drained(), "its call is still in flight");
        let b = r.acquire().unwrap();
        assert_ne!(b.endpoint.address, gone.address);
        assert!(
            r.acquire().is_none(),
            "the other is full; the retired one is out"
        );
        drop(a);
        assert!(gone.drained());
        r.endpoints.iter().for_each(|e| e.retire());
        assert!(!r.live());
        drop(b);
        assert!(r.acquire().is_none());
    }

    #[test]
    fn no_lease_is_handed_out_once_a_drain_saw_none() {
        // The release of a warm container retires it, waits until `drained`, then tells its
        // agent to exit: a lease obtained after that would send a call to a dying agent.
        let r = Arc::new(route(1, 64));
        let drained_seen = Arc::new(AtomicBool::new(false));
        let late = Arc::new(AtomicUsize::new(0));
        let leasers: Vec<_> = (0..3)
            .map(|_| {
                let (r, seen, late) = (r.clone(), drained_seen.clone(), late.clone());
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        if let Some(l) = r.acquire() {
                            if seen.load(Ordering::SeqCst) {
                                late.fetch_add(1, Ordering::Relaxed);
                            }
                            drop(l);
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(2));
        let ep = r.endpoints[0].clone();
        ep.retire();
        while !ep.drained() {
            std::hint::spin_loop();
        }
        drained_seen.store(true, Ordering::SeqCst);
        for t in leasers {
            t.join().unwrap();
        }
        assert_eq!(late.load(Ordering::Relaxed), 0);
        assert!(r.acquire().is_none());
    }

    #[test]
    fn no_endpoints_no_lease() {
        assert!(route(0, 4).acquire().is_none());
    }
}
