#!/usr/bin/env bash
# The dockerd of one worker "VM". Started by scripts/node.sh as
#     ip netns exec lambda-NAME unshare --uts scripts/node-dockerd.sh NAME NODE_DIR
# and exec's dockerd, so the caller's $! is dockerd's PID.
#
# `ip netns exec` gives the command a private mount namespace with a fresh /sys (so /sys/class/net shows the
# node's interfaces) — which hides the host's cgroup mounts, and dockerd then dies with "Devices cgroup isn't
# mounted". Re-mount the host's cgroup hierarchies inside this private mount namespace (they never propagate
# back to the host, and disappear with the last process in it).
set -euo pipefail
NAME=$1 D=$2

# Mirror the cgroup mounts of the host (PID 1's mount namespace): cgroup v1 (hybrid) or v2.
mounts=$(awk '$2 ~ "^/sys/fs/cgroup(/|$)" {print $2, $3, $4}' /proc/1/mounts)
[ -n "$mounts" ] || { echo "no cgroup mounts found in /proc/1/mounts" >&2; exit 1; }
while read -r dir type opts; do
  # Keep the options that select the hierarchy (controllers, name=, xattr, ...); a release_agent= that differs
  # from the existing hierarchy's makes the mount fail, and the flags are re-set by mount(8) anyway.
  opts=$(tr ',' '\n' <<<"$opts" | grep -v '^release_agent=' | paste -sd, -)
  mkdir -p "$dir"
  case $type in
    tmpfs) mount -t tmpfs -o mode=755 cgroup_root "$dir" ;;
    cgroup) mount -t cgroup -o "$opts" cgroup "$dir" ;;
    cgroup2) mount -t cgroup2 -o "$opts" cgroup2 "$dir" ;;
  esac
done <<<"$mounts"

# A server of `lambda cloud` gets its flavor's size, so that the engine reports to Swarm what a VM of the flavor
# would, and its containers live within it: memory and CPUs in a cgroup of its own (LAMBDA_CGROUP, made and
# removed by `lambda cloud`; daemon.json's cgroup-parent puts the containers under it), and /proc/meminfo seen
# through lxcfs, which answers every reader with its cgroup's limit (dockerd reads MemTotal there; its CPU
# count is the affinity that the cpuset gives it).
if [ -n "${LAMBDA_CGROUP:-}" ]; then
  [ -d /sys/fs/cgroup/memory ] && [ -d /sys/fs/cgroup/cpuset ] ||
    { echo "flavor limits need the cgroup v1 memory and cpuset controllers, not found under /sys/fs/cgroup" >&2; exit 1; }
  meminfo=${LAMBDA_MEMINFO:-/var/lib/lxcfs/proc/meminfo}
  head -c0 "$meminfo" 2>/dev/null ||
    { echo "lxcfs is not serving $meminfo: the engine would report the host's memory, not its flavor's (scripts/swarm.sh up starts lxcfs)" >&2; exit 1; }
  mem=/sys/fs/cgroup/memory/$LAMBDA_CGROUP cpu=/sys/fs/cgroup/cpuset/$LAMBDA_CGROUP
  [ -d "$mem" ] && [ -d "$cpu" ] || { echo "cgroup $LAMBDA_CGROUP was not prepared" >&2; exit 1; }
  echo $$ >"$mem/cgroup.procs"
  echo $$ >"$cpu/cgroup.procs"
  mount --bind "$meminfo" /proc/meminfo
fi

echo "$NAME" >/proc/sys/kernel/hostname      # own UTS namespace: distinct HOSTNAME in `docker node ls`

# Offline: no registry is reachable (see scripts/swarm.sh).
export DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9
export NO_PROXY=${LAMBDA_NO_PROXY:-127.0.0.0/8,localhost}
exec dockerd --config-file "$D/daemon.json" --data-root "$D/data" --exec-root "$D/exec" \
  --pidfile "$D/dockerd.own.pid" -H "unix://$D/docker.sock" --bip 172.31.0.1/24
