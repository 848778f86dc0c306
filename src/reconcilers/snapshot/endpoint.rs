//! The builder endpoint the controller serves to snapshot builder servers: runtime image
//! download and phone home, both authorised by the build's one-time token.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

use super::super::cluster::ClusterConfig;

/// Errors of the builder endpoint.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds `addr` and serves the builder endpoint until `stop`; returns the bound address and
/// the serving task.
pub async fn serve(
    addr: SocketAddr,
    _store: Store,
    _cluster: ClusterConfig,
    _stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), EndpointError> {
    // TODO(snapshot): implemented by the snapshot work.
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| EndpointError::Listen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| EndpointError::Listen { addr, source })?;
    Ok((bound, tokio::spawn(async move { drop(listener) })))
}
