//! One job off the executions queue: run one attempt of an execution and record what comes
//! next (success, a retry through the delay levels, a dead letter, a failure), then ack.
//!
//! The record is written before the ack at every step, so a listener killed at any point
//! leaves either the job in the queue (redelivered; an attempt it left open is closed as
//! interrupted) or a record that says what happened. A job for a record that is already final
//! is a duplicate delivery: counted and acked, never run again.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Limited};
use lapin::message::Delivery;

use crate::events::broker::{Broker, headers_of};
use crate::events::delay::{publish_dead_letter, publish_delayed};
use crate::events::execution::store::{self, ExecutionError, Stored};
use crate::events::execution::{Execution, ExecutionStatus, Outcome, TransitionError};
use crate::events::retry::{self, Decision};

use super::job::{EXECUTIONS_QUEUE, Job};
use super::{Context, ListenerError};

/// Delay before a job of a function at its concurrency comes back.
const DEFER: Duration = Duration::from_secs(1);
/// How long a job waits in the listener for a free slot of its function before it is put
/// back through the broker.
const SLOT_PATIENCE: Duration = Duration::from_secs(2);
/// Largest answer read from a replica (the record keeps at most `MAX_RESULT_BYTES` of it).
const MAX_ANSWER: usize = 1024 * 1024;
/// Attempts at a record update that keeps conflicting with a concurrent writer.
const UPDATE_TRIES: usize = 5;
/// Pause before a job that could not be processed goes back to the queue.
const BACKOFF: Duration = Duration::from_secs(1);

/// Handles one delivery of the executions queue; errors are logged and the delivery goes back
/// to the queue.
pub(super) async fn handle(ctx: &Context, broker: &Broker, delivery: Delivery) {
    if let Err(e) = process(ctx, broker, &delivery).await {
        tracing::warn!(error = %e, "execution not processed; it goes back to the queue");
        super::requeue(&delivery, BACKOFF).await;
    }
}

async fn ack(delivery: &Delivery) -> Result<(), ListenerError> {
    super::ack(delivery, EXECUTIONS_QUEUE).await
}

/// What one attempt got.
struct Answer {
    outcome: Outcome,
    status: Option<u16>,
    body: String,
    error: Option<String>,
    /// What the function wrote during the attempt, as the agent captured it.
    logs: Option<String>,
}

async fn process(ctx: &Context, broker: &Broker, delivery: &Delivery) -> Result<(), ListenerError> {
    let job = match Job::decode(&headers_of(&delivery.properties), &delivery.data) {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!(error = %e, "not a job; moved to the poison queue");
            ctx.metrics.poison.inc();
            broker.to_poison(delivery, &e).await?;
            return Ok(());
        }
    };
    let ns = &job.function.namespace;
    // A gateway's job on its first delivery has no record yet, or only its `Queued` one (but
    // for a publish repeated after a lost confirm): it is not read first, and the first write
    // finds out (creating the record, or reading and changing the one there). Anything else
    // is read, serializably: a stale answer costs at worst a duplicate run.
    if !delivery.redelivered
        && let Some(queued) = record_of(&job)
    {
        return run(ctx, broker, delivery, &job, Record::Unwritten(queued)).await;
    }
    let record = match store::peek(&ctx.store, ns, &job.execution_id).await {
        Ok(mut s) if s.execution.status.is_terminal() => {
            ctx.metrics.duplicates.inc();
            // Counted in the record too (best effort: the record is final either way).
            let counted = modify(ctx, &mut s, |e| {
                e.duplicates = e.duplicates.saturating_add(1);
                Ok(())
            })
            .await;
            if let Err(e) = counted {
                tracing::debug!(execution = %job.execution_id, error = %e, "duplicate not counted");
            }
            return ack(delivery).await;
        }
        // Another delivery of this execution is running it right now (a job published again
        // while the first was in flight): not run twice. A redelivery's open attempt is a
        // dead listener's (the broker redelivers only once that channel closed): run.
        Ok(s)
            if !delivery.redelivered
                && s.execution
                    .attempts
                    .last()
                    .is_some_and(|a| a.outcome.is_none()) =>
        {
            ctx.metrics.duplicates.inc();
            return ack(delivery).await;
        }
        Ok(s) => Record::Stored(s),
        // An asynchronous invocation whose `Queued` record has not landed yet (or never will:
        // the gateway's write failed): the job holds all of it, and the first write below
        // creates it, so the attempt does not wait for the gateway's write.
        Err(ExecutionError::NotFound { .. }) => match record_of(&job) {
            Some(queued) => Record::Unwritten(queued),
            None => {
                // Pruned (older than retention) or never written: nothing to run it for.
                tracing::warn!(execution = %job.execution_id, "job without a record; dropped");
                return ack(delivery).await;
            }
        },
        Err(e) => return Err(e.into()),
    };
    run(ctx, broker, delivery, &job, record).await
}

/// True when a function without replicas will get one on demand: Ready (scaled to zero) or
/// still starting, not failed.
fn comes_up(f: &crate::api::Function) -> bool {
    use crate::api::{ConditionStatus, Conditions};
    use crate::reconcilers::function::{READY, status::reason::PROGRESSING};
    f.status
        .as_ref()
        .and_then(|s| s.condition(READY))
        .is_none_or(|c| c.status == ConditionStatus::True || c.reason == PROGRESSING)
}

/// Runs (or settles without running) the execution of `job`, whose record is `record`.
async fn run(
    ctx: &Context,
    broker: &Broker,
    delivery: &Delivery,
    job: &Job,
    record: Record,
) -> Result<(), ListenerError> {
    let ns = &job.function.namespace;
    let function = ctx.gw.functions.get(&job.function);
    let route = ctx.gw.table.get(ns, &job.function.name);
    let (Some(function), Some(route)) = (function.filter(|f| !f.is_deleting()), route) else {
        let now = Utc::now();
        let done = apply(ctx, record, |e| {
            e.finish(ExecutionStatus::Failed, Some("FunctionNotFound"), now)
        })
        .await?;
        finished(ctx, job, &done.execution).await;
        return ack(delivery).await;
    };
    let policy = function.spec.retry.clone();
    let age = (Utc::now() - record.execution().created_at)
        .to_std()
        .unwrap_or_default();
    // Already past its maximum age: not run (again), exhausted as too old.
    if let Some(decision) = retry::expired(&policy, age) {
        let now = Utc::now();
        if let Decision::Exhausted {
            dead_letter_queue: Some(q),
            ..
        } = &decision
        {
            let mut preview = record.execution().clone();
            retry::apply(&mut preview, &decision, now)?;
            publish_dead_letter(broker, q, &job.event, &preview).await?;
            ctx.metrics.dead_letters.inc();
        }
        let done = apply(ctx, record, |e| retry::apply(e, &decision, now)).await?;
        dead_lettered(ctx, &function, &decision).await;
        finished(ctx, job, &done.execution).await;
        return ack(delivery).await;
    }
    // At its concurrency: wait briefly for a slot (a bounded number of waiters per function),
    // else back through the shortest delay, without an attempt: not hammered, and not
    // holding prefetch slots other functions need.
    route.load.arrived();
    let max_waiting = (route.concurrency * route.endpoints.len().max(1) * 2).max(ctx.prefetch / 4);
    let lease = route.acquire_within(SLOT_PATIENCE, max_waiting).await;
    // No replica while the function is scaled to zero or starting: back through the shortest
    // delay too, without an attempt — its arrival is in the load report, so the autoscaler
    // brings one up. A function that cannot start (image missing…) takes the attempt and its
    // retries, as any failure.
    if lease.is_none() && (!route.endpoints.is_empty() || comes_up(&function)) {
        if route.endpoints.is_empty() {
            route.load.deferred();
            ctx.gw.load_wake.notify_one();
        }
        publish_delayed(
            broker,
            EXECUTIONS_QUEUE,
            DEFER,
            &delivery.data,
            job.properties(),
        )
        .await?;
        ctx.metrics.deferrals.inc();
        return ack(delivery).await;
    }
    let started = Utc::now();
    // `Running` is written while the function runs, not before: the slot is held only for
    // the invocation itself. The final write below waits for this one (it needs its revision).
    let (running, answer) = tokio::join!(
        apply(ctx, record, |e| e.start_attempt(started).map(|_| ())),
        attempt(&route, job, lease)
    );
    let mut stored = running?;
    ctx.metrics.attempt(&format!("{:?}", answer.outcome));
    let ended = Utc::now();
    let attempts_made = stored.execution.attempts.len() as u32;
    let decision = retry::decide(
        &policy,
        answer.outcome,
        attempts_made,
        age + (ended - started).to_std().unwrap_or_default(),
        retry::random_jitter(),
    );
    // The message of what comes next is confirmed before the record says so.
    match &decision {
        Decision::Retry { delay, .. } => {
            publish_delayed(
                broker,
                EXECUTIONS_QUEUE,
                *delay,
                &delivery.data,
                job.properties(),
            )
            .await?;
            ctx.metrics.retries.inc();
        }
        Decision::Exhausted {
            dead_letter_queue: Some(q),
            ..
        } => {
            let mut preview = stored.execution.clone();
            close_attempt(&mut preview, ended, &answer, &decision)?;
            publish_dead_letter(broker, q, &job.event, &preview).await?;
            ctx.metrics.dead_letters.inc();
        }
        _ => {}
    }
    let done = modify(ctx, &mut stored, |e| {
        close_attempt(e, ended, &answer, &decision)
    })
    .await?;
    dead_lettered(ctx, &function, &decision).await;
    if done.status.is_terminal() {
        finished(ctx, job, &done).await;
    }
    ack(delivery).await
}

/// The `Queued` record an asynchronous invocation's job stands for (the gateway's, exactly).
fn record_of(job: &Job) -> Option<Execution> {
    job.created_at.map(|created| job.queued_record(created))
}

/// A Warning event on the function when `decision` sent its execution to a dead-letter queue.
async fn dead_lettered(ctx: &Context, function: &crate::api::Function, decision: &Decision) {
    if let Decision::Exhausted {
        reason,
        dead_letter_queue: Some(q),
    } = decision
    {
        // Same message for every dead letter of a function and queue: one event, counted.
        let message = format!(
            "executions went to dead-letter queue {q} ({reason}); see `lambda executions {} --status DeadLettered`",
            function.metadata.name
        );
        ctx.recorder
            .emit(
                function,
                crate::api::EventType::Warning,
                "DeadLettered",
                &message,
            )
            .await;
    }
}

/// Ends the running attempt and applies the decision (the result kept on success).
fn close_attempt(
    e: &mut Execution,
    now: chrono::DateTime<Utc>,
    answer: &Answer,
    decision: &Decision,
) -> Result<(), TransitionError> {
    e.finish_attempt(now, answer.outcome, answer.status, answer.error.as_deref())?;
    if let Some(logs) = answer.logs.as_deref().filter(|l| !l.is_empty()) {
        // Each attempt's output, after the earlier ones' (the record cuts the total).
        let mut all = std::mem::take(&mut e.logs);
        if e.attempts.len() > 1 {
            all.push_str(&format!("--- attempt {} ---\n", e.attempts.len()));
        }
        all.push_str(logs);
        e.set_logs(&all);
    }
    if matches!(decision, Decision::Succeed) {
        e.set_result(&answer.body);
    }
    retry::apply(e, decision, now)
}

/// Runs one attempt against the function's replicas.
async fn attempt(
    route: &crate::gateway::Route,
    job: &Job,
    lease: Option<crate::gateway::Lease>,
) -> Answer {
    let payload = job.payload();
    let failed = |outcome, status: u16, error: String| Answer {
        outcome,
        status: Some(status),
        body: String::new(),
        error: Some(error),
        logs: None,
    };
    if payload.len() > route.max_payload {
        return failed(
            Outcome::PayloadTooLarge,
            413,
            format!(
                "the event is {} bytes, over the function's limit of {}",
                payload.len(),
                route.max_payload
            ),
        );
    }
    if route.endpoints.is_empty() {
        return failed(Outcome::Unavailable, 503, "no ready replica".into());
    }
    let t = Instant::now();
    let sent =
        crate::gateway::to_replica(route, &job.execution_id, Bytes::from(payload), lease, true)
            .await;
    route.metrics.observe(
        sent.as_ref()
            .map(|r| r.status().as_u16())
            .unwrap_or_else(|e| e.status.as_u16()),
        t.elapsed(),
    );
    match sent {
        Err(e) => failed(
            Outcome::from_status(e.status.as_u16()),
            e.status.as_u16(),
            format!("{}: {}", e.reason, e.message),
        ),
        Ok(resp) => {
            let status = resp.status().as_u16();
            let logs = resp
                .headers()
                .get("x-lambda-log-result")
                .and_then(|v| v.to_str().ok())
                .map(decode_logs);
            let body = match Limited::new(resp.into_body(), MAX_ANSWER).collect().await {
                Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
                Err(e) => {
                    return failed(Outcome::Other, status, format!("reading the answer: {e}"));
                }
            };
            let outcome = Outcome::from_status(status);
            let error = (outcome != Outcome::Succeeded).then(|| error_text(&body));
            Answer {
                outcome,
                status: Some(status),
                body,
                error,
                logs,
            }
        }
    }
}

/// The agent's base64 `X-Lambda-Log-Result` as text (a broken one is said so, not dropped).
fn decode_logs(b64: &str) -> String {
    use base64::Engine as _;
    match base64::engine::general_purpose::STANDARD.decode(b64) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("[the agent's log result is not base64: {e}]\n"),
    }
}

/// `errorType: errorMessage` of an agent's error body, else the body itself.
fn error_text(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    match (v["errorType"].as_str(), v["errorMessage"].as_str()) {
        (Some(t), Some(m)) => format!("{t}: {m}"),
        _ => body.to_string(),
    }
}

/// An execution's record as this delivery found it.
enum Record {
    Stored(Stored),
    /// Not in etcd yet: an asynchronous invocation's `Queued` record, from its job.
    Unwritten(Execution),
}

impl Record {
    fn execution(&self) -> &Execution {
        match self {
            Record::Stored(s) => &s.execution,
            Record::Unwritten(e) => e,
        }
    }
}

/// Applies `change` to the record and writes it: creates an unwritten one with the change
/// applied, or (when the gateway's write landed meanwhile) changes the stored one.
async fn apply(
    ctx: &Context,
    record: Record,
    mut change: impl FnMut(&mut Execution) -> Result<(), TransitionError>,
) -> Result<Stored, ListenerError> {
    let mut stored = match record {
        Record::Stored(s) => s,
        Record::Unwritten(queued) => {
            let mut first = queued.clone();
            change(&mut first)?;
            if let Some(s) = store::create(&ctx.store, &first).await? {
                return Ok(s);
            }
            // Serializable: a stale copy only makes the update below conflict and re-read.
            store::peek(&ctx.store, &queued.namespace, &queued.id).await?
        }
    };
    modify(ctx, &mut stored, change).await?;
    Ok(stored)
}

/// Applies `change` to the record and writes it, re-reading on conflicts with a concurrent
/// writer (a duplicate delivery). Returns the record as written.
async fn modify(
    ctx: &Context,
    stored: &mut Stored,
    mut change: impl FnMut(&mut Execution) -> Result<(), TransitionError>,
) -> Result<Execution, ListenerError> {
    for _ in 0..UPDATE_TRIES {
        let mut next = stored.clone();
        change(&mut next.execution)?;
        match store::update(&ctx.store, &next).await {
            Ok(s) => {
                *stored = s;
                return Ok(stored.execution.clone());
            }
            Err(ExecutionError::Conflict { .. }) => {
                *stored = store::get(
                    &ctx.store,
                    &stored.execution.namespace,
                    &stored.execution.id,
                )
                .await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ListenerError::Record(ExecutionError::Conflict {
        id: stored.execution.id.clone(),
    }))
}

/// Metrics and the callback of a final record.
async fn finished(ctx: &Context, job: &Job, e: &Execution) {
    let latency = (e.finished_at.unwrap_or_else(Utc::now) - e.created_at)
        .to_std()
        .unwrap_or_default();
    ctx.metrics.finished(e.status.as_str(), latency);
    if let Some(url) = &job.callback {
        super::callback::post(ctx, url, e).await;
    }
}
