//! `lambda controller`: runs the registered controllers under leader election, with metrics and
//! health endpoints; SIGTERM finishes in-flight reconciles and releases the lease.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::openstack::{CloudConfig, OpenStack};
use crate::reconcilers::cluster::{ClusterConfig, ClusterTimings};
use crate::reconcilers::function::FunctionsConfig;
use crate::reconcilers::function::spec::RuntimeImages;
use crate::reconcilers::{self, ControllersConfig};
use crate::runtime::Metrics;
use crate::runtime::leader::{LeaderConfig, run_elected};
use crate::swarm::Swarm;

use super::GlobalArgs;

/// Flags of `lambda controller`.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// RabbitMQ the scheduler publishes scheduled executions to,
    /// `amqp://user:password@host:port/vhost` [default: the context's broker]; without one,
    /// schedules do not fire and event sources do not run.
    #[arg(long, env = "LAMBDA_AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,
    /// Leader lease TTL: a crashed leader is replaced within it (+ ~0.5 s).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
    /// Serve /metrics, /healthz and /readyz here, e.g. 127.0.0.1:9090.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// This process' identity in the leader key (default: host name and pid).
    #[arg(long)]
    pub identity: Option<String>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long)]
    pub watch_namespace: Option<String>,
    /// How long events live.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub event_ttl: Duration,
    /// Every object is reconciled at least this often.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub resync: Duration,
    /// Docker Swarm manager the function controller drives (unix:///path or tcp://host:port);
    /// without it (and without DOCKER_HOST) functions are not reconciled.
    #[arg(long, env = "DOCKER_HOST")]
    pub docker_host: Option<String>,
    /// Image of a runtime, `runtime=image` (repeatable); overrides
    /// $LAMBDA_HOME/images/versions.env.
    #[arg(long = "runtime-image", value_name = "RUNTIME=IMAGE")]
    pub runtime_images: Vec<String>,
    /// This platform's id in the labels of the Swarm objects it owns (default: derived from the
    /// etcd cluster id and key prefix). Platforms sharing a Swarm need different ids.
    #[arg(long)]
    pub instance: Option<String>,
    /// Read the cloud credentials from this openrc file (`export OS_...` lines) instead of the
    /// environment. Without it, `OS_CLOUD` (clouds.yaml) or `OS_AUTH_URL` in the environment
    /// enable the node-side controllers (snapshot images, node pools' VMs, Swarm membership).
    #[arg(long, env = "LAMBDA_OPENRC")]
    pub openrc: Option<std::path::PathBuf>,
    /// `host:port` of the Swarm manager that worker VMs join.
    #[arg(long, env = "LAMBDA_SWARM_JOIN_ADDR")]
    pub swarm_join_addr: Option<String>,
    /// Serve the snapshot builder endpoint (runtime image download, phone home) here; it must
    /// be reachable from builder VMs, e.g. 10.251.0.1:9466.
    #[arg(long)]
    pub builder_listen: Option<SocketAddr>,
    /// The URL builder VMs use for that endpoint (default: http://<--builder-listen>).
    #[arg(long)]
    pub builder_url: Option<String>,
    /// A Swarm node `down` longer than this gets its Node replaced.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub node_down_grace: Duration,
    /// Longest wait for a removed node's tasks to move elsewhere before it is removed anyway.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub node_drain_timeout: Duration,
    /// An ACTIVE VM that has not joined the Swarm after this gets its Node replaced.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub node_join_timeout: Duration,
    /// Swarm placement constraint of every function service (repeatable), e.g.
    /// `node.role==worker` to keep functions off the manager.
    #[arg(long = "function-constraint", value_name = "CONSTRAINT")]
    pub function_constraints: Vec<String>,
    /// A function service with fewer tasks running than wanted and none starting for this long
    /// (or a task Swarm left pending this long after a node became available) gets a forced
    /// update (and a `Rekicked` event naming the task).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub function_stuck_after: Duration,
    /// How often Swarm services and configs, Nova servers and Swarm nodes whose object is gone
    /// (deleted behind the controller's back) are swept.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub sweep_every: Duration,
}

/// The cloud of `--openrc`, or of the environment when it names one (`None` when neither).
fn cloud_config(openrc: &Option<std::path::PathBuf>) -> Result<Option<CloudConfig>> {
    if let Some(path) = openrc {
        return Ok(Some(CloudConfig::from_openrc_file(path)?));
    }
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    if set("OS_CLOUD") || set("OS_AUTH_URL") {
        return Ok(Some(CloudConfig::from_env()?));
    }
    Ok(None)
}

/// The runtime images: `$LAMBDA_HOME/images/versions.env` when present, then the flags.
pub(crate) fn runtime_images(flags: &[String]) -> Result<RuntimeImages> {
    let mut images = match std::env::var_os("LAMBDA_HOME") {
        Some(home) => {
            let path = std::path::Path::new(&home).join("images/versions.env");
            if path.exists() {
                RuntimeImages::from_env_file(&path)?
            } else {
                RuntimeImages::default()
            }
        }
        None => RuntimeImages::default(),
    };
    for f in flags {
        images.set_flag(f)?;
    }
    Ok(images)
}

/// A stable id of this platform: its etcd cluster and key prefix.
async fn default_instance(store: &crate::store::Store) -> Result<String> {
    use sha2::Digest;
    let status = store
        .client()
        .status()
        .await
        .context("reading the etcd cluster id")?;
    let cluster = status.header().map(|h| h.cluster_id()).unwrap_or(0);
    let h = sha2::Sha256::digest(format!("{cluster:x}{}", store.keys().root()).as_bytes());
    Ok(hex::encode(&h[..6]))
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!("{host}/{}", std::process::id())
}

/// Cancels `stop` on SIGTERM or Ctrl-C.
fn stop_on_signals(stop: CancellationToken) -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down: finishing reconciles in flight");
        stop.cancel();
    });
    Ok(())
}

pub async fn run(g: &GlobalArgs, args: ControllerArgs) -> Result<()> {
    let store = g.store_waiting().await?;
    let metrics = Metrics::new();
    let stop = CancellationToken::new();
    stop_on_signals(stop.clone())?;
    let server = match args.metrics_addr {
        Some(addr) => Some(tokio::spawn(
            crate::runtime::metrics::serve(addr, metrics.clone(), stop.clone()).await?,
        )),
        None => None,
    };
    let leader = LeaderConfig {
        key: format!("{}/leader/controller", store.keys().root()),
        identity: args.identity.unwrap_or_else(default_identity),
        ttl: args.lease_ttl,
        request_timeout: g.etcd_timeout,
    };
    let instance = match args.instance.clone() {
        Some(i) => i,
        None => default_instance(&store).await?,
    };
    let images = runtime_images(&args.runtime_images)?;
    let swarm = match g.swarm_manager(args.docker_host.as_ref()).map(|m| m.value) {
        Some(host) => {
            let host = &host;
            let swarm = Swarm::connect(Some(host)).await?;
            eprintln!(
                "function controller: Docker {host} (API {}), instance {instance}, images {:?}",
                swarm.api_version(),
                images.0
            );
            Some(swarm)
        }
        None => {
            eprintln!("function controller disabled: no --docker-host (or DOCKER_HOST)");
            None
        }
    };
    let functions = swarm.clone().map(|swarm| {
        let mut f = FunctionsConfig::new(swarm, images.clone(), &instance);
        f.constraints = args.function_constraints.clone();
        f.stuck_after = args.function_stuck_after;
        f.sweep_every = args.sweep_every;
        f
    });
    let cluster = match (cloud_config(&args.openrc)?, &swarm) {
        (None, _) => {
            eprintln!(
                "node controllers disabled: no cloud (set OS_CLOUD or OS_AUTH_URL, or --openrc)"
            );
            None
        }
        (Some(_), None) => bail!("a cloud is configured but no Swarm manager: set --docker-host"),
        (Some(cloud), Some(swarm)) => {
            let join_addr = args.swarm_join_addr.clone().context(
                "a cloud is configured: --swarm-join-addr (the manager address VMs join) is required",
            )?;
            let cloud = OpenStack::connect(cloud)
                .await
                .context("connecting to the cloud")?;
            let builder_url = match (&args.builder_url, args.builder_listen) {
                (Some(u), _) => Some(u.clone()),
                (None, Some(a)) if a.ip().is_unspecified() => bail!(
                    "--builder-listen {a} is no address builder VMs can reach: give --builder-url"
                ),
                (None, Some(a)) => Some(format!("http://{a}")),
                (None, None) => None,
            };
            eprintln!(
                "node controllers: cloud {}, swarm join {join_addr}, builder endpoint {}",
                cloud.session().config().auth_url,
                builder_url
                    .as_deref()
                    .unwrap_or("(none: snapshot builds cannot run)")
            );
            Some(ClusterConfig {
                cloud,
                swarm: swarm.clone(),
                join_addr,
                advertise_addr: None,
                instance: instance.clone(),
                images: images.clone(),
                builder_url,
                timings: ClusterTimings {
                    down_grace: args.node_down_grace,
                    drain_timeout: args.node_drain_timeout,
                    join_timeout: args.node_join_timeout,
                    sweep_every: args.sweep_every,
                    ..ClusterTimings::default()
                },
            })
        }
    };
    let builder = match (&cluster, args.builder_listen) {
        (Some(c), Some(addr)) => {
            let (bound, task) = reconcilers::snapshot::endpoint::serve(
                addr,
                store.clone(),
                c.clone(),
                stop.clone(),
            )
            .await?;
            eprintln!("builder endpoint listening on {bound}");
            Some(task)
        }
        _ => None,
    };
    let schedules = match g.broker(args.amqp_url.as_ref()) {
        Some(url) => Some(reconcilers::schedule::SchedulesConfig {
            amqp_url: url.value,
        }),
        None => {
            eprintln!(
                "scheduler and event sources disabled: no broker (--amqp-url, LAMBDA_AMQP_URL or the context's)"
            );
            None
        }
    };
    let eventsources = schedules
        .as_ref()
        .map(|s| reconcilers::eventsource::EventSourcesConfig {
            amqp_url: s.amqp_url.clone(),
        });
    let cfg = ControllersConfig {
        schedules,
        eventsources,
        namespace: args.watch_namespace,
        event_ttl: args.event_ttl,
        resync: args.resync,
        functions,
        cluster,
    };
    metrics.set_ready(true);
    eprintln!(
        "controller {} started (lease TTL {:?})",
        leader.identity, leader.ttl
    );
    run_elected(
        store.client(),
        leader,
        Some(metrics.clone()),
        stop.clone(),
        // Every write the controllers make is fenced on the term (see `store::Fence`).
        |term| {
            reconcilers::run_all(
                store.fenced(term.fence),
                metrics.clone(),
                cfg.clone(),
                term.stop,
            )
        },
    )
    .await;
    stop.cancel();
    if let Some(s) = server {
        s.await.context("metrics server task")??;
    }
    if let Some(b) = builder {
        b.await.context("builder endpoint task")?;
    }
    Ok(())
}
