//! A publisher that outlives broker restarts: the gateway's handle on RabbitMQ. It connects on
//! first use, and a publish that fails because the connection is gone reconnects and tries
//! once more, so a broker killed and restarted mid-run costs the callers in flight an error at
//! worst (a 503, never a 202 for an unconfirmed message), and later callers nothing.

use std::sync::Arc;
use std::time::Duration;

use lapin::BasicProperties;
use tokio::sync::Mutex;

use super::broker::{Broker, BrokerError};

/// How long one (re)connection may take before the publish fails.
const CONNECT_PATIENCE: Duration = Duration::from_secs(3);

/// A shared, lazily (re)connected broker connection for publishing.
pub struct Publisher {
    url: String,
    current: Mutex<Option<Arc<Broker>>>,
}

impl Publisher {
    /// A publisher for `url`; nothing is connected until the first publish.
    pub fn new(url: impl Into<String>) -> Publisher {
        Publisher {
            url: url.into(),
            current: Mutex::new(None),
        }
    }

    /// The broker's address, password redacted.
    pub fn address(&self) -> String {
        super::broker::redact(&self.url)
    }

    /// The live connection, connecting (and declaring the topology) when there is none.
    pub async fn broker(&self) -> Result<Arc<Broker>, BrokerError> {
        let mut cur = self.current.lock().await;
        if let Some(b) = cur.as_ref().filter(|b| b.is_connected()) {
            return Ok(b.clone());
        }
        let b = Arc::new(Broker::connect_with_retry(&self.url, CONNECT_PATIENCE).await?);
        b.declare_topology().await?;
        super::delay::declare_levels(&b).await?;
        b.declare_quorum_queue(super::listener::EXECUTIONS_QUEUE)
            .await?;
        *cur = Some(b.clone());
        Ok(b)
    }

    /// Publishes with confirm; a failure on a dead connection reconnects and retries once (a
    /// message whose confirm was lost may then be published twice: at least once).
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        let b = self.broker().await?;
        match b
            .publish(exchange, routing_key, body, properties.clone())
            .await
        {
            Err(BrokerError::Amqp { .. }) if !b.is_connected() => {
                self.broker()
                    .await?
                    .publish(exchange, routing_key, body, properties)
                    .await
            }
            other => other,
        }
    }
}
