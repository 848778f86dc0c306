//! The agent's configuration, read from the container's environment (see the crate docs for the list).

use std::path::PathBuf;
use std::time::Duration;

/// Why the environment does not make a valid configuration. The agent prints it and exits non-zero,
/// so the Swarm task fails with this message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `LAMBDA_RUNTIME` is not set.
    #[error("LAMBDA_RUNTIME is not set (one of: python3, node, shell)")]
    MissingRuntime,
    /// `LAMBDA_RUNTIME` names a runtime the agent does not run.
    #[error("LAMBDA_RUNTIME={0:?} is not a runtime this agent runs (one of: python3, node, shell)")]
    UnknownRuntime(String),
    /// A variable that must be a positive integer is not.
    #[error("{var}={value:?} is not a positive integer{hint}")]
    NotANumber {
        /// The variable's name.
        var: &'static str,
        /// What it holds.
        value: String,
        /// A note on the allowed range, if any.
        hint: &'static str,
    },
    /// A pool agent (`LAMBDA_POOL=1`) has no token file to authenticate specialisations with.
    #[error(
        "LAMBDA_POOL_TOKEN_FILE {path:?} cannot be read ({reason}): a pool agent needs the token the platform specialises it with"
    )]
    PoolToken {
        /// The file named by `LAMBDA_POOL_TOKEN_FILE`.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// `LAMBDA_HANDLER` is not `module.function` made of identifiers.
    #[error("LAMBDA_HANDLER={handler:?} is not valid for {runtime}: expected {expected}")]
    BadHandler {
        /// The handler as given.
        handler: String,
        /// The runtime it was given for.
        runtime: Runtime,
        /// The expected form.
        expected: &'static str,
    },
}

/// The language runtime whose worker processes the agent keeps warm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// CPython 3: `module.function(event, context)`.
    Python3,
    /// Node.js: an exported function of a CommonJS or ES module, sync or async.
    Node,
    /// A POSIX shell script: event on stdin, result on stdout.
    Shell,
}

impl Runtime {
    /// The name used in `LAMBDA_RUNTIME` and in `/healthz`.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Python3 => "python3",
            Runtime::Node => "node",
            Runtime::Shell => "shell",
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the agent needs to know, parsed and checked once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Which interpreter the workers run.
    pub runtime: Runtime,
    /// python3/node: the module (file name without extension); shell: `handler`.
    pub module: String,
    /// python3/node: the function (export) to call; shell: empty.
    pub function: String,
    /// The function's code file as mounted (a read-only Swarm config).
    pub code: PathBuf,
    /// A writable directory (tmpfs) for the code copy and the bootstrap scripts.
    pub work_dir: PathBuf,
    /// The interpreter to start for each worker.
    pub interpreter: PathBuf,
    /// Upper bound of one invocation, including the wait for a free worker.
    pub timeout: Duration,
    /// Largest accepted event body, in bytes.
    pub max_payload: usize,
    /// Number of warm workers, so of invocations that run at once.
    pub concurrency: usize,
    /// TCP port of the HTTP server (all interfaces).
    pub port: u16,
    /// `namespace/name`, for the context and log prefixes.
    pub function_name: String,
    /// Memory limit, for the context only (the container's cgroup enforces it).
    pub memory_mb: u64,
    /// Variables the workers get beyond the agent's own environment: a specialised pool
    /// agent's function environment (a dedicated agent has it in its own; empty then).
    pub env: Vec<(String, String)>,
}

/// Most workers one agent keeps: each is a whole interpreter.
const MAX_CONCURRENCY: u64 = 256;
/// Invocation time limit bound (15 minutes, as the Function API allows).
const MAX_TIMEOUT_MS: u64 = 900_000;

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the configuration through `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        // An empty variable counts as unset: Swarm service specs often carry `VAR=`.
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let runtime = parse_runtime(get("LAMBDA_RUNTIME"))?;
        let (module, function) = match runtime {
            Runtime::Shell => ("handler".to_string(), String::new()),
            Runtime::Python3 => parse_handler(runtime, get("LAMBDA_HANDLER"), "main.handler")?,
            Runtime::Node => parse_handler(runtime, get("LAMBDA_HANDLER"), "index.handler")?,
        };
        let number = |var: &'static str, default: u64, max: u64, hint: &'static str| {
            parse_number(get(var), var, default, max, hint)
        };
        let timeout_ms = number("LAMBDA_TIMEOUT_MS", 30_000, MAX_TIMEOUT_MS, " (1..=900000)")?;
        let max_payload = number("LAMBDA_MAX_PAYLOAD_BYTES", 1 << 20, 1 << 30, " (1..=1 GiB)")?;
        let concurrency = number("LAMBDA_CONCURRENCY", 1, MAX_CONCURRENCY, " (1..=256)")?;
        let port = number("LAMBDA_PORT", 8080, u64::from(u16::MAX), " (1..=65535)")?;
        let memory_mb = number("LAMBDA_MEMORY_MB", 128, 1 << 20, "")?;
        let interpreter = interpreter(runtime, &get);
        Ok(Config {
            runtime,
            module,
            function,
            code: get("LAMBDA_CODE")
                .unwrap_or_else(|| "/var/lambda/code".into())
                .into(),
            work_dir: get("LAMBDA_WORK_DIR")
                .unwrap_or_else(|| "/tmp/lambda".into())
                .into(),
            interpreter: interpreter.into(),
            timeout: Duration::from_millis(timeout_ms),
            // Bounded above by 1 GiB, so it fits in usize on every supported target.
            max_payload: usize::try_from(max_payload).unwrap_or(usize::MAX),
            concurrency: usize::try_from(concurrency).unwrap_or(1),
            port: u16::try_from(port).unwrap_or(8080),
            function_name: get("LAMBDA_FUNCTION").unwrap_or_else(|| "default/function".into()),
            memory_mb,
            env: Vec::new(),
        })
    }

    /// File name of the code copy inside `work_dir`.
    pub fn code_file_name(&self) -> String {
        match self.runtime {
            Runtime::Python3 => format!("{}.py", self.module),
            Runtime::Node => format!("{}.js", self.module),
            Runtime::Shell => "handler.sh".to_string(),
        }
    }
}

/// How the agent was started: for one function, or as a generic pool agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Serves the function its environment names (`LAMBDA_CODE`, `LAMBDA_HANDLER`, …).
    Function(Config),
    /// `LAMBDA_POOL=1`: warm generic workers that one authenticated `POST /specialize` turns
    /// into one function's, for good.
    Pool(PoolConfig),
}

/// A pool agent's settings: everything but the function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Which interpreter the generic workers run.
    pub runtime: Runtime,
    /// The interpreter to start for each worker.
    pub interpreter: PathBuf,
    /// A writable directory (tmpfs) for the bootstrap and, once specialised, the code.
    pub work_dir: PathBuf,
    /// TCP port of the HTTP server.
    pub port: u16,
    /// The container's memory limit, for the function's context.
    pub memory_mb: u64,
    /// Generic workers started ahead of the specialisation (`LAMBDA_POOL_WORKERS`, 1..=64).
    pub workers: usize,
    /// The file holding the token a specialisation must present (`LAMBDA_POOL_TOKEN_FILE`).
    pub token_file: PathBuf,
    /// Where the function's secrets are written as files (`LAMBDA_SECRETS_DIR`, a tmpfs:
    /// they go with the container).
    pub secrets_dir: PathBuf,
}

/// Most generic workers a pool agent starts ahead of time.
const MAX_POOL_WORKERS: u64 = 64;

impl Mode {
    /// Reads the process environment.
    pub fn from_env() -> Result<Mode, ConfigError> {
        Mode::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the mode and its configuration through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Mode, ConfigError> {
        let pool = get("LAMBDA_POOL").is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes"));
        if !pool {
            return Config::from_lookup(get).map(Mode::Function);
        }
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let runtime = parse_runtime(get("LAMBDA_RUNTIME"))?;
        let number = |var: &'static str, default: u64, max: u64, hint: &'static str| {
            parse_number(get(var), var, default, max, hint)
        };
        let workers = number("LAMBDA_POOL_WORKERS", 2, MAX_POOL_WORKERS, " (1..=64)")?;
        let port = number("LAMBDA_PORT", 8080, u64::from(u16::MAX), " (1..=65535)")?;
        Ok(Mode::Pool(PoolConfig {
            runtime,
            interpreter: interpreter(runtime, &get).into(),
            work_dir: get("LAMBDA_WORK_DIR")
                .unwrap_or_else(|| "/tmp/lambda".into())
                .into(),
            port: u16::try_from(port).unwrap_or(8080),
            memory_mb: number("LAMBDA_MEMORY_MB", 128, 1 << 20, "")?,
            workers: usize::try_from(workers).unwrap_or(1),
            token_file: get("LAMBDA_POOL_TOKEN_FILE")
                .unwrap_or_else(|| "/var/lambda/pool-token".into())
                .into(),
            secrets_dir: get("LAMBDA_SECRETS_DIR")
                .unwrap_or_else(|| "/run/secrets".into())
                .into(),
        }))
    }

    /// The HTTP port either way.
    pub fn port(&self) -> u16 {
        match self {
            Mode::Function(c) => c.port,
            Mode::Pool(p) => p.port,
        }
    }
}

fn parse_runtime(value: Option<String>) -> Result<Runtime, ConfigError> {
    match value.as_deref().map(str::trim) {
        None => Err(ConfigError::MissingRuntime),
        Some("python3" | "python") => Ok(Runtime::Python3),
        Some("node" | "nodejs") => Ok(Runtime::Node),
        Some("shell" | "sh") => Ok(Runtime::Shell),
        Some(other) => Err(ConfigError::UnknownRuntime(other.to_string())),
    }
}

fn parse_number(
    value: Option<String>,
    var: &'static str,
    default: u64,
    max: u64,
    hint: &'static str,
) -> Result<u64, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    match value.trim().parse::<u64>() {
        Ok(n) if n >= 1 && n <= max => Ok(n),
        _ => Err(ConfigError::NotANumber { var, value, hint }),
    }
}

fn interpreter(runtime: Runtime, get: &impl Fn(&str) -> Option<String>) -> String {
    match runtime {
        Runtime::Python3 => get("LAMBDA_PYTHON").unwrap_or_else(|| "python3".into()),
        Runtime::Node => get("LAMBDA_NODE").unwrap_or_else(|| "node".into()),
        Runtime::Shell => get("LAMBDA_SHELL").unwrap_or_else(|| "/bin/sh".into()),
    }
}

/// Only the port, for the `healthcheck` subcommand (which must not fail on unrelated settings).
pub fn port_from_env() -> u16 {
    std::env::var("LAMBDA_PORT")
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(8080)
}

fn is_identifier(s: &str, extra: &[char]) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || extra.contains(&c))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(&c))
}

fn parse_handler(
    runtime: Runtime,
    handler: Option<String>,
    default: &str,
) -> Result<(String, String), ConfigError> {
    let handler = handler.unwrap_or_else(|| default.to_string());
    let trimmed = handler.trim();
    // The module names one code file, so it cannot contain dots; node file names may contain `-`.
    let module_extra: &[char] = match runtime {
        Runtime::Node => &['-', '$'],
        _ => &[],
    };
    let function_extra: &[char] = match runtime {
        Runtime::Node => &['$'],
        _ => &[],
    };
    match trimmed.rsplit_once('.') {
        Some((m, f)) if is_identifier(m, module_extra) && is_identifier(f, function_extra) => {
            Ok((m.to_string(), f.to_string()))
        }
        _ => Err(ConfigError::BadHandler {
            handler,
            runtime,
            expected: match runtime {
                Runtime::Node => "`file.export`, e.g. index.handler",
                _ => "`module.function`, e.g. main.handler",
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_for_python() {
        let c = parse(&[("LAMBDA_RUNTIME", "python3")]).unwrap();
        assert_eq!(c.runtime, Runtime::Python3);
        assert_eq!(
            (c.module.as_str(), c.function.as_str()),
            ("main", "handler")
        );
        assert_eq!(c.code, PathBuf::from("/var/lambda/code"));
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(c.max_payload, 1_048_576);
        assert_eq!((c.concurrency, c.port), (1, 8080));
        assert_eq!(c.code_file_name(), "main.py");
    }

    #[test]
    fn node_handler_and_numbers() {
        let c = parse(&[
            ("LAMBDA_RUNTIME", "node"),
            ("LAMBDA_HANDLER", "my-app.run"),
            ("LAMBDA_TIMEOUT_MS", "1500"),
            ("LAMBDA_CONCURRENCY", "4"),
            ("LAMBDA_PORT", "9000"),
            ("LAMBDA_MAX_PAYLOAD_BYTES", ""),
        ])
        .unwrap();
        assert_eq!((c.module.as_str(), c.function.as_str()), ("my-app", "run"));
        assert_eq!(c.code_file_name(), "my-app.js");
        assert_eq!(c.timeout, Duration::from_millis(1500));
        assert_eq!((c.concurrency, c.port, c.max_payload), (4, 9000, 1 << 20));
        let c = parse(&[("LAMBDA_RUNTIME", "node")]).unwrap();
        assert_eq!(
            (c.module.as_str(), c.function.as_str()),
            ("index", "handler")
        );
    }

    #[test]
    fn shell_ignores_handler() {
        let c = parse(&[
            ("LAMBDA_RUNTIME", "shell"),
            ("LAMBDA_HANDLER", "what.ever.x"),
        ])
        .unwrap();
        assert_eq!(c.runtime, Runtime::Shell);
        assert_eq!(c.code_file_name(), "handler.sh");
    }

    #[test]
    fn pool_mode_needs_no_function() {
        let map: HashMap<String, String> = [
            ("LAMBDA_POOL", "1"),
            ("LAMBDA_RUNTIME", "python3"),
            ("LAMBDA_POOL_WORKERS", "3"),
            ("LAMBDA_MEMORY_MB", "256"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let Mode::Pool(p) = Mode::from_lookup(|k| map.get(k).cloned()).unwrap() else {
            panic!("not pool mode");
        };
        assert_eq!(
            (p.runtime, p.workers, p.memory_mb),
            (Runtime::Python3, 3, 256)
        );
        assert_eq!(p.token_file, PathBuf::from("/var/lambda/pool-token"));
        assert_eq!(p.secrets_dir, PathBuf::from("/run/secrets"));
        let e = Mode::from_lookup(|k| match k {
            "LAMBDA_POOL" => Some("1".into()),
            "LAMBDA_RUNTIME" => Some("shell".into()),
            "LAMBDA_POOL_WORKERS" => Some("65".into()),
            _ => None,
        })
        .unwrap_err();
        assert!(e.to_string().contains("LAMBDA_POOL_WORKERS"), "{e}");
        // Without LAMBDA_POOL it is a function agent, as before.
        assert!(matches!(
            Mode::from_lookup(|k| (k == "LAMBDA_RUNTIME").then(|| "shell".into())),
            Ok(Mode::Function(_))
        ));
    }

    #[test]
    fn errors_are_specific() {
        assert_eq!(parse(&[]), Err(ConfigError::MissingRuntime));
        assert_eq!(
            parse(&[("LAMBDA_RUNTIME", "ruby")]),
            Err(ConfigError::UnknownRuntime("ruby".into()))
        );
        let e = parse(&[("LAMBDA_RUNTIME", "shell"), ("LAMBDA_TIMEOUT_MS", "0")]).unwrap_err();
        assert!(e.to_string().contains("LAMBDA_TIMEOUT_MS=\"0\""), "{e}");
        let e = parse(&[("LAMBDA_RUNTIME", "shell"), ("LAMBDA_PORT", "70000")]).unwrap_err();
        assert!(matches!(
            e,
            ConfigError::NotANumber {
                var: "LAMBDA_PORT",
                ..
            }
        ));
        for bad in ["handler", "a.b.c", ".x", "1mod.f", "mod.", "mo d.f"] {
            let e = parse(&[("LAMBDA_RUNTIME", "python3"), ("LAMBDA_HANDLER", bad)]).unwrap_err();
            assert!(matches!(e, ConfigError::BadHandler { .. }), "{bad}: {e}");
        }
    }
}
