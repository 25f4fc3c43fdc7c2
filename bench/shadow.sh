#!/usr/bin/env bash
# The parallel run's cost: the router with catalog.shadow off and at 100%, in the same run, at the
# same offered load; client p50/p99, throughput and router CPU per request for both, as ratios,
# beside HAProxy for the router/HAProxy throughput ratio. At the paced rate, two references in the
# same run: the candidate sent the same load by another client with shadowing off (what sharing
# this machine with the candidate's work costs), and nginx with and without its mirror module (the
# common way to shadow). See bench/README.md.
#
#   bench/shadow.sh                       # D=8 s per wrk run, ROUNDS=3, C=32 connections
#   D=5 ROUNDS=1 bench/shadow.sh          # quick (about 1 minute once the router is built)
#   RATE=4000 bench/shadow.sh             # the paced load's rate (default: half of round 1's
#                                         # lower router throughput, off or shadow); PACED=0 skips it
#
# Everything it starts (PostgreSQL, nginx upstreams and proxies, HAProxy, the router) lives in one temp
# dir, listens on loopback ports picked at run time, and is stopped and removed on exit.
set -euo pipefail

D=${D:-8}
ROUNDS=${ROUNDS:-3}
C=${C:-32}
PACED=${PACED:-1}
RATE=${RATE:-}
RATE_FRACTION=${RATE_FRACTION:-0.5}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
export PATH="$PATH:/usr/sbin:/sbin"

# Both sides answer every path with the same body (router.sh's), so every
# comparison matches and the run measures the cost of shadowing, not of differences.
BODY='{"id":1,"title":"Abbey Road","artist":"The Beatles","price_cents":1999,"stock":7}'
REQ_PATH=/catalog/albums/1
USER_HEADER='x-user-id: bench-user'
SHADOW_TOGGLE=catalog.shadow
READ_TOGGLE=catalog.reads
EXPLAIN="/admin/explain?method=GET&path=$REQ_PATH"

W=""              # the temp dir holding every config, log and the database
PIDS=()           # processes we started (nginx masters, HAProxy, the router), stopped on exit
PG_STARTED=0
USED_PORTS=" "

# ---------------------------------------------------------------------------------------------
# Cleanup: runs on every exit; every step may fail harmlessly.
cleanup() {
    local rc=$?
    set +e
    local pid i
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for i in $(seq 1 30); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    if ((PG_STARTED)); then
        as_pg "$PGBIN/pg_ctl" -D "$W/pg/data" stop -m immediate >/dev/null 2>&1
    fi
    [[ -n $W && -d $W ]] && rm -rf "$W"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Tools, ports, waiting (as in router.sh)

pg_bindir() { # the newest /usr/lib/postgresql/N/bin that has initdb, or nothing
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [[ -x $d/initdb ]] && { echo "$d"; return 0; }
    done
    return 1
}

install_missing() {
    local pkgs=()
    command -v wrk >/dev/null || pkgs+=(wrk)
    command -v nginx >/dev/null || pkgs+=(nginx)
    command -v haproxy >/dev/null || pkgs+=(haproxy)
    command -v curl >/dev/null || pkgs+=(curl)
    pg_bindir >/dev/null || pkgs+=(postgresql)
    apt_install "${pkgs[@]}"
}

free_port() { # a loopback port free right now, never one handed out before in this run
    local p
    while :; do
        p=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
        [[ $USED_PORTS == *" $p "* ]] || break
    done
    USED_PORTS+="$p "
    echo "$p"
}

wait_http() { # url seconds pid: until the url gives any HTTP answer; fails early if pid died
    local url=$1 deadline=$((SECONDS + $2)) pid=$3
    until curl -s -o /dev/null --max-time 1 -H "Authorization: Bearer ${TOKEN:-}" "$url"; do
        kill -0 "$pid" 2>/dev/null || die "process $pid (for $url) exited; logs are in $W"
        ((SECONDS < deadline)) || die "$url did not answer within $2 s"
        sleep 0.1
    done
}

# ---------------------------------------------------------------------------------------------
# The router's toggle database: a throwaway cluster on a unix socket only.

start_postgres() {
    PGBIN=$(pg_bindir) || die "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin"
    if [[ $EUID -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "no postgres user (install the postgresql package)"
    fi
    mkdir -p "$W/pg" "$W/pgsock"
    [[ $EUID -eq 0 ]] && chown postgres: "$W/pg" "$W/pgsock"
    log "starting PostgreSQL ($PGBIN)"
    as_pg "$PGBIN/initdb" -D "$W/pg/data" -U postgres -A trust -E UTF8 --no-sync >"$W/initdb.log" 2>&1 ||
        die "initdb failed: $(tail -5 "$W/initdb.log")"
    as_pg "$PGBIN/pg_ctl" -D "$W/pg/data" -l "$W/pg/log" -w -t 30 \
        -o "-c listen_addresses='' -k $W/pgsock -p 5432" start >/dev/null ||
        die "pg_ctl start failed: $(tail -5 "$W/pg/log" 2>/dev/null)"
    PG_STARTED=1
    as_pg "$PGBIN/createdb" -h "$W/pgsock" -p 5432 -U postgres router
    DBURL="postgresql://postgres@/router?host=$W/pgsock&port=5432"
}

# ---------------------------------------------------------------------------------------------
# Upstreams, HAProxy, the router: each in the foreground of a background job, so we hold its pid.

start_nginx() { # name conf-body: an nginx master with one worker
    local name=$1 http=$2
    mkdir -p "$W/$name"
    cat >"$W/$name/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $W/$name/nginx.pid; error_log $W/$name/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $W/$name/body; proxy_temp_path $W/$name/proxy;
  fastcgi_temp_path $W/$name/fastcgi; uwsgi_temp_path $W/$name/uwsgi; scgi_temp_path $W/$name/scgi;
  $http
}
CONF
    nginx -t -q -c "$W/$name/nginx.conf" 2>"$W/$name/test.log" || die "nginx $name config: $(cat "$W/$name/test.log")"
    nginx -c "$W/$name/nginx.conf" >"$W/$name/stdout.log" 2>&1 &
    PIDS+=($!)
    LAST_PID=$!
}

start_upstream() { # name: the static JSON upstream on a port of its own; sets LAST_PORT
    LAST_PORT=$(free_port)
    start_nginx "$1" "server { listen 127.0.0.1:$LAST_PORT; location / { default_type application/json; return 200 '$BODY'; } }"
    wait_http "http://127.0.0.1:$LAST_PORT/" 10 "$LAST_PID"
}

start_nginx_proxies() { # the reference for shadowing's cost: nginx in front of the primary, with
    # and without its mirror module copying each request to the candidate (its answer dropped)
    local up="upstream primary { server 127.0.0.1:$MONO_PORT; keepalive 64; }
      upstream candidate { server 127.0.0.1:$CAT_PORT; keepalive 64; }"
    local keep="proxy_http_version 1.1; proxy_set_header Connection '';"
    NX_OFF_PORT=$(free_port)
    start_nginx nginx-plain "$up server { listen 127.0.0.1:$NX_OFF_PORT; location / { $keep proxy_pass http://primary; } }"
    NX_OFF_PID=$LAST_PID
    wait_http "http://127.0.0.1:$NX_OFF_PORT$REQ_PATH" 10 "$NX_OFF_PID"
    NX_ON_PORT=$(free_port)
    start_nginx nginx-mirror "$up server { listen 127.0.0.1:$NX_ON_PORT;
      location / { mirror /mirror; $keep proxy_pass http://primary; }
      location = /mirror { internal; $keep proxy_pass http://candidate\$request_uri; } }"
    NX_ON_PID=$LAST_PID
    wait_http "http://127.0.0.1:$NX_ON_PORT$REQ_PATH" 10 "$NX_ON_PID"
}

start_haproxy() { # upstream-port: HAProxy in front of the primary's upstream, as in router.sh
    HA_PORT=$(free_port)
    cat >"$W/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend f
  bind 127.0.0.1:$HA_PORT
  default_backend b
backend b
  http-reuse always
  server s1 127.0.0.1:$1
CONF
    haproxy -db -f "$W/haproxy.cfg" >"$W/haproxy.log" 2>&1 &
    HA_PID=$!
    PIDS+=("$HA_PID")
    wait_http "http://127.0.0.1:$HA_PORT/" 10 "$HA_PID"
}

start_router() { # data-port admin-port: one router, one data-path thread; monolith and catalog apart
    ROUTER_THREADS=1 ROUTER_INSTANCE=shadow-bench \
        ROUTER_LISTEN="127.0.0.1:$1" ROUTER_ADMIN_LISTEN="127.0.0.1:$2" \
        ROUTER_TOKEN="$TOKEN" ROUTER_DATABASE_URL="$DBURL" \
        ROUTER_UPSTREAM_MONOLITH="http://127.0.0.1:$MONO_PORT" \
        ROUTER_UPSTREAM_CATALOG="http://127.0.0.1:$CAT_PORT" \
        ROUTER_UPSTREAM_WISHLIST="http://127.0.0.1:$MONO_PORT" RUST_LOG=warn \
        "$ROUTER_BIN" >"$W/router.log" 2>&1 &
    ROUTER_PID=$!
    PIDS+=("$ROUTER_PID")
    wait_http "http://127.0.0.1:$2/admin/routes" 30 "$ROUTER_PID"
    wait_http "http://127.0.0.1:$1/" 10 "$ROUTER_PID"
}

admin() { # method path [curl args...]: an admin call that must succeed; prints the body
    local method=$1 path=$2
    shift 2
    local out code
    out=$(curl -s --max-time 10 -w '\n%{http_code}' -X "$method" "http://127.0.0.1:$R_ADMIN$path" \
        -H "Authorization: Bearer $TOKEN" -H 'X-Actor: bench/shadow.sh' \
        -H "X-Reason: benchmark setup" "$@")
    code=${out##*$'\n'}
    [[ $code == 2* ]] || die "admin $method $path answered $code: ${out%$'\n'*}"
    echo "${out%$'\n'*}"
}

explain_shadow() { # the side a shadow copy of the benchmark's request goes to now ("none" if off)
    admin GET "$EXPLAIN" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["primary"], d["shadow"] or "none")'
}

set_mode() { # off|shadow: catalog.shadow disabled or enabled (default strategy: 100%), checked
    local want got
    if [[ $1 == shadow ]]; then
        admin POST "/admin/toggles/$SHADOW_TOGGLE/enable" >/dev/null
        want="monolith catalog"
    else
        admin POST "/admin/toggles/$SHADOW_TOGGLE/disable" >/dev/null
        want="monolith none"
    fi
    got=$(explain_shadow)
    [[ $got == "$want" ]] || die "after setting $SHADOW_TOGGLE to $1 the router explains primary/shadow '$got', not '$want'"
}

diff_counts() { # the shadow report summed over routes: compared matched real transient dropped too_large failed
    admin GET /admin/diffs | python3 -c '
import json, sys
d = json.load(sys.stdin)["routes"]
keys = ["compared", "matched", "real", "transient", "dropped", "too_large", "failed"]
print(" ".join(str(sum(r.get(k, 0) for r in d.values())) for k in keys))'
}

settle() { # until the shadow counters stop moving (in-flight shadows done), at most ~6 s; prints them
    local prev="" cur deadline=$((SECONDS + 6))
    while :; do
        cur=$(diff_counts)
        [[ $cur == "$prev" ]] && break
        ((SECONDS < deadline)) || break
        prev=$cur
        sleep 0.3
    done
    echo "$cur"
}

# ---------------------------------------------------------------------------------------------
# Load and measurement

to_us() { # wrk latency ("812.00us", "1.23ms", "1.01s", "1.00m") to microseconds
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        m = (u == "us") ? 1 : (u == "ms") ? 1000 : (u == "s") ? 1e6 : (u == "m") ? 6e7 : -1
        if (m < 0) { print "NaN"; exit } ; printf "%.0f", n * m }'
}

cpu_ticks() { # pids...: user+system clock ticks of these processes and their children
    local pid total=0 p
    for pid in "$@"; do
        for p in "$pid" $(pgrep -P "$pid" 2>/dev/null); do
            [[ -r /proc/$p/stat ]] || continue
            total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
        done
    done
    echo "$total"
}

sys_ticks() { # pid: system-time clock ticks of one process (the kernel's share: sockets, syscalls)
    awk '{print $15}' "/proc/$1/stat"
}

per_request() { # ticks requests: microseconds of CPU per request
    awk -v t="$1" -v hz="$(getconf CLK_TCK)" -v n="$2" 'BEGIN { if (n > 0) printf "%.2f", t * 1e6 / hz / n; else print "NaN" }'
}

# A paced load with plain wrk (wrk2 is not packaged in Debian): one wrk thread whose Lua delay()
# hands each request the next slot of a fixed schedule, RATE per second over all connections.
# A late answer makes its connection send at once (catching up), but wrk times each request from
# when it was sent, not from its slot: no coordinated-omission correction, so keep RATE well below
# what both modes can sustain.
write_pacer() {
    cat >"$W/paced.lua" <<'LUA'
local ffi = require("ffi")
ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } bench_ts; int clock_gettime(int, bench_ts *); ]]
local ts = ffi.new("bench_ts")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local interval, next_at
init = function(args) interval = 1000 / tonumber(args[1]) end
delay = function()
  local now = now_ms()
  next_at = (next_at or now) + interval
  local d = next_at - now
  if d <= 0 then return 0 end
  return math.floor(d)
end
LUA
}

# load mode round: one wrk run against HAProxy or the router, one result line and one TSV row.
# load: sat (closed loop, C connections as fast as answered) or paced (RATE/s over C connections).
measure() {
    local load=$1 mode=$2 round=$3 port pid out counts="" r0 r1 s0 s1 sys u0 u1 requests rps p50 p99 non2xx sockerr cpu ucpu
    local -a pace=() pace_args=()
    [[ $load == paced ]] && pace=(-s "$W/paced.lua") pace_args=(-- "$RATE")
    if [[ $mode == haproxy ]]; then
        port=$HA_PORT pid=$HA_PID
    elif [[ $mode == nginx ]]; then
        port=$NX_OFF_PORT pid=$NX_OFF_PID
    elif [[ $mode == mirror ]]; then
        port=$NX_ON_PORT pid=$NX_ON_PID
    elif [[ $mode == loaded ]]; then
        # Shadowing off, while another client sends the candidate what shadowing would (same
        # request, same rate): what merely sharing the machine with the candidate's work costs.
        port=$R_PORT pid=$ROUTER_PID
        set_mode off
        admin DELETE /admin/diffs >/dev/null
        timeout $((D + 30)) wrk -t1 -c"$C" -d"$((D + 1))s" --timeout 5s "${pace[@]}" -H "$USER_HEADER" \
            "http://127.0.0.1:$CAT_PORT$REQ_PATH" "${pace_args[@]}" >/dev/null 2>&1 &
        LOADER_PID=$!
        sleep 0.5 # (the loader's connections open before the measured run's)
    else
        port=$R_PORT pid=$ROUTER_PID
        set_mode "$mode"
        admin DELETE /admin/diffs >/dev/null # this run's shadows only (and none with the toggle off)
    fi
    r0=$(cpu_ticks "$pid")
    s0=$(sys_ticks "$pid")
    u0=$(cpu_ticks "$MONO_PID" "$CAT_PID")
    out=$(timeout $((D + 30)) wrk -t1 -c"$C" -d"${D}s" --timeout 5s --latency "${pace[@]}" -H "$USER_HEADER" \
        "http://127.0.0.1:$port$REQ_PATH" "${pace_args[@]}" 2>&1) || die "wrk against $mode failed: $out"
    if [[ $mode == loaded ]]; then
        wait "$LOADER_PID" || die "the candidate's loader failed"
    fi
    # The shadows still in flight finish in the background: their CPU belongs to this run.
    [[ $mode == off || $mode == shadow ]] && counts=$(settle)
    r1=$(cpu_ticks "$pid")
    s1=$(sys_ticks "$pid")
    u1=$(cpu_ticks "$MONO_PID" "$CAT_PID")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    sockerr=$(awk -F'errors: ' '/Socket errors/ {print $2}' <<<"$out")
    [[ -n $rps && -n $requests ]] || die "wrk against $mode gave no result: $out"
    cpu=$(per_request $((r1 - r0)) "$requests")
    ucpu=$(per_request $((u1 - u0)) "$requests")
    sys=$(awk -v s=$((s1 - s0)) -v t=$((r1 - r0)) 'BEGIN { printf "%.0f%%", (t > 0) ? 100 * s / t : 0 }')
    printf 'round %s  %-6s %-8s rps=%-9s p50=%-9s p99=%-9s cpu/req=%-8s (sys %3s)  upstreams cpu/req=%-8s non2xx=%s%s\n' \
        "$round" "$load" "$mode" "$rps" "$p50" "$p99" "${cpu}us" "$sys" "${ucpu}us" "${non2xx:-0}" \
        "${sockerr:+  socket errors: $sockerr}"
    if [[ $mode == shadow ]]; then
        read -r sc sm sr st sd stl sf <<<"$counts"
        printf '          shadows of %s requests: compared=%s matched=%s real=%s transient=%s dropped=%s too_large=%s failed=%s\n' \
            "$requests" "$sc" "$sm" "$sr" "$st" "$sd" "$stl" "$sf"
    elif [[ $mode == off && $counts != "" && $counts != "0 0 0 0 0 0 0" ]]; then
        echo "          WARNING: shadows counted with $SHADOW_TOGGLE off: $counts"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$load" "$mode" "$round" "$rps" \
        "$(to_us "$p50")" "$(to_us "$p99")" "$cpu" "$ucpu" "$requests" "${non2xx:-0}" "${sockerr:-none}" \
        "${counts:-}" >>"$W/results.tsv"
    LAST_RPS=$rps
}

summary() {
    python3 - "$W/results.tsv" "$C" "${RATE:-0}" "$ROUNDS" <<'PY'
import math, statistics, sys

path, conns, rate, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rows = {}
shadows = {}
for line in open(path):
    f = line.rstrip("\n").split("\t")
    load, mode, rnd = f[0], f[1], int(f[2])
    num = lambda s: float(s) if s not in ("", "NaN") else math.nan
    rows[(load, mode, rnd)] = dict(rps=num(f[3]), p50=num(f[4]), p99=num(f[5]), cpu=num(f[6]),
                                   ucpu=num(f[7]), requests=int(f[8]), non2xx=int(f[9]))
    if mode == "shadow" and f[11]:
        shadows[(load, rnd)] = [int(x) for x in f[11].split()] + [int(f[8])]

def med(xs):
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else math.nan

loads = [l for l in ("sat", "paced") if any(k[0] == l for k in rows)]
label = {"sat": f"closed loop, {conns} conns", "paced": f"paced {rate} rps, {conns} conns"}
print()
print(f"== summary: {'medians over %d rounds' % rounds if rounds > 1 else '1 round'}, GET /catalog/albums/1, "
      f"router ROUTER_THREADS=1, HAProxy nbthread 1 ==")
print(f"  {'load':<27} {'mode':<8} {'req/s':>9} {'p50':>9} {'p99':>9} {'router CPU/req':>15} {'upstreams CPU/req':>18}")
for load in loads:
    for mode in ("haproxy", "off", "shadow", "loaded", "nginx", "mirror"):
        rs = [v for (l, m, _), v in rows.items() if l == load and m == mode]
        if not rs:
            continue
        note = {"haproxy": "   (router column: HAProxy's CPU)",
                "loaded": "   (shadowing off; the candidate loaded from outside)",
                "nginx": "   (router column: nginx's CPU)",
                "mirror": "   (nginx mirroring to the candidate)"}.get(mode, "")
        print(f"  {label[load]:<27} {mode:<8} {med([r['rps'] for r in rs]):>9.0f} "
              f"{med([r['p50'] for r in rs]):>7.0f}us {med([r['p99'] for r in rs]):>7.0f}us "
              f"{med([r['cpu'] for r in rs]):>13.2f}us {med([r['ucpu'] for r in rs]):>16.2f}us" + note)

# Ratios per round (both modes of a round ran back to back), then their median.
def ratios(load, base="off", mode="shadow"):
    out = {"p50": [], "p99": [], "rps": [], "cpu": []}
    for rnd in range(1, rounds + 1):
        off, sh = rows.get((load, base, rnd)), rows.get((load, mode, rnd))
        if not off or not sh:
            continue
        out["p50"].append(sh["p50"] / off["p50"])
        out["p99"].append(sh["p99"] / off["p99"])
        out["rps"].append(off["rps"] / sh["rps"])
        out["cpu"].append(sh["cpu"] / off["cpu"])
    return out

print()
print(f"  {'ratios (median of rounds)':<27} {'p50 shadow/off':>15} {'p99 shadow/off':>15} {'req/s off/shadow':>17} {'CPU/req shadow/off':>19}")
rat = {}
for load in loads:
    r = rat[load] = ratios(load)
    print(f"  {label[load]:<27} {med(r['p50']):>15.2f} {med(r['p99']):>15.2f} {med(r['rps']):>17.2f} {med(r['cpu']):>19.2f}")
    if rounds > 1:
        print(f"  {'  per round p99':<27} " + " ".join(f"{x:.2f}" for x in r["p99"]))
# The references, paced: the same ratios for the candidate's load alone (no shadowing), and for
# nginx's mirror module in place of our shadowing.
ref = {}
for name, base, mode in (("candidate loaded, no shadow", "off", "loaded"), ("nginx mirror / nginx", "nginx", "mirror")):
    r = ref[name] = ratios("paced", base, mode)
    if r["p99"]:
        print(f"  {name:<27} {med(r['p50']):>15.2f} {med(r['p99']):>15.2f} {med(r['rps']):>17.2f} {med(r['cpu']):>19.2f}")
        if rounds > 1:
            print(f"  {'  per round p99':<27} " + " ".join(f"{x:.2f}" for x in r["p99"]))

print()
for load in loads:
    tot = [sum(v[i] for (l, _), v in shadows.items() if l == load) for i in range(8)]
    if tot[7]:
        print(f"  shadows, {label[load]}: {tot[0]} compared of {tot[7]} requests, matched={tot[1]} real={tot[2]} "
              f"transient={tot[3]} dropped={tot[4]} too_large={tot[5]} failed={tot[6]}")
non = sum(r["non2xx"] for r in rows.values())
if non:
    print(f"  non-2xx responses over all runs: {non}")

hr = [rows[("sat", "off", r)]["rps"] / rows[("sat", "haproxy", r)]["rps"]
      for r in range(1, rounds + 1) if ("sat", "off", r) in rows and ("sat", "haproxy", r) in rows]
print()
def verdict(ok):
    return "MET" if ok else "NOT MET"
for load in loads:
    p = med(rat[load]["p99"])
    print(f"  client p99 with shadowing <= 1.1x without: {verdict(p <= 1.1)} ({p:.2f}x, {label[load]})")
for name, r in ref.items():
    if r["p99"]:
        print(f"    reference, {label['paced']}: {name}, p99 {med(r['p99']):.2f}x")
if hr:
    h = med(hr)
    each = f"; per round {' '.join(f'{x:.2f}' for x in hr)}" if len(hr) > 1 else ""
    print(f"  router/HAProxy throughput with shadowing off >= 1.0: {verdict(h >= 1.0)} ({h:.2f}, {label['sat']}{each})")
PY
}

# ---------------------------------------------------------------------------------------------

main() {
    install_missing
    for t in wrk nginx haproxy curl python3 cargo git timeout; do
        command -v "$t" >/dev/null || die "$t not found"
    done
    [[ $PACED == 0 || -z $RATE || $RATE =~ ^[1-9][0-9]*$ ]] || die "RATE must be a positive number of requests per second"
    ((ROUNDS >= 1)) || die "ROUNDS must be at least 1"
    ROUTER_BIN=$(release_binary router)

    W=$(mktemp -d /tmp/shadow-bench.XXXXXX)
    chmod 755 "$W" # the postgres user must traverse it to reach its data dir and socket
    TOKEN=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')

    start_postgres
    start_upstream monolith
    MONO_PORT=$LAST_PORT MONO_PID=$LAST_PID
    start_upstream catalog
    CAT_PORT=$LAST_PORT CAT_PID=$LAST_PID
    start_haproxy "$MONO_PORT"
    ((PACED)) && start_nginx_proxies
    R_PORT=$(free_port)
    R_ADMIN=$(free_port)
    log "starting the router (1 data thread) on $R_PORT, admin $R_ADMIN"
    start_router "$R_PORT" "$R_ADMIN"

    # Reads stay on the monolith (the primary); the shadow toggle, when on, is on for everyone.
    admin PUT "/admin/toggles/$READ_TOGGLE" -H 'Content-Type: application/json' \
        --data-binary '{"name":"'"$READ_TOGGLE"'","type":"release","enabled":false,"strategies":[{"name":"default","parameters":{}}]}' >/dev/null
    admin PUT "/admin/toggles/$SHADOW_TOGGLE" -H 'Content-Type: application/json' \
        --data-binary '{"name":"'"$SHADOW_TOGGLE"'","type":"release","enabled":false,"strategies":[{"name":"default","parameters":{}}]}' >/dev/null
    set_mode shadow
    local head
    head=$(curl -s -D - -o /dev/null -H "$USER_HEADER" "http://127.0.0.1:$R_PORT$REQ_PATH" | tr -d '\r')
    [[ $head == "HTTP/1.1 200"* ]] || die "router answered: $head"
    local first
    first=$(settle)
    [[ $first == "1 1 "* ]] || die "one shadowed request should give one matched comparison; /admin/diffs says: $first"
    write_pacer

    echo "== shadow bench: commit $(git -C "$ROOT" rev-parse --short HEAD)$( [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no) ]] && echo ' (+uncommitted changes)'), $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) cores =="
    echo "   upstreams: nginx 1 worker each, monolith :$MONO_PORT (primary), catalog :$CAT_PORT (shadow side), same JSON body"
    echo "   router ROUTER_THREADS=1 :$R_PORT; HAProxy nbthread 1 :$HA_PORT in front of the monolith"
    echo "   modes: off = $SHADOW_TOGGLE disabled; shadow = $SHADOW_TOGGLE enabled, default strategy (100% of reads)"
    echo "   shadow limits: $(admin GET /admin/diffs | python3 -c 'import json,sys; print(json.load(sys.stdin)["limits"])')"
    echo "   load: wrk -t1 -c$C -d${D}s, closed loop (each connection sends when answered)$( ((PACED)) && echo '; then paced, see below')"

    quiet_check "runs"
    # Warm-up (not reported): pools filled, caches warm, both modes and HAProxy.
    wrk -t1 -c"$C" -d1s -H "$USER_HEADER" "http://127.0.0.1:$HA_PORT$REQ_PATH" >/dev/null 2>&1
    set_mode off
    wrk -t1 -c"$C" -d1s -H "$USER_HEADER" "http://127.0.0.1:$R_PORT$REQ_PATH" >/dev/null 2>&1
    set_mode shadow
    wrk -t1 -c"$C" -d1s -H "$USER_HEADER" "http://127.0.0.1:$R_PORT$REQ_PATH" >/dev/null 2>&1
    settle >/dev/null

    : >"$W/results.tsv"
    local round order mode slowest=""
    for round in $(seq 1 "$ROUNDS"); do
        # Which mode goes first alternates, so a drift in the machine's speed favours neither.
        if ((round % 2)); then order="off shadow"; else order="shadow off"; fi
        measure sat haproxy "$round"
        for mode in $order; do
            measure sat "$mode" "$round"
            slowest=$(awk -v a="${slowest:-$LAST_RPS}" -v b="$LAST_RPS" 'BEGIN { print (b < a) ? b : a }')
        done
        if ((PACED)); then
            if [[ -z $RATE ]]; then
                RATE=$(awk -v r="$slowest" -v f="$RATE_FRACTION" 'BEGIN { x = int(r * f / 100) * 100; print (x < 100) ? 100 : x }')
                echo "   paced load: $RATE req/s (RATE_FRACTION=$RATE_FRACTION of round 1's lower router throughput, off or shadow), wrk -t1 -c$C with a Lua pacer, fixed for every round"
            fi
            for mode in $order; do
                measure paced "$mode" "$round"
            done
            # The references at the same rate (see the summary).
            for mode in loaded nginx mirror; do
                measure paced "$mode" "$round"
            done
        fi
    done
    summary
    local warns
    warns=$(grep -cE 'WARN|ERROR' "$W/router.log" || true)
    echo "  router log lines at WARN/ERROR: $warns"
    ((warns == 0)) || sed -n '1,5p' "$W/router.log" | sed 's/^/    /'
}

main "$@"
