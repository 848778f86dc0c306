//! A server's flavor made real: its engine runs in a cgroup holding the flavor's memory and as
//! many CPUs as it has vCPUs, and sees `/proc/meminfo` through lxcfs, so the engine reports
//! to Swarm what a VM of the flavor would (Swarm's placement then fails with "insufficient
//! resources" exactly where it would on a cloud), and its containers live within that size
//! (daemon.json's `cgroup-parent`). The launcher (`scripts/node-dockerd.sh`) moves the engine
//! in; this module makes and removes the cgroups.
//!
//! Limit: a flavor with more vCPUs than the host has gets all of the host's CPUs, and Swarm
//! then reports fewer CPUs than the flavor names (logged at boot).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::CloudError;

/// Where cgroup v1 hierarchies are mounted on the host.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The cgroups of all servers live below this one, in each controller.
const PARENT: &str = "lambda-cloud";

/// The size of one server, from its flavor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub memory_mb: u32,
    pub vcpus: u32,
}

/// CPUs of a cpuset list such as `0-3,6`; `None` when it does not parse.
pub fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if a > b {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

/// `vcpus` of the `host` CPUs for the server whose id hashes to `seed`: consecutive from an
/// offset the seed picks (so one-vCPU servers spread over the host's CPUs), all of them when
/// the flavor asks for as many or more.
pub fn choose_cpus(host: &[u32], vcpus: u32, seed: u64) -> Vec<u32> {
    let n = host.len();
    let want = (vcpus as usize).max(1);
    if want >= n {
        return host.to_vec();
    }
    let start = (seed % n as u64) as usize;
    let mut cpus: Vec<u32> = (0..want).map(|i| host[(start + i) % n]).collect();
    cpus.sort_unstable();
    cpus
}

fn host_err(what: &str, path: &Path, e: std::io::Error) -> CloudError {
    CloudError::Host {
        what: what.into(),
        message: format!("{}: {e}", path.display()),
    }
}

fn write(path: &Path, value: &str) -> Result<(), CloudError> {
    std::fs::write(path, value).map_err(|e| host_err("cgroup", path, e))
}

fn read(path: &Path) -> Result<String, CloudError> {
    std::fs::read_to_string(path).map_err(|e| host_err("cgroup", path, e))
}

/// The cgroups of servers on this host.
#[derive(Debug, Clone)]
pub struct Cgroups {
    root: PathBuf,
}

impl Default for Cgroups {
    fn default() -> Self {
        Cgroups {
            root: PathBuf::from(CGROUP_ROOT),
        }
    }
}

impl Cgroups {
    /// The cgroup path of server `short_id` relative to each hierarchy's root (what the
    /// launcher's `LAMBDA_CGROUP` and daemon.json's `cgroup-parent` name).
    pub fn relative(short_id: &str) -> String {
        format!("{PARENT}/{short_id}")
    }

    fn dirs(&self, short_id: &str) -> [PathBuf; 2] {
        let rel = Self::relative(short_id);
        [
            self.root.join("memory").join(&rel),
            self.root.join("cpuset").join(&rel),
        ]
    }

    /// Makes (or re-limits) the server's memory and cpuset cgroups for `cap`; returns the CPUs
    /// it was given. Idempotent, so a reboot of the same server reuses them.
    pub fn prepare(
        &self,
        short_id: &str,
        cap: Capacity,
        seed: u64,
    ) -> Result<Vec<u32>, CloudError> {
        let cpuset = self.root.join("cpuset");
        let host_cpus = read(&cpuset.join("cpuset.cpus"))?;
        let mems = read(&cpuset.join("cpuset.mems"))?;
        let host = parse_cpu_list(&host_cpus).ok_or_else(|| CloudError::Host {
            what: "cgroup".into(),
            message: format!("cannot read the host's CPUs from {host_cpus:?}"),
        })?;
        // A cpuset cgroup takes no task until its cpus and mems are set, the parent's first.
        let parent = cpuset.join(PARENT);
        std::fs::create_dir_all(&parent).map_err(|e| host_err("cgroup", &parent, e))?;
        write(&parent.join("cpuset.cpus"), host_cpus.trim())?;
        write(&parent.join("cpuset.mems"), mems.trim())?;
        let [mem, cpu] = self.dirs(short_id);
        for d in [&mem, &cpu] {
            std::fs::create_dir_all(d).map_err(|e| host_err("cgroup", d, e))?;
        }
        let cpus = choose_cpus(&host, cap.vcpus, seed);
        let list: Vec<String> = cpus.iter().map(u32::to_string).collect();
        write(&cpu.join("cpuset.cpus"), &list.join(","))?;
        write(&cpu.join("cpuset.mems"), mems.trim())?;
        write(
            &mem.join("memory.limit_in_bytes"),
            &(u64::from(cap.memory_mb) << 20).to_string(),
        )?;
        Ok(cpus)
    }

    /// Removes the server's cgroups once their processes are gone (containers' cgroups below
    /// them first). Retries briefly: a killed engine's last tasks leave their cgroup a moment
    /// after they die.
    pub async fn remove(&self, short_id: &str) {
        for d in self.dirs(short_id) {
            for _ in 0..20 {
                if !d.exists() || remove_tree(&d).is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// `rmdir` of a cgroup and every cgroup below it, deepest first (a cgroup's files cannot be
/// deleted; an empty cgroup directory can).
fn remove_tree(d: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(d)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            remove_tree(&e.path())?;
        }
    }
    std::fs::remove_dir(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_as_the_kernel_writes_them() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0-2,5,7-8"), Some(vec![0, 1, 2, 5, 7, 8]));
        assert_eq!(parse_cpu_list("3"), Some(vec![3]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("2-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
    }

    #[test]
    fn servers_get_their_vcpus_spread_over_the_host() {
        let host = [0, 1, 2, 3];
        assert_eq!(choose_cpus(&host, 1, 0), [0]);
        assert_eq!(choose_cpus(&host, 1, 5), [1]);
        assert_eq!(choose_cpus(&host, 2, 3), [0, 3]);
        assert_eq!(choose_cpus(&host, 4, 9), [0, 1, 2, 3]);
        // More vCPUs than the host has: all of it (the documented limit).
        assert_eq!(choose_cpus(&[0, 1], 4, 1), [0, 1]);
        // A flavor of 0 vCPUs still runs somewhere.
        assert_eq!(choose_cpus(&host, 0, 2), [2]);
    }

    #[test]
    fn cgroups_are_named_below_one_parent() {
        assert_eq!(Cgroups::relative("1a2b3c4d"), "lambda-cloud/1a2b3c4d");
        let c = Cgroups {
            root: PathBuf::from("/x"),
        };
        assert_eq!(
            c.dirs("ab").map(|p| p.display().to_string()),
            ["/x/memory/lambda-cloud/ab", "/x/cpuset/lambda-cloud/ab"]
        );
    }
}
