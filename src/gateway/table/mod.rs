//! The routing table: every Function's invocation settings and its ready endpoints, kept in
//! step with etcd (the function reconciler's status) — never a Docker call per request.
//! Each endpoint carries its in-flight count for least-in-flight balancing.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::api::{Conditions, Function, Object};

mod route;

pub use route::{Endpoint, Held, Lease, Route};

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

    /// The warm endpoint registered for `f`'s name, and whether `f` may use it now (the same
    /// incarnation and generation).
    fn warm_for(&self, f: &Function) -> Option<(Arc<Endpoint>, bool)> {
        let warm = self.warm.read().unwrap_or_else(|p| p.into_inner());
        let w = warm.get(&format!("{}/{}", f.metadata.namespace(), f.metadata.name))?;
        let usable =
            Some(w.uid.as_str()) == f.metadata.uid.as_deref() && w.generation == f.generation();
        Some((w.endpoint.clone(), usable))
    }

    /// Takes `endpoint` of function `ns/name` out of service (see [`Endpoint::retire`]) and
    /// wakes the callers waiting for a slot of that function, so that those waiting on a
    /// route listing it move to the route the table holds now.
    pub fn retire(&self, ns: &str, name: &str, endpoint: &Endpoint) {
        endpoint.retire();
        if let Some(r) = self.get(ns, name) {
            r.load.freed.notify_waiters();
        }
    }

    /// Installs the route of a function from its latest state, keeping the in-flight counts
    /// of endpoints that stay (same task, same address).
    pub fn upsert(&self, f: &Function, metrics: &super::metrics::GatewayMetrics) {
        let (ns, name) = (f.metadata.namespace(), f.metadata.name.as_str());
        let registered = self.warm_for(f);
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
        let warm = match &registered {
            Some((w, true)) if endpoints.is_empty() => {
                endpoints.push(w.clone());
                true
            }
            _ => false,
        };
        // Replicas gone from the status (stopping, failed) get no new call, not even from a
        // caller still holding the old route; a warm container is retired by its release
        // only (it may stand in again should the function's replicas go).
        let dropped: Vec<Arc<Endpoint>> = old
            .iter()
            .flat_map(|o| o.endpoints.iter())
            .filter(|e| !endpoints.iter().any(|n| Arc::ptr_eq(n, e)))
            .filter(|e| !registered.as_ref().is_some_and(|(w, _)| Arc::ptr_eq(w, e)))
            .cloned()
            .collect();
        for e in &dropped {
            e.retire();
        }
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
        if let Some(o) = old.filter(|_| !dropped.is_empty()) {
            o.load.freed.notify_waiters();
        }
        self.changed.notify_waiters();
    }

    /// Removes a deleted function; its endpoints get no new call.
    pub fn remove<K: crate::api::Resource>(&self, f: &Object<K>) {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        let mut gone = None;
        if let Some(m) = routes.get_mut(f.metadata.namespace()) {
            gone = m.remove(&f.metadata.name);
            if m.is_empty() {
                routes.remove(f.metadata.namespace());
            }
        }
        drop(routes);
        if let Some(r) = gone {
            r.endpoints.iter().for_each(|e| e.retire());
            r.load.freed.notify_waiters();
        }
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

    /// A status listing one ready replica, `a:1`.
    fn one_replica() -> crate::api::FunctionStatus {
        crate::api::FunctionStatus {
            endpoints: vec![crate::api::function::Endpoint {
                address: "a:1".into(),
                task_id: "t1".into(),
                node_id: String::new(),
            }],
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_leave_a_route_whose_endpoints_are_retired() {
        use crate::api::{FunctionSpec, FunctionStatus};
        let spec: FunctionSpec =
            serde_saphyr::from_str("runtime: shell\ncode: {inline: cat}\nconcurrency: 1\n")
                .unwrap();
        let mut f = Function::new("default", "f", spec);
        f.status = Some(one_replica());
        let table = Arc::new(Table::default());
        let m = super::super::metrics::GatewayMetrics::default();
        table.upsert(&f, &m);
        let stale = table.get("default", "f").unwrap();
        let busy = stale.acquire().unwrap();
        let waiter = {
            let stale = stale.clone();
            tokio::spawn(async move {
                let t = tokio::time::Instant::now();
                let got = stale.acquire_within(Duration::from_secs(60), 10).await;
                (got.is_some(), t.elapsed())
            })
        };
        tokio::task::yield_now().await;
        // The replica leaves the status: its endpoint is retired and the waiter let go at
        // once, though the call in flight on it still holds the slot.
        f.status = Some(FunctionStatus::default());
        table.upsert(&f, &m);
        let (got, waited) = waiter.await.unwrap();
        assert!(!got, "no lease on a retired endpoint");
        assert!(waited < Duration::from_secs(1), "waited {waited:?}");
        assert!(!stale.live());
        assert!(!busy.endpoint.drained());
        drop(busy);
        assert!(stale.endpoints[0].drained());
    }

    #[test]
    fn upsert_keeps_the_registered_warm_endpoint_in_service() {
        use crate::api::FunctionSpec;
        let spec: FunctionSpec =
            serde_saphyr::from_str("runtime: shell\ncode: {inline: cat}\n").unwrap();
        let mut f = Function::new("default", "f", spec);
        f.metadata.uid = Some("u".into());
        let table = Table::default();
        let m = super::super::metrics::GatewayMetrics::default();
        let warm = Arc::new(Endpoint::new("w:1", "pool-task"));
        table.set_warm(&f, Some(warm.clone()), &m);
        assert!(table.get("default", "f").unwrap().warm);
        f.status = Some(one_replica());
        table.upsert(&f, &m);
        let r = table.get("default", "f").unwrap();
        assert!(!r.warm, "its own replica first");
        assert!(
            !warm.is_retired(),
            "only its release retires the warm container"
        );
        table.set_warm(&f, None, &m);
        table.retire("default", "f", &warm);
        assert!(warm.drained());
        let own = r.endpoints[0].clone();
        table.remove(&f);
        assert!(
            own.is_retired(),
            "a deleted function's replicas get no new call"
        );
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
