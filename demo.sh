#!/usr/bin/env bash
# The steerer demo: a simulated cluster with the two example targets of artifacts/workloads/
# (podinfo, routed by an Istio VirtualService, and backend, routed by a Gateway API HTTPRoute),
# a real Prometheus scraping its mesh, the steerer server, and two canary releases driven
# through the CLI — a healthy podinfo promoted to GA through its VirtualService, and a failing
# backend (5xx) rolled back through its HTTPRoute. Ends by itself and leaves no process
# behind, also on Ctrl-C. Stops at the first thing that goes wrong, saying what in one line
# (with the end of the log of a component that did not start) and keeping the logs.
#
# Works as the first command on a fresh clone: it builds the workspace's binaries and takes
# kubectl, Prometheus and grpcurl from the project's tool cache (tests/tools.sh), installing
# nothing over the machine's own programs.
#
#   ./demo.sh          on the simulated cluster (sim/)
#   ./demo.sh --real   on a real control plane (tests/cluster/up.sh: kube-apiserver, etcd,
#                      controller-manager, scheduler, kwok), with the simulator's mesh alone
#                      against it; the first run builds the control plane (about 13 minutes)
set -euo pipefail
cd "$(dirname "$0")"
root=$(pwd)

real=""
case "${1:-}" in
  --real) real=1 ;;
  "") ;;
  *)
    echo "usage: $0 [--real]" >&2
    exit 2
    ;;
esac

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

work=$(mktemp -d -t steerer-demo.XXXXXX)
pids=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$real" ] && [ -f "$work/cluster/pids" ]; then
    tests/cluster/down.sh "$work/cluster" >/dev/null 2>&1 || true
  fi
  if [ "$status" -ne 0 ]; then
    echo "demo: logs kept in $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# fail MESSAGE [LOG]: one line saying what went wrong, then the end of LOG, then exit 1.
fail() {
  printf '\ndemo FAILED: %s\n' "$1" >&2
  if [ -n "${2:-}" ] && [ -s "$2" ]; then
    echo "--- last lines of $2:" >&2
    tail -n 25 "$2" >&2
  fi
  exit 1
}

# alive PID NAME LOG: fails the demo if the component NAME has exited.
alive() {
  kill -0 "$1" 2>/dev/null || fail "$2 exited unexpectedly" "$3"
}

say "Getting kubectl, Prometheus and grpcurl into the project's tool cache"
# shellcheck source=tests/tools.sh
source tests/tools.sh
steerer_tools || fail "could not set up the tools (see the lines above)"
kubectl() { "$KUBECTL" "$@"; }

say "Building steerer (server, CLI, simulator); the first build takes a few minutes"
cargo build --workspace --bins || fail "cargo build --workspace --bins failed"
bin="$root/target/debug"
for exe in steerer-sim steerer-server steerer; do
  [ -x "$bin/$exe" ] || fail "the build did not produce $bin/$exe"
done

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for_line FILE PREFIX PID NAME LOG: prints the rest of the first line of FILE starting
# with PREFIX, failing the demo if NAME (PID) exits or 10 s pass first.
wait_for_line() {
  local file=$1 prefix=$2 pid=$3 name=$4 log=$5 line
  for _ in $(seq 1 200); do
    if line=$(grep -m1 "^$prefix" "$file" 2>/dev/null); then
      echo "${line#"$prefix"}"
      return 0
    fi
    alive "$pid" "$name" "$log"
    sleep 0.05
  done
  fail "$name did not print '$prefix' within 10 s" "$log"
}

# wait_for_http URL PID NAME LOG
wait_for_http() {
  local url=$1 pid=$2 name=$3 log=$4
  for _ in $(seq 1 200); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$url" 2>/dev/null; then
      return 0
    fi
    alive "$pid" "$name" "$log"
    sleep 0.1
  done
  fail "$name did not answer $url within 20 s" "$log"
}

if [ -n "$real" ]; then
  say "Starting a real control plane (kube-apiserver, etcd, controller-manager, scheduler, kwok)"
  tests/cluster/up.sh "$work/cluster" || fail "tests/cluster/up.sh could not start the control plane"
  # shellcheck disable=SC1091
  . "$work/cluster/env"
  export KUBECONFIG KUBECTL
  say "Starting the simulator's mesh against it"
  "$bin/steerer-sim" mesh --kubeconfig "$KUBECONFIG" --metrics-listen 127.0.0.1:0 \
    --request-rate 100 >"$work/mesh.out" 2>"$work/mesh.log" &
  mesh_pid=$!
  pids+=("$mesh_pid")
  metrics_url=$(wait_for_line "$work/mesh.out" "metrics: " "$mesh_pid" "the mesh" "$work/mesh.log")
  cluster_log="$work/cluster/kube-apiserver.log"
else
  say "Starting the simulated cluster (with Istio's and the Gateway API's CRDs)"
  cluster_log="$work/sim.log"
  "$bin/steerer-sim" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
    --write-kubeconfig "$work/kubeconfig" --pod-startup 500ms --request-rate 100 \
    --apply artifacts/istio --apply artifacts/gateway-api >"$work/sim.out" 2>"$cluster_log" &
  sim_pid=$!
  pids+=("$sim_pid")
  metrics_url=$(wait_for_line "$work/sim.out" "metrics: " "$sim_pid" "the simulator" "$cluster_log")
  wait_for_line "$work/sim.out" "kubeconfig: " "$sim_pid" "the simulator" "$cluster_log" >/dev/null
  export KUBECONFIG="$work/kubeconfig"
fi

say "kubectl apply: steerer's Rollout CRD (rollouts.steerer.dev), where the server keeps its records"
kubectl apply -f ./artifacts/steerer/05-rollouts-crd.yaml ||
  fail "kubectl apply -f artifacts/steerer/05-rollouts-crd.yaml failed" "$cluster_log"
kubectl wait --for=condition=Established --timeout=30s crd/rollouts.steerer.dev ||
  fail "the Rollout CRD was not established" "$cluster_log"

say "kubectl apply: namespace test; podinfo and podinfo-canary, their Services, an HPA, a VirtualService"
kubectl apply -f ./artifacts/namespace/ || fail "kubectl apply -f artifacts/namespace/ failed" "$cluster_log"
kubectl apply -f ./artifacts/workloads/ || fail "kubectl apply -f artifacts/workloads/ failed" "$cluster_log"
say "kubectl apply: backend and backend-canary, their Services, an HTTPRoute (Gateway API)"
kubectl apply -f ./artifacts/workloads/gateway-api/ ||
  fail "kubectl apply -f artifacts/workloads/gateway-api/ failed" "$cluster_log"
for deployment in podinfo podinfo-canary backend backend-canary; do
  kubectl -n test rollout status "deployment/$deployment" --timeout=60s ||
    fail "deployment $deployment did not become ready" "$cluster_log"
done
kubectl -n test get deployments,services,hpa,virtualservices,httproutes

say "Starting Prometheus (1 s scrape of the mesh's Istio metrics)"
prom_port=$(free_port)
metrics_hostport=${metrics_url#http://}
metrics_hostport=${metrics_hostport%%/*}
cat >"$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: istio-mesh
    static_configs:
      - targets: ["$metrics_hostport"]
YAML
"$PROMETHEUS_BIN" --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
prom_pid=$!
pids+=("$prom_pid")
wait_for_http "http://127.0.0.1:$prom_port/-/ready" "$prom_pid" "Prometheus" "$work/prometheus.log"

say "Starting the steerer server"
grpc_port=$(free_port)
"$bin/steerer-server" --listen "127.0.0.1:$grpc_port" \
  --prometheus-url "http://127.0.0.1:$prom_port" --metrics-window 5s --scale-down-delay 3s \
  >"$work/server.log" 2>&1 &
server_pid=$!
pids+=("$server_pid")
export STEERER_SERVER="http://127.0.0.1:$grpc_port"
reachable=""
for _ in $(seq 1 100); do
  alive "$server_pid" "the steerer server" "$work/server.log"
  if "$bin/steerer" list >/dev/null 2>&1; then
    reachable=1
    break
  fi
  sleep 0.1
done
[ -n "$reachable" ] || fail "the steerer server did not answer on $STEERER_SERVER within 10 s" "$work/server.log"

# release NAME TARGET IMAGE EXPECTED: a release of TARGET (its container of the same name)
# through the CLI, which must exit EXPECTED. The start names no route: steerer finds the one
# sending traffic to TARGET and TARGET-canary, and its first line says which.
release() {
  local name=$1 target=$2 image=$3 expected=$4 status=0
  "$bin/steerer" start "test/$target" --image "$target=$image" \
    --step-weight 20 --interval 2s --threshold 99 --max-failed-checks 2 --wait || status=$?
  alive "$server_pid" "the steerer server" "$work/server.log"
  if [ "$status" -ne "$expected" ]; then
    fail "$name: steerer exited $status, expected $expected" "$work/server.log"
  fi
}

say "Release 1: podinfo 6.0.1 through its Istio VirtualService, a healthy canary -> promoted"
release "release 1 (podinfo, healthy)" podinfo ghcr.io/stefanprodan/podinfo:6.0.1 0

say "Release 2: backend 6.0.2 through its Gateway API HTTPRoute, a canary answering 30% 5xx -> rolled back"
# The failing version: the simulator reads this pod-template annotation as the 5xx share.
kubectl -n test patch deployment backend-canary --type=merge \
  -p '{"spec":{"template":{"metadata":{"annotations":{"sim.steerer.dev/error-rate":"0.3"}}}}}' >/dev/null ||
  fail "kubectl patch of backend-canary failed" "$cluster_log"
release "release 2 (backend, 5xx)" backend ghcr.io/stefanprodan/podinfo:6.0.2 1

say "Summary"
"$bin/steerer" list -n test
# expect_ga TARGET IMAGE: GA of TARGET runs IMAGE.
expect_ga() {
  local image
  image=$(kubectl -n test get deployment "$1" -o jsonpath='{.spec.template.spec.containers[0].image}')
  echo "GA $1 now runs: $image"
  [ "$image" = "$2" ] || fail "GA $1 runs $image, expected $2"
}
expect_ga podinfo ghcr.io/stefanprodan/podinfo:6.0.1
expect_ga backend ghcr.io/stefanprodan/podinfo:6.0.0
weights=$(kubectl -n test get httproute backend -o jsonpath='{.spec.rules[1].backendRefs[*].weight}')
echo "HTTPRoute backend's split (backend, backend-canary): $weights"
[ "$weights" = "100 0" ] || fail "the HTTPRoute backend splits $weights, expected all on GA (100 0)"
echo "release 1 (podinfo via virtualservice/podinfo, healthy): promoted (exit 0)"
echo "release 2 (backend via httproute/backend, 5xx):          rolled back (exit 1)"
echo "demo finished as expected"
