//! Who holds which warm-pool container, and the token that specialises them — the two things
//! gateways and the warm-pool reconciler share through etcd.
//!
//! - `/lambda/warmclaims/<pool-ns>/<pool>/<task-id>`: a claim, created by a gateway in a
//!   transaction that succeeds only if the key does not exist (so two gateways never specialise
//!   the same container, whatever they race); deleted by the gateway when it releases the
//!   container, or by the reconciler once the container's task is gone.
//! - `/lambda/warmtokens/<pool-ns>/<pool>`: the pool's token, made by the reconciler (which
//!   also gives it to the containers as a Swarm config); never in the pool's status, which
//!   anyone who may read pools can see.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::api::ObjectKey;
use crate::store::{Store, StoreError};

/// One container's claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    /// `namespace/name` of the function it serves.
    pub function: String,
    /// That function's `metadata.uid` (a function recreated under the same name is another).
    pub uid: String,
    /// The gateway instance that claimed it.
    pub gateway: String,
    /// The container's `host:port`.
    pub address: String,
    pub claimed_at: DateTime<Utc>,
}

/// Errors reading or writing claims and tokens.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// etcd did not answer in time or refused (a leader's write: fenced).
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn pool_prefix(store: &Store, pool: &ObjectKey) -> String {
    format!(
        "{}/warmclaims/{}/{}/",
        store.keys().root(),
        pool.namespace,
        pool.name
    )
}

fn token_key(store: &Store, pool: &ObjectKey) -> String {
    format!(
        "{}/warmtokens/{}/{}",
        store.keys().root(),
        pool.namespace,
        pool.name
    )
}

/// Claims container `task` of `pool` for `claim`'s function; false when it is claimed already.
pub async fn claim(
    store: &Store,
    pool: &ObjectKey,
    task: &str,
    claim: &Claim,
) -> Result<bool, ClaimError> {
    let key = format!("{}{task}", pool_prefix(store, pool));
    let value = serde_json::to_string(claim).unwrap_or_default();
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key.clone(), value, None)]);
    Ok(store.txn("claim", &key, txn).await?.succeeded)
}

/// Deletes the claim of container `task` (absent is fine).
pub async fn release(store: &Store, pool: &ObjectKey, task: &str) -> Result<(), ClaimError> {
    let key = format!("{}{task}", pool_prefix(store, pool));
    let txn = Txn::new().and_then([TxnOp::delete(key.clone(), None)]);
    store.txn("delete", &key, txn).await?;
    Ok(())
}

/// The claims of a pool by task id. An unreadable claim still counts (its container is taken),
/// with an empty function.
pub async fn list(store: &Store, pool: &ObjectKey) -> Result<BTreeMap<String, Claim>, ClaimError> {
    let prefix = pool_prefix(store, pool);
    let mut kv = store.client().kv_client();
    let all = GetOptions::new().with_prefix();
    let resp = store
        .call("list", &prefix, kv.get(prefix.as_str(), Some(all)))
        .await?;
    Ok(resp
        .kvs()
        .iter()
        .filter_map(|kv| {
            let task = String::from_utf8_lossy(kv.key())
                .strip_prefix(&prefix)?
                .to_string();
            let claim = serde_json::from_slice(kv.value()).unwrap_or_else(|_| Claim {
                function: String::new(),
                uid: String::new(),
                gateway: String::new(),
                address: String::new(),
                claimed_at: Utc::now(),
            });
            Some((task, claim))
        })
        .collect())
}

/// Deletes every claim of a pool (the pool is going away).
pub async fn release_all(store: &Store, pool: &ObjectKey) -> Result<(), ClaimError> {
    let prefix = pool_prefix(store, pool);
    let all = etcd_client::DeleteOptions::new().with_prefix();
    let txn = Txn::new().and_then([TxnOp::delete(prefix.clone(), Some(all))]);
    store.txn("delete", &prefix, txn).await?;
    Ok(())
}

/// The pool's token, made (random, 32 hex digits twice) if it has none yet.
pub async fn ensure_token(store: &Store, pool: &ObjectKey) -> Result<String, ClaimError> {
    let key = token_key(store, pool);
    let fresh = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    // Create if absent, and read whatever is there in the same round trip.
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key.clone(), fresh.clone(), None)])
        .or_else([TxnOp::get(key.clone(), None)]);
    let resp = store.txn("create", &key, txn).await?;
    if resp.succeeded {
        return Ok(fresh);
    }
    let existing = resp.responses.into_iter().find_map(|op| match op {
        etcd_client::TxnOpResponse::Get(g) => g
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).trim().to_string()),
        _ => None,
    });
    Ok(existing.unwrap_or(fresh))
}

/// The pool's token, `None` before the reconciler made it.
pub async fn token(store: &Store, pool: &ObjectKey) -> Result<Option<String>, ClaimError> {
    let key = token_key(store, pool);
    let mut kv = store.client().kv_client();
    let resp = store.call("get", &key, kv.get(key.as_str(), None)).await?;
    Ok(resp
        .kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).trim().to_string())
        .filter(|t| !t.is_empty()))
}

/// Deletes the pool's token (with the pool).
pub async fn delete_token(store: &Store, pool: &ObjectKey) -> Result<(), ClaimError> {
    let key = token_key(store, pool);
    let txn = Txn::new().and_then([TxnOp::delete(key.clone(), None)]);
    store.txn("delete", &key, txn).await?;
    Ok(())
}
