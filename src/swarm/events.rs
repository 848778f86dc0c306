//! Docker's event stream (as a trigger source for controllers) and service logs.

use std::collections::HashMap;

use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{EventsOptionsBuilder, LogsOptions};
use futures::{Stream, StreamExt};

use super::{Swarm, SwarmError};

/// The kind of object an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Service,
    Container,
    Node,
    Config,
    Secret,
    Other,
}

/// One event, reduced to what controllers map to objects.
#[derive(Debug, Clone, PartialEq)]
pub struct SwarmEvent {
    pub kind: EventKind,
    /// `create`, `update`, `remove`, `die`, `health_status: healthy`, …
    pub action: String,
    /// The object's id.
    pub id: String,
    /// The actor's attributes: `name` for services, container labels for containers.
    pub attributes: HashMap<String, String>,
}

impl From<EventMessage> for SwarmEvent {
    fn from(m: EventMessage) -> Self {
        let kind = match m.typ {
            Some(EventMessageTypeEnum::SERVICE) => EventKind::Service,
            Some(EventMessageTypeEnum::CONTAINER) => EventKind::Container,
            Some(EventMessageTypeEnum::NODE) => EventKind::Node,
            Some(EventMessageTypeEnum::CONFIG) => EventKind::Config,
            Some(EventMessageTypeEnum::SECRET) => EventKind::Secret,
            _ => EventKind::Other,
        };
        let actor = m.actor.unwrap_or_default();
        SwarmEvent {
            kind,
            action: m.action.unwrap_or_default(),
            id: actor.id.unwrap_or_default(),
            attributes: actor.attributes.unwrap_or_default(),
        }
    }
}

impl Swarm {
    /// Events about services, containers and nodes from now on. Service and node events are
    /// cluster-wide; container events come only from the daemon this client talks to. The
    /// stream ends (or yields an error) when the connection drops: callers reconnect.
    pub fn events(&self) -> impl Stream<Item = Result<SwarmEvent, SwarmError>> + use<> {
        let f = HashMap::from([(
            "type".to_string(),
            vec![
                "service".to_string(),
                "container".to_string(),
                "node".to_string(),
            ],
        )]);
        let opts = EventsOptionsBuilder::default().filters(&f).build();
        self.docker.events(Some(opts)).map(|r| {
            r.map(SwarmEvent::from)
                .map_err(|e| SwarmError::from_bollard("stream", "events", e))
        })
    }

    /// Follows the event stream until `stop`, calling `on_event` for each event. When the
    /// stream fails or ends it reconnects with backoff (0.5 s doubling to 10 s) and calls
    /// `on_gap` first, since events may have been missed meanwhile.
    pub async fn follow_events(
        &self,
        stop: tokio_util::sync::CancellationToken,
        mut on_event: impl FnMut(&SwarmEvent),
        mut on_gap: impl FnMut(),
    ) {
        let mut delay = std::time::Duration::from_millis(500);
        let mut first = true;
        loop {
            if !first {
                on_gap();
            }
            first = false;
            let mut events = Box::pin(self.events());
            loop {
                let next = tokio::select! {
                    n = events.next() => n,
                    _ = stop.cancelled() => return,
                };
                match next {
                    Some(Ok(ev)) => {
                        delay = std::time::Duration::from_millis(500);
                        on_event(&ev);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "Docker event stream failed; reconnecting");
                        break;
                    }
                    None => {
                        tracing::warn!("Docker event stream ended; reconnecting");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.cancelled() => return,
            }
            delay = (delay * 2).min(std::time::Duration::from_secs(10));
        }
    }

    /// Log lines (stdout and stderr) of every task of a service: the last `tail` lines, then new
    /// ones while `follow`.
    pub fn service_logs(
        &self,
        service: &str,
        follow: bool,
        tail: Option<u32>,
    ) -> impl Stream<Item = Result<String, SwarmError>> + use<> {
        let opts = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            tail: tail.map(|t| t.to_string()).unwrap_or_else(|| "all".into()),
            ..Default::default()
        };
        let object = format!("service {service}");
        self.docker.service_logs(service, Some(opts)).map(move |r| {
            r.map(|l| l.to_string())
                .map_err(|e| SwarmError::from_bollard("logs", &object, e))
        })
    }
}
