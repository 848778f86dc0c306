#!/usr/bin/env bash
# Brings up the local platform and shows the example objects. Idempotent: running it again is
# harmless. `scripts/down.sh` stops what it started.
#
# Today: installs the build and runtime packages, builds `lambda`, starts etcd, applies
# examples/ and lists them. (Docker Swarm workers, the controller and the gateway join as their
# issues land.)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$PROJECT_ROOT"

apt_ensure protobuf-compiler etcd-server etcd-client
log "building lambda (release)"
cargo build --release --locked --bin lambda
"$PROJECT_ROOT/scripts/etcd.sh" up
export LAMBDA_ETCD_ENDPOINTS=http://127.0.0.1:${LAMBDA_ETCD_PORT:-2379}
L="$PROJECT_ROOT/target/release/lambda"
log "applying examples/"
"$L" apply -f examples/
for kind in functions nodepools snapshotimages; do
  log "lambda get $kind"
  "$L" get "$kind" -o wide
done
echo
echo "etcd:    $LAMBDA_ETCD_ENDPOINTS"
echo "lambda:  $L   (try: $L describe fn hello)"
