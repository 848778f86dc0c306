#!/usr/bin/env bash
# Worker "VMs" for the local Swarm (the stand-in for Nova servers until the cloud emulator drives them):
#
#   scripts/node.sh add NAME [INDEX]                  netns lambda-NAME + veth into $LAMBDA_BRIDGE, address
#                                                     <bridge /24>.(INDEX+1), own dockerd (hostname NAME),
#                                                     images loaded, joined to the swarm as a worker.
#   scripts/node.sh remove NAME [--no-drain] [--purge] drain, leave, stop its dockerd (by PID), delete veth +
#                                                     netns, `docker node rm` on the manager; --purge deletes
#                                                     its data dir (kept by default: re-adding is faster).
#   scripts/node.sh load NAME [REF...]                copy images from the manager onto the node
#   scripts/node.sh list                              NAME INDEX ADDRESS PID SWARM SOCKET of every known node
#   scripts/node.sh env NAME                          export DOCKER_HOST=<node socket>, LAMBDA_NODE_ADDR=...
#
# Images loaded by `add`/`load` without REFs: $LAMBDA_NODE_IMAGES (space-separated refs; set it empty to load
# nothing), else every tag in $LAMBDA_HOME/images/versions.env (written by scripts/images.sh; tags missing on
# the manager are skipped with a warning). Copied with `docker save | docker load`: ~8 s for the three runtimes.
# Other environment: LAMBDA_NODE_DRAIN_TIMEOUT (s, default 60), and what `scripts/swarm.sh env` reads.
# Needs `scripts/swarm.sh up` first. State: $LAMBDA_HOME/swarm/nodes/NAME/.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
shopt -s inherit_errexit   # errors inside $(...) abort too
SCRIPTS=$PROJECT_ROOT/scripts
NODES=$LAMBDA_HOME/swarm/nodes
SWARM_ENV=$("$SCRIPTS/swarm.sh" env) || exit 1
eval "$SWARM_ENV"          # DOCKER_HOST (the manager), LAMBDA_BRIDGE(_CIDR), LAMBDA_SWARM_JOIN_ADDR, ...
PREFIX=${LAMBDA_BRIDGE_CIDR%.*}          # a.b.c of the /24
MANAGER_HOST=$DOCKER_HOST

valid_name() { [[ $1 =~ ^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$ ]] || die "bad node name '$1' (hostname: a-z 0-9 -)"; }
node_dir() { echo "$NODES/$1"; }
netns_of() { echo "lambda-$1"; }
veth_of() { echo "veth-lambda$1"; }   # host side; ≤15 chars for INDEX ≤ 253
nd() { docker -H "unix://$(node_dir "$1")/docker.sock" "${@:2}"; }   # nd NAME docker-args...
mgr() { docker -H "$MANAGER_HOST" "$@"; }
manager_up() { mgr version >/dev/null 2>&1; }
netns_exists() { ip netns list | awk '{print $1}' | grep -qxF "$(netns_of "$1")"; }
node_up() { pid_alive "$(node_dir "$1")/dockerd.pid" && nd "$1" version >/dev/null 2>&1; }
live() { netns_exists "$1" || pid_alive "$(node_dir "$1")/dockerd.pid"; }


all_names() { local d; for d in "$NODES"/*/; do [ -d "$d" ] && basename "$d"; done; true; }
names() { local n; for n in $(all_names); do live "$n" && echo "$n"; done; true; }

used_indexes() { local n; for n in $(names); do [ "$n" = "${1:-}" ] || cat "$(node_dir "$n")/index" 2>/dev/null; done; true; }

pick_index() {   # pick_index NAME [INDEX] — explicit, else the node's previous index if free, else lowest free
  local name=$1 want=${2:-} used i
  used=" $(used_indexes "$name" | tr '\n' ' ') "
  [ -z "$want" ] && [ -f "$(node_dir "$name")/index" ] && want=$(cat "$(node_dir "$name")/index") &&
    [[ $used == *" $want "* ]] && want=""
  if [ -n "$want" ]; then
    [[ $want =~ ^[0-9]+$ ]] && [ "$want" -ge 1 ] && [ "$want" -le 253 ] || die "INDEX must be 1..253 (got '$want')"
    [[ $used == *" $want "* ]] && die "index $want is already used by another node"
    echo "$want"; return
  fi
  for i in $(seq 1 253); do [[ $used == *" $i "* ]] || { echo "$i"; return; }; done
  die "no free node index"
}

# default_images — refs to load on a node when none are given.
default_images() {
  if [ -n "${LAMBDA_NODE_IMAGES+set}" ]; then echo "$LAMBDA_NODE_IMAGES"; return; fi
  local f=$LAMBDA_HOME/images/versions.env
  [ -f "$f" ] && sed -n 's/^LAMBDA_IMAGE_[A-Z0-9_]*=//p' "$f" | tr '\n' ' '
  true
}

load() {   # load NAME [REF...]
  local name=$1; shift
  local refs=("$@") missing=() have=() r defaults=""
  [ ${#refs[@]} -gt 0 ] || { read -r -a refs <<<"$(default_images)"; [ -n "${LAMBDA_NODE_IMAGES+set}" ] || defaults=1; }
  [ ${#refs[@]} -gt 0 ] || return 0
  node_up "$name" || die "node $name is not running"
  for r in "${refs[@]}"; do
    if ! mgr image inspect "$r" >/dev/null 2>&1; then
      # Tags from versions.env outlive the manager's data (swarm.sh down --purge): skip them, loudly.
      [ -n "$defaults" ] || die "image $r is not on the manager"
      log "warning: $r (versions.env) is not on the manager; run scripts/images.sh, then: $0 load $name"
      continue
    fi
    if nd "$name" image inspect "$r" >/dev/null 2>&1; then have+=("$r"); else missing+=("$r"); fi
  done
  [ ${#have[@]} -eq 0 ] || log "$name already has ${have[*]}"
  [ ${#missing[@]} -gt 0 ] || return 0
  log "loading ${missing[*]} onto $name"
  mgr save "${missing[@]}" | nd "$name" load -q >/dev/null
}

start_dockerd() {   # start_dockerd NAME — the node's dockerd inside its netns, hostname NAME
  local name=$1 d; d=$(node_dir "$name")
  mkdir -p "$d/data" "$d/exec"
  # Our own config (never the system /etc/docker/daemon.json); container logs rotate.
  echo '{"log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": "3"}}' >"$d/daemon.json"
  local sock=$d/docker.sock
  [ ${#sock} -lt 100 ] || die "socket path too long for a unix socket: $sock (set LAMBDA_HOME shorter)"
  rm -f "$sock"
  # `ip netns exec` and `unshare` both exec (no fork), and the launcher execs dockerd: $! is dockerd's PID.
  LAMBDA_NO_PROXY="${PREFIX}.0/24,127.0.0.0/8,localhost" \
    nohup ip netns exec "$(netns_of "$name")" unshare --uts "$SCRIPTS/node-dockerd.sh" "$name" "$d" \
    >"$d/dockerd.log" 2>&1 &
  echo $! >"$d/dockerd.pid"
  wait_for 30 nd "$name" version || { tail -20 "$d/dockerd.log" >&2; die "dockerd of $name did not start (log: $d/dockerd.log)"; }
}

add() {
  local name=${1:-}; [ -n "$name" ] || die "usage: $0 add NAME [INDEX]"
  valid_name "$name"
  manager_up || die "the swarm manager is not running: scripts/swarm.sh up"
  local d ns index ip veth
  d=$(node_dir "$name"); ns=$(netns_of "$name")
  if live "$name" && [ -f "$d/index" ]; then
    index=$(cat "$d/index")
    [ -z "${2:-}" ] || [ "$2" = "$index" ] || die "node $name already runs with index $index"
  else
    index=$(pick_index "$name" "${2:-}")
  fi
  ip=$PREFIX.$((index + 1)); veth=$(veth_of "$index")
  mkdir -p "$d"; echo "$index" >"$d/index"; echo "$ip" >"$d/address"

  if ! netns_exists "$name"; then
    log "node $name: netns $ns, $ip on $LAMBDA_BRIDGE"
    ip link show "$veth" >/dev/null 2>&1 && ip link del "$veth"
    ip netns add "$ns"
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    ip link set "$veth" master "$LAMBDA_BRIDGE" up
  fi
  ip -n "$ns" -4 addr show dev eth0 | grep -qF " $ip/24 " || ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route replace default via "$LAMBDA_SWARM_MANAGER_ADDR"

  if node_up "$name"; then
    log "node $name: dockerd already running (pid $(cat "$d/dockerd.pid"))"
  else
    pid_alive "$d/dockerd.pid" && die "dockerd of $name (pid $(cat "$d/dockerd.pid")) runs but does not answer"
    log "node $name: starting dockerd"
    start_dockerd "$name"
  fi

  # Images before joining: a task scheduled onto a node without its image fails (nothing can be pulled).
  load "$name"

  # Join — unless already a member of *this* swarm (a node's data dir can hold the state of an old swarm).
  # (Workers see no cluster ID; "member" = active, known to this manager, and that manager is its remote.)
  local state node_id managers
  state=$(nd "$name" info --format '{{.Swarm.LocalNodeState}}')
  node_id=$(nd "$name" info --format '{{.Swarm.NodeID}}')
  managers=$(nd "$name" info --format '{{range .Swarm.RemoteManagers}}{{.NodeID}} {{end}}')
  if [ "$state" != inactive ] &&
     ! { [ "$state" = active ] && [[ " $managers " == *" $(mgr info --format '{{.Swarm.NodeID}}') "* ]] &&
         mgr node inspect "$node_id" >/dev/null 2>&1; }; then
    log "node $name: leaving stale swarm state ($state)"
    nd "$name" swarm leave --force >/dev/null 2>&1 || true
    [ -n "$node_id" ] && mgr node rm --force "$node_id" >/dev/null 2>&1 || true
    state=inactive
  fi
  if [ "$state" = inactive ]; then
    log "node $name: joining the swarm at $LAMBDA_SWARM_JOIN_ADDR"
    nd "$name" swarm join --token "$(mgr swarm join-token -q worker)" \
      --advertise-addr "$ip" --listen-addr "$ip:2377" --data-path-addr "$ip" "$LAMBDA_SWARM_JOIN_ADDR" >/dev/null
  fi
  node_id=$(nd "$name" info --format '{{.Swarm.NodeID}}')
  echo "$node_id" >"$d/node-id"
  wait_for 30 sh -c "[ \"\$(docker -H '$MANAGER_HOST' node inspect '$node_id' --format '{{.Status.State}}')\" = ready ]" ||
    die "node $name ($node_id) did not become ready"
  log "node $name ready: $ip, swarm node $node_id, DOCKER_HOST=unix://$d/docker.sock"
}

remove() {
  local name=${1:-} drain=1 purge="" a
  [ -n "$name" ] || die "usage: $0 remove NAME [--no-drain] [--purge]"
  valid_name "$name"; shift
  for a in "$@"; do
    case $a in --no-drain) drain="" ;; --purge) purge=1 ;; *) die "unknown option $a" ;; esac
  done
  local d ns node_id=""; d=$(node_dir "$name"); ns=$(netns_of "$name")
  [ -d "$d" ] || { log "node $name does not exist"; return 0; }
  [ -f "$d/node-id" ] && node_id=$(cat "$d/node-id")

  if node_up "$name"; then
    if [ -n "$drain" ] && [ -n "$node_id" ] && manager_up && mgr node inspect "$node_id" >/dev/null 2>&1; then
      log "node $name: draining"
      mgr node update --availability drain "$node_id" >/dev/null
      # Drained = the node's task containers are gone (they get their stop grace period).
      wait_for "${LAMBDA_NODE_DRAIN_TIMEOUT:-60}" sh -c \
        "[ -z \"\$(docker -H 'unix://$d/docker.sock' ps -q --filter label=com.docker.swarm.task.id)\" ]" ||
        log "node $name: tasks still running after drain timeout; removing anyway"
    fi
    [ "$(nd "$name" info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" = inactive ] ||
      nd "$name" swarm leave --force >/dev/null 2>&1 || true
    # Task containers of earlier swarms can survive in the kept data dir; they belong to no swarm any more.
    nd "$name" ps -aq --filter label=com.docker.swarm.task.id | xargs -r docker -H "unix://$d/docker.sock" rm -f >/dev/null 2>&1 || true
  fi
  if pid_alive "$d/dockerd.pid"; then
    log "node $name: stopping dockerd (pid $(cat "$d/dockerd.pid"))"
    stop_proc "$d/dockerd.pid" dockerd 30
  fi
  stop_proc "$d/exec/containerd/containerd.pid" containerd 10   # orphaned only if dockerd died hard
  reap_shims "$d/exec"
  if [ -n "$node_id" ] && manager_up && mgr node inspect "$node_id" >/dev/null 2>&1; then
    mgr node rm --force "$node_id" >/dev/null || true
  fi
  rm -f "$d/node-id" "$d/docker.sock"
  netns_exists "$name" && ip netns del "$ns"
  # The veth pair goes with the namespace, asynchronously (the kernel frees it a moment later): if it is still
  # there, it may vanish under our `ip link del`.
  if [ -f "$d/index" ]; then ip link del "$(veth_of "$(cat "$d/index")")" 2>/dev/null || true; fi
  if [ -n "$purge" ]; then
    findmnt -rn -o TARGET | grep -qF "$d/" && die "mounts remain under $d; not purging"
    rm -rf "$d"
  fi
  log "node $name removed"
}

list() {
  local n d state
  printf '%-16s %-5s %-15s %-8s %-8s %s\n' NAME INDEX ADDRESS PID SWARM SOCKET
  for n in $(names); do
    d=$(node_dir "$n"); state=down
    node_up "$n" && state=$(nd "$n" info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo '?')
    printf '%-16s %-5s %-15s %-8s %-8s %s\n' "$n" "$(cat "$d/index" 2>/dev/null)" "$(cat "$d/address" 2>/dev/null)" \
      "$(cat "$d/dockerd.pid" 2>/dev/null || echo -)" "$state" "unix://$d/docker.sock"
  done
}

env_() {
  local name=${1:-}; [ -n "$name" ] || die "usage: $0 env NAME"
  local d; d=$(node_dir "$name")
  [ -f "$d/address" ] || die "unknown node $name"
  echo "export DOCKER_HOST=unix://$d/docker.sock"
  echo "export LAMBDA_NODE_ADDR=$(cat "$d/address")"
}

cmd=${1:-}; shift || true
case "$cmd" in
  add) add "$@" ;;
  remove) remove "$@" ;;
  load) [ -n "${1:-}" ] || die "usage: $0 load NAME [REF...]"; load "$@" ;;
  list) list ;;
  names) names ;;
  env) env_ "$@" ;;
  *) echo "usage: $0 add NAME [INDEX] | remove NAME [--no-drain] [--purge] | load NAME [REF...] | list | env NAME" >&2
     exit 2 ;;
esac
