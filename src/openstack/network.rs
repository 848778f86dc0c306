//! Neutron v2.0: networks by name or id (to turn a network name into the uuid Nova wants).

use std::sync::Arc;

use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};

use super::auth::{Request, Session};
use super::compute::{join, looks_like_uuid, unique};
use super::error::Result;
use super::image::versioned;

/// A Neutron network.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Network {
    /// Id.
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// `ACTIVE`, `DOWN`, ...
    #[serde(default)]
    pub status: String,
    /// Shared with all projects.
    #[serde(default)]
    pub shared: bool,
    /// External (floating IP pool).
    #[serde(default, rename = "router:external")]
    pub external: bool,
    /// Subnet ids.
    #[serde(default)]
    pub subnets: Vec<String>,
    /// Owner project.
    #[serde(default)]
    pub project_id: Option<String>,
}

/// The Neutron client of a session.
#[derive(Debug, Clone)]
pub struct NetworkService {
    session: Arc<Session>,
    /// `.../v2.0/`
    base: Url,
}

impl NetworkService {
    /// The network service of the catalog.
    pub async fn connect(session: Arc<Session>) -> Result<Self> {
        let base = versioned(session.endpoint("network").await?, "v2.0");
        Ok(NetworkService { session, base })
    }

    /// The `.../v2.0/` URL.
    pub fn endpoint(&self) -> &Url {
        &self.base
    }

    /// A network by id.
    pub async fn get_network(&self, id: &str) -> Result<Network> {
        #[derive(Deserialize)]
        struct W {
            network: Network,
        }
        let url = join(&self.base, &["networks", id])?;
        Ok(self
            .session
            .send(Request::new("network", Method::GET, url))
            .await?
            .json::<W>()?
            .network)
    }

    /// Networks visible to the project with exactly this name.
    pub async fn list_networks_by_name(&self, name: &str) -> Result<Vec<Network>> {
        #[derive(Deserialize)]
        struct W {
            networks: Vec<Network>,
        }
        let mut url = join(&self.base, &["networks"])?;
        url.query_pairs_mut().append_pair("name", name);
        Ok(self
            .session
            .send(Request::new("network", Method::GET, url))
            .await?
            .json::<W>()?
            .networks)
    }

    /// A network by id (when the string is a uuid), else by exact name.
    pub async fn find_network(&self, name_or_id: &str) -> Result<Network> {
        if looks_like_uuid(name_or_id) {
            match self.get_network(name_or_id).await {
                Ok(n) => return Ok(n),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        let matches = self.list_networks_by_name(name_or_id).await?;
        unique("network", name_or_id, matches, |n| n.id.clone())
    }
}
