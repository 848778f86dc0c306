//! API keys for the gateway: `lk_<id>_<secret>`, stored in etcd under `/lambda/apikeys/<id>`
//! as YAML with only the SHA-256 of the secret (a leaked etcd dump reveals no usable key).
//! The gateway caches verified keys for a few seconds, so a deleted key stops working within
//! that time without an etcd round trip per request.
//!
//! Each key carries a role and its namespaces (see [`super::authz`]). A key stored before keys
//! had roles (no `role`, no namespaces) is an admin of all namespaces, as every key was then:
//! the token `lambda up` wrote keeps working as the platform's admin, and no key silently loses
//! or gains power with the upgrade. `lambda apikey list` shows such keys as `admin (legacy)`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{RecordError, Store, StoreError};

use super::authz::{Access, Principal, Role, Scope};

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
    /// Absent on keys made before roles: see the module's documentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The namespaces the key acts in (absent with `allNamespaces`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    /// The key acts in every namespace and on the platform's own objects.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_namespaces: bool,
}

impl ApiKey {
    /// True for a key stored before keys had roles.
    pub fn is_legacy(&self) -> bool {
        self.role.is_none() && self.namespaces.is_none() && !self.all_namespaces
    }

    /// What the key grants; an error names what is wrong with a hand-edited one (such a key
    /// authenticates nothing).
    pub fn access(&self) -> Result<Access, String> {
        if self.is_legacy() {
            return Ok(Access::admin());
        }
        let role = self
            .role
            .ok_or("role is missing (invoker, developer or admin)")?;
        let scope = match (&self.namespaces, self.all_namespaces) {
            (Some(ns), true) if !ns.is_empty() => {
                return Err("namespaces and allNamespaces exclude each other".into());
            }
            (_, true) => Scope::All,
            (Some(ns), false) if !ns.is_empty() => {
                check_namespaces(ns)?;
                Scope::of(ns.iter().cloned())
            }
            _ => return Err("namespaces is empty and allNamespaces is not set".into()),
        };
        Ok(Access { role, scope })
    }

    /// The principal a request authenticated by this key acts as.
    pub fn principal(&self) -> Result<Principal, String> {
        Ok(Principal {
            key_id: self.id.clone(),
            name: self.name.clone(),
            access: self.access()?,
        })
    }
}

fn check_namespaces(ns: &[String]) -> Result<(), String> {
    for n in ns {
        crate::api::validation::check_dns_label(n)
            .map_err(|why| format!("namespace {n:?} is not a namespace name: {why}"))?;
    }
    Ok(())
}

/// Errors of key management.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored API key {key} is unreadable: {message}")]
    Invalid { key: String, message: String },
    #[error("API key {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Scope(String),
}

impl From<RecordError> for ApiKeyError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Store(e) => ApiKeyError::Store(e),
            RecordError::Invalid { key, message } => ApiKeyError::Invalid { key, message },
        }
    }
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

/// Creates a key granting `access`; returns it and the full token (shown once).
pub async fn create(
    store: &Store,
    name: &str,
    access: &Access,
) -> Result<(ApiKey, String), ApiKeyError> {
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let (namespaces, all_namespaces) = match &access.scope {
        Scope::All => (None, true),
        Scope::Namespaces(set) if set.is_empty() => {
            return Err(ApiKeyError::Scope(
                "a key needs at least one namespace, or all namespaces".into(),
            ));
        }
        Scope::Namespaces(set) => {
            let ns: Vec<String> = set.iter().cloned().collect();
            check_namespaces(&ns).map_err(ApiKeyError::Scope)?;
            (Some(ns), false)
        }
    };
    let key = ApiKey {
        id: id.clone(),
        name: name.into(),
        sha256: hash(&secret),
        created_at: Utc::now(),
        role: Some(access.role),
        namespaces,
        all_namespaces,
    };
    store
        .put_record(&format!("{}{id}", prefix(store)), &key)
        .await?;
    Ok((key, format!("lk_{id}_{secret}")))
}

/// Every stored key; unreadable ones are reported as errors in the second list.
pub async fn list(store: &Store) -> Result<(Vec<ApiKey>, Vec<ApiKeyError>), ApiKeyError> {
    let mut keys = Vec::new();
    let mut bad = Vec::new();
    for read in store.list_records(&prefix(store)).await? {
        match read {
            Ok(key) => keys.push(key),
            Err(e) => bad.push(e.into()),
        }
    }
    Ok((keys, bad))
}

/// Deletes a key by id.
pub async fn delete(store: &Store, id: &str) -> Result<(), ApiKeyError> {
    if !store
        .delete_records(&format!("{}{id}", prefix(store)), false)
        .await?
    {
        return Err(ApiKeyError::NotFound(id.into()));
    }
    Ok(())
}

/// Verifies bearer tokens against etcd with a short-lived cache.
pub struct Verifier {
    store: Store,
    cache: Mutex<HashMap<String, Cached>>,
}

/// A stored key as last read: its secret's digest and what it grants, resolved once (not per
/// request).
struct Cached {
    sha256: Option<[u8; 32]>,
    /// `Err`: its stored scope is invalid (logged once per read).
    principal: Result<Arc<Principal>, ()>,
    at: Instant,
}

impl Cached {
    fn of(key: &ApiKey) -> Cached {
        // Stored as lower-case hex, the only form `hash` writes and the only one that matches.
        let mut digest = [0u8; 32];
        let sha256 = (!key.sha256.bytes().any(|b| b.is_ascii_uppercase()))
            .then(|| hex::decode_to_slice(&key.sha256, &mut digest).ok())
            .flatten()
            .map(|()| digest);
        let principal = key.principal().map(Arc::new).map_err(|why| {
            tracing::warn!(key = %key.id, error = %why, "API key refused: its stored scope is invalid");
        });
        Cached {
            sha256,
            principal,
            at: Instant::now(),
        }
    }
}

impl Verifier {
    /// A verifier over the store's keys.
    pub fn new(store: Store) -> Self {
        Verifier {
            store,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The principal of `token` when it is a valid key; `None` for an unknown, wrong or
    /// unreadable key. etcd errors count as invalid (and are logged).
    pub async fn verify(&self, token: &str) -> Option<Arc<Principal>> {
        let (id, secret) = parse(token)?;
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let check = |c: &Cached| {
            (c.sha256 == Some(digest))
                .then(|| c.principal.clone().ok())
                .flatten()
        };
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cache.get(id).filter(|c| c.at.elapsed() < CACHE_TTL) {
                return check(c);
            }
        }
        let stored = self.read(id).await?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        // Only stored keys are cached: random ids must not grow the cache.
        match &stored {
            Some(key) => {
                let c = Cached::of(key);
                let p = check(&c);
                cache.insert(id.to_string(), c);
                p
            }
            None => {
                cache.remove(id);
                None
            }
        }
    }

    /// The stored key `id` (`Some(None)`: there is none); `None` when etcd did not answer.
    async fn read(&self, id: &str) -> Option<Option<ApiKey>> {
        let k = format!("{}{id}", prefix(&self.store));
        match self.store.get_record::<ApiKey>(&k).await {
            Ok(key) => Some(key),
            Err(e @ RecordError::Invalid { .. }) => {
                tracing::warn!(error = %e, "unreadable API key");
                Some(None)
            }
            Err(e) => {
                tracing::warn!(key = %k, error = %e, "cannot read API key");
                None
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

    fn key(yaml: &str) -> ApiKey {
        serde_saphyr::from_str(&format!(
            "id: ab12\nname: k\nsha256: x\ncreatedAt: 2026-01-01T00:00:00Z\n{yaml}"
        ))
        .expect("key")
    }

    #[test]
    fn keys_before_roles_are_admins_of_all_namespaces() {
        let legacy = key("");
        assert!(legacy.is_legacy());
        assert_eq!(legacy.access(), Ok(Access::admin()));
    }

    #[test]
    fn stored_scopes() {
        assert_eq!(
            key("role: developer\nnamespaces: [a, b]\n").access(),
            Ok(Access {
                role: Role::Developer,
                scope: Scope::of(["a", "b"])
            })
        );
        assert_eq!(
            key("role: invoker\nallNamespaces: true\n").access(),
            Ok(Access {
                role: Role::Invoker,
                scope: Scope::All
            })
        );
        for (bad, needle) in [
            ("role: admin\n", "namespaces is empty"),
            ("role: admin\nnamespaces: []\n", "namespaces is empty"),
            ("namespaces: [a]\n", "role is missing"),
            (
                "role: admin\nnamespaces: [a]\nallNamespaces: true\n",
                "exclude",
            ),
            ("role: admin\nnamespaces: [Not_A_Label]\n", "Not_A_Label"),
        ] {
            let e = key(bad).access().expect_err(bad);
            assert!(e.contains(needle), "{bad}: {e}");
        }
        assert!(
            serde_saphyr::from_str::<ApiKey>(
                "id: a\nname: k\nsha256: x\ncreatedAt: 2026-01-01T00:00:00Z\nrole: root\n"
            )
            .is_err()
        );
    }
}
