//! The hardened Swarm service every platform workload runs as: a function's replicas and a warm
//! pool's containers alike (the agent as an unprivileged user, read-only root file system with
//! tmpfs scratch space, every capability dropped, an init process, memory and CPU limits, the
//! image's health check, restart on any exit, start-first rolling updates, the agent's port
//! published on the node).

use std::collections::BTreeMap;
use std::time::Duration;

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, EndpointSpecModeEnum, HealthConfig, Limit, Mount, MountTmpfsOptions, MountType,
    ResourceObject, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
    ServiceSpecRollbackConfig, ServiceSpecRollbackConfigFailureActionEnum,
    ServiceSpecRollbackConfigOrderEnum, ServiceSpecUpdateConfig,
    ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum, TaskSpec,
    TaskSpecContainerSpec, TaskSpecContainerSpecConfigs, TaskSpecContainerSpecFile1,
    TaskSpecContainerSpecSecrets, TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum,
};

use crate::swarm::labels::{self, Owner};

use super::function::spec::{AGENT_PORT, FUNCTION_UID, hex_hash};

/// Timings of the services the controller writes (short, so updates take seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceTuning {
    /// SIGTERM → SIGKILL of a replaced task.
    pub stop_grace: Duration,
    /// How long a new task must stay up before the update moves on.
    pub update_monitor: Duration,
    /// Delay before a failed task is restarted (Docker's default, 5 s, makes recovery slow).
    pub restart_delay: Duration,
    /// Health check interval (the image's HEALTHCHECK command, run this often).
    pub health_interval: Duration,
    /// Health check timeout.
    pub health_timeout: Duration,
    /// Consecutive failures before a task is unhealthy.
    pub health_retries: u32,
    /// Failed checks in this time after start do not count (a loaded node starts slowly; a
    /// passing check still marks the task healthy at once). As long as the agent gives its
    /// workers to start (30 s), so Swarm does not kill a replica the agent still waits for.
    pub health_start_period: Duration,
    /// Size of the writable /tmp.
    pub tmp_size_bytes: i64,
}

impl Default for ServiceTuning {
    fn default() -> Self {
        ServiceTuning {
            stop_grace: Duration::from_secs(2),
            update_monitor: Duration::from_secs(2),
            restart_delay: Duration::from_secs(1),
            health_interval: Duration::from_secs(1),
            health_timeout: Duration::from_secs(2),
            health_retries: 3,
            health_start_period: Duration::from_secs(30),
            tmp_size_bytes: 64 * 1024 * 1024,
        }
    }
}

/// One workload: what differs between a function's service and a warm pool's.
#[derive(Debug, Clone)]
pub struct Workload<'a> {
    /// The service name.
    pub name: String,
    pub owner: &'a Owner,
    /// The owner's generation (a label: editing only metadata must not restart tasks).
    pub generation: i64,
    pub image: &'a str,
    /// The agent's environment (`KEY=value`).
    pub env: Vec<String>,
    /// Files from Swarm configs (the code, a pool's token).
    pub configs: Vec<TaskSpecContainerSpecConfigs>,
    /// Files from Swarm secrets.
    pub secrets: Vec<TaskSpecContainerSpecSecrets>,
    /// Writable tmpfs mounts beyond `/tmp`.
    pub tmpfs: Vec<Mount>,
    pub memory_mb: u32,
    pub cpu_millis: u32,
    pub replicas: u32,
    pub tuning: &'a ServiceTuning,
    /// Swarm placement constraints (e.g. `node.role==worker`).
    pub constraints: &'a [String],
}

/// A config mounted read-only at `path`, owned by the agent's user.
pub fn file_config(id: &str, name: &str, path: &str, mode: u32) -> TaskSpecContainerSpecConfigs {
    TaskSpecContainerSpecConfigs {
        file: Some(TaskSpecContainerSpecFile1 {
            name: Some(path.into()),
            uid: Some(FUNCTION_UID.into()),
            gid: Some(FUNCTION_UID.into()),
            mode: Some(mode),
        }),
        config_id: Some(id.to_string()),
        config_name: Some(name.to_string()),
        ..Default::default()
    }
}

/// A tmpfs of `size` bytes at `target` (`mode` e.g. `0o1777` for a directory the unprivileged
/// agent writes into).
pub fn tmpfs(target: &str, size: i64, mode: Option<i64>) -> Mount {
    Mount {
        target: Some(target.into()),
        typ: Some(MountType::TMPFS),
        tmpfs_options: Some(MountTmpfsOptions {
            size_bytes: Some(size),
            mode,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The service spec of a workload, labelled with its owner, its generation and the hash of
/// everything else (`lambda.spec-hash`), so a reconcile can tell whether the running service is
/// already what it would write.
pub fn service_spec(w: &Workload<'_>) -> ServiceSpec {
    let owner = w.owner;
    let t = w.tuning;
    let mb = i64::from(w.memory_mb) * 1024 * 1024;
    let mut mounts = vec![tmpfs("/tmp", t.tmp_size_bytes, None)];
    mounts.extend(w.tmpfs.iter().cloned());
    let container = TaskSpecContainerSpec {
        image: Some(w.image.to_string()),
        // Container labels map Docker's container events back to the function. No generation
        // here: a metadata-only edit must not restart tasks.
        labels: Some(owner.labels()),
        env: Some(w.env.clone()),
        user: Some(FUNCTION_UID.to_string()),
        read_only: Some(true),
        mounts: Some(mounts),
        stop_grace_period: Some(nanos(t.stop_grace)),
        // Test left empty: the image's HEALTHCHECK command runs, at these intervals.
        health_check: Some(HealthConfig {
            interval: Some(nanos(t.health_interval)),
            timeout: Some(nanos(t.health_timeout)),
            retries: Some(i64::from(t.health_retries)),
            start_period: Some(nanos(t.health_start_period)),
            ..Default::default()
        }),
        configs: (!w.configs.is_empty()).then(|| w.configs.clone()),
        secrets: (!w.secrets.is_empty()).then(|| w.secrets.clone()),
        init: Some(true),
        // API 1.41 has no NoNewPrivileges for services (added in 1.46): drop every capability
        // instead; the agent needs none (it binds an unprivileged port as an unprivileged user).
        capability_drop: Some(vec!["ALL".into()]),
        ..Default::default()
    };
    let task = TaskSpec {
        container_spec: Some(container),
        resources: Some(TaskSpecResources {
            limits: Some(Limit {
                nano_cpus: Some(i64::from(w.cpu_millis) * 1_000_000),
                memory_bytes: Some(mb),
                ..Default::default()
            }),
            // The memory reservation makes the scheduler place replicas only where they fit.
            reservations: Some(ResourceObject {
                memory_bytes: Some(mb),
                ..Default::default()
            }),
            ..Default::default()
        }),
        placement: (!w.constraints.is_empty()).then(|| TaskSpecPlacement {
            constraints: Some(w.constraints.to_vec()),
            ..Default::default()
        }),
        restart_policy: Some(TaskSpecRestartPolicy {
            // `any`, not `on-failure`: the agent exits 0 on SIGTERM, so a task stopped from
            // outside the orchestrator (a health-check kill racing the exit, an engine shutting
            // down) ends `Complete`, and with `on-failure` Swarm never replaces it.
            condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
            delay: Some(nanos(t.restart_delay)),
            max_attempts: Some(0),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut spec = ServiceSpec {
        name: Some(w.name.clone()),
        labels: Some(owner.labels()),
        task_template: Some(task),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(i64::from(w.replicas)),
            }),
            ..Default::default()
        }),
        // Start the new task before stopping the old one, one at a time: no capacity dip.
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(1),
            delay: Some(0),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
            monitor: Some(nanos(t.update_monitor)),
            max_failure_ratio: Some(0.0),
            order: Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST),
        }),
        rollback_config: Some(ServiceSpecRollbackConfig {
            parallelism: Some(1),
            delay: Some(0),
            failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
            monitor: Some(nanos(t.update_monitor)),
            max_failure_ratio: Some(0.0),
            order: Some(ServiceSpecRollbackConfigOrderEnum::START_FIRST),
        }),
        // No IPVS here (no VIPs, no routing mesh): each task publishes its own random host port,
        // read back from the task's PortStatus.
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ports: Some(vec![EndpointPortConfig {
                name: Some("agent".into()),
                protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                target_port: Some(i64::from(AGENT_PORT)),
                published_port: None,
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
            }]),
        }),
        ..Default::default()
    };
    let hash = spec_hash(&spec);
    if let Some(l) = spec.labels.as_mut() {
        l.insert(labels::SPEC_HASH.into(), hash);
        l.insert(labels::GENERATION.into(), w.generation.to_string());
    }
    spec
}

/// A stable hash of a service spec (JSON with object keys sorted: label maps are `HashMap`s).
pub fn spec_hash(spec: &ServiceSpec) -> String {
    fn canonical(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let sorted: BTreeMap<String, serde_json::Value> =
                    m.into_iter().map(|(k, v)| (k, canonical(v))).collect();
                serde_json::Value::Object(sorted.into_iter().collect())
            }
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.into_iter().map(canonical).collect())
            }
            other => other,
        }
    }
    let v = serde_json::to_value(spec)
        .map(canonical)
        .unwrap_or_default();
    hex_hash(&[v.to_string().as_bytes()])[..16].to_string()
}

/// A label of a service spec (e.g. `lambda.spec-hash`).
pub fn label_of(spec: Option<&ServiceSpec>, key: &str) -> Option<String> {
    spec?.labels.as_ref()?.get(key).cloned()
}
