#!/usr/bin/env bash
# Runs every test of the workspace (unit, integration, end-to-end and interop) on the
# simulator, then the end-to-end suites that do not drive the simulator's own faults again on
# a real control plane (kube-apiserver, etcd, controller-manager, scheduler and kwok, built from
# their Go modules by tests/cluster/build.sh; each test starts its own with tests/cluster/up.sh).
#
# The real programs the tests drive come from the project's caches, never from replacing
# anything on the machine: kubectl 1.37 from the control-plane build, Prometheus, grpcurl and
# Python's grpcio from tests/tools.sh. The first run on a machine builds the control plane
# (about 13 minutes on 2 cores); later runs reuse it. Arguments go to both `cargo test` runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=tests/tools.sh
source tests/tools.sh
steerer_tools
eval "$(tests/cluster/build.sh)"
export KUBECTL="$K8S_BIN/kubectl"

# Suites (modules of tests/e2e) that run on both substrates: everything they do, a real
# cluster can do too.
BOTH=(rollout_promote rollout_rollback rollout_routes rollout_halts rollout_control rollout_endings rollout_records artifacts
  cli_rollout grpcurl python_client rollout_latency own_metrics replicas rollout_templates
  rollout_webhooks rollout_approval server_kube_auth rollout_observer rollout_baseline
  rollout_strategies)
# Tests of those suites that drive the simulator itself (a client cut off from the API server).
SIM_ONLY=(replicas::a_leader_cut_off_from_the_api_server_stops_leading_before_another_takes_over
  server_kube_auth::an_expired_token_an_unanswering_api_server_and_a_stream_cap_are_refused
  rollout_routes::a_start_naming_a_kind_the_cluster_does_not_serve_is_refused_naming_its_crd)
# Suites run again with the example's route as each Gateway API kind (STEERER_ROUTE).
ROUTED=(rollout_promote rollout_rollback rollout_routes rollout_control rollout_strategies)
# Suites that exercise the route too, run again with a Gateway API kind picked per test
# (STEERER_ROUTE lists both; a hash of the test's name picks one): every test takes one kind
# on the simulator; the reversed list gives it the other, on the real control plane for
# rollout_endings and on the simulator for the two suites whose tests the hash gives one kind
# alone. Running each of them for each kind on both clusters would cost about 13 minutes
# more than this (README.md, Tests).
PER_TEST=(rollout_endings rollout_halts rollout_observer rollout_latency rollout_templates
  rollout_webhooks rollout_approval)
PER_TEST_REAL=(rollout_endings)
PER_TEST_SIM_AGAIN=(rollout_halts rollout_approval)
skips=()
for t in "${SIM_ONLY[@]}"; do skips+=(--skip "$t"); done

status=0
echo "== tests on the simulator"
cargo test --workspace --no-fail-fast "$@" || status=$?
echo "== end-to-end tests on a real control plane (STEERER_SUBSTRATE=real)"
# One test binary (tests/e2e), a module per suite: the filters select the suites' modules.
STEERER_SUBSTRATE=real cargo test -p steerer --no-fail-fast --test e2e "$@" -- "${BOTH[@]/%/::}" "${skips[@]}" ||
  status=$?
for kind in HTTPRoute GRPCRoute; do
  for substrate in sim real; do
    echo "== route suites with a $kind on the $substrate cluster (STEERER_ROUTE=$kind)"
    STEERER_ROUTE=$kind STEERER_SUBSTRATE=$substrate cargo test -p steerer --no-fail-fast --test e2e "$@" \
      -- "${ROUTED[@]/%/::}" "${skips[@]}" || status=$?
  done
  echo "== kill -9 and resume with a $kind on the simulator"
  STEERER_ROUTE=$kind cargo test -p steerer --no-fail-fast --test e2e "$@" -- rollout_restart:: || status=$?
done
echo "== more route suites on the simulator, each test with an HTTPRoute or a GRPCRoute"
STEERER_ROUTE=HTTPRoute,GRPCRoute cargo test -p steerer --no-fail-fast --test e2e "$@" \
  -- "${PER_TEST[@]/%/::}" || status=$?
echo "== rollout_halts and rollout_approval on the simulator, each test with the other Gateway API kind"
STEERER_ROUTE=GRPCRoute,HTTPRoute cargo test -p steerer --no-fail-fast --test e2e "$@" \
  -- "${PER_TEST_SIM_AGAIN[@]/%/::}" || status=$?
echo "== rollout_endings on the real control plane, each test with the other Gateway API kind"
STEERER_ROUTE=GRPCRoute,HTTPRoute STEERER_SUBSTRATE=real cargo test -p steerer --no-fail-fast --test e2e "$@" \
  -- "${PER_TEST_REAL[@]/%/::}" || status=$?
exit "$status"
