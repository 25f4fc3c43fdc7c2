#!/usr/bin/env python3
"""The load, the queries and the freshness probe of bench/reporting.sh (see bench/README.md).
Needs psycopg2 (Debian's python3-psycopg2); the HTTP client and the percentiles are bench/cutover.py's.

Two windows of D seconds each, the same load in both: RATE orders/s, open loop, through the router.
  1. engine: the analyst queries run against `reporting_v1` (views over the aggregates the triggers
     keep); freshness is the time from an order's 201 to its customer's `orders` count in
     `reporting_v1.customer_lifetime_value` showing it.
  2. matview: the same four reports as plain materialized views over the same raw tables (schema
     `bench_mv`, same relation names), refreshed in a loop (`REFRESH MATERIALIZED VIEW`, back to back
     or every MV_INTERVAL s); the same queries against them, the same freshness probe.
Each part runs in a process of its own (load, queries, freshness probe, refresher) so that they do not
wait on each other's Python. Every order goes to a customer who got none before in that window (the
seed has 10,000 at scale 10), so "its customer's count went up by one" says the order is visible.

Run by bench/reporting.sh, which starts `fig up` and passes everything in the environment.
"""

import json
import math
import multiprocessing as mp
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cutover  # noqa: E402  (reads ROUTER_URL, PG_URL, ... from the environment)
from cutover import Conn, die, log, pct  # noqa: E402

import psycopg2  # noqa: E402

E = os.environ
REPORTING_URL = E["REPORTING_URL"]
RATE = float(E.get("RATE", "200"))
D = float(E.get("D", "30"))
WORKERS = int(E.get("WORKERS", "32"))
QUERY_EVERY_MS = float(E.get("QUERY_EVERY_MS", "50"))   # one round of every query this often
POLL_MS = float(E.get("POLL_MS", "2"))                  # freshness probe interval
MV_INTERVAL = float(E.get("MV_INTERVAL", "0"))          # 0: refresh back to back
MV_REFRESH = E.get("MV_REFRESH", "plain")               # plain | concurrently
QUERY_GOAL_MS = float(E.get("QUERY_GOAL_MS", "10"))
FRESH_GOAL_MS = float(E.get("FRESH_GOAL_MS", "100"))
DRAIN_TIMEOUT = float(E.get("DRAIN_TIMEOUT", "30"))
REQ_TIMEOUT = float(E.get("REQ_TIMEOUT", "10"))
now = time.monotonic  # CLOCK_MONOTONIC: one clock for every process

RAW_TABLES = ["raw_catalog.artists", "raw_catalog.albums", "raw_customers.customers",
              "raw_orders.orders", "raw_orders.order_lines", "raw_wishlist.items"]

# The reference: the four reports computed straight from the raw tables (as the reference queries
# of tests/tests/reporting/main.rs), with the indexes a team would give them.
MATVIEWS = {
    "sales_by_artist_day": (
        "SELECT al.artist_id, a.name AS artist_name, (o.placed_at AT TIME ZONE 'UTC')::date AS day, "
        "o.currency, sum(l.quantity)::bigint AS units, sum(l.quantity * l.unit_price_cents)::bigint AS revenue_cents "
        "FROM raw_orders.orders o JOIN raw_orders.order_lines l ON l.order_id = o.id "
        "LEFT JOIN raw_catalog.albums al ON al.id = l.album_id "
        "LEFT JOIN raw_catalog.artists a ON a.id = al.artist_id "
        "WHERE o.status = 'placed' GROUP BY 1, 2, 3, 4",
        ["UNIQUE (artist_id, day, currency)", "(day)"]),
    "most_wished_albums": (
        "SELECT w.album_id, al.title, al.artist_id, count(*)::bigint AS wishes, al.stock, "
        "coalesce(al.stock > 0, false) AS in_stock "
        "FROM raw_wishlist.items w LEFT JOIN raw_catalog.albums al ON al.id = w.album_id GROUP BY 1, 2, 3, 5, 6",
        ["UNIQUE (album_id)", "(wishes DESC, album_id)"]),
    "stock_alerts": (
        "SELECT w.album_id, al.title, al.artist_id, count(*)::bigint AS wishes, al.stock "
        "FROM raw_wishlist.items w JOIN raw_catalog.albums al ON al.id = w.album_id "
        "GROUP BY 1, 2, 3, 5 HAVING count(*) >= 3 AND al.stock <= 5",
        ["UNIQUE (album_id)"]),
    "customer_lifetime_value": (
        "SELECT o.customer_id, c.name, o.currency, count(*)::bigint AS orders, sum(o.total_cents)::bigint AS revenue_cents "
        "FROM raw_orders.orders o LEFT JOIN raw_customers.customers c ON c.id = o.customer_id "
        "WHERE o.status = 'placed' GROUP BY 1, 2, 3",
        ["UNIQUE (customer_id, currency)", "(revenue_cents DESC)"]),
}

TODAY = "(now() AT TIME ZONE 'UTC')::date"
# The analyst queries; {s} is reporting_v1 or bench_mv.
QUERIES = [
    ("one artist, 30 days", "SELECT day, currency, units, revenue_cents FROM {s}.sales_by_artist_day "
     f"WHERE artist_id = %(artist)s AND day >= {TODAY} - 30 ORDER BY day"),
    ("top 10 artists, today", "SELECT artist_id, artist_name, sum(units) AS units, sum(revenue_cents) AS revenue "
     f"FROM {{s}}.sales_by_artist_day WHERE day = {TODAY} GROUP BY 1, 2 ORDER BY units DESC LIMIT 10"),
    ("top 10 artists, 30 days", "SELECT artist_name, currency, sum(units) AS units, sum(revenue_cents) AS revenue "
     f"FROM {{s}}.sales_by_artist_day WHERE day >= {TODAY} - 30 GROUP BY 1, 2 ORDER BY units DESC LIMIT 10"),
    ("top 10 most wished", "SELECT album_id, title, wishes, in_stock FROM {s}.most_wished_albums "
     "ORDER BY wishes DESC, album_id LIMIT 10"),
    ("stock alerts", "SELECT album_id, title, wishes, stock FROM {s}.stock_alerts ORDER BY wishes DESC, album_id"),
    ("top 20 customers by value", "SELECT customer_id, name, currency, orders, revenue_cents "
     "FROM {s}.customer_lifetime_value ORDER BY revenue_cents DESC LIMIT 20"),
    ("one customer's value", "SELECT currency, orders, revenue_cents FROM {s}.customer_lifetime_value "
     "WHERE customer_id = %(customer)s"),
]


def connect():
    c = psycopg2.connect(REPORTING_URL)
    c.autocommit = True
    return c


def one(cur, q, args=None):
    cur.execute(q, args)
    return cur.fetchall()


def counts_by_customer(cur, schema):
    return {c: n for c, n in one(cur, f"SELECT customer_id, sum(orders)::bigint FROM {schema}.customer_lifetime_value "
                                      "GROUP BY 1")}


# ---------------------------------------------------------------------------------------------
# Processes: each gets a stop Event and sends its results back on a Queue.

def query_proc(schema, artists, customers, stop, out):
    """Every QUERY_EVERY_MS, each query once, on one kept connection: (name, seconds) per run."""
    cur = connect().cursor()
    rnd = random.Random(7)
    times = {name: [] for name, _ in QUERIES}
    errors = 0
    nxt = now()
    while not stop.is_set():
        args = {"artist": rnd.choice(artists), "customer": rnd.choice(customers)}
        for name, q in QUERIES:
            t = now()
            try:
                cur.execute(q.format(s=schema), args)
                cur.fetchall()
            except psycopg2.Error:
                errors += 1
                continue
            times[name].append(now() - t)
        nxt += QUERY_EVERY_MS / 1000
        d = nxt - now()
        if d > 0:
            time.sleep(d)
        else:
            nxt = now()
    out.put(("queries", times, errors))


def probe_proc(schema, orders, stop, out):
    """Freshness: for each (order id, customer, expected count, answered at) received, polls the
    customer's count in {schema}.customer_lifetime_value every POLL_MS until it reaches the
    expected count; records the start time of the poll that saw it."""
    cur = connect().cursor()
    pending = {}   # customer -> [(expected, order id, answered at)]
    seen = []      # (order id, answered at, seen at)
    draining_since = None
    while True:
        while True:
            try:
                oid, cust, expected, answered = orders.get_nowait()
            except Exception:  # queue.Empty
                break
            pending.setdefault(cust, []).append((expected, oid, answered))
        if stop.is_set():
            draining_since = draining_since or now()
            if not pending or now() - draining_since > DRAIN_TIMEOUT:
                break
        if pending:
            t = now()
            got = dict(one(cur, f"SELECT customer_id, sum(orders)::bigint FROM {schema}.customer_lifetime_value "
                                "WHERE customer_id = ANY(%s) GROUP BY 1", (list(pending),)))
            for cust in list(pending):
                have = got.get(cust, 0)
                left = []
                for expected, oid, answered in pending[cust]:
                    if have >= expected:
                        seen.append((oid, answered, t))
                    else:
                        left.append((expected, oid, answered))
                if left:
                    pending[cust] = left
                else:
                    del pending[cust]
        time.sleep(POLL_MS / 1000)
    out.put(("fresh", seen, sum(len(v) for v in pending.values())))


def refresh_proc(stop, out):
    """Refreshes the four materialized views in turn, back to back (or every MV_INTERVAL s)."""
    cur = connect().cursor()
    how = "CONCURRENTLY " if MV_REFRESH == "concurrently" else ""
    rounds, per_view = [], {v: [] for v in MATVIEWS}
    while not stop.is_set():
        t0 = now()
        for v in MATVIEWS:
            t = now()
            cur.execute(f"REFRESH MATERIALIZED VIEW {how}bench_mv.{v}")
            per_view[v].append(now() - t)
        rounds.append(now() - t0)
        if MV_INTERVAL > 0:
            stop.wait(max(0.0, MV_INTERVAL - (now() - t0)))
    out.put(("refresh", rounds, per_view))


# ---------------------------------------------------------------------------------------------
# The load (threads of this process): slot i is due at t0 + i/RATE; each order goes to the next
# customer of a shuffled list and a random album; on 409 (insufficient stock) another album.

class Load:
    def __init__(self, customers, albums, orders_q):
        self.customers, self.albums, self.q = customers, albums, orders_q
        self.lock = threading.Lock()
        self.i = 0
        self.sent_to = {}
        self.records = []   # (slot, sent, answered, status, tries)
        self.t0 = 0.0
        self.end = 0.0

    def next_slot(self):
        with self.lock:
            i = self.i
            self.i += 1
            cust = self.customers[i % len(self.customers)]
            self.sent_to[cust] = self.sent_to.get(cust, 0) + 1
            return self.t0 + i / RATE, cust, self.sent_to[cust]

    def worker(self, seed):
        rnd = random.Random(seed)
        conn = Conn(cutover.HOST, cutover.PORT, REQ_TIMEOUT)
        out = []
        while True:
            slot, cust, nth = self.next_slot()
            if slot >= self.end:
                break
            d = slot - now()
            if d > 0:
                time.sleep(d)
            sent = now()
            for tries in range(1, 6):
                body = json.dumps({"customer_id": cust, "lines": [{"album_id": rnd.choice(self.albums),
                                                                    "quantity": 1}]}).encode()
                status, data, err = conn.req("POST", "/orders", body)
                if status != 409:
                    break
            answered = now()
            if status == 201:
                self.q.put((json.loads(data)["id"], cust, self.base.get(cust, 0) + nth, answered))
            out.append((slot, sent, answered, status or err, tries))
        conn.close()
        with self.lock:
            self.records.extend(out)

    def run(self, base):
        self.base = base
        self.t0 = now() + 0.2
        self.end = self.t0 + D
        ts = [threading.Thread(target=self.worker, args=(k,), daemon=True) for k in range(WORKERS)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(D + REQ_TIMEOUT + 5)


def window(label, schema, customers, albums, artists, seed_customers):
    """One load window with its query runner, freshness probe (and refresher): the figures."""
    cur = connect().cursor()
    base = counts_by_customer(cur, schema)
    cur.connection.close()
    stop, stop_refresh, out, orders_q = mp.Event(), mp.Event(), mp.Queue(), mp.Queue()
    procs = [mp.Process(target=query_proc, args=(schema, artists, seed_customers, stop, out)),
             mp.Process(target=probe_proc, args=(schema, orders_q, stop, out))]
    if schema == "bench_mv":  # it refreshes until the probe has seen every order (or gave up)
        procs.append(mp.Process(target=refresh_proc, args=(stop_refresh, out)))
    for p in procs:
        p.start()
    log(f"{label}: {RATE:.0f} orders/s for {D:.0f} s, queries against {schema} every {QUERY_EVERY_MS:g} ms")
    load = Load(customers, albums, orders_q)
    load.run(base)
    stop.set()
    res = {}
    for _ in procs:
        kind, *rest = out.get(timeout=DRAIN_TIMEOUT + 120)
        res[kind] = rest
        if kind == "fresh":
            stop_refresh.set()
    for p in procs:
        p.join(10)
    res["load"] = load.records
    return res


def report(label, res):
    recs = res["load"]
    times, qerr = res["queries"]
    seen, unseen = res["fresh"]
    status = {}
    for r in recs:
        status[r[3]] = status.get(r[3], 0) + 1
    retries = sum(r[4] - 1 for r in recs)
    span = (max(r[0] for r in recs) - min(r[0] for r in recs)) if recs else 0
    print(f"\n-- {label} --")
    print(f"  orders: {len(recs)} sent in {span:.1f} s ({len(recs) / max(span, 1e-9):.0f}/s), answers {status}, "
          f"{retries} retried with another album after 409")
    print(f"  order latency (due slot -> answer): p50={pct([r[2] - r[0] for r in recs], 50):.1f} ms "
          f"p99={pct([r[2] - r[0] for r in recs], 99):.1f} ms; client lateness p99="
          f"{pct([r[1] - r[0] for r in recs], 99):.1f} ms")
    for name, _ in QUERIES:
        xs = times[name]
        print(f"  query {name:<28} n={len(xs):<5} p50={pct(xs, 50):7.2f} ms  p99={pct(xs, 99):7.2f} ms  "
              f"max={pct(xs, 100):8.2f} ms")
    if qerr:
        print(f"  query errors: {qerr}")
    lag = [s - a for _, a, s in seen]
    print(f"  freshness (201 answered -> visible): n={len(lag)} p50={pct(lag, 50):.1f} ms  p99={pct(lag, 99):.1f} ms  "
          f"max={pct(lag, 100):.1f} ms; not visible within {DRAIN_TIMEOUT:g} s of the load's end: {unseen}")
    if "refresh" in res:
        rounds, per_view = res["refresh"]
        print(f"  refresh ({MV_REFRESH}, {'back to back' if MV_INTERVAL <= 0 else f'every {MV_INTERVAL:g} s'}): "
              f"{len(rounds)} rounds of all four, p50={pct(rounds, 50):.0f} ms p99={pct(rounds, 99):.0f} ms")
        for v, xs in per_view.items():
            print(f"    {v:<26} p50={pct(xs, 50):7.1f} ms  p99={pct(xs, 99):7.1f} ms")
    return {name: pct(times[name], 99) for name, _ in QUERIES}, pct(lag, 50), pct(lag, 99), unseen


def main():
    conn = connect()
    cur = conn.cursor()
    print("== reporting bench ==")
    print("  row counts in the reporting database at the start:")
    for t in RAW_TABLES:
        print(f"    {t:<26} {one(cur, f'SELECT count(*) FROM {t}')[0][0]:>9,}")
    customers = [c for (c,) in one(cur, "SELECT id FROM raw_customers.customers ORDER BY id")]
    albums = [a for (a,) in one(cur, "SELECT id FROM raw_catalog.albums WHERE stock >= 10 ORDER BY id")]
    artists = [a for (a,) in one(cur, "SELECT DISTINCT artist_id FROM raw_catalog.albums ORDER BY 1")]
    stock = one(cur, "SELECT min(stock), percentile_disc(0.5) WITHIN GROUP (ORDER BY stock), max(stock) "
                     "FROM raw_catalog.albums")[0]
    print(f"  album stock min/median/max {stock[0]}/{stock[1]}/{stock[2]}; {len(albums)} albums with >= 10 "
          "in stock are ordered from")
    if not customers or not albums:
        die("no customers or no albums in stock in the reporting database")
    rnd = random.Random(1)
    order = customers[:]
    rnd.shuffle(order)
    need = int(RATE * D * 1.1)
    if need > len(order):
        log(f"{need} orders per window for {len(order)} customers: some get two, the probe allows for it")

    cur.execute("DROP SCHEMA IF EXISTS bench_mv CASCADE; CREATE SCHEMA bench_mv")
    t = now()
    for v, (q, idx) in MATVIEWS.items():
        cur.execute(f"CREATE MATERIALIZED VIEW bench_mv.{v} AS {q}")
        for k, cols in enumerate(idx):
            uniq = "UNIQUE " if cols.startswith("UNIQUE ") else ""
            cur.execute(f"CREATE {uniq}INDEX {v}_{k} ON bench_mv.{v} {cols.removeprefix('UNIQUE ')}")
        cur.execute(f"ANALYZE bench_mv.{v}")
    sizes = {v: one(cur, f"SELECT count(*) FROM bench_mv.{v}")[0][0] for v in MATVIEWS}
    print(f"  materialized views created in {1000 * (now() - t):.0f} ms; rows: "
          + ", ".join(f"{v} {n:,}" for v, n in sizes.items()))
    wwd = E.get("WAL_WRITER_DELAY", "")
    if wwd:  # fig's throwaway cluster runs with synchronous_commit=off: the WAL writer's delay
        cur.execute("ALTER SYSTEM SET wal_writer_delay = %s", (wwd,))  # bounds what walsenders see
        cur.execute("SELECT pg_reload_conf()")
        time.sleep(0.5)
    print("  cluster: " + ", ".join(f"{k}={one(cur, f'SHOW {k}')[0][0]}"
                                   for k in ("synchronous_commit", "wal_writer_delay", "fsync")))
    conn.close()

    engine = window("engine (reporting_v1)", "reporting_v1", order, albums, artists, customers)
    # The second window's customers follow the first's; its matviews start from a fresh refresh.
    time.sleep(2)
    c = connect()
    for v in MATVIEWS:
        c.cursor().execute(f"REFRESH MATERIALIZED VIEW bench_mv.{v}")
    c.close()
    mv = window("matview (bench_mv)", "bench_mv", order[need:] + order[:need], albums, artists, customers)

    e = report(f"engine: reporting_v1 (views over the trigger-kept aggregates)", engine)
    m = report(f"reference: plain materialized views, REFRESH {MV_REFRESH} "
               f"{'back to back' if MV_INTERVAL <= 0 else f'every {MV_INTERVAL:g} s'}", mv)

    print("\n== side by side (p99 unless said; goals: query p99 < "
          f"{QUERY_GOAL_MS:g} ms, freshness p99 < {FRESH_GOAL_MS:g} ms) ==")
    print(f"  {'':<32} {'engine':>10} {'':<5} {'matview':>10} {'':<5}")
    good = lambda x, g: "PASS" if x < g else "FAIL"
    for name, _ in QUERIES:
        print(f"  query {name:<26} {e[0][name]:>8.2f}ms {good(e[0][name], QUERY_GOAL_MS):<5} "
              f"{m[0][name]:>8.2f}ms {good(m[0][name], QUERY_GOAL_MS):<5}")
    print(f"  {'freshness p50':<32} {e[1]:>8.1f}ms {'':<5} {m[1]:>8.1f}ms")
    print(f"  {'freshness p99':<32} {e[2]:>8.1f}ms {good(e[2], FRESH_GOAL_MS) if not e[3] else 'FAIL':<5} "
          f"{m[2]:>8.1f}ms {good(m[2], FRESH_GOAL_MS) if not m[3] else 'FAIL':<5}")
    ok = all(x < QUERY_GOAL_MS for x in e[0].values()) and e[2] < FRESH_GOAL_MS and not e[3]
    print(f"  engine meets every goal: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
