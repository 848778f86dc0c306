//! Nova: version documents, microversions, flavors, key pairs, availability zones, servers
//! (create/get/list/delete) and the `createImage` action.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::Utc;
use serde_json::{Value, json};

use super::fault::{ApiError, Service, request_id};
use super::state::{Image, KeyPair, Server};
use super::{Auth, Cloud};

/// Highest compute microversion served (Nova 26 / Zed).
pub const MAX_MICROVERSION: (u32, u32) = (2, 93);

fn err(status: StatusCode, msg: impl Into<String>) -> ApiError {
    ApiError::new(Service::Compute, status, msg)
}

/// The requested microversion: `OpenStack-API-Version: compute 2.x` or the legacy header;
/// 2.1 when absent; `latest` is the maximum.
pub fn microversion(headers: &HeaderMap) -> Result<(u32, u32), ApiError> {
    let raw = headers
        .get("openstack-api-version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.trim()
                .strip_prefix("compute")
                .map(|s| s.trim().to_string())
        })
        .or_else(|| {
            headers
                .get("x-openstack-nova-api-version")
                .and_then(|v| v.to_str().ok())
                .map(|s| s.trim().to_string())
        });
    let Some(raw) = raw else { return Ok((2, 1)) };
    if raw == "latest" {
        return Ok(MAX_MICROVERSION);
    }
    let parsed = raw
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
    match parsed {
        Some(v) if v >= (2, 1) && v <= MAX_MICROVERSION => Ok(v),
        Some(_) => Err(err(
            StatusCode::NOT_ACCEPTABLE,
            format!(
                "Version {raw} is not supported by the API. Minimum is 2.1 and maximum is {}.{}.",
                MAX_MICROVERSION.0, MAX_MICROVERSION.1
            ),
        )),
        None => Err(err(
            StatusCode::BAD_REQUEST,
            format!("Invalid format for API version: {raw}"),
        )),
    }
}

/// The requested compute microversion, as an extractor: a bad one is answered by Nova's error
/// before the handler runs.
pub struct Microversion(pub (u32, u32));

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Microversion {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        microversion(&parts.headers).map(Microversion)
    }
}

/// Adds Nova's response headers (microversion echo, request id).
fn respond(v: (u32, u32), status: StatusCode, body: Value) -> Response {
    let mut h = HeaderMap::new();
    let ver = format!("{}.{}", v.0, v.1);
    for (k, val) in [
        ("openstack-api-version", format!("compute {ver}")),
        ("x-openstack-nova-api-version", ver.clone()),
        (
            "vary",
            "OpenStack-API-Version, X-OpenStack-Nova-API-Version".into(),
        ),
        ("x-openstack-request-id", request_id()),
        ("x-compute-request-id", request_id()),
    ] {
        if let Ok(val) = HeaderValue::from_str(&val) {
            h.insert(k, val);
        }
    }
    (status, h, Json(body)).into_response()
}

fn version_doc(base: &str) -> Value {
    json!({"id": "v2.1", "status": "CURRENT", "version": format!("{}.{}", MAX_MICROVERSION.0, MAX_MICROVERSION.1),
           "min_version": "2.1", "updated": "2013-07-23T11:33:21Z",
           "links": [{"rel": "self", "href": format!("{base}/compute/v2.1/")}],
           "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}]})
}

/// `GET /compute/`
pub async fn versions(State(cloud): State<Arc<Cloud>>) -> Json<Value> {
    Json(json!({"versions": [version_doc(&cloud.base_url)]}))
}

/// `GET /compute/v2.1/`
pub async fn version(State(cloud): State<Arc<Cloud>>) -> Json<Value> {
    Json(json!({"version": version_doc(&cloud.base_url)}))
}

fn flavor_json(cloud: &Cloud, f: &super::state::Flavor) -> Value {
    json!({"id": f.id, "name": f.name, "vcpus": f.vcpus, "ram": f.ram, "disk": f.disk, "swap": 0,
           "OS-FLV-EXT-DATA:ephemeral": 0, "OS-FLV-DISABLED:disabled": false, "rxtx_factor": 1.0,
           "os-flavor-access:is_public": true, "description": null,
           "links": [{"rel": "self", "href": format!("{}/compute/v2.1/flavors/{}", cloud.base_url, f.id)}]})
}

/// `GET /compute/v2.1/flavors[/detail]`
pub async fn list_flavors(
    State(cloud): State<Arc<Cloud>>,
    _auth: Auth,
    Microversion(v): Microversion,
) -> Response {
    let st = cloud.lock();
    let flavors: Vec<Value> = st.flavors.iter().map(|f| flavor_json(&cloud, f)).collect();
    respond(v, StatusCode::OK, json!({"flavors": flavors}))
}

/// `GET /compute/v2.1/flavors/{id}`
pub async fn get_flavor(
    State(cloud): State<Arc<Cloud>>,
    _auth: Auth,
    Microversion(v): Microversion,
    Path(id): Path<String>,
) -> Response {
    let st = cloud.lock();
    match st.flavors.iter().find(|f| f.id == id) {
        Some(f) => respond(v, StatusCode::OK, json!({"flavor": flavor_json(&cloud, f)})),
        None => err(
            StatusCode::NOT_FOUND,
            format!("Flavor {id} could not be found."),
        )
        .into_response(),
    }
}

/// `GET /compute/v2.1/limits`: the project's absolute limits as Nova reports them (only the
/// instance count is limited here; cores and RAM are unlimited, `-1`, as in Nova's defaults
/// with unified limits off).
pub async fn limits(
    State(cloud): State<Arc<Cloud>>,
    auth: Auth,
    Microversion(v): Microversion,
) -> Response {
    let st = cloud.lock();
    let max = st
        .projects
        .iter()
        .find(|p| p.id == auth.project_id)
        .map(|p| p.max_instances)
        .unwrap_or(0);
    let used: Vec<&super::state::Server> = st
        .servers
        .values()
        .filter(|s| s.project_id == auth.project_id && s.status != "DELETED")
        .collect();
    let (cores, ram) = used.iter().fold((0u64, 0u64), |(c, r), s| {
        st.flavor(&s.flavor_id)
            .map_or((c, r), |f| (c + u64::from(f.vcpus), r + u64::from(f.ram)))
    });
    respond(
        v,
        StatusCode::OK,
        json!({"limits": {"rate": [], "absolute": {
            "maxTotalInstances": max, "totalInstancesUsed": used.len(),
            "maxTotalCores": -1, "totalCoresUsed": cores,
            "maxTotalRAMSize": -1, "totalRAMUsed": ram,
            "maxServerMeta": 128, "maxPersonality": 5, "maxPersonalitySize": 10240,
            "maxTotalKeypairs": 100, "maxServerGroups": 10, "maxServerGroupMembers": 10,
            "totalServerGroupsUsed": 0
        }}}),
    )
}

fn keypair_json(k: &KeyPair) -> Value {
    json!({"name": k.name, "public_key": k.public_key, "fingerprint": k.fingerprint, "type": "ssh"})
}

/// `GET /compute/v2.1/os-keypairs`
pub async fn list_keypairs(
    State(cloud): State<Arc<Cloud>>,
    auth: Auth,
    Microversion(v): Microversion,
) -> Response {
    let st = cloud.lock();
    let kps: Vec<Value> = st
        .keypairs
        .iter()
        .filter(|k| k.project_id == auth.project_id)
        .map(|k| json!({"keypair": keypair_json(k)}))
        .collect();
    respond(v, StatusCode::OK, json!({"keypairs": kps}))
}

/// `GET /compute/v2.1/os-keypairs/{name}`
pub async fn get_keypair(
    State(cloud): State<Arc<Cloud>>,
    auth: Auth,
    Microversion(v): Microversion,
    Path(name): Path<String>,
) -> Response {
    let st = cloud.lock();
    match st
        .keypairs
        .iter()
        .find(|k| k.name == name && k.project_id == auth.project_id)
    {
        Some(k) => respond(v, StatusCode::OK, json!({"keypair": keypair_json(k)})),
        None => err(
            StatusCode::NOT_FOUND,
            format!("Keypair {name} not found for user {}", auth.user_id),
        )
        .into_response(),
    }
}

/// `POST /compute/v2.1/os-keypairs` (import of a public key).
pub async fn create_keypair(
    State(cloud): State<Arc<Cloud>>,
    auth: Auth,
    Microversion(v): Microversion,
    body: Option<Json<Value>>,
) -> Response {
    let Some(Json(body)) = body else {
        return err(
            StatusCode::BAD_REQUEST,
            "The request body is not valid JSON.",
        )
        .into_response();
    };
    let name = body
        .pointer("/keypair/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let Some(public_key) = body
        .pointer("/keypair/public_key")
        .and_then(Value::as_str)
        .map(String::from)
    else {
        return err(StatusCode::BAD_REQUEST, "Invalid input for field/attribute keypair. Value: public_key is required (this cloud does not generate keys).").into_response();
    };
    if name.is_empty() || name.len() > 255 {
        return err(StatusCode::BAD_REQUEST, "Keypair data is invalid: Keypair name must be string and between 1 and 255 characters long").into_response();
    }
    let mut st = cloud.lock();
    if st
        .keypairs
        .iter()
        .any(|k| k.name == name && k.project_id == auth.project_id)
    {
        return err(
            StatusCode::CONFLICT,
            format!("Key pair '{name}' already exists."),
        )
        .into_response();
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(public_key.as_bytes());
    let kp = KeyPair {
        name,
        public_key,
        fingerprint: digest[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        project_id: auth.project_id.clone(),
    };
    let out = keypair_json(&kp);
    st.keypairs.push(kp);
    drop(st);
    cloud.save();
    respond(v, StatusCode::OK, json!({"keypair": out}))
}

/// `GET /compute/v2.1/os-availability-zone`
pub async fn availability_zones(_auth: Auth, Microversion(v): Microversion) -> Response {
    respond(
        v,
        StatusCode::OK,
        json!({"availabilityZoneInfo": [{"zoneName": "nova", "zoneState": {"available": true}, "hosts": null}]}),
    )
}

/// The server as Nova shows it at microversion `v`.
fn server_json(cloud: &Cloud, s: &Server, v: (u32, u32)) -> Value {
    let st = cloud.lock();
    let flavor = st.flavor(&s.flavor_id).cloned();
    drop(st);
    let addresses = match (&s.network, s.status.as_str()) {
        (Some(net), "ACTIVE" | "ERROR") => {
            json!({ net.clone(): [{"version": 4, "addr": s.address, "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": s.mac}] })
        }
        _ => json!({}),
    };
    let vm_state = match s.status.as_str() {
        "BUILD" => "building",
        "ACTIVE" => "active",
        "ERROR" => "error",
        _ => "deleted",
    };
    let mut out = json!({
        "id": s.id, "name": s.name, "status": s.status, "tenant_id": s.project_id, "user_id": s.user_id,
        "metadata": s.metadata, "hostId": "", "created": s.created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "updated": s.updated.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "addresses": addresses, "accessIPv4": "", "accessIPv6": "", "progress": 0,
        "image": {"id": s.image_id, "links": [{"rel": "bookmark", "href": format!("{}/image/v2/images/{}", cloud.base_url, s.image_id)}]},
        "key_name": s.key_name, "config_drive": "", "locked": false,
        "OS-EXT-AZ:availability_zone": s.availability_zone,
        "OS-EXT-STS:vm_state": vm_state, "OS-EXT-STS:task_state": s.task_state, "OS-EXT-STS:power_state": if s.status == "ACTIVE" { 1 } else { 0 },
        "OS-DCF:diskConfig": "MANUAL",
        "security_groups": s.security_groups.iter().map(|g| json!({"name": g})).collect::<Vec<_>>(),
        "links": [{"rel": "self", "href": format!("{}/compute/v2.1/servers/{}", cloud.base_url, s.id)}],
    });
    if v >= (2, 47) {
        out["flavor"] = match flavor {
            Some(f) => {
                json!({"original_name": f.name, "vcpus": f.vcpus, "ram": f.ram, "disk": f.disk, "ephemeral": 0, "swap": 0, "extra_specs": {}})
            }
            None => json!({}),
        };
    } else {
        out["flavor"] = json!({"id": s.flavor_id, "links": []});
    }
    if v >= (2, 26) {
        out["tags"] = json!(s.tags);
    }
    if let Some(f) = &s.fault {
        out["fault"] = json!({"code": f.code, "message": f.message, "created": f.created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)});
    }
    out
}

/// Query of `GET /servers[/detail]`.
#[derive(Debug, serde::Deserialize, Default)]
pub struct ListQuery {
    name: Option<String>,
    tags: Option<String>,
    #[serde(rename = "tags-any")]
    tags_any: Option<String>,
    status: Option<String>,
}

/// Nova filters `name` with a regular expression; this supports the common forms: a literal
/// substring, optionally anchored with `^` and/or `$`.
fn name_matches(pattern: &str, name: &str) -> bool {
    let (anchored_start, rest) = match pattern.strip_prefix('^') {
        Some(r) => (true, r),
        None => (false, pattern),
    };
    let (anchored_end, lit) = match rest.strip_suffix('$') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    match (anchored_start, anchored_end) {
        (true, true) => name == lit,
        (true, false) => name.starts_with(lit),
        (false, true) => name.ends_with(lit),
        (false, false) => name.contains(lit),
    }
}

fn list(cloud: &Cloud, auth: &Auth, q: &ListQuery) -> Vec<Server> {
    let st = cloud.lock();
    let all: Vec<&str> = q
        .tags
        .as_deref()
        .map(|t| t.split(',').collect())
        .unwrap_or_default();
    let any: Vec<&str> = q
        .tags_any
        .as_deref()
        .map(|t| t.split(',').collect())
        .unwrap_or_default();
    st.servers
        .values()
        .filter(|s| s.project_id == auth.project_id && s.status != "DELETED")
        .filter(|s| q.name.as_deref().is_none_or(|n| name_matches(n, &s.name)))
        .filter(|s| {
            q.status
                .as_deref()
                .is_none_or(|x| x.eq_ignore_ascii_case(&s.status))
        })
        .filter(|s| all.iter().all(|t| s.tags.iter().any(|x| x == t)))
        .filter(|s| any.is_empty() || any.iter().any(|t| s.tags.iter().any(|x| x == t)))
        .cloned()
        .collect()
}

/// `GET /compute/v2.1/servers/detail`
pub async fn list_servers_detail(
    State(cloud): State<Arc<Cloud>>,
    auth: Auth,
    Microversion(v): Microversion,
    Query(q): Query<ListQuery>,
) -> Response {
    let servers: Vec<Value> = list(&cloud, &auth, &q)
        .iter()
        .map(|s| server_json(&cloud, s, v))
        .collect();
    respond(v, StatusCode::OK, json!({"servers": servers}))
}

/// `GET /compute/v2.1/servers`
pub async fn list_servers(
    State(cloud): State<Arc<Cloud>>,
    auth: Auth,
    Microversion(v): Microversion,
    Query(q): Query<ListQuery>,
) -> Response {
    let servers: Vec<Value> = list(&cloud, &auth, &q)
        .iter()
        .map(|s| json!({"id": s.id, "name": s.name, "links": [{"rel": "self", "href": format!("{}/compute/v2.1/servers/{}", cloud.base_url, s.id)}]}))
        .collect();
    respond(v, StatusCode::OK, json!({"servers": servers}))
}

fn find_server(cloud: &Cloud, auth: &Auth, id: &str) -> Result<Server, ApiError> {
    let st = cloud.lock();
    st.servers
        .get(id)
        .filter(|s| s.project_id == auth.project_id)
        .cloned()
        .ok_or_else(|| {
            err(
                StatusCode::NOT_FOUND,
                format!("Instance {id} could not be found."),
            )
        })
}

/// `GET /compute/v2.1/servers/{id}`
pub async fn get_server(
    State(cloud): State<Arc<Cloud>>,
    auth: Auth,
    Microversion(v): Microversion,
    Path(id): Path<String>,
) -> Response {
    match find_server(&cloud, &auth, &id) {
        Ok(s) => respond(
            v,
            StatusCode::OK,
            json!({"server": server_json(&cloud, &s, v)}),
        ),
        Err(e) => e.into_response(),
    }
}

/// `DELETE /compute/v2.1/servers/{id}`
pub async fn delete_server(
    State(cloud): State<Arc<Cloud>>,
    auth: Auth,
    Microversion(v): Microversion,
    Path(id): Path<String>,
) -> Response {
    let s = match find_server(&cloud, &auth, &id) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    if s.status != "DELETED" {
        cloud.update_server(&id, |s| {
            s.status = "DELETED".into();
            s.task_state = Some("deleting".into());
        });
        let c = cloud.clone();
        tokio::spawn(async move { c.teardown(id).await });
    }
    let mut r = respond(v, StatusCode::NO_CONTENT, Value::Null);
    *r.body_mut() = axum::body::Body::empty();
    r
}

/// `POST /compute/v2.1/servers`
pub async fn create_server(
    State(cloud): State<Arc<Cloud>>,
    auth: Auth,
    Microversion(v): Microversion,
    body: Option<Json<Value>>,
) -> Response {
    match build_server(&cloud, &auth, v, body.map(|b| b.0)) {
        Ok(s) => {
            let id = s.id.clone();
            let c = cloud.clone();
            tokio::spawn(async move { c.boot(id).await });
            respond(
                v,
                StatusCode::ACCEPTED,
                json!({"server": {
                "id": s.id, "OS-DCF:diskConfig": "MANUAL", "adminPass": uuid::Uuid::new_v4().simple().to_string(),
                "security_groups": s.security_groups.iter().map(|g| json!({"name": g})).collect::<Vec<_>>(),
                "links": [{"rel": "self", "href": format!("{}/compute/v2.1/servers/{}", cloud.base_url, s.id)}]}}),
            )
        }
        Err(e) => e.into_response(),
    }
}

fn build_server(
    cloud: &Cloud,
    auth: &Auth,
    v: (u32, u32),
    body: Option<Value>,
) -> Result<Server, ApiError> {
    let bad = |m: String| err(StatusCode::BAD_REQUEST, m);
    let body = body.ok_or_else(|| bad("The request body is not valid JSON.".into()))?;
    let req = body.get("server").ok_or_else(|| bad("Invalid input for field/attribute server. Value: None. 'server' is a required property".into()))?;
    let name = req
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.trim().is_empty() || name.len() > 255 {
        return Err(bad(
            "Invalid input for field/attribute name. Value: ''. '' is too short".into(),
        ));
    }
    let flavor_ref = req.get("flavorRef").and_then(|f| f.as_str().map(String::from).or_else(|| f.as_u64().map(|n| n.to_string())))
        .ok_or_else(|| bad("Invalid input for field/attribute server. Value: 'flavorRef' is a required property".into()))?;
    let image_ref = req
        .get("imageRef")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let user_data = match req.get("user_data").and_then(Value::as_str) {
        Some(ud) => {
            base64::engine::general_purpose::STANDARD
                .decode(ud.trim())
                .map_err(|_| bad("User data needs to be valid base 64.".into()))?;
            Some(ud.trim().to_string())
        }
        None => None,
    };
    let metadata: std::collections::BTreeMap<String, String> = match req.get("metadata") {
        None | Some(Value::Null) => Default::default(),
        Some(m) => serde_json::from_value(m.clone()).map_err(|_| {
            bad(
                "Invalid input for field/attribute metadata. Value must be an object of strings."
                    .into(),
            )
        })?,
    };
    for (k, val) in &metadata {
        let key_ok = !k.is_empty()
            && k.len() <= 255
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_:. ".contains(c));
        if !key_ok {
            return Err(bad(format!(
                "Invalid input for field/attribute metadata. Value: {k}. Key does not match '^[a-zA-Z0-9-_:. ]{{1,255}}$'"
            )));
        }
        if val.len() > 255 {
            return Err(bad(format!(
                "Invalid input for field/attribute metadata. Value of {k} is too long (at most 255 characters)"
            )));
        }
    }
    if metadata.len() > 128 {
        return Err(err(
            StatusCode::FORBIDDEN,
            "Quota exceeded for metadata_items: Requested >128, but already used 0 of 128 metadata_items",
        ));
    }
    let tags: Vec<String> = match req.get("tags") {
        None => vec![],
        Some(_) if v < (2, 52) => return Err(bad("Invalid input for field/attribute server. Additional properties are not allowed ('tags' was unexpected)".into())),
        Some(t) => serde_json::from_value(t.clone()).map_err(|_| bad("Invalid input for field/attribute tags.".into()))?,
    };
    if tags
        .iter()
        .any(|t| t.contains(',') || t.contains('/') || t.is_empty() || t.len() > 60)
    {
        return Err(bad(
            "Invalid input for field/attribute tags: a tag is 1-60 characters without ',' or '/'."
                .into(),
        ));
    }
    let security_groups: Vec<String> = req
        .get("security_groups")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|g| g.get("name").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_else(|| vec!["default".into()]);
    let az = req
        .get("availability_zone")
        .and_then(Value::as_str)
        .unwrap_or("nova")
        .to_string();
    if az != "nova" {
        return Err(bad(format!(
            "The requested availability zone is not available (zone {az})"
        )));
    }
    let mut st = cloud.lock();
    let flavor = st
        .flavor(&flavor_ref)
        .cloned()
        .ok_or_else(|| bad(format!("Flavor {flavor_ref} could not be found.")))?;
    let image = st
        .images
        .get(&image_ref)
        .cloned()
        .ok_or_else(|| bad(format!("Image {image_ref} could not be found.")))?;
    if image.status != "active" {
        return Err(bad(format!("Image {image_ref} is not active.")));
    }
    let network = match req.get("networks") {
        None if v >= (2, 37) => return Err(bad(
            "Invalid input for field/attribute server. Value: 'networks' is a required property"
                .into(),
        )),
        None | Some(Value::String(_))
            if req.get("networks").and_then(Value::as_str) == Some("none") =>
        {
            None
        }
        None | Some(Value::String(_)) => st.networks.first().map(|n| n.name.clone()),
        Some(Value::Array(nets)) => match nets.first() {
            None => None,
            Some(n) => {
                let key = n
                    .get("uuid")
                    .or_else(|| n.get("port"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let net = st
                    .network(key)
                    .cloned()
                    .ok_or_else(|| bad(format!("Network {key} could not be found.")))?;
                Some(net.name)
            }
        },
        Some(_) => return Err(bad("Invalid input for field/attribute networks.".into())),
    };
    if let Some(k) = req.get("key_name").and_then(Value::as_str)
        && !st
            .keypairs
            .iter()
            .any(|kp| kp.name == k && kp.project_id == auth.project_id)
    {
        return Err(bad("Invalid key_name provided.".to_string()));
    }
    let project = st
        .projects
        .iter()
        .find(|p| p.id == auth.project_id)
        .cloned();
    let max = project.map(|p| p.max_instances).unwrap_or(0);
    let used = st.instances_of(&auth.project_id);
    if used + 1 > max {
        return Err(err(
            StatusCode::FORBIDDEN,
            format!(
                "Quota exceeded for instances: Requested 1, but already used {used} of {max} instances"
            ),
        ));
    }
    let used_idx: std::collections::HashSet<u8> = st.servers.values().map(|s| s.index).collect();
    let index = (cloud.first_host..=254u8)
        .find(|i| !used_idx.contains(i))
        .ok_or_else(|| {
            err(
                StatusCode::FORBIDDEN,
                "No more IP addresses available on network lambda-net.",
            )
        })?;
    let id = uuid::Uuid::new_v4().to_string();
    let now = Utc::now();
    let server = Server {
        id: id.clone(),
        name,
        project_id: auth.project_id.clone(),
        user_id: auth.user_id.clone(),
        status: "BUILD".into(),
        flavor_id: flavor.id,
        image_id: image.id,
        key_name: req
            .get("key_name")
            .and_then(Value::as_str)
            .map(String::from),
        security_groups,
        availability_zone: az,
        metadata,
        tags,
        user_data,
        network,
        index,
        address: format!("{}.{index}", cloud.hosts.prefix),
        mac: format!(
            "fa:16:3e:{:02x}:{:02x}:{:02x}",
            rand::random::<u8>(),
            rand::random::<u8>(),
            index
        ),
        created: now,
        updated: now,
        fault: None,
        user_data_done: false,
        task_state: Some("spawning".into()),
    };
    st.servers.insert(id, server.clone());
    drop(st);
    cloud.save();
    Ok(server)
}

/// `POST /compute/v2.1/servers/{id}/action` (`createImage`).
pub async fn server_action(
    State(cloud): State<Arc<Cloud>>,
    auth: Auth,
    Microversion(v): Microversion,
    Path(id): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
    let s = match find_server(&cloud, &auth, &id) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let Some(Json(body)) = body else {
        return err(
            StatusCode::BAD_REQUEST,
            "The request body is not valid JSON.",
        )
        .into_response();
    };
    let Some(ci) = body.get("createImage") else {
        let action = body
            .as_object()
            .and_then(|o| o.keys().next().cloned())
            .unwrap_or_default();
        return err(
            StatusCode::BAD_REQUEST,
            format!("There is no such action: {action}"),
        )
        .into_response();
    };
    let Some(name) = ci
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty())
    else {
        return err(
            StatusCode::BAD_REQUEST,
            "Invalid input for field/attribute name. Value: None. 'name' is a required property",
        )
        .into_response();
    };
    if s.status != "ACTIVE" || s.task_state.is_some() {
        let state = if s.status == "BUILD" {
            "building"
        } else {
            &s.status.to_ascii_lowercase()
        };
        return err(
            StatusCode::CONFLICT,
            format!("Cannot 'createImage' instance {id} while it is in vm_state {state}"),
        )
        .into_response();
    }
    let metadata: std::collections::BTreeMap<String, String> = ci
        .get("metadata")
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_default();
    let now = Utc::now();
    let image = Image {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_string(),
        status: "queued".into(),
        owner: auth.project_id.clone(),
        created_at: now,
        updated_at: now,
        size: 0,
        metadata,
        docker_images: vec![],
        archive: None,
    };
    let image_id = image.id.clone();
    cloud.lock().images.insert(image_id.clone(), image);
    cloud.update_server(&id, |s| s.task_state = Some("image_snapshot".into()));
    let c = cloud.clone();
    let iid = image_id.clone();
    tokio::spawn(async move { c.snapshot(id, iid).await });
    let mut r = if v >= (2, 45) {
        respond(v, StatusCode::ACCEPTED, json!({"image_id": image_id}))
    } else {
        let mut r = respond(v, StatusCode::ACCEPTED, Value::Null);
        *r.body_mut() = axum::body::Body::empty();
        r
    };
    if let Ok(loc) =
        HeaderValue::from_str(&format!("{}/image/v2/images/{image_id}", cloud.base_url))
    {
        r.headers_mut().insert("location", loc);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microversions() {
        let mut h = HeaderMap::new();
        assert_eq!(microversion(&h).unwrap(), (2, 1));
        h.insert(
            "openstack-api-version",
            HeaderValue::from_static("compute 2.60"),
        );
        assert_eq!(microversion(&h).unwrap(), (2, 60));
        h.insert(
            "openstack-api-version",
            HeaderValue::from_static("compute latest"),
        );
        assert_eq!(microversion(&h).unwrap(), MAX_MICROVERSION);
        h.insert(
            "openstack-api-version",
            HeaderValue::from_static("compute 2.200"),
        );
        assert_eq!(
            microversion(&h).unwrap_err().status,
            StatusCode::NOT_ACCEPTABLE
        );
        h.insert(
            "openstack-api-version",
            HeaderValue::from_static("compute x"),
        );
        assert_eq!(
            microversion(&h).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn name_filter() {
        assert!(name_matches("work", "lambda-worker-1"));
        assert!(name_matches("^lambda-", "lambda-worker-1"));
        assert!(!name_matches("^worker", "lambda-worker-1"));
        assert!(name_matches("-1$", "lambda-worker-1"));
        assert!(name_matches("^a$", "a"));
    }
}
