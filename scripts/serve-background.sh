# Sourced by the check-*.sh scripts. `serve_in_background PYTHON LOG [serve flags…]` starts
# target/debug/realtime on a free loopback port, sets `port` and `server` (its pid), kills it when
# the script exits, and returns once GET /time answers. PYTHON is any python3 (the script's venv).
serve_in_background() {
  local python=$1 log=$2
  shift 2
  port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  RUST_LOG=warn target/debug/realtime serve --listen "127.0.0.1:$port" "$@" >"$log" 2>&1 &
  server=$!
  trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
  "$python" - "$port" <<'PY'
import sys, time, urllib.request
for _ in range(200):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/time", timeout=1)
        break
    except OSError:
        time.sleep(0.05)
else:
    sys.exit("the server did not answer GET /time")
PY
}
