#!/usr/bin/env bash
# The router against HAProxy and nginx, on this machine, in one run; then how fast a toggle flip
# reaches three router instances. See bench/README.md.
#
#   bench/router.sh                 # D=8 s per wrk run, ROUNDS=3, FLIPS=40
#   D=5 ROUNDS=2 FLIPS=40 bench/router.sh
#
# Everything it starts (PostgreSQL, nginx x2, HAProxy, routers) lives in one temp dir, listens on
# loopback ports picked at run time, and is stopped and removed on exit, even on Ctrl-C.
set -euo pipefail

D=${D:-8}
ROUNDS=${ROUNDS:-3}
FLIPS=${FLIPS:-40}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
export PATH="$PATH:/usr/sbin:/sbin"

# The upstream's answer for every path: one fixed JSON body, the same in every run (and in
# shadow.sh), so runs compare with each other.
BODY='{"id":1,"title":"Abbey Road","artist":"The Beatles","price_cents":1999,"stock":7}'
# The same request to every target: a catalog read with a user, so the router evaluates the
# catalog.reads rollout for a real user on every request.
REQ_PATH=/catalog/albums/1
USER_HEADER='x-user-id: bench-user'
TOGGLE=catalog.reads

W=""              # the temp dir holding every config, log and the database
PIDS=()           # processes we started (nginx masters, HAProxy, routers), stopped on exit
PG_STARTED=0
USED_PORTS=" "


# ---------------------------------------------------------------------------------------------
# Cleanup: runs on every exit. No `set -e` surprises here: every step may fail harmlessly.
cleanup() {
    local rc=$?
    set +e
    local pid i
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    # Give them a moment to exit (nginx masters stop their workers on TERM), then insist.
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
# 1. Tools

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

# ---------------------------------------------------------------------------------------------
# 2. The router binary


# ---------------------------------------------------------------------------------------------
# Helpers

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
# 3. The router's toggle database: a throwaway cluster on a unix socket only (no TCP port at all,
# so nothing can collide).

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
# 4. and 5. Upstream and proxies. Everything runs in the foreground of a background job, so we
# hold its pid and stop exactly what we started.

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

start_upstream() {
    UP_PORT=$(free_port)
    start_nginx upstream "server { listen 127.0.0.1:$UP_PORT; location / { default_type application/json; return 200 '$BODY'; } }"
    wait_http "http://127.0.0.1:$UP_PORT/" 10 "$LAST_PID"
    UPSTREAM="http://127.0.0.1:$UP_PORT"
}

start_nginx_proxy() {
    NGX_PORT=$(free_port)
    start_nginx proxy "upstream u { server 127.0.0.1:$UP_PORT; keepalive 64; }
  server { listen 127.0.0.1:$NGX_PORT; location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
    wait_http "http://127.0.0.1:$NGX_PORT/" 10 "$LAST_PID"
}

start_haproxy() {
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
  server s1 127.0.0.1:$UP_PORT
CONF
    haproxy -db -f "$W/haproxy.cfg" >"$W/haproxy.log" 2>&1 &
    HA_PID=$!
    PIDS+=("$HA_PID")
    wait_http "http://127.0.0.1:$HA_PORT/" 10 "$HA_PID"
}

start_router() { # instance data-port admin-port: one router, one data-path thread
    ROUTER_THREADS=1 ROUTER_INSTANCE="$1" \
        ROUTER_LISTEN="127.0.0.1:$2" ROUTER_ADMIN_LISTEN="127.0.0.1:$3" \
        ROUTER_TOKEN="$TOKEN" ROUTER_DATABASE_URL="$DBURL" \
        ROUTER_UPSTREAM_MONOLITH="$UPSTREAM" ROUTER_UPSTREAM_CATALOG="$UPSTREAM" \
        ROUTER_UPSTREAM_WISHLIST="$UPSTREAM" RUST_LOG=warn \
        "$ROUTER_BIN" >"$W/router-$1.log" 2>&1 &
    LAST_ROUTER_PID=$!
    PIDS+=("$LAST_ROUTER_PID")
    # The admin port answers once migrations ran and the toggles loaded; then the data port.
    wait_http "http://127.0.0.1:$3/admin/routes" 30 "$LAST_ROUTER_PID"
    wait_http "http://127.0.0.1:$2/" 10 "$LAST_ROUTER_PID"
}

stop_pid() { # pid: stops one of ours early (its PIDS entry is then a no-op in cleanup)
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

admin() { # admin-port method path [curl args...]: an admin call that must succeed
    local port=$1 method=$2 path=$3
    shift 3
    local out code
    out=$(curl -s -w '\n%{http_code}' -X "$method" "http://127.0.0.1:$port$path" \
        -H "Authorization: Bearer $TOKEN" -H 'X-Actor: bench/router.sh' \
        -H "X-Reason: benchmark setup" "$@")
    code=${out##*$'\n'}
    [[ $code == 2* ]] || die "admin $method $path answered $code: ${out%$'\n'*}"
    echo "${out%$'\n'*}"
}

put_toggle() { # admin-port json
    admin "$1" PUT "/admin/toggles/$TOGGLE" -H 'Content-Type: application/json' --data-binary "$2" >/dev/null
}



# ---------------------------------------------------------------------------------------------
# 6. Throughput and latency

to_us() { # wrk latency ("812.00us", "1.23ms", "1.01s", "1.00m") to microseconds
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        m = (u == "us") ? 1 : (u == "ms") ? 1000 : (u == "s") ? 1e6 : (u == "m") ? 6e7 : -1
        if (m < 0) { print "NaN"; exit } ; printf "%.0f", n * m }'
}

cpu_ticks() { # pid: user+system clock ticks of a process and its children (nginx's worker)
    local pid total=0 p
    for p in "$1" $(pgrep -P "$1" 2>/dev/null); do
        [[ -r /proc/$p/stat ]] || continue
        total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$total"
}

measure() { # name port round [pid]: one wrk run, one result line; raw output kept for errors
    local name=$1 port=$2 round=$3 pid=${4:-} out rps p50 p99 non2xx sockerr before=0 after=0 requests cpu=NaN
    [[ -n $pid ]] && before=$(cpu_ticks "$pid")
    out=$(wrk -t1 -c32 -d"${D}s" --latency -H "$USER_HEADER" "http://127.0.0.1:$port$REQ_PATH" 2>&1)
    [[ -n $pid ]] && after=$(cpu_ticks "$pid")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    # CPU time the proxy spent per request: what "throughput at the same core budget" comes
    # down to, and far steadier than requests/s when anything else shares the 2 cores.
    if [[ -n $pid && ${requests:-0} -gt 0 ]]; then
        cpu=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')
    fi
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    sockerr=$(awk -F'errors: ' '/Socket errors/ {print $2}' <<<"$out")
    [[ -n $rps ]] || die "wrk against $name gave no result: $out"
    printf 'round %s  %-8s rps=%-10s p50=%-9s p99=%-9s cpu/req=%-8s non2xx=%s%s\n' "$round" "$name" "$rps" "$p50" "$p99" \
        "${cpu}us" "${non2xx:-0}" "${sockerr:+  socket errors: $sockerr}"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$round" "$rps" "$(to_us "$p50")" "$(to_us "$p99")" \
        "${non2xx:-0}" "${sockerr:-none}" "$cpu" >>"$W/results.tsv"
}

summary() {
    echo
    echo "== summary: best of $ROUNDS rounds, wrk -t1 -c32 -d${D}s, GET $REQ_PATH with $USER_HEADER =="
    echo "   (p50/p99 are from each target's best-throughput round; 'added p99' is target p99 - direct p99)"
    awk -F'\t' '
        { if (!($1 in best) || $3 > best[$1]) { best[$1] = $3; p50[$1] = $4; p99[$1] = $5 }
          if ($6 + 0 > 0) non[$1] += $6
          if ($8 != "NaN") { cpu[$1] += $8; cpus[$1]++ }
          cnt[$1]++; rpsv[$1, cnt[$1]] = $3; p99v[$1, cnt[$1]] = $5 }
        function median(values, t, count,    i, j, x, a) {
            for (i = 1; i <= count; i++) a[i] = values[t, i]
            for (i = 2; i <= count; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
            return (count % 2) ? a[(count + 1) / 2] : (a[count / 2] + a[count / 2 + 1]) / 2
        }
        END {
            n = split("direct haproxy nginx router", order, " ")
            for (i = 1; i <= n; i++) { t = order[i]
                printf "  %-8s best rps=%9.0f  p50=%7.0fus  p99=%7.0fus", t, best[t], p50[t], p99[t]
                if (t != "direct") printf "  added p99=%+6.0fus", p99[t] - p99["direct"]
                if (non[t] > 0) printf "  non-2xx responses=%d", non[t]
                printf "\n" }
            printf "  router/HAProxy throughput: %.2f   router/nginx throughput: %.2f\n",
                best["router"] / best["haproxy"], best["router"] / best["nginx"]
            printf "  added p99: router %+.0fus vs HAProxy %+.0fus (router adds %+.0fus more)\n",
                p99["router"] - p99["direct"], p99["haproxy"] - p99["direct"], p99["router"] - p99["haproxy"]
            # Medians over rounds: one lucky or unlucky round on a shared 2-core machine moves
            # "best of" a lot; the median does not.
            mr = median(rpsv, "router", cnt["router"]); mh = median(rpsv, "haproxy", cnt["haproxy"])
            pr = median(p99v, "router", cnt["router"]); ph = median(p99v, "haproxy", cnt["haproxy"])
            pd = median(p99v, "direct", cnt["direct"])
            printf "  medians over %d rounds: router %.0f rps, HAProxy %.0f rps (router/HAProxy %.2f); p99 router %.0fus, HAProxy %.0fus, direct %.0fus\n",
                cnt["router"], mr, mh, mr / mh, pr, ph, pd
            printf "  median added p99: router %+.0fus vs HAProxy %+.0fus\n", pr - pd, ph - pd
            if (cpus["router"] > 0 && cpus["haproxy"] > 0) {
                r = cpu["router"] / cpus["router"]; h = cpu["haproxy"] / cpus["haproxy"]
                g = (cpus["nginx"] > 0) ? cpu["nginx"] / cpus["nginx"] : 0
                printf "  CPU per request (mean of rounds, user+system): router %.2fus, HAProxy %.2fus, nginx %.2fus\n", r, h, g
                printf "  requests per CPU-second, router/HAProxy: %.2f (the same core budget, steady under noise)\n", h / r
            }
        }' "$W/results.tsv"
}

# ---------------------------------------------------------------------------------------------
# 7. Flip propagation. Written in Python with one keep-alive connection per instance: a poll is
# then a fraction of a millisecond, where a curl process per poll would cost ~5 ms and blur the
# very thing measured.

write_flip_poller() {
    cat >"$W/flips.py" <<'PY'
import http.client, json, math, sys, time

token, toggle, flips = sys.argv[1], sys.argv[2], int(sys.argv[3])
names, ports = ["a", "b", "c"], [int(p) for p in sys.argv[4:7]]
EXPLAIN = "/admin/explain?method=GET&path=/catalog/albums"
TIMEOUT = 5.0  # seconds a flip may take before it counts as lost

class Conn:
    def __init__(self, port):
        self.port, self.c = port, None
    def req(self, method, path, body=None, headers=None):
        h = {"Authorization": "Bearer " + token, **(headers or {})}
        for attempt in (0, 1):  # one reconnect if the server closed an idle connection
            if self.c is None:
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                self.c.request(method, path, body=body, headers=h)
                r = self.c.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, OSError):
                self.c.close()
                self.c = None
                if attempt:
                    raise

conns = [Conn(p) for p in ports]

def primary(i):
    status, data = conns[i].req("GET", EXPLAIN)
    if status != 200:
        sys.exit(f"explain on instance {names[i]} answered {status}: {data[:200]!r}")
    return json.loads(data)["primary"]

def change(headers_reason, method, path, body=None):
    h = {"X-Actor": "bench/router.sh", "X-Reason": headers_reason}
    if body is not None:
        h["Content-Type"] = "application/json"
    status, data = conns[0].req(method, path, body=body, headers=h)
    if status != 200:
        sys.exit(f"{method} {path} on instance a answered {status}: {data[:300]!r}")

def wait_all(want, t0, timeout=TIMEOUT):
    """Polls the instances not yet there, round robin; seconds since t0 at which each got there."""
    at, pending = {}, set(range(3))
    while pending:
        for i in sorted(pending):
            if primary(i) == want:
                at[i] = time.perf_counter() - t0
                pending.discard(i)
        if pending and time.perf_counter() - t0 > timeout:
            return None
    return at

# A deterministic toggle: the default strategy (100%), starting disabled, seen so by all three.
change("flip benchmark setup", "PUT", f"/admin/toggles/{toggle}", json.dumps({
    "name": toggle, "type": "release", "enabled": False,
    "strategies": [{"name": "default", "parameters": {}}]}).encode())
if wait_all("monolith", time.perf_counter()) is None:
    sys.exit("the setup change did not reach all three instances")

writes, writes_ok, alls, per = [], [], [], {n: [] for n in names}
lost = 0
for k in range(flips):
    enable = k % 2 == 0
    want = "catalog" if enable else "monolith"
    t0 = time.perf_counter()
    change(f"flip {k}", "POST", f"/admin/toggles/{toggle}/{'enable' if enable else 'disable'}", b"")
    w = time.perf_counter() - t0
    writes.append(w)
    at = wait_all(want, t0)
    if at is None:
        lost += 1
        # Let the stragglers catch up so the next flip starts from a known state.
        wait_all(want, time.perf_counter(), timeout=30)
    else:
        alls.append(max(at.values()))
        writes_ok.append(w)
        for i, n in enumerate(names):
            per[n].append(at[i])
    time.sleep(0.05)  # flips apart, so each is measured on its own

def pct(xs, p):  # nearest rank
    xs = sorted(xs)
    return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)] * 1000 if xs else float("nan")

def line(label, xs):
    print(f"  {label:<34} p50={pct(xs, 50):7.2f} ms  p99={pct(xs, 99):7.2f} ms  max={pct(xs, 100):7.2f} ms")

print(f"== flip propagation: {flips} flips of {toggle} through instance a, 3 instances (1 data thread each) ==")
line("admin write answered (instance a)", writes)
for n in names:
    line(f"instance {n} explains the new state", per[n])
line("ALL THREE applied (from t0)", alls)
if alls:  # the slowest flip, per instance: a lone straggler or all three late?
    k = max(range(len(alls)), key=lambda j: alls[j])
    print("  slowest flip: " + ", ".join(f"{n} {per[n][k] * 1000:.2f} ms" for n in names)
          + f" (write answered at {writes_ok[k] * 1000:.2f} ms, flip {k})")
    slow = sum(1 for x in alls if x >= 0.05)
    print(f"  flips at or over 50 ms: {slow} of {len(alls)}")
if lost:
    print(f"  {lost} flip(s) did not reach all three within {TIMEOUT:.0f} s")
p99 = pct(alls, 99)
ok = lost == 0 and p99 < 50
print(f"  goal p99 < 50 ms: {'MET' if ok else 'NOT MET'} (p99 {p99:.2f} ms over {len(alls)} flips)")
PY
}

# ---------------------------------------------------------------------------------------------

main() {
    install_missing
    for t in wrk nginx haproxy curl python3 cargo git; do
        command -v "$t" >/dev/null || die "$t not found"
    done
    ROUTER_BIN=$(release_binary router)

    W=$(mktemp -d /tmp/router-bench.XXXXXX)
    chmod 755 "$W" # the postgres user must traverse it to reach its data dir and socket
    TOKEN=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')

    start_postgres
    start_upstream
    start_haproxy
    start_nginx_proxy
    NGX_PROXY_PID=$LAST_PID

    local r_port r_admin
    r_port=$(free_port)
    r_admin=$(free_port)
    log "starting the router (1 data thread) on $r_port, admin $r_admin"
    start_router bench "$r_port" "$r_admin"
    ROUTER_BENCH_PID=$LAST_ROUTER_PID

    # A 50% sticky rollout: the router runs the Unleash engine for every request's user, the
    # decision it has to make in production, not a constant.
    put_toggle "$r_admin" '{"name":"'"$TOGGLE"'","type":"release","enabled":true,"strategies":[{"name":"flexibleRollout","parameters":{"rollout":"50","stickiness":"default","groupId":"'"$TOGGLE"'"}}]}'
    local head
    head=$(curl -s -D - -o /dev/null -H "$USER_HEADER" "http://127.0.0.1:$r_port$REQ_PATH" | tr -d '\r')
    [[ $head == "HTTP/1.1 200"* ]] || die "router answered: $head"

    echo "== router bench: commit $(git -C "$ROOT" rev-parse --short HEAD)$( [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no) ]] && echo ' (+uncommitted changes)'), $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) cores =="
    echo "   upstream: nginx 1 worker on :$UP_PORT; HAProxy nbthread 1 :$HA_PORT; nginx proxy 1 worker :$NGX_PORT; router ROUTER_THREADS=1 :$r_port"
    echo "   router decision for bench-user: $(awk -F': ' '/^x-fig-upstream/ {u=$2} /^x-fig-reason/ {r=$2} END {print "upstream=" u ", reason=" r}' <<<"$head")"

    local name port round warns
    declare -A TARGETS=([direct]=$UP_PORT [haproxy]=$HA_PORT [nginx]=$NGX_PORT [router]=$r_port)
    declare -A PROC=([haproxy]=$HA_PID [nginx]=$NGX_PROXY_PID [router]=$ROUTER_BENCH_PID)
    if ((ROUNDS > 0)); then # ROUNDS=0: only the flip measurement
        # On 2 cores any other busy process skews everything: say so in the output.
        quiet_check "proxy runs"
        # Warm-up (not reported): connection pools filled, caches warm, for every target alike.
        for name in direct haproxy nginx router; do
            wrk -t1 -c32 -d1s -H "$USER_HEADER" "http://127.0.0.1:${TARGETS[$name]}$REQ_PATH" >/dev/null 2>&1
        done
        : >"$W/results.tsv"
        for round in $(seq 1 "$ROUNDS"); do
            for name in direct haproxy nginx router; do
                measure "$name" "${TARGETS[$name]}" "$round" "${PROC[$name]:-}"
            done
        done
        summary
        warns=$(grep -cE 'WARN|ERROR' "$W/router-bench.log" || true)
        echo "  router log lines at WARN/ERROR during the load: $warns"
        ((warns == 0)) || sed -n '1,5p' "$W/router-bench.log" | sed 's/^/    /'
    fi

    # The proxies' part is over: free the CPU for the flip measurement.
    stop_pid "$ROUTER_BENCH_PID"

    log "starting three router instances for the flip measurement"
    local -a ports admins
    for name in a b c; do
        port=$(free_port)
        ports+=("$port")
        admins+=("$(free_port)")
        start_router "$name" "$port" "${admins[-1]}"
    done
    write_flip_poller
    echo
    quiet_check "flips"
    python3 "$W/flips.py" "$TOKEN" "$TOGGLE" "$FLIPS" "${admins[@]}"
    local name2
    for name2 in a b c; do
        warns=$(grep -cE 'WARN|ERROR' "$W/router-$name2.log" || true)
        ((warns == 0)) || { echo "  router $name2 logged $warns WARN/ERROR lines:"; sed -n '1,5p' "$W/router-$name2.log" | sed 's/^/    /'; }
    done
}

main "$@"
