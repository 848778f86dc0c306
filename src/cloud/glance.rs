//! Glance v2 images and Neutron v2.0 networks (the read side the platform uses).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::fault::{ApiError, Service};
use super::state::{Image, Network};
use super::{Auth, Cloud};

fn image_json(img: &Image) -> Value {
    let mut v = json!({
        "id": img.id, "name": img.name, "status": img.status, "visibility": "public", "protected": false,
        "os_hidden": false, "owner": img.owner, "size": img.size, "min_ram": 0, "min_disk": 0,
        "disk_format": "raw", "container_format": "bare", "checksum": null, "tags": [],
        "created_at": img.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "updated_at": img.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "self": format!("/v2/images/{}", img.id), "file": format!("/v2/images/{}/file", img.id),
        "schema": "/v2/schemas/image",
        // What a server booted from this image starts with (emulator-specific property).
        "docker_images": img.docker_images.join(","),
    });
    if let Some(o) = v.as_object_mut() {
        for (k, val) in &img.metadata {
            o.entry(k.clone()).or_insert(Value::String(val.clone()));
        }
    }
    v
}

/// Query of `GET /image/v2/images`.
#[derive(Debug, serde::Deserialize)]
pub struct ImageQuery {
    name: Option<String>,
    status: Option<String>,
    id: Option<String>,
}

/// `GET /image/`
pub async fn image_versions(State(cloud): State<Arc<Cloud>>) -> Json<Value> {
    Json(
        json!({"versions": [{"id": "v2.16", "status": "CURRENT", "links": [{"rel": "self", "href": format!("{}/image/v2/", cloud.base_url)}]}]}),
    )
}

/// `GET /image/v2/images`
pub async fn list_images(
    State(cloud): State<Arc<Cloud>>,
    _auth: Auth,
    Query(q): Query<ImageQuery>,
) -> Json<Value> {
    let st = cloud.lock();
    let images: Vec<Value> = st
        .images
        .values()
        .filter(|i| i.status != "deleted")
        .filter(|i| q.name.as_deref().is_none_or(|n| n == i.name))
        .filter(|i| q.status.as_deref().is_none_or(|s| s == i.status))
        .filter(|i| q.id.as_deref().is_none_or(|s| s == i.id))
        .map(image_json)
        .collect();
    Json(json!({"images": images, "first": "/v2/images", "schema": "/v2/schemas/images"}))
}

/// `GET /image/v2/images/{id}`
pub async fn get_image(
    State(cloud): State<Arc<Cloud>>,
    _auth: Auth,
    Path(id): Path<String>,
) -> Response {
    let st = cloud.lock();
    match st.images.get(&id).filter(|i| i.status != "deleted") {
        Some(i) => Json(image_json(i)).into_response(),
        None => ApiError::new(
            Service::Image,
            StatusCode::NOT_FOUND,
            format!("No image found with ID {id}"),
        )
        .into_response(),
    }
}

/// `DELETE /image/v2/images/{id}`: removes the image and its archive.
pub async fn delete_image(
    State(cloud): State<Arc<Cloud>>,
    _auth: Auth,
    Path(id): Path<String>,
) -> Response {
    let removed = cloud.lock().images.remove(&id);
    match removed {
        Some(img) => {
            if let Some(a) = img.archive {
                let _ = std::fs::remove_file(cloud.hosts.data_dir.join(a));
            }
            cloud.save();
            StatusCode::NO_CONTENT.into_response()
        }
        None => ApiError::new(
            Service::Image,
            StatusCode::NOT_FOUND,
            format!("No image found with ID {id}"),
        )
        .into_response(),
    }
}

fn network_json(n: &Network, project: &str) -> Value {
    json!({"id": n.id, "name": n.name, "status": "ACTIVE", "admin_state_up": true, "shared": true,
           "subnets": [], "tenant_id": project, "project_id": project, "router:external": false,
           "mtu": 1500, "port_security_enabled": false, "description": format!("bridge {}", n.cidr)})
}

/// Query of `GET /network/v2.0/networks`.
#[derive(Debug, serde::Deserialize)]
pub struct NetworkQuery {
    name: Option<String>,
    id: Option<String>,
}

/// `GET /network/`
pub async fn network_versions(State(cloud): State<Arc<Cloud>>) -> Json<Value> {
    Json(
        json!({"versions": [{"id": "v2.0", "status": "CURRENT", "links": [{"rel": "self", "href": format!("{}/network/v2.0/", cloud.base_url)}]}]}),
    )
}

/// `GET /network/v2.0/networks`
pub async fn list_networks(
    State(cloud): State<Arc<Cloud>>,
    auth: Auth,
    Query(q): Query<NetworkQuery>,
) -> Json<Value> {
    let st = cloud.lock();
    let nets: Vec<Value> = st
        .networks
        .iter()
        .filter(|n| q.name.as_deref().is_none_or(|x| x == n.name))
        .filter(|n| q.id.as_deref().is_none_or(|x| x == n.id))
        .map(|n| network_json(n, &auth.project_id))
        .collect();
    Json(json!({"networks": nets}))
}

/// `GET /network/v2.0/networks/{id}`
pub async fn get_network(
    State(cloud): State<Arc<Cloud>>,
    auth: Auth,
    Path(id): Path<String>,
) -> Response {
    let st = cloud.lock();
    match st.networks.iter().find(|n| n.id == id) {
        Some(n) => Json(json!({"network": network_json(n, &auth.project_id)})).into_response(),
        None => ApiError::new(
            Service::Network,
            StatusCode::NOT_FOUND,
            format!("Network {id} could not be found."),
        )
        .into_response(),
    }
}
