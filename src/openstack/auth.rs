//! Keystone v3: tokens (password or application credential), the service catalog, and the
//! authenticated request path every service client goes through (token refresh before
//! expiry and once on a 401, typed errors, request ids, retries only where safe).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::BackoffBuilder;
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::Instrument;

use super::config::{AuthMethod, CloudConfig, ProjectScope, Secret, UserRef};
use super::error::{ApiContext, Error, Result, parse_error_body};

/// Tuning of a [`Session`].
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Deadline of one HTTP request.
    pub request_timeout: Duration,
    /// Deadline of establishing a connection.
    pub connect_timeout: Duration,
    /// A token is replaced this long before it expires (at most half its lifetime).
    pub refresh_margin: Duration,
    /// Retries of a request that is safe to repeat (so at most `1 + max_retries` attempts).
    pub max_retries: usize,
    /// First backoff delay; doubles with jitter up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest backoff delay.
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is not waited for: the error goes to the caller.
    pub max_retry_after: Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            refresh_margin: Duration::from_secs(300),
            max_retries: 3,
            min_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// One endpoint of a catalog service.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct CatalogEndpoint {
    /// `public`, `internal` or `admin`.
    pub interface: String,
    /// Region id.
    #[serde(default)]
    pub region_id: Option<String>,
    /// Region name (older catalogs).
    #[serde(default)]
    pub region: Option<String>,
    /// Base URL.
    pub url: String,
}

/// One service of the catalog.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct CatalogService {
    /// `compute`, `image`, `network`, `identity`, ...
    #[serde(rename = "type")]
    pub service_type: String,
    /// `nova`, `glance`, ...
    #[serde(default)]
    pub name: Option<String>,
    /// Its endpoints.
    #[serde(default)]
    pub endpoints: Vec<CatalogEndpoint>,
}

/// The service catalog of a token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// The services.
    pub services: Vec<CatalogService>,
}

/// Other names a service type is known by (service-types-authority aliases).
fn type_aliases(service_type: &str) -> &'static [&'static str] {
    match service_type {
        "block-storage" => &["block-storage", "volumev3", "volumev2", "volume"],
        "compute" => &["compute"],
        "image" => &["image"],
        "network" => &["network"],
        "identity" => &["identity"],
        "placement" => &["placement"],
        _ => &[],
    }
}

impl Catalog {
    /// The URL of `service_type` at `interface` (`public`, `internal`, `admin`; `publicURL`
    /// also accepted) in `region` (any region when `None`; the first one listed wins).
    pub fn endpoint(
        &self,
        service_type: &str,
        interface: &str,
        region: Option<&str>,
    ) -> Result<Url> {
        let interface = interface.to_ascii_lowercase();
        let interface = interface.strip_suffix("url").unwrap_or(&interface);
        let aliases = type_aliases(service_type);
        let types: Vec<&str> = if aliases.is_empty() {
            vec![service_type]
        } else {
            aliases.to_vec()
        };
        for t in types {
            for svc in self.services.iter().filter(|s| s.service_type == t) {
                let found = svc.endpoints.iter().find(|e| {
                    e.interface.eq_ignore_ascii_case(interface)
                        && region.is_none_or(|r| {
                            e.region_id.as_deref() == Some(r) || e.region.as_deref() == Some(r)
                        })
                });
                if let Some(e) = found {
                    return Url::parse(&e.url).map_err(|err| {
                        Error::Config(format!(
                            "the catalog's {t} endpoint {:?} is not a URL: {err}",
                            e.url
                        ))
                    });
                }
            }
        }
        Err(Error::NoEndpoint {
            service_type: service_type.to_owned(),
            interface: interface.to_owned(),
            region: region.map(str::to_owned),
            available: self.describe(),
        })
    }

    /// `compute (public@RegionOne, ...), image (...)`, for messages.
    pub fn describe(&self) -> String {
        if self.services.is_empty() {
            return "an empty catalog: is the token scoped to a project?".into();
        }
        self.services
            .iter()
            .map(|s| {
                format!(
                    "{} ({})",
                    s.service_type,
                    s.endpoints
                        .iter()
                        .map(|e| format!(
                            "{}@{}",
                            e.interface,
                            e.region_id
                                .as_deref()
                                .or(e.region.as_deref())
                                .unwrap_or("-")
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A Keystone token and what came with it.
#[derive(Debug, Clone)]
pub struct Token {
    value: Secret,
    /// When Keystone says it expires.
    pub expires_at: DateTime<Utc>,
    /// When Keystone issued it.
    pub issued_at: Option<DateTime<Utc>>,
    /// When this client replaces it (monotonic clock: immune to wall-clock skew).
    pub refresh_at: Instant,
    /// Its catalog.
    pub catalog: Catalog,
    /// The project it is scoped to.
    pub project_id: Option<String>,
    /// The project's name.
    pub project_name: Option<String>,
    /// The user.
    pub user_id: Option<String>,
}

impl Token {
    /// Whether the token is due for replacement at `now`.
    pub fn needs_refresh(&self, now: Instant) -> bool {
        now >= self.refresh_at
    }

    /// The monotonic instant to replace a token obtained at `obtained` whose lifetime (by the
    /// issuer's clock) is `expires_at - issued_at`: `margin` before expiry, but never later
    /// than half-way through a short lifetime.
    pub fn refresh_instant(
        obtained: Instant,
        issued_at: Option<DateTime<Utc>>,
        expires_at: DateTime<Utc>,
        margin: Duration,
    ) -> Instant {
        // the issuer's own timestamps give the lifetime without trusting our wall clock;
        // without issued_at fall back to our clock
        let lifetime = match issued_at {
            Some(i) => expires_at - i,
            None => expires_at - Utc::now(),
        };
        let lifetime = lifetime.to_std().unwrap_or(Duration::ZERO);
        let margin = margin.min(lifetime / 2);
        obtained + lifetime.saturating_sub(margin)
    }
}

/// The raw answer of a successful request.
#[derive(Debug)]
pub struct Response {
    /// Status (2xx).
    pub status: StatusCode,
    /// `X-Openstack-Request-Id`.
    pub request_id: Option<String>,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: bytes::Bytes,
    pub(crate) service: &'static str,
    pub(crate) method: Method,
    pub(crate) url: Url,
}

impl Response {
    /// Decode the JSON body.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Decode {
            service: self.service.to_owned(),
            method: self.method.to_string(),
            url: self.url.to_string(),
            request_id: self.request_id.clone(),
            message: format!(
                "{e} (body: {})",
                String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
            ),
        })
    }
}

/// Whether a request may be sent again after an unclear outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// GET, DELETE, PUT of a full value: repeating it has the same effect as doing it once,
    /// so it is retried on transport errors, 5xx, 409 and rate limits.
    Idempotent,
    /// POST that creates something (a server, an image): a retry after a timeout or a 5xx may
    /// create a second one (the first may have been accepted before the answer was lost), so
    /// it is never retried except when the request provably did not reach the service
    /// (connection refused) or was refused by authentication (401, once, with a new token).
    NotIdempotent,
}

/// One request to a service.
#[derive(Debug)]
pub struct Request {
    /// Catalog service type (for messages).
    pub service: &'static str,
    /// Method.
    pub method: Method,
    /// Full URL.
    pub url: Url,
    /// JSON body.
    pub body: Option<serde_json::Value>,
    /// Extra headers (microversion).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Whether it may be repeated.
    pub idempotency: Idempotency,
}

impl Request {
    /// A request without body, its idempotency from its method.
    pub fn new(service: &'static str, method: Method, url: Url) -> Self {
        let idempotency = if matches!(
            method,
            Method::GET | Method::HEAD | Method::DELETE | Method::PUT
        ) {
            Idempotency::Idempotent
        } else {
            Idempotency::NotIdempotent
        };
        Request {
            service,
            method,
            url,
            body: None,
            headers: Vec::new(),
            idempotency,
        }
    }

    /// With a JSON body.
    pub fn json(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }

    /// With a header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// An authenticated session with one cloud: the HTTP client, the current token and its
/// catalog. Cheap to share (`Arc`); the token is fetched once at a time.
#[derive(Debug)]
pub struct Session {
    http: reqwest::Client,
    config: CloudConfig,
    options: SessionOptions,
    token: Mutex<Option<Arc<Token>>>,
    auth_count: AtomicU64,
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    [
        "x-openstack-request-id",
        "x-compute-request-id",
        "x-request-id",
    ]
    .iter()
    .find_map(|h| headers.get(*h))
    .and_then(|v| v.to_str().ok())
    .map(str::to_owned)
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs));
        }
        return None;
    }
    // HTTP-date
    let when = DateTime::parse_from_rfc2822(v).ok()?;
    (when.with_timezone(&Utc) - Utc::now())
        .to_std()
        .ok()
        .or(Some(Duration::ZERO))
}

fn transport_message(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

#[derive(Deserialize)]
struct TokenBody {
    token: TokenInner,
}

#[derive(Deserialize)]
struct TokenInner {
    expires_at: DateTime<Utc>,
    #[serde(default)]
    issued_at: Option<DateTime<Utc>>,
    #[serde(default)]
    catalog: Vec<CatalogService>,
    #[serde(default)]
    project: Option<IdName>,
    #[serde(default)]
    user: Option<IdName>,
}

#[derive(Deserialize)]
struct IdName {
    id: String,
    #[serde(default)]
    name: Option<String>,
}

fn user_json(user: &UserRef) -> serde_json::Value {
    let mut u = serde_json::Map::new();
    if let Some(id) = &user.id {
        u.insert("id".into(), json!(id));
    } else if let Some(name) = &user.name {
        u.insert("name".into(), json!(name));
        if let Some(d) = &user.domain_id {
            u.insert("domain".into(), json!({ "id": d }));
        } else if let Some(d) = &user.domain_name {
            u.insert("domain".into(), json!({ "name": d }));
        }
    }
    serde_json::Value::Object(u)
}

fn project_json(p: &ProjectScope) -> serde_json::Value {
    if let Some(id) = &p.id {
        return json!({ "project": { "id": id } });
    }
    let domain = match (&p.domain_id, &p.domain_name) {
        (Some(id), _) => json!({ "id": id }),
        (None, Some(name)) => json!({ "name": name }),
        (None, None) => json!({}),
    };
    json!({ "project": { "name": p.name, "domain": domain } })
}

/// The body of `POST /v3/auth/tokens` for these credentials.
pub fn auth_request_body(auth: &AuthMethod) -> serde_json::Value {
    match auth {
        AuthMethod::Password {
            user,
            password,
            project,
        } => {
            let mut u = user_json(user);
            if let Some(obj) = u.as_object_mut() {
                obj.insert("password".into(), json!(password.expose()));
            }
            json!({ "auth": {
                "identity": { "methods": ["password"], "password": { "user": u } },
                "scope": project_json(project),
            }})
        }
        AuthMethod::ApplicationCredential {
            id,
            name,
            secret,
            user,
        } => {
            let mut ac = serde_json::Map::new();
            if let Some(id) = id {
                ac.insert("id".into(), json!(id));
            } else {
                ac.insert("name".into(), json!(name));
                ac.insert("user".into(), user_json(user));
            }
            ac.insert("secret".into(), json!(secret.expose()));
            json!({ "auth": { "identity": {
                "methods": ["application_credential"],
                "application_credential": ac,
            }}})
        }
    }
}

impl Session {
    /// A session for `config` (no request is made until the first call).
    pub fn new(config: CloudConfig, options: SessionOptions) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .connect_timeout(options.connect_timeout)
            .user_agent(concat!("lambda-on-openstack/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.cacert {
            let pem = std::fs::read(path).map_err(|error| Error::ConfigFile {
                path: path.clone(),
                error,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Client(format!("OS_CACERT {}: {e}", path.display())))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if config.insecure {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| Error::Client(transport_message(&e)))?;
        Ok(Session {
            http,
            config,
            options,
            token: Mutex::new(None),
            auth_count: AtomicU64::new(0),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CloudConfig {
        &self.config
    }

    /// The options.
    pub fn options(&self) -> &SessionOptions {
        &self.options
    }

    /// How many tokens this session has obtained from Keystone.
    pub fn auth_count(&self) -> u64 {
        self.auth_count.load(Ordering::Relaxed)
    }

    /// The current token, fetching a new one when there is none or it is due for refresh.
    /// Concurrent callers wait for one fetch.
    pub async fn token(&self) -> Result<Arc<Token>> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref() {
            if !t.needs_refresh(Instant::now()) {
                return Ok(t.clone());
            }
            tracing::debug!(expires_at = %t.expires_at, "token due for refresh");
        }
        let t = Arc::new(self.authenticate().await?);
        *slot = Some(t.clone());
        Ok(t)
    }

    /// Drop `stale` (if it is still the current token) so that the next call re-authenticates.
    pub async fn invalidate(&self, stale: &Token) {
        let mut slot = self.token.lock().await;
        if slot.as_ref().is_some_and(|t| t.value == stale.value) {
            *slot = None;
        }
    }

    /// Revoke `token` in Keystone (`DELETE /v3/auth/tokens`). A session still holding it
    /// notices at its next request (401) and re-authenticates.
    pub async fn revoke(&self, token: &Token) -> Result<()> {
        let url = self.identity_url("auth/tokens")?;
        let value = HeaderValue::from_str(token.value.expose())
            .map_err(|e| Error::Client(format!("token is not a header value: {e}")))?;
        let resp = self
            .http
            .delete(url.clone())
            .header("X-Auth-Token", value.clone())
            .header("X-Subject-Token", value)
            .send()
            .await
            .map_err(|e| Error::Transport {
                service: "identity".into(),
                method: "DELETE".into(),
                url: url.to_string(),
                message: transport_message(&e),
                timeout: e.is_timeout(),
            })?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(self
            .error_from(resp, "identity", &Method::DELETE, &url)
            .await)
    }

    /// Forget the current token and revoke it in Keystone (on shutdown).
    pub async fn logout(&self) -> Result<()> {
        let current = self.token.lock().await.take();
        match current {
            Some(t) => self.revoke(&t).await,
            None => Ok(()),
        }
    }

    /// The URL of `service_type` from the current token's catalog, by the configured
    /// interface and region.
    pub async fn endpoint(&self, service_type: &str) -> Result<Url> {
        let t = self.token().await?;
        t.catalog.endpoint(
            service_type,
            &self.config.interface,
            self.config.region.as_deref(),
        )
    }

    fn identity_url(&self, path: &str) -> Result<Url> {
        let base = self.config.identity_v3_url()?;
        Url::parse(&format!("{base}/{path}"))
            .map_err(|e| Error::Config(format!("OS_AUTH_URL {base:?}: {e}")))
    }

    async fn authenticate(&self) -> Result<Token> {
        let url = self.identity_url("auth/tokens")?;
        let body = auth_request_body(&self.config.auth);
        let span = tracing::info_span!("keystone_auth", url = %url, source = %self.config.source);
        async {
            let mut backoff = self.backoff();
            loop {
                let obtained = Instant::now();
                let result = self
                    .http
                    .post(url.clone())
                    .json(&body)
                    .send()
                    .await;
                let resp = match result {
                    Ok(r) => r,
                    Err(e) => {
                        let err = Error::Transport {
                            service: "identity".into(),
                            method: "POST".into(),
                            url: url.to_string(),
                            message: transport_message(&e),
                            timeout: e.is_timeout(),
                        };
                        // getting a token has no side effect worth protecting: retry
                        if let Some(d) = backoff.next() {
                            tracing::warn!(error = %err, delay = ?d, "keystone unreachable, retrying");
                            tokio::time::sleep(d).await;
                            continue;
                        }
                        return Err(err);
                    }
                };
                let status = resp.status();
                if !status.is_success() {
                    let err = self.error_from(resp, "identity", &Method::POST, &url).await;
                    if matches!(err, Error::ServerError(_) | Error::OverLimit { .. }) {
                        if let Some(d) = backoff.next() {
                            tracing::warn!(error = %err, delay = ?d, "keystone failed, retrying");
                            tokio::time::sleep(d).await;
                            continue;
                        }
                    }
                    return Err(err);
                }
                let rid = request_id(resp.headers());
                let token = resp
                    .headers()
                    .get("x-subject-token")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let bytes = resp.bytes().await.map_err(|e| Error::Transport {
                    service: "identity".into(),
                    method: "POST".into(),
                    url: url.to_string(),
                    message: transport_message(&e),
                    timeout: e.is_timeout(),
                })?;
                let decode_err = |message: String| Error::Decode {
                    service: "identity".into(),
                    method: "POST".into(),
                    url: url.to_string(),
                    request_id: rid.clone(),
                    message,
                };
                let Some(value) = token else {
                    return Err(decode_err("no X-Subject-Token header".into()));
                };
                let parsed: TokenBody =
                    serde_json::from_slice(&bytes).map_err(|e| decode_err(e.to_string()))?;
                let t = parsed.token;
                let refresh_at = Token::refresh_instant(
                    obtained,
                    t.issued_at,
                    t.expires_at,
                    self.options.refresh_margin,
                );
                self.auth_count.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    expires_at = %t.expires_at,
                    project = t.project.as_ref().map(|p| p.id.as_str()).unwrap_or("-"),
                    request_id = rid.as_deref().unwrap_or("-"),
                    "got a keystone token"
                );
                return Ok(Token {
                    value: Secret::new(value),
                    expires_at: t.expires_at,
                    issued_at: t.issued_at,
                    refresh_at,
                    catalog: Catalog {
                        services: t.catalog,
                    },
                    project_name: t.project.as_ref().and_then(|p| p.name.clone()),
                    project_id: t.project.map(|p| p.id),
                    user_id: t.user.map(|u| u.id),
                });
            }
        }
        .instrument(span)
        .await
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> + use<> {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.options.min_backoff)
            .with_max_delay(self.options.max_backoff)
            .with_max_times(self.options.max_retries)
            .with_jitter()
            .build()
    }

    async fn error_from(
        &self,
        resp: reqwest::Response,
        service: &str,
        method: &Method,
        url: &Url,
    ) -> Error {
        let status = resp.status();
        let rid = request_id(resp.headers());
        let ra = retry_after(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        let (fault, message) = parse_error_body(&text);
        Error::from_response(
            ApiContext {
                service: service.to_owned(),
                method: method.to_string(),
                url: url.to_string(),
                status,
                request_id: rid,
                fault,
                message,
            },
            ra,
        )
    }

    /// Send an authenticated request: a fresh token (re-fetched once on a 401), typed errors
    /// with the request id, retries with backoff for idempotent requests (transport errors,
    /// 5xx, 409, 429/413 honouring `Retry-After`), none for the others (see [`Idempotency`]).
    pub async fn send(&self, req: Request) -> Result<Response> {
        let span = tracing::debug_span!(
            "openstack_request",
            service = req.service,
            method = %req.method,
            url = %req.url,
        );
        self.send_inner(req).instrument(span).await
    }

    async fn send_inner(&self, req: Request) -> Result<Response> {
        let mut backoff = self.backoff();
        let mut reauthed = false;
        let idempotent = req.idempotency == Idempotency::Idempotent;
        loop {
            let token = self.token().await?;
            let token_header = HeaderValue::from_str(token.value.expose())
                .map_err(|e| Error::Client(format!("token is not a header value: {e}")))?;
            let mut rb = self
                .http
                .request(req.method.clone(), req.url.clone())
                .header("X-Auth-Token", token_header)
                .header("Accept", "application/json");
            for (k, v) in &req.headers {
                rb = rb.header(k.clone(), v.clone());
            }
            if let Some(b) = &req.body {
                rb = rb.json(b);
            }
            let started = Instant::now();
            let resp = match rb.send().await {
                Ok(r) => r,
                Err(e) => {
                    let err = Error::Transport {
                        service: req.service.to_owned(),
                        method: req.method.to_string(),
                        url: req.url.to_string(),
                        message: transport_message(&e),
                        timeout: e.is_timeout(),
                    };
                    // a refused connection never reached the service: safe for any request
                    let safe = idempotent || (e.is_connect() && !e.is_timeout());
                    if safe {
                        if let Some(d) = backoff.next() {
                            tracing::warn!(error = %err, delay = ?d, "request failed, retrying");
                            tokio::time::sleep(d).await;
                            continue;
                        }
                    }
                    return Err(err);
                }
            };
            let status = resp.status();
            let rid = request_id(resp.headers());
            tracing::debug!(
                status = status.as_u16(),
                request_id = rid.as_deref().unwrap_or("-"),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "openstack answered"
            );
            if status == StatusCode::UNAUTHORIZED && !reauthed {
                // keystonemiddleware refuses before the request reaches the service: safe to
                // repeat once with a new token (revoked or expired early)
                tracing::info!(
                    request_id = rid.as_deref().unwrap_or("-"),
                    "401: token refused, re-authenticating once"
                );
                self.invalidate(&token).await;
                reauthed = true;
                continue;
            }
            if status.is_success() {
                let headers = resp.headers().clone();
                let body = resp.bytes().await.map_err(|e| Error::Transport {
                    service: req.service.to_owned(),
                    method: req.method.to_string(),
                    url: req.url.to_string(),
                    message: transport_message(&e),
                    timeout: e.is_timeout(),
                })?;
                return Ok(Response {
                    status,
                    request_id: rid,
                    headers,
                    body,
                    service: req.service,
                    method: req.method,
                    url: req.url,
                });
            }
            let err = self
                .error_from(resp, req.service, &req.method, &req.url)
                .await;
            let retryable = idempotent
                && matches!(
                    err,
                    Error::ServerError(_) | Error::Conflict(_) | Error::OverLimit { .. }
                )
                && status != StatusCode::NOT_IMPLEMENTED;
            if retryable {
                let hinted = match &err {
                    Error::OverLimit { retry_after, .. } => *retry_after,
                    _ => None,
                };
                if let Some(d) = backoff.next() {
                    let d = hinted.unwrap_or(d);
                    if d <= self.options.max_retry_after {
                        tracing::warn!(error = %err, delay = ?d, "retrying");
                        tokio::time::sleep(d).await;
                        continue;
                    }
                }
            }
            tracing::debug!(error = %err, "request failed");
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        let v = json!([
            {"type": "compute", "name": "nova", "endpoints": [
                {"interface": "public", "region_id": "RegionOne", "region": "RegionOne", "url": "http://nova-one/v2.1"},
                {"interface": "internal", "region_id": "RegionOne", "region": "RegionOne", "url": "http://nova-one-int/v2.1"},
                {"interface": "public", "region_id": "RegionTwo", "region": "RegionTwo", "url": "http://nova-two/v2.1"}
            ]},
            {"type": "volumev3", "endpoints": [
                {"interface": "public", "region_id": "RegionOne", "url": "http://cinder/v3"}
            ]},
            {"type": "image", "endpoints": [
                {"interface": "public", "region": "RegionOne", "url": "http://glance"}
            ]}
        ]);
        Catalog {
            services: serde_json::from_value(v).unwrap(),
        }
    }

    #[test]
    fn catalog_selection_by_type_interface_region() {
        let c = catalog();
        let u = |t, i, r| c.endpoint(t, i, r).map(|u| u.to_string());
        assert_eq!(
            u("compute", "public", Some("RegionOne")).unwrap(),
            "http://nova-one/v2.1"
        );
        assert_eq!(
            u("compute", "publicURL", Some("RegionTwo")).unwrap(),
            "http://nova-two/v2.1"
        );
        assert_eq!(
            u("compute", "internal", None).unwrap(),
            "http://nova-one-int/v2.1"
        );
        assert_eq!(
            u("compute", "public", None).unwrap(),
            "http://nova-one/v2.1"
        );
        assert_eq!(
            u("image", "public", Some("RegionOne")).unwrap(),
            "http://glance/"
        );
        assert_eq!(
            u("block-storage", "public", None).unwrap(),
            "http://cinder/v3"
        );
        let e = c
            .endpoint("compute", "admin", Some("RegionOne"))
            .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::NoEndpoint { .. }));
        assert!(
            msg.contains("compute (public@RegionOne, internal@RegionOne, public@RegionTwo)"),
            "{msg}"
        );
        let e = c
            .endpoint("network", "public", Some("RegionThree"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"network\"") && e.contains("RegionThree"),
            "{e}"
        );
        assert!(
            Catalog::default()
                .endpoint("compute", "public", None)
                .unwrap_err()
                .to_string()
                .contains("scoped")
        );
    }

    #[test]
    fn auth_bodies() {
        let b = auth_request_body(&AuthMethod::Password {
            user: UserRef {
                name: Some("u".into()),
                domain_name: Some("Default".into()),
                ..Default::default()
            },
            password: Secret::new("pw"),
            project: ProjectScope {
                name: Some("p".into()),
                domain_id: Some("default".into()),
                ..Default::default()
            },
        });
        assert_eq!(
            b,
            json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
                "name": "u", "domain": {"name": "Default"}, "password": "pw"}}},
                "scope": {"project": {"name": "p", "domain": {"id": "default"}}}}})
        );
        let b = auth_request_body(&AuthMethod::ApplicationCredential {
            id: Some("ac".into()),
            name: None,
            secret: Secret::new("s"),
            user: UserRef::default(),
        });
        assert_eq!(
            b,
            json!({"auth": {"identity": {"methods": ["application_credential"],
                "application_credential": {"id": "ac", "secret": "s"}}}})
        );
    }

    #[test]
    fn cacert_is_read_and_checked() {
        let mut config = CloudConfig::from_vars(
            &|k| match k {
                "OS_AUTH_URL" => Some("https://k:5000".into()),
                "OS_APPLICATION_CREDENTIAL_ID" => Some("id".into()),
                "OS_APPLICATION_CREDENTIAL_SECRET" => Some("s".into()),
                _ => None,
            },
            "test",
        )
        .unwrap();
        config.cacert = Some("/nonexistent/ca.pem".into());
        let e = Session::new(config.clone(), SessionOptions::default()).unwrap_err();
        assert!(matches!(e, Error::ConfigFile { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        config.cacert = Some(bad);
        let e = Session::new(config, SessionOptions::default()).unwrap_err();
        assert!(e.to_string().contains("OS_CACERT"), "{e}");
    }

    #[test]
    fn retry_after_header() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[tokio::test(start_paused = true)]
    async fn token_refreshes_before_expiry_by_the_issuers_clock() {
        // a 1 h token issued "in 2020" by a server whose clock is off: only the lifetime counts
        let issued: DateTime<Utc> = "2020-01-01T00:00:00Z".parse().unwrap();
        let expires = issued + chrono::Duration::hours(1);
        let obtained = Instant::now();
        let at = Token::refresh_instant(obtained, Some(issued), expires, Duration::from_secs(300));
        let token = Token {
            value: Secret::new("t"),
            expires_at: expires,
            issued_at: Some(issued),
            refresh_at: at,
            catalog: Catalog::default(),
            project_id: None,
            project_name: None,
            user_id: None,
        };
        assert!(!token.needs_refresh(Instant::now()));
        tokio::time::advance(Duration::from_secs(54 * 60)).await;
        assert!(!token.needs_refresh(Instant::now()));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(token.needs_refresh(Instant::now()));
        // a short-lived token is refreshed half-way, not immediately
        let at = Token::refresh_instant(
            Instant::now(),
            Some(issued),
            issued + chrono::Duration::seconds(60),
            Duration::from_secs(300),
        );
        assert_eq!(at - Instant::now(), Duration::from_secs(30));
    }
}
