//! One set of attribute rules for every mode: each parser feeds `(name, value)` pairs into a
//! [`Builder`], which checks types, required attributes, the spec version, extension names and
//! the namespace extension, so binary and structured events obey exactly the same rules.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{CloudEvent, CloudEventError, Data, ExtensionValue, Mode, NAMESPACE_EXTENSION};
use crate::api::validation::check_dns_label;

/// An attribute value as a wire form delivers it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum AttrValue {
    Text(String),
    Integer(i64),
    Boolean(bool),
    /// A typed timestamp (an AMQP header of type timestamp).
    Time(DateTime<Utc>),
}

impl AttrValue {
    fn type_name(&self) -> &'static str {
        match self {
            AttrValue::Text(_) => "a string",
            AttrValue::Integer(_) => "an integer",
            AttrValue::Boolean(_) => "a boolean",
            AttrValue::Time(_) => "a timestamp",
        }
    }
}

/// Collects the attributes of one event in one mode.
pub(super) struct Builder {
    mode: Mode,
    specversion: Option<String>,
    id: Option<String>,
    source: Option<String>,
    type_: Option<String>,
    subject: Option<String>,
    time: Option<DateTime<Utc>>,
    datacontenttype: Option<String>,
    dataschema: Option<String>,
    extensions: BTreeMap<String, ExtensionValue>,
}

impl Builder {
    pub(super) fn new(mode: Mode) -> Builder {
        Builder {
            mode,
            specversion: None,
            id: None,
            source: None,
            type_: None,
            subject: None,
            time: None,
            datacontenttype: None,
            dataschema: None,
            extensions: BTreeMap::new(),
        }
    }

    pub(super) fn invalid(&self, name: &str, reason: impl Into<String>) -> CloudEventError {
        CloudEventError::Invalid {
            mode: self.mode,
            name: name.to_string(),
            reason: reason.into(),
        }
    }

    /// True once `datacontenttype` is known (binary mode fills it from the transport's content
    /// type only when no attribute header gave it).
    pub(super) fn has_datacontenttype(&self) -> bool {
        self.datacontenttype.is_some()
    }

    /// Sets one attribute. A name given twice is an error (two headers could disagree, and
    /// guessing which one the publisher meant would be silent corruption).
    pub(super) fn set(&mut self, name: &str, value: AttrValue) -> Result<(), CloudEventError> {
        let slot = match name {
            "specversion" => &mut self.specversion,
            "id" => &mut self.id,
            "source" => &mut self.source,
            "type" => &mut self.type_,
            "subject" => &mut self.subject,
            "datacontenttype" => &mut self.datacontenttype,
            "dataschema" => &mut self.dataschema,
            "time" => return self.set_time(value),
            "data" | "data_base64" => {
                return Err(self.invalid(name, "is not an attribute here (the data is the body)"));
            }
            _ => return self.set_extension(name, value),
        };
        let text = match value {
            AttrValue::Text(s) => s,
            other => {
                let why = format!("must be a string, got {}", other.type_name());
                return Err(CloudEventError::Invalid {
                    mode: self.mode,
                    name: name.to_string(),
                    reason: why,
                });
            }
        };
        if slot.is_some() {
            return Err(CloudEventError::Invalid {
                mode: self.mode,
                name: name.to_string(),
                reason: "is given more than once".into(),
            });
        }
        *slot = Some(text);
        Ok(())
    }

    fn set_time(&mut self, value: AttrValue) -> Result<(), CloudEventError> {
        if self.time.is_some() {
            return Err(self.invalid("time", "is given more than once"));
        }
        self.time = Some(match value {
            AttrValue::Time(t) => t,
            AttrValue::Text(s) => DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| self.invalid("time", format!("{s:?} is not an RFC 3339 time: {e}")))?,
            other => {
                let why = format!("must be an RFC 3339 string, got {}", other.type_name());
                return Err(self.invalid("time", why));
            }
        });
        Ok(())
    }

    fn set_extension(&mut self, name: &str, value: AttrValue) -> Result<(), CloudEventError> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(self.invalid(
                name,
                "attribute names must consist of lower-case letters and digits (CloudEvents 1.0)",
            ));
        }
        if self.extensions.contains_key(name) {
            return Err(self.invalid(name, "is given more than once"));
        }
        let value = match value {
            AttrValue::Text(s) => ExtensionValue::String(s),
            AttrValue::Integer(i) => ExtensionValue::Integer(i),
            AttrValue::Boolean(b) => ExtensionValue::Boolean(b),
            AttrValue::Time(t) => {
                ExtensionValue::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            }
        };
        self.extensions.insert(name.to_string(), value);
        Ok(())
    }

    /// Checks the whole set and builds the event.
    pub(super) fn finish(self, data: Option<Data>) -> Result<CloudEvent, CloudEventError> {
        let mode = self.mode;
        let missing = |name: &str| CloudEventError::Missing {
            mode,
            name: name.to_string(),
        };
        let specversion = self.specversion.ok_or_else(|| missing("specversion"))?;
        if specversion != super::SPEC_VERSION {
            return Err(CloudEventError::SpecVersion {
                mode,
                version: specversion,
            });
        }
        let required = |name: &str, v: Option<String>| match v {
            None => Err(missing(name)),
            Some(s) if s.is_empty() => Err(CloudEventError::Invalid {
                mode,
                name: name.to_string(),
                reason: "must not be empty".into(),
            }),
            Some(s) => Ok(s),
        };
        let id = required("id", self.id)?;
        let source = required("source", self.source)?;
        let type_ = required("type", self.type_)?;
        match self.extensions.get(NAMESPACE_EXTENSION) {
            None => {}
            Some(ExtensionValue::String(ns)) => {
                check_dns_label(ns).map_err(|why| CloudEventError::Invalid {
                    mode,
                    name: NAMESPACE_EXTENSION.into(),
                    reason: format!("{ns:?} is not a namespace name: {why}"),
                })?;
            }
            Some(_) => {
                return Err(CloudEventError::Invalid {
                    mode,
                    name: NAMESPACE_EXTENSION.into(),
                    reason: "must be a string".into(),
                });
            }
        }
        Ok(CloudEvent {
            id,
            source,
            type_,
            specversion,
            subject: self.subject,
            time: self.time,
            datacontenttype: self.datacontenttype,
            dataschema: self.dataschema,
            data,
            extensions: self.extensions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(mode: Mode) -> Builder {
        let mut b = Builder::new(mode);
        for (k, v) in [
            ("specversion", "1.0"),
            ("id", "1"),
            ("source", "s"),
            ("type", "t"),
        ] {
            b.set(k, AttrValue::Text(v.into())).expect("set");
        }
        b
    }

    #[test]
    fn each_required_attribute_is_named_when_missing() {
        for name in ["specversion", "id", "source", "type"] {
            let mut b = Builder::new(Mode::HttpBinary);
            for (k, v) in [
                ("specversion", "1.0"),
                ("id", "1"),
                ("source", "s"),
                ("type", "t"),
            ] {
                if k != name {
                    b.set(k, AttrValue::Text(v.into())).expect("set");
                }
            }
            let err = b.finish(None).expect_err("missing");
            assert_eq!(
                err,
                CloudEventError::Missing {
                    mode: Mode::HttpBinary,
                    name: name.into()
                }
            );
            assert!(
                err.to_string()
                    .contains(&format!("missing required attribute {name}"))
            );
        }
    }

    #[test]
    fn empty_required_attributes_and_wrong_spec_versions_are_refused() {
        let mut b = Builder::new(Mode::Structured);
        for (k, v) in [
            ("specversion", "1.0"),
            ("id", ""),
            ("source", "s"),
            ("type", "t"),
        ] {
            b.set(k, AttrValue::Text(v.into())).expect("set");
        }
        let err = b.finish(None).expect_err("empty id");
        assert!(
            matches!(&err, CloudEventError::Invalid { name, .. } if name == "id"),
            "{err}"
        );

        let mut b = Builder::new(Mode::Structured);
        b.set("specversion", AttrValue::Text("0.3".into()))
            .expect("set");
        let err = b.finish(None).expect_err("0.3");
        assert_eq!(
            err.to_string(),
            "structured-mode CloudEvent: specversion \"0.3\" is not supported (only 1.0)"
        );
    }

    #[test]
    fn types_duplicates_and_names_are_checked() {
        let mut b = base(Mode::AmqpBinary);
        let err = b
            .set("subject", AttrValue::Integer(3))
            .expect_err("int subject");
        assert!(
            err.to_string()
                .contains("subject is invalid: must be a string, got an integer"),
            "{err}"
        );
        let err = b.set("id", AttrValue::Text("2".into())).expect_err("twice");
        assert!(
            err.to_string()
                .contains("id is invalid: is given more than once"),
            "{err}"
        );
        let err = b
            .set("Trace_Id", AttrValue::Text("x".into()))
            .expect_err("bad name");
        assert!(
            err.to_string()
                .contains("Trace_Id is invalid: attribute names"),
            "{err}"
        );
        let err = b
            .set("data", AttrValue::Text("x".into()))
            .expect_err("data header");
        assert!(err.to_string().contains("data is invalid"), "{err}");
        let err = b
            .set("time", AttrValue::Text("yesterday".into()))
            .expect_err("bad time");
        assert!(
            err.to_string()
                .contains("time is invalid: \"yesterday\" is not an RFC 3339 time"),
            "{err}"
        );
        let err = b
            .set("time", AttrValue::Boolean(true))
            .expect_err("bool time");
        assert!(
            err.to_string()
                .contains("must be an RFC 3339 string, got a boolean"),
            "{err}"
        );
        b.set("traceparent", AttrValue::Text("00-1".into()))
            .expect("extension");
        let err = b
            .set("traceparent", AttrValue::Text("00-2".into()))
            .expect_err("twice");
        assert!(
            err.to_string()
                .contains("traceparent is invalid: is given more than once")
        );
    }

    #[test]
    fn extensions_keep_their_types_and_typed_times_are_accepted() {
        let mut b = base(Mode::AmqpBinary);
        let t = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        b.set("time", AttrValue::Time(t)).expect("time");
        b.set("count", AttrValue::Integer(7)).expect("int");
        b.set("urgent", AttrValue::Boolean(true)).expect("bool");
        b.set("seen", AttrValue::Time(t)).expect("time ext");
        let e = b.finish(None).expect("event");
        assert_eq!(e.time, Some(t));
        assert_eq!(e.extensions["count"], ExtensionValue::Integer(7));
        assert_eq!(e.extensions["urgent"], ExtensionValue::Boolean(true));
        assert_eq!(
            e.extensions["seen"],
            ExtensionValue::String("2023-11-14T22:13:20Z".into())
        );
    }

    #[test]
    fn the_namespace_extension_must_be_a_dns_label_string() {
        let mut b = base(Mode::HttpBinary);
        b.set(NAMESPACE_EXTENSION, AttrValue::Text("Alice_B".into()))
            .expect("set");
        let err = b.finish(None).expect_err("bad namespace");
        assert!(
            err.to_string()
                .contains("lambdanamespace is invalid: \"Alice_B\" is not a namespace name"),
            "{err}"
        );
        let mut b = base(Mode::HttpBinary);
        b.set(NAMESPACE_EXTENSION, AttrValue::Integer(1))
            .expect("set");
        assert!(b.finish(None).is_err());
        let mut b = base(Mode::HttpBinary);
        b.set(NAMESPACE_EXTENSION, AttrValue::Text("team-a".into()))
            .expect("set");
        assert_eq!(b.finish(None).expect("ok").namespace(), Some("team-a"));
    }
}
