//! The HTTP side of the agent: `POST /invoke` and `GET /healthz` on keep-alive HTTP/1.1 connections,
//! with graceful shutdown (stop accepting, finish what is in flight).

use std::collections::hash_map::RandomState;
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::frame;
use crate::pool::{Outcome, Pool};

/// Request header: the caller's invocation id (generated when absent).
pub const INVOCATION_ID: HeaderName = HeaderName::from_static("x-lambda-invocation-id");
/// Request header: milliseconds the caller will still wait.
pub const DEADLINE_MS: HeaderName = HeaderName::from_static("x-lambda-deadline-ms");
/// Response header: `ok`, `error`, `timeout`, `too-large`, `invalid`.
pub const STATUS: HeaderName = HeaderName::from_static("x-lambda-status");
/// Response header: time the agent spent on the request, in ms (3 decimals).
pub const DURATION_MS: HeaderName = HeaderName::from_static("x-lambda-duration-ms");
/// Request header: `Tail` asks for the invocation's own output in [`LOG_RESULT`].
pub const LOG_TYPE: HeaderName = HeaderName::from_static("x-lambda-log-type");
/// Response header: base64 of what the function wrote during the invocation (its last
/// 16 KiB, after a `[... N earlier bytes cut ...]` line when there was more).
pub const LOG_RESULT: HeaderName = HeaderName::from_static("x-lambda-log-result");

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The port could not be bound.
    #[error("cannot listen on port {port}: {source}")]
    Bind {
        /// `LAMBDA_PORT`.
        port: u16,
        /// The cause.
        source: std::io::Error,
    },
}

/// Shared state of all connections.
#[derive(Debug)]
pub struct Server {
    cfg: Arc<Config>,
    pool: Arc<Pool>,
    id_seed: u64,
    id_counter: AtomicU64,
}

type Reply = Response<Full<Bytes>>;

impl Server {
    /// A server over `pool`.
    pub fn new(cfg: Arc<Config>, pool: Arc<Pool>) -> Arc<Server> {
        // RandomState is seeded from the OS: unique ids per process without a rand dependency.
        let id_seed = RandomState::new().build_hasher().finish();
        Arc::new(Server {
            cfg,
            pool,
            id_seed,
            id_counter: AtomicU64::new(0),
        })
    }

    /// Binds `0.0.0.0:port`.
    pub async fn bind(&self) -> Result<TcpListener, ServerError> {
        let port = self.cfg.port;
        TcpListener::bind(("0.0.0.0", port))
            .await
            .map_err(|source| ServerError::Bind { port, source })
    }

    /// Serves connections until `shutdown` turns true, then lets every connection finish its in-flight
    /// request (at most `grace`) and returns.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) {
        // Every connection task holds a sender; recv() returns None once all of them are gone.
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        eprintln!("lambda-agent: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            // Small request/response pairs: don't let Nagle hold the response back.
            let _ = stream.set_nodelay(true);
            let server = self.clone();
            let mut stop = shutdown.clone();
            let done = done_tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.handle(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = stop.changed() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
                drop(done);
            });
        }
        drop(listener);
        drop(done_tx);
        if tokio::time::timeout(grace, done_rx.recv()).await.is_err() {
            eprintln!("lambda-agent: in-flight requests did not finish within {grace:?}");
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Reply {
        let start = Instant::now();
        match (req.method(), req.uri().path()) {
            (&Method::POST, "/invoke") => self.invoke(req, start).await,
            (&Method::GET, "/healthz") => self.healthz(),
            (_, "/invoke" | "/healthz") => simple(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "method not allowed",
            ),
            _ => simple(
                StatusCode::NOT_FOUND,
                "NotFound",
                "no such path (POST /invoke, GET /healthz)",
            ),
        }
    }

    fn healthz(&self) -> Reply {
        let (healthy, workers, busy) = self.pool.health();
        let body = format!(
            "{{\"status\":\"{}\",\"runtime\":\"{}\",\"workers\":{workers},\"busy\":{busy}}}",
            if healthy { "ok" } else { "starting" },
            self.cfg.runtime
        );
        let status = if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(status, Bytes::from(body))
    }

    fn next_id(&self) -> String {
        let n = self.id_counter.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{:016x}", self.id_seed, n)
    }

    async fn invoke(&self, req: Request<Incoming>, start: Instant) -> Reply {
        let headers = req.headers();
        let id: Arc<str> = match headers.get(&INVOCATION_ID).map(|v| v.to_str()) {
            None => Arc::from(self.next_id()),
            Some(Ok(id)) if frame::valid_invocation_id(id) => Arc::from(id),
            Some(_) => {
                let reply = simple(
                    StatusCode::BAD_REQUEST,
                    "InvalidInvocationId",
                    "X-Lambda-Invocation-Id must be 1-128 of [A-Za-z0-9._:-]",
                );
                return finish(reply, "invalid", &self.next_id(), start);
            }
        };
        let mut deadline = self.cfg.timeout;
        if let Some(v) = headers.get(&DEADLINE_MS) {
            match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
                Some(ms) => deadline = deadline.min(Duration::from_millis(ms)),
                None => {
                    let reply = simple(
                        StatusCode::BAD_REQUEST,
                        "InvalidDeadline",
                        "X-Lambda-Deadline-Ms must be a number of milliseconds",
                    );
                    return finish(reply, "invalid", &id, start);
                }
            }
        }
        let capture = headers
            .get(&LOG_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("tail"));
        let limit = self.cfg.max_payload;
        let too_large = || {
            let msg = format!("the event exceeds the payload limit of {limit} bytes");
            finish(
                simple(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge", &msg),
                "too-large",
                &id,
                start,
            )
        };
        // Refuse an announced oversize body before reading any of it.
        let announced = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|len| len > limit as u64) {
            return too_large();
        }
        let event = match Limited::new(req.into_body(), limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
            Err(e) => {
                let reply = simple(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("cannot read the request body: {e}"),
                );
                return finish(reply, "invalid", &id, start);
            }
        };
        if !frame::is_json(&event) {
            let reply = simple(
                StatusCode::BAD_REQUEST,
                "InvalidEvent",
                "the event (request body) is not valid JSON",
            );
            return finish(reply, "invalid", &id, start);
        }
        // Run in its own task: a client that hangs up must not cancel the call half-way through a frame
        // (the worker would be lost); the task returns the worker to the pool either way.
        let pool = self.pool.clone();
        let task_id = id.clone();
        let task = async move { pool.invoke(task_id, deadline, event, capture).await };
        let (outcome, logs) = match tokio::spawn(task).await {
            Ok(done) => done,
            Err(e) => (
                Outcome::WorkerExited(format!("invocation task failed: {e}")),
                None,
            ),
        };
        let (reply, status) = match outcome {
            Outcome::Ok(result) => (json_response(StatusCode::OK, result), "ok"),
            Outcome::FunctionError(body) => (json_response(StatusCode::BAD_GATEWAY, body), "error"),
            Outcome::Timeout { deadline_ms } => {
                let msg = format!("the function exceeded {deadline_ms} ms and was stopped");
                (
                    simple(StatusCode::GATEWAY_TIMEOUT, "Timeout", &msg),
                    "timeout",
                )
            }
            Outcome::QueueTimeout { deadline_ms } => {
                let msg =
                    format!("no worker became free before the deadline: exceeded {deadline_ms} ms");
                (
                    simple(StatusCode::GATEWAY_TIMEOUT, "Timeout", &msg),
                    "timeout",
                )
            }
            Outcome::WorkerExited(msg) => (
                simple(StatusCode::BAD_GATEWAY, "WorkerExited", &msg),
                "error",
            ),
        };
        let mut reply = finish(reply, status, &id, start);
        if let Some(logs) = logs {
            use base64::Engine as _;
            let text = base64::engine::general_purpose::STANDARD.encode(logs);
            if let Ok(v) = HeaderValue::from_str(&text) {
                reply.headers_mut().insert(LOG_RESULT, v);
            }
        }
        reply
    }
}

fn json_response(status: StatusCode, body: Bytes) -> Reply {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// An agent-made error response with the standard error body.
fn simple(status: StatusCode, error_type: &str, message: &str) -> Reply {
    json_response(status, frame::error_json(error_type, message, &[]))
}

/// Adds the headers every `/invoke` response carries.
fn finish(mut resp: Reply, status: &'static str, id: &str, start: Instant) -> Reply {
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let h = resp.headers_mut();
    h.insert(STATUS, HeaderValue::from_static(status));
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert(INVOCATION_ID, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{ms:.3}")) {
        h.insert(DURATION_MS, v);
    }
    resp
}
