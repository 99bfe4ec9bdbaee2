#!/usr/bin/env bash
# Stops the test cluster that tests/cluster/up.sh DIR started: every process listed in DIR/pids
# ("name pid" lines) gets TERM, one at a time in reverse start order, and KILL if it still runs a
# few seconds later. Removes DIR/pids and the throwaway etcd data; keeps the logs. Safe to run
# twice, and on a DIR whose processes are gone.
set -euo pipefail

GRACE_SECS=${STEERER_CLUSTER_GRACE:-5}

die() { echo "down.sh: error: $*" >&2; exit 1; }

# is_ours NAME PID: PID still runs the program NAME (not a recycled pid, nor a zombie).
is_ours() {
    local exe
    exe=$(readlink "/proc/$2/exe" 2>/dev/null) || return 1
    [[ ${exe##*/} == "$1" || ${exe##*/} == "$1 (deleted)" ]]
}

# wait_gone NAME PID SECS: waits until PID no longer runs NAME; fails after SECS.
wait_gone() {
    local deadline=$((SECONDS + $3))
    while is_ours "$1" "$2"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# stop NAME PID: TERM, then KILL if it still runs after GRACE_SECS.
stop() {
    is_ours "$1" "$2" || return 0
    kill -TERM "$2" 2>/dev/null || true
    wait_gone "$1" "$2" "$GRACE_SECS" && return 0
    echo "down.sh: $1 ($2) still runs ${GRACE_SECS}s after TERM: killing it" >&2
    kill -KILL "$2" 2>/dev/null || true
    wait_gone "$1" "$2" 5 || die "$1 ($2) still runs after KILL"
}

main() {
    [[ $# -eq 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
    local dir=$1 name pid entries=() i
    if [[ -f $dir/pids ]]; then
        while read -r name pid; do
            [[ -z ${pid:-} ]] || entries=("$name $pid" "${entries[@]}")
        done <"$dir/pids"
        # Reverse start order, one at a time: etcd must outlive the API server's shutdown.
        for i in "${entries[@]}"; do stop "${i% *}" "${i#* }"; done
        rm -f "$dir/pids"
    fi
    rm -rf "$dir/etcd-data"
}

main "$@"
