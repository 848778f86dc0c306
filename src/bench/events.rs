//! `lambda bench events`: N asynchronous invocations of one function end to end (202 → record
//! `Succeeded`) and, in the same run, its limits: raw confirmed publishes of the same bytes
//! consumed with manual acks on the same broker (the limit of the queue itself); the function
//! called straight at its agents at the same concurrency (the limit of running it at all: an
//! asynchronous execution is never faster than a direct call); and the two combined, as they
//! share the same cores (`1 / (1/raw + 1/direct)`). Reports the throughput ratios, the 202
//! latency and the enqueue → function start latency (record creation → first attempt's
//! start), with the targets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::BasicProperties;
use lapin::options::BasicAckOptions;

use super::stats::{ms, percentile};
use crate::events::broker::{Broker, BrokerError};
use crate::events::execution::store as records;
use crate::store::Store;

/// How long the function's agents are loaded directly.
const DIRECT_FOR: Duration = Duration::from_secs(3);

/// What to run.
#[derive(Debug, Clone)]
pub struct EventsBench {
    /// `…/v1/namespaces/{ns}/functions/{name}/invoke`
    pub invoke_url: String,
    pub bearer: Option<String>,
    pub namespace: String,
    pub amqp_url: String,
    /// The function's agents, called straight for the other limit: running it at all.
    pub direct: super::invoke::Target,
    pub invocations: usize,
    pub concurrency: usize,
    pub data: String,
    /// Longest wait for all records to be final.
    pub timeout: Duration,
}

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum EventsBenchError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Direct(#[from] super::invoke::LoadError),
    #[error("invocation {i} answered {status}: {body}")]
    Refused { i: usize, status: u16, body: String },
    #[error("invocation {i} failed: {message}")]
    Request { i: usize, message: String },
    #[error("{left} of {n} executions not final after {timeout:?}")]
    Timeout {
        left: usize,
        n: usize,
        timeout: Duration,
    },
    #[error("execution {id} ended {status} ({reason})")]
    Failed {
        id: String,
        status: String,
        reason: String,
    },
}

/// The raw limit: `n` confirmed publishes of `body` to a scratch quorum queue from
/// `concurrency` tasks while one consumer acks them; messages per second end to end.
async fn raw(
    broker: Arc<Broker>,
    n: usize,
    concurrency: usize,
    body: Vec<u8>,
) -> Result<f64, EventsBenchError> {
    let queue = format!("lambda.bench.raw-{}", uuid::Uuid::new_v4().simple());
    broker.declare_quorum_queue(&queue).await?;
    let mut consumer = broker.consume(&queue, "bench", 256).await?;
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let body = Arc::new(body);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (broker, next, body, queue) =
            (broker.clone(), next.clone(), body.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                broker
                    .publish("", &queue, &body, BasicProperties::default())
                    .await?;
            }
            Ok::<_, BrokerError>(())
        }));
    }
    let mut got = 0;
    while got < n {
        match consumer.next().await {
            Some(Ok(d)) => {
                let _ = d.ack(BasicAckOptions::default()).await;
                got += 1;
            }
            _ => break,
        }
    }
    let elapsed = start.elapsed();
    for t in tasks {
        if let Ok(r) = t.await {
            r?;
        }
    }
    let _ = broker.delete_queue(&queue).await;
    Ok(got as f64 / elapsed.as_secs_f64())
}

/// Runs the benchmark and prints the report.
pub async fn run(store: &Store, cfg: &EventsBench) -> Result<(), EventsBenchError> {
    let broker = Arc::new(Broker::connect(&cfg.amqp_url).await?);
    // The same bytes a job carries: the structured event around the data.
    let mut event =
        crate::events::cloudevent::CloudEvent::new("bench", "/bench", "lambda.invoke.async")
            .map_err(|e| EventsBenchError::Request {
                i: 0,
                message: e.to_string(),
            })?;
    event.data = Some(crate::events::cloudevent::Data::Json(
        serde_json::from_str(&cfg.data).unwrap_or_default(),
    ));
    let raw_rate = raw(
        broker.clone(),
        cfg.invocations,
        cfg.concurrency,
        event.to_structured_bytes(),
    )
    .await?;

    // The function's own limit: the same body straight to its agents, same concurrency.
    let direct = super::invoke::load(
        &cfg.direct,
        &bytes::Bytes::from(cfg.data.clone()),
        cfg.concurrency,
        DIRECT_FOR,
    )
    .await?;

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(cfg.concurrency * 2)
        .build()
        .unwrap_or_default();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..cfg.concurrency {
        let (http, next, cfg) = (http.clone(), next.clone(), cfg.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= cfg.invocations {
                    return Ok::<_, EventsBenchError>(out);
                }
                let mut req = http
                    .post(&cfg.invoke_url)
                    .header("prefer", "respond-async")
                    .header("content-type", "application/json")
                    .body(cfg.data.clone());
                if let Some(b) = &cfg.bearer {
                    req = req.bearer_auth(b);
                }
                let t = Instant::now();
                let r = req.send().await.map_err(|e| EventsBenchError::Request {
                    i,
                    message: e.to_string(),
                })?;
                let latency = t.elapsed();
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                if status != 202 {
                    return Err(EventsBenchError::Refused { i, status, body });
                }
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let id = v["executionId"].as_str().unwrap_or_default().to_string();
                out.push((id, latency));
            }
        }));
    }
    let mut accepted = Vec::new();
    for t in tasks {
        match t.await {
            Ok(r) => accepted.extend(r?),
            Err(e) => {
                return Err(EventsBenchError::Request {
                    i: 0,
                    message: e.to_string(),
                });
            }
        }
    }
    let submitted = start.elapsed();
    // Wait for every record to be final; collect creation → first start.
    let deadline = Instant::now() + cfg.timeout;
    let mut pending: Vec<String> = accepted.iter().map(|(id, _)| id.clone()).collect();
    let mut to_start = Vec::new();
    let mut last_finish = chrono::DateTime::<chrono::Utc>::MIN_UTC;
    let mut first_created = chrono::DateTime::<chrono::Utc>::MAX_UTC;
    while !pending.is_empty() {
        // Oldest first, a page at a time, and the round ends at a page with nothing final:
        // executions finish roughly in order, so the bench's own reads stay near one per
        // execution instead of competing with the platform it measures.
        let mut still = Vec::new();
        let mut rest = pending.into_iter();
        loop {
            let page: Vec<String> = rest.by_ref().take(records::MAX_PAGE).collect();
            if page.is_empty() {
                break;
            }
            let found = records::get_many(store, &cfg.namespace, &page)
                .await
                .unwrap_or_default();
            let mut any_final = false;
            for (i, id) in page.into_iter().enumerate() {
                match found.get(i).cloned().flatten() {
                    Some(e) if e.status.is_terminal() => {
                        any_final = true;
                        if e.status != crate::events::execution::ExecutionStatus::Succeeded {
                            return Err(EventsBenchError::Failed {
                                id: e.id,
                                status: e.status.as_str().into(),
                                reason: e.reason.unwrap_or_default(),
                            });
                        }
                        if let Some(a) = e.attempts.first() {
                            to_start
                                .push((a.started_at - e.created_at).to_std().unwrap_or_default());
                        }
                        first_created = first_created.min(e.created_at);
                        last_finish = last_finish.max(e.finished_at.unwrap_or(e.created_at));
                    }
                    _ => still.push(id),
                }
            }
            if !any_final {
                still.extend(rest);
                break;
            }
        }
        pending = still;
        if !pending.is_empty() {
            if Instant::now() > deadline {
                return Err(EventsBenchError::Timeout {
                    left: pending.len(),
                    n: cfg.invocations,
                    timeout: cfg.timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let span = (last_finish - first_created)
        .to_std()
        .unwrap_or(submitted)
        .max(submitted);
    let rate = cfg.invocations as f64 / span.as_secs_f64();
    let mut lat: Vec<Duration> = accepted.iter().map(|(_, l)| *l).collect();
    lat.sort();
    to_start.sort();
    let ratio = rate / raw_rate;
    let (p99_202, p99_start) = (percentile(&lat, 99.0), percentile(&to_start, 99.0));
    let ok = |b: bool| if b { "ok" } else { "MISSED" };
    println!(
        "lambda bench events: {} invocations, concurrency {}",
        cfg.invocations, cfg.concurrency
    );
    println!("{:<34} {:>14} {:>14} {:>10}", "", "measured", "target", "");
    println!(
        "{:<34} {:>12.0}/s {:>14}",
        "raw publish → consume (limit)", raw_rate, ""
    );
    println!(
        "{:<34} {:>12.0}/s {:>14}",
        "function straight to its agents", direct.rps, ""
    );
    // Queue and function share the machine's cores, so an execution costs at least both: the
    // rate of doing one after the other with nothing else.
    let combined =
        1.0 / (1.0 / raw_rate.max(f64::MIN_POSITIVE) + 1.0 / direct.rps.max(f64::MIN_POSITIVE));
    println!(
        "{:<34} {:>12.0}/s {:>14}",
        "both, sharing these cores (limit)", combined, ""
    );
    println!(
        "{:<34} {:>12.0}/s {:>14}",
        "async 202 → Succeeded", rate, ""
    );
    println!(
        "{:<34} {:>14.2} {:>14}",
        "ratio to both limits combined",
        rate / combined,
        ""
    );
    println!(
        "{:<34} {:>14.2} {:>14} {:>10}",
        "throughput ratio",
        ratio,
        "≥ 0.50",
        ok(ratio >= 0.5)
    );
    println!(
        "{:<34} {:>14} {:>14}",
        "202 latency p50",
        ms(percentile(&lat, 50.0)),
        ""
    );
    println!(
        "{:<34} {:>14} {:>14} {:>10}",
        "202 latency p99",
        ms(p99_202),
        "≤ 10 ms",
        ok(p99_202 <= Duration::from_millis(10))
    );
    println!(
        "{:<34} {:>14} {:>14}",
        "enqueue → start p50",
        ms(percentile(&to_start, 50.0)),
        ""
    );
    println!(
        "{:<34} {:>14} {:>14} {:>10}",
        "enqueue → start p99",
        ms(p99_start),
        "≤ 50 ms",
        ok(p99_start <= Duration::from_millis(50))
    );
    Ok(())
}
