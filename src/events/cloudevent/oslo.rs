//! OpenStack notifications (oslo.messaging), the bus OpenStack's own services publish on, as
//! events (design §6): the v2 envelope `{"oslo.version": "2.0", "oslo.message": "<json>"}` or
//! the bare v1 message, mapped as source = `openstack/<publisher_id>`, type = `event_type`,
//! id = `message_id`, data = `payload`, time = `timestamp` (oslo writes UTC without an offset).

use chrono::{NaiveDateTime, Utc};
use serde_json::{Map, Value};

use super::attributes::{AttrValue, Builder};
use super::{CloudEvent, CloudEventError, Data, Mode, SPEC_VERSION};

/// True for an oslo envelope or a bare notification.
pub(super) fn looks_like(obj: &Map<String, Value>) -> bool {
    obj.contains_key("oslo.message")
        || (obj.contains_key("event_type") && obj.contains_key("publisher_id"))
}

fn invalid(name: &str, reason: impl Into<String>) -> CloudEventError {
    CloudEventError::Invalid {
        mode: Mode::OpenStack,
        name: name.into(),
        reason: reason.into(),
    }
}

fn text(obj: &Map<String, Value>, key: &str) -> Result<String, CloudEventError> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(CloudEventError::Missing {
            mode: Mode::OpenStack,
            name: key.into(),
        }),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(invalid(key, "must not be empty")),
        Some(_) => Err(invalid(key, "must be a string")),
    }
}

pub(super) fn parse(mut obj: Map<String, Value>) -> Result<CloudEvent, CloudEventError> {
    if let Some(inner) = obj.remove("oslo.message") {
        let Value::String(s) = inner else {
            return Err(invalid("oslo.message", "must be a string holding JSON"));
        };
        obj = match serde_json::from_str(&s) {
            Ok(Value::Object(o)) => o,
            Ok(_) => return Err(invalid("oslo.message", "must hold a JSON object")),
            Err(e) => return Err(invalid("oslo.message", format!("is not JSON: {e}"))),
        };
    }
    let mut b = Builder::new(Mode::OpenStack);
    b.set("specversion", AttrValue::Text(SPEC_VERSION.into()))?;
    b.set("id", AttrValue::Text(text(&obj, "message_id")?))?;
    let publisher = text(&obj, "publisher_id")?;
    b.set("source", AttrValue::Text(format!("openstack/{publisher}")))?;
    b.set("type", AttrValue::Text(text(&obj, "event_type")?))?;
    b.set(
        "datacontenttype",
        AttrValue::Text("application/json".into()),
    )?;
    if let Some(ts) = obj.get("timestamp").filter(|v| !v.is_null()) {
        let t = ts
            .as_str()
            .and_then(|s| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").ok())
            .ok_or_else(|| {
                invalid(
                    "timestamp",
                    format!("{ts} is not \"YYYY-MM-DD HH:MM:SS[.ffffff]\""),
                )
            })?;
        b.set("time", AttrValue::Time(t.and_utc().with_timezone(&Utc)))?;
    }
    let data = obj
        .remove("payload")
        .filter(|v| !v.is_null())
        .map(Data::Json);
    b.finish(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::cloudevent::AmqpMessage;
    use serde_json::json;

    fn notification() -> Value {
        json!({
            "message_id": "5d1e0a2c-1",
            "publisher_id": "compute.host-1",
            "event_type": "compute.instance.create.end",
            "priority": "INFO",
            "timestamp": "2026-12-02 10:00:00.123456",
            "payload": {"instance_id": "i-1", "state": "active"}
        })
    }

    fn amqp(body: &[u8]) -> Result<CloudEvent, CloudEventError> {
        CloudEvent::from_amqp(&AmqpMessage {
            headers: &[],
            content_type: Some("application/json"),
            message_id: None,
            body,
        })
    }

    #[test]
    fn the_v2_envelope_and_the_bare_message_map_alike() {
        let inner = notification().to_string();
        let envelope = json!({"oslo.version": "2.0", "oslo.message": inner}).to_string();
        let a = amqp(envelope.as_bytes()).expect("envelope");
        let b = amqp(inner.as_bytes()).expect("bare");
        assert_eq!(a, b);
        assert_eq!(a.id, "5d1e0a2c-1");
        assert_eq!(a.source, "openstack/compute.host-1");
        assert_eq!(a.type_, "compute.instance.create.end");
        assert_eq!(
            a.time_string().as_deref(),
            Some("2026-12-02T10:00:00.123456Z")
        );
        assert_eq!(
            a.data,
            Some(Data::Json(json!({"instance_id": "i-1", "state": "active"})))
        );
        assert_eq!(a.namespace(), None);
    }

    #[test]
    fn errors_name_the_notification_field() {
        let with = |k: &str, v: Value| {
            let mut n = notification();
            if let Some(o) = n.as_object_mut() {
                o.insert(k.into(), v);
            }
            amqp(n.to_string().as_bytes())
                .expect_err("invalid")
                .to_string()
        };
        assert_eq!(
            with("message_id", Value::Null),
            "OpenStack notification: missing required attribute message_id"
        );
        assert!(
            with("publisher_id", json!(3)).contains("publisher_id is invalid: must be a string")
        );
        assert!(with("event_type", json!("")).contains("event_type is invalid: must not be empty"));
        assert!(with("timestamp", json!("yesterday")).contains("timestamp is invalid"));
        let bad = json!({"oslo.version": "2.0", "oslo.message": "{nope"}).to_string();
        let err = amqp(bad.as_bytes()).expect_err("bad envelope").to_string();
        assert!(
            err.contains("oslo.message is invalid: is not JSON"),
            "{err}"
        );
        let bad = json!({"oslo.version": "2.0", "oslo.message": {"a": 1}}).to_string();
        let err = amqp(bad.as_bytes()).expect_err("not a string").to_string();
        assert!(
            err.contains("oslo.message is invalid: must be a string holding JSON"),
            "{err}"
        );
    }
}
