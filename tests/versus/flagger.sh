#!/usr/bin/env bash
# steerer and Flagger measured side by side on the same real control plane (issue #15).
#
#   tests/versus/flagger.sh --canaries N[,N...] --out DIR
#
# Builds Flagger from its published Go module (tests/versus/build-flagger.sh, cached under
# $STEERER_CACHE/flagger, never in the repository), brings up the real control plane
# (tests/cluster/up.sh, with kube-apiserver's audit log on), the simulator's mesh and
# Prometheus (with its query log) once, then for each N runs the same scenario with each
# controller in turn, steerer first, on N targets in namespaces of their own:
#
#   1. a healthy new version of every target (podinfo:6.0.1): expected promoted;
#   2. a failing one (podinfo:6.0.2 answering 30% 5xx): expected rolled back.
#
# steerer gets StartRollout calls (its CLI); Flagger gets a Canary per target and the
# Deployment changes it watches for. The analysis settings are equal (the VERSUS_* variables
# below). Each controller runs under its own ServiceAccount, so the audit log tells them
# apart. The figures come from sources neither controller controls: kube-apiserver's audit
# log (API requests), Prometheus's query log (queries), /proc (CPU seconds, peak RSS),
# Prometheus's scrapes of the mesh (the canary's first 5xx) and a watch on the
# VirtualServices (when the weights changed). Counts and CPU cover the two releases, from the
# first trigger to the controller's stop (not its start-up, nor Flagger's one-time
# initialisation of its Canaries); results.json has whole-lifetime figures under "lifetime".
# Writes DIR/results.json, DIR/results.md and DIR/results.png; the raw material (audit log,
# query log, observed weights, every component's log) stays in DIR/run.
#
# Environment: STEERER_VERSUS_BIN (directory with steerer-server, steerer and steerer-sim;
# default the repository's target/release, brought up to date there with cargo), FLAGGER_VERSION
# (default v1.44.0), VERSUS_REQUEST_RATE (mesh requests/s per VirtualService host, default 20),
# VERSUS_INTERVAL (10s), VERSUS_METRIC_WINDOW (10s), VERSUS_STEP_WEIGHT (20),
# VERSUS_MAX_WEIGHT (100), VERSUS_THRESHOLD (99), VERSUS_MAX_FAILED_CHECKS (2),
# VERSUS_RELEASE_TIMEOUT (seconds each release may take for all N targets, default 900).
#
# Stops every process it started on exit, also on failure or Ctrl-C; on a failure it says
# in one line what failed, followed by the end of the log concerned.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

# Flagger runs a Canary's analysis at most every 10 s (a shorter spec.analysis.interval is
# raised to 10 s), so 10 s is the shortest interval both can be given; the metric window
# equals it, as in Flagger's documented examples.
INTERVAL=${VERSUS_INTERVAL:-10s}
METRIC_WINDOW=${VERSUS_METRIC_WINDOW:-10s}
STEP_WEIGHT=${VERSUS_STEP_WEIGHT:-20}
MAX_WEIGHT=${VERSUS_MAX_WEIGHT:-100}
THRESHOLD=${VERSUS_THRESHOLD:-99}
MAX_FAILED_CHECKS=${VERSUS_MAX_FAILED_CHECKS:-2}
REQUEST_RATE=${VERSUS_REQUEST_RATE:-20}
RELEASE_TIMEOUT=${VERSUS_RELEASE_TIMEOUT:-900}
PROGRESS_DEADLINE=600 # seconds, both (Flagger's default; steerer's is 10m too)
SCRAPE_INTERVAL=1s
IMAGE_HEALTHY=ghcr.io/stefanprodan/podinfo:6.0.1
IMAGE_FAILING=ghcr.io/stefanprodan/podinfo:6.0.2

usage() {
    echo "usage: $0 --canaries N[,N...] --out DIR" >&2
    exit 2
}

COUNTS="" OUT=""
while [[ $# -gt 0 ]]; do
    case $1 in
    --canaries) COUNTS=${2:-}; shift 2 || usage ;;
    --out) OUT=${2:-}; shift 2 || usage ;;
    -h | --help) sed -n '2,35p' "$0"; exit 0 ;;
    *) usage ;;
    esac
done
[[ -n $COUNTS && -n $OUT ]] || usage
[[ $COUNTS =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || { echo "flagger.sh: --canaries takes numbers, e.g. 10,50,100" >&2; exit 2; }
[[ $OUT != *[[:space:]]* ]] || { echo "flagger.sh: DIR must not contain spaces" >&2; exit 2; }
[[ $INTERVAL =~ ^[0-9]+s$ && $METRIC_WINDOW =~ ^[0-9]+s$ ]] || { echo "flagger.sh: VERSUS_INTERVAL and VERSUS_METRIC_WINDOW are whole seconds, e.g. 10s" >&2; exit 2; }
IFS=, read -r -a NS_LIST <<<"$COUNTS"
MAX_N=0
for n in "${NS_LIST[@]}"; do if ((n > MAX_N)); then MAX_N=$n; fi; done

mkdir -p "$OUT"
DIR=$(cd "$OUT" && pwd)
RUN=$DIR/run
CLUSTER=$RUN/cluster
MARKS=$RUN/marks.jsonl
TRIGGERS=$RUN/triggers.jsonl

PIDS=()         # "name pid" of what this script started, stopped in reverse order
CHILD=""        # the step running now (see run), stopped first
WHAT="setup"    # what is being done, named on failure
WHAT_LOG=""     # the log to show on failure

log() { printf '%s flagger.sh: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

stop_pid() { # NAME PID: TERM, KILL after 30 s
    local name=$1 pid=$2 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    log "$name ($pid) still runs 30 s after TERM: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

forget_pid() { # PID: no longer ours to stop
    local keep=() e
    for e in "${PIDS[@]}"; do [[ ${e#* } == "$1" ]] || keep+=("$e"); done
    PIDS=(${keep[@]+"${keep[@]}"})
}

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    if [[ $rc -ne 0 ]]; then
        echo "flagger.sh: FAILED: $WHAT" >&2
        if [[ -n $WHAT_LOG && -s $WHAT_LOG ]]; then
            echo "---- last lines of $WHAT_LOG ----" >&2
            tail -n 25 "$WHAT_LOG" >&2
            echo "----" >&2
        fi
    fi
    [[ -z $CHILD ]] || stop_pid step "$CHILD"
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[i]% *}" "${PIDS[i]#* }"
    done
    if [[ -f $CLUSTER/pids ]]; then
        "$REPO/tests/cluster/down.sh" "$CLUSTER" >/dev/null 2>&1 || true
    fi
    [[ $rc -eq 0 ]] || echo "flagger.sh: logs kept in $RUN" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'WHAT="$WHAT (interrupted)"; exit 130' INT TERM

fail() { WHAT=$1; WHAT_LOG=${2:-$WHAT_LOG}; exit 1; }

# start NAME LOG CMD...: runs CMD in the background, logging to LOG; sets STARTED_PID.
start() {
    local name=$1 logf=$2; shift 2
    "$@" </dev/null >"$logf" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$name $STARTED_PID")
}

alive() { kill -0 "$2" 2>/dev/null || fail "$1 exited" "$3"; }

# wait_line FILE PREFIX NAME PID: prints the rest of the first line starting with PREFIX.
wait_line() {
    local file=$1 prefix=$2 name=$3 pid=$4 line i
    for ((i = 0; i < 600; i++)); do
        if line=$(grep -m1 "^$prefix" "$file" 2>/dev/null); then
            echo "${line#"$prefix"}"
            return 0
        fi
        alive "$name" "$pid" "$file"
        sleep 0.1
    done
    fail "$name did not print '$prefix' within 60 s" "$file"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# run CMD...: runs a step in the background and waits for it, so that TERM or Ctrl-C stops the
# script at once (bash runs traps only between commands) and cleanup stops the step too.
run() {
    local rc=0
    "$@" &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=""
    return "$rc"
}

py() { run "$PYTHON" "$HERE/versus.py" "$@"; }
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG" "$@"; }
mark() { py mark --file "$MARKS" "$@"; }

# ---------------------------------------------------------------- tools and binaries

prepare_tools() {
    WHAT="setting up the tools (tests/tools.sh)"
    # shellcheck source=../tools.sh
    source "$REPO/tests/tools.sh"
    steerer_tools >&2 || fail "$WHAT"
    PYTHON=$STEERER_PYTHON
    if ! "$PYTHON" -c 'import matplotlib' 2>/dev/null; then
        WHAT="installing matplotlib (PyPI) into $STEERER_CACHE/tools/venv"
        log "$WHAT"
        "$PYTHON" -m pip install -q --disable-pip-version-check matplotlib >&2 || fail "$WHAT"
    fi

    BIN=${STEERER_VERSUS_BIN:-$REPO/target/release}
    if [[ -z ${STEERER_VERSUS_BIN:-} ]]; then
        # Always through cargo, which rebuilds only what changed: binaries left from an older
        # checkout are never measured.
        WHAT="cargo build --release -p steerer-server -p steerer-client -p steerer-sim"
        log "building steerer (release) into $BIN"
        (cd "$REPO" && run cargo build --release -p steerer-server -p steerer-client -p steerer-sim) >&2 || fail "$WHAT"
    fi
    local exe
    for exe in steerer-server steerer steerer-sim; do
        [[ -x $BIN/$exe ]] || fail "no $BIN/$exe (set STEERER_VERSUS_BIN to a directory with steerer-server, steerer and steerer-sim)"
    done

    WHAT="building Flagger (tests/versus/build-flagger.sh)"
    local vars
    run "$HERE/build-flagger.sh" >"$RUN/flagger-build.vars" || fail "$WHAT"
    vars=$(cat "$RUN/flagger-build.vars")
    eval "$vars"
}

# ---------------------------------------------------------------- cluster, mesh, Prometheus

start_cluster() {
    WHAT="starting the control plane (tests/cluster/up.sh $CLUSTER)"
    cat >"$RUN/audit-policy.yaml" <<'EOF'
# Only the controllers' ServiceAccounts (namespace versus) are logged, at Metadata level.
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts:versus"]
  - level: None
EOF
    local nodes=$((3 + MAX_N / 20))
    log "starting the control plane ($nodes nodes), kube-apiserver with an audit log"
    STEERER_CLUSTER_NODES=$nodes \
        STEERER_CLUSTER_APISERVER_ARGS="--audit-policy-file=$RUN/audit-policy.yaml --audit-log-path=$RUN/audit.log --audit-log-format=json --audit-log-maxsize=0" \
        run "$REPO/tests/cluster/up.sh" "$CLUSTER" >"$RUN/up.log" 2>&1 || fail "$WHAT" "$RUN/up.log"
    # shellcheck disable=SC1091
    . "$CLUSTER/env"
    export KUBECONFIG KUBECTL
    WHAT="setting up the cluster for the comparison"
    WHAT_LOG=$RUN/setup.log
    {
        k create namespace versus
        k apply -f "$FLAGGER_CRDS"
        k wait --for=condition=Established --timeout=60s crd/canaries.flagger.app crd/metrictemplates.flagger.app crd/alertproviders.flagger.app
    } >>"$RUN/setup.log" 2>&1 || fail "$WHAT: applying Flagger's CRDs ($FLAGGER_CRDS)"
    {
        k apply -f "$REPO/artifacts/steerer/05-rollouts-crd.yaml"
        k wait --for=condition=Established --timeout=60s crd/rollouts.steerer.dev
    } >>"$RUN/setup.log" 2>&1 || fail "$WHAT: applying steerer's rollout records CRD" "$RUN/setup.log"
}

start_mesh_and_prometheus() {
    WHAT="starting the mesh (steerer-sim mesh)"
    start mesh "$RUN/mesh.log" "$BIN/steerer-sim" mesh --kubeconfig "$KUBECONFIG" \
        --metrics-listen 127.0.0.1:0 --request-rate "$REQUEST_RATE"
    MESH_PID=$STARTED_PID
    local metrics_url
    metrics_url=$(wait_line "$RUN/mesh.log" "metrics: " "the mesh" "$MESH_PID")
    local hostport=${metrics_url#http://}
    hostport=${hostport%%/*}

    WHAT="starting Prometheus"
    PROM_PORT=$(free_port)
    PROM=http://127.0.0.1:$PROM_PORT
    cat >"$RUN/prometheus.yml" <<EOF
global:
  scrape_interval: $SCRAPE_INTERVAL
  evaluation_interval: 15s
  # Every PromQL query evaluated through the API, one JSON line each, with its time.
  query_log_file: $RUN/prometheus-queries.log
scrape_configs:
  - job_name: istio-mesh
    static_configs:
      - targets: ["$hostport"]
    metric_relabel_configs:
      # Only the request counts: both controllers' success-rate queries read nothing else.
      - source_labels: [__name__]
        regex: istio_requests_total
        action: keep
EOF
    start prometheus "$RUN/prometheus.log" "$PROMETHEUS_BIN" --config.file="$RUN/prometheus.yml" \
        --storage.tsdb.path="$RUN/tsdb" --web.listen-address="127.0.0.1:$PROM_PORT"
    PROM_PID=$STARTED_PID
    local i
    for ((i = 0; i < 300; i++)); do
        python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$PROM/-/ready" 2>/dev/null && break
        alive Prometheus "$PROM_PID" "$RUN/prometheus.log"
        sleep 0.1
    done
    ((i < 300)) || fail "Prometheus did not become ready within 30 s" "$RUN/prometheus.log"

    WHAT="starting the VirtualService observer"
    start observer "$RUN/observer.log" "$PYTHON" -u "$HERE/versus.py" observe --kubeconfig "$KUBECONFIG" \
        --out "$RUN/observed.jsonl" --canaries
    OBSERVER_PID=$STARTED_PID
    wait_line "$RUN/observer.log" "observing" "the observer" "$OBSERVER_PID" >/dev/null
}

# identity NAME: a ServiceAccount versus/NAME bound to cluster-admin and a kubeconfig with its
# token in $RUN/NAME.kubeconfig; the audit log names it system:serviceaccount:versus:NAME.
identity() {
    local name=$1 token server ca
    WHAT="creating the identity versus/$name"
    {
        k -n versus create serviceaccount "$name"
        k create clusterrolebinding "versus-$name" --clusterrole=cluster-admin --serviceaccount="versus:$name"
    } >>"$RUN/setup.log" 2>&1 || fail "$WHAT" "$RUN/setup.log"
    token=$(k -n versus create token "$name" --duration=12h 2>>"$RUN/setup.log") || fail "$WHAT (kubectl create token)" "$RUN/setup.log"
    server=$(sed -n 's/^ *server: //p' "$KUBECONFIG")
    ca=$(sed -n 's/^ *certificate-authority: //p' "$KUBECONFIG")
    umask 077
    cat >"$RUN/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: versus
  cluster:
    server: $server
    certificate-authority: $ca
users:
- name: $name
  user:
    token: $token
contexts:
- name: versus
  context:
    cluster: versus
    user: $name
current-context: versus
EOF
    umask 022
}

# drop_run RUN: deletes the namespaces of a run and waits until they are gone, so the next
# controller starts on a cluster as empty as the first one did.
drop_run() {
    local run=$1 i left
    WHAT="deleting the namespaces of $run"
    k delete namespace -l "versus.steerer.dev/run=$run" --wait=false >>"$RUN/setup.log" 2>&1 || fail "$WHAT" "$RUN/setup.log"
    for ((i = 0; i < 600; i++)); do
        left=$(k get namespace -l "versus.steerer.dev/run=$run" -o name 2>>"$RUN/setup.log" | wc -l)
        [[ $left -eq 0 ]] && return 0
        sleep 1
    done
    fail "$WHAT: $left still there after 10 minutes" "$RUN/setup.log"
}

# ---------------------------------------------------------------- steerer

run_steerer() {
    local n=$1 run=steerer-$1 port server pid cli
    log "steerer, N=$n: creating $n targets (GA, canary at 0, Services, VirtualService)"
    WHAT="applying the steerer targets for N=$n"
    WHAT_LOG=$RUN/setup.log
    py manifests --kind steerer --run "$run" --count "$n" >"$RUN/$run.yaml"
    k apply -f "$RUN/$run.yaml" >>"$RUN/setup.log" 2>&1 || fail "$WHAT"
    WHAT="waiting for the steerer targets of N=$n to be available"
    py wait-deployments --kubeconfig "$KUBECONFIG" --run "$run" --expect $((2 * n)) --timeout 600 || fail "$WHAT"
    WHAT="waiting for Prometheus to have request series of every GA of N=$n"
    py wait-series --prometheus "$PROM" --run "$run" --workload podinfo --count "$n" --timeout 180 || fail "$WHAT"
    identity "$run"

    WHAT="starting steerer-server (N=$n)"
    port=$(free_port)
    server=http://127.0.0.1:$port
    cli="$BIN/steerer"
    start steerer-server "$RUN/$run.log" env KUBECONFIG="$RUN/$run.kubeconfig" \
        "$BIN/steerer-server" --listen "127.0.0.1:$port" --prometheus-url "$PROM" \
        --interval "$INTERVAL" --step-weight "$STEP_WEIGHT" --max-weight "$MAX_WEIGHT" \
        --success-rate-threshold "$THRESHOLD" --max-failed-checks "$MAX_FAILED_CHECKS" \
        --progress-deadline "${PROGRESS_DEADLINE}s" --metrics-window "$METRIC_WINDOW" \
        --scale-down-delay 0s
    pid=$STARTED_PID
    mark --controller steerer --n "$n" --event start --pid "$pid"
    WHAT_LOG=$RUN/$run.log
    local i
    for ((i = 0; i < 300; i++)); do
        "$cli" --server "$server" list >/dev/null 2>&1 && break
        alive steerer-server "$pid" "$RUN/$run.log"
        sleep 0.1
    done
    ((i < 300)) || fail "steerer-server did not answer on $server within 30 s"

    local flags=(--step-weight "$STEP_WEIGHT" --max-weight "$MAX_WEIGHT" --interval "$INTERVAL"
        --threshold "$THRESHOLD" --max-failed-checks "$MAX_FAILED_CHECKS"
        --progress-deadline "${PROGRESS_DEADLINE}s")
    log "steerer, N=$n: release 1 (healthy $IMAGE_HEALTHY) on every target"
    mark --controller steerer --n "$n" --event healthy --pid "$pid"
    WHAT="steerer, N=$n: starting the healthy release"
    py steerer-start --cli "$cli" --server "$server" --run "$run" --count "$n" --image "$IMAGE_HEALTHY" \
        --release healthy --log "$TRIGGERS" -- "${flags[@]}" || fail "$WHAT"
    WHAT="steerer, N=$n: waiting for the healthy release to end on every target"
    py wait-steerer --cli "$cli" --server "$server" --run "$run" --count "$n" --release healthy \
        --out "$RUN/$run-healthy.json" --timeout "$RELEASE_TIMEOUT" --pid "$pid" || fail "$WHAT"
    alive steerer-server "$pid" "$RUN/$run.log"
    py verify --kubeconfig "$KUBECONFIG" --run "$run" --count "$n" --ga podinfo --image "$IMAGE_HEALTHY" >"$RUN/$run-healthy-verify.json"

    log "steerer, N=$n: release 2 (failing $IMAGE_FAILING, 30% 5xx) on every target"
    WHAT="steerer, N=$n: marking the next canary revision as failing"
    py patch --kubeconfig "$KUBECONFIG" --run "$run" --count "$n" --deployment podinfo-canary --error-rate 0.3 || fail "$WHAT"
    mark --controller steerer --n "$n" --event failing --pid "$pid"
    WHAT="steerer, N=$n: starting the failing release"
    py steerer-start --cli "$cli" --server "$server" --run "$run" --count "$n" --image "$IMAGE_FAILING" \
        --release failing --log "$TRIGGERS" -- "${flags[@]}" || fail "$WHAT"
    WHAT="steerer, N=$n: waiting for the failing release to end on every target"
    py wait-steerer --cli "$cli" --server "$server" --run "$run" --count "$n" --release failing \
        --out "$RUN/$run-failing.json" --timeout "$RELEASE_TIMEOUT" --pid "$pid" || fail "$WHAT"
    alive steerer-server "$pid" "$RUN/$run.log"
    py verify --kubeconfig "$KUBECONFIG" --run "$run" --count "$n" --ga podinfo --image "$IMAGE_HEALTHY" >"$RUN/$run-failing-verify.json"
    alive "the VirtualService observer" "$OBSERVER_PID" "$RUN/observer.log"
    mark --controller steerer --n "$n" --event end --pid "$pid" --outcomes "$RUN/$run-healthy.json" "$RUN/$run-failing.json"

    stop_pid steerer-server "$pid"
    forget_pid "$pid"
    drop_run "$run"
}

# ---------------------------------------------------------------- Flagger

run_flagger() {
    local n=$1 run=flagger-$1 pid t
    log "flagger, N=$n: creating $n target Deployments"
    WHAT="applying the Flagger targets for N=$n"
    WHAT_LOG=$RUN/setup.log
    py manifests --kind flagger --run "$run" --count "$n" >"$RUN/$run.yaml"
    k apply -f "$RUN/$run.yaml" >>"$RUN/setup.log" 2>&1 || fail "$WHAT"
    WHAT="waiting for the Flagger targets of N=$n to be available"
    py wait-deployments --kubeconfig "$KUBECONFIG" --run "$run" --expect "$n" --timeout 600 || fail "$WHAT"
    identity "$run"

    WHAT="starting Flagger (N=$n)"
    # Flagger's flags as its own deployment manifest sets them (-log-level=info), plus where
    # the cluster and Prometheus are. -port=0: its health/metrics server binds ":PORT" (all
    # interfaces, no flag for the address), so give it a throwaway port.
    start flagger "$RUN/$run.log" env -u KUBECONFIG "$FLAGGER_BIN" -kubeconfig "$RUN/$run.kubeconfig" \
        -mesh-provider istio -metrics-server "$PROM" -log-level info -port 0
    pid=$STARTED_PID
    mark --controller flagger --n "$n" --event start --pid "$pid"
    WHAT_LOG=$RUN/$run.log

    log "flagger, N=$n: creating $n Canaries; Flagger initialises them (primary, Services, VirtualService)"
    WHAT="applying the Canaries for N=$n"
    py manifests --kind flagger-canaries --run "$run" --count "$n" --interval "$INTERVAL" \
        --metric-window "$METRIC_WINDOW" --step-weight "$STEP_WEIGHT" --max-weight "$MAX_WEIGHT" \
        --threshold "$THRESHOLD" --max-failed-checks "$MAX_FAILED_CHECKS" \
        --progress-deadline "$PROGRESS_DEADLINE" >"$RUN/$run-canaries.yaml"
    k apply -f "$RUN/$run-canaries.yaml" >>"$RUN/setup.log" 2>&1 || fail "$WHAT" "$RUN/setup.log"
    WHAT="flagger, N=$n: waiting for every Canary to be Initialized"
    py wait-canaries --kubeconfig "$KUBECONFIG" --run "$run" --count "$n" --phase Initialized \
        --timeout "$RELEASE_TIMEOUT" --pid "$pid" || fail "$WHAT"
    alive flagger "$pid" "$RUN/$run.log"
    # The primaries get traffic only now: give them the metric window before the release, as
    # steerer's GA had (no query here: this window belongs to Flagger in the query log).
    sleep "${METRIC_WINDOW%s}"

    log "flagger, N=$n: release 1 (healthy $IMAGE_HEALTHY) on every target"
    mark --controller flagger --n "$n" --event healthy --pid "$pid"
    t=$(date +%s)
    WHAT="flagger, N=$n: changing every target to the healthy release"
    py patch --kubeconfig "$KUBECONFIG" --run "$run" --count "$n" --deployment podinfo \
        --image "$IMAGE_HEALTHY" --release healthy --log "$TRIGGERS" || fail "$WHAT"
    WHAT="flagger, N=$n: waiting for the healthy release to end on every target"
    py wait-canaries --kubeconfig "$KUBECONFIG" --run "$run" --count "$n" --phase Succeeded,Failed \
        --since "$t" --out "$RUN/$run-healthy.json" --timeout "$RELEASE_TIMEOUT" --pid "$pid" || fail "$WHAT"
    alive flagger "$pid" "$RUN/$run.log"
    py verify --kubeconfig "$KUBECONFIG" --run "$run" --count "$n" --ga podinfo-primary --image "$IMAGE_HEALTHY" >"$RUN/$run-healthy-verify.json"

    log "flagger, N=$n: release 2 (failing $IMAGE_FAILING, 30% 5xx) on every target"
    mark --controller flagger --n "$n" --event failing --pid "$pid"
    t=$(date +%s)
    WHAT="flagger, N=$n: changing every target to the failing release"
    py patch --kubeconfig "$KUBECONFIG" --run "$run" --count "$n" --deployment podinfo \
        --image "$IMAGE_FAILING" --error-rate 0.3 --release failing --log "$TRIGGERS" || fail "$WHAT"
    WHAT="flagger, N=$n: waiting for the failing release to end on every target"
    py wait-canaries --kubeconfig "$KUBECONFIG" --run "$run" --count "$n" --phase Succeeded,Failed \
        --since "$t" --out "$RUN/$run-failing.json" --timeout "$RELEASE_TIMEOUT" --pid "$pid" || fail "$WHAT"
    alive flagger "$pid" "$RUN/$run.log"
    py verify --kubeconfig "$KUBECONFIG" --run "$run" --count "$n" --ga podinfo-primary --image "$IMAGE_HEALTHY" >"$RUN/$run-failing-verify.json"
    alive "the VirtualService observer" "$OBSERVER_PID" "$RUN/observer.log"
    mark --controller flagger --n "$n" --event end --pid "$pid" --outcomes "$RUN/$run-healthy.json" "$RUN/$run-failing.json"

    stop_pid flagger "$pid"
    forget_pid "$pid"
    drop_run "$run"
}

# ---------------------------------------------------------------- main

main() {
    if [[ -e $RUN && ! -e $RUN/.made-by-flagger-sh ]]; then
        WHAT="$RUN exists and was not made by flagger.sh: choose another --out"
        exit 1
    fi
    if [[ -f $CLUSTER/pids ]]; then
        "$REPO/tests/cluster/down.sh" "$CLUSTER" >/dev/null 2>&1 || true
    fi
    rm -rf "$RUN" "$DIR/results.json" "$DIR/results.md" "$DIR/results.png"
    mkdir -p "$RUN"
    touch "$RUN/.made-by-flagger-sh"
    local began=$SECONDS
    prepare_tools
    start_cluster
    start_mesh_and_prometheus
    local settings n
    settings=$(printf '{"interval": "%s", "step weight": %s, "max weight": %s, "success-rate threshold": "%s%%", "failed-check limit": %s, "metric window": "%s", "scale-down delay": "0s", "mesh requests/s per target": %s, "scrape interval": "%s"}' \
        "$INTERVAL" "$STEP_WEIGHT" "$MAX_WEIGHT" "$THRESHOLD" "$MAX_FAILED_CHECKS" "$METRIC_WINDOW" "$REQUEST_RATE" "$SCRAPE_INTERVAL")
    for n in "${NS_LIST[@]}"; do
        local t0=$SECONDS
        run_steerer "$n"
        log "steerer, N=$n: done in $((SECONDS - t0))s"
        t0=$SECONDS
        run_flagger "$n"
        log "flagger, N=$n: done in $((SECONDS - t0))s"
        WHAT="analysing N=$n"
        WHAT_LOG=""
        py analyze --dir "$DIR" --n "$n" --prometheus "$PROM" --settings "$settings" || fail "$WHAT"
        py report --dir "$DIR" >/dev/null || fail "writing the report"
    done
    py report --dir "$DIR" || fail "writing the report"
    log "done in $((SECONDS - began))s: $DIR/results.json, $DIR/results.md, $DIR/results.png"
}

main
