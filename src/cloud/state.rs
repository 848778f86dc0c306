//! The emulator's persistent state: projects and credentials, flavors, networks, images, key
//! pairs and servers, saved as JSON in the data dir after every change so a restart re-adopts
//! everything (no server is leaked or forgotten).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::CloudError;

/// A project with one user (password auth) and one application credential.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub user_id: String,
    pub user_name: String,
    pub password: String,
    pub app_cred_id: String,
    pub app_cred_secret: String,
    /// Instance quota (Nova's `instances`).
    pub max_instances: usize,
}

/// A Nova flavor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flavor {
    pub id: String,
    pub name: String,
    pub vcpus: u32,
    pub ram: u32,
    pub disk: u32,
}

/// A Glance image. Images made by `createImage` hold the Docker images of their server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Image {
    pub id: String,
    pub name: String,
    /// `queued`, `saving`, `active`, `killed`, `deleted`.
    pub status: String,
    pub owner: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub size: u64,
    pub metadata: BTreeMap<String, String>,
    /// Docker image references a server booted from this image starts with.
    pub docker_images: Vec<String>,
    /// `docker save` archive of those images, relative to the data dir.
    pub archive: Option<String>,
}

/// A key pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyPair {
    pub name: String,
    pub public_key: String,
    pub fingerprint: String,
    pub project_id: String,
}

/// A server's fault (Nova's `fault` field when ERROR).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    pub code: u16,
    pub message: String,
    pub created: DateTime<Utc>,
}

/// A server: a Docker engine in its own network namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Server {
    pub id: String,
    pub name: String,
    pub project_id: String,
    pub user_id: String,
    /// `BUILD`, `ACTIVE`, `ERROR`, `DELETED`.
    pub status: String,
    pub flavor_id: String,
    pub image_id: String,
    pub key_name: Option<String>,
    pub security_groups: Vec<String>,
    pub availability_zone: String,
    pub metadata: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub user_data: Option<String>,
    /// Network the server is attached to (`None` for `networks: none`).
    pub network: Option<String>,
    /// Host index on the bridge: address `<prefix>.<index>`.
    pub index: u8,
    pub address: String,
    pub mac: String,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    pub fault: Option<Fault>,
    /// True once user-data ran (it runs once per server, like cloud-init's first boot).
    pub user_data_done: bool,
    /// Task state shown while an action runs (`image_snapshot`, `deleting`).
    pub task_state: Option<String>,
}

/// A Neutron network (only the bridge the servers plug into).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub cidr: String,
}

/// Everything the emulator knows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub projects: Vec<Project>,
    pub flavors: Vec<Flavor>,
    pub networks: Vec<Network>,
    pub images: BTreeMap<String, Image>,
    pub keypairs: Vec<KeyPair>,
    pub servers: BTreeMap<String, Server>,
}

fn secret() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl State {
    /// A fresh cloud: an admin project and a `quota-test` project limited to one instance,
    /// three flavors, one network on the bridge and a base image.
    pub fn seed(bridge_cidr: &str, max_instances: usize) -> State {
        let now = Utc::now();
        let project = |name: &str, user: &str, max: usize| Project {
            id: uuid::Uuid::new_v4().simple().to_string(),
            name: name.into(),
            user_id: uuid::Uuid::new_v4().simple().to_string(),
            user_name: user.into(),
            password: secret(),
            app_cred_id: uuid::Uuid::new_v4().simple().to_string(),
            app_cred_secret: secret(),
            max_instances: max,
        };
        let admin = project("lambda", "lambda", max_instances);
        let base = Image {
            id: uuid::Uuid::new_v4().to_string(),
            name: "debian-12".into(),
            status: "active".into(),
            owner: admin.id.clone(),
            created_at: now,
            updated_at: now,
            size: 0,
            metadata: BTreeMap::new(),
            docker_images: Vec::new(),
            archive: None,
        };
        State {
            projects: vec![admin, project("quota-test", "quota-test", 1)],
            flavors: vec![
                Flavor {
                    id: "1".into(),
                    name: "m1.tiny".into(),
                    vcpus: 1,
                    ram: 512,
                    disk: 1,
                },
                Flavor {
                    id: "2".into(),
                    name: "m1.small".into(),
                    vcpus: 1,
                    ram: 2048,
                    disk: 20,
                },
                Flavor {
                    id: "3".into(),
                    name: "m1.medium".into(),
                    vcpus: 2,
                    ram: 4096,
                    disk: 40,
                },
            ],
            networks: vec![Network {
                id: uuid::Uuid::new_v4().to_string(),
                name: "lambda-net".into(),
                cidr: bridge_cidr.into(),
            }],
            images: BTreeMap::from([(base.id.clone(), base)]),
            keypairs: Vec::new(),
            servers: BTreeMap::new(),
        }
    }

    /// Loads the state file, or `None` when there is none yet.
    pub fn load(path: &Path) -> Result<Option<State>, CloudError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| CloudError::State {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CloudError::State {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        }
    }

    /// Writes the state atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<(), CloudError> {
        let err = |e: String| CloudError::State {
            path: path.to_path_buf(),
            message: e,
        };
        let tmp: PathBuf = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| err(e.to_string()))?;
        std::fs::write(&tmp, bytes).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
    }

    /// A flavor by id or name.
    pub fn flavor(&self, id_or_name: &str) -> Option<&Flavor> {
        self.flavors
            .iter()
            .find(|f| f.id == id_or_name || f.name == id_or_name)
    }

    /// A network by id or name.
    pub fn network(&self, id_or_name: &str) -> Option<&Network> {
        self.networks
            .iter()
            .find(|n| n.id == id_or_name || n.name == id_or_name)
    }

    /// Servers of a project that count against its quota.
    pub fn instances_of(&self, project_id: &str) -> usize {
        self.servers
            .values()
            .filter(|s| s.project_id == project_id && s.status != "DELETED")
            .count()
    }
}
