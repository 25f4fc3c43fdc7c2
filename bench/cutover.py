#!/usr/bin/env python3
"""The load, the flips and the check of bench/cutover.sh (see bench/README.md). Python 3 standard
library only; the databases are read with psql.

A paced, open-loop stream of writes goes to the router at RATE/s while `fig migrate CAP
cutover|rollback` moves the capabilities' writes back and forth. Every write is logged on the
client (token, capability, scheduled send time, send time, answer time, status, error code, id).
After the last flip the load stops, the script waits until the monolith's tables and the services'
copies agree, and checks the databases against that log: acknowledged writes that are missing
(lost), rows present more than once (duplicated), rows whose id is not the one acknowledged, and
rows that were written although their answer was an error or never came.

Run by bench/cutover.sh, which starts `fig up` and passes everything in the environment.
"""

import collections
import http.client
import json
import math
import os
import subprocess
import sys
import threading
import time

E = os.environ
ROUTER = E["ROUTER_URL"]          # http://127.0.0.1:PORT
ADMIN = E["ADMIN_URL"]
TOKEN = E["ADMIN_TOKEN"]
PG_URL = E["PG_URL"]              # the monolith's database; the others differ by name only
FIG = E["FIG_BIN"]
PSQL = E["PSQL"]
OUT = E["OUT_DIR"]
RUN = E["RUN_ID"]
RATE = float(E.get("RATE", "500"))
FLIPS = int(E.get("FLIPS", "10"))
CAPS = E.get("CAPS", "catalog").split()
GAP = float(E.get("GAP", "1.5"))
WARMUP = float(E.get("WARMUP", "3"))
COOLDOWN = float(E.get("COOLDOWN", "2"))
WORKERS = int(E.get("WORKERS", "200"))
REQ_TIMEOUT = float(E.get("REQ_TIMEOUT", "10"))
FLIP_TIMEOUT = float(E.get("FLIP_TIMEOUT", "60"))
SETTLE_TIMEOUT = float(E.get("SETTLE_TIMEOUT", "60"))
PAUSE_GOAL_MS = float(E.get("PAUSE_GOAL_MS", "100"))
STEP_POLL_MS = float(E.get("STEP_POLL_MS", "2"))   # 0: do not watch the flips' steps
MIX = E.get("MIX", "artist=8,album=5,patch=3,wish_put=3,wish_delete=1")

HOST, PORT = ROUTER.split("//", 1)[1].rsplit(":", 1)
PORT = int(PORT)
KINDS = ("artist", "album", "patch", "wish_put", "wish_delete")
CAP_OF = {"artist": "catalog", "album": "catalog", "patch": "catalog",
          "wish_put": "wishlist", "wish_delete": "wishlist"}
SERVICE_DB = {"catalog": "catalog", "wishlist": "wishlist"}
TABLES = {"catalog": ["catalog.artists", "catalog.albums"], "wishlist": ["wishlist.items"]}
WISH_ROOM = 90   # wishlist items per bench customer (the cap is 100)


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def die(msg):
    log(f"ERROR: {msg}")
    sys.exit(1)


# ---------------------------------------------------------------------------------------------
# Databases (psql over loopback TCP, as the postgres user fig's cluster trusts)

def db_url(db):
    return PG_URL.rsplit("/", 1)[0] + "/" + db


def sql(db, query):
    """Rows of one query, as lists of strings (tab-separated, unaligned)."""
    r = subprocess.run([PSQL, "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                        "-d", db_url(db), "-c", query],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"psql on {db} failed: {r.stderr.strip()}")
    return [line.split("\t") for line in r.stdout.splitlines() if line]


# ---------------------------------------------------------------------------------------------
# HTTP

class Conn:
    """One keep-alive connection; no retries: a write is sent once."""
    def __init__(self, host, port, timeout, headers=None):
        self.host, self.port, self.timeout, self.c = host, port, timeout, None
        self.headers = headers or {}

    def req(self, method, path, body=None, headers=None):
        h = dict(self.headers)
        h.update(headers or {})
        if body is not None:
            h["Content-Type"] = "application/json"
        try:
            if self.c is None:
                self.c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.c.request(method, path, body=body, headers=h)
            r = self.c.getresponse()
            data = r.read()
            if r.will_close:  # the router closes a connection after refusing a write with a body
                self.close()
            return r.status, data, None
        except (OSError, http.client.HTTPException) as e:
            self.close()
            return 0, b"", type(e).__name__

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


def error_code(status, data, err):
    if err:
        return err
    if 200 <= status < 300:
        return ""
    try:
        return json.loads(data)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return f"status{status}"


# ---------------------------------------------------------------------------------------------
# The load: slot i is due at t0 + i/RATE whatever happened to the slots before it (open loop).
# Each worker takes the next slot, sleeps until it is due and sends it on its own connection; a
# write's latency counts from its slot, so a write that waited for a free worker (all of them held)
# shows the wait too.

def pattern(mix):
    weights = {}
    for part in mix.split(","):
        k, v = part.split("=")
        if k not in KINDS:
            die(f"MIX: unknown kind {k} (kinds: {', '.join(KINDS)})")
        weights[k] = int(v)
    spots = sorted(((j + 0.5) / w, k) for k, w in weights.items() for j in range(w) if w > 0)
    return [k for _, k in spots]


class Load:
    def __init__(self, customers, wish_albums, patch_albums, artists):
        self.lock = threading.Lock()
        self.next = 0
        self.t0 = None
        self.stop_at = math.inf
        self.pattern = pattern(MIX)
        self.artists = artists
        # Wishlist pairs never sent twice: customer by customer, WISH_ROOM albums each.
        self.pairs = collections.deque((c, a) for c in customers for a in wish_albums)
        self.deletable = collections.deque()      # pairs whose PUT was acknowledged
        self.free_albums = collections.deque(patch_albums)
        self.retired = []                          # patched albums with an unknown last answer
        self.records = []                          # one tuple per write, appended by workers
        self.short = collections.Counter()         # a kind that had nothing to work on

    def claim(self):
        with self.lock:
            i = self.next
            self.next += 1
        slot = self.t0 + i / RATE
        return None if slot > self.stop_at else (i, slot)

    def plan(self, i):
        """What slot i sends: (kind, method, path, body, token)."""
        kind = self.pattern[i % len(self.pattern)]
        with self.lock:
            if kind == "wish_delete":
                if self.deletable:
                    c, a = self.deletable.popleft()
                    return kind, "DELETE", f"/wishlists/{c}/items/{a}", None, f"{c}:{a}"
                self.short[kind] += 1
                kind = "wish_put"
            if kind == "wish_put":
                if self.pairs:
                    c, a = self.pairs.popleft()
                    return kind, "PUT", f"/wishlists/{c}/items/{a}", None, f"{c}:{a}"
                self.short[kind] += 1
                kind = "artist"
            if kind == "patch":
                if self.free_albums:
                    a = self.free_albums.popleft()
                    value = i % 1_000_000
                    return kind, "PATCH", f"/catalog/albums/{a}", json.dumps({"stock": value}).encode(), f"{a}:{value}"
                self.short[kind] += 1
                kind = "artist"
        token = f"bench-{RUN}-{i}"
        if kind == "album":
            body = {"sku": token, "title": f"Bench album {i}", "artist_id": self.artists[i % len(self.artists)],
                    "genre": "bench", "release_year": 2000 + i % 27,
                    "price": {"amount_cents": 100 + i % 5000, "currency": "USD"}, "stock": i % 100}
            return kind, "POST", "/catalog/albums", json.dumps(body).encode(), token
        return "artist", "POST", "/catalog/artists", json.dumps({"name": token}).encode(), token

    def settle(self, kind, token, status, code):
        """Book-keeping after an answer: deletable pairs, patched albums free again."""
        with self.lock:
            if kind == "wish_put" and 200 <= status < 300:
                self.deletable.append(tuple(int(x) for x in token.split(":")))
            elif kind == "patch":
                album = int(token.split(":")[0])
                # Only when the outcome is known may the album take its next patch: a write whose
                # answer never came may still be applied later, and then "the last acknowledged
                # value" would not be well defined.
                known = 200 <= status < 500 or code in ("write_held", "not_write_owner")  # as refused()
                (self.free_albums if known else self.retired).append(album)

    def worker(self):
        conn = Conn(HOST, PORT, REQ_TIMEOUT)
        out = []
        while True:
            c = self.claim()
            if c is None:
                break
            i, slot = c
            d = slot - time.perf_counter()
            if d > 0:
                time.sleep(d)
            if slot > self.stop_at:  # claimed before the load stopped, due after it
                break
            kind, method, path, body, token = self.plan(i)
            sent = time.perf_counter()
            status, data, err = conn.req(method, path, body)
            done = time.perf_counter()
            code = error_code(status, data, err)
            rid = ""
            if status == 201 and kind in ("artist", "album"):
                try:
                    rid = str(json.loads(data)["id"])
                except (ValueError, KeyError, TypeError):
                    rid = "?"
            self.settle(kind, token, status, code)
            out.append((i, kind, CAP_OF[kind], token, slot, sent, done, status, code, rid))
        conn.close()
        with self.lock:
            self.records.extend(out)


# ---------------------------------------------------------------------------------------------
# The flips, through the operator's own command

class StepWatch:
    """While a flip runs, polls its recorded step (table flips, every STEP_POLL_MS) through one
    kept psql session, and notes when each step first showed: where the hold's time goes. The
    router records a step once it is done, so `fenced` showing means the fence took the time since
    `held` showed (to within one poll)."""
    def __init__(self):
        self.p = subprocess.Popen([PSQL, "-X", "-q", "-At", "-d", db_url("router")], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
                                  start_new_session=True)  # Ctrl-C stops us; it ends at our stdin's EOF
        self.stop = threading.Event()

    def ask(self, cap):
        """The newest flip's "id step", or None (also once the session is gone)."""
        try:
            self.p.stdin.write(f"SELECT id || ' ' || step FROM flips WHERE capability = '{cap}' "
                               "ORDER BY id DESC LIMIT 1;\n\\echo __end__\n")
            self.p.stdin.flush()
        except OSError:
            return None
        got = None
        for line in self.p.stdout:
            line = line.strip()
            if line == "__end__":
                return got
            got = line
        return None

    def watch(self, cap, after_id, seen):
        while not self.stop.is_set():
            got = self.ask(cap)
            t = time.perf_counter()
            if got:
                fid, step = got.split(" ", 1)
                if int(fid) > after_id and step not in seen:
                    seen[step] = t
            time.sleep(STEP_POLL_MS / 1000)

    def during(self, cap, fn):
        """Runs fn() while watching cap's newest flip; returns fn's result and {step: time}."""
        last = self.ask(cap)
        after_id = int(last.split(" ", 1)[0]) if last else 0
        seen = {}
        self.stop.clear()
        t = threading.Thread(target=self.watch, args=(cap, after_id, seen), daemon=True)
        t.start()
        try:
            return fn(), seen
        finally:
            self.stop.set()
            t.join()

    def close(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()


# The flip's steps in the order it records them (router/src/migrate/plan.rs, `Step`).
STEPS = ["started", "ready", "reverse_ready", "held", "fenced", "caught_up", "granted", "released"]


def fig_alive():
    try:
        os.kill(int(E["FIG_PID"]), 0)
        return True
    except (KeyError, ValueError):
        return True
    except OSError:
        return False


def flip(cap, direction, k):
    args = [FIG, "migrate", "--admin-url", ADMIN, "--token", TOKEN, "--actor", "bench/cutover.sh",
            cap, direction, "--reason", f"bench {RUN} flip {k}", "--json"]
    start = time.perf_counter()
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=FLIP_TIMEOUT)
        end = time.perf_counter()
        rc, out, errtext = r.returncode, r.stdout, r.stderr.strip()
    except subprocess.TimeoutExpired:
        end = time.perf_counter()
        rc, out, errtext = -1, "", f"fig migrate did not answer within {FLIP_TIMEOUT:.0f} s (killed)"
    try:
        answer = json.loads(out) if out.strip() else None
    except ValueError:
        answer = None
    return {"cap": cap, "direction": direction, "k": k, "start": start, "end": end, "rc": rc,
            "answer": answer, "stderr": errtext}


def admin_conn():
    host, port = ADMIN.split("//", 1)[1].rsplit(":", 1)
    return Conn(host, int(port), 10, {"Authorization": "Bearer " + TOKEN})


def owner(cap):
    c = admin_conn()
    status, data, err = c.req("GET", f"/admin/migrations/{cap}")
    c.close()
    if status != 200:
        die(f"GET /admin/migrations/{cap} answered {status or err}: {data[:300]!r}")
    return json.loads(data)


def router_metrics():
    c = admin_conn()
    status, data, _ = c.req("GET", "/metrics")
    c.close()
    got = collections.Counter()
    if status == 200:
        for line in data.decode().splitlines():
            for name in ("router_writes_held_total", "router_write_hold_timeouts_total"):
                if line.startswith(name + "{"):
                    cap = line.split('capability="', 1)[1].split('"', 1)[0]
                    got[(name, cap)] += float(line.rsplit(" ", 1)[1])
    return got


# ---------------------------------------------------------------------------------------------
# Figures

def pct(xs, p):  # nearest rank, in ms
    xs = sorted(xs)
    return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)] * 1000 if xs else float("nan")


def dist(label, xs, width=44):
    print(f"  {label:<{width}} n={len(xs):<6} p50={pct(xs, 50):8.2f} ms  p99={pct(xs, 99):8.2f} ms  "
          f"max={pct(xs, 100):8.2f} ms")


def msd(xs):  # seconds
    return f"p50={pct(xs, 50):7.1f} ms  p99={pct(xs, 99):7.1f} ms  max={pct(xs, 100):7.1f} ms  (n={len(xs)})"


def fmt(v):
    return "-" if v is None else f"{v:.1f}"


# ---------------------------------------------------------------------------------------------

def setup():
    """Customers of our own for the wishlist writes (POST /customers goes to the monolith, which
    owns customers for good), the albums they wish for and the albums patched, the artists the new
    albums name."""
    albums = [int(r[0]) for r in sql("monolith", "SELECT id FROM catalog.albums ORDER BY id")]
    artists = [int(r[0]) for r in sql("monolith", "SELECT id FROM catalog.artists ORDER BY id LIMIT 50")]
    if len(albums) < 20 or not artists:
        die(f"the seed has {len(albums)} albums and {len(artists)} artists: raise SEED_SCALE")
    patch_albums = albums[-min(40, len(albums) // 4):]
    wish_albums = albums[:min(WISH_ROOM, len(albums) - len(patch_albums))]
    pat = pattern(MIX)
    share = pat.count("wish_put") / len(pat)
    seconds = WARMUP + COOLDOWN + 2 * FLIPS * len(CAPS) * (GAP + 1.0)
    need = int(RATE * share * seconds * 1.5 / len(wish_albums)) + 2 if share else 0
    conn = Conn(HOST, PORT, REQ_TIMEOUT)
    customers = []
    for n in range(need):
        status, data, err = conn.req("POST", "/customers", json.dumps(
            {"name": f"Bench {RUN} {n}", "email": f"bench-{RUN}-{n}@example.com"}).encode())
        if status != 201:
            die(f"POST /customers answered {status or err}: {data[:300]!r}")
        customers.append(json.loads(data)["id"])
    conn.close()
    return customers, wish_albums, patch_albums, artists


def tables_agree():
    """Per capability: do the monolith's tables and the service's copy hold the same rows?"""
    result = {}
    for cap in ("catalog", "wishlist"):
        q = " UNION ALL ".join(
            f"SELECT '{t}', count(*), coalesce(sum(hashtext(x::text)::bigint), 0) FROM {t} x"
            for t in TABLES[cap])
        a, b = sql("monolith", q), sql(SERVICE_DB[cap], q)
        result[cap] = (a == b, a, b)
    return result


def side_rows(cap, db, customers, patch_albums):
    """The bench rows of one capability in one database."""
    if cap == "wishlist":
        if not customers:
            return {"wish": []}
        return {"wish": sql(db, "SELECT customer_id, album_id FROM wishlist.items WHERE customer_id IN ("
                            + ",".join(map(str, customers)) + ")")}
    return {
        "artist": sql(db, f"SELECT name, id FROM catalog.artists WHERE name LIKE 'bench-{RUN}-%'"),
        "album": sql(db, f"SELECT sku, id FROM catalog.albums WHERE sku LIKE 'bench-{RUN}-%'"),
        "patch": sql(db, "SELECT id, stock FROM catalog.albums WHERE id IN ("
                     + ",".join(map(str, patch_albums)) + ")"),
    }


def check(records, customers, patch_albums):
    """Per side (the monolith's database; the services' databases), what differs from the client's
    log: {finding: count}, a few examples of each, and how many bench rows there are."""
    ok = lambda r: 200 <= r[7] < 300
    res = {}
    for side in ("monolith", "service"):
        rows = {}
        for cap in ("catalog", "wishlist"):
            rows.update(side_rows(cap, "monolith" if side == "monolith" else SERVICE_DB[cap],
                                  customers, patch_albums))
        c = collections.Counter()
        examples = collections.defaultdict(list)

        def note(what, detail):
            c[what] += 1
            if len(examples[what]) < 3:
                examples[what].append(detail)

        for kind in ("artist", "album"):
            present = collections.defaultdict(list)
            for tok, rid in rows[kind]:
                present[tok].append(rid)
            sent = {r[3]: r for r in records if r[1] == kind}
            for tok, r in sent.items():
                got = present.get(tok, [])
                if ok(r):
                    if not got:
                        note(f"lost {kind}", f"{tok} (acknowledged {r[7]}, id {r[9]})")
                    elif len(got) == 1 and got[0] != r[9]:
                        note(f"{kind} id differs", f"{tok}: acknowledged id {r[9]}, row id {got[0]}")
                elif got:
                    note(f"{unacked(r)} {kind} present (answer {answer_label(r)})", tok)
                if len(got) > 1:
                    note(f"duplicated {kind}", f"{tok}: {len(got)} rows, ids {','.join(got)}")
            for tok in present:
                if tok not in sent:
                    note(f"{kind} rows never sent", tok)

        # Patches: each album's last acknowledged stock, unless a write after it has no known
        # outcome (then that write's value may be the final one too).
        stock = {int(a): int(s) for a, s in rows["patch"]}
        last = {}
        for r in sorted((r for r in records if r[1] == "patch"), key=lambda r: r[5]):
            album, value = map(int, r[3].split(":"))
            if ok(r):
                last[album] = {value}
            elif album in last and (r[7] == 0 or (r[7] >= 500 and r[8] not in ("write_held", "not_write_owner"))):
                last[album].add(value)
        for album, values in last.items():
            if stock.get(album) not in values:
                note("lost patch", f"album {album}: stock {stock.get(album)}, expected one of {sorted(values, key=str)}")

        # Wishlist: an acknowledged PUT whose pair was not deleted since is there; an acknowledged
        # DELETE's pair is gone.
        present = collections.Counter((int(a), int(b)) for a, b in rows["wish"])
        state = {}
        for r in sorted((r for r in records if r[2] == "wishlist"), key=lambda r: r[5]):
            pair = tuple(map(int, r[3].split(":")))
            if r[1] == "wish_put":
                state[pair] = ("put", r) if ok(r) else ("put?", r)
            else:
                state[pair] = ("deleted", r) if ok(r) else ("delete?", r)
        for pair, (st, r) in state.items():
            there = present.get(pair, 0)
            if st == "put" and not there:
                note("lost wishlist put", f"{pair[0]}/{pair[1]}")
            elif st == "deleted" and there:
                note("lost wishlist delete (the item is still there)", f"{pair[0]}/{pair[1]}")
            elif st == "put?" and there:
                note(f"{unacked(r)} wishlist put present (answer {answer_label(r)})", f"{pair[0]}/{pair[1]}")
        for pair in present:
            if pair not in state:
                note("wishlist rows never sent", f"{pair[0]}/{pair[1]}")
        res[side] = (c, examples, {k: len(v) for k, v in rows.items()})
    return res


def refused(r):
    """An answer that says the write was not done: a 4xx, or a 503 the flip documents."""
    return 400 <= r[7] < 500 or r[8] in ("write_held", "not_write_owner")


def unacked(r):
    return "refused (yet written)" if refused(r) else "unacknowledged"


def answer_label(r):
    return f"{r[7]} {r[8]}".strip() if r[7] else f"none, {r[8]}"


def main():
    os.makedirs(OUT, exist_ok=True)
    if not CAPS or any(c not in ("catalog", "wishlist") for c in CAPS):
        die(f"CAPS must name catalog and/or wishlist, not {CAPS!r}")
    for cap in CAPS:
        o = owner(cap)
        if o["owner"] != "legacy":
            die(f"{cap}'s writes are owned by {o['owner']} before the run: expected legacy (the monolith)")
    customers, wish_albums, patch_albums, artists = setup()
    load = Load(customers, wish_albums, patch_albums, artists)
    first_flip = int((sql("router", "SELECT coalesce(max(id), 0) FROM flips") or [["0"]])[0][0])
    metrics_before = router_metrics()

    log(f"load: {RATE:.0f} writes/s, {WORKERS} connections; flips: {FLIPS} each way of {' and '.join(CAPS)}, "
        f"{GAP} s apart, after {WARMUP} s of load")
    threads = [threading.Thread(target=load.worker, daemon=True) for _ in range(WORKERS)]
    load.t0 = time.perf_counter() + 0.2
    for t in threads:
        t.start()
    time.sleep(WARMUP + 0.2)

    flips = []
    k = 0
    steps = StepWatch() if STEP_POLL_MS > 0 else None
    for n in range(FLIPS):
        for direction in ("cutover", "rollback"):
            for cap in CAPS:
                k += 1
                if not fig_alive():
                    die("fig up is no longer running: the run stops here (its log follows)")
                if steps:
                    f, seen = steps.during(cap, lambda: flip(cap, direction, k))
                    f["steps"] = seen
                else:
                    f = flip(cap, direction, k)
                flips.append(f)
                a = f["answer"] or {}
                fl = a.get("flip") or {}
                log(f"flip {k:>2} {cap} {direction}: rc={f['rc']} {a.get('result', '?')} "
                    f"{fl.get('outcome', '')} hold={fmt(fl.get('hold_ms'))} ms total={fmt(fl.get('total_ms'))} ms "
                    f"(command {1000 * (f['end'] - f['start']):.0f} ms)"
                    + (f" [{f['stderr']}]" if f["rc"] != 0 else ""))
                time.sleep(GAP)
    time.sleep(max(0.0, COOLDOWN - GAP))
    load.stop_at = time.perf_counter()
    if steps:
        steps.close()
    deadline = time.perf_counter() + REQ_TIMEOUT + 5
    for t in threads:
        t.join(max(0.1, deadline - time.perf_counter()))
    if any(t.is_alive() for t in threads):
        log("some writes did not finish in time; they are left out of the log")
    load_seconds = load.stop_at - load.t0
    metrics_after = router_metrics()

    # Replication catches up: poll until the monolith's tables and the services' copies agree.
    t_settle = time.perf_counter()
    while True:
        agree = tables_agree()
        if all(v[0] for v in agree.values()) or time.perf_counter() - t_settle > SETTLE_TIMEOUT:
            break
        time.sleep(0.1)
    settle_s = time.perf_counter() - t_settle

    records = sorted(load.records, key=lambda r: r[0])
    with open(os.path.join(OUT, "writes.tsv"), "w") as fh:
        fh.write("n\tkind\tcapability\ttoken\tslot_s\tsent_s\tanswered_s\tstatus\tcode\tid\n")
        for r in records:
            fh.write("\t".join(str(x) if not isinstance(x, float) else f"{x - load.t0:.6f}" for x in r) + "\n")
    with open(os.path.join(OUT, "flips.json"), "w") as fh:
        json.dump([{**f, "start": f["start"] - load.t0, "end": f["end"] - load.t0,
                    "steps": {k: v - load.t0 for k, v in (f.get("steps") or {}).items()}} for f in flips], fh, indent=1)
    audit = sql("router", "SELECT id, capability, direction, outcome, step, coalesce(hold_ms::text, ''), "
                          "coalesce(catch_up_ms::text, ''), coalesce(total_ms::text, ''), coalesce(error, '') "
                          f"FROM flips WHERE id > {first_flip} ORDER BY id")
    owners = {cap: owner(cap) for cap in ("catalog", "wishlist")}
    db_of = {cap: ("monolith" if owners[cap]["owner"] == "legacy" else SERVICE_DB[cap]) for cap in owners}
    checked = check(records, customers, patch_albums)

    # ---- report ------------------------------------------------------------------------------
    lat = lambda rs: [r[6] - r[4] for r in rs]
    windows = [(f["cap"], f["start"], f["end"]) for f in flips]

    def in_window(r, cap=None):
        return any((cap is None or c == cap) and s <= r[4] <= e for c, s, e in windows)

    print()
    print(f"== cutover bench: {len(records)} writes in {load_seconds:.1f} s "
          f"({len(records) / load_seconds:.0f}/s offered, RATE={RATE:.0f}), "
          f"{len(flips)} flips of {' and '.join(CAPS)} ==")
    kinds = collections.Counter(r[1] for r in records)
    print("   mix: " + ", ".join(f"{k} {kinds[k]}" for k in KINDS if kinds[k])
          + (f"; fell back for want of work: {dict(load.short)}" if load.short else ""))
    late = [r[5] - r[4] for r in records]
    print(f"   client lateness (send - scheduled slot): p99={pct(late, 99):.2f} ms max={pct(late, 100):.2f} ms "
          "(over a few ms: every connection was busy, or the client lacked CPU)")

    print()
    print("-- write latency, from the scheduled send time to the answer (every answer counted) --")
    dist("all writes", lat(records))
    dist("writes outside any flip", lat([r for r in records if not in_window(r)]))
    during = {cap: [r for r in records if r[2] == cap and in_window(r, cap)] for cap in CAPS}
    for cap in CAPS:
        dist(f"{cap} writes sent while {cap} flipped", lat(during[cap]))
        others = [r for r in records if r[2] != cap and in_window(r, cap) and not in_window(r, r[2])]
        if others:
            dist(f"other writes sent while {cap} flipped", lat(others))
    pause_set = [r for cap in CAPS for r in during[cap]]
    pause_p99 = pct(lat(pause_set), 99)

    print()
    print("-- flips (command = the fig migrate process, start to exit; writes = the flipped capability's "
          "writes scheduled in that window) --")
    print(f"  {'#':>3} {'capability':<9} {'direction':<9} {'rc':>2} {'outcome':<13} {'hold':>7} {'catch-up':>8} "
          f"{'total':>7} {'command':>8} {'writes':>6} {'max lat':>8} {'non-2xx':>7}")
    per_flip_max, over_hold = [], []
    for f in flips:
        a = f["answer"] or {}
        fl = a.get("flip") or {}
        ws = [r for r in records if r[2] == f["cap"] and f["start"] <= r[4] <= f["end"]]
        mx = max(lat(ws), default=None)
        if mx is not None:
            per_flip_max.append(mx)
            if fl.get("hold_ms") is not None:
                over_hold.append(mx - fl["hold_ms"] / 1000)
        bad = sum(1 for r in ws if not 200 <= r[7] < 300)
        outcome = fl.get("outcome") or a.get("result") or (a.get("error") or {}).get("code") or "?"
        print(f"  {f['k']:>3} {f['cap']:<9} {f['direction']:<9} {f['rc']:>2} {outcome:<13} "
              f"{fmt(fl.get('hold_ms')):>7} {fmt(fl.get('catch_up_ms')):>8} {fmt(fl.get('total_ms')):>7} "
              f"{1000 * (f['end'] - f['start']):>8.1f} {len(ws):>6} {fmt(mx * 1000 if mx is not None else None):>8} {bad:>7}")
    bad_flips = [f for f in flips if f["rc"] != 0 or ((f["answer"] or {}).get("flip") or {}).get("outcome") != "done"]
    for f in bad_flips:
        print(f"  flip {f['k']} did not end 'done' (rc {f['rc']}): {f['stderr']}")
        print("    " + json.dumps(f["answer"]))
    print(f"  per-flip worst write latency:           {msd(per_flip_max)}")
    print(f"  per-flip worst write latency minus hold: {msd(over_hold)}")
    print("    (what the worst write waited beyond the hold: mostly the burst of released writes draining")
    print("     through the new owner)")
    if STEP_POLL_MS > 0:
        print(f"  where a flip's time goes (its recorded step polled every {STEP_POLL_MS:g} ms; each step "
              "from the one before it first showed; the hold runs from inside 'held' to 'released'):")
        parts = collections.defaultdict(list)
        for f in flips:
            seen = f.get("steps") or {}
            prev, t_prev = "command start", f["start"]
            for st in STEPS:
                if st in seen:
                    if prev == "command start" or STEPS.index(st) == STEPS.index(prev) + 1:
                        parts[(prev, st)].append(seen[st] - t_prev)
                    prev, t_prev = st, seen[st]
            if prev == "released":
                parts[("released", "command exit")].append(f["end"] - t_prev)
        labels = {"started": "CLI start, request, flip lock, audit row",
                  "ready": "the new owner answers /readyz",
                  "reverse_ready": "stream in seen running, stream back's slot made",
                  "held": "hold set, routers acked",
                  "fenced": "old owner fenced",
                  "caught_up": "cut marker, stream applied past it, sequences",
                  "granted": "new owner granted",
                  "released": "ownership set, routers acked, released",
                  "command exit": "audit finished, answer, CLI exit"}
        order = STEPS + ["command exit"]
        for (a, b), xs in sorted(parts.items(), key=lambda kv: order.index(kv[0][1])):
            print(f"    {a + ' -> ' + b:<32} {labels[b]:<48} {msd(xs)}")
    print("  from the audit (router database, table flips):")
    for cap in CAPS:
        rows = [a for a in audit if a[1] == cap]
        outcomes = collections.Counter(a[3] for a in rows)
        column = lambda i: [float(a[i]) for a in rows if a[i]]
        print(f"    {cap}: {len(rows)} flips recorded ({', '.join(f'{v} {k}' for k, v in sorted(outcomes.items()))})")
        print(f"      hold_ms     {msd([x / 1000 for x in column(5)])}")
        print(f"      catch_up_ms {msd([x / 1000 for x in column(6)])}")
        print(f"      total_ms    {msd([x / 1000 for x in column(7)])}")
        for d in ("cutover", "rollback"):
            xs = [float(a[5]) / 1000 for a in rows if a[2] == d and a[5]]
            print(f"      hold_ms of the {d + 's':<9} {msd(xs)}")
        for a in rows:
            if a[3] != "done":
                print(f"      flip #{a[0]} {a[2]} {a[3]} at step {a[4]}: {a[8]}")
    for cap in ("catalog", "wishlist"):
        held = metrics_after[("router_writes_held_total", cap)] - metrics_before[("router_writes_held_total", cap)]
        tout = metrics_after[("router_write_hold_timeouts_total", cap)] - metrics_before[("router_write_hold_timeouts_total", cap)]
        print(f"  router metrics, {cap}: {held:.0f} writes held, {tout:.0f} answered 503 write_held")

    print()
    print("-- answers --")
    answers = collections.Counter((r[7], r[8]) for r in records)
    for (status, code), n in sorted(answers.items()):
        label = f"{status} {code}".strip() if status else f"no answer ({code})"
        print(f"  {label:<40} {n}")
    fivexx = collections.Counter(r[8] for r in records if r[7] >= 500)
    noans = sum(1 for r in records if r[7] == 0)
    print(f"  5xx by code: {dict(fivexx) or 'none'}; no answer: {noans}")

    print()
    print(f"-- the databases against the client's log (the copies agreed after {settle_s:.1f} s"
          + ("" if all(v[0] for v in agree.values()) else ": NOT within SETTLE_TIMEOUT") + ") --")
    for cap in ("catalog", "wishlist"):
        same, a, b = agree[cap]
        print(f"  {cap}: owner at the end {owners[cap]['owner']} (phase {owners[cap]['phase']}); "
              f"monolith and {SERVICE_DB[cap]} database {'agree' if same else 'DIFFER'}: "
              + "; ".join(f"{x[0]} {x[1]} rows" + ("" if x == y else f" vs {y[1]} rows, hash {x[2]} vs {y[2]}")
                          for x, y in zip(a, b)))
    acked = sum(1 for r in records if 200 <= r[7] < 300)
    print(f"  acknowledged writes: {acked} of {len(records)}")
    lost = dup = 0
    lost_copy = 0
    for side in ("monolith", "service"):
        c, ex, sizes = checked[side]
        is_owner = {cap: (db_of[cap] == "monolith") == (side == "monolith") for cap in db_of}
        name = "monolith database" if side == "monolith" else "service databases (catalog, wishlist)"
        print(f"  {name}: bench rows artists {sizes['artist']}, albums {sizes['album']}, "
              f"wishlist items {sizes['wish']}")
        if not c:
            print("    every acknowledged write is there once, with the acknowledged id; nothing else")
        for what, n in sorted(c.items()):
            print(f"    {what}: {n}" + (f"  e.g. {'; '.join(ex[what][:3])}" if ex.get(what) else ""))
        for what, n in c.items():
            cap = "wishlist" if "wishlist" in what else "catalog"
            if what.startswith("lost"):
                if is_owner[cap]:
                    lost += n
                else:
                    lost_copy += n
            if what.startswith("duplicated"):
                dup += n
    refused_written = sum(n for s in checked.values() for w, n in s[0].items() if w.startswith("refused"))
    idbad = sum(n for s in checked.values() for w, n in s[0].items() if "id differs" in w or "never sent" in w)

    print()
    print("== goals ==")
    good = lambda b: "PASS" if b else "FAIL"
    print(f"  lost writes (acknowledged, missing from the owner's database): {lost}  {good(lost == 0)} (goal 0)")
    print(f"  acknowledged writes missing from the other copy: {lost_copy}  {good(lost_copy == 0)}")
    print(f"  duplicated writes: {dup}  {good(dup == 0)} (goal 0)")
    print(f"  rows with an id other than acknowledged, or never sent: {idbad}  {good(idbad == 0)}")
    print(f"  writes refused (4xx, 503 write_held/not_write_owner) yet written: {refused_written}  "
          f"{good(refused_written == 0)}")
    print(f"  write pause p99 (writes to a capability sent while it flipped): {pause_p99:.1f} ms  "
          f"{good(pause_p99 < PAUSE_GOAL_MS)} (goal < {PAUSE_GOAL_MS:.0f} ms)")
    print(f"  flips that ended 'done': {len(flips) - len(bad_flips)} of {len(flips)}  {good(not bad_flips)}")
    correct = lost == 0 and lost_copy == 0 and dup == 0 and idbad == 0 and refused_written == 0 and not bad_flips \
        and all(v[0] for v in agree.values())
    sys.exit(0 if correct else 1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
