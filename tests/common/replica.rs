//! A replica served by a test that follows the agent's HTTP contract (agent/src/lib.rs): it
//! echoes the event as `{"echo": event}`, fails with a 502 error body for `{"fail": true}`,
//! sleeps for `{"sleep_ms": N}` (answering 504 past the caller's deadline). Asked with
//! `X-Lambda-Log-Type: Tail`, it returns its "output" (`handling <invocation id>`) base64 in
//! `X-Lambda-Log-Result`, as the agent does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value, json};

/// A replica that follows the agent contract: echoes the event, or fails, sleeps, per event.
pub async fn replica(hits: Arc<AtomicUsize>) -> SocketAddr {
    let app = axum::Router::new().route(
        "/invoke",
        post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let ev: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let deadline: u64 = headers.get("x-lambda-deadline-ms").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
                if let Some(ms) = ev["sleep_ms"].as_u64() {
                    if ms > deadline {
                        tokio::time::sleep(Duration::from_millis(deadline)).await;
                        return (StatusCode::GATEWAY_TIMEOUT, [("x-lambda-status", "timeout")], axum::Json(json!({"errorType": "Timeout", "errorMessage": "exceeded"}))).into_response();
                    }
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let mut resp = if ev["fail"].as_bool() == Some(true) {
                    (StatusCode::BAD_GATEWAY, [("x-lambda-status", "error")], axum::Json(json!({"errorType": "ValueError", "errorMessage": "boom", "stackTrace": ["line 1"]}))).into_response()
                } else {
                    (StatusCode::OK, [("x-lambda-status", "ok")], axum::Json(json!({"echo": ev}))).into_response()
                };
                if headers.get("x-lambda-log-type").and_then(|v| v.to_str().ok()) == Some("Tail") {
                    use base64::Engine as _;
                    let id = headers.get("x-lambda-invocation-id").and_then(|v| v.to_str().ok()).unwrap_or("?");
                    let text = base64::engine::general_purpose::STANDARD.encode(format!("handling {id}\n"));
                    if let Ok(v) = axum::http::HeaderValue::from_str(&text) {
                        resp.headers_mut().insert("x-lambda-log-result", v);
                    }
                }
                resp
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    addr
}

/// Creates a Function from `spec` (YAML) whose status lists `replica` as its one ready
/// endpoint, as the function controller writes it once the service runs (no Swarm needed).
pub async fn function_on(
    store: &lambda::store::Store,
    ns: &str,
    name: &str,
    spec: &str,
    replica: SocketAddr,
) -> lambda::api::Function {
    let spec: lambda::api::FunctionSpec = serde_saphyr::from_str(spec).expect("spec");
    let f = store
        .create(&lambda::api::Function::new(ns, name, spec))
        .await
        .expect("create");
    let status = lambda::api::FunctionStatus {
        replicas: 1,
        ready_replicas: 1,
        endpoints: vec![lambda::api::function::Endpoint {
            address: replica.to_string(),
            task_id: "task-0".into(),
            node_id: "n".into(),
        }],
        ..Default::default()
    };
    store.update_status(&f, &status).await.expect("status");
    f
}
