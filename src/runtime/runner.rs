//! The runner: takes keys from the [`Scheduler`] and runs their reconciles with bounded
//! concurrency, never two runs of one key at a time, applying requeues, per-key exponential
//! backoff on failures (reset on success) and a periodic resync of every key.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::action::{Action, ActionKind};
use super::scheduler::Scheduler;

/// How a run of one key ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The reconcile succeeded: the key's backoff resets, then `Action` applies.
    Success(Action),
    /// The reconcile failed: `Action` (from the error policy) applies; `Action::backoff()`
    /// means the key's next exponential delay.
    Failure(Action),
}

/// Tuning of a runner.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Reconciles running at once (at least 1).
    pub concurrency: usize,
    /// Delay between a trigger and the run it causes; triggers within it collapse.
    pub debounce: Duration,
    /// First retry delay after a failure.
    pub backoff_base: Duration,
    /// Largest retry delay.
    pub backoff_max: Duration,
    /// Random extra share of each backoff delay (0.0–1.0), so failing keys spread out.
    pub backoff_jitter: f64,
    /// Every key is reconciled at least this often; `None` disables resync.
    pub resync: Option<Duration>,
    /// How long a graceful stop waits for in-flight runs before abandoning them.
    pub drain_timeout: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            concurrency: 8,
            debounce: Duration::ZERO,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(300),
            backoff_jitter: 0.2,
            resync: Some(Duration::from_secs(300)),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl RunnerConfig {
    /// The delay after the `failures`-th consecutive failure (1-based), before jitter.
    pub fn backoff_delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(31);
        let d = self.backoff_base.saturating_mul(1u32 << exp);
        d.min(self.backoff_max)
    }

    fn jittered(&self, d: Duration) -> Duration {
        if self.backoff_jitter <= 0.0 {
            return d;
        }
        let extra: f64 = rand::random::<f64>() * self.backoff_jitter.min(1.0);
        d.mul_f64(1.0 + extra)
    }
}

/// Runs `work` for keys from `triggers` (and for every key of `resync_keys` each resync period)
/// until `stop` is cancelled, then waits (up to `drain_timeout`) for runs in flight.
///
/// Invariants: at most `concurrency` runs at once; never two runs of one key at once; a trigger
/// that arrives during a run of its key causes exactly one more run after it.
pub async fn run<Key, W, Fut, R>(
    mut triggers: mpsc::UnboundedReceiver<Key>,
    work: W,
    resync_keys: R,
    cfg: RunnerConfig,
    queue_depth: Option<Gauge>,
    stop: CancellationToken,
) where
    Key: Clone + Eq + Hash + Send + 'static,
    W: Fn(Key) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
    R: Fn() -> Vec<Key>,
{
    let concurrency = cfg.concurrency.max(1);
    let mut queue: Scheduler<Key> = Scheduler::new();
    let mut running: HashSet<Key> = HashSet::new();
    let mut tasks: JoinSet<(Key, Outcome)> = JoinSet::new();
    let mut failures: HashMap<Key, u32> = HashMap::new();
    let mut next_resync = cfg.resync.map(|p| Instant::now() + p);
    let mut triggers_open = true;
    loop {
        let now = Instant::now();
        while tasks.len() < concurrency {
            let Some(key) = queue.pop_due(now, |k| running.contains(k)) else {
                break;
            };
            running.insert(key.clone());
            let fut = AssertUnwindSafe(work(key.clone())).catch_unwind();
            tasks.spawn(async move {
                // A panicking reconcile is a failure of its key, never of the controller.
                let outcome = fut.await.unwrap_or(Outcome::Failure(Action::backoff()));
                (key, outcome)
            });
        }
        if let Some(g) = &queue_depth {
            g.set(queue.len() as i64);
        }
        let wake = if tasks.len() < concurrency {
            queue.next_due(|k| running.contains(k))
        } else {
            None
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                // Tasks catch panics themselves; a join error means the task was aborted.
                let Ok((key, outcome)) = done else { continue };
                running.remove(&key);
                let now = Instant::now();
                let action = match outcome {
                    Outcome::Success(a) => {
                        failures.remove(&key);
                        a
                    }
                    Outcome::Failure(a) => {
                        let n = failures.entry(key.clone()).or_insert(0);
                        *n = n.saturating_add(1);
                        if a.0 == ActionKind::Backoff {
                            Action::requeue(cfg.jittered(cfg.backoff_delay(*n)))
                        } else {
                            a
                        }
                    }
                };
                match action.0 {
                    ActionKind::Requeue(d) => {
                        queue.schedule(key, now + d);
                    }
                    ActionKind::Backoff => {
                        let n = failures.get(&key).copied().unwrap_or(1);
                        queue.schedule(key, now + cfg.jittered(cfg.backoff_delay(n)));
                    }
                    ActionKind::AwaitChange => {}
                }
            }
            k = triggers.recv(), if triggers_open => match k {
                Some(k) => {
                    queue.schedule(k, Instant::now() + cfg.debounce);
                }
                None => triggers_open = false,
            },
            _ = sleep_until_opt(wake), if wake.is_some() => {}
            _ = sleep_until_opt(next_resync), if next_resync.is_some() => {
                let now = Instant::now();
                for k in resync_keys() {
                    queue.schedule(k, now);
                }
                next_resync = cfg.resync.map(|p| now + p);
            }
        }
    }
    // Graceful stop: start nothing new, let runs in flight finish (bounded).
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(cfg.drain_timeout, drain)
        .await
        .is_err()
    {
        tracing::warn!(
            left = tasks.len(),
            "reconciles still running after the drain timeout; abandoning them"
        );
        tasks.abort_all();
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Log {
        starts: Vec<(&'static str, Instant)>,
        active: HashSet<&'static str>,
        max_active: usize,
        overlap: bool,
    }

    fn cfg() -> RunnerConfig {
        RunnerConfig {
            concurrency: 2,
            debounce: Duration::from_millis(10),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            backoff_jitter: 0.0,
            resync: None,
            drain_timeout: Duration::from_secs(5),
        }
    }

    /// Starts a runner whose work takes `dur` and answers with `answer(key, run number)`.
    fn start(
        cfg: RunnerConfig,
        dur: Duration,
        answer: impl Fn(&'static str, usize) -> Outcome + Send + Sync + 'static,
    ) -> (
        mpsc::UnboundedSender<&'static str>,
        Arc<Mutex<Log>>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(Log::default()));
        let stop = CancellationToken::new();
        let answer = Arc::new(answer);
        let l = log.clone();
        let work = move |k: &'static str| {
            let l = l.clone();
            let answer = answer.clone();
            async move {
                let n = {
                    let mut g = l.lock().unwrap();
                    g.starts.push((k, Instant::now()));
                    if !g.active.insert(k) {
                        g.overlap = true;
                    }
                    g.max_active = g.max_active.max(g.active.len());
                    g.starts.iter().filter(|(x, _)| *x == k).count()
                };
                tokio::time::sleep(dur).await;
                l.lock().unwrap().active.remove(k);
                answer(k, n)
            }
        };
        let h = tokio::spawn(run(rx, work, || vec!["a", "b"], cfg, None, stop.clone()));
        (tx, log, stop, h)
    }

    fn starts_of(log: &Arc<Mutex<Log>>, k: &str) -> Vec<Instant> {
        let g = log.lock().unwrap();
        g.starts
            .iter()
            .filter(|(x, _)| *x == k)
            .map(|(_, t)| *t)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn duplicate_triggers_collapse() {
        let (tx, log, stop, h) = start(cfg(), Duration::from_millis(5), |_, _| {
            Outcome::Success(Action::await_change())
        });
        for _ in 0..100 {
            tx.send("a").unwrap();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(starts_of(&log, "a").len(), 1);
        stop.cancel();
        h.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn one_run_per_key_at_a_time_and_bounded_concurrency() {
        let (tx, log, stop, h) = start(cfg(), Duration::from_millis(100), |_, _| {
            Outcome::Success(Action::await_change())
        });
        let t0 = Instant::now();
        tx.send("a").unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A trigger during the run of "a" waits for it, then causes exactly one more run.
        tx.send("a").unwrap();
        tx.send("a").unwrap();
        for k in ["b", "c", "d"] {
            tx.send(k).unwrap();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        {
            let g = log.lock().unwrap();
            assert!(!g.overlap, "two runs of one key overlapped");
            assert_eq!(g.max_active, 2, "concurrency bound");
        }
        let a = starts_of(&log, "a");
        assert_eq!(a.len(), 2);
        assert!(a[1] - t0 >= Duration::from_millis(110), "{:?}", a[1] - t0);
        stop.cancel();
        h.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_grows_and_resets_on_success() {
        // Fails 4 times, then succeeds once with a requeue, then fails again.
        let (tx, log, stop, h) = start(cfg(), Duration::ZERO, |_, n| match n {
            1..=4 => Outcome::Failure(Action::backoff()),
            5 => Outcome::Success(Action::requeue(Duration::from_secs(1))),
            _ => Outcome::Failure(Action::backoff()),
        });
        tx.send("a").unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let a = starts_of(&log, "a");
        assert!(a.len() >= 7, "{}", a.len());
        let gaps: Vec<u128> = a.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
        assert_eq!(&gaps[..6], &[100, 200, 400, 800, 1000, 100], "{gaps:?}");
        stop.cancel();
        h.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_is_capped_and_jittered_within_bounds() {
        let mut c = cfg();
        assert_eq!(c.backoff_delay(1), Duration::from_millis(100));
        assert_eq!(c.backoff_delay(3), Duration::from_millis(400));
        assert_eq!(c.backoff_delay(40), Duration::from_secs(2));
        c.backoff_jitter = 0.5;
        for _ in 0..100 {
            let d = c.jittered(Duration::from_millis(100));
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(150));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn resync_runs_every_key_periodically() {
        let mut c = cfg();
        c.resync = Some(Duration::from_secs(10));
        let (_tx, log, stop, h) = start(c, Duration::ZERO, |_, _| {
            Outcome::Success(Action::await_change())
        });
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert_eq!(starts_of(&log, "a").len(), 2);
        assert_eq!(starts_of(&log, "b").len(), 2);
        stop.cancel();
        h.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn stop_waits_for_runs_in_flight() {
        let (tx, log, stop, h) = start(cfg(), Duration::from_secs(3), |_, _| {
            Outcome::Success(Action::await_change())
        });
        tx.send("a").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.cancel();
        h.await.unwrap();
        assert!(log.lock().unwrap().active.is_empty(), "run was cut short");
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_reconcile_is_retried_with_backoff() {
        let (tx, log, stop, h) = start(cfg(), Duration::ZERO, |_, n| {
            if n == 1 {
                panic!("boom");
            }
            Outcome::Success(Action::await_change())
        });
        tx.send("a").unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(starts_of(&log, "a").len(), 2);
        stop.cancel();
        h.await.unwrap();
    }
}
