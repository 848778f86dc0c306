//! `lambda cloud` as a child process for tests: its own data dir, a bridge and address range,
//! stopped when dropped — together with every engine and namespace it made (they outlive the
//! emulator by design), so a failed assertion leaks nothing.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lambda::openstack::{CloudConfig, OpenStack};

/// A running `lambda cloud`.
pub struct CloudProc {
    child: Option<Child>,
    pub dir: PathBuf,
    pub port: u16,
    args: Vec<String>,
}

impl CloudProc {
    pub fn start(dir: &Path, bridge: &str, cidr: &str, first_host: u8) -> CloudProc {
        Self::start_with(dir, bridge, cidr, first_host, &[])
    }

    /// [`CloudProc::start`] with more `lambda cloud` flags (e.g. `--boot-delay 4s`).
    pub fn start_with(
        dir: &Path,
        bridge: &str,
        cidr: &str,
        first_host: u8,
        extra: &[&str],
    ) -> CloudProc {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let args: Vec<String> = [
            "cloud".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            dir.display().to_string(),
            "--bridge".into(),
            bridge.into(),
            "--bridge-cidr".into(),
            cidr.into(),
            "--first-host".into(),
            first_host.to_string(),
        ]
        .into_iter()
        .chain(extra.iter().map(|a| a.to_string()))
        .collect();
        let mut c = CloudProc {
            child: None,
            dir: dir.to_path_buf(),
            port,
            args,
        };
        c.spawn();
        c
    }

    pub fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.with_extension("log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_lambda"))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start lambda cloud");
        self.child = Some(child);
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "lambda cloud did not listen: {}",
                std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    /// The ids (first 8 characters) of this cloud's servers that have a network namespace
    /// (`lc-<id>`) on the host now.
    pub fn namespaces(&self) -> BTreeSet<String> {
        let listed = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let names: BTreeSet<&str> = listed
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        std::fs::read_dir(self.dir.join("servers"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|id| names.contains(format!("lc-{id}").as_str()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `lambda cloud` on the project bridge (`lambda0`, 10.251.0.0/24: the Swarm manager's),
    /// handing out addresses from `first_host`, with more `flags`; and a client of it.
    pub async fn on_bridge(dir: &Path, first_host: u8, flags: &[&str]) -> (CloudProc, OpenStack) {
        let cloud = CloudProc::start_with(dir, "lambda0", "10.251.0.1/24", first_host, flags);
        let os = OpenStack::connect(
            CloudConfig::from_openrc_file(&cloud.dir.join("openrc"))
                .expect("lambda cloud's openrc"),
        )
        .await
        .expect("connect to lambda cloud");
        (cloud, os)
    }

    pub fn openrc(&self, file: &str) -> HashMap<String, String> {
        std::fs::read_to_string(self.dir.join(file))
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

impl Drop for CloudProc {
    /// Stops the emulator and, since its engines outlive it by design, also every engine and
    /// namespace it made — so a failed assertion leaks nothing.
    fn drop(&mut self) {
        self.stop();
        let Ok(servers) = std::fs::read_dir(self.dir.join("servers")) else {
            return;
        };
        for d in servers.flatten() {
            let id = d.file_name().to_string_lossy().into_owned();
            if let Ok(pid) = std::fs::read_to_string(d.path().join("dockerd.pid")) {
                let _ = Command::new("kill").arg(pid.trim()).status();
                let t = Instant::now();
                while Path::new(&format!("/proc/{}", pid.trim())).exists()
                    && t.elapsed() < Duration::from_secs(10)
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            // containerd shims outlive their engine by design: end them, then the server's
            // flavor cgroups (src/cloud/capacity.rs) can go.
            let sock = d.path().join("exec/containerd/containerd.sock");
            let _ = Command::new("pkill")
                .args(["-9", "-f", "--", &sock.display().to_string()])
                .status();
            std::thread::sleep(Duration::from_millis(200));
            for c in ["memory", "cpuset"] {
                let cg = Path::new("/sys/fs/cgroup")
                    .join(c)
                    .join("lambda-cloud")
                    .join(&id);
                let _ = Command::new("find")
                    .arg(&cg)
                    .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
                    .status();
            }
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("lc-{id}")])
                .status();
        }
    }
}
