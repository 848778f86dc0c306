//! `lambda cloud`: a local OpenStack-compatible endpoint covering exactly what the platform's
//! client uses — Keystone v3 tokens and catalog, Nova servers/flavors/key pairs/actions with
//! microversions and Nova's error bodies, Glance images, Neutron networks — whose servers are
//! real Docker engines, one per network namespace on a bridge (see [`hosts`]).
//!
//! Invariants: every state change is persisted before it is acted on, so a restart re-adopts
//! every engine (or restarts it on its old data) and finishes every deletion; nothing leaks.

pub mod capacity;
mod compute;
mod fault;
mod glance;
mod hosts;
mod identity;
pub mod notify;
pub mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post};
use base64::Engine;
use chrono::{DateTime, Utc};

use fault::{ApiError, Service};
use hosts::Hosts;
use state::{Fault, Server, State};

/// Errors of the emulator itself (not API errors, which are answered to clients).
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("state file {path}: {message}")]
    State { path: PathBuf, message: String },
    #[error("{what}: {message}")]
    Host { what: String, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid bridge CIDR {0:?}: expected a.b.c.1/24")]
    Cidr(String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Settings of `lambda cloud`.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub bridge: String,
    /// Gateway address and prefix of the bridge, `10.251.0.1/24`.
    pub bridge_cidr: String,
    /// First host index handed to servers (lower ones are left to other tools).
    pub first_host: u8,
    pub max_instances: usize,
    pub token_ttl: Duration,
    /// Where Nova's notifications go (`amqp://…`); none are sent without it.
    pub notification_url: Option<String>,
    /// How long a server stays in BUILD before its engine starts, standing in for a VM's boot
    /// (zero: at once). Lets tests see what callers see while a node boots.
    pub boot_delay: Duration,
}

/// An issued token.
#[derive(Debug, Clone)]
pub struct Token {
    pub project_id: String,
    pub user_id: String,
    pub expires: DateTime<Utc>,
}

/// The running emulator, shared by handlers and background tasks.
pub struct Cloud {
    state: Mutex<State>,
    state_path: PathBuf,
    hosts: Hosts,
    tokens: Mutex<HashMap<String, Token>>,
    /// Serializes writes of the state file (they share one temp file).
    save_lock: Mutex<()>,
    base_url: String,
    token_ttl: chrono::Duration,
    first_host: u8,
    notifier: Option<notify::Notifier>,
    boot_delay: Duration,
    /// Per server: held while its engine is brought up or torn down, so that a server deleted
    /// while it boots is torn down only after its engine and namespace exist (never before,
    /// which would leave them behind), and a boot never starts on a deleted server.
    host_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The caller, from a valid `X-Auth-Token`.
#[derive(Debug, Clone)]
pub struct Auth {
    pub project_id: String,
    pub user_id: String,
}

impl FromRequestParts<Arc<Cloud>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        cloud: &Arc<Cloud>,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = || {
            ApiError::new(
                Service::Compute,
                StatusCode::UNAUTHORIZED,
                "The request you have made requires authentication.",
            )
        };
        let token = parts
            .headers
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(unauthorized)?;
        let tokens = cloud.tokens.lock().unwrap_or_else(|p| p.into_inner());
        match tokens.get(token) {
            Some(t) if t.expires > Utc::now() => Ok(Auth {
                project_id: t.project_id.clone(),
                user_id: t.user_id.clone(),
            }),
            _ => Err(unauthorized()),
        }
    }
}

impl Cloud {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-written (all edits are
        // single assignments), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self) {
        let _guard = self.save_lock.lock().unwrap_or_else(|p| p.into_inner());
        let st = self.lock().clone();
        if let Err(e) = st.save(&self.state_path) {
            tracing::error!(error = %e, "cannot persist cloud state");
        }
    }

    fn update_server(&self, id: &str, f: impl FnOnce(&mut Server)) {
        {
            let mut st = self.lock();
            if let Some(s) = st.servers.get_mut(id) {
                f(s);
                s.updated = Utc::now();
            }
        }
        self.save();
    }

    /// The lock of server `id`'s host resources (see `host_locks`).
    fn host_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.host_locks.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(id.to_string()).or_default().clone()
    }

    /// True when server `id` is deleted (or forgotten): nothing may be started for it.
    fn deleted(&self, id: &str) -> bool {
        self.lock()
            .servers
            .get(id)
            .is_none_or(|s| s.status == "DELETED")
    }

    fn fail(&self, id: &str, message: String) {
        tracing::warn!(server = id, %message, "server failed");
        self.update_server(id, |s| {
            s.status = "ERROR".into();
            s.task_state = None;
            s.fault = Some(Fault {
                code: 500,
                message,
                created: Utc::now(),
            });
        });
    }

    /// Boots a server: namespace, engine, the image's Docker images, then user-data.
    async fn boot(self: Arc<Self>, id: String) {
        let Some((server, archive)) = ({
            let st = self.lock();
            st.servers.get(&id).map(|s| {
                let archive = st.images.get(&s.image_id).and_then(|i| i.archive.clone());
                (s.clone(), archive)
            })
        }) else {
            return;
        };
        if !self.boot_delay.is_zero() {
            tokio::time::sleep(self.boot_delay).await;
        }
        let lock = self.host_lock(&id);
        let host = lock.lock().await;
        // Deleted while it waited: the teardown has nothing to undo, so nothing is started.
        if self.deleted(&id) {
            return;
        }
        let cap = {
            let st = self.lock();
            st.flavor(&server.flavor_id).map(|f| capacity::Capacity {
                memory_mb: f.ram,
                vcpus: f.vcpus,
            })
        };
        let Some(cap) = cap else {
            return self.fail(
                &id,
                format!(
                    "Build of instance {id} aborted: flavor {} not found",
                    server.flavor_id
                ),
            );
        };
        if let Err(e) = self.hosts.start_engine(&server, cap).await {
            return self.fail(&id, format!("Build of instance {id} aborted: {e}"));
        }
        if let Some(a) = archive {
            let path = self.hosts.data_dir.join(a);
            if std::fs::metadata(&path).is_ok_and(|m| m.len() > 0)
                && let Err(e) = self.hosts.load_images(&server, &path).await
            {
                return self.fail(
                    &id,
                    format!(
                        "Build of instance {id} aborted: loading the image's Docker images: {e}"
                    ),
                );
            }
        }
        // Deleted while building: the teardown (waiting for the host lock) undoes it.
        if self.deleted(&id) {
            return;
        }
        self.update_server(&id, |s| {
            s.status = "ACTIVE".into();
            s.task_state = None;
        });
        drop(host);
        self.notify("instance.create.end", &id).await;
        self.run_user_data_once(&server).await;
    }

    /// Sends a notification about server `id` (as it is now) when a transport URL is set.
    async fn notify(&self, event_type: &str, id: &str) {
        let Some(n) = &self.notifier else { return };
        let found = {
            let st = self.lock();
            st.servers.get(id).map(|s| {
                let flavor = st.flavors.iter().find(|f| f.id == s.flavor_id).cloned();
                (s.clone(), flavor)
            })
        };
        if let Some((server, flavor)) = found {
            n.instance(event_type, &server, flavor.as_ref()).await;
        }
    }

    async fn run_user_data_once(&self, server: &Server) {
        if server.user_data_done {
            return;
        }
        if let Some(ud) = &server.user_data {
            match base64::engine::general_purpose::STANDARD.decode(ud) {
                Ok(script)
                    if script.starts_with(b"#!") || !script.starts_with(b"#cloud-config") =>
                {
                    if let Err(e) = self.hosts.run_user_data(server, &script).await {
                        tracing::warn!(server = %server.id, error = %e, "user-data did not start");
                    }
                }
                _ => {
                    tracing::warn!(server = %server.id, "user-data is not a shell script; #cloud-config is not supported")
                }
            }
        }
        self.update_server(&server.id, |s| s.user_data_done = true);
    }

    /// Tears a deleted server down and forgets it.
    async fn teardown(self: Arc<Self>, id: String) {
        let lock = self.host_lock(&id);
        let _host = lock.lock().await;
        let Some(server) = self.lock().servers.get(&id).cloned() else {
            return;
        };
        if let Err(e) = self.hosts.destroy(&server).await {
            tracing::error!(server = %id, error = %e, "teardown failed; retried at next start");
            return;
        }
        self.notify("instance.delete.end", &id).await;
        self.lock().servers.remove(&id);
        self.host_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        self.save();
    }

    /// `createImage`: saves the server's Docker images as the new image's content.
    async fn snapshot(self: Arc<Self>, server_id: String, image_id: String) {
        let set_image = |status: &str, refs: Option<(Vec<String>, String, u64)>| {
            let mut st = self.lock();
            if let Some(img) = st.images.get_mut(&image_id) {
                img.status = status.into();
                img.updated_at = Utc::now();
                if let Some((refs, archive, size)) = refs {
                    img.docker_images = refs;
                    img.archive = Some(archive);
                    img.size = size;
                }
            }
        };
        set_image("saving", None);
        self.save();
        let server = self.lock().servers.get(&server_id).cloned();
        let rel = format!("images/{image_id}.tar");
        let out = self.hosts.data_dir.join(&rel);
        let result = match server {
            None => Err(CloudError::Host {
                what: "snapshot".into(),
                message: "server vanished".into(),
            }),
            Some(s) => {
                let _ = std::fs::create_dir_all(self.hosts.data_dir.join("images"));
                self.hosts.snapshot(&s, &out).await
            }
        };
        match result {
            Ok(refs) => {
                let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
                set_image("active", Some((refs, rel, size)));
            }
            Err(e) => {
                tracing::warn!(image = %image_id, error = %e, "snapshot failed");
                set_image("killed", None);
            }
        }
        self.update_server(&server_id, |s| s.task_state = None);
    }

    /// After a restart: adopt running engines, restart dead ones, finish deletions.
    async fn adopt(self: &Arc<Self>) {
        let servers: Vec<Server> = self.lock().servers.values().cloned().collect();
        for s in servers {
            match s.status.as_str() {
                "DELETED" => {
                    tokio::spawn(self.clone().teardown(s.id.clone()));
                }
                "ACTIVE" | "BUILD" if self.hosts.is_running(&s) => {
                    tracing::info!(server = %s.id, "re-adopted running engine");
                    if s.status == "BUILD" {
                        self.update_server(&s.id, |s| {
                            s.status = "ACTIVE".into();
                            s.task_state = None;
                        });
                    }
                    self.run_user_data_once(&s).await;
                }
                "ACTIVE" | "BUILD" => {
                    tracing::info!(server = %s.id, "engine not running; starting it on its old data");
                    tokio::spawn(self.clone().boot(s.id.clone()));
                }
                _ => {}
            }
            if s.task_state.as_deref() == Some("image_snapshot") {
                self.update_server(&s.id, |s| s.task_state = None);
            }
        }
        let mut st = self.lock();
        for img in st.images.values_mut() {
            if img.status == "saving" || img.status == "queued" {
                img.status = "killed".into();
            }
        }
        drop(st);
        self.save();
    }
}

fn write(path: &Path, content: &str) -> Result<(), CloudError> {
    std::fs::write(path, content).map_err(|source| CloudError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `openrc`, `openrc-appcred`, `openrc-quota-test` and `clouds.yaml` for the projects.
fn write_client_config(
    data_dir: &Path,
    base: &str,
    st: &State,
    notification_url: Option<&str>,
) -> Result<(), CloudError> {
    let auth_url = format!("{base}/identity/v3");
    let mut clouds = String::from("clouds:\n");
    for p in &st.projects {
        let file = if p.name == "lambda" {
            "openrc".to_string()
        } else {
            format!("openrc-{}", p.name)
        };
        write(
            &data_dir.join(file),
            &format!(
                "# lambda cloud, project {name}\nexport OS_AUTH_URL={auth_url}\nexport OS_IDENTITY_API_VERSION=3\nexport OS_USERNAME={user}\nexport OS_PASSWORD={pw}\nexport OS_PROJECT_NAME={name}\nexport OS_USER_DOMAIN_NAME=Default\nexport OS_PROJECT_DOMAIN_NAME=Default\nexport OS_REGION_NAME=RegionOne\nexport OS_INTERFACE=public\n",
                name = p.name,
                user = p.user_name,
                pw = p.password
            ),
        )?;
        if p.name == "lambda" {
            write(
                &data_dir.join("openrc-appcred"),
                &format!(
                    "# lambda cloud, application credential of project lambda\nexport OS_AUTH_TYPE=v3applicationcredential\nexport OS_AUTH_URL={auth_url}\nexport OS_IDENTITY_API_VERSION=3\nexport OS_APPLICATION_CREDENTIAL_ID={}\nexport OS_APPLICATION_CREDENTIAL_SECRET={}\nexport OS_REGION_NAME=RegionOne\nexport OS_INTERFACE=public\n",
                    p.app_cred_id, p.app_cred_secret
                ),
            )?;
        }
        let cloud_name = if p.name == "lambda" {
            "lambda-cloud".to_string()
        } else {
            format!("lambda-cloud-{}", p.name)
        };
        clouds.push_str(&format!(
            "  {cloud_name}:\n    auth:\n      auth_url: {auth_url}\n      username: {}\n      password: {}\n      project_name: {}\n      user_domain_name: Default\n      project_domain_name: Default\n    region_name: RegionOne\n    interface: public\n    identity_api_version: 3\n",
            p.user_name, p.password, p.name
        ));
    }
    write(&data_dir.join("clouds.yaml"), &clouds)?;
    // The contract suite's description of this target (tests/openstack_contract.rs).
    let d = data_dir.display();
    write(
        &data_dir.join("env"),
        &format!(
            "export LAMBDA_OS_OPENRC={d}/openrc\nexport LAMBDA_OS_OPENRC_APPCRED={d}/openrc-appcred\nexport LAMBDA_OS_OPENRC_QUOTA_TEST={d}/openrc-quota-test\nexport LAMBDA_OS_QUOTA_TEST_INSTANCES_QUOTA=1\nexport LAMBDA_OS_CLOUDS_YAML={d}/clouds.yaml\nexport LAMBDA_OS_CLOUD=lambda-cloud\nexport LAMBDA_OS_FLAVOR=m1.tiny\nexport LAMBDA_OS_IMAGE=debian-12\nexport LAMBDA_OS_NETWORK=lambda-net\n{}",
            notification_url
                .map(|u| format!("export LAMBDA_OS_NOTIFICATION_URL={u}\n"))
                .unwrap_or_default()
        ),
    )
}

/// The HTTP routes of all four services.
pub fn router(cloud: Arc<Cloud>) -> Router {
    Router::new()
        .route("/identity/v3", get(identity::version))
        .route("/identity/v3/", get(identity::version))
        .route(
            "/identity/v3/auth/tokens",
            post(identity::issue_token).delete(identity::revoke_token),
        )
        .route("/compute", get(compute::versions))
        .route("/compute/", get(compute::versions))
        .route("/compute/v2.1", get(compute::version))
        .route("/compute/v2.1/", get(compute::version))
        .route("/compute/v2.1/flavors", get(compute::list_flavors))
        .route("/compute/v2.1/flavors/detail", get(compute::list_flavors))
        .route("/compute/v2.1/flavors/{id}", get(compute::get_flavor))
        .route("/compute/v2.1/limits", get(compute::limits))
        .route(
            "/compute/v2.1/os-keypairs",
            get(compute::list_keypairs).post(compute::create_keypair),
        )
        .route(
            "/compute/v2.1/os-keypairs/{name}",
            get(compute::get_keypair),
        )
        .route(
            "/compute/v2.1/os-availability-zone",
            get(compute::availability_zones),
        )
        .route(
            "/compute/v2.1/servers",
            get(compute::list_servers).post(compute::create_server),
        )
        .route(
            "/compute/v2.1/servers/detail",
            get(compute::list_servers_detail),
        )
        .route(
            "/compute/v2.1/servers/{id}",
            get(compute::get_server).delete(compute::delete_server),
        )
        .route(
            "/compute/v2.1/servers/{id}/action",
            post(compute::server_action),
        )
        .route("/image", get(glance::image_versions))
        .route("/image/", get(glance::image_versions))
        .route("/image/v2/images", get(glance::list_images))
        .route(
            "/image/v2/images/{id}",
            get(glance::get_image).delete(glance::delete_image),
        )
        .route("/network", get(glance::network_versions))
        .route("/network/", get(glance::network_versions))
        .route("/network/v2.0/networks", get(glance::list_networks))
        .route("/network/v2.0/networks/{id}", get(glance::get_network))
        .layer(axum::middleware::map_response(add_request_id))
        .with_state(cloud)
}

/// Every OpenStack response carries a request id; errors already have one.
async fn add_request_id(mut resp: axum::response::Response) -> axum::response::Response {
    if !resp.headers().contains_key("x-openstack-request-id")
        && let Ok(v) = axum::http::HeaderValue::from_str(&fault::request_id())
    {
        resp.headers_mut().insert("x-openstack-request-id", v);
    }
    resp
}

/// Starts the emulator: loads or seeds state, prepares the bridge, re-adopts servers, writes the
/// client configuration and serves until `shutdown` resolves. Engines keep running afterwards.
pub async fn run(
    cfg: CloudConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CloudError> {
    let (gateway, prefix) = cfg
        .bridge_cidr
        .strip_suffix("/24")
        .and_then(|g| {
            g.rsplit_once('.')
                .map(|(p, _)| (g.to_string(), p.to_string()))
        })
        .ok_or_else(|| CloudError::Cidr(cfg.bridge_cidr.clone()))?;
    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| CloudError::Write {
        path: cfg.data_dir.clone(),
        source,
    })?;
    let state_path = cfg.data_dir.join("state.json");
    let state = match State::load(&state_path)? {
        Some(s) => s,
        None => {
            let s = State::seed(&cfg.bridge_cidr, cfg.max_instances);
            s.save(&state_path)?;
            s
        }
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| CloudError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| CloudError::Listen {
        addr: cfg.listen,
        source,
    })?;
    let base_url = format!("http://{addr}");
    write_client_config(
        &cfg.data_dir,
        &base_url,
        &state,
        cfg.notification_url.as_deref(),
    )?;
    let hosts = Hosts {
        data_dir: cfg.data_dir.clone(),
        bridge: cfg.bridge.clone(),
        gateway,
        prefix,
        cgroups: capacity::Cgroups::default(),
    };
    hosts.install_launcher()?;
    hosts.ensure_bridge().await?;
    let cloud = Arc::new(Cloud {
        state: Mutex::new(state),
        state_path,
        hosts,
        tokens: Mutex::new(HashMap::new()),
        save_lock: Mutex::new(()),
        base_url: base_url.clone(),
        token_ttl: chrono::Duration::from_std(cfg.token_ttl).unwrap_or(chrono::Duration::hours(1)),
        first_host: cfg.first_host,
        notifier: cfg.notification_url.clone().map(notify::Notifier::new),
        boot_delay: cfg.boot_delay,
        host_locks: Mutex::default(),
    });
    cloud.adopt().await;
    tracing::info!(%base_url, data_dir = %cfg.data_dir.display(), "lambda cloud serving");
    eprintln!(
        "lambda cloud listening on {base_url}; credentials in {}/openrc and clouds.yaml",
        cfg.data_dir.display()
    );
    axum::serve(listener, router(cloud))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| CloudError::Listen { addr, source })
}
