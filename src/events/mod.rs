//! Events and asynchronous executions (design §3 "events", §6): the CloudEvents 1.0 model and
//! its parsing from every accepted wire form, the matching of events to the functions subscribed
//! to them, execution records and their retention, the retry policy, and when schedules fire.
//!
//! Everything here is independent of the broker: the listener and the gateway feed it bytes and
//! headers and act on its decisions, so the rules are unit-tested without RabbitMQ.

pub mod broker;
pub mod cloudevent;
pub mod delay;
pub mod execution;
pub mod listener;
pub mod matching;
pub mod publisher;
pub mod retry;
pub mod schedule;
pub mod source;
