//! One event off the ingest queue: parse, match, record, enqueue, ack.
//!
//! Durability: for every matching function a `Queued` record is created (or found: a
//! redelivered event yields the same execution ids) and a job published with confirm, and only
//! then is the event acked. A crash in between redelivers the event; a record found still
//! `Queued` gets its job published again (the earlier one may not have been confirmed), so a
//! redelivery can run an execution twice but never loses one.

use std::time::Duration;

use chrono::Utc;
use lapin::message::Delivery;

use crate::events::broker::{Broker, event_of};
use crate::events::execution::ExecutionStatus;
use crate::events::execution::store::{self, Begin};
use crate::events::matching::executions_for;

use super::job::{EXECUTIONS_QUEUE, Job};
use super::{Context, ListenerError};

/// Pause before an event whose records could not be written goes back to the queue (etcd is
/// unreachable: retrying at once would spin).
const STORE_BACKOFF: Duration = Duration::from_secs(1);

/// Handles one delivery of the ingest queue; errors are logged here (the delivery is then
/// redelivered by the broker), so the caller only spawns it.
pub(super) async fn handle(ctx: &Context, broker: &Broker, delivery: Delivery) {
    if let Err(e) = process(ctx, broker, &delivery).await {
        tracing::warn!(error = %e, "event not processed; it goes back to the queue");
        let pause = if matches!(e, ListenerError::Record(_)) {
            STORE_BACKOFF
        } else {
            Duration::ZERO
        };
        super::requeue(&delivery, pause).await;
    }
}

async fn process(ctx: &Context, broker: &Broker, delivery: &Delivery) -> Result<(), ListenerError> {
    let event = match event_of(delivery) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "not an event; moved to the poison queue");
            ctx.metrics.poison.inc();
            broker.to_poison(delivery, &e).await?;
            return Ok(());
        }
    };
    ctx.metrics.events_received.inc();
    let functions = ctx.gw.functions.list();
    let executions = executions_for(&event, functions.iter().map(|f| f.as_ref()), Utc::now());
    if executions.is_empty() {
        ctx.metrics.events_unmatched.inc();
        tracing::info!(
            id = %event.id, source = %event.source, r#type = %event.type_,
            namespace = crate::events::matching::event_namespace(&event),
            "no function subscribes to this event (not matching records found)"
        );
    } else {
        ctx.metrics.events_matched.inc();
    }
    for execution in executions {
        let enqueue = match store::begin(&ctx.store, &execution).await? {
            Begin::New(_) => true,
            Begin::Duplicate(s) => {
                ctx.metrics.duplicates.inc();
                s.execution.status == ExecutionStatus::Queued
            }
        };
        if enqueue {
            let job = Job {
                execution_id: execution.id.clone(),
                function: execution.function_key(),
                callback: None,
                event: event.clone(),
                created_at: None,
            };
            broker
                .publish("", EXECUTIONS_QUEUE, &job.body(), job.properties())
                .await?;
        }
    }
    super::ack(delivery, crate::events::broker::INGEST_QUEUE).await
}
