# Shared settings of scripts/openstack/up.sh and down.sh. Source it; never run it.
#
# Everything this OpenStack owns lives under $OS_HOME ($LAMBDA_HOME/openstack):
#   etc/   generated configs            data/  MariaDB, RabbitMQ, Glance store, Nova/Neutron state
#   log/   one log per daemon/step      run/   <daemon>.pid of every process up.sh started, `ready`
# and the credentials files written at the end (openrc*, clouds.yaml, env, lambda-key).
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../lib.sh"

OS_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OS_HOME=$LAMBDA_HOME/openstack
export OS_HOME

# Debian's interpreter: the OpenStack libraries are Debian packages (python3-nova, ...), which a
# pyenv/venv python earlier on PATH would not see.
PY=/usr/bin/python3
unset PYTHONHOME PYTHONPATH VIRTUAL_ENV
# never write __pycache__ into the work tree (scripts/openstack/pylib is imported by the daemons)
export PYTHONDONTWRITEBYTECODE=1

# Ports: all on 127.0.0.1, chosen away from the usual defaults (so a system MariaDB/RabbitMQ or
# the platform's own services can run beside this) and below the ephemeral range 32768-60999.
OS_IP=127.0.0.1
PORT_KEYSTONE=15000
PORT_NOVA=18774
PORT_PLACEMENT=18778
PORT_GLANCE=19292
PORT_NEUTRON=19696
PORT_MARIADB=13306
PORT_AMQP=16672
PORT_RABBIT_DIST=16673
PORT_EPMD=14369
ALL_PORTS="$PORT_KEYSTONE $PORT_NOVA $PORT_PLACEMENT $PORT_GLANCE $PORT_NEUTRON $PORT_MARIADB
           $PORT_AMQP $PORT_RABBIT_DIST $PORT_EPMD"

KEYSTONE_URL=http://$OS_IP:$PORT_KEYSTONE/v3
NOVA_URL=http://$OS_IP:$PORT_NOVA/v2.1
PLACEMENT_URL=http://$OS_IP:$PORT_PLACEMENT
GLANCE_URL=http://$OS_IP:$PORT_GLANCE
NEUTRON_URL=http://$OS_IP:$PORT_NEUTRON
# Nova's notifications (topic exchange "nova"): RabbitMQ's default vhost "/", percent-encoded
NOTIFICATION_URL=amqp://guest:guest@$OS_IP:$PORT_AMQP/%2f
export KEYSTONE_URL NOVA_URL PLACEMENT_URL GLANCE_URL NEUTRON_URL NOTIFICATION_URL

# The daemons up.sh starts, each recorded in run/<name>.pid. Infrastructure first; down.sh stops
# the OpenStack services (in parallel) before the infrastructure (in reverse order).
INFRA_DAEMONS="mariadb epmd rabbitmq"
OPENSTACK_DAEMONS="keystone placement glance-api neutron-server nova-api nova-conductor nova-scheduler nova-compute"

# port_open PORT — something accepts TCP connections on 127.0.0.1:PORT
port_open() { (exec 3<>"/dev/tcp/$OS_IP/$1") 2>/dev/null; }

# lock — serialise up.sh/down.sh (fd 9 stays open until the script exits; the daemons must not
# inherit it, see start_daemon in up.sh)
os_lock() {
  mkdir -p "$OS_HOME"
  exec 9>"$OS_HOME/.lock"
  flock -w 900 9 || die "another scripts/openstack/{up,down}.sh holds $OS_HOME/.lock"
}

# descendants PID — the PIDs of all processes below PID (children first-level, then theirs)
descendants() {
  local c
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$c"; descendants "$c"; done
}

# stop_tree PID [GRACE] — SIGTERM PID, wait up to GRACE seconds (default 20) for it to exit, then
# give the processes that were below it 5 s more, then SIGKILL whatever of them is left.
stop_tree() {
  local pid=$1 grace=${2:-20} kids p end
  kill -0 "$pid" 2>/dev/null || return 0
  kids=$(descendants "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  end=$((SECONDS + grace))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do sleep 0.1; done
  end=$((SECONDS + 5))
  for p in $kids; do
    while kill -0 "$p" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do sleep 0.1; done
  done
  for p in $pid $kids; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
  return 0
}
