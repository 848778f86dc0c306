//! `lambda bench cloud`: N servers created in parallel → ACTIVE, then deleted → gone, against
//! any OpenStack endpoint (the real one or `lambda cloud`); wall times, per-server create →
//! ACTIVE percentiles and, for `lambda cloud` (given its data dir), that each server's engine
//! answers and the emulator's memory per server.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::openstack::{CloudConfig, NetworkSpec, OpenStack, ServerSpec, ServerStatus};

use super::stats::{ms, percentile};

/// Errors of the cloud benchmark.
#[derive(Debug, thiserror::Error)]
pub enum CloudBenchError {
    #[error(transparent)]
    OpenStack(#[from] crate::openstack::Error),
    #[error("server {id}: {message}")]
    Server { id: String, message: String },
}

/// What to run.
#[derive(Debug, Clone)]
pub struct CloudBench {
    pub openrc: PathBuf,
    pub servers: usize,
    pub flavor: String,
    pub image: String,
    pub network: Option<String>,
    /// `lambda cloud`'s data dir: check engines and measure memory per server.
    pub emulator_dir: Option<PathBuf>,
}

fn rss_kb(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Sum of RSS of the processes whose command line mentions `dir` (engines, containerd, shims).
fn rss_under(dir: &Path) -> u64 {
    let needle = dir.display().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    procs
        .flatten()
        .filter_map(|p| {
            let name = p.file_name().to_string_lossy().into_owned();
            name.bytes().all(|b| b.is_ascii_digit()).then_some(name)
        })
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .map(|pid| rss_kb(&pid))
        .sum()
}

async fn wait_status(
    os: &OpenStack,
    id: &str,
    want: ServerStatus,
    timeout: Duration,
) -> Result<Duration, CloudBenchError> {
    let t = Instant::now();
    loop {
        let s = os.compute().get_server(id).await?;
        if s.status == want && s.task_state.is_none() {
            return Ok(t.elapsed());
        }
        if s.status == ServerStatus::Error {
            return Err(CloudBenchError::Server {
                id: id.into(),
                message: format!("ERROR: {:?}", s.fault.map(|f| f.message)),
            });
        }
        if t.elapsed() > timeout {
            return Err(CloudBenchError::Server {
                id: id.into(),
                message: format!("not {want:?} after {timeout:?}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the benchmark and prints its figures.
pub async fn run(cfg: &CloudBench) -> Result<(), CloudBenchError> {
    let os = OpenStack::connect(CloudConfig::from_openrc_file(&cfg.openrc)?).await?;
    let tag = format!("bench-{:08x}", rand::random::<u32>());
    let spec = |i: usize| ServerSpec {
        name: format!("{tag}-{i}"),
        flavor: cfg.flavor.clone(),
        image: cfg.image.clone(),
        networks: match &cfg.network {
            Some(n) => NetworkSpec::Named(vec![n.clone()]),
            None => NetworkSpec::None,
        },
        tags: vec![tag.clone()],
        ..Default::default()
    };
    let before = cfg
        .emulator_dir
        .as_ref()
        .map(|d| rss_under(&d.join("servers")));
    let t0 = Instant::now();
    let created = join_all((0..cfg.servers).map(|i| {
        let os = os.clone();
        let s = spec(i);
        async move {
            let t = Instant::now();
            let id = os.create_server(&s).await?;
            wait_status(&os, &id, ServerStatus::Active, Duration::from_secs(300)).await?;
            Ok::<_, CloudBenchError>((id, t.elapsed()))
        }
    }))
    .await;
    let all_active = t0.elapsed();
    let mut ids = Vec::new();
    let mut per = Vec::new();
    let mut first_err = None;
    for r in created {
        match r {
            Ok((id, d)) => {
                ids.push(id);
                per.push(d);
            }
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    // Leftovers from a failed create are found by tag and deleted too.
    if let Ok(list) = os
        .compute()
        .list_servers(&crate::openstack::ServerFilter {
            tags: vec![tag.clone()],
            ..Default::default()
        })
        .await
    {
        for s in list {
            if !ids.contains(&s.id) {
                ids.push(s.id);
            }
        }
    }
    per.sort();
    let mut engine_line = String::new();
    let mut mem_line = String::new();
    if let Some(dir) = &cfg.emulator_dir {
        let mut answering = 0;
        for id in &ids {
            let sock = dir
                .join("servers")
                .join(&id[..8.min(id.len())])
                .join("docker.sock");
            let ok = tokio::process::Command::new("docker")
                .arg("-H")
                .arg(format!("unix://{}", sock.display()))
                .args(["version", "--format", "{{.Server.Version}}"])
                .output()
                .await
                .map(|o| o.status.success())
                .unwrap_or(false);
            answering += usize::from(ok);
        }
        engine_line = format!(
            "engines answering at ACTIVE: {answering}/{} (ACTIVE is set only once the engine answers)",
            ids.len()
        );
        let after = rss_under(&dir.join("servers"));
        let per_server = after.saturating_sub(before.unwrap_or(0)) / ids.len().max(1) as u64;
        mem_line = format!(
            "emulator memory per server: {:.0} MiB (RSS of engine + containerd)",
            per_server as f64 / 1024.0
        );
    }
    let t1 = Instant::now();
    let deleted = join_all(ids.iter().map(|id| {
        let os = os.clone();
        let id = id.clone();
        async move {
            os.compute().delete_server(&id).await?;
            os.compute()
                .wait_for_server_gone(&id, Duration::from_secs(300))
                .await?;
            Ok::<_, CloudBenchError>(())
        }
    }))
    .await;
    let all_gone = t1.elapsed();
    println!(
        "cloud benchmark: {} servers in parallel ({})",
        cfg.servers,
        cfg.openrc.display()
    );
    println!(
        "  all ACTIVE:      {:>10}   (create -> ACTIVE per server: p50 {}, max {})",
        ms(all_active),
        ms(percentile(&per, 50.0)),
        ms(per.last().copied().unwrap_or_default())
    );
    println!("  all deleted:     {:>10}", ms(all_gone));
    if !engine_line.is_empty() {
        println!("  {engine_line}\n  {mem_line}");
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    deleted.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(())
}
