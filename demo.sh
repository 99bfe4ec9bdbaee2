#!/usr/bin/env bash
# The steerer demo: a simulated cluster with the podinfo setup, a real Prometheus scraping its
# mesh, the steerer server, and two canary releases driven through the CLI — a healthy version
# promoted to GA and a failing one (5xx) rolled back. Ends by itself and leaves no process
# behind, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")"
root=$(pwd)

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

work=$(mktemp -d -t steerer-demo.XXXXXX)
pids=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
# The demo (like the tests) uses Debian's kubectl, from kubernetes-client; another kubectl
# build on the machine is replaced by it.
kubectl version --client 2>/dev/null | grep -q 'GitVersion:"v1.20' || missing+=(kubernetes-client)
if [ ${#missing[@]} -gt 0 ]; then
  say "Installing ${missing[*]} (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq -o Dpkg::Options::=--force-overwrite "${missing[@]}" >/dev/null
fi

say "Building steerer (server, CLI, simulator)"
cargo build --quiet --bins
bin="$root/target/debug"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_line() { # FILE PREFIX: prints the rest of the first line starting with PREFIX
  local file=$1 prefix=$2
  for _ in $(seq 1 200); do
    if line=$(grep -m1 "^$prefix" "$file" 2>/dev/null); then
      echo "${line#"$prefix"}"
      return 0
    fi
    sleep 0.05
  done
  echo "timed out waiting for '$prefix' in $file" >&2
  return 1
}

wait_for_http() { # URL
  for _ in $(seq 1 200); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2
  return 1
}

say "Starting the simulated cluster (with Istio's CRDs)"
"$bin/steerer-sim" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --write-kubeconfig "$work/kubeconfig" --pod-startup 500ms --request-rate 100 \
  --apply artifacts/istio >"$work/sim.out" 2>"$work/sim.log" &
pids+=($!)
metrics_url=$(wait_for_line "$work/sim.out" "metrics: ")
export KUBECONFIG="$work/kubeconfig"
wait_for_line "$work/sim.out" "kubeconfig: " >/dev/null

say "kubectl apply: namespace test, podinfo and podinfo-canary, their Services, an HPA, the VirtualService"
kubectl apply -f ./artifacts/namespace/
kubectl apply -f ./artifacts/workloads/
kubectl -n test rollout status deployment/podinfo --timeout=60s
kubectl -n test rollout status deployment/podinfo-canary --timeout=60s
kubectl -n test get deployments,services,hpa,virtualservices

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
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)
wait_for_http "http://127.0.0.1:$prom_port/-/ready"

say "Starting the steerer server"
grpc_port=$(free_port)
"$bin/steerer-server" --listen "127.0.0.1:$grpc_port" \
  --prometheus-url "http://127.0.0.1:$prom_port" --metrics-window 5s \
  >"$work/server.log" 2>&1 &
pids+=($!)
export STEERER_SERVER="http://127.0.0.1:$grpc_port"
for _ in $(seq 1 100); do
  "$bin/steerer" list >/dev/null 2>&1 && break
  sleep 0.1
done

say "Release 1: podinfo 6.0.1, a healthy canary -> promoted"
set +e
"$bin/steerer" start test/podinfo --image podinfo=ghcr.io/stefanprodan/podinfo:6.0.1 \
  --step-weight 20 --interval 2s --threshold 99 --max-failed-checks 2 --wait
first=$?
set -e

say "Release 2: podinfo 6.0.2, a canary answering 30% 5xx -> rolled back"
# The failing version: the simulator reads this pod-template annotation as the 5xx share.
kubectl -n test patch deployment podinfo-canary --type=merge \
  -p '{"spec":{"template":{"metadata":{"annotations":{"sim.steerer.dev/error-rate":"0.3"}}}}}' >/dev/null
set +e
"$bin/steerer" start test/podinfo --image podinfo=ghcr.io/stefanprodan/podinfo:6.0.2 \
  --step-weight 20 --interval 2s --threshold 99 --max-failed-checks 2 --wait
second=$?
set -e

say "Summary"
"$bin/steerer" list -n test
ga_image=$(kubectl -n test get deployment podinfo -o jsonpath='{.spec.template.spec.containers[0].image}')
echo "GA podinfo now runs: $ga_image"
echo "release 1 (healthy): exit $first (0 = promoted)"
echo "release 2 (5xx):     exit $second (1 = rolled back)"
if [ "$first" -eq 0 ] && [ "$second" -eq 1 ]; then
  echo "demo finished as expected"
else
  echo "demo did not end as expected; logs were in $work" >&2
  exit 1
fi
