//! Read-modify-write of a status that several writers share.
//!
//! [`Store::update_status`] is last-writer-wins on purpose (one controller owns a kind's
//! status). A `Node`'s status is written by two reconcilers (compute and membership), each
//! owning its own fields: they change the *current* status under a compare on the status key's
//! revision, so neither ever overwrites the other's fields with a stale copy.

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};

use super::codec::{self, create_revision_of_uid};
use super::{Store, StoreError};
use crate::api::{Object, Resource};

/// Attempts before a contended status write gives up (each attempt re-reads).
const ATTEMPTS: u32 = 10;

impl Store {
    /// Applies `change` to the stored status of `obj`'s incarnation (re-read from etcd, not
    /// taken from `obj`) and writes it when it differs, compared on the status key's revision
    /// and fenced on the uid; a concurrent writer makes it re-read and re-apply. Returns the
    /// written status, or `None` when nothing changed. An unreadable stored status is replaced
    /// (it was logged by readers; the writers own it).
    pub async fn modify_status<K: Resource>(
        &self,
        obj: &Object<K>,
        change: impl Fn(&mut K::Status),
    ) -> Result<Option<K::Status>, StoreError> {
        let key = obj.key();
        let spec_key = self.keys.spec_key::<K>(&key);
        let status_key = self.keys.status_key::<K>(&key);
        let not_found = || StoreError::NotFound {
            kind: K::KIND,
            key: key.clone(),
        };
        let create_rev = obj
            .metadata
            .uid
            .as_deref()
            .and_then(create_revision_of_uid)
            .ok_or_else(not_found)?;
        let mut last_seen = 0;
        for _ in 0..ATTEMPTS {
            let mut kv = self.client.kv_client();
            let read = Txn::new().and_then([
                TxnOp::get(spec_key.clone(), None),
                TxnOp::get(status_key.clone(), None),
            ]);
            let resp = self.call("read status", &status_key, kv.txn(read)).await?;
            let mut gets = resp.op_responses().into_iter().map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().cloned(),
                _ => None,
            });
            let spec = gets.next().flatten();
            let stored = gets.next().flatten();
            if spec.is_none_or(|s| s.create_revision() != create_rev) {
                return Err(not_found());
            }
            let (current, mod_rev) = match &stored {
                Some(s) => (
                    codec::decode_status::<K>(&status_key, s.value()).unwrap_or_default(),
                    s.mod_revision(),
                ),
                None => (K::Status::default(), 0),
            };
            last_seen = mod_rev;
            let mut next = current.clone();
            change(&mut next);
            if next == current {
                return Ok(None);
            }
            let value = codec::encode_status::<K>(&key, &next)?;
            let write = Txn::new()
                .when([
                    Compare::create_revision(spec_key.clone(), CompareOp::Equal, create_rev),
                    Compare::mod_revision(status_key.clone(), CompareOp::Equal, mod_rev),
                ])
                .and_then([TxnOp::put(status_key.clone(), value, None)]);
            if self
                .txn("write status", &status_key, write)
                .await?
                .succeeded
            {
                return Ok(Some(next));
            }
        }
        Err(StoreError::Conflict {
            kind: K::KIND,
            key,
            expected: format!("{last_seen} (status; {ATTEMPTS} attempts)"),
        })
    }
}
