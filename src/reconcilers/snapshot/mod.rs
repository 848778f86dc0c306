//! The snapshot reconciler: a `SnapshotImage` becomes a Glance image built on a builder server
//! (see the module docs of the finished implementation).

pub mod endpoint;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::runtime::Metrics;
use crate::store::Store;

use super::ControllersConfig;
use super::cluster::ClusterConfig;

/// Runs the snapshot controller until `stop`.
pub async fn run(
    _store: Store,
    _metrics: Arc<Metrics>,
    _cfg: &ControllersConfig,
    _cluster: ClusterConfig,
    _stop: CancellationToken,
) {
    // TODO(snapshot): implemented by the snapshot work.
}
