//! The reconcilers the `lambda controller` process runs, one module each (design §3).

pub mod gc;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::runtime::Metrics;
use crate::store::Store;

/// Settings shared by the registered controllers.
#[derive(Debug, Clone)]
pub struct ControllersConfig {
    /// Namespace to watch; all when `None`.
    pub namespace: Option<String>,
    /// How long events live.
    pub event_ttl: Duration,
    /// Every object is reconciled at least this often.
    pub resync: Duration,
}

impl Default for ControllersConfig {
    fn default() -> Self {
        ControllersConfig {
            namespace: None,
            event_ttl: crate::runtime::events::DEFAULT_EVENT_TTL,
            resync: Duration::from_secs(300),
        }
    }
}

/// Runs every registered controller until `stop` (graceful: runs in flight finish).
pub async fn run_all(
    store: Store,
    metrics: Arc<Metrics>,
    cfg: ControllersConfig,
    stop: CancellationToken,
) {
    gc::run(store, metrics, &cfg, stop).await;
}
