//! `lambda events`: the queue listener.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;

use crate::events::execution::retention::{DEFAULT_MAX_PER_FUNCTION, Retention};
use crate::events::listener::{self, ListenerConfig};

use super::GlobalArgs;

/// Flags of `lambda events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// RabbitMQ, `amqp://user:password@host:port/vhost` [default: the context's broker].
    #[arg(long, env = "LAMBDA_AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,
    /// Unacknowledged deliveries per queue: executions this process runs at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// How long to keep trying to reach the broker at start.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Serve /metrics and /healthz here.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Finished execution records older than this are removed.
    #[arg(long, default_value = "7days", value_parser = humantime::parse_duration)]
    pub retention_max_age: Duration,
    /// Finished execution records kept per function (its newest).
    #[arg(long, default_value_t = DEFAULT_MAX_PER_FUNCTION)]
    pub retention_per_function: usize,
    /// A network callbacks may reach although reserved by default (loopback, link-local,
    /// multicast, unspecified), e.g. 127.0.0.0/8; repeatable.
    #[arg(long = "callback-allow", value_name = "CIDR")]
    pub callback_allow: Vec<ipnet::IpNet>,
}

pub async fn run(g: &GlobalArgs, args: EventsArgs) -> Result<()> {
    let Some(url) = g.broker(args.amqp_url.as_ref()) else {
        bail!(
            "no broker: pass --amqp-url amqp://USER:PASSWORD@HOST:PORT/%2f, set LAMBDA_AMQP_URL, or use a context with one ({})",
            g.context_description()
        );
    };
    let store = g.store_waiting().await?;
    let cfg = ListenerConfig {
        amqp_url: url.value,
        prefetch: args.prefetch,
        connect_patience: args.connect_timeout,
        metrics_listen: args.metrics_listen,
        retention: Retention {
            max_age: args.retention_max_age,
            max_per_function: args.retention_per_function.max(1),
        },
        callbacks: listener::CallbackPolicy {
            allow: args.callback_allow,
        },
    };
    listener::run(store, cfg, super::shutdown_signal()).await?;
    Ok(())
}
