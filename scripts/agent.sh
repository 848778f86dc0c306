#!/usr/bin/env bash
# The runtime agent (crate agent/, binary lambda-agent) as a static binary for the runtime images:
#
#   scripts/agent.sh [build]   build it (cargo: a no-op when nothing changed) and install it at
#                              $LAMBDA_HOME/bin/lambda-agent (replaced only when its content changed)
#   scripts/agent.sh path      print that path
#
# Static (`-C target-feature=+crt-static`, glibc) so one binary runs in every image, FROM scratch included.
# Built with the `agent` profile (LTO, stripped) for an explicit --target, so the RUSTFLAGS apply to it alone
# and the host build's cache is untouched. Environment: CARGO_TARGET_DIR (default <project>/target),
# LAMBDA_AGENT_TARGET (default <arch>-unknown-linux-gnu).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BIN=$LAMBDA_HOME/bin/lambda-agent
TARGET=${LAMBDA_AGENT_TARGET:-$(uname -m)-unknown-linux-gnu}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PROJECT_ROOT/target}

build() {
  command -v cargo >/dev/null || die "cargo is needed to build the agent (or set LAMBDA_AGENT_BIN for scripts/images.sh)"
  local start=$SECONDS out=$CARGO_TARGET_DIR/$TARGET/agent/lambda-agent
  (cd "$PROJECT_ROOT" && RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --quiet --locked --profile agent -p lambda-agent --target "$TARGET") ||
    die "building lambda-agent failed"
  [ -x "$out" ] || die "cargo did not produce $out"
  # A dynamic binary would fail in the FROM-scratch shell image: refuse it here instead.
  if ldd "$out" 2>&1 | grep -q '=>'; then die "$out is dynamically linked"; fi
  mkdir -p "$(dirname "$BIN")"
  if ! cmp -s "$out" "$BIN"; then
    install -m 0755 "$out" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
    log "lambda-agent: $(du -k "$BIN" | cut -f1) KiB static binary in $((SECONDS - start)) s → $BIN"
  fi
  echo "$BIN"
}

case "${1:-build}" in
  build) build ;;
  path) echo "$BIN" ;;
  *) echo "usage: $0 [build|path]" >&2; exit 2 ;;
esac
