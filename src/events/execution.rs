//! Execution records (design §6): one per asynchronous run of a function (an event, an async
//! invocation, a schedule fire), with every attempt, the result and the execution's own logs.
//!
//! Records are history, not desired state: every variable part is truncated here, and control
//! characters (but line breaks and tabs) are replaced by U+FFFD, so that JSON escaping at most
//! doubles a text and a record's encoded size never exceeds [`MAX_RECORD_BYTES`] (a test checks
//! the worst case), and retention
//! ([`retention`]) bounds how many a function keeps. Their ids are derived from the event, so a
//! redelivered message finds its record and is counted as a duplicate instead of running as a
//! new execution ([`store`]).

pub mod retention;
pub mod store;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::cloudevent::CloudEvent;
use crate::api::ObjectKey;

/// Largest stored result: the function's JSON result text, cut beyond this (then
/// `resultTruncated` is true and the text is no longer valid JSON).
pub const MAX_RESULT_BYTES: usize = 32 * 1024;
/// Largest stored log text per execution; longer logs keep their head and tail around a marker.
pub const MAX_LOG_BYTES: usize = 32 * 1024;
/// Largest stored error message per attempt.
pub const MAX_ERROR_BYTES: usize = 1024;
/// Largest stored event id, source or type (longer ones are cut; the execution id is derived
/// from the full values).
pub const MAX_EVENT_ATTRIBUTE_BYTES: usize = 512;
/// Most attempts a record holds (`spec.retry.maxAttempts` is at most 10).
pub const MAX_ATTEMPTS: usize = 10;
/// Worst-case encoded size of one record: all of the above at their maximum, each doubled by
/// JSON escaping, plus names and timestamps. What retention multiplies to bound the storage a
/// function's history takes; well under etcd's default 1.5 MiB request limit.
pub const MAX_RECORD_BYTES: usize = 160 * 1024;

/// Where an execution is in its life. `Succeeded`, `Failed` and `DeadLettered` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExecutionStatus {
    Queued,
    Running,
    Retrying,
    Succeeded,
    Failed,
    DeadLettered,
}

impl ExecutionStatus {
    /// True for the final states: nothing will run for this execution again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ExecutionStatus::Succeeded | ExecutionStatus::Failed | ExecutionStatus::DeadLettered
        )
    }

    /// The name used in records and in `?status=` filters.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Queued => "Queued",
            ExecutionStatus::Running => "Running",
            ExecutionStatus::Retrying => "Retrying",
            ExecutionStatus::Succeeded => "Succeeded",
            ExecutionStatus::Failed => "Failed",
            ExecutionStatus::DeadLettered => "DeadLettered",
        }
    }
}

impl std::str::FromStr for ExecutionStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        use ExecutionStatus::*;
        [Queued, Running, Retrying, Succeeded, Failed, DeadLettered]
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown status {s:?} (Queued, Running, Retrying, Succeeded, Failed, DeadLettered)")
            })
    }
}

/// What started an execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Trigger {
    /// An event matched `spec.triggers.events[index]`.
    Event { index: usize },
    /// An asynchronous REST invocation.
    Async,
    /// `spec.triggers.schedules[index]` fired.
    Schedule { index: usize },
}

/// The event an execution runs for (its identifying attributes, each at most
/// [`MAX_EVENT_ATTRIBUTE_BYTES`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRef {
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub type_: String,
}

impl EventRef {
    /// The reference to `event`, truncated to the record's bounds.
    pub fn of(event: &CloudEvent) -> EventRef {
        let cut = |s: &str| bounded(s, MAX_EVENT_ATTRIBUTE_BYTES).0;
        EventRef {
            id: cut(&event.id),
            source: cut(&event.source),
            type_: cut(&event.type_),
        }
    }
}

/// How one attempt ended, from the status the function's replica (or the platform) answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// 200: the function returned a result.
    Succeeded,
    /// 502: the function raised, exited non-zero or its worker died.
    FunctionError,
    /// 504: it overran its timeout.
    Timeout,
    /// 503: no ready replica to run it.
    Unavailable,
    /// 429: every replica was at its concurrency limit.
    Throttled,
    /// 413: the event is larger than the function accepts.
    PayloadTooLarge,
    /// 400: the replica refused the event.
    Rejected,
    /// 404: the function no longer exists.
    FunctionNotFound,
    /// Any other status, or no answer at all.
    Other,
}

impl Outcome {
    /// The outcome an HTTP status of an invocation means.
    pub fn from_status(status: u16) -> Outcome {
        match status {
            200..=299 => Outcome::Succeeded,
            502 => Outcome::FunctionError,
            504 => Outcome::Timeout,
            503 => Outcome::Unavailable,
            429 => Outcome::Throttled,
            413 => Outcome::PayloadTooLarge,
            400 => Outcome::Rejected,
            404 => Outcome::FunctionNotFound,
            _ => Outcome::Other,
        }
    }
}

/// One try at running the execution. `ended_at`, `duration_ms` and `outcome` are set together
/// when it ends; an attempt without them is running (or its listener died during it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The HTTP status the attempt got, when it got one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Why it failed, at most [`MAX_ERROR_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One execution's record. Invariants: `attempts` is at most [`MAX_ATTEMPTS`] long and numbered
/// from 1; every text field respects its bound; `finished_at` is set exactly when the status is
/// terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Execution {
    /// See [`execution_id`].
    pub id: String,
    pub namespace: String,
    pub function: String,
    pub trigger: Trigger,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventRef>,
    pub status: ExecutionStatus,
    /// CamelCase reason of a final failure, e.g. `FunctionNotFound`, `RetriesExhausted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the platform accepted the execution (retention and event age count from here).
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    /// The result's JSON text, at most [`MAX_RESULT_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// True when `result` was cut (it is then not valid JSON).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub result_truncated: bool,
    /// What the function wrote during this execution, at most [`MAX_LOG_BYTES`] (see
    /// [`truncate_logs`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub logs: String,
    /// Deliveries of the same execution seen after the first (at-least-once redeliveries).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub duplicates: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Why a record cannot make a transition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("execution {id} is already {status}: nothing more runs for it", status = .status.as_str())]
    Terminal { id: String, status: ExecutionStatus },
    #[error("execution {id} already has {MAX_ATTEMPTS} attempts")]
    TooManyAttempts { id: String },
    #[error("{status} is not a final status", status = .status.as_str())]
    NotFinal { status: ExecutionStatus },
    #[error("execution {id} has no running attempt to finish")]
    NoRunningAttempt { id: String },
}

/// The execution id of `function` running for `event`: 32 hex digits of a SHA-256 over the
/// function and the event's source and id. CloudEvents makes source + id unique per event, so
/// every redelivery of one event to one function yields the same id (the duplicate check), and
/// one event yields a distinct execution per function. It is also a valid agent invocation id.
pub fn execution_id(function: &ObjectKey, event: &CloudEvent) -> String {
    let mut h = Sha256::new();
    for part in [
        &function.namespace,
        &function.name,
        &event.source,
        &event.id,
    ] {
        h.update(part.as_bytes());
        // A separator that no part can contain keeps ("ab","c") and ("a","bc") apart.
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..16])
}

impl Execution {
    /// A new `Queued` record.
    pub fn new(
        id: String,
        function: &ObjectKey,
        trigger: Trigger,
        event: Option<EventRef>,
        now: DateTime<Utc>,
    ) -> Execution {
        Execution {
            id,
            namespace: function.namespace.clone(),
            function: function.name.clone(),
            trigger,
            event,
            status: ExecutionStatus::Queued,
            reason: None,
            created_at: now,
            finished_at: None,
            attempts: Vec::new(),
            result: None,
            result_truncated: false,
            logs: String::new(),
            duplicates: 0,
        }
    }

    /// The function it runs.
    pub fn function_key(&self) -> ObjectKey {
        ObjectKey::new(&self.namespace, &self.function)
    }

    fn check_open(&self) -> Result<(), TransitionError> {
        if self.status.is_terminal() {
            return Err(TransitionError::Terminal {
                id: self.id.clone(),
                status: self.status,
            });
        }
        Ok(())
    }

    /// Starts the next attempt (status `Running`); returns its number. An attempt left open by
    /// a listener that died is closed first as `Other` with that reason.
    pub fn start_attempt(&mut self, now: DateTime<Utc>) -> Result<u32, TransitionError> {
        self.check_open()?;
        if let Some(open) = self.attempts.last_mut().filter(|a| a.outcome.is_none()) {
            open.ended_at = Some(now);
            open.outcome = Some(Outcome::Other);
            open.error = Some("interrupted: the listener running it stopped".into());
        }
        if self.attempts.len() >= MAX_ATTEMPTS {
            return Err(TransitionError::TooManyAttempts {
                id: self.id.clone(),
            });
        }
        let number = self.attempts.len() as u32 + 1;
        self.attempts.push(Attempt {
            number,
            started_at: now,
            ended_at: None,
            duration_ms: None,
            outcome: None,
            http_status: None,
            error: None,
        });
        self.status = ExecutionStatus::Running;
        Ok(number)
    }

    /// Ends the running attempt with its outcome (the status is decided by the caller next).
    pub fn finish_attempt(
        &mut self,
        now: DateTime<Utc>,
        outcome: Outcome,
        http_status: Option<u16>,
        error: Option<&str>,
    ) -> Result<(), TransitionError> {
        self.check_open()?;
        let id = self.id.clone();
        let a = self
            .attempts
            .last_mut()
            .filter(|a| a.outcome.is_none())
            .ok_or(TransitionError::NoRunningAttempt { id })?;
        a.ended_at = Some(now);
        a.duration_ms = Some((now - a.started_at).num_milliseconds().max(0) as u64);
        a.outcome = Some(outcome);
        a.http_status = http_status;
        a.error = error.map(|e| bounded(e, MAX_ERROR_BYTES).0);
        Ok(())
    }

    /// Marks it waiting for a retry.
    pub fn retrying(&mut self) -> Result<(), TransitionError> {
        self.check_open()?;
        self.status = ExecutionStatus::Retrying;
        Ok(())
    }

    /// Ends it in a final state (`Succeeded`, `Failed` or `DeadLettered`) with a reason for the
    /// failures.
    pub fn finish(
        &mut self,
        status: ExecutionStatus,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        self.check_open()?;
        if !status.is_terminal() {
            return Err(TransitionError::NotFinal { status });
        }
        self.status = status;
        self.reason = reason.map(str::to_string);
        self.finished_at = Some(now);
        Ok(())
    }

    /// Stores the result text, cut at [`MAX_RESULT_BYTES`].
    pub fn set_result(&mut self, result: &str) {
        let (kept, cut) = bounded(result, MAX_RESULT_BYTES);
        self.result = Some(kept);
        self.result_truncated = cut;
    }

    /// Stores the execution's logs, cut to [`MAX_LOG_BYTES`] by [`truncate_logs`].
    pub fn set_logs(&mut self, logs: &str) {
        self.logs = truncate_logs(&sanitize(logs), MAX_LOG_BYTES);
    }
}

/// `s` with control characters other than `\n`, `\r` and `\t` replaced by U+FFFD (they would
/// grow sixfold as JSON escapes, and mean nothing in a record read by people).
pub fn sanitize(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() && !matches!(c, '\n' | '\r' | '\t');
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(
        s.chars()
            .map(|c| if bad(c) { '\u{fffd}' } else { c })
            .collect(),
    )
}

/// `s` sanitised and cut to `max` bytes; whether it was cut.
fn bounded(s: &str, max: usize) -> (String, bool) {
    let clean = sanitize(s);
    let (kept, cut) = truncate_utf8(&clean, max);
    (kept.to_string(), cut)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary, and
/// whether anything was cut.
pub fn truncate_utf8(s: &str, max: usize) -> (&str, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

/// Logs of at most `max` bytes: unchanged when they fit, else their head and tail (the start
/// says what ran, the end usually why it failed) around the marker
/// `\n[… N bytes of logs truncated …]\n`, the whole within `max`.
pub fn truncate_logs(logs: &str, max: usize) -> String {
    if logs.len() <= max {
        return logs.to_string();
    }
    // The marker's length depends on N, which depends on what is kept: size it for the largest
    // N (everything dropped), then keep what fits beside it.
    let marker_len = marker(logs.len()).len();
    let room = max.saturating_sub(marker_len);
    let (head, _) = truncate_utf8(logs, room / 2);
    let mut tail_start = logs.len() - (room - head.len());
    while !logs.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    let dropped = tail_start - head.len();
    format!("{head}{}{}", marker(dropped), &logs[tail_start..])
}

fn marker(dropped: usize) -> String {
    format!("\n[… {dropped} bytes of logs truncated …]\n")
}

#[cfg(test)]
mod tests;
