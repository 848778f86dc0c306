//! `WarmPool`: generic, pre-started runtime containers of one runtime and memory class that the
//! gateway claims on a cold start and specialises for the function being called (design §3
//! "warm pool"), so that the first response from zero does not wait for a Swarm task start.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::function::{Endpoint, Runtime};
use super::meta::{Condition, Conditions};
use super::object::Resource;
use super::validation::FieldErrors;

/// Desired state of a warm pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarmPoolSpec {
    /// The runtime its containers run (`python3`, `node` or `shell`).
    pub runtime: Runtime,
    /// Containers the pool runs (0–100). A claimed container counts until it is released;
    /// Swarm then starts a fresh one in its place.
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Memory limit of each container in MiB (32–16384): the pool takes functions that ask for
    /// at most this much.
    #[serde(default = "default_memory")]
    pub memory_mb: u32,
    /// CPU limit of each container in millicores (50–16000).
    #[serde(default = "default_cpu")]
    pub cpu_millis: u32,
    /// Interpreters each container starts ahead of a claim (1–64); a function with a higher
    /// concurrency gets the rest started behind them.
    #[serde(default = "default_workers")]
    pub workers: u32,
    /// A claimed container that served nothing for this long is released (5–3600 s), when the
    /// function's own replicas have not taken over before.
    #[serde(default = "default_release_after")]
    pub release_after_idle_seconds: u32,
}

fn default_replicas() -> u32 {
    2
}
fn default_memory() -> u32 {
    128
}
fn default_cpu() -> u32 {
    500
}
fn default_workers() -> u32 {
    2
}
fn default_release_after() -> u32 {
    30
}

/// Observed state of a warm pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarmPoolStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Containers asked of Swarm.
    #[serde(default)]
    pub replicas: u32,
    /// Containers running and healthy (idle or claimed).
    #[serde(default)]
    pub ready_replicas: u32,
    /// Ready containers no function has claimed.
    #[serde(default)]
    pub idle: u32,
    /// Containers claimed by a function (serving it until released).
    #[serde(default)]
    pub claimed: u32,
    /// The Swarm service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    /// Every ready container, claimed or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Conditions for WarmPoolStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

impl Resource for WarmPoolSpec {
    type Status = WarmPoolStatus;
    const KIND: &'static str = "WarmPool";
    const PLURAL: &'static str = "warmpools";
    const SHORT: &'static [&'static str] = &["warmpool", "wp", "pool", "pools"];

    fn validate(&self, e: &mut FieldErrors) {
        if self.runtime == Runtime::Image {
            e.push(
                "runtime",
                "a warm pool runs a platform runtime (python3, node, shell), not custom images",
            );
        }
        e.range("replicas", self.replicas, 0, 100);
        e.range("memoryMb", self.memory_mb, 32, 16384);
        e.range("cpuMillis", self.cpu_millis, 50, 16000);
        e.range("workers", self.workers, 1, 64);
        e.range(
            "releaseAfterIdleSeconds",
            self.release_after_idle_seconds,
            5,
            3600,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let s: WarmPoolSpec = serde_saphyr::from_str("runtime: python3\n").unwrap();
        assert_eq!(
            (s.replicas, s.memory_mb, s.cpu_millis, s.workers),
            (2, 128, 500, 2)
        );
        let mut e = FieldErrors::default();
        s.validate(&mut e);
        assert!(e.is_empty(), "{e}");
        let bad: WarmPoolSpec =
            serde_saphyr::from_str("runtime: image\nreplicas: 101\nworkers: 0\n").unwrap();
        let mut e = FieldErrors::default();
        bad.validate(&mut e);
        let text = e.to_string();
        for f in ["runtime", "replicas", "workers"] {
            assert!(text.contains(f), "{f}: {text}");
        }
        assert!(serde_saphyr::from_str::<WarmPoolSpec>("runtime: shell\nreplica: 1\n").is_err());
    }
}
