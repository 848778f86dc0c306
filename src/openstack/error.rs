//! Errors of the OpenStack client: one enum for the whole module, with the request's context
//! (service, method, URL, status, request id, the service's own message) on every API error.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;

/// Result of the OpenStack client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What was asked of which service, and what it answered: carried by every API error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiContext {
    /// Catalog service type (`compute`, `image`, `network`, `identity`).
    pub service: String,
    /// HTTP method of the request.
    pub method: String,
    /// URL of the request (never carries credentials: they travel in headers and bodies).
    pub url: String,
    /// HTTP status of the answer.
    pub status: StatusCode,
    /// `X-Openstack-Request-Id` (or `X-Compute-Request-Id`) of the answer, when there was one.
    pub request_id: Option<String>,
    /// The fault's name in the body (`itemNotFound`, `badRequest`, `NetworkNotFound`,
    /// Keystone's title, ...), when the body named one.
    pub fault: Option<String>,
    /// The service's message, taken from its error body (JSON, plain text or HTML).
    pub message: String,
}

impl fmt::Display for ApiContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}: {}",
            self.service, self.method, self.url, self.status
        )?;
        if let Some(fault) = &self.fault {
            write!(f, " ({fault})")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        match &self.request_id {
            Some(id) => write!(f, " [request id {id}]"),
            None => write!(f, " [no request id]"),
        }
    }
}

/// Everything that can go wrong talking to OpenStack.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration (openrc variables, clouds.yaml) is incomplete or contradictory.
    #[error("OpenStack configuration: {0}")]
    Config(String),
    /// A configuration file could not be read.
    #[error("OpenStack configuration: cannot read {path}: {error}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A clouds.yaml could not be parsed.
    #[error("OpenStack configuration: {path}: {message}")]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// The HTTP client could not be built (bad CA certificate, ...).
    #[error("OpenStack HTTP client: {0}")]
    Client(String),
    /// The request never got an answer: connection refused, reset, timed out, TLS failure.
    #[error("{service} {method} {url}: {message}")]
    Transport {
        /// Catalog service type.
        service: String,
        /// HTTP method.
        method: String,
        /// URL.
        url: String,
        /// What the transport said (with its causes).
        message: String,
        /// Whether it timed out.
        timeout: bool,
    },
    /// 400: the service rejected the request as malformed or invalid.
    #[error("bad request: {0}")]
    BadRequest(Box<ApiContext>),
    /// 401: the credentials (or a re-issued token) were refused.
    #[error("unauthorized: {0}")]
    Unauthorized(Box<ApiContext>),
    /// 403 that is not about quota: policy forbids it.
    #[error("forbidden: {0}")]
    Forbidden(Box<ApiContext>),
    /// 403 or 413 saying "Quota exceeded": the project is out of quota (not a rate limit;
    /// retrying does not help until something is freed or the quota raised).
    #[error("quota exceeded: {0}")]
    QuotaExceeded(Box<ApiContext>),
    /// 404: the resource (or the URL) does not exist.
    #[error("not found: {0}")]
    NotFound(Box<ApiContext>),
    /// 409: conflicts with the resource's state (e.g. a task in progress) or a duplicate name.
    #[error("conflict: {0}")]
    Conflict(Box<ApiContext>),
    /// 413/429 rate limit: try again later, after `retry_after` when the service said.
    #[error("over limit{}: {ctx}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    OverLimit {
        /// The request and answer.
        ctx: Box<ApiContext>,
        /// The `Retry-After` header, when there was one.
        retry_after: Option<Duration>,
    },
    /// 5xx: the service failed.
    #[error("server error: {0}")]
    ServerError(Box<ApiContext>),
    /// Any other unexpected status (406 microversion not acceptable, 415, ...).
    #[error("unexpected answer: {0}")]
    Unexpected(Box<ApiContext>),
    /// A success answer whose body did not have the documented shape.
    #[error("{service} {method} {url}: cannot decode the answer{}: {message}", request_id.as_deref().map(|r| format!(" [request id {r}]")).unwrap_or_default())]
    Decode {
        /// Catalog service type.
        service: String,
        /// HTTP method.
        method: String,
        /// URL.
        url: String,
        /// Request id of the answer.
        request_id: Option<String>,
        /// What did not fit.
        message: String,
    },
    /// The catalog has no endpoint for this service type, interface and region.
    #[error(
        "no {interface} endpoint for service type {service_type:?}{} in the catalog (it has: {available})",
        region.as_deref().map(|r| format!(" in region {r:?}")).unwrap_or_default()
    )]
    NoEndpoint {
        /// Service type asked for.
        service_type: String,
        /// Interface asked for.
        interface: String,
        /// Region asked for.
        region: Option<String>,
        /// What the catalog offers, for the message.
        available: String,
    },
    /// The compute API is too old for the microversion this client needs.
    #[error(
        "the compute API at {url} supports microversions {min}..={max}, but this client needs {wanted}: the cloud is too old (Nova must support compute microversion {wanted})"
    )]
    MicroversionUnsupported {
        /// Compute endpoint.
        url: String,
        /// The pinned microversion.
        wanted: String,
        /// Lowest supported by the server.
        min: String,
        /// Highest supported by the server (empty: microversions unsupported).
        max: String,
    },
    /// A lookup by name or id found nothing.
    #[error("{resource} {name:?} not found (neither as id nor as name)")]
    NoSuchResource {
        /// What was looked up (`flavor`, `image`, ...).
        resource: &'static str,
        /// The name or id.
        name: String,
    },
    /// A lookup by name found several resources.
    #[error("{resource} name {name:?} is ambiguous: {} match ({})", ids.len(), ids.join(", "))]
    Ambiguous {
        /// What was looked up.
        resource: &'static str,
        /// The name.
        name: String,
        /// The ids that matched.
        ids: Vec<String>,
    },
    /// Waiting for a state took too long.
    #[error("timed out after {waited:?} waiting for {what} (last seen: {last})")]
    WaitTimeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
        /// The last observed state.
        last: String,
    },
    /// A resource reached a failure state while being waited for.
    #[error("{what} failed: {message}")]
    Failed {
        /// What failed.
        what: String,
        /// Status and fault.
        message: String,
    },
}

impl Error {
    /// The API context when the error is an answer from a service.
    pub fn api_context(&self) -> Option<&ApiContext> {
        match self {
            Error::BadRequest(c)
            | Error::Unauthorized(c)
            | Error::Forbidden(c)
            | Error::QuotaExceeded(c)
            | Error::NotFound(c)
            | Error::Conflict(c)
            | Error::ServerError(c)
            | Error::Unexpected(c) => Some(c),
            Error::OverLimit { ctx, .. } => Some(ctx),
            _ => None,
        }
    }

    /// The `X-Openstack-Request-Id` of the failed answer, when there was one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Decode { request_id, .. } => request_id.as_deref(),
            _ => self.api_context().and_then(|c| c.request_id.as_deref()),
        }
    }

    /// The HTTP status of the failed answer.
    pub fn status(&self) -> Option<StatusCode> {
        self.api_context().map(|c| c.status)
    }

    /// A 404 from the service.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }

    /// Whether trying the same request again later may succeed (rate limits, 409 state
    /// conflicts, 5xx, transport failures). Says nothing about whether it is *safe* to repeat.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::OverLimit { .. }
                | Error::Conflict(_)
                | Error::ServerError(_)
                | Error::Transport { .. }
        )
    }

    /// Build the typed error for a non-success answer.
    pub(crate) fn from_response(ctx: ApiContext, retry_after: Option<Duration>) -> Error {
        let quota = ctx.message.to_ascii_lowercase().contains("quota exceeded")
            || ctx.message.to_ascii_lowercase().contains("quota_exceeded");
        let ctx = Box::new(ctx);
        match ctx.status.as_u16() {
            400 => Error::BadRequest(ctx),
            401 => Error::Unauthorized(ctx),
            403 | 413 if quota => Error::QuotaExceeded(ctx),
            403 => Error::Forbidden(ctx),
            404 => Error::NotFound(ctx),
            409 => Error::Conflict(ctx),
            413 | 429 => Error::OverLimit { ctx, retry_after },
            500..=599 => Error::ServerError(ctx),
            _ => Error::Unexpected(ctx),
        }
    }
}

/// The fault name and message of an error body, whatever service and shape it came in:
/// Nova `{"itemNotFound": {"code": 404, "message": "..."}}`, Keystone
/// `{"error": {"code": 401, "title": "Unauthorized", "message": "..."}}`, Neutron
/// `{"NeutronError": {"type": "NetworkNotFound", "message": "..."}}`, Placement
/// `{"errors": [{"title": ..., "detail": ...}]}`, or Glance's and webob's plain text / HTML.
pub fn parse_error_body(body: &str) -> (Option<String>, String) {
    let trimmed = body.trim();
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(trimmed) {
        if let Some((fault, message)) = parse_json_error(&map) {
            // glance/webob put the HTML of their text pages into JSON messages
            let message = if message.contains('<') && message.contains('>') {
                strip_html(&message)
            } else {
                message.trim().to_owned()
            };
            return (fault, truncate(&message));
        }
        return (None, truncate(trimmed));
    }
    (None, truncate(&strip_html(trimmed)))
}

fn str_field<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    v.get(key)
        .and_then(|x| x.as_str())
        .filter(|s| !s.is_empty())
}

fn parse_json_error(
    map: &serde_json::Map<String, serde_json::Value>,
) -> Option<(Option<String>, String)> {
    // Keystone: {"error": {"code", "title", "message"}}
    if let Some(err) = map.get("error").filter(|v| v.is_object()) {
        let title = str_field(err, "title").map(str::to_owned);
        let msg = str_field(err, "message").unwrap_or_default().to_owned();
        return Some((title, msg));
    }
    // Neutron: {"NeutronError": {"type", "message", "detail"}}
    if let Some(err) = map.get("NeutronError") {
        if let Some(s) = err.as_str() {
            return Some((Some("NeutronError".into()), s.to_owned()));
        }
        let ty = str_field(err, "type").map(str::to_owned);
        let mut msg = str_field(err, "message").unwrap_or_default().to_owned();
        if let Some(detail) = str_field(err, "detail") {
            msg = format!("{msg} ({detail})");
        }
        return Some((ty.or(Some("NeutronError".into())), msg));
    }
    // Placement and newer APIs: {"errors": [{"title", "detail", "code"}]}
    if let Some(errs) = map.get("errors").and_then(|v| v.as_array()) {
        let first = errs.first()?;
        let title = str_field(first, "code")
            .or_else(|| str_field(first, "title"))
            .map(str::to_owned);
        let msg = str_field(first, "detail")
            .or_else(|| str_field(first, "title"))
            .unwrap_or_default()
            .to_owned();
        return Some((title, msg));
    }
    // Nova: exactly one key, the fault name, whose value has a message.
    if map.len() == 1 {
        let (name, v) = map.iter().next()?;
        if let Some(msg) = str_field(v, "message") {
            return Some((Some(name.clone()), msg.to_owned()));
        }
        if v.is_object() {
            return Some((Some(name.clone()), String::new()));
        }
    }
    // {"message": "..."} or {"title": ..., "description": ...} (glance / webob JSON faults)
    if let Some(msg) = map
        .get("message")
        .and_then(|m| m.as_str())
        .or_else(|| map.get("description").and_then(|m| m.as_str()))
    {
        return Some((
            map.get("title").and_then(|t| t.as_str()).map(str::to_owned),
            msg.to_owned(),
        ));
    }
    None
}

/// Text of an HTML error page: tags removed, the heading that repeats the title dropped,
/// whitespace collapsed.
fn strip_html(s: &str) -> String {
    if !s.contains('<') {
        return drop_status_line(collapse(s));
    }
    // drop <head>...</head> (the title repeats the status line)
    let lower = s.to_ascii_lowercase();
    let mut body = s.to_owned();
    if let (Some(a), Some(b)) = (lower.find("<head"), lower.find("</head>")) {
        if a < b {
            body = format!("{}{}", &s[..a], &s[b + "</head>".len()..]);
        }
    }
    let mut out = String::with_capacity(body.len());
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    drop_status_line(collapse(&out))
}

/// "404 Not Found No image found with ID x" -> "No image found with ID x".
fn drop_status_line(text: String) -> String {
    // "404 Not Found No image found with ID x" -> drop the leading status line when the
    // page repeats it in an <h1>
    let mut words = text.splitn(2, ' ');
    match (words.next(), words.next()) {
        (Some(code), Some(rest)) if code.len() == 3 && code.chars().all(|c| c.is_ascii_digit()) => {
            // rest = "Not Found No image found ..." — strip the reason phrase if present
            let reason = StatusCode::from_bytes(code.as_bytes())
                .ok()
                .and_then(|s| s.canonical_reason());
            match reason.and_then(|r| rest.strip_prefix(r)) {
                Some(tail) if !tail.trim().is_empty() => tail.trim().to_owned(),
                _ => text,
            }
        }
        _ => text,
    }
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn truncate(s: &str) -> String {
    const MAX: usize = 2000;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(status: u16, body: &str) -> ApiContext {
        let (fault, message) = parse_error_body(body);
        ApiContext {
            service: "compute".into(),
            method: "GET".into(),
            url: "http://nova/v2.1/servers/x".into(),
            status: StatusCode::from_u16(status).unwrap(),
            request_id: Some("req-1".into()),
            fault,
            message,
        }
    }

    #[test]
    fn nova_item_not_found() {
        let e = Error::from_response(
            ctx(
                404,
                r#"{"itemNotFound": {"code": 404, "message": "Instance x could not be found."}}"#,
            ),
            None,
        );
        assert!(e.is_not_found());
        let c = e.api_context().unwrap();
        assert_eq!(c.fault.as_deref(), Some("itemNotFound"));
        assert_eq!(c.message, "Instance x could not be found.");
        assert_eq!(e.request_id(), Some("req-1"));
        let s = e.to_string();
        assert!(
            s.contains("itemNotFound") && s.contains("req-1") && s.contains("404"),
            "{s}"
        );
    }

    #[test]
    fn nova_quota_exceeded_is_forbidden_with_quota_message() {
        let body = r#"{"forbidden": {"code": 403, "message": "Quota exceeded for instances: Requested 1, but already used 1 of 1 instances"}}"#;
        let e = Error::from_response(ctx(403, body), None);
        assert!(matches!(e, Error::QuotaExceeded(_)), "{e:?}");
        let e = Error::from_response(
            ctx(
                403,
                r#"{"forbidden": {"code": 403, "message": "Policy doesn't allow os_compute_api:servers:create to be performed."}}"#,
            ),
            None,
        );
        assert!(matches!(e, Error::Forbidden(_)), "{e:?}");
    }

    #[test]
    fn nova_over_limit_with_retry_after() {
        let body = r#"{"overLimit": {"code": 413, "message": "This request was rate-limited.", "retryAfter": "7"}}"#;
        let e = Error::from_response(ctx(413, body), Some(Duration::from_secs(7)));
        match &e {
            Error::OverLimit { ctx, retry_after } => {
                assert_eq!(*retry_after, Some(Duration::from_secs(7)));
                assert_eq!(ctx.fault.as_deref(), Some("overLimit"));
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("retry after 7s"));
        // old Nova: quota exceeded as 413 overLimit
        let e = Error::from_response(
            ctx(
                413,
                r#"{"overLimit": {"code": 413, "message": "Quota exceeded for cores"}}"#,
            ),
            None,
        );
        assert!(matches!(e, Error::QuotaExceeded(_)));
        assert!(matches!(
            Error::from_response(ctx(429, "Too Many Requests"), None),
            Error::OverLimit {
                retry_after: None,
                ..
            }
        ));
    }

    #[test]
    fn nova_bad_request_conflict_server_error() {
        let e = Error::from_response(
            ctx(
                400,
                r#"{"badRequest": {"code": 400, "message": "Invalid key_name provided."}}"#,
            ),
            None,
        );
        assert!(matches!(e, Error::BadRequest(_)));
        let e = Error::from_response(
            ctx(
                409,
                r#"{"conflictingRequest": {"code": 409, "message": "Cannot 'createImage' instance x while it is in task_state image_snapshot"}}"#,
            ),
            None,
        );
        assert!(matches!(e, Error::Conflict(_)));
        assert!(e.is_transient());
        let e = Error::from_response(
            ctx(
                500,
                r#"{"computeFault": {"code": 500, "message": "Unexpected API Error."}}"#,
            ),
            None,
        );
        assert!(matches!(e, Error::ServerError(_)));
        assert_eq!(
            e.api_context().unwrap().fault.as_deref(),
            Some("computeFault")
        );
        let e = Error::from_response(
            ctx(
                406,
                r#"{"computeFault": {"code": 406, "message": "Version 2.99 is not supported by the API. Minimum is 2.1 and maximum is 2.93."}}"#,
            ),
            None,
        );
        assert!(matches!(e, Error::Unexpected(_)));
    }

    #[test]
    fn keystone_error() {
        let (fault, msg) = parse_error_body(
            r#"{"error":{"code":401,"message":"The request you have made requires authentication.","title":"Unauthorized"}}"#,
        );
        assert_eq!(fault.as_deref(), Some("Unauthorized"));
        assert_eq!(msg, "The request you have made requires authentication.");
    }

    #[test]
    fn neutron_error() {
        let (fault, msg) = parse_error_body(
            r#"{"NeutronError": {"type": "NetworkNotFound", "message": "Network x could not be found.", "detail": ""}}"#,
        );
        assert_eq!(fault.as_deref(), Some("NetworkNotFound"));
        assert_eq!(msg, "Network x could not be found.");
    }

    #[test]
    fn placement_errors() {
        let (fault, msg) = parse_error_body(
            r#"{"errors": [{"status": 404, "title": "Not Found", "detail": "No resource provider with uuid x found", "request_id": "req-2"}]}"#,
        );
        assert_eq!(fault.as_deref(), Some("Not Found"));
        assert_eq!(msg, "No resource provider with uuid x found");
    }

    #[test]
    fn glance_html_and_plain_text() {
        let html = "<html>\n <head>\n  <title>404 Not Found</title>\n </head>\n <body>\n  <h1>404 Not Found</h1>\n  No image found with ID 1234<br /><br />\n\n\n\n </body>\n</html>";
        let (fault, msg) = parse_error_body(html);
        assert_eq!(fault, None);
        assert_eq!(msg, "No image found with ID 1234");
        let (_, msg) = parse_error_body("400 Bad Request\n\nInvalid filter value\n\n   ");
        assert_eq!(msg, "Invalid filter value");
        let (_, msg) = parse_error_body("something broke");
        assert_eq!(msg, "something broke");
        let (_, msg) = parse_error_body("");
        assert_eq!(msg, "");
    }

    #[test]
    fn glance_json_with_html_message() {
        let (fault, msg) = parse_error_body(
            r#"{"message": "No image found with ID 0000<br /><br />\n\n\n", "code": "404 Not Found", "title": "Not Found"}"#,
        );
        assert_eq!(fault.as_deref(), Some("Not Found"));
        assert_eq!(msg, "No image found with ID 0000");
    }

    #[test]
    fn unknown_json_is_kept_verbatim_and_long_bodies_truncated() {
        let (fault, msg) = parse_error_body(r#"{"a": 1, "b": 2}"#);
        assert_eq!(fault, None);
        assert_eq!(msg, r#"{"a": 1, "b": 2}"#);
        let long = "x".repeat(5000);
        let (_, msg) = parse_error_body(&long);
        assert!(msg.len() < 2100);
    }
}
