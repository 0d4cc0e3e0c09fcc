#!/usr/bin/env bash
# Every test: Rust unit and integration tests, the crate-boundary check, the real `ably` SDK
# suite (Node and headless Chromium) and ably-python against the built binary. Installs what it needs when missing (npm packages via `npm ci`).
set -euo pipefail
cd "$(dirname "$0")/.."

# The cluster tests start their own redis-server processes (never the machine's own on 6379);
# the browser tests drive Debian's Chromium (headless) through playwright-core.
# CHROMIUM_PATH names another Chromium (then none is installed).
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
[ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing with apt-get (--no-install-recommends): ${missing[*]}"
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cargo build --workspace --locked --all-targets
# Style gates (STYLE.md, "Habits"); clippy after the build so it reuses what it can.
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked

# A 60 s soak against the debug binary on short timers: tokens renewed in-band and expiring into
# 40142 many times, drops and resumes, clean reconnects, presence, REST and events; it fails on
# any unasked disconnect, silence past maxIdleInterval, lost/duplicated/reordered message or
# refused resume (load-tests/README.md, "soak").
./target/debug/realtime-load --quiet --duration 60s soak --spawn target/debug/realtime \
  --clients 250 --sessions 10 --streams 4 --ramp 5s --rate 20 --event-rate 4 \
  --token-ttl 10s --short-token-ttl 3s --token-renew-lead 4s \
  --drop-every 20s --reconnect-every 40s --presence-every 5s --warmup 20s \
  --server-arg=--max-idle-interval-ms=2000 --server-arg=--presence-grace-ms=3000 \
  --server-arg=--connection-state-ttl-ms=30000

# protocol does no I/O: it must not pull in tokio, axum or redis.
if cargo tree -p protocol -e normal --prefix none | grep -E '^(tokio|axum|redis) '; then
  echo "protocol must not depend on tokio, axum or redis" >&2
  exit 1
fi

# The Kubernetes manifests render and validate; the config they mount passes check-config.
./scripts/check-k8s.sh

# GET /openapi.json is true to the server: a bounded schemathesis run finds no 5xx, no schema violation.
./scripts/check-openapi.sh

# ably-python (PyPI, pinned, in a venv) stays connected while idle on the server's HEARTBEATs.
./scripts/check-python.sh

cd tests/sdk
if [ ! -d node_modules/ably ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "test.sh: installing tests/sdk's npm packages (npm ci, from package-lock.json)"
  npm ci --no-audit --no-fund
fi
REALTIME_BIN="$PWD/../../target/debug/realtime" npm test
