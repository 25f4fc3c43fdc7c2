#!/usr/bin/env bash
# The reporting database's query times and freshness under load, beside plain materialized views
# refreshed in a loop, measured in the same run (issue 19). See bench/README.md.
#
#   bench/reporting.sh                  # SEED_SCALE=10 RATE=200 D=30 (about 3 minutes once built)
#   D=10 bench/reporting.sh             # quicker
#   MV_INTERVAL=1 bench/reporting.sh    # the materialized views refreshed every second, not back to back
#
# Everything runs on loopback: `fig up` on a throwaway PostgreSQL cluster, on ports picked at run
# time; stopped (SIGINT) and removed on exit, Ctrl-C included (cleanup and start_fig are
# bench/cutover.sh's). Exits 1 when the engine misses a goal (every query p99 < 10 ms, freshness
# p99 < 100 ms); the materialized views' figures are only reported.
set -euo pipefail

SEED_SCALE=${SEED_SCALE:-10}      # fig up --seed-scale (10: 2,000 artists, 20,000 albums, 10,000 customers, 50,000 orders)
RATE=${RATE:-200}                 # orders/s through the router (open loop), in each window
D=${D:-30}                        # seconds per load window (two windows: engine, then materialized views)
WORKERS=${WORKERS:-32}            # client connections (threads) the load is spread over
QUERY_EVERY_MS=${QUERY_EVERY_MS:-50} # each analyst query runs once this often
POLL_MS=${POLL_MS:-2}             # the freshness probe's poll interval
MV_REFRESH=${MV_REFRESH:-plain}   # plain: REFRESH MATERIALIZED VIEW; concurrently: ... CONCURRENTLY
MV_INTERVAL=${MV_INTERVAL:-0}     # seconds between refresh starts; 0: back to back
WAL_WRITER_DELAY=${WAL_WRITER_DELAY:-} # e.g. 10ms: set on fig's cluster (ALTER SYSTEM) before the load; empty: fig's (200ms)
# KEEP=1 keeps the temp dir (fig's output and log).
KEPT="fig.out, fig.log"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/cutover.sh
source "$ROOT/bench/cutover.sh"   # lib.sh, cleanup (trap), pg_bindir, banner, start_fig

main() {
    install_missing
    PGBIN=$(pg_bindir) || die "no PostgreSQL binaries in /usr/lib/postgresql/*/bin"
    # Debian's python3-psycopg2 serves /usr/bin/python3, which need not be the python3 on PATH.
    local py=/usr/bin/python3
    "$py" -c 'import psycopg2' 2>/dev/null || apt_install python3-psycopg2
    "$py" -c 'import psycopg2' 2>/dev/null || die "$py does not import psycopg2"
    for t in cargo git; do command -v "$t" >/dev/null || die "$t not found"; done
    FIG=$(release_binary fig)

    W=$(mktemp -d /tmp/reporting-bench.XXXXXX)
    start_fig
    local router admin token pg reporting
    router=$(banner router)
    admin=$(banner admin)
    token=$(banner token)
    pg=$(banner postgres)
    reporting=$(banner reporting)
    [[ $router == http://127.0.0.1:* && $pg == postgresql://* && $reporting == postgresql://* ]] ||
        die "could not read fig's banner: $(cat "$W/fig.out")"

    echo "== reporting bench: commit $(git -C "$ROOT" rev-parse --short HEAD)$( [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no) ]] && echo ' (+uncommitted changes)'), $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo) =="
    echo "   $(head -1 "$W/fig.out"); router $router; reporting $reporting"
    echo "   SEED_SCALE=$SEED_SCALE RATE=$RATE D=$D WORKERS=$WORKERS QUERY_EVERY_MS=$QUERY_EVERY_MS POLL_MS=$POLL_MS MV_REFRESH=$MV_REFRESH MV_INTERVAL=$MV_INTERVAL WAL_WRITER_DELAY=${WAL_WRITER_DELAY:-default}"
    quiet_check "load"

    local rc=0
    ROUTER_URL=$router ADMIN_URL=$admin ADMIN_TOKEN=$token PG_URL=$pg FIG_BIN=$FIG PSQL=$PGBIN/psql \
        OUT_DIR=$W RUN_ID=reporting REPORTING_URL=$reporting \
        RATE=$RATE D=$D WORKERS=$WORKERS QUERY_EVERY_MS=$QUERY_EVERY_MS POLL_MS=$POLL_MS \
        MV_REFRESH=$MV_REFRESH MV_INTERVAL=$MV_INTERVAL WAL_WRITER_DELAY=$WAL_WRITER_DELAY \
        timeout $((4 * D + 600)) "$py" "$ROOT/bench/reporting.py" || rc=$?

    local warns
    warns=$(grep -cE 'WARN|ERROR' "$W/fig.log" || true)
    echo "  fig's log: $warns WARN/ERROR lines"
    ((warns == 0)) || grep -E 'WARN|ERROR' "$W/fig.log" | head -8 | cut -c1-400 | sed 's/^/    /'
    kill -0 "$FIG_PID" 2>/dev/null || { echo "  fig up is no longer running"; rc=1; }
    return "$rc"
}

main "$@"
