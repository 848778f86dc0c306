//! The original system's message, accepted exactly as its publishers sent it:
//! `{"event_source": "S1", "user_name": "alice", "event_data": {"type": "FileCreate", "filename": "test.py"}}`.
//!
//! Mapping (design §6): source = `event_source`, type = `event_data.type`, the namespace
//! extension = `user_name`, data = the whole message (so a function written for the original
//! system gets what it always got), subject = `event_data.filename` when it is a string. The
//! message has no id: the AMQP `message-id` property is used when the publisher set one (a
//! redelivery then keeps its id), else one is generated.

use serde_json::{Map, Value};

use super::attributes::{AttrValue, Builder};
use super::{CloudEvent, CloudEventError, Data, Mode, NAMESPACE_EXTENSION, SPEC_VERSION};

/// True when a JSON object is meant as an original-format message (any of its fields is there),
/// so that a broken one is reported by the field it lacks.
pub(super) fn looks_like(obj: &Map<String, Value>) -> bool {
    ["event_source", "user_name", "event_data"]
        .iter()
        .any(|k| obj.contains_key(*k))
}

fn missing(name: &str) -> CloudEventError {
    CloudEventError::Missing {
        mode: Mode::Original,
        name: name.into(),
    }
}

fn invalid(name: &str, reason: impl Into<String>) -> CloudEventError {
    CloudEventError::Invalid {
        mode: Mode::Original,
        name: name.into(),
        reason: reason.into(),
    }
}

/// A required non-empty string field.
fn string<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a str, CloudEventError> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(missing(path)),
        Some(Value::String(s)) if s.trim().is_empty() => Err(invalid(path, "must not be empty")),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(path, "must be a string")),
    }
}

pub(super) fn parse(
    obj: Map<String, Value>,
    message_id: Option<&str>,
) -> Result<CloudEvent, CloudEventError> {
    let source = string(&obj, "event_source", "event_source")?.to_string();
    let user = string(&obj, "user_name", "user_name")?.to_string();
    let event_data = match obj.get("event_data") {
        None | Some(Value::Null) => return Err(missing("event_data")),
        Some(Value::Object(d)) => d,
        Some(_) => return Err(invalid("event_data", "must be an object")),
    };
    let type_ = string(event_data, "type", "event_data.type")?.to_string();
    let subject = event_data
        .get("filename")
        .and_then(Value::as_str)
        .map(str::to_string);
    let id = match message_id.map(str::trim) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => uuid::Uuid::new_v4().to_string(),
    };
    let mut b = Builder::new(Mode::Original);
    b.set("specversion", AttrValue::Text(SPEC_VERSION.into()))?;
    b.set("id", AttrValue::Text(id))?;
    b.set("source", AttrValue::Text(source))?;
    b.set("type", AttrValue::Text(type_))?;
    b.set(
        "datacontenttype",
        AttrValue::Text("application/json".into()),
    )?;
    if let Some(s) = subject {
        b.set("subject", AttrValue::Text(s))?;
    }
    // user_name becomes the namespace; the builder checks it is a namespace name, and the error
    // should name the field the publisher wrote.
    b.set(NAMESPACE_EXTENSION, AttrValue::Text(user.clone()))?;
    b.finish(Some(Data::Json(Value::Object(obj))))
        .map_err(|e| match e {
            CloudEventError::Invalid { name, reason, .. } if name == NAMESPACE_EXTENSION => {
                invalid("user_name", reason)
            }
            other => other,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::cloudevent::AmqpMessage;
    use serde_json::json;

    const ORIGINAL: &[u8] =
        br#"{"event_source": "S1", "user_name": "alice", "event_data": {"type": "FileCreate", "filename": "test.py"}}"#;

    fn parse_value(v: Value) -> Result<CloudEvent, CloudEventError> {
        match v {
            Value::Object(o) => parse(o, None),
            _ => Err(CloudEventError::Unrecognised),
        }
    }

    #[test]
    fn the_original_message_maps_exactly() {
        let msg = AmqpMessage {
            headers: &[],
            content_type: None,
            message_id: None,
            body: ORIGINAL,
        };
        let e = CloudEvent::from_amqp(&msg).expect("event");
        assert_eq!(e.source, "S1");
        assert_eq!(e.type_, "FileCreate");
        assert_eq!(e.namespace(), Some("alice"));
        assert_eq!(e.subject.as_deref(), Some("test.py"));
        assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
        let whole: Value = serde_json::from_slice(ORIGINAL).expect("json");
        assert_eq!(e.data, Some(Data::Json(whole)));
        assert!(
            uuid::Uuid::parse_str(&e.id).is_ok(),
            "generated id {}",
            e.id
        );
        // Each parse without a message id generates a fresh one.
        assert_ne!(CloudEvent::from_amqp(&msg).expect("again").id, e.id);
        // The AMQP message-id, when set, is the id: a redelivery keeps it.
        let msg = AmqpMessage {
            message_id: Some("m-42"),
            ..msg
        };
        assert_eq!(CloudEvent::from_amqp(&msg).expect("with id").id, "m-42");
        // A structured round trip keeps everything.
        let again = CloudEvent::from_structured(&e.to_structured_bytes()).expect("round trip");
        assert_eq!(again, e);
    }

    #[test]
    fn extra_fields_are_kept_in_data_and_filename_is_optional() {
        let e = parse_value(json!({"event_source": "S1", "user_name": "bob", "event_data": {"type": "FileDelete"}, "extra": 1}))
            .expect("event");
        assert_eq!(e.subject, None);
        assert_eq!(
            e.data,
            Some(Data::Json(
                json!({"event_source": "S1", "user_name": "bob", "event_data": {"type": "FileDelete"}, "extra": 1})
            ))
        );
    }

    #[test]
    fn every_error_names_the_original_field() {
        let cases = [
            (
                json!({"user_name": "a", "event_data": {"type": "T"}}),
                "missing required attribute event_source",
            ),
            (
                json!({"event_source": 1, "user_name": "a", "event_data": {"type": "T"}}),
                "event_source is invalid: must be a string",
            ),
            (
                json!({"event_source": " ", "user_name": "a", "event_data": {"type": "T"}}),
                "event_source is invalid: must not be empty",
            ),
            (
                json!({"event_source": "S", "event_data": {"type": "T"}}),
                "missing required attribute user_name",
            ),
            (
                json!({"event_source": "S", "user_name": "Alice Smith", "event_data": {"type": "T"}}),
                "user_name is invalid: \"Alice Smith\" is not a namespace name",
            ),
            (
                json!({"event_source": "S", "user_name": "a"}),
                "missing required attribute event_data",
            ),
            (
                json!({"event_source": "S", "user_name": "a", "event_data": "x"}),
                "event_data is invalid: must be an object",
            ),
            (
                json!({"event_source": "S", "user_name": "a", "event_data": {}}),
                "missing required attribute event_data.type",
            ),
            (
                json!({"event_source": "S", "user_name": "a", "event_data": {"type": 3}}),
                "event_data.type is invalid: must be a string",
            ),
        ];
        for (v, want) in cases {
            let msg = parse_value(v.clone()).expect_err("invalid").to_string();
            assert!(msg.starts_with("original-format message: "), "{v}: {msg}");
            assert!(msg.contains(want), "{v}: {msg} (wanted {want})");
        }
    }

    #[test]
    fn recognition() {
        let obj = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert!(looks_like(&obj(json!({"event_data": {}}))));
        assert!(looks_like(&obj(json!({"user_name": "a"}))));
        assert!(!looks_like(&obj(json!({"name": "a"}))));
    }
}
