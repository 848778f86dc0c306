#!/usr/bin/env bash
# The full test suite, as CI runs it (`.ci/run` calls this and nothing else):
# installs what is missing, then formatting check, clippy with -D warnings, and every test.
# Tests start their own etcd; this script starts the shared, slower services they use — the
# Docker Swarm manager, a real OpenStack on loopback and, for the second run of the OpenStack
# contract suite, `lambda cloud` — and stops them again at the end. Nothing is skipped: the
# contract suite fails when its cloud is unreachable.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$PROJECT_ROOT"

log "checking system packages"
apt_ensure protobuf-compiler etcd-server etcd-client openssl docker.io iptables iproute2 busybox-static debootstrap curl

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

CLOUD_PID=""
cleanup() {
  if [ -n "$CLOUD_PID" ]; then
    kill "$CLOUD_PID" 2>/dev/null && wait "$CLOUD_PID" 2>/dev/null
    # lambda cloud's engines outlive it by design; the contract tests delete their servers, and
    # this catches what a failed test left behind.
    for d in "$LAMBDA_HOME"/cloud-contract/servers/*/; do
      [ -d "$d" ] || continue
      [ -f "$d/dockerd.pid" ] && kill "$(cat "$d/dockerd.pid")" 2>/dev/null
      ip netns del "lc-$(basename "$d")" 2>/dev/null
    done
  fi
  "$PROJECT_ROOT/scripts/openstack/down.sh" >/dev/null 2>&1 || true
  "$PROJECT_ROOT/scripts/swarm.sh" down >/dev/null 2>&1 || true
}
trap cleanup EXIT

# The Docker Swarm manager the Swarm tests join workers to.
"$PROJECT_ROOT/scripts/swarm.sh" up
# The runtime images (static agent + python3/node/shell) the end-to-end function tests run.
"$PROJECT_ROOT/scripts/images.sh"
# A real OpenStack for the contract suite (first start on a fresh machine: ~2 min).
"$PROJECT_ROOT/scripts/openstack/up.sh"

export LAMBDA_OPENSTACK_CONTRACT=1
log "cargo test (OpenStack contract suite against the real OpenStack)"
LAMBDA_OS_ENV=$LAMBDA_HOME/openstack/env cargo test --locked --workspace --all-targets --no-fail-fast 2>&1 | tee "$LAMBDA_HOME/test.log"
status=${PIPESTATUS[0]}

if [ "$status" -eq 0 ]; then
  log "OpenStack contract suite against lambda cloud"
  CLOUD_DIR=$LAMBDA_HOME/cloud-contract
  rm -rf "$CLOUD_DIR"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$PROJECT_ROOT/target/debug/lambda" cloud --listen "127.0.0.1:$port" --data-dir "$CLOUD_DIR" \
    --bridge lambda0 --bridge-cidr 10.251.0.1/24 --first-host 150 >"$LAMBDA_HOME/cloud-contract.log" 2>&1 &
  CLOUD_PID=$!
  wait_for 20 test -f "$CLOUD_DIR/env" || { cat "$LAMBDA_HOME/cloud-contract.log"; die "lambda cloud did not start"; }
  LAMBDA_OS_ENV=$CLOUD_DIR/env cargo test --locked --test openstack_contract 2>&1 | tee -a "$LAMBDA_HOME/test.log"
  status=${PIPESTATUS[0]}
fi

passed=$(grep -Eo '[0-9]+ passed' "$LAMBDA_HOME/test.log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$LAMBDA_HOME/test.log" | awk '{s+=$1} END {print s+0}')
echo "total: $passed passed, $failed failed"
exit "$status"
