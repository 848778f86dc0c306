//! RabbitMQ plumbing (design §3 "events", §6): the connection, the platform's topology, confirmed
//! publishing and manually acknowledged consuming, and the bridge from AMQP deliveries to
//! [`CloudEvent`]s.
//!
//! Topology, declared idempotently by [`Broker::declare_topology`] (every component may call it
//! at start; redeclaring with the same arguments is a no-op):
//! - [`EVENTS_EXCHANGE`] `lambda.events`: durable topic exchange publishers send events to
//!   (routing key = the event type; matching never depends on it);
//! - [`INGEST_QUEUE`]: durable quorum queue bound to it with `#`: every event, replicated by the
//!   broker, consumed by the listeners;
//! - [`POISON_QUEUE`]: durable quorum queue for messages that are not events, with the parse
//!   error in the [`PARSE_ERROR_HEADER`] header.
//!
//! A publish returns only once the broker confirmed it (publisher confirms) and it reached a
//! queue (mandatory): "published" means durably held.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};

use super::cloudevent::{
    AmqpMessage, AmqpValue, CloudEvent, CloudEventError, STRUCTURED_CONTENT_TYPE,
};

/// The exchange publishers send events to.
pub const EVENTS_EXCHANGE: &str = "lambda.events";
/// The queue every event lands in, consumed by the listeners.
pub const INGEST_QUEUE: &str = "lambda.events.ingest";
/// Where messages that are not events go.
pub const POISON_QUEUE: &str = "lambda.poison";
/// Header of a poison message that says why it is one.
pub const PARSE_ERROR_HEADER: &str = "x-lambda-parse-error";
/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;
/// AMQP short strings (routing keys, message ids) are at most this long.
const SHORT_STRING_MAX: usize = 255;

/// Errors talking to RabbitMQ; each names the broker (password redacted) or the entity.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("RabbitMQ at {address} is unreachable or refused the login: {source}")]
    Connect {
        address: String,
        #[source]
        source: lapin::Error,
    },
    #[error("RabbitMQ {op} of {what} failed: {source}")]
    Amqp {
        op: &'static str,
        what: String,
        #[source]
        source: lapin::Error,
    },
    #[error("RabbitMQ refused (nack) the message published to {exchange:?}")]
    Nacked { exchange: String },
    #[error("no queue is bound for the message published to {exchange:?} with key {routing_key:?}")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
}

/// `amqp://user:***@host:port/vhost`: a broker URL fit for logs and error messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

fn amqp(op: &'static str, what: &str) -> impl FnOnce(lapin::Error) -> BrokerError {
    let what = what.to_string();
    move |source| BrokerError::Amqp { op, what, source }
}

/// An AMQP short string, cut to its 255-byte limit on a character boundary.
fn short(s: &str) -> ShortString {
    super::execution::truncate_utf8(s, SHORT_STRING_MAX)
        .0
        .into()
}

/// One connection with a confirming publisher channel. Consumers get channels of their own
/// ([`Broker::consume`]), so a slow consumer never holds up publishing.
pub struct Broker {
    connection: Connection,
    publisher: Channel,
    address: String,
}

impl Broker {
    /// Connects to `url` (`amqp://user:password@host:port/vhost`) and enables publisher
    /// confirms. An unreachable broker or a refused login is [`BrokerError::Connect`] naming it.
    pub async fn connect(url: &str) -> Result<Broker, BrokerError> {
        let address = redact(url);
        let connect = |source| BrokerError::Connect {
            address: address.clone(),
            source,
        };
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .map_err(connect)?;
        let publisher = connection.create_channel().await.map_err(connect)?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(connect)?;
        Ok(Broker {
            connection,
            publisher,
            address,
        })
    }

    /// Like [`Broker::connect`], retrying with exponential backoff and jitter (200 ms up to
    /// 5 s) while the broker cannot be reached or is still starting, for at most `patience`;
    /// each failure is logged with the address, and the last one is returned when patience
    /// runs out.
    pub async fn connect_with_retry(url: &str, patience: Duration) -> Result<Broker, BrokerError> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            match Broker::connect(url).await {
                Ok(b) => return Ok(b),
                Err(e) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                    if tokio::time::Instant::now() + delay > deadline {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, retry_in = ?delay, "RabbitMQ not reachable yet");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// True while the connection and its publishing channel are open (false once the broker
    /// went away, or closed the channel over an error).
    pub fn is_connected(&self) -> bool {
        self.connection.status().connected() && self.publisher.status().connected()
    }

    /// The broker's address, password redacted.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Declares the exchange and queues of the module docs (idempotent).
    pub async fn declare_topology(&self) -> Result<(), BrokerError> {
        self.declare_exchange(EVENTS_EXCHANGE, ExchangeKind::Topic)
            .await?;
        for queue in [INGEST_QUEUE, POISON_QUEUE] {
            self.declare_quorum_queue(queue).await?;
        }
        self.bind(INGEST_QUEUE, EVENTS_EXCHANGE, "#").await
    }

    /// Declares a durable exchange.
    pub async fn declare_exchange(
        &self,
        name: &str,
        kind: ExchangeKind,
    ) -> Result<(), BrokerError> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        self.declare_exchange_with(name, kind, durable).await
    }

    /// Declares an exchange with `options` (another system's, declared as that system does:
    /// redeclaring with other properties is refused by the broker).
    pub async fn declare_exchange_with(
        &self,
        name: &str,
        kind: ExchangeKind,
        options: ExchangeDeclareOptions,
    ) -> Result<(), BrokerError> {
        self.publisher
            .exchange_declare(name.into(), kind, options, FieldTable::default())
            .await
            .map_err(amqp("declare", name))
    }

    /// Declares a durable queue with `args` (its type, dead-lettering, …).
    pub async fn declare_queue(&self, queue: &str, args: FieldTable) -> Result<(), BrokerError> {
        let options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        self.declare_queue_with(queue, options, args).await
    }

    /// Declares a queue with `options` and `args`.
    pub async fn declare_queue_with(
        &self,
        queue: &str,
        options: QueueDeclareOptions,
        args: FieldTable,
    ) -> Result<(), BrokerError> {
        self.publisher
            .queue_declare(queue.into(), options, args)
            .await
            .map(|_| ())
            .map_err(amqp("declare", queue))
    }

    /// Declares a durable quorum queue (replicated, survives broker restarts).
    pub async fn declare_quorum_queue(&self, queue: &str) -> Result<(), BrokerError> {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("quorum")),
        );
        self.declare_queue(queue, args).await
    }

    /// Messages ready in `queue` (not those delivered and unacked), by a passive declare: the
    /// queue must exist (a missing one closes the channel, as AMQP has it).
    pub async fn queue_depth(&self, queue: &str) -> Result<u32, BrokerError> {
        let passive = QueueDeclareOptions {
            passive: true,
            durable: true,
            ..Default::default()
        };
        self.publisher
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .map(|q| q.message_count())
            .map_err(amqp("inspect", queue))
    }

    /// Deletes a queue (scratch queues of benchmarks and tests).
    pub async fn delete_queue(&self, queue: &str) -> Result<(), BrokerError> {
        self.publisher
            .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
            .await
            .map(|_| ())
            .map_err(amqp("delete", queue))
    }

    /// Binds `queue` to `exchange` with `routing_key`.
    pub async fn bind(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), BrokerError> {
        self.publisher
            .queue_bind(
                queue.into(),
                exchange.into(),
                short(routing_key),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp("bind", queue))
    }

    /// Publishes persistently and waits for the broker's confirm; an unroutable message
    /// (no queue bound) is an error, not a silent drop.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let confirm = self
            .publisher
            .basic_publish(
                exchange.into(),
                short(routing_key),
                options,
                body,
                properties.with_delivery_mode(PERSISTENT),
            )
            .await
            .map_err(amqp("publish", exchange))?
            .await
            .map_err(amqp("confirm", exchange))?;
        if confirm.is_nack() {
            return Err(BrokerError::Nacked {
                exchange: exchange.into(),
            });
        }
        if confirm.take_message().is_some() {
            return Err(BrokerError::Unroutable {
                exchange: exchange.into(),
                routing_key: routing_key.into(),
            });
        }
        Ok(())
    }

    /// Publishes `event` in structured mode to [`EVENTS_EXCHANGE`], keyed by its type, with its
    /// id as the message id.
    pub async fn publish_event(&self, event: &CloudEvent) -> Result<(), BrokerError> {
        let properties = BasicProperties::default()
            .with_content_type(STRUCTURED_CONTENT_TYPE.into())
            .with_message_id(short(&event.id));
        self.publish(
            EVENTS_EXCHANGE,
            &event.type_,
            &event.to_structured_bytes(),
            properties,
        )
        .await
    }

    /// Consumes `queue` with manual acks and at most `prefetch` unacknowledged deliveries, on a
    /// channel of its own (kept alive by the consumer).
    pub async fn consume(
        &self,
        queue: &str,
        consumer_tag: &str,
        prefetch: u16,
    ) -> Result<Consumer, BrokerError> {
        let channel = self
            .connection
            .create_channel()
            .await
            .map_err(amqp("open channel for", queue))?;
        channel
            .basic_qos(prefetch.max(1), BasicQosOptions::default())
            .await
            .map_err(amqp("qos", queue))?;
        channel
            .basic_consume(
                queue.into(),
                consumer_tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp("consume", queue))
    }

    /// Moves a delivery that is not an event to [`POISON_QUEUE`] (body and properties kept,
    /// the error in [`PARSE_ERROR_HEADER`]), then acks it: the queue never blocks on it, and
    /// nothing is lost (the ack comes only after the poison copy is confirmed).
    pub async fn to_poison(
        &self,
        delivery: &Delivery,
        error: &(dyn std::fmt::Display + Sync),
    ) -> Result<(), BrokerError> {
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(
            PARSE_ERROR_HEADER.into(),
            AMQPValue::LongString(LongString::from(error.to_string())),
        );
        let properties = delivery.properties.clone().with_headers(headers);
        self.publish("", POISON_QUEUE, &delivery.data, properties)
            .await?;
        delivery
            .ack(BasicAckOptions::default())
            .await
            .map(|_| ())
            .map_err(amqp("ack", POISON_QUEUE))
    }

    /// Closes the connection cleanly (unacked deliveries go back to their queues).
    pub async fn close(self) -> Result<(), BrokerError> {
        self.connection
            .close(200, "bye".into())
            .await
            .map_err(amqp("close", &self.address))
    }
}

/// An AMQP header value as the event parser sees it.
fn value_of(v: &AMQPValue) -> AmqpValue {
    match v {
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(t) => AmqpValue::Text(t.to_string()),
            Err(_) => AmqpValue::Other("non-UTF-8 string".into()),
        },
        AMQPValue::ShortString(s) => AmqpValue::Text(s.as_str().to_string()),
        AMQPValue::Boolean(b) => AmqpValue::Boolean(*b),
        AMQPValue::ShortShortInt(i) => AmqpValue::Integer(i64::from(*i)),
        AMQPValue::ShortShortUInt(i) => AmqpValue::Integer(i64::from(*i)),
        AMQPValue::ShortInt(i) => AmqpValue::Integer(i64::from(*i)),
        AMQPValue::ShortUInt(i) => AmqpValue::Integer(i64::from(*i)),
        AMQPValue::LongInt(i) => AmqpValue::Integer(i64::from(*i)),
        AMQPValue::LongUInt(i) => AmqpValue::Integer(i64::from(*i)),
        AMQPValue::LongLongInt(i) => AmqpValue::Integer(*i),
        AMQPValue::Timestamp(t) => AmqpValue::Timestamp(*t),
        other => AmqpValue::Other(format!("{:?}", other.get_type())),
    }
}

/// The headers of a message in the parser's terms.
pub fn headers_of(properties: &BasicProperties) -> Vec<(String, AmqpValue)> {
    properties
        .headers()
        .as_ref()
        .map(|h| {
            h.inner()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), value_of(v)))
                .collect()
        })
        .unwrap_or_default()
}

/// Parses a delivery as an event, in any accepted form.
pub fn event_of(delivery: &Delivery) -> Result<CloudEvent, CloudEventError> {
    let headers = headers_of(&delivery.properties);
    let msg = AmqpMessage {
        headers: &headers,
        content_type: delivery
            .properties
            .content_type()
            .as_ref()
            .map(|s| s.as_str()),
        message_id: delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        body: &delivery.data,
    };
    CloudEvent::from_amqp(&msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact("amqp://lambda:s3cret@127.0.0.1:56720/%2f"),
            "amqp://lambda:***@127.0.0.1:56720/%2f"
        );
        assert_eq!(redact("amqp://127.0.0.1"), "amqp://127.0.0.1");
        assert_eq!(redact("nonsense"), "nonsense");
    }

    #[test]
    fn header_values_convert() {
        let mut t = FieldTable::default();
        t.insert("ce-id".into(), AMQPValue::LongString("1".into()));
        t.insert("n".into(), AMQPValue::ShortInt(-3));
        t.insert("b".into(), AMQPValue::Boolean(true));
        t.insert("t".into(), AMQPValue::Timestamp(7));
        t.insert("f".into(), AMQPValue::Double(1.5));
        t.insert("x".into(), AMQPValue::LongString(vec![0xff].into()));
        let props = BasicProperties::default().with_headers(t);
        let mut h = headers_of(&props);
        h.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            h,
            [
                ("b".to_string(), AmqpValue::Boolean(true)),
                ("ce-id".to_string(), AmqpValue::Text("1".into())),
                ("f".to_string(), AmqpValue::Other("Double".into())),
                ("n".to_string(), AmqpValue::Integer(-3)),
                ("t".to_string(), AmqpValue::Timestamp(7)),
                ("x".to_string(), AmqpValue::Other("non-UTF-8 string".into())),
            ]
        );
        assert!(headers_of(&BasicProperties::default()).is_empty());
        assert_eq!(short(&"é".repeat(200)).as_str().len(), 254);
    }
}
