#!/usr/bin/env bash
# Builds Flagger (github.com/fluxcd/flagger/cmd/flagger) from its published Go module, at a
# tagged release, into the project's cache, and copies its CRDs there; nothing lands in the
# repository.
#
#   CACHE=${STEERER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/steerer}
#   $CACHE/flagger/$FLAGGER_VERSION/bin/flagger
#   $CACHE/flagger/$FLAGGER_VERSION/crd.yaml          (the module's artifacts/flagger/crd.yaml)
#   $CACHE/flagger/$FLAGGER_VERSION/module/           the build module (go.mod, go.sum)
#   $CACHE/go/{mod,build}                             Go's caches, shared with tests/cluster/build.sh
#
# Idempotent: a present binary and CRD file are not rebuilt. Prints FLAGGER_BIN=... and
# FLAGGER_CRDS=... lines on stdout; progress goes to stderr.
set -euo pipefail

FLAGGER_VERSION=${FLAGGER_VERSION:-v1.44.0}
CACHE=${STEERER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/steerer}
DIR=$CACHE/flagger/$FLAGGER_VERSION

log() { echo "build-flagger.sh: $*" >&2; }
die() { echo "build-flagger.sh: error: $*" >&2; exit 1; }

if [[ ! -x $DIR/bin/flagger || ! -f $DIR/crd.yaml ]]; then
    command -v go >/dev/null || die "go not found on PATH (Flagger $FLAGGER_VERSION declares go 1.26)"
    command -v flock >/dev/null || die "flock not found on PATH (package util-linux)"
    mkdir -p "$CACHE/flagger"
    exec 9>"$CACHE/flagger/.build.lock"
    flock 9
fi
if [[ ! -x $DIR/bin/flagger || ! -f $DIR/crd.yaml ]]; then
    export GOMODCACHE=$CACHE/go/mod GOCACHE=$CACHE/go/build
    export GOFLAGS="-modcacherw -buildvcs=false" GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0
    mkdir -p "$GOMODCACHE" "$GOCACHE"
    start=$SECONDS
    log "building flagger $FLAGGER_VERSION from github.com/fluxcd/flagger (a few minutes on 2 cores)"
    rm -rf "$DIR/module" && mkdir -p "$DIR/module"
    cd "$DIR/module"
    go mod init steerer.test/flagger-build >/dev/null 2>&1 || die "go mod init failed in $PWD"
    nice -n 10 go get "github.com/fluxcd/flagger/cmd/flagger@$FLAGGER_VERSION" ||
        die "go get github.com/fluxcd/flagger/cmd/flagger@$FLAGGER_VERSION failed"
    src=$(go list -m -f '{{.Dir}}' github.com/fluxcd/flagger) || die "go list -m github.com/fluxcd/flagger failed"
    [[ -f $src/artifacts/flagger/crd.yaml ]] || die "no artifacts/flagger/crd.yaml in $src"
    rm -rf "$DIR/bin.tmp" && mkdir -p "$DIR/bin.tmp"
    nice -n 10 go build -trimpath \
        -ldflags "-s -w -X github.com/fluxcd/flagger/pkg/version.VERSION=${FLAGGER_VERSION#v}" \
        -o "$DIR/bin.tmp/flagger" github.com/fluxcd/flagger/cmd/flagger ||
        die "go build github.com/fluxcd/flagger/cmd/flagger failed"
    install -m 0644 "$src/artifacts/flagger/crd.yaml" "$DIR/crd.yaml.tmp"
    rm -rf "$DIR/bin" && mv "$DIR/bin.tmp" "$DIR/bin"
    mv "$DIR/crd.yaml.tmp" "$DIR/crd.yaml"
    log "flagger $FLAGGER_VERSION built in $((SECONDS - start))s: $DIR/bin/flagger"
fi
echo "FLAGGER_BIN=$DIR/bin/flagger"
echo "FLAGGER_CRDS=$DIR/crd.yaml"
