#!/usr/bin/env bash
# The full test suite, as CI runs it (`.ci/run` calls this and nothing else):
# installs what is missing, then formatting check, clippy with -D warnings, and every test.
# Tests start their own etcd (and, as later parts land, dockerd/swarm and OpenStack) and fail
# loudly when they cannot.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$PROJECT_ROOT"

log "checking system packages"
apt_ensure protobuf-compiler etcd-server etcd-client openssl docker.io iptables iproute2 busybox-static

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

# The Docker Swarm manager the Swarm tests join workers to (stopped again when the tests end).
"$PROJECT_ROOT/scripts/swarm.sh" up
trap '"$PROJECT_ROOT/scripts/swarm.sh" down >/dev/null 2>&1 || true' EXIT

log "cargo test"
cargo test --locked --all-targets 2>&1 | tee "$LAMBDA_HOME/test.log"
status=${PIPESTATUS[0]}
passed=$(grep -Eo '[0-9]+ passed' "$LAMBDA_HOME/test.log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$LAMBDA_HOME/test.log" | awk '{s+=$1} END {print s+0}')
echo "total: $passed passed, $failed failed"
exit "$status"
