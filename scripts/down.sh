#!/usr/bin/env bash
# Stops and removes what scripts/up.sh (`lambda up`) started: functions (their Swarm services),
# gateway, controller, Swarm, etcd — by recorded PIDs only. `--purge` also deletes the data.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$PROJECT_ROOT"
L="$PROJECT_ROOT/target/release/lambda"
# The PATH link scripts/up.sh made, when it points into this checkout.
if [ "$(readlink /usr/local/bin/lambda 2>/dev/null)" = "$L" ]; then
  rm -f /usr/local/bin/lambda
fi
if [ -x "$L" ]; then
  exec "$L" down --project-dir "$PROJECT_ROOT" "$@"
fi
"$PROJECT_ROOT/scripts/swarm.sh" down
"$PROJECT_ROOT/scripts/etcd.sh" down
