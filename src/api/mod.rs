//! The resource model: kinds, their specs and statuses, metadata, validation, manifest parsing
//! and JSON Schemas (design §2).

pub mod event;
pub mod eventsource;
pub mod function;
pub mod kind;
pub mod manifest;
pub mod meta;
pub mod node;
pub mod nodepool;
pub mod object;
pub mod schema;
pub mod snapshot;
pub mod trigger;
pub mod validation;
pub mod warmpool;

pub use event::{EventSpec, EventStatus, EventType, InvolvedObject};
pub use eventsource::{EventSourceSpec, EventSourceStatus};
pub use function::{FunctionSpec, FunctionStatus, Runtime, ScheduleStatus};
pub use kind::{AnyObject, Kind};
pub use meta::{Condition, ConditionStatus, Conditions, ObjectMeta, OwnerReference};
pub use node::{NodeSpec, NodeStatus};
pub use nodepool::{NodePoolSpec, NodePoolStatus};
pub use object::{API_VERSION, Object, ObjectKey, Resource};
pub use snapshot::{SnapshotImageSpec, SnapshotImageStatus};
pub use validation::{FieldError, FieldErrors};
pub use warmpool::{WarmPoolSpec, WarmPoolStatus};

/// A function object.
pub type Function = Object<FunctionSpec>;
/// A node pool object.
pub type NodePool = Object<NodePoolSpec>;
/// A node object.
pub type Node = Object<NodeSpec>;
/// An event object.
pub type Event = Object<EventSpec>;
/// An event source object.
pub type EventSource = Object<EventSourceSpec>;
/// A snapshot image object.
pub type SnapshotImage = Object<SnapshotImageSpec>;
/// A warm pool object.
pub type WarmPool = Object<WarmPoolSpec>;
