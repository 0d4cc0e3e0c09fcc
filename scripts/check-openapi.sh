#!/usr/bin/env bash
# GET /openapi.json against the server itself: schemathesis (PyPI) generates requests for every
# documented operation and checks that none gets a 5xx and every response matches its schema.
# Bounded: a few examples per operation, derandomized, so it takes well under a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/schemathesis-venv
if [ ! -x "$venv/bin/schemathesis" ]; then
  echo "check-openapi.sh: installing schemathesis==3.39.16 hypothesis==6.122.3 (PyPI) in $venv"
  python3 -m venv "$venv"
  # hypothesis pinned: newer releases changed an internal schemathesis 3.39 relies on.
  "$venv/bin/pip" install -q schemathesis==3.39.16 hypothesis==6.122.3
fi

key="fuzz.key:fuzzsecret"
log=target/check-openapi-server.log
. scripts/serve-background.sh
serve_in_background "$venv/bin/python" "$log" --keys "$key"

"$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
  --header "Authorization: Basic $(printf %s "$key" | base64)" \
  --checks not_a_server_error,response_schema_conformance \
  --hypothesis-max-examples 20 \
  --hypothesis-derandomize \
  --hypothesis-suppress-health-check all \
  --no-color
if ! kill -0 "$server" 2>/dev/null; then
  echo "the server died during the fuzz run; see $log" >&2
  exit 1
fi
echo "openapi: no 5xx, responses match the document"
