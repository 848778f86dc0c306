//! The ownership labels every Swarm object the platform creates carries, so that a sweep can
//! find objects whose owner is gone (design §2: nothing leaks).

use std::collections::HashMap;

/// `true` on everything the platform manages.
pub const MANAGED: &str = "lambda.managed";
/// Kind of the owning object, e.g. `Function`.
pub const KIND: &str = "lambda.kind";
/// Namespace of the owning object.
pub const NAMESPACE: &str = "lambda.namespace";
/// Name of the owning object.
pub const NAME: &str = "lambda.name";
/// `metadata.uid` of the owning object's incarnation.
pub const UID: &str = "lambda.uid";
/// Generation of the owner the object was last written for.
pub const GENERATION: &str = "lambda.generation";
/// The platform instance (one etcd cluster + key prefix) that owns the object: several platforms
/// (or test runs) may share one Swarm, and one must never sweep another's objects.
pub const INSTANCE: &str = "lambda.instance";
/// Hash of the desired service spec the controller last wrote (to skip no-op updates).
pub const SPEC_HASH: &str = "lambda.spec-hash";
/// Hash of the code a config holds.
pub const CODE_HASH: &str = "lambda.code-hash";

/// Who owns a Swarm object, as read back from (or written into) its labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub instance: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Owner {
    /// The labels naming this owner (plus `lambda.managed=true`).
    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (MANAGED.to_string(), "true".to_string()),
            (INSTANCE.to_string(), self.instance.clone()),
            (KIND.to_string(), self.kind.clone()),
            (NAMESPACE.to_string(), self.namespace.clone()),
            (NAME.to_string(), self.name.clone()),
            (UID.to_string(), self.uid.clone()),
        ])
    }

    /// Parses the owner from labels; `None` unless the object is managed and names every part.
    pub fn from_labels(labels: &HashMap<String, String>) -> Option<Owner> {
        if labels.get(MANAGED).map(String::as_str) != Some("true") {
            return None;
        }
        let get = |k: &str| labels.get(k).filter(|v| !v.is_empty()).cloned();
        Some(Owner {
            instance: get(INSTANCE)?,
            kind: get(KIND)?,
            namespace: get(NAMESPACE)?,
            name: get(NAME)?,
            uid: get(UID)?,
        })
    }
}

/// `key=value` label filters as Docker's list endpoints want them.
pub fn filters(labels: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_string(),
        labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    )])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_round_trips_through_labels() {
        let o = Owner {
            instance: "i1".into(),
            kind: "Function".into(),
            namespace: "team-a".into(),
            name: "hello".into(),
            uid: "u-1".into(),
        };
        let mut l = o.labels();
        assert_eq!(l[MANAGED], "true");
        assert_eq!(Owner::from_labels(&l), Some(o.clone()));
        l.insert(GENERATION.into(), "7".into());
        assert_eq!(Owner::from_labels(&l), Some(o));
        l.remove(UID);
        assert_eq!(Owner::from_labels(&l), None, "incomplete owner");
        let mut unmanaged = HashMap::new();
        unmanaged.insert(NAME.to_string(), "x".to_string());
        assert_eq!(Owner::from_labels(&unmanaged), None);
    }

    #[test]
    fn label_filters() {
        let f = filters(&[(MANAGED, "true"), (NAME, "a")]);
        assert_eq!(f["label"], vec!["lambda.managed=true", "lambda.name=a"]);
    }
}
