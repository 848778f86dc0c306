#!/usr/bin/env bash
# The web console's browser test against a running platform: Debian's chromium driven by
# playwright-core (tests/console/console.mjs). Installs what it needs idempotently (chromium
# and fonts via apt, playwright-core from npm at the version package-lock.json pins: no
# browser download). tests/readme.rs runs it after `lambda up`, before `lambda down`.
#
#   scripts/console-test.sh [GATEWAY_URL [TOKEN_FILE]]
#       defaults: http://127.0.0.1:8080 and .lambda/platform/token (what `lambda up` made)
#   CONSOLE_NAMESPACE, CONSOLE_POOL, ETCDCTL_ENDPOINTS, CONSOLE_SCREENSHOTS, CONSOLE_README=1:
#       see tests/console/console.mjs. Screenshots: .lambda/console-screenshots/.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$PROJECT_ROOT"

apt_ensure "${BROWSER_PACKAGES[@]}" etcd-client
npm_ensure
dir=$PROJECT_ROOT/tests/console
stamp=$dir/node_modules/.lambda-lock.sha256
want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing playwright-core (tests/console/package-lock.json)"
  # No browser download: chromium comes from Debian.
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
  echo "$want" >"$stamp"
fi

export LAMBDA_GATEWAY=${1:-${LAMBDA_GATEWAY:-http://127.0.0.1:8080}}
export LAMBDA_TOKEN_FILE=${2:-${LAMBDA_TOKEN_FILE:-$LAMBDA_HOME/platform/token}}
export CONSOLE_SCREENSHOTS=${CONSOLE_SCREENSHOTS:-$LAMBDA_HOME/console-screenshots}
exec node "$dir/console.mjs"
