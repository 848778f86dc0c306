//! The event recorder: publishes [`Event`](crate::api::Event)s about objects, aggregating
//! repeats (same object, type, reason and message → one event with a growing `count`), each
//! stored on an etcd lease so it expires (default 1 h after its last occurrence, give or take
//! the lease-sharing window below).

use std::time::{Duration, Instant};

use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::api::{EventSpec, InvolvedObject, Object, ObjectMeta, Resource};
use crate::store::{Store, StoreError};

pub use crate::api::EventType;

/// Errors of the recorder.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("granting an event lease: {0}")]
    Lease(#[source] etcd_client::Error),
    #[error("recording event {name}: {source}")]
    Store {
        name: String,
        #[source]
        source: StoreError,
    },
    #[error("recording event {name}: still conflicting after {attempts} attempts")]
    Contended { name: String, attempts: u32 },
}

/// Publishes events for one component.
///
/// Invariant: events written within one tenth of the TTL share one lease, so a busy controller
/// holds a handful of leases, not one per event; every event lives between 0.9 × TTL and TTL
/// after its last occurrence.
pub struct Recorder {
    store: Store,
    component: String,
    ttl: Duration,
    lease: Mutex<Option<(i64, Instant)>>,
}

/// The default lifetime of an event.
pub const DEFAULT_EVENT_TTL: Duration = Duration::from_secs(3600);

impl Recorder {
    /// A recorder reporting as `component` (e.g. `controller/gc`), events living `ttl`.
    pub fn new(store: Store, component: &str, ttl: Duration) -> Self {
        Recorder {
            store,
            component: component.to_string(),
            ttl: ttl.max(Duration::from_secs(2)),
            lease: Mutex::new(None),
        }
    }

    async fn lease(&self) -> Result<i64, EventError> {
        let mut g = self.lease.lock().await;
        if let Some((id, at)) = *g
            && at.elapsed() < self.ttl / 10
        {
            return Ok(id);
        }
        let resp = self
            .store
            .client()
            .lease_grant(self.ttl.as_secs() as i64, None)
            .await
            .map_err(EventError::Lease)?;
        *g = Some((resp.id(), Instant::now()));
        Ok(resp.id())
    }

    /// The event name for an occurrence: stable for the same object incarnation, type, reason
    /// and message, so repeats land on the same key.
    pub fn event_name<K: Resource>(
        obj: &Object<K>,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> String {
        let mut h = Sha256::new();
        for part in [
            K::KIND,
            obj.metadata.namespace(),
            &obj.metadata.name,
            obj.metadata.uid.as_deref().unwrap_or(""),
            &type_.to_string(),
            reason,
            message,
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let hash = hex::encode(&h.finalize()[..6]);
        let base: String = obj.metadata.name.chars().take(50).collect();
        format!("{}-{hash}", base.trim_end_matches('-'))
    }

    /// [`Recorder::publish`] for reconcilers: events are best effort, so a failure to record
    /// one is logged (naming the object) and never fails the reconcile that reported it.
    pub async fn emit<K: Resource>(
        &self,
        obj: &Object<K>,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        if let Err(e) = self.publish(obj, type_, reason, message).await {
            tracing::warn!(kind = K::KIND, object = %obj.key(), error = %e, "recording event");
        }
    }

    /// Records that `reason`/`message` happened to `obj`: creates the event, or bumps the count
    /// and last timestamp of the same event seen before (renewing its expiry).
    pub async fn publish<K: Resource>(
        &self,
        obj: &Object<K>,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), EventError> {
        let ns = obj.metadata.namespace();
        let name = Self::event_name(obj, type_, reason, message);
        let err = |source| EventError::Store {
            name: name.clone(),
            source,
        };
        const ATTEMPTS: u32 = 5;
        for _ in 0..ATTEMPTS {
            let lease = self.lease().await?;
            let now = Utc::now();
            match self.store.get::<EventSpec>(ns, &name).await {
                Ok(mut ev) => {
                    ev.spec.count = ev.spec.count.saturating_add(1);
                    ev.spec.last_timestamp = now;
                    match self.store.update_with_lease(&ev, lease).await {
                        Ok(_) => return Ok(()),
                        Err(e) if e.is_conflict() || e.is_not_found() => continue,
                        Err(e) => return Err(err(e)),
                    }
                }
                Err(e) if e.is_not_found() => {
                    let spec = EventSpec {
                        involved_object: InvolvedObject {
                            kind: K::KIND.to_string(),
                            namespace: ns.to_string(),
                            name: obj.metadata.name.clone(),
                            uid: obj.metadata.uid.clone(),
                        },
                        type_,
                        reason: reason.to_string(),
                        message: message.to_string(),
                        count: 1,
                        first_timestamp: now,
                        last_timestamp: now,
                        source: Some(self.component.clone()),
                    };
                    let mut ev = Object::new(ns, &name, spec);
                    ev.metadata = ObjectMeta::named(ns, &name);
                    match self.store.create_with_lease(&ev, lease).await {
                        Ok(_) => return Ok(()),
                        Err(StoreError::AlreadyExists { .. }) => continue,
                        Err(e) => return Err(err(e)),
                    }
                }
                Err(e) => return Err(err(e)),
            }
        }
        Err(EventError::Contended {
            name,
            attempts: ATTEMPTS,
        })
    }
}

/// The events about one object (any incarnation), most recent first.
pub async fn events_for(
    store: &Store,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<Vec<Object<EventSpec>>, StoreError> {
    let mut evs: Vec<_> = store
        .list::<EventSpec>(Some(namespace))
        .await?
        .items
        .into_iter()
        .filter(|e| e.spec.involved_object.kind == kind && e.spec.involved_object.name == name)
        .collect();
    evs.sort_by_key(|e| std::cmp::Reverse(e.spec.last_timestamp));
    Ok(evs)
}
