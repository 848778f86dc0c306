//! Pool mode (`LAMBDA_POOL=1`): a generic agent whose workers run the language runtime without a
//! function yet, until one authenticated `POST /specialize` gives it a function — code, handler,
//! environment, secrets and limits — for good. A container specialised once serves that function
//! only: a second specialisation is refused, and it exits when released (its secrets, written to
//! a tmpfs, go with it).
//!
//! `POST /specialize` (`Authorization: Bearer <token>`, the content of `LAMBDA_POOL_TOKEN_FILE`)
//! takes a [`Specialisation`] as JSON and answers `200 {"function","workers","ms"}` once the
//! workers imported the function; `401` without the token, `409 AlreadySpecialised`, `400` for a
//! body that is not a valid specialisation (the field named), `500` when no worker could load it
//! (the agent then exits so that Swarm replaces the container).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{Config, ConfigError, PoolConfig, Runtime};
use crate::pool::Pool;
use crate::worker::{self, Worker, WorkerError};

/// Largest `POST /specialize` body (code + secrets): beyond it, 413.
pub const MAX_SPECIALISATION_BYTES: usize = 16 << 20;

/// What makes a generic agent one function's (the body of `POST /specialize`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Specialisation {
    /// `namespace/name` of the function: invocations naming another one are refused.
    pub function: String,
    /// Must be the pool's runtime.
    pub runtime: String,
    /// `module.function` (python3), `file.export` (node); absent for shell.
    #[serde(default)]
    pub handler: Option<String>,
    /// The function's source.
    pub code: String,
    /// The function's environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Secrets, written as files into the secrets directory.
    #[serde(default)]
    pub secrets: Vec<SecretFile>,
    /// Invocation time limit.
    pub timeout_ms: u64,
    /// Largest event body.
    pub max_payload_bytes: u64,
    /// Invocations at once (workers).
    pub concurrency: u64,
    /// Exit after this long without an invocation (a safety net for a release that never
    /// comes); never when absent.
    #[serde(default)]
    pub idle_exit_ms: Option<u64>,
}

/// One secret of a specialisation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretFile {
    /// File name under the secrets directory (as Swarm mounts `/run/secrets/<name>`).
    pub name: String,
    /// The secret, base64.
    pub data: String,
    /// Variable that receives the file's path.
    #[serde(default)]
    pub env: Option<String>,
}

/// Why a specialisation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SpecialiseError {
    /// No or the wrong bearer token.
    #[error("a specialisation needs the pool's token (Authorization: Bearer …)")]
    Unauthorized,
    /// This agent serves a function already (or is being specialised).
    #[error("this container is specialised already: it serves {0} only")]
    AlreadySpecialised(String),
    /// The body is not a specialisation.
    #[error("invalid specialisation: {0}")]
    Invalid(String),
    /// A field of the body is not acceptable.
    #[error("invalid specialisation: {field}: {why}")]
    Field {
        /// The field path, e.g. `env.PATH` or `secrets[0].name`.
        field: String,
        /// What is wrong with it.
        why: String,
    },
    /// The resulting configuration is invalid (e.g. a bad handler).
    #[error("invalid specialisation: {0}")]
    Config(#[from] ConfigError),
    /// Writing the code or a secret failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No worker could load the function.
    #[error("no worker could load the function: {0}")]
    Worker(#[from] WorkerError),
}

impl SpecialiseError {
    /// The HTTP status and `errorType` of the refusal.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            SpecialiseError::Unauthorized => (401, "Unauthorized"),
            SpecialiseError::AlreadySpecialised(_) => (409, "AlreadySpecialised"),
            SpecialiseError::Invalid(_)
            | SpecialiseError::Field { .. }
            | SpecialiseError::Config(_) => (400, "InvalidSpecialisation"),
            SpecialiseError::Write { .. } | SpecialiseError::Worker(_) => {
                (500, "SpecialisationFailed")
            }
        }
    }
}

fn field(field: impl Into<String>, why: impl Into<String>) -> SpecialiseError {
    SpecialiseError::Field {
        field: field.into(),
        why: why.into(),
    }
}

/// A POSIX environment variable name the platform lets functions set.
fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("LAMBDA_")
}

/// A secret's file name: one path component of `[A-Za-z0-9._-]`, not `.` or `..`.
fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Single-quotes `v` for `sh` (a `'` becomes `'\''`).
fn sh_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''"))
}

impl Specialisation {
    /// Parses and checks a body: JSON of this shape, names the agent can use safely.
    pub fn parse(body: &[u8]) -> Result<Specialisation, SpecialiseError> {
        let s: Specialisation =
            serde_json::from_slice(body).map_err(|e| SpecialiseError::Invalid(e.to_string()))?;
        if s.function.split_once('/').is_none_or(|(ns, n)| {
            ns.is_empty() || n.is_empty() || n.contains('/') || s.function.len() > 253
        }) {
            return Err(field("function", "must be namespace/name"));
        }
        for (k, v) in &s.env {
            if !valid_env_name(k) {
                return Err(field(
                    format!("env.{k}"),
                    "not a variable name a function may set (letters, digits, _; not LAMBDA_*)",
                ));
            }
            if v.contains('\0') {
                return Err(field(format!("env.{k}"), "contains a NUL byte"));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, sec) in s.secrets.iter().enumerate() {
            if !valid_secret_name(&sec.name) {
                return Err(field(
                    format!("secrets[{i}].name"),
                    "must be a file name of [A-Za-z0-9._-] (at most 64)",
                ));
            }
            if !names.insert(sec.name.as_str()) {
                return Err(field(format!("secrets[{i}].name"), "named twice"));
            }
            if let Some(var) = &sec.env
                && !valid_env_name(var)
            {
                return Err(field(format!("secrets[{i}].env"), "not a variable name"));
            }
        }
        Ok(s)
    }

    /// Each secret with its decoded bytes.
    pub fn decoded_secrets(&self) -> Result<Vec<(&SecretFile, Vec<u8>)>, SpecialiseError> {
        use base64::Engine as _;
        self.secrets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                base64::engine::general_purpose::STANDARD
                    .decode(s.data.trim())
                    .map(|d| (s, d))
                    .map_err(|e| field(format!("secrets[{i}].data"), format!("not base64: {e}")))
            })
            .collect()
    }

    /// The function's configuration inside this pool's container, validated exactly as a
    /// dedicated agent validates its environment.
    pub fn config(
        &self,
        pool: &PoolConfig,
        env: Vec<(String, String)>,
    ) -> Result<Config, SpecialiseError> {
        if self.runtime != pool.runtime.as_str() {
            return Err(field(
                "runtime",
                format!("this pool runs {}, not {}", pool.runtime, self.runtime),
            ));
        }
        let vars: BTreeMap<&str, String> = [
            ("LAMBDA_RUNTIME", self.runtime.clone()),
            ("LAMBDA_HANDLER", self.handler.clone().unwrap_or_default()),
            ("LAMBDA_TIMEOUT_MS", self.timeout_ms.to_string()),
            (
                "LAMBDA_MAX_PAYLOAD_BYTES",
                self.max_payload_bytes.to_string(),
            ),
            ("LAMBDA_CONCURRENCY", self.concurrency.to_string()),
            ("LAMBDA_PORT", pool.port.to_string()),
            ("LAMBDA_FUNCTION", self.function.clone()),
            ("LAMBDA_MEMORY_MB", pool.memory_mb.to_string()),
            ("LAMBDA_WORK_DIR", pool.work_dir.display().to_string()),
            (
                "LAMBDA_CODE",
                pool.work_dir.join("code").display().to_string(),
            ),
        ]
        .into_iter()
        .collect();
        let mut cfg = Config::from_lookup(|k| match k {
            "LAMBDA_PYTHON" | "LAMBDA_NODE" | "LAMBDA_SHELL" => {
                Some(pool.interpreter.display().to_string())
            }
            _ => vars.get(k).cloned(),
        })?;
        cfg.env = env;
        Ok(cfg)
    }

    /// The `load` frame's payload for a generic worker of `cfg`'s runtime: JSON for python3
    /// and node, `sh` assignments for shell (its worker sources them).
    pub fn load_payload(cfg: &Config) -> Vec<u8> {
        match cfg.runtime {
            Runtime::Shell => {
                let mut out = format!(
                    "script={}\n",
                    sh_quote(
                        &cfg.work_dir
                            .join(cfg.code_file_name())
                            .display()
                            .to_string()
                    )
                );
                for (k, v) in &cfg.env {
                    // Names are checked identifiers: only the value needs quoting.
                    out.push_str(&format!("export {k}={}\n", sh_quote(v)));
                }
                out.into_bytes()
            }
            Runtime::Python3 | Runtime::Node => {
                let env: BTreeMap<&str, &str> = cfg
                    .env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                serde_json::json!({
                    "module": cfg.module,
                    "function": cfg.function,
                    "functionName": cfg.function_name,
                    "memoryMb": cfg.memory_mb,
                    "env": env,
                })
                .to_string()
                .into_bytes()
            }
        }
    }
}

/// Compares two byte strings in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A pool agent before (and while) it is specialised: its generic workers and its token.
#[derive(Debug)]
pub struct Generic {
    pub cfg: PoolConfig,
    token: String,
    bootstrap: PathBuf,
    /// Generic workers, warm and waiting for a `load`.
    workers: Mutex<Vec<Worker>>,
    warm: AtomicUsize,
    started: AtomicBool,
    /// Set by the first specialisation: there is never a second.
    taken: AtomicBool,
    /// The function it was specialised for.
    function: Mutex<Option<String>>,
}

/// What a successful specialisation hands the server.
pub struct Specialised {
    pub cfg: Arc<Config>,
    pub pool: Arc<Pool>,
    /// Workers that loaded the function (the rest start in the background).
    pub loaded: usize,
    pub idle_exit: Option<Duration>,
}

impl Generic {
    /// Reads the token and writes the bootstrap; the workers start with [`Generic::warm_up`].
    pub fn new(cfg: PoolConfig) -> Result<Arc<Generic>, ConfigError> {
        let token = std::fs::read_to_string(&cfg.token_file)
            .map_err(|e| e.to_string())
            .and_then(|t| {
                let t = t.trim().to_string();
                if t.len() < 16 {
                    Err("it holds fewer than 16 characters".to_string())
                } else {
                    Ok(t)
                }
            })
            .map_err(|reason| ConfigError::PoolToken {
                path: cfg.token_file.clone(),
                reason,
            })?;
        let bootstrap = worker::write_bootstrap(cfg.runtime, &cfg.work_dir).map_err(|e| {
            ConfigError::PoolToken {
                path: cfg.work_dir.clone(),
                reason: format!("the work directory is unusable: {e}"),
            }
        })?;
        Ok(Arc::new(Generic {
            cfg,
            token,
            bootstrap,
            workers: Mutex::new(Vec::new()),
            warm: AtomicUsize::new(0),
            started: AtomicBool::new(false),
            taken: AtomicBool::new(false),
            function: Mutex::new(None),
        }))
    }

    fn start_timeout() -> Duration {
        Duration::from_secs(30)
    }

    /// Starts the generic workers; fails if one cannot start (a broken image).
    pub async fn warm_up(self: &Arc<Self>) -> Result<(), WorkerError> {
        let mut starts = tokio::task::JoinSet::new();
        for _ in 0..self.cfg.workers {
            let g = self.clone();
            starts.spawn(async move {
                Worker::start_generic(
                    g.cfg.runtime,
                    &g.cfg.interpreter,
                    &g.cfg.work_dir,
                    &g.bootstrap,
                    Self::start_timeout(),
                )
                .await
            });
        }
        while let Some(joined) = starts.join_next().await {
            let w =
                joined.map_err(|e| WorkerError::Exited(format!("start task failed: {e}")))??;
            if self.taken.load(Ordering::SeqCst) {
                // Specialised meanwhile without it: not needed any more.
                w.kill().await;
                continue;
            }
            if let Ok(mut ws) = self.workers.lock() {
                ws.push(w);
                self.warm.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.started.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// `(ready, warm generic workers)`: ready once every worker started.
    pub fn health(&self) -> (bool, usize) {
        let warm = self.warm.load(Ordering::SeqCst);
        (self.started.load(Ordering::SeqCst) && warm > 0, warm)
    }

    /// The function it serves, once specialised.
    pub fn function(&self) -> Option<String> {
        self.function.lock().ok().and_then(|f| f.clone())
    }

    /// True when `authorization` is `Bearer <the pool's token>`.
    pub fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        authorization
            .and_then(|h| h.strip_prefix(b"Bearer "))
            .is_some_and(|t| same_secret(t.trim_ascii(), self.token.as_bytes()))
    }

    /// Turns this agent into the agent of the function in `body`, once.
    pub async fn specialise(&self, body: &[u8]) -> Result<Specialised, SpecialiseError> {
        // Everything that can refuse the body comes before the container is taken: a refused
        // body leaves it generic.
        let spec = Specialisation::parse(body)?;
        let cfg = spec.config(&self.cfg, Vec::new())?;
        let secrets = spec.decoded_secrets()?;
        if self
            .taken
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            let who = self.function().unwrap_or_else(|| "another function".into());
            return Err(SpecialiseError::AlreadySpecialised(who));
        }
        if let Ok(mut f) = self.function.lock() {
            *f = Some(spec.function.clone());
        }
        let mut env: Vec<(String, String)> = spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.write_secrets(&secrets, &mut env)?;
        let cfg = Config { env, ..cfg };
        worker::write_code(&cfg, spec.code.as_bytes()).map_err(|e| match e {
            WorkerError::WorkDir { path, source } => SpecialiseError::Write { path, source },
            other => SpecialiseError::Worker(other),
        })?;
        let mut generic = match self.workers.lock() {
            Ok(mut ws) => std::mem::take(&mut *ws),
            Err(_) => Vec::new(),
        };
        self.warm.store(0, Ordering::SeqCst);
        // More generic workers than the function runs at once: not needed.
        for w in generic.split_off(generic.len().min(cfg.concurrency)) {
            w.kill().await;
        }
        let payload: Arc<[u8]> = Specialisation::load_payload(&cfg).into();
        let name = cfg.function_name.clone();
        // One loaded worker is all the first invocation needs: answer then, and load the
        // others behind it (on a container of half a CPU, loading them all first would delay
        // the first answer by as much again each).
        let mut first = None;
        let mut last_error = None;
        while first.is_none() && !generic.is_empty() {
            let mut w = generic.remove(0);
            match w.load(&name, &payload, Self::start_timeout()).await {
                Ok(()) => first = Some(w),
                Err(e) => {
                    w.kill().await;
                    last_error = Some(e);
                }
            }
        }
        if first.is_none()
            && let Some(e) = last_error
        {
            return Err(SpecialiseError::Worker(e));
        }
        let loaded = usize::from(first.is_some());
        let cfg = Arc::new(cfg);
        let pool = Pool::with_workers(
            cfg.clone(),
            self.bootstrap.clone(),
            first.into_iter().collect(),
            generic.len(),
        );
        for mut w in generic {
            let (pool, payload, name) = (pool.clone(), payload.clone(), name.clone());
            tokio::spawn(async move {
                match w.load(&name, &payload, Self::start_timeout()).await {
                    Ok(()) => pool.adopt(w),
                    Err(e) => {
                        eprintln!("lambda-agent: a generic worker could not load {name}: {e}");
                        w.kill().await;
                        pool.worker_lost();
                    }
                }
            });
        }
        Ok(Specialised {
            cfg,
            pool,
            loaded,
            idle_exit: spec.idle_exit_ms.map(Duration::from_millis),
        })
    }

    /// Writes the secrets as 0400 files into the secrets directory and adds the variables
    /// that name them to `env`.
    fn write_secrets(
        &self,
        secrets: &[(&SecretFile, Vec<u8>)],
        env: &mut Vec<(String, String)>,
    ) -> Result<(), SpecialiseError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        if secrets.is_empty() {
            return Ok(());
        }
        let dir = &self.cfg.secrets_dir;
        std::fs::create_dir_all(dir).map_err(|source| SpecialiseError::Write {
            path: dir.clone(),
            source,
        })?;
        for (s, data) in secrets {
            let path = dir.join(&s.name);
            let write = || -> std::io::Result<()> {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o400)
                    .open(&path)?;
                f.write_all(data)
            };
            write().map_err(|source| SpecialiseError::Write {
                path: path.clone(),
                source,
            })?;
            if let Some(var) = &s.env {
                env.push((var.clone(), path.display().to_string()));
            }
        }
        Ok(())
    }

    /// Kills the generic workers still waiting (at shutdown).
    pub async fn shutdown(&self) {
        let ws = match self.workers.lock() {
            Ok(mut ws) => std::mem::take(&mut *ws),
            Err(_) => return,
        };
        for w in ws {
            w.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> PoolConfig {
        PoolConfig {
            runtime: Runtime::Python3,
            interpreter: "python3".into(),
            work_dir: "/tmp/w".into(),
            port: 8080,
            memory_mb: 256,
            workers: 2,
            token_file: "/t".into(),
            secrets_dir: "/run/secrets".into(),
        }
    }

    fn body(extra: &str) -> Vec<u8> {
        format!(
            r#"{{"function":"ns/f","runtime":"python3","handler":"main.handler","code":"x=1","timeoutMs":5000,"maxPayloadBytes":1000,"concurrency":3{extra}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn a_specialisation_makes_the_functions_config() {
        let s = Specialisation::parse(&body(r#","env":{"A":"1"}"#)).unwrap();
        let cfg = s.config(&pool(), vec![("A".into(), "1".into())]).unwrap();
        assert_eq!(cfg.function_name, "ns/f");
        assert_eq!(
            (cfg.module.as_str(), cfg.function.as_str()),
            ("main", "handler")
        );
        assert_eq!(cfg.concurrency, 3);
        assert_eq!(cfg.timeout, Duration::from_secs(5));
        assert_eq!(
            cfg.memory_mb, 256,
            "the container's limit, not the function's ask"
        );
        assert_eq!(cfg.env, vec![("A".to_string(), "1".to_string())]);
        let p = String::from_utf8(Specialisation::load_payload(&cfg)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["module"], "main");
        assert_eq!(v["env"]["A"], "1");
    }

    #[test]
    fn bad_specialisations_name_the_field() {
        let e = Specialisation::parse(&body(r#","env":{"LAMBDA_PORT":"1"}"#)).unwrap_err();
        assert!(e.to_string().contains("env.LAMBDA_PORT"), "{e}");
        let e =
            Specialisation::parse(&body(r#","secrets":[{"name":"../x","data":""}]"#)).unwrap_err();
        assert!(e.to_string().contains("secrets[0].name"), "{e}");
        let e = Specialisation::parse(&body(r#","nope":1"#)).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        let s = Specialisation::parse(&body("")).unwrap();
        let mut shell = pool();
        shell.runtime = Runtime::Shell;
        let e = s.config(&shell, Vec::new()).unwrap_err();
        assert!(e.to_string().contains("runtime"), "{e}");
        let mut s = Specialisation::parse(&body("")).unwrap();
        s.handler = Some("no-dot".into());
        let e = s.config(&pool(), Vec::new()).unwrap_err();
        assert!(e.to_string().contains("LAMBDA_HANDLER"), "{e}");
    }

    #[test]
    fn shell_payload_quotes_values() {
        let mut shell = pool();
        shell.runtime = Runtime::Shell;
        let s = Specialisation::parse(
            br#"{"function":"a/b","runtime":"shell","code":"cat","timeoutMs":1000,"maxPayloadBytes":10,"concurrency":1}"#,
        )
        .unwrap();
        let cfg = s
            .config(&shell, vec![("Q".into(), "it's $HOME".into())])
            .unwrap();
        let p = String::from_utf8(Specialisation::load_payload(&cfg)).unwrap();
        assert_eq!(p, "script='/tmp/w/handler.sh'\nexport Q='it'\\''s $HOME'\n");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
