//! `Event`: a record of something that happened to an object (a reconcile's decision, an
//! error, a cleanup), kept on an etcd lease so it expires; repeats are aggregated by `count`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::{Condition, Conditions};
use super::object::Resource;
use super::validation::FieldErrors;

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum EventType {
    Normal,
    Warning,
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        })
    }
}

/// The object an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvolvedObject {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The incarnation the event is about, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// What happened (events have no separate status: they are written whole by the recorder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventSpec {
    pub involved_object: InvolvedObject,
    #[serde(rename = "type")]
    pub type_: EventType,
    /// CamelCase machine-readable cause, e.g. `OwnerGone`.
    pub reason: String,
    pub message: String,
    /// How many times this event happened (repeats are aggregated).
    #[serde(default = "one")]
    pub count: u32,
    pub first_timestamp: DateTime<Utc>,
    pub last_timestamp: DateTime<Utc>,
    /// The component that reported it, e.g. `controller/gc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

fn one() -> u32 {
    1
}

/// Events carry no observed state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl Conditions for EventStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

impl Resource for EventSpec {
    type Status = EventStatus;
    const KIND: &'static str = "Event";
    const PLURAL: &'static str = "events";
    const SHORT: &'static [&'static str] = &["event", "ev"];

    fn validate(&self, e: &mut FieldErrors) {
        e.scoped("involvedObject", |e| {
            e.non_empty("kind", &self.involved_object.kind);
            e.dns_label("namespace", &self.involved_object.namespace);
            e.dns_label("name", &self.involved_object.name);
        });
        e.non_empty("reason", &self.reason);
        if self.count == 0 {
            e.push("count", "must be at least 1");
        }
        if self.last_timestamp < self.first_timestamp {
            e.push("lastTimestamp", "must not be before firstTimestamp");
        }
    }
}
