#!/usr/bin/env bash
# Starts a real Kubernetes control plane for tests in DIR, all on 127.0.0.1 with free ports:
# etcd, kube-apiserver (TLS, static admin token, RBAC), kube-controller-manager, kube-scheduler,
# and kwok faking 3 Nodes and their Pods (no kubelet, no container runtime).
#
#   tests/cluster/up.sh DIR      build what is missing (build.sh), start, wait until usable
#   tests/cluster/down.sh DIR    stop it all
#
# Writes DIR/kubeconfig (admin token), DIR/env (KUBECONFIG=..., KUBECTL=... lines), DIR/pids
# ("name pid" lines) and DIR/*.log. Ready means: /readyz answers 200, the `default`
# ServiceAccount exists in `default`, the Nodes are Ready and the CRDs in
# artifacts/istio/ and artifacts/gateway-api/ are established.
#
# Pods become Running and Ready as soon as they are bound to a node, except pods annotated
# `sim.steerer.dev/ready: "false"`: those run but stay unready (also when the annotation is
# set on a pod that was Ready; removing it makes the pod Ready). Deleted pods disappear.
# On a failure, names the component, prints the tail of its log, stops everything, exits 1.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
NODES=${STEERER_CLUSTER_NODES:-3}
WAIT_SECS=${STEERER_CLUSTER_WAIT:-90}
# How long a pod takes from being bound to a node to being Ready, in milliseconds.
POD_STARTUP_MS=${STEERER_CLUSTER_POD_STARTUP_MS:-0}
[[ $POD_STARTUP_MS =~ ^[0-9]+$ ]] || { echo "up.sh: STEERER_CLUSTER_POD_STARTUP_MS must be a whole number" >&2; exit 2; }
# Extra kube-apiserver flags, split on spaces (the conformance test turns the watch cache off
# and compacts etcd every few seconds, to see watches from compacted versions answered 410).
read -r -a APISERVER_ARGS <<<"${STEERER_CLUSTER_APISERVER_ARGS:-}"
SERVICE_CIDR=10.96.0.0/16 # only stored in Service objects: nothing routes to it
POD_CIDR=10.0.0.0/16      # kwok writes pod IPs from it: nothing routes to it either
CONTROLLERS=deployment-controller,replicaset-controller,namespace-controller
CONTROLLERS+=,garbage-collector-controller,serviceaccount-controller
CONTROLLERS+=,serviceaccount-token-controller,endpointslice-controller
CONTROLLERS+=,horizontal-pod-autoscaler-controller,disruption-controller
CONTROLLERS+=,root-ca-certificate-publisher-controller

COMPONENT=setup # what is being started or waited for, named on failure
STARTED=()      # "name pid" of what this run started

log() { echo "up.sh: $*" >&2; }

# Prints what failed and the tail of its log, stops what this run started, exits 1.
fail() {
    trap - EXIT INT TERM
    echo "up.sh: error: $COMPONENT failed: $*" >&2
    if [[ -f $DIR/$COMPONENT.log ]]; then
        echo "---- last lines of $DIR/$COMPONENT.log ----" >&2
        tail -n 40 "$DIR/$COMPONENT.log" >&2
        echo "----" >&2
    fi
    stop_started
    exit 1
}

on_exit() { local rc=$?; [[ $rc -eq 0 ]] || fail "exited with status $rc"; }

stop_started() {
    [[ ${#STARTED[@]} -gt 0 ]] || return 0
    "$HERE/down.sh" "$DIR" >&2 || true
}

ensure_tools() {
    command -v python3 >/dev/null || fail "python3 not found on PATH"
    command -v setsid >/dev/null || fail "setsid not found on PATH (package util-linux)"
    if ! command -v openssl >/dev/null; then
        log "installing openssl (apt-get)"
        { apt-get update -qq && apt-get install -y -qq openssl; } >&2 ||
            fail "openssl is missing and apt-get could not install it"
    fi
}

# free_ports N: N distinct free TCP ports on 127.0.0.1.
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

make_certs() {
    local pki=$DIR/pki
    mkdir -p "$pki"
    (
        cd "$pki"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout ca.key -out ca.crt -days 3650 -subj /CN=steerer-test-ca
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver
        printf '%s\n' 'basicConstraints=CA:FALSE' 'keyUsage=digitalSignature,keyEncipherment' \
            'extendedKeyUsage=serverAuth' \
            'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1' \
            >apiserver.ext
        openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
            -days 3650 -extfile apiserver.ext -out apiserver.crt
        openssl genrsa -out sa.key 2048
        openssl rsa -in sa.key -pubout -out sa.pub
    ) >"$DIR/openssl.log" 2>&1 || { COMPONENT=openssl; fail "could not create certificates"; }
}

write_auth() {
    TOKEN=$(openssl rand -hex 24)
    echo "$TOKEN,admin,admin,system:masters" >"$DIR/pki/tokens.csv"
    chmod 600 "$DIR/pki/tokens.csv"
    cat >"$DIR/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: steerer-test
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $DIR/pki/ca.crt
users:
- name: admin
  user:
    token: $TOKEN
contexts:
- name: steerer-test
  context:
    cluster: steerer-test
    user: admin
current-context: steerer-test
EOF
    chmod 600 "$DIR/kubeconfig"
}

# The Stages kwok plays: kwok's own node-initialize, pod-ready, pod-complete and pod-delete,
# pod-ready narrowed to pods not annotated sim.steerer.dev/ready: "false", plus ours in
# stages.yaml for the annotated ones.
write_kwok_config() {
    local s=$KWOK_STAGE_DIR f
    for f in node/fast/node-initialize pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
        [[ -f $s/$f.yaml ]] || fail "kwok stage $s/$f.yaml is missing (rerun build.sh)"
    done
    python3 - "$s/pod/fast/pod-ready.yaml" "$POD_STARTUP_MS" >"$DIR/pod-ready.yaml" <<'PY' || fail "cannot narrow kwok's pod-ready stage"
import sys
text = open(sys.argv[1]).read()
startup_ms = int(sys.argv[2])
if startup_ms > 0:
    if text.count("\n  next:\n") != 1:
        sys.exit("pod-ready.yaml has an unexpected layout: cannot add a delay")
    text = text.replace("\n  next:\n", f"\n  delay:\n    durationMilliseconds: {startup_ms}\n  next:\n")
if text.count("    matchExpressions:\n") != 1:
    sys.exit("pod-ready.yaml has an unexpected layout: cannot narrow its selector")
text = text.replace("    matchExpressions:\n", """    matchExpressions:
    - key: '.metadata.annotations["sim.steerer.dev/ready"]'
      operator: 'NotIn'
      values:
      - 'false'
""")
print(text, end="")
PY
    for f in "$s/node/fast/node-initialize.yaml" "$DIR/pod-ready.yaml" "$s/pod/fast/pod-complete.yaml" \
        "$s/pod/fast/pod-delete.yaml" "$HERE/stages.yaml"; do
        echo ---
        cat "$f"
    done >"$DIR/kwok.yaml" || fail "could not write $DIR/kwok.yaml"
}

# start NAME BINARY ARGS...: runs it detached (own session), logs to DIR/NAME.log, records pid.
start() {
    local name=$1 bin=$2 pid; shift 2
    COMPONENT=$name
    [[ -x $bin ]] || fail "$bin is not an executable (rerun build.sh)"
    setsid "$bin" "$@" </dev/null >"$DIR/$name.log" 2>&1 &
    pid=$!
    STARTED+=("$name $pid")
    echo "$name $pid" >>"$DIR/pids"
}

# Fails if a process this run started has exited.
check_alive() {
    local entry
    for entry in "${STARTED[@]}"; do
        if ! kill -0 "${entry#* }" 2>/dev/null; then
            COMPONENT=${entry% *}
            fail "process ${entry#* } exited"
        fi
    done
}

# wait_for WHAT CMD...: retries CMD (quietly) until it succeeds, or fails after WAIT_SECS.
wait_for() {
    local what=$1 deadline=$((SECONDS + WAIT_SECS)); shift
    until "$@" >/dev/null 2>&1; do
        check_alive
        ((SECONDS < deadline)) || fail "timed out after ${WAIT_SECS}s waiting for $what"
        sleep 0.3
    done
}

k() { "$KUBECTL" --kubeconfig "$DIR/kubeconfig" "$@"; }

etcd_healthy() {
    python3 -c 'import sys, urllib.request
sys.exit(0 if b"true" in urllib.request.urlopen(sys.argv[1], timeout=2).read() else 1)' \
        "http://127.0.0.1:$ETCD_PORT/health"
}

apiserver_ready() { [[ $(k get --raw=/readyz 2>/dev/null) == ok ]]; }

# healthz PORT: https://127.0.0.1:PORT/healthz answers 200 (self-signed serving cert).
healthz() {
    python3 -c 'import ssl, sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2, context=ssl._create_unverified_context())' \
        "https://127.0.0.1:$1/healthz"
}

start_etcd() {
    start etcd "$ETCD_BIN/etcd" \
        --name=steerer-test --data-dir="$DIR/etcd-data" --unsafe-no-fsync \
        --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
        --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster="steerer-test=http://127.0.0.1:$ETCD_PEER_PORT" \
        --log-level=warn
    wait_for "etcd /health" etcd_healthy
}

start_apiserver() {
    local pki=$DIR/pki
    start kube-apiserver "$K8S_BIN/kube-apiserver" \
        --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
        --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
        --cert-dir="$pki" --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
        --client-ca-file="$pki/ca.crt" --token-auth-file="$pki/tokens.csv" \
        --authorization-mode=Node,RBAC --allow-privileged=true \
        --service-account-issuer=https://kubernetes.default.svc \
        --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
        --service-cluster-ip-range="$SERVICE_CIDR" --endpoint-reconciler-type=none \
        --disable-admission-plugins=TaintNodesByCondition --profiling=false \
        ${APISERVER_ARGS[@]+"${APISERVER_ARGS[@]}"}
    wait_for "kube-apiserver /readyz" apiserver_ready
}

start_controllers() {
    local kc=$DIR/kubeconfig
    start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
        --kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
        --authentication-skip-lookup=true --client-ca-file="$DIR/pki/ca.crt" \
        --controllers="$CONTROLLERS" --leader-elect=false --use-service-account-credentials=false \
        --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$DIR/kcm-certs" \
        --service-account-private-key-file="$DIR/pki/sa.key" --root-ca-file="$DIR/pki/ca.crt" \
        --service-cluster-ip-range="$SERVICE_CIDR" --profiling=false
    start kube-scheduler "$K8S_BIN/kube-scheduler" \
        --kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
        --authentication-skip-lookup=true --client-ca-file="$DIR/pki/ca.crt" \
        --leader-elect=false --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" \
        --cert-dir="$DIR/scheduler-certs" --profiling=false
    start kwok "$KWOK_BIN/kwok" \
        --kubeconfig="$kc" --config="$DIR/kwok.yaml" --manage-all-nodes=true \
        --node-ip=127.0.0.1 --cidr="$POD_CIDR"
    COMPONENT=kube-controller-manager
    wait_for "kube-controller-manager /healthz" healthz "$KCM_PORT"
    COMPONENT=kube-scheduler
    wait_for "kube-scheduler /healthz" healthz "$SCHEDULER_PORT"
}

# kwok-style fake Nodes, without the kwok.x-k8s.io/node NoSchedule taint.
create_nodes() {
    local i name
    COMPONENT=nodes
    for ((i = 0; i < NODES; i++)); do
        name=kwok-node-$i
        cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: $name
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
  nodeInfo:
    architecture: amd64
    operatingSystem: linux
    kubeletVersion: fake
    kubeProxyVersion: fake
EOF
    done >"$DIR/nodes.yaml"
    k apply -f "$DIR/nodes.yaml" >"$DIR/nodes.log" 2>&1 || fail "kubectl apply -f $DIR/nodes.yaml"
}

# NODES nodes are Ready and untainted. (Without TaintNodesByCondition, which would taint them
# node.kubernetes.io/not-ready until the node-lifecycle controller, not run here, lifted it.)
nodes_ready() {
    local ready
    ready=$(k get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}/{.spec.taints}{"\n"}{end}')
    [[ $(grep -c '^True/$' <<<"$ready") -ge $NODES ]]
}

apply_istio_crds() {
    local crds
    COMPONENT=istio-crds
    : >"$DIR/istio-crds.log"
    # Istio's CRDs and the Gateway API's, as a cluster with a mesh has them.
    for crds in "$REPO/artifacts/istio/" "$REPO/artifacts/gateway-api/"; do
        k apply -f "$crds" >>"$DIR/istio-crds.log" 2>&1 ||
            fail "the API server rejected a CRD in $crds"
        k wait --for=condition=Established --timeout="${WAIT_SECS}s" \
            -f "$crds" >>"$DIR/istio-crds.log" 2>&1 ||
            fail "the CRDs of $crds did not become Established"
    done
}

write_env() {
    cat >"$DIR/env" <<EOF
KUBECONFIG=$DIR/kubeconfig
KUBECTL=$K8S_BIN/kubectl
EOF
}

# Refuses a DIR whose cluster still runs; clears what a previous run left.
prepare_dir() {
    [[ $# -eq 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
    [[ $1 != *[[:space:]]* ]] || { echo "up.sh: error: DIR must not contain spaces" >&2; exit 2; }
    mkdir -p "$1"
    DIR=$(cd "$1" && pwd)
    if [[ -s $DIR/pids ]]; then
        local name pid
        while read -r name pid; do
            if kill -0 "$pid" 2>/dev/null; then
                echo "up.sh: error: $name ($pid) from an earlier up.sh still runs: run $HERE/down.sh $DIR" >&2
                exit 1
            fi
        done <"$DIR/pids"
    fi
    rm -rf "$DIR/pids" "$DIR/env" "$DIR/kubeconfig" "$DIR/etcd-data" "$DIR/pki" "$DIR/kcm-certs" "$DIR/scheduler-certs" "$DIR"/*.log
}

main() {
    prepare_dir "$@"
    local start=$SECONDS
    trap on_exit EXIT
    trap 'fail "interrupted"' INT TERM
    ensure_tools
    COMPONENT=build
    local vars
    vars=$("$HERE/build.sh") || fail "build.sh failed"
    eval "$vars"
    KUBECTL=$K8S_BIN/kubectl
    read -r ETCD_PORT ETCD_PEER_PORT APISERVER_PORT KCM_PORT SCHEDULER_PORT <<<"$(free_ports 5)"
    COMPONENT=setup
    make_certs
    write_auth
    write_kwok_config
    start_etcd
    start_apiserver
    start_controllers
    create_nodes
    COMPONENT=kube-controller-manager
    wait_for "the default ServiceAccount" k -n default get serviceaccount default
    COMPONENT=kwok
    wait_for "$NODES Ready nodes" nodes_ready
    apply_istio_crds
    check_alive
    write_env
    trap - EXIT INT TERM
    log "cluster up in $((SECONDS - start))s: https://127.0.0.1:$APISERVER_PORT"
    log "use: set -a; . $DIR/env; set +a; \$KUBECTL get nodes    stop: $HERE/down.sh $DIR"
}

main "$@"
