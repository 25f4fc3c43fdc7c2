#!/usr/bin/env bash
# The replication engine against PostgreSQL's built-in logical replication (CREATE PUBLICATION /
# CREATE SUBSCRIPTION), on the same pgbench data, on this machine, in one run. See bench/README.md.
#
#   bench/replication.sh                                  # SCALE=10 BURST=20 LAG_SECONDS=20 RATE=1000
#   SCALE=1 BURST=5 LAG_SECONDS=5 bench/replication.sh    # a quick check (about a minute)
#   SIDES=ours bench/replication.sh                       # only our engine (or SIDES=native)
#   ROUNDS=3 bench/replication.sh                         # both sides 3 times, medians
#
# Three throwaway clusters (a source, a target for native, a target for ours), on Unix sockets
# only, in one temp dir; everything is stopped and removed on exit, even on Ctrl-C.
set -euo pipefail

SCALE=${SCALE:-10}             # pgbench scale: 100,000 pgbench_accounts rows per unit
BURST=${BURST:-20}             # seconds of the unthrottled pgbench burst
LAG_SECONDS=${LAG_SECONDS:-20} # seconds of the fixed-rate run the lag is sampled in
RATE=${RATE:-1000}             # transactions/s of that run
PROBE_MS=${PROBE_MS:-10}       # one probe row inserted on the source every PROBE_MS
POLL_MS=${POLL_MS:-2}          # the target polled for probe rows every POLL_MS
TIMEOUT=${TIMEOUT:-180}        # seconds any single wait may take before the run fails
# KEEP=1 keeps the temp dir (logs, configs, the stopped clusters) instead of removing it on exit.
SIDES=${SIDES:-native ours}    # which sides to run, in this order (reversed every other round)
ROUNDS=${ROUNDS:-1}            # how many times each side runs; the summary takes medians
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
export PATH="$PATH:/usr/sbin:/sbin"
export NO_COLOR=1 # plain engine logs (tracing), so they can be grepped and shown

PIPELINE=bench            # our pipeline: publication and slot fig_bench
NATIVE=native_bench       # native: publication, subscription and slot
TABLES="pgbench_accounts pgbench_branches pgbench_tellers pgbench_history bench_probe"

ROUND=1           # the round running
W=""              # the temp dir holding every cluster, config and log
PIDS=()           # processes we started (our engine), stopped on exit
CLUSTERS=()       # data dirs of the clusters we started
ENGINE_PID=0
HELPER_PID=0      # the timing helper while one runs
CPU_PID=0         # the CPU sampler while one runs
INVALID=""        # sides whose target did not end up equal to the source


# ---------------------------------------------------------------------------------------------
# Cleanup: runs on every exit. No `set -e` surprises here: every step may fail harmlessly.
cleanup() {
    local rc=$?
    set +e
    local pid i d
    ((HELPER_PID)) && PIDS+=("$HELPER_PID")
    ((CPU_PID)) && PIDS+=("$CPU_PID")
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for i in $(seq 1 100); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    # Stopping a cluster ends its backends, so a pgbench or probe it served ends too.
    for d in "${CLUSTERS[@]}"; do
        as_pg "$PGBIN/pg_ctl" -D "$d" stop -m immediate >/dev/null 2>&1
    done
    if [[ -n $W && -d $W ]]; then
        if [[ ${KEEP:-0} == 1 ]]; then echo "[bench] kept $W (logs, configs, stopped clusters)" >&2; else rm -rf "$W"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# 1. Tools

pg_bindir() { # the newest /usr/lib/postgresql/N/bin that has initdb and pgbench, or nothing
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [[ -x $d/initdb && -x $d/pgbench ]] && { echo "$d"; return 0; }
    done
    return 1
}

pick_python() { # PY: a python3 that imports psycopg2. Debian's package serves /usr/bin/python3,
    # which need not be the python3 first on PATH (pyenv, a venv).
    local p
    for p in "$(command -v python3 || true)" /usr/bin/python3; do
        [[ -n $p ]] && "$p" -c 'import psycopg2' 2>/dev/null && { PY=$p; return 0; }
    done
    return 1
}

install_missing() {
    local pkgs=()
    pg_bindir >/dev/null || pkgs+=(postgresql postgresql-client)
    command -v python3 >/dev/null || pkgs+=(python3)
    pick_python || pkgs+=(python3-psycopg2)
    apt_install "${pkgs[@]}"
}

# ---------------------------------------------------------------------------------------------
# 2. Our engine's binary


# ---------------------------------------------------------------------------------------------
# Helpers


sql() { # cluster db [psql args...]: one psql call, unaligned tuples only, stops at the first error
    local c=$1 db=$2
    shift 2
    PGOPTIONS='-c client_min_messages=warning' "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$W/$c/sock" -p 5432 -U postgres -d "$db" "$@"
}

dsn() { echo "host=$W/$1/sock port=5432 user=postgres dbname=bench"; }
url() { echo "postgresql://postgres@/bench?host=$W/$1/sock&port=5432"; }

kv() { # key file: the value of a key=value line the helper printed
    awk -F= -v k="$1" '$1 == k { sub(/^[^=]*=/, ""); print; found = 1 } END { exit !found }' "$2"
}

position_name() { # side: what says how far that side has applied
    if [[ $1 == ours ]]; then echo "fig_replication.pipelines.applied_lsn"; else echo "the slot's confirmed_flush_lsn"; fi
}

record() { printf '%s\t%s\t%s\t%s\n' "$ROUND" "$1" "$2" "$3" >>"$W/results.tsv"; }



# ---------------------------------------------------------------------------------------------
# 3. Clusters: each in its own dir with its own socket dir, no TCP port at all (so nothing can
# collide), all three with the same settings (logical WAL, 10 slots and senders, fsync and
# synchronous commit on, 256 MB of shared buffers), plus room for WAL so no checkpoint is
# forced by WAL volume inside a timed phase.

start_cluster() { # name
    local name=$1 dir=$W/$1
    mkdir -p "$dir/sock"
    [[ $EUID -eq 0 ]] && chown -R postgres: "$dir"
    as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >"$W/initdb-$name.log" 2>&1 ||
        die "initdb $name failed: $(tail -5 "$W/initdb-$name.log")"
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$dir/sock'
port = 5432
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
fsync = on
synchronous_commit = on
shared_buffers = 256MB
max_wal_size = 4GB
CONF
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 start >/dev/null ||
        die "pg_ctl start $name failed: $(tail -5 "$dir/log" 2>/dev/null)"
    CLUSTERS+=("$dir/data")
}

# The source data, made once; each side gets an identical fresh copy (CREATE DATABASE ...
# TEMPLATE), so both replicate byte-for-byte the same rows.
make_template() {
    log "pgbench -i -s $SCALE on the source (template database)"
    sql src postgres -c "CREATE DATABASE bench_template"
    "$PGBIN/pgbench" -h "$W/src/sock" -p 5432 -U postgres -i -s "$SCALE" -q bench_template >"$W/pgbench-init.log" 2>&1 ||
        die "pgbench -i failed: $(tail -5 "$W/pgbench-init.log")"
    sql src bench_template <<'SQL'
CREATE TABLE bench_probe (id bigserial PRIMARY KEY, sent timestamptz DEFAULT clock_timestamp());
-- pgbench_history has no key: both sides get the same identity.
ALTER TABLE pgbench_history REPLICA IDENTITY FULL;
VACUUM ANALYZE bench_probe;
SQL
}

fresh_source() {
    sql src postgres -c "DROP DATABASE IF EXISTS bench WITH (FORCE)" -c "CREATE DATABASE bench TEMPLATE bench_template"
}

fresh_target() { # cluster: empty pgbench tables (drop, create, primary keys) and the probe table
    sql "$1" postgres -c "DROP DATABASE IF EXISTS bench WITH (FORCE)" -c "CREATE DATABASE bench"
    "$PGBIN/pgbench" -h "$W/$1/sock" -p 5432 -U postgres -i -I dtp -s "$SCALE" bench >"$W/pgbench-init-$1.log" 2>&1 ||
        die "pgbench -i -I dtp on $1 failed: $(tail -5 "$W/pgbench-init-$1.log")"
    sql "$1" bench -c "CREATE TABLE bench_probe (id bigserial PRIMARY KEY, sent timestamptz DEFAULT clock_timestamp())"
}

warm_wal() { # cluster: about 800 MB of WAL written and dropped, then a checkpoint, which keeps
    # the segments for reuse. A fresh cluster must create (and zero-fill, then fsync) every WAL
    # segment it first fills, and a running one reuses them: without this, whichever side's
    # target first takes a large write (round 1's bulk apply) pays for 20-odd new segments.
    sql "$1" postgres -c "CREATE TABLE fig_warm AS SELECT g, repeat('x', 700) AS pad FROM generate_series(1, 1000000) g" \
        -c "DROP TABLE fig_warm" -c "CHECKPOINT"
}

settle() { # side phase: garbage of the last phase vacuumed, a checkpoint, then the CPU check
    local t
    for t in src "$1"; do
        sql "$t" bench -c "VACUUM ANALYZE" -c "CHECKPOINT"
    done
    quiet_check "$2"
}

# ---------------------------------------------------------------------------------------------
# 4. The timing helper: one Python process per phase with kept-open connections, so a poll costs
# a fraction of a millisecond and both sides are watched by the same code.
#
#   copy   wait until the initial copy is complete (ours: phase 'streaming'; native: every table
#          of the subscription in state 'r'), seconds since --t0
#   timed  run an event on the source (--sql, or a command after --), take t0 when it returns,
#          read X = pg_current_wal_lsn(), insert a marker probe row (committed after X), then wait
#          until (a) the marker row is visible on the target: both sides apply in source commit
#          order, so the target then has everything up to X; this is the figure reported, the
#          same query for both; and (b) the side's own position says X is applied (ours:
#          fig_replication.pipelines.applied_lsn >= X; native: the subscription slot's
#          confirmed_flush_lsn >= X), shown beside it. Seconds since t0.
#   lag    pgbench -R in the background, a probe row every PROBE_MS on the source, the target
#          polled every POLL_MS; lag of a row = target clock_timestamp() when first seen - sent
write_helper() {
    cat >"$W/helper.py" <<'PY'
import argparse, math, os, subprocess, sys, threading, time
import psycopg2

SRC, DST, SIDE = os.environ["SRC_DSN"], os.environ["DST_DSN"], os.environ["SIDE"]
PIPELINE, NATIVE = os.environ["PIPELINE"], os.environ["NATIVE"]
TIMEOUT = float(os.environ["TIMEOUT"])
NTABLES = int(os.environ["NTABLES"])


class Fail(Exception):
    pass


class Conn:
    """An autocommit connection that reconnects after a broken connection."""
    def __init__(self, dsn):
        self.dsn, self.c = dsn, None

    def rows(self, sql, args=None):
        for attempt in (0, 1):
            if self.c is None or self.c.closed:
                self.c = psycopg2.connect(self.dsn)
                self.c.autocommit = True
            try:
                with self.c.cursor() as cur:
                    cur.execute(sql, args)
                    return cur.fetchall() if cur.description else []
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                self.c = None
                if attempt:
                    raise

    def one(self, sql, args=None):
        r = self.rows(sql, args)
        return r[0] if r else None


def lsn(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def alive(pid):
    if not pid:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def position(src, dst):
    """The source LSN the target is applied up to, as text, or None."""
    if SIDE == "ours":
        r = dst.one("SELECT applied_lsn::text FROM fig_replication.pipelines WHERE name = %s", (PIPELINE,))
    else:
        r = src.one("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (NATIVE,))
    return r[0] if r and r[0] else None


def wait_until(label, checks, t0, pid, poll=0.01):
    """Polls each check until all are true; seconds since t0 at which each first was."""
    done, last_err = {}, None
    deadline = time.time() + TIMEOUT
    while True:
        for name, check in checks.items():
            if name in done:
                continue
            try:
                if check():
                    done[name] = time.time() - t0
            except psycopg2.Error as e:  # e.g. the state table not created yet
                last_err = f"{type(e).__name__}: {str(e).strip()}"
        if len(done) == len(checks):
            return done
        if not alive(pid):
            raise Fail(f"{label}: the replication process {pid} exited")
        if time.time() > deadline:
            raise Fail(f"{label}: not done within {TIMEOUT:.0f} s (done: {sorted(done) or 'nothing'}"
                       + (f"; last error: {last_err}" if last_err else "") + ")")
        time.sleep(poll)


def cmd_copy(a):
    src, dst = Conn(SRC), Conn(DST)
    if SIDE == "ours":
        check = lambda: (dst.one("SELECT phase = 'streaming' FROM fig_replication.pipelines WHERE name = %s",
                                 (PIPELINE,)) or [False])[0]
    else:
        check = lambda: dst.one("SELECT count(*) FILTER (WHERE srsubstate = 'r') = %s FROM pg_subscription_rel",
                                (NTABLES,))[0]
    done = wait_until("initial copy", {"copy": check}, a.t0, a.pid)
    print(f"copy_s={done['copy']:.3f}")


def cmd_timed(a):
    src, dst = Conn(SRC), Conn(DST)
    position(src, dst)  # connections open before the clock starts
    dst.one("SELECT 1")
    if a.sql:
        started = time.time()
        src.rows(a.sql)  # autocommit: returns once committed
        t0 = time.time()
        print(f"statement_s={t0 - started:.3f}")
    elif a.cmd:
        with open(a.out, "w") as f:
            cmd = subprocess.Popen(a.cmd, stdout=f, stderr=subprocess.STDOUT)
            while (rc := cmd.poll()) is None:
                if not alive(a.pid):
                    cmd.kill()
                    raise Fail(f"{a.label}: the replication process {a.pid} exited while {a.cmd[0]} ran")
                time.sleep(0.01)
        t0 = time.time()
        if rc:
            raise Fail(f"{a.cmd[0]} exited {rc}; see {a.out}")
    else:
        t0 = time.time()
    x = src.one("SELECT pg_current_wal_lsn()::text")[0]
    at = position(src, dst)
    marker = src.one("INSERT INTO bench_probe DEFAULT VALUES RETURNING id")[0]
    done = wait_until(a.label, {
        "position": lambda: (p := position(src, dst)) is not None and lsn(p) >= lsn(x),
        "visible": lambda: dst.one("SELECT count(*) FROM bench_probe WHERE id = %s", (marker,))[0] == 1,
    }, t0, a.pid)
    print(f"lsn={x}")
    print(f"behind_bytes={max(0, lsn(x) - lsn(at)) if at else -1}")
    print(f"position_s={done['position']:.3f}")
    print(f"visible_s={done['visible']:.3f}")


def pct(xs, p):  # nearest rank
    xs = sorted(xs)
    return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)] if xs else float("nan")


def cmd_lag(a):
    src, dst = Conn(SRC), Conn(DST)
    start = dst.one("SELECT coalesce(max(id), 0) FROM bench_probe")[0]
    inserted, seen, errors = [], {}, []
    stop_insert, stop_watch = threading.Event(), threading.Event()

    def inserter():
        try:
            nxt = time.time()
            while not stop_insert.is_set():
                inserted.append(src.one("INSERT INTO bench_probe DEFAULT VALUES RETURNING id")[0])
                nxt += a.probe_ms / 1000
                delay = nxt - time.time()
                if delay > 0:
                    time.sleep(delay)
                else:
                    nxt = time.time()
        except Exception as e:
            errors.append(f"probe inserter: {e}")

    def watcher():
        try:
            last = start
            while not stop_watch.is_set():
                for i, lag in dst.rows("SELECT id, extract(epoch FROM clock_timestamp() - sent) FROM bench_probe "
                                       "WHERE id > %s ORDER BY id", (last,)):
                    seen[i] = float(lag)
                    last = i
                time.sleep(a.poll_ms / 1000)
        except Exception as e:
            errors.append(f"target poller: {e}")

    threads = [threading.Thread(target=watcher, daemon=True), threading.Thread(target=inserter, daemon=True)]
    with open(a.out, "w") as f:
        pb = subprocess.Popen(a.cmd, stdout=f, stderr=subprocess.STDOUT)
        for t in threads:
            t.start()
        t_end = time.time() + a.seconds
        while time.time() < t_end and not errors:
            if not alive(a.pid):
                stop_insert.set(); pb.kill()
                raise Fail(f"lag run: the replication process {a.pid} exited")
            time.sleep(0.1)
        stop_insert.set()
        threads[1].join()
        try:
            rc = pb.wait(timeout=a.seconds + 30)
        except subprocess.TimeoutExpired:
            pb.kill()
            raise Fail("lag run: pgbench did not finish")
    if rc:
        raise Fail(f"lag run: pgbench exited {rc}; see {a.out}")
    deadline = time.time() + TIMEOUT
    while not errors and any(i not in seen for i in inserted):
        if not alive(a.pid):
            raise Fail(f"lag run: the replication process {a.pid} exited")
        if time.time() > deadline:
            break
        time.sleep(0.05)
    stop_watch.set()
    threads[0].join(timeout=5)
    if errors:
        raise Fail("; ".join(errors))
    lags = [seen[i] * 1000 for i in inserted if i in seen]
    unseen = sum(1 for i in inserted if i not in seen)
    print(f"probes={len(inserted)}")
    print(f"unseen={unseen}")
    print(f"p50_ms={pct(lags, 50):.2f}")
    print(f"p99_ms={pct(lags, 99):.2f}")
    print(f"max_ms={pct(lags, 100):.2f}")
    print(f"mean_ms={sum(lags) / len(lags) if lags else float('nan'):.2f}")
    with open(a.out + ".lags", "w") as f:
        f.writelines(f"{x:.3f}\n" for x in lags)
    if unseen:
        raise Fail(f"lag run: {unseen} of {len(inserted)} probe rows never reached the target within {TIMEOUT:.0f} s")


p = argparse.ArgumentParser()
sub = p.add_subparsers(dest="what", required=True)
c = sub.add_parser("copy"); c.add_argument("--t0", type=float, required=True); c.add_argument("--pid", type=int, default=0)
t = sub.add_parser("timed"); t.add_argument("--label", required=True); t.add_argument("--sql")
t.add_argument("--out"); t.add_argument("--pid", type=int, default=0); t.add_argument("cmd", nargs="*")
l = sub.add_parser("lag"); l.add_argument("--seconds", type=float, required=True); l.add_argument("--out", required=True)
l.add_argument("--probe-ms", type=float, required=True); l.add_argument("--poll-ms", type=float, required=True)
l.add_argument("--pid", type=int, default=0); l.add_argument("cmd", nargs="+")
a = p.parse_args()
try:
    {"copy": cmd_copy, "timed": cmd_timed, "lag": cmd_lag}[a.what](a)
except Fail as e:
    sys.exit(f"[helper] {e}")
PY
}

# CPU accounting for the bulk apply: every process of the source's and the side's servers, and
# our engine, read from /proc every 0.2 s while the phase runs (a process that exits keeps its
# last reading; one that starts counts from zero). On 2 cores the time after the source's commit
# is the work still left for these processes, so this says where a bulk figure came from.
write_cpu_sampler() {
    cat >"$W/cpu.py" <<'PY'
import os, signal, sys, time

# cpu.py OUT ENGINE_PID NAME=POSTMASTER_PID...: on SIGTERM writes "role<TAB>cpu seconds" lines.
out, engine = sys.argv[1], int(sys.argv[2])
clusters = {int(pm): name for name, pm in (a.split("=") for a in sys.argv[3:])}
hz = os.sysconf("SC_CLK_TCK")
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)


def role_of(pid, cluster):
    with open(f"/proc/{pid}/cmdline") as f:
        cmd = f.read().replace("\0", " ")
    if "walsender" in cmd:
        return f"{cluster} walsender"
    if "logical replication worker" in cmd:
        return f"{cluster} apply worker"
    if "[local]" in cmd:
        return f"{cluster} backends"
    return f"{cluster} background"


base, last, role = {}, {}, {}
first = True
while not stop:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ppid, ticks = int(fields[1]), int(fields[11]) + int(fields[12])
            if pid not in role:
                if pid == engine:
                    role[pid] = "engine"
                elif ppid in clusters:
                    role[pid] = role_of(pid, clusters[ppid])
                else:
                    continue
        except (OSError, IndexError, ValueError):
            continue
        base.setdefault(pid, ticks if first else 0)
        last[pid] = ticks
    if first:
        open(out + ".ready", "w").close()
        first = False
    time.sleep(0.2)
totals = {}
for pid, r in role.items():
    if pid in last:
        totals[r] = totals.get(r, 0) + (last[pid] - base[pid]) / hz
with open(out, "w") as f:
    for r, secs in sorted(totals.items(), key=lambda kv: -kv[1]):
        f.write(f"{r}\t{secs:.2f}\n")
PY
}

cpu_start() { # side out: the sampler, running once it has its first reading
    local c args=()
    for c in src "$1"; do args+=("$c=$(head -1 "$W/$c/data/postmaster.pid")"); done
    "$PY" "$W/cpu.py" "$2" "$ENGINE_PID" "${args[@]}" &
    CPU_PID=$!
    for _ in $(seq 1 100); do [[ -e $2.ready ]] && return 0; sleep 0.02; done
    echo "   WARNING: the CPU sampler did not start"
}

cpu_stop() { # out: stops the sampler and prints its figures on one line
    ((CPU_PID)) || return 0
    kill -TERM "$CPU_PID" 2>/dev/null || true
    wait "$CPU_PID" 2>/dev/null || true
    CPU_PID=0
    [[ -s $1 ]] || return 0
    awk -F'\t' '$2 >= 0.05 { line = line sep $1 " " $2 " s"; sep = ", "; total += $2 }
        END { printf "      (CPU from the UPDATE'"'"'s start until all visible: %s; %.2f s in all)\n", line, total }' "$1"
}

# ---------------------------------------------------------------------------------------------
# 5. Starting, checking and stopping each side

write_config() {
    {
        echo '[[pipelines]]'
        echo "name = \"$PIPELINE\""
        echo "source = \"$(url src)\""
        echo "target = \"$(url ours)\""
        local t
        for t in $TABLES; do printf '[[pipelines.tables]]\nsource = "public.%s"\n' "$t"; done
    } >"$W/bench.toml"
}

start_side() { # side: replication of the fresh source into the side's target begins
    case $1 in
    native)
        sql src bench -c "CREATE PUBLICATION $NATIVE FOR TABLE ${TABLES// /, }"
        T0=$(date +%s.%N)
        sql native bench -c "CREATE SUBSCRIPTION $NATIVE CONNECTION '$(dsn src)' PUBLICATION $NATIVE"
        ;;
    ours)
        T0=$(date +%s.%N)
        RUST_LOG=${REPLICATION_LOG:-info} "$REPL_BIN" run --config "$W/bench.toml" >>"$W/ours-engine.log" 2>&1 &
        ENGINE_PID=$!
        PIDS+=("$ENGINE_PID")
        ;;
    esac
}

fail_side() { # side phase helper-output-file: what we know about a failed phase, then exit 1
    local side=$1 phase=$2 out=$3
    echo "   FAILED: $side, $phase"
    [[ -s $out ]] && sed 's/^/     /' "$out"
    [[ -s $out.err ]] && sed 's/^/     /' "$out.err"
    if [[ $side == ours ]]; then
        echo "   -- replication status --"
        timeout 20 "$REPL_BIN" status --config "$W/bench.toml" 2>&1 | sed 's/^/     /' || true
        echo "   -- last 25 lines of the engine's log ($W/ours-engine.log) --"
        tail -25 "$W/ours-engine.log" | sed 's/^/     /'
    else
        echo "   -- native: pg_stat_subscription / pg_subscription_rel on the target --"
        sql native bench -c "SELECT * FROM pg_stat_subscription" -c "SELECT srrelid::regclass, srsubstate FROM pg_subscription_rel" 2>&1 | sed 's/^/     /' || true
        echo "   -- last 15 lines of the native target's server log --"
        tail -15 "$W/native/log" | sed 's/^/     /'
    fi
    echo "   -- last 10 lines of the source's server log --"
    tail -10 "$W/src/log" | sed 's/^/     /'
    die "$side: $phase failed (above)"
}

run_helper() { # side phase out helper-args...: the helper against the source and the side's
    # target, its output in out; a failure is fatal. It runs as a background job we wait for, so
    # a TERM or Ctrl-C reaches our trap at once rather than when the helper is done.
    local side=$1 phase=$2 out=$3 rc=0
    shift 3
    (
        export SRC_DSN SIDE=$side DST_DSN PIPELINE NATIVE TIMEOUT NTABLES
        SRC_DSN=$(dsn src) DST_DSN=$(dsn "$side") NTABLES=$(wc -w <<<"$TABLES")
        exec "$PY" "$W/helper.py" "$@"
    ) >"$out" 2>"$out.err" &
    HELPER_PID=$!
    wait "$HELPER_PID" || rc=$?
    HELPER_PID=0
    ((rc == 0)) || fail_side "$side" "$phase" "$out"
}

content_check() { # side: count and an order-independent hash of every row, source vs target
    local side=$1 t s d bad=0 q
    for t in $TABLES; do
        q="SELECT count(*) || ' ' || coalesce(sum(hashtext(x::text)::bigint), 0) FROM $t x"
        s=$(sql src bench -c "$q")
        d=$(sql "$side" bench -c "$q")
        if [[ $s != "$d" ]]; then
            echo "   content check: $t DIFFERS: source (rows hash) $s, target $d"
            bad=1
        fi
    done
    ((bad)) || echo "   content check: all $(wc -w <<<"$TABLES") tables equal (row count and row hash)"
    return "$bad"
}

stop_engine() { # stops our engine; its exit status must be 0 (a clean stop)
    local i rc=0
    kill -TERM "$ENGINE_PID" 2>/dev/null || true
    for i in $(seq 1 300); do kill -0 "$ENGINE_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$ENGINE_PID" 2>/dev/null; then
        kill -KILL "$ENGINE_PID" 2>/dev/null || true
        wait "$ENGINE_PID" 2>/dev/null || true
        PIDS=() ENGINE_PID=0
        tail -10 "$W/ours-engine.log" | sed 's/^/     /'
        die "our engine did not stop within 30 s of SIGTERM"
    fi
    wait "$ENGINE_PID" || rc=$?
    PIDS=() ENGINE_PID=0 # the only process in PIDS, gone now
    ((rc == 0)) || { tail -10 "$W/ours-engine.log" | sed 's/^/     /'; die "our engine exited $rc on SIGTERM"; }
}

stop_side() { # side: replication stopped and its slot, publication (and for ours, state) removed
    case $1 in
    native)
        sql native bench -c "DROP SUBSCRIPTION $NATIVE"
        sql src bench -c "DROP PUBLICATION $NATIVE"
        ;;
    ours)
        stop_engine
        "$REPL_BIN" drop --config "$W/bench.toml" >"$W/ours-drop.log" 2>&1 ||
            die "replication drop failed: $(cat "$W/ours-drop.log")"
        ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# 6. One side, all four phases

run_side() { # side
    local side=$1 out pid=0 rows accounts secs rps v
    echo
    case $side in
    native) echo "== native: PostgreSQL $PGVER CREATE PUBLICATION / CREATE SUBSCRIPTION (default options) ==" ;;
    ours) echo "== ours: replication run ($REPL_BIN) ==" ;;
    esac
    log "$side: fresh source database (from the template) and an empty target"
    fresh_source
    fresh_target "$side"
    rows=0
    for v in $TABLES; do rows=$((rows + $(sql src bench -c "SELECT count(*) FROM $v"))); done
    accounts=$(sql src bench -c "SELECT count(*) FROM pgbench_accounts")

    # 1. Initial copy: from CREATE SUBSCRIPTION / the engine's start to every table copied.
    settle "$side" "initial copy"
    log "$side: initial copy"
    start_side "$side"
    [[ $side == ours ]] && pid=$ENGINE_PID
    out=$W/$side-copy.out
    run_helper "$side" "initial copy" "$out" copy --t0 "$T0" --pid "$pid"
    secs=$(kv copy_s "$out")
    rps=$(awk -v r="$rows" -v s="$secs" 'BEGIN { printf "%.0f", r / s }')
    record "$side" copy_s "$secs"
    record "$side" copy_rows_per_s "$rps"
    printf '   initial copy: %d rows (%d tables) in %.2f s = %d rows/s\n' "$rows" "$(wc -w <<<"$TABLES")" "$secs" "$rps"
    if [[ $side == ours ]]; then
        v=$(sql ours bench -c "SELECT copied_rows || ' rows, ' || round(extract(epoch FROM copy_finished_at - copy_started_at)::numeric, 2) || ' s' FROM fig_replication.pipelines WHERE name = '$PIPELINE'")
        echo "   (the engine recorded: copied $v between copy_started_at and copy_finished_at)"
        [[ ${v%% *} == "$rows" ]] || echo "   WARNING: the engine's copied_rows (${v%% *}) is not the source's $rows rows"
    fi

    # 2. Bulk apply: one transaction updating every accounts row, source commit -> applied.
    settle "$side" "bulk apply"
    log "$side: bulk apply (one transaction updating $accounts rows)"
    out=$W/$side-bulk.out
    cpu_start "$side" "$W/$side-bulk-$ROUND.cpu"
    run_helper "$side" "bulk apply" "$out" timed --label "bulk apply" --pid "$pid" \
        --sql "UPDATE pgbench_accounts SET abalance = abalance + 1"
    secs=$(kv visible_s "$out")
    rps=$(awk -v r="$accounts" -v s="$secs" 'BEGIN { printf "%.0f", r / s }')
    record "$side" bulk_s "$secs"
    record "$side" bulk_rows_per_s "$rps"
    record "$side" bulk_position_s "$(kv position_s "$out")"
    printf '   bulk apply: %d rows, source commit -> all visible on the target in %.2f s = %d rows/s\n' "$accounts" "$secs" "$rps"
    v=$(kv statement_s "$out")
    record "$side" bulk_statement_s "$v"
    printf '      (the UPDATE itself took %.2f s on the source: %.2f s from its start to all visible)\n' "$v" "$(awk -v a="$v" -v b="$secs" 'BEGIN { print a + b }')"
    printf '      (%s confirmed applied up to %s at %.2f s)\n' "$(position_name "$side")" "$(kv lsn "$out")" "$(kv position_s "$out")"
    cpu_stop "$W/$side-bulk-$ROUND.cpu"

    # 3. Catch-up: an unthrottled burst, then the time from its end until the target has it all.
    settle "$side" "burst"
    log "$side: ${BURST} s pgbench burst (-c4 -j2, TPC-B-like), then catch-up"
    out=$W/$side-burst.out
    run_helper "$side" "burst and catch-up" "$out" timed --label "catch-up" --pid "$pid" --out "$W/$side-pgbench-burst.log" -- \
        "$PGBIN/pgbench" -h "$W/src/sock" -p 5432 -U postgres -n -c 4 -j 2 -T "$BURST" bench
    local txns tps
    txns=$(awk -F': ' '/^number of transactions actually processed/ {print $2; exit}' "$W/$side-pgbench-burst.log")
    tps=$(awk '/^tps = / {printf "%.0f", $3; exit}' "$W/$side-pgbench-burst.log")
    secs=$(kv visible_s "$out")
    record "$side" burst_tps "$tps"
    record "$side" catchup_s "$secs"
    record "$side" catchup_position_s "$(kv position_s "$out")"
    printf '   burst: %s transactions, %s tps; the target was %.1f MB of WAL behind at the end\n' \
        "${txns%%/*}" "$tps" "$(awk -v b="$(kv behind_bytes "$out")" 'BEGIN { printf "%.1f", b / 1048576 }')"
    printf '   catch-up: all visible on the target %.2f s after the burst\n' "$secs"
    printf '      (%s confirmed applied up to %s at %.2f s)\n' "$(position_name "$side")" "$(kv lsn "$out")" "$(kv position_s "$out")"

    # 4. Lag at a fixed rate, sampled by probe rows, both sides watched by the same poller.
    settle "$side" "lag run"
    log "$side: lag at $RATE tps for ${LAG_SECONDS} s"
    out=$W/$side-lag.out
    run_helper "$side" "lag run" "$out" lag --seconds "$LAG_SECONDS" --probe-ms "$PROBE_MS" --poll-ms "$POLL_MS" \
        --pid "$pid" --out "$W/$side-pgbench-lag.log" -- \
        "$PGBIN/pgbench" -h "$W/src/sock" -p 5432 -U postgres -n -c 4 -j 2 -R "$RATE" -T "$LAG_SECONDS" bench
    tps=$(awk '/^tps = / {printf "%.0f", $3; exit}' "$W/$side-pgbench-lag.log")
    record "$side" lag_tps "$tps"
    for v in p50 p99 max; do record "$side" "lag_${v}_ms" "$(kv "${v}_ms" "$out")"; done
    cp "$W/$side-pgbench-lag.log.lags" "$W/lags-$side-$ROUND"
    printf '   lag at -R %s: pgbench ran %s tps; %s probe rows, p50=%s ms p99=%s ms max=%s ms (mean %s ms)\n' \
        "$RATE" "$tps" "$(kv probes "$out")" "$(kv p50_ms "$out")" "$(kv p99_ms "$out")" "$(kv max_ms "$out")" "$(kv mean_ms "$out")"

    # The result must be right for the speed to mean anything.
    out=$W/$side-final.out
    run_helper "$side" "final catch-up" "$out" timed --label "final catch-up" --pid "$pid"
    content_check "$side" || INVALID+=" $side"
    if [[ $side == ours ]]; then
        if timeout "$TIMEOUT" "$REPL_BIN" verify --config "$W/bench.toml" >"$W/ours-verify.log" 2>&1; then
            echo "   replication verify: equal (exit 0)"
        else
            echo "   replication verify: NOT equal or failed (exit $?):"
            sed 's/^/     /' "$W/ours-verify.log" | head -30
            [[ $INVALID == *ours* ]] || INVALID+=" ours"
        fi
        v=$(grep -cE ' (WARN|ERROR) ' "$W/ours-engine.log" || true)
        echo "   engine log lines at WARN/ERROR: $v"
        ((v == 0)) || grep -E ' (WARN|ERROR) ' "$W/ours-engine.log" | head -5 | sed 's/^/     /'
    fi
    stop_side "$side"
}

# ---------------------------------------------------------------------------------------------
# 7. Summary: every figure for both sides, and a ratio where > 1 always means ours is better.

summary() {
    echo
    echo "== summary: pgbench scale $SCALE, burst ${BURST} s, lag run ${LAG_SECONDS} s at $RATE tps =="
    "$PY" - "$W" "$ROUNDS" <<'PY'
import glob, math, statistics, sys
w, rounds = sys.argv[1], int(sys.argv[2])
r = {}  # (side, metric) -> {round: value}
for line in open(f"{w}/results.tsv"):
    rnd, side, metric, value = line.rstrip("\n").split("\t")
    r.setdefault((side, metric), {})[int(rnd)] = float(value)
def g(side, m):  # the median over rounds
    v = r.get((side, m))
    return statistics.median(v.values()) if v else None
def fmt(v, unit):
    return "-" if v is None else (f"{v:,.0f}" if unit == "rows/s" else f"{v:.2f}")
rows = [  # metric, label, unit, higher is better
    ("copy_rows_per_s", "initial copy", "rows/s", True),
    ("bulk_rows_per_s", "bulk apply", "rows/s", True),
    ("catchup_s", "catch-up after the burst", "s", False),
    ("lag_p50_ms", "lag p50", "ms", False),
    ("lag_p99_ms", "lag p99", "ms", False),
    ("lag_max_ms", "lag max", "ms", False),
]
def ratio(n, o, unit, higher):
    floor = 0.01 if unit == "s" else 0.5 if unit == "ms" else 0  # the polls' resolution
    return o / n if higher else max(n, floor) / max(o, floor)
def show(x):
    return f"{x:.2f}x" if x >= 0.1 else f"{x:.3f}x"
if rounds > 1:
    print(f"  medians of {rounds} rounds; ratio: the median of the rounds' ratios (each round's sides ran back to back)")
print(f"  {'':<42} {'native':>10} {'ours':>10}   ratio (> 1: ours better)")
ratios = {}
for m, label, unit, higher in rows:
    n, o = g("native", m), g("ours", m)
    text = ""
    if n is not None and o is not None:
        per = r[("native", m)]
        each = [ratio(per[k], r[("ours", m)][k], unit, higher) for k in sorted(per) if k in r[("ours", m)]]
        ratios[m] = statistics.median(each)
        text = f"{show(ratios[m]):>7}  " + ("ours/native" if higher else "native/ours")
        if len(each) > 1:
            text += "  (rounds: " + " ".join(show(x) for x in each) + ")"
    better = "higher" if higher else "lower"
    print(f"  {label + ' (' + unit + ', ' + better + ' better)':<42} {fmt(n, unit):>10} {fmt(o, unit):>10}   {text}")
def pct(xs, p):  # nearest rank, as the helper computes it
    xs = sorted(xs)
    return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)] if xs else None
pooled = {}
for side in ("native", "ours"):
    xs = [float(l) for f in sorted(glob.glob(f"{w}/lags-{side}-*")) for l in open(f)]
    if xs:
        pooled[side] = (len(xs), pct(xs, 50), pct(xs, 99))
if rounds > 1 and pooled:
    print("  lag over every round's probes pooled: " + "; ".join(
        f"{side} {n} probes, p50 {p50:.2f} ms, p99 {p99:.2f} ms" for side, (n, p50, p99) in pooled.items()))
for side in ("native", "ours"):
    if g(side, "burst_tps") is not None:
        print(f"  {side}: burst ran {g(side, 'burst_tps'):.0f} tps, lag run {g(side, 'lag_tps'):.0f} tps; applied position "
              f"confirmed {g(side, 'bulk_position_s'):.2f} s after the bulk commit, {g(side, 'catchup_position_s'):.2f} s after the burst")
if ratios:
    def goal(text, ok, detail):
        print(f"  goal {text}: {'MET' if ok else 'NOT MET'} ({detail})")
    if "copy_rows_per_s" in ratios:
        goal("initial copy >= 2x native", ratios["copy_rows_per_s"] >= 2, show(ratios["copy_rows_per_s"]))
    if "bulk_rows_per_s" in ratios:
        goal("bulk apply >= 3x native", ratios["bulk_rows_per_s"] >= 3, show(ratios["bulk_rows_per_s"]))
    if len(pooled) == 2:
        # Over every probe of every round: with one round, the same figure as the table's.
        (_, _, n99), (_, _, o99) = pooled["native"], pooled["ours"]
        goal("lag p99 no worse than native", o99 <= n99, f"ours {o99:.2f} ms, native {n99:.2f} ms"
             + (f", {rounds} rounds pooled" if rounds > 1 else ""))
PY
}

# ---------------------------------------------------------------------------------------------

main() {
    local side
    for side in $SIDES; do
        [[ $side == native || $side == ours ]] || die "SIDES may name native and ours, not '$side'"
    done
    install_missing
    PGBIN=$(pg_bindir) || die "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin"
    for t in python3 cargo git runuser; do
        command -v "$t" >/dev/null || die "$t not found"
    done
    pick_python || die "no python3 here imports psycopg2 (install python3-psycopg2)"
    if [[ $EUID -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "no postgres user (install the postgresql package)"
    fi
    if [[ $SIDES == *ours* ]]; then REPL_BIN=$(release_binary replication); fi

    W=$(mktemp -d /tmp/replication-bench.XXXXXX)
    chmod 755 "$W" # the postgres user must traverse it to reach its data dirs and sockets
    : >"$W/results.tsv"
    write_helper
    write_cpu_sampler
    write_config

    log "starting three PostgreSQL clusters ($PGBIN): source, native target, our target"
    start_cluster src
    start_cluster native
    start_cluster ours
    log "writing WAL once on each cluster, so no timed phase creates WAL segments"
    for c in src native ours; do warm_wal "$c"; done
    PGVER=$(sql src postgres -c "SHOW server_version" | awk '{print $1}')
    make_template

    echo "== replication bench: $ROUNDS round(s), commit $(git -C "$ROOT" rev-parse --short HEAD)$( [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no) ]] && echo ' (+uncommitted changes)'), $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) cores, PostgreSQL $PGVER =="
    echo "   pgbench scale $SCALE ($(sql src bench_template -c "SELECT count(*) FROM pgbench_accounts") accounts rows); tables: $TABLES"
    echo "   each side: a fresh copy of the same source database, its own target cluster, run alone"

    local order=$SIDES
    for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
        # Every other round the other side goes first, so a drift in the machine's speed during
        # the run does not always favour the same side.
        ((ROUND > 1)) && order=$(tr ' ' '\n' <<<"$order" | tac | tr '\n' ' ')
        ((ROUNDS > 1)) && echo && echo "==== round $ROUND of $ROUNDS: $order ===="
        for side in $order; do run_side "$side"; done
    done
    summary
    [[ -z $INVALID ]] || die "the target of:$INVALID did not match the source: its figures above are not valid"
}

main "$@"
