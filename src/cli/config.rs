//! `lambda config …`: show and edit the CLI's contexts (see [`super::context`]).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use super::GlobalArgs;
use super::context::{self, Context, EtcdContext};

/// `lambda config` subcommands (kubectl's `config` verbs).
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the config file, secrets redacted (`--raw` shows them).
    View {
        /// Show tokens and passwords.
        #[arg(long)]
        raw: bool,
        /// Only the context in use.
        #[arg(long)]
        minify: bool,
    },
    /// List the contexts; `*` marks the current one.
    GetContexts,
    /// Print the current context's name.
    CurrentContext,
    /// Make NAME the current context.
    UseContext { name: String },
    /// Create or change context NAME (only the given settings change).
    SetContext(Box<SetContextArgs>),
    /// Remove context NAME.
    DeleteContext { name: String },
    /// Print the config file's path.
    Path,
}

/// Settings of `lambda config set-context`.
#[derive(Debug, Args)]
pub struct SetContextArgs {
    pub name: String,
    /// Gateway base URL, e.g. https://lambda.example.org.
    #[arg(long = "gateway")]
    pub gateway: Option<String>,
    /// Gateway API key.
    #[arg(long = "token")]
    pub token: Option<String>,
    /// etcd endpoints, comma-separated.
    #[arg(long = "etcd")]
    pub etcd: Option<String>,
    #[arg(long = "etcd-ca-file")]
    pub etcd_ca: Option<PathBuf>,
    #[arg(long = "etcd-cert-file")]
    pub etcd_cert: Option<PathBuf>,
    #[arg(long = "etcd-key-file")]
    pub etcd_key: Option<PathBuf>,
    #[arg(long = "etcd-username")]
    pub etcd_user: Option<String>,
    #[arg(long = "etcd-pass")]
    pub etcd_password: Option<String>,
    /// Swarm manager (DOCKER_HOST form).
    #[arg(long = "swarm-manager")]
    pub swarm_manager: Option<String>,
    /// Broker AMQP URL.
    #[arg(long = "broker")]
    pub broker: Option<String>,
    /// Default namespace.
    #[arg(long = "default-namespace")]
    pub namespace: Option<String>,
    /// Also make it the current context.
    #[arg(long = "use")]
    pub make_current: bool,
}

/// Overwrites `slot` with `v` when the flag was given (an absent flag leaves the setting alone).
fn set<T: Clone>(slot: &mut Option<T>, v: &Option<T>) {
    if v.is_some() {
        slot.clone_from(v);
    }
}

fn check_url(field: &str, v: &str, schemes: &[&str]) -> Result<()> {
    if !schemes.iter().any(|s| v.starts_with(&format!("{s}://"))) {
        bail!(
            "--{field} {v:?}: expected a URL starting with {}",
            schemes
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(" or ")
        );
    }
    Ok(())
}

pub fn run(g: &GlobalArgs, cmd: ConfigCommand) -> Result<()> {
    let path = context::config_path()?;
    match cmd {
        ConfigCommand::Path => println!("{}", path.display()),
        ConfigCommand::View { raw, minify } => {
            let mut cfg = context::load_from(&path)?;
            if minify {
                let name = g
                    .context_name
                    .clone()
                    .or(cfg.current_context.clone())
                    .unwrap_or_default();
                cfg.contexts.retain(|k, _| *k == name);
            }
            let shown = if raw { cfg } else { cfg.redacted() };
            print!("{}", serde_saphyr::to_string(&shown)?);
        }
        ConfigCommand::GetContexts => {
            let cfg = context::load_from(&path)?;
            let mut rows = vec![vec![
                "CURRENT".to_string(),
                "NAME".into(),
                "GATEWAY".into(),
                "ETCD".into(),
                "NAMESPACE".into(),
            ]];
            for (name, c) in &cfg.contexts {
                rows.push(vec![
                    if cfg.current_context.as_deref() == Some(name.as_str()) {
                        "*".into()
                    } else {
                        String::new()
                    },
                    name.clone(),
                    c.gateway.clone().unwrap_or_default(),
                    c.etcd
                        .as_ref()
                        .and_then(|e| e.endpoints.clone())
                        .unwrap_or_default(),
                    c.namespace.clone().unwrap_or_default(),
                ]);
            }
            print!("{}", super::output::table(&rows));
        }
        ConfigCommand::CurrentContext => {
            let cfg = context::load_from(&path)?;
            match cfg.current_context {
                Some(c) => println!("{c}"),
                None => bail!(
                    "no current context in {} (`lambda up` writes one; `lambda config use-context NAME` sets one)",
                    path.display()
                ),
            }
        }
        ConfigCommand::UseContext { name } => {
            context::use_context(&path, &name)?;
            println!("switched to context {name:?}");
        }
        ConfigCommand::DeleteContext { name } => {
            if !context::remove(&path, &name)? {
                bail!("no context named {name:?} in {}", path.display());
            }
            println!("deleted context {name:?}");
        }
        ConfigCommand::SetContext(a) => {
            if let Some(u) = &a.gateway {
                check_url("gateway", u, &["http", "https"])?;
            }
            if let Some(u) = &a.broker {
                check_url("broker", u, &["amqp", "amqps"])?;
            }
            if let Some(u) = &a.swarm_manager {
                check_url("swarm-manager", u, &["unix", "tcp", "http", "https", "ssh"])?;
            }
            let cfg = context::load_from(&path)?;
            let existed = cfg.contexts.contains_key(&a.name);
            let mut c: Context = cfg.contexts.get(&a.name).cloned().unwrap_or_default();
            set(&mut c.gateway, &a.gateway);
            set(&mut c.token, &a.token);
            set(&mut c.swarm_manager, &a.swarm_manager);
            set(&mut c.broker, &a.broker);
            set(&mut c.namespace, &a.namespace);
            let etcd_given = a.etcd.is_some()
                || a.etcd_ca.is_some()
                || a.etcd_cert.is_some()
                || a.etcd_key.is_some()
                || a.etcd_user.is_some()
                || a.etcd_password.is_some();
            if etcd_given {
                let mut e: EtcdContext = c.etcd.take().unwrap_or_default();
                set(&mut e.endpoints, &a.etcd);
                set(&mut e.user, &a.etcd_user);
                set(&mut e.password, &a.etcd_password);
                set(&mut e.ca, &a.etcd_ca);
                set(&mut e.cert, &a.etcd_cert);
                set(&mut e.key, &a.etcd_key);
                if e.cert.is_some() != e.key.is_some() {
                    bail!("--etcd-cert-file and --etcd-key-file go together");
                }
                c.etcd = Some(e);
            }
            context::upsert(&path, &a.name, c, a.make_current)?;
            println!(
                "context {:?} {} in {}",
                a.name,
                if existed { "modified" } else { "created" },
                path.display()
            );
        }
    }
    Ok(())
}
