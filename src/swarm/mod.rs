//! A typed client of the Docker Engine API for Swarm (design §3 "swarm"), over bollard with
//! `negotiate_version()` (Debian's dockerd 20.10 speaks API 1.41): swarm init and join tokens,
//! nodes, services (updates with the current version index, retried on "update out of
//! sequence"), tasks and their published ports, configs, secrets, the event stream and logs.
//!
//! Every call maps errors to [`SwarmError`] naming the object and the operation; nothing here
//! panics on anything Docker returns.

mod configs;
mod error;
mod events;
pub mod labels;
mod nodes;
mod services;

use std::time::Duration;

use bollard::Docker;

pub use error::SwarmError;
pub use events::{EventKind, SwarmEvent};
pub use nodes::node_address;
pub use services::{PublishedPort, TaskFilter, published_ports, task_state, task_time};

/// Seconds a single Docker API request may take (the event stream and logs are not bounded).
const REQUEST_TIMEOUT_SECS: u64 = 30;

/// A connection to one Docker daemon (a Swarm manager for the Swarm calls). Cheap to clone.
#[derive(Clone)]
pub struct Swarm {
    docker: Docker,
    address: String,
}

impl std::fmt::Debug for Swarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swarm")
            .field("address", &self.address)
            .finish()
    }
}

impl Swarm {
    /// Connects to `address` (`unix:///path`, `tcp://host:port` or `http://host:port`), or to
    /// `$DOCKER_HOST` when `None`, and negotiates the API version with the daemon (so it must
    /// answer: an absent daemon is an error here, not at the first real call).
    pub async fn connect(address: Option<&str>) -> Result<Swarm, SwarmError> {
        let address = match address {
            Some(a) => a.to_string(),
            None => std::env::var("DOCKER_HOST").map_err(|_| SwarmError::Connect {
                address: "$DOCKER_HOST".into(),
                message: "DOCKER_HOST is not set and no address was given".into(),
            })?,
        };
        let connect_err = |message: String| SwarmError::Connect {
            address: address.clone(),
            message,
        };
        let docker = if address.starts_with("unix://") {
            Docker::connect_with_unix(&address, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        } else if address.starts_with("tcp://") || address.starts_with("http://") {
            Docker::connect_with_http(&address, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        } else {
            return Err(connect_err(
                "expected unix:///path, tcp://host:port or http://host:port".into(),
            ));
        }
        .map_err(|e| connect_err(e.to_string()))?;
        // Without negotiation bollard speaks its own (newer) API version, which dockerd 20.10
        // rejects.
        let docker = tokio::time::timeout(
            Duration::from_secs(REQUEST_TIMEOUT_SECS),
            docker.negotiate_version(),
        )
        .await
        .map_err(|_| connect_err("no answer to the version negotiation".into()))?
        .map_err(|e| connect_err(e.to_string()))?;
        Ok(Swarm { docker, address })
    }

    /// The underlying bollard client, for calls this wrapper does not cover.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The address this client talks to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The API version in use after negotiation, e.g. `1.41`.
    pub fn api_version(&self) -> String {
        self.docker.client_version().to_string()
    }
}

fn opt_string(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}
