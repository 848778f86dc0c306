//! Platform secrets: a namespace's named secret values, kept by the platform itself so that it
//! can hand them to a function however its replica starts — mounted as a Swarm secret into the
//! function's own service, or written into a warm-pool container the gateway specialises (Docker
//! never gives a Swarm secret's value back, so a pool container could not get one otherwise).
//!
//! Stored at `/lambda/secrets/<namespace>/<name>` as YAML with the value base64-encoded (like a
//! Kubernetes Secret: readable by whoever can read etcd, so etcd's access control and disk
//! encryption protect it). The CLI and the API never print a value back.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{RecordError, Store, StoreError};

/// Largest secret value (Swarm's own limit is 500 KiB).
pub const MAX_SECRET_BYTES: usize = 500 * 1024;

/// One stored secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoredSecret {
    pub namespace: String,
    pub name: String,
    /// The value, base64.
    pub data: String,
    /// Hex SHA-256 of the value: names the Swarm secret made from this version.
    pub sha256: String,
    pub created_at: DateTime<Utc>,
}

impl StoredSecret {
    /// The value's bytes.
    pub fn value(&self) -> Result<Vec<u8>, SecretError> {
        base64::engine::general_purpose::STANDARD
            .decode(self.data.trim())
            .map_err(|e| SecretError::Invalid {
                key: format!("{}/{}", self.namespace, self.name),
                message: format!("data is not base64: {e}"),
            })
    }
}

/// Errors of the secret store.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored secret {key} is unreadable: {message}")]
    Invalid { key: String, message: String },
    #[error("secret {0} not found")]
    NotFound(String),
    #[error("secret name {name:?}: {why}")]
    BadName { name: String, why: &'static str },
    #[error("secret {name} is {len} bytes; at most {MAX_SECRET_BYTES} are allowed")]
    TooLarge { name: String, len: usize },
}

impl From<RecordError> for SecretError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Store(e) => SecretError::Store(e),
            RecordError::Invalid { key, message } => SecretError::Invalid { key, message },
        }
    }
}

fn prefix(store: &Store, namespace: &str) -> String {
    format!("{}/secrets/{namespace}/", store.keys().root())
}

fn key(store: &Store, namespace: &str, name: &str) -> String {
    format!("{}{name}", prefix(store, namespace))
}

/// A secret name: a DNS label (it becomes a file name and part of a Swarm object name).
pub fn check_name(name: &str) -> Result<(), SecretError> {
    let bad = |why| SecretError::BadName {
        name: name.to_string(),
        why,
    };
    if name.is_empty() || name.len() > 63 {
        return Err(bad("must be 1-63 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || name.starts_with('-')
        || name.ends_with('-')
    {
        return Err(bad(
            "must be lowercase letters, digits and '-', not starting or ending with '-'",
        ));
    }
    Ok(())
}

/// Creates or replaces a secret.
pub async fn put(
    store: &Store,
    namespace: &str,
    name: &str,
    value: &[u8],
) -> Result<StoredSecret, SecretError> {
    check_name(name)?;
    if value.len() > MAX_SECRET_BYTES {
        return Err(SecretError::TooLarge {
            name: name.into(),
            len: value.len(),
        });
    }
    let secret = StoredSecret {
        namespace: namespace.into(),
        name: name.into(),
        data: base64::engine::general_purpose::STANDARD.encode(value),
        sha256: hex::encode(Sha256::digest(value)),
        created_at: Utc::now(),
    };
    store
        .put_record(&key(store, namespace, name), &secret)
        .await?;
    Ok(secret)
}

/// One secret, `None` when it does not exist.
pub async fn get(
    store: &Store,
    namespace: &str,
    name: &str,
) -> Result<Option<StoredSecret>, SecretError> {
    Ok(store.get_record(&key(store, namespace, name)).await?)
}

/// The secrets of a namespace (values included: callers print names only).
pub async fn list(store: &Store, namespace: &str) -> Result<Vec<StoredSecret>, SecretError> {
    let all = store.list_records(&prefix(store, namespace)).await?;
    Ok(all.into_iter().collect::<Result<_, _>>()?)
}

/// Deletes a secret.
pub async fn delete(store: &Store, namespace: &str, name: &str) -> Result<(), SecretError> {
    if !store
        .delete_records(&key(store, namespace, name), false)
        .await?
    {
        return Err(SecretError::NotFound(format!("{namespace}/{name}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("db-password").is_ok());
        for bad in ["", "Db", "a_b", "-a", "a-", &"x".repeat(64), "a/b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
