#!/usr/bin/env bash
# The write-ownership flip under load: RATE writes/s through the router while `fig migrate CAP
# cutover|rollback` moves the writes back and forth FLIPS times each way. Client-visible write
# pause p50/p99/max, the flips' own hold times, and the lost and duplicated writes, checked
# against the client's log of acknowledged writes. See bench/README.md.
#
#   bench/cutover.sh                              # RATE=500 FLIPS=10 CAPS=catalog (about a minute once built)
#   CAPS="catalog wishlist" bench/cutover.sh      # both capabilities, one after the other
#   FLIPS=2 GAP=1 bench/cutover.sh                # a quick check
#
# Everything runs on loopback: `fig up` on a throwaway PostgreSQL cluster, on ports picked at run
# time; stopped (SIGINT) and removed on exit, Ctrl-C included. Exits 1 when a write was lost or
# duplicated, the copies disagree or a flip did not end 'done'; the latency goal is only reported.
set -euo pipefail

RATE=${RATE:-500}                 # writes/s offered to the router (open loop)
FLIPS=${FLIPS:-10}                # flips each way, per capability
CAPS=${CAPS:-catalog}             # capabilities flipped: catalog and/or wishlist
GAP=${GAP:-1.5}                   # seconds of load between flips
WARMUP=${WARMUP:-3}               # seconds of load before the first flip
COOLDOWN=${COOLDOWN:-2}           # seconds of load after the last flip
SEED_SCALE=${SEED_SCALE:-0.1}     # fig up --seed-scale (0.1: 20 artists, 200 albums, 100 customers)
WORKERS=${WORKERS:-200}           # client connections (threads) the load is spread over
REQ_TIMEOUT=${REQ_TIMEOUT:-10}    # seconds a write may take before the client gives up on it
SETTLE_TIMEOUT=${SETTLE_TIMEOUT:-60} # seconds the copies may take to agree after the load
MIX=${MIX:-artist=8,album=5,patch=3,wish_put=3,wish_delete=1} # write kinds, in parts of 20
PAUSE_GOAL_MS=${PAUSE_GOAL_MS:-100}
# KEEP=1 keeps the temp dir (fig's output and log, writes.tsv, flips.json) instead of removing it.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
export PATH="$PATH:/usr/sbin:/sbin"
export NO_COLOR=1

W=""          # temp dir: fig's banner and log, the client's log
FIG_PID=0
PG_DATA=""    # the throwaway cluster's data dir (from the banner), removed by fig on exit

# ---------------------------------------------------------------------------------------------
# Cleanup: runs on every exit; every step may fail harmlessly.
cleanup() {
    local rc=$?
    set +e
    if ((FIG_PID)) && kill -0 "$FIG_PID" 2>/dev/null; then
        kill -INT "$FIG_PID" 2>/dev/null
        local i
        for i in $(seq 1 300); do kill -0 "$FIG_PID" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$FIG_PID" 2>/dev/null; then
            log "fig did not stop within 30 s of SIGINT: killing it"
            kill -KILL "$FIG_PID" 2>/dev/null
        fi
        wait "$FIG_PID" 2>/dev/null
    fi
    # fig stops and removes its cluster itself; after a kill it could not.
    if [[ $PG_DATA == /*/localpg-*/data && -d $PG_DATA ]]; then
        as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" stop -m immediate >/dev/null 2>&1
        rm -rf "$(dirname "$PG_DATA")"
    fi
    if [[ -n $W && -d $W ]]; then
        if [[ ${KEEP:-0} == 1 ]]; then log "kept $W (${KEPT:-fig.out, fig.log, writes.tsv, flips.json})"; else rm -rf "$W"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Tools

pg_bindir() { # the newest /usr/lib/postgresql/N/bin with initdb and psql, or nothing
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [[ -x $d/initdb && -x $d/psql ]] && { echo "$d"; return 0; }
    done
    return 1
}

install_missing() {
    local pkgs=()
    pg_bindir >/dev/null || pkgs+=(postgresql postgresql-client)
    command -v python3 >/dev/null || pkgs+=(python3)
    apt_install "${pkgs[@]}"
}

banner() { # label: the first word after it on its banner line (as fig/tests/up.rs reads it)
    awk -v k="$1" '$1 == k { print $2; exit }' "$W/fig.out"
}

start_fig() {
    log "starting fig up --seed-scale $SEED_SCALE (loopback, free ports)"
    "$FIG" up --seed-scale "$SEED_SCALE" \
        --monolith-addr 127.0.0.1:0 --catalog-addr 127.0.0.1:0 --wishlist-addr 127.0.0.1:0 \
        --router-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 --replication-metrics-addr 127.0.0.1:0 \
        </dev/null >"$W/fig.out" 2>"$W/fig.log" &
    FIG_PID=$!
    local deadline=$((SECONDS + 180))
    until grep -q '^Press Ctrl-C to stop\.' "$W/fig.out" 2>/dev/null; do
        [[ -z $PG_DATA ]] && PG_DATA=$(banner data)
        kill -0 "$FIG_PID" 2>/dev/null || die "fig up exited: $(tail -20 "$W/fig.log")"
        ((SECONDS < deadline)) || die "fig up did not serve within 180 s: $(tail -20 "$W/fig.log")"
        sleep 0.2
    done
    PG_DATA=$(banner data)
}

main() {
    install_missing
    PGBIN=$(pg_bindir) || die "no PostgreSQL binaries in /usr/lib/postgresql/*/bin"
    for t in python3 cargo git; do command -v "$t" >/dev/null || die "$t not found"; done
    FIG=$(release_binary fig)

    W=$(mktemp -d /tmp/cutover-bench.XXXXXX)
    start_fig
    local router admin token pg
    router=$(banner router)
    admin=$(banner admin)
    token=$(banner token)
    pg=$(banner postgres)
    [[ $router == http://127.0.0.1:* && $admin == http://127.0.0.1:* && -n $token && $pg == postgresql://* ]] ||
        die "could not read fig's banner: $(cat "$W/fig.out")"

    echo "== cutover bench: commit $(git -C "$ROOT" rev-parse --short HEAD)$( [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no) ]] && echo ' (+uncommitted changes)'), $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) cores =="
    echo "   $(head -1 "$W/fig.out"); router $router, admin $admin"
    echo "   RATE=$RATE FLIPS=$FLIPS CAPS=\"$CAPS\" GAP=$GAP WARMUP=$WARMUP COOLDOWN=$COOLDOWN WORKERS=$WORKERS MIX=$MIX"
    quiet_check "load"

    local rc=0
    ROUTER_URL=$router ADMIN_URL=$admin ADMIN_TOKEN=$token PG_URL=$pg FIG_BIN=$FIG FIG_PID=$FIG_PID PSQL=$PGBIN/psql \
        OUT_DIR=$W RUN_ID=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n') \
        RATE=$RATE FLIPS=$FLIPS CAPS=$CAPS GAP=$GAP WARMUP=$WARMUP COOLDOWN=$COOLDOWN WORKERS=$WORKERS \
        REQ_TIMEOUT=$REQ_TIMEOUT SETTLE_TIMEOUT=$SETTLE_TIMEOUT MIX=$MIX PAUSE_GOAL_MS=$PAUSE_GOAL_MS \
        python3 "$ROOT/bench/cutover.py" || rc=$?

    local warns
    warns=$(grep -cE 'WARN|ERROR' "$W/fig.log" || true)
    echo "  fig's log (FIG_LOG=warn): $warns WARN/ERROR lines"
    ((warns == 0)) || grep -E 'WARN|ERROR' "$W/fig.log" | head -8 | cut -c1-400 | sed 's/^/    /'
    if ! kill -0 "$FIG_PID" 2>/dev/null; then
        echo "  fig up is no longer running; the end of its log:"
        tail -15 "$W/fig.log" | cut -c1-400 | sed 's/^/    /'
        rc=1
    fi
    return "$rc"
}

# Sourced (bench/reporting.sh reuses cleanup, start_fig and banner): define only, run nothing.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
