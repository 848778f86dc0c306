//! The warm workers: hands one to each invocation (waiting, bounded by the deadline, while all are busy),
//! enforces the time limit, and replaces a worker that overran or died.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::config::{Config, Runtime};
use crate::frame;
use crate::worker::{Reply, Worker, WorkerError};

/// Why the pool could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Preparing the work directory or starting a worker failed.
    #[error(transparent)]
    Worker(#[from] WorkerError),
}

/// How one invocation ended.
#[derive(Debug)]
pub enum Outcome {
    /// The function returned this JSON.
    Ok(Bytes),
    /// The function failed: error JSON (`errorType`, `errorMessage`, `stackTrace`).
    FunctionError(Bytes),
    /// The function ran past the deadline (its worker was killed and is being replaced).
    Timeout {
        /// The deadline that applied, in ms.
        deadline_ms: u128,
    },
    /// No worker became free before the deadline.
    QueueTimeout {
        /// The deadline that applied, in ms.
        deadline_ms: u128,
    },
    /// The worker died or broke the protocol mid-invocation (it is being replaced).
    WorkerExited(String),
}

/// The warm workers of one agent.
#[derive(Debug)]
pub struct Pool {
    cfg: Arc<Config>,
    bootstrap: PathBuf,
    /// Workers waiting for an invocation.
    idle: Mutex<Vec<Worker>>,
    /// One permit per idle worker; fair, so waiting invocations are served in arrival order.
    permits: Semaphore,
    /// Workers alive and warm (idle or busy), not counting those being replaced.
    warm: AtomicUsize,
    /// Set once every worker of the initial warm-up is ready.
    started: AtomicBool,
}

impl Pool {
    /// Prepares the work directory; the workers start with [`Pool::warm_up`].
    pub fn new(cfg: Arc<Config>) -> Result<Arc<Pool>, PoolError> {
        let bootstrap = crate::worker::prepare(&cfg)?;
        Ok(Arc::new(Pool {
            cfg,
            bootstrap,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(0),
            warm: AtomicUsize::new(0),
            started: AtomicBool::new(false),
        }))
    }

    /// How long a worker may take to import the function and say ready.
    fn start_timeout(&self) -> Duration {
        self.cfg.timeout.max(Duration::from_secs(10))
    }

    /// Starts all workers at once; fails if any cannot start (a broken image or configuration).
    pub async fn warm_up(self: &Arc<Self>) -> Result<(), PoolError> {
        let mut starts = tokio::task::JoinSet::new();
        for _ in 0..self.cfg.concurrency {
            let pool = self.clone();
            starts.spawn(async move {
                Worker::start(&pool.cfg, &pool.bootstrap, pool.start_timeout()).await
            });
        }
        while let Some(joined) = starts.join_next().await {
            let worker = match joined {
                Ok(started) => started?,
                Err(e) => return Err(WorkerError::Exited(format!("start task failed: {e}")).into()),
            };
            self.put_back(worker);
            self.warm.fetch_add(1, Ordering::SeqCst);
        }
        self.started.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn put_back(&self, worker: Worker) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(worker);
            self.permits.add_permits(1);
        }
    }

    /// `(healthy, warm workers, busy workers)` for `/healthz`: healthy once the warm-up finished and while
    /// at least one worker is alive.
    pub fn health(&self) -> (bool, usize, usize) {
        let warm = self.warm.load(Ordering::SeqCst);
        let idle = self.permits.available_permits();
        let started = self.started.load(Ordering::SeqCst);
        (started && warm > 0, warm, warm.saturating_sub(idle))
    }

    /// Runs one invocation within `deadline` (which covers the wait for a worker too); with
    /// `capture`, also returns what the function wrote to stderr/stdout meanwhile.
    pub async fn invoke(
        self: &Arc<Self>,
        id: Arc<str>,
        deadline: Duration,
        event: Bytes,
        capture: bool,
    ) -> (Outcome, Option<Vec<u8>>) {
        let start = Instant::now();
        let until = start + deadline;
        let deadline_ms = deadline.as_millis();
        if deadline.is_zero() {
            // Nothing can run in no time; don't hand out (and then kill) a worker for it.
            return (Outcome::QueueTimeout { deadline_ms }, None);
        }
        let permit = match tokio::time::timeout_at(until, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            // The semaphore is never closed; treat it like a full queue if it ever is.
            Ok(Err(_)) | Err(_) => return (Outcome::QueueTimeout { deadline_ms }, None),
        };
        let worker = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let Some(mut worker) = worker else {
            // A permit always has its idle worker; keep the permit and report rather than panic.
            return (
                Outcome::WorkerExited("no idle worker behind a free permit".into()),
                None,
            );
        };
        // The permit now travels with the worker: returned with it, or re-added by its replacement.
        permit.forget();
        let remaining = until.saturating_duration_since(Instant::now());
        let remaining_ms = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX);
        let call = worker.call(&id, remaining_ms, &event, capture);
        let result = tokio::time::timeout_at(until, call).await;
        // What it wrote, even when it failed or overran (the worker is replaced after).
        let logs = worker.take_logs();
        let outcome = match result {
            Ok(Ok(reply)) => {
                self.put_back(worker);
                self.outcome(reply)
            }
            Ok(Err(e)) => {
                eprintln!(
                    "lambda-agent: [{id}] worker {} failed: {e}; replacing it",
                    worker.pid()
                );
                self.replace(worker);
                Outcome::WorkerExited(e.to_string())
            }
            Err(_) => {
                eprintln!(
                    "lambda-agent: [{id}] timed out after {deadline_ms} ms; killing worker {}",
                    worker.pid()
                );
                self.replace(worker);
                Outcome::Timeout { deadline_ms }
            }
        };
        (outcome, logs)
    }

    fn outcome(&self, reply: Reply) -> Outcome {
        match (reply, self.cfg.runtime) {
            (Reply::Ok(result), Runtime::Shell) => Outcome::Ok(frame::shell_result(result.into())),
            (Reply::Ok(result), _) => Outcome::Ok(result),
            (Reply::Error(body), _) => Outcome::FunctionError(body),
            (Reply::Exit { code, tail }, _) => Outcome::FunctionError(frame::error_json(
                "ExitStatus",
                &frame::exit_message(code, &tail),
                &[],
            )),
        }
    }

    /// Kills `old` and starts a replacement in the background; retries with backoff until one is up.
    fn replace(self: &Arc<Self>, old: Worker) {
        self.warm.fetch_sub(1, Ordering::SeqCst);
        let pool = self.clone();
        tokio::spawn(async move {
            old.kill().await;
            let mut backoff = Duration::from_millis(100);
            loop {
                match Worker::start(&pool.cfg, &pool.bootstrap, pool.start_timeout()).await {
                    Ok(worker) => {
                        pool.warm.fetch_add(1, Ordering::SeqCst);
                        pool.put_back(worker);
                        return;
                    }
                    Err(e) => {
                        eprintln!(
                            "lambda-agent: cannot replace a worker: {e}; retrying in {backoff:?}"
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
    }

    /// Kills the idle workers (at shutdown, once no invocation is in flight).
    pub async fn shutdown(&self) {
        let workers = match self.idle.lock() {
            Ok(mut idle) => std::mem::take(&mut *idle),
            Err(_) => return,
        };
        for worker in workers {
            worker.kill().await;
        }
    }
}
