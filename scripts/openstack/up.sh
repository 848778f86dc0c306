#!/usr/bin/env bash
# scripts/openstack/up.sh — a real OpenStack on 127.0.0.1 for the contract tests of the
# platform's OpenStack client. Debian 12 packages (OpenStack Zed), every daemon started by hand:
#
#   Keystone 22    http://127.0.0.1:15000/v3     uwsgi; fernet tokens; password + app credentials
#   Nova 26        http://127.0.0.1:18774/v2.1   api (uwsgi), conductor, scheduler, compute;
#                                                compute driver = Nova's fake driver whose
#                                                snapshots upload data (pylib/lambda_fake_virt.py)
#   Placement 8    http://127.0.0.1:18778        uwsgi
#   Glance 25      http://127.0.0.1:19292        file store
#   Neutron 21     http://127.0.0.1:19696        ML2, flat networks, agentless port binding
#                                                (pylib/lambda_fake_ml2.py)
#   MariaDB 10.11  127.0.0.1:13306   RabbitMQ 3.10  127.0.0.1:16672 (epmd 127.0.0.1:14369)
#                  Nova's notifications (versioned and legacy) go to RabbitMQ's topic exchange "nova"
#
# Seeded: projects "lambda" (user lambda, role member; instances quota 100) and "quota-test"
# (user quota-test; instances quota 1), an application credential of user lambda, flavors
# m1.tiny/m1.small/m1.medium, public image "cirros" (active), shared network "lambda-net"
# (subnet 192.0.2.0/24, addresses are database rows only), key pair "lambda-key" of user lambda.
# Written to $LAMBDA_HOME/openstack/: openrc, openrc-appcred, openrc-quota, openrc-admin,
# clouds.yaml (clouds lambda-test, lambda-test-appcred, lambda-test-quota, lambda-test-admin),
# env (names, ids, URLs, quotas, the notification broker URL as LAMBDA_OS_* variables),
# lambda-key (private key).
#
# Usage:  scripts/openstack/up.sh      install what is missing (apt), start, seed. Idempotent:
#                                      when everything is up already it only says so; a partly
#                                      running one is stopped and started afresh.
#         scripts/openstack/down.sh    stop every process up.sh started (by recorded PID)
#         scripts/openstack/smoke.py   end-to-end check of a running one
# A cold start begins from empty databases (configs, data and logs under $LAMBDA_HOME/openstack
# are rewritten). Needs root, Debian 12 and its package registry; no systemd, no other network.
# On failure it prints the tail of the failing service's log, stops what it started (set
# LAMBDA_OS_KEEP_ON_FAILURE=1 to keep it running for a look) and exits non-zero.
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"

PKGS=(python3-nova python3-keystone python3-glance python3-placement python3-neutron
      python3-openstackclient uwsgi-core uwsgi-plugin-python3 rabbitmq-server
      mariadb-server-core mariadb-client-core curl procps)
DB_URL=mysql+pymysql://openstack:lambda-os-db@$OS_IP:$PORT_MARIADB
T_START=$(date +%s.%N)

step() { log "[$(awk -v a="$T_START" -v b="$(date +%s.%N)" 'BEGIN{printf "%5.1fs", b-a}')] $*"; }

# http_ok URL — the URL answers with a status below 500 (the version documents need no token)
http_ok() {
  local code
  code=$(curl -s -o /dev/null -m 3 -w '%{http_code}' "$1" 2>/dev/null) || return 1
  [ "$code" -ge 200 ] && [ "$code" -lt 500 ]
}

# show_log NAME — the end of log/NAME.log, for error messages
show_log() {
  local f=$OS_HOME/log/$1.log
  [ -f "$f" ] || return 0
  printf -- '----- last lines of %s -----\n' "$f" >&2
  tail -n 40 "$f" >&2
  printf -- '-----\n' >&2
}
fail() { show_log "$1"; die "$2 (log: $OS_HOME/log/$1.log)"; }

# run_step NAME CMD... — run a set-up command, output to log/NAME.log
run_step() {
  local name=$1; shift
  if ! "$@" >"$OS_HOME/log/$name.log" 2>&1; then
    show_log "$name"; echo "error: set-up step '$name' failed: $*" >&2; return 1
  fi
}

# start_daemon NAME CMD... — start CMD in a session of its own (no terminal, no stdin, not hit
# by signals meant for this script, not holding the lock on fd 9), output to log/NAME.log, PID
# to run/NAME.pid
start_daemon() {
  local name=$1; shift
  setsid "$@" >>"$OS_HOME/log/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$OS_HOME/run/$name.pid"
}

# wait_daemon NAME SECONDS CHECK... — until CHECK succeeds; fail early if the daemon died
wait_daemon() {
  local name=$1 t=$2; shift 2
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    pid_alive "$OS_HOME/run/$name.pid" || fail "$name" "$name exited while starting"
    [ "$SECONDS" -ge "$end" ] && fail "$name" "$name not ready after ${t}s (waiting for: $*)"
    sleep 0.25
  done
}

apis_answer() {
  local u
  for u in "$KEYSTONE_URL" "$NOVA_URL/" "$PLACEMENT_URL/" "$GLANCE_URL/" "$NEUTRON_URL/"; do
    http_ok "$u" || return 1
  done
}

# is_up — a previous up.sh finished and all its daemons still run and answer. The APIs get up to
# 60 s: under load (tests running against it) one may be slow to answer, and restarting the whole
# cloud under the feet of those tests would be worse than waiting.
is_up() {
  [ -f "$OS_HOME/run/ready" ] || return 1
  local d
  for d in $INFRA_DAEMONS $OPENSTACK_DAEMONS; do pid_alive "$OS_HOME/run/$d.pid" || return 1; done
  wait_for 60 apis_answer
}

summary() {
  cat <<EOF
OpenStack on 127.0.0.1 is up. Credentials and facts in $OS_HOME:
  . $OS_HOME/openrc           project lambda, user lambda (member)
  . $OS_HOME/openrc-appcred   application credential of user lambda on project lambda
  . $OS_HOME/openrc-quota     project quota-test (instances quota 1), user quota-test
  . $OS_HOME/openrc-admin     cloud admin
  OS_CLIENT_CONFIG_FILE=$OS_HOME/clouds.yaml OS_CLOUD=lambda-test   (also lambda-test-appcred, lambda-test-quota, lambda-test-admin)
  . $OS_HOME/env              LAMBDA_OS_* names, ids, URLs, quotas
Keystone $KEYSTONE_URL  Nova $NOVA_URL  Glance $GLANCE_URL  Neutron $NEUTRON_URL  Placement $PLACEMENT_URL
Stop it with: $OS_SCRIPTS/down.sh
EOF
}

# ------------------------------------------------------------------------------------------------
# 0. Already up? Partly up?
# ------------------------------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "scripts/openstack/up.sh must run as root"
os_lock
if is_up; then
  log "OpenStack already running (pids in $OS_HOME/run)"
  summary
  exit 0
fi
if compgen -G "$OS_HOME/run/*.pid" >/dev/null; then
  log "OpenStack is only partly running: stopping it, then starting afresh"
  LAMBDA_OS_LOCKED=1 bash "$OS_SCRIPTS/down.sh"
fi
for p in $ALL_PORTS; do
  port_open "$p" && die "port 127.0.0.1:$p is already in use by a process up.sh did not start"
done

UP_DONE=
BG_STEPS=()
on_exit() {
  local rc=$?
  [ -n "$UP_DONE" ] && return
  [ "$rc" -eq 0 ] && rc=1
  # set-up steps still running in the background (schema syncs)
  local j
  for j in "${BG_STEPS[@]}"; do stop_tree "$j" 5; done
  if [ -n "${LAMBDA_OS_KEEP_ON_FAILURE:-}" ]; then
    echo "up.sh failed; left running for inspection: stop with $OS_SCRIPTS/down.sh" >&2
  else
    echo "up.sh failed; stopping what it started (logs stay in $OS_HOME/log)" >&2
    LAMBDA_OS_LOCKED=1 bash "$OS_SCRIPTS/down.sh" >&2 || true
  fi
  exit "$rc"
}
trap on_exit EXIT

# ------------------------------------------------------------------------------------------------
# 1. Packages: only the python3-* libraries of the services (their service packages ask debconf
#    questions, run dbconfig-common and start daemons) and the -core packages of MariaDB.
#    A policy-rc.d keeps the postinsts of rabbitmq-server & co from starting anything.
# ------------------------------------------------------------------------------------------------
install_packages() {
  local added_policy= rc=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# written by scripts/openstack/up.sh for the duration of apt-get\nexit 101\n' \
      >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    added_policy=1
  fi
  # needrestart (where installed) would otherwise ask, or complain about the missing stdin
  export NEEDRESTART_SUSPEND=1
  apt_ensure "${PKGS[@]}" || rc=$?
  [ -n "$added_policy" ] && rm -f /usr/sbin/policy-rc.d
  [ "$rc" -eq 0 ] || die "apt-get install of the OpenStack packages failed"
}
step "checking packages"
install_packages
UWSGI=$(command -v uwsgi || command -v uwsgi-core) || die "uwsgi not found after installing uwsgi-core"
EPMD=$(command -v epmd || ls /usr/lib/erlang/erts-*/bin/epmd 2>/dev/null | head -1) || true
[ -x "$EPMD" ] || die "epmd not found after installing rabbitmq-server"

# ------------------------------------------------------------------------------------------------
# 2. Fresh state and configs
# ------------------------------------------------------------------------------------------------
step "writing configs to $OS_HOME/etc"
cd "$OS_HOME"
# the previous run's state goes to a trash folder, deleted in the background (can take seconds)
rm -f openrc openrc-appcred openrc-quota openrc-admin clouds.yaml env lambda-key lambda-key.pub
TRASH=$OS_HOME/.trash.$$
mkdir -p "$TRASH"
for d in etc data log run cache; do [ -e "$d" ] && mv "$d" "$TRASH/"; done
( rm -rf "$OS_HOME"/.trash.* & ) 9>&-
mkdir -p etc/{keystone,nova,glance,placement,neutron} log/rabbitmq run cache \
         data/{mysql,rabbitmq,rabbit-home,keystone-fernet,keystone-credential} \
         data/glance/{images,staging,tasks} data/nova/{instances,lock} data/neutron/lock
# stevedore caches entry points under $XDG_CACHE_HOME: keep it in the state dir
export XDG_CACHE_HOME=$OS_HOME/cache

cat >etc/my.cnf <<EOF
[mysqld]
datadir = $OS_HOME/data/mysql
socket = $OS_HOME/data/mysqld.sock
pid-file = $OS_HOME/data/mysqld.pid
bind-address = $OS_IP
port = $PORT_MARIADB
user = root
skip-name-resolve
max_connections = 500
innodb_buffer_pool_size = 64M
innodb_log_file_size = 16M
innodb_flush_log_at_trx_commit = 2
performance_schema = off
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
[client]
socket = $OS_HOME/data/mysqld.sock
EOF

# RabbitMQ: a private node, every file and port of its own (no /etc/rabbitmq, no default ports)
cat >etc/rabbitmq-env.sh <<EOF
export HOME=$OS_HOME/data/rabbit-home
export RABBITMQ_NODENAME=lambda-openstack@localhost
export RABBITMQ_CONF_ENV_FILE=$OS_HOME/etc/rabbitmq-env.conf
export RABBITMQ_CONFIG_FILE=$OS_HOME/etc/rabbitmq
export RABBITMQ_ADVANCED_CONFIG_FILE=$OS_HOME/etc/rabbitmq-advanced.config
export RABBITMQ_ENABLED_PLUGINS_FILE=$OS_HOME/etc/rabbitmq-enabled-plugins
export RABBITMQ_MNESIA_BASE=$OS_HOME/data/rabbitmq
export RABBITMQ_LOG_BASE=$OS_HOME/log/rabbitmq
export RABBITMQ_PID_FILE=$OS_HOME/data/rabbitmq-beam.pid
export RABBITMQ_DIST_PORT=$PORT_RABBIT_DIST
export ERL_EPMD_ADDRESS=$OS_IP
export ERL_EPMD_PORT=$PORT_EPMD
# use the epmd started by up.sh, never spawn a daemonised one
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}"
EOF
: >etc/rabbitmq-env.conf
cat >etc/rabbitmq.conf <<EOF
listeners.tcp.default = $OS_IP:$PORT_AMQP
loopback_users.guest = true
# log to stdout, i.e. log/rabbitmq.log
log.console = true
log.file = false
EOF
echo '[].' >etc/rabbitmq-enabled-plugins
# vhost "/" (the trailing slash); common.sh's NOTIFICATION_URL is the same broker for AMQP clients
TRANSPORT_URL=rabbit://guest:guest@$OS_IP:$PORT_AMQP/

# [keystone_authtoken]-style section for a service user (password "<name>-service-secret",
# made by bootstrap.py catalog)
service_auth() {
  cat <<EOF
www_authenticate_uri = $KEYSTONE_URL
auth_url = $KEYSTONE_URL
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $1
password = $1-service-secret
region_name = RegionOne
EOF
}

# Logging: no log_file anywhere; oslo.log writes to stdout, which start_daemon sends to
# log/<daemon>.log together with tracebacks from before logging was set up.
cat >etc/keystone/keystone.conf <<EOF
[database]
connection = $DB_URL/keystone
[token]
provider = fernet
[fernet_tokens]
key_repository = $OS_HOME/data/keystone-fernet
[fernet_receipts]
key_repository = $OS_HOME/data/keystone-fernet
[credential]
key_repository = $OS_HOME/data/keystone-credential
EOF

cat >etc/placement/placement.conf <<EOF
[api]
auth_strategy = keystone
[placement_database]
connection = $DB_URL/placement
[keystone_authtoken]
$(service_auth placement)
EOF

cp "$OS_SCRIPTS/paste/glance-api-paste.ini" etc/glance/
cat >etc/glance/glance-api.conf <<EOF
[DEFAULT]
bind_host = $OS_IP
bind_port = $PORT_GLANCE
# 0 = serve from this process (no forked worker)
workers = 0
enabled_backends = file:file
graceful_shutdown_timeout = 5
[database]
connection = $DB_URL/glance
[keystone_authtoken]
$(service_auth glance)
[paste_deploy]
flavor = keystone
config_file = $OS_HOME/etc/glance/glance-api-paste.ini
[glance_store]
default_backend = file
[file]
filesystem_store_datadir = $OS_HOME/data/glance/images
[os_glance_staging_store]
filesystem_store_datadir = $OS_HOME/data/glance/staging
[os_glance_tasks_store]
filesystem_store_datadir = $OS_HOME/data/glance/tasks
EOF

cp "$OS_SCRIPTS/paste/neutron-api-paste.ini" etc/neutron/api-paste.ini
cat >etc/neutron/neutron.conf <<EOF
[DEFAULT]
bind_host = $OS_IP
bind_port = $PORT_NEUTRON
# 0 = API and RPC served from this process (no forked workers)
api_workers = 0
rpc_workers = 0
rpc_state_report_workers = 0
core_plugin = ml2
# 'router' also loads the port-forwarding DB model that GET /v2.0/ports needs
service_plugins = router
auth_strategy = keystone
api_paste_config = $OS_HOME/etc/neutron/api-paste.ini
state_path = $OS_HOME/data/neutron
transport_url = $TRANSPORT_URL
# no agents at all: nothing to notify
dhcp_agent_notification = false
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
graceful_shutdown_timeout = 5
[database]
connection = $DB_URL/neutron
[keystone_authtoken]
$(service_auth neutron)
[ml2]
type_drivers = flat
tenant_network_types =
# pylib/lambda_fake_ml2.py: binds every port without an agent
mechanism_drivers = lambda_loopback
extension_drivers = port_security
[ml2_type_flat]
flat_networks = lambda-physnet
[oslo_concurrency]
lock_path = $OS_HOME/data/neutron/lock
[oslo_messaging_notifications]
driver = noop
EOF

cp "$OS_SCRIPTS/paste/nova-api-paste.ini" etc/nova/api-paste.ini
cat >etc/nova/nova.conf <<EOF
[DEFAULT]
host = lambda-compute
my_ip = $OS_IP
state_path = $OS_HOME/data/nova
instances_path = $OS_HOME/data/nova/instances
transport_url = $TRANSPORT_URL
# pylib/lambda_fake_virt.py (registered as nova.virt.lambda_fake_virt by run.py)
compute_driver = lambda_fake_virt.SnapshotFakeDriver
enabled_apis = osapi_compute
osapi_compute_workers = 1
use_rootwrap_daemon = false
heal_instance_info_cache_interval = -1
# periodic tasks (the scheduler's host discovery, the compute's resource report) start at once
# instead of after up to 60 s, and a failed resource report is retried after 20 s, not 60 s
periodic_fuzzy_delay = 0
update_resources_interval = 20
graceful_shutdown_timeout = 5
[api]
auth_strategy = keystone
[wsgi]
api_paste_config = $OS_HOME/etc/nova/api-paste.ini
[api_database]
connection = $DB_URL/nova_api
[database]
connection = $DB_URL/nova
[conductor]
workers = 1
[scheduler]
workers = 1
# map new compute hosts to cell1 by itself (instead of nova-manage cell_v2 discover_hosts)
discover_hosts_in_cells_interval = 2
[keystone_authtoken]
$(service_auth nova)
[placement]
$(service_auth placement)
[neutron]
$(service_auth neutron)
[glance]
region_name = RegionOne
[cinder]
os_region_name = RegionOne
[oslo_concurrency]
lock_path = $OS_HOME/data/nova/lock
[vnc]
enabled = false
# Notifications on this RabbitMQ (the platform consumes them; see README.md): oslo.messaging's
# topic exchange "nova" (control_exchange, Nova's default), versioned ones with routing key
# versioned_notifications.info/.error, legacy ones with notifications.info/.error
[oslo_messaging_notifications]
driver = messagingv2
[notifications]
notification_format = both
EOF

uwsgi_ini() {  # NAME PORT WSGI_FILE PROCESSES THREADS ENV...
  local name=$1 port=$2 wsgi=$3 processes=$4 threads=$5 e
  shift 5
  cat >"etc/$name/uwsgi.ini" <<EOF
[uwsgi]
plugins = python3
http-socket = $OS_IP:$port
wsgi-file = $wsgi
master = true
processes = $processes
threads = $threads
enable-threads = true
lazy-apps = true
need-app = true
die-on-term = true
# on SIGTERM, wait at most 5 s for a worker (one still loading its app ignores signals)
worker-reload-mercy = 5
buffer-size = 65535
# uwsgi's http-socket does not keep connections alive: say so, or clients (requests,
# keystoneauth, hyper) reuse a closed connection and get "connection reset" on a POST
add-header = Connection: close
EOF
  for e in "$@"; do echo "env = $e" >>"etc/$name/uwsgi.ini"; done
}
uwsgi_ini keystone "$PORT_KEYSTONE" /usr/bin/keystone-wsgi-public 1 4 \
  "OS_KEYSTONE_CONFIG_FILES=$OS_HOME/etc/keystone/keystone.conf"
uwsgi_ini placement "$PORT_PLACEMENT" /usr/bin/placement-api 1 4 \
  "OS_PLACEMENT_CONFIG_DIR=$OS_HOME/etc/placement"
# nova-api monkey-patches eventlet: every uwsgi thread would get a hub of its own, and an RPC
# reply picked up by one thread's hub never reaches a request waiting in another's (the call
# times out after 60 s, e.g. GET /os-hypervisors/detail at >= 2.88). One thread per process;
# and a native heartbeat thread keeps its RabbitMQ connection alive between requests.
cat >etc/nova/nova-api.conf <<EOF
[oslo_messaging_rabbit]
heartbeat_in_pthread = true
EOF
uwsgi_ini nova "$PORT_NOVA" "$OS_SCRIPTS/nova-api.wsgi" 2 1 \
  "OS_NOVA_CONFIG_DIR=$OS_HOME/etc/nova" "OS_NOVA_CONFIG_FILES=api-paste.ini;nova.conf;nova-api.conf"

# ------------------------------------------------------------------------------------------------
# 3. MariaDB, epmd, RabbitMQ
# ------------------------------------------------------------------------------------------------
step "starting MariaDB and RabbitMQ"
run_step mariadb-install-db mariadb-install-db --defaults-file="$OS_HOME/etc/my.cnf" \
  --auth-root-authentication-method=socket --skip-test-db
start_daemon mariadb mariadbd --defaults-file="$OS_HOME/etc/my.cnf"
start_daemon epmd "$EPMD" -address "$OS_IP" -port "$PORT_EPMD"
wait_daemon epmd 30 port_open "$PORT_EPMD"
( . etc/rabbitmq-env.sh; start_daemon rabbitmq /usr/lib/rabbitmq/bin/rabbitmq-server )

mariadb_ok() { mariadb --defaults-file="$OS_HOME/etc/my.cnf" -e 'select 1'; }
wait_daemon mariadb 60 mariadb_ok
{
  echo "CREATE USER 'openstack'@'$OS_IP' IDENTIFIED BY 'lambda-os-db';"
  for d in keystone placement glance neutron nova_api nova nova_cell0; do
    echo "CREATE DATABASE $d; GRANT ALL ON $d.* TO 'openstack'@'$OS_IP';"
  done
} | mariadb --defaults-file="$OS_HOME/etc/my.cnf" || fail mariadb "creating the databases failed"

# ------------------------------------------------------------------------------------------------
# 4. Database schemas (in parallel), Keystone and the service catalog meanwhile
# ------------------------------------------------------------------------------------------------
step "creating database schemas; starting Keystone"
nova_db() {
  local n=("$PY" "$OS_SCRIPTS/run.py" nova-manage --config-file "$OS_HOME/etc/nova/nova.conf")
  "${n[@]}" api_db sync &&
    "${n[@]}" cell_v2 map_cell0 --database_connection "$DB_URL/nova_cell0" &&
    "${n[@]}" cell_v2 create_cell --name cell1 &&
    "${n[@]}" db sync
}
# Fernet key repositories as `keystone-manage fernet_setup/credential_setup` make them (key 0
# staged, 1 primary; a key is 32 random bytes, urlsafe base64), without two more Python starts
fernet_key() { head -c 32 /dev/urandom | base64 | tr '+/' '-_'; }
for d in keystone-fernet keystone-credential; do
  chmod 700 "data/$d"
  ( umask 077; fernet_key >"data/$d/0"; fernet_key >"data/$d/1" )
done
keystone_db() {
  local k=(keystone-manage --config-file "$OS_HOME/etc/keystone/keystone.conf")
  "${k[@]}" db_sync &&
    "${k[@]}" bootstrap --bootstrap-password admin --bootstrap-region-id RegionOne \
      --bootstrap-admin-url "$KEYSTONE_URL/" --bootstrap-internal-url "$KEYSTONE_URL/" \
      --bootstrap-public-url "$KEYSTONE_URL/"
}
run_step placement-db placement-manage --config-file "$OS_HOME/etc/placement/placement.conf" db sync &
BG_STEPS+=($!)
run_step glance-db "$PY" "$OS_SCRIPTS/run.py" glance-manage --config-file "$OS_HOME/etc/glance/glance-api.conf" db_sync &
BG_STEPS+=($!)
run_step neutron-db "$PY" "$OS_SCRIPTS/run.py" neutron-db-manage --config-file "$OS_HOME/etc/neutron/neutron.conf" upgrade heads &
BG_STEPS+=($!)
run_step nova-db nova_db &
BG_STEPS+=($!)
run_step keystone-db keystone_db
start_daemon keystone "$UWSGI" --ini "$OS_HOME/etc/keystone/uwsgi.ini"
wait_daemon keystone 120 http_ok "$KEYSTONE_URL"
run_step catalog "$PY" "$OS_SCRIPTS/bootstrap.py" catalog
step "Keystone ready, catalog registered"
for p in "${BG_STEPS[@]}"; do wait "$p" || die "a database schema step failed (see above)"; done
BG_STEPS=()
step "schemas done"

# ------------------------------------------------------------------------------------------------
# 5. The services. nova-compute last, once placement answers: its first resource report must
#    reach placement (or the host is schedulable only after the next report, 20 s later).
# ------------------------------------------------------------------------------------------------
wait_daemon rabbitmq 120 port_open "$PORT_AMQP"
step "RabbitMQ ready; starting the services"
RUN=("$PY" "$OS_SCRIPTS/run.py")
start_daemon placement "$UWSGI" --ini "$OS_HOME/etc/placement/uwsgi.ini"
start_daemon glance-api "${RUN[@]}" glance-api --config-file "$OS_HOME/etc/glance/glance-api.conf"
start_daemon neutron-server "${RUN[@]}" neutron-server --config-file "$OS_HOME/etc/neutron/neutron.conf"
start_daemon nova-api "$UWSGI" --ini "$OS_HOME/etc/nova/uwsgi.ini"
start_daemon nova-conductor "${RUN[@]}" nova-conductor --config-file "$OS_HOME/etc/nova/nova.conf"
start_daemon nova-scheduler "${RUN[@]}" nova-scheduler --config-file "$OS_HOME/etc/nova/nova.conf"
wait_daemon placement 180 http_ok "$PLACEMENT_URL/"
start_daemon nova-compute "${RUN[@]}" nova-compute --config-file "$OS_HOME/etc/nova/nova.conf"
wait_daemon glance-api 180 http_ok "$GLANCE_URL/"
wait_daemon neutron-server 180 http_ok "$NEUTRON_URL/"
wait_daemon nova-api 180 http_ok "$NOVA_URL/"
step "APIs answer; seeding"

# ------------------------------------------------------------------------------------------------
# 6. Seed, wait until a server can be scheduled, boot+delete a probe server, write credentials
# ------------------------------------------------------------------------------------------------
if ! run_step seed "$PY" "$OS_SCRIPTS/bootstrap.py" seed; then
  for d in nova-compute nova-scheduler nova-conductor nova-api neutron-server; do
    grep -q -E 'ERROR|Traceback' "$OS_HOME/log/$d.log" 2>/dev/null && show_log "$d"
  done
  die "seeding failed (log: $OS_HOME/log/seed.log)"
fi
for d in $INFRA_DAEMONS $OPENSTACK_DAEMONS; do
  pid_alive "$OS_HOME/run/$d.pid" || fail "$d" "$d died"
done
touch run/ready
UP_DONE=1
step "OpenStack ready"
summary
