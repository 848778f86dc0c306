//! `lambda bench coldstart`: time to the first response of a function at zero, per runtime,
//! through a Swarm task start, beside what Swarm itself took for that task in the same run
//! (task created → running and healthy: the floor of this path) and a warm call to the replica
//! it started (the floor of any call). The platform's own share is the rest: the hold, the
//! load report, the autoscaler's decision, the status writes and the gateway learning the
//! endpoint.
//!
//! Each round creates a fresh function at zero (`minReplicas: 0`), waits until it is Ready
//! `ScaledToZero`, calls it once, then deletes it and waits until its service is gone, so
//! rounds do not share a container.

use std::time::{Duration, Instant};

use crate::api::{Conditions, Function, FunctionSpec};
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
    #[error("bench coldstart: {function}: {what} after {after:?}")]
    Timeout {
        function: String,
        what: &'static str,
        after: Duration,
    },
}

/// One round's figures.
struct Round {
    first: Duration,
    decision: Duration,
    swarm_task: Duration,
    warm: Duration,
}

fn spec_for(rt: crate::api::function::Runtime) -> String {
    use crate::api::function::Runtime;
    let code = match rt {
        Runtime::Python3 => "def handler(event, context):\n      return {'ok': True}\n",
        Runtime::Node => "exports.handler = async () => ({ok: true});\n",
        Runtime::Shell | Runtime::Image => "#!/bin/sh\n    cat >/dev/null; echo '{\"ok\": true}'\n",
    };
    format!(
        "runtime: {}\nminReplicas: 0\nconcurrency: 1\ntimeoutSeconds: 60\ncode:\n  inline: |\n    {code}",
        rt.as_str()
    )
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
        println!(
            "{:<8} {:>6} {:>14} {:>14} {:>16} {:>14} {:>14} {:>12}",
            "RUNTIME",
            "ROUNDS",
            "FIRST p50",
            "FIRST p99",
            "SWARM TASK p50",
            "PLATFORM p50",
            "DECISION p50",
            "WARM p50"
        );
        for rt in &self.runtimes {
            let mut rounds = Vec::new();
            for i in 0..self.rounds {
                rounds.push(self.round(&http, *rt, i).await?);
            }
            let sorted = |f: fn(&Round) -> Duration| {
                let mut v: Vec<Duration> = rounds.iter().map(f).collect();
                v.sort();
                v
            };
            let first = sorted(|r| r.first);
            let swarm = sorted(|r| r.swarm_task);
            let own = sorted(|r| r.first.saturating_sub(r.swarm_task));
            let decision = sorted(|r| r.decision);
            let warm = sorted(|r| r.warm);
            println!(
                "{:<8} {:>6} {:>14} {:>14} {:>16} {:>14} {:>14} {:>12}",
                rt.as_str(),
                rounds.len(),
                ms(percentile(&first, 50.0)),
                ms(percentile(&first, 99.0)),
                ms(percentile(&swarm, 50.0)),
                ms(percentile(&own, 50.0)),
                ms(percentile(&decision, 50.0)),
                ms(percentile(&warm, 50.0)),
            );
        }
        println!(
            "FIRST: call sent → first response, from zero. SWARM TASK: the task's created → running \
             (healthy), as Swarm records it: the floor of a cold start through Swarm. PLATFORM: \
             FIRST − SWARM TASK. DECISION: call sent → a replica asked for in status (polled every 5 ms). \
             WARM: a call to the replica once running (the floor of any call)."
        );
        Ok(())
    }

    async fn round(
        &self,
        http: &reqwest::Client,
        rt: crate::api::function::Runtime,
        i: usize,
    ) -> Result<Round, ColdStartError> {
        let name = format!(
            "coldstart-{}-{i}-{}",
            rt.as_str(),
            &uuid::Uuid::new_v4().simple().to_string()[..4]
        );
        let spec: FunctionSpec =
            serde_saphyr::from_str(&spec_for(rt)).map_err(|e| ColdStartError::Call {
                function: name.clone(),
                message: format!("bench spec: {e}"),
            })?;
        let f = self
            .store
            .create(&Function::new(&self.namespace, &name, spec))
            .await?;
        let result = self.measure(http, &name).await;
        let _ = self
            .store
            .delete::<FunctionSpec>(f.metadata.namespace(), &f.metadata.name)
            .await;
        self.wait_gone(&name).await?;
        result
    }

    async fn measure(&self, http: &reqwest::Client, name: &str) -> Result<Round, ColdStartError> {
        self.wait_until(name, "Ready ScaledToZero", |f| {
            f.status.as_ref().is_some_and(|s| {
                s.condition("Ready").is_some_and(|c| {
                    c.status == crate::api::ConditionStatus::True && c.reason == "ScaledToZero"
                })
            })
        })
        .await?;
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
        let ((resp, first), decision) = tokio::join!(answer, decided);
        let resp = resp.map_err(|e| ColdStartError::Call {
            function: name.into(),
            message: e.to_string(),
        })?;
        if resp.status() != 200 {
            return Err(ColdStartError::Call {
                function: name.into(),
                message: format!(
                    "{} {}",
                    resp.status(),
                    resp.text().await.unwrap_or_default()
                ),
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
        })
    }

    /// Created → running of the function's running task, from Swarm's own timestamps.
    async fn task_start(&self, name: &str) -> Result<Duration, ColdStartError> {
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
        Ok(tasks
            .iter()
            .filter(|t| {
                t.status.as_ref().and_then(|s| s.state) == Some(bollard::models::TaskState::RUNNING)
            })
            .filter_map(|t| {
                let created = parse(&t.created_at)?;
                let running = parse(&t.status.as_ref()?.timestamp)?;
                (running - created).to_std().ok()
            })
            .min()
            .unwrap_or_default())
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
