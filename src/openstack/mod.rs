//! A small typed OpenStack client: Keystone v3 (password and application credentials, from
//! an openrc's `OS_*` variables or clouds.yaml), the catalog, Nova (pinned microversion
//! [`compute::COMPUTE_MICROVERSION`]), Glance v2 and the bit of Neutron needed to turn network
//! names into ids. Errors are typed ([`Error`]) and carry the request id.
//!
//! ```no_run
//! # async fn f() -> lambda::openstack::Result<()> {
//! use lambda::openstack::{CloudConfig, OpenStack, ServerSpec, NetworkSpec};
//! let os = OpenStack::connect(CloudConfig::from_env()?).await?;
//! let id = os
//!     .create_server(&ServerSpec {
//!         name: "worker-1".into(),
//!         flavor: "m1.small".into(),
//!         image: "lambda-snapshot".into(),
//!         networks: NetworkSpec::Named(vec!["lambda-net".into()]),
//!         ..Default::default()
//!     })
//!     .await?;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod compute;
pub mod config;
pub mod error;
pub mod image;
pub mod network;

#[cfg(test)]
mod mock_tests;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use auth::{Catalog, Session, SessionOptions, Token};
pub use compute::{
    AbsoluteLimits, AvailabilityZone, COMPUTE_MICROVERSION, Compute, CreateServer, Flavor, KeyPair,
    Networks, Server, ServerFilter, ServerStatus, hostname_of,
};
pub use config::{AuthMethod, CloudConfig, Secret};
pub use error::{ApiContext, Error, Result};
pub use image::{Image, ImageService, ImageStatus};
pub use network::{Network, NetworkService};

/// Networks of a server to create, by name or id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetworkSpec {
    /// No network.
    #[default]
    None,
    /// Nova's `auto`.
    Auto,
    /// These networks, each a name or a uuid.
    Named(Vec<String>),
}

/// A server to create, with names where names are natural.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerSpec {
    /// Server name.
    pub name: String,
    /// Flavor name or id.
    pub flavor: String,
    /// Image name or id.
    pub image: String,
    /// Networks.
    pub networks: NetworkSpec,
    /// Key pair name (checked to exist).
    pub key_name: Option<String>,
    /// Security group names.
    pub security_groups: Vec<String>,
    /// Availability zone (checked to exist).
    pub availability_zone: Option<String>,
    /// Raw user data.
    pub user_data: Option<Vec<u8>>,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// Tags.
    pub tags: Vec<String>,
}

/// A connected cloud: the session and the service clients.
#[derive(Debug, Clone)]
pub struct OpenStack {
    session: Arc<Session>,
    compute: Compute,
    image: ImageService,
    network: Option<NetworkService>,
}

impl OpenStack {
    /// Authenticate, find the endpoints, check the compute microversion.
    pub async fn connect(config: CloudConfig) -> Result<Self> {
        Self::connect_with(config, SessionOptions::default()).await
    }

    /// [`OpenStack::connect`] with options.
    pub async fn connect_with(config: CloudConfig, options: SessionOptions) -> Result<Self> {
        let session = Arc::new(Session::new(config, options)?);
        let compute = Compute::connect(session.clone()).await?;
        let image = ImageService::connect(session.clone()).await?;
        let network = match NetworkService::connect(session.clone()).await {
            Ok(n) => Some(n),
            Err(Error::NoEndpoint { .. }) => None,
            Err(e) => return Err(e),
        };
        Ok(OpenStack {
            session,
            compute,
            image,
            network,
        })
    }

    /// The session (token, catalog).
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Nova.
    pub fn compute(&self) -> &Compute {
        &self.compute
    }

    /// Glance.
    pub fn image(&self) -> &ImageService {
        &self.image
    }

    /// Neutron, when the catalog has it.
    pub fn network(&self) -> Result<&NetworkService> {
        self.network.as_ref().ok_or_else(|| Error::NoEndpoint {
            service_type: "network".into(),
            interface: self.session.config().interface.clone(),
            region: self.session.config().region.clone(),
            available: "no network service".into(),
        })
    }

    /// Resolve names (flavor, image, networks, key pair, availability zone) to what Nova
    /// takes; every unknown name is a [`Error::NoSuchResource`] before anything is created.
    pub async fn resolve(&self, spec: &ServerSpec) -> Result<CreateServer> {
        let flavor = self.compute.find_flavor(&spec.flavor).await?;
        let image = self.image.find_image(&spec.image).await?;
        let networks = match &spec.networks {
            NetworkSpec::None => Networks::None,
            NetworkSpec::Auto => Networks::Auto,
            NetworkSpec::Named(names) => {
                let mut ids = Vec::new();
                for n in names {
                    ids.push(self.network()?.find_network(n).await?.id);
                }
                Networks::Uuids(ids)
            }
        };
        if let Some(k) = &spec.key_name {
            match self.compute.get_keypair(k).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {
                    return Err(Error::NoSuchResource {
                        resource: "key pair",
                        name: k.clone(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(az) = &spec.availability_zone {
            self.compute.find_availability_zone(az).await?;
        }
        Ok(CreateServer {
            name: spec.name.clone(),
            flavor_id: flavor.id,
            image_id: image.id,
            networks,
            key_name: spec.key_name.clone(),
            security_groups: spec.security_groups.clone(),
            availability_zone: spec.availability_zone.clone(),
            user_data: spec.user_data.clone(),
            metadata: spec.metadata.clone(),
            tags: spec.tags.clone(),
        })
    }

    /// Resolve `spec` and create the server; returns its id (not retried: see
    /// [`Compute::create_server`]).
    pub async fn create_server(&self, spec: &ServerSpec) -> Result<String> {
        let req = self.resolve(spec).await?;
        self.compute.create_server(&req).await
    }
}
