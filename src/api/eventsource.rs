//! `EventSource`: something outside the platform that the leading controller watches and turns
//! into CloudEvents on the platform's exchange (design §6): a directory on the controller's host
//! (the original's file-create source) or OpenStack's own notification bus.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::{Condition, Conditions};
use super::object::Resource;
use super::validation::FieldErrors;

/// Desired state of an event source: exactly one of `directory` and `openstack`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventSourceSpec {
    /// The CloudEvents `source` of what it publishes (e.g. `S1`), which functions' triggers
    /// match on. Default: `lambda/eventsource/<namespace>/<name>` for a directory, and
    /// `openstack/<publisher_id>` of each notification for the notification bus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Watch a directory on the controller's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<DirectorySource>,
    /// Consume OpenStack's notification bus (oslo.messaging on RabbitMQ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openstack: Option<OpenStackSource>,
}

/// A watched directory: files created (and, if asked, deleted or modified) in it are events.
/// Files already there when the watch starts are not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirectorySource {
    /// Absolute path of the directory on the controller's host.
    pub path: String,
    /// Also watch every directory below it (those created later too).
    #[serde(default)]
    pub recursive: bool,
    /// Which changes are events.
    #[serde(default = "default_file_events")]
    pub events: Vec<FileEventType>,
}

fn default_file_events() -> Vec<FileEventType> {
    vec![FileEventType::FileCreate]
}

/// A change of a file, also the CloudEvents `type` of its event.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum FileEventType {
    /// A file appeared (written and closed, or moved in).
    FileCreate,
    /// A file was removed (or moved out).
    FileDelete,
    /// An existing file was written again.
    FileModify,
}

impl FileEventType {
    /// The name used as the event's type.
    pub fn as_str(self) -> &'static str {
        match self {
            FileEventType::FileCreate => "FileCreate",
            FileEventType::FileDelete => "FileDelete",
            FileEventType::FileModify => "FileModify",
        }
    }
}

/// OpenStack's notification bus. The transport URL holds a password, so the spec only names
/// where the controller finds it: a variable of its environment or a file on its host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpenStackSource {
    /// Name of the controller's environment variable holding the transport URL
    /// (`rabbit://user:password@host:port/vhost` or `amqp://…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_url_env: Option<String>,
    /// Absolute path of a file on the controller's host holding the transport URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_url_file: Option<String>,
    /// The exchange the services notify on (`nova`, `glance`, `neutron`, …).
    #[serde(default = "default_exchange")]
    pub exchange: String,
    /// The notification topic with its priority: `versioned_notifications.info` (Nova's
    /// versioned notifications) or `notifications.info` (legacy ones).
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Event types to publish (e.g. `instance.create.end`); a trailing `*` matches a prefix
    /// (`instance.*`). Every type when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<String>,
}

fn default_exchange() -> String {
    "nova".into()
}

fn default_topic() -> String {
    "versioned_notifications.info".into()
}

impl OpenStackSource {
    /// True when a notification of `event_type` is to be published.
    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types.is_empty()
            || self.event_types.iter().any(|t| match t.strip_suffix('*') {
                Some(prefix) => event_type.starts_with(prefix),
                None => t == event_type,
            })
    }
}

/// Observed state of an event source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventSourceStatus {
    /// `Ready` (publishing) and `Connected` (the directory is watched / the bus consumed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Events published to the platform's exchange (confirmed by the broker), in total.
    #[serde(default)]
    pub events_published: u64,
    /// Inputs skipped: malformed notifications, files gone before they could be read.
    #[serde(default)]
    pub events_skipped: u64,
    /// When the last event was published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_time: Option<DateTime<Utc>>,
    /// The last error met (kept after recovery, with its time in the message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Conditions for EventSourceStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

/// True for a POSIX shell variable name.
fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn absolute_path(e: &mut FieldErrors, field: &str, path: &str) {
    if !path.starts_with('/') {
        e.push(field, format!("{path:?} must be an absolute path"));
    } else if path.contains('\0') {
        e.push(field, "must not contain NUL");
    }
}

impl DirectorySource {
    fn validate(&self, e: &mut FieldErrors) {
        absolute_path(e, "path", &self.path);
        if self.events.is_empty() {
            e.push(
                "events",
                "name at least one of FileCreate, FileDelete, FileModify",
            );
        }
        for (i, ev) in self.events.iter().enumerate() {
            if self.events[..i].contains(ev) {
                e.push(
                    &format!("events[{i}]"),
                    format!("{} is listed twice", ev.as_str()),
                );
            }
        }
    }
}

/// AMQP's limit for exchange names and routing keys.
const SHORT_STRING: usize = 255;

impl OpenStackSource {
    fn validate(&self, e: &mut FieldErrors) {
        match (&self.transport_url_env, &self.transport_url_file) {
            (None, None) => e.push(
                "transportUrlEnv",
                "name the transport URL's environment variable (or transportUrlFile); \
                 the URL itself holds a password and is never inline",
            ),
            (Some(_), Some(_)) => e.push(
                "transportUrlFile",
                "give transportUrlEnv or transportUrlFile, not both",
            ),
            (Some(v), None) if !is_env_name(v) => e.push(
                "transportUrlEnv",
                format!("{v:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"),
            ),
            (None, Some(f)) => absolute_path(e, "transportUrlFile", f),
            _ => {}
        }
        for (field, v) in [("exchange", &self.exchange), ("topic", &self.topic)] {
            if v.is_empty() {
                e.push(field, "must not be empty");
            } else if v.len() > SHORT_STRING {
                e.push(field, format!("longer than {SHORT_STRING} bytes"));
            }
        }
        for (i, t) in self.event_types.iter().enumerate() {
            let f = format!("eventTypes[{i}]");
            if t.is_empty() {
                e.push(&f, "must not be empty");
            } else if t.trim_end_matches('*').contains('*') {
                e.push(&f, "`*` is allowed only at the end (a prefix match)");
            }
        }
    }
}

impl Resource for EventSourceSpec {
    type Status = EventSourceStatus;
    const KIND: &'static str = "EventSource";
    const PLURAL: &'static str = "eventsources";
    const SHORT: &'static [&'static str] = &["eventsource", "es"];

    fn validate(&self, e: &mut FieldErrors) {
        if let Some(s) = &self.source {
            if s.is_empty() {
                e.push("source", "must not be empty (leave it out for the default)");
            } else if s.len() > 1024 {
                e.push("source", "longer than 1024 bytes");
            }
        }
        match (&self.directory, &self.openstack) {
            (None, None) => e.push("directory", "give one of directory and openstack"),
            (Some(_), Some(_)) => e.push("openstack", "give directory or openstack, not both"),
            (Some(d), None) => e.scoped("directory", |e| d.validate(e)),
            (None, Some(o)) => e.scoped("openstack", |e| o.validate(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(spec: &EventSourceSpec) -> Vec<String> {
        let mut e = FieldErrors::default();
        e.scoped("spec", |e| spec.validate(e));
        e.errors().iter().map(|e| e.to_string()).collect()
    }

    fn os(f: impl FnOnce(&mut OpenStackSource)) -> EventSourceSpec {
        let mut o = OpenStackSource {
            transport_url_env: Some("OS_NOTIFICATION_URL".into()),
            transport_url_file: None,
            exchange: default_exchange(),
            topic: default_topic(),
            event_types: vec![],
        };
        f(&mut o);
        EventSourceSpec {
            openstack: Some(o),
            ..Default::default()
        }
    }

    #[test]
    fn the_issue_s_shapes_parse_and_validate() {
        let d: EventSourceSpec = serde_saphyr::from_str(
            "source: S1\ndirectory: {path: /srv/drop, recursive: false, events: [FileCreate]}\n",
        )
        .expect("directory");
        assert!(errors(&d).is_empty(), "{:?}", errors(&d));
        let o: EventSourceSpec = serde_saphyr::from_str(
            "openstack: {transportUrlEnv: OS_NOTIFICATION_URL, exchange: nova,\n  \
             topic: versioned_notifications.info, eventTypes: [instance.create.end]}\n",
        )
        .expect("openstack");
        assert!(errors(&o).is_empty(), "{:?}", errors(&o));
        let d: EventSourceSpec =
            serde_saphyr::from_str("directory: {path: /srv}\n").expect("defaults");
        assert_eq!(
            d.directory.map(|d| d.events),
            Some(vec![FileEventType::FileCreate])
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            errors(&EventSourceSpec::default()),
            ["spec.directory: give one of directory and openstack"]
        );
        let bad_dir = EventSourceSpec {
            source: Some(String::new()),
            directory: Some(DirectorySource {
                path: "srv/drop".into(),
                recursive: false,
                events: vec![FileEventType::FileCreate, FileEventType::FileCreate],
            }),
            ..Default::default()
        };
        let e = errors(&bad_dir);
        assert!(e[0].starts_with("spec.source: must not be empty"), "{e:?}");
        assert!(
            e[1].starts_with("spec.directory.path: \"srv/drop\" must be an absolute path"),
            "{e:?}"
        );
        assert_eq!(e[2], "spec.directory.events[1]: FileCreate is listed twice");
        let e = errors(&os(|o| o.transport_url_env = None));
        assert!(
            e[0].starts_with("spec.openstack.transportUrlEnv: name the"),
            "{e:?}"
        );
        let e = errors(&os(|o| {
            o.transport_url_env = Some("rabbit://a:b@h/".into())
        }));
        assert!(e[0].contains("is not a variable name"), "{e:?}");
        let e = errors(&os(|o| o.transport_url_file = Some("/etc/url".into())));
        assert!(
            e[0].starts_with("spec.openstack.transportUrlFile: give"),
            "{e:?}"
        );
        let e = errors(&os(|o| {
            o.topic = String::new();
            o.event_types = vec!["*.end".into(), String::new()];
        }));
        assert_eq!(
            e,
            [
                "spec.openstack.topic: must not be empty",
                "spec.openstack.eventTypes[0]: `*` is allowed only at the end (a prefix match)",
                "spec.openstack.eventTypes[1]: must not be empty",
            ]
        );
    }

    #[test]
    fn event_type_filter() {
        let o = os(|o| o.event_types = vec!["instance.create.end".into(), "image.*".into()]);
        let o = o.openstack.expect("openstack");
        assert!(o.wants("instance.create.end"));
        assert!(o.wants("image.update"));
        assert!(!o.wants("instance.delete.end"));
        assert!(!o.wants("instance.create.start"));
        assert!(os(|_| {}).openstack.expect("openstack").wants("anything"));
    }
}
