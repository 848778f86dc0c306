//! Event triggers of a function (`spec.triggers.events[]`): which events, by source and type,
//! start it. Kept apart from `function.rs` so the filter forms and their validation stay together.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validation::FieldErrors;

/// A subscription to queue events by source and type, with the exact / prefix / suffix forms of
/// Knative's trigger filters. Each of source and type needs at least one form: the exact one
/// alone (`*` matches everything), or a prefix, a suffix or both (then both must hold).
/// Matching is case-sensitive, as CloudEvents attributes are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventTrigger {
    /// Exact event source, e.g. `storage/uploads`; `*` matches every source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The source starts with this, e.g. `storage/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_prefix: Option<String>,
    /// The source ends with this, e.g. `/uploads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_suffix: Option<String>,
    /// Exact event type, e.g. `file.created`; `*` matches every type of the source.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// The type starts with this, e.g. `com.example.`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_prefix: Option<String>,
    /// The type ends with this, e.g. `.created`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_suffix: Option<String>,
}

impl EventTrigger {
    /// A trigger on an exact source and type (`*` for either matches everything).
    pub fn exact(source: &str, type_: &str) -> Self {
        EventTrigger {
            source: Some(source.into()),
            type_: Some(type_.into()),
            ..Default::default()
        }
    }

    /// Checks that each of source and type has a usable form; errors under `events[i]`.
    pub(super) fn validate(&self, e: &mut FieldErrors) {
        let dims = [
            (
                "source",
                &self.source,
                &self.source_prefix,
                &self.source_suffix,
            ),
            ("type", &self.type_, &self.type_prefix, &self.type_suffix),
        ];
        for (dim, exact, prefix, suffix) in dims {
            let (p, s) = (format!("{dim}Prefix"), format!("{dim}Suffix"));
            match (exact, prefix.is_some() || suffix.is_some()) {
                (None, false) => e.push(
                    dim,
                    format!("set {dim}, {p} or {s} ({dim}: \"*\" matches every {dim})"),
                ),
                (Some(_), true) => e.push(
                    dim,
                    format!(
                        "set either {dim} or {p}/{s}, not both (an exact {dim} needs no affix)"
                    ),
                ),
                _ => {}
            }
            for (field, value) in [(dim.to_string(), exact), (p, prefix), (s, suffix)] {
                if let Some(v) = value {
                    e.non_empty(&field, v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(t: &EventTrigger) -> Vec<String> {
        let mut e = FieldErrors::default();
        e.scoped("events[0]", |e| t.validate(e));
        e.errors().iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn exact_and_affix_forms_are_valid() {
        assert!(errors(&EventTrigger::exact("storage/uploads", "file.created")).is_empty());
        assert!(errors(&EventTrigger::exact("*", "*")).is_empty());
        let t = EventTrigger {
            source_prefix: Some("storage/".into()),
            type_prefix: Some("com.example.".into()),
            type_suffix: Some(".created".into()),
            ..Default::default()
        };
        assert!(errors(&t).is_empty());
    }

    #[test]
    fn each_dimension_needs_one_usable_form() {
        let t = EventTrigger::default();
        assert_eq!(
            errors(&t),
            [
                "events[0].source: set source, sourcePrefix or sourceSuffix (source: \"*\" matches every source)",
                "events[0].type: set type, typePrefix or typeSuffix (type: \"*\" matches every type)",
            ]
        );
        let t = EventTrigger {
            source_suffix: Some("x".into()),
            type_: Some("t".into()),
            type_prefix: Some("a.".into()),
            ..Default::default()
        };
        assert_eq!(
            errors(&t),
            [
                "events[0].type: set either type or typePrefix/typeSuffix, not both (an exact type needs no affix)"
            ]
        );
        let t = EventTrigger {
            source: Some(" ".into()),
            type_suffix: Some("".into()),
            ..Default::default()
        };
        assert_eq!(
            errors(&t),
            [
                "events[0].source: must not be empty",
                "events[0].typeSuffix: must not be empty",
            ]
        );
    }

    #[test]
    fn yaml_forms_and_unknown_fields() {
        let t: EventTrigger =
            serde_saphyr::from_str("sourcePrefix: storage/\ntypeSuffix: .created\n").expect("yaml");
        assert_eq!(t.source_prefix.as_deref(), Some("storage/"));
        assert_eq!(t.type_suffix.as_deref(), Some(".created"));
        let t: EventTrigger = serde_saphyr::from_str("source: s\ntype: t\n").expect("yaml");
        assert_eq!(t, EventTrigger::exact("s", "t"));
        assert!(serde_saphyr::from_str::<EventTrigger>("source: s\ntypePrefx: t\n").is_err());
    }
}
