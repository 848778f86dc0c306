//! What happens after an attempt (design §6 "Retries"): a pure decision from the function's
//! `spec.retry`, the attempt's outcome, how many attempts were made and the event's age, with
//! the randomness passed in so tests fix it.
//!
//! - Retried: a function error (502), a timeout (504), no ready replica (503) and every replica
//!   at its concurrency limit (429). Every attempt counts toward `maxAttempts`.
//! - Not retried: success, and answers a retry cannot change: the function is gone (404), the
//!   event is too large (413) or refused (400), anything unexpected (a platform bug a retry
//!   would hide). These fail at once.
//! - The delay before retry *n* (after attempt *n* failed) is `backoffSeconds × 2^(n-1)`,
//!   capped at [`MAX_DELAY`], with equal jitter: a random half of it is dropped, so the delay
//!   lies in `[d/2, d]` and replicas recovering from an outage are not hit by a synchronised
//!   wave. The broker holds the message for that long (per-delay queues), not a consumer.
//! - No retry would start after `maxEventAgeSeconds` (counted from when the platform accepted
//!   the execution): the execution ends as exhausted instead.
//! - Exhausted executions go to `deadLetterQueue` when the function names one (status
//!   `DeadLettered`), else end `Failed`.

use std::time::Duration;

use crate::api::function::RetryPolicy;

use super::execution::{Execution, ExecutionStatus, Outcome, TransitionError};

/// Longest delay between two attempts, whatever the backoff doubles to.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It succeeded: record the result.
    Succeed,
    /// Run attempt `attempt` after `delay`.
    Retry { attempt: u32, delay: Duration },
    /// No more attempts: dead-letter to `dead_letter_queue` when set, else fail. `reason` is
    /// the record's (`RetriesExhausted` or `EventTooOld`).
    Exhausted {
        reason: &'static str,
        dead_letter_queue: Option<String>,
    },
    /// Fail now, no retry; `reason` is the record's (e.g. `FunctionNotFound`).
    Fail { reason: &'static str },
}

/// True for the outcomes that a later attempt may turn into a success.
pub fn is_retryable(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::FunctionError | Outcome::Timeout | Outcome::Unavailable | Outcome::Throttled
    )
}

/// The delay after attempt `attempts_made` (≥ 1) failed, for `jitter` in `[0, 1)` (clamped):
/// `d = min(backoff × 2^(attempts_made-1), MAX_DELAY)`, then `d/2 + jitter × d/2`.
pub fn backoff(policy: &RetryPolicy, attempts_made: u32, jitter: f64) -> Duration {
    let base = Duration::from_secs(u64::from(policy.backoff_seconds.max(1)));
    let doublings = attempts_made.saturating_sub(1).min(31);
    let full = base
        .checked_mul(1u32 << doublings)
        .unwrap_or(MAX_DELAY)
        .min(MAX_DELAY);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let half = full / 2;
    half + half.mul_f64(jitter)
}

/// A jitter value for [`decide`] from the thread's random generator.
pub fn random_jitter() -> f64 {
    rand::random::<f64>()
}

/// The decision after attempt number `attempts_made` (≥ 1) ended with `outcome`, the execution
/// being `event_age` old.
pub fn decide(
    policy: &RetryPolicy,
    outcome: Outcome,
    attempts_made: u32,
    event_age: Duration,
    jitter: f64,
) -> Decision {
    match outcome {
        Outcome::Succeeded => return Decision::Succeed,
        Outcome::FunctionNotFound => {
            return Decision::Fail {
                reason: "FunctionNotFound",
            };
        }
        Outcome::PayloadTooLarge => {
            return Decision::Fail {
                reason: "PayloadTooLarge",
            };
        }
        Outcome::Rejected => {
            return Decision::Fail {
                reason: "EventRejected",
            };
        }
        Outcome::Other => {
            return Decision::Fail {
                reason: "UnexpectedResponse",
            };
        }
        Outcome::FunctionError | Outcome::Timeout | Outcome::Unavailable | Outcome::Throttled => {}
    }
    let exhausted = |reason| Decision::Exhausted {
        reason,
        dead_letter_queue: policy.dead_letter_queue.clone(),
    };
    if attempts_made >= policy.max_attempts {
        return exhausted("RetriesExhausted");
    }
    let delay = backoff(policy, attempts_made, jitter);
    let max_age = Duration::from_secs(u64::from(policy.max_event_age_seconds));
    if event_age.saturating_add(delay) > max_age {
        return exhausted("EventTooOld");
    }
    Decision::Retry {
        attempt: attempts_made + 1,
        delay,
    }
}

/// What becomes of an execution a listener takes when it is already older than
/// `maxEventAgeSeconds`: no (further) attempt, exhausted as `EventTooOld` (to the dead-letter
/// queue if there is one). `None` while it is young enough to run.
pub fn expired(policy: &RetryPolicy, event_age: Duration) -> Option<Decision> {
    (event_age > Duration::from_secs(u64::from(policy.max_event_age_seconds))).then(|| {
        Decision::Exhausted {
            reason: "EventTooOld",
            dead_letter_queue: policy.dead_letter_queue.clone(),
        }
    })
}

/// Records `decision` in the execution (whose last attempt has ended): `Succeeded`,
/// `Retrying`, `DeadLettered` (exhausted with a dead-letter queue), or `Failed` with the reason.
pub fn apply(
    execution: &mut Execution,
    decision: &Decision,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), TransitionError> {
    match decision {
        Decision::Succeed => execution.finish(ExecutionStatus::Succeeded, None, now),
        Decision::Retry { .. } => execution.retrying(),
        Decision::Exhausted {
            reason,
            dead_letter_queue: Some(_),
        } => execution.finish(ExecutionStatus::DeadLettered, Some(reason), now),
        Decision::Exhausted {
            reason,
            dead_letter_queue: None,
        }
        | Decision::Fail { reason } => execution.finish(ExecutionStatus::Failed, Some(reason), now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(attempts: u32, backoff_s: u32, dlq: Option<&str>) -> RetryPolicy {
        RetryPolicy {
            max_attempts: attempts,
            backoff_seconds: backoff_s,
            dead_letter_queue: dlq.map(Into::into),
            max_event_age_seconds: 3600,
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn executions_past_their_maximum_age_are_not_run() {
        let p = policy(3, 1, Some("dlq"));
        assert_eq!(expired(&p, S(3600)), None);
        assert_eq!(
            expired(&p, S(3601)),
            Some(Decision::Exhausted {
                reason: "EventTooOld",
                dead_letter_queue: Some("dlq".into())
            })
        );
        let p = policy(3, 1, None);
        assert_eq!(
            expired(&p, S(7200)),
            Some(Decision::Exhausted {
                reason: "EventTooOld",
                dead_letter_queue: None
            })
        );
    }

    #[test]
    fn backoff_doubles_with_equal_jitter_and_a_cap() {
        let p = policy(10, 2, None);
        // No jitter: the lower half-point; full jitter: the whole doubled delay.
        assert_eq!(backoff(&p, 1, 0.0), S(1));
        assert_eq!(backoff(&p, 1, 1.0), S(2));
        assert_eq!(backoff(&p, 2, 1.0), S(4));
        assert_eq!(backoff(&p, 3, 0.5), Duration::from_secs(6));
        assert_eq!(backoff(&p, 4, 0.25), Duration::from_secs(10));
        // Capped at an hour, whatever the exponent.
        assert_eq!(backoff(&policy(10, 3600, None), 9, 1.0), MAX_DELAY);
        assert_eq!(backoff(&p, u32::MAX, 1.0), MAX_DELAY);
        // Out-of-range randomness is clamped, never a panic.
        assert_eq!(backoff(&p, 1, 7.0), S(2));
        assert_eq!(backoff(&p, 1, -1.0), S(1));
        assert_eq!(backoff(&p, 1, f64::NAN), S(1));
        let j = random_jitter();
        assert!((0.0..1.0).contains(&j));
    }

    #[test]
    fn the_four_retryable_outcomes_retry_until_max_attempts() {
        let p = policy(3, 1, None);
        for outcome in [
            Outcome::FunctionError,
            Outcome::Timeout,
            Outcome::Unavailable,
            Outcome::Throttled,
        ] {
            assert!(is_retryable(outcome));
            assert_eq!(
                decide(&p, outcome, 1, S(0), 1.0),
                Decision::Retry {
                    attempt: 2,
                    delay: S(1)
                },
                "{outcome:?}"
            );
            assert_eq!(
                decide(&p, outcome, 2, S(1), 1.0),
                Decision::Retry {
                    attempt: 3,
                    delay: S(2)
                }
            );
            assert_eq!(
                decide(&p, outcome, 3, S(3), 1.0),
                Decision::Exhausted {
                    reason: "RetriesExhausted",
                    dead_letter_queue: None
                }
            );
        }
    }

    #[test]
    fn other_outcomes_succeed_or_fail_at_once() {
        let p = policy(5, 1, Some("failed-events"));
        assert_eq!(
            decide(&p, Outcome::Succeeded, 1, S(0), 0.5),
            Decision::Succeed
        );
        let cases = [
            (Outcome::FunctionNotFound, "FunctionNotFound"),
            (Outcome::PayloadTooLarge, "PayloadTooLarge"),
            (Outcome::Rejected, "EventRejected"),
            (Outcome::Other, "UnexpectedResponse"),
        ];
        for (outcome, reason) in cases {
            assert!(!is_retryable(outcome));
            assert_eq!(decide(&p, outcome, 1, S(0), 0.5), Decision::Fail { reason });
        }
    }

    #[test]
    fn exhausted_executions_name_the_dead_letter_queue() {
        let p = policy(1, 1, Some("failed-events"));
        assert_eq!(
            decide(&p, Outcome::FunctionError, 1, S(0), 0.0),
            Decision::Exhausted {
                reason: "RetriesExhausted",
                dead_letter_queue: Some("failed-events".into())
            }
        );
    }

    #[test]
    fn decisions_are_recorded_in_the_execution() {
        use crate::api::ObjectKey;
        use crate::events::execution::Trigger;
        let now = chrono::Utc::now();
        let fresh = || {
            let mut x = Execution::new(
                "x1".into(),
                &ObjectKey::new("a", "f"),
                Trigger::Async,
                None,
                now,
            );
            x.start_attempt(now).expect("start");
            x
        };
        let cases = [
            (Decision::Succeed, ExecutionStatus::Succeeded, None),
            (
                Decision::Retry {
                    attempt: 2,
                    delay: S(1),
                },
                ExecutionStatus::Retrying,
                None,
            ),
            (
                Decision::Exhausted {
                    reason: "RetriesExhausted",
                    dead_letter_queue: Some("q".into()),
                },
                ExecutionStatus::DeadLettered,
                Some("RetriesExhausted"),
            ),
            (
                Decision::Exhausted {
                    reason: "EventTooOld",
                    dead_letter_queue: None,
                },
                ExecutionStatus::Failed,
                Some("EventTooOld"),
            ),
            (
                Decision::Fail {
                    reason: "FunctionNotFound",
                },
                ExecutionStatus::Failed,
                Some("FunctionNotFound"),
            ),
        ];
        for (decision, status, reason) in cases {
            let mut x = fresh();
            apply(&mut x, &decision, now).expect("apply");
            assert_eq!(x.status, status, "{decision:?}");
            assert_eq!(x.reason.as_deref(), reason, "{decision:?}");
            assert_eq!(x.finished_at.is_some(), status.is_terminal());
        }
        let mut done = fresh();
        apply(&mut done, &Decision::Succeed, now).expect("apply");
        assert!(
            apply(&mut done, &Decision::Succeed, now).is_err(),
            "a final record stays final"
        );
    }

    #[test]
    fn no_retry_starts_after_the_max_event_age() {
        let p = policy(10, 60, Some("dlq"));
        // 3500 s old + a 60 s delay: 3560 <= 3600, retried.
        assert_eq!(
            decide(&p, Outcome::Timeout, 1, S(3500), 1.0),
            Decision::Retry {
                attempt: 2,
                delay: S(60)
            }
        );
        // 3590 s old: the retry would start after the hour.
        assert_eq!(
            decide(&p, Outcome::Timeout, 1, S(3590), 1.0),
            Decision::Exhausted {
                reason: "EventTooOld",
                dead_letter_queue: Some("dlq".into())
            }
        );
        // The jitter decides at the edge: 3560 + 30 fits, 3560 + 60 does not.
        assert!(matches!(
            decide(&p, Outcome::Timeout, 1, S(3560), 0.0),
            Decision::Retry { .. }
        ));
        assert!(matches!(
            decide(&p, Outcome::Timeout, 1, S(3560), 1.0),
            Decision::Exhausted { .. }
        ));
    }
}
