//! Binary mode: attributes in headers, the body as the data. Over AMQP the headers are `ce-*`
//! (Knative eventing-rabbitmq) or the AMQP binding's `cloudEvents:` / `cloudEvents_`, and the
//! message's `content-type` property is `datacontenttype`. Over HTTP they are `ce-*` with
//! percent-encoded values, and `Content-Type` is `datacontenttype`.

use axum::http::HeaderMap;
use chrono::DateTime;

use super::attributes::{AttrValue, Builder};
use super::{CloudEvent, CloudEventError, Data, Mode, is_json_media, media_type};

/// An AMQP 0-9-1 header value as the broker client delivers it. The listener converts its
/// client's type into this, so that parsing does not depend on the client library.
#[derive(Debug, Clone, PartialEq)]
pub enum AmqpValue {
    /// A (long or short) string.
    Text(String),
    /// Any integer type.
    Integer(i64),
    Boolean(bool),
    /// An AMQP timestamp: seconds since the Unix epoch.
    Timestamp(u64),
    /// Any other type (arrays, tables, floats, non-UTF-8 bytes), named for the error message.
    Other(String),
}

/// One message consumed from RabbitMQ, as far as event parsing needs it.
#[derive(Debug, Clone, Copy)]
pub struct AmqpMessage<'a> {
    /// The message's headers table, in order.
    pub headers: &'a [(String, AmqpValue)],
    /// The `content-type` property.
    pub content_type: Option<&'a str>,
    /// The `message-id` property: the id of an original-format message (which has none of its
    /// own), so that a redelivered one keeps its id.
    pub message_id: Option<&'a str>,
    pub body: &'a [u8],
}

/// The attribute name of an AMQP header, when it is a CloudEvents one.
fn amqp_attribute(header: &str) -> Option<String> {
    let lower = header.to_ascii_lowercase();
    ["ce-", "cloudevents:", "cloudevents_"]
        .iter()
        .find_map(|p| lower.strip_prefix(p).map(str::to_string))
}

/// True when the message carries any CloudEvents header (so binary-mode rules apply, and a
/// missing `ce-specversion` is named rather than the body being guessed at).
pub(super) fn amqp_is_binary(msg: &AmqpMessage<'_>) -> bool {
    msg.headers.iter().any(|(k, _)| amqp_attribute(k).is_some())
}

pub(super) fn from_amqp(msg: &AmqpMessage<'_>) -> Result<CloudEvent, CloudEventError> {
    let mut b = Builder::new(Mode::AmqpBinary);
    for (header, value) in msg.headers {
        let Some(name) = amqp_attribute(header) else {
            continue;
        };
        let value = match value {
            AmqpValue::Text(s) => AttrValue::Text(s.clone()),
            AmqpValue::Integer(i) => AttrValue::Integer(*i),
            AmqpValue::Boolean(v) => AttrValue::Boolean(*v),
            AmqpValue::Timestamp(secs) => {
                let t = i64::try_from(*secs)
                    .ok()
                    .and_then(|s| DateTime::from_timestamp(s, 0))
                    .ok_or_else(|| {
                        b.invalid(header, format!("timestamp {secs} is out of range"))
                    })?;
                AttrValue::Time(t)
            }
            AmqpValue::Other(kind) => {
                let why = format!("header of type {kind} (use a string)");
                return Err(b.invalid(header, why));
            }
        };
        b.set(&name, value)?;
    }
    finish(b, msg.content_type, msg.body)
}

/// Fills `datacontenttype` from the transport's content type (when no header gave it) and
/// reads the body as the data.
fn finish(
    mut b: Builder,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<CloudEvent, CloudEventError> {
    if !b.has_datacontenttype()
        && let Some(ct) = content_type
    {
        b.set("datacontenttype", AttrValue::Text(ct.to_string()))?;
    }
    let data = data_of(&b, content_type, body)?;
    b.finish(data)
}

/// The body as data: JSON for JSON media types (it must parse), bytes for others, and for a body
/// without a content type JSON when it parses, else bytes. An empty body is no data.
fn data_of(
    b: &Builder,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Option<Data>, CloudEventError> {
    if body.is_empty() {
        return Ok(None);
    }
    Ok(Some(match content_type.map(media_type) {
        Some(m) if is_json_media(&m) => match serde_json::from_slice(body) {
            Ok(v) => Data::Json(v),
            Err(e) => {
                let why = format!("the body is not the JSON its content type {m} says: {e}");
                return Err(b.invalid("data", why));
            }
        },
        Some(_) => Data::Binary(body.to_vec()),
        None => serde_json::from_slice(body)
            .map(Data::Json)
            .unwrap_or_else(|_| Data::Binary(body.to_vec())),
    }))
}

/// True when the request carries any `ce-*` header.
pub(super) fn http_is_binary(headers: &HeaderMap) -> bool {
    // HeaderMap names are lowercase.
    headers.keys().any(|k| k.as_str().starts_with("ce-"))
}

pub(super) fn from_http(headers: &HeaderMap, body: &[u8]) -> Result<CloudEvent, CloudEventError> {
    let mut b = Builder::new(Mode::HttpBinary);
    for (header, value) in headers {
        let Some(name) = header.as_str().strip_prefix("ce-") else {
            continue;
        };
        let raw = value.to_str().map_err(|_| {
            b.invalid(
                header.as_str(),
                "is not visible ASCII (percent-encode other characters)",
            )
        })?;
        // The HTTP binding percent-encodes what a header cannot carry.
        let text = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|e| {
                b.invalid(
                    header.as_str(),
                    format!("percent-decodes to invalid UTF-8: {e}"),
                )
            })?;
        b.set(name, AttrValue::Text(text.into_owned()))?;
    }
    let content_type = match headers.get(axum::http::header::CONTENT_TYPE) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| b.invalid("datacontenttype", "Content-Type is not visible ASCII"))?,
        ),
    };
    finish(b, content_type, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::cloudevent::ExtensionValue;
    use axum::http::HeaderValue;
    use serde_json::json;

    fn text(k: &str, v: &str) -> (String, AmqpValue) {
        (k.to_string(), AmqpValue::Text(v.to_string()))
    }

    fn required() -> Vec<(String, AmqpValue)> {
        vec![
            text("ce-specversion", "1.0"),
            text("ce-id", "e-1"),
            text("ce-source", "storage/uploads"),
            text("ce-type", "file.created"),
        ]
    }

    fn amqp<'a>(
        headers: &'a [(String, AmqpValue)],
        ct: Option<&'a str>,
        body: &'a [u8],
    ) -> AmqpMessage<'a> {
        AmqpMessage {
            headers,
            content_type: ct,
            message_id: None,
            body,
        }
    }

    #[test]
    fn amqp_binary_mode_reads_headers_and_body() {
        let mut h = required();
        h.push(text("ce-subject", "a.txt"));
        h.push(text("ce-time", "2026-12-02T10:00:00Z"));
        h.push(("ce-attempt".into(), AmqpValue::Integer(2)));
        h.push(("ce-replay".into(), AmqpValue::Boolean(true)));
        h.push(text("x-other", "ignored"));
        let body = br#"{"name":"a.txt"}"#;
        let e = CloudEvent::from_amqp(&amqp(&h, Some("application/json"), body)).expect("event");
        assert_eq!(
            (e.id.as_str(), e.source.as_str(), e.type_.as_str()),
            ("e-1", "storage/uploads", "file.created")
        );
        assert_eq!(e.subject.as_deref(), Some("a.txt"));
        assert_eq!(e.time_string().as_deref(), Some("2026-12-02T10:00:00Z"));
        assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(e.data, Some(Data::Json(json!({"name": "a.txt"}))));
        assert_eq!(e.extensions["attempt"], ExtensionValue::Integer(2));
        assert_eq!(e.extensions["replay"], ExtensionValue::Boolean(true));
        assert!(!e.extensions.contains_key("other"));
    }

    #[test]
    fn amqp_binding_prefixes_typed_times_and_bodies() {
        let h = vec![
            text("cloudEvents:specversion", "1.0"),
            text("cloudEvents_id", "e-2"),
            text("CE-Source", "s"),
            text("ce-type", "t"),
            ("ce-time".into(), AmqpValue::Timestamp(1_700_000_000)),
        ];
        let e = CloudEvent::from_amqp(&amqp(&h, Some("text/plain"), b"hello")).expect("event");
        assert_eq!(e.id, "e-2");
        assert_eq!(e.time_string().as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(e.data, Some(Data::Binary(b"hello".to_vec())));
        // No content type: JSON when it parses, else bytes; an empty body is no data.
        let e = CloudEvent::from_amqp(&amqp(&h, None, b"[1]")).expect("json");
        assert_eq!(e.data, Some(Data::Json(json!([1]))));
        let e = CloudEvent::from_amqp(&amqp(&h, None, b"\xff")).expect("bytes");
        assert_eq!(e.data, Some(Data::Binary(vec![0xff])));
        let e = CloudEvent::from_amqp(&amqp(&h, None, b"")).expect("empty");
        assert_eq!(e.data, None);
        // A ce-datacontenttype header wins over the property.
        let mut h2 = h.clone();
        h2.push(text("ce-datacontenttype", "application/xml"));
        let e = CloudEvent::from_amqp(&amqp(&h2, Some("text/plain"), b"<a/>")).expect("xml");
        assert_eq!(e.datacontenttype.as_deref(), Some("application/xml"));
    }

    #[test]
    fn amqp_binary_errors_name_the_header() {
        let mut h = required();
        h.retain(|(k, _)| k != "ce-specversion");
        let err = CloudEvent::from_amqp(&amqp(&h, None, b"{}")).expect_err("no specversion");
        assert_eq!(
            err.to_string(),
            "binary-mode CloudEvent (AMQP ce-* headers): missing required attribute specversion"
        );
        let mut h = required();
        h.push(("ce-tags".into(), AmqpValue::Other("array".into())));
        let err = CloudEvent::from_amqp(&amqp(&h, None, b"{}")).expect_err("array");
        assert!(
            err.to_string()
                .contains("ce-tags is invalid: header of type array"),
            "{err}"
        );
        let mut h = required();
        h.push(("ce-time".into(), AmqpValue::Timestamp(u64::MAX)));
        let err = CloudEvent::from_amqp(&amqp(&h, None, b"{}")).expect_err("range");
        assert!(
            err.to_string().contains("ce-time is invalid: timestamp"),
            "{err}"
        );
        let h = required();
        let err = CloudEvent::from_amqp(&amqp(&h, Some("application/json"), b"{x"))
            .expect_err("bad json");
        assert!(
            err.to_string().contains(
                "data is invalid: the body is not the JSON its content type application/json says"
            ),
            "{err}"
        );
    }

    fn http(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn http_binary_mode_percent_decodes() {
        let h = http(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "h-1"),
            ("ce-source", "/my%20source"),
            ("ce-type", "t"),
            ("ce-subject", "caf%C3%A9"),
            ("content-type", "application/json; charset=utf-8"),
        ]);
        let e = CloudEvent::from_http(&h, br#"{"a":1}"#).expect("event");
        assert_eq!(e.source, "/my source");
        assert_eq!(e.subject.as_deref(), Some("café"));
        assert_eq!(
            e.datacontenttype.as_deref(),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(e.data, Some(Data::Json(json!({"a": 1}))));
    }

    #[test]
    fn http_binary_errors() {
        let base = [
            ("ce-specversion", "1.0"),
            ("ce-id", "h-1"),
            ("ce-source", "s"),
        ];
        let err = CloudEvent::from_http(&http(&base), b"").expect_err("no type");
        assert_eq!(
            err.to_string(),
            "binary-mode CloudEvent (HTTP ce-* headers): missing required attribute type"
        );
        let mut twice = http(&base);
        twice.append("ce-type", HeaderValue::from_static("a"));
        twice.append("ce-type", HeaderValue::from_static("b"));
        let err = CloudEvent::from_http(&twice, b"").expect_err("twice");
        assert!(
            err.to_string()
                .contains("type is invalid: is given more than once"),
            "{err}"
        );
        let mut bad = http(&base);
        bad.append("ce-type", HeaderValue::from_static("%FF"));
        let err = CloudEvent::from_http(&bad, b"").expect_err("utf-8");
        assert!(
            err.to_string()
                .contains("ce-type is invalid: percent-decodes to invalid UTF-8"),
            "{err}"
        );
        let mut opaque = http(&base);
        opaque.append(
            "ce-type",
            HeaderValue::from_bytes(b"caf\xe9").expect("opaque"),
        );
        let err = CloudEvent::from_http(&opaque, b"").expect_err("opaque");
        assert!(
            err.to_string()
                .contains("ce-type is invalid: is not visible ASCII"),
            "{err}"
        );
        let mut v = http(&base);
        v.append("ce-type", HeaderValue::from_static("t"));
        v.append("ce-specversion", HeaderValue::from_static("2.0"));
        let err = CloudEvent::from_http(&v, b"").expect_err("version");
        assert!(
            err.to_string()
                .contains("specversion is invalid: is given more than once"),
            "{err}"
        );
    }

    #[test]
    fn http_structured_mode_and_original_bodies() {
        let h = http(&[("content-type", "application/cloudevents+json")]);
        let body = br#"{"specversion":"1.0","id":"s-1","source":"s","type":"t","data":{"k":"v"}}"#;
        let e = CloudEvent::from_http(&h, body).expect("structured");
        assert_eq!(e.id, "s-1");
        assert_eq!(e.data, Some(Data::Json(json!({"k": "v"}))));
        let err = CloudEvent::from_http(&h, b"{}").expect_err("empty");
        assert!(
            err.to_string()
                .starts_with("structured-mode CloudEvent: missing required attribute"),
            "{err}"
        );
        let h = http(&[("content-type", "application/json")]);
        let body =
            br#"{"event_source":"S1","user_name":"alice","event_data":{"type":"FileCreate"}}"#;
        let e = CloudEvent::from_http(&h, body).expect("original");
        assert_eq!((e.source.as_str(), e.type_.as_str()), ("S1", "FileCreate"));
        let err = CloudEvent::from_http(&h, b"plain").expect_err("not json");
        assert!(matches!(err, CloudEventError::NotJson { .. }), "{err}");
    }
}
