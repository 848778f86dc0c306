//! Execution records over REST: one record by id, and a function's history newest first with
//! a status filter and continue tokens. Read-only: records are written by whoever runs the
//! execution (the listener, async invocations), never through this API.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::API_VERSION;
use crate::events::execution::ExecutionStatus;
use crate::events::execution::store::{self, ExecutionError, MAX_PAGE};

use super::Gateway;
use super::authz::{Permission, Principal};
use super::error::HttpError;

/// Records per page when `limit` is not given.
const DEFAULT_PAGE: usize = 20;

/// Maps a store error to the HTTP error a caller can act on: bad ids, names and tokens are
/// the caller's (400), a missing record is 404, an unreadable one or an unreachable etcd 503.
fn execution_error(e: ExecutionError) -> HttpError {
    match e {
        ExecutionError::NotFound { .. } => {
            HttpError::new(StatusCode::NOT_FOUND, "NotFound", e.to_string())
        }
        ExecutionError::InvalidId { .. }
        | ExecutionError::InvalidName { .. }
        | ExecutionError::InvalidContinue { .. } => {
            HttpError::new(StatusCode::BAD_REQUEST, "BadRequest", e.to_string())
        }
        ExecutionError::Invalid { .. } => HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Unreadable",
            e.to_string(),
        ),
        _ => HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "StoreUnavailable",
            e.to_string(),
        ),
    }
}

/// The validated query of a history list.
#[derive(Debug, PartialEq)]
struct ListQuery {
    status: Option<ExecutionStatus>,
    limit: usize,
    continue_token: Option<String>,
}

/// Parses `?status=&limit=&continue=`; an unknown parameter or a bad value is a 400 naming it
/// (a typo such as `?stauts=` must not silently list everything).
fn parse_query(q: &HashMap<String, String>) -> Result<ListQuery, HttpError> {
    let bad = |m: String| HttpError::new(StatusCode::BAD_REQUEST, "BadRequest", m);
    if let Some(k) = q
        .keys()
        .find(|k| !matches!(k.as_str(), "status" | "limit" | "continue"))
    {
        return Err(bad(format!(
            "unknown query parameter {k:?} (status, limit, continue)"
        )));
    }
    let status = match q.get("status").map(String::as_str) {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<ExecutionStatus>()
                .map_err(|e| bad(format!("status: {e}")))?,
        ),
    };
    let limit = match q.get("limit") {
        None => DEFAULT_PAGE,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(bad(format!(
                    "limit: {l:?} is not a whole number in 1..={MAX_PAGE}"
                )));
            }
        },
    };
    let continue_token = q.get("continue").filter(|t| !t.is_empty()).cloned();
    Ok(ListQuery {
        status,
        limit,
        continue_token,
    })
}

/// `GET /v1/namespaces/{ns}/executions/{id}`
pub async fn get(
    State(gw): State<Arc<Gateway>>,
    principal: Principal,
    Path((ns, id)): Path<(String, String)>,
) -> Response {
    if let Err(e) = principal.check(&ns, Permission::ExecutionsRead) {
        return e.into_response();
    }
    match store::get(&gw.store, &ns, &id).await {
        Ok(s) => Json(s.execution).into_response(),
        Err(e @ store::ExecutionError::NotFound { .. }) => match gw.unwritten.get(&ns, &id) {
            Some(queued) => Json(queued).into_response(),
            None => execution_error(e).into_response(),
        },
        Err(e) => execution_error(e).into_response(),
    }
}

/// `GET /v1/executions/{id}` (namespace `default`)
pub async fn get_default(
    State(gw): State<Arc<Gateway>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Response {
    get(State(gw), principal, Path(("default".into(), id))).await
}

/// `GET /v1/namespaces/{ns}/functions/{name}/executions?status=&limit=&continue=`: newest
/// first; `continue` in the body is absent on the last page.
pub async fn list(
    State(gw): State<Arc<Gateway>>,
    principal: Principal,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(e) = principal.check(&ns, Permission::ExecutionsRead) {
        return e.into_response();
    }
    let q = match parse_query(&q) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    match store::list(
        &gw.store,
        &ns,
        &name,
        q.status,
        q.limit,
        q.continue_token.as_deref(),
    )
    .await
    {
        Ok(page) => {
            let mut body = json!({
                "apiVersion": API_VERSION,
                "kind": "ExecutionList",
                "items": page.items,
            });
            if let Some(t) = page.continue_token {
                body["continue"] = json!(t);
            }
            Json(body).into_response()
        }
        Err(e) => execution_error(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(
            parse_query(&q(&[])).expect("empty"),
            ListQuery {
                status: None,
                limit: DEFAULT_PAGE,
                continue_token: None
            }
        );
        assert_eq!(
            parse_query(&q(&[
                ("status", "deadlettered"),
                ("limit", "5"),
                ("continue", "t")
            ]))
            .expect("full"),
            ListQuery {
                status: Some(ExecutionStatus::DeadLettered),
                limit: 5,
                continue_token: Some("t".into())
            }
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        for (pairs, needle) in [
            (vec![("stauts", "Failed")], "stauts"),
            (vec![("status", "Done")], "status"),
            (vec![("limit", "0")], "limit"),
            (vec![("limit", "101")], "limit"),
            (vec![("limit", "x")], "limit"),
        ] {
            let e = parse_query(&q(&pairs)).expect_err("rejected");
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains(needle), "{} lacks {needle}", e.message);
        }
    }
}
