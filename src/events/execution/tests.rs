//! Unit tests of the execution record model: ids, transitions, truncation and the size bound.

use super::*;
use chrono::Duration;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
}

fn key() -> ObjectKey {
    ObjectKey::new("alice", "on-create")
}

fn event(source: &str, id: &str) -> CloudEvent {
    CloudEvent::new(id, source, "FileCreate").expect("event")
}

fn record() -> Execution {
    let e = event("S1", "e-1");
    Execution::new(
        execution_id(&key(), &e),
        &key(),
        Trigger::Event { index: 0 },
        Some(EventRef::of(&e)),
        t(0),
    )
}

#[test]
fn ids_are_stable_per_event_and_function_and_distinct_otherwise() {
    let a = execution_id(&key(), &event("S1", "e-1"));
    assert_eq!(a, execution_id(&key(), &event("S1", "e-1")));
    assert_eq!(a.len(), 32);
    assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(a, execution_id(&key(), &event("S1", "e-2")));
    assert_ne!(a, execution_id(&key(), &event("S2", "e-1")));
    assert_ne!(
        a,
        execution_id(&ObjectKey::new("alice", "other"), &event("S1", "e-1"))
    );
    // The separator keeps shifted boundaries apart.
    assert_ne!(
        execution_id(&ObjectKey::new("ab", "c"), &event("s", "1")),
        execution_id(&ObjectKey::new("a", "bc"), &event("s", "1"))
    );
}

#[test]
fn a_retried_then_successful_execution() {
    let mut r = record();
    assert_eq!(r.status, ExecutionStatus::Queued);
    assert_eq!(r.start_attempt(t(1)), Ok(1));
    assert_eq!(r.status, ExecutionStatus::Running);
    r.finish_attempt(t(3), Outcome::Timeout, Some(504), Some("exceeded 2000 ms"))
        .expect("finish");
    r.retrying().expect("retrying");
    assert_eq!(r.status, ExecutionStatus::Retrying);
    assert_eq!(r.start_attempt(t(10)), Ok(2));
    r.finish_attempt(
        t(10) + Duration::milliseconds(250),
        Outcome::Succeeded,
        Some(200),
        None,
    )
    .expect("finish");
    r.set_result("{\"ok\":true}");
    r.finish(ExecutionStatus::Succeeded, None, t(11))
        .expect("final");
    assert_eq!(r.attempts[0].duration_ms, Some(2000));
    assert_eq!(r.attempts[0].outcome, Some(Outcome::Timeout));
    assert_eq!(r.attempts[1].duration_ms, Some(250));
    assert_eq!(r.result.as_deref(), Some("{\"ok\":true}"));
    assert_eq!(r.finished_at, Some(t(11)));
    // Final: nothing more runs.
    let err = r.start_attempt(t(12)).expect_err("terminal");
    assert_eq!(
        err.to_string(),
        format!(
            "execution {} is already Succeeded: nothing more runs for it",
            r.id
        )
    );
    assert!(r.retrying().is_err());
}

#[test]
fn transition_errors() {
    let mut r = record();
    let err = r
        .finish_attempt(t(1), Outcome::Succeeded, None, None)
        .expect_err("none running");
    assert!(matches!(err, TransitionError::NoRunningAttempt { .. }));
    let err = r
        .finish(ExecutionStatus::Running, None, t(1))
        .expect_err("not final");
    assert_eq!(err.to_string(), "Running is not a final status");
    for i in 0..MAX_ATTEMPTS {
        r.start_attempt(t(i as i64)).expect("start");
        r.finish_attempt(t(i as i64), Outcome::FunctionError, Some(502), Some("boom"))
            .expect("finish");
    }
    let err = r.start_attempt(t(99)).expect_err("too many");
    assert!(matches!(err, TransitionError::TooManyAttempts { .. }));
    r.finish(
        ExecutionStatus::DeadLettered,
        Some("RetriesExhausted"),
        t(100),
    )
    .expect("dlq");
    assert_eq!(r.reason.as_deref(), Some("RetriesExhausted"));
}

#[test]
fn an_attempt_left_open_by_a_dead_listener_is_closed_on_the_next_start() {
    let mut r = record();
    r.start_attempt(t(1)).expect("start");
    assert_eq!(r.start_attempt(t(30)), Ok(2));
    assert_eq!(r.attempts[0].outcome, Some(Outcome::Other));
    assert_eq!(r.attempts[0].ended_at, Some(t(30)));
    assert!(
        r.attempts[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("interrupted"))
    );
}

#[test]
fn outcomes_from_statuses() {
    let cases = [
        (200, Outcome::Succeeded),
        (502, Outcome::FunctionError),
        (504, Outcome::Timeout),
        (503, Outcome::Unavailable),
        (429, Outcome::Throttled),
        (413, Outcome::PayloadTooLarge),
        (400, Outcome::Rejected),
        (404, Outcome::FunctionNotFound),
        (500, Outcome::Other),
    ];
    for (status, want) in cases {
        assert_eq!(Outcome::from_status(status), want, "{status}");
    }
}

#[test]
fn statuses_parse_for_filters() {
    assert_eq!("deadlettered".parse(), Ok(ExecutionStatus::DeadLettered));
    assert_eq!("Queued".parse(), Ok(ExecutionStatus::Queued));
    assert!("done".parse::<ExecutionStatus>().is_err());
    assert!(ExecutionStatus::Failed.is_terminal());
    assert!(!ExecutionStatus::Retrying.is_terminal());
}

#[test]
fn truncation_respects_char_boundaries() {
    assert_eq!(truncate_utf8("héllo", 2), ("h", true));
    assert_eq!(truncate_utf8("héllo", 3), ("hé", true));
    assert_eq!(truncate_utf8("hé", 10), ("hé", false));
    let mut r = record();
    r.set_result(&"é".repeat(MAX_RESULT_BYTES));
    assert!(r.result_truncated);
    assert!(
        r.result
            .as_ref()
            .is_some_and(|s| s.len() <= MAX_RESULT_BYTES)
    );
}

#[test]
fn control_characters_are_replaced_but_line_breaks_and_tabs_kept() {
    assert_eq!(sanitize("a\tb\r\nc"), "a\tb\r\nc");
    assert_eq!(sanitize("\u{1b}[31mred\u{0}"), "\u{fffd}[31mred\u{fffd}");
    let mut r = record();
    r.set_logs("\u{1b}[1mbold\n");
    assert_eq!(r.logs, "\u{fffd}[1mbold\n");
    r.set_result("\"\u{7}\"");
    assert_eq!(r.result.as_deref(), Some("\"\u{fffd}\""));
}

#[test]
fn logs_keep_head_and_tail_around_a_marker() {
    assert_eq!(truncate_logs("short", 100), "short");
    let logs: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    let cut = truncate_logs(&logs, 1000);
    assert!(cut.len() <= 1000, "{}", cut.len());
    assert!(cut.starts_with("line 0\n"));
    assert!(cut.ends_with("line 1999\n"));
    assert!(cut.contains("bytes of logs truncated"), "{cut}");
    // The marker's count is what was actually dropped.
    let n: usize = cut
        .split("[… ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .expect("count");
    assert_eq!(n, logs.len() - (cut.len() - marker(n).len()));
    // Multi-byte text is cut on boundaries.
    let cut = truncate_logs(&"日本語".repeat(1000), 500);
    assert!(cut.len() <= 500);
}

#[test]
fn the_worst_case_record_stays_within_its_documented_size() {
    // Quotes and backslashes: JSON escaping doubles them, the worst a sanitised text can grow.
    let long = "\"".repeat(100_000);
    let e = event(&long, &long);
    let mut r = Execution::new(
        execution_id(&key(), &e),
        &ObjectKey::new(&"n".repeat(63), &"f".repeat(63)),
        Trigger::Schedule { index: 99 },
        Some(EventRef::of(&e)),
        t(0),
    );
    for i in 0..MAX_ATTEMPTS {
        r.start_attempt(t(i as i64)).expect("start");
        r.finish_attempt(
            t(i as i64 + 1),
            Outcome::FunctionError,
            Some(502),
            Some(&"\\".repeat(10_000)),
        )
        .expect("finish");
    }
    r.set_result(&"\"\\".repeat(100_000));
    r.set_logs(&"\u{1b}\"\n".repeat(100_000));
    assert_eq!(
        store::decode("k", &store::encode(&r).expect("encode")).expect("decode"),
        r
    );
    r.set_logs(&"\\\"".repeat(100_000));
    r.finish(
        ExecutionStatus::DeadLettered,
        Some("RetriesExhausted"),
        t(99),
    )
    .expect("final");
    r.duplicates = u32::MAX;
    let bytes = store::encode(&r).expect("encode");
    assert!(
        bytes.len() <= MAX_RECORD_BYTES,
        "{} > {MAX_RECORD_BYTES}",
        bytes.len()
    );
    // And the stored form reads back exactly, control characters and quotes included.
    assert_eq!(store::decode("k", &bytes).expect("decode"), r);
}
