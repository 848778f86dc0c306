#!/usr/bin/env bash
# The Python tools the tests use, in a virtualenv under $LAMBDA_HOME/venv (idempotent: a venv
# that already holds these versions is left as it is):
#   schemathesis            fuzzes the gateway's REST API from its own /openapi.json (tests/api_fuzz.rs)
#   openapi-spec-validator  validates that document as OpenAPI 3.1, every $ref resolving
# Prints the venv's path.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VENV=$LAMBDA_HOME/venv
# Pinned: a new release must not change what CI checks without a commit saying so.
PY_PACKAGES=(schemathesis==4.32.5 openapi-spec-validator==0.9.0)

apt_ensure "${TEST_PACKAGES[@]}"

stamp=$VENV/.lambda-packages
want="${PY_PACKAGES[*]}"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$VENV"
  exit 0
fi
log "creating $VENV (${PY_PACKAGES[*]})"
# Debian's interpreter, not whatever python3 comes first on PATH: python3-venv is its venv module.
/usr/bin/python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}" >&2
echo "$want" >"$stamp"
echo "$VENV"
