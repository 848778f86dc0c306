#![forbid(unsafe_code)]
//! `lambda-agent` — see the crate documentation (`src/lib.rs`) for the contract.
//!
//! Usage: `lambda-agent` (serve, configured by `LAMBDA_*` variables), `lambda-agent healthcheck`,
//! `lambda-agent version`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lambda_agent::config::{self, Config};
use lambda_agent::{healthcheck, pool::Pool, server::Server};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        None | Some("serve") => serve(),
        Some("healthcheck") => {
            match healthcheck::check(config::port_from_env(), Duration::from_secs(1)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("version" | "--version" | "-V") => {
            println!("lambda-agent {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!(
                "lambda-agent: unknown command {other:?}; usage: lambda-agent [serve|healthcheck|version]"
            );
            ExitCode::from(2)
        }
    }
}

fn serve() -> ExitCode {
    let cfg = match Config::from_env() {
        Ok(cfg) => Arc::new(cfg),
        Err(e) => {
            eprintln!("lambda-agent: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    // The agent mostly moves bytes between sockets and pipes: a couple of threads is plenty.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lambda-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lambda-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: Arc<Config>) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let pool = Pool::new(cfg.clone())?;
    let server = Server::new(cfg.clone(), pool.clone());
    let listener = server.bind().await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Serve /healthz (503) while the workers warm up.
    let grace = cfg.timeout + Duration::from_secs(1);
    let serving = tokio::spawn(server.serve(listener, stop_rx, grace));
    eprintln!(
        "lambda-agent: {} {} on port {} ({} worker(s), timeout {} ms, payload limit {} bytes)",
        cfg.runtime,
        cfg.function_name,
        cfg.port,
        cfg.concurrency,
        cfg.timeout.as_millis(),
        cfg.max_payload
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        warmed = pool.warm_up() => {
            warmed?;
            eprintln!("lambda-agent: warm in {} ms", started.elapsed().as_millis());
        }
        _ = term.recv() => {
            eprintln!("lambda-agent: SIGTERM during warm-up: exiting");
            pool.shutdown().await;
            return Ok(());
        }
    }
    tokio::select! {
        _ = term.recv() => eprintln!("lambda-agent: SIGTERM: finishing in-flight invocations"),
        _ = tokio::signal::ctrl_c() => eprintln!("lambda-agent: SIGINT: finishing in-flight invocations"),
    }
    let _ = stop_tx.send(true);
    let _ = serving.await;
    pool.shutdown().await;
    eprintln!("lambda-agent: stopped");
    Ok(())
}
