//! One function's invocations over the last hour, as this gateway served them: 10-second
//! buckets of counts by status code and a latency histogram, from which the console draws
//! invocations per second by code and latency p50/p99.
//!
//! Only buckets with calls are stored, at most [`BUCKETS`] (one hour); each is
//! [`BUCKET_BYTES`] bytes, so a series is at most ~54 KB whatever the traffic.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// Width of a bucket.
pub const BUCKET_SECS: u64 = 10;
/// Buckets kept: one hour.
pub const BUCKETS: usize = 360;
/// Status codes counted on their own; anything else counts as `other`.
const CODES: [u16; 10] = [200, 400, 404, 413, 429, 500, 502, 503, 504, 401];
/// Latency bins: bin 0 holds calls under [`FIRST_EDGE_MS`], bin i those under
/// `FIRST_EDGE_MS × 2^i`; the last bin holds everything longer (its upper edge, ~35 min, is
/// beyond the longest function timeout).
const BINS: usize = 24;
const FIRST_EDGE_MS: f64 = 0.25;

#[derive(Debug, Clone)]
struct Bucket {
    /// Unix time / [`BUCKET_SECS`].
    index: u64,
    /// Per [`CODES`] entry, then `other`.
    codes: [u32; CODES.len() + 1],
    latency: [u32; BINS],
}

/// Memory of one stored bucket.
pub const BUCKET_BYTES: usize = std::mem::size_of::<Bucket>();

fn bin_of(ms: f64) -> usize {
    if ms < FIRST_EDGE_MS {
        return 0;
    }
    // ms in [edge(i-1), edge(i)) → i, with edge(i) = FIRST_EDGE_MS × 2^i.
    let i = (ms / FIRST_EDGE_MS).log2().floor() as usize + 1;
    i.min(BINS - 1)
}

fn upper_edge(bin: usize) -> f64 {
    FIRST_EDGE_MS * 2f64.powi(bin as i32)
}

/// The `q` quantile (0–1) of a histogram, in ms: the bin holding that rank, interpolated
/// geometrically inside it (linearly in the first bin, which starts at 0). `None` when empty.
fn quantile(latency: &[u32; BINS], q: f64) -> Option<f64> {
    let total: u64 = latency.iter().map(|&c| u64::from(c)).sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).max(1.0);
    let mut seen = 0.0;
    for (i, &c) in latency.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let next = seen + f64::from(c);
        if next >= rank {
            let frac = (rank - seen) / f64::from(c);
            let hi = upper_edge(i);
            return Some(if i == 0 {
                hi * frac
            } else {
                let lo = upper_edge(i - 1);
                lo * (hi / lo).powf(frac)
            });
        }
        seen = next;
    }
    Some(upper_edge(BINS - 1))
}

/// One bucket as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// Unix time (s) the bucket starts at.
    pub start: u64,
    /// Calls by status code (`other` for codes not counted on their own); zero codes left out.
    pub codes: std::collections::BTreeMap<String, u32>,
    pub count: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// The invocations of one function (see the module docs for its bound).
#[derive(Debug, Default)]
pub struct Series {
    buckets: Mutex<VecDeque<Bucket>>,
}

impl Series {
    /// Counts one call answered with `code` after `elapsed`, at unix time `now` (s).
    pub fn record(&self, now: u64, code: u16, elapsed: Duration) {
        let index = now / BUCKET_SECS;
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if b.back().is_none_or(|last| last.index < index) {
            b.push_back(Bucket {
                index,
                codes: [0; CODES.len() + 1],
                latency: [0; BINS],
            });
            while b.len() > BUCKETS
                || b.front()
                    .is_some_and(|f| f.index + (BUCKETS as u64) <= index)
            {
                b.pop_front();
            }
        }
        // The clock stepped back: count it in the newest bucket rather than lose it.
        let Some(last) = b.back_mut() else { return };
        let slot = CODES.iter().position(|&c| c == code).unwrap_or(CODES.len());
        last.codes[slot] = last.codes[slot].saturating_add(1);
        let bin = bin_of(elapsed.as_secs_f64() * 1000.0);
        last.latency[bin] = last.latency[bin].saturating_add(1);
    }

    /// The buckets of the hour before unix time `now` that had calls, oldest first.
    pub fn points(&self, now: u64) -> Vec<Point> {
        let index = now / BUCKET_SECS;
        let b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        b.iter()
            .filter(|k| k.index + (BUCKETS as u64) > index)
            .map(|k| Point {
                start: k.index * BUCKET_SECS,
                codes: k
                    .codes
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(|(i, n)| {
                        let name = CODES.get(i).map_or("other".to_string(), u16::to_string);
                        (name, *n)
                    })
                    .collect(),
                count: k.codes.iter().map(|&n| u64::from(n)).sum(),
                p50_ms: quantile(&k.latency, 0.5),
                p99_ms: quantile(&k.latency, 0.99),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn bins_double() {
        assert_eq!(bin_of(0.1), 0);
        assert_eq!(bin_of(0.25), 1);
        assert_eq!(bin_of(0.49), 1);
        assert_eq!(bin_of(0.5), 2);
        assert_eq!(bin_of(1000.0), 12); // [512, 1024) ms
        assert!(upper_edge(11) <= 1000.0 && 1000.0 < upper_edge(12));
        assert_eq!(bin_of(1e9), BINS - 1);
    }

    #[test]
    fn quantiles_fall_in_the_right_bin() {
        let mut h = [0u32; BINS];
        assert_eq!(quantile(&h, 0.5), None);
        // 98 calls of ~3 ms, 2 of ~700 ms.
        h[bin_of(3.0)] = 98;
        h[bin_of(700.0)] = 2;
        let p50 = quantile(&h, 0.5).unwrap();
        assert!((2.0..=4.0).contains(&p50), "{p50}");
        let p99 = quantile(&h, 0.99).unwrap();
        assert!((512.0..=1024.0).contains(&p99), "{p99}");
        // Monotonic in q.
        assert!(quantile(&h, 0.9).unwrap() <= p99);
    }

    #[test]
    fn buckets_by_code_and_an_hour_kept() {
        let s = Series::default();
        let t0 = 1_700_000_000;
        s.record(t0, 200, 3 * MS);
        s.record(t0 + 1, 200, 5 * MS);
        s.record(t0 + 2, 502, 40 * MS);
        s.record(t0 + 3, 418, MS);
        s.record(t0 + 25, 200, MS);
        let p = s.points(t0 + 30);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].start, t0 / 10 * 10);
        assert_eq!(p[0].count, 4);
        assert_eq!(p[0].codes.get("200"), Some(&2));
        assert_eq!(p[0].codes.get("502"), Some(&1));
        assert_eq!(p[0].codes.get("other"), Some(&1));
        assert_eq!(p[1].count, 1);
        // An hour later the first buckets are out of the window, and gone once a call lands.
        assert_eq!(s.points(t0 + 3600 + 20).len(), 0);
        s.record(t0 + 3600 + 20, 200, MS);
        assert_eq!(s.buckets.lock().unwrap().len(), 1);
    }

    #[test]
    fn memory_is_bounded_under_constant_traffic() {
        let s = Series::default();
        let t0 = 1_700_000_000;
        for i in 0..(2 * BUCKETS as u64) {
            s.record(t0 + i * BUCKET_SECS, 200, MS);
        }
        assert_eq!(s.buckets.lock().unwrap().len(), BUCKETS);
        const { assert!(BUCKETS * BUCKET_BYTES <= 60_000) };
    }
}
