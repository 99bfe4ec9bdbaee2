#!/usr/bin/env bash
# Builds ghz (github.com/bojand/ghz/cmd/ghz), a gRPC load tool, from its published Go module at
# a tagged release into the project's cache; nothing lands in the repository. Used by
# `cargo bench -p steerer-server --bench api_load`.
#
#   CACHE=${STEERER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/steerer}
#   $CACHE/ghz/$GHZ_VERSION/bin/ghz
#   $CACHE/go/{mod,build}                  Go's caches, shared with tests/cluster/build.sh
#
# Idempotent: a present binary is not rebuilt. Prints GHZ=... on stdout; progress on stderr.
set -euo pipefail

GHZ_VERSION=${GHZ_VERSION:-v0.120.0}
CACHE=${STEERER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/steerer}
DIR=$CACHE/ghz/$GHZ_VERSION

log() { echo "build-ghz.sh: $*" >&2; }
die() { echo "build-ghz.sh: error: $*" >&2; exit 1; }

if [[ ! -x $DIR/bin/ghz ]]; then
    command -v go >/dev/null || die "go not found on PATH"
    command -v flock >/dev/null || die "flock not found on PATH (package util-linux)"
    mkdir -p "$CACHE/ghz"
    exec 9>"$CACHE/ghz/.build.lock"
    flock 9
fi
if [[ ! -x $DIR/bin/ghz ]]; then
    export GOMODCACHE=$CACHE/go/mod GOCACHE=$CACHE/go/build
    export GOFLAGS="-modcacherw -buildvcs=false" GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0
    mkdir -p "$GOMODCACHE" "$GOCACHE"
    start=$SECONDS
    log "building ghz $GHZ_VERSION from github.com/bojand/ghz"
    rm -rf "$DIR/module" && mkdir -p "$DIR/module"
    cd "$DIR/module"
    go mod init steerer.test/ghz-build >/dev/null 2>&1 || die "go mod init failed in $PWD"
    nice -n 10 go get "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION" ||
        die "go get github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION failed"
    mkdir -p "$DIR/bin.partial"
    nice -n 10 go build -trimpath -o "$DIR/bin.partial/ghz" github.com/bojand/ghz/cmd/ghz ||
        die "go build of ghz failed"
    rm -rf "$DIR/bin" && mv "$DIR/bin.partial" "$DIR/bin"
    log "built ghz $GHZ_VERSION in $((SECONDS - start)) s"
fi
echo "GHZ=$DIR/bin/ghz"
