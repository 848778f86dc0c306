#!/usr/bin/env bash
# etcd for the local platform: `scripts/etcd.sh up|down|status`.
# Listens on 127.0.0.1:${LAMBDA_ETCD_PORT:-2379}; data under $LAMBDA_HOME/etcd. Idempotent.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PORT=${LAMBDA_ETCD_PORT:-2379}
PEER_PORT=${LAMBDA_ETCD_PEER_PORT:-2380}
DIR=$LAMBDA_HOME/etcd
export ETCDCTL_API=3

healthy() { etcdctl --endpoints="127.0.0.1:$PORT" --command-timeout=1s endpoint health; }

up() {
  apt_ensure etcd-server etcd-client
  mkdir -p "$DIR"
  if pid_alive "$DIR/etcd.pid" && healthy >/dev/null 2>&1; then
    log "etcd already running on 127.0.0.1:$PORT (pid $(cat "$DIR/etcd.pid"))"; return 0
  fi
  healthy >/dev/null 2>&1 && die "something else already serves etcd on 127.0.0.1:$PORT; set LAMBDA_ETCD_PORT"
  log "starting etcd on 127.0.0.1:$PORT"
  nohup etcd --name lambda --data-dir "$DIR/data" \
    --listen-client-urls "http://127.0.0.1:$PORT" --advertise-client-urls "http://127.0.0.1:$PORT" \
    --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
    --initial-cluster "lambda=http://127.0.0.1:$PEER_PORT" \
    --experimental-watch-progress-notify-interval=2s \
    --auto-compaction-mode=periodic --auto-compaction-retention=5m \
    --quota-backend-bytes=$((8 * 1024 * 1024 * 1024)) \
    >"$DIR/etcd.log" 2>&1 &
  echo $! >"$DIR/etcd.pid"
  wait_for 20 healthy || { tail -20 "$DIR/etcd.log" >&2; die "etcd did not become healthy (log: $DIR/etcd.log)"; }
}

down() {
  stop_pid "$DIR/etcd.pid"
  log "etcd stopped"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) healthy ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
