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

# Autoscaling. Prometheus scrapes the pods (their prometheus.io
# annotations), prometheus-adapter serves restreamer_connection_utilization
# with the chart's rule, the operator's HPA reads it.
helm=$(tests/helm.sh)
"$helm" repo add prometheus-community https://prometheus-community.github.io/helm-charts >/dev/null
"$helm" repo update >/dev/null
"$helm" upgrade --install prometheus prometheus-community/prometheus -n monitoring --create-namespace \
    --set alertmanager.enabled=false --set prometheus-pushgateway.enabled=false \
    --set kube-state-metrics.enabled=false --set prometheus-node-exporter.enabled=false \
    --set server.persistentVolume.enabled=false --set server.global.scrape_interval=5s --wait
"$helm" template restreamer helm/restreamer -n monitoring --set prometheusAdapter.enabled=true \
    --show-only templates/adapter-rules.yaml | kubectl apply -f -
"$helm" upgrade --install prometheus-adapter prometheus-community/prometheus-adapter -n monitoring \
    --set prometheus.url=http://prometheus-server.monitoring.svc --set prometheus.port=80 \
    --set rules.existing=restreamer-adapter-rules --wait
for _ in $(seq 60); do
    kubectl get --raw '/apis/custom.metrics.k8s.io/v1beta1/namespaces/default/pods/*/restreamer_connection_utilization' \
        2>/dev/null | grep -q '"value"' && break
    sleep 5
done

# Small limits and a quick scale-in, so that a few viewers show it.
kubectl patch restream example --type merge -p '{"spec":{
    "limits":{"softConnections":2,"maxConnections":10},
    "pods":{"drainSeconds":15,"preStopSeconds":5},
    "scaling":{"minReplicas":1,"maxReplicas":3,"targetUtilizationPercent":80,
               "scaleDownStabilizationSeconds":30,"scaleDownPods":1,"scaleDownPeriodSeconds":30}}}'
replicas() { kubectl get deployment example -o jsonpath='{.status.replicas}'; }
wait_replicas() { # count, seconds
    for _ in $(seq $(($2 / 5))); do
        [ "$(replicas)" = "$1" ] && [ "$(kubectl get deployment example -o jsonpath='{.status.readyReplicas}')" = "$1" ] && return 0
        sleep 5
    done
    echo "FAIL: the Deployment did not reach $1 ready pods (now $(replicas))"
    kubectl describe hpa example || true
    exit 1
}

# Scale-out under load: 6 viewers on a soft limit of 2 want 4 pods, at most 3.
kubectl run viewers --image=curlimages/curl --restart=Never --command -- sh -c \
    'for i in 1 2 3 4 5 6; do curl -s -o /dev/null http://example.default.svc/live/sample.ts & sleep 1; done; wait'
wait_replicas 3 300
kubectl get restreams
[ "$(kubectl get restream example -o jsonpath='{.status.desiredReplicas}')" = 3 ] \
    || { echo "FAIL: the Restream does not report the autoscaler's desired replicas"; exit 1; }
# The operator reconciles (every 60 s and on every Deployment change)
# without taking the count back from the HPA.
sleep 75
[ "$(replicas)" = 3 ] || { echo "FAIL: the pods went from 3 to $(replicas) without a change in load"; exit 1; }

# Scale-in with a viewer on the removed pod: the load goes, one viewer per
# pod stays (3 viewers, 2 pods' worth at 80 %), so one pod is removed.
kubectl delete pod viewers --wait=true
pods=$(kubectl get pods -l app.kubernetes.io/instance=example -o jsonpath='{range .items[*]}{.metadata.name}={.status.podIP}{"\n"}{end}')
for entry in $pods; do
    name=${entry%%=*} ip=${entry#*=}
    # First on that pod directly; when it ends, again and again through the Service.
    kubectl run "watch-$name" --image=curlimages/curl --restart=Never --command -- sh -c "
        echo start \$(date +%s)
        curl -s -o /dev/null -w 'first %{size_download}\n' http://$ip:8080/live/sample.ts
        echo ended \$(date +%s)
        while true; do
            curl -s -o /dev/null --max-time 10 -w 'again %{size_download}\n' http://example.default.svc/live/sample.ts
        done"
done
wait_replicas 2 300
for entry in $pods; do
    name=${entry%%=*}
    kubectl get pod "$name" >/dev/null 2>&1 && continue
    # This viewer's pod was removed.
    sleep 25
    log=$(kubectl logs "watch-$name")
    echo "$log"
    started=$(echo "$log" | awk '/^start/ {print $2}')
    ended=$(echo "$log" | awk '/^ended/ {print $2}')
    [ -n "$ended" ] || { echo "FAIL: the viewer of the removed pod $name was never cut"; exit 1; }
    first=$(echo "$log" | awk '/^first/ {print $2}')
    [ "${first:-0}" -gt 100000 ] || { echo "FAIL: the removed pod's viewer got only ${first:-0} bytes"; exit 1; }
    echo "$log" | awk '/^again/ && $2 > 100000 {found=1} END {exit !found}' \
        || { echo "FAIL: the viewer of the removed pod did not get the stream back through the Service"; exit 1; }
    echo "the viewer of $name was served $((ended - started)) s, then reconnected"
done
for entry in $pods; do kubectl delete pod "watch-${entry%%=*}" --ignore-not-found --wait=false; done

# Deleting the Restream deletes what it owns.
kubectl delete restream example
kubectl wait --for=delete deployment/example --timeout=60s
echo "e2e: ok"
