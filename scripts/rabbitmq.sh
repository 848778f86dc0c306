#!/usr/bin/env bash
# RabbitMQ for the local platform: `scripts/rabbitmq.sh up|down|env|status`.
# A private node (Debian's rabbitmq-server): AMQP on 127.0.0.1:${LAMBDA_AMQP_PORT:-5682}, its own
# epmd (127.0.0.1:${LAMBDA_EPMD_PORT:-4382}) and distribution port, data, logs and config under
# $LAMBDA_HOME/rabbitmq, never /etc/rabbitmq or the default ports (a system broker, or the
# contract suite's OpenStack one, keeps its own). The user `lambda` gets a password generated on
# first start (kept in credentials, mode 0600); `guest` does not exist. `env` prints the AMQP
# URL as `export LAMBDA_AMQP_URL=…`. Idempotent; stopped by PID.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PORT=${LAMBDA_AMQP_PORT:-5682}
DIST_PORT=${LAMBDA_AMQP_DIST_PORT:-5683}
EPMD_PORT=${LAMBDA_EPMD_PORT:-4382}
DIR=$LAMBDA_HOME/rabbitmq
NODE=lambda@localhost

export HOME=$DIR RABBITMQ_NODENAME=$NODE RABBITMQ_NODE_PORT=$PORT RABBITMQ_DIST_PORT=$DIST_PORT \
  RABBITMQ_CONF_ENV_FILE=$DIR/env.conf RABBITMQ_CONFIG_FILE=$DIR/rabbitmq.conf \
  RABBITMQ_ADVANCED_CONFIG_FILE=$DIR/advanced.config RABBITMQ_ENABLED_PLUGINS_FILE=$DIR/plugins \
  RABBITMQ_MNESIA_BASE=$DIR/mnesia RABBITMQ_LOG_BASE=$DIR/log RABBITMQ_PID_FILE=$DIR/beam.pid \
  ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT=$EPMD_PORT \
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}"

ctl() { /usr/lib/rabbitmq/bin/rabbitmqctl -n "$NODE" -q "$@"; }
password() { cat "$DIR/credentials"; }
url() { printf 'amqp://lambda:%s@127.0.0.1:%s/%%2f' "$(password)" "$PORT"; }
healthy() { pid_alive "$DIR/rabbitmq.pid" && ctl await_startup --timeout 1; }

up() {
  apt_ensure rabbitmq-server
  mkdir -p "$DIR/log"
  if healthy >/dev/null 2>&1; then
    log "RabbitMQ already running on 127.0.0.1:$PORT (pid $(cat "$DIR/rabbitmq.pid"))"; return 0
  fi
  if [ ! -s "$DIR/credentials" ]; then
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/credentials")
  fi
  # default_user creates the user on the first boot of an empty data dir only.
  cat >"$DIR/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$PORT
default_user = lambda
default_pass = $(password)
loopback_users = none
log.console = true
log.file = false
CONF
  chmod 600 "$DIR/rabbitmq.conf"
  : >"$DIR/env.conf"
  echo '[].' >"$DIR/plugins"
  local epmd
  epmd=$(command -v epmd || ls /usr/lib/erlang/erts-*/bin/epmd 2>/dev/null | head -1) || true
  [ -x "$epmd" ] || die "epmd not found (is rabbitmq-server installed?)"
  if ! pid_alive "$DIR/epmd.pid"; then
    setsid "$epmd" -address 127.0.0.1 -port "$EPMD_PORT" >>"$DIR/log/epmd.log" 2>&1 </dev/null &
    echo $! >"$DIR/epmd.pid"
  fi
  log "starting RabbitMQ on 127.0.0.1:$PORT"
  setsid /usr/lib/rabbitmq/bin/rabbitmq-server >>"$DIR/log/rabbitmq.log" 2>&1 </dev/null &
  echo $! >"$DIR/rabbitmq.pid"
  wait_for 120 ctl await_startup --timeout 2 || { tail -30 "$DIR/log/rabbitmq.log" >&2; die "RabbitMQ did not start (log: $DIR/log/rabbitmq.log)"; }
  # An existing data dir keeps its users: make sure ours has the current password, guest none.
  ctl change_password lambda "$(password)" >/dev/null 2>&1 || {
    ctl add_user lambda "$(password)" >/dev/null && ctl set_permissions -p / lambda '.*' '.*' '.*' >/dev/null
    ctl set_user_tags lambda administrator >/dev/null
  }
  ctl delete_user guest >/dev/null 2>&1 || true
  log "RabbitMQ up: $(url | sed 's/:[^:@]*@/:***@/')"
}

down() {
  # The start script turns SIGTERM into a clean broker shutdown; epmd after it.
  stop_pid "$DIR/rabbitmq.pid" 30
  stop_pid "$DIR/epmd.pid" 5
  log "RabbitMQ stopped"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) [ -s "$DIR/credentials" ] || die "RabbitMQ was never started here (scripts/rabbitmq.sh up)"; echo "export LAMBDA_AMQP_URL=$(url)" ;;
  status) healthy ;;
  *) echo "usage: $0 up|down|env|status" >&2; exit 2 ;;
esac
