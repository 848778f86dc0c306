//! What a test's platform instance leaves in the shared Swarm, removed when the test ends (also
//! after a failed assertion): the test command's Swarm outlives every test.

use std::process::Command;

use lambda::swarm::Swarm;

/// The Swarm the test command started (`scripts/swarm.sh up`): a client, its `DOCKER_HOST` and
/// the address workers join.
pub async fn shared() -> (Swarm, String, String) {
    let host = super::swarm_env("DOCKER_HOST");
    let join_addr = super::swarm_env("LAMBDA_SWARM_JOIN_ADDR");
    let swarm = Swarm::connect(Some(&host))
        .await
        .expect("the Swarm manager is not running: run scripts/swarm.sh up");
    (swarm, host, join_addr)
}

/// Removes every service, config, secret and node of the Swarm at `host` labelled as platform
/// instance `instance` (nodes forcibly: their engines may be gone already).
pub fn remove_instance_objects(host: &str, instance: &str) {
    let label = format!("{}={instance}", lambda::swarm::labels::INSTANCE);
    for kind in ["service", "config", "secret", "node"] {
        // A node's own labels are `node.label` (`label` is its engine's).
        let filter = match kind {
            "node" => format!("node.label={label}"),
            _ => format!("label={label}"),
        };
        let Ok(out) = Command::new("docker")
            .env("DOCKER_HOST", host)
            .args([kind, "ls", "-q", "--filter", &filter])
            .output()
        else {
            continue;
        };
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let mut args = vec![kind, "rm"];
            if kind == "node" {
                args.push("--force");
            }
            args.push(id);
            let _ = Command::new("docker")
                .env("DOCKER_HOST", host)
                .args(&args)
                .output();
        }
    }
}

/// Removes the Swarm nodes of the Swarm at `host` whose host name contains `fragment` (a
/// test's namespace: its servers are named `lambda-<namespace>-…`), labelled or not.
pub fn remove_nodes_named(host: &str, fragment: &str) {
    let Ok(out) = Command::new("docker")
        .env("DOCKER_HOST", host)
        .args(["node", "ls", "--format", "{{.ID}} {{.Hostname}}"])
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((id, name)) = line.split_once(' ')
            && name.contains(fragment)
        {
            let _ = Command::new("docker")
                .env("DOCKER_HOST", host)
                .args(["node", "rm", "--force", id])
                .output();
        }
    }
}
