//! How much execution history a function keeps: a pure decision over its records' ages and
//! states, so the sweep that applies it ([`super::store::prune_all`]) only deletes.
//!
//! Rules: finished records are kept while younger than `max_age` and among the function's
//! `max_per_function` newest records. Records still in flight (`Queued`, `Running`, `Retrying`)
//! are never removed for the count (a burst of queued executions must not lose its records)
//! and only for their age, as a net for records whose message vanished; so `max_age` must
//! exceed the longest time an execution can stay in flight (the functions' maximum event age).
//! A function's history therefore takes at most `max_per_function` × [`MAX_RECORD_BYTES`] plus
//! its in-flight records.
//!
//! [`MAX_RECORD_BYTES`]: super::MAX_RECORD_BYTES

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Retention settings (per function).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Records older than this go.
    pub max_age: Duration,
    /// A function keeps at most this many finished records (its newest).
    pub max_per_function: usize,
}

/// One week.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Per function: with [`super::MAX_RECORD_BYTES`], at most 16 MiB of history per function in
/// the worst case, typically about 100 KiB (a record of a small event is under 1 KiB).
pub const DEFAULT_MAX_PER_FUNCTION: usize = 100;

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: DEFAULT_MAX_AGE,
            max_per_function: DEFAULT_MAX_PER_FUNCTION,
        }
    }
}

/// One of a function's records, as retention sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub created_at: DateTime<Utc>,
    /// True when the execution is finished.
    pub terminal: bool,
}

/// The indices into `entries` (one function's records, in any order) to delete at `now`,
/// ascending.
pub fn to_prune(entries: &[Entry], now: DateTime<Utc>, policy: &Retention) -> Vec<usize> {
    let max_age = chrono::Duration::from_std(policy.max_age).unwrap_or(chrono::Duration::MAX);
    let mut order: Vec<usize> = (0..entries.len()).collect();
    // Newest first; equal times by position so the decision is deterministic.
    order.sort_by(|&a, &b| {
        entries[b]
            .created_at
            .cmp(&entries[a].created_at)
            .then(a.cmp(&b))
    });
    let mut out: Vec<usize> = order
        .into_iter()
        .enumerate()
        .filter(|&(rank, i)| {
            let e = &entries[i];
            let too_old = now - e.created_at > max_age;
            too_old || (e.terminal && rank >= policy.max_per_function)
        })
        .map(|(_, i)| i)
        .collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
    }

    fn done(secs: i64) -> Entry {
        Entry {
            created_at: at(secs),
            terminal: true,
        }
    }

    fn open(secs: i64) -> Entry {
        Entry {
            created_at: at(secs),
            terminal: false,
        }
    }

    fn policy(age: u64, count: usize) -> Retention {
        Retention {
            max_age: Duration::from_secs(age),
            max_per_function: count,
        }
    }

    #[test]
    fn keeps_the_newest_finished_records_up_to_the_count() {
        let entries = [done(10), done(40), done(20), done(30), done(50)];
        assert_eq!(to_prune(&entries, at(60), &policy(1000, 3)), [0, 2]);
        assert!(to_prune(&entries, at(60), &policy(1000, 5)).is_empty());
        assert_eq!(
            to_prune(&entries, at(60), &policy(1000, 0)),
            [0, 1, 2, 3, 4]
        );
    }

    #[test]
    fn removes_what_is_older_than_the_age() {
        let entries = [done(0), done(100), done(200)];
        assert_eq!(to_prune(&entries, at(200), &policy(120, 10)), [0]);
        // Exactly max_age old is still kept.
        assert_eq!(to_prune(&entries, at(220), &policy(120, 10)), [0]);
        assert_eq!(to_prune(&entries, at(221), &policy(120, 10)), [0, 1]);
    }

    #[test]
    fn in_flight_records_are_never_removed_for_the_count_only_for_age() {
        let entries = [open(10), done(20), open(30), done(40), done(50)];
        // Count 2: the two newest (50, 40) stay; 30 is in flight; 20 goes; 10 is in flight.
        assert_eq!(to_prune(&entries, at(60), &policy(1000, 2)), [1]);
        // In flight but beyond the age: gone.
        assert_eq!(to_prune(&entries, at(1015), &policy(1000, 10)), [0]);
    }

    #[test]
    fn equal_times_are_decided_by_position() {
        let entries = [done(5), done(5), done(5)];
        assert_eq!(to_prune(&entries, at(6), &policy(1000, 1)), [1, 2]);
    }

    #[test]
    fn defaults_and_huge_ages() {
        let d = Retention::default();
        assert_eq!(d.max_per_function, 100);
        assert_eq!(d.max_age, Duration::from_secs(604_800));
        assert!(to_prune(&[done(0)], at(1), &policy(u64::MAX, 1)).is_empty());
    }
}
