//! Lambda on OpenStack: a serverless platform that runs functions as Docker Swarm services on
//! worker VMs it provisions through OpenStack Nova, converged by reconcilers from desired state
//! kept in etcd. See `README.md` and the design notes for the architecture.

#![forbid(unsafe_code)]

pub mod api;
pub mod bench;
pub mod cli;
pub mod cloud;
pub mod console;
pub mod events;
pub mod gateway;
pub mod openstack;
pub mod reconcilers;
pub mod runtime;
pub mod store;
pub mod swarm;
