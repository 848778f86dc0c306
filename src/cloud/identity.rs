//! Keystone v3: password and application-credential tokens with a service catalog.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};

use super::fault::{ApiError, Service, request_id};
use super::state::Project;
use super::{Cloud, Token};

fn bad(msg: &str) -> ApiError {
    ApiError::new(Service::Identity, StatusCode::BAD_REQUEST, msg)
}

fn unauthorized() -> ApiError {
    ApiError::new(
        Service::Identity,
        StatusCode::UNAUTHORIZED,
        "The request you have made requires authentication.",
    )
}

/// `GET /identity/v3`
pub async fn version(State(cloud): State<Arc<Cloud>>) -> Json<Value> {
    Json(json!({"version": {
        "id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{}/identity/v3/", cloud.base_url)}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]
    }}))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// Finds the project a password or application-credential request authenticates.
fn authenticate(projects: &[Project], body: &Value) -> Result<Project, ApiError> {
    let identity = body
        .pointer("/auth/identity")
        .ok_or_else(|| bad("Expecting to find identity in auth."))?;
    let methods: Vec<&str> = identity
        .get("methods")
        .and_then(Value::as_array)
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if methods.contains(&"application_credential") {
        let id = str_at(identity, &["application_credential", "id"])
            .ok_or_else(|| bad("Expecting to find id in application_credential."))?;
        let secret = str_at(identity, &["application_credential", "secret"])
            .ok_or_else(|| bad("Expecting to find secret in application_credential."))?;
        return projects
            .iter()
            .find(|p| p.app_cred_id == id && p.app_cred_secret == secret)
            .cloned()
            .ok_or_else(unauthorized);
    }
    if !methods.contains(&"password") {
        return Err(bad(
            "Expecting to find password or application_credential in methods.",
        ));
    }
    let user = identity
        .pointer("/password/user")
        .ok_or_else(|| bad("Expecting to find user in password."))?;
    let password =
        str_at(user, &["password"]).ok_or_else(|| bad("Expecting to find password in user."))?;
    let name = str_at(user, &["name"]);
    let id = str_at(user, &["id"]);
    let candidates: Vec<&Project> = projects
        .iter()
        .filter(|p| name == Some(p.user_name.as_str()) || id == Some(p.user_id.as_str()))
        .filter(|p| p.password == password)
        .collect();
    let scope = body.pointer("/auth/scope/project");
    let scoped = match scope {
        Some(s) => {
            let pname = str_at(s, &["name"]);
            let pid = str_at(s, &["id"]);
            candidates
                .into_iter()
                .find(|p| pname == Some(p.name.as_str()) || pid == Some(p.id.as_str()))
        }
        None => candidates.into_iter().next(),
    };
    scoped.cloned().ok_or_else(unauthorized)
}

fn catalog(base: &str) -> Value {
    let svc = |type_: &str, name: &str, url: String| {
        let eps: Vec<Value> = ["public", "internal", "admin"]
            .iter()
            .map(|i| json!({"id": uuid::Uuid::new_v4().simple().to_string(), "interface": i, "region": "RegionOne", "region_id": "RegionOne", "url": url}))
            .collect();
        json!({"id": uuid::Uuid::new_v4().simple().to_string(), "type": type_, "name": name, "endpoints": eps})
    };
    json!([
        svc("identity", "keystone", format!("{base}/identity")),
        svc("compute", "nova", format!("{base}/compute/v2.1")),
        svc("image", "glance", format!("{base}/image")),
        svc("network", "neutron", format!("{base}/network")),
    ])
}

/// `POST /identity/v3/auth/tokens`
pub async fn issue_token(State(cloud): State<Arc<Cloud>>, body: Option<Json<Value>>) -> Response {
    let Some(Json(body)) = body else {
        return bad("The request body must be JSON with an auth object.").into_response();
    };
    let project = {
        let st = cloud.lock();
        authenticate(&st.projects, &body)
    };
    let project = match project {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let now = Utc::now();
    let expires = now + cloud.token_ttl;
    let token = uuid::Uuid::new_v4().simple().to_string();
    cloud
        .tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            token.clone(),
            Token {
                project_id: project.id.clone(),
                user_id: project.user_id.clone(),
                expires,
            },
        );
    let method = body
        .pointer("/auth/identity/methods/0")
        .and_then(Value::as_str)
        .unwrap_or("password")
        .to_string();
    let mut headers = HeaderMap::new();
    for (k, v) in [
        ("x-subject-token", token),
        ("x-openstack-request-id", request_id()),
    ] {
        if let Ok(v) = v.parse() {
            headers.insert(k, v);
        }
    }
    let body = json!({"token": {
        "methods": [method],
        "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "issued_at": now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "user": {"id": project.user_id, "name": project.user_name, "domain": {"id": "default", "name": "Default"}, "password_expires_at": null},
        "project": {"id": project.id, "name": project.name, "domain": {"id": "default", "name": "Default"}},
        "roles": [{"id": "member", "name": "member"}],
        "catalog": catalog(&cloud.base_url),
    }});
    (StatusCode::CREATED, headers, Json(body)).into_response()
}

/// `DELETE /identity/v3/auth/tokens`: revokes the token named by `X-Subject-Token`.
pub async fn revoke_token(
    State(cloud): State<Arc<Cloud>>,
    _auth: super::Auth,
    headers: HeaderMap,
) -> Response {
    let Some(subject) = headers.get("x-subject-token").and_then(|v| v.to_str().ok()) else {
        return bad("X-Subject-Token header is required.").into_response();
    };
    let removed = cloud
        .tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(subject);
    match removed {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => ApiError::new(
            Service::Identity,
            StatusCode::NOT_FOUND,
            "Could not find token.",
        )
        .into_response(),
    }
}
