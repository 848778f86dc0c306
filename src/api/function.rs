//! `Function`: code, runtime and scaling of one serverless function.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::{Condition, Conditions};
use super::object::Resource;
pub use super::trigger::EventTrigger;
use super::validation::{FieldErrors, check_dns_label};

/// The language runtime a function runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// `handler: module.function`, called as `function(event, context)`.
    Python3,
    /// `handler: file.export`, an exported (async) function.
    Node,
    /// The code is a script: the event on stdin, the result on stdout.
    Shell,
    /// A custom image (`spec.image`) that bundles the agent or serves its HTTP contract.
    Image,
}

impl Runtime {
    /// The name used in manifests and image tags.
    pub fn as_str(&self) -> &'static str {
        match self {
            Runtime::Python3 => "python3",
            Runtime::Node => "node",
            Runtime::Shell => "shell",
            Runtime::Image => "image",
        }
    }
}

/// Where the function's code comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Code {
    /// The source itself. What the store holds: the CLI inlines `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    /// A path relative to the manifest, read and inlined by `lambda apply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// An environment variable of the function's process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// A Swarm secret made available to the function as a file under `/run/secrets/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// Name of the secret.
    pub name: String,
    /// Optional environment variable that receives the secret's file path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// Memory and CPU limits of one replica. Memory also decides which nodes fit a replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FunctionResources {
    /// Memory limit in MiB (32–16384).
    #[serde(default = "default_memory")]
    pub memory_mb: u32,
    /// CPU limit in millicores (50–16000).
    #[serde(default = "default_cpu")]
    pub cpu_millis: u32,
}

fn default_memory() -> u32 {
    128
}
fn default_cpu() -> u32 {
    500
}

impl Default for FunctionResources {
    fn default() -> Self {
        FunctionResources {
            memory_mb: default_memory(),
            cpu_millis: default_cpu(),
        }
    }
}

/// How the function autoscaler sizes a function from its load (Knative's KPA): replicas so that
/// each serves `concurrency × targetUtilization` requests at once on average over the stable
/// window, or over the panic window when a burst reaches `panicThreshold` × the current
/// capacity (then it never scales down until a stable window passed without a burst).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FunctionAutoscaling {
    /// Share of `concurrency` a replica is sized for (0.1–1.0).
    #[serde(default = "default_utilization")]
    pub target_utilization: f64,
    /// Window of the average that scales in and out (6–3600 s).
    #[serde(default = "default_stable_window")]
    pub stable_window_seconds: u32,
    /// Window of the average that reacts to bursts (1 s – the stable window).
    #[serde(default = "default_panic_window")]
    pub panic_window_seconds: u32,
    /// Burst over the current capacity that enters panic mode (1.1–10).
    #[serde(default = "default_panic_threshold")]
    pub panic_threshold: f64,
    /// Requests the gateway holds for this function while it has no free replica (scaling
    /// from zero, every replica busy); past it, 503 with `Retry-After` (1–100000).
    #[serde(default = "default_max_held")]
    pub max_held_requests: u32,
    /// A call to the function at zero may be served by a container of a matching `WarmPool`,
    /// specialised for it, while its own replica starts (false: always wait for a Swarm task).
    #[serde(default = "yes")]
    pub warm_pool: bool,
}

fn default_utilization() -> f64 {
    0.7
}
fn default_stable_window() -> u32 {
    60
}
fn default_panic_window() -> u32 {
    6
}
fn default_panic_threshold() -> f64 {
    2.0
}
fn default_max_held() -> u32 {
    1000
}

impl Default for FunctionAutoscaling {
    fn default() -> Self {
        FunctionAutoscaling {
            target_utilization: default_utilization(),
            stable_window_seconds: default_stable_window(),
            panic_window_seconds: default_panic_window(),
            panic_threshold: default_panic_threshold(),
            max_held_requests: default_max_held(),
            warm_pool: true,
        }
    }
}

impl FunctionAutoscaling {
    fn validate(&self, e: &mut FieldErrors) {
        e.range("targetUtilization", self.target_utilization, 0.1, 1.0);
        e.range("stableWindowSeconds", self.stable_window_seconds, 6, 3600);
        e.range(
            "panicWindowSeconds",
            self.panic_window_seconds,
            1,
            self.stable_window_seconds.max(1),
        );
        e.range("panicThreshold", self.panic_threshold, 1.1, 10.0);
        e.range("maxHeldRequests", self.max_held_requests, 1, 100_000);
    }
}

/// A cron schedule that invokes the function with a fixed payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleTrigger {
    /// Cron expression: 5 fields (`*/5 * * * *`), or 6 with seconds first (`*/2 * * * * *`).
    pub cron: String,
    /// IANA time zone the expression is read in (e.g. `Europe/Berlin`); UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The event passed on each run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

/// How a function can be invoked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Triggers {
    /// Invocable over the gateway's REST API.
    #[serde(default = "yes")]
    pub http: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleTrigger>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventTrigger>,
}

fn yes() -> bool {
    true
}

impl Default for Triggers {
    fn default() -> Self {
        Triggers {
            http: true,
            schedules: Vec::new(),
            events: Vec::new(),
        }
    }
}

/// Retries of asynchronous invocations (queue, schedule, async REST).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1–10).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each time (1–3600 s).
    #[serde(default = "default_backoff")]
    pub backoff_seconds: u32,
    /// Queue that receives events that failed every attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_queue: Option<String>,
    /// An event is not retried once it is older than this, counted from when the platform
    /// accepted it (60–86400 s).
    #[serde(default = "default_max_event_age")]
    pub max_event_age_seconds: u32,
}

fn default_attempts() -> u32 {
    3
}
fn default_backoff() -> u32 {
    1
}
fn default_max_event_age() -> u32 {
    6 * 3600
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: default_attempts(),
            backoff_seconds: default_backoff(),
            dead_letter_queue: None,
            max_event_age_seconds: default_max_event_age(),
        }
    }
}

/// Desired state of a function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FunctionSpec {
    pub runtime: Runtime,
    /// Custom image; required with `runtime: image`, forbidden otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The code; required for every runtime but `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Code>,
    /// Entry point: `module.function` (python3), `file.export` (node). Defaults per runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretRef>,
    #[serde(default)]
    pub resources: FunctionResources,
    /// Per-invocation time limit, enforced by the agent and the gateway (1–900 s).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,
    /// Largest accepted event in bytes (1 B – 6 MiB).
    #[serde(default = "default_payload")]
    pub max_payload_bytes: u32,
    /// Invocations one replica serves at once (1–1000).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    #[serde(default = "default_min_replicas")]
    pub min_replicas: u32,
    #[serde(default = "default_max_replicas")]
    pub max_replicas: u32,
    /// Time without a request or a queued execution after which the function scales to zero
    /// (10–86400 s); absent keeps `minReplicas` running (with `minReplicas: 0`, zero after
    /// the stable window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to_zero_after_seconds: Option<u32>,
    /// How replicas follow the load between `minReplicas` and `maxReplicas`.
    #[serde(default)]
    pub autoscaling: FunctionAutoscaling,
    #[serde(default)]
    pub triggers: Triggers,
    #[serde(default)]
    pub retry: RetryPolicy,
}

fn default_timeout() -> u32 {
    30
}
fn default_payload() -> u32 {
    1024 * 1024
}
fn default_concurrency() -> u32 {
    8
}
fn default_min_replicas() -> u32 {
    1
}
fn default_max_replicas() -> u32 {
    10
}

/// Largest payload a function may accept.
pub const MAX_PAYLOAD_LIMIT: u32 = 6 * 1024 * 1024;

impl FunctionSpec {
    /// The handler, or the runtime's default (`main.handler`, `index.handler`).
    pub fn handler(&self) -> Option<String> {
        self.handler.clone().or_else(|| match self.runtime {
            Runtime::Python3 => Some("main.handler".into()),
            Runtime::Node => Some("index.handler".into()),
            Runtime::Shell | Runtime::Image => None,
        })
    }
}

/// Where one replica of a function answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// `host:port` the gateway calls.
    pub address: String,
    /// Swarm task id.
    pub task_id: String,
    /// Swarm node id the task runs on.
    #[serde(default)]
    pub node_id: String,
}

/// Observed state of a function.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FunctionStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Replicas the controller asked Swarm for.
    #[serde(default)]
    pub replicas: u32,
    /// Replicas running and passing health checks.
    #[serde(default)]
    pub ready_replicas: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Each schedule's last and next fire, written by the scheduler (the leading controller).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleStatus>,
    /// Replicas the function autoscaler wants (within min/max, 0 when scaled to zero); the
    /// function reconciler asks Swarm for this. Absent until it first decided: `minReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<u32>,
    /// The function autoscaler's last decision and what it saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<FunctionScaleDecision>,
}

/// Why a function has the replicas it has: written by the function autoscaler with every change
/// of decision (not with every sample, so load does not turn into etcd writes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionScaleDecision {
    pub desired_replicas: u32,
    /// `ScaleUp`, `ScaleDown`, `Activate`, `ScaleToZero`, `Panic`, `Clamped`, `Hold`.
    pub reason: String,
    pub message: String,
    /// In panic mode (a burst): no scale-down until a stable window without one.
    #[serde(default)]
    pub panic: bool,
    /// Requests in flight or held, averaged over the stable and the panic window, summed over
    /// every gateway and listener.
    #[serde(default)]
    pub stable_concurrency: f64,
    #[serde(default)]
    pub panic_concurrency: f64,
    /// The last request or queued execution the autoscaler heard of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request_time: Option<chrono::DateTime<chrono::Utc>>,
    pub decided_at: chrono::DateTime<chrono::Utc>,
}

/// Where one of `spec.triggers.schedules` stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    /// Its index in `spec.triggers.schedules`.
    pub index: u32,
    pub cron: String,
    /// The tick it last fired for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fire_time: Option<chrono::DateTime<chrono::Utc>>,
    /// The next tick it fires for (absent: never again, or it cannot fire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_fire_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Why it cannot fire (a cron or zone edited by hand past validation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Conditions for FunctionStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

impl Resource for FunctionSpec {
    type Status = FunctionStatus;
    const KIND: &'static str = "Function";
    const PLURAL: &'static str = "functions";
    const SHORT: &'static [&'static str] = &["function", "fn", "fns"];

    fn validate(&self, e: &mut FieldErrors) {
        match (self.runtime, &self.image, &self.code) {
            (Runtime::Image, None, _) => e.push("image", "required when runtime is image"),
            (Runtime::Image, Some(img), code) => {
                e.non_empty("image", img);
                if code.is_some() {
                    e.push(
                        "code",
                        "must not be set when runtime is image (the image holds the code)",
                    );
                }
            }
            (rt, Some(_), _) => e.push(
                "image",
                format!(
                    "only allowed with runtime: image (runtime is {})",
                    rt.as_str()
                ),
            ),
            (rt, None, None) => e.push("code", format!("required for runtime {}", rt.as_str())),
            (_, None, Some(code)) => e.scoped("code", |e| match (&code.inline, &code.file) {
                (Some(_), Some(_)) => e.push("", "set exactly one of inline and file, not both"),
                (None, None) => e.push("", "set exactly one of inline and file"),
                (Some(src), None) if src.trim().is_empty() => e.push("inline", "must not be empty"),
                (Some(src), None) if src.len() > 500 * 1024 => e.push(
                    "inline",
                    "must be at most 500 KiB (Swarm configs hold the code)",
                ),
                _ => {}
            }),
        }
        if let Some(h) = &self.handler {
            match self.runtime {
                Runtime::Python3 | Runtime::Node => {
                    let ok = h
                        .split_once('.')
                        .is_some_and(|(m, f)| !m.is_empty() && !f.is_empty() && !f.contains('.'));
                    if !ok {
                        e.push("handler", format!("{h:?} must look like module.function"));
                    }
                }
                Runtime::Shell | Runtime::Image => e.push(
                    "handler",
                    format!("not used by runtime {}", self.runtime.as_str()),
                ),
            }
        }
        for (i, var) in self.env.iter().enumerate() {
            let valid = !var.name.is_empty()
                && !var.name.starts_with(|c: char| c.is_ascii_digit())
                && var
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                e.push(
                    &format!("env[{i}].name"),
                    format!("{:?} is not a valid variable name", var.name),
                );
            } else if var.name.starts_with("LAMBDA_") {
                e.push(
                    &format!("env[{i}].name"),
                    "the LAMBDA_ prefix is reserved for the platform",
                );
            }
        }
        for (i, s) in self.secrets.iter().enumerate() {
            if let Err(why) = check_dns_label(&s.name) {
                e.push(&format!("secrets[{i}].name"), why);
            }
        }
        e.scoped("resources", |e| {
            e.range("memoryMb", self.resources.memory_mb, 32, 16384);
            e.range("cpuMillis", self.resources.cpu_millis, 50, 16000);
        });
        e.range("timeoutSeconds", self.timeout_seconds, 1, 900);
        e.range(
            "maxPayloadBytes",
            self.max_payload_bytes,
            1,
            MAX_PAYLOAD_LIMIT,
        );
        e.range("concurrency", self.concurrency, 1, 1000);
        e.range("maxReplicas", self.max_replicas, 1, 1000);
        if self.min_replicas > self.max_replicas {
            e.push(
                "minReplicas",
                format!(
                    "must be <= maxReplicas ({} > {})",
                    self.min_replicas, self.max_replicas
                ),
            );
        }
        if let Some(idle) = self.scale_to_zero_after_seconds {
            e.range("scaleToZeroAfterSeconds", idle, 10, 86400);
        }
        e.scoped("autoscaling", |e| self.autoscaling.validate(e));
        e.scoped("triggers", |e| {
            for (i, s) in self.triggers.schedules.iter().enumerate() {
                if let Err(err) = s.cron.parse::<croner::Cron>() {
                    e.push(
                        &format!("schedules[{i}].cron"),
                        format!("invalid cron expression {:?}: {err}", s.cron),
                    );
                } else if !matches!(s.cron.split_whitespace().count(), 5 | 6) {
                    e.push(
                        &format!("schedules[{i}].cron"),
                        format!(
                            "{:?} must have 5 fields (minute hour day month weekday) or 6 (seconds first)",
                            s.cron
                        ),
                    );
                }
                if let Some(tz) = &s.timezone
                    && tz.parse::<chrono_tz::Tz>().is_err()
                {
                    e.push(
                        &format!("schedules[{i}].timezone"),
                        format!("{tz:?} is not an IANA time zone name (e.g. UTC, Europe/Berlin)"),
                    );
                }
            }
            for (i, ev) in self.triggers.events.iter().enumerate() {
                e.scoped(format!("events[{i}]"), |e| ev.validate(e));
            }
        });
        e.scoped("retry", |e| {
            e.range("maxAttempts", self.retry.max_attempts, 1, 10);
            e.range("backoffSeconds", self.retry.backoff_seconds, 1, 3600);
            e.range(
                "maxEventAgeSeconds",
                self.retry.max_event_age_seconds,
                60,
                86400,
            );
            if let Some(q) = &self.retry.dead_letter_queue {
                // A RabbitMQ queue name the platform declares: bounded, printable, and outside
                // the broker's reserved `amq.` namespace.
                let valid = !q.is_empty()
                    && q.len() <= 200
                    && q.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':')
                    });
                if !valid {
                    e.push(
                        "deadLetterQueue",
                        format!("{q:?} must be 1-200 of [A-Za-z0-9._:-]"),
                    );
                } else if q.starts_with("amq.") {
                    e.push(
                        "deadLetterQueue",
                        format!("{q:?}: names starting with amq. are reserved by RabbitMQ"),
                    );
                }
            }
        });
    }
}

/// Convenience map of env vars, as the agent and Swarm want them.
pub fn env_map(spec: &FunctionSpec) -> BTreeMap<String, String> {
    spec.env
        .iter()
        .map(|v| (v.name.clone(), v.value.clone()))
        .collect()
}
