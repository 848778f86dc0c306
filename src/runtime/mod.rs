//! The controller runtime on etcd (design §3 "runtime"), after kube-runtime: a [`watcher`]
//! feeds a reflector [`Cache`]; changes of the kind, of owned kinds and of mapped sources
//! trigger keys in a debounced per-key queue ([`scheduler`]); the [`runner`] reconciles them
//! with bounded concurrency, one run per key at a time, requeues and per-key backoff; the
//! [`Controller`] ties it together. Helpers: [`finalizer()`], the status writer
//! ([`status::patch_status`]), condition helpers ([`conditions`]), an event [`Recorder`],
//! leader election ([`leader`]) and metrics.

pub mod action;
pub mod conditions;
pub mod controller;
pub mod events;
pub mod finalizer;
pub mod leader;
pub mod metrics;
pub mod reflector;
pub mod runner;
pub mod scheduler;
pub mod status;
pub mod watcher;

pub use action::Action;
pub use controller::{Controller, ControllerConfig};
pub use events::{EventType, Recorder};
pub use finalizer::{FinalizerError, FinalizerEvent, finalizer};
pub use metrics::Metrics;
pub use reflector::Cache;
pub use watcher::{WatcherConfig, WatcherEvent, watcher};
