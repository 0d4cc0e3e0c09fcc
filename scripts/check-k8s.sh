#!/usr/bin/env bash
# The Kubernetes manifests render (kustomize), validate against the Kubernetes schemas offline
# (kubernetes-validate from PyPI), and the config file they mount passes `realtime check-config`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v kubectl >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq kubernetes-client
fi
venv=target/k8s-venv
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q kubernetes-validate==1.31.0
fi

rendered=target/k8s-rendered.yaml
kubectl kustomize k8s/ > "$rendered"
"$venv/bin/kubernetes-validate" --strict -k 1.31.0 "$rendered"

# The mounted realtime.toml, checked by the binary itself with the settings the pods get.
"$venv/bin/python" - "$rendered" > target/k8s-realtime.toml <<'PY'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc["kind"] == "ConfigMap" and "realtime.toml" in doc.get("data", {}):
        print(doc["data"]["realtime.toml"])
PY
target/debug/realtime check-config --config target/k8s-realtime.toml --keys check.key:secret \
  --redis redis://realtime-redis:6379 >/dev/null
echo "k8s manifests: rendered, valid, config ok"
