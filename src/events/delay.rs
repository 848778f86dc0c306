//! Retry delays held by the broker, and dead letters (design §6 "Retries").
//!
//! A retry is published to a **delay level**: for each power of two seconds `L` (1 s … 2048 s),
//! a fanout exchange and a quorum queue `lambda.delay.<L>s` without consumers, whose messages
//! carry their exact delay as a per-message TTL and, once it expires, are dead-lettered to the
//! default exchange under their own routing key, which is the queue they go back to. So a
//! listener restart loses no pending retry and no consumer sleeps on a message. A delay `d`
//! goes to the largest level `L <= d`, so the messages of one level expire within a factor of
//! two of each other and the one at the head delays those behind it by less than `L`: a retry
//! runs at most twice its delay late. Dead-lettering is at-least-once (quorum queues with the
//! `at-least-once` strategy), so a broker crash mid-way duplicates a retry rather than losing it.
//!
//! What kept failing goes to the function's dead-letter queue with every attempt's outcome in
//! the [`ATTEMPTS_HEADER`] header ([`publish_dead_letter`]).

use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, ExchangeKind};

use super::broker::{Broker, BrokerError};
use super::cloudevent::{CloudEvent, STRUCTURED_CONTENT_TYPE};
use super::execution::Execution;

/// The delay levels in seconds: powers of two up to the retry policy's one-hour cap.
pub const LEVELS: [u64; 12] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048];
/// Header of a dead letter: the JSON list of the execution's attempts.
pub const ATTEMPTS_HEADER: &str = "x-lambda-attempts";
/// Header of a dead letter or retry: the execution id.
pub const EXECUTION_HEADER: &str = "x-lambda-execution-id";
/// Header of a dead letter: `namespace/name` of the function.
pub const FUNCTION_HEADER: &str = "x-lambda-function";
/// Header of a dead letter: why the execution ended (`RetriesExhausted`, `EventTooOld`).
pub const REASON_HEADER: &str = "x-lambda-reason";

/// The exchange and queue name of the level of `seconds`.
pub fn level_name(seconds: u64) -> String {
    format!("lambda.delay.{seconds}s")
}

/// The level (seconds) a delay waits in: the largest one not above it, at least the first.
pub fn level_for(delay: Duration) -> u64 {
    LEVELS
        .iter()
        .rev()
        .copied()
        .find(|&l| Duration::from_secs(l) <= delay)
        .unwrap_or(LEVELS[0])
}

/// Declares every delay level (idempotent).
pub async fn declare_levels(broker: &Broker) -> Result<(), BrokerError> {
    for level in LEVELS {
        let name = level_name(level);
        let mut args = FieldTable::default();
        let text = |s: &str| AMQPValue::LongString(LongString::from(s.to_string()));
        args.insert("x-queue-type".into(), text("quorum"));
        // Expired messages go to the default exchange under their routing key: their queue.
        args.insert("x-dead-letter-exchange".into(), text(""));
        args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        // Required by at-least-once dead-lettering.
        args.insert("x-overflow".into(), text("reject-publish"));
        broker.declare_exchange(&name, ExchangeKind::Fanout).await?;
        broker.declare_queue(&name, args).await?;
        broker.bind(&name, &name, "").await?;
    }
    Ok(())
}

/// Publishes `body` to come back to `queue` after `delay` (levels must be declared), with the
/// given properties (headers carry the attempt count and execution id).
pub async fn publish_delayed(
    broker: &Broker,
    queue: &str,
    delay: Duration,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), BrokerError> {
    let level = level_for(delay);
    // Per-message TTL in milliseconds, as a decimal string (AMQP's `expiration`).
    let ms = delay.as_millis().max(1).to_string();
    broker
        .publish(
            &level_name(level),
            queue,
            body,
            properties.with_expiration(ms.into()),
        )
        .await
}

/// Declares the dead-letter queue `queue` (a quorum queue) and publishes the execution's event
/// to it in structured mode, with the execution id, function, reason and every attempt in
/// headers, so an operator reading it with any AMQP client sees the whole history.
pub async fn publish_dead_letter(
    broker: &Broker,
    queue: &str,
    event: &CloudEvent,
    execution: &Execution,
) -> Result<(), BrokerError> {
    broker.declare_quorum_queue(queue).await?;
    let mut h = FieldTable::default();
    let text = |s: String| AMQPValue::LongString(LongString::from(s));
    // Serialising plain records to JSON cannot fail; an empty list would still be honest.
    let attempts = serde_json::to_string(&execution.attempts).unwrap_or_else(|_| "[]".into());
    h.insert(ATTEMPTS_HEADER.into(), text(attempts));
    h.insert(EXECUTION_HEADER.into(), text(execution.id.clone()));
    h.insert(
        FUNCTION_HEADER.into(),
        text(format!("{}/{}", execution.namespace, execution.function)),
    );
    if let Some(r) = &execution.reason {
        h.insert(REASON_HEADER.into(), text(r.clone()));
    }
    let properties = BasicProperties::default()
        .with_content_type(STRUCTURED_CONTENT_TYPE.into())
        .with_headers(h);
    broker
        .publish("", queue, &event.to_structured_bytes(), properties)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_wait_in_the_largest_level_not_above_them() {
        assert_eq!(level_for(Duration::from_millis(10)), 1);
        assert_eq!(level_for(Duration::from_millis(1999)), 1);
        assert_eq!(level_for(Duration::from_secs(2)), 2);
        assert_eq!(level_for(Duration::from_secs(3)), 2);
        assert_eq!(level_for(Duration::from_secs(1500)), 1024);
        assert_eq!(level_for(super::super::retry::MAX_DELAY), 2048);
        assert_eq!(level_name(4), "lambda.delay.4s");
        // Every level is below twice the previous one's upper edge: the lateness bound.
        assert!(LEVELS.windows(2).all(|w| w[1] == 2 * w[0]));
    }
}
