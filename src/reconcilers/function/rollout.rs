//! Updates Swarm rolled back, and when to write them again.
//!
//! A service update fails over to the previous spec (`failure_action: rollback`, start-first,
//! so the old replicas keep serving) when its new tasks fail. The cause may be the function
//! (code that crashes: writing it again fails again) or the cluster (the node the new task was
//! placed on went away mid-rollout: writing it again succeeds). So a rolled-back update is not
//! written again at once, nor never: after a backoff of [`RETRY`] doubling per try up to
//! [`RETRY_MAX`], for as long as the spec stays the same. The API does not return the spec
//! that was rolled back, so what was written is remembered in memory (a new leader makes one
//! more attempt at once).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bollard::models::{Service, ServiceUpdateStatusStateEnum};
use tokio::time::Instant;

use crate::api::ObjectKey;
use crate::reconcilers::cluster::backoff;
use crate::swarm::labels::SPEC_HASH;

/// First wait before a rolled-back update is written again.
pub const RETRY: Duration = Duration::from_secs(30);
/// Longest wait between two attempts of one update.
pub const RETRY_MAX: Duration = Duration::from_secs(600);

/// The update last written for a function: its spec hash, how many times in a row, when last.
#[derive(Debug, Clone)]
struct Attempt {
    hash: String,
    tries: u32,
    at: Instant,
}

/// What the reconciles remember of the updates they wrote.
#[derive(Debug, Default)]
pub struct Attempts(Mutex<HashMap<ObjectKey, Attempt>>);

/// True when the service reports a rollback (started, paused or completed).
pub fn rolling_back(svc: &Service) -> bool {
    matches!(
        svc.update_status.as_ref().and_then(|u| u.state),
        Some(
            ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED
                | ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED
                | ServiceUpdateStatusStateEnum::ROLLBACK_STARTED
        )
    )
}

/// The spec hash the service runs (its `lambda.spec-hash` label).
fn running(svc: &Service) -> Option<&str> {
    svc.spec
        .as_ref()?
        .labels
        .as_ref()?
        .get(SPEC_HASH)
        .map(String::as_str)
}

/// Whether an update rolled back after `tries` attempts, the last one `since` ago, may be
/// written again.
pub fn retry_due(tries: u32, since: Duration) -> bool {
    since >= backoff(RETRY, RETRY_MAX, tries)
}

impl Attempts {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Attempt>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers that the update to `hash` was written now.
    pub fn wrote(&self, key: &ObjectKey, hash: &str) {
        let now = Instant::now();
        self.map()
            .entry(key.clone())
            .and_modify(|a| {
                a.tries = if a.hash == hash { a.tries + 1 } else { 1 };
                a.hash = hash.to_string();
                a.at = now;
            })
            .or_insert_with(|| Attempt {
                hash: hash.to_string(),
                tries: 1,
                at: now,
            });
    }

    /// Forgets a function (deleted).
    pub fn forget(&self, key: &ObjectKey) {
        self.map().remove(key);
    }

    /// True when Swarm rolled back the update to `desired_hash` this controller wrote (the
    /// service reports a rollback and runs another spec) and it is not yet time to write it
    /// again.
    pub fn holding(&self, key: &ObjectKey, svc: &Service, desired_hash: &str) -> bool {
        if !rolling_back(svc) || running(svc) == Some(desired_hash) {
            return false;
        }
        self.map()
            .get(key)
            .is_some_and(|a| a.hash == desired_hash && !retry_due(a.tries, a.at.elapsed()))
    }

    /// True when Swarm rolled back the update to `desired_hash` this controller wrote, due for
    /// another attempt or not (what the status reports).
    pub fn rolled_back(&self, key: &ObjectKey, svc: &Service, desired_hash: &str) -> bool {
        rolling_back(svc)
            && running(svc) != Some(desired_hash)
            && self.map().get(key).is_some_and(|a| a.hash == desired_hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ServiceUpdateStatus;

    fn svc(state: Option<ServiceUpdateStatusStateEnum>, running: &str) -> Service {
        Service {
            spec: Some(bollard::models::ServiceSpec {
                labels: Some(std::collections::HashMap::from([(
                    SPEC_HASH.to_string(),
                    running.to_string(),
                )])),
                ..Default::default()
            }),
            update_status: state.map(|s| ServiceUpdateStatus {
                state: Some(s),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn retries_back_off_doubling_and_capped() {
        assert!(!retry_due(1, Duration::from_secs(29)));
        assert!(retry_due(1, RETRY));
        assert!(!retry_due(2, Duration::from_secs(59)));
        assert!(retry_due(2, Duration::from_secs(60)));
        assert!(!retry_due(9, Duration::from_secs(599)));
        assert!(retry_due(50, RETRY_MAX));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rolled_back_update_is_held_then_written_again_and_a_new_spec_at_once() {
        use ServiceUpdateStatusStateEnum::{COMPLETED, ROLLBACK_COMPLETED};
        let a = Attempts::default();
        let k = ObjectKey::new("ns", "f");
        let back = svc(Some(ROLLBACK_COMPLETED), "h1");
        // Nothing written by this controller: a rollback of someone else's update.
        assert!(!a.holding(&k, &back, "h2"));
        a.wrote(&k, "h2");
        assert!(a.holding(&k, &back, "h2"));
        assert!(a.rolled_back(&k, &back, "h2"));
        // Not a rollback, or the desired spec runs after all: nothing held.
        assert!(!a.holding(&k, &svc(Some(COMPLETED), "h1"), "h2"));
        assert!(!a.holding(&k, &svc(Some(ROLLBACK_COMPLETED), "h2"), "h2"));
        // A changed spec is written at once.
        assert!(!a.holding(&k, &back, "h3"));
        tokio::time::advance(RETRY).await;
        assert!(!a.holding(&k, &back, "h2"), "due after 30 s");
        a.wrote(&k, "h2");
        tokio::time::advance(RETRY).await;
        assert!(a.holding(&k, &back, "h2"), "second try waits 60 s");
        tokio::time::advance(RETRY).await;
        assert!(!a.holding(&k, &back, "h2"));
        a.forget(&k);
        assert!(!a.rolled_back(&k, &back, "h2"));
    }
}
