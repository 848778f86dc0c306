//! The etcd key layout (design §2): user-owned objects under `registry/`, controller-owned status
//! under `status/`, so spec and status never race and the spec key's `mod_revision` is the
//! object's generation.

use crate::api::{ObjectKey, Resource};

/// Key prefix of every platform key unless configured otherwise.
pub const DEFAULT_PREFIX: &str = "/lambda";

/// Builds keys under one root prefix.
#[derive(Debug, Clone)]
pub struct KeySpace {
    root: String,
}

impl KeySpace {
    /// Keys under `root` (e.g. `/lambda`), with any trailing `/` ignored.
    pub fn new(root: &str) -> Self {
        KeySpace {
            root: root.trim_end_matches('/').to_string(),
        }
    }

    /// The root prefix.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// `/lambda/registry/functions/` or, with a namespace, `/lambda/registry/functions/ns/`.
    pub fn spec_prefix(&self, plural: &str, namespace: Option<&str>) -> String {
        self.prefix("registry", plural, namespace)
    }

    /// `/lambda/status/functions/` or `/lambda/status/functions/ns/`.
    pub fn status_prefix(&self, plural: &str, namespace: Option<&str>) -> String {
        self.prefix("status", plural, namespace)
    }

    fn prefix(&self, area: &str, plural: &str, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) => format!("{}/{area}/{plural}/{ns}/", self.root),
            None => format!("{}/{area}/{plural}/", self.root),
        }
    }

    /// The spec key of an object.
    pub fn spec_key<K: Resource>(&self, key: &ObjectKey) -> String {
        format!(
            "{}{}",
            self.spec_prefix(K::PLURAL, Some(&key.namespace)),
            key.name
        )
    }

    /// The status key of an object.
    pub fn status_key<K: Resource>(&self, key: &ObjectKey) -> String {
        format!(
            "{}{}",
            self.status_prefix(K::PLURAL, Some(&key.namespace)),
            key.name
        )
    }

    /// Splits `…/<plural>/<ns>/<name>` under `prefix` (a kind-wide prefix) into its object key.
    pub fn parse_key(prefix: &str, key: &str) -> Option<ObjectKey> {
        let rest = key.strip_prefix(prefix)?;
        let (ns, name) = rest.split_once('/')?;
        if ns.is_empty() || name.is_empty() || name.contains('/') {
            return None;
        }
        Some(ObjectKey::new(ns, name))
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's range end).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::FunctionSpec;

    #[test]
    fn layout() {
        let ks = KeySpace::new("/lambda/");
        let k = ObjectKey::new("default", "hello");
        assert_eq!(
            ks.spec_key::<FunctionSpec>(&k),
            "/lambda/registry/functions/default/hello"
        );
        assert_eq!(
            ks.status_key::<FunctionSpec>(&k),
            "/lambda/status/functions/default/hello"
        );
        let p = ks.spec_prefix("functions", None);
        assert_eq!(
            KeySpace::parse_key(&p, "/lambda/registry/functions/a/b"),
            Some(ObjectKey::new("a", "b"))
        );
        assert_eq!(
            KeySpace::parse_key(&p, "/lambda/registry/functions/a"),
            None
        );
        assert_eq!(
            KeySpace::parse_key(&p, "/lambda/registry/functions/a/b/c"),
            None
        );
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
    }
}
