//! Structured mode: the event as one JSON document (`application/cloudevents+json`), read and
//! written. `data` holds JSON data, `data_base64` binary data; every other member is an attribute.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};

use super::attributes::{AttrValue, Builder};
use super::{CloudEvent, CloudEventError, Data, ExtensionValue, Mode};

/// Parses a structured-mode document.
pub(super) fn parse(body: &[u8]) -> Result<CloudEvent, CloudEventError> {
    let not_object = |reason: String| CloudEventError::Body {
        mode: Mode::Structured,
        reason,
    };
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(obj)) => from_object(obj),
        Ok(other) => Err(not_object(format!("got {}", json_type(&other)))),
        Err(e) => Err(not_object(e.to_string())),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Builds an event from a structured document's members.
pub(super) fn from_object(mut obj: Map<String, Value>) -> Result<CloudEvent, CloudEventError> {
    let mut b = Builder::new(Mode::Structured);
    let data = obj.remove("data");
    let data_base64 = obj.remove("data_base64");
    for (name, value) in obj {
        let value = match value {
            // The JSON format: a null member is an absent attribute.
            Value::Null => continue,
            Value::String(s) => AttrValue::Text(s),
            Value::Bool(v) => AttrValue::Boolean(v),
            Value::Number(n) => match n.as_i64() {
                Some(i) => AttrValue::Integer(i),
                None => {
                    let why = format!("{n} is not a 64-bit integer (the only CloudEvents number)");
                    return Err(b.invalid(&name, why));
                }
            },
            other => {
                let why = format!(
                    "must be a string, integer or boolean, got {}",
                    json_type(&other)
                );
                return Err(b.invalid(&name, why));
            }
        };
        b.set(&name, value)?;
    }
    // A null member is an absent one, for the data members as for attributes.
    let present = |v: Option<Value>| v.filter(|v| !v.is_null());
    let data = match (present(data), present(data_base64)) {
        (None, None) => None,
        (Some(d), None) => Some(Data::Json(d)),
        (None, Some(Value::String(s))) => match BASE64.decode(s.trim()) {
            Ok(bytes) => Some(Data::Binary(bytes)),
            Err(e) => return Err(b.invalid("data_base64", format!("is not base64: {e}"))),
        },
        (None, Some(other)) => {
            let why = format!("must be a base64 string, got {}", json_type(&other));
            return Err(b.invalid("data_base64", why));
        }
        (Some(_), Some(_)) => {
            return Err(b.invalid("data_base64", "must not be given together with data"));
        }
    };
    b.finish(data)
}

/// The structured-mode JSON of an event.
pub(super) fn to_json(e: &CloudEvent) -> Value {
    let mut obj = Map::new();
    let mut put = |k: &str, v: Value| {
        obj.insert(k.to_string(), v);
    };
    put("specversion", Value::String(e.specversion.clone()));
    put("id", Value::String(e.id.clone()));
    put("source", Value::String(e.source.clone()));
    put("type", Value::String(e.type_.clone()));
    let optional = [
        ("subject", e.subject.clone()),
        ("time", e.time_string()),
        ("datacontenttype", e.datacontenttype.clone()),
        ("dataschema", e.dataschema.clone()),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            put(k, Value::String(v));
        }
    }
    for (k, v) in &e.extensions {
        put(
            k,
            match v {
                ExtensionValue::String(s) => Value::String(s.clone()),
                ExtensionValue::Integer(i) => Value::from(*i),
                ExtensionValue::Boolean(b) => Value::Bool(*b),
            },
        );
    }
    match &e.data {
        None => {}
        Some(Data::Json(v)) => put("data", v.clone()),
        Some(Data::Binary(bytes)) => put("data_base64", Value::String(BASE64.encode(bytes))),
    }
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(extra: Value) -> Vec<u8> {
        let mut base = json!({"specversion": "1.0", "id": "A-1", "source": "storage/uploads", "type": "file.created"});
        if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
            b.extend(e);
        }
        serde_json::to_vec(&base).expect("json")
    }

    #[test]
    fn a_full_document_parses_and_round_trips() {
        let body = doc(json!({
            "subject": "a.txt", "time": "2026-12-02T10:00:00.5Z", "datacontenttype": "application/json",
            "dataschema": "https://example.org/s", "traceparent": "00-ab", "seq": 42, "replay": false,
            "lambdanamespace": "alice", "data": {"name": "a.txt", "size": 3}
        }));
        let e = parse(&body).expect("event");
        assert_eq!(e.id, "A-1");
        assert_eq!(e.subject.as_deref(), Some("a.txt"));
        assert_eq!(e.time_string().as_deref(), Some("2026-12-02T10:00:00.500Z"));
        assert_eq!(
            e.data,
            Some(Data::Json(json!({"name": "a.txt", "size": 3})))
        );
        assert_eq!(e.extensions["seq"], ExtensionValue::Integer(42));
        assert_eq!(e.extensions["replay"], ExtensionValue::Boolean(false));
        assert_eq!(e.namespace(), Some("alice"));
        let again = parse(&serde_json::to_vec(&to_json(&e)).expect("json")).expect("round trip");
        assert_eq!(again, e);
    }

    #[test]
    fn base64_data_and_nulls() {
        let e = parse(&doc(
            json!({"data_base64": "AAEC", "subject": null, "data": null}),
        ))
        .expect("event");
        assert_eq!(e.data, Some(Data::Binary(vec![0, 1, 2])));
        assert_eq!(e.subject, None);
        assert_eq!(to_json(&e)["data_base64"], json!("AAEC"));
        assert_eq!(
            parse(&serde_json::to_vec(&to_json(&e)).expect("json")).expect("rt"),
            e
        );
        let e = parse(&doc(json!({}))).expect("no data");
        assert_eq!(e.data, None);
        assert!(to_json(&e).get("data").is_none());
    }

    #[test]
    fn every_error_names_its_attribute() {
        let cases = [
            (
                json!({"data": 1, "data_base64": "AA=="}),
                "data_base64 is invalid: must not be given together with data",
            ),
            (
                json!({"data_base64": "%%%"}),
                "data_base64 is invalid: is not base64",
            ),
            (
                json!({"data_base64": 5}),
                "data_base64 is invalid: must be a base64 string, got a number",
            ),
            (
                json!({"seq": 1.5}),
                "seq is invalid: 1.5 is not a 64-bit integer",
            ),
            (
                json!({"tags": ["a"]}),
                "tags is invalid: must be a string, integer or boolean, got an array",
            ),
            (
                json!({"id": 7}),
                "id is invalid: must be a string, got an integer",
            ),
            (
                json!({"source": ""}),
                "source is invalid: must not be empty",
            ),
            (
                json!({"time": "noon"}),
                "time is invalid: \"noon\" is not an RFC 3339 time",
            ),
            (
                json!({"specversion": "0.3"}),
                "specversion \"0.3\" is not supported",
            ),
            (json!({"type": null}), "missing required attribute type"),
            (
                json!({"Bad-Name": "x"}),
                "Bad-Name is invalid: attribute names",
            ),
        ];
        for (extra, want) in cases {
            let err = parse(&doc(extra.clone())).expect_err("invalid");
            let msg = err.to_string();
            assert!(
                msg.starts_with("structured-mode CloudEvent: "),
                "{extra}: {msg}"
            );
            assert!(msg.contains(want), "{extra}: {msg} (wanted {want})");
        }
    }

    #[test]
    fn bodies_that_are_not_objects() {
        let err = parse(b"[1,2]").expect_err("array");
        assert_eq!(
            err.to_string(),
            "structured-mode CloudEvent: the body is not a JSON object: got an array"
        );
        let err = parse(b"{nope").expect_err("not json");
        assert!(
            matches!(
                err,
                CloudEventError::Body {
                    mode: Mode::Structured,
                    ..
                }
            ),
            "{err}"
        );
    }
}
