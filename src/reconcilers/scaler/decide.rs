//! The function autoscaler's decision for one function, a pure function of what it saw (as
//! Knative's KPA): replicas so that each serves `concurrency × targetUtilization` at once,
//! from the demand averaged over the stable window, or over the panic window once a burst
//! reaches `panicThreshold` × the ready capacity — then it does not scale down until a stable
//! window passed without a burst. Demand held at zero activates at once; a function idle for
//! its zero window goes to zero.
//!
//! One departure from the KPA, for speed: while callers wait for a slot of a function whose
//! replicas are all busy, the demand of that moment counts as the panic demand when it is
//! higher than the panic average. The average alone would take most of the panic window to
//! catch up with a step (a 1 → 10 step in flight asked for enough replicas only after 4 s),
//! and capacity could only follow that plus a task start; waiting callers are proof enough
//! that the demand is real. The panic threshold still applies, so a queue of a few callers
//! does not panic a function sized near its target.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::api::FunctionSpec;

/// `status.autoscaler.reason` values.
pub mod reason {
    /// From zero to one for held requests or queued executions.
    pub const ACTIVATE: &str = "Activate";
    /// Up from the stable average.
    pub const SCALE_UP: &str = "ScaleUp";
    /// Up from the panic average (a burst).
    pub const PANIC: &str = "Panic";
    /// Down from the stable average.
    pub const SCALE_DOWN: &str = "ScaleDown";
    /// Idle for the zero window.
    pub const SCALE_TO_ZERO: &str = "ScaleToZero";
    /// Unchanged.
    pub const HOLD: &str = "Hold";
}

/// The spec's knobs, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Knobs {
    /// Demand one replica is sized for (> 0).
    pub target: f64,
    pub stable: Duration,
    pub panic: Duration,
    pub threshold: f64,
    pub min: u32,
    pub max: u32,
    /// Idle time after which it goes to zero; `None`: never below `min`.
    pub zero_after: Option<Duration>,
}

impl Knobs {
    /// From a function's spec: with `minReplicas: 0` and no `scaleToZeroAfterSeconds`, zero
    /// after the stable window.
    pub fn of(spec: &FunctionSpec) -> Knobs {
        let a = &spec.autoscaling;
        let stable = Duration::from_secs(u64::from(a.stable_window_seconds.max(1)));
        let zero_after = match spec.scale_to_zero_after_seconds {
            Some(s) => Some(Duration::from_secs(u64::from(s))),
            None if spec.min_replicas == 0 => Some(stable),
            None => None,
        };
        Knobs {
            target: (f64::from(spec.concurrency.max(1)) * a.target_utilization).max(0.01),
            stable,
            panic: Duration::from_secs(u64::from(a.panic_window_seconds.max(1))).min(stable),
            threshold: a.panic_threshold.max(1.0),
            min: spec.min_replicas,
            max: spec.max_replicas.max(1),
            zero_after,
        }
    }
}

/// What the autoscaler remembers of one function (in memory: a new leader starts afresh and
/// does not scale down before it has seen a whole stable window).
#[derive(Debug, Clone)]
pub struct Memory {
    /// Summed demand over every instance, one sample per tick, oldest first.
    samples: VecDeque<(Instant, f64)>,
    /// The last time demand (a request, an execution, one in flight or held) was seen.
    pub last_active: Instant,
    /// When the last burst over the threshold was seen; `Some` while panicking.
    panic_since: Option<Instant>,
    /// When this memory started (leader start or first sight of the function).
    started: Instant,
    /// The replicas and panic flag this autoscaler last wrote (its watch of the status may
    /// lag behind its own write).
    pub written: Option<(u32, bool)>,
}

impl Memory {
    /// A memory that counts the function active now.
    pub fn new(now: Instant) -> Memory {
        Memory {
            samples: VecDeque::new(),
            last_active: now,
            panic_since: None,
            started: now,
            written: None,
        }
    }

    /// Records one tick's summed demand, and whether anything arrived or waits.
    pub fn observe(&mut self, now: Instant, demand: f64, active: bool, window: Duration) {
        self.samples.push_back((now, demand.max(0.0)));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > window)
        {
            self.samples.pop_front();
        }
        if active || demand > 0.0 {
            self.last_active = now;
        }
    }

    fn average(&self, now: Instant, window: Duration) -> f64 {
        let (sum, n) = self
            .samples
            .iter()
            .rev()
            .take_while(|(t, _)| now.duration_since(*t) <= window)
            .fold((0.0, 0u32), |(s, n), (_, d)| (s + d, n + 1));
        if n == 0 { 0.0 } else { sum / f64::from(n) }
    }
}

/// One decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub desired: u32,
    pub reason: &'static str,
    pub message: String,
    pub panic: bool,
    pub stable: f64,
    pub panic_avg: f64,
}

/// What the autoscaler sees of a function besides its samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    /// Replicas it has been given (asked of Swarm).
    pub current: u32,
    /// Of them, ready.
    pub ready: u32,
    /// Requests or executions held for a first replica or waiting for a slot right now.
    pub queued: u64,
    /// Demand of this moment (in flight, waiting, held), summed over the instances.
    pub demand_now: f64,
}

/// Decides the replicas of a function from its samples in `mem` and what is `seen` now.
pub fn decide(mem: &mut Memory, k: &Knobs, seen: &Seen, now: Instant) -> Decision {
    let Seen {
        current,
        ready,
        queued,
        ..
    } = *seen;
    let stable = mem.average(now, k.stable);
    let panic_avg = mem.average(now, k.panic);
    // Callers waiting while replicas are ready and busy: the demand now, if the average lags.
    let burst = (queued > 0 && ready > 0 && seen.demand_now > panic_avg).then_some(seen.demand_now);
    let want_stable = (stable / k.target).ceil() as u32;
    let want_panic = (burst.unwrap_or(panic_avg) / k.target).ceil() as u32;
    // A burst against the capacity that is ready (at least one replica's worth).
    let over = f64::from(want_panic) >= k.threshold * f64::from(ready.max(1)) && want_panic > 0;
    if over {
        mem.panic_since = Some(now);
    } else if mem
        .panic_since
        .is_some_and(|t| now.duration_since(t) >= k.stable)
    {
        mem.panic_since = None;
    }
    let panicking = mem.panic_since.is_some();
    let mut desired = if panicking {
        want_panic.max(current)
    } else {
        want_stable
    };
    // Not below what the spec keeps, nor above its ceiling (the ceiling wins: `clamp` would
    // panic on a hand-edited min > max).
    desired = desired.max(k.min).min(k.max);
    let idle_for = now.duration_since(mem.last_active);
    let zero_due = k.zero_after.is_some_and(|w| idle_for >= w);
    if queued > 0 {
        desired = desired.max(1);
    } else if zero_due {
        desired = 0;
    } else if desired == 0 && current > 0 {
        // Within the zero window one replica stays.
        desired = 1;
    }
    // A new leader has not seen a stable window: it scales up, never down, until it has.
    if desired < current && desired > 0 && now.duration_since(mem.started) < k.stable {
        desired = current;
    }
    let reason = match desired.cmp(&current) {
        std::cmp::Ordering::Greater if current == 0 => reason::ACTIVATE,
        std::cmp::Ordering::Greater if panicking => reason::PANIC,
        std::cmp::Ordering::Greater => reason::SCALE_UP,
        std::cmp::Ordering::Less if desired == 0 => reason::SCALE_TO_ZERO,
        std::cmp::Ordering::Less => reason::SCALE_DOWN,
        std::cmp::Ordering::Equal => reason::HOLD,
    };
    let message = match reason {
        reason::ACTIVATE => format!("{queued} request(s) waiting for a replica"),
        reason::SCALE_TO_ZERO => format!("no request for {} s", idle_for.as_secs()),
        _ => format!(
            "demand {}{panic_avg:.1} over {} s, {stable:.1} over {} s, at {:.1} per replica{}",
            burst.map_or_else(String::new, |b| format!(
                "{b:.0} now with callers waiting, "
            )),
            k.panic.as_secs(),
            k.stable.as_secs(),
            k.target,
            if panicking { " (panic)" } else { "" }
        ),
    };
    Decision {
        desired,
        reason,
        message,
        panic: panicking,
        stable,
        panic_avg,
    }
}

#[cfg(test)]
mod tests;
