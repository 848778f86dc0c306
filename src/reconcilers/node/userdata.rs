//! The user-data of a worker VM: wait for its Docker engine, then join the Swarm as a worker.
//!
//! A shell script (cloud-init runs `#!` user-data as is; `lambda cloud` runs it in the server's
//! namespace). It is idempotent: an engine already in a swarm is left alone, so a re-run (a
//! reboot re-running user-data) does not fail.

/// What the join script needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinScript<'a> {
    /// `namespace/name` of the Node, for the console log.
    pub node: &'a str,
    /// The worker join token.
    pub token: &'a str,
    /// `host:port` of the manager.
    pub join_addr: &'a str,
}

/// Only what a join token and a `host:port` may contain, so nothing can break out of the
/// script's quoting.
fn safe(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '_' | '[' | ']'))
}

/// Renders the script; `None` when the token or the address contain anything unexpected.
pub fn render(j: &JoinScript<'_>) -> Option<String> {
    if !safe(j.token) || !safe(j.join_addr) {
        return None;
    }
    let manager_host = j
        .join_addr
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(j.join_addr)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let node: String = j
        .node
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '/' | '.'))
        .collect();
    Some(format!(
        r#"#!/bin/sh
# Lambda on OpenStack worker node {node}: join the Docker Swarm at {join}.
set -u
log() {{ echo "lambda-node: $*"; }}
command -v systemctl >/dev/null 2>&1 && systemctl start docker >/dev/null 2>&1
i=0
until docker info >/dev/null 2>&1; do
  i=$((i + 1))
  if [ "$i" -gt 600 ]; then log "the Docker engine does not answer"; exit 1; fi
  sleep 0.2
done
if [ "$(docker info --format '{{{{.Swarm.LocalNodeState}}}}')" = active ]; then
  log "already in a swarm"; exit 0
fi
addr=$(ip -4 route get {manager_host} 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
n=0
until docker swarm join --token {token} ${{addr:+--advertise-addr "$addr"}} {join}; do
  n=$((n + 1))
  if [ "$n" -gt 60 ]; then log "cannot join {join}"; exit 1; fi
  sleep 2
done
log "joined {join} as $(hostname) ($addr)"
"#,
        join = j.join_addr,
        token = j.token,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j<'a>(token: &'a str, addr: &'a str) -> JoinScript<'a> {
        JoinScript {
            node: "default/pool-abcde",
            token,
            join_addr: addr,
        }
    }

    #[test]
    fn renders_a_join_with_token_address_and_route_lookup() {
        let s = render(&j("SWMTKN-1-abc-def", "10.251.0.1:2377")).unwrap();
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("docker swarm join --token SWMTKN-1-abc-def"));
        assert!(s.contains("10.251.0.1:2377"));
        assert!(s.contains("ip -4 route get 10.251.0.1 "));
        assert!(s.contains("{{.Swarm.LocalNodeState}}"));
        assert!(s.contains("worker node default/pool-abcde"));
    }

    #[test]
    fn refuses_what_could_break_the_quoting() {
        assert!(render(&j("tok; rm -rf /", "10.0.0.1:2377")).is_none());
        assert!(render(&j("tok", "$(reboot):2377")).is_none());
        assert!(render(&j("", "10.0.0.1:2377")).is_none());
        assert!(render(&j("tok", "[fd00::1]:2377")).is_some());
    }

    #[test]
    fn script_is_valid_shell() {
        let s = render(&j("SWMTKN-1-x", "10.251.0.1:2377")).unwrap();
        let out = std::process::Command::new("sh")
            .args(["-n", "-c", &s])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
