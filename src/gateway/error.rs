//! The gateway's HTTP errors: a status, a CamelCase reason and a message, as JSON
//! `{"error": {"code", "reason", "message", "details"?}}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::{Value, json};

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct HttpError {
    pub status: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    pub retry_after: Option<u64>,
}

impl HttpError {
    /// An error without details.
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        HttpError {
            status,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// 404 for a function that does not exist.
    pub fn unknown_function(ns: &str, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("function {ns}/{name} not found"),
        )
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.status.as_u16(), "reason": self.reason, "message": self.message}});
        if let Some(d) = self.details {
            body["error"]["details"] = d;
        }
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert("retry-after", v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static("Bearer realm=\"lambda\""),
            );
        }
        r
    }
}

/// The CamelCase reason of a status the gateway answers without a handler's own error.
fn reason_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        408 => "RequestTimeout",
        411 => "LengthRequired",
        413 => "PayloadTooLarge",
        414 => "UriTooLong",
        415 => "UnsupportedMediaType",
        422 => "UnprocessableEntity",
        431 => "RequestHeaderFieldsTooLarge",
        500 => "Internal",
        501 => "NotImplemented",
        503 => "Unavailable",
        _ if status.is_client_error() => "ClientError",
        _ => "ServerError",
    }
}

/// Most bytes of a non-JSON error body kept as the message.
const MAX_MESSAGE: usize = 1024;

/// Middleware: every error the gateway answers has the documented body. Errors made outside
/// the handlers — axum's rejections of a path, query or body it cannot decode, 405 for a
/// method a route lacks — come as plain text or empty; they are rewrapped as
/// `{"error": {...}}` with their text as the message (headers such as `Allow` kept). JSON
/// error bodies (the handlers', a function's own) pass untouched.
pub async fn documented_shape(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    shape(next.run(req).await).await
}

/// [`documented_shape`] of one response.
pub async fn shape(resp: Response) -> Response {
    let status = resp.status();
    let json = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = match http_body_util::Limited::new(body, MAX_MESSAGE)
        .collect()
        .await
    {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    parts.headers.remove("content-type");
    parts.headers.remove("content-length");
    let mut fresh = HttpError::new(status, reason_of(status), message).into_response();
    for (k, v) in parts.headers.iter() {
        fresh.headers_mut().insert(k.clone(), v.clone());
    }
    fresh
}
