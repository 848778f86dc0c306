//! Function CRUD over REST (the original system's cURL interface), through the same parsing
//! and validation as `lambda apply`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::api::{API_VERSION, Function, FunctionSpec, Resource};
use crate::store::{DeleteOutcome, StoreError, UpdateOutcome};

use super::Gateway;
use super::authz::{Permission, Principal};
use super::error::HttpError;

/// Most bytes of a Function sent over REST (its inline code is bounded well below this).
const MAX_FUNCTION_BYTES: usize = crate::api::function::MAX_PAYLOAD_LIMIT as usize + 1024;

/// The request's Function, within [`MAX_FUNCTION_BYTES`].
async fn read_function(ns: &str, name: Option<&str>, req: Request) -> Result<Function, HttpError> {
    let body = super::body::read_body(
        req,
        MAX_FUNCTION_BYTES,
        super::body::too_large(MAX_FUNCTION_BYTES),
    )
    .await?;
    parse(ns, name, &body)
}

fn store_error(e: StoreError) -> HttpError {
    match e {
        StoreError::NotFound { .. } => {
            HttpError::new(StatusCode::NOT_FOUND, "NotFound", e.to_string())
        }
        StoreError::AlreadyExists { .. } => {
            HttpError::new(StatusCode::CONFLICT, "AlreadyExists", e.to_string())
        }
        StoreError::Conflict { .. } => {
            HttpError::new(StatusCode::CONFLICT, "Conflict", e.to_string())
        }
        StoreError::Validation { ref errors, .. } => {
            let details: Vec<Value> = errors
                .errors()
                .iter()
                .map(|f| json!({"field": f.path, "message": f.message}))
                .collect();
            let mut h = HttpError::new(StatusCode::BAD_REQUEST, "Invalid", e.to_string());
            h.details = Some(Value::Array(details));
            h
        }
        _ => HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "StoreUnavailable",
            e.to_string(),
        ),
    }
}

/// Parses a Function from a JSON body for namespace `ns` (and name `name` when given by the
/// path): malformed JSON names line and column; unknown fields are rejected; the envelope
/// defaults to this API's version and kind; metadata must agree with the path.
fn parse(ns: &str, name: Option<&str>, body: &[u8]) -> Result<Function, HttpError> {
    let bad = |m: String| HttpError::new(StatusCode::BAD_REQUEST, "BadRequest", m);
    let mut v: Value = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "malformed JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        ))
    })?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| bad("the body must be a JSON object (a Function)".into()))?;
    obj.entry("apiVersion").or_insert(json!(API_VERSION));
    obj.entry("kind").or_insert(json!(FunctionSpec::KIND));
    let meta = obj.entry("metadata").or_insert(json!({}));
    let Some(meta) = meta.as_object_mut() else {
        return Err(bad("metadata must be an object".into()));
    };
    match meta.get("namespace").and_then(Value::as_str) {
        Some(n) if n != ns => {
            return Err(bad(format!(
                "metadata.namespace {n:?} does not match the path's namespace {ns:?}"
            )));
        }
        _ => {
            meta.insert("namespace".into(), json!(ns));
        }
    }
    if let Some(name) = name {
        match meta.get("name").and_then(Value::as_str) {
            Some(n) if n != name => {
                return Err(bad(format!(
                    "metadata.name {n:?} does not match the path's name {name:?}"
                )));
            }
            _ => {
                meta.insert("name".into(), json!(name));
            }
        }
    }
    let f: Function =
        serde_json::from_value(v).map_err(|e| bad(format!("invalid Function: {e}")))?;
    if f.api_version != API_VERSION || f.kind != FunctionSpec::KIND {
        return Err(bad(format!(
            "expected apiVersion {API_VERSION} and kind Function, got {} {}",
            f.api_version, f.kind
        )));
    }
    if let Some(c) = &f.spec.code
        && c.file.is_some()
    {
        return Err(bad(
            "spec.code.file cannot be read by the server: send the code inline (spec.code.inline)"
                .into(),
        ));
    }
    f.validate().map_err(|errors| {
        let details: Vec<Value> = errors
            .errors()
            .iter()
            .map(|f| json!({"field": f.path, "message": f.message}))
            .collect();
        let mut h = HttpError::new(
            StatusCode::BAD_REQUEST,
            "Invalid",
            format!("Function is invalid: {errors}"),
        );
        h.details = Some(Value::Array(details));
        h
    })?;
    Ok(f)
}

/// `GET /v1/namespaces/{ns}/functions`
pub async fn list(
    State(gw): State<Arc<Gateway>>,
    principal: Principal,
    Path(ns): Path<String>,
) -> Response {
    if let Err(e) = principal.check(&ns, Permission::FunctionsRead) {
        return e.into_response();
    }
    match gw.store.list::<FunctionSpec>(Some(&ns)).await {
        Ok(l) => Json(json!({"apiVersion": API_VERSION, "kind": "FunctionList", "items": l.items}))
            .into_response(),
        Err(e) => store_error(e).into_response(),
    }
}

/// `GET /v1/namespaces/{ns}/functions/{name}`
pub async fn get(
    State(gw): State<Arc<Gateway>>,
    principal: Principal,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    if let Err(e) = principal.check(&ns, Permission::FunctionsRead) {
        return e.into_response();
    }
    match gw.store.get::<FunctionSpec>(&ns, &name).await {
        Ok(f) => Json(f).into_response(),
        Err(e) => store_error(e).into_response(),
    }
}

/// `POST /v1/namespaces/{ns}/functions` — 201, or 409 when it exists.
pub async fn create(
    State(gw): State<Arc<Gateway>>,
    principal: Principal,
    Path(ns): Path<String>,
    req: Request,
) -> Response {
    if let Err(e) = principal.check(&ns, Permission::FunctionsWrite) {
        return e.into_response();
    }
    let f = match read_function(&ns, None, req).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    match gw.store.create(&f).await {
        Ok(f) => (StatusCode::CREATED, Json(f)).into_response(),
        Err(e) => store_error(e).into_response(),
    }
}

/// `PUT /v1/namespaces/{ns}/functions/{name}` — replaces spec, labels and annotations (200),
/// or creates (201).
pub async fn replace(
    State(gw): State<Arc<Gateway>>,
    principal: Principal,
    Path((ns, name)): Path<(String, String)>,
    req: Request,
) -> Response {
    if let Err(e) = principal.check(&ns, Permission::FunctionsWrite) {
        return e.into_response();
    }
    let f = match read_function(&ns, Some(&name), req).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    for _ in 0..5 {
        let current = match gw.store.get::<FunctionSpec>(&ns, &name).await {
            Ok(c) => c,
            Err(e) if e.is_not_found() => match gw.store.create(&f).await {
                Ok(f) => return (StatusCode::CREATED, Json(f)).into_response(),
                Err(StoreError::AlreadyExists { .. }) => continue,
                Err(e) => return store_error(e).into_response(),
            },
            Err(e) => return store_error(e).into_response(),
        };
        if current.is_deleting() {
            return HttpError::new(
                StatusCode::CONFLICT,
                "Terminating",
                format!("function {ns}/{name} is being deleted"),
            )
            .into_response();
        }
        let mut next = current.clone();
        next.spec = f.spec.clone();
        next.metadata.labels = f.metadata.labels.clone();
        next.metadata.annotations = f.metadata.annotations.clone();
        match gw.store.update(&next).await {
            Ok(UpdateOutcome::Updated(o)) => return Json(*o).into_response(),
            Ok(UpdateOutcome::Deleted) => continue,
            Err(e) if e.is_conflict() => continue,
            Err(e) => return store_error(e).into_response(),
        }
    }
    HttpError::new(
        StatusCode::CONFLICT,
        "Conflict",
        "the function kept changing; retry",
    )
    .into_response()
}

/// `DELETE /v1/namespaces/{ns}/functions/{name}` — 200 when gone, 202 while finalizers run.
pub async fn delete(
    State(gw): State<Arc<Gateway>>,
    principal: Principal,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    if let Err(e) = principal.check(&ns, Permission::FunctionsWrite) {
        return e.into_response();
    }
    match gw.store.delete::<FunctionSpec>(&ns, &name).await {
        Ok(DeleteOutcome::Deleted) => {
            Json(json!({"status": "Deleted", "name": name, "namespace": ns})).into_response()
        }
        Ok(DeleteOutcome::Terminating(o)) => (StatusCode::ACCEPTED, Json(*o)).into_response(),
        Err(e) => store_error(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_problem() {
        let e = parse("default", None, b"{\"metadata\": {\"name\": \"a\"},").unwrap_err();
        assert!(e.message.contains("line 1 column"), "{}", e.message);
        let e = parse("default", None, br#"{"metadata": {"name": "a"}, "spec": {"runtime": "shell", "code": {"inline": "cat"}, "replica": 1}}"#).unwrap_err();
        assert!(
            e.message.contains("unknown field `replica`"),
            "{}",
            e.message
        );
        let e = parse("default", None, br#"{"metadata": {"name": "a"}, "spec": {"runtime": "shell", "code": {"inline": "cat"}, "timeoutSeconds": 0}}"#).unwrap_err();
        assert!(e.message.contains("spec.timeoutSeconds"), "{}", e.message);
        let e = parse("team", Some("b"), br#"{"metadata": {"name": "a"}, "spec": {"runtime": "shell", "code": {"inline": "cat"}}}"#).unwrap_err();
        assert!(
            e.message.contains("does not match the path"),
            "{}",
            e.message
        );
        let f = parse(
            "team",
            Some("b"),
            br#"{"spec": {"runtime": "shell", "code": {"inline": "cat"}}}"#,
        )
        .unwrap();
        assert_eq!(
            (f.metadata.namespace(), f.metadata.name.as_str()),
            ("team", "b")
        );
    }
}
