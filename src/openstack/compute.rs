//! Nova: a pinned compute microversion, flavors, key pairs, availability zones, servers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::{Idempotency, Request, Session};
use super::error::{Error, Result};

/// The compute microversion every request is pinned to. 2.52 is the lowest that has
/// everything this client uses: `"networks": "none"` (2.37), `createImage` answering with the
/// image id (2.45), the flavor embedded in a server (2.47), tags given at create (2.52; the
/// `tags` list filter is 2.26). Any Nova since Queens (2018) supports it.
pub const COMPUTE_MICROVERSION: &str = "2.52";

/// The `OpenStack-API-Version` header value of [`COMPUTE_MICROVERSION`].
const COMPUTE_API_VERSION_HEADER: &str = "compute 2.52";

/// A `major.minor` microversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Microversion(pub u32, pub u32);

impl Microversion {
    /// Parse `2.52`; `""` (a server without microversions) is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        let (a, b) = s.trim().split_once('.')?;
        Some(Microversion(a.parse().ok()?, b.parse().ok()?))
    }
}

impl std::fmt::Display for Microversion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// A version of the compute API from its version document.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ApiVersion {
    /// `v2.1`.
    pub id: String,
    /// `CURRENT`, `SUPPORTED`, `DEPRECATED`.
    #[serde(default)]
    pub status: String,
    /// Highest microversion (empty for v2.0).
    #[serde(default)]
    pub version: String,
    /// Lowest microversion.
    #[serde(default)]
    pub min_version: String,
}

#[derive(Deserialize)]
struct VersionDoc {
    #[serde(default)]
    version: Option<ApiVersion>,
    #[serde(default)]
    versions: Option<Vec<ApiVersion>>,
}

/// Check that the version document `body` (of `GET <compute endpoint>`) supports `wanted`.
pub fn check_microversion(url: &str, body: &serde_json::Value, wanted: &str) -> Result<ApiVersion> {
    let decode = |m: String| Error::Decode {
        service: "compute".into(),
        method: "GET".into(),
        url: url.to_owned(),
        request_id: None,
        message: m,
    };
    let doc: VersionDoc = serde_json::from_value(body.clone())
        .map_err(|e| decode(format!("version document: {e}")))?;
    let v = match (doc.version, doc.versions) {
        (Some(v), _) => v,
        (None, Some(vs)) => vs
            .into_iter()
            .find(|v| v.id == "v2.1")
            .ok_or_else(|| decode("the version document lists no v2.1 API".into()))?,
        (None, None) => return Err(decode("no version in the version document".into())),
    };
    let want = Microversion::parse(wanted)
        .ok_or_else(|| Error::Config(format!("bad compute microversion {wanted:?}")))?;
    let (min, max) = (
        Microversion::parse(&v.min_version),
        Microversion::parse(&v.version),
    );
    match (min, max) {
        (Some(min), Some(max)) if min <= want && want <= max => Ok(v),
        _ => Err(Error::MicroversionUnsupported {
            url: url.to_owned(),
            wanted: wanted.to_owned(),
            min: v.min_version.clone(),
            max: v.version.clone(),
        }),
    }
}

/// The absolute limits of a project (`GET /limits`); a maximum of `-1` is unlimited.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AbsoluteLimits {
    #[serde(default = "unlimited")]
    pub max_total_instances: i64,
    #[serde(default)]
    pub total_instances_used: i64,
    #[serde(default = "unlimited")]
    pub max_total_cores: i64,
    #[serde(default)]
    pub total_cores_used: i64,
    #[serde(default = "unlimited", rename = "maxTotalRAMSize")]
    pub max_total_ram_size: i64,
    #[serde(default, rename = "totalRAMUsed")]
    pub total_ram_used: i64,
}

fn unlimited() -> i64 {
    -1
}

impl AbsoluteLimits {
    /// What is left of a maximum: `None` when unlimited (negative), else never below 0.
    pub fn left(max: i64, used: i64) -> Option<u64> {
        (max >= 0).then(|| (max - used).max(0) as u64)
    }
}

/// A flavor.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Flavor {
    /// Id (any string, often a number).
    pub id: String,
    /// Name.
    pub name: String,
    /// vCPUs.
    #[serde(default)]
    pub vcpus: u32,
    /// RAM in MiB.
    #[serde(default)]
    pub ram: u64,
    /// Root disk in GiB.
    #[serde(default)]
    pub disk: u64,
    /// Ephemeral disk in GiB.
    #[serde(default, rename = "OS-FLV-EXT-DATA:ephemeral")]
    pub ephemeral: u64,
    /// Public or project-private.
    #[serde(default = "yes", rename = "os-flavor-access:is_public")]
    pub is_public: bool,
}

fn yes() -> bool {
    true
}

/// A key pair (`public_key` and `fingerprint`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct KeyPair {
    /// Name (key pairs are identified by name, per user).
    pub name: String,
    /// Fingerprint.
    #[serde(default)]
    pub fingerprint: String,
    /// The public key.
    #[serde(default)]
    pub public_key: String,
    /// `ssh` or `x509`.
    #[serde(default, rename = "type")]
    pub key_type: Option<String>,
}

/// An availability zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AvailabilityZone {
    /// Name.
    pub name: String,
    /// Whether it is available.
    pub available: bool,
}

/// A server's status (`status` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum ServerStatus {
    Active,
    Build,
    Deleted,
    Error,
    HardReboot,
    Migrating,
    Password,
    Paused,
    Reboot,
    Rebuild,
    Rescue,
    Resize,
    RevertResize,
    Shelved,
    ShelvedOffloaded,
    Shutoff,
    SoftDeleted,
    Suspended,
    Unknown,
    VerifyResize,
    /// Anything newer.
    #[serde(other)]
    Other,
}

/// A server's fault (when in ERROR).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Fault {
    /// HTTP-like code.
    #[serde(default)]
    pub code: u16,
    /// Message.
    #[serde(default)]
    pub message: String,
    /// Details (traceback for admins).
    #[serde(default)]
    pub details: Option<String>,
}

/// One address of a server.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Address {
    /// The IP address.
    pub addr: String,
    /// 4 or 6.
    #[serde(default)]
    pub version: u8,
    /// `fixed` or `floating`.
    #[serde(default, rename = "OS-EXT-IPS:type")]
    pub kind: Option<String>,
    /// MAC address.
    #[serde(default, rename = "OS-EXT-IPS-MAC:mac_addr")]
    pub mac: Option<String>,
}

/// A server (microversion 2.52 shape; unknown fields ignored).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Server {
    /// Id (uuid).
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Status.
    pub status: ServerStatus,
    /// Metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Addresses by network name.
    #[serde(default)]
    pub addresses: BTreeMap<String, Vec<Address>>,
    /// `{"id": ...}`, or `""` when booted from a volume.
    #[serde(default)]
    pub image: serde_json::Value,
    /// The embedded flavor (`original_name`, `vcpus`, `ram`, ...).
    #[serde(default)]
    pub flavor: serde_json::Value,
    /// Key pair name.
    #[serde(default)]
    pub key_name: Option<String>,
    /// Availability zone.
    #[serde(default, rename = "OS-EXT-AZ:availability_zone")]
    pub availability_zone: Option<String>,
    /// Task state (`spawning`, `image_snapshot`, ...), `None` when idle.
    #[serde(default, rename = "OS-EXT-STS:task_state")]
    pub task_state: Option<String>,
    /// VM state.
    #[serde(default, rename = "OS-EXT-STS:vm_state")]
    pub vm_state: Option<String>,
    /// Power state (1 running).
    #[serde(default, rename = "OS-EXT-STS:power_state")]
    pub power_state: Option<i64>,
    /// The fault, in ERROR.
    #[serde(default)]
    pub fault: Option<Fault>,
    /// The user data as stored (base64); shown to admins only.
    #[serde(default, rename = "OS-EXT-SRV-ATTR:user_data")]
    pub user_data: Option<String>,
    /// Security groups (names).
    #[serde(default)]
    pub security_groups: Vec<NamedRef>,
    /// Owner user.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Owner project.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Created (ISO 8601).
    #[serde(default)]
    pub created: Option<String>,
    /// Updated.
    #[serde(default)]
    pub updated: Option<String>,
}

impl Server {
    /// The image id it was booted from.
    pub fn image_id(&self) -> Option<&str> {
        self.image.get("id").and_then(|v| v.as_str())
    }
    /// The name of its flavor.
    pub fn flavor_name(&self) -> Option<&str> {
        self.flavor.get("original_name").and_then(|v| v.as_str())
    }
}

/// `{"name": ...}`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct NamedRef {
    /// Name.
    pub name: String,
}

/// Which networks a new server gets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Networks {
    /// `"none"`: no network at all.
    #[default]
    None,
    /// `"auto"`: let Nova pick or allocate one.
    Auto,
    /// These networks (uuids), one port each.
    Uuids(Vec<String>),
}

/// A server to create, everything already resolved to ids (see
/// [`super::OpenStack::create_server`] for names).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateServer {
    /// Name.
    pub name: String,
    /// Flavor id.
    pub flavor_id: String,
    /// Image id.
    pub image_id: String,
    /// Networks.
    pub networks: Networks,
    /// Key pair name.
    pub key_name: Option<String>,
    /// Security group names (or ids).
    pub security_groups: Vec<String>,
    /// Availability zone.
    pub availability_zone: Option<String>,
    /// User data (cloud-init), raw: sent base64-encoded.
    pub user_data: Option<Vec<u8>>,
    /// Metadata (at most 255 characters per key and value).
    pub metadata: BTreeMap<String, String>,
    /// Tags.
    pub tags: Vec<String>,
}

impl CreateServer {
    /// The `POST /servers` body.
    pub fn body(&self) -> serde_json::Value {
        let mut s = serde_json::Map::new();
        s.insert("name".into(), json!(self.name));
        s.insert("flavorRef".into(), json!(self.flavor_id));
        s.insert("imageRef".into(), json!(self.image_id));
        s.insert(
            "networks".into(),
            match &self.networks {
                Networks::None => json!("none"),
                Networks::Auto => json!("auto"),
                Networks::Uuids(ids) => {
                    json!(ids.iter().map(|u| json!({ "uuid": u })).collect::<Vec<_>>())
                }
            },
        );
        if let Some(k) = &self.key_name {
            s.insert("key_name".into(), json!(k));
        }
        if !self.security_groups.is_empty() {
            s.insert(
                "security_groups".into(),
                json!(
                    self.security_groups
                        .iter()
                        .map(|n| json!({ "name": n }))
                        .collect::<Vec<_>>()
                ),
            );
        }
        if let Some(az) = &self.availability_zone {
            s.insert("availability_zone".into(), json!(az));
        }
        if let Some(ud) = &self.user_data {
            s.insert(
                "user_data".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(ud)),
            );
        }
        if !self.metadata.is_empty() {
            s.insert("metadata".into(), json!(self.metadata));
        }
        if !self.tags.is_empty() {
            s.insert("tags".into(), json!(self.tags));
        }
        json!({ "server": s })
    }
}

/// Filters of a server list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerFilter {
    /// Servers that have all these tags.
    pub tags: Vec<String>,
    /// Servers that have any of these tags.
    pub tags_any: Vec<String>,
    /// Name: a regular expression Nova matches (anchor it with `^...$` for an exact name).
    pub name: Option<String>,
    /// Status.
    pub status: Option<String>,
}

/// The Nova client of a session.
#[derive(Debug, Clone)]
pub struct Compute {
    session: Arc<Session>,
    base: Url,
    version: ApiVersion,
}

/// The host name a server gets from its name (as Nova derives it for cloud-init): lower case,
/// `[a-z0-9-]`, at most 63 characters. The Swarm knows a VM by it.
pub fn hostname_of(name: &str) -> String {
    let mut h: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    h.truncate(63);
    let h = h.trim_matches('-').to_string();
    if h.is_empty() { "server".into() } else { h }
}

/// `true` for a 32-hex-digit or hyphenated uuid.
pub(crate) fn looks_like_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

/// `base` with `segments` appended (each one percent-encoded).
pub(crate) fn join(base: &Url, segments: &[&str]) -> Result<Url> {
    let mut u = base.clone();
    {
        let mut p = u
            .path_segments_mut()
            .map_err(|()| Error::Config(format!("endpoint {base} cannot be a base URL")))?;
        p.pop_if_empty();
        for s in segments {
            p.push(s);
        }
    }
    Ok(u)
}

impl Compute {
    /// Find the compute endpoint and check its version document supports
    /// [`COMPUTE_MICROVERSION`].
    pub async fn connect(session: Arc<Session>) -> Result<Self> {
        let mut base = session.endpoint("compute").await?;
        // legacy catalogs end in /v2.1/<project id>: requests go below it, the version
        // document lives at /v2.1
        let token = session.token().await?;
        let mut version_url = base.clone();
        if let Some(pid) = &token.project_id {
            let path = version_url.path().trim_end_matches('/').to_owned();
            if let Some(stripped) = path.strip_suffix(&format!("/{pid}")) {
                version_url.set_path(stripped);
            }
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let resp = session
            .send(Request::new("compute", Method::GET, version_url.clone()))
            .await?;
        let body: serde_json::Value = resp.json()?;
        let version = check_microversion(version_url.as_str(), &body, COMPUTE_MICROVERSION)?;
        tracing::debug!(url = %base, max = %version.version, pinned = COMPUTE_MICROVERSION, "compute API");
        Ok(Compute {
            session,
            base,
            version,
        })
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Url {
        &self.base
    }

    /// The server's version document (`version` is its highest microversion).
    pub fn api_version(&self) -> &ApiVersion {
        &self.version
    }

    fn url(&self, segments: &[&str]) -> Result<Url> {
        join(&self.base, segments)
    }

    fn request(&self, method: Method, url: Url) -> Request {
        Request::new("compute", method, url)
            .header(
                HeaderName::from_static("openstack-api-version"),
                HeaderValue::from_static(COMPUTE_API_VERSION_HEADER),
            )
            .header(
                HeaderName::from_static("x-openstack-nova-api-version"),
                HeaderValue::from_static(COMPUTE_MICROVERSION),
            )
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, url: Url) -> Result<T> {
        self.session
            .send(self.request(Method::GET, url))
            .await?
            .json()
    }

    /// Follow `<what>_links` `next` pages of a list.
    async fn list_all<T: serde::de::DeserializeOwned>(
        &self,
        mut url: Url,
        key: &str,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for _ in 0..10_000 {
            let page: serde_json::Value = self.get(url.clone()).await?;
            let items = page.get(key).cloned().unwrap_or(json!([]));
            let items: Vec<T> = serde_json::from_value(items).map_err(|e| Error::Decode {
                service: "compute".into(),
                method: "GET".into(),
                url: url.to_string(),
                request_id: None,
                message: format!("{key}: {e}"),
            })?;
            let empty = items.is_empty();
            out.extend(items);
            let next = page
                .get(format!("{key}_links"))
                .and_then(|l| l.as_array())
                .and_then(|l| {
                    l.iter()
                        .find(|x| x.get("rel").and_then(|r| r.as_str()) == Some("next"))
                })
                .and_then(|x| x.get("href"))
                .and_then(|h| h.as_str());
            match next {
                Some(href) if !empty => {
                    // keep our endpoint's scheme and host (the href may name an internal one)
                    let next = Url::parse(href).map_err(|e| Error::Decode {
                        service: "compute".into(),
                        method: "GET".into(),
                        url: url.to_string(),
                        request_id: None,
                        message: format!("next link {href:?}: {e}"),
                    })?;
                    let mut u = url.clone();
                    u.set_query(next.query());
                    url = u;
                }
                _ => return Ok(out),
            }
        }
        Ok(out)
    }

    /// The project's absolute limits (`GET /limits`): what its quota still allows.
    pub async fn limits(&self) -> Result<AbsoluteLimits> {
        #[derive(Deserialize)]
        struct L {
            absolute: AbsoluteLimits,
        }
        #[derive(Deserialize)]
        struct W {
            limits: L,
        }
        Ok(self.get::<W>(self.url(&["limits"])?).await?.limits.absolute)
    }

    /// All flavors with details.
    pub async fn list_flavors(&self) -> Result<Vec<Flavor>> {
        self.list_all(self.url(&["flavors", "detail"])?, "flavors")
            .await
    }

    /// A flavor by id.
    pub async fn get_flavor(&self, id: &str) -> Result<Flavor> {
        #[derive(Deserialize)]
        struct W {
            flavor: Flavor,
        }
        Ok(self.get::<W>(self.url(&["flavors", id])?).await?.flavor)
    }

    /// A flavor by id, else by exact name (ambiguous names are an error).
    pub async fn find_flavor(&self, name_or_id: &str) -> Result<Flavor> {
        match self.get_flavor(name_or_id).await {
            Ok(f) => return Ok(f),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let matches: Vec<Flavor> = self
            .list_flavors()
            .await?
            .into_iter()
            .filter(|f| f.name == name_or_id)
            .collect();
        unique("flavor", name_or_id, matches, |f| f.id.clone())
    }

    /// A key pair by name.
    pub async fn get_keypair(&self, name: &str) -> Result<KeyPair> {
        #[derive(Deserialize)]
        struct W {
            keypair: KeyPair,
        }
        Ok(self
            .get::<W>(self.url(&["os-keypairs", name])?)
            .await?
            .keypair)
    }

    /// The user's key pairs.
    pub async fn list_keypairs(&self) -> Result<Vec<KeyPair>> {
        #[derive(Deserialize)]
        struct W {
            keypair: KeyPair,
        }
        let all: Vec<W> = self
            .list_all(self.url(&["os-keypairs"])?, "keypairs")
            .await?;
        Ok(all.into_iter().map(|w| w.keypair).collect())
    }

    /// The availability zones.
    pub async fn list_availability_zones(&self) -> Result<Vec<AvailabilityZone>> {
        #[derive(Deserialize)]
        struct State {
            #[serde(default)]
            available: bool,
        }
        #[derive(Deserialize)]
        struct Zone {
            #[serde(rename = "zoneName")]
            name: String,
            #[serde(rename = "zoneState")]
            state: State,
        }
        #[derive(Deserialize)]
        struct W {
            #[serde(rename = "availabilityZoneInfo")]
            zones: Vec<Zone>,
        }
        let w: W = self.get(self.url(&["os-availability-zone"])?).await?;
        Ok(w.zones
            .into_iter()
            .map(|z| AvailabilityZone {
                name: z.name,
                available: z.state.available,
            })
            .collect())
    }

    /// An availability zone by name.
    pub async fn find_availability_zone(&self, name: &str) -> Result<AvailabilityZone> {
        let zones = self.list_availability_zones().await?;
        zones
            .into_iter()
            .find(|z| z.name == name)
            .ok_or_else(|| Error::NoSuchResource {
                resource: "availability zone",
                name: name.to_owned(),
            })
    }

    /// Create a server; returns its id at once (it is BUILD; see [`Compute::wait_for_server`]).
    ///
    /// Never retried: a create whose answer is lost may still have created the server, and a
    /// second attempt would make a duplicate. Callers that need at-most-once across retries
    /// tag or name their servers and look them up before creating again.
    pub async fn create_server(&self, spec: &CreateServer) -> Result<String> {
        #[derive(Deserialize)]
        struct Created {
            id: String,
        }
        #[derive(Deserialize)]
        struct W {
            server: Created,
        }
        let mut req = self
            .request(Method::POST, self.url(&["servers"])?)
            .json(spec.body());
        req.idempotency = Idempotency::NotIdempotent;
        let w: W = self.session.send(req).await?.json()?;
        tracing::info!(server = %w.server.id, name = %spec.name, "server created");
        Ok(w.server.id)
    }

    /// A server by id.
    pub async fn get_server(&self, id: &str) -> Result<Server> {
        #[derive(Deserialize)]
        struct W {
            server: Server,
        }
        Ok(self.get::<W>(self.url(&["servers", id])?).await?.server)
    }

    /// Servers with details, filtered (all pages).
    pub async fn list_servers(&self, filter: &ServerFilter) -> Result<Vec<Server>> {
        let mut url = self.url(&["servers", "detail"])?;
        {
            let mut q = url.query_pairs_mut();
            if !filter.tags.is_empty() {
                q.append_pair("tags", &filter.tags.join(","));
            }
            if !filter.tags_any.is_empty() {
                q.append_pair("tags-any", &filter.tags_any.join(","));
            }
            if let Some(n) = &filter.name {
                q.append_pair("name", n);
            }
            if let Some(s) = &filter.status {
                q.append_pair("status", s);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        self.list_all(url, "servers").await
    }

    /// Delete a server (Nova answers at once; it is gone when GET says 404).
    pub async fn delete_server(&self, id: &str) -> Result<()> {
        self.session
            .send(self.request(Method::DELETE, self.url(&["servers", id])?))
            .await?;
        Ok(())
    }

    /// Snapshot a server into a Glance image (`createImage`); returns the image id. The
    /// image becomes `active` when the upload finishes. Not retried (it would make a second
    /// image).
    pub async fn create_image(
        &self,
        server_id: &str,
        name: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<String> {
        #[derive(Deserialize)]
        struct W {
            image_id: String,
        }
        let body = json!({ "createImage": { "name": name, "metadata": metadata } });
        let mut req = self
            .request(Method::POST, self.url(&["servers", server_id, "action"])?)
            .json(body);
        req.idempotency = Idempotency::NotIdempotent;
        Ok(self.session.send(req).await?.json::<W>()?.image_id)
    }

    /// Poll a server until its status is `target` (and no task runs); ERROR fails with the
    /// fault.
    pub async fn wait_for_server(
        &self,
        id: &str,
        target: ServerStatus,
        timeout: Duration,
    ) -> Result<Server> {
        let start = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            let s = self.get_server(id).await?;
            if s.status == target && s.task_state.is_none() {
                return Ok(s);
            }
            if s.status == ServerStatus::Error && target != ServerStatus::Error {
                return Err(Error::Failed {
                    what: format!("server {id}"),
                    message: format!(
                        "status ERROR: {}",
                        s.fault
                            .map(|f| f.message)
                            .unwrap_or_else(|| "no fault".into())
                    ),
                });
            }
            if start.elapsed() >= timeout {
                return Err(Error::WaitTimeout {
                    what: format!("server {id} to be {target:?}"),
                    waited: timeout,
                    last: format!("{:?} task {:?}", s.status, s.task_state),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// Poll until GET of the server says 404.
    pub async fn wait_for_server_gone(&self, id: &str, timeout: Duration) -> Result<()> {
        let start = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            let last = match self.get_server(id).await {
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e),
                Ok(s) => format!("{:?}", s.status),
            };
            if start.elapsed() >= timeout {
                return Err(Error::WaitTimeout {
                    what: format!("server {id} to be gone"),
                    waited: timeout,
                    last,
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

/// The one element of `matches`, or a clear error.
pub(crate) fn unique<T>(
    resource: &'static str,
    name: &str,
    mut matches: Vec<T>,
    id: impl Fn(&T) -> String,
) -> Result<T> {
    match matches.len() {
        0 => Err(Error::NoSuchResource {
            resource,
            name: name.to_owned(),
        }),
        1 => Ok(matches.remove(0)),
        _ => Err(Error::Ambiguous {
            resource,
            name: name.to_owned(),
            ids: matches.iter().map(id).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert_eq!(hostname_of("Worker_1.pool"), "worker-1-pool");
        assert_eq!(hostname_of("Lambda_default-Y"), "lambda-default-y");
        assert_eq!(hostname_of("---"), "server");
        assert_eq!(hostname_of(&"a".repeat(80)).len(), 63);
    }

    #[test]
    fn microversion_negotiation() {
        let doc = json!({"version": {"id": "v2.1", "status": "CURRENT", "version": "2.93", "min_version": "2.1"}});
        assert_eq!(
            check_microversion("u", &doc, "2.52").unwrap().version,
            "2.93"
        );
        let old = json!({"version": {"id": "v2.1", "status": "CURRENT", "version": "2.36", "min_version": "2.1"}});
        let e = check_microversion("http://nova/v2.1", &old, "2.52").unwrap_err();
        assert!(matches!(e, Error::MicroversionUnsupported { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("2.1..=2.36") && msg.contains("too old") && msg.contains("2.52"),
            "{msg}"
        );
        // the root document lists versions
        let root = json!({"versions": [
            {"id": "v2.0", "status": "SUPPORTED", "version": "", "min_version": ""},
            {"id": "v2.1", "status": "CURRENT", "version": "2.60", "min_version": "2.1"}]});
        assert!(check_microversion("u", &root, "2.52").is_ok());
        // v2.0 only: no microversions at all
        let legacy = json!({"version": {"id": "v2.0", "version": "", "min_version": ""}});
        assert!(matches!(
            check_microversion("u", &legacy, "2.52"),
            Err(Error::MicroversionUnsupported { .. })
        ));
        // raised minimum
        let future = json!({"version": {"id": "v2.1", "version": "3.10", "min_version": "2.60"}});
        assert!(check_microversion("u", &future, "2.52").is_err());
        assert!(check_microversion("u", &json!({"x": 1}), "2.52").is_err());
        assert!(Microversion::parse("2.9") < Microversion::parse("2.10"));
    }

    #[test]
    fn header_matches_pinned_version() {
        assert_eq!(
            COMPUTE_API_VERSION_HEADER,
            format!("compute {COMPUTE_MICROVERSION}")
        );
    }

    #[test]
    fn create_body() {
        let mut spec = CreateServer {
            name: "n".into(),
            flavor_id: "1".into(),
            image_id: "img".into(),
            user_data: Some(b"#!/bin/sh\necho hi\n".to_vec()),
            tags: vec!["lambda".into()],
            ..Default::default()
        };
        spec.metadata.insert("k".into(), "v".into());
        let b = spec.body();
        assert_eq!(b["server"]["networks"], json!("none"));
        assert_eq!(b["server"]["user_data"], json!("IyEvYmluL3NoCmVjaG8gaGkK"));
        assert_eq!(b["server"]["metadata"], json!({"k": "v"}));
        assert_eq!(b["server"]["tags"], json!(["lambda"]));
        assert!(b["server"].get("key_name").is_none());
        spec.networks = Networks::Uuids(vec!["u1".into()]);
        spec.security_groups = vec!["default".into()];
        spec.key_name = Some("k".into());
        spec.availability_zone = Some("nova".into());
        let b = spec.body();
        assert_eq!(b["server"]["networks"], json!([{"uuid": "u1"}]));
        assert_eq!(b["server"]["security_groups"], json!([{"name": "default"}]));
        assert_eq!(b["server"]["availability_zone"], json!("nova"));
    }

    #[test]
    fn server_parsing() {
        let s: Server = serde_json::from_value(json!({
            "id": "i", "name": "n", "status": "ACTIVE", "metadata": {"a": "b"}, "tags": ["t"],
            "image": {"id": "img", "links": []}, "flavor": {"original_name": "m1.tiny", "vcpus": 1},
            "OS-EXT-STS:task_state": null, "OS-EXT-AZ:availability_zone": "nova",
            "addresses": {"net": [{"addr": "192.0.2.5", "version": 4, "OS-EXT-IPS:type": "fixed"}]},
            "some-new-field": 1
        }))
        .unwrap();
        assert_eq!(s.status, ServerStatus::Active);
        assert_eq!(s.image_id(), Some("img"));
        assert_eq!(s.flavor_name(), Some("m1.tiny"));
        assert_eq!(s.addresses["net"][0].addr, "192.0.2.5");
        let s: Server =
            serde_json::from_value(json!({"id": "i", "status": "SOMETHING_NEW", "image": ""}))
                .unwrap();
        assert_eq!(s.status, ServerStatus::Other);
        assert_eq!(s.image_id(), None);
    }

    #[test]
    fn url_joining_encodes() {
        let base = Url::parse("http://nova:8774/v2.1/").unwrap();
        assert_eq!(
            join(&base, &["flavors", "m1/x y"]).unwrap().as_str(),
            "http://nova:8774/v2.1/flavors/m1%2Fx%20y"
        );
        let base = Url::parse("http://nova:8774/v2.1").unwrap();
        assert_eq!(
            join(&base, &["servers"]).unwrap().as_str(),
            "http://nova:8774/v2.1/servers"
        );
    }

    #[test]
    fn unique_lookup() {
        assert_eq!(unique("x", "n", vec![1], |v| v.to_string()).unwrap(), 1);
        assert!(matches!(
            unique::<i32>("x", "n", vec![], |v| v.to_string()),
            Err(Error::NoSuchResource { .. })
        ));
        let e = unique("flavor", "n", vec![1, 2], |v| v.to_string())
            .unwrap_err()
            .to_string();
        assert!(e.contains("ambiguous") && e.contains("1, 2"), "{e}");
    }
}
