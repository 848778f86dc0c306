//! The scheduler: fires `spec.triggers.schedules[]` on the leading controller only, each fire an
//! execution (record, job, retries and dead letters as for events).
//!
//! Exactly once per tick across the platform: a fire creates the execution's record first
//! (its id derived from the function, the schedule's index and the tick), publishes the job
//! with confirm, and only then persists the tick as the schedule's last fire. A leader that dies
//! in between leaves a last fire older than the tick; its successor decides the same tick again,
//! finds the record, and publishes again only if the job may never have been confirmed
//! (`Queued`); the listener runs one execution per record. Ticks missed while no leader existed
//! each fire once, late, oldest first (see [`crate::events::schedule`]).
//!
//! State: `<root>/schedulestate/<ns>/<fn>/<index>` (JSON: the cron and zone it is for, the
//! function's uid, when it was first seen, the last fire), written with compare-and-swap; a
//! changed cron, zone or function incarnation starts the schedule afresh. The state of
//! schedules and functions that are gone is deleted.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use etcd_client::{GetOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::api::{FunctionSpec, Object, ObjectKey, ScheduleStatus};
use crate::events::execution::store::{self as records, Begin};
use crate::events::execution::{EventRef, Execution, ExecutionStatus, Trigger, execution_id};
use crate::events::listener::{EXECUTIONS_QUEUE, Job};
use crate::events::publisher::Publisher;
use crate::events::schedule::{self, Due, Schedule};
use crate::store::{CondWrite, Precondition, Store, StoreError};

/// Longest sleep between passes: new and changed schedules are seen within it.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Passes between sweeps of the state of schedules that are gone.
const SWEEP_EVERY: u32 = 60;

/// Settings of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulesConfig {
    /// The broker jobs are published to.
    pub amqp_url: String,
}

/// Errors of one pass (logged; the next pass retries).
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("execution record: {0}")]
    Record(#[from] records::ExecutionError),
    #[error("publishing the job of {function} schedules[{index}]: {message}")]
    Publish {
        function: ObjectKey,
        index: usize,
        message: String,
    },
    #[error("schedule state {key} is unreadable: {message}")]
    State { key: String, message: String },
    #[error("the event of {function} schedules[{index}]: {message}")]
    Event {
        function: ObjectKey,
        index: usize,
        message: String,
    },
}

/// What is persisted per schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    cron: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timezone: Option<String>,
    uid: String,
    since: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_fire: Option<DateTime<Utc>>,
}

/// A state with the revision it was read or written at (`0`: not in etcd).
#[derive(Debug, Clone)]
struct Held {
    state: State,
    revision: i64,
}

fn state_prefix(store: &Store) -> String {
    format!("{}/schedulestate/", store.keys().root())
}

fn state_key(store: &Store, f: &ObjectKey, index: usize) -> String {
    format!("{}{}/{}/{index}", state_prefix(store), f.namespace, f.name)
}

/// Runs the scheduler until `stop` (the end of this controller's leadership).
pub async fn run(
    store: Store,
    namespace: Option<String>,
    cfg: SchedulesConfig,
    stop: CancellationToken,
) {
    let publisher = Publisher::new(cfg.amqp_url);
    eprintln!("scheduler: firing schedules on {}", publisher.address());
    let mut held: HashMap<String, Held> = HashMap::new();
    let mut passes = 0u32;
    loop {
        let next = match pass(&store, namespace.as_deref(), &publisher, &mut held).await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %e, "scheduler pass failed; retrying");
                // A failed write may leave the held copy stale: read it again next time.
                held.clear();
                None
            }
        };
        passes = passes.wrapping_add(1);
        if passes % SWEEP_EVERY == 0
            && let Err(e) = sweep(&store, namespace.as_deref(), &mut held).await
        {
            tracing::warn!(error = %e, "sweeping schedule state failed");
        }
        let sleep = next
            .and_then(|t| (t - Utc::now()).to_std().ok())
            .unwrap_or_default()
            .min(MAX_SLEEP);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// One pass over every schedule: fires what is due; returns the earliest next tick.
async fn pass(
    store: &Store,
    namespace: Option<&str>,
    publisher: &Publisher,
    held: &mut HashMap<String, Held>,
) -> Result<Option<DateTime<Utc>>, ScheduleError> {
    let functions = store.list::<FunctionSpec>(namespace).await?;
    let mut earliest: Option<DateTime<Utc>> = None;
    for f in functions.items.iter().filter(|f| !f.is_deleting()) {
        let uid = f.metadata.uid.clone().unwrap_or_default();
        let mut statuses = Vec::new();
        for (index, trigger) in f.spec.triggers.schedules.iter().enumerate() {
            let sched = match Schedule::parse(&trigger.cron, trigger.timezone.as_deref()) {
                Ok(s) => s,
                // Validation refuses these; one edited by hand in etcd is not fired, and its
                // status says why.
                Err(e) => {
                    statuses.push(ScheduleStatus {
                        index: index as u32,
                        cron: trigger.cron.clone(),
                        error: Some(format!("spec.triggers.schedules[{index}]: {e}")),
                        ..Default::default()
                    });
                    continue;
                }
            };
            let key = state_key(store, &f.key(), index);
            let now = Utc::now();
            let mut h = match held.remove(&key) {
                Some(h) => h,
                None => read_state(store, &key).await?.unwrap_or(Held {
                    state: fresh(trigger, &uid, now),
                    revision: 0,
                }),
            };
            if h.state.cron != trigger.cron
                || h.state.timezone != trigger.timezone
                || h.state.uid != uid
            {
                h.state = fresh(trigger, &uid, now);
            }
            // Oldest due tick first, each persisted before the next: a catch-up after an
            // outage resumes where it stopped.
            for _ in 0..=schedule::MAX_CATCH_UP {
                let after = h.state.last_fire.unwrap_or(h.state.since);
                let due = schedule::due(&sched, after, now);
                let Due::Fire { tick, .. } = &due else {
                    break;
                };
                fire(store, publisher, f, index, &due, trigger.payload.as_ref()).await?;
                h.state.last_fire = Some(*tick);
                h.revision = write_state(store, &key, &h).await?;
            }
            if h.revision == 0 {
                h.revision = write_state(store, &key, &h).await?;
            }
            let after = h.state.last_fire.unwrap_or(h.state.since);
            let next = sched.next_after(after.max(now));
            if let Some(n) = next {
                earliest = Some(earliest.map_or(n, |e| e.min(n)));
            }
            statuses.push(ScheduleStatus {
                index: index as u32,
                cron: trigger.cron.clone(),
                last_fire_time: h.state.last_fire,
                next_fire_time: next,
                error: None,
            });
            held.insert(key, h);
        }
        let current = f
            .status
            .as_ref()
            .map_or(&[][..], |s| s.schedules.as_slice());
        if current != statuses.as_slice() {
            // The function reconciler owns the rest of the status: only this field changes.
            let written = store
                .modify_status(f, |s| s.schedules = statuses.clone())
                .await;
            if let Err(e) = written {
                tracing::debug!(function = %f.key(), error = %e, "schedule status not written");
            }
        }
    }
    Ok(earliest)
}

fn fresh(trigger: &crate::api::function::ScheduleTrigger, uid: &str, now: DateTime<Utc>) -> State {
    State {
        cron: trigger.cron.clone(),
        timezone: trigger.timezone.clone(),
        uid: uid.to_string(),
        since: now,
        last_fire: None,
    }
}

/// One fire: the record (unless a predecessor made it), then the job, confirmed.
async fn fire(
    store: &Store,
    publisher: &Publisher,
    f: &Object<FunctionSpec>,
    index: usize,
    due: &Due,
    payload: Option<&serde_json::Value>,
) -> Result<(), ScheduleError> {
    let key = f.key();
    let event_error = |message: String| ScheduleError::Event {
        function: key.clone(),
        index,
        message,
    };
    let event = schedule::event(&key, index, due, payload)
        .map_err(|e| event_error(e.to_string()))?
        .ok_or_else(|| event_error("nothing is due".into()))?;
    let id = execution_id(&key, &event);
    let record = Execution::new(
        id.clone(),
        &key,
        Trigger::Schedule { index },
        Some(EventRef::of(&event)),
        Utc::now(),
    );
    let publish = match records::begin(store, &record).await? {
        Begin::New(_) => true,
        // Fired before a failover: publish again only if its job may not have been confirmed.
        Begin::Duplicate(s) => s.execution.status == ExecutionStatus::Queued,
    };
    if publish {
        let job = Job {
            execution_id: id.clone(),
            function: key.clone(),
            callback: None,
            event,
            created_at: None,
        };
        publisher
            .publish("", EXECUTIONS_QUEUE, &job.body(), job.properties())
            .await
            .map_err(|e| ScheduleError::Publish {
                function: key.clone(),
                index,
                message: e.to_string(),
            })?;
    }
    if let Due::Fire { late_by, ticks, .. } = due {
        tracing::info!(
            function = %key, index, execution = %id,
            late_ms = late_by.num_milliseconds(), ticks, "schedule fired"
        );
    }
    Ok(())
}

async fn read_state(store: &Store, key: &str) -> Result<Option<Held>, ScheduleError> {
    let mut kv = store.client().kv_client();
    let resp = store.call("get", key, kv.get(key, None)).await?;
    let Some(kv) = resp.kvs().first() else {
        return Ok(None);
    };
    match serde_json::from_slice::<State>(kv.value()) {
        Ok(state) => Ok(Some(Held {
            state,
            revision: kv.mod_revision(),
        })),
        Err(e) => {
            // Replaced by a fresh state (the schedule restarts from now): said, not hidden.
            tracing::warn!(key, error = %e, "unreadable schedule state; starting it afresh");
            Ok(None)
        }
    }
}

async fn write_state(store: &Store, key: &str, h: &Held) -> Result<i64, ScheduleError> {
    let value = serde_json::to_vec(&h.state).map_err(|e| ScheduleError::State {
        key: key.into(),
        message: e.to_string(),
    })?;
    let when = if h.revision == 0 {
        Precondition::Absent
    } else {
        Precondition::AtRevision(h.revision)
    };
    let write = CondWrite {
        key: key.to_string(),
        when,
        puts: vec![(key.to_string(), value)],
    };
    store
        .write_if(write)
        .await?
        .ok_or_else(|| ScheduleError::State {
            key: key.into(),
            message: "changed by another writer (a second leader?); re-read next pass".into(),
        })
}

/// Deletes the state of schedules whose function or index is gone.
async fn sweep(
    store: &Store,
    namespace: Option<&str>,
    held: &mut HashMap<String, Held>,
) -> Result<(), ScheduleError> {
    let functions = store.list::<FunctionSpec>(namespace).await?;
    let mut wanted = std::collections::HashSet::new();
    for f in &functions.items {
        for i in 0..f.spec.triggers.schedules.len() {
            wanted.insert(state_key(store, &f.key(), i));
        }
    }
    let prefix = match namespace {
        Some(ns) => format!("{}{ns}/", state_prefix(store)),
        None => state_prefix(store),
    };
    let mut kv = store.client().kv_client();
    let resp = store
        .call(
            "list",
            &prefix,
            kv.get(
                prefix.clone(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            ),
        )
        .await?;
    for entry in resp.kvs() {
        let key = String::from_utf8_lossy(entry.key()).into_owned();
        if wanted.contains(&key) {
            continue;
        }
        let txn = Txn::new().and_then([TxnOp::delete(key.clone(), None)]);
        store.txn("delete", &key, txn).await?;
        held.remove(&key);
    }
    Ok(())
}
