#!/usr/bin/env bash
# scripts/openstack/down.sh [--purge] — stop the OpenStack that scripts/openstack/up.sh started.
#
# Stops exactly the processes up.sh recorded in $LAMBDA_HOME/openstack/run/<daemon>.pid (and the
# processes below them, e.g. uwsgi workers, forked service workers): the OpenStack services first,
# in parallel, then RabbitMQ, epmd and MariaDB. Nothing is found or killed by name. Data, configs
# and logs stay (the next up.sh starts afresh anyway); --purge removes $LAMBDA_HOME/openstack.
# Exits non-zero if a process that runs from $LAMBDA_HOME/openstack is still there afterwards.
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

PURGE=
case "${1:-}" in
  "") ;;
  --purge) PURGE=1 ;;
  *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
esac
[ -d "$OS_HOME" ] || { log "nothing to stop ($OS_HOME does not exist)"; exit 0; }
[ -n "${LAMBDA_OS_LOCKED:-}" ] || os_lock   # up.sh calls us while holding the lock

T0=$SECONDS
rm -f "$OS_HOME/run/ready"

# stop_daemon NAME GRACE — stop the process tree recorded in run/NAME.pid
stop_daemon() {
  local f=$OS_HOME/run/$1.pid t=$SECONDS
  if pid_alive "$f"; then
    stop_tree "$(cat "$f")" "$2"
    log "stopped $1 ($((SECONDS - t))s)"
  fi
  rm -f "$f"
}

if ! compgen -G "$OS_HOME/run/*.pid" >/dev/null; then
  log "nothing to stop (no pid files in $OS_HOME/run)"
else
  # each takes a few seconds to exit on SIGTERM (graceful_shutdown_timeout = 5): in parallel
  for d in $OPENSTACK_DAEMONS; do stop_daemon "$d" 20 & done
  wait
  # RabbitMQ's start script turns SIGTERM into a clean broker shutdown; epmd after it
  { stop_daemon rabbitmq 30; stop_daemon epmd 5; } &
  stop_daemon mariadb 60 &
  wait
  rm -f "$OS_HOME"/run/*.pid
  log "OpenStack stopped in $((SECONDS - T0))s"
fi

# Anything still running from this state directory? (Report only: it was not recorded here.)
left=$(ps -eo pid=,args= | awk -v h="$OS_HOME/" -v e="-port $PORT_EPMD" \
  '(index($0, h) || index($0, e)) && $2 != "awk" && $2 != "rm"')
if [ -n "$left" ]; then
  echo "error: still running from $OS_HOME:" >&2
  echo "$left" >&2
  exit 1
fi
if [ -n "$PURGE" ]; then
  rm -rf "$OS_HOME"
  log "removed $OS_HOME"
fi
