//! The invocation gateway (axum): synchronous invocation with least-in-flight balancing
//! straight to the replicas' agents, Function CRUD over REST, bearer-token auth with API keys
//! kept hashed in etcd, each with a role over namespaces (checked by every handler, see
//! [`authz`]), OpenAPI document and reference page, metrics and health.
//!
//! The routing table follows the Functions' status in etcd through a watcher (the function
//! reconciler writes the ready endpoints there): no Docker call per request.

pub mod apikeys;
mod asynchronous;
pub mod authz;
mod body;
mod crud;
mod error;
mod executions;
pub mod history;
mod invoke;
pub mod load;
mod metrics;
mod openapi;
mod server;
mod service;
mod table;
mod upstream;
pub mod warm;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::api::FunctionSpec;
use crate::runtime::{Cache, WatcherConfig, watcher};
use crate::store::{CacheChange, Store};

pub use authz::{Permission, Principal, Role, Scope};
pub use error::HttpError;
pub(crate) use invoke::to_replica;
pub use server::HttpLimits;
pub use table::{Lease, Route, Table};

/// How long the gateway waits for a replica to accept a connection.
const CONNECT_TIMEOUT: std::time::Duration = upstream::CONNECT_TIMEOUT;

/// Errors starting the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Settings of `lambda gateway`.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// Serve without authentication (only when asked for).
    pub insecure_no_auth: bool,
    /// RabbitMQ for asynchronous invocations and `POST /v1/events`; without it those answer
    /// 503 naming the missing setting.
    pub amqp_url: Option<String>,
    /// How slowly and how much a client may send.
    pub limits: HttpLimits,
}

/// Shared state of the handlers.
pub struct Gateway {
    pub store: Store,
    pub table: Table,
    /// Every Function as last seen (ready once the first list is in).
    pub functions: Cache<FunctionSpec>,
    publisher: Option<crate::events::publisher::Publisher>,
    client: Client<HttpConnector, Full<bytes::Bytes>>,
    metrics: metrics::GatewayMetrics,
    verifier: Option<apikeys::Verifier>,
    openapi: serde_json::Value,
    /// Accepted asynchronous invocations whose `Queued` record is still being written.
    unwritten: asynchronous::Unwritten,
    /// Woken when a request is held for a function with none held yet: the load reporter
    /// publishes at once.
    pub load_wake: tokio::sync::Notify,
    /// Warm pools and the containers this gateway specialised from them.
    pub warm: warm::Warm,
    /// Places of the watch API's streams ([`watch::MAX_WATCHES`]).
    watches: Arc<tokio::sync::Semaphore>,
    /// The runtime [`run`] was called on: work a request starts that outlives it runs there,
    /// not on the connection's worker thread (whose runtime ends with its connections).
    runtime: std::sync::OnceLock<tokio::runtime::Handle>,
}

impl Gateway {
    /// Runs `work` in the background on the gateway's main runtime (the current one before
    /// [`run`]): a request's follow-up (a warm pool activation, a record write) must not end
    /// with the worker thread that served the request.
    pub(crate) fn spawn<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self.runtime.get() {
            Some(rt) => drop(rt.spawn(work)),
            None => drop(tokio::spawn(work)),
        }
    }

    /// A gateway over the store; `auth` false serves without authentication.
    pub fn new(store: Store, auth: bool) -> Arc<Gateway> {
        Self::with_broker(store, auth, None)
    }

    /// A gateway that also publishes asynchronous invocations and events to the broker at
    /// `amqp_url` (connected on first use, reconnected after a broker restart).
    pub fn with_broker(store: Store, auth: bool, amqp_url: Option<String>) -> Arc<Gateway> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // A replica's node answers a connect in well under a millisecond, or refuses it; a
        // connect that hangs (a SYN dropped on a node going away) is treated as refused, so
        // the call moves to another replica instead of spending the function's whole timeout.
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .build(connector);
        Arc::new(Gateway {
            verifier: auth.then(|| apikeys::Verifier::new(store.clone())),
            store,
            table: Table::default(),
            functions: Cache::new(),
            publisher: amqp_url.map(crate::events::publisher::Publisher::new),
            client,
            metrics: metrics::GatewayMetrics::default(),
            openapi: openapi::document(),
            unwritten: Default::default(),
            load_wake: tokio::sync::Notify::new(),
            warm: warm::Warm::default(),
            watches: Arc::new(tokio::sync::Semaphore::new(watch::MAX_WATCHES)),
            runtime: std::sync::OnceLock::new(),
        })
    }

    /// Keeps the routing table in step with the Functions in etcd (forever).
    pub async fn follow_functions(self: Arc<Self>) {
        let cache = self.functions.clone();
        let stream =
            watcher::<FunctionSpec>(self.store.clone(), None, WatcherConfig::default(), None);
        cache
            .run(stream, |change| match change {
                CacheChange::Applied(f) => self.table.upsert(f, &self.metrics),
                CacheChange::Deleted(f) => {
                    self.table.remove(f.as_ref());
                    self.metrics.history.forget_function(&f.key());
                }
                CacheChange::Invalid(k, e) => tracing::warn!(function = %k, error = %e.message, "unreadable function; keeping its last good route"),
            })
            .await;
    }
}

/// The principal of a request's bearer token (the unrestricted one without authentication);
/// 401 without a valid key.
pub(crate) async fn authenticate(
    gw: &Gateway,
    headers: &axum::http::HeaderMap,
) -> Result<Arc<Principal>, HttpError> {
    static UNRESTRICTED: std::sync::OnceLock<Arc<Principal>> = std::sync::OnceLock::new();
    let Some(v) = &gw.verifier else {
        return Ok(UNRESTRICTED
            .get_or_init(|| Arc::new(Principal::unrestricted()))
            .clone());
    };
    let token = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim);
    let verified = match token {
        Some(t) => v.verify(t).await,
        None => None,
    };
    verified.ok_or_else(|| {
        let msg = if token.is_none() {
            "missing bearer token (Authorization: Bearer <API key>)"
        } else {
            "invalid API key"
        };
        HttpError::new(StatusCode::UNAUTHORIZED, "Unauthorized", msg)
    })
}

/// Authenticates the request and inserts its [`Principal`] as a request extension; 401
/// without a valid key.
async fn auth(State(gw): State<Arc<Gateway>>, mut req: Request, next: Next) -> Response {
    match authenticate(&gw, req.headers()).await {
        Ok(p) => {
            req.extensions_mut().insert(Principal::clone(&p));
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

async fn openapi_json(State(gw): State<Arc<Gateway>>) -> Response {
    axum::Json(gw.openapi.clone()).into_response()
}

async fn docs(State(gw): State<Arc<Gateway>>) -> Html<String> {
    Html(openapi::html(&gw.openapi))
}

async fn metrics_text(State(gw): State<Arc<Gateway>>) -> Response {
    let mut r = Response::new(Body::from(gw.metrics.encode()));
    r.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    r
}

async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: etcd answers and, when the gateway has one, the broker is connected (a
/// connection is attempted). 503 names what is not ready.
async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let etcd = gw.store.ping().await.err().map(|e| e.to_string());
    let broker = match &gw.publisher {
        None => None,
        Some(p) => p.broker().await.err().map(|e| e.to_string()),
    };
    let state = |e: &Option<String>| e.clone().unwrap_or_else(|| "ok".into());
    let body = serde_json::json!({
        "etcd": state(&etcd),
        "broker": if gw.publisher.is_some() { state(&broker) } else { "not configured".into() },
    });
    let code = if etcd.is_none() && broker.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn not_found() -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        "no such route (see /openapi.json)",
    )
}

/// The gateway's routes; every request body must arrive within `body_read_timeout`.
pub fn router(gw: Arc<Gateway>, body_read_timeout: std::time::Duration) -> Router {
    let api = Router::new()
        .route("/v1/functions/{name}/invoke", post(invoke::invoke_default))
        .route(
            "/v1/namespaces/{ns}/functions/{name}/invoke",
            post(invoke::invoke_ns),
        )
        .route(
            "/v1/namespaces/{ns}/functions",
            get(crud::list).post(crud::create),
        )
        .route(
            "/v1/namespaces/{ns}/functions/{name}",
            get(crud::get).put(crud::replace).delete(crud::delete),
        )
        .route(
            "/v1/namespaces/{ns}/functions/{name}/executions",
            get(executions::list),
        )
        .route("/v1/namespaces/{ns}/executions/{id}", get(executions::get))
        .route("/v1/executions/{id}", get(executions::get_default))
        .route(
            "/v1/namespaces/{ns}/functions/{name}/history",
            get(history::function_history),
        )
        .route(
            "/v1/namespaces/{ns}/nodepools/{name}/history",
            get(history::pool_history),
        )
        .route("/v1/watch", get(watch::watch_all))
        .route("/v1/namespaces/{ns}/watch", get(watch::watch_ns))
        .route("/v1/events", post(asynchronous::events_default))
        .route("/v1/namespaces/{ns}/events", post(asynchronous::events_ns))
        .route_layer(middleware::from_fn_with_state(gw.clone(), auth));
    Router::new()
        .merge(api)
        .merge(crate::console::routes())
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        // Bodies are read by `body::read_body` with each route's size limit.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(
            body_read_timeout,
            body::deadline,
        ))
        .layer(middleware::from_fn(error::documented_shape))
        .with_state(gw)
}

/// Serves until `shutdown` resolves.
pub async fn run(
    store: Store,
    cfg: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let gw = Gateway::with_broker(store, !cfg.insecure_no_auth, cfg.amqp_url.clone());
    let _ = gw.runtime.set(tokio::runtime::Handle::current());
    tokio::spawn(gw.clone().follow_functions());
    tokio::spawn(warm::follow_pools(gw.clone()));
    tokio::spawn(gw.metrics.history.clone().follow_pools(gw.store.clone()));
    let reporting = tokio_util::sync::CancellationToken::new();
    let reporter = tokio::spawn(load::report(gw.clone(), "gateway", reporting.clone()));
    let releaser = tokio::spawn(warm::release_loop(gw.clone(), reporting.clone()));
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| GatewayError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| GatewayError::Listen {
            addr: cfg.listen,
            source,
        })?;
    eprintln!(
        "lambda gateway listening on http://{addr}{}",
        if cfg.insecure_no_auth {
            " (no authentication)"
        } else {
            ""
        }
    );
    let limit = cfg.limits.body_read_timeout;
    let service = service::Service::new(gw.clone(), router(gw, limit), limit);
    server::serve(listener, service, cfg.limits, shutdown).await;
    reporting.cancel();
    let _ = reporter.await;
    // Warm containers this gateway holds go back (exit, refilled by Swarm) before it ends.
    let _ = releaser.await;
    Ok(())
}
