//! API keys for the gateway: `lk_<id>_<secret>`, stored in etcd under `/lambda/apikeys/<id>`
//! as YAML with only the SHA-256 of the secret (a leaked etcd dump reveals no usable key).
//! The gateway caches verified keys for a few seconds, so a deleted key stops working within
//! that time without an etcd round trip per request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError};

/// How long a verified key is trusted without asking etcd again.
const CACHE_TTL: Duration = Duration::from_secs(5);

/// A stored key (never the secret itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the secret part.
    pub sha256: String,
    pub created_at: DateTime<Utc>,
}

/// Errors of key management.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("etcd {op} of {key}: {source}")]
    Etcd {
        op: &'static str,
        key: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("stored API key {key} is unreadable: {message}")]
    Invalid { key: String, message: String },
    #[error("API key {0} not found")]
    NotFound(String),
}

fn prefix(store: &Store) -> String {
    format!("{}/apikeys/", store.keys().root())
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Splits `lk_<id>_<secret>`.
fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("lk_")?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && !secret.is_empty()).then_some((id, secret))
}

/// Creates a key; returns it and the full token (shown once).
pub async fn create(store: &Store, name: &str) -> Result<(ApiKey, String), ApiKeyError> {
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let key = ApiKey {
        id: id.clone(),
        name: name.into(),
        sha256: hash(&secret),
        created_at: Utc::now(),
    };
    let k = format!("{}{id}", prefix(store));
    let yaml = serde_saphyr::to_string(&key).map_err(|e| ApiKeyError::Invalid {
        key: k.clone(),
        message: e.to_string(),
    })?;
    store
        .client()
        .put(k.clone(), yaml, None)
        .await
        .map_err(|source| ApiKeyError::Etcd {
            op: "put",
            key: k,
            source,
        })?;
    Ok((key, format!("lk_{id}_{secret}")))
}

/// Every stored key; unreadable ones are reported as errors in the second list.
pub async fn list(store: &Store) -> Result<(Vec<ApiKey>, Vec<ApiKeyError>), ApiKeyError> {
    let p = prefix(store);
    let resp = store
        .client()
        .get(
            p.clone(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .map_err(|source| ApiKeyError::Etcd {
            op: "list",
            key: p,
            source,
        })?;
    let mut keys = Vec::new();
    let mut bad = Vec::new();
    for kv in resp.kvs() {
        let k = String::from_utf8_lossy(kv.key()).into_owned();
        match std::str::from_utf8(kv.value())
            .map_err(|e| e.to_string())
            .and_then(|t| serde_saphyr::from_str::<ApiKey>(t).map_err(|e| e.to_string()))
        {
            Ok(key) => keys.push(key),
            Err(message) => bad.push(ApiKeyError::Invalid { key: k, message }),
        }
    }
    Ok((keys, bad))
}

/// Deletes a key by id.
pub async fn delete(store: &Store, id: &str) -> Result<(), ApiKeyError> {
    let k = format!("{}{id}", prefix(store));
    let resp = store
        .client()
        .delete(k.clone(), None)
        .await
        .map_err(|source| ApiKeyError::Etcd {
            op: "delete",
            key: k,
            source,
        })?;
    if resp.deleted() == 0 {
        return Err(ApiKeyError::NotFound(id.into()));
    }
    Ok(())
}

/// Verifies bearer tokens against etcd with a short-lived cache.
pub struct Verifier {
    store: Store,
    cache: Mutex<HashMap<String, (String, Instant)>>,
}

impl Verifier {
    /// A verifier over the store's keys.
    pub fn new(store: Store) -> Self {
        Verifier {
            store,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// True when `token` is a valid key. etcd errors count as invalid (and are logged).
    pub async fn verify(&self, token: &str) -> bool {
        let Some((id, secret)) = parse(token) else {
            return false;
        };
        let h = hash(secret);
        if let Some((stored, at)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(id)
            && at.elapsed() < CACHE_TTL
        {
            return *stored == h;
        }
        let k = format!("{}{id}", prefix(&self.store));
        let stored = match self.store.client().get(k.clone(), None).await {
            Ok(r) => r
                .kvs()
                .first()
                .and_then(|kv| {
                    std::str::from_utf8(kv.value())
                        .ok()
                        .and_then(|t| serde_saphyr::from_str::<ApiKey>(t).ok())
                })
                .map(|k| k.sha256),
            Err(e) => {
                tracing::warn!(key = %k, error = %e, "cannot read API key");
                return false;
            }
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match stored {
            Some(s) => {
                let ok = s == h;
                cache.insert(id.to_string(), (s, Instant::now()));
                ok
            }
            None => {
                cache.remove(id);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_format() {
        assert_eq!(parse("lk_ab12_secret"), Some(("ab12", "secret")));
        assert_eq!(parse("lk__x"), None);
        assert_eq!(parse("Bearer x"), None);
        assert_eq!(hash("a").len(), 64);
    }
}
