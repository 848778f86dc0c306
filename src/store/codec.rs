//! Encoding of objects as YAML values in etcd, and decoding (with the derived metadata) back.
//!
//! Stored: `apiVersion`, `kind`, `metadata` without `uid`/`generation`/`resourceVersion`, `spec`.
//! Derived on read: `uid` from the key and its create revision, `generation` and
//! `resourceVersion` from the key's mod revision, `namespace`/`name` from the key.

use sha2::{Digest, Sha256};

use crate::api::manifest::parse_at;
use crate::api::{API_VERSION, Object, ObjectKey, Resource};

use super::StoreError;

/// Serializes the user-owned part of an object for its spec key.
pub fn encode_spec<K: Resource>(obj: &Object<K>) -> Result<String, StoreError> {
    let mut stored = obj.clone();
    stored.status = None;
    stored.api_version = API_VERSION.to_string();
    stored.kind = K::KIND.to_string();
    let m = &mut stored.metadata;
    m.uid = None;
    m.generation = None;
    m.resource_version = None;
    serde_saphyr::to_string(&stored).map_err(|e| StoreError::Encode {
        key: obj.key().to_string(),
        message: e.to_string(),
    })
}

/// Serializes a status for its status key.
pub fn encode_status<K: Resource>(
    key: &ObjectKey,
    status: &K::Status,
) -> Result<String, StoreError> {
    serde_saphyr::to_string(status).map_err(|e| StoreError::Encode {
        key: key.to_string(),
        message: e.to_string(),
    })
}

/// The uid of one incarnation of an object: a UUID-shaped string whose first 8 bytes hash the
/// key and whose last 8 bytes are the create revision (so status writes can be fenced on it).
pub fn derive_uid(etcd_key: &str, create_revision: i64) -> String {
    let h = Sha256::digest(etcd_key.as_bytes());
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&h[..8]);
    b[8..].copy_from_slice(&create_revision.to_be_bytes());
    uuid::Uuid::from_bytes(b).to_string()
}

/// The create revision encoded in a uid made by [`derive_uid`].
pub fn create_revision_of_uid(uid: &str) -> Option<i64> {
    let u = uuid::Uuid::parse_str(uid).ok()?;
    let b = u.as_bytes();
    let mut r = [0u8; 8];
    r.copy_from_slice(&b[8..]);
    Some(i64::from_be_bytes(r))
}

/// Decodes a spec key's value. `key` is the object key parsed from the etcd key.
pub fn decode_spec<K: Resource>(
    etcd_key: &str,
    key: &ObjectKey,
    value: &[u8],
    create_revision: i64,
    mod_revision: i64,
) -> Result<Object<K>, StoreError> {
    let invalid = |message: String| StoreError::Invalid {
        key: etcd_key.to_string(),
        message,
    };
    let text =
        std::str::from_utf8(value).map_err(|e| invalid(format!("value is not UTF-8: {e}")))?;
    let mut obj: Object<K> = parse_at(etcd_key, 1, text).map_err(|e| invalid(e.to_string()))?;
    if obj.api_version != API_VERSION {
        return Err(invalid(format!(
            "apiVersion {:?} is not {API_VERSION:?}",
            obj.api_version
        )));
    }
    if obj.kind != K::KIND {
        return Err(invalid(format!(
            "kind {:?} stored under {} keys",
            obj.kind,
            K::PLURAL
        )));
    }
    let m = &mut obj.metadata;
    if !m.name.is_empty() && m.name != key.name {
        return Err(invalid(format!(
            "metadata.name {:?} does not match the key's name {:?}",
            m.name, key.name
        )));
    }
    if let Some(ns) = &m.namespace
        && ns != &key.namespace
    {
        return Err(invalid(format!(
            "metadata.namespace {ns:?} does not match the key's namespace {:?}",
            key.namespace
        )));
    }
    m.name = key.name.clone();
    m.namespace = Some(key.namespace.clone());
    m.uid = Some(derive_uid(etcd_key, create_revision));
    m.generation = Some(mod_revision);
    m.resource_version = Some(mod_revision.to_string());
    obj.status = None;
    Ok(obj)
}

/// Decodes a status key's value.
pub fn decode_status<K: Resource>(etcd_key: &str, value: &[u8]) -> Result<K::Status, StoreError> {
    let invalid = |message: String| StoreError::Invalid {
        key: etcd_key.to_string(),
        message,
    };
    let text =
        std::str::from_utf8(value).map_err(|e| invalid(format!("value is not UTF-8: {e}")))?;
    parse_at(etcd_key, 1, text).map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_round_trip() {
        let uid = derive_uid("/lambda/registry/functions/default/a", 12345);
        assert_eq!(create_revision_of_uid(&uid), Some(12345));
        assert_ne!(
            uid,
            derive_uid("/lambda/registry/functions/default/a", 12346)
        );
        assert_eq!(create_revision_of_uid("nope"), None);
    }
}
