//! The eventsource reconciler: runs one source task per `EventSource` on the leading
//! controller (a directory watch on this host, a consumer of OpenStack's notification bus),
//! restarts it when the spec changes, and writes what it reports into the status.
//!
//! - Only the leader runs sources (every reconciler runs under the leader's term), so one event
//!   is published once; a new leader starts them afresh (a notification queue keeps what
//!   arrived meanwhile; a directory's files created meanwhile are not events, as at any start).
//! - Status: conditions `Connected` and `Ready` with reasons, `eventsPublished` and
//!   `eventsSkipped` (persisted totals), `lastEventTime`, `lastError`; refreshed every second
//!   while counters move, at once when the link changes.
//! - Finalizer [`FINALIZER`]: a deleted source's task is stopped and its queue on the cloud's
//!   bus deleted before the object goes. A source removed without its finalizer (etcdctl) is
//!   stopped by the sweep.

pub mod status;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{EventSource, EventSourceSpec, ObjectKey};
use crate::events::publisher::Publisher;
use crate::events::source::{self, Report, Sink, openstack};
use crate::runtime::finalizer::FinalizerError;
use crate::runtime::status::patch_status;
use crate::runtime::{
    Action, Cache, Controller, ControllerConfig, EventType, FinalizerEvent, Metrics, Recorder,
    finalizer,
};
use crate::store::{Store, StoreError};

use super::ControllersConfig;

/// The finalizer this controller puts on event sources.
pub const FINALIZER: &str = "lambda/eventsource";
/// While a source runs, its status is refreshed this often (counters, last event).
const REFRESH: Duration = Duration::from_secs(1);
/// How long a stopping source may take to finish (publishes in flight, deleting its queue).
const STOP_PATIENCE: Duration = Duration::from_secs(10);
/// How often sources whose object vanished are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// Settings of the eventsource controller.
#[derive(Debug, Clone)]
pub struct EventSourcesConfig {
    /// The platform's broker, where the sources' events go.
    pub amqp_url: String,
}

/// Errors of the eventsource reconciler.
#[derive(Debug, thiserror::Error)]
pub enum EventSourceError {
    #[error("EventSource {key}: writing status: {source}")]
    Status {
        key: ObjectKey,
        #[source]
        source: StoreError,
    },
}

/// A source task and what it was started from.
struct Running {
    uid: String,
    generation: i64,
    /// Its queue on the cloud's bus, if it is a notification source.
    queue: Option<String>,
    stop: CancellationToken,
    discard: Arc<AtomicBool>,
    task: JoinHandle<()>,
    report: Report,
    base: status::Base,
}

impl Running {
    /// Stops the task, telling it whether to delete its queue, and waits for it (bounded).
    async fn stop(self, discard: bool) {
        self.discard.store(discard, Ordering::SeqCst);
        self.stop.cancel();
        if tokio::time::timeout(STOP_PATIENCE, self.task)
            .await
            .is_err()
        {
            tracing::warn!("an event source did not stop within {STOP_PATIENCE:?}");
        }
    }
}

/// What the reconciles share.
pub struct Context {
    store: Store,
    publisher: Arc<Publisher>,
    running: Mutex<HashMap<ObjectKey, Running>>,
    trigger: UnboundedSender<ObjectKey>,
    /// The leader's term: every source stops with it.
    term: CancellationToken,
    recorder: Recorder,
}

impl Context {
    /// The running sources; a poisoned lock is still usable (every edit is one insert/remove).
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self, key: &ObjectKey) -> Option<Running> {
        self.running().remove(key)
    }

    fn put(&self, key: ObjectKey, r: Running) {
        self.running().insert(key, r);
    }

    /// The report and base of the running source of `key` if it runs `uid`@`generation`.
    fn current(
        &self,
        key: &ObjectKey,
        uid: &str,
        generation: i64,
    ) -> Option<(Report, status::Base)> {
        let m = self.running();
        m.get(key)
            .filter(|r| r.uid == uid && r.generation == generation)
            .map(|r| (r.report.clone(), r.base))
    }

    fn keys(&self) -> Vec<ObjectKey> {
        self.running().keys().cloned().collect()
    }
}

fn queue_of(es: &EventSource) -> Option<String> {
    es.spec
        .openstack
        .as_ref()
        .map(|o| openstack::queue_name(es, o))
}

fn up_reason(es: &EventSource) -> &'static str {
    if es.spec.openstack.is_some() {
        "Consuming"
    } else {
        "Watching"
    }
}

fn start(es: &EventSource, ctx: &Context) -> (Report, status::Base) {
    let key = es.key();
    let report = Report::new(key.clone(), ctx.trigger.clone());
    let sink = Sink::new(
        ctx.publisher.clone(),
        es.metadata.namespace(),
        report.clone(),
    );
    let stop = ctx.term.child_token();
    let discard = Arc::new(AtomicBool::new(false));
    let base = es.status.as_ref().map(status::Base::of).unwrap_or_default();
    let task = {
        let (es, stop, discard) = (es.clone(), stop.clone(), discard.clone());
        tokio::spawn(async move {
            let spec = es.spec.clone();
            source::run(&es, spec, sink, stop, discard).await;
        })
    };
    ctx.put(
        key,
        Running {
            uid: es.metadata.uid.clone().unwrap_or_default(),
            generation: es.generation(),
            queue: queue_of(es),
            stop,
            discard,
            task,
            report: report.clone(),
            base,
        },
    );
    (report, base)
}

async fn apply(es: Arc<EventSource>, ctx: &Context) -> Result<Action, EventSourceError> {
    let key = es.key();
    let uid = es.metadata.uid.clone().unwrap_or_default();
    let write = |next: crate::api::eventsource::EventSourceStatus| {
        let (es, key) = (es.clone(), key.clone());
        async move {
            patch_status(&ctx.store, &es, |s| *s = next.clone())
                .await
                .map_err(|source| EventSourceError::Status { key, source })
        }
    };
    let prev = es.status.clone().unwrap_or_default();
    if let Err(errors) = es.validate() {
        if let Some(old) = ctx.take(&key) {
            old.stop(false).await;
        }
        write(status::invalid(&prev, &errors, es.generation(), Utc::now())).await?;
        return Ok(Action::await_change());
    }
    let (report, base) = match ctx.current(&key, &uid, es.generation()) {
        Some(r) => r,
        None => {
            if let Some(old) = ctx.take(&key) {
                // Re-pointed (or recreated): the old queue goes unless the new source uses it.
                let discard = old.queue.is_some() && old.queue != queue_of(&es);
                old.stop(discard).await;
                ctx.recorder
                    .emit(
                        &*es,
                        EventType::Normal,
                        "Restarted",
                        "the spec changed: source restarted",
                    )
                    .await;
            }
            start(&es, ctx)
        }
    };
    let next = status::running(
        &prev,
        &report.snapshot(),
        base,
        es.generation(),
        up_reason(&es),
        Utc::now(),
    );
    write(next).await?;
    Ok(Action::requeue(REFRESH))
}

async fn cleanup(es: Arc<EventSource>, ctx: &Context) -> Result<Action, EventSourceError> {
    let ran = ctx.take(&es.key());
    if let Some(r) = ran {
        r.stop(true).await;
    }
    // The task deletes its queue when it was connected; a source that was not running (a
    // controller restarted meanwhile) or not connected is deleted here, best effort.
    if let Some(spec) = &es.spec.openstack {
        let queue = openstack::queue_name(&es, spec);
        match tokio::time::timeout(STOP_PATIENCE, openstack::discard_queue(spec, &queue)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => ctx
                .recorder
                .emit(
                    &*es,
                    EventType::Warning,
                    "QueueLeft",
                    &format!(
                        "queue {queue} could not be deleted ({e}); it expires after a day unused"
                    ),
                )
                .await,
            Err(_) => {
                ctx.recorder
                    .emit(
                        &*es,
                        EventType::Warning,
                        "QueueLeft",
                        &format!(
                            "queue {queue}: the bus did not answer; it expires after a day unused"
                        ),
                    )
                    .await
            }
        }
    }
    Ok(Action::await_change())
}

/// Reconciles one event source (see the module docs).
pub async fn reconcile(
    es: Arc<EventSource>,
    ctx: Arc<Context>,
) -> Result<Action, FinalizerError<EventSourceError>> {
    let store = ctx.store.clone();
    finalizer(&store, FINALIZER, es, |ev| async {
        match ev {
            FinalizerEvent::Apply(es) => apply(es, &ctx).await,
            FinalizerEvent::Cleanup(es) => cleanup(es, &ctx).await,
        }
    })
    .await
}

/// Stops the sources whose object is gone from the cache (deleted without its finalizer).
async fn sweep(ctx: Arc<Context>, cache: Cache<EventSourceSpec>, term: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = term.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !cache.is_ready() {
            continue;
        }
        for key in ctx.keys() {
            if cache.get(&key).is_none()
                && let Some(r) = ctx.take(&key)
            {
                tracing::info!(source = %key, "event source gone: stopped");
                r.stop(true).await;
            }
        }
    }
}

/// Runs the eventsource controller until `stop` (the leader's term).
pub async fn run(
    store: Store,
    metrics: Arc<Metrics>,
    cfg: &ControllersConfig,
    es_cfg: EventSourcesConfig,
    stop: CancellationToken,
) {
    let mut ccfg = ControllerConfig::named("eventsource");
    ccfg.runner.resync = Some(cfg.resync);
    let controller =
        Controller::<EventSourceSpec>::new(store.clone(), cfg.namespace.as_deref(), ccfg)
            .with_metrics(metrics)
            .graceful_shutdown_on(stop.clone());
    let ctx = Arc::new(Context {
        store: store.clone(),
        publisher: Arc::new(Publisher::new(es_cfg.amqp_url)),
        running: Mutex::new(HashMap::new()),
        trigger: controller.trigger_sender(),
        term: stop.clone(),
        recorder: Recorder::new(store, "controller/eventsource", cfg.event_ttl),
    });
    let cache = controller.cache();
    tokio::join!(
        controller.run(reconcile, |_, _, _| Action::backoff(), ctx.clone()),
        sweep(ctx.clone(), cache, stop.clone()),
    );
    // The term ended: every source stopped with it (their tokens are its children); wait for
    // them so a new term never runs a source beside its predecessor.
    for key in ctx.keys() {
        if let Some(r) = ctx.take(&key) {
            r.stop(false).await;
        }
    }
}
