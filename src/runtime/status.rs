//! The status writer: writes an object's status only when it actually changed.
//!
//! Status lives under its own key, fenced on the object's uid (see `Store::update_status`), so
//! writing it never conflicts with a user's edit of the spec; comparing before writing keeps a
//! level-triggered reconcile from causing write storms (each write would trigger it again).

use crate::api::{Object, Resource};
use crate::store::{Store, StoreError};

/// Computes the new status from the object's current one with `change` and writes it when it
/// differs. Returns the written status, or `None` when nothing changed.
///
/// Unchanged against the copy the reconcile saw: no etcd call at all. Changed: `change` is
/// applied again to the stored status and written by compare-and-swap
/// ([`Store::modify_status`]), so fields other writers own in the same status (an
/// autoscaler's decision, the scheduler's fire times) are never undone by a stale copy.
pub async fn patch_status<K: Resource>(
    store: &Store,
    obj: &Object<K>,
    change: impl Fn(&mut K::Status),
) -> Result<Option<K::Status>, StoreError> {
    let mut next = obj.status.clone().unwrap_or_default();
    change(&mut next);
    if obj.status.as_ref() == Some(&next) {
        return Ok(None);
    }
    store.modify_status(obj, change).await
}
