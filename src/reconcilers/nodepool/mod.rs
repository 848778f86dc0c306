//! The nodepool reconciler (in progress).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::runtime::Metrics;
use crate::store::Store;

use super::ControllersConfig;

/// Runs the nodepool controller until `stop`.
pub async fn run(
    _store: Store,
    _metrics: Arc<Metrics>,
    _cfg: &ControllersConfig,
    _stop: CancellationToken,
) {
}
