//! One node pool's last hour as this gateway saw it through its watch: the node counts at
//! every change (nodes, ready nodes, what the spec and the autoscaler ask for) and marks for
//! the autoscaler's decisions and for edits of `spec.replicas`.
//!
//! Bounded: at most [`MAX_SAMPLES`] samples and [`MAX_MARKS`] marks of at most
//! [`MAX_REASON`] bytes each, and nothing older than [`WINDOW`] but the one sample that gives
//! the counts at the window's start.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::api::{NodePool, NodePoolSpec, Object};

/// How far back a timeline goes.
pub const WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(1);
/// Samples kept per pool (a change every 5 s on average over the hour).
pub const MAX_SAMPLES: usize = 720;
/// Marks kept per pool.
pub const MAX_MARKS: usize = 100;
/// Longest reason kept in a mark (longer ones are cut with `…`).
pub const MAX_REASON: usize = 240;

/// The counts of a pool at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// `spec.replicas`.
    pub spec_replicas: u32,
    /// Nodes the pool has (`status.replicas`).
    pub replicas: u32,
    /// Nodes Ready (`status.readyReplicas`).
    pub ready_replicas: u32,
    /// The autoscaler's wanted count, when it has one.
    pub desired_replicas: Option<u32>,
}

/// Counts from a given time on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub time: DateTime<Utc>,
    #[serde(flatten)]
    pub counts: Counts,
}

/// Something that explains a change of the node count.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mark {
    pub time: DateTime<Utc>,
    /// `Autoscaler` (a decision in `status.autoscaler`) or `Spec` (an edit of `spec.replicas`).
    pub source: &'static str,
    /// The decision (`ScaleUp`, `ScaleDown`, `Blocked`, …), or `Replicas` for a spec edit.
    pub decision: String,
    pub reason: String,
}

/// The timeline of one pool.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Timeline {
    pub samples: VecDeque<Sample>,
    pub marks: VecDeque<Mark>,
    /// The last autoscaler decision time seen (a new one is a new mark).
    #[serde(skip)]
    last_decision: Option<DateTime<Utc>>,
}

fn counts(p: &NodePool) -> Counts {
    let st = p.status.clone().unwrap_or_default();
    Counts {
        spec_replicas: p.spec.replicas,
        replicas: st.replicas,
        ready_replicas: st.ready_replicas,
        desired_replicas: st.desired_replicas,
    }
}

fn cut(s: &str) -> String {
    if s.len() <= MAX_REASON {
        return s.to_string();
    }
    let mut end = MAX_REASON;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl Timeline {
    /// Takes the pool's state seen at `now`: a sample when a count changed, a mark for a new
    /// autoscaler decision or a changed `spec.replicas`; then drops what fell out of the window.
    pub fn observe(&mut self, pool: &Object<NodePoolSpec>, now: DateTime<Utc>) {
        let c = counts(pool);
        let prev = self.samples.back().map(|s| s.counts);
        if let Some(p) = prev
            && p.spec_replicas != c.spec_replicas
        {
            self.mark(Mark {
                time: now,
                source: "Spec",
                decision: "Replicas".into(),
                reason: format!("spec.replicas {} → {}", p.spec_replicas, c.spec_replicas),
            });
        }
        if let Some(a) = pool.status.as_ref().and_then(|s| s.autoscaler.as_ref())
            && let Some(t) = a.decision_time
            && self.last_decision.is_none_or(|l| l < t)
        {
            // The first decision seen is marked too when it falls in the window (it may be
            // why the pool has the size it has).
            self.last_decision = Some(t);
            if now - t <= WINDOW {
                self.mark(Mark {
                    time: t,
                    source: "Autoscaler",
                    decision: format!("{:?}", a.decision),
                    reason: cut(&a.reason),
                });
            }
        }
        if prev != Some(c) {
            self.samples.push_back(Sample {
                time: now,
                counts: c,
            });
        }
        self.prune(now);
    }

    fn mark(&mut self, m: Mark) {
        self.marks.push_back(m);
        while self.marks.len() > MAX_MARKS {
            self.marks.pop_front();
        }
    }

    /// Drops samples and marks older than the window, keeping the last sample before it (the
    /// counts at the window's start), and samples beyond [`MAX_SAMPLES`].
    pub fn prune(&mut self, now: DateTime<Utc>) {
        let start = now - WINDOW;
        while self.samples.len() > MAX_SAMPLES
            || (self.samples.len() >= 2 && self.samples[1].time <= start)
        {
            self.samples.pop_front();
        }
        while self.marks.front().is_some_and(|m| m.time < start) {
            self.marks.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NodePoolStatus;
    use crate::api::nodepool::{AutoscalerDecision, AutoscalerStatus};

    fn pool(spec_replicas: u32, replicas: u32, ready: u32) -> NodePool {
        let spec: NodePoolSpec =
            serde_saphyr::from_str("image: {glanceImage: b}\nflavor: m1.small\nmaxReplicas: 9\n")
                .expect("spec");
        let mut p = Object::new("default", "workers", spec);
        p.spec.replicas = spec_replicas;
        p.status = Some(NodePoolStatus {
            replicas,
            ready_replicas: ready,
            ..Default::default()
        });
        p
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("time")
    }

    #[test]
    fn samples_on_change_and_marks_for_spec_edits() {
        let mut tl = Timeline::default();
        tl.observe(&pool(2, 2, 2), t(0));
        tl.observe(&pool(2, 2, 2), t(5));
        assert_eq!(tl.samples.len(), 1, "no change, no sample");
        tl.observe(&pool(3, 2, 2), t(10));
        tl.observe(&pool(3, 3, 2), t(12));
        tl.observe(&pool(3, 3, 3), t(40));
        let counts: Vec<(u32, u32, u32)> = tl
            .samples
            .iter()
            .map(|s| {
                (
                    s.counts.spec_replicas,
                    s.counts.replicas,
                    s.counts.ready_replicas,
                )
            })
            .collect();
        assert_eq!(counts, [(2, 2, 2), (3, 2, 2), (3, 3, 2), (3, 3, 3)]);
        assert_eq!(tl.marks.len(), 1);
        assert_eq!(tl.marks[0].source, "Spec");
        assert_eq!(tl.marks[0].reason, "spec.replicas 2 → 3");
        assert_eq!(tl.marks[0].time, t(10));
    }

    #[test]
    fn autoscaler_decisions_are_marked_once() {
        let mut tl = Timeline::default();
        let mut p = pool(0, 1, 1);
        let decided = |d: AutoscalerDecision, at: i64, why: &str| AutoscalerStatus {
            decision: d,
            reason: why.into(),
            decision_time: Some(t(at)),
            ..Default::default()
        };
        if let Some(s) = p.status.as_mut() {
            s.autoscaler = Some(decided(AutoscalerDecision::ScaleUp, 1, "scale up 1 → 2"));
            s.desired_replicas = Some(2);
        }
        tl.observe(&p, t(2));
        tl.observe(&p, t(3));
        assert_eq!(tl.marks.len(), 1);
        assert_eq!(tl.marks[0].decision, "ScaleUp");
        assert_eq!(tl.marks[0].time, t(1));
        if let Some(s) = p.status.as_mut() {
            s.autoscaler = Some(decided(
                AutoscalerDecision::ScaleDown,
                60,
                &"x".repeat(1000),
            ));
        }
        tl.observe(&p, t(61));
        assert_eq!(tl.marks.len(), 2);
        assert!(tl.marks[1].reason.len() <= MAX_REASON + '…'.len_utf8());
        // A decision older than the window is not news.
        let mut fresh = Timeline::default();
        if let Some(s) = p.status.as_mut() {
            s.autoscaler = Some(decided(AutoscalerDecision::ScaleUp, 0, "old"));
        }
        fresh.observe(&p, t(2 * 3600));
        assert!(fresh.marks.is_empty());
    }

    #[test]
    fn the_window_keeps_its_starting_counts_and_bounds() {
        let mut tl = Timeline::default();
        tl.observe(&pool(1, 1, 1), t(0));
        tl.observe(&pool(2, 1, 1), t(100));
        tl.observe(&pool(2, 2, 2), t(4000));
        // The sample of t=100 gives the counts at the window's start (t=400): kept.
        assert_eq!(tl.samples.len(), 2);
        assert_eq!(tl.samples[0].time, t(100));
        assert!(tl.marks.is_empty(), "the spec edit at t=100 fell out");
        for i in 0..(2 * MAX_SAMPLES as i64) {
            tl.observe(&pool(2, (i % 3) as u32, 0), t(4000 + i));
        }
        assert!(tl.samples.len() <= MAX_SAMPLES);
    }
}
