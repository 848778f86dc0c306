//! The RabbitMQ plumbing against a private real broker: clear connection errors, idempotent
//! quorum topology, confirmed publishing, every event form consumed and parsed, poison messages
//! moved aside with their error, unacked deliveries redelivered, unroutable publishes refused.

mod common;

use std::time::Duration;

use common::rabbitmq::RabbitMq;
use futures::StreamExt;
use lambda::events::broker::{
    self, Broker, BrokerError, EVENTS_EXCHANGE, INGEST_QUEUE, PARSE_ERROR_HEADER, POISON_QUEUE,
};
use lambda::events::cloudevent::{CloudEvent, Data};
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Consumer};

async fn next(consumer: &mut Consumer) -> Delivery {
    tokio::time::timeout(Duration::from_secs(20), consumer.next())
        .await
        .expect("a delivery within 20 s")
        .expect("consumer ended")
        .expect("delivery")
}

async fn ack(d: &Delivery) {
    d.ack(BasicAckOptions::default()).await.expect("ack");
}

#[tokio::test]
async fn an_unreachable_broker_is_named_without_its_password() {
    let err = Broker::connect("amqp://u:hunter2@127.0.0.1:9/%2f")
        .await
        .err()
        .expect("nothing listens on port 9");
    let msg = err.to_string();
    assert!(
        msg.contains("RabbitMQ at amqp://u:***@127.0.0.1:9/%2f"),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[tokio::test]
async fn connecting_waits_for_a_broker_that_is_still_starting_and_gives_up_in_time() {
    let start = std::time::Instant::now();
    let err = Broker::connect_with_retry("amqp://u:p@127.0.0.1:9/%2f", Duration::from_secs(1))
        .await
        .err()
        .expect("nothing listens on port 9");
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    assert!(
        err.to_string()
            .contains("RabbitMQ at amqp://u:***@127.0.0.1:9/%2f"),
        "{err}"
    );
    // Connecting before the broker is up: retried until it is.
    let rmq = RabbitMq::spawn();
    let b = Broker::connect_with_retry(&rmq.url(), Duration::from_secs(90))
        .await
        .expect("connects once the broker is up");
    b.declare_topology().await.expect("declare");
    b.close().await.expect("close");
}

#[tokio::test]
async fn events_flow_through_the_platform_topology() {
    let rmq = RabbitMq::start();
    // No guest, and a wrong password is refused by name.
    let guest = format!("amqp://guest:guest@127.0.0.1:{}/%2f", rmq.port);
    assert!(matches!(
        Broker::connect(&guest).await,
        Err(BrokerError::Connect { .. })
    ));
    let bad = format!("amqp://{}:wrong@127.0.0.1:{}/%2f", rmq.user, rmq.port);
    assert!(matches!(
        Broker::connect(&bad).await,
        Err(BrokerError::Connect { .. })
    ));

    let b = Broker::connect(&rmq.url()).await.expect("connect");
    b.declare_topology().await.expect("declare");
    b.declare_topology()
        .await
        .expect("declare again (idempotent)");
    let queues = rmq
        .ctl(&["list_queues", "name", "type", "durable"])
        .expect("list_queues");
    for q in [INGEST_QUEUE, POISON_QUEUE] {
        assert!(queues.contains(&format!("{q}\tquorum\ttrue")), "{queues}");
    }
    let mut ingest = b.consume(INGEST_QUEUE, "test", 10).await.expect("consume");

    // Structured mode, published by the platform.
    let mut e = CloudEvent::new("s-1", "storage/uploads", "file.created").expect("event");
    e.data = Some(Data::Json(serde_json::json!({"name": "a.txt"})));
    b.publish_event(&e).await.expect("publish");
    let d = next(&mut ingest).await;
    assert_eq!(d.routing_key.as_str(), "file.created");
    assert_eq!(broker::event_of(&d).expect("structured"), e);
    ack(&d).await;

    // Binary mode, as Knative's eventing-rabbitmq sends it.
    let mut h = FieldTable::default();
    for (k, v) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "b-1"),
        ("ce-source", "S2"),
        ("ce-type", "FileDelete"),
    ] {
        h.insert(k.into(), AMQPValue::LongString(v.into()));
    }
    let props = BasicProperties::default()
        .with_headers(h)
        .with_content_type("application/json".into());
    b.publish(EVENTS_EXCHANGE, "FileDelete", br#"{"f":1}"#, props)
        .await
        .expect("publish");
    let d = next(&mut ingest).await;
    let got = broker::event_of(&d).expect("binary");
    assert_eq!(
        (got.id.as_str(), got.source.as_str(), got.type_.as_str()),
        ("b-1", "S2", "FileDelete")
    );
    assert_eq!(got.data, Some(Data::Json(serde_json::json!({"f": 1}))));
    ack(&d).await;

    // The original system's message, raw, with no properties at all.
    let original = br#"{"event_source": "S1", "user_name": "alice", "event_data": {"type": "FileCreate", "filename": "test.py"}}"#;
    b.publish(
        EVENTS_EXCHANGE,
        "FileCreate",
        original,
        BasicProperties::default(),
    )
    .await
    .expect("publish");
    let d = next(&mut ingest).await;
    let got = broker::event_of(&d).expect("original");
    assert_eq!(
        (got.source.as_str(), got.type_.as_str(), got.namespace()),
        ("S1", "FileCreate", Some("alice"))
    );
    ack(&d).await;

    // Not an event: moved to the poison queue with the reason, and acked.
    b.publish(
        EVENTS_EXCHANGE,
        "junk",
        b"not json at all",
        BasicProperties::default(),
    )
    .await
    .expect("publish");
    let d = next(&mut ingest).await;
    let err = broker::event_of(&d).expect_err("garbage");
    b.to_poison(&d, &err).await.expect("poison");
    let mut poison = b
        .consume(POISON_QUEUE, "test-poison", 1)
        .await
        .expect("consume");
    let p = next(&mut poison).await;
    assert_eq!(p.data, b"not json at all");
    let why = broker::headers_of(&p.properties)
        .into_iter()
        .find(|(k, _)| k == PARSE_ERROR_HEADER)
        .map(|(_, v)| format!("{v:?}"))
        .expect("parse error header");
    assert!(why.contains("the message is not JSON"), "{why}");
    ack(&p).await;

    // A publish that no queue takes is an error, not a silent drop.
    let err = b
        .publish("", "no-such-queue", b"x", BasicProperties::default())
        .await
        .expect_err("unroutable");
    assert!(matches!(err, BrokerError::Unroutable { .. }), "{err}");

    // Manual acks: a delivery left unacked by a consumer that goes away is redelivered.
    let other = Broker::connect(&rmq.url())
        .await
        .expect("second connection");
    let mut first = other
        .consume(INGEST_QUEUE, "doomed", 1)
        .await
        .expect("consume");
    drop(ingest);
    b.close().await.expect("close");
    let publisher = Broker::connect(&rmq.url()).await.expect("publisher");
    let e2 = CloudEvent::new("r-1", "s", "t").expect("event");
    publisher.publish_event(&e2).await.expect("publish");
    let d = next(&mut first).await;
    assert!(!d.redelivered);
    other.close().await.expect("close without ack");
    let mut again = publisher
        .consume(INGEST_QUEUE, "survivor", 1)
        .await
        .expect("consume");
    let d = next(&mut again).await;
    assert!(d.redelivered, "the unacked delivery comes back");
    assert_eq!(broker::event_of(&d).expect("event").id, "r-1");
    ack(&d).await;
    // Nothing left behind (queue statistics may lag the acks a little).
    let empty = format!("{INGEST_QUEUE}\t0");
    let mut depth = String::new();
    for _ in 0..40 {
        depth = rmq.ctl(&["list_queues", "name", "messages"]).expect("list");
        if depth.lines().any(|l| l == empty) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(depth.lines().any(|l| l == empty), "{depth}");
    publisher.close().await.expect("close");
}

fn header(d: &Delivery, name: &str) -> Option<String> {
    broker::headers_of(&d.properties)
        .into_iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| match v {
            lambda::events::cloudevent::AmqpValue::Text(t) => Some(t),
            _ => None,
        })
}

#[tokio::test]
async fn retries_wait_in_the_broker_and_dead_letters_keep_the_history() {
    use lambda::api::ObjectKey;
    use lambda::events::delay;
    use lambda::events::execution::{
        Attempt, EventRef, Execution, ExecutionStatus, Outcome, Trigger, execution_id,
    };

    let rmq = RabbitMq::start();
    let b = Broker::connect(&rmq.url()).await.expect("connect");
    b.declare_topology().await.expect("topology");
    delay::declare_levels(&b).await.expect("levels");
    delay::declare_levels(&b)
        .await
        .expect("levels again (idempotent)");
    let work = "lambda.test.work";
    b.declare_quorum_queue(work).await.expect("work queue");
    let mut consumer = b.consume(work, "worker", 5).await.expect("consume");

    let mut h = FieldTable::default();
    h.insert("x-lambda-attempt".into(), AMQPValue::LongString("2".into()));
    let start = std::time::Instant::now();
    delay::publish_delayed(
        &b,
        work,
        Duration::from_millis(1500),
        b"retry me",
        BasicProperties::default().with_headers(h),
    )
    .await
    .expect("delayed publish");
    // Held by the broker: nothing arrives early, then it comes back with its headers.
    let d = next(&mut consumer).await;
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1400),
        "came back after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(10),
        "came back after {waited:?}"
    );
    assert_eq!(d.data, b"retry me");
    assert_eq!(header(&d, "x-lambda-attempt").as_deref(), Some("2"));
    ack(&d).await;

    // A dead letter carries the event and the whole attempt history.
    let key = ObjectKey::new("alice", "on-create");
    let event = CloudEvent::new("e-9", "S1", "FileCreate").expect("event");
    let t0 = chrono::Utc::now();
    let mut x = Execution::new(
        execution_id(&key, &event),
        &key,
        Trigger::Event { index: 0 },
        Some(EventRef::of(&event)),
        t0,
    );
    for _ in 0..2 {
        x.start_attempt(t0).expect("start");
        x.finish_attempt(t0, Outcome::FunctionError, Some(502), Some("boom"))
            .expect("end");
    }
    x.finish(ExecutionStatus::DeadLettered, Some("RetriesExhausted"), t0)
        .expect("final");
    delay::publish_dead_letter(&b, "failed-events", &event, &x)
        .await
        .expect("dead letter");
    let mut dlq = b
        .consume("failed-events", "operator", 1)
        .await
        .expect("consume");
    let d = next(&mut dlq).await;
    assert_eq!(broker::event_of(&d).expect("event"), event);
    assert_eq!(header(&d, delay::EXECUTION_HEADER), Some(x.id.clone()));
    assert_eq!(
        header(&d, delay::FUNCTION_HEADER).as_deref(),
        Some("alice/on-create")
    );
    assert_eq!(
        header(&d, delay::REASON_HEADER).as_deref(),
        Some("RetriesExhausted")
    );
    let attempts: Vec<Attempt> =
        serde_json::from_str(&header(&d, delay::ATTEMPTS_HEADER).expect("attempts")).expect("json");
    assert_eq!(attempts, x.attempts);
    ack(&d).await;
    let queues = rmq.ctl(&["list_queues", "name", "type"]).expect("list");
    assert!(queues.contains("failed-events\tquorum"), "{queues}");
    assert!(queues.contains("lambda.delay.2048s\tquorum"), "{queues}");
    b.close().await.expect("close");
}
