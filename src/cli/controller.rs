//! `lambda controller`: runs the registered controllers under leader election, with metrics and
//! health endpoints; SIGTERM finishes in-flight reconciles and releases the lease.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use tokio_util::sync::CancellationToken;

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
}

/// The runtime images: `$LAMBDA_HOME/images/versions.env` when present, then the flags.
fn runtime_images(flags: &[String]) -> Result<RuntimeImages> {
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
    let store = g.store().await?;
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
    let functions = match &args.docker_host {
        Some(host) => {
            let swarm = Swarm::connect(Some(host)).await?;
            let instance = match args.instance.clone() {
                Some(i) => i,
                None => default_instance(&store).await?,
            };
            let images = runtime_images(&args.runtime_images)?;
            eprintln!(
                "function controller: Docker {host} (API {}), instance {instance}, images {:?}",
                swarm.api_version(),
                images.0
            );
            Some(FunctionsConfig::new(swarm, images, &instance))
        }
        None => {
            eprintln!("function controller disabled: no --docker-host (or DOCKER_HOST)");
            None
        }
    };
    let cfg = ControllersConfig {
        namespace: args.watch_namespace,
        event_ttl: args.event_ttl,
        resync: args.resync,
        functions,
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
        |term| reconcilers::run_all(store.clone(), metrics.clone(), cfg.clone(), term),
    )
    .await;
    stop.cancel();
    if let Some(s) = server {
        s.await.context("metrics server task")??;
    }
    Ok(())
}
