#!/usr/bin/env bash
# ably-python (the PyPI `ably` realtime client) against the server: stays connected while idle on
# the server's HEARTBEATs (tests/python/idle.py). About 20 s; the venv is made once under target/.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/ably-python-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import ably' 2>/dev/null; then
  echo "check-python.sh: installing ably==2.1.4 (PyPI) in $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q ably==2.1.4
fi

key="py.key:pysecret"
log=target/check-python-server.log
. scripts/serve-background.sh
serve_in_background "$venv/bin/python" "$log" --keys "$key" --max-idle-interval-ms 5000

if ! "$venv/bin/python" tests/python/idle.py "$port" "$key"; then
  echo "--- server log ---" >&2
  cat "$log" >&2
  exit 1
fi
