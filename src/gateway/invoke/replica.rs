//! Sending one event to one replica of a function: the least-loaded one under the function's
//! concurrency, over a pooled keep-alive connection, another one when a replica refuses the
//! connection, and the agent's answer mapped to the gateway's status codes.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;

use crate::gateway::error::HttpError;
use crate::gateway::table::{Lease, Route};
use crate::gateway::upstream;

/// Extra time the gateway waits beyond the function's timeout for the agent's own 504.
const GRACE: Duration = Duration::from_millis(500);

/// The agent's headers an answer passes back to the caller: its content type and its
/// `X-Lambda-*` headers but the two the gateway sets itself.
fn passed_back(name: &str) -> bool {
    let lambda = name
        .get(..9)
        .is_some_and(|p| p.eq_ignore_ascii_case("x-lambda-"));
    name.eq_ignore_ascii_case("content-type")
        || lambda
            && !name.eq_ignore_ascii_case("x-lambda-duration-ms")
            && !name.eq_ignore_ascii_case("x-lambda-invocation-id")
}

/// Sends an event to the least-loaded replica of `route` that is under the function's
/// concurrency and maps the agent's answer to the gateway's status codes (200, 400, 413, 502,
/// 504; 429 when every replica is full, 502 when none can be reached). `first` is a slot the
/// caller already holds (the listener waits for one), else one is taken here; `logs` asks the
/// agent for the invocation's output (`X-Lambda-Log-Result`). Shared by synchronous
/// invocations and the events listener, so both follow the same balancing and limits.
pub(crate) async fn to_replica(
    route: &Route,
    id: &str,
    body: Bytes,
    first: Option<Lease>,
    logs: bool,
) -> Result<Response, HttpError> {
    send(route, id, body, first, logs)
        .await
        .map_err(|f| f.error)
}

/// Why [`send`] failed; `unsent`: no replica saw the request (every one it tried refused the
/// connection, or the route's replicas were all retired while it waited for a slot), so it
/// may go to a fresher route.
pub(super) struct Failure {
    pub(super) error: HttpError,
    pub(super) unsent: bool,
}

impl From<HttpError> for Failure {
    fn from(error: HttpError) -> Self {
        Failure {
            error,
            unsent: false,
        }
    }
}

/// [`to_replica`], telling a request no replica saw from any other failure.
pub(super) async fn send(
    route: &Route,
    id: &str,
    body: Bytes,
    first: Option<Lease>,
    logs: bool,
) -> Result<Response, Failure> {
    let (ns, name) = (route.namespace.as_str(), route.name.as_str());
    // A replica that refuses the connection never saw the request (its task is stopping, or
    // its node is draining): the request goes to another replica, at most twice.
    let mut refused: Vec<Arc<str>> = Vec::new();
    let mut first = first;
    let (lease, resp) = loop {
        let skip: Vec<&str> = refused.iter().map(|a| &**a).collect();
        let mut lease = first.take().or_else(|| route.acquire_except(&skip));
        if lease.is_none() && refused.is_empty() && route.live() {
            // Every replica busy: wait for a slot (the autoscaler sees the waiters and adds
            // replicas) rather than refuse, within the bound of held requests.
            lease = route.acquire_within(route.timeout, route.max_held).await;
        }
        let Some(lease) = lease else {
            if let Some(last) = refused.last() {
                return Err(Failure {
                    error: HttpError::new(
                        StatusCode::BAD_GATEWAY,
                        "ReplicaUnreachable",
                        format!(
                            "replica {last} of {ns}/{name} refused the connection and no other is free"
                        ),
                    ),
                    unsent: true,
                });
            }
            if !route.live() {
                return Err(Failure {
                    error: HttpError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "NoReadyReplicas",
                        format!(
                            "the replicas of {ns}/{name} went out of service while the call waited for one"
                        ),
                    ),
                    unsent: true,
                });
            }
            let mut e = HttpError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                format!(
                    "function {ns}/{name} is at its concurrency ({} per replica x {} replicas) and {} requests wait already (spec.autoscaling.maxHeldRequests)",
                    route.concurrency,
                    route.endpoints.len(),
                    route.max_held
                ),
            );
            e.retry_after = Some(1);
            return Err(e.into());
        };
        if lease.endpoint.invoke_uri.is_none() {
            return Err(HttpError::new(
                StatusCode::BAD_GATEWAY,
                "ReplicaUnreachable",
                format!(
                    "replica address {:?} of {ns}/{name} is not host:port",
                    lease.endpoint.address
                ),
            )
            .into());
        }
        let deadline = route.timeout.as_millis().to_string();
        let headers: [(&str, &[u8]); 6] = [
            ("content-type", b"application/json"),
            ("x-lambda-invocation-id", id.as_bytes()),
            ("x-lambda-deadline-ms", deadline.as_bytes()),
            ("x-lambda-log-type", if logs { b"Tail" } else { b"None" }),
            // The agent refuses a call meant for another function (a pool container serves
            // the one it was specialised for only).
            ("x-lambda-function", route.agent_name.as_bytes()),
            ("connection", b"keep-alive"),
        ];
        let post = upstream::Post {
            path: "/invoke",
            headers: &headers,
            body: &body,
        };
        let endpoint = &lease.endpoint;
        let sent = tokio::time::timeout(
            route.timeout + GRACE,
            upstream::post(&endpoint.conns, &endpoint.address, &post, passed_back),
        )
        .await;
        match sent {
            Err(_) => {
                return Err(HttpError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "Timeout",
                    format!(
                        "function {ns}/{name} did not answer within its timeout of {:?}",
                        route.timeout
                    ),
                )
                .into());
            }
            Ok(Err(e)) if e.is_connect() && refused.len() < 2 => {
                refused.push(Arc::from(lease.endpoint.address.as_str()));
            }
            Ok(Err(e)) => {
                return Err(Failure {
                    // A connection never made carried no request.
                    unsent: e.is_connect(),
                    error: HttpError::new(
                        StatusCode::BAD_GATEWAY,
                        "ReplicaUnreachable",
                        format!(
                            "replica {} of {ns}/{name} is unreachable: {e}",
                            lease.endpoint.address
                        ),
                    ),
                });
            }
            Ok(Ok(r)) => break (lease, r),
        }
    };
    // The agent answers only once the function finished: the slot is free now.
    drop(lease);
    let status = match resp.status {
        200 => StatusCode::OK,
        400 => StatusCode::BAD_REQUEST,
        413 => StatusCode::PAYLOAD_TOO_LARGE,
        504 => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    };
    let mut r = Response::new(resp.body.into_body());
    *r.status_mut() = status;
    let h = r.headers_mut();
    for (k, v) in resp.headers {
        // One value per name, the last one sent, as before.
        h.insert(k, v);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_headers_passed_back() {
        for kept in [
            "content-type",
            "Content-Type",
            "x-lambda-status",
            "X-Lambda-Log-Result",
        ] {
            assert!(passed_back(kept), "{kept}");
        }
        for dropped in [
            "content-length",
            "date",
            "x-lambda-duration-ms",
            "X-Lambda-Invocation-Id",
            "x-lambd",
            "connection",
        ] {
            assert!(!passed_back(dropped), "{dropped}");
        }
    }
}
