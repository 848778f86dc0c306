//! The controller runtime on etcd (design §3 "runtime"), after kube-runtime: a [`watcher`]
//! feeds a reflector [`Cache`]; changes of the kind, of owned kinds and of mapped sources
//! trigger keys in a debounced per-key queue ([`scheduler`]); the [`runner`] reconciles them
//! with bounded concurrency, one run per key at a time, requeues and per-key backoff; the
//! [`Controller`] ties it together. Helpers: [`finalizer()`], the status writer
//! ([`status::patch_status`]), condition helpers ([`conditions`]), an event [`Recorder`],
//! leader election ([`leader`]) and metrics.
//!
//! A reconciler in a page (see `reconcilers::gc` for a real one):
//!
//! ```ignore
//! struct Ctx { store: Store, nodes: Cache<NodeSpec>, recorder: Recorder }
//!
//! async fn reconcile(pool: Arc<NodePool>, ctx: Arc<Ctx>) -> Result<Action, FinalizerError<MyError>> {
//!     finalizer(&ctx.store, "lambda/example", pool, |ev| async move {
//!         match ev {
//!             FinalizerEvent::Apply(pool) => {
//!                 let owned = ctx.nodes.by_owner(pool.metadata.uid.as_deref().unwrap_or(""));
//!                 status::patch_status(&ctx.store, &pool, |s| {
//!                     s.replicas = owned.len() as u32;
//!                     set_condition(&mut s.conditions, "Ready", ConditionStatus::True,
//!                                   "NodesCounted", "", Some(pool.generation()));
//!                 }).await?;                       // writes only when something changed
//!                 Ok(Action::requeue(Duration::from_secs(60)))
//!             }
//!             FinalizerEvent::Cleanup(_pool) => Ok(Action::await_change()),
//!         }
//!     }).await
//! }
//!
//! let nodes = Cache::<NodeSpec>::new();
//! Controller::<NodePoolSpec>::new(store.clone(), None, ControllerConfig::named("example"))
//!     .with_metrics(metrics)
//!     .owns(nodes.clone())                          // a Node change triggers its pool
//!     .graceful_shutdown_on(stop)
//!     .run(reconcile, |_, _, _| Action::backoff(), Arc::new(Ctx { store, nodes, recorder }))
//!     .await;
//! ```

pub mod action;
pub mod conditions;
pub mod controller;
pub mod events;
pub mod finalizer;
pub mod leader;
pub mod metrics;
pub mod periodic;
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
