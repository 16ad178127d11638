#!/usr/bin/env bash
# Validates every Kubernetes manifest we ship or render against the
# official Kubernetes schemas, offline, with kubernetes-validate (PyPI):
# the CRD, the plain manifests in deploy/, and what the operator renders
# for each example Restream.
set -euo pipefail
cd "$(dirname "$0")/.."
validate() { python3 -m kubernetes_validate "$@"; }
python3 -m kubernetes_validate --version >/dev/null 2>&1 \
    || python3 -m pip install -q kubernetes-validate \
    || python3 -m pip install -q --break-system-packages kubernetes-validate
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo build -q -p restreamer-operator
for example in operator/yaml/instance-good.yaml deploy/restream-example.yaml; do
    target/debug/restreamer-operator render -f "$example" > "$out/$(basename "$example" .yaml)-rendered.yaml"
done
# Custom resources (Restream) have no official schema; everything else must pass strictly.
manifests=(crds/restream.yaml "$out"/*-rendered.yaml)
for file in deploy/*.yaml; do
    grep -q '^kind: Restream$' "$file" || manifests+=("$file")
done
validate --strict --quiet "${manifests[@]}"
echo "validated: ${manifests[*]}"
