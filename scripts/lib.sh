# Shared helpers for the project's scripts. Source it; never run it.
# Every script keeps its state (data dirs, logs, pid files) under $LAMBDA_HOME/<component>,
# and stops only the processes whose PIDs it recorded there.
set -euo pipefail

PROJECT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PROJECT_ROOT
export LAMBDA_HOME=${LAMBDA_HOME:-$PROJECT_ROOT/.lambda}
mkdir -p "$LAMBDA_HOME"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# wait_for SECONDS CMD... — poll CMD every 0.1 s until it succeeds or the time runs out.
wait_for() {
  local t=$1; shift
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -ge "$end" ] && { echo "timeout after ${t}s waiting for: $*" >&2; return 1; }
    sleep 0.1
  done
}

# apt_ensure PKG... — install the Debian packages that are missing (idempotent, no-op when present).
apt_ensure() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=900 update -q >/dev/null
  apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# The Debian packages the build, `scripts/up.sh` and `scripts/test.sh` rely on. apt_ensure skips
# Recommends, so every package used is named here, Recommends included: protobuf-compiler only
# recommends libprotobuf-dev, which holds google/protobuf/*.proto that etcd-client's build needs.
BUILD_PACKAGES=(protobuf-compiler libprotobuf-dev pkg-config ca-certificates)
# The console's browser test (scripts/console-test.sh): Debian's chromium, driven headless by
# playwright-core from npm (tests/console/package-lock.json). chromium's Recommends are for a
# desktop (chromium-sandbox: it runs with --no-sandbox as root here; upower, udev,
# notification-daemon, system-config-printer, libgl1-mesa-dri: no GPU, no printing) except
# fonts-liberation, which the screenshots' text is drawn with. nodejs (>= 18) runs the test;
# npm comes with it from NodeSource and is apt_ensured on its own where it does not
# (npm_ensure), because NodeSource's nodejs conflicts with Debian's npm package.
BROWSER_PACKAGES=(chromium fonts-liberation nodejs)
PLATFORM_PACKAGES=(etcd-server etcd-client openssl docker.io iptables iproute2 busybox-static debootstrap curl xz-utils rabbitmq-server python3-pika lxcfs)
# What the `lambda bench …` commands run beside the platform (nginx: the reverse proxy
# `bench invoke` measures the gateway against). scripts/up.sh installs them.
BENCH_PACKAGES=(nginx)
# What `scripts/venv.sh` builds the test tools' virtualenv with (schemathesis, openapi-spec-validator).
TEST_PACKAGES=(python3 python3-venv)

# npm_ensure — npm on the PATH: Debian's package unless a nodejs that ships it is installed.
npm_ensure() {
  command -v npm >/dev/null 2>&1 || apt_ensure npm
}

# pid_alive FILE — true when FILE holds the PID of a running process (a zombie, which still
# answers `kill -0` until PID 1 reaps it, does not count).
pid_alive() {
  local pid
  [ -f "$1" ] && pid=$(cat "$1") && [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

# stop_pid FILE [SECONDS] — SIGTERM the process recorded in FILE, SIGKILL after SECONDS (default 10).
stop_pid() {
  local f=$1 t=${2:-10}
  pid_alive "$f" || { rm -f "$f"; return 0; }
  local pid; pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  local end=$((SECONDS + t))
  while pid_alive "$f"; do
    [ "$SECONDS" -ge "$end" ] && { kill -9 "$pid" 2>/dev/null || true; break; }
    sleep 0.1
  done
  rm -f "$f"
}

# stop_proc FILE COMM SECONDS — SIGTERM the PID in FILE if it still is COMM (a stale file must not kill
# whatever reused the PID), SIGKILL after SECONDS; removes FILE.
stop_proc() {
  local f=$1 comm=$2 t=$3 pid end
  if pid_alive "$f" && pid=$(cat "$f") && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ]; then
    kill "$pid" 2>/dev/null || true
    end=$((SECONDS + t))
    while pid_alive "$f"; do
      [ "$SECONDS" -ge "$end" ] && { kill -9 "$pid" 2>/dev/null || true; sleep 0.2; break; }
      sleep 0.1
    done
  fi
  rm -f "$f"
}

# reap_shims EXEC_ROOT — containerd shims are detached by design: after a dockerd died hard, they and their
# containers keep running. Kill those of this daemon only: shims whose -address is its containerd socket.
reap_shims() {
  local sock=$1/containerd/containerd.sock p c
  for p in /proc/[0-9]*; do
    [[ "$(tr '\0' ' ' 2>/dev/null <"$p/cmdline")" == *"-address $sock "* ]] || continue
    for c in $(awk -v s="${p#/proc/}" '$4 == s {print $1}' /proc/[0-9]*/stat 2>/dev/null); do
      kill -9 "$c" 2>/dev/null || true         # the container's init: its whole PID namespace goes with it
    done
    kill -9 "${p#/proc/}" 2>/dev/null || true
  done
}
