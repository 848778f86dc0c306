//! The finalizer helper: guarantees a cleanup runs before an object disappears.

use std::sync::Arc;

use crate::api::{Object, Resource};
use crate::store::{Store, StoreError, UpdateOutcome};

use super::action::Action;

/// What the reconcile wrapped by [`finalizer`] is asked to do.
#[derive(Debug, Clone)]
pub enum FinalizerEvent<K: Resource> {
    /// Converge the live object (the finalizer is in place).
    Apply(Arc<Object<K>>),
    /// The object is being deleted: clean up; the finalizer is removed once this succeeds.
    Cleanup(Arc<Object<K>>),
}

/// Errors of [`finalizer`].
#[derive(Debug, thiserror::Error)]
pub enum FinalizerError<E: std::fmt::Display> {
    #[error("apply failed: {0}")]
    Apply(E),
    #[error("cleanup failed (finalizer {finalizer} stays): {error}")]
    Cleanup { finalizer: String, error: E },
    #[error("adding finalizer {finalizer}: {source}")]
    Add {
        finalizer: String,
        #[source]
        source: StoreError,
    },
    #[error("removing finalizer {finalizer}: {source}")]
    Remove {
        finalizer: String,
        #[source]
        source: StoreError,
    },
}

/// Wraps a reconcile with finalizer `name`:
/// - a live object without the finalizer gets it first (and is reconciled again on that write);
/// - a live object with it is passed to `reconcile` as [`FinalizerEvent::Apply`];
/// - a deleting object with it is passed as [`FinalizerEvent::Cleanup`]; when that succeeds the
///   finalizer is removed (the store deletes the object with its last finalizer);
/// - a deleting object without it is left alone.
///
/// Writes compare the object's resourceVersion, never overwrite: a concurrent change (another
/// controller adding its own finalizer at the same moment, a user's edit) makes the finalizer
/// edit re-read the object and apply itself again, a few times, before it is an error.
pub async fn finalizer<K, E, F, Fut>(
    store: &Store,
    name: &str,
    obj: Arc<Object<K>>,
    reconcile: F,
) -> Result<Action, FinalizerError<E>>
where
    K: Resource,
    E: std::fmt::Display,
    F: FnOnce(FinalizerEvent<K>) -> Fut,
    Fut: Future<Output = Result<Action, E>>,
{
    let has = obj.metadata.finalizers.iter().any(|f| f == name);
    match (obj.is_deleting(), has) {
        (false, true) => reconcile(FinalizerEvent::Apply(obj))
            .await
            .map_err(FinalizerError::Apply),
        (false, false) => {
            edit_finalizers(store, &obj, |o| {
                // A deletion that started meanwhile gets no new finalizer.
                if o.is_deleting() || o.metadata.finalizers.iter().any(|f| f == name) {
                    return false;
                }
                o.metadata.finalizers.push(name.to_string());
                true
            })
            .await
            .map_err(|source| FinalizerError::Add {
                finalizer: name.to_string(),
                source,
            })?;
            // The write triggers the next reconcile, which applies.
            Ok(Action::await_change())
        }
        (true, true) => {
            let action = reconcile(FinalizerEvent::Cleanup(obj.clone()))
                .await
                .map_err(|error| FinalizerError::Cleanup {
                    finalizer: name.to_string(),
                    error,
                })?;
            // A cleanup that asks to be called again (still waiting for something) keeps the
            // finalizer.
            if action.requeue_after().is_some() {
                return Ok(action);
            }
            match edit_finalizers(store, &obj, |o| {
                let before = o.metadata.finalizers.len();
                o.metadata.finalizers.retain(|f| f != name);
                o.metadata.finalizers.len() != before
            })
            .await
            {
                Ok(()) => Ok(Action::await_change()),
                Err(e) if e.is_not_found() => Ok(Action::await_change()),
                Err(source) => Err(FinalizerError::Remove {
                    finalizer: name.to_string(),
                    source,
                }),
            }
        }
        (true, false) => Ok(Action::await_change()),
    }
}

/// Attempts of a finalizer edit that meets concurrent writers.
const EDIT_ATTEMPTS: u32 = 5;

/// Applies `change` (which says whether it changed anything) to `obj` and writes it; on a
/// conflict re-reads the same incarnation and tries again. A changed uid is `NotFound`.
async fn edit_finalizers<K: Resource>(
    store: &Store,
    obj: &Object<K>,
    change: impl Fn(&mut Object<K>) -> bool,
) -> Result<(), StoreError> {
    let mut o = obj.clone();
    for attempt in 1..=EDIT_ATTEMPTS {
        if !change(&mut o) {
            return Ok(());
        }
        o.status = None;
        match store.update(&o).await {
            Ok(UpdateOutcome::Deleted | UpdateOutcome::Updated(_)) => return Ok(()),
            Err(e) if e.is_conflict() && attempt < EDIT_ATTEMPTS => {
                let fresh = store
                    .get::<K>(obj.metadata.namespace(), &obj.metadata.name)
                    .await?;
                if fresh.metadata.uid != obj.metadata.uid {
                    return Err(StoreError::NotFound {
                        kind: K::KIND,
                        key: obj.key(),
                    });
                }
                o = fresh;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
