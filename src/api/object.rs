//! The generic object envelope (`apiVersion`, `kind`, `metadata`, `spec`, `status`) and the
//! [`Resource`] trait that ties a spec type to its kind, names and status type.

use std::fmt::Debug;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::meta::{Condition, Conditions, ObjectMeta};
use super::validation::FieldErrors;

/// The one API version every kind is served at.
pub const API_VERSION: &str = "lambda/v1alpha1";

/// A spec type that is a kind of its own: names, status type and validation.
pub trait Resource:
    Serialize + DeserializeOwned + JsonSchema + Clone + Debug + PartialEq + Send + Sync + 'static
{
    /// The observed-state type written by controllers.
    type Status: Serialize
        + DeserializeOwned
        + JsonSchema
        + Clone
        + Debug
        + Default
        + PartialEq
        + Conditions
        + Send
        + Sync
        + 'static;
    /// `Function`
    const KIND: &'static str;
    /// `functions` — also the etcd key segment.
    const PLURAL: &'static str;
    /// Short CLI aliases, e.g. `fn`.
    const SHORT: &'static [&'static str];

    /// Checks the spec beyond what the schema can say; every error names its field path.
    fn validate(&self, errors: &mut FieldErrors);
}

/// An object of kind `K`: what is stored in etcd, printed by `lambda get -o yaml` and applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[serde(bound(serialize = "K: Resource", deserialize = "K: Resource"))]
#[schemars(bound = "K: Resource")]
pub struct Object<K: Resource> {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: K,
    /// Written by controllers only; ignored when applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<K::Status>,
}

impl<K: Resource> Object<K> {
    /// A new object with the given name and namespace and no status.
    pub fn new(namespace: &str, name: &str, spec: K) -> Self {
        Object {
            api_version: API_VERSION.to_string(),
            kind: K::KIND.to_string(),
            metadata: ObjectMeta::named(namespace, name),
            spec,
            status: None,
        }
    }

    /// `namespace/name`, the key used in logs and work queues.
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(self.metadata.namespace(), &self.metadata.name)
    }

    /// The generation (spec key's mod_revision), 0 for an object never stored.
    pub fn generation(&self) -> i64 {
        self.metadata.generation.unwrap_or(0)
    }

    /// The object's conditions, empty when it has no status yet.
    pub fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map(|s| s.conditions()).unwrap_or(&[])
    }

    /// True when the object is being deleted (finalizers still pending).
    pub fn is_deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    /// Full validation: envelope, metadata and spec. Every error names its field path.
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut errors = FieldErrors::default();
        if self.api_version != API_VERSION {
            errors.push(
                "apiVersion",
                format!(
                    "unsupported apiVersion {:?} (expected {API_VERSION:?})",
                    self.api_version
                ),
            );
        }
        if self.kind != K::KIND {
            errors.push(
                "kind",
                format!("kind {:?} does not match {}", self.kind, K::KIND),
            );
        }
        super::validation::validate_meta(&self.metadata, &mut errors);
        errors.scoped("spec", |errors| self.spec.validate(errors));
        errors.into_result()
    }
}

/// `namespace/name` of an object, ordered for stable output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    /// A key from its parts.
    pub fn new(namespace: &str, name: &str) -> Self {
        ObjectKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
