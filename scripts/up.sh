#!/usr/bin/env bash
# The set-up command: on a fresh machine, installs what is missing, builds `lambda`, and runs
# `lambda up` — etcd, a Docker Swarm, the runtime images (with the static agent), the controller
# and the gateway — then applies examples/, waits for the functions to become Ready and invokes
# one. Idempotent: running it again is harmless. `scripts/down.sh` (= `lambda down`) removes
# everything it created.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$PROJECT_ROOT"

apt_ensure "${BUILD_PACKAGES[@]}" "${PLATFORM_PACKAGES[@]}" "${BENCH_PACKAGES[@]}"
log "building lambda (release)"
cargo build --release --locked --bin lambda
# `lambda` on the PATH, so the README's commands work as written (scripts/down.sh removes it).
if [ -w /usr/local/bin ] && { [ ! -e /usr/local/bin/lambda ] || [ -L /usr/local/bin/lambda ]; }; then
  ln -sfn "$PROJECT_ROOT/target/release/lambda" /usr/local/bin/lambda
  log "lambda -> /usr/local/bin/lambda"
else
  log "add $PROJECT_ROOT/target/release to your PATH to run lambda"
fi
exec "$PROJECT_ROOT/target/release/lambda" up --project-dir "$PROJECT_ROOT" "$@"
