#!/usr/bin/env bash
# End-to-end on a real cluster (kind), for machines with Docker:
# builds the image, installs the operator from deploy/, applies the example
# Restream, waits for its pods, plays the stream through its Service and
# checks what arrives is MPEG-TS, then changes the Restream and checks the
# pods reloaded without restarting. Needs: docker, kind, kubectl (ffprobe
# optional).
#   tests/e2e-kind.sh            # creates and deletes cluster "restreamer-e2e"
#   KEEP=1 tests/e2e-kind.sh     # leaves it running
set -euo pipefail
cd "$(dirname "$0")/.."
cluster=restreamer-e2e
image=ghcr.io/restreamer/restreamer:0.1.0

kind get clusters | grep -qx "$cluster" || kind create cluster --name "$cluster" --wait 120s
[ -n "${KEEP:-}" ] || trap 'kind delete cluster --name "$cluster"' EXIT
docker build -t "$image" .
kind load docker-image --name "$cluster" "$image"

kubectl apply -f deploy/
kubectl -n restreamer-system rollout status deployment/restreamer-operator --timeout=120s
kubectl wait --for condition=established crd/restreams.restreamer.io --timeout=60s

kubectl apply -f deploy/examples/
for _ in $(seq 60); do
    kubectl get deployment example >/dev/null 2>&1 && break
    sleep 2
done
kubectl rollout status deployment/example --timeout=180s
kubectl get restreams
kubectl wait restream/example --for=condition=Ready --timeout=120s

# Play the stream through the Service.
kubectl port-forward service/example 18080:80 >/dev/null 2>&1 &
forward=$!
trap 'kill $forward 2>/dev/null || true; [ -n "${KEEP:-}" ] || kind delete cluster --name "$cluster"' EXIT
sleep 3
curl -s --max-time 5 -o /tmp/e2e.ts http://127.0.0.1:18080/live/sample.ts || true
size=$(stat -c %s /tmp/e2e.ts)
[ "$size" -gt 100000 ] || { echo "FAIL: only $size bytes from the stream"; exit 1; }
head -c 1 /tmp/e2e.ts | od -An -tx1 | grep -q 47 || { echo "FAIL: not MPEG-TS"; exit 1; }
if command -v ffprobe >/dev/null; then
    ffprobe -v error -show_entries stream=codec_type -of csv=p=0 /tmp/e2e.ts | grep -q video
fi

# A limit change reaches the pods by live reload: same pods, new config.
pods_before=$(kubectl get pods -l app.kubernetes.io/instance=example -o name | sort)
kubectl patch restream example --type merge -p '{"spec":{"limits":{"softConnections":150}}}'
for _ in $(seq 60); do
    kubectl logs -l app.kubernetes.io/instance=example --tail=200 | grep -q '"event":"config-reload"' && break
    sleep 2
done
kubectl logs -l app.kubernetes.io/instance=example --tail=200 | grep -q '"event":"config-reload"' \
    || { echo "FAIL: the pods did not reload their config"; exit 1; }
pods_after=$(kubectl get pods -l app.kubernetes.io/instance=example -o name | sort)
[ "$pods_before" = "$pods_after" ] || { echo "FAIL: a config change restarted pods"; exit 1; }

# Deleting the Restream deletes what it owns.
kubectl delete restream example
kubectl wait --for=delete deployment/example --timeout=60s
echo "e2e: ok"
