//! `lambda bench coldstart`: time to the first response of a function at zero, per runtime, by
//! both paths a cold start takes — a warm pool container specialised for it, and its own Swarm
//! task started — beside their floors measured in the same run:
//!
//! - pool path: specialising and invoking an already running generic container straight
//!   through its agent ([`floor::specialise_and_invoke`]); the platform's share on top is the
//!   hold, the claim in etcd, the secrets and token reads, and the routing;
//! - Swarm path: what Swarm itself took for the task (created → running and healthy, from its
//!   own timestamps) and `docker run` of the runtime image to its first answer
//!   ([`floor::docker_run`]); the platform's share is the hold, the load report, the
//!   autoscaler's decision, the status writes and the gateway learning the endpoint;
//! - a warm call to the replica once running (the floor of any call).
//!
//! Each round creates a fresh function at zero (`minReplicas: 0`; `warmPool: false` for the
//! Swarm path), waits until it is Ready `ScaledToZero` (and, for the pool path, until a pool
//! container is idle), calls it once, then deletes it and waits until its service is gone, so
//! rounds share no container. A runtime with no ready warm pool gets one for the run
//! (`bench-coldstart-<runtime>`, removed afterwards).
//!
//! Then the burst phase ([`burst`]): how fast ready capacity follows a 10× step of load.

mod burst;
mod floor;

use std::time::{Duration, Instant};

use crate::api::{Conditions, Function, FunctionSpec, WarmPool, WarmPoolSpec};
use crate::reconcilers::function::spec::service_name;
use crate::store::{Store, StoreError};
use crate::swarm::{Swarm, SwarmError, TaskFilter};

use super::stats::{ms, percentile};

/// What a run needs.
pub struct ColdStartBench {
    pub store: Store,
    pub swarm: Swarm,
    pub namespace: String,
    /// `…/v1/namespaces/{ns}/functions/` of the gateway.
    pub gateway: String,
    pub token: Option<String>,
    pub runtimes: Vec<crate::api::function::Runtime>,
    pub rounds: usize,
    /// Rounds of the burst phase ([`burst`]); 0 skips it.
    pub burst_rounds: usize,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum ColdStartError {
    #[error("bench coldstart: {0}")]
    Store(#[from] StoreError),
    #[error("bench coldstart: {0}")]
    Swarm(#[from] SwarmError),
    #[error("bench coldstart: calling {function}: {message}")]
    Call { function: String, message: String },
    #[error("bench coldstart: {0}")]
    Io(#[from] std::io::Error),
    #[error("bench coldstart: {function}: {what} after {after:?}")]
    Timeout {
        function: String,
        what: &'static str,
        after: Duration,
    },
}

/// One round's figures.
#[derive(Default)]
struct Round {
    /// Through a warm pool container.
    pool: Duration,
    /// Specialise + invoke straight through a generic container's agent.
    specialise: Duration,
    /// Through the function's own Swarm task.
    first: Duration,
    decision: Duration,
    swarm_task: Duration,
    /// `docker run` of the runtime image to its first answer.
    docker_run: Duration,
    warm: Duration,
}

fn spec_for(
    rt: crate::api::function::Runtime,
    warm_pool: bool,
) -> Result<FunctionSpec, ColdStartError> {
    let mut spec: FunctionSpec = serde_saphyr::from_str(&format!(
        "runtime: {}\nminReplicas: 0\nconcurrency: 1\ntimeoutSeconds: 60\n",
        rt.as_str()
    ))
    .map_err(|e| ColdStartError::Call {
        function: String::new(),
        message: format!("bench spec: {e}"),
    })?;
    spec.code = Some(crate::api::function::Code {
        inline: Some(floor::code(rt).to_string()),
        file: None,
    });
    spec.autoscaling.warm_pool = warm_pool;
    Ok(spec)
}

/// Sorted samples of one column.
fn column(rounds: &[Round], f: fn(&Round) -> Duration) -> Vec<Duration> {
    let mut v: Vec<Duration> = rounds.iter().map(f).collect();
    v.sort();
    v
}

impl ColdStartBench {
    /// Runs every round of every runtime and prints the table.
    pub async fn run(&self) -> Result<(), ColdStartError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| ColdStartError::Call {
                function: String::new(),
                message: e.to_string(),
            })?;
        let dir = tempfile_dir()?;
        let mut table = vec![
            [
                "RUNTIME",
                "ROUNDS",
                "POOL p50",
                "POOL p99",
                "SPECIALISE+INVOKE p50",
                "SWARM p50",
                "SWARM p99",
                "SWARM TASK p50",
                "DOCKER RUN p50",
                "DECISION p50",
                "DECISION p99",
                "WARM p50",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for rt in &self.runtimes {
            let (pool, made) = self.pool_for(*rt).await?;
            let image = self.pool_image(&pool).await?;
            let mut rounds = Vec::new();
            let mut failure = None;
            for i in 0..self.rounds {
                match self.round(&http, *rt, i, &pool, &image, &dir).await {
                    Ok(r) => rounds.push(r),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            if made {
                let _ = self
                    .store
                    .delete::<WarmPoolSpec>(pool.metadata.namespace(), &pool.metadata.name)
                    .await;
            }
            if let Some(e) = failure {
                return Err(e);
            }
            let p = |f: fn(&Round) -> Duration, q: f64| ms(percentile(&column(&rounds, f), q));
            table.push(vec![
                rt.as_str().into(),
                rounds.len().to_string(),
                p(|r| r.pool, 50.0),
                p(|r| r.pool, 99.0),
                p(|r| r.specialise, 50.0),
                p(|r| r.first, 50.0),
                p(|r| r.first, 99.0),
                p(|r| r.swarm_task, 50.0),
                p(|r| r.docker_run, 50.0),
                p(|r| r.decision, 50.0),
                p(|r| r.decision, 99.0),
                p(|r| r.warm, 50.0),
            ]);
        }
        let _ = std::fs::remove_dir_all(&dir);
        print!("{}", crate::cli::output::table(&table));
        println!(
            "POOL: call sent → first response, from zero, served by a warm pool container specialised \
             for the call (target p50 ≤ 30 ms, p99 ≤ 100 ms). SPECIALISE+INVOKE: the floor of that \
             path: specialise an idle generic container and invoke it straight through its agent. \
             SWARM: the same through the function's own Swarm task (warmPool: false; target p50 ≤ \
             1.5 s). SWARM TASK: that task's created → running (healthy), as Swarm records it. \
             DOCKER RUN: docker run of the runtime image to its first answer. DECISION: call sent → \
             a replica asked for in status (polled every 5 ms; target p99 ≤ 50 ms). WARM: a call to the replica once \
             running (the floor of any call). Floors run on the Swarm manager's engine; the \
             platform's containers on the workers."
        );
        // Shell's containers are the lightest; any listed runtime will do.
        let burst_rt = self
            .runtimes
            .iter()
            .copied()
            .find(|r| *r == crate::api::function::Runtime::Shell)
            .or(self.runtimes.first().copied());
        if let Some(rt) = burst_rt.filter(|_| self.burst_rounds > 0) {
            println!();
            self.run_bursts(&http, rt, self.burst_rounds).await?;
        }
        Ok(())
    }

    /// A ready warm pool of `rt` (the platform's own, else one made for the run: `true`).
    async fn pool_for(
        &self,
        rt: crate::api::function::Runtime,
    ) -> Result<(WarmPool, bool), ColdStartError> {
        let existing = self
            .store
            .list::<WarmPoolSpec>(None)
            .await?
            .items
            .into_iter()
            .find(|p| {
                p.spec.runtime == rt && p.status.as_ref().is_some_and(|s| s.ready_replicas > 0)
            });
        if let Some(p) = existing {
            return Ok((p, false));
        }
        let spec: WarmPoolSpec = serde_saphyr::from_str(&format!(
            "runtime: {}\nreplicas: 2\nmemoryMb: 256\nreleaseAfterIdleSeconds: 5\n",
            rt.as_str()
        ))
        .map_err(|e| ColdStartError::Call {
            function: String::new(),
            message: format!("bench pool spec: {e}"),
        })?;
        let name = format!("bench-coldstart-{}", rt.as_str());
        let p = match self
            .store
            .create(&WarmPool::new(&self.namespace, &name, spec))
            .await
        {
            Ok(p) => p,
            Err(e) if e.is_conflict() => {
                self.store
                    .get::<WarmPoolSpec>(&self.namespace, &name)
                    .await?
            }
            Err(e) => return Err(e.into()),
        };
        let key = p.key();
        let t = Instant::now();
        loop {
            let p = self
                .store
                .get::<WarmPoolSpec>(&key.namespace, &key.name)
                .await?;
            if p.status.as_ref().is_some_and(|s| s.idle > 0) {
                return Ok((p, true));
            }
            if t.elapsed() > Duration::from_secs(180) {
                return Err(ColdStartError::Timeout {
                    function: format!("warm pool {key}"),
                    what: "an idle container",
                    after: t.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The runtime image the pool's containers run (so the floors run the very same).
    async fn pool_image(&self, p: &WarmPool) -> Result<String, ColdStartError> {
        let svc =
            crate::reconcilers::warmpool::service_name(p.metadata.namespace(), &p.metadata.name);
        self.swarm
            .inspect_service(&svc)
            .await?
            .and_then(|s| s.spec?.task_template?.container_spec?.image)
            .ok_or_else(|| ColdStartError::Call {
                function: svc,
                message: "the pool's service names no image".into(),
            })
    }

    async fn round(
        &self,
        http: &reqwest::Client,
        rt: crate::api::function::Runtime,
        i: usize,
        pool: &WarmPool,
        image: &str,
        dir: &std::path::Path,
    ) -> Result<Round, ColdStartError> {
        let mut round = Round::default();
        // Through the pool: wait for an idle container (the last round's is being replaced).
        self.wait_idle(pool).await?;
        let name = self.fresh(rt, i, "pool", true).await?;
        let measured = self.measure(http, &name, Some("pool")).await;
        self.remove(&name).await?;
        round.pool = measured?.first;
        // Through Swarm.
        let name = self.fresh(rt, i, "swarm", false).await?;
        let measured = self.measure(http, &name, Some("swarm")).await;
        self.remove(&name).await?;
        let swarm = measured?;
        round.first = swarm.first;
        round.decision = swarm.decision;
        round.swarm_task = swarm.swarm_task;
        round.warm = swarm.warm;
        round.specialise = floor::specialise_and_invoke(&self.swarm, http, image, rt, dir).await?;
        round.docker_run = floor::docker_run(&self.swarm, http, image, rt, dir).await?;
        Ok(round)
    }

    async fn wait_idle(&self, pool: &WarmPool) -> Result<(), ColdStartError> {
        let (ns, name) = (pool.metadata.namespace(), pool.metadata.name.as_str());
        let t = Instant::now();
        loop {
            let p = self.store.get::<WarmPoolSpec>(ns, name).await?;
            if p.status.as_ref().is_some_and(|s| s.idle > 0) {
                return Ok(());
            }
            if t.elapsed() > Duration::from_secs(120) {
                return Err(ColdStartError::Timeout {
                    function: format!("warm pool {ns}/{name}"),
                    what: "an idle container",
                    after: t.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new function at zero, Ready `ScaledToZero`.
    async fn fresh(
        &self,
        rt: crate::api::function::Runtime,
        i: usize,
        path: &str,
        warm_pool: bool,
    ) -> Result<String, ColdStartError> {
        let name = unique(&format!("coldstart-{}-{path}-{i}", rt.as_str()));
        self.store
            .create(&Function::new(
                &self.namespace,
                &name,
                spec_for(rt, warm_pool)?,
            ))
            .await?;
        self.wait_until(&name, "Ready ScaledToZero", |f| {
            f.status.as_ref().is_some_and(|s| {
                s.condition("Ready").is_some_and(|c| {
                    c.status == crate::api::ConditionStatus::True && c.reason == "ScaledToZero"
                })
            })
        })
        .await?;
        Ok(name)
    }

    async fn remove(&self, name: &str) -> Result<(), ColdStartError> {
        let _ = self
            .store
            .delete::<FunctionSpec>(&self.namespace, name)
            .await;
        self.wait_gone(name).await
    }

    /// Calls the function once from zero; `path`: the cold start the answer must report.
    async fn measure(
        &self,
        http: &reqwest::Client,
        name: &str,
        path: Option<&str>,
    ) -> Result<Round, ColdStartError> {
        let url = format!("{}{name}/invoke", self.gateway);
        let call = || {
            let mut r = http.post(&url).body("{}");
            if let Some(t) = &self.token {
                r = r.bearer_auth(t);
            }
            r.send()
        };
        let t = Instant::now();
        let answered = std::sync::atomic::AtomicBool::new(false);
        // The first decision for a replica, seen by polling the status while the call waits.
        let decided = async {
            while !answered.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(f) = self.store.get::<FunctionSpec>(&self.namespace, name).await
                    && f.status.and_then(|s| s.desired_replicas).unwrap_or(0) >= 1
                {
                    return t.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Duration::ZERO
        };
        let answer = async {
            let r = call().await;
            answered.store(true, std::sync::atomic::Ordering::Relaxed);
            (r, t.elapsed())
        };
        let ((resp, first), decision) = if path == Some("pool") {
            // Polling etcd every 5 ms beside a call of a few ms would be measured too.
            (answer.await, Duration::ZERO)
        } else {
            tokio::join!(answer, decided)
        };
        let resp = resp.map_err(|e| ColdStartError::Call {
            function: name.into(),
            message: e.to_string(),
        })?;
        let got = resp
            .headers()
            .get("x-lambda-cold-start")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        if resp.status() != 200 || got.as_deref() != path {
            return Err(ColdStartError::Call {
                function: name.into(),
                message: format!(
                    "{} (cold start {:?}, expected {path:?}) {}",
                    resp.status(),
                    got,
                    resp.text().await.unwrap_or_default()
                ),
            });
        }
        if path == Some("pool") {
            return Ok(Round {
                first,
                ..Default::default()
            });
        }
        let swarm_task = self.task_start(name).await?;
        let mut warm = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            if call().await.is_ok_and(|r| r.status() == 200) {
                warm.push(t.elapsed());
            }
        }
        warm.sort();
        Ok(Round {
            first,
            decision,
            swarm_task,
            warm: percentile(&warm, 50.0),
            ..Default::default()
        })
    }

    /// Created → running of the function's running task, from Swarm's own timestamps.
    async fn task_start(&self, name: &str) -> Result<Duration, ColdStartError> {
        Ok(self
            .task_starts(name, None)
            .await?
            .first()
            .copied()
            .unwrap_or_default())
    }

    /// Created → running (sorted) of the function's running tasks, from Swarm's own
    /// timestamps; only those created at or after `since` when given.
    async fn task_starts(
        &self,
        name: &str,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Vec<Duration>, ColdStartError> {
        let svc = service_name(&self.namespace, name);
        let tasks = self
            .swarm
            .list_tasks(&TaskFilter {
                service: Some(svc),
                ..Default::default()
            })
            .await?;
        let parse = |s: &Option<String>| {
            s.as_deref()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        };
        let mut v: Vec<Duration> = tasks
            .iter()
            .filter(|t| {
                t.status.as_ref().and_then(|s| s.state) == Some(bollard::models::TaskState::RUNNING)
            })
            .filter_map(|t| {
                let created = parse(&t.created_at)?;
                let running = parse(&t.status.as_ref()?.timestamp)?;
                since.is_none_or(|s| created >= s).then_some(())?;
                (running - created).to_std().ok()
            })
            .collect();
        v.sort();
        Ok(v)
    }

    async fn wait_until(
        &self,
        name: &str,
        what: &'static str,
        ok: impl Fn(&Function) -> bool,
    ) -> Result<(), ColdStartError> {
        let t = Instant::now();
        let limit = Duration::from_secs(120);
        loop {
            if let Ok(f) = self.store.get::<FunctionSpec>(&self.namespace, name).await
                && ok(&f)
            {
                return Ok(());
            }
            if t.elapsed() > limit {
                return Err(ColdStartError::Timeout {
                    function: name.into(),
                    what,
                    after: limit,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_gone(&self, name: &str) -> Result<(), ColdStartError> {
        let t = Instant::now();
        let limit = Duration::from_secs(120);
        let svc = service_name(&self.namespace, name);
        loop {
            let gone = self
                .store
                .get::<FunctionSpec>(&self.namespace, name)
                .await
                .is_err_and(|e| e.is_not_found());
            if gone && self.swarm.inspect_service(&svc).await?.is_none() {
                return Ok(());
            }
            if t.elapsed() > limit {
                return Err(ColdStartError::Timeout {
                    function: name.into(),
                    what: "deleted",
                    after: limit,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `prefix` with a random suffix: a name no earlier round (or run) used.
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..4]
    )
}

/// A scratch directory the manager's engine can bind-mount files from (it runs on this host).
fn tempfile_dir() -> Result<std::path::PathBuf, ColdStartError> {
    let dir = std::env::temp_dir().join(format!(
        "lambda-bench-coldstart-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
