#!/usr/bin/env bash
# Builds the binaries of a real Kubernetes control plane for tests, from Go modules:
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl (k8s.io/kubernetes),
# etcd (go.etcd.io/etcd/server/v3) and kwok (sigs.k8s.io/kwok, plus its stage YAMLs).
#
# Everything goes into a cache the project owns, keyed by version, never into the repo:
#   CACHE=${STEERER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/steerer}
#   $CACHE/k8s/$K8S_VERSION/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl}
#   $CACHE/etcd/$ETCD_VERSION/bin/etcd
#   $CACHE/kwok/$KWOK_VERSION/bin/kwok and $CACHE/kwok/$KWOK_VERSION/stage/...
#   $CACHE/go/{mod,build}   Go module and build caches (the user's are left alone)
# Each component is built in a build module of its own (generated under its cache dir), so the
# dependency versions of one never move another's. Idempotent: what is present is not rebuilt.
# Prints the binary directories as shell lines (K8S_BIN=..., ETCD_BIN=..., KWOK_BIN=...,
# KWOK_STAGE_DIR=...) on stdout when done; progress goes to stderr.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}

CACHE=${STEERER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/steerer}
K8S_DIR=$CACHE/k8s/$K8S_VERSION
ETCD_DIR=$CACHE/etcd/$ETCD_VERSION
KWOK_DIR=$CACHE/kwok/$KWOK_VERSION
K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

log() { echo "build.sh: $*" >&2; }
die() { echo "build.sh: error: $*" >&2; exit 1; }

# Go environment confined to the cache; no toolchain download, no workspace, no VCS stamping.
setup_go_env() {
    command -v go >/dev/null || die "go not found on PATH (Go >= 1.26 is needed)"
    export GOMODCACHE=$CACHE/go/mod
    export GOCACHE=$CACHE/go/build
    export GOFLAGS="-modcacherw -buildvcs=false"
    export GOWORK=off
    export GOTOOLCHAIN=local
    export CGO_ENABLED=0
    mkdir -p "$GOMODCACHE" "$GOCACHE"
}

have_all() { local f; for f in "$@"; do [[ -x $f ]] || return 1; done; }

# Runs a go command at low priority; on failure prints the command before exiting.
gorun() { nice -n 10 go "$@" || die "'go $*' failed in $PWD"; }

# new_module DIR MODULE_PATH: a fresh, empty build module in DIR.
new_module() {
    local dir=$1 path=$2
    rm -rf "$dir" && mkdir -p "$dir"
    cd "$dir"
    gorun mod init "$path" 2>/dev/null
}

# build_into DIR LDFLAGS NAME PKG...: builds the main packages into DIR/bin via DIR/bin.tmp, so
# a failed build leaves nothing; NAME names the binary of a single package, "" keeps Go's names.
build_into() {
    local out=$1 ldflags=$2 name=$3; shift 3
    rm -rf "$out/bin.tmp" && mkdir -p "$out/bin.tmp"
    gorun build -trimpath -ldflags "$ldflags" -o "$out/bin.tmp/$name" "$@"
    rm -rf "$out/bin" && mv "$out/bin.tmp" "$out/bin"
}

# The k8s.io/X modules that k8s.io/kubernetes requires at v0.0.0 (its staging modules), read
# from its downloaded go.mod.
k8s_staging_modules() {
    local json gomod
    json=$(cd "$K8S_DIR/module" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION") || true
    gomod=$(python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Error") or d["GoMod"])' \
        <<<"$json") || die "go mod download -json k8s.io/kubernetes@$K8S_VERSION: $json"
    [[ -f $gomod ]] || die "k8s.io/kubernetes@$K8S_VERSION: $gomod"
    go mod edit -json "$gomod" | python3 -c '
import json, sys
for r in json.load(sys.stdin)["Require"]:
    if r["Path"].startswith("k8s.io/") and r["Version"] == "v0.0.0":
        print(r["Path"])'
}

build_k8s() {
    have_all "${K8S_CMDS[@]/#/$K8S_DIR/bin/}" && return 0
    log "building kubernetes $K8S_VERSION (tens of minutes on 2 cores)"
    local start=$SECONDS staging_version="v0.${K8S_VERSION#v1.}" mods m pkgs=() ldflags
    new_module "$K8S_DIR/module" steerer.test/k8s-build
    mods=$(k8s_staging_modules)
    [[ -n $mods ]] || die "no k8s.io module at v0.0.0 found in the k8s.io/kubernetes@$K8S_VERSION go.mod"
    log "replacing $(wc -w <<<"$mods") staging modules with $staging_version"
    for m in $mods; do go mod edit -replace "$m=$m@$staging_version"; done
    for m in "${K8S_CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$m"); done
    gorun get "${pkgs[@]/%/@$K8S_VERSION}"
    local ver=${K8S_VERSION#v} major minor x
    major=${ver%%.*}; minor=${ver#*.}; minor=${minor%%.*}
    ldflags="-s -w"
    for x in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $x.gitVersion=$K8S_VERSION -X $x.gitMajor=$major -X $x.gitMinor=$minor"
        ldflags+=" -X $x.gitTreeState=clean -X $x.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    done
    build_into "$K8S_DIR" "$ldflags" "" "${pkgs[@]}"
    log "kubernetes $K8S_VERSION built in $((SECONDS - start))s"
}

build_etcd() {
    have_all "$ETCD_DIR/bin/etcd" && return 0
    log "building etcd $ETCD_VERSION"
    local start=$SECONDS
    new_module "$ETCD_DIR/module" steerer.test/etcd-build
    gorun get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    build_into "$ETCD_DIR" "-s -w" etcd go.etcd.io/etcd/server/v3
    log "etcd $ETCD_VERSION built in $((SECONDS - start))s"
}

build_kwok() {
    have_all "$KWOK_DIR/bin/kwok" && [[ -f $KWOK_DIR/stage/.complete ]] && return 0
    log "building kwok $KWOK_VERSION"
    local start=$SECONDS src
    new_module "$KWOK_DIR/module" steerer.test/kwok-build
    gorun get "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
    build_into "$KWOK_DIR" "-s -w" kwok sigs.k8s.io/kwok/cmd/kwok
    src=$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
    [[ -d $src/kustomize/stage ]] || die "no kustomize/stage in $src"
    rm -rf "$KWOK_DIR/stage" && mkdir -p "$KWOK_DIR/stage"
    # Only the Stage YAMLs: no testdata, kustomizations or Go files.
    (cd "$src/kustomize/stage" && find . -name '*.yaml' ! -path '*/testdata/*' \
        ! -name kustomization.yaml -exec cp --parents {} "$KWOK_DIR/stage/" \;)
    chmod -R u+w "$KWOK_DIR/stage"
    touch "$KWOK_DIR/stage/.complete"
    log "kwok $KWOK_VERSION built in $((SECONDS - start))s"
}

main() {
    mkdir -p "$CACHE"
    command -v python3 >/dev/null || die "python3 not found on PATH"
    command -v flock >/dev/null || die "flock not found on PATH (package util-linux)"
    # One build at a time per cache, even when several up.sh start together.
    exec 9>"$CACHE/.build.lock"
    flock 9
    local start=$SECONDS
    if ! have_all "${K8S_CMDS[@]/#/$K8S_DIR/bin/}" "$ETCD_DIR/bin/etcd" "$KWOK_DIR/bin/kwok" ||
        [[ ! -f $KWOK_DIR/stage/.complete ]]; then
        setup_go_env
        build_etcd
        build_kwok
        build_k8s
        log "build took $((SECONDS - start))s in total; cache: $CACHE"
    fi
    echo "K8S_BIN=$K8S_DIR/bin"
    echo "ETCD_BIN=$ETCD_DIR/bin"
    echo "KWOK_BIN=$KWOK_DIR/bin"
    echo "KWOK_STAGE_DIR=$KWOK_DIR/stage"
}

main "$@"
