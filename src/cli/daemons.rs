//! How `lambda up`/`down` run the platform's processes: the project's scripts (with their
//! output on failure), daemons started in sessions of their own with their PID recorded, and
//! stopped by that PID only (never by name).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub(super) fn step(msg: &str) {
    eprintln!("\x1b[1m==> {msg}\x1b[0m");
}

pub(super) async fn script(dir: &Path, name: &str, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(dir.join("scripts").join(name))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .await
        .with_context(|| format!("running scripts/{name}"))?;
    if !out.status.success() {
        bail!("scripts/{name} {} failed ({})", args.join(" "), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `export K=V` lines into pairs.
pub(super) fn exports(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.to_string(),
                v.trim_matches(|c| c == '"' || c == '\'').to_string(),
            )
        })
        .collect()
}

/// Waits until `addr` accepts connections and `file` exists (a daemon's readiness).
pub(super) async fn wait_listening(addr: &str, file: &Path, log: &Path) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() || !file.exists() {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "nothing listens on {addr} after 30 s (log: {})",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

pub(super) fn pid_alive(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .is_some_and(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, r)| !r.starts_with('Z'))
        })
}

/// Starts `lambda ARGS…` in the background unless the recorded one still runs.
pub(super) fn start_daemon(
    state: &Path,
    name: &str,
    args: &[String],
    env: &[(String, String)],
) -> Result<()> {
    let pid_file = state.join(format!("{name}.pid"));
    if pid_alive(&pid_file) {
        eprintln!(
            "    {name} already running (pid {})",
            std::fs::read_to_string(&pid_file)
                .unwrap_or_default()
                .trim()
        );
        return Ok(());
    }
    let log = std::fs::File::create(state.join(format!("{name}.log")))?;
    let child = std::process::Command::new(std::env::current_exe()?)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C of `lambda up` does not stop the platform.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    std::fs::write(&pid_file, child.id().to_string())?;
    eprintln!(
        "    {name} started (pid {}, log {})",
        child.id(),
        state.join(format!("{name}.log")).display()
    );
    Ok(())
}

pub(super) fn stop_daemon(state: &Path, name: &str) {
    let pid_file = state.join(format!("{name}.pid"));
    if pid_alive(&pid_file)
        && let Ok(pid) = std::fs::read_to_string(&pid_file)
    {
        let pid = pid.trim().to_string();
        let _ = std::process::Command::new("kill").arg(&pid).status();
        for _ in 0..100 {
            if !pid_alive(&pid_file) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if pid_alive(&pid_file) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid])
                .status();
        }
        eprintln!("    {name} stopped");
    }
    let _ = std::fs::remove_file(pid_file);
}
