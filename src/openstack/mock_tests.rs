//! The request path against a scripted in-process Keystone + Nova (axum): token refresh before
//! expiry and on a 401, retries only where safe, Retry-After, microversion check.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::auth::{Session, SessionOptions};
use super::compute::{Compute, CreateServer};
use super::config::{AuthMethod, CloudConfig, ProjectScope, Secret, UserRef};
use super::error::Error;

/// A scripted answer: status, headers, body.
type Scripted = (u16, Vec<(&'static str, String)>, String);

#[derive(Default)]
struct Mock {
    base: String,
    token_lifetime_secs: i64,
    max_microversion: String,
    auths: u32,
    /// tokens Nova refuses with 401
    revoked: Vec<String>,
    /// scripted answers of the Nova calls (popped in order; empty: success)
    script: VecDeque<Scripted>,
    nova_calls: u32,
    seen_microversion: Option<String>,
}

type S = Arc<Mutex<Mock>>;

async fn auth(State(s): State<S>) -> Response {
    let mut m = s.lock().unwrap();
    m.auths += 1;
    let now = chrono::Utc::now();
    let body = json!({"token": {
        "issued_at": now.to_rfc3339(),
        "expires_at": (now + chrono::Duration::seconds(m.token_lifetime_secs)).to_rfc3339(),
        "project": {"id": "p1", "name": "proj"},
        "user": {"id": "u1"},
        "catalog": [{"type": "compute", "name": "nova", "endpoints": [
            {"interface": "public", "region_id": "R1", "url": format!("{}/compute/v2.1", m.base)}]}]
    }});
    let mut r = (StatusCode::CREATED, axum::Json(body)).into_response();
    r.headers_mut().insert(
        "x-subject-token",
        format!("tok-{}", m.auths).parse().unwrap(),
    );
    r
}

async fn version(State(s): State<S>) -> Response {
    let m = s.lock().unwrap();
    axum::Json(json!({"version": {"id": "v2.1", "status": "CURRENT",
        "version": m.max_microversion, "min_version": "2.1"}}))
    .into_response()
}

fn nova(s: &S, headers: &HeaderMap, ok: serde_json::Value) -> Response {
    let mut m = s.lock().unwrap();
    m.nova_calls += 1;
    m.seen_microversion = headers
        .get("openstack-api-version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let token = headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let rid = format!("req-{}", m.nova_calls);
    let mut r = if m.revoked.contains(&token) {
        (
            StatusCode::UNAUTHORIZED,
            r#"{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}"#,
        )
            .into_response()
    } else if let Some((status, hdrs, body)) = m.script.pop_front() {
        let mut r = (StatusCode::from_u16(status).unwrap(), body).into_response();
        for (k, v) in hdrs {
            r.headers_mut().insert(k, v.parse().unwrap());
        }
        r
    } else {
        axum::Json(ok).into_response()
    };
    r.headers_mut()
        .insert("x-openstack-request-id", rid.parse().unwrap());
    r
}

async fn flavors(State(s): State<S>, headers: HeaderMap) -> Response {
    nova(
        &s,
        &headers,
        json!({"flavors": [{"id": "1", "name": "m1.tiny", "vcpus": 1, "ram": 512, "disk": 1}]}),
    )
}

async fn create(State(s): State<S>, headers: HeaderMap) -> Response {
    nova(&s, &headers, json!({"server": {"id": "new-server"}}))
}

async fn start(lifetime: i64, max_mv: &str) -> (S, Arc<Session>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state: S = Arc::new(Mutex::new(Mock {
        base: format!("http://{addr}"),
        token_lifetime_secs: lifetime,
        max_microversion: max_mv.into(),
        ..Default::default()
    }));
    let app = Router::new()
        .route("/v3/auth/tokens", post(auth))
        .route("/compute/v2.1", get(version))
        .route("/compute/v2.1/flavors/detail", get(flavors))
        .route("/compute/v2.1/servers", post(create))
        .with_state(state.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let config = CloudConfig {
        auth_url: format!("http://{addr}/v3"),
        auth: AuthMethod::Password {
            user: UserRef {
                name: Some("u".into()),
                domain_name: Some("Default".into()),
                ..Default::default()
            },
            password: Secret::new("pw"),
            project: ProjectScope {
                name: Some("proj".into()),
                domain_name: Some("Default".into()),
                ..Default::default()
            },
        },
        region: Some("R1".into()),
        interface: "public".into(),
        cacert: None,
        insecure: false,
        source: "mock".into(),
    };
    let options = SessionOptions {
        min_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_retry_after: Duration::from_secs(2),
        ..Default::default()
    };
    (state, Arc::new(Session::new(config, options).unwrap()))
}

fn script(s: &S, status: u16, headers: Vec<(&'static str, String)>, body: &str) {
    s.lock()
        .unwrap()
        .script
        .push_back((status, headers, body.to_owned()));
}

#[tokio::test]
async fn token_is_cached_then_refreshed_before_expiry() {
    // 2 s tokens: due half-way (the 5 min margin is capped at half the lifetime)
    let (s, session) = start(2, "2.93").await;
    let c = Compute::connect(session.clone()).await.unwrap();
    c.list_flavors().await.unwrap();
    c.list_flavors().await.unwrap();
    assert_eq!(s.lock().unwrap().auths, 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.list_flavors().await.unwrap();
    assert_eq!(s.lock().unwrap().auths, 2);
    assert_eq!(
        s.lock().unwrap().seen_microversion.as_deref(),
        Some("compute 2.52")
    );
}

#[tokio::test]
async fn a_401_re_authenticates_once() {
    let (s, session) = start(3600, "2.93").await;
    let c = Compute::connect(session.clone()).await.unwrap();
    s.lock().unwrap().revoked.push("tok-1".into());
    c.list_flavors().await.unwrap();
    assert_eq!(session.auth_count(), 2);
    // every token refused: one re-authentication, then the 401 is the caller's
    s.lock().unwrap().revoked.push("tok-2".into());
    s.lock().unwrap().revoked.push("tok-3".into());
    let e = c.list_flavors().await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized(_)), "{e}");
    assert_eq!(session.auth_count(), 3);
    assert!(e.request_id().is_some_and(|r| r.starts_with("req-")));
}

#[tokio::test]
async fn idempotent_get_is_retried_on_503_and_409() {
    let (s, session) = start(3600, "2.93").await;
    let c = Compute::connect(session).await.unwrap();
    script(&s, 503, vec![("retry-after", "0".into())], "busy");
    script(
        &s,
        409,
        vec![],
        r#"{"conflictingRequest": {"code": 409, "message": "x"}}"#,
    );
    let f = c.list_flavors().await.unwrap();
    assert_eq!(f[0].name, "m1.tiny");
    assert_eq!(s.lock().unwrap().nova_calls, 3);
}

#[tokio::test]
async fn persistent_500_gives_up_after_max_retries() {
    let (s, session) = start(3600, "2.93").await;
    let c = Compute::connect(session).await.unwrap();
    for _ in 0..10 {
        script(
            &s,
            500,
            vec![],
            r#"{"computeFault": {"code": 500, "message": "boom"}}"#,
        );
    }
    let e = c.list_flavors().await.unwrap_err();
    assert!(matches!(e, Error::ServerError(_)), "{e}");
    assert_eq!(e.api_context().unwrap().message, "boom");
    assert_eq!(s.lock().unwrap().nova_calls, 4, "1 + max_retries (3)");
    assert_eq!(e.request_id(), Some("req-4"));
}

#[tokio::test]
async fn server_create_is_never_retried() {
    let (s, session) = start(3600, "2.93").await;
    let c = Compute::connect(session).await.unwrap();
    script(&s, 503, vec![("retry-after", "0".into())], "busy");
    let spec = CreateServer {
        name: "n".into(),
        flavor_id: "1".into(),
        image_id: "i".into(),
        ..Default::default()
    };
    let e = c.create_server(&spec).await.unwrap_err();
    assert!(matches!(e, Error::ServerError(_)), "{e}");
    assert_eq!(s.lock().unwrap().nova_calls, 1);
    // but a 401 on create is safe to repeat once (refused before the API handled it)
    s.lock().unwrap().revoked.push("tok-1".into());
    assert_eq!(c.create_server(&spec).await.unwrap(), "new-server");
    assert_eq!(s.lock().unwrap().nova_calls, 3);
}

#[tokio::test]
async fn long_retry_after_goes_to_the_caller() {
    let (s, session) = start(3600, "2.93").await;
    let c = Compute::connect(session).await.unwrap();
    script(
        &s,
        429,
        vec![("retry-after", "120".into())],
        r#"{"overLimit": {"code": 429, "message": "slow down"}}"#,
    );
    let e = c.list_flavors().await.unwrap_err();
    match e {
        Error::OverLimit { retry_after, .. } => {
            assert_eq!(retry_after, Some(Duration::from_secs(120)))
        }
        other => panic!("{other}"),
    }
    assert_eq!(s.lock().unwrap().nova_calls, 1);
}

#[tokio::test]
async fn too_old_compute_api_is_a_clear_error() {
    let (_s, session) = start(3600, "2.36").await;
    let e = Compute::connect(session).await.unwrap_err();
    assert!(matches!(e, Error::MicroversionUnsupported { .. }), "{e}");
    assert!(e.to_string().contains("too old"), "{e}");
}

#[tokio::test]
async fn unreachable_keystone_is_a_transport_error() {
    // a port nobody listens on
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let (_s, session) = start(3600, "2.93").await;
    let mut config = session.config().clone();
    config.auth_url = format!("http://127.0.0.1:{port}/v3");
    let options = SessionOptions {
        min_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
        ..Default::default()
    };
    let session = Session::new(config, options).unwrap();
    let e = session.token().await.unwrap_err();
    assert!(matches!(e, Error::Transport { .. }), "{e}");
    assert!(e.to_string().contains("identity POST"), "{e}");
}
