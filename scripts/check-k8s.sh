#!/usr/bin/env bash
# The Kubernetes manifests render (kustomize), validate against the Kubernetes schemas offline
# (kubernetes-validate from PyPI), and the config file they mount passes `realtime check-config`.
set -euo pipefail
cd "$(dirname "$0")/.."

# Any kubectl renders it, Debian's kubernetes-client 1.20 included (its kustomize is v2.0).
if ! command -v kubectl >/dev/null; then
  echo "check-k8s.sh: installing kubernetes-client (kubectl) with apt-get (--no-install-recommends)"
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client
fi
venv=target/k8s-venv
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  echo "check-k8s.sh: installing kubernetes-validate==1.31.0 (PyPI) in $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q kubernetes-validate==1.31.0
fi

rendered=target/k8s-rendered.yaml
kubectl kustomize k8s/ > "$rendered"
"$venv/bin/kubernetes-validate" --strict -k 1.31.0 "$rendered"

# Behind the Ingress every documented REST path reaches the api pods (the gateway pods answer only
# WebSockets, /time and the probes).
"$venv/bin/python" - "$rendered" api/src/openapi.json <<'PY'
import json, re, sys, yaml
rules = []
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc["kind"] == "Ingress":
        for rule in doc["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                rules.append((p["path"], p["pathType"], p["backend"]["service"]["name"]))
def backend(path):
    hits = [(len(r), svc) for r, kind, svc in rules
            if (kind == "Exact" and path == r) or (kind == "Prefix" and (path == r or path.startswith(r.rstrip("/") + "/")))]
    return max(hits)[1] if hits else None
gateway_paths = {"/time", "/healthz", "/readyz", "/metrics", "/apps", "/apps/{app_id}"}
wrong = [p for p in json.load(open(sys.argv[2]))["paths"]
         if p not in gateway_paths and backend(re.sub(r"\{[^}]+\}", "x", p)) != "realtime-api"]
if wrong:
    sys.exit(f"the Ingress does not route these REST paths to realtime-api: {wrong}")
PY

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
