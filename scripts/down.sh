#!/usr/bin/env bash
# Stops what scripts/up.sh started (by recorded PIDs only).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
"$PROJECT_ROOT/scripts/etcd.sh" down
