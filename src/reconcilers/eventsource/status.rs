//! An event source's status from what its running source reports: a pure function, so the
//! reconciler only reads the report, calls it and writes.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::api::eventsource::EventSourceStatus;
use crate::api::{ConditionStatus, FieldErrors};
use crate::events::source::{Link, ReportState};
use crate::runtime::conditions::set_condition_at;

/// Condition: the directory is watched / the notification bus consumed.
pub const CONNECTED: &str = "Connected";
/// Condition: events are being published (connected, and the platform's broker confirms).
pub const READY: &str = "Ready";

/// Counters persisted before the running source started (its report counts from zero).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Base {
    pub published: u64,
    pub skipped: u64,
}

impl Base {
    /// The persisted counters of `status`.
    pub fn of(status: &EventSourceStatus) -> Base {
        Base {
            published: status.events_published,
            skipped: status.events_skipped,
        }
    }
}

fn stamp(t: DateTime<Utc>, message: &str) -> String {
    format!(
        "{}: {message}",
        t.to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}

/// The status of a source of generation `generation` running with report `r`; `up_reason`
/// is the `Connected=True` reason (`Watching`, `Consuming`).
pub fn running(
    prev: &EventSourceStatus,
    r: &ReportState,
    base: Base,
    generation: i64,
    up_reason: &str,
    now: DateTime<Utc>,
) -> EventSourceStatus {
    let mut s = prev.clone();
    s.observed_generation = Some(generation);
    s.events_published = base.published + r.published;
    s.events_skipped = base.skipped + r.skipped;
    if r.last_event.is_some() {
        s.last_event_time = r.last_event;
    }
    if let Some((t, m)) = &r.last_error {
        s.last_error = Some(stamp(*t, m));
    }
    let g = Some(generation);
    let (connected, ready) = match &r.link {
        Link::Starting => (
            (ConditionStatus::Unknown, "Starting", "starting".to_string()),
            (ConditionStatus::False, "Starting", "starting".to_string()),
        ),
        Link::Up(m) if r.publish_failing => (
            (ConditionStatus::True, up_reason, m.clone()),
            (
                ConditionStatus::False,
                "PublishFailing",
                r.last_error
                    .as_ref()
                    .map(|e| e.1.clone())
                    .unwrap_or_else(|| "the platform's broker does not confirm".into()),
            ),
        ),
        Link::Up(m) => (
            (ConditionStatus::True, up_reason, m.clone()),
            (ConditionStatus::True, "Publishing", m.clone()),
        ),
        Link::Down { reason, message } => (
            (ConditionStatus::False, reason.as_str(), message.clone()),
            (ConditionStatus::False, reason.as_str(), message.clone()),
        ),
    };
    set_condition_at(
        &mut s.conditions,
        CONNECTED,
        connected.0,
        connected.1,
        &connected.2,
        g,
        now,
    );
    set_condition_at(&mut s.conditions, READY, ready.0, ready.1, &ready.2, g, now);
    s
}

/// The status of a source whose spec does not validate (it is not run).
pub fn invalid(
    prev: &EventSourceStatus,
    errors: &FieldErrors,
    generation: i64,
    now: DateTime<Utc>,
) -> EventSourceStatus {
    let mut s = prev.clone();
    s.observed_generation = Some(generation);
    let message = errors.to_string();
    for c in [CONNECTED, READY] {
        set_condition_at(
            &mut s.conditions,
            c,
            ConditionStatus::False,
            "InvalidSpec",
            &message,
            Some(generation),
            now,
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(link: Link) -> ReportState {
        ReportState {
            link,
            published: 3,
            skipped: 1,
            last_event: None,
            last_error: None,
            publish_failing: false,
        }
    }

    fn cond(s: &EventSourceStatus, t: &str) -> (ConditionStatus, String, String) {
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == t)
            .expect("condition");
        (c.status, c.reason.clone(), c.message.clone())
    }

    #[test]
    fn counters_add_to_what_was_persisted() {
        let now = Utc::now();
        let r = report(Link::Up("watching /d (1 directory)".into()));
        let base = Base {
            published: 10,
            skipped: 2,
        };
        let s = running(&Default::default(), &r, base, 7, "Watching", now);
        assert_eq!((s.events_published, s.events_skipped), (13, 3));
        assert_eq!(s.observed_generation, Some(7));
        assert_eq!(
            cond(&s, READY),
            (
                ConditionStatus::True,
                "Publishing".into(),
                "watching /d (1 directory)".into()
            )
        );
        assert_eq!(cond(&s, CONNECTED).1, "Watching");
        // The same report again changes nothing (no status write).
        assert_eq!(running(&s, &r, base, 7, "Watching", Utc::now()), s);
    }

    #[test]
    fn down_and_failing_publishes_are_not_ready_with_the_reason() {
        let now = Utc::now();
        let mut r = report(Link::Down {
            reason: "NotConnected".into(),
            message: "the notification bus is unreachable (amqp://u:***@h:1/%2f: refused)".into(),
        });
        r.last_error = Some((now, "the notification bus is unreachable".into()));
        let s = running(
            &Default::default(),
            &r,
            Base::default(),
            1,
            "Consuming",
            now,
        );
        assert_eq!(cond(&s, CONNECTED).0, ConditionStatus::False);
        assert_eq!(cond(&s, READY).1, "NotConnected");
        assert!(cond(&s, READY).2.contains("amqp://u:***@h:1/%2f"));
        assert!(
            s.last_error
                .as_deref()
                .is_some_and(|e| e.ends_with(": the notification bus is unreachable"))
        );
        r.link = Link::Up("consuming".into());
        r.publish_failing = true;
        let s = running(&s, &r, Base::default(), 1, "Consuming", now);
        assert_eq!(cond(&s, CONNECTED).0, ConditionStatus::True);
        assert_eq!(cond(&s, READY).1, "PublishFailing");
        // The error stays in lastError after recovery.
        r.publish_failing = false;
        let s = running(&s, &r, Base::default(), 1, "Consuming", now);
        assert_eq!(cond(&s, READY).0, ConditionStatus::True);
        assert!(s.last_error.is_some());
    }

    #[test]
    fn an_invalid_spec_names_the_field() {
        let mut e = FieldErrors::default();
        e.push("spec.directory.path", "\"x\" must be an absolute path");
        let s = invalid(&Default::default(), &e, 2, Utc::now());
        let (st, reason, message) = cond(&s, READY);
        assert_eq!(
            (st, reason.as_str()),
            (ConditionStatus::False, "InvalidSpec")
        );
        assert!(message.contains("spec.directory.path"), "{message}");
    }
}
