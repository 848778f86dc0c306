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
apt_ensure "${BUILD_PACKAGES[@]}" "${PLATFORM_PACKAGES[@]}" "${TEST_PACKAGES[@]}" "${BROWSER_PACKAGES[@]}"
npm_ensure
# schemathesis and openapi-spec-validator for tests/api_fuzz.rs (in $LAMBDA_HOME/venv).
"$PROJECT_ROOT/scripts/venv.sh" >/dev/null

: >"$LAMBDA_HOME/test.log"
failed_steps=()
# run_step NAME CMD... — runs one step with its output in test.log; a failure is recorded and the
# next steps still run, so the summary at the end always counts every test.
run_step() {
  local name=$1; shift
  log "$name"
  set +e
  "$@" 2>&1 | tee -a "$LAMBDA_HOME/test.log"
  local rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" -eq 0 ] || failed_steps+=("$name (exit $rc)")
}

run_step "cargo fmt --check" cargo fmt --all -- --check
run_step "cargo clippy --workspace --all-targets -- -D warnings" \
  cargo clippy --workspace --all-targets --locked -- -D warnings

CLOUD_PID=""
stop_contract_cloud() {
  if [ -n "$CLOUD_PID" ]; then
    kill "$CLOUD_PID" 2>/dev/null && wait "$CLOUD_PID" 2>/dev/null
    # lambda cloud's engines outlive it by design; the contract tests delete their servers, and
    # this catches what a failed test left behind.
    for d in "$LAMBDA_HOME"/cloud-contract/servers/*/; do
      [ -d "$d" ] || continue
      [ -f "$d/dockerd.pid" ] && kill "$(cat "$d/dockerd.pid")" 2>/dev/null
      ip netns del "lc-$(basename "$d")" 2>/dev/null
    done
    CLOUD_PID=""
  fi
  return 0
}
cleanup() {
  stop_contract_cloud
  # The README test's platform, when that test could not bring it down itself.
  if compgen -G "$LAMBDA_HOME/platform/*.pid" >/dev/null && [ -x "$PROJECT_ROOT/target/debug/lambda" ]; then
    "$PROJECT_ROOT/target/debug/lambda" down --project-dir "$PROJECT_ROOT" >/dev/null 2>&1 || true
  fi
  "$PROJECT_ROOT/scripts/openstack/down.sh" >/dev/null 2>&1 || true
  "$PROJECT_ROOT/scripts/rabbitmq.sh" down >/dev/null 2>&1 || true
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

LAMBDA_OS_ENV=$LAMBDA_HOME/openstack/env run_step "cargo test (OpenStack contract suite against the real OpenStack)" \
  cargo test --locked --workspace --all-targets --no-fail-fast

CLOUD_DIR=$LAMBDA_HOME/cloud-contract
rm -rf "$CLOUD_DIR"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Its Nova notifications go to the platform's RabbitMQ (as the real OpenStack's go to its own).
"$PROJECT_ROOT/scripts/rabbitmq.sh" up
notification_url=$("$PROJECT_ROOT/scripts/rabbitmq.sh" env | sed 's/^export LAMBDA_AMQP_URL=//')
"$PROJECT_ROOT/target/debug/lambda" cloud --listen "127.0.0.1:$port" --data-dir "$CLOUD_DIR" \
  --bridge lambda0 --bridge-cidr 10.251.0.1/24 --first-host 150 \
  --notification-url "$notification_url" >"$LAMBDA_HOME/cloud-contract.log" 2>&1 &
CLOUD_PID=$!
if wait_for 20 test -f "$CLOUD_DIR/env"; then
  LAMBDA_OS_ENV=$CLOUD_DIR/env run_step "OpenStack contract suite against lambda cloud" \
    cargo test --locked --workspace --test openstack_contract
else
  cat "$LAMBDA_HOME/cloud-contract.log"
  failed_steps+=("lambda cloud did not start")
fi
stop_contract_cloud

# Last, on its own: `lambda up`, the README's usage block verbatim, `lambda down` (which stops the
# Swarm the other tests used).
run_step "README usage block after lambda up (tests/readme.rs)" \
  cargo test --locked --workspace --test readme -- --nocapture

passed=$(grep -Eo '[0-9]+ passed' "$LAMBDA_HOME/test.log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$LAMBDA_HOME/test.log" | awk '{s+=$1} END {print s+0}')
if [ ${#failed_steps[@]} -gt 0 ]; then
  printf 'failed step: %s\n' "${failed_steps[@]}"
  # A step that failed without a test failing (a build error, a crash) still fails the run.
  [ "$failed" -gt 0 ] || failed=${#failed_steps[@]}
fi
echo "total: $passed passed, $failed failed"
[ ${#failed_steps[@]} -eq 0 ]
