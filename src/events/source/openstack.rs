//! The OpenStack notification source: a queue of its own on the cloud's bus, bound to the
//! services' notification exchange (`nova`, …) with the topic (`versioned_notifications.info`),
//! each notification unwrapped from its oslo envelope (see `cloudevent::oslo`), filtered by
//! event type, and published as a CloudEvent to the platform's exchange; acked on the cloud's
//! bus only once the platform's broker confirmed it.
//!
//! The queue is the source's, not oslo's topic queue (`versioned_notifications.info`, which
//! other consumers such as Ceilometer compete for): durable, so notifications sent while the
//! controller restarts wait for it; bounded (`x-max-length`, oldest dropped) and expiring after
//! a day without a consumer (`x-expires`), so a queue whose source went away while no
//! controller ran cannot grow or live forever. A source deleted or re-pointed deletes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::api::EventSource;
use crate::api::eventsource::OpenStackSource;
use crate::events::broker::{event_of, redact};

use super::{Sink, SourceError, backoff, pause};

/// Notifications taken from the queue before the first is acked.
const PREFETCH: u16 = 64;
/// How long connecting to one bus address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A queue without a consumer for this long is removed by the broker.
const QUEUE_EXPIRES_MS: i64 = 24 * 3600 * 1000;
/// Notifications a queue holds at most while nobody consumes it (the oldest go first).
const QUEUE_MAX_LENGTH: i64 = 100_000;

/// The source's queue on the cloud's bus: per object and per (exchange, topic), so re-pointing
/// a source never leaves it bound to what it no longer wants.
pub fn queue_name(es: &EventSource, spec: &OpenStackSource) -> String {
    let mut h = Sha256::new();
    h.update(spec.exchange.as_bytes());
    h.update([0]);
    h.update(spec.topic.as_bytes());
    h.update([0]);
    h.update(es.metadata.uid.as_deref().unwrap_or_default().as_bytes());
    let hash = hex::encode(&h.finalize()[..4]);
    let name: String = format!(
        "lambda.eventsource.{}.{}",
        es.metadata.namespace(),
        es.metadata.name
    )
    .chars()
    .take(200)
    .collect();
    format!("{name}.{hash}")
}

/// The transport URL the spec points at: the controller's environment variable or a file on
/// its host. Errors name the variable or the path, never the value.
pub fn transport_url(spec: &OpenStackSource) -> Result<String, SourceError> {
    let value = match (&spec.transport_url_env, &spec.transport_url_file) {
        (Some(var), _) => std::env::var(var).map_err(|_| {
            SourceError::TransportUrl(format!(
                "the controller's environment has no variable {var} (spec.openstack.transportUrlEnv)"
            ))
        })?,
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
            SourceError::TransportUrl(format!(
                "reading the transport URL from {path} (spec.openstack.transportUrlFile): {e}"
            ))
        })?,
        (None, None) => {
            return Err(SourceError::TransportUrl(
                "spec.openstack names no transport URL".into(),
            ));
        }
    };
    Ok(value.trim().to_string())
}

/// The AMQP URLs of an oslo.messaging transport URL, one per host, in order:
/// `rabbit://user:pass@h1:5672,user:pass@h2:5672/vhost?opts` (or `amqp://…`). oslo's empty
/// vhost is RabbitMQ's default `/`. Errors never repeat the URL (it holds a password).
pub fn amqp_urls(transport: &str) -> Result<Vec<String>, String> {
    let (scheme, rest) = transport
        .split_once("://")
        .ok_or("the transport URL has no scheme (rabbit://…)")?;
    let scheme = match scheme {
        "rabbit" | "amqp" => "amqp",
        "amqps" => "amqps",
        other => {
            return Err(format!(
                "transport scheme {other:?} is not RabbitMQ (rabbit://, amqp:// or amqps://)"
            ));
        }
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (hosts, vhost) = match rest.split_once('/') {
        Some((h, v)) => (h, v),
        None => (rest, ""),
    };
    let vhost = if vhost.is_empty() { "%2f" } else { vhost };
    let urls: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("{scheme}://{h}/{vhost}"))
        .collect();
    if urls.is_empty() {
        return Err("the transport URL names no host".into());
    }
    Ok(urls)
}

/// The AMQP URLs of the bus the spec points at.
fn bus_urls(spec: &OpenStackSource) -> Result<Vec<String>, SourceError> {
    amqp_urls(&transport_url(spec)?)
        .map_err(|e| SourceError::TransportUrl(format!("{e} (transport URL)")))
}

fn amqp_error(op: &str, what: &str, e: lapin::Error) -> SourceError {
    SourceError::TransportUrl(format!("{op} {what}: {e}"))
}

/// Connects to the first address of `urls` that answers.
async fn connect(urls: &[String]) -> Result<(Connection, String), SourceError> {
    let mut last = String::new();
    for url in urls {
        let address = redact(url);
        match tokio::time::timeout(
            CONNECT_TIMEOUT,
            Connection::connect(url, ConnectionProperties::default()),
        )
        .await
        {
            Ok(Ok(c)) => return Ok((c, address)),
            Ok(Err(e)) => last = format!("{address}: {e}"),
            Err(_) => last = format!("{address}: no answer within {CONNECT_TIMEOUT:?}"),
        }
    }
    Err(SourceError::TransportUrl(format!(
        "the notification bus is unreachable ({last})"
    )))
}

/// Declares what the source consumes from: the exchange as oslo declares it (a non-durable
/// topic exchange) unless it already exists, the source's queue, and its binding.
async fn declare(
    conn: &Connection,
    spec: &OpenStackSource,
    queue: &str,
) -> Result<Channel, SourceError> {
    let exchange = spec.exchange.as_str();
    // A passive declare that fails closes its channel: use a throwaway one.
    let probe = conn
        .create_channel()
        .await
        .map_err(|e| amqp_error("opening a channel for", exchange, e))?;
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let exists = probe
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            passive,
            FieldTable::default(),
        )
        .await
        .is_ok();
    if exists {
        let _ = probe.close(200, "exchange exists".into()).await;
    }
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| amqp_error("opening a channel for", queue, e))?;
    if !exists {
        // Nova declares it on its first notification; declaring it first (with oslo's
        // properties) lets the binding exist before then, so the first one is not missed.
        ch.exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| amqp_error("declaring exchange", exchange, e))?;
    }
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), AMQPValue::LongLongInt(QUEUE_EXPIRES_MS));
    args.insert(
        "x-max-length".into(),
        AMQPValue::LongLongInt(QUEUE_MAX_LENGTH),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), durable, args)
        .await
        .map_err(|e| amqp_error("declaring queue", queue, e))?;
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        spec.topic.as_str().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(|e| amqp_error("binding queue", queue, e))?;
    ch.basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .map_err(|e| amqp_error("qos of", queue, e))?;
    Ok(ch)
}

/// A consuming connection to the bus.
struct Session {
    conn: Connection,
    address: String,
    channel: Channel,
    consumer: lapin::Consumer,
}

/// Resolves the transport URL, connects, declares and starts consuming; an error is the
/// `Connected=False` reason and message.
async fn open(spec: &OpenStackSource, queue: &str) -> Result<Session, (&'static str, String)> {
    let urls = bus_urls(spec).map_err(|e| ("TransportUrlMissing", e.to_string()))?;
    let (conn, address) = connect(&urls)
        .await
        .map_err(|e| ("NotConnected", e.to_string()))?;
    let ready = async {
        let channel = declare(&conn, spec, queue).await?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                "lambda-eventsource".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| amqp_error("consuming", queue, e))?;
        Ok::<_, SourceError>((channel, consumer))
    };
    match ready.await {
        Ok((channel, consumer)) => Ok(Session {
            conn,
            address,
            channel,
            consumer,
        }),
        Err(e) => {
            let _ = conn.close(0, "setup failed".into()).await;
            Err(("NotConnected", format!("{e} (on {address})")))
        }
    }
}

/// Runs the source until `stop` (see the module docs); with `discard` set when stopped, the
/// queue is deleted.
pub async fn run(
    spec: OpenStackSource,
    source: Option<String>,
    queue: String,
    sink: Sink,
    stop: CancellationToken,
    discard: Arc<AtomicBool>,
) {
    let report = sink.report().clone();
    let mut attempt = 0u32;
    while !stop.is_cancelled() {
        let mut s = match open(&spec, &queue).await {
            Ok(s) => s,
            Err((reason, message)) => {
                report.down(reason, message);
                if !pause(backoff(attempt), &stop).await {
                    return;
                }
                attempt += 1;
                continue;
            }
        };
        report.up(format!(
            "consuming exchange {} topic {} on {} (queue {queue})",
            spec.exchange, spec.topic, s.address
        ));
        attempt = 0;
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => break,
                n = s.consumer.next() => n,
            };
            match next {
                Some(Ok(delivery)) => {
                    if !handle(&spec, source.as_deref(), &sink, delivery, &stop).await {
                        break;
                    }
                }
                Some(Err(e)) => {
                    report.down("ConnectionLost", format!("the bus at {}: {e}", s.address));
                    break;
                }
                None => {
                    report.down(
                        "ConnectionLost",
                        format!("the bus at {} closed the consumer", s.address),
                    );
                    break;
                }
            }
        }
        if stop.is_cancelled() && discard.load(Ordering::SeqCst) {
            delete_queue(&s.channel, &queue).await;
        }
        let _ = s.conn.close(200, "source stopped".into()).await;
        if !stop.is_cancelled() && !pause(backoff(attempt), &stop).await {
            return;
        }
        attempt += 1;
    }
}

async fn delete_queue(ch: &Channel, queue: &str) {
    match ch
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
    {
        Ok(_) => tracing::info!(queue, "event source queue deleted"),
        Err(e) => {
            tracing::warn!(queue, error = %e, "deleting the event source's queue (it expires by itself)")
        }
    }
}

/// Deletes the source's queue with a connection of its own (a source deleted while it did not
/// run). Best effort within the connect timeout: a queue left behind expires by itself.
pub async fn discard_queue(spec: &OpenStackSource, queue: &str) -> Result<(), SourceError> {
    let urls = bus_urls(spec)?;
    let (conn, _) = connect(&urls).await?;
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| amqp_error("opening a channel for", queue, e))?;
    let res = ch
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
        .map(|_| ())
        .map_err(|e| amqp_error("deleting queue", queue, e));
    let _ = conn.close(200, "queue deleted".into()).await;
    res
}

/// One notification: published (unless malformed or filtered out) then acked. False when the
/// source stopped before the event was confirmed (the delivery then goes back to the queue
/// with the connection).
async fn handle(
    spec: &OpenStackSource,
    source: Option<&str>,
    sink: &Sink,
    delivery: Delivery,
    stop: &CancellationToken,
) -> bool {
    match event_of(&delivery) {
        Ok(mut event) => {
            if spec.wants(&event.type_) {
                if let Some(s) = source {
                    event.source = s.to_string();
                }
                if !sink.publish(event, stop).await {
                    return false;
                }
            }
        }
        Err(e) => sink
            .report()
            .skipped(format!("malformed notification skipped: {e}")),
    }
    // A failed ack means the channel is gone: the broker redelivers, and the event's id (the
    // notification's message_id) makes the redelivery a duplicate the listener recognises.
    let _ = delivery.ack(BasicAckOptions::default()).await;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oslo_transport_urls_become_amqp_urls() {
        assert_eq!(
            amqp_urls("rabbit://guest:guest@127.0.0.1:16672/"),
            Ok(vec!["amqp://guest:guest@127.0.0.1:16672/%2f".to_string()])
        );
        assert_eq!(
            amqp_urls("rabbit://u:p@h1:5672,u:p@h2:5672/openstack?ssl=0"),
            Ok(vec![
                "amqp://u:p@h1:5672/openstack".to_string(),
                "amqp://u:p@h2:5672/openstack".to_string(),
            ])
        );
        assert_eq!(
            amqp_urls("amqp://u:p@h"),
            Ok(vec!["amqp://u:p@h/%2f".to_string()])
        );
        let e = amqp_urls("kafka://u:secret@h/").expect_err("kafka");
        assert!(
            e.contains("\"kafka\" is not RabbitMQ") && !e.contains("secret"),
            "{e}"
        );
        assert!(amqp_urls("rabbit:///").is_err());
        assert!(amqp_urls("guest@h").is_err());
    }

    #[test]
    fn the_transport_url_comes_from_the_named_variable_or_file() {
        let mut spec = OpenStackSource {
            transport_url_env: Some("LAMBDA_TEST_SURELY_UNSET_VARIABLE".into()),
            transport_url_file: None,
            exchange: "nova".into(),
            topic: "versioned_notifications.info".into(),
            event_types: vec![],
        };
        let e = transport_url(&spec).expect_err("unset").to_string();
        assert!(
            e.contains("no variable LAMBDA_TEST_SURELY_UNSET_VARIABLE"),
            "{e}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("url");
        spec.transport_url_env = None;
        spec.transport_url_file = Some(file.display().to_string());
        let e = transport_url(&spec).expect_err("missing file").to_string();
        assert!(e.contains(&file.display().to_string()), "{e}");
        std::fs::write(&file, "rabbit://u:p@h:1/\n").expect("write");
        assert_eq!(
            transport_url(&spec).ok().as_deref(),
            Some("rabbit://u:p@h:1/")
        );
    }

    #[test]
    fn queue_names_differ_per_object_and_binding() {
        let mut es = EventSource::new("alice", "nova", Default::default());
        es.metadata.uid = Some("u1".into());
        let spec = OpenStackSource {
            transport_url_env: Some("X".into()),
            transport_url_file: None,
            exchange: "nova".into(),
            topic: "versioned_notifications.info".into(),
            event_types: vec![],
        };
        let a = queue_name(&es, &spec);
        assert!(a.starts_with("lambda.eventsource.alice.nova."), "{a}");
        let mut legacy = spec.clone();
        legacy.topic = "notifications.info".into();
        assert_ne!(a, queue_name(&es, &legacy));
        es.metadata.uid = Some("u2".into());
        assert_ne!(a, queue_name(&es, &spec));
        let mut filtered = spec.clone();
        filtered.event_types = vec!["instance.*".into()];
        es.metadata.uid = Some("u1".into());
        assert_eq!(a, queue_name(&es, &filtered));
    }
}
