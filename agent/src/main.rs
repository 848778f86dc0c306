#![forbid(unsafe_code)]
//! `lambda-agent` — see the crate documentation (`src/lib.rs`) for the contract.
//!
//! Usage: `lambda-agent` (serve, configured by `LAMBDA_*` variables), `lambda-agent healthcheck`,
//! `lambda-agent version`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lambda_agent::config::{self, Config, Mode, PoolConfig};
use lambda_agent::specialise::Generic;
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
    let mode = match Mode::from_env() {
        Ok(mode) => mode,
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
    let ran = match mode {
        Mode::Function(cfg) => runtime.block_on(run(Arc::new(cfg))),
        Mode::Pool(cfg) => runtime.block_on(run_pool(cfg)),
    };
    match ran {
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
    let serving = tokio::spawn(server.clone().serve(listener, stop_rx, grace));
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
    wait_for_stop(&mut term, &server).await;
    let _ = stop_tx.send(true);
    let _ = serving.await;
    pool.shutdown().await;
    eprintln!("lambda-agent: stopped");
    Ok(())
}

/// Until SIGTERM, SIGINT or the server asks to exit (a pool agent released or idle).
async fn wait_for_stop(term: &mut tokio::signal::unix::Signal, server: &Server) {
    let mut asked = server.stop_requested();
    tokio::select! {
        _ = term.recv() => eprintln!("lambda-agent: SIGTERM: finishing in-flight invocations"),
        _ = tokio::signal::ctrl_c() => eprintln!("lambda-agent: SIGINT: finishing in-flight invocations"),
        why = asked.wait_for(Option::is_some) => {
            let why = why.ok().and_then(|w| *w).unwrap_or("asked to");
            eprintln!("lambda-agent: {why}: finishing in-flight invocations and exiting");
        }
    }
}

/// A pool agent: generic workers until one specialisation makes it one function's agent.
async fn run_pool(cfg: PoolConfig) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let generic = Generic::new(cfg.clone())?;
    let server = Server::pooled(generic.clone());
    let listener = server.bind().await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // In-flight invocations of the function it may become get the longest timeout to finish.
    let grace = Duration::from_secs(901);
    let serving = tokio::spawn(server.clone().serve(listener, stop_rx, grace));
    eprintln!(
        "lambda-agent: pool agent for {} on port {} ({} generic worker(s))",
        cfg.runtime, cfg.port, cfg.workers
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        warmed = generic.warm_up() => {
            warmed?;
            eprintln!("lambda-agent: generic workers warm in {} ms", started.elapsed().as_millis());
        }
        _ = term.recv() => {
            eprintln!("lambda-agent: SIGTERM during warm-up: exiting");
            generic.shutdown().await;
            return Ok(());
        }
    }
    wait_for_stop(&mut term, &server).await;
    let _ = stop_tx.send(true);
    let _ = serving.await;
    generic.shutdown().await;
    if let Some(pool) = server.pool() {
        pool.shutdown().await;
    }
    eprintln!("lambda-agent: stopped");
    Ok(())
}
