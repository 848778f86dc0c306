//! Build records: what a running build's one-time token unlocks, kept in etcd so that any
//! controller replica can serve the builder endpoint and a restarted controller picks up where
//! the last one stopped.
//!
//! A record lives at `<root>/builds/<hex sha256 of the token>` as YAML: the owning object
//! (namespace, name, uid, generation), the runtime images the builder must load, and the
//! builder's phone-home once it arrived. The token itself is never stored (a leaked etcd dump
//! unlocks nothing). Every record is put on an etcd lease a little longer than its build may
//! take, so a record nobody cleans up still expires.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::Store;

use super::SnapshotError;

/// What one build's token unlocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BuildRecord {
    pub namespace: String,
    pub name: String,
    /// Uid of the `SnapshotImage` incarnation.
    pub uid: String,
    /// The generation being built.
    pub generation: i64,
    /// Runtime → image reference the builder must load.
    pub images: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    /// The builder's report, once it phoned home (accepted once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_home: Option<PhoneHome>,
}

/// A builder's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PhoneHome {
    /// Whether the setup succeeded.
    pub ok: bool,
    /// The image references the builder's engine holds after loading.
    #[serde(default)]
    pub images: Vec<String>,
    /// The builder's message (the failing step and its output when `ok` is false).
    #[serde(default)]
    pub message: String,
    pub at: DateTime<Utc>,
}

/// A record as read from etcd.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub key: String,
    pub record: BuildRecord,
    pub mod_revision: i64,
}

/// What became of a phone-home.
#[derive(Debug, Clone, PartialEq)]
pub enum Accepted {
    /// Recorded; the record as it is now.
    Yes(Box<BuildRecord>),
    /// The build had phoned home already (the first report stands).
    AlreadyDone(PhoneHome),
    /// No build has this token (never issued, finished, or expired).
    UnknownToken,
}

/// A fresh one-time token: 256 random bits, hex.
pub fn new_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Hex SHA-256 of a token: its record's key and all that is stored of it.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// `<root>/builds/`
pub fn prefix(store: &Store) -> String {
    format!("{}/builds/", store.keys().root())
}

fn key_of(store: &Store, token: &str) -> String {
    format!("{}{}", prefix(store), token_hash(token))
}

/// Runs one etcd call within the store's request timeout.
async fn call<T>(
    store: &Store,
    op: &'static str,
    key: &str,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, SnapshotError> {
    let after = store.request_timeout();
    match tokio::time::timeout(after, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(SnapshotError::Etcd {
            op,
            key: key.to_string(),
            source,
        }),
        Err(_) => Err(SnapshotError::EtcdTimeout {
            op,
            key: key.to_string(),
            after,
        }),
    }
}

fn write_error(e: crate::store::StoreError) -> SnapshotError {
    SnapshotError::RecordWrite {
        source: Box::new(e),
    }
}

fn decode(key: &str, value: &[u8]) -> Result<BuildRecord, SnapshotError> {
    std::str::from_utf8(value)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_saphyr::from_str::<BuildRecord>(t).map_err(|e| e.to_string()))
        .map_err(|message| SnapshotError::Record {
            key: key.to_string(),
            message,
        })
}

fn encode(key: &str, record: &BuildRecord) -> Result<String, SnapshotError> {
    serde_saphyr::to_string(record).map_err(|e| SnapshotError::Record {
        key: key.to_string(),
        message: e.to_string(),
    })
}

/// Stores a new record under a fresh token, on a lease of `ttl`; returns the token (the only
/// copy: it goes into the builder's user-data).
pub async fn create(
    store: &Store,
    record: &BuildRecord,
    ttl: Duration,
) -> Result<String, SnapshotError> {
    let token = new_token();
    let key = key_of(store, &token);
    let value = encode(&key, record)?;
    let mut client = store.client();
    let lease = call(
        store,
        "lease grant",
        &key,
        client.lease_grant(ttl.as_secs().max(1) as i64, None),
    )
    .await?;
    let put = PutOptions::new().with_lease(lease.id());
    let txn = Txn::new().and_then([TxnOp::put(key.clone(), value, Some(put))]);
    store.txn("put", &key, txn).await.map_err(write_error)?;
    Ok(token)
}

/// The record a token unlocks, if any.
pub async fn by_token(store: &Store, token: &str) -> Result<Option<Stored>, SnapshotError> {
    let key = key_of(store, token);
    let mut client = store.client();
    let resp = call(store, "get", &key, client.get(key.clone(), None)).await?;
    match resp.kvs().first() {
        None => Ok(None),
        Some(kv) => Ok(Some(Stored {
            record: decode(&key, kv.value())?,
            key,
            mod_revision: kv.mod_revision(),
        })),
    }
}

/// Every record; the keys of unreadable ones come second (the sweep removes them).
pub async fn list(store: &Store) -> Result<(Vec<Stored>, Vec<String>), SnapshotError> {
    let p = prefix(store);
    let mut client = store.client();
    let resp = call(
        store,
        "list",
        &p,
        client.get(p.clone(), Some(GetOptions::new().with_prefix())),
    )
    .await?;
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for kv in resp.kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        match decode(&key, kv.value()) {
            Ok(record) => good.push(Stored {
                key,
                record,
                mod_revision: kv.mod_revision(),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable build record");
                bad.push(key);
            }
        }
    }
    Ok((good, bad))
}

/// The newest record of `uid`'s `generation`.
pub fn find(records: &[Stored], uid: &str, generation: i64) -> Option<Stored> {
    records
        .iter()
        .filter(|s| s.record.uid == uid && s.record.generation == generation)
        .max_by_key(|s| s.mod_revision)
        .cloned()
}

/// Deletes one record (gone already is fine).
pub async fn delete(store: &Store, key: &str) -> Result<(), SnapshotError> {
    let txn = Txn::new().and_then([TxnOp::delete(key.to_string(), None)]);
    store.txn("delete", key, txn).await.map_err(write_error)?;
    Ok(())
}

/// Deletes every record of `uid`; returns how many there were.
pub async fn delete_for_uid(store: &Store, uid: &str) -> Result<usize, SnapshotError> {
    let (records, _) = list(store).await?;
    let mut n = 0;
    for s in records.iter().filter(|s| s.record.uid == uid) {
        delete(store, &s.key).await?;
        n += 1;
    }
    Ok(n)
}

/// Records a phone-home, once: the write compares the record's revision, so of two reports
/// racing (on one or two controller replicas) exactly one is accepted.
pub async fn accept_phone_home(
    store: &Store,
    token: &str,
    report: PhoneHome,
) -> Result<Accepted, SnapshotError> {
    for _ in 0..5 {
        let Some(stored) = by_token(store, token).await? else {
            return Ok(Accepted::UnknownToken);
        };
        if let Some(done) = stored.record.phone_home {
            return Ok(Accepted::AlreadyDone(done));
        }
        let mut record = stored.record;
        record.phone_home = Some(report.clone());
        let value = encode(&stored.key, &record)?;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                stored.key.clone(),
                CompareOp::Equal,
                stored.mod_revision,
            )])
            .and_then([TxnOp::put(
                stored.key.clone(),
                value,
                Some(PutOptions::new().with_ignore_lease()),
            )]);
        let written = store.txn("phone-home txn", &stored.key, txn).await;
        if written.map_err(write_error)?.succeeded {
            return Ok(Accepted::Yes(Box::new(record)));
        }
    }
    Err(SnapshotError::Record {
        key: key_of(store, token),
        message: "the record kept changing while the phone-home was written".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_only_their_hash_is_a_key() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
        assert_eq!(token_hash(&a), token_hash(&a));
        // sha256("abc")
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn rec(uid: &str, generation: i64) -> BuildRecord {
        BuildRecord {
            namespace: "default".into(),
            name: "base".into(),
            uid: uid.into(),
            generation,
            images: BTreeMap::from([("shell".into(), "lambda/runtime-shell:1".into())]),
            created_at: Utc::now(),
            phone_home: None,
        }
    }

    #[test]
    fn records_round_trip_as_yaml_and_are_found_by_uid_and_generation() {
        let mut r = rec("u1", 7);
        r.phone_home = Some(PhoneHome {
            ok: false,
            images: vec![],
            message: "step \"load\" failed: x: y".into(),
            at: Utc::now(),
        });
        let text = encode("k", &r).unwrap();
        assert_eq!(decode("k", text.as_bytes()).unwrap(), r);
        assert!(decode("k", b"namespace: [").is_err());
        let stored = |key: &str, r: BuildRecord, rev| Stored {
            key: key.into(),
            record: r,
            mod_revision: rev,
        };
        let all = vec![
            stored("a", rec("u1", 7), 10),
            stored("b", rec("u1", 7), 12),
            stored("c", rec("u1", 8), 13),
            stored("d", rec("u2", 7), 14),
        ];
        assert_eq!(find(&all, "u1", 7).map(|s| s.key), Some("b".into()));
        assert_eq!(find(&all, "u1", 9), None);
    }
}
