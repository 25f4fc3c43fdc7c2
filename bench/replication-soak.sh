#!/usr/bin/env bash
# A soak of the replication engine: the randomized differential test
# (replication/tests/differential.rs) with seed after seed for MINUTES minutes, each seed's line
# printed as it ends, then the totals and every failing seed with the command replaying it.
# See bench/README.md.
#
#   MINUTES=10 bash bench/replication-soak.sh     # the default: 10 minutes
#   MINUTES=2 TXNS=100 bash bench/replication-soak.sh
#   SEED=12345 MINUTES=5 bash bench/replication-soak.sh   # seeds 12345, 12346, ... (replayable)
#
# PostgreSQL comes from the project's harness (localpg): each run of the test binary starts its
# own throwaway cluster and removes it when the binary exits, Ctrl-C included.
set -euo pipefail

MINUTES=${MINUTES:-10}   # no new run starts after this many minutes
TXNS=${TXNS:-200}        # transactions per seed, over all of its clients (FIG_DIFF_TXNS)
BATCH=${BATCH:-4}        # seeds per run of the test binary (one cluster each run)
TIMEOUT=${TIMEOUT:-10}   # seconds without progress before a seed fails as a hang (FIG_DIFF_TIMEOUT)
SEED=${SEED:-}           # the first seed (default: from the clock); the others follow it
# KEEP=1 keeps the temp dir with every run's full output instead of removing it on exit.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
export PATH="$PATH:/usr/sbin:/sbin"

W=""
cleanup() {
    local rc=$?
    if [[ -n $W && -d $W ]]; then
        if [[ ${KEEP:-0} == 1 ]]; then echo "[soak] kept $W (every run's output)" >&2; else rm -rf "$W"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pg_bindir() { # the newest /usr/lib/postgresql/N/bin with the server binaries, or nothing
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]] && { echo "$d"; return 0; }
    done
    return 1
}

test_binary() { # builds the differential test and prints its executable
    log "building the differential test (cargo test -p replication --test differential --no-run)"
    (cd "$ROOT" && cargo test -q -p replication --test differential --no-run --message-format=json) |
        python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "differential":
        print(m["executable"])' | tail -1
}

main() {
    [[ $MINUTES =~ ^[0-9]+$ && $TXNS =~ ^[0-9]+$ && $BATCH =~ ^[1-9][0-9]*$ && $TIMEOUT =~ ^[0-9]+$ ]] ||
        die "MINUTES, TXNS, BATCH and TIMEOUT are whole numbers"
    command -v cargo >/dev/null || die "cargo not found"
    command -v python3 >/dev/null || apt_install python3
    pg_bindir >/dev/null || apt_install postgresql
    # Our own cluster from the harness, never a server named in the environment.
    unset LOCALPG_URL
    export LOCALPG_BINDIR
    LOCALPG_BINDIR=$(pg_bindir) || die "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin"

    local bin
    bin=$(test_binary)
    [[ -n $bin && -x $bin ]] || die "cargo built no differential test binary"
    W=$(mktemp -d /tmp/replication-soak.XXXXXX)

    local seed=${SEED:-$(($(date +%s%N) / 1000 % 1000000000))}
    local first=$seed
    local began now run=0 seeds=0 ok=0 committed=0 failed=() line code
    echo "== replication soak: commit $(git -C "$ROOT" rev-parse --short HEAD)$( [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no) ]] && echo ' (+uncommitted changes)'), $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) cores =="
    echo "   $MINUTES minutes, $TXNS transactions per seed, $BATCH seeds per run, from seed $first; PostgreSQL from $LOCALPG_BINDIR"
    began=$(date +%s)
    while now=$(date +%s); ((now - began < MINUTES * 60)); do
        run=$((run + 1))
        local out=$W/run-$run.log
        code=0
        # The test's own bound: each seed fails on its own (a hang within TIMEOUT s without
        # progress); this one only stops a binary that hangs past every seed's bound.
        (cd "$ROOT/replication" &&
            FIG_DIFF_SEED=$seed FIG_DIFF_SEEDS=$BATCH FIG_DIFF_TXNS=$TXNS FIG_DIFF_TIMEOUT=$TIMEOUT \
                timeout --kill-after=10 $((BATCH * (TIMEOUT * 8 + 60))) \
                "$bin" --nocapture --test-threads 1 >"$out" 2>&1) || code=$?
        local seen=0
        while IFS= read -r line; do
            seen=$((seen + 1))
            seeds=$((seeds + 1))
            echo "   ${line#differential: }"
            if [[ $line == *result=ok* ]]; then
                ok=$((ok + 1))
                committed=$((committed + $(sed -E 's/.* committed=([0-9]+).*/\1/' <<<"$line")))
            else
                failed+=("$(sed -E 's/.*seed=([0-9]+).*/\1/' <<<"$line")")
                # The failure's text: the lines after it up to the replay command.
                awk -v l="$line" 'index($0, l) { on = 1; next } on && /differential: seed=/ { exit } on { print "      " $0 } on && /replay:/ { exit }' "$out"
            fi
            # (The test harness prints `test <name> ... ` before the first line, on the same line.)
        done < <(grep -oE 'differential: seed=.*' "$out" || true)
        if ((seen < BATCH)); then
            # The binary died (or was stopped) before reporting every seed: count the rest.
            echo "   run $run (seeds $seed..$((seed + BATCH - 1))) ended after $seen of $BATCH seeds (exit $code); its last lines:"
            tail -15 "$out" | sed 's/^/      /'
            local s
            for ((s = seed + seen; s < seed + BATCH; s++)); do failed+=("$s"); seeds=$((seeds + 1)); done
        fi
        seed=$((seed + BATCH))
    done
    local minutes
    minutes=$(awk -v s=$(($(date +%s) - began)) 'BEGIN { printf "%.1f", s / 60 }')
    echo
    echo "== soak summary: $seeds seeds ($first..$((seed - 1))), $((seeds * TXNS)) transactions generated ($committed committed by the seeds that passed), $minutes minutes, $run runs =="
    echo "   passed: $ok; failed: ${#failed[@]}"
    local s
    for s in "${failed[@]}"; do
        echo "   FAILED seed $s: FIG_DIFF_SEED=$s FIG_DIFF_TXNS=$TXNS FIG_DIFF_TIMEOUT=$TIMEOUT cargo test -p replication --test differential -- --nocapture"
    done
    ((${#failed[@]} == 0)) || exit 1
}

main "$@"
