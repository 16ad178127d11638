#!/usr/bin/env bash
# Validates every Kubernetes manifest we ship or render against the
# official Kubernetes schemas, offline, with kubernetes-validate (PyPI):
# the CRD, deploy/, the Helm chart rendered with default and with all
# options, and what the operator renders for each example Restream.
# Objects of other operators' CRDs (Restream, ServiceMonitor, PodMonitor,
# KEDA's ScaledObject) have no official schema and are left out (the
# ScaledObject's shape is tested in operator/src/render/).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m kubernetes_validate --version >/dev/null 2>&1 \
    || python3 -m pip install -q kubernetes-validate \
    || python3 -m pip install -q --break-system-packages kubernetes-validate
helm=$(tests/helm.sh)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

cargo build -q -p restreamer-operator
for example in operator/yaml/instance-good.yaml operator/yaml/instance-tiered.yaml \
    operator/yaml/instance-keda.yaml deploy/examples/restream.yaml; do
    target/debug/restreamer-operator render -f "$example" > "$out/rendered-$(basename "$example")"
done
"$helm" lint helm/restreamer
"$helm" lint helm/restreamer -f helm/restreamer/all-options.yaml
"$helm" template restreamer helm/restreamer -n restreamer-system --include-crds > "$out/chart-default.yaml"
"$helm" template restreamer helm/restreamer -n restreamer-system --include-crds \
    -f helm/restreamer/all-options.yaml > "$out/chart-all-options.yaml"
# The schema rejects wrong types.
if "$helm" template restreamer helm/restreamer --set operator.replicas=two >/dev/null 2>&1; then
    echo "values.schema.json accepted operator.replicas=two"; exit 1
fi

python3 - "$out" crds/restream.yaml deploy/restreamer.yaml deploy/keda/restreamer.yaml "$out"/*.yaml <<'PY'
import sys, yaml, pathlib
out = pathlib.Path(sys.argv[1])
kept = []
for name in sys.argv[2:]:
    for doc in yaml.safe_load_all(open(name)):
        if not doc:
            continue
        if doc.get("kind") == "Restream" or doc.get("apiVersion", "").startswith(("monitoring.coreos.com/", "keda.sh/")):
            continue
        kept.append(doc)
(out / "all").mkdir()
for i, doc in enumerate(kept):
    path = out / "all" / f"{i:03}-{doc['kind'].lower()}.yaml"
    path.write_text(yaml.safe_dump(doc))
print(f"{len(kept)} objects to validate")
PY
python3 -m kubernetes_validate --strict --quiet "$out"/all/*.yaml
echo "all manifests valid"
