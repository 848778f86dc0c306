//! JSON Schemas of the kinds, generated from the Rust types (checked in under `crds/`).

use schemars::schema_for;

use super::kind::Kind;
use super::object::Object;

/// The JSON Schema of a kind's objects.
pub fn schema(kind: Kind) -> serde_json::Value {
    let schema = crate::with_kind!(kind, K, schema_for!(Object<K>));
    let mut value = schema.to_value();
    if let Some(obj) = value.as_object_mut() {
        obj.insert(
            "title".into(),
            serde_json::Value::String(kind.name().to_string()),
        );
    }
    value
}

/// The schema of a kind as the YAML document checked in at `crds/<kind>.yaml`.
pub fn schema_yaml(kind: Kind) -> String {
    // Schemas are plain JSON values; serialization cannot fail for them.
    serde_saphyr::to_string(&schema(kind)).unwrap_or_else(|e| format!("# error: {e}\n"))
}

/// File name under `crds/` for a kind.
pub fn schema_file_name(kind: Kind) -> String {
    format!("{}.yaml", kind.name().to_ascii_lowercase())
}
