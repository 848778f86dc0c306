//! The burst phase of `lambda bench coldstart`: how fast capacity follows a 10× step of load.
//!
//! A function with one replica of concurrency 2 serves a steady load of one call in flight
//! (under its 0.7 target, so the autoscaler keeps one replica); then the load steps to ten calls
//! in flight (closed loop: every caller sends its next call as soon as the last answered). From
//! the step on, the bench polls the function's status and records when the autoscaler asked for
//! enough replicas (DECISION) and when the ready replicas' concurrency covers the demand
//! (CAPACITY: the gateway routes to ready replicas only, so this is when no call waits for a
//! slot any more; target ≤ 2 s). Beside it, in the same run, the floor of that path: what Swarm
//! itself took for the tasks the step added (created → running, healthy, from its own
//! timestamps). Every call must answer 200.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::api::function::Runtime;
use crate::api::{Function, FunctionSpec};

use super::{ColdStartBench, ColdStartError};
use crate::bench::stats::{ms, percentile};

/// Calls in flight before the step.
const BASE: usize = 1;
/// Calls in flight after it (a 10× step).
const STEP: usize = 10 * BASE;
/// The function's `concurrency`.
const CONCURRENCY: u32 = 2;
/// How long the steady load runs before the step.
const STEADY: Duration = Duration::from_secs(3);
/// Give up on a round whose capacity has not caught up by then.
const LIMIT: Duration = Duration::from_secs(60);

/// Replicas whose concurrency covers `demand` calls in flight (capacity ≥ demand).
pub fn replicas_for(demand: usize, concurrency: u32) -> u32 {
    let c = concurrency.max(1) as usize;
    demand.div_ceil(c) as u32
}

/// A function that takes 200 ms per call, so the calls in flight are what the callers send.
fn code(rt: Runtime) -> &'static str {
    match rt {
        Runtime::Python3 => {
            "import time\ndef handler(event, context):\n    time.sleep(0.2)\n    return {'ok': True}\n"
        }
        Runtime::Node => {
            "exports.handler = async () => { await new Promise(r => setTimeout(r, 200)); return {ok: true}; };\n"
        }
        Runtime::Shell | Runtime::Image => "cat >/dev/null; sleep 0.2; echo '{\"ok\": true}'\n",
    }
}

fn spec(rt: Runtime) -> Result<FunctionSpec, ColdStartError> {
    // The runtimes' default handlers (`main.handler`, `index.handler`) are what `code` defines.
    let mut spec: FunctionSpec = serde_saphyr::from_str(&format!(
        "runtime: {}\nminReplicas: 1\nmaxReplicas: 10\nconcurrency: {CONCURRENCY}\n\
         timeoutSeconds: 60\nresources:\n  memoryMb: 64\n  cpuMillis: 100\n",
        rt.as_str()
    ))
    .map_err(|e| ColdStartError::Call {
        function: String::new(),
        message: format!("bench burst spec: {e}"),
    })?;
    spec.code = Some(crate::api::function::Code {
        inline: Some(code(rt).to_string()),
        file: None,
    });
    Ok(spec)
}

/// One round's figures.
pub struct Burst {
    /// Step → `desiredReplicas` covering the demand.
    pub decision: Duration,
    /// Step → ready replicas × concurrency ≥ demand.
    pub capacity: Duration,
    /// Created → running of the tasks the step added (median), Swarm's own timestamps.
    pub swarm_task: Duration,
    pub calls: usize,
    pub failed: usize,
}

/// Closed-loop callers: each sends its next call when the last one answered, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    callers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn new() -> Self {
        Load {
            stop: Arc::new(AtomicBool::new(false)),
            calls: Arc::new(AtomicUsize::new(0)),
            failed: Arc::new(AtomicUsize::new(0)),
            callers: Vec::new(),
        }
    }

    fn add(&mut self, n: usize, http: &reqwest::Client, url: &str, token: Option<&str>) {
        for _ in 0..n {
            let (stop, calls, failed) =
                (self.stop.clone(), self.calls.clone(), self.failed.clone());
            let (http, url, token) = (http.clone(), url.to_string(), token.map(String::from));
            self.callers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut r = http.post(&url).body("{}");
                    if let Some(t) = &token {
                        r = r.bearer_auth(t);
                    }
                    let ok = r.send().await.is_ok_and(|r| r.status() == 200);
                    calls.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }

    /// Stops the callers once their calls in flight answered: (calls, failed).
    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.callers {
            let _ = c.await;
        }
        (
            self.calls.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

impl ColdStartBench {
    /// Runs `rounds` bursts on `rt` and prints their table.
    pub(super) async fn run_bursts(
        &self,
        http: &reqwest::Client,
        rt: Runtime,
        rounds: usize,
    ) -> Result<(), ColdStartError> {
        let mut done = Vec::new();
        for i in 0..rounds {
            done.push(self.burst(http, rt, i).await?);
        }
        let col = |f: fn(&Burst) -> Duration| {
            let mut v: Vec<Duration> = done.iter().map(f).collect();
            v.sort();
            v
        };
        let (decision, capacity, task) = (
            col(|b| b.decision),
            col(|b| b.capacity),
            col(|b| b.swarm_task),
        );
        let calls: usize = done.iter().map(|b| b.calls).sum();
        let failed: usize = done.iter().map(|b| b.failed).sum();
        let table = vec![
            [
                "RUNTIME",
                "ROUNDS",
                "STEP",
                "DECISION p50",
                "CAPACITY p50",
                "CAPACITY max",
                "SWARM TASK p50",
                "FAILED",
            ]
            .map(String::from)
            .to_vec(),
            vec![
                rt.as_str().into(),
                done.len().to_string(),
                format!("{BASE} → {STEP} in flight"),
                ms(percentile(&decision, 50.0)),
                ms(percentile(&capacity, 50.0)),
                ms(percentile(&capacity, 100.0)),
                ms(percentile(&task, 50.0)),
                format!("{failed} of {calls}"),
            ],
        ];
        print!("{}", crate::cli::output::table(&table));
        println!(
            "BURST: one replica of concurrency {CONCURRENCY} at a steady {BASE} call in flight \
             (200 ms each), then {STEP} in flight. DECISION: step → desiredReplicas ≥ {} in status \
             (polled every 10 ms). CAPACITY: step → ready replicas × concurrency ≥ demand (target \
             ≤ 2 s). SWARM TASK: the floor, created → running (healthy) of the tasks the step \
             added, as Swarm records it. FAILED: calls not answered 200 over the round.",
            replicas_for(STEP, CONCURRENCY)
        );
        Ok(())
    }

    async fn burst(
        &self,
        http: &reqwest::Client,
        rt: Runtime,
        i: usize,
    ) -> Result<Burst, ColdStartError> {
        let name = super::unique(&format!("burst-{}-{i}", rt.as_str()));
        self.store
            .create(&Function::new(&self.namespace, &name, spec(rt)?))
            .await?;
        let measured = self.step(http, &name).await;
        self.remove(&name).await?;
        measured
    }

    async fn step(&self, http: &reqwest::Client, name: &str) -> Result<Burst, ColdStartError> {
        self.wait_until(name, "one ready replica", |f| {
            f.status.as_ref().is_some_and(|s| s.ready_replicas >= 1)
        })
        .await?;
        let url = format!("{}{name}/invoke", self.gateway);
        let token = self.token.as_deref();
        let mut load = Load::new();
        load.add(BASE, http, &url, token);
        tokio::time::sleep(STEADY).await;
        let wall = chrono::Utc::now();
        let t = Instant::now();
        load.add(STEP - BASE, http, &url, token);
        let needed = replicas_for(STEP, CONCURRENCY);
        let mut decision = None;
        let capacity = loop {
            let f = self.store.get::<FunctionSpec>(&self.namespace, name).await;
            if let Ok(Some(s)) = f.map(|f| f.status) {
                if decision.is_none() && s.desired_replicas.unwrap_or(0) >= needed {
                    decision = Some(t.elapsed());
                }
                if s.ready_replicas >= needed {
                    break Ok(t.elapsed());
                }
            }
            if t.elapsed() > LIMIT {
                break Err(ColdStartError::Timeout {
                    function: name.into(),
                    what: "ready capacity for the burst",
                    after: LIMIT,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // Keep the load on a moment so calls routed to the new replicas are counted too.
        if capacity.is_ok() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let (calls, failed) = load.finish().await;
        let capacity = capacity?;
        Ok(Burst {
            decision: decision.unwrap_or(capacity),
            capacity,
            swarm_task: percentile(&self.task_starts(name, Some(wall)).await?, 50.0),
            calls,
            failed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_covers_the_demand() {
        assert_eq!(replicas_for(10, 2), 5);
        assert_eq!(replicas_for(11, 2), 6);
        assert_eq!(replicas_for(1, 2), 1);
        assert_eq!(replicas_for(0, 2), 0);
        // A zero concurrency (rejected by validation) does not divide by zero here.
        assert_eq!(replicas_for(3, 0), 3);
    }

    #[test]
    fn every_runtime_has_a_slow_handler() {
        for rt in [Runtime::Python3, Runtime::Node, Runtime::Shell] {
            let s = spec(rt).expect("a valid spec");
            assert_eq!(s.concurrency, CONCURRENCY);
            assert_eq!(s.min_replicas, 1);
            assert!(
                s.code
                    .and_then(|c| c.inline)
                    .is_some_and(|c| c.contains("0.2") || c.contains("200"))
            );
        }
    }
}
