//! The debounced per-key work queue: one slot per key, the earliest requested time wins.
//!
//! Pure data structure (no tasks, no clock of its own) so that the runner's timing can be tested
//! with a paused tokio clock.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use tokio::time::Instant;

/// Keys waiting to be reconciled, each at most once.
///
/// Invariant: `by_key` and `by_time` hold exactly the same keys; a key's entry is its earliest
/// requested time, so duplicate triggers collapse into one reconcile.
#[derive(Debug)]
pub struct Scheduler<Key> {
    by_time: BTreeMap<(Instant, u64), Key>,
    by_key: HashMap<Key, (Instant, u64)>,
    seq: u64,
}

impl<Key: Clone + Eq + Hash> Default for Scheduler<Key> {
    fn default() -> Self {
        Scheduler {
            by_time: BTreeMap::new(),
            by_key: HashMap::new(),
            seq: 0,
        }
    }
}

impl<Key: Clone + Eq + Hash> Scheduler<Key> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests a run of `key` at `at`. A key already queued keeps the earlier of the two times.
    /// Returns true when the queue changed.
    pub fn schedule(&mut self, key: Key, at: Instant) -> bool {
        if let Some(&(old, seq)) = self.by_key.get(&key) {
            if old <= at {
                return false;
            }
            self.by_time.remove(&(old, seq));
        }
        self.seq += 1;
        let slot = (at, self.seq);
        self.by_time.insert(slot, key.clone());
        self.by_key.insert(key, slot);
        true
    }

    /// Removes and returns the earliest key due at `now` for which `busy` is false. Busy keys
    /// stay queued (a running key's new trigger waits for the run to end).
    pub fn pop_due(&mut self, now: Instant, busy: impl Fn(&Key) -> bool) -> Option<Key> {
        let slot = self
            .by_time
            .iter()
            .take_while(|((at, _), _)| *at <= now)
            .find(|(_, k)| !busy(k))
            .map(|(slot, _)| *slot)?;
        let key = self.by_time.remove(&slot)?;
        self.by_key.remove(&key);
        Some(key)
    }

    /// The earliest time at which a key that is not busy becomes due.
    pub fn next_due(&self, busy: impl Fn(&Key) -> bool) -> Option<Instant> {
        self.by_time
            .iter()
            .find(|(_, k)| !busy(k))
            .map(|((at, _), _)| *at)
    }

    /// True when `key` is queued.
    pub fn contains(&self, key: &Key) -> bool {
        self.by_key.contains_key(key)
    }

    /// Number of queued keys.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn duplicates_collapse_to_the_earliest() {
        let mut s = Scheduler::new();
        let t = Instant::now();
        assert!(s.schedule("a", t + Duration::from_secs(5)));
        assert!(s.schedule("a", t + Duration::from_secs(1)));
        assert!(!s.schedule("a", t + Duration::from_secs(3)));
        assert_eq!(s.len(), 1);
        assert_eq!(s.next_due(|_| false), Some(t + Duration::from_secs(1)));
        assert_eq!(s.pop_due(t, |_| false), None);
        assert_eq!(s.pop_due(t + Duration::from_secs(1), |_| false), Some("a"));
        assert!(s.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn busy_keys_are_skipped_not_dropped() {
        let mut s = Scheduler::new();
        let t = Instant::now();
        s.schedule("a", t);
        s.schedule("b", t + Duration::from_millis(1));
        let now = t + Duration::from_secs(1);
        assert_eq!(s.pop_due(now, |k| *k == "a"), Some("b"));
        assert_eq!(s.pop_due(now, |k| *k == "a"), None);
        assert!(s.contains(&"a"));
        assert_eq!(s.next_due(|k| *k == "a"), None);
        assert_eq!(s.pop_due(now, |_| false), Some("a"));
    }
}
