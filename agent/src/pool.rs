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
    /// Workers still to start on demand, up to the concurrency (a specialised pool agent's:
    /// starting them all at once would compete with its first invocations for the CPU).
    deferred: AtomicUsize,
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
            deferred: AtomicUsize::new(0),
        }))
    }

    /// A pool of `workers` already warm for `cfg` (a specialised pool agent's, which loaded them
    /// from generic ones) and `coming` more being loaded (handed over with [`Pool::adopt`]);
    /// the rest up to `cfg.concurrency` start one at a time when an invocation finds every
    /// worker busy (or at once when there is none at all).
    pub fn with_workers(
        cfg: Arc<Config>,
        bootstrap: PathBuf,
        workers: Vec<Worker>,
        coming: usize,
    ) -> Arc<Pool> {
        let missing = cfg.concurrency.saturating_sub(workers.len() + coming);
        let none = workers.is_empty() && coming == 0;
        let pool = Arc::new(Pool {
            cfg,
            bootstrap,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(0),
            warm: AtomicUsize::new(0),
            started: AtomicBool::new(true),
            deferred: AtomicUsize::new(missing),
        });
        for w in workers {
            pool.warm.fetch_add(1, Ordering::SeqCst);
            pool.put_back(w);
        }
        if none {
            pool.start_deferred();
        }
        pool
    }

    /// Takes over a worker loaded for this pool's function after the pool was made.
    pub fn adopt(&self, worker: Worker) {
        self.warm.fetch_add(1, Ordering::SeqCst);
        self.put_back(worker);
    }

    /// A worker announced to [`Pool::with_workers`] as coming never came: one more may be
    /// started on demand instead.
    pub fn worker_lost(&self) {
        self.deferred.fetch_add(1, Ordering::SeqCst);
    }

    /// Starts one deferred worker, if any is left.
    fn start_deferred(self: &Arc<Self>) {
        let took = self
            .deferred
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| d.checked_sub(1));
        if took.is_ok() {
            self.start_one();
        }
    }

    /// How long a worker may take to import the function and say ready: never less than 30 s,
    /// as for a pool container's generic workers, since a replica starting on a loaded node
    /// under a small CPU limit (all its workers at once) can take many times its usual second;
    /// a broken import still fails at once (the worker exits).
    fn start_timeout(&self) -> Duration {
        self.cfg.timeout.max(Duration::from_secs(30))
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
        if self.permits.available_permits() == 0 {
            // Every worker busy: one more, if the concurrency allows one not started yet.
            self.start_deferred();
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

    /// Kills `old` and starts a replacement in the background.
    fn replace(self: &Arc<Self>, old: Worker) {
        self.warm.fetch_sub(1, Ordering::SeqCst);
        let pool = self.clone();
        // The old one goes first: a container at its memory limit has room for one of them.
        tokio::spawn(async move {
            old.kill().await;
            pool.start_until_up().await;
        });
    }

    /// Starts one more worker in the background.
    fn start_one(self: &Arc<Self>) {
        let pool = self.clone();
        tokio::spawn(async move { pool.start_until_up().await });
    }

    /// Starts a worker, retrying with backoff until one is up.
    async fn start_until_up(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match Worker::start(&self.cfg, &self.bootstrap, self.start_timeout()).await {
                Ok(worker) => {
                    self.warm.fetch_add(1, Ordering::SeqCst);
                    self.put_back(worker);
                    return;
                }
                Err(e) => {
                    eprintln!("lambda-agent: cannot start a worker: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
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
