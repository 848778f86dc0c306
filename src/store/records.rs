//! Records the platform keeps beside its objects (API keys, platform secrets): one YAML
//! document under a key of its own. Read under the store's timeout like everything else, and
//! written through [`Store::txn`], so that a leader's writes are fenced too.

use etcd_client::{DeleteOptions, GetOptions, Txn, TxnOp, TxnOpResponse};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Store, StoreError};

/// Errors reading or writing a record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored value is not the record (edited by hand, or from another version).
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

/// A record read back, or why the value under `key` is not one.
pub type Read<T> = Result<T, RecordError>;

fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Read<T> {
    std::str::from_utf8(value)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_saphyr::from_str::<T>(t).map_err(|e| e.to_string()))
        .map_err(|message| RecordError::Invalid {
            key: key.to_string(),
            message,
        })
}

impl Store {
    /// Writes `record` as YAML under `key` (created or replaced).
    pub async fn put_record<T: Serialize>(&self, key: &str, record: &T) -> Read<()> {
        let yaml = serde_saphyr::to_string(record).map_err(|e| RecordError::Invalid {
            key: key.to_string(),
            message: e.to_string(),
        })?;
        let txn = Txn::new().and_then([TxnOp::put(key, yaml, None)]);
        self.txn("put", key, txn).await?;
        Ok(())
    }

    /// The record under `key`; `None` when there is none.
    pub async fn get_record<T: DeserializeOwned>(&self, key: &str) -> Read<Option<T>> {
        let mut kv = self.client.kv_client();
        let resp = self.call("get", key, kv.get(key, None)).await?;
        resp.kvs()
            .first()
            .map(|kv| decode(key, kv.value()))
            .transpose()
    }

    /// Every record under `prefix`, in key order: each one read, or why it could not be (an
    /// unreadable record does not hide the others).
    pub async fn list_records<T: DeserializeOwned>(&self, prefix: &str) -> Read<Vec<Read<T>>> {
        let mut kv = self.client.kv_client();
        let all = GetOptions::new().with_prefix();
        let resp = self.call("list", prefix, kv.get(prefix, Some(all))).await?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| decode(&String::from_utf8_lossy(kv.key()), kv.value()))
            .collect())
    }

    /// Deletes the record under `key` (with `prefix`: every record under it); whether there
    /// was anything to delete.
    pub async fn delete_records(&self, key: &str, prefix: bool) -> Read<bool> {
        let opts = prefix.then(|| DeleteOptions::new().with_prefix());
        let txn = Txn::new().and_then([TxnOp::delete(key, opts)]);
        let out = self.txn("delete", key, txn).await?;
        Ok(out.responses.iter().any(|r| match r {
            TxnOpResponse::Delete(d) => d.deleted() > 0,
            _ => false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct R {
        a: u32,
    }

    #[test]
    fn a_value_that_is_not_the_record_names_its_key() {
        assert_eq!(decode::<R>("/k", b"a: 1").unwrap(), R { a: 1 });
        for bad in [&b"a: [1"[..], b"b: 1", b"\xff\xfe"] {
            match decode::<R>("/lambda/k", bad) {
                Err(RecordError::Invalid { key, message }) => {
                    assert_eq!(key, "/lambda/k");
                    assert!(!message.is_empty());
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
