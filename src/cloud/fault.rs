//! Error responses in the shapes the real services use: Nova's `{"itemNotFound": {"code": 404,
//! "message": …}}`, Keystone's `{"error": {"code", "title", "message"}}`, Glance's plain text.
//! Every response carries an `X-Openstack-Request-Id`.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Which service answers, for the error body shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Identity,
    Compute,
    Image,
    Network,
}

/// An API error of one of the emulated services.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub service: Service,
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error of a service with a status and message.
    pub fn new(service: Service, status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            service,
            status,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// A fresh request id, `req-<uuid>` like every OpenStack service.
pub fn request_id() -> String {
    format!("req-{}", uuid::Uuid::new_v4())
}

/// Nova's fault names by status (nova/api/openstack/wsgi.py `_FAULT_NAMES`).
fn nova_fault_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "badRequest",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "itemNotFound",
        405 => "badMethod",
        409 => "conflictingRequest",
        413 | 429 => "overLimit",
        415 => "badMediaType",
        501 => "notImplemented",
        503 => "serviceUnavailable",
        _ => "computeFault",
    }
}

fn keystone_title(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Internal Server Error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let rid = request_id();
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&rid) {
            headers.insert("x-openstack-request-id", v);
        }
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            headers.insert("retry-after", v);
        }
        let code = self.status.as_u16();
        // keystonemiddleware answers 401 for every service in Keystone's shape.
        let service = if self.status == StatusCode::UNAUTHORIZED {
            Service::Identity
        } else {
            self.service
        };
        match service {
            Service::Compute => {
                let body = json!({ nova_fault_name(self.status): {"code": code, "message": self.message} });
                (self.status, headers, axum::Json(body)).into_response()
            }
            Service::Network => {
                let kind = match code {
                    404 => "NetworkNotFound",
                    400 => "BadRequest",
                    _ => "NeutronError",
                };
                let body =
                    json!({"NeutronError": {"type": kind, "message": self.message, "detail": ""}});
                (self.status, headers, axum::Json(body)).into_response()
            }
            Service::Image => {
                let reason = self.status.canonical_reason().unwrap_or("Error");
                let body = format!("{code} {reason}\n\n{}\n\n   ", self.message);
                headers.insert(
                    "content-type",
                    HeaderValue::from_static("text/plain; charset=UTF-8"),
                );
                (self.status, headers, body).into_response()
            }
            Service::Identity => {
                let body = json!({"error": {"code": code, "title": keystone_title(self.status), "message": self.message}});
                (self.status, headers, axum::Json(body)).into_response()
            }
        }
    }
}
