#!/usr/bin/env bash
# End-to-end test on a local kind cluster (needs Docker and kind; helm and kubectl come from .tools):
#   1. kind cluster with a pinned node image
#   2. KubeRay 1.7.0 from its Helm chart; MinIO from ours
#   3. build both images, load them into kind, install the chart
#   4. CPU RayJob to jobStatus SUCCEEDED; the channel pointer appears in MinIO
#   5. RayService from that checkpoint: the operator reports it Live, the endpoint answers from it
#   6. a second training under steady load: the operator promotes it with no failed request
# On failure it collects cluster state and logs into $ARTIFACTS. Every wait has a timeout.
#
# Environment: RLOPS_KIND_CLUSTER (rlops-e2e), KIND_NODE_IMAGE, RLOPS_E2E_ARTIFACTS (results/kind-e2e),
# RLOPS_KEEP_CLUSTER=1 keeps the cluster afterwards, RLOPS_REUSE_CLUSTER=1 reuses an existing one.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.tools/bin:$PATH"
CLUSTER="${RLOPS_KIND_CLUSTER:-rlops-e2e}"
# kind v0.30's node image for Kubernetes 1.34 (pin the digest from the kind release notes if you can).
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.34.0}"
KUBERAY_VERSION="1.7.0"
KUBERAY_REPO="https://ray-project.github.io/kuberay-helm/"
NS="rlops"
RELEASE="rlops"
WORKLOADS_IMAGE="rlops-workloads:0.1.0-cpu"
OPERATOR_IMAGE="rlops-operator:0.1.0"
ARTIFACTS="${RLOPS_E2E_ARTIFACTS:-$ROOT/results/kind-e2e}"
CHANNEL_POINTER="s3://rlops/experiments/corridor/best_checkpoint.txt"
SERVE_URL="http://rlops-serve-serve-svc.$NS.svc:8000"
KUBECTL=(kubectl --context "kind-$CLUSTER")
HELM=(helm --kube-context "kind-$CLUSTER")

log() { printf '\n[kind-e2e %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

for bin in docker kind helm kubectl python3; do
  command -v "$bin" >/dev/null || die "$bin not found (helm/kubectl: make tools; kind: https://kind.sigs.k8s.io)"
done
docker info >/dev/null 2>&1 || die "no Docker engine reachable"

collect_logs() {
  mkdir -p "$ARTIFACTS"
  log "collecting cluster state and logs into $ARTIFACTS"
  local k=("${KUBECTL[@]}")
  "${k[@]}" get nodes -o wide >"$ARTIFACTS/nodes.txt" 2>&1 || true
  "${k[@]}" get all,rayjobs,rayservices,rayclusters,policyrollouts,jobs -A -o wide >"$ARTIFACTS/resources.txt" 2>&1 || true
  "${k[@]}" get rayjobs,rayservices,policyrollouts -n "$NS" -o yaml >"$ARTIFACTS/custom-resources.yaml" 2>&1 || true
  "${k[@]}" get events -A --sort-by=.lastTimestamp >"$ARTIFACTS/events.txt" 2>&1 || true
  "${k[@]}" describe pods -n "$NS" >"$ARTIFACTS/pods-describe.txt" 2>&1 || true
  local ns pod
  for ns in "$NS" kuberay-system; do
    for pod in $("${k[@]}" get pods -n "$ns" -o name 2>/dev/null); do
      "${k[@]}" logs -n "$ns" "$pod" --all-containers --tail=2000 >"$ARTIFACTS/logs-$ns-${pod#pod/}.txt" 2>&1 || true
    done
  done
  kind export logs "$ARTIFACTS/kind" --name "$CLUSTER" >/dev/null 2>&1 || true
}

on_exit() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then collect_logs; fi
  if [[ "${RLOPS_KEEP_CLUSTER:-0}" != "1" ]]; then
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  if [[ $rc -eq 0 ]]; then echo "kind e2e: PASSED"; else echo "kind e2e: FAILED (logs in $ARTIFACTS)"; fi
}
trap on_exit EXIT

# wait_for DESCRIPTION TIMEOUT_S COMMAND...: run COMMAND every 5 s until it succeeds.
wait_for() {
  local what=$1 timeout=$2
  shift 2
  local start=$SECONDS
  until "$@"; do
    ((SECONDS - start < timeout)) || die "timed out after ${timeout}s waiting for $what"
    sleep 5
  done
}

# The checkpoint URI a pointer names, read inside the cluster with the operator's credentials.
read_pointer() {
  "${KUBECTL[@]}" -n "$NS" exec deploy/rlops-operator -- python -c \
    "import sys; from rlops_core import checkpoints; print(checkpoints.read_pointer(sys.argv[1]))" "$1"
}

# Wait for a RayJob's jobStatus SUCCEEDED (jobDeploymentStatus Complete alone is not success).
wait_rayjob() {
  local name=$1 timeout=$2 start=$SECONDS status deployment
  log "waiting for RayJob $name (timeout ${timeout}s)"
  while true; do
    status=$("${KUBECTL[@]}" -n "$NS" get rayjob "$name" -o jsonpath='{.status.jobStatus}' 2>/dev/null || true)
    deployment=$("${KUBECTL[@]}" -n "$NS" get rayjob "$name" -o jsonpath='{.status.jobDeploymentStatus}' 2>/dev/null || true)
    case "$status" in
      SUCCEEDED) log "RayJob $name SUCCEEDED"; return 0 ;;
      FAILED | STOPPED) die "RayJob $name ended with jobStatus $status" ;;
    esac
    [[ "$deployment" == Failed ]] && die "RayJob $name: jobDeploymentStatus Failed"
    [[ "$deployment" == Complete ]] && die "RayJob $name Complete with jobStatus '$status'"
    ((SECONDS - start < timeout)) || die "RayJob $name not SUCCEEDED after ${timeout}s (status '$status')"
    sleep 10
  done
}

rollout_live_is() {
  local want=$1 phase live
  phase=$("${KUBECTL[@]}" -n "$NS" get policyrollout rlops -o jsonpath='{.status.phase}' 2>/dev/null || true)
  live=$("${KUBECTL[@]}" -n "$NS" get policyrollout rlops -o jsonpath='{.status.live.checkpointUri}' 2>/dev/null || true)
  [[ "$phase" == Live && "${live%/}" == "${want%/}" ]]
}

# in_cluster_python NAME SCRIPT [kubectl run options]: run a python snippet in a throwaway pod of the
# operator image (stdlib HTTP to the Serve service from inside the cluster).
in_cluster_python() {
  local name=$1 script=$2
  shift 2
  "${KUBECTL[@]}" -n "$NS" delete pod "$name" --ignore-not-found >/dev/null
  "${KUBECTL[@]}" -n "$NS" run "$name" --image "$OPERATOR_IMAGE" --image-pull-policy Never --restart Never \
    --labels app.kubernetes.io/component=e2e "$@" --command -- python -c "$script" >/dev/null
}

endpoint_serves() {
  local want=$1 script
  script='
import json, os, urllib.request
base = os.environ["ENDPOINT"]
req = urllib.request.Request(base + "/", data=json.dumps({"state": [0]}).encode(),
                             headers={"Content-Type": "application/json"})
action = json.load(urllib.request.urlopen(req, timeout=10))["action"]
meta = json.load(urllib.request.urlopen(base + "/metadata", timeout=10))
print(json.dumps({"action": action, "checkpoint_uri": meta["checkpoint_uri"]}))
'
  in_cluster_python e2e-query "$script" --env "ENDPOINT=$SERVE_URL" 2>/dev/null || return 1
  "${KUBECTL[@]}" -n "$NS" wait pod/e2e-query --for=jsonpath='{.status.phase}'=Succeeded --timeout=60s >/dev/null 2>&1 \
    || return 1
  local out
  out=$("${KUBECTL[@]}" -n "$NS" logs e2e-query)
  log "endpoint answered: $out"
  [[ "$out" == *"\"checkpoint_uri\": \"${want%/}"* ]]
}

# ---- 1. cluster ------------------------------------------------------------------------------
if [[ "${RLOPS_REUSE_CLUSTER:-0}" == "1" ]] && kind get clusters | grep -qx "$CLUSTER"; then
  log "reusing kind cluster $CLUSTER"
else
  kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  log "creating kind cluster $CLUSTER ($KIND_NODE_IMAGE)"
  kind create cluster --name "$CLUSTER" --image "$KIND_NODE_IMAGE" --wait 180s
fi

# ---- 2. KubeRay ------------------------------------------------------------------------------
log "installing KubeRay $KUBERAY_VERSION"
helm repo add kuberay "$KUBERAY_REPO" --force-update >/dev/null
"${HELM[@]}" upgrade --install kuberay-operator kuberay/kuberay-operator --version "$KUBERAY_VERSION" \
  --namespace kuberay-system --create-namespace --wait --timeout 10m

# ---- 3. images and chart ---------------------------------------------------------------------
log "building images"
docker build --target workloads --build-arg RAY_VARIANT=cpu -t "$WORKLOADS_IMAGE" .
docker build --target operator -t "$OPERATOR_IMAGE" .
log "loading images into kind"
kind load docker-image --name "$CLUSTER" "$WORKLOADS_IMAGE" "$OPERATOR_IMAGE"

"${KUBECTL[@]}" create namespace "$NS" --dry-run=client -o yaml | "${KUBECTL[@]}" apply -f - >/dev/null
if ! "${KUBECTL[@]}" -n "$NS" get secret rlops-s3 >/dev/null 2>&1; then
  # Random local credentials, never printed; MinIO's root user and every S3 client read this Secret.
  "${KUBECTL[@]}" -n "$NS" create secret generic rlops-s3 \
    --from-literal=AWS_ACCESS_KEY_ID="rlops-$(python3 -c 'import secrets; print(secrets.token_hex(4))')" \
    --from-literal=AWS_SECRET_ACCESS_KEY="$(python3 -c 'import secrets; print(secrets.token_hex(24))')" >/dev/null
fi

log "installing the chart: operator and MinIO (the bucket Job runs after install)"
"${HELM[@]}" upgrade --install "$RELEASE" charts/rlops -n "$NS" -f charts/rlops/values-kind.yaml \
  --set training.enabled=false --wait --timeout 10m
log "first training run"
"${HELM[@]}" upgrade "$RELEASE" charts/rlops -n "$NS" -f charts/rlops/values-kind.yaml \
  --set training.runName=kind-1 --wait --timeout 10m

# ---- 4. first training -----------------------------------------------------------------------
wait_rayjob rlops-train-kind-1 1800
FIRST=$(read_pointer "$CHANNEL_POINTER") || die "no channel pointer at $CHANNEL_POINTER"
[[ "$FIRST" == s3://rlops/experiments/kind-1/* ]] || die "pointer names $FIRST, not a kind-1 checkpoint"
log "pointer in MinIO: $FIRST"

# ---- 5. serving from it, linked by a PolicyRollout ---------------------------------------------
log "starting the RayService from $FIRST and the PolicyRollout"
"${HELM[@]}" upgrade "$RELEASE" charts/rlops -n "$NS" -f charts/rlops/values-kind.yaml \
  --set training.runName=kind-1 --set serve.enabled=true --set rollout.enabled=true \
  --set serve.checkpointUri="$FIRST" --wait --timeout 10m
"${KUBECTL[@]}" -n "$NS" wait rayservice/rlops-serve --for=condition=Ready --timeout=20m
wait_for "the operator to report $FIRST live" 600 rollout_live_is "$FIRST"
wait_for "the endpoint to answer from $FIRST" 300 endpoint_serves "$FIRST"
"${HELM[@]}" test "$RELEASE" -n "$NS" --timeout 5m

# ---- 6. second training under load -----------------------------------------------------------
log "starting steady load"
in_cluster_python e2e-load "$(cat tests/k8s/kind_load.py)" \
  --env "ENDPOINT=$SERVE_URL" --env DEADLINE_S=2400 --env AFTER=150
"${KUBECTL[@]}" -n "$NS" wait pod/e2e-load --for=jsonpath='{.status.phase}'=Running --timeout=120s
log "second training run (a new RayJob from the same chart template)"
"${HELM[@]}" template "$RELEASE" charts/rlops -n "$NS" -f charts/rlops/values-kind.yaml \
  --set training.runName=kind-2 --set 'training.extraArgs={--force}' --show-only templates/rayjob.yaml \
  | "${KUBECTL[@]}" create -f -
wait_rayjob rlops-train-kind-2 1800
SECOND=$(read_pointer "$CHANNEL_POINTER")
[[ "$SECOND" == s3://rlops/experiments/kind-2/* ]] || die "pointer names $SECOND, not a kind-2 checkpoint"
log "new pointer: $SECOND"
wait_for "the operator to promote $SECOND" 900 rollout_live_is "$SECOND"
wait_for "the endpoint to answer from $SECOND" 300 endpoint_serves "$SECOND"
"${KUBECTL[@]}" -n "$NS" wait pod/e2e-load --for=jsonpath='{.status.phase}'=Succeeded --timeout=900s \
  || { "${KUBECTL[@]}" -n "$NS" logs e2e-load | tail -20 >&2; die "requests failed during the rollout"; }
RESULT=$("${KUBECTL[@]}" -n "$NS" logs e2e-load | grep '^RESULT ')
log "load during rollout: $RESULT"
[[ "$RESULT" == *'"failed": 0'* && "$RESULT" == *"${SECOND%/}"* ]] || die "rollout under load: $RESULT"
