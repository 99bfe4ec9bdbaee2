#!/usr/bin/env bash
# Runs every test of the workspace (unit, integration, end-to-end and interop). The real
# programs the tests drive (kubectl, Prometheus, grpcurl, Python's grpcio) come from the
# project's tool cache, which tests/tools.sh fills on first use; nothing on the machine's PATH
# is installed or replaced. Arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=tests/tools.sh
source tests/tools.sh
steerer_tools

exec cargo test --workspace --no-fail-fast "$@"
