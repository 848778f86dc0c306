//! Servers as real hosts: one Docker engine per network namespace, plugged into a bridge with
//! its own address. Engines run in their own process group so they outlive a restart of
//! `lambda cloud`, which re-adopts them by PID.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::CloudError;
use super::capacity::{Capacity, Cgroups};
use super::state::Server;
use crate::openstack::hostname_of;

/// The launcher that remounts cgroups inside the namespace and execs dockerd (shared with
/// `scripts/node.sh`).
const LAUNCHER: &str = include_str!("../../scripts/node-dockerd.sh");

/// Where and how engines run.
#[derive(Debug, Clone)]
pub struct Hosts {
    pub data_dir: PathBuf,
    pub bridge: String,
    /// Gateway (the bridge's own address), e.g. `10.251.0.1`.
    pub gateway: String,
    /// The /24 prefix, e.g. `10.251.0`.
    pub prefix: String,
    /// Where servers' flavor limits live.
    pub cgroups: Cgroups,
}

async fn run(cmd: &mut Command, what: &str) -> Result<String, CloudError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| CloudError::Host {
            what: what.into(),
            message: e.to_string(),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(CloudError::Host {
            what: what.into(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// True when the process runs (a zombie, which still answers kill -0, does not).
fn pid_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ")
        .is_some_and(|(_, r)| !r.starts_with('Z'))
}

/// True when the process runs as `comm` (a recycled PID is not our engine).
fn pid_alive_as(pid: u32, comm: &str) -> bool {
    pid_alive(pid)
        && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
}

impl Hosts {
    /// Per-server directory (short, so the unix socket path stays under 108 bytes).
    pub fn dir(&self, s: &Server) -> PathBuf {
        self.data_dir.join("servers").join(&s.id[..8])
    }

    fn netns(s: &Server) -> String {
        format!("lc-{}", &s.id[..8])
    }

    fn veth(s: &Server) -> String {
        format!("vlc{}", &s.id[..8])
    }

    /// `unix://…/docker.sock` of a server's engine.
    pub fn docker_host(&self, s: &Server) -> String {
        format!("unix://{}", self.dir(s).join("docker.sock").display())
    }

    fn pid(&self, s: &Server) -> Option<u32> {
        std::fs::read_to_string(self.dir(s).join("dockerd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// True when the server's engine process is alive.
    pub fn is_running(&self, s: &Server) -> bool {
        self.pid(s).is_some_and(|p| pid_alive_as(p, "dockerd"))
    }

    fn launcher(&self) -> PathBuf {
        self.data_dir.join("node-dockerd.sh")
    }

    /// Writes the engine launcher once, before any engine starts: rewriting it while another
    /// engine's shell reads it would make that shell run a truncated script.
    pub fn install_launcher(&self) -> Result<(), CloudError> {
        let path = self.launcher();
        let tmp = path.with_extension("sh.tmp");
        std::fs::write(&tmp, LAUNCHER)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| CloudError::Host {
                what: "write launcher".into(),
                message: e.to_string(),
            })
    }

    /// Makes sure the bridge exists and carries the gateway address.
    pub async fn ensure_bridge(&self) -> Result<(), CloudError> {
        if run(
            Command::new("ip").args(["link", "show", &self.bridge]),
            "ip link show",
        )
        .await
        .is_err()
        {
            // A fixed MAC (the one scripts/swarm.sh gives the same bridge): without one a bridge
            // takes the lowest MAC of its ports, so a host leaving can change the gateway's MAC
            // under the others' ARP caches and black-hole their replies.
            run(
                Command::new("ip").args([
                    "link",
                    "add",
                    &self.bridge,
                    "address",
                    &bridge_mac(&self.bridge),
                    "type",
                    "bridge",
                ]),
                "create bridge",
            )
            .await?;
            run(
                Command::new("ip").args([
                    "addr",
                    "add",
                    &format!("{}/24", self.gateway),
                    "dev",
                    &self.bridge,
                ]),
                "address bridge",
            )
            .await?;
        }
        run(
            Command::new("ip").args(["link", "set", &self.bridge, "up"]),
            "bridge up",
        )
        .await?;
        // Bridged traffic between hosts crosses br_netfilter; Docker's FORWARD policy drops it.
        let rule = [
            "DOCKER-USER",
            "-i",
            &self.bridge,
            "-o",
            &self.bridge,
            "-j",
            "ACCEPT",
        ];
        if run(Command::new("iptables").arg("-C").args(rule), "iptables -C")
            .await
            .is_err()
        {
            let _ = run(
                Command::new("iptables").args(["-N", "DOCKER-USER"]),
                "iptables -N",
            )
            .await;
            run(Command::new("iptables").arg("-I").args(rule), "iptables -I").await?;
        }
        Ok(())
    }

    async fn netns_exists(name: &str) -> bool {
        run(Command::new("ip").args(["netns", "list"]), "ip netns list")
            .await
            .is_ok_and(|out| {
                out.lines()
                    .any(|l| l.split_whitespace().next() == Some(name))
            })
    }

    /// Creates the namespace and its link (idempotent).
    async fn plumb(&self, s: &Server) -> Result<(), CloudError> {
        let ns = Self::netns(s);
        let veth = Self::veth(s);
        if !Self::netns_exists(&ns).await {
            let _ = run(
                Command::new("ip").args(["link", "del", &veth]),
                "ip link del",
            )
            .await;
            run(
                Command::new("ip").args(["netns", "add", &ns]),
                "ip netns add",
            )
            .await?;
            run(
                Command::new("ip").args([
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ]),
                "create veth",
            )
            .await?;
            run(
                Command::new("ip").args(["link", "set", &veth, "master", &self.bridge, "up"]),
                "attach veth",
            )
            .await?;
        }
        let ipn = |args: &[&str]| {
            let mut c = Command::new("ip");
            c.args(["-n", &ns]).args(args);
            c
        };
        if s.network.is_some() {
            let have = run(
                &mut ipn(&["-4", "addr", "show", "dev", "eth0"]),
                "ip addr show",
            )
            .await?;
            if !have.contains(&format!(" {}/24 ", s.address)) {
                run(
                    &mut ipn(&["addr", "add", &format!("{}/24", s.address), "dev", "eth0"]),
                    "address host",
                )
                .await?;
            }
            run(
                &mut ipn(&["link", "set", "eth0", "address", &s.mac]),
                "set mac",
            )
            .await
            .ok();
            run(&mut ipn(&["link", "set", "eth0", "up"]), "eth0 up").await?;
            run(
                &mut ipn(&["route", "replace", "default", "via", &self.gateway]),
                "default route",
            )
            .await?;
        }
        run(&mut ipn(&["link", "set", "lo", "up"]), "lo up").await?;
        Ok(())
    }

    /// Starts (or restarts) the server's engine and waits until it answers.
    pub async fn start_engine(&self, s: &Server, cap: Capacity) -> Result<(), CloudError> {
        self.plumb(s).await?;
        let dir = self.dir(s);
        std::fs::create_dir_all(dir.join("data")).map_err(|e| CloudError::Host {
            what: "mkdir".into(),
            message: e.to_string(),
        })?;
        let short = &s.id[..8];
        let seed = u64::from_str_radix(short, 16).unwrap_or(0);
        let cpus = self.cgroups.prepare(short, cap, seed)?;
        if (cpus.len() as u32) < cap.vcpus {
            tracing::warn!(
                server = %s.id,
                vcpus = cap.vcpus,
                host_cpus = cpus.len(),
                "the flavor has more vCPUs than this host: its engine reports the host's"
            );
        }
        let cgroup = Cgroups::relative(short);
        let launcher = self.launcher();
        let daemon = serde_json::json!({
            "log-driver": "json-file",
            "log-opts": {"max-size": "10m", "max-file": "3"},
            // Containers count against the server's flavor, as on a VM.
            "cgroup-parent": format!("/{cgroup}"),
        });
        std::fs::write(dir.join("daemon.json"), daemon.to_string()).map_err(|e| {
            CloudError::Host {
                what: "daemon.json".into(),
                message: e.to_string(),
            }
        })?;
        let _ = std::fs::remove_file(dir.join("docker.sock"));
        let log = std::fs::File::create(dir.join("dockerd.log")).map_err(|e| CloudError::Host {
            what: "log".into(),
            message: e.to_string(),
        })?;
        let log2 = log.try_clone().map_err(|e| CloudError::Host {
            what: "log".into(),
            message: e.to_string(),
        })?;
        let hostname = hostname_of(&s.name);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &Self::netns(s), "unshare", "--uts", "bash"])
            .arg(&launcher)
            .arg(&hostname)
            .arg(&dir)
            .env("LAMBDA_CGROUP", &cgroup)
            .env(
                "LAMBDA_NO_PROXY",
                format!("{}.0/24,127.0.0.0/8,localhost", self.prefix),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            // Own process group: a Ctrl-C of `lambda cloud` must not take the hosts down.
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| CloudError::Host {
            what: "spawn dockerd".into(),
            message: e.to_string(),
        })?;
        let pid = child.id().unwrap_or(0);
        std::fs::write(dir.join("dockerd.pid"), pid.to_string()).map_err(|e| CloudError::Host {
            what: "pid".into(),
            message: e.to_string(),
        })?;
        let exit_log = dir.join("dockerd.log");
        tokio::spawn(async move {
            // Reap it whenever it exits, and say how it ended (the log is all a user has).
            if let Ok(status) = child.wait().await {
                use std::io::Write;
                if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&exit_log) {
                    let _ = writeln!(f, "engine process exited: {status}");
                }
            }
        });
        let host = self.docker_host(s);
        for _ in 0..300 {
            if run(
                Command::new("docker").args([
                    "-H",
                    &host,
                    "version",
                    "--format",
                    "{{.Server.Version}}",
                ]),
                "docker version",
            )
            .await
            .is_ok()
            {
                return Ok(());
            }
            // Until the launcher execs dockerd the process is `ip`, `unshare` or `bash`.
            if !pid_alive(pid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let tail = std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(5).collect();
        Err(CloudError::Host {
            what: "engine start".into(),
            message: format!(
                "dockerd did not answer: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ),
        })
    }

    /// Loads a `docker save` archive into the server's engine.
    pub async fn load_images(&self, s: &Server, archive: &Path) -> Result<(), CloudError> {
        run(
            Command::new("docker")
                .args(["-H", &self.docker_host(s), "load", "-q", "-i"])
                .arg(archive),
            "docker load",
        )
        .await
        .map(|_| ())
    }

    /// Runs user-data (a shell script) inside the server's namespace, in the background, with
    /// `DOCKER_HOST` pointing at the server's engine. Output goes to `console.log`.
    pub async fn run_user_data(&self, s: &Server, script: &[u8]) -> Result<(), CloudError> {
        let dir = self.dir(s);
        let path = dir.join("user-data");
        std::fs::write(&path, script).map_err(|e| CloudError::Host {
            what: "user-data".into(),
            message: e.to_string(),
        })?;
        let console =
            std::fs::File::create(dir.join("console.log")).map_err(|e| CloudError::Host {
                what: "console".into(),
                message: e.to_string(),
            })?;
        let console2 = console.try_clone().map_err(|e| CloudError::Host {
            what: "console".into(),
            message: e.to_string(),
        })?;
        // Its own UTS namespace with the server's hostname, as on a VM.
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &Self::netns(s),
                "unshare",
                "--uts",
                "sh",
                "-c",
                "hostname \"$1\" && exec sh \"$2\"",
                "user-data",
            ])
            .arg(hostname_of(&s.name))
            .arg(&path)
            .env("DOCKER_HOST", self.docker_host(s))
            .env("HOSTNAME", hostname_of(&s.name))
            .stdin(Stdio::null())
            .stdout(Stdio::from(console))
            .stderr(Stdio::from(console2))
            .process_group(0)
            .spawn()
            .map_err(|e| CloudError::Host {
                what: "run user-data".into(),
                message: e.to_string(),
            })?;
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Ok(())
    }

    /// Saves every tagged image of the server's engine into `out`; returns their references.
    pub async fn snapshot(&self, s: &Server, out: &Path) -> Result<Vec<String>, CloudError> {
        let host = self.docker_host(s);
        let list = run(
            Command::new("docker").args([
                "-H",
                &host,
                "image",
                "ls",
                "--format",
                "{{.Repository}}:{{.Tag}}",
            ]),
            "docker image ls",
        )
        .await?;
        let refs: Vec<String> = list
            .lines()
            .filter(|l| !l.contains("<none>") && !l.is_empty())
            .map(String::from)
            .collect();
        if refs.is_empty() {
            std::fs::write(out, b"").map_err(|e| CloudError::Host {
                what: "snapshot".into(),
                message: e.to_string(),
            })?;
            return Ok(refs);
        }
        run(
            Command::new("docker")
                .args(["-H", &host, "save", "-o"])
                .arg(out)
                .args(&refs),
            "docker save",
        )
        .await?;
        Ok(refs)
    }

    /// Stops the engine (TERM, then KILL), kills its leftover container shims, removes the
    /// namespace (which takes the veth pair with it) and the server's directory.
    pub async fn destroy(&self, s: &Server) -> Result<(), CloudError> {
        let dir = self.dir(s);
        if let Some(pid) = self.pid(s) {
            if pid_alive_as(pid, "dockerd") {
                let _ = run(Command::new("kill").arg(pid.to_string()), "kill").await;
                for _ in 0..100 {
                    if !pid_alive_as(pid, "dockerd") {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                if pid_alive_as(pid, "dockerd") {
                    let _ = run(
                        Command::new("kill").args(["-9", &pid.to_string()]),
                        "kill -9",
                    )
                    .await;
                }
            }
        }
        reap_shims(&dir.join("exec"));
        self.cgroups.remove(&s.id[..8]).await;
        let ns = Self::netns(s);
        if Self::netns_exists(&ns).await {
            run(
                Command::new("ip").args(["netns", "del", &ns]),
                "ip netns del",
            )
            .await?;
        }
        let _ = run(
            Command::new("ip").args(["link", "del", &Self::veth(s)]),
            "ip link del",
        )
        .await;
        // Container layers may still be mounted for a moment after the engine died.
        for _ in 0..20 {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(_) => {
                    let _ = run(
                        Command::new("sh").arg("-c").arg(format!(
                            "grep -o ' {0}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                            dir.display()
                        )),
                        "umount",
                    )
                    .await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Ok(())
    }
}

/// containerd shims are detached by design: after an engine dies hard, they and their
/// containers keep running. Kill those of this engine only (their `-address` is its socket).
fn reap_shims(exec_root: &Path) {
    let sock = format!(
        "-address {} ",
        exec_root.join("containerd/containerd.sock").display()
    );
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let name = p.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&sock) {
            let _ = std::process::Command::new("pkill")
                .args(["-9", "-P", &name])
                .status();
            let _ = std::process::Command::new("kill")
                .args(["-9", &name])
                .status();
        }
    }
}

/// A stable, locally administered MAC for a bridge: `02:` + the first five bytes of the
/// SHA-256 of its name (as `scripts/swarm.sh` computes it).
pub fn bridge_mac(name: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(name.as_bytes());
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        h[0], h[1], h[2], h[3], h[4]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_mac_matches_swarm_sh() {
        // printf lambda0 | sha256sum → the same five bytes scripts/swarm.sh uses.
        let out = std::process::Command::new("sh")
            .args(["-c", "printf lambda0 | sha256sum | cut -c1-10"])
            .output()
            .unwrap();
        let hex = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let want = format!(
            "02:{}:{}:{}:{}:{}",
            &hex[0..2],
            &hex[2..4],
            &hex[4..6],
            &hex[6..8],
            &hex[8..10]
        );
        assert_eq!(bridge_mac("lambda0"), want);
    }
}
