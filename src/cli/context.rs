//! The CLI's contexts, as kubeconfig's: named sets of "where the platform is" (gateway URL and
//! API key, etcd endpoints with TLS/auth, Swarm manager, broker, default namespace) in one
//! per-user file. `lambda up` writes the `local` context and makes it current; `lambda down`
//! removes it; `lambda config` edits and shows the file.
//!
//! The file is `$LAMBDA_CONFIG` when set, else `$XDG_CONFIG_HOME/lambda/config.yaml`, else
//! `~/.config/lambda/config.yaml`. It holds secrets (the API key, an etcd password), so it is
//! always written with mode 0600 (its directory 0700), atomically (temp file + rename).
//!
//! Precedence, for every setting: a flag, then its environment variable, then the current
//! context, then the built-in default. [`Source`] records which one gave a value, so that an
//! error can say what was tried and how to change it.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Environment variable that names the config file.
pub const CONFIG_ENV: &str = "LAMBDA_CONFIG";
/// Environment variable that selects a context instead of the file's current one.
pub const CONTEXT_ENV: &str = "LAMBDA_CONTEXT";
/// The context `lambda up` writes.
pub const LOCAL_CONTEXT: &str = "local";

/// Errors reading or writing the config file.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message} (fix or remove the file; `lambda config view` shows it)")]
    Parse { path: String, message: String },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no context named {name:?} in {path} (known: {known}); `lambda config get-contexts` lists them"
    )]
    Unknown {
        name: String,
        path: String,
        known: String,
    },
    #[error("no config file location: set {CONFIG_ENV}, XDG_CONFIG_HOME or HOME")]
    NoLocation,
}

/// How to reach etcd, as a context holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdContext {
    /// Comma-separated endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// One platform the CLI can talk to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Context {
    /// The gateway's base URL, e.g. `http://127.0.0.1:8080`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The gateway API key (bearer token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdContext>,
    /// The Swarm manager's Docker API address (`DOCKER_HOST` form: `unix://…`, `tcp://…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm_manager: Option<String>,
    /// The message broker's AMQP URL, for event publishers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// Default namespace of this context's commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Context {
    /// A copy with secrets replaced by `REDACTED` (what `lambda config view` shows).
    pub fn redacted(&self) -> Context {
        let mut c = self.clone();
        let hide = |v: &mut Option<String>| {
            if v.is_some() {
                *v = Some("REDACTED".into());
            }
        };
        hide(&mut c.token);
        if let Some(e) = c.etcd.as_mut() {
            hide(&mut e.password);
        }
        if let Some(b) = c.broker.as_mut() {
            *b = redact_url_password(b);
        }
        c
    }
}

/// `amqp://user:secret@host` → `amqp://user:REDACTED@host`.
fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:REDACTED@{host}"),
        None => url.to_string(),
    }
}

/// The whole config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

impl ConfigFile {
    /// A copy fit for display: every context redacted.
    pub fn redacted(&self) -> ConfigFile {
        ConfigFile {
            current_context: self.current_context.clone(),
            contexts: self
                .contexts
                .iter()
                .map(|(k, v)| (k.clone(), v.redacted()))
                .collect(),
        }
    }
}

/// Where the config file is: `$LAMBDA_CONFIG`, `$XDG_CONFIG_HOME/lambda/config.yaml` or
/// `~/.config/lambda/config.yaml`.
pub fn config_path() -> Result<PathBuf, ContextError> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = var(CONFIG_ENV) {
        return Ok(PathBuf::from(p));
    }
    if let Some(x) = var("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(x).join("lambda/config.yaml"));
    }
    match var("HOME") {
        Some(h) => Ok(PathBuf::from(h).join(".config/lambda/config.yaml")),
        None => Err(ContextError::NoLocation),
    }
}

/// Reads the file at `path`; a missing file is an empty config.
pub fn load_from(path: &Path) -> Result<ConfigFile, ContextError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ConfigFile::default()),
        Err(source) => {
            return Err(ContextError::Read {
                path: path.display().to_string(),
                source,
            });
        }
    };
    if text.trim().is_empty() {
        return Ok(ConfigFile::default());
    }
    serde_saphyr::from_str::<ConfigFile>(&text).map_err(|e| ContextError::Parse {
        path: path.display().to_string(),
        message: crate::api::manifest::plain_message(&e),
    })
}

/// Writes `cfg` to `path` with mode 0600, atomically.
pub fn save_to(path: &Path, cfg: &ConfigFile) -> Result<(), ContextError> {
    let werr = |source| ContextError::Write {
        path: path.display().to_string(),
        source,
    };
    let text = serde_saphyr::to_string(cfg).map_err(|e| {
        werr(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e.to_string(),
        ))
    })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(werr)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(werr)?;
        }
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(werr)?;
    // An existing temp file keeps its mode: make sure.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(werr)?;
    f.write_all(b"# lambda CLI contexts (lambda config view); holds secrets: keep it 0600\n")
        .and_then(|_| f.write_all(text.as_bytes()))
        .and_then(|_| f.sync_all())
        .map_err(werr)?;
    std::fs::rename(&tmp, path).map_err(werr)
}

/// The context the CLI uses: its name, its settings and the file it came from.
#[derive(Debug, Clone)]
pub struct Selected {
    pub name: String,
    pub path: PathBuf,
    pub context: Context,
}

/// Loads the context named by `--context`/`LAMBDA_CONTEXT` (an error when it does not exist), or
/// the file's current context (`None` when there is none, or no file).
pub fn select(explicit: Option<&str>) -> Result<Option<Selected>, ContextError> {
    let path = match config_path() {
        Ok(p) => p,
        // No home at all: only flags and variables count (e.g. a daemon under a bare init).
        Err(_) if explicit.is_none() => return Ok(None),
        Err(e) => return Err(e),
    };
    let cfg = load_from(&path)?;
    let name = match explicit {
        Some(n) => n.to_string(),
        None => match &cfg.current_context {
            Some(n) => n.clone(),
            None => return Ok(None),
        },
    };
    match cfg.contexts.get(&name) {
        Some(c) => Ok(Some(Selected {
            name,
            path,
            context: c.clone(),
        })),
        // A current context that was removed by hand: as if none was set.
        None if explicit.is_none() => Ok(None),
        None => Err(ContextError::Unknown {
            name,
            path: path.display().to_string(),
            known: known(&cfg),
        }),
    }
}

fn known(cfg: &ConfigFile) -> String {
    if cfg.contexts.is_empty() {
        "none".into()
    } else {
        cfg.contexts.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Sets context `name` to `ctx`, optionally making it current, in the file at `path`.
pub fn upsert(
    path: &Path,
    name: &str,
    ctx: Context,
    make_current: bool,
) -> Result<(), ContextError> {
    let mut cfg = load_from(path)?;
    cfg.contexts.insert(name.to_string(), ctx);
    if make_current || cfg.current_context.is_none() {
        cfg.current_context = Some(name.to_string());
    }
    save_to(path, &cfg)
}

/// Removes context `name` (and unsets it as current); true when it existed.
pub fn remove(path: &Path, name: &str) -> Result<bool, ContextError> {
    let mut cfg = load_from(path)?;
    let existed = cfg.contexts.remove(name).is_some();
    if cfg.current_context.as_deref() == Some(name) {
        cfg.current_context = None;
    }
    if existed {
        save_to(path, &cfg)?;
    }
    Ok(existed)
}

/// Makes `name` the current context.
pub fn use_context(path: &Path, name: &str) -> Result<(), ContextError> {
    let mut cfg = load_from(path)?;
    if !cfg.contexts.contains_key(name) {
        return Err(ContextError::Unknown {
            name: name.to_string(),
            path: path.display().to_string(),
            known: known(&cfg),
        });
    }
    cfg.current_context = Some(name.to_string());
    save_to(path, &cfg)
}

/// Where a setting's value came from, for messages ("from --gateway", "from context local …").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
    Context { name: String, path: PathBuf },
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "from {flag}"),
            Source::Env(var) => write!(f, "from ${var}"),
            Source::Context { name, path } => {
                write!(f, "from context {name:?} in {}", path.display())
            }
            Source::Default => write!(f, "the built-in default; no context is set"),
        }
    }
}

/// A setting resolved by precedence, with its source.
#[derive(Debug, Clone)]
pub struct Resolved<T> {
    pub value: T,
    pub source: Source,
}

/// Resolves one setting: `given` (a clap value that may come from `flag` or `env`), then the
/// context's value, then `default`. A clap value equal to the variable's is taken to come from
/// the variable (clap does not say; a flag repeating the variable is the same thing).
pub fn resolve<T: Clone + ToString>(
    given: Option<&T>,
    flag: &'static str,
    env: &'static str,
    from_context: Option<(&Selected, Option<&T>)>,
    default: Option<T>,
) -> Option<Resolved<T>> {
    if let Some(v) = given {
        let from_env = std::env::var(env).is_ok_and(|e| e == v.to_string());
        let source = if from_env {
            Source::Env(env)
        } else {
            Source::Flag(flag)
        };
        return Some(Resolved {
            value: v.clone(),
            source,
        });
    }
    if let Some((sel, Some(v))) = from_context {
        return Some(Resolved {
            value: v.clone(),
            source: Source::Context {
                name: sel.name.clone(),
                path: sel.path.clone(),
            },
        });
    }
    default.map(|value| Resolved {
        value,
        source: Source::Default,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Context {
        Context {
            gateway: Some("http://127.0.0.1:8080".into()),
            token: Some("lk_secret".into()),
            etcd: Some(EtcdContext {
                endpoints: Some("http://127.0.0.1:2379".into()),
                user: Some("root".into()),
                password: Some("pw".into()),
                ..Default::default()
            }),
            swarm_manager: Some("unix:///run/m.sock".into()),
            broker: Some("amqp://lambda:s3cret@127.0.0.1:5672/%2f".into()),
            namespace: None,
        }
    }

    #[test]
    fn round_trip_with_mode_0600_and_current_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.yaml");
        upsert(&path, "local", sample(), true).unwrap();
        upsert(&path, "prod", Context::default(), false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        let cfg = load_from(&path).unwrap();
        assert_eq!(cfg.current_context.as_deref(), Some("local"));
        assert_eq!(cfg.contexts["local"], sample());
        use_context(&path, "prod").unwrap();
        assert_eq!(
            load_from(&path).unwrap().current_context.as_deref(),
            Some("prod")
        );
        assert!(matches!(
            use_context(&path, "nope"),
            Err(ContextError::Unknown { .. })
        ));
        assert!(remove(&path, "prod").unwrap());
        let cfg = load_from(&path).unwrap();
        assert_eq!(cfg.current_context, None);
        assert!(!remove(&path, "prod").unwrap());
    }

    #[test]
    fn redaction_hides_every_secret() {
        let r = sample().redacted();
        assert_eq!(r.token.as_deref(), Some("REDACTED"));
        assert_eq!(r.etcd.unwrap().password.as_deref(), Some("REDACTED"));
        assert_eq!(
            r.broker.as_deref(),
            Some("amqp://lambda:REDACTED@127.0.0.1:5672/%2f")
        );
        assert_eq!(redact_url_password("amqp://host"), "amqp://host");
    }

    #[test]
    fn a_bad_file_names_itself_and_unknown_fields_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "contexts:\n  local:\n    gatway: x\n").unwrap();
        let e = load_from(&path).unwrap_err().to_string();
        assert!(e.contains("config.yaml") && e.contains("gatway"), "{e}");
        assert_eq!(
            load_from(&dir.path().join("missing.yaml")).unwrap(),
            ConfigFile::default()
        );
    }

    #[test]
    fn precedence_flag_env_context_default() {
        let sel = Selected {
            name: "local".into(),
            path: "/x".into(),
            context: Context::default(),
        };
        let ctx_val = "ctx".to_string();
        let flag_val = "flag".to_string();
        let r = resolve(
            Some(&flag_val),
            "--gateway",
            "LAMBDA_TEST_UNSET_VAR",
            Some((&sel, Some(&ctx_val))),
            Some("d".into()),
        )
        .unwrap();
        assert_eq!(
            (r.value.as_str(), r.source),
            ("flag", Source::Flag("--gateway"))
        );
        let r = resolve(
            None,
            "--gateway",
            "LAMBDA_TEST_UNSET_VAR",
            Some((&sel, Some(&ctx_val))),
            Some("d".to_string()),
        )
        .unwrap();
        assert_eq!(r.value, "ctx");
        assert!(r.source.to_string().contains("context \"local\""));
        let r = resolve::<String>(None, "--g", "LAMBDA_TEST_UNSET_VAR", None, Some("d".into()))
            .unwrap();
        assert_eq!((r.value.as_str(), r.source), ("d", Source::Default));
        assert!(resolve::<String>(None, "--g", "LAMBDA_TEST_UNSET_VAR", None, None).is_none());
    }
}
