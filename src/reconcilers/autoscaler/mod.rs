//! The node autoscaler (design §3 "autoscaler", issue 13): worker pools follow the functions'
//! demand. Its decisions are pure functions of a simulated cluster, unit-tested without etcd,
//! Swarm or a cloud:
//!
//! - [`template`]: a pool's template node, built from its Nova flavor minus the system
//!   reserve, so a pool at zero nodes can be planned for;
//! - [`scale_up`]: first-fit-decreasing placement of pending work onto existing free
//!   capacity, then onto new template nodes of the least-wasting pool, within max and quota;
//! - [`scale_down`]: consolidation of under-used nodes whose tasks fit elsewhere, after the
//!   unneeded window, empty nodes first and in bulk, others one at a time;
//! - [`outcome`]: what a pass writes — each pool's `status.desiredReplicas` and
//!   `status.autoscaler`, and the `NoPoolFits` condition of functions no pool can take.
//!
//! [`model`] holds the simulated cluster (amounts, nodes, work items), [`constraints`]
//! Swarm's placement constraints as its scheduler reads them, and [`observe`] turns what Swarm
//! reports (pending tasks, nodes, their tasks' reservations) into those inputs. [`pass`]
//! decides one pass from what was read, and [`run`] is the loop that reads and writes.

pub mod constraints;
pub mod model;
pub mod observe;
pub mod outcome;
pub mod pass;
pub mod run;
pub mod scale_down;
pub mod scale_up;
pub mod template;
