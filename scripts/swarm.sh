#!/usr/bin/env bash
# Docker Swarm manager for the local platform: `scripts/swarm.sh up|down [--purge]|status|env`.
#
#   up      lxcfs (flavor-sized views of /proc/meminfo for `lambda cloud` servers) + bridge $LAMBDA_BRIDGE (10.251.0.1/24) + a private manager dockerd (own data/exec root, unix socket
#           $LAMBDA_HOME/swarm/manager.sock — never the system docker) + swarm init + overlay network lambda-net.
#   down    removes every worker node made by node.sh, leaves the swarm, stops the dockerd we started (by PID),
#           deletes the iptables rule, links and bridge we created. `--purge` also deletes $LAMBDA_HOME/swarm.
#   status  prints what runs; exit status 0 only when the manager is up and the swarm active.
#   env     prints `export VAR=...` lines for tools and tests:  eval "$(scripts/swarm.sh env)"
# Idempotent: `up` twice is a no-op the second time; `down` on a stopped platform is a no-op.
# Measured here: up 1.5 s from nothing (0.3 s when up), down 2.2 s (+ ~4 s for worker nodes, in parallel).
#
# Environment (all optional): LAMBDA_HOME, LAMBDA_BRIDGE (lambda0), LAMBDA_BRIDGE_CIDR (10.251.0.1/24, must be a
# /24: node k is .(k+1)), LAMBDA_SWARM_NETWORK (lambda-net), LAMBDA_SWARM_ADDR_POOL (10.252.0.0/16, overlay
# subnets), LAMBDA_MANAGER_AVAILABILITY (active; `drain` keeps tasks off the manager),
# LAMBDA_MANAGER_BRIDGE_CIDR (172.31.254.1/24) and LAMBDA_MANAGER_GW_SUBNET (172.31.255.0/24) for the manager
# dockerd's own bridges, named LAMBDA_MANAGER_DOCKER_BRIDGE (lambda-docker0) and LAMBDA_MANAGER_GW_BRIDGE (lambda-gw0)
# (override all of these to run a second platform beside another in one network namespace), LAMBDA_SWARM_INGRESS (remove; `keep` keeps the useless-here ingress network).
#
# Kernel facts behind the choices (see /work/shared/reference/README.md): no dummy interfaces (so the manager
# address sits on an empty bridge), no IPVS (so no routing mesh/VIPs: publish mode=host, endpoint-mode dnsrr),
# br_netfilter on (so bridged node<->node traffic needs an ACCEPT in DOCKER-USER).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCRIPTS=$PROJECT_ROOT/scripts
DIR=$LAMBDA_HOME/swarm
MGR=$DIR/manager
SOCK=$DIR/manager.sock
export DOCKER_HOST=unix://$SOCK

BRIDGE=${LAMBDA_BRIDGE:-lambda0}
BRIDGE_CIDR=${LAMBDA_BRIDGE_CIDR:-10.251.0.1/24}
ADDR=${BRIDGE_CIDR%/*}
[[ $BRIDGE_CIDR == */24 && $ADDR =~ ^([0-9]+\.[0-9]+\.[0-9]+)\.[0-9]+$ ]] ||
  die "LAMBDA_BRIDGE_CIDR must be an IPv4 address with /24 (got '$BRIDGE_CIDR'); node k gets .(k+1)"
SUBNET=${BASH_REMATCH[1]}.0/24
NETWORK=${LAMBDA_SWARM_NETWORK:-lambda-net}
# Overlay subnets come from this pool instead of Docker's 10.0.0.0/8, which often overlaps real networks.
ADDR_POOL=${LAMBDA_SWARM_ADDR_POOL:-10.252.0.0/16}
# The manager is also a Swarm node; `drain` keeps function tasks on the workers only.
AVAILABILITY=${LAMBDA_MANAGER_AVAILABILITY:-active}
# The manager dockerd lives in the host's network namespace, where a system dockerd may also live. Give its
# default bridge and its docker_gwbridge their own Linux names and subnets so the two never share a bridge.
DOCKER_BRIDGE=${LAMBDA_MANAGER_DOCKER_BRIDGE:-lambda-docker0}
DOCKER_BRIDGE_CIDR=${LAMBDA_MANAGER_BRIDGE_CIDR:-172.31.254.1/24}
GW_BRIDGE=${LAMBDA_MANAGER_GW_BRIDGE:-lambda-gw0}
GW_SUBNET=${LAMBDA_MANAGER_GW_SUBNET:-172.31.255.0/24}
DOCKER_USER_RULE=(-i "$BRIDGE" -o "$BRIDGE" -j ACCEPT)

# No registry is reachable: without PREFER_OFFLINE Swarm tries a pull on every task start; the proxy sends any
# remaining registry call to a closed loopback port, so it fails at once instead of leaving the machine.
DAEMON_ENV=(DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9
            NO_PROXY="$SUBNET,127.0.0.0/8,localhost")


dk() { docker "$@"; }   # always the manager: DOCKER_HOST is exported above
manager_up() { pid_alive "$MGR/dockerd.pid" && dk version >/dev/null 2>&1; }
swarm_state() { dk info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null; }
link_exists() { ip link show "$1" >/dev/null 2>&1; }

# bridge_mac NAME — a stable, locally administered unicast MAC for bridge NAME.
bridge_mac() { printf '%s' "$1" | sha256sum | sed -E 's/^(..)(..)(..)(..)(..).*/02:\1:\2:\3:\4:\5/'; }

# ensure_bridge NAME CIDR MARKER — create a bridge carrying CIDR; MARKER records that we made it (down deletes
# only bridges we made).
ensure_bridge() {
  local name=$1 cidr=$2 marker=$3
  if ! link_exists "$name"; then
    # A fixed MAC: a bridge without one takes the lowest MAC of its ports, so removing a container (or a
    # node's veth) can change the gateway's MAC under the others' ARP caches and black-hole their replies
    # to the host for up to a minute. (Docker pins the MAC of bridges it creates, not of ours.)
    ip link add "$name" address "$(bridge_mac "$name")" type bridge
    touch "$marker"
  fi
  # Also for a bridge made by an older version of this script.
  [ "$(cat "/sys/class/net/$name/address")" = "$(bridge_mac "$name")" ] || ip link set dev "$name" address "$(bridge_mac "$name")"
  ip -4 addr show dev "$name" | grep -qF " $cidr " || ip addr add "$cidr" dev "$name"
  ip link set "$name" up
}

# Is another dockerd (not ours) running in this network namespace? Then Docker's iptables chains are shared
# and must not be torn down.
other_dockerd_here() {
  local me p ours=""
  me=$(readlink /proc/self/ns/net)
  pid_alive "$MGR/dockerd.pid" && ours=$(cat "$MGR/dockerd.pid")
  for p in $(pgrep -x dockerd); do
    [ "$p" = "$ours" ] && continue
    [ "$(readlink "/proc/$p/ns/net" 2>/dev/null)" = "$me" ] && return 0
  done
  return 1
}

start_manager() {
  mkdir -p "$MGR/data" "$MGR/exec"
  # Our own config (never the system /etc/docker/daemon.json); container logs rotate.
  echo '{"log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": "3"}}' >"$MGR/daemon.json"
  # The first dockerd in this netns creates Docker's iptables chains, sets FORWARD to DROP and ip_forward=1.
  # Remember the host's state so `down` can put it back when no dockerd is left here.
  if [ ! -f "$DIR/host-state" ] && ! other_dockerd_here && ! iptables -n -L DOCKER >/dev/null 2>&1; then
    printf 'FORWARD_POLICY=%s\nIP_FORWARD=%s\n' \
      "$(iptables -S FORWARD | awk '$1 == "-P" {print $3}')" "$(cat /proc/sys/net/ipv4/ip_forward)" >"$DIR/host-state"
  fi
  [ -S "$SOCK" ] && rm -f "$SOCK"
  log "starting manager dockerd ($DOCKER_HOST)"
  env "${DAEMON_ENV[@]}" nohup dockerd \
    --config-file "$MGR/daemon.json" --data-root "$MGR/data" --exec-root "$MGR/exec" \
    --pidfile "$MGR/dockerd.own.pid" -H "$DOCKER_HOST" \
    --bridge "$DOCKER_BRIDGE" >"$MGR/dockerd.log" 2>&1 &
  echo $! >"$MGR/dockerd.pid"
  wait_for 30 dk version || { tail -20 "$MGR/dockerd.log" >&2; die "manager dockerd did not start (log: $MGR/dockerd.log)"; }
}

# lxcfs answers each reader of its /proc/meminfo with the reader's cgroup limit: the engines of `lambda cloud`
# servers see their flavor's memory through it, as a VM would (src/cloud/capacity.rs). One that already serves
# $LXCFS (the system's) is used as is and left alone by `down`.
LXCFS=/var/lib/lxcfs
lxcfs_serving() { head -c0 "$LXCFS/proc/meminfo" 2>/dev/null; }
# /proc/mounts, not mountpoint(1): stat on a dead FUSE mount fails ("Transport endpoint is not connected").
lxcfs_mounted() { awk -v m="$LXCFS" '$2 == m { found = 1 } END { exit !found }' /proc/mounts; }
lxcfs_up() {
  apt_ensure lxcfs
  lxcfs_serving && return 0
  lxcfs_mounted && umount -l "$LXCFS"   # a dead lxcfs leaves its mount ("not connected")
  [ -e /dev/fuse ] || die "lxcfs needs /dev/fuse, which this machine lacks"
  mkdir -p "$LXCFS"
  setsid lxcfs -p "$DIR/lxcfs.pid" "$LXCFS" >"$DIR/lxcfs.log" 2>&1 </dev/null &
  local i
  for i in $(seq 50); do lxcfs_serving && { log "lxcfs serving $LXCFS"; return 0; }; sleep 0.1; done
  die "lxcfs did not start: $(tail -3 "$DIR/lxcfs.log" | tr '\n' ' ')"
}
lxcfs_down() {
  [ -f "$DIR/lxcfs.pid" ] || return 0   # not ours
  stop_proc "$DIR/lxcfs.pid" lxcfs 10
  lxcfs_mounted && umount -l "$LXCFS"
  return 0
}

up() {
  apt_ensure docker.io iptables iproute2
  mkdir -p "$DIR"
  lxcfs_up
  ensure_bridge "$BRIDGE" "$BRIDGE_CIDR" "$DIR/created-$BRIDGE"
  ensure_bridge "$DOCKER_BRIDGE" "$DOCKER_BRIDGE_CIDR" "$DIR/created-$DOCKER_BRIDGE"

  if manager_up; then
    log "manager dockerd already running (pid $(cat "$MGR/dockerd.pid"))"
  else
    pid_alive "$MGR/dockerd.pid" && die "dockerd pid $(cat "$MGR/dockerd.pid") runs but does not answer on $SOCK"
    start_manager
  fi

  # Bridged traffic between node namespaces crosses br_netfilter, whose FORWARD policy Docker sets to DROP:
  # without this, gossip and VXLAN between nodes are silently dropped.
  iptables -C DOCKER-USER "${DOCKER_USER_RULE[@]}" 2>/dev/null || iptables -I DOCKER-USER "${DOCKER_USER_RULE[@]}"

  # docker_gwbridge must exist before the first overlay attachment to get our own bridge name and subnet.
  dk network inspect docker_gwbridge >/dev/null 2>&1 ||
    dk network create --driver bridge --subnet "$GW_SUBNET" \
      --opt com.docker.network.bridge.name="$GW_BRIDGE" \
      --opt com.docker.network.bridge.enable_icc=false \
      --opt com.docker.network.bridge.enable_ip_masquerade=true docker_gwbridge >/dev/null

  case "$(swarm_state)" in
    active) log "swarm already active (manager $ADDR)" ;;
    inactive)
      log "swarm init (advertise $ADDR)"
      dk swarm init --advertise-addr "$ADDR" --listen-addr "$ADDR:2377" --data-path-addr "$ADDR" \
        --default-addr-pool "$ADDR_POOL" --default-addr-pool-mask-length 24 >/dev/null ;;
    *) die "manager swarm state is '$(swarm_state)'; try: scripts/swarm.sh down && scripts/swarm.sh up" ;;
  esac
  dk node update --availability "$AVAILABILITY" "$(dk info --format '{{.Swarm.NodeID}}')" >/dev/null
  # The routing mesh cannot work without IPVS. Without the ingress network, publishing in ingress mode fails
  # at once ("service needs ingress network") instead of silently not routing, and `swarm leave` no longer
  # stalls 5 s waiting for its removal. LAMBDA_SWARM_INGRESS=keep keeps it.
  if [ "${LAMBDA_SWARM_INGRESS:-remove}" != keep ] && dk network inspect ingress >/dev/null 2>&1; then
    # (The CLI asks for confirmation. Removal is asynchronous, ~1 s: an `up` right after still sees it and its
    # rm fails harmlessly.)
    echo y | dk network rm ingress >/dev/null 2>&1 || true
  fi

  dk network inspect "$NETWORK" >/dev/null 2>&1 ||
    dk network create --driver overlay --attachable --label lambda.managed=true "$NETWORK" >/dev/null
  log "swarm up: manager $ADDR, network $NETWORK — eval \"\$($0 env)\""
}

# Undo what dockerd did to this network namespace (chains, FORWARD policy, ip_forward) — only when we recorded
# the state before it and no other dockerd still uses it.
restore_host() {
  [ -f "$DIR/host-state" ] || return 0
  other_dockerd_here && { log "another dockerd runs here; leaving Docker's iptables chains alone"; return 0; }
  local t rule c FORWARD_POLICY=ACCEPT IP_FORWARD=0
  source "$DIR/host-state"
  for t in filter nat; do
    # Rules that jump to, or live in, Docker's chains, or that dockerd wrote for our bridges.
    iptables-save -t "$t" | grep '^-A' |
      grep -E -- "DOCKER|$DOCKER_BRIDGE|$GW_BRIDGE|${DOCKER_BRIDGE_CIDR%.*}\.|${GW_SUBNET%.*}\." |
      grep -v -- '^-A DOCKER' | sed 's/^-A/-D/' |
      while read -r rule; do eval "iptables -t $t $rule" || true; done
    for c in $(iptables-save -t "$t" | awk -F'[: ]' '/^:DOCKER/ {print $2}'); do
      iptables -t "$t" -F "$c"; iptables -t "$t" -X "$c"
    done
  done
  iptables -P FORWARD "$FORWARD_POLICY"
  echo "$IP_FORWARD" >/proc/sys/net/ipv4/ip_forward
  rm -f "$DIR/host-state"
}

down() {
  local purge=${1:-}
  [ -z "$purge" ] || [ "$purge" = --purge ] || die "usage: $0 down [--purge]"
  [ -d "$DIR" ] || { log "swarm not set up"; return 0; }
  # Worker nodes first (their own dockerds and namespaces), in parallel (each takes ~4 s, mostly dockerd
  # waiting for its containerd); no draining, everything goes.
  local n pids=() rc=0
  for n in $("$SCRIPTS/node.sh" names); do "$SCRIPTS/node.sh" remove "$n" --no-drain & pids+=($!); done
  for n in "${pids[@]}"; do wait "$n" || rc=1; done
  [ $rc -eq 0 ] || log "some nodes failed to stop cleanly; continuing"

  if manager_up && [ "$(swarm_state)" != inactive ]; then
    log "leaving the swarm"
    dk swarm leave --force >/dev/null || true
  fi
  if pid_alive "$MGR/dockerd.pid"; then
    log "stopping manager dockerd (pid $(cat "$MGR/dockerd.pid"))"
    stop_proc "$MGR/dockerd.pid" dockerd 30
  fi
  rm -f "$MGR/dockerd.pid"
  # dockerd stops the containerd it started; if dockerd died hard, that containerd is orphaned, and its
  # mounts (the data root bind mount, network namespace files) stay behind.
  stop_proc "$MGR/exec/containerd/containerd.pid" containerd 10
  reap_shims "$MGR/exec"
  findmnt -rn -o TARGET | grep -F "$MGR/" | sort -r | xargs -r -n1 umount -l 2>/dev/null || true

  while iptables -C DOCKER-USER "${DOCKER_USER_RULE[@]}" 2>/dev/null; do
    iptables -D DOCKER-USER "${DOCKER_USER_RULE[@]}"
  done
  # dockerd made lambda-gw0 (docker_gwbridge); we made the others.
  link_exists "$GW_BRIDGE" && ip link del "$GW_BRIDGE"
  local b
  for b in "$DOCKER_BRIDGE" "$BRIDGE"; do
    [ -f "$DIR/created-$b" ] || continue
    link_exists "$b" && ip link del "$b"
    rm -f "$DIR/created-$b"
  done
  restore_host
  rm -f "$SOCK"
  lxcfs_down

  if [ "$purge" = --purge ]; then
    # Never rm -rf through a live mount (overlay2 layers, netns files) left by a daemon that died hard.
    if findmnt -rn -o TARGET | grep -qF "$DIR/"; then
      die "mounts remain under $DIR; not purging: $(findmnt -rn -o TARGET | grep -F "$DIR/" | head -3 | tr '\n' ' ')"
    fi
    rm -rf "$DIR"
    log "purged $DIR"
  fi
  log "swarm down"
}

status() {
  if ! manager_up; then echo "manager: not running"; return 1; fi
  echo "manager: dockerd pid $(cat "$MGR/dockerd.pid"), $DOCKER_HOST, swarm $(swarm_state), address $ADDR"
  dk node ls 2>/dev/null || true
  "$SCRIPTS/node.sh" list
  [ "$(swarm_state)" = active ]
}

env_() {
  cat <<EOF
export DOCKER_HOST=$DOCKER_HOST
export LAMBDA_DOCKER_HOST=$DOCKER_HOST
export LAMBDA_SWARM_MANAGER_ADDR=$ADDR
export LAMBDA_SWARM_JOIN_ADDR=$ADDR:2377
export LAMBDA_SWARM_NETWORK=$NETWORK
export LAMBDA_BRIDGE=$BRIDGE
export LAMBDA_BRIDGE_CIDR=$BRIDGE_CIDR
EOF
  # Runtime image tags written by scripts/images.sh.
  [ -f "$LAMBDA_HOME/images/versions.env" ] && sed -n 's/^\(LAMBDA_[A-Z0-9_]*=\)/export \1/p' "$LAMBDA_HOME/images/versions.env"
  true
}

case "${1:-}" in
  up) up ;;
  down) down "${2:-}" ;;
  status) status ;;
  env) env_ ;;
  *) echo "usage: $0 up|down [--purge]|status|env" >&2; exit 2 ;;
esac
