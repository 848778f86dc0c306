//! Which functions an event starts (design §3 "events"): a pure decision over the functions'
//! `spec.triggers.events[]`, so the listener's only job is to act on it.
//!
//! Rules: an event is for the functions of its namespace (the [`NAMESPACE_EXTENSION`], else
//! `default`): never another user's. A function matches when any of its triggers matches both the
//! event's source and its type; it is started once per event however many of its triggers match
//! (the first matching one is recorded). Functions being deleted start nothing new. One event may
//! start several functions, each its own execution.
//!
//! [`NAMESPACE_EXTENSION`]: super::cloudevent::NAMESPACE_EXTENSION

use crate::api::function::EventTrigger;
use crate::api::meta::DEFAULT_NAMESPACE;
use crate::api::{Function, ObjectKey};

use super::cloudevent::CloudEvent;
use super::execution::{EventRef, Execution, Trigger, execution_id};

/// One function an event starts, and through which of its triggers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Match {
    /// The function.
    pub function: ObjectKey,
    /// Index into its `spec.triggers.events` of the first trigger that matched.
    pub trigger: usize,
}

/// One dimension (source or type) of a trigger against a value.
fn dimension_matches(
    exact: Option<&str>,
    prefix: Option<&str>,
    suffix: Option<&str>,
    value: &str,
) -> bool {
    match exact {
        // `*` is the documented wildcard; anything else is compared as is (case matters, as
        // CloudEvents attributes are case-sensitive).
        Some("*") => true,
        Some(e) => e == value,
        // Validation requires a form; an invalid stored trigger (hand-edited in etcd) that has
        // none matches nothing rather than everything.
        None if prefix.is_none() && suffix.is_none() => false,
        None => {
            prefix.is_none_or(|p| value.starts_with(p)) && suffix.is_none_or(|s| value.ends_with(s))
        }
    }
}

/// True when `trigger` matches the event's source and type.
pub fn trigger_matches(trigger: &EventTrigger, event: &CloudEvent) -> bool {
    dimension_matches(
        trigger.source.as_deref(),
        trigger.source_prefix.as_deref(),
        trigger.source_suffix.as_deref(),
        &event.source,
    ) && dimension_matches(
        trigger.type_.as_deref(),
        trigger.type_prefix.as_deref(),
        trigger.type_suffix.as_deref(),
        &event.type_,
    )
}

/// The namespace whose functions an event is for.
pub fn event_namespace(event: &CloudEvent) -> &str {
    event.namespace().unwrap_or(DEFAULT_NAMESPACE)
}

/// The functions `event` starts, ordered by namespace and name (stable for logs and tests).
/// An empty result is an unmatched event: the caller counts and logs it, nothing more.
pub fn matching<'a>(
    event: &CloudEvent,
    functions: impl IntoIterator<Item = &'a Function>,
) -> Vec<Match> {
    let ns = event_namespace(event);
    let mut out: Vec<Match> = functions
        .into_iter()
        .filter(|f| f.metadata.namespace() == ns && !f.is_deleting())
        .filter_map(|f| {
            let trigger = f
                .spec
                .triggers
                .events
                .iter()
                .position(|t| trigger_matches(t, event))?;
            Some(Match {
                function: f.key(),
                trigger,
            })
        })
        .collect();
    out.sort();
    // A list with the same function twice (two caches merged) must not start it twice.
    out.dedup_by(|a, b| a.function == b.function);
    out
}

/// The `Queued` execution records an event starts at `now`: one per matching function, each
/// with the id [`execution_id`] derives (so a redelivery of the event yields the same records).
pub fn executions_for<'a>(
    event: &CloudEvent,
    functions: impl IntoIterator<Item = &'a Function>,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<Execution> {
    matching(event, functions)
        .into_iter()
        .map(|m| {
            Execution::new(
                execution_id(&m.function, event),
                &m.function,
                Trigger::Event { index: m.trigger },
                Some(EventRef::of(event)),
                now,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::FunctionSpec;
    use crate::events::cloudevent::{ExtensionValue, NAMESPACE_EXTENSION};

    fn function(ns: &str, name: &str, triggers: Vec<EventTrigger>) -> Function {
        let mut spec: FunctionSpec =
            serde_saphyr::from_str("runtime: shell\ncode:\n  inline: cat\n").expect("spec");
        spec.triggers.events = triggers;
        Function::new(ns, name, spec)
    }

    fn event(source: &str, type_: &str) -> CloudEvent {
        CloudEvent::new("1", source, type_).expect("event")
    }

    fn in_ns(mut e: CloudEvent, ns: &str) -> CloudEvent {
        e.extensions.insert(
            NAMESPACE_EXTENSION.into(),
            ExtensionValue::String(ns.into()),
        );
        e
    }

    fn affix(
        sp: Option<&str>,
        ss: Option<&str>,
        tp: Option<&str>,
        ts: Option<&str>,
    ) -> EventTrigger {
        EventTrigger {
            source_prefix: sp.map(Into::into),
            source_suffix: ss.map(Into::into),
            type_prefix: tp.map(Into::into),
            type_suffix: ts.map(Into::into),
            ..Default::default()
        }
    }

    fn names(m: &[Match]) -> Vec<String> {
        m.iter()
            .map(|m| format!("{}#{}", m.function, m.trigger))
            .collect()
    }

    #[test]
    fn exact_wildcard_prefix_and_suffix_forms() {
        let e = event("storage/uploads", "file.created");
        assert!(trigger_matches(
            &EventTrigger::exact("storage/uploads", "file.created"),
            &e
        ));
        assert!(!trigger_matches(
            &EventTrigger::exact("storage/uploads", "file.deleted"),
            &e
        ));
        assert!(!trigger_matches(
            &EventTrigger::exact("storage/Uploads", "file.created"),
            &e
        ));
        assert!(trigger_matches(
            &EventTrigger::exact("storage/uploads", "*"),
            &e
        ));
        assert!(trigger_matches(&EventTrigger::exact("*", "*"), &e));
        assert!(trigger_matches(
            &affix(Some("storage/"), None, None, Some(".created")),
            &e
        ));
        assert!(trigger_matches(
            &affix(None, Some("/uploads"), Some("file."), None),
            &e
        ));
        assert!(!trigger_matches(
            &affix(Some("db/"), None, None, Some(".created")),
            &e
        ));
        // Prefix and suffix together: both must hold.
        assert!(trigger_matches(
            &affix(
                Some("storage/"),
                Some("uploads"),
                Some("file"),
                Some("created")
            ),
            &e
        ));
        assert!(!trigger_matches(
            &affix(Some("storage/"), Some("logs"), Some("file"), None),
            &e
        ));
        // Mixed: an exact source with an affix type.
        let t = EventTrigger {
            source: Some("storage/uploads".into()),
            type_suffix: Some(".created".into()),
            ..Default::default()
        };
        assert!(trigger_matches(&t, &e));
    }

    #[test]
    fn a_trigger_without_a_form_matches_nothing() {
        let e = event("s", "t");
        assert!(!trigger_matches(&EventTrigger::default(), &e));
        let half = EventTrigger {
            source: Some("*".into()),
            ..Default::default()
        };
        assert!(!trigger_matches(&half, &e));
    }

    #[test]
    fn one_event_starts_every_subscribed_function_once() {
        let fns = [
            function(
                "default",
                "b",
                vec![EventTrigger::exact("S1", "FileCreate")],
            ),
            function(
                "default",
                "a",
                vec![
                    EventTrigger::exact("S2", "*"),
                    affix(Some("S"), None, Some("File"), None),
                    EventTrigger::exact("S1", "FileCreate"),
                ],
            ),
            function(
                "default",
                "c",
                vec![EventTrigger::exact("S1", "FileDelete")],
            ),
            function("default", "d", vec![]),
        ];
        let m = matching(&event("S1", "FileCreate"), &fns);
        assert_eq!(names(&m), ["default/a#1", "default/b#0"]);
        assert!(matching(&event("S9", "Other"), &fns).is_empty());
    }

    #[test]
    fn events_stay_in_their_namespace_and_deleting_functions_start_nothing() {
        let mut gone = function("alice", "old", vec![EventTrigger::exact("S1", "*")]);
        gone.metadata.deletion_timestamp = Some(chrono::Utc::now());
        let fns = [
            function("default", "d", vec![EventTrigger::exact("S1", "*")]),
            function("alice", "a", vec![EventTrigger::exact("S1", "*")]),
            function("bob", "b", vec![EventTrigger::exact("S1", "*")]),
            gone,
        ];
        assert_eq!(names(&matching(&event("S1", "T"), &fns)), ["default/d#0"]);
        let e = in_ns(event("S1", "T"), "alice");
        assert_eq!(event_namespace(&e), "alice");
        assert_eq!(names(&matching(&e, &fns)), ["alice/a#0"]);
        assert!(matching(&in_ns(event("S1", "T"), "carol"), &fns).is_empty());
    }

    #[test]
    fn duplicates_in_the_input_start_a_function_once() {
        let f = function("default", "x", vec![EventTrigger::exact("s", "t")]);
        let fns = [f.clone(), f];
        assert_eq!(names(&matching(&event("s", "t"), &fns)), ["default/x#0"]);
    }

    #[test]
    fn an_event_becomes_one_stable_queued_execution_per_function() {
        let fns = [
            function("default", "a", vec![EventTrigger::exact("s", "*")]),
            function(
                "default",
                "b",
                vec![EventTrigger::exact("x", "*"), EventTrigger::exact("s", "t")],
            ),
        ];
        let now = chrono::Utc::now();
        let e = event("s", "t");
        let xs = executions_for(&e, &fns, now);
        assert_eq!(xs.len(), 2);
        assert_eq!(xs[0].function, "a");
        assert_eq!(xs[1].trigger, Trigger::Event { index: 1 });
        assert_ne!(xs[0].id, xs[1].id);
        assert!(
            xs.iter()
                .all(|x| x.status == crate::events::execution::ExecutionStatus::Queued)
        );
        assert_eq!(xs[0].event.as_ref().map(|r| r.id.as_str()), Some("1"));
        // The same event again (a redelivery) yields the same ids.
        let again: Vec<_> = executions_for(&e, &fns, now)
            .into_iter()
            .map(|x| x.id)
            .collect();
        assert_eq!(again, [xs[0].id.clone(), xs[1].id.clone()]);
    }

    #[test]
    fn the_original_message_matches_its_subscribers() {
        let body = br#"{"event_source": "S1", "user_name": "alice", "event_data": {"type": "FileCreate", "filename": "test.py"}}"#;
        let msg = crate::events::cloudevent::AmqpMessage {
            headers: &[],
            content_type: None,
            message_id: None,
            body,
        };
        let e = CloudEvent::from_amqp(&msg).expect("event");
        let fns = [
            function(
                "alice",
                "on-create",
                vec![EventTrigger::exact("S1", "FileCreate")],
            ),
            function(
                "default",
                "on-create",
                vec![EventTrigger::exact("S1", "FileCreate")],
            ),
        ];
        assert_eq!(names(&matching(&e, &fns)), ["alice/on-create#0"]);
    }
}
