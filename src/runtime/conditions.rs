//! Condition helpers: set a condition without churning `lastTransitionTime`, and roll several
//! conditions up into `Ready`.

use chrono::{DateTime, Utc};

use crate::api::{Condition, ConditionStatus};

/// Sets the condition `type_` in `conditions`, keeping its `lastTransitionTime` unless the
/// status flips. Returns true when anything changed (so an unchanged status is not rewritten).
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
) -> bool {
    set_condition_at(
        conditions,
        type_,
        status,
        reason,
        message,
        observed_generation,
        Utc::now(),
    )
}

/// [`set_condition`] with an explicit clock, for tests.
pub fn set_condition_at(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: DateTime<Utc>,
) -> bool {
    let new = |last_transition_time| Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time,
        observed_generation,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let ltt = if c.status == status {
                c.last_transition_time
            } else {
                now
            };
            let n = new(ltt);
            if *c == n {
                return false;
            }
            *c = n;
            true
        }
        None => {
            conditions.push(new(now));
            true
        }
    }
}

/// Removes the condition `type_`; true when it was there.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    conditions.len() != before
}

/// The `Ready` roll-up of the conditions `types`: True when all are True; otherwise the first
/// that is not, with its reason and message (`Unknown` for a missing one).
pub fn rollup(conditions: &[Condition], types: &[&str]) -> (ConditionStatus, String, String) {
    for t in types {
        match conditions.iter().find(|c| c.type_ == *t) {
            None => {
                return (
                    ConditionStatus::Unknown,
                    format!("{t}Unknown"),
                    format!("{t} has not been observed yet"),
                );
            }
            Some(c) if c.status != ConditionStatus::True => {
                return (c.status, c.reason.clone(), c.message.clone());
            }
            Some(_) => {}
        }
    }
    (ConditionStatus::True, "AllTrue".into(), String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn transition_time_changes_only_when_status_flips() {
        let t0 = Utc::now();
        let t1 = t0 + TimeDelta::seconds(10);
        let t2 = t0 + TimeDelta::seconds(20);
        let mut c = Vec::new();
        let ok = ConditionStatus::True;
        assert!(set_condition_at(&mut c, "Ready", ok, "Up", "", Some(1), t0));
        assert!(!set_condition_at(
            &mut c,
            "Ready",
            ok,
            "Up",
            "",
            Some(1),
            t1
        ));
        assert_eq!(c[0].last_transition_time, t0);
        // A new message is a change, but not a transition.
        assert!(set_condition_at(
            &mut c,
            "Ready",
            ok,
            "Up",
            "3 nodes",
            Some(2),
            t1
        ));
        assert_eq!(c[0].last_transition_time, t0);
        let f = ConditionStatus::False;
        assert!(set_condition_at(
            &mut c,
            "Ready",
            f,
            "Down",
            "",
            Some(2),
            t2
        ));
        assert_eq!(c[0].last_transition_time, t2);
        assert!(remove_condition(&mut c, "Ready"));
        assert!(c.is_empty());
    }

    #[test]
    fn rollup_names_the_first_unready() {
        let t = Utc::now();
        let mut c = Vec::new();
        set_condition_at(&mut c, "A", ConditionStatus::True, "Ok", "", None, t);
        set_condition_at(
            &mut c,
            "B",
            ConditionStatus::False,
            "Broken",
            "why",
            None,
            t,
        );
        assert_eq!(rollup(&c, &["A"]).0, ConditionStatus::True);
        let (s, r, m) = rollup(&c, &["A", "B"]);
        assert_eq!(
            (s, r.as_str(), m.as_str()),
            (ConditionStatus::False, "Broken", "why")
        );
        assert_eq!(rollup(&c, &["C"]).0, ConditionStatus::Unknown);
    }
}
