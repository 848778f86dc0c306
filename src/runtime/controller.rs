//! [`Controller`]: the builder that wires watchers, caches, triggers and the runner around one
//! reconcile function, like kube-runtime's `Controller::new(..).owns(..).watches(..).run(..)`.

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::api::{Object, ObjectKey, Resource};
use crate::store::{CacheChange, Store};

use super::action::Action;
use super::metrics::{ControllerMetrics, Metrics};
use super::reflector::Cache;
use super::runner::{self, Outcome, RunnerConfig};
use super::watcher::{WatcherConfig, watcher};

/// Settings of a controller.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Name in logs, spans and metrics (e.g. `nodepool`).
    pub name: String,
    /// Work queue and runner tuning (concurrency, debounce, backoff, resync).
    pub runner: RunnerConfig,
    /// Watch retry tuning.
    pub watcher: WatcherConfig,
}

impl ControllerConfig {
    /// Defaults with a name.
    pub fn named(name: &str) -> Self {
        ControllerConfig {
            name: name.to_string(),
            runner: RunnerConfig::default(),
            watcher: WatcherConfig::default(),
        }
    }
}

/// A controller of kind `K`.
///
/// Invariants: every object of `K` in the watched namespace(s) is reconciled after the caches
/// are first ready, after every change of it or of something mapped to it, and at least once
/// per resync period; never two reconciles of one object at a time; reconciles start only once
/// every cache the controller feeds is ready (so a reconciler never mistakes a cold cache for an
/// empty world).
pub struct Controller<K: Resource> {
    store: Store,
    namespace: Option<String>,
    cfg: ControllerConfig,
    cache: Cache<K>,
    tx: mpsc::UnboundedSender<ObjectKey>,
    rx: mpsc::UnboundedReceiver<ObjectKey>,
    sources: Vec<BoxFuture<'static, ()>>,
    readiness: Vec<BoxFuture<'static, ()>>,
    metrics: Option<Arc<Metrics>>,
    stop: CancellationToken,
}

impl<K: Resource> Controller<K> {
    /// A controller of the objects of `K` in `namespace` (all namespaces when `None`).
    pub fn new(store: Store, namespace: Option<&str>, cfg: ControllerConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Controller {
            store,
            namespace: namespace.map(str::to_string),
            cfg,
            cache: Cache::new(),
            tx,
            rx,
            sources: Vec::new(),
            readiness: Vec::new(),
            metrics: None,
            stop: CancellationToken::new(),
        }
    }

    /// The cache of `K` this controller fills (give a clone to the reconcile context).
    pub fn cache(&self) -> Cache<K> {
        self.cache.clone()
    }

    /// Exports the controller's metrics into `metrics`. Call it before `owns`/`watches` so the
    /// watches of those kinds are counted too.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Stops the controller gracefully (runs in flight finish) when `token` is cancelled.
    pub fn graceful_shutdown_on(mut self, token: CancellationToken) -> Self {
        self.stop = token;
        self
    }

    /// Feeds `cache` with kind `C` and triggers the owner (of kind `K`) named in each changed
    /// object's `ownerReferences`, on changes and on deletion.
    pub fn owns<C: Resource>(self, cache: Cache<C>) -> Self {
        self.watches(cache, |o: &Object<C>| {
            o.metadata
                .owner_references
                .iter()
                .filter(|r| r.kind == K::KIND)
                .map(|r| ObjectKey::new(o.metadata.namespace(), &r.name))
                .collect()
        })
    }

    /// Feeds `cache` with kind `C` and triggers the keys `mapper` returns for each changed
    /// object (its last state when deleted).
    pub fn watches<C: Resource>(
        mut self,
        cache: Cache<C>,
        mapper: impl Fn(&Object<C>) -> Vec<ObjectKey> + Send + 'static,
    ) -> Self {
        let tx = self.tx.clone();
        let stream = watcher::<C>(
            self.store.clone(),
            self.namespace.clone(),
            self.cfg.watcher.clone(),
            self.metrics.as_ref().map(|m| m.kind(C::KIND)),
        );
        let c = cache.clone();
        self.sources.push(
            async move {
                c.run(stream, move |change| {
                    let obj = match change {
                        CacheChange::Applied(o) | CacheChange::Deleted(o) => o,
                        CacheChange::Invalid(..) => return,
                    };
                    for k in mapper(obj) {
                        // The receiver lives as long as the controller runs.
                        let _ = tx.send(k);
                    }
                })
                .await
            }
            .boxed(),
        );
        self.readiness
            .push(async move { cache.wait_ready().await }.boxed());
        self
    }

    /// Triggers the keys of an arbitrary stream (events from Docker, Nova, timers, …).
    pub fn triggers(mut self, stream: impl Stream<Item = ObjectKey> + Send + 'static) -> Self {
        let tx = self.tx.clone();
        self.sources.push(
            async move {
                futures::pin_mut!(stream);
                while let Some(k) = stream.next().await {
                    let _ = tx.send(k);
                }
            }
            .boxed(),
        );
        self
    }

    /// A sender that triggers keys from anywhere (e.g. from another controller's reconcile).
    pub fn trigger_sender(&self) -> mpsc::UnboundedSender<ObjectKey> {
        self.tx.clone()
    }

    /// Runs until the shutdown token is cancelled: reconciles each triggered object with
    /// `reconcile`; on an error, logs it and applies `error_policy`'s action
    /// (`Action::backoff()` gives the per-object exponential backoff).
    pub async fn run<Ctx, E, R, RFut, P>(mut self, reconcile: R, error_policy: P, ctx: Arc<Ctx>)
    where
        Ctx: Send + Sync + 'static,
        E: std::fmt::Display + Send + 'static,
        R: Fn(Arc<Object<K>>, Arc<Ctx>) -> RFut + Send + Sync + 'static,
        RFut: Future<Output = Result<Action, E>> + Send + 'static,
        P: Fn(&Object<K>, &E, &Ctx) -> Action + Send + Sync + 'static,
    {
        // The primary kind triggers itself.
        let own = self.cache.clone();
        let tx = self.tx.clone();
        let stream = watcher::<K>(
            self.store.clone(),
            self.namespace.clone(),
            self.cfg.watcher.clone(),
            self.metrics.as_ref().map(|m| m.kind(K::KIND)),
        );
        let c = own.clone();
        self.sources.push(
            async move {
                c.run(stream, |change| {
                    let _ = tx.send(change.key());
                })
                .await
            }
            .boxed(),
        );
        let mut sources = JoinSet::new();
        for s in self.sources.drain(..) {
            sources.spawn(s);
        }
        let name = self.cfg.name.clone();
        let all_ready = async {
            own.wait_ready().await;
            futures::future::join_all(self.readiness.drain(..)).await;
        };
        tokio::select! {
            _ = all_ready => {}
            _ = self.stop.cancelled() => {
                sources.abort_all();
                return;
            }
        }
        tracing::info!(controller = %name, objects = own.len(), "caches ready; reconciling");
        let cm: Option<ControllerMetrics> = self.metrics.as_ref().map(|m| m.controller(&name));
        let reconcile = Arc::new(reconcile);
        let error_policy = Arc::new(error_policy);
        let work = {
            let own = own.clone();
            let cm = cm.clone();
            let name = name.clone();
            move |key: ObjectKey| {
                let obj = own.get(&key);
                let reconcile = reconcile.clone();
                let error_policy = error_policy.clone();
                let ctx = ctx.clone();
                let cm = cm.clone();
                let span = tracing::info_span!("reconcile", controller = %name, object = %key);
                async move {
                    // Gone since it was triggered: nothing to converge (finalizers run before).
                    let Some(obj) = obj else {
                        return Outcome::Success(Action::await_change());
                    };
                    let start = Instant::now();
                    if let Some(m) = &cm {
                        m.reconciles.inc();
                    }
                    let res = reconcile(obj.clone(), ctx.clone()).await;
                    if let Some(m) = &cm {
                        m.duration.observe(start.elapsed().as_secs_f64());
                    }
                    match res {
                        Ok(a) => {
                            tracing::debug!(action = ?a, "reconciled");
                            Outcome::Success(a)
                        }
                        Err(e) => {
                            if let Some(m) = &cm {
                                m.errors.inc();
                            }
                            tracing::warn!(error = %e, "reconcile failed");
                            Outcome::Failure(error_policy(&obj, &e, &ctx))
                        }
                    }
                }
                .instrument(span)
            }
        };
        let keys = {
            let own = own.clone();
            move || own.keys()
        };
        runner::run(
            self.rx,
            work,
            keys,
            self.cfg.runner.clone(),
            cm.map(|m| m.queue_depth),
            self.stop.clone(),
        )
        .await;
        sources.abort_all();
        tracing::info!(controller = %name, "stopped");
    }
}
