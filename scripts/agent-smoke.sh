#!/usr/bin/env bash
# End-to-end check of the runtime images with the agent, through Docker:
#
#   scripts/agent-smoke.sh [shell|python3|node ...]     (default: all three)
#
# Builds the agent (scripts/agent.sh) and the images (scripts/images.sh), then per runtime `docker run`s the
# image the way Swarm runs a function (read-only root fs, tmpfs /tmp, uid 10001, no-new-privileges, all
# capabilities dropped, --init, code mounted read-only at /var/lambda/code), waits for the HEALTHCHECK to say
# healthy, and checks over HTTP: a result, a function error (502), a timeout (504) then recovery, the user and
# the read-only root; then `docker stop` must end the agent with status 0. With python3, also builds and runs
# examples/custom-image on top of the python3 image. Prints the timings.
#
# Docker: $DOCKER_HOST when it answers, else the local Swarm manager ($LAMBDA_HOME/swarm/manager.sock), else a
# private dockerd started here (no bridge, no iptables: containers use the host network; data kept under
# $LAMBDA_HOME/agent-smoke so images stay cached) and stopped again at the end.
# Measured here: ~25 s with cached root fs tarballs (first debootstrap of python3 + node adds ~2 min).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
shopt -s inherit_errexit
SCRIPTS=$PROJECT_ROOT/scripts
DIR=$LAMBDA_HOME/agent-smoke
RUNTIMES=("$@")
[ ${#RUNTIMES[@]} -gt 0 ] || RUNTIMES=(shell python3 node)
CONTAINERS=()
STARTED_DOCKERD=""

cleanup() {
  local c
  for c in "${CONTAINERS[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
  [ -n "$STARTED_DOCKERD" ] && stop_pid "$DIR/dockerd.pid" 20
  return 0
}
trap cleanup EXIT

apt_ensure docker.io busybox-static debootstrap curl
mkdir -p "$DIR"

if [ -n "${DOCKER_HOST:-}" ] && docker version >/dev/null 2>&1; then
  :
elif DOCKER_HOST=unix://$LAMBDA_HOME/swarm/manager.sock docker version >/dev/null 2>&1; then
  export DOCKER_HOST=unix://$LAMBDA_HOME/swarm/manager.sock
else
  export DOCKER_HOST=unix://$DIR/docker.sock
  if ! docker version >/dev/null 2>&1; then
    log "starting a private dockerd ($DOCKER_HOST)"
    echo '{"log-driver": "json-file"}' >"$DIR/daemon.json"
    # No bridge and no iptables: nothing shared with other dockerds in this network namespace.
    env DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 \
      nohup dockerd --config-file "$DIR/daemon.json" --data-root "$DIR/data" --exec-root "$DIR/exec" \
      --pidfile "$DIR/dockerd.own.pid" -H "$DOCKER_HOST" --bridge none --iptables=false --ip-masq=false \
      --ip-forward=false >"$DIR/dockerd.log" 2>&1 &
    echo $! >"$DIR/dockerd.pid"
    STARTED_DOCKERD=1
    wait_for 30 docker version || { tail -20 "$DIR/dockerd.log" >&2; die "dockerd did not start"; }
  fi
fi
log "docker: $DOCKER_HOST"

AGENT=$("$SCRIPTS/agent.sh" build)
LAMBDA_AGENT_BIN=$AGENT "$SCRIPTS/images.sh" build "${RUNTIMES[@]}" >/dev/null
# shellcheck disable=SC1091
source "$LAMBDA_HOME/images/versions.env"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }
fail() { docker logs "$1" 2>&1 | tail -30 >&2; die "$2"; }

# expect NAME PORT EVENT HTTP_STATUS JQ_LIKE_SUBSTRING — POST the event, check status and a body substring.
expect() {
  local name=$1 port=$2 event=$3 want=$4 sub=$5 out code
  out=$(curl -s -w '\n%{http_code}' -H 'X-Lambda-Deadline-Ms: 20000' --data-binary "$event" \
    "http://127.0.0.1:$port/invoke") || fail "$name" "curl to $name failed"
  code=${out##*$'\n'}; out=${out%$'\n'*}
  [ "$code" = "$want" ] || fail "$name" "$name: $event → HTTP $code (want $want): $out"
  [[ $out == *"$sub"* ]] || fail "$name" "$name: $event → $out (want it to contain $sub)"
  printf '    %-34s → %s %s\n' "$event" "$code" "${out:0:90}"
}

# run_healthy NAME PORT DOCKER-RUN-ARGS... IMAGE — run like Swarm does, wait for the HEALTHCHECK to pass.
run_healthy() {
  local name=$1 port=$2 state; shift 2
  docker run -d --name "$name" --network host --read-only --tmpfs /tmp --user 10001:10001 \
    --security-opt no-new-privileges --cap-drop ALL --init -e LAMBDA_PORT="$port" "$@" >/dev/null
  CONTAINERS+=("$name")
  for _ in $(seq 1 300); do
    state=$(docker inspect -f '{{.State.Status}} {{.State.Health.Status}}' "$name")
    [ "$state" = "running healthy" ] && return 0
    [[ $state == exited* ]] && fail "$name" "$name exited before becoming healthy"
    sleep 0.05
  done
  fail "$name" "$name not healthy after 15 s ($state)"
}

# The example custom image (examples/custom-image) on top of the python3 runtime image.
custom() {
  local name=lambda-smoke-custom-$$ port ref=lambda-smoke/custom-python:1
  port=$(free_port)
  log "custom image: examples/custom-image FROM $LAMBDA_IMAGE_PYTHON3"
  DOCKER_BUILDKIT=0 docker build -q --build-arg BASE="$LAMBDA_IMAGE_PYTHON3" -t "$ref" \
    "$PROJECT_ROOT/examples/custom-image" >/dev/null 2>"$DIR/build-custom.log" ||
    { cat "$DIR/build-custom.log" >&2; die "custom image build failed"; }
  run_healthy "$name" "$port" "$ref"
  expect "$name" "$port" '{"name":"custom"}' 200 '"hello":"custom"'
  docker rm -f "$name" >/dev/null
}

smoke() {
  local rt=$1 ref var name port code handler=() t0 t_healthy
  var=LAMBDA_IMAGE_$(tr '[:lower:]' '[:upper:]' <<<"$rt"); ref=${!var}
  name=lambda-smoke-$rt-$$; port=$(free_port); code=$DIR/code-$rt
  case $rt in
    python3) handler=(-e LAMBDA_HANDLER=main.handler)
      cat >"$code" <<'PY'
import os, time
def handler(event, context):
    if event.get("fail"): raise RuntimeError("asked to fail")
    if event.get("sleep"): time.sleep(event["sleep"])
    try:
        open("/etc/written", "w"); rootfs = "writable"
    except OSError:
        rootfs = "read-only"
    return {"uid": os.getuid(), "rootfs": rootfs, "fn": context.function_name, "echo": event}
PY
      ;;
    node) handler=(-e LAMBDA_HANDLER=index.handler)
      cat >"$code" <<'JS'
const fs = require('fs');
exports.handler = async (event, context) => {
  if (event.fail) throw new RangeError('asked to fail');
  if (event.sleep) await new Promise((r) => setTimeout(r, event.sleep * 1000));
  let rootfs = 'writable';
  try { fs.writeFileSync('/etc/written', 'x'); } catch (e) { rootfs = 'read-only'; }
  return { uid: process.getuid(), rootfs, fn: context.functionName, echo: event };
};
JS
      ;;
    shell)
      cat >"$code" <<'SH'
event=$(cat)
case "$event" in *fail*) echo "asked to fail" >&2; exit 4 ;; *sleep*) sleep 5 ;; esac
if touch /etc/written 2>/dev/null; then rootfs=writable; else rootfs=read-only; fi
printf '{"uid":%s,"rootfs":"%s","echo":%s}\n' "$(id -u)" "$rootfs" "$event"
SH
      ;;
  esac
  chmod 0644 "$code"
  log "$rt: $ref on port $port"
  t0=$(now_ms)
  run_healthy "$name" "$port" -v "$code:/var/lambda/code:ro" -e LAMBDA_FUNCTION="smoke/$rt" \
    -e LAMBDA_TIMEOUT_MS=2000 -e LAMBDA_CONCURRENCY=2 "${handler[@]}" "$ref"
  t_healthy=$(($(now_ms) - t0))
  printf '    docker run → healthy: %d ms\n' "$t_healthy"
  expect "$name" "$port" '{"hello":"world"}' 200 '"uid":10001'
  expect "$name" "$port" '{"probe":1}' 200 '"rootfs":"read-only"'
  expect "$name" "$port" '{"fail":true}' 502 '"errorType":'
  expect "$name" "$port" '{"sleep":5}' 504 '"errorType":"Timeout"'
  expect "$name" "$port" '{"after":"timeout"}' 200 '"after":"timeout"'
  expect "$name" "$port" '{"bad json"' 400 'InvalidEvent'
  t0=$(now_ms)
  docker stop -t 10 "$name" >/dev/null
  code=$(docker inspect -f '{{.State.ExitCode}}' "$name")
  [ "$code" = 0 ] || fail "$name" "$name exited with $code after docker stop"
  printf '    docker stop: %d ms, exit status 0\n' "$(($(now_ms) - t0))"
  docker rm "$name" >/dev/null
}

for rt in "${RUNTIMES[@]}"; do smoke "$rt"; done
[[ " ${RUNTIMES[*]} " == *" python3 "* ]] && custom
printf 'agent: %s KiB static; images:\n' "$(du -k "$AGENT" | cut -f1)"
for rt in "${RUNTIMES[@]}"; do
  var=LAMBDA_IMAGE_$(tr '[:lower:]' '[:upper:]' <<<"$rt")
  printf '  %-40s %s\n' "${!var}" "$(docker image inspect -f '{{.Size}}' "${!var}" | awk '{printf "%.1f MB", $1/1e6}')"
done
log "agent smoke test passed"
