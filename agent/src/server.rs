//! The HTTP side of the agent: `POST /invoke` and `GET /healthz` on keep-alive HTTP/1.1 connections,
//! with graceful shutdown (stop accepting, finish what is in flight); a pool agent also serves
//! `POST /specialize` and `POST /release` (see [`crate::specialise`]).

use std::collections::hash_map::RandomState;
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
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
use crate::specialise::{Generic, MAX_SPECIALISATION_BYTES, SpecialiseError};

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
/// Request header: `namespace/name` of the function the caller means; an agent serving another
/// one answers 421 `WrongFunction` (a pool container specialised for A never answers for B).
pub const FUNCTION: HeaderName = HeaderName::from_static("x-lambda-function");
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
    port: u16,
    /// The function served: set at start, or by a pool agent's specialisation (once).
    active: OnceLock<Active>,
    /// A pool agent's generic state (`None` for a function agent).
    generic: Option<Arc<Generic>>,
    id_seed: u64,
    id_counter: AtomicU64,
    /// Invocations running now, and when (ms after `epoch`) the last one ended: the idle exit.
    running: AtomicUsize,
    last_call_ms: AtomicU64,
    epoch: Instant,
    /// Why the agent should exit on its own (released, idle, a failed specialisation).
    stop: watch::Sender<Option<&'static str>>,
}

/// The function this agent serves and its workers.
#[derive(Debug)]
struct Active {
    cfg: Arc<Config>,
    pool: Arc<Pool>,
}

type Reply = Response<Full<Bytes>>;

impl Server {
    /// A server for the function of `cfg`, served by `pool`.
    pub fn new(cfg: Arc<Config>, pool: Arc<Pool>) -> Arc<Server> {
        let server = Server::build(cfg.port, None);
        let _ = server.active.set(Active { cfg, pool });
        Arc::new(server)
    }

    /// A pool agent's server: no function until `POST /specialize`.
    pub fn pooled(generic: Arc<Generic>) -> Arc<Server> {
        Arc::new(Server::build(generic.cfg.port, Some(generic)))
    }

    fn build(port: u16, generic: Option<Arc<Generic>>) -> Server {
        // RandomState is seeded from the OS: unique ids per process without a rand dependency.
        let id_seed = RandomState::new().build_hasher().finish();
        Server {
            port,
            active: OnceLock::new(),
            generic,
            id_seed,
            id_counter: AtomicU64::new(0),
            running: AtomicUsize::new(0),
            last_call_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            stop: watch::channel(None).0,
        }
    }

    /// Resolves with the reason once the agent should exit on its own.
    pub fn stop_requested(&self) -> watch::Receiver<Option<&'static str>> {
        self.stop.subscribe()
    }

    /// The workers of the function served, once there is one (for shutdown).
    pub fn pool(&self) -> Option<Arc<Pool>> {
        self.active.get().map(|a| a.pool.clone())
    }

    /// Binds `0.0.0.0:port`.
    pub async fn bind(&self) -> Result<TcpListener, ServerError> {
        let port = self.port;
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
            (&Method::POST, "/invoke") => match self.active.get() {
                Some(active) => {
                    self.running.fetch_add(1, Ordering::SeqCst);
                    let reply = self.invoke(active, req, start).await;
                    self.ended();
                    reply
                }
                None => finish(
                    simple(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "NotSpecialised",
                        "this pool container serves no function yet",
                    ),
                    "invalid",
                    &self.next_id(),
                    start,
                ),
            },
            (&Method::GET, "/healthz") => self.healthz(),
            (&Method::POST, "/specialize") if self.generic.is_some() => {
                self.clone().specialise(req).await
            }
            (&Method::POST, "/release") if self.generic.is_some() => self.release(&req),
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

    fn ended(&self) {
        self.ended_now();
        self.running.fetch_sub(1, Ordering::SeqCst);
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let header = req.headers().get(hyper::header::AUTHORIZATION);
        self.generic
            .as_ref()
            .is_some_and(|g| g.authorized(header.map(HeaderValue::as_bytes)))
    }

    async fn specialise(self: Arc<Self>, req: Request<Incoming>) -> Reply {
        let Some(generic) = self.generic.clone() else {
            return simple(StatusCode::NOT_FOUND, "NotFound", "not a pool agent");
        };
        let start = Instant::now();
        let refuse = |e: SpecialiseError| {
            let (code, kind) = e.status();
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
            simple(status, kind, &e.to_string())
        };
        if !self.authorized(&req) {
            return refuse(SpecialiseError::Unauthorized);
        }
        let body = match Limited::new(req.into_body(), MAX_SPECIALISATION_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                let msg = format!("a specialisation is at most {MAX_SPECIALISATION_BYTES} bytes");
                return simple(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge", &msg);
            }
            Err(e) => {
                let msg = format!("cannot read the request body: {e}");
                return simple(StatusCode::BAD_REQUEST, "BadRequest", &msg);
            }
        };
        // Its own task: a caller that hangs up must not leave the workers half loaded.
        let task = async move { generic.specialise(&body).await };
        let done = match tokio::spawn(task).await {
            Ok(done) => done,
            Err(e) => Err(SpecialiseError::Invalid(format!(
                "specialisation task failed: {e}"
            ))),
        };
        match done {
            Ok(s) => {
                let function = s.cfg.function_name.clone();
                let workers = s.loaded;
                let idle_exit = s.idle_exit;
                let _ = self.active.set(Active {
                    cfg: s.cfg,
                    pool: s.pool,
                });
                self.ended_now();
                if let Some(idle) = idle_exit {
                    tokio::spawn(self.clone().exit_when_idle(idle));
                }
                let ms = start.elapsed().as_secs_f64() * 1000.0;
                eprintln!(
                    "lambda-agent: specialised for {function} in {ms:.1} ms ({workers} worker(s) loaded)"
                );
                let body = serde_json::json!({"function": function, "workers": workers, "ms": ms});
                json_response(StatusCode::OK, Bytes::from(body.to_string()))
            }
            Err(e) => {
                eprintln!("lambda-agent: specialisation refused: {e}");
                if e.status().0 == 500 {
                    // Half specialised: useless to anyone. Exit so Swarm starts a fresh one.
                    let _ = self.stop.send(Some("the specialisation failed"));
                }
                refuse(e)
            }
        }
    }

    /// Records "an invocation just ended" (or the specialisation: the idle time counts from it).
    fn ended_now(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_call_ms.store(ms, Ordering::SeqCst);
    }

    /// Asks the agent to exit once `idle` passed without an invocation.
    async fn exit_when_idle(self: Arc<Self>, idle: Duration) {
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        loop {
            tokio::time::sleep(idle.min(Duration::from_secs(1))).await;
            let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            let last = self.last_call_ms.load(Ordering::SeqCst);
            if self.running.load(Ordering::SeqCst) == 0 && now.saturating_sub(last) >= idle_ms {
                let _ = self.stop.send(Some("idle"));
                return;
            }
        }
    }

    /// `POST /release`: the platform no longer routes here; finish and exit.
    fn release(&self, req: &Request<Incoming>) -> Reply {
        if !self.authorized(req) {
            let e = SpecialiseError::Unauthorized;
            return simple(StatusCode::UNAUTHORIZED, e.status().1, &e.to_string());
        }
        let _ = self.stop.send(Some("released"));
        json_response(
            StatusCode::ACCEPTED,
            Bytes::from_static(b"{\"status\":\"releasing\"}"),
        )
    }

    fn healthz(&self) -> Reply {
        let body = match (self.active.get(), &self.generic) {
            (Some(a), _) => {
                let (healthy, workers, busy) = a.pool.health();
                let status = if healthy { "ok" } else { "starting" };
                let body = serde_json::json!({
                    "status": status,
                    "runtime": a.cfg.runtime.as_str(),
                    "workers": workers,
                    "busy": busy,
                    "function": a.cfg.function_name,
                });
                (healthy, body)
            }
            (None, Some(g)) => {
                let (ready, workers) = g.health();
                let body = serde_json::json!({
                    "status": if ready { "idle" } else { "starting" },
                    "runtime": g.cfg.runtime.as_str(),
                    "workers": workers,
                    "busy": 0,
                    "pool": true,
                });
                (ready, body)
            }
            (None, None) => (false, serde_json::json!({"status": "starting"})),
        };
        let status = if body.0 {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(status, Bytes::from(body.1.to_string()))
    }

    fn next_id(&self) -> String {
        let n = self.id_counter.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{:016x}", self.id_seed, n)
    }

    async fn invoke(&self, active: &Active, req: Request<Incoming>, start: Instant) -> Reply {
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
        if let Some(meant) = headers.get(&FUNCTION)
            && meant.as_bytes() != active.cfg.function_name.as_bytes()
        {
            let msg = format!(
                "this agent serves {} only, not {}",
                active.cfg.function_name,
                String::from_utf8_lossy(meant.as_bytes())
            );
            let reply = simple(StatusCode::MISDIRECTED_REQUEST, "WrongFunction", &msg);
            return finish(reply, "invalid", &id, start);
        }
        let mut deadline = active.cfg.timeout;
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
        let limit = active.cfg.max_payload;
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
        let pool = active.pool.clone();
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
