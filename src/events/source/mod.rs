//! Event sources (design §6): long-running tasks, one per `EventSource` object on the leading
//! controller, that turn what happens outside the platform into CloudEvents published with
//! confirm to the platform's exchange, where the queue listener matches them to functions.
//!
//! - [`directory`]: inotify on a directory of the controller's host ([`files`] decides which
//!   kernel events are which file events).
//! - [`openstack`]: a queue of its own bound to OpenStack's notification exchange.
//!
//! A source never drops what it has taken: a file event is retried until the broker confirms
//! it; a notification is acked on the cloud's bus only after its CloudEvent is confirmed on the
//! platform's. What it observes (connected or why not, counts, the last error) goes into its
//! [`Report`], which the reconciler turns into the object's status.

pub mod directory;
pub mod files;
pub mod openstack;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use tokio_util::sync::CancellationToken;

use crate::api::eventsource::EventSourceSpec;
use crate::api::{EventSource, ObjectKey};

use super::broker::{BrokerError, EVENTS_EXCHANGE};
use super::cloudevent::{CloudEvent, CloudEventError, STRUCTURED_CONTENT_TYPE};
use super::publisher::Publisher;

/// Errors of a source (reported in its status; the source retries).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("directory {path}: {source}")]
    Directory {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    TransportUrl(String),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("the event: {0}")]
    Event(#[from] CloudEventError),
}

/// Whether a source is doing its job, as its `Connected` condition says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Not yet known (starting).
    Starting,
    /// Watching / consuming; the message says what.
    Up(String),
    /// Not watching / consuming: a reason (CamelCase) and a message naming the path or address.
    Down { reason: String, message: String },
}

/// What a running source has observed.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportState {
    pub link: Link,
    /// Events confirmed by the broker since the source started.
    pub published: u64,
    /// Inputs skipped since the source started (malformed notifications, vanished files,
    /// kernel queue overflows).
    pub skipped: u64,
    pub last_event: Option<DateTime<Utc>>,
    /// The last error and when it happened.
    pub last_error: Option<(DateTime<Utc>, String)>,
    /// True while publishing to the platform's broker fails (events wait, none is dropped).
    pub publish_failing: bool,
}

/// A source's shared report: written by the source, read by the reconciler. A change of the
/// link triggers the object's reconcile at once (counters are picked up by its periodic pass).
#[derive(Clone)]
pub struct Report {
    state: Arc<Mutex<ReportState>>,
    key: ObjectKey,
    trigger: tokio::sync::mpsc::UnboundedSender<ObjectKey>,
}

impl Report {
    /// A report for `key`, triggering reconciles through `trigger`.
    pub fn new(key: ObjectKey, trigger: tokio::sync::mpsc::UnboundedSender<ObjectKey>) -> Self {
        Report {
            state: Arc::new(Mutex::new(ReportState {
                link: Link::Starting,
                published: 0,
                skipped: 0,
                last_event: None,
                last_error: None,
                publish_failing: false,
            })),
            key,
            trigger,
        }
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> ReportState {
        match self.state.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut ReportState)) {
        let (before, after) = {
            let mut s = match self.state.lock() {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            };
            let before = (s.link.clone(), s.publish_failing, s.last_error.is_some());
            f(&mut s);
            (
                before,
                (s.link.clone(), s.publish_failing, s.last_error.is_some()),
            )
        };
        if before != after {
            let _ = self.trigger.send(self.key.clone());
        }
    }

    /// The source is watching / consuming.
    pub fn up(&self, message: impl Into<String>) {
        let message = message.into();
        self.update(|s| s.link = Link::Up(message));
    }

    /// The source is not watching / consuming, for `reason` (also recorded as the last error).
    pub fn down(&self, reason: &str, message: impl Into<String>) {
        let message = message.into();
        tracing::warn!(source = %self.key, reason, "{message}");
        self.update(|s| {
            s.last_error = Some((Utc::now(), message.clone()));
            s.link = Link::Down {
                reason: reason.into(),
                message,
            };
        });
    }

    /// An error that does not stop the source (a skipped input, a failed publish).
    pub fn error(&self, message: impl Into<String>) {
        let message = message.into();
        tracing::warn!(source = %self.key, "{message}");
        self.update(|s| s.last_error = Some((Utc::now(), message)));
    }

    /// One input skipped, and why.
    pub fn skipped(&self, message: impl Into<String>) {
        self.error(message);
        self.update(|s| s.skipped += 1);
    }

    fn published(&self) {
        self.update(|s| {
            s.published += 1;
            s.last_event = Some(Utc::now());
            s.publish_failing = false;
        });
    }

    fn publish_failed(&self, message: String) {
        self.error(message);
        self.update(|s| s.publish_failing = true);
    }
}

/// Where a source's events go: the platform's exchange, addressed to the source's namespace.
#[derive(Clone)]
pub struct Sink {
    publisher: Arc<Publisher>,
    namespace: String,
    report: Report,
}

/// Pause between attempts to publish an event the broker did not confirm.
const PUBLISH_RETRY: Duration = Duration::from_millis(500);

impl Sink {
    /// A sink publishing with `publisher` for the functions of `namespace`.
    pub fn new(publisher: Arc<Publisher>, namespace: &str, report: Report) -> Self {
        Sink {
            publisher,
            namespace: namespace.into(),
            report,
        }
    }

    /// The report this sink counts into.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Connects to the platform's broker ahead of the first event (so that event does not pay
    /// for the connection); a failure is reported, and publishing retries it.
    pub async fn warm_up(&self) {
        if let Err(e) = self.publisher.broker().await {
            self.report.publish_failed(format!(
                "the platform's broker at {}: {e}",
                self.publisher.address()
            ));
        }
    }

    /// Publishes once: addressed to the namespace, structured mode, keyed by type, confirmed.
    pub async fn try_publish(&self, event: &mut CloudEvent) -> Result<(), SourceError> {
        event.set_namespace(&self.namespace)?;
        let properties = BasicProperties::default()
            .with_content_type(STRUCTURED_CONTENT_TYPE.into())
            .with_message_id(event.id.as_str().into());
        self.publisher
            .publish(
                EVENTS_EXCHANGE,
                &event.type_,
                &event.to_structured_bytes(),
                properties,
            )
            .await?;
        self.report.published();
        Ok(())
    }

    /// Publishes until confirmed or `stop`; false when stopped first (the event is then not
    /// published). An event that cannot be encoded is skipped and reported.
    pub async fn publish(&self, mut event: CloudEvent, stop: &CancellationToken) -> bool {
        loop {
            match self.try_publish(&mut event).await {
                Ok(()) => return true,
                Err(SourceError::Event(e)) => {
                    self.report
                        .skipped(format!("event {} skipped: {e}", event.id));
                    return true;
                }
                Err(e) => self.report.publish_failed(format!(
                    "publishing event {} to {}: {e}",
                    event.id,
                    self.publisher.address()
                )),
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(PUBLISH_RETRY) => {}
            }
        }
    }
}

/// The default CloudEvents source of a directory source's events.
pub fn default_source(es: &EventSource) -> String {
    format!(
        "lambda/eventsource/{}/{}",
        es.metadata.namespace(),
        es.metadata.name
    )
}

/// Runs the source `spec` of `es` until `stop`. `discard` says, once stopped, whether what
/// the source keeps outside (its queue on the cloud's bus) is to be removed too.
pub async fn run(
    es: &EventSource,
    spec: EventSourceSpec,
    sink: Sink,
    stop: CancellationToken,
    discard: Arc<std::sync::atomic::AtomicBool>,
) {
    sink.warm_up().await;
    if let Some(d) = spec.directory {
        let source = spec.source.unwrap_or_else(|| default_source(es));
        directory::run(d, source, sink, stop).await;
    } else if let Some(o) = spec.openstack {
        let queue = openstack::queue_name(es, &o);
        openstack::run(o, spec.source, queue, sink, stop, discard).await;
    }
}

/// Exponential backoff between reconnection attempts: 0.5 s doubling up to 30 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(30))
}

/// Sleeps `d` unless `stop` comes first; false when stopped.
pub(crate) async fn pause(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_thirty_seconds() {
        let v: Vec<u64> = (0..9).map(|a| backoff(a).as_millis() as u64).collect();
        assert_eq!(v, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
    }

    #[tokio::test]
    async fn a_link_change_triggers_the_reconcile_counters_do_not() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let r = Report::new(ObjectKey::new("a", "s"), tx);
        r.up("watching /x");
        assert_eq!(rx.try_recv().ok(), Some(ObjectKey::new("a", "s")));
        r.up("watching /x");
        r.published();
        assert!(rx.try_recv().is_err());
        r.down("DirectoryUnavailable", "directory /x: gone");
        assert!(rx.try_recv().is_ok());
        let s = r.snapshot();
        assert_eq!(s.published, 1);
        assert!(
            matches!(s.link, Link::Down { ref reason, .. } if reason == "DirectoryUnavailable")
        );
        assert_eq!(
            s.last_error.map(|e| e.1).as_deref(),
            Some("directory /x: gone")
        );
    }
}
