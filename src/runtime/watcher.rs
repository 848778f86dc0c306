//! The watcher: a kind's objects as a stream of [`WatcherEvent`]s that never ends and never
//! misses a change.
//!
//! State machine: list → watch from the list's revision + 1 (with progress notifications as
//! bookmarks) → on a stream error or end, resume from the last revision seen → on compaction,
//! list again. Every failure is retried with exponential backoff and jitter (`backon`); a dead
//! etcd is noticed through the client's gRPC keep-alive (see `StoreConfig`).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::Stream;

use crate::api::Resource;
use crate::store::{ObjectList, Store, StoreError, WatchEvent, WatchStream};

use super::metrics::KindMetrics;

/// Errors the watcher reports (in logs and metrics) while it recovers by itself.
#[derive(Debug, thiserror::Error)]
pub enum WatcherError {
    #[error("listing {kind}: {source}")]
    List {
        kind: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("watching {kind} from revision {revision}: {source}")]
    Watch {
        kind: &'static str,
        revision: i64,
        #[source]
        source: StoreError,
    },
}

/// What the watcher yields.
// Changes are the hot path: boxing them would cost an allocation per event, lists are rare.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum WatcherEvent<K: Resource> {
    /// A complete list at one revision (the first one, and after every compaction): the cache
    /// must be replaced by it.
    Listed(ObjectList<K>),
    /// One change after the last list.
    Event(WatchEvent<K>),
}

/// Tuning of the watcher's retries.
#[derive(Debug, Clone)]
pub struct WatcherConfig {
    /// First retry delay.
    pub min_delay: Duration,
    /// Largest retry delay.
    pub max_delay: Duration,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        WatcherConfig {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

enum Phase<K: Resource> {
    List,
    Watch(i64),
    Streaming(Box<WatchStream<K>>),
}

struct State<K: Resource> {
    store: Store,
    namespace: Option<String>,
    cfg: WatcherConfig,
    metrics: Option<KindMetrics>,
    phase: Phase<K>,
    backoff: Option<backon::ExponentialBackoff>,
    /// When the last progress request was sent on the current stream.
    progress_asked: Option<std::time::Instant>,
}

/// How often an active stream asks etcd for a progress notification. The answer advances the
/// resume revision of *both* watchers (spec and status), so a resume after an error does not
/// replay history that one of them merely had no events in.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

impl<K: Resource> State<K> {
    fn builder(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.cfg.min_delay)
            .with_max_delay(self.cfg.max_delay)
            .with_jitter()
            .without_max_times()
    }

    async fn pause(&mut self, err: WatcherError) {
        let delay = match &mut self.backoff {
            Some(b) => b.next(),
            None => {
                let mut b = self.builder().build();
                let d = b.next();
                self.backoff = Some(b);
                d
            }
        }
        .unwrap_or(self.cfg.max_delay);
        tracing::warn!(error = %err, retry_in = ?delay, "watcher error");
        tokio::time::sleep(delay).await;
    }

    async fn step(&mut self) -> WatcherEvent<K> {
        loop {
            match std::mem::replace(&mut self.phase, Phase::List) {
                Phase::List => {
                    if let Some(m) = &self.metrics {
                        m.relists.inc();
                    }
                    match self.store.list::<K>(self.namespace.as_deref()).await {
                        Ok(list) => {
                            self.phase = Phase::Watch(list.revision + 1);
                            return WatcherEvent::Listed(list);
                        }
                        Err(source) => {
                            self.phase = Phase::List;
                            self.pause(WatcherError::List {
                                kind: K::KIND,
                                source,
                            })
                            .await;
                        }
                    }
                }
                Phase::Watch(from) => {
                    match self.store.watch::<K>(self.namespace.as_deref(), from).await {
                        Ok(s) => self.phase = Phase::Streaming(Box::new(s)),
                        Err(source) => {
                            self.phase = Phase::Watch(from);
                            self.pause(WatcherError::Watch {
                                kind: K::KIND,
                                revision: from,
                                source,
                            })
                            .await;
                        }
                    }
                }
                Phase::Streaming(mut s) => match s.next().await {
                    Ok(ev) => {
                        // A healthy stream resets the retry delays.
                        self.backoff = None;
                        // Only while changes flow: an idle stream sends and asks nothing.
                        if !matches!(ev, WatchEvent::Progress(_))
                            && self
                                .progress_asked
                                .is_none_or(|t| t.elapsed() >= PROGRESS_EVERY)
                        {
                            self.progress_asked = Some(std::time::Instant::now());
                            if let Err(e) = s.request_progress().await {
                                tracing::debug!(error = %e, "progress request");
                            }
                        }
                        self.phase = Phase::Streaming(s);
                        return WatcherEvent::Event(ev);
                    }
                    Err(StoreError::Compacted {
                        requested,
                        compact_revision,
                    }) => {
                        tracing::info!(
                            kind = K::KIND,
                            requested,
                            compact_revision,
                            "watch revision compacted; re-listing"
                        );
                        self.phase = Phase::List;
                    }
                    Err(source) => {
                        let from = s.resume_revision();
                        if let Some(m) = &self.metrics {
                            m.watch_restarts.inc();
                        }
                        self.phase = Phase::Watch(from);
                        self.pause(WatcherError::Watch {
                            kind: K::KIND,
                            revision: from,
                            source,
                        })
                        .await;
                    }
                },
            }
        }
    }
}

/// An endless stream of a kind's objects: a [`WatcherEvent::Listed`] first, then changes.
pub fn watcher<K: Resource>(
    store: Store,
    namespace: Option<String>,
    cfg: WatcherConfig,
    metrics: Option<KindMetrics>,
) -> impl Stream<Item = WatcherEvent<K>> + Send {
    stream_from(store, namespace, cfg, metrics, Phase::List)
}

/// Like [`watcher`], but starts by watching from `revision` as if resuming after an error
/// (the caller already holds the state before it). Used to test and resume precisely.
pub fn watcher_from<K: Resource>(
    store: Store,
    namespace: Option<String>,
    cfg: WatcherConfig,
    metrics: Option<KindMetrics>,
    revision: i64,
) -> impl Stream<Item = WatcherEvent<K>> + Send {
    stream_from(store, namespace, cfg, metrics, Phase::Watch(revision))
}

fn stream_from<K: Resource>(
    store: Store,
    namespace: Option<String>,
    cfg: WatcherConfig,
    metrics: Option<KindMetrics>,
    phase: Phase<K>,
) -> impl Stream<Item = WatcherEvent<K>> + Send {
    let state = State {
        store,
        namespace,
        cfg,
        metrics,
        phase,
        backoff: None,
        progress_asked: None,
    };
    futures::stream::unfold(state, |mut st| async move {
        let ev = st.step().await;
        Some((ev, st))
    })
}
