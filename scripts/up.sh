#!/usr/bin/env bash
# The set-up command: on a fresh machine, installs what is missing, builds `lambda`, and runs
# `lambda up` — etcd, a Docker Swarm, the runtime images (with the static agent), the controller
# and the gateway — then applies examples/, waits for the functions to become Ready and invokes
# one. Idempotent: running it again is harmless. `scripts/down.sh` (= `lambda down`) removes
# everything it created.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$PROJECT_ROOT"

apt_ensure protobuf-compiler etcd-server etcd-client docker.io iptables iproute2 busybox-static debootstrap curl
log "building lambda (release)"
cargo build --release --locked --bin lambda
exec "$PROJECT_ROOT/target/release/lambda" up --project-dir "$PROJECT_ROOT" "$@"
