//! Synchronous invocation: pick the least-loaded ready replica, forward the event to its agent
//! over a pooled keep-alive connection, and map the agent's answer to the gateway's status
//! codes. One timeout — the function's — governs agent and gateway.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::Gateway;
use super::authz::{Permission, Principal};
use super::error::HttpError;
use super::table::{Held, Route};

mod replica;

use replica::send;
pub(crate) use replica::to_replica;

/// `POST /v1/functions/{name}/invoke` (reached through the router only when the server's own
/// matching of invocations ([`super::service`]) leaves a path to it, e.g. percent-encoded).
pub async fn invoke_default(
    State(gw): State<Arc<Gateway>>,
    principal: Principal,
    Path(name): Path<String>,
    req: Request<Body>,
) -> Response {
    invoke(&gw, &principal, "default", &name, req).await
}

/// `POST /v1/namespaces/{ns}/functions/{name}/invoke` (see [`invoke_default`]).
pub async fn invoke_ns(
    State(gw): State<Arc<Gateway>>,
    principal: Principal,
    Path((ns, name)): Path<(String, String)>,
    req: Request<Body>,
) -> Response {
    invoke(&gw, &principal, &ns, &name, req).await
}

/// A fresh invocation id: a random (version 4) UUID, written into `buf`. The random bytes
/// come from the thread's seeded generator rather than a getrandom call per request.
fn fresh_id(buf: &mut [u8; uuid::fmt::Hyphenated::LENGTH]) -> &str {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .hyphenated()
        .encode_lower(buf)
}

/// Milliseconds with three decimals (`x-lambda-duration-ms`).
fn millis(d: Duration) -> Option<HeaderValue> {
    use std::io::Write as _;
    let mut buf = [0u8; 32];
    let mut w = std::io::Cursor::new(&mut buf[..]);
    write!(w, "{:.3}", d.as_secs_f64() * 1000.0).ok()?;
    let n = w.position() as usize;
    HeaderValue::from_bytes(&buf[..n]).ok()
}

/// An invocation of `ns/name` by `principal`: synchronous, or queued when the request asks
/// for it (`Prefer: respond-async`, `X-Lambda-Invocation-Type: Event`).
pub(super) async fn invoke(
    gw: &Arc<Gateway>,
    principal: &Principal,
    ns: &str,
    name: &str,
    req: Request<Body>,
) -> Response {
    if let Err(e) = principal.check(ns, Permission::FunctionsInvoke) {
        return e.into_response();
    }
    let started = Instant::now();
    let given = req
        .headers()
        .get("x-lambda-invocation-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(String::from);
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id: &str = match &given {
        Some(id) => id,
        None => fresh_id(&mut buf),
    };
    if super::asynchronous::wants_async(req.headers()) {
        let resp = super::asynchronous::submit(gw, ns, name, id, req).await;
        let (mns, mname) = metric_labels(resp.status(), ns, name);
        gw.metrics
            .observe_submit(mns, mname, resp.status().as_u16(), started.elapsed());
        return resp;
    }
    // One table lookup per request: the route serves both forwarding and its metric handles.
    let route = route_with_endpoints(gw, ns, name).await;
    let result = match &route {
        Ok((r, _)) => forward(gw, r, id, req).await,
        Err(e) => Err(e.clone()),
    };
    let (status, mut resp) = match result {
        Ok(r) => (r.status(), r),
        Err(e) => (e.status, e.into_response()),
    };
    let elapsed = started.elapsed();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert("x-lambda-invocation-id", v);
    }
    if let Some(v) = millis(elapsed) {
        h.insert("x-lambda-duration-ms", v);
    }
    if let Ok((_, Some(path))) = &route {
        h.insert("x-lambda-cold-start", HeaderValue::from_static(path));
    }
    match &route {
        Ok((r, _)) => r.metrics.observe(status.as_u16(), elapsed),
        Err(_) => {
            let (mns, mname) = metric_labels(status, ns, name);
            gw.metrics.observe(mns, mname, status.as_u16(), elapsed)
        }
    }
    resp
}

/// The labels a call is counted under: a function that does not exist (or a name that cannot
/// be one) is counted under empty labels, so that callers making names up cannot grow the
/// metric families without bound.
fn metric_labels<'a>(status: StatusCode, ns: &'a str, name: &'a str) -> (&'a str, &'a str) {
    if status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST {
        ("", "")
    } else {
        (ns, name)
    }
}

/// The function's route once it has a ready replica, and how the request got one when it had
/// to wait (`pool`: a warm pool container specialised for it; `swarm`: its own replica
/// started). A request to a function without one is held until one is Ready (a warm pool
/// container specialised at once, or a replica starting, a node booting for it), for as long
/// as the function's own timeout allows — unless no pool can ever take a replica
/// (`NoPoolFits`), which no wait mends: then 503 at once.
async fn route_with_endpoints(
    gw: &Arc<Gateway>,
    ns: &str,
    name: &str,
) -> Result<(Arc<Route>, Option<&'static str>), HttpError> {
    // Held (counted as such, so the autoscaler sees demand for a function at zero) since when.
    let mut held: Option<(Held, Instant)> = None;
    loop {
        // Register interest before looking, so a change between look and wait is not missed.
        let notified = gw.table.changed.notified();
        match gw.table.get(ns, name) {
            None => return Err(HttpError::unknown_function(ns, name)),
            Some(r) if !r.http => {
                return Err(HttpError::new(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("function {ns}/{name} has no http trigger"),
                ));
            }
            Some(r) if !r.endpoints.is_empty() => {
                let path = match &held {
                    // Held until a first replica was ready: a cold start.
                    Some((_, since)) => {
                        let (histogram, path) = if r.warm {
                            (&r.metrics.cold_start_pool, "pool")
                        } else {
                            (&r.metrics.cold_start_swarm, "swarm")
                        };
                        histogram.observe(since.elapsed().as_secs_f64());
                        Some(path)
                    }
                    None => {
                        r.load.arrived();
                        None
                    }
                };
                return Ok((r, path));
            }
            Some(r)
                if r.unplaced.as_ref().is_some_and(|(reason, _)| {
                    reason == crate::reconcilers::autoscaler::run::NO_POOL_FITS
                }) =>
            {
                return Err(no_ready_replica(&r));
            }
            Some(r) => {
                let since = match &held {
                    Some((_, since)) => *since,
                    None => {
                        r.load.arrived();
                        let Some((h, first)) = r.load.hold(r.max_held) else {
                            return Err(too_many_held(&r));
                        };
                        let now = Instant::now();
                        if first {
                            // The first request for a function at zero: the autoscaler hears
                            // of it now, not at the next report, and a warm pool container is
                            // specialised for it meanwhile if one fits.
                            gw.load_wake.notify_one();
                            super::warm::Warm::activate(gw, ns, name, now);
                        }
                        held = Some((h, now));
                        now
                    }
                };
                let deadline = since + r.timeout;
                let now = Instant::now();
                if now >= deadline
                    || tokio::time::timeout(deadline - now, notified)
                        .await
                        .is_err()
                {
                    return Err(no_ready_replica(&gw.table.get(ns, name).unwrap_or(r)));
                }
            }
        }
    }
}

/// 503 for a request over the function's bound of held requests (`maxHeldRequests`).
fn too_many_held(r: &Route) -> HttpError {
    let mut e = HttpError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "TooManyHeldRequests",
        format!(
            "function {}/{} has no free replica and {} requests wait for one already (spec.autoscaling.maxHeldRequests)",
            r.namespace, r.name, r.max_held
        ),
    );
    e.retry_after = Some(1);
    e
}

/// 503 for a request held as long as the function's timeout allows without a replica
/// becoming Ready: `Retry-After`, and the reason when the status gives one (the pool booting
/// a node for it). For a function no pool fits, 503 `NoPoolFits` at once, without
/// `Retry-After`: only a change of its memory or of the pools helps.
fn no_ready_replica(r: &Route) -> HttpError {
    let (ns, name) = (&r.namespace, &r.name);
    let hint = format!("(see `lambda describe fn {name} -n {ns}`)");
    match &r.unplaced {
        Some((reason, m)) if reason == crate::reconcilers::autoscaler::run::NO_POOL_FITS => {
            HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                crate::reconcilers::autoscaler::run::NO_POOL_FITS,
                format!("function {ns}/{name} cannot get a replica: {m} {hint}"),
            )
        }
        unplaced => {
            let why = unplaced
                .as_ref()
                .map(|(_, m)| format!(": {m}"))
                .unwrap_or_default();
            let mut e = HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "NoReadyReplicas",
                format!(
                    "function {ns}/{name} has no ready replica after {} s{why} {hint}",
                    r.timeout.as_secs()
                ),
            );
            // A node boots in seconds to minutes: come back in a few seconds, not at once.
            e.retry_after = Some(if unplaced.is_some() { 5 } else { 1 });
            e
        }
    }
}

/// How many times a call no replica saw follows the table to a newer route.
const REROUTES: usize = 3;

async fn forward(
    gw: &Arc<Gateway>,
    route: &Arc<Route>,
    id: &str,
    req: Request<Body>,
) -> Result<Response, HttpError> {
    // A caller may ask for the invocation's own output, as from the agent (`X-Lambda-Log-Result`).
    let logs = req
        .headers()
        .get("x-lambda-log-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("tail"));
    let body = read_event(route, req).await?;
    let mut route = route.clone();
    let mut rerouted = 0;
    loop {
        let failure = match send(&route, id, body.clone(), None, logs).await {
            Ok(r) => return Ok(r),
            Err(f) if f.unsent && rerouted < REROUTES => f,
            Err(f) => return Err(f.error),
        };
        // The route went stale while the request waited for a slot (a warm-pool container
        // released once the function's own replicas were ready, replicas stopping): no replica
        // saw it, so it goes to the route the table holds now — held again should that have
        // no replica yet.
        let fresh = match gw.table.get(&route.namespace, &route.name) {
            Some(fresh) if !Arc::ptr_eq(&fresh, &route) && fresh.live() => fresh,
            Some(fresh) if fresh.endpoints.is_empty() => {
                route_with_endpoints(gw, &fresh.namespace, &fresh.name)
                    .await?
                    .0
            }
            _ => return Err(failure.error),
        };
        route = fresh;
        rerouted += 1;
    }
}

/// The request body within the function's payload limit: 413 past it (from Content-Length
/// before reading anything, else while reading), 408 when it arrives too slowly, 400 when it
/// cannot be read.
pub(super) async fn read_event(route: &Route, req: Request<Body>) -> Result<Bytes, HttpError> {
    let limit = route.max_payload;
    super::body::read_body(req, limit, || {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!("the event exceeds the function's limit of {limit} bytes"),
        )
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_are_distinct_version_4_uuids() {
        let (mut a, mut b) = ([0u8; 36], [0u8; 36]);
        let (x, y) = (fresh_id(&mut a).to_string(), fresh_id(&mut b).to_string());
        assert_ne!(x, y);
        let u = uuid::Uuid::parse_str(&x).expect("a UUID");
        assert_eq!(u.get_version(), Some(uuid::Version::Random));
        assert_eq!(u.hyphenated().to_string(), x, "lower-case, hyphenated");
    }

    #[test]
    fn durations_in_milliseconds_with_three_decimals() {
        assert_eq!(millis(Duration::from_micros(1500)).unwrap(), "1.500");
        assert_eq!(millis(Duration::ZERO).unwrap(), "0.000");
        assert_eq!(millis(Duration::from_secs(900)).unwrap(), "900000.000");
    }

    #[test]
    fn made_up_names_share_one_label_set() {
        assert_eq!(metric_labels(StatusCode::NOT_FOUND, "x", "nope"), ("", ""));
        assert_eq!(
            metric_labels(StatusCode::BAD_REQUEST, "x", "Bad_Name"),
            ("", "")
        );
        assert_eq!(
            metric_labels(StatusCode::SERVICE_UNAVAILABLE, "prod", "resize"),
            ("prod", "resize")
        );
        assert_eq!(
            metric_labels(StatusCode::OK, "prod", "resize"),
            ("prod", "resize")
        );
    }
}
