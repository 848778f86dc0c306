//! The builder endpoint the controller serves to snapshot builder servers: runtime image
//! download and phone home, both authorised by the build's one-time token
//! (`Authorization: Bearer <token>`). Its state is the build records in etcd, so any controller
//! replica can serve it (and it keeps serving across leader changes).
//!
//! - `GET /v1/builds/images.tar`: `docker save` of the build's runtime images, streamed from the
//!   Swarm manager's engine (no registry involved); 410 once the build has phoned home.
//! - `POST /v1/builds/phone-home` with `{"ok": bool, "images": [..], "message": ".."}`:
//!   accepted once (200); a second report gets 409.
//! - `GET /healthz`.
//!
//! An unknown token (never issued, finished, expired) is 401. Every error is a JSON body
//! `{"error": "..."}`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::swarm::Swarm;

use super::super::cluster::ClusterConfig;
use super::SnapshotError;
use super::record::{self, Accepted, PhoneHome, Stored};

/// Errors of the builder endpoint (the module's error type).
pub type EndpointError = SnapshotError;

/// Largest phone-home body.
const BODY_LIMIT: usize = 64 * 1024;
/// Longest message kept from a phone-home.
const MESSAGE_LIMIT: usize = 4000;
/// Most image references a phone-home may list.
const IMAGES_LIMIT: usize = 64;

struct Shared {
    store: Store,
    swarm: Swarm,
}

/// An error answer: its status and a JSON body `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unknown or expired build token (send Authorization: Bearer <token of the build>)",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// The bearer token of a request.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(ApiError::unauthorized)?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or_else(ApiError::unauthorized)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::unauthorized());
    }
    Ok(token)
}

async fn lookup(shared: &Shared, token: &str) -> Result<Stored, ApiError> {
    match record::by_token(&shared.store, token).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(ApiError::unauthorized()),
        Err(e) => {
            tracing::warn!(error = %e, "builder endpoint: reading the build record");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the build record: {e}"),
            ))
        }
    }
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "ok": true }))
}

async fn images_tar(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = bearer(&headers)?;
    let stored = lookup(&shared, token).await?;
    let r = &stored.record;
    if let Some(p) = &r.phone_home {
        return Err(ApiError::new(
            StatusCode::GONE,
            format!(
                "this build phoned home at {}; its images are no longer served",
                p.at
            ),
        ));
    }
    let refs: Vec<String> = r.images.values().cloned().collect();
    let docker = shared.swarm.docker().clone();
    for image in &refs {
        if let Err(e) = docker.inspect_image(image).await {
            tracing::warn!(%image, error = %e, "builder endpoint: runtime image unavailable");
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "runtime image {image} is not available in the platform's Docker engine: {e}"
                ),
            ));
        }
    }
    tracing::info!(build = %format!("{}/{}", r.namespace, r.name), generation = r.generation, images = ?refs, "serving runtime images to a builder");
    let names: Vec<&str> = refs.iter().map(String::as_str).collect();
    let stream = docker.export_images(&names);
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(resp)
}

/// A phone-home body.
#[derive(Debug, Deserialize)]
struct Report {
    ok: bool,
    #[serde(default)]
    images: Vec<String>,
    #[serde(default)]
    message: String,
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

async fn phone_home(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let token = bearer(&headers)?;
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let report: Report = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "the body must be JSON {{\"ok\": bool, \"images\": [\"..\"], \"message\": \"..\"}}: {e}"
            ),
        )
    })?;
    if report.images.len() > IMAGES_LIMIT {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("at most {IMAGES_LIMIT} images may be listed"),
        ));
    }
    let ph = PhoneHome {
        ok: report.ok,
        images: report
            .images
            .into_iter()
            .map(|i| truncate(i, 255))
            .collect(),
        message: truncate(report.message, MESSAGE_LIMIT),
        at: Utc::now(),
    };
    match record::accept_phone_home(&shared.store, token, ph).await {
        Ok(Accepted::Yes(r)) => {
            let build = format!("{}/{}", r.namespace, r.name);
            tracing::info!(%build, generation = r.generation, ok = report.ok, "builder phoned home");
            Ok(
                axum::Json(json!({"accepted": true, "build": build, "generation": r.generation}))
                    .into_response(),
            )
        }
        Ok(Accepted::AlreadyDone(p)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "this build phoned home already (at {}, ok: {}); a token is good for one report",
                p.at, p.ok
            ),
        )),
        Ok(Accepted::UnknownToken) => Err(ApiError::unauthorized()),
        Err(e) => {
            tracing::warn!(error = %e, "builder endpoint: recording a phone-home");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot record the phone-home (retry): {e}"),
            ))
        }
    }
}

/// The endpoint's routes over `store` (build records) and `swarm` (the runtime images).
pub fn router(store: Store, swarm: Swarm) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/builds/images.tar", get(images_tar))
        .route("/v1/builds/phone-home", post(phone_home))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(Arc::new(Shared { store, swarm }))
}

/// Binds `addr` and serves the builder endpoint until `stop`; returns the bound address and
/// the serving task.
pub async fn serve(
    addr: SocketAddr,
    store: Store,
    cluster: ClusterConfig,
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), EndpointError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| SnapshotError::Listen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| SnapshotError::Listen { addr, source })?;
    let app = router(store, cluster.swarm.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::error!(%bound, error = %e, "builder endpoint stopped");
        }
    });
    tracing::info!(%bound, "builder endpoint listening");
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            m
        };
        assert_eq!(bearer(&h("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(&h("bearer  abc ")).unwrap(), "abc");
        assert!(bearer(&h("Basic abc")).is_err());
        assert!(bearer(&h("Bearer ")).is_err());
        assert!(bearer(&HeaderMap::new()).is_err());
        let r = ApiError::unauthorized().into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("abc".into(), 5), "abc");
        assert_eq!(truncate("abcdef".into(), 3), "abc…");
        assert_eq!(truncate("ééé".into(), 3), "é…");
    }
}
