//! Cold starts from warm pools (design §3 "warm pool"): when a request is held for a function
//! with no ready replica, the gateway claims an idle container of a fitting `WarmPool`
//! (atomically across gateways: [`claims::claim`]), specialises it with the function's code,
//! handler, environment, secrets and limits over the agent's authenticated endpoint, and routes
//! the held requests to it while the function's own service scales up behind (the held request
//! already told the function autoscaler).
//!
//! A specialised container serves that function (that incarnation and generation) only, and is
//! never handed to another: it is released — taken out of the route, drained, told to exit
//! (Swarm then starts a fresh one in its place), its claim deleted — as soon as the function's
//! own replicas are ready, the function changed or went away, or it served nothing for the
//! pool's `releaseAfterIdleSeconds`. Should this gateway die first, the agent exits by itself
//! after that idle time plus a minute, and the reconciler deletes the claim.

pub mod choose;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{Request, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio_util::sync::CancellationToken;

use crate::api::{Function, ObjectKey, WarmPoolSpec};
use crate::reconcilers::warmpool::claims::{self, Claim};
use crate::runtime::{Cache, WatcherConfig, watcher};

use super::Gateway;
use super::table::Endpoint;

/// How often warm containers are checked for release.
const RELEASE_CHECK: Duration = Duration::from_millis(250);
/// Beyond the pool's release time, how long an idle specialised agent waits for the gateway
/// before it exits by itself.
const AGENT_IDLE_MARGIN: Duration = Duration::from_secs(60);
/// Longest wait for a container to answer `/specialize` or `/release` beyond the function's
/// timeout (importing a module may take a while).
const AGENT_CALL_MIN: Duration = Duration::from_secs(10);

/// A warm pool container this gateway specialised and routes to.
#[derive(Debug)]
pub struct WarmReplica {
    pub function: ObjectKey,
    pub uid: String,
    pub generation: i64,
    pub pool: ObjectKey,
    pub task_id: String,
    pub endpoint: Arc<Endpoint>,
    token: String,
    release_after: Duration,
    timeout: Duration,
    last_busy: Mutex<Instant>,
}

/// The gateway's warm-pool state.
pub struct Warm {
    /// Every WarmPool as last seen.
    pub pools: Cache<WarmPoolSpec>,
    /// This gateway's name in claims.
    instance: String,
    /// `namespace/name` → the container serving that function.
    replicas: Mutex<HashMap<String, Arc<WarmReplica>>>,
    /// Functions whose activation is under way (one at a time per function).
    activating: Mutex<HashSet<String>>,
    /// Pool → its token (read once).
    tokens: Mutex<HashMap<ObjectKey, String>>,
    /// Rotates the first container tried, so gateways racing for one pool spread out.
    cursor: AtomicUsize,
}

impl Default for Warm {
    fn default() -> Self {
        Warm {
            pools: Cache::new(),
            instance: format!(
                "gateway-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            replicas: Mutex::new(HashMap::new()),
            activating: Mutex::new(HashSet::new()),
            tokens: Mutex::new(HashMap::new()),
            cursor: AtomicUsize::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why an agent call failed.
#[derive(Debug, thiserror::Error)]
enum AgentCallError {
    #[error("{0}")]
    Request(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("HTTP {status}: {body}")]
    Refused { status: StatusCode, body: String },
}

impl Warm {
    /// The warm containers this gateway routes to now.
    pub fn replicas(&self) -> Vec<Arc<WarmReplica>> {
        lock(&self.replicas).values().cloned().collect()
    }

    /// Starts serving `ns/name` from a warm pool, unless that is under way or done already
    /// (`since`: when the first request was held, for the metric).
    pub fn activate(gw: &Arc<Gateway>, ns: &str, name: &str, since: Instant) {
        let key = format!("{ns}/{name}");
        if lock(&gw.warm.replicas).contains_key(&key)
            || !lock(&gw.warm.activating).insert(key.clone())
        {
            return;
        }
        let gw = gw.clone();
        let function = ObjectKey::new(ns, name);
        gw.clone().spawn(async move {
            let outcome = activate_once(&gw, &function, since).await;
            gw.metrics.warm_outcome(outcome);
            lock(&gw.warm.activating).remove(&key);
        });
    }

    async fn token(&self, gw: &Gateway, pool: &ObjectKey) -> Option<String> {
        if let Some(t) = lock(&self.tokens).get(pool) {
            return Some(t.clone());
        }
        match claims::token(&gw.store, pool).await {
            Ok(Some(t)) => {
                lock(&self.tokens).insert(pool.clone(), t.clone());
                Some(t)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(pool = %pool, error = %e, "cannot read the warm pool's token");
                None
            }
        }
    }
}

/// One activation: the outcome counted in `lambda_gateway_warm_pool_activations`.
async fn activate_once(gw: &Arc<Gateway>, key: &ObjectKey, since: Instant) -> &'static str {
    let Some(f) = gw.functions.get(key) else {
        return "ineligible";
    };
    if choose::eligible(&f).is_err() {
        return "ineligible";
    }
    let ns = f.metadata.namespace();
    let mut secrets = BTreeMap::new();
    for r in &f.spec.secrets {
        // Only a platform secret can be handed over: Docker never gives a Swarm secret's value
        // back, so a function mounting one by hand waits for its own replica.
        match crate::store::secrets::get(&gw.store, ns, &r.name).await {
            Ok(Some(s)) => match s.value() {
                Ok(v) => {
                    secrets.insert(r.name.clone(), v);
                }
                Err(e) => {
                    tracing::warn!(function = %key, error = %e, "warm pool: unreadable secret");
                    return "ineligible";
                }
            },
            Ok(None) => return "ineligible",
            Err(e) => {
                tracing::warn!(function = %key, error = %e, "warm pool: cannot read a secret");
                return "failed";
            }
        }
    }
    let pools = gw.warm.pools.list();
    let candidates = choose::candidates(&pools, &f);
    if candidates.is_empty() {
        return "no_pool";
    }
    let timeout = Duration::from_secs(u64::from(f.spec.timeout_seconds)).max(AGENT_CALL_MIN);
    for pool in candidates {
        let pkey = pool.key();
        let Some(token) = gw.warm.token(gw, &pkey).await else {
            continue;
        };
        let release_after = Duration::from_secs(u64::from(pool.spec.release_after_idle_seconds));
        let body = choose::specialisation(&f, &secrets, release_after + AGENT_IDLE_MARGIN);
        let body = Bytes::from(body.to_string());
        let endpoints = pool
            .status
            .as_ref()
            .map(|s| s.endpoints.clone())
            .unwrap_or_default();
        let start = gw.warm.cursor.fetch_add(1, Ordering::Relaxed);
        for i in 0..endpoints.len() {
            let e = &endpoints[(start + i) % endpoints.len()];
            let claim = Claim {
                function: choose::function_name(&f),
                uid: f.metadata.uid.clone().unwrap_or_default(),
                gateway: gw.warm.instance.clone(),
                address: e.address.clone(),
                claimed_at: chrono::Utc::now(),
            };
            match claims::claim(&gw.store, &pkey, &e.task_id, &claim).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(err) => {
                    tracing::warn!(function = %key, error = %err, "warm pool: cannot claim");
                    return "failed";
                }
            }
            match agent_call(gw, &e.address, "/specialize", &token, body.clone(), timeout).await {
                Ok(_) => {
                    let replica = Arc::new(WarmReplica {
                        function: key.clone(),
                        uid: f.metadata.uid.clone().unwrap_or_default(),
                        generation: f.generation(),
                        pool: pkey.clone(),
                        task_id: e.task_id.clone(),
                        endpoint: Arc::new(Endpoint::new(&e.address, &e.task_id)),
                        token: token.clone(),
                        release_after,
                        timeout: Duration::from_secs(u64::from(f.spec.timeout_seconds)),
                        last_busy: Mutex::new(Instant::now()),
                    });
                    lock(&gw.warm.replicas).insert(format!("{key}"), replica.clone());
                    // The latest state: the route is rebuilt from it with the container in.
                    let latest = gw.functions.get(key).unwrap_or(f.clone());
                    gw.table
                        .set_warm(&latest, Some(replica.endpoint.clone()), &gw.metrics);
                    gw.metrics.warm_specialised(since.elapsed());
                    tracing::info!(function = %key, pool = %pkey, container = %e.address, took_ms = since.elapsed().as_millis() as u64, "specialised a warm pool container");
                    return "specialised";
                }
                Err(err) => {
                    tracing::warn!(function = %key, pool = %pkey, container = %e.address, error = %err, "warm pool: specialisation failed; trying another container");
                    if let Err(e2) = claims::release(&gw.store, &pkey, &e.task_id).await {
                        tracing::warn!(error = %e2, "warm pool: claim not deleted (the reconciler will)");
                    }
                }
            }
        }
    }
    "no_idle"
}

/// POSTs to a pool agent with its token; the body of a 2xx answer.
async fn agent_call(
    gw: &Gateway,
    address: &str,
    path: &str,
    token: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<Bytes, AgentCallError> {
    let req = Request::post(format!("http://{address}{path}"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(body))
        .map_err(|e| AgentCallError::Request(e.to_string()))?;
    let call = async {
        let resp = gw
            .client
            .request(req)
            .await
            .map_err(|e| AgentCallError::Request(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| AgentCallError::Request(e.to_string()))?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(AgentCallError::Refused {
                status,
                body: String::from_utf8_lossy(&body).chars().take(300).collect(),
            })
        }
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| AgentCallError::Timeout(timeout))?
}

/// Why a warm container should be released now, if it should.
fn release_reason(r: &WarmReplica, f: Option<&Function>, now: Instant) -> Option<&'static str> {
    let Some(f) = f else {
        return Some("the function is gone");
    };
    if f.metadata.uid.as_deref() != Some(r.uid.as_str()) || f.generation() != r.generation {
        return Some("the function changed");
    }
    if f.status.as_ref().is_some_and(|s| !s.endpoints.is_empty()) {
        return Some("its own replicas are ready");
    }
    let idle = now.saturating_duration_since(*lock(&r.last_busy));
    (r.endpoint.inflight() == 0 && idle >= r.release_after).then_some("idle")
}

/// Releases warm containers when they are no longer needed (see the module docs), until `stop`;
/// then releases them all.
pub async fn release_loop(gw: Arc<Gateway>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(RELEASE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        for r in gw.warm.replicas() {
            if r.endpoint.inflight() > 0 {
                *lock(&r.last_busy) = now;
            }
            let f = gw.functions.get(&r.function);
            if let Some(why) = release_reason(&r, f.as_deref(), now) {
                tokio::spawn(release(gw.clone(), r, why));
            }
        }
    }
    let all: Vec<_> = gw
        .warm
        .replicas()
        .into_iter()
        .map(|r| tokio::spawn(release(gw.clone(), r, "the gateway stops")))
        .collect();
    for r in all {
        let _ = r.await;
    }
}

/// Takes `r` out of the route and out of service, lets its in-flight calls finish, tells the
/// agent to exit and deletes the claim.
async fn release(gw: Arc<Gateway>, r: Arc<WarmReplica>, why: &'static str) {
    let key = format!("{}", r.function);
    {
        let mut replicas = lock(&gw.warm.replicas);
        // Someone else is releasing it already.
        if !replicas.get(&key).is_some_and(|x| Arc::ptr_eq(x, &r)) {
            return;
        }
        replicas.remove(&key);
    }
    match gw.functions.get(&r.function) {
        Some(f) => gw.table.set_warm(&f, None, &gw.metrics),
        None => gw.table.clear_warm(&r.function.namespace, &r.function.name),
    }
    // Callers that took the route while it listed the container and still wait for a slot
    // on it move to the current route: once drained, nothing more is sent to the container,
    // so none of their calls reaches an agent on its way out.
    gw.table
        .retire(&r.function.namespace, &r.function.name, &r.endpoint);
    let drain_until = Instant::now() + r.timeout + Duration::from_secs(1);
    while !r.endpoint.drained() && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Err(e) = agent_call(
        &gw,
        &r.endpoint.address,
        "/release",
        &r.token,
        Bytes::new(),
        AGENT_CALL_MIN,
    )
    .await
    {
        // Gone already (it idled out, or its node did): nothing more to tell it.
        tracing::debug!(container = %r.endpoint.address, error = %e, "warm pool: release call failed");
    }
    if let Err(e) = claims::release(&gw.store, &r.pool, &r.task_id).await {
        tracing::warn!(error = %e, "warm pool: claim not deleted (the reconciler will)");
    }
    tracing::info!(function = %r.function, container = %r.endpoint.address, why, "released a warm pool container");
}

/// Keeps the gateway's view of the warm pools in step with etcd (forever).
pub async fn follow_pools(gw: Arc<Gateway>) {
    let cache = gw.warm.pools.clone();
    let stream = watcher::<WarmPoolSpec>(gw.store.clone(), None, WatcherConfig::default(), None);
    cache.run(stream, |_| {}).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::function::Endpoint as StatusEndpoint;
    use crate::api::{FunctionSpec, FunctionStatus, Object};

    fn replica(release_after: Duration) -> WarmReplica {
        WarmReplica {
            function: ObjectKey::new("a", "f"),
            uid: "u1".into(),
            generation: 3,
            pool: ObjectKey::new("p", "py"),
            task_id: "t".into(),
            endpoint: Arc::new(Endpoint::new("10.0.0.1:1", "t")),
            token: "x".into(),
            release_after,
            timeout: Duration::from_secs(1),
            last_busy: Mutex::new(Instant::now()),
        }
    }

    fn function(uid: &str, generation: i64, own: bool) -> Function {
        let spec: FunctionSpec =
            serde_saphyr::from_str("runtime: shell\ncode: {inline: cat}\n").unwrap();
        let mut f = Object::new("a", "f", spec);
        f.metadata.uid = Some(uid.into());
        f.metadata.generation = Some(generation);
        if own {
            f.status = Some(FunctionStatus {
                endpoints: vec![StatusEndpoint {
                    address: "10.0.0.2:2".into(),
                    task_id: "own".into(),
                    node_id: "n".into(),
                }],
                ..Default::default()
            });
        }
        f
    }

    #[test]
    fn released_when_no_longer_the_only_way_to_serve_that_function() {
        let r = replica(Duration::from_secs(30));
        let now = Instant::now();
        assert_eq!(release_reason(&r, None, now), Some("the function is gone"));
        assert_eq!(
            release_reason(&r, Some(&function("u2", 3, false)), now),
            Some("the function changed"),
            "recreated under the same name"
        );
        assert_eq!(
            release_reason(&r, Some(&function("u1", 4, false)), now),
            Some("the function changed")
        );
        assert_eq!(
            release_reason(&r, Some(&function("u1", 3, true)), now),
            Some("its own replicas are ready")
        );
        assert_eq!(
            release_reason(&r, Some(&function("u1", 3, false)), now),
            None
        );
        let later = now + Duration::from_secs(31);
        assert_eq!(
            release_reason(&r, Some(&function("u1", 3, false)), later),
            Some("idle")
        );
    }
}
