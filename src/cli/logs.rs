//! `lambda logs NAME [-f]`: the log lines of every replica of a function (its Swarm service).

use anyhow::{Context, Result};
use clap::Args;
use futures::StreamExt;

use crate::api::FunctionSpec;
use crate::reconcilers::function::spec::service_name;
use crate::swarm::Swarm;

use super::GlobalArgs;

/// Flags of `lambda logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Function name.
    pub name: String,
    /// Keep streaming new lines.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines of each replica.
    #[arg(long)]
    pub tail: Option<u32>,
    /// The Swarm manager [default: the context's].
    #[arg(long, env = "DOCKER_HOST")]
    pub docker_host: Option<String>,
}

pub async fn run(g: &GlobalArgs, args: LogsArgs) -> Result<()> {
    // The function must exist: a typo gets "not found", not an empty stream.
    let store = g.store().await?;
    store
        .get::<FunctionSpec>(&g.namespace(), &args.name)
        .await?;
    let manager = g.require_swarm_manager(args.docker_host.as_ref())?;
    let swarm = Swarm::connect(Some(&manager.value)).await.with_context(|| {
        format!(
            "cannot reach the Swarm manager at {} ({}); is the platform up (`lambda up`)? Or pass --docker-host / set DOCKER_HOST",
            manager.value, manager.source
        )
    })?;
    let service = service_name(&g.namespace(), &args.name);
    let mut lines = Box::pin(swarm.service_logs(&service, args.follow, args.tail));
    loop {
        tokio::select! {
            line = lines.next() => match line {
                Some(Ok(l)) => print!("{l}"),
                Some(Err(e)) => return Err(e).with_context(|| format!("logs of {service}")),
                None => return Ok(()),
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
