//! Benchmarks run by `lambda bench …`, each measured side by side with the physical limit in
//! the same run (raw etcd for the store), printed as a table with the targets.

pub mod cloud;
pub mod coldstart;
pub mod events;
pub mod invoke;
pub mod nginx;
pub mod nodes;
pub mod stats;
pub mod store;
