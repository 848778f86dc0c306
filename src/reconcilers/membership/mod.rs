//! The membership reconciler (in progress).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::runtime::Metrics;
use crate::store::Store;

use super::ControllersConfig;
use super::cluster::ClusterConfig;

/// Runs the membership controller until `stop`.
pub async fn run(
    _store: Store,
    _metrics: Arc<Metrics>,
    _cfg: &ControllersConfig,
    _cluster: ClusterConfig,
    _stop: CancellationToken,
) {
}
