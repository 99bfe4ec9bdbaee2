#!/usr/bin/env bash
# Copies the Gateway API CRDs that steerer routes through (HTTPRoute and GRPCRoute, standard
# channel) out of the published Go module sigs.k8s.io/gateway-api into this folder, unchanged.
#
#   artifacts/gateway-api/update.sh [VERSION]     (default: the version in ./VERSION)
#
# The files are never edited by hand: to move to another release, run this with its version and
# commit what it wrote. Go's module cache for the download is the project's own
# ($STEERER_CACHE/go/mod), so the user's is left alone.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VERSION=${1:-$(cat "$HERE/VERSION")}
CACHE=${STEERER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/steerer}
KINDS=(httproutes grpcroutes)

command -v go >/dev/null || { echo "update.sh: go not found on PATH" >&2; exit 1; }
export GOMODCACHE=$CACHE/go/mod GOFLAGS=-modcacherw GOTOOLCHAIN=local GOWORK=off
mkdir -p "$GOMODCACHE"

dir=$(cd "$(mktemp -d)" && go mod download -json "sigs.k8s.io/gateway-api@$VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$dir/config/crd/standard" ] || {
    echo "update.sh: sigs.k8s.io/gateway-api@$VERSION has no config/crd/standard" >&2
    exit 1
}
for kind in "${KINDS[@]}"; do
    src="$dir/config/crd/standard/gateway.networking.k8s.io_$kind.yaml"
    grep -q "bundle-version: $VERSION" "$src" || {
        echo "update.sh: $src does not say bundle-version $VERSION" >&2
        exit 1
    }
    cp "$src" "$HERE/$kind-crd.yaml"
    chmod 644 "$HERE/$kind-crd.yaml"
done
echo "$VERSION" >"$HERE/VERSION"
echo "update.sh: copied ${KINDS[*]} (standard channel) of sigs.k8s.io/gateway-api $VERSION" >&2
