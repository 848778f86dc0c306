//! The `lambda` command line: argument parsing and dispatch to one module per subcommand.

mod apply;
mod bench;
mod cloud_check;
mod config;
pub mod context;
mod controller;
mod daemons;
mod describe;
mod events;
mod executions;
mod get;
mod invoke;
mod listener;
mod logs;
pub(crate) mod output;
mod secret;
mod up;
mod wait;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::api::Kind;
use crate::api::schema::{schema_file_name, schema_yaml};
use crate::store::{Store, StoreConfig};

/// Lambda on OpenStack: serverless functions on Docker Swarm workers that the platform
/// provisions itself through OpenStack Nova.
#[derive(Debug, Parser)]
#[command(name = "lambda", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand understands. Each setting comes from its flag, then its environment
/// variable, then the current context (see [`context`]), then the built-in default.
#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// etcd endpoints, comma-separated [default: the context's, else http://127.0.0.1:2379].
    #[arg(long, global = true, env = "LAMBDA_ETCD_ENDPOINTS")]
    pub etcd_endpoints: Option<String>,
    /// CA certificate that signs etcd's server certificate (enables TLS).
    #[arg(long, global = true, env = "LAMBDA_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate for etcd mutual TLS.
    #[arg(long, global = true, env = "LAMBDA_ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// Client key for etcd mutual TLS.
    #[arg(long, global = true, env = "LAMBDA_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user (with --etcd-password).
    #[arg(
        long,
        global = true,
        env = "LAMBDA_ETCD_USER",
        requires = "etcd_password"
    )]
    pub etcd_user: Option<String>,
    /// etcd password.
    #[arg(
        long,
        global = true,
        env = "LAMBDA_ETCD_PASSWORD",
        hide_env_values = true
    )]
    pub etcd_password: Option<String>,
    /// Deadline of each etcd request.
    #[arg(long, global = true, default_value = "5s", value_parser = humantime::parse_duration)]
    pub etcd_timeout: Duration,
    /// Namespace of the objects [default: the context's, else `default`]. Only `lambda apikey
    /// create` takes it more than once (a key of several namespaces).
    #[arg(
        short,
        long = "namespace",
        global = true,
        env = "LAMBDA_NAMESPACE",
        action = clap::ArgAction::Append
    )]
    pub namespace_arg: Vec<String>,
    /// The context to use instead of the config file's current one (`lambda config`).
    #[arg(long = "context", global = true, env = context::CONTEXT_ENV)]
    pub context_name: Option<String>,
    /// The context in use, loaded once at start (not a flag).
    #[arg(skip)]
    pub selected: Option<context::Selected>,
}

/// etcd's built-in default endpoint.
pub const DEFAULT_ETCD: &str = "http://127.0.0.1:2379";
/// The gateway's built-in default URL.
pub const DEFAULT_GATEWAY: &str = "http://127.0.0.1:8080";
/// How long a daemon waits at start for etcd to answer ([`GlobalArgs::store_waiting`]): an etcd
/// restart takes seconds; longer than a minute is an outage the operator should hear of.
pub const ETCD_START_PATIENCE: Duration = Duration::from_secs(60);

/// What to do when the platform cannot be reached.
const HINT: &str = "start the local platform with `lambda up`, or point the CLI at yours with \
`lambda config set-context NAME …` / `lambda config use-context NAME`";

impl GlobalArgs {
    fn ctx_field<'a, T>(
        &'a self,
        f: impl FnOnce(&'a context::Context) -> Option<&'a T>,
    ) -> Option<(&'a context::Selected, Option<&'a T>)> {
        self.selected.as_ref().map(|s| (s, f(&s.context)))
    }

    /// The namespace: `-n`, `$LAMBDA_NAMESPACE`, the context's, or `default`.
    pub fn namespace(&self) -> String {
        self.namespace_arg
            .first()
            .cloned()
            .or_else(|| {
                self.selected
                    .as_ref()
                    .and_then(|s| s.context.namespace.clone())
            })
            .unwrap_or_else(|| "default".into())
    }

    /// etcd's endpoints and where they came from.
    pub fn etcd_endpoints(&self) -> context::Resolved<String> {
        context::resolve(
            self.etcd_endpoints.as_ref(),
            "--etcd-endpoints",
            "LAMBDA_ETCD_ENDPOINTS",
            self.ctx_field(|c| c.etcd.as_ref().and_then(|e| e.endpoints.as_ref())),
            Some(DEFAULT_ETCD.to_string()),
        )
        .unwrap_or(context::Resolved {
            value: DEFAULT_ETCD.into(),
            source: context::Source::Default,
        })
    }

    /// The gateway URL: `given` (a subcommand's `--gateway`/`$LAMBDA_GATEWAY`), the context's,
    /// or the local default.
    pub fn gateway(&self, given: Option<&String>) -> context::Resolved<String> {
        context::resolve(
            given,
            "--gateway",
            "LAMBDA_GATEWAY",
            self.ctx_field(|c| c.gateway.as_ref()),
            Some(DEFAULT_GATEWAY.to_string()),
        )
        .unwrap_or(context::Resolved {
            value: DEFAULT_GATEWAY.into(),
            source: context::Source::Default,
        })
    }

    /// The API key: `given` (`--token`/`$LAMBDA_TOKEN`) or the context's.
    pub fn token(&self, given: Option<&String>) -> Option<context::Resolved<String>> {
        context::resolve(
            given,
            "--token",
            "LAMBDA_TOKEN",
            self.ctx_field(|c| c.token.as_ref()),
            None,
        )
    }

    /// The broker's AMQP URL: `given` (`--amqp-url`/`$LAMBDA_AMQP_URL`) or the context's.
    pub fn broker(&self, given: Option<&String>) -> Option<context::Resolved<String>> {
        context::resolve(
            given,
            "--amqp-url",
            "LAMBDA_AMQP_URL",
            self.ctx_field(|c| c.broker.as_ref()),
            None,
        )
    }

    /// The Swarm manager: `given` (`--docker-host`/`$DOCKER_HOST`) or the context's.
    pub fn swarm_manager(&self, given: Option<&String>) -> Option<context::Resolved<String>> {
        context::resolve(
            given,
            "--docker-host",
            "DOCKER_HOST",
            self.ctx_field(|c| c.swarm_manager.as_ref()),
            None,
        )
    }

    /// The Swarm manager, or an error that says how to name one.
    pub fn require_swarm_manager(
        &self,
        given: Option<&String>,
    ) -> Result<context::Resolved<String>> {
        self.swarm_manager(given).ok_or_else(|| {
            anyhow::anyhow!(
                "no Swarm manager to talk to: none of --docker-host, $DOCKER_HOST or a context ({}) names one; {HINT}, or pass --docker-host unix:///path/to/manager.sock",
                self.context_description()
            )
        })
    }

    /// "context NAME in FILE", or why there is none.
    pub fn context_description(&self) -> String {
        match &self.selected {
            Some(s) => format!("current context {:?} in {}", s.name, s.path.display()),
            None => match context::config_path() {
                Ok(p) => format!("no current context in {}", p.display()),
                Err(e) => e.to_string(),
            },
        }
    }

    /// Store settings: flags and variables, and the context's etcd settings when the endpoints
    /// come from the context (TLS and auth of one etcd never leak onto another).
    pub fn store_config(&self) -> StoreConfig {
        let endpoints = self.etcd_endpoints();
        let mut cfg = StoreConfig::from_endpoints(&endpoints.value);
        let ctx = match endpoints.source {
            context::Source::Context { .. } => self
                .selected
                .as_ref()
                .and_then(|s| s.context.etcd.clone())
                .unwrap_or_default(),
            _ => context::EtcdContext::default(),
        };
        cfg.ca_cert = self.etcd_ca.clone().or(ctx.ca);
        cfg.client_cert = self.etcd_cert.clone().or(ctx.cert);
        cfg.client_key = self.etcd_key.clone().or(ctx.key);
        cfg.user = self.etcd_user.clone().or(ctx.user);
        cfg.password = self.etcd_password.clone().or(ctx.password);
        cfg.request_timeout = self.etcd_timeout;
        cfg
    }

    /// Connects to etcd and checks that it answers; the error names the endpoints, where they
    /// came from and what to do.
    pub async fn store(&self) -> Result<Store> {
        let endpoints = self.etcd_endpoints();
        let hint = |e: &dyn std::fmt::Display| {
            anyhow::anyhow!(
                "cannot reach etcd at {} ({}): {e}\n  hint: {HINT}, or pass --etcd-endpoints / set LAMBDA_ETCD_ENDPOINTS",
                endpoints.value,
                endpoints.source
            )
        };
        let store = Store::connect(&self.store_config())
            .await
            .map_err(|e| hint(&e))?;
        store.ping().await.map_err(|e| hint(&e))?;
        Ok(store)
    }

    /// [`GlobalArgs::store`] for the daemons (controller, gateway, events listener): etcd may
    /// not answer yet when one starts — started beside it, or restarting while a supervisor
    /// restarts the daemon — so the daemon tries again with growing delays, each failure
    /// logged, for up to [`ETCD_START_PATIENCE`]; then it fails with the same error.
    pub async fn store_waiting(&self) -> Result<Store> {
        use backon::{ExponentialBuilder, Retryable};
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(2))
            .with_total_delay(Some(ETCD_START_PATIENCE))
            .without_max_times();
        (|| self.store())
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .notify(|e, retry_in| {
                tracing::warn!(error = %e, ?retry_in, "etcd does not answer yet; trying again");
            })
            .await
    }

    /// Flags and variables only, never a context (what `lambda up`/`down` use: they manage the
    /// local platform, wherever the current context points).
    pub fn without_context(&self) -> GlobalArgs {
        let mut g = self.clone();
        g.selected = None;
        g
    }
}

/// Output formats of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Yaml,
    Json,
    Wide,
    Name,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update objects from YAML files, directories or stdin (`-`).
    Apply {
        /// Manifest file, directory of *.yaml/*.yml, or `-` for stdin. Repeatable.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Recurse into subdirectories.
        #[arg(short = 'R', long)]
        recursive: bool,
    },
    /// List objects of a kind, or show one.
    Get {
        /// function (fn), nodepool (np), node, snapshotimage (si); singular or plural.
        kind: String,
        name: Option<String>,
        #[arg(short, long, value_enum)]
        output: Option<OutputFormat>,
        /// List across all namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Show an object's spec, status and conditions.
    Describe { kind: String, name: String },
    /// Delete an object (its finalizers run first).
    Delete {
        kind: String,
        name: String,
        /// Wait until the object is gone.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Stream changes of objects' spec and status until interrupted.
    Watch { kind: String, name: Option<String> },
    /// Wait until an object meets a condition: `--for condition=Ready`, `--for delete`.
    Wait {
        /// KIND/NAME, e.g. fn/hello.
        target: String,
        #[arg(long = "for")]
        condition: String,
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Print the JSON Schemas of the kinds (as YAML), or write them to a directory.
    Crds {
        /// Write `<kind>.yaml` files into this directory instead of printing.
        #[arg(long)]
        write: Option<PathBuf>,
    },
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
    /// A local OpenStack-compatible endpoint (Keystone, Nova, Glance, Neutron) whose servers are
    /// Docker engines in network namespaces.
    Cloud {
        #[arg(long, default_value = "127.0.0.1:8780")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value = ".lambda/cloud")]
        data_dir: PathBuf,
        /// Bridge the servers plug into (created when missing).
        #[arg(long, default_value = "lambda0")]
        bridge: String,
        /// The bridge's own address; servers get addresses in its /24.
        #[arg(long, default_value = "10.251.0.1/24")]
        bridge_cidr: String,
        /// First host number handed to servers (lower ones are left to other tools).
        #[arg(long, default_value_t = 100)]
        first_host: u8,
        /// Instance quota of the main project.
        #[arg(long, default_value_t = 50)]
        max_instances: usize,
        /// Lifetime of issued tokens.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        token_ttl: Duration,
        /// Send Nova's notifications (instance.create.end, instance.delete.end; oslo v2
        /// envelopes on exchange `nova`) to this RabbitMQ (`amqp://user:password@host:port/vhost`).
        #[arg(long, env = "LAMBDA_CLOUD_NOTIFICATION_URL", hide_env_values = true)]
        notification_url: Option<String>,
        /// How long a server stays BUILD before its engine starts, as a VM boots (0s: at once).
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        boot_delay: Duration,
    },
    /// Run the controllers (leader-elected), with /metrics, /healthz and /readyz.
    Controller(Box<controller::ControllerArgs>),
    /// Measure components against a real etcd.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
    /// Bring up the whole local platform and run the examples.
    Up(up::UpArgs),
    /// Stop and remove what `lambda up` started.
    Down(up::DownArgs),
    /// Run the queue listener: events and asynchronous invocations on RabbitMQ.
    Events(listener::EventsArgs),
    /// Serve the invocation gateway (REST: invoke, function CRUD, OpenAPI, metrics).
    Gateway(invoke::GatewayArgs),
    /// Manage the gateway's API keys.
    #[command(subcommand)]
    Apikey(invoke::ApiKeyCommand),
    /// Manage the platform's secrets of a namespace (given to functions in `spec.secrets`).
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Invoke a function through the gateway and print its result.
    Invoke(invoke::InvokeArgs),
    /// Print (and with -f follow) the logs of a function's replicas.
    Logs(logs::LogsArgs),
    /// List execution records (async, event, scheduled runs), newest first.
    Executions(executions::ExecutionsArgs),
    /// Show one execution's record or its logs.
    #[command(subcommand)]
    Execution(executions::ExecutionCommand),
    /// Authenticate against OpenStack and show the catalog, flavors, key pairs, zones.
    CloudCheck(cloud_check::CloudCheckArgs),
    /// Show and edit the CLI's contexts (where the gateway, etcd and the Swarm manager are).
    #[command(subcommand)]
    Config(config::ConfigCommand),
}

/// Parses a KIND argument, with the accepted forms in the error.
pub fn parse_kind(s: &str) -> Result<Kind> {
    match Kind::from_alias(s) {
        Some(k) => Ok(k),
        None => bail!(
            "unknown kind {s:?}; expected one of: {}",
            Kind::aliases().join(", ")
        ),
    }
}

/// Runs a parsed command line.
pub async fn run(mut cli: Cli) -> Result<()> {
    // `lambda config …` reads and writes the file itself (and must work when it is broken).
    if !matches!(cli.command, Command::Config(_)) {
        cli.global.selected = context::select(cli.global.context_name.as_deref())?;
    }
    let g = &cli.global;
    if g.namespace_arg.len() > 1
        && !matches!(
            cli.command,
            Command::Apikey(invoke::ApiKeyCommand::Create { .. })
        )
    {
        bail!(
            "--namespace is given {} times; only `lambda apikey create` takes several",
            g.namespace_arg.len()
        );
    }
    match cli.command {
        Command::Apply { files, recursive } => apply::run(g, &files, recursive).await,
        Command::Get {
            kind,
            name,
            output,
            all_namespaces,
        } => {
            get::run(
                g,
                parse_kind(&kind)?,
                name.as_deref(),
                output,
                all_namespaces,
            )
            .await
        }
        Command::Describe { kind, name } => describe::run(g, parse_kind(&kind)?, &name).await,
        Command::Delete {
            kind,
            name,
            wait,
            timeout,
        } => wait::delete(g, parse_kind(&kind)?, &name, wait.then_some(timeout)).await,
        Command::Watch { kind, name } => watch::run(g, parse_kind(&kind)?, name.as_deref()).await,
        Command::Wait {
            target,
            condition,
            timeout,
        } => wait::run(g, &target, &condition, timeout).await,
        Command::Crds { write } => crds(write),
        Command::Cloud {
            listen,
            data_dir,
            bridge,
            bridge_cidr,
            first_host,
            max_instances,
            token_ttl,
            notification_url,
            boot_delay,
        } => {
            let cfg = crate::cloud::CloudConfig {
                listen,
                data_dir,
                bridge,
                bridge_cidr,
                first_host,
                max_instances,
                token_ttl,
                notification_url,
                boot_delay,
            };
            crate::cloud::run(cfg, shutdown_signal()).await?;
            Ok(())
        }
        Command::Controller(args) => controller::run(g, *args).await,
        Command::Bench { what } => bench::run(g, what).await,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "lambda", &mut std::io::stdout());
            Ok(())
        }
        Command::Up(args) => up::up(g, args).await,
        Command::Down(args) => up::down(g, args).await,
        Command::Gateway(args) => invoke::gateway(g, args).await,
        Command::Events(args) => listener::run(g, args).await,
        Command::Apikey(cmd) => invoke::apikey(g, cmd).await,
        Command::Secret(cmd) => secret::run(g, cmd).await,
        Command::Invoke(args) => invoke::invoke(g, args).await,
        Command::Logs(args) => logs::run(g, args).await,
        Command::Executions(args) => executions::list(g, args).await,
        Command::Execution(cmd) => executions::run(g, cmd).await,
        Command::CloudCheck(args) => cloud_check::run(&args).await,
        Command::Config(cmd) => config::run(g, cmd),
    }
}

fn crds(write: Option<PathBuf>) -> Result<()> {
    match write {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for k in Kind::ALL {
                let path = dir.join(schema_file_name(k));
                std::fs::write(&path, schema_yaml(k))
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
        None => {
            for k in Kind::ALL {
                println!("---\n{}", schema_yaml(k).trim_end());
            }
        }
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM: servers finish in-flight requests and stop.
pub(crate) async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
