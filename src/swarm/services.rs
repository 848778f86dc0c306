//! Services (create, inspect, update at the current version index, remove, list by label) and
//! their tasks, with the host ports Swarm published for each.

use std::collections::HashMap;

use bollard::models::{Service, ServiceSpec, Task, TaskState};
use bollard::query_parameters::{
    InspectServiceOptionsBuilder, ListServicesOptionsBuilder, ListTasksOptionsBuilder,
    UpdateServiceOptionsBuilder,
};
use chrono::{DateTime, Utc};

use super::{Swarm, SwarmError, labels};

/// Attempts of an update that keeps hitting "update out of sequence".
const UPDATE_ATTEMPTS: u32 = 8;

/// Which tasks to list.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Tasks of this service (name or id).
    pub service: Option<String>,
    /// Tasks whose labels include all of these.
    pub labels: Vec<(String, String)>,
    /// Only tasks whose desired state is this (`running`, `shutdown`, `accepted`).
    pub desired_state: Option<String>,
    /// Only tasks on this node (id or name).
    pub node: Option<String>,
}

/// One host port Swarm published for a task (host-mode publishing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PublishedPort {
    /// The container port.
    pub target: u16,
    /// The node's port that reaches it.
    pub published: u16,
}

impl Swarm {
    /// Creates a service; returns its id. A name already taken is [`SwarmError::Conflict`].
    pub async fn create_service(&self, spec: ServiceSpec) -> Result<String, SwarmError> {
        let object = format!("service {}", spec.name.as_deref().unwrap_or("?"));
        let resp = self
            .docker
            .create_service(spec, None)
            .await
            .map_err(|e| SwarmError::from_bollard("create", &object, e))?;
        resp.id.ok_or(SwarmError::Unexpected {
            op: "create",
            object,
            message: "no id in the answer".into(),
        })
    }

    /// A service by name or id; `None` when it does not exist.
    pub async fn inspect_service(&self, name: &str) -> Result<Option<Service>, SwarmError> {
        let opts = InspectServiceOptionsBuilder::default()
            .insert_defaults(false)
            .build();
        match self.docker.inspect_service(name, Some(opts)).await {
            Ok(s) => Ok(Some(s)),
            Err(e) => match SwarmError::from_bollard("inspect", &format!("service {name}"), e) {
                e if e.is_not_found() => Ok(None),
                e => Err(e),
            },
        }
    }

    /// Updates a service at its current version index: `change` gets the freshly read service
    /// and returns the spec to write, or `None` when nothing needs to change. "update out of
    /// sequence" (someone wrote in between) re-reads and retries. Returns whether it wrote.
    pub async fn update_service(
        &self,
        name: &str,
        mut change: impl FnMut(&Service) -> Option<ServiceSpec>,
    ) -> Result<bool, SwarmError> {
        let object = format!("service {name}");
        for _ in 0..UPDATE_ATTEMPTS {
            let current = self
                .inspect_service(name)
                .await?
                .ok_or(SwarmError::NotFound {
                    op: "update",
                    object: object.clone(),
                    message: "service does not exist".into(),
                })?;
            let Some(spec) = change(&current) else {
                return Ok(false);
            };
            let version = current.version.and_then(|v| v.index).unwrap_or(0);
            let opts = UpdateServiceOptionsBuilder::default()
                .version(i32::try_from(version).unwrap_or(i32::MAX))
                .build();
            match self.docker.update_service(name, spec, opts, None).await {
                Ok(_) => return Ok(true),
                Err(e) => {
                    let e = SwarmError::from_bollard("update", &object, e);
                    if !e.is_out_of_sequence() {
                        return Err(e);
                    }
                    tracing::debug!(service = name, "update out of sequence; re-reading");
                }
            }
        }
        Err(SwarmError::OutOfSequence {
            op: "update",
            object,
            attempts: UPDATE_ATTEMPTS,
        })
    }

    /// Removes a service; absent is fine.
    pub async fn remove_service(&self, name: &str) -> Result<(), SwarmError> {
        match self.docker.delete_service(name).await {
            Ok(()) => Ok(()),
            Err(e) => match SwarmError::from_bollard("remove", &format!("service {name}"), e) {
                e if e.is_not_found() => Ok(()),
                e => Err(e),
            },
        }
    }

    /// Services whose labels include all of `labels`.
    pub async fn list_services(&self, labels: &[(&str, &str)]) -> Result<Vec<Service>, SwarmError> {
        let opts = ListServicesOptionsBuilder::default()
            .filters(&labels::filters(labels))
            .build();
        self.docker
            .list_services(Some(opts))
            .await
            .map_err(|e| SwarmError::from_bollard("list", "services", e))
    }

    /// Tasks matching `filter`.
    pub async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, SwarmError> {
        let mut f: HashMap<String, Vec<String>> = HashMap::new();
        if let Some(s) = &filter.service {
            f.insert("service".into(), vec![s.clone()]);
        }
        if !filter.labels.is_empty() {
            f.insert(
                "label".into(),
                filter
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
            );
        }
        if let Some(d) = &filter.desired_state {
            f.insert("desired-state".into(), vec![d.clone()]);
        }
        if let Some(n) = &filter.node {
            f.insert("node".into(), vec![n.clone()]);
        }
        let opts = ListTasksOptionsBuilder::default().filters(&f).build();
        let object = match &filter.service {
            Some(s) => format!("tasks of service {s}"),
            None => "tasks".to_string(),
        };
        self.docker
            .list_tasks(Some(opts))
            .await
            .map_err(|e| SwarmError::from_bollard("list", &object, e))
    }
}

/// The host ports Swarm published for a task, from `Status.PortStatus`, in Docker's order.
///
/// Docker lists each host-mode port once per address family, IPv4 first: usually the same port
/// twice, but the two differ when the IPv4 port was taken on the node (e.g. by a client's
/// ephemeral port, which shares the 32768+ range). Exact duplicates are dropped and the order is
/// kept, so the first entry of a target port is its IPv4 port.
pub fn published_ports(task: &Task) -> Vec<PublishedPort> {
    let all: Vec<PublishedPort> = task
        .status
        .as_ref()
        .and_then(|s| s.port_status.as_ref())
        .and_then(|p| p.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some(PublishedPort {
                target: u16::try_from(p.target_port?).ok()?,
                published: u16::try_from(p.published_port?).ok().filter(|p| *p != 0)?,
            })
        })
        .collect();
    let mut out: Vec<PublishedPort> = Vec::with_capacity(all.len());
    for p in all {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// When a task's status last changed (its `Status.Timestamp`), if Docker said.
pub fn task_time(task: &Task) -> Option<DateTime<Utc>> {
    let ts = task.status.as_ref()?.timestamp.as_ref()?;
    DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The task's observed state.
pub fn task_state(task: &Task) -> Option<TaskState> {
    task.status.as_ref()?.state
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{EndpointPortConfig, PortStatus, TaskStatus};

    fn port(target: i64, published: i64) -> EndpointPortConfig {
        EndpointPortConfig {
            target_port: Some(target),
            published_port: Some(published),
            ..Default::default()
        }
    }

    #[test]
    fn published_ports_are_deduplicated() {
        let task = Task {
            status: Some(TaskStatus {
                port_status: Some(PortStatus {
                    ports: Some(vec![
                        port(8080, 32770),
                        port(8080, 32769),
                        port(8080, 32770),
                        port(9090, 0),
                    ]),
                }),
                timestamp: Some("2026-11-25T10:00:00.123456789Z".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            published_ports(&task),
            vec![
                PublishedPort {
                    target: 8080,
                    published: 32770
                },
                PublishedPort {
                    target: 8080,
                    published: 32769
                }
            ],
            "IPv4 (listed first) stays first"
        );
        assert!(task_time(&task).is_some());
        assert!(published_ports(&Task::default()).is_empty());
    }
}
