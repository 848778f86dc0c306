//! The CloudEvents 1.0 model (design §6) and its parsing from every form the platform accepts:
//!
//! - **binary mode over AMQP**: attributes in `ce-*` message headers (the convention of Knative's
//!   eventing-rabbitmq; the AMQP binding's `cloudEvents:` / `cloudEvents_` prefixes too), the body
//!   as the data, its `content-type` property as `datacontenttype`;
//! - **binary mode over HTTP**: attributes in `ce-*` HTTP headers (percent-decoded), the body as the
//!   data, `Content-Type` as `datacontenttype`;
//! - **structured mode**: a `application/cloudevents+json` document (also recognised without that
//!   content type when the JSON body has a `specversion`);
//! - **the original system's message**, exactly as it was published:
//!   `{"event_source": "S1", "user_name": "alice", "event_data": {"type": "FileCreate", …}}`;
//! - **OpenStack notifications** (oslo.messaging v2 envelopes and bare v1 messages).
//!
//! The mode is decided as the CloudEvents bindings say: a structured content type wins, then the
//! presence of any `ce-*` header, then the JSON body is sniffed. Every error names the attribute
//! (or original field) that is missing or bad, so a poison message's header says what to fix.

mod attributes;
mod binary;
mod legacy;
mod oslo;
mod structured;

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

pub use binary::{AmqpMessage, AmqpValue};

/// The only CloudEvents specification version accepted and produced.
pub const SPEC_VERSION: &str = "1.0";
/// Media type of a structured-mode event.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
/// Media type of a batch of structured events (refused: one event per message keeps acks exact).
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";
/// Extension attribute naming the platform namespace whose functions the event is for (set from
/// the original message's `user_name`, or by the namespaced HTTP endpoint). Absent means the
/// default namespace.
pub const NAMESPACE_EXTENSION: &str = "lambdanamespace";

/// One CloudEvent. Invariants (upheld by every constructor and parser here): `id`, `source` and
/// `type_` are non-empty, `specversion` is [`SPEC_VERSION`], extension names are 1 or more of
/// `[a-z0-9]` and none is a context attribute's name, and the namespace extension, when present,
/// is a DNS label.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvent {
    /// Identifies the event; `source` + `id` is unique per distinct event (duplicates share it).
    pub id: String,
    /// The context in which the event happened (a URI-reference), e.g. `storage/uploads`.
    pub source: String,
    /// What happened, e.g. `file.created`. Named `type` on the wire.
    pub type_: String,
    /// Always [`SPEC_VERSION`].
    pub specversion: String,
    /// The subject of the event within its source (e.g. the file name).
    pub subject: Option<String>,
    /// When the occurrence happened, per the producer.
    pub time: Option<DateTime<Utc>>,
    /// Media type of `data` (e.g. `application/json`).
    pub datacontenttype: Option<String>,
    /// URI of the schema `data` adheres to.
    pub dataschema: Option<String>,
    /// The payload, if any.
    pub data: Option<Data>,
    /// Extension attributes by (lowercase) name.
    pub extensions: BTreeMap<String, ExtensionValue>,
}

/// An event's payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// JSON data: structured mode's `data` member, or a binary-mode body of a JSON media type.
    Json(Value),
    /// Opaque bytes: structured mode's `data_base64`, or a binary-mode body of another media type.
    Binary(Vec<u8>),
}

/// The value of an extension attribute (the CloudEvents types that JSON can carry natively;
/// URI and Timestamp values are kept in their canonical string form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtensionValue {
    String(String),
    Integer(i64),
    Boolean(bool),
}

impl ExtensionValue {
    /// The canonical string form (what a binary-mode header carries).
    pub fn to_canonical_string(&self) -> String {
        match self {
            ExtensionValue::String(s) => s.clone(),
            ExtensionValue::Integer(i) => i.to_string(),
            ExtensionValue::Boolean(b) => b.to_string(),
        }
    }
}

/// The wire form an event was read in; errors say which, so a publisher knows which rules
/// applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    AmqpBinary,
    HttpBinary,
    Structured,
    Original,
    OpenStack,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::AmqpBinary => "binary-mode CloudEvent (AMQP ce-* headers)",
            Mode::HttpBinary => "binary-mode CloudEvent (HTTP ce-* headers)",
            Mode::Structured => "structured-mode CloudEvent",
            Mode::Original => "original-format message",
            Mode::OpenStack => "OpenStack notification",
        })
    }
}

/// Why a message is not an acceptable event. The message of each names the attribute or field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CloudEventError {
    #[error(
        "the message is not JSON ({reason}), has no ce-* headers and is not {STRUCTURED_CONTENT_TYPE}: \
         it is neither a CloudEvent nor the original {{event_source, user_name, event_data}} format"
    )]
    NotJson { reason: String },
    #[error(
        "the JSON message has no specversion (not a CloudEvent), no event_source, user_name or \
         event_data (not the original format) and no oslo.message or event_type and publisher_id \
         (not an OpenStack notification)"
    )]
    Unrecognised,
    #[error("{mode}: the body is not a JSON object: {reason}")]
    Body { mode: Mode, reason: String },
    #[error("{mode}: missing required attribute {name}")]
    Missing { mode: Mode, name: String },
    #[error("{mode}: attribute {name} is invalid: {reason}")]
    Invalid {
        mode: Mode,
        name: String,
        reason: String,
    },
    #[error("{mode}: specversion {version:?} is not supported (only {SPEC_VERSION})")]
    SpecVersion { mode: Mode, version: String },
    #[error(
        "batched CloudEvents ({BATCH_CONTENT_TYPE}) are not accepted: send one event per message"
    )]
    Batch,
}

impl CloudEvent {
    /// A new event with the required attributes and nothing else. Empty values are the caller's
    /// bug, reported by [`CloudEventError::Missing`] rather than a panic.
    pub fn new(
        id: impl Into<String>,
        source: impl Into<String>,
        type_: impl Into<String>,
    ) -> Result<CloudEvent, CloudEventError> {
        let mut b = attributes::Builder::new(Mode::Structured);
        b.set(
            "specversion",
            attributes::AttrValue::Text(SPEC_VERSION.into()),
        )?;
        b.set("id", attributes::AttrValue::Text(id.into()))?;
        b.set("source", attributes::AttrValue::Text(source.into()))?;
        b.set("type", attributes::AttrValue::Text(type_.into()))?;
        b.finish(None)
    }

    /// Parses a message consumed from RabbitMQ in any accepted form.
    pub fn from_amqp(msg: &AmqpMessage<'_>) -> Result<CloudEvent, CloudEventError> {
        dispatch(
            msg.content_type,
            binary::amqp_is_binary(msg),
            msg.body,
            msg.message_id,
            || binary::from_amqp(msg),
        )
    }

    /// Parses an HTTP request (`POST /v1/events`) in either CloudEvents HTTP mode (or the
    /// original format as a JSON body).
    pub fn from_http(
        headers: &axum::http::HeaderMap,
        body: &[u8],
    ) -> Result<CloudEvent, CloudEventError> {
        let content_type = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        dispatch(
            content_type,
            binary::http_is_binary(headers),
            body,
            None,
            || binary::from_http(headers, body),
        )
    }

    /// Parses a structured-mode document (`application/cloudevents+json`).
    pub fn from_structured(body: &[u8]) -> Result<CloudEvent, CloudEventError> {
        structured::parse(body)
    }

    /// The structured-mode JSON of the event: what the platform publishes and forwards, and what
    /// [`CloudEvent::from_structured`] reads back to an equal event.
    pub fn to_structured(&self) -> Value {
        structured::to_json(self)
    }

    /// The structured-mode document as bytes (content type [`STRUCTURED_CONTENT_TYPE`]).
    pub fn to_structured_bytes(&self) -> Vec<u8> {
        // Serialising a `Value` to a Vec cannot fail (no I/O, string keys only).
        serde_json::to_vec(&self.to_structured()).unwrap_or_default()
    }

    /// The namespace the event is for, from the [`NAMESPACE_EXTENSION`]; `None` means default.
    pub fn namespace(&self) -> Option<&str> {
        match self.extensions.get(NAMESPACE_EXTENSION) {
            Some(ExtensionValue::String(ns)) => Some(ns),
            _ => None,
        }
    }

    /// Addresses the event to `namespace` (the namespaced HTTP endpoint does this). The
    /// namespace must be a DNS label, and an event that already names another one is refused
    /// rather than silently moved to a different user's functions.
    pub fn set_namespace(&mut self, namespace: &str) -> Result<(), CloudEventError> {
        let invalid = |reason: String| CloudEventError::Invalid {
            mode: Mode::Structured,
            name: NAMESPACE_EXTENSION.into(),
            reason,
        };
        crate::api::validation::check_dns_label(namespace)
            .map_err(|why| invalid(format!("{namespace:?} is not a namespace name: {why}")))?;
        match self.namespace() {
            Some(ns) if ns != namespace => Err(invalid(format!(
                "the event is for namespace {ns:?}, not {namespace:?}"
            ))),
            _ => {
                self.extensions.insert(
                    NAMESPACE_EXTENSION.into(),
                    ExtensionValue::String(namespace.into()),
                );
                Ok(())
            }
        }
    }

    /// `time` in the canonical RFC 3339 form (`…Z`), for headers and JSON.
    pub fn time_string(&self) -> Option<String> {
        self.time
            .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

/// The bare media type of a `Content-Type` value: lowercase, parameters dropped.
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// True for media types whose bodies are JSON (`application/json`, `text/json`, `…+json`).
fn is_json_media(media: &str) -> bool {
    media == "application/json" || media == "text/json" || media.ends_with("+json")
}

/// Decides the mode and parses: structured content type, then binary headers, then sniffing the
/// JSON body for a structured document or the original format.
fn dispatch(
    content_type: Option<&str>,
    is_binary: bool,
    body: &[u8],
    message_id: Option<&str>,
    binary: impl FnOnce() -> Result<CloudEvent, CloudEventError>,
) -> Result<CloudEvent, CloudEventError> {
    match content_type.map(media_type).as_deref() {
        Some(STRUCTURED_CONTENT_TYPE) => return structured::parse(body),
        Some(BATCH_CONTENT_TYPE) => return Err(CloudEventError::Batch),
        _ => {}
    }
    if is_binary {
        return binary();
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| CloudEventError::NotJson {
        reason: e.to_string(),
    })?;
    match value {
        Value::Object(obj) if obj.contains_key("specversion") => structured::from_object(obj),
        Value::Object(obj) if oslo::looks_like(&obj) => oslo::parse(obj),
        Value::Object(obj) if legacy::looks_like(&obj) => legacy::parse(obj, message_id),
        _ => Err(CloudEventError::Unrecognised),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_sets_the_required_attributes_and_rejects_empty_ones() {
        let e = CloudEvent::new("1", "s", "t").expect("event");
        assert_eq!(
            (e.id.as_str(), e.source.as_str(), e.type_.as_str()),
            ("1", "s", "t")
        );
        assert_eq!(e.specversion, SPEC_VERSION);
        let err = CloudEvent::new("1", "", "t").expect_err("empty source");
        assert!(err.to_string().contains("source"), "{err}");
    }

    #[test]
    fn the_mode_is_decided_by_content_type_then_headers_then_the_body() {
        let doc = br#"{"specversion":"1.0","id":"1","source":"s","type":"t"}"#;
        // A structured content type wins over binary headers.
        let bin = || Err(CloudEventError::Unrecognised);
        let e = dispatch(
            Some("application/cloudevents+json; charset=utf-8"),
            true,
            doc,
            None,
            bin,
        );
        assert_eq!(e.map(|e| e.id), Ok("1".into()));
        // Binary headers win over a body that looks structured.
        let e = dispatch(Some("application/json"), true, doc, None, bin);
        assert_eq!(e, Err(CloudEventError::Unrecognised));
        // Neither: the body is sniffed.
        let e = dispatch(None, false, doc, None, bin);
        assert_eq!(e.map(|e| e.type_), Ok("t".into()));
    }

    #[test]
    fn batches_and_unrecognised_bodies_are_errors() {
        let bin = || Err(CloudEventError::Unrecognised);
        let e = dispatch(Some(BATCH_CONTENT_TYPE), false, b"[]", None, bin);
        assert_eq!(e, Err(CloudEventError::Batch));
        let e = dispatch(None, false, b"not json", None, bin);
        assert!(matches!(e, Err(CloudEventError::NotJson { .. })), "{e:?}");
        let msg = e.expect_err("not json").to_string();
        assert!(
            msg.contains("neither a CloudEvent nor the original"),
            "{msg}"
        );
        for body in [&br#"{"hello": 1}"#[..], b"[1]", b"42"] {
            let e = dispatch(None, false, body, None, bin);
            assert_eq!(e, Err(CloudEventError::Unrecognised));
        }
    }

    #[test]
    fn media_types() {
        assert_eq!(
            media_type("Application/JSON; charset=utf-8"),
            "application/json"
        );
        assert!(is_json_media("application/vnd.x+json"));
        assert!(is_json_media("text/json"));
        assert!(!is_json_media("text/plain"));
    }

    #[test]
    fn namespace_and_time_accessors() {
        let mut e = CloudEvent::new("1", "s", "t").expect("event");
        assert_eq!(e.namespace(), None);
        e.extensions.insert(
            NAMESPACE_EXTENSION.into(),
            ExtensionValue::String("alice".into()),
        );
        assert_eq!(e.namespace(), Some("alice"));
        e.time = DateTime::parse_from_rfc3339("2026-01-02T03:04:05+01:00")
            .ok()
            .map(|t| t.with_timezone(&Utc));
        assert_eq!(e.time_string().as_deref(), Some("2026-01-02T02:04:05Z"));
        assert_eq!(ExtensionValue::Integer(3).to_canonical_string(), "3");
    }

    #[test]
    fn set_namespace_validates_and_never_moves_an_event_between_namespaces() {
        let mut e = CloudEvent::new("1", "s", "t").expect("event");
        e.set_namespace("team-a").expect("set");
        assert_eq!(e.namespace(), Some("team-a"));
        e.set_namespace("team-a").expect("same again");
        let err = e.set_namespace("team-b").expect_err("conflict");
        assert!(
            err.to_string()
                .contains("the event is for namespace \"team-a\", not \"team-b\""),
            "{err}"
        );
        let mut e = CloudEvent::new("1", "s", "t").expect("event");
        let err = e.set_namespace("Team_B").expect_err("invalid");
        assert!(
            err.to_string()
                .contains("lambdanamespace is invalid: \"Team_B\" is not a namespace name"),
            "{err}"
        );
        assert_eq!(e.namespace(), None);
    }
}
