//! The queue listener, `lambda events` (design §3 "events", §6): a stateless process, run one
//! or several as competing consumers, that turns events into executions and runs them.
//!
//! Two queues, both consumed with manual acks and a bounded prefetch:
//! - [`INGEST_QUEUE`](crate::events::broker::INGEST_QUEUE): every event published to
//!   `lambda.events`. Each is parsed (not an event → the poison queue), matched against the
//!   functions' `spec.triggers.events`, and for each match a `Queued` record is written and a
//!   [`Job`] published to [`EXECUTIONS_QUEUE`]; the event is acked only once all of that is
//!   durable ([`ingest`]).
//! - [`EXECUTIONS_QUEUE`]: one message per execution to run (from events, and from the
//!   gateway's asynchronous invocations). Each runs in its own task against the function's
//!   replicas under the gateway's balancing and concurrency rules, and is acked only after its
//!   record says what happened next ([`execute`]).
//!
//! No head-of-line blocking: deliveries run concurrently, and a function whose replicas are
//! all at their concurrency has its jobs put back through a one-second delay level instead of
//! holding prefetch slots, so one slow function can take at most its own capacity of them.
//! Broker restarts: the session ends, unacked deliveries return to their queues, and the
//! listener reconnects with backoff; redeliveries are recognised by their execution ids.

mod callback;
mod execute;
mod ingest;
mod job;
mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::task::JoinSet;

use crate::events::broker::{Broker, BrokerError, INGEST_QUEUE};
use crate::events::execution::retention::Retention;
use crate::events::execution::store::ExecutionError;
use crate::gateway::Gateway;
use crate::store::Store;

pub use callback::CallbackPolicy;
pub use job::{CALLBACK_HEADER, EXECUTIONS_QUEUE, Job, JobError};
pub use metrics::ListenerMetrics;

/// How often the queue depths are sampled for the metrics.
const DEPTH_EVERY: Duration = Duration::from_secs(5);
/// How often the retention sweep runs.
const SWEEP_EVERY: Duration = Duration::from_secs(300);
/// How long in-flight executions may finish after a shutdown signal before the connection is
/// closed (their messages then return to the queue).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Settings of `lambda events`.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// `amqp://user:password@host:port/vhost`
    pub amqp_url: String,
    /// Unacknowledged deliveries per queue (bounds memory and the work one process takes).
    pub prefetch: u16,
    /// How long to keep trying to reach the broker at start before giving up.
    pub connect_patience: Duration,
    /// Where to serve `/metrics` and `/healthz`, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Execution history kept per function.
    pub retention: Retention,
    /// Where `X-Callback-Url` results may be POSTed.
    pub callbacks: CallbackPolicy,
}

/// Errors of the listener.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("execution record: {0}")]
    Record(#[from] ExecutionError),
    #[error("execution record cannot move on: {0}")]
    Transition(#[from] crate::events::execution::TransitionError),
    #[error("the broker ended the consumer of {queue} (connection lost or queue deleted)")]
    ConsumerEnded { queue: &'static str },
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What every delivery handler shares.
pub(crate) struct Context {
    pub store: Store,
    /// The routing table and replica client (the gateway's, so the same rules apply).
    pub gw: Arc<Gateway>,
    pub metrics: Arc<ListenerMetrics>,
    /// The callbacks' client: connects only where `callbacks` permits.
    pub http: reqwest::Client,
    pub callbacks: CallbackPolicy,
    /// Deliveries per queue this process holds (bounds the jobs one function may keep
    /// waiting for a slot).
    pub prefetch: usize,
    /// Dead letters become Warning events on their function (`lambda get events`).
    pub recorder: crate::runtime::events::Recorder,
}

/// Runs the listener until `shutdown` resolves.
pub async fn run(
    store: Store,
    cfg: ListenerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ListenerError> {
    let gw = Gateway::new(store.clone(), false);
    tokio::spawn(gw.clone().follow_functions());
    // Its executions count in the functions' load; the report goes when this returns.
    let reporting = tokio_util::sync::CancellationToken::new();
    tokio::spawn(crate::gateway::load::report(
        gw.clone(),
        "listener",
        reporting.clone(),
    ));
    let _reporting = reporting.drop_guard();
    let metrics = Arc::new(ListenerMetrics::default());
    if let Some(addr) = cfg.metrics_listen {
        serve_metrics(addr, metrics.clone()).await?;
    }
    let ctx = Arc::new(Context {
        store: store.clone(),
        gw: gw.clone(),
        metrics,
        http: cfg.callbacks.client(Duration::from_secs(10)),
        callbacks: cfg.callbacks.clone(),
        prefetch: usize::from(cfg.prefetch),
        recorder: crate::runtime::events::Recorder::new(
            store.clone(),
            "events",
            crate::runtime::events::DEFAULT_EVENT_TTL,
        ),
    });
    tokio::spawn(sweep(store, cfg.retention));
    // Matching before the first complete list of functions would call every event unmatched.
    gw.functions.wait_ready().await;
    let mut broker = Broker::connect_with_retry(&cfg.amqp_url, cfg.connect_patience).await?;
    eprintln!(
        "lambda events consuming {INGEST_QUEUE} and {EXECUTIONS_QUEUE} on {}",
        broker.address()
    );
    tokio::pin!(shutdown);
    loop {
        let b = Arc::new(broker);
        let ended = session(&ctx, b.clone(), cfg.prefetch, &mut shutdown).await;
        match ended {
            Ok(()) => {
                if let Ok(b) = Arc::try_unwrap(b) {
                    let _ = b.close().await;
                }
                return Ok(());
            }
            Err(e) => tracing::warn!(error = %e, "broker session ended; reconnecting"),
        }
        // Reconnect for as long as it takes (the broker is part of the platform), or until
        // told to stop.
        let reconnect = async {
            loop {
                match Broker::connect_with_retry(&cfg.amqp_url, Duration::from_secs(60)).await {
                    Ok(b) => break b,
                    Err(e) => tracing::error!(error = %e, "RabbitMQ still unreachable"),
                }
            }
        };
        broker = tokio::select! {
            b = reconnect => b,
            _ = shutdown.as_mut() => return Ok(()),
        };
        tracing::info!(broker = %broker.address(), "reconnected");
    }
}

/// One connection's life: declare, consume both queues, run deliveries until the connection
/// fails (`Err`) or shutdown (`Ok`, after in-flight executions finished or the grace ran out).
async fn session(
    ctx: &Arc<Context>,
    broker: Arc<Broker>,
    prefetch: u16,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<(), ListenerError> {
    broker.declare_topology().await?;
    crate::events::delay::declare_levels(&broker).await?;
    broker.declare_quorum_queue(EXECUTIONS_QUEUE).await?;
    let tag = format!("lambda-events-{}", uuid::Uuid::new_v4().simple());
    let mut events = broker.consume(INGEST_QUEUE, &tag, prefetch).await?;
    let mut jobs = broker.consume(EXECUTIONS_QUEUE, &tag, prefetch).await?;
    let mut tasks = JoinSet::new();
    let mut depth = tokio::time::interval(DEPTH_EVERY);
    let result = loop {
        tokio::select! {
            d = events.next() => match d {
                Some(Ok(d)) => {
                    let (ctx, b) = (ctx.clone(), broker.clone());
                    tasks.spawn(async move { ingest::handle(&ctx, &b, d).await });
                }
                Some(Err(e)) => break Err(amqp_lost(e, INGEST_QUEUE)),
                None => break Err(ListenerError::ConsumerEnded { queue: INGEST_QUEUE }),
            },
            d = jobs.next() => match d {
                Some(Ok(d)) => {
                    let (ctx, b) = (ctx.clone(), broker.clone());
                    tasks.spawn(async move { execute::handle(&ctx, &b, d).await });
                }
                Some(Err(e)) => break Err(amqp_lost(e, EXECUTIONS_QUEUE)),
                None => break Err(ListenerError::ConsumerEnded { queue: EXECUTIONS_QUEUE }),
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => log_task(done),
            _ = depth.tick() => {
                for q in [INGEST_QUEUE, EXECUTIONS_QUEUE] {
                    if let Ok(n) = broker.queue_depth(q).await {
                        ctx.metrics.queue_depth(q, n);
                    }
                }
            }
            _ = shutdown.as_mut() => break Ok(()),
        }
    };
    if result.is_ok() {
        // Let what runs finish (its acks need this connection), within the grace.
        let drain = async {
            while let Some(done) = tasks.join_next().await {
                log_task(done);
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::warn!("executions still running at shutdown go back to the queue");
        }
    }
    tasks.abort_all();
    result
}

/// Acknowledges a delivery of `queue` (only once what it started is durable).
async fn ack(delivery: &lapin::message::Delivery, queue: &str) -> Result<(), ListenerError> {
    delivery
        .ack(lapin::options::BasicAckOptions::default())
        .await
        .map(|_| ())
        .map_err(|source| {
            ListenerError::Broker(BrokerError::Amqp {
                op: "ack",
                what: queue.into(),
                source,
            })
        })
}

/// Puts a delivery that could not be processed back in its queue after `pause` (so a failing
/// dependency is not retried in a tight loop). A failed nack means the channel is gone: the
/// broker then requeues it by itself.
async fn requeue(delivery: &lapin::message::Delivery, pause: Duration) {
    tokio::time::sleep(pause).await;
    let options = lapin::options::BasicNackOptions {
        requeue: true,
        ..Default::default()
    };
    let _ = delivery.nack(options).await;
}

fn amqp_lost(source: lapin::Error, queue: &str) -> ListenerError {
    ListenerError::Broker(BrokerError::Amqp {
        op: "consume",
        what: queue.into(),
        source,
    })
}

fn log_task(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(error = %e, "a delivery handler panicked; its message will be redelivered");
    }
}

/// Applies the retention policy every [`SWEEP_EVERY`] (every listener may: deletes compare
/// revisions, so concurrent sweeps never remove a record twice or one that moved on).
async fn sweep(store: Store, retention: Retention) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        match crate::events::execution::store::prune_all(&store, &retention, chrono::Utc::now())
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "execution records pruned"),
            Err(e) => tracing::warn!(error = %e, "execution retention sweep failed"),
        }
    }
}

async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<ListenerMetrics>,
) -> Result<(), ListenerError> {
    use axum::routing::get;
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ListenerError::Metrics { addr, source })?;
    let app = axum::Router::new()
        .route("/metrics", get(move || async move { metrics.encode() }))
        .route("/healthz", get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(l, app).await });
    Ok(())
}
