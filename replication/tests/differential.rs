//! The randomized differential test (issue 16): concurrent source workloads generated from a
//! seed run while a pipeline replicates them, then source and target are compared row for row.
//!
//! A seed fixes what every client runs: the clients, their transactions and statements, the
//! pipeline's `batch_rows`. It does not fix how the clients interleave (that is the scheduler's
//! and the lock manager's), nor which transactions lose a deadlock or a unique-key race and are
//! rolled back, nor which the walsender streams: a failing seed usually fails again when
//! replayed, but a rare interleaving may need a few runs. The source is the reference either way.
//!
//! Without environment variables it runs [`CI_SEEDS`], each with [`CI_TXNS`] transactions, in
//! well under a minute. Knobs (the soak bench, `bench/replication-soak.sh`, uses them):
//!
//! * `FIG_DIFF_SEED=n`: run seed `n` (decimal or 0x-hex) instead of the fixed ones; with
//!   `FIG_DIFF_SEEDS=k`, seeds `n`, `n+1`, ... `n+k-1` (without `FIG_DIFF_SEED`, from a seed
//!   taken from the clock). Every failure names its seed and the command replaying it.
//! * `FIG_DIFF_TXNS=n`: transactions per seed, over all clients.
//! * `FIG_DIFF_TIMEOUT=s`: seconds the target may go without applying anything while behind
//!   before the seed fails as a hang (10); the source workload may take six times that.
//!
//! Each seed prints one line (`differential: seed=... result=ok|FAIL`, seen with `--nocapture`).

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use support::Pair;
use support::rng::Rng;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

const CI_SEEDS: [u64; 3] = [1, 2, 3];
const CI_TXNS: usize = 150;
const TIMEOUT: Duration = Duration::from_secs(10);

/// A key (`kv`), a composite key (`pairs`) and no key at all (`bag`, REPLICA IDENTITY FULL so
/// its updates and deletes can be published; rows may repeat).
const DDL: &str = "
CREATE SCHEMA diff;
CREATE TABLE diff.kv (id bigint PRIMARY KEY, n integer, s text, big text);
CREATE TABLE diff.pairs (a integer, b text, v integer, note text, PRIMARY KEY (a, b));
CREATE TABLE diff.bag (x integer, y text, z numeric);
ALTER TABLE diff.bag REPLICA IDENTITY FULL;";
const TABLES: [&str; 3] = ["diff.kv", "diff.pairs", "diff.bag"];

/// The rows present before the pipeline starts (so the initial copy has work too).
const INITIAL: &str = "
INSERT INTO diff.kv
SELECT g, CASE WHEN g % 11 = 0 THEN NULL ELSE g END, md5(g::text),
       CASE WHEN g % 20 = 0
            THEN (SELECT string_agg(md5('init' || g || '.' || h), '') FROM generate_series(1, 320) h)
       END
  FROM generate_series(1, 2000) g;
INSERT INTO diff.pairs
SELECT a, b, a * 10, CASE WHEN a % 3 = 0 THEN NULL ELSE 'note ' || a || b END
  FROM generate_series(1, 40) a, unnest(ARRAY['a', 'b', 'c', 'd', 'e']) b;
INSERT INTO diff.bag
SELECT g % 30, CASE WHEN g % 4 = 0 THEN NULL ELSE 'y' || (g % 5) END, g % 7
  FROM generate_series(1, 300) g;";

/// Hot `kv` keys every client touches (the initial rows are 1..=2000).
const HOT: i64 = 3_000;
/// Where key changes move hot rows (and move them back from).
const MOVE: i64 = 10_000;
const PAIR_BS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];
/// Text COPY and statements both have to carry exactly: tab, backslash, newline, quotes, a
/// literal `\N`, non-ASCII.
const AWKWARD: &str = r"E'tab\there back\\slash\nnew line ''quoted'' \\N é €'";

// ---------------------------------------------------------------------------------------------
// The workload: a script of transactions per client, from a seed.

/// One step of a transaction.
#[derive(Debug, Clone)]
enum Step {
    /// Must succeed; a tolerated error (deadlock, unique-key race, lock timeout) abandons the
    /// transaction, as an application would.
    Run(String),
    /// A subtransaction: `SAVEPOINT`, these statements, `RELEASE`; rolled back to at the first
    /// error (some are built to fail: a duplicate key inserted after rows of its own).
    Try(Vec<String>),
}

#[derive(Debug, Clone)]
struct Txn {
    steps: Vec<Step>,
    commit: bool,
}

/// What the seed fixes.
struct Workload {
    batch_rows: usize,
    scripts: Vec<Vec<Txn>>,
}

fn workload(seed: u64, txns: usize) -> Workload {
    let mut rng = Rng(seed);
    let clients = 2 + rng.below(3);
    let batch_rows = rng.pick(&[300, 1_000, 5_000]);
    let mut scripts: Vec<Vec<Txn>> = vec![Vec::new(); clients];
    for (c, script) in scripts.iter_mut().enumerate() {
        let mut g = Gen {
            rng: Rng(seed ^ (0xD1FF_0000 + c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            fresh: 1_000_000 + c as i64 * 100_000_000,
            tag: 0,
            savepoints: 0,
        };
        let mine = txns / clients + usize::from(c < txns % clients);
        *script = (0..mine).map(|_| g.txn()).collect();
    }
    Workload {
        batch_rows,
        scripts,
    }
}

struct Gen {
    rng: Rng,
    /// The next key of this client's own range (never touched by another client).
    fresh: i64,
    /// Distinguishes generated values.
    tag: u64,
    savepoints: usize,
}

impl Gen {
    fn txn(&mut self) -> Txn {
        self.savepoints = 0;
        let mut steps = Vec::new();
        match self.rng.below(100) {
            // Small ordinary transactions.
            0..=39 => {
                for _ in 0..1 + self.rng.below(4) {
                    steps.extend(self.small());
                }
                if self.rng.chance(15) {
                    steps.extend(self.failing_insert(false));
                }
            }
            // Big ones: streamed (past 64 kB), over the rows the small ones touch.
            40..=59 => {
                let rows = 1_000 + self.rng.below(3_000);
                steps.extend(self.bulk(rows));
                for _ in 0..self.rng.below(3) {
                    steps.extend(self.small());
                }
                if self.rng.chance(40) {
                    steps.extend(self.savepoint_group(true));
                }
                if self.rng.chance(30) {
                    let rows = 300 + self.rng.below(1_500);
                    steps.extend(self.bulk(rows));
                }
                // After the bulk the transaction is streaming: a failed subtransaction in it.
                if self.rng.chance(40) {
                    let many = self.rng.chance(50);
                    steps.extend(self.failing_insert(many));
                }
            }
            // Medium: past the COPY threshold (256 rows), mostly not streamed.
            60..=69 => {
                let rows = 260 + self.rng.below(200);
                steps.extend(self.bulk(rows));
            }
            70..=81 => steps.extend(self.key_changes()),
            82..=89 => steps.extend(self.delete_and_reinsert()),
            90..=91 => steps.extend(self.truncate()),
            _ => steps.extend(self.savepoint_group(false)),
        }
        Txn {
            steps,
            commit: !self.rng.chance(7),
        }
    }

    fn tag(&mut self) -> u64 {
        self.tag += 1;
        self.rng.next() % 1_000_000 * 1_000 + self.tag % 1_000
    }

    fn hot(&mut self) -> i64 {
        1 + self.rng.below(HOT as usize) as i64
    }

    fn fresh(&mut self, n: usize) -> i64 {
        let first = self.fresh;
        self.fresh += n as i64 + 10;
        first
    }

    fn int_or_null(&mut self) -> String {
        if self.rng.chance(15) {
            "NULL".into()
        } else {
            (self.rng.below(10_000) as i64 - 100).to_string()
        }
    }

    fn text_or_null(&mut self) -> String {
        match self.rng.below(10) {
            0 => "NULL".into(),
            1 => AWKWARD.into(),
            2 => "''".into(),
            _ => format!("'t{}'", self.tag()),
        }
    }

    /// A value for `big`: often TOASTed (> 8 kB, md5 chains so it does not compress away).
    fn big_or_null(&mut self) -> String {
        match self.rng.below(4) {
            0 => "NULL".into(),
            1 => format!("'short {}'", self.tag()),
            _ => toast(&format!("'{}'", self.tag())),
        }
    }

    fn small(&mut self) -> Vec<Step> {
        let run = |sql: String| vec![Step::Run(sql)];
        match self.rng.below(20) {
            0..=2 => {
                let (k, n, s, big) = (
                    self.hot(),
                    self.int_or_null(),
                    self.text_or_null(),
                    self.big_or_null(),
                );
                // On conflict `big` is left as it is: an unchanged TOASTed value.
                run(format!(
                    "INSERT INTO diff.kv VALUES ({k}, {n}, {s}, {big})
                     ON CONFLICT (id) DO UPDATE SET n = EXCLUDED.n, s = EXCLUDED.s"
                ))
            }
            3 => {
                let (k, n, s, big) = (
                    self.hot(),
                    self.int_or_null(),
                    self.text_or_null(),
                    self.big_or_null(),
                );
                vec![Step::Try(vec![format!(
                    "INSERT INTO diff.kv VALUES ({k}, {n}, {s}, {big})"
                )])]
            }
            4..=6 => {
                let (k, n, s) = (self.hot(), self.int_or_null(), self.text_or_null());
                run(format!(
                    "UPDATE diff.kv SET n = {n}, s = {s} WHERE id = {k}"
                ))
            }
            7 => {
                let (k, big) = (self.hot(), self.big_or_null());
                run(format!("UPDATE diff.kv SET big = {big} WHERE id = {k}"))
            }
            8 => {
                let k = self.hot();
                run(format!("DELETE FROM diff.kv WHERE id = {k}"))
            }
            9 => {
                let k = self.hot();
                let to = if self.rng.chance(50) {
                    self.hot()
                } else {
                    k + MOVE
                };
                vec![Step::Try(vec![format!(
                    "UPDATE diff.kv SET id = {to} WHERE id = {k}"
                )])]
            }
            10..=11 => {
                let (a, b, v, note) = (
                    1 + self.rng.below(60),
                    self.rng.pick(&PAIR_BS),
                    self.int_or_null(),
                    self.text_or_null(),
                );
                run(format!(
                    "INSERT INTO diff.pairs VALUES ({a}, '{b}', {v}, {note})
                     ON CONFLICT (a, b) DO UPDATE SET v = EXCLUDED.v, note = EXCLUDED.note"
                ))
            }
            12 => {
                let (a, b, v) = (
                    1 + self.rng.below(60),
                    self.rng.pick(&PAIR_BS),
                    self.int_or_null(),
                );
                run(format!(
                    "UPDATE diff.pairs SET v = {v} WHERE a = {a} AND b = '{b}'"
                ))
            }
            13 => {
                // A change of one half of the composite key, or both.
                let (a, b, a2, b2) = (
                    1 + self.rng.below(60),
                    self.rng.pick(&PAIR_BS),
                    1 + self.rng.below(60),
                    self.rng.pick(&PAIR_BS),
                );
                vec![Step::Try(vec![format!(
                    "UPDATE diff.pairs SET a = {a2}, b = '{b2}' WHERE a = {a} AND b = '{b}'"
                )])]
            }
            14 => {
                let (a, b) = (1 + self.rng.below(60), self.rng.pick(&PAIR_BS));
                run(format!(
                    "DELETE FROM diff.pairs WHERE a = {a} AND b = '{b}'"
                ))
            }
            15 => {
                // Duplicate rows in the keyless table.
                let (x, y, copies) = (self.bag_x(), self.text_or_null(), 1 + self.rng.below(3));
                let z = self.int_or_null();
                run(format!(
                    "INSERT INTO diff.bag SELECT {x}, {y}, {z} FROM generate_series(1, {copies})"
                ))
            }
            16 => {
                let (x, z) = (self.bag_x(), self.int_or_null());
                run(format!("UPDATE diff.bag SET z = {z} WHERE x = {x}"))
            }
            17 => {
                // One of several identical rows.
                let (x, y) = (self.bag_x(), self.text_or_null());
                run(format!(
                    "UPDATE diff.bag SET y = {y}
                      WHERE ctid = (SELECT ctid FROM diff.bag WHERE x = {x} LIMIT 1)"
                ))
            }
            18 => {
                let x = self.bag_x();
                if self.rng.chance(50) {
                    run(format!(
                        "DELETE FROM diff.bag
                          WHERE ctid = (SELECT ctid FROM diff.bag WHERE x = {x} LIMIT 1)"
                    ))
                } else {
                    run(format!("DELETE FROM diff.bag WHERE x = {x}"))
                }
            }
            _ => {
                let (x, x2) = (self.bag_x(), self.bag_x());
                run(format!("UPDATE diff.bag SET x = {x2} WHERE x = {x}"))
            }
        }
    }

    fn bag_x(&mut self) -> String {
        if self.rng.chance(8) {
            "NULL".into()
        } else {
            self.rng.below(40).to_string()
        }
    }

    /// A multi-row statement of about `rows` rows.
    fn bulk(&mut self, rows: usize) -> Vec<Step> {
        let tag = self.tag();
        let w = rows as i64;
        let run = |sql: String| vec![Step::Run(sql)];
        match self.rng.below(11) {
            0 => {
                let f = self.fresh(rows);
                run(format!(
                    "INSERT INTO diff.kv SELECT g, {} FROM generate_series({f}, {}) g",
                    kv_values(tag),
                    f + w - 1
                ))
            }
            1 => {
                let a = self.hot();
                run(format!(
                    "INSERT INTO diff.kv SELECT g, {} FROM generate_series({a}, {}) g
                     ON CONFLICT (id) DO UPDATE SET n = EXCLUDED.n, s = EXCLUDED.s",
                    kv_values(tag),
                    a + w - 1
                ))
            }
            2..=3 => {
                // Unchanged TOASTed values in most rows of the range.
                let a = self.hot();
                run(format!(
                    "UPDATE diff.kv SET n = coalesce(n, 0) + 1,
                            s = CASE WHEN id % 5 = 0 THEN NULL ELSE md5(id || '{tag}') END
                      WHERE id BETWEEN {a} AND {}",
                    a + w - 1
                ))
            }
            4 => {
                let a = self.hot();
                run(format!(
                    "UPDATE diff.kv SET big = CASE WHEN id % 7 = 0 THEN {} ELSE big END,
                            n = CASE WHEN id % 3 = 0 THEN NULL ELSE id END
                      WHERE id BETWEEN {a} AND {}",
                    toast(&format!("'{tag}.' || id")),
                    a + w - 1
                ))
            }
            5 => {
                // Key changes of many rows, into the moved range or back out of it.
                let a = self.hot();
                if self.rng.chance(50) {
                    vec![Step::Try(vec![format!(
                        "UPDATE diff.kv SET id = id + {MOVE} WHERE id BETWEEN {a} AND {}",
                        a + w - 1
                    )])]
                } else {
                    vec![Step::Try(vec![format!(
                        "UPDATE diff.kv SET id = id - {MOVE} WHERE id BETWEEN {} AND {}",
                        a + MOVE,
                        a + MOVE + w - 1
                    )])]
                }
            }
            6 => {
                let a = self.hot();
                run(format!(
                    "DELETE FROM diff.kv WHERE id BETWEEN {a} AND {}",
                    a + w - 1
                ))
            }
            7 => {
                let f = self.fresh(rows);
                run(format!(
                    "INSERT INTO diff.pairs
                     SELECT g, 'bulk{tag}', g % 100,
                            CASE WHEN g % 9 = 0 THEN NULL WHEN g % 9 = 1 THEN {AWKWARD} ELSE md5(g::text) END
                       FROM generate_series({f}, {}) g",
                    f + w - 1
                ))
            }
            8 => run(format!(
                "UPDATE diff.pairs SET v = coalesce(v, 0) + 1, note = 'bulk {tag}'
                  WHERE a % 3 = {}",
                self.rng.below(3)
            )),
            9 => {
                // The keyless table stays small: every update there is a scan on the target.
                let n = rows.min(400);
                run(format!(
                    "INSERT INTO diff.bag
                     SELECT g % 40, CASE WHEN g % 3 = 0 THEN NULL ELSE 'b' || (g % 7) END, g % 11
                       FROM generate_series(1, {n}) g"
                ))
            }
            _ => {
                let a = self.rng.below(40);
                if self.rng.chance(50) {
                    run(format!(
                        "UPDATE diff.bag SET z = coalesce(z, 0) + 1 WHERE x BETWEEN {a} AND {}",
                        a + 10
                    ))
                } else {
                    run(format!(
                        "DELETE FROM diff.bag WHERE x BETWEEN {a} AND {}",
                        a + 10
                    ))
                }
            }
        }
    }

    /// Inserts that fail on a duplicate key of the transaction's own, inside a subtransaction
    /// rolled back to: one row, or (`many`) hundreds of rows written before the one that fails.
    fn failing_insert(&mut self, many: bool) -> Vec<Step> {
        let tag = self.tag();
        if many {
            let rows = 300 + self.rng.below(1_200) as i64;
            let f = self.fresh(rows as usize + 1);
            vec![
                Step::Run(format!(
                    "INSERT INTO diff.kv VALUES ({}, 0, 'blocks the last row', NULL)",
                    f + rows
                )),
                Step::Try(vec![format!(
                    "INSERT INTO diff.kv SELECT g, {} FROM generate_series({f}, {}) g",
                    kv_values(tag),
                    f + rows
                )]),
            ]
        } else if self.rng.chance(50) {
            let k = self.hot();
            vec![
                Step::Run(format!(
                    "INSERT INTO diff.kv VALUES ({k}, 1, 'mine', NULL)
                     ON CONFLICT (id) DO UPDATE SET s = 'mine'"
                )),
                Step::Try(vec![format!(
                    "INSERT INTO diff.kv VALUES ({k}, 2, 'duplicate', NULL)"
                )]),
            ]
        } else {
            let (a, b) = (1 + self.rng.below(60), self.rng.pick(&PAIR_BS));
            vec![
                Step::Run(format!(
                    "INSERT INTO diff.pairs VALUES ({a}, '{b}', 1, 'mine')
                     ON CONFLICT (a, b) DO UPDATE SET note = 'mine'"
                )),
                Step::Try(vec![
                    format!("UPDATE diff.pairs SET v = -1 WHERE a = {a}"),
                    format!("INSERT INTO diff.pairs VALUES ({a}, '{b}', 2, 'duplicate')"),
                ]),
            ]
        }
    }

    /// `SAVEPOINT`, some work, maybe a nested one, then `RELEASE` or `ROLLBACK TO`.
    fn savepoint_group(&mut self, big: bool) -> Vec<Step> {
        self.savepoints += 1;
        let name = format!("s{}", self.savepoints);
        let mut steps = vec![Step::Run(format!("SAVEPOINT {name}"))];
        for _ in 0..1 + self.rng.below(3) {
            steps.extend(self.small());
        }
        if big {
            let rows = 300 + self.rng.below(1_000);
            steps.extend(self.bulk(rows));
        }
        if self.rng.chance(50) {
            let nested_big = big && self.rng.chance(30);
            steps.extend(self.savepoint_group(nested_big));
        }
        if self.rng.chance(25) {
            let many = big && self.rng.chance(50);
            steps.extend(self.failing_insert(many));
        }
        let end = if self.rng.chance(50) {
            "RELEASE SAVEPOINT"
        } else {
            "ROLLBACK TO SAVEPOINT"
        };
        steps.push(Step::Run(format!("{end} {name}")));
        if self.rng.chance(50) {
            steps.extend(self.small());
        }
        steps
    }

    /// Chained key changes, swaps through a temporary key, composite key swaps, and a swap of
    /// two ranges (many rows, each changing key twice).
    fn key_changes(&mut self) -> Vec<Step> {
        match self.rng.below(4) {
            0 => {
                let (k, mid, to) = (self.hot(), self.fresh(1), self.hot());
                vec![Step::Try(vec![
                    format!("UPDATE diff.kv SET id = {mid} WHERE id = {k}"),
                    format!("UPDATE diff.kv SET n = coalesce(n, 0) + 1 WHERE id = {mid}"),
                    format!("UPDATE diff.kv SET id = {to}, s = 'chained' WHERE id = {mid}"),
                ])]
            }
            1 => {
                let (a, b) = (self.hot(), self.hot());
                vec![Step::Try(vec![
                    format!("UPDATE diff.kv SET id = -{a} WHERE id = {a}"),
                    format!("UPDATE diff.kv SET id = {a} WHERE id = {b}"),
                    format!("UPDATE diff.kv SET id = {b} WHERE id = -{a}"),
                ])]
            }
            2 => {
                let (a, b, c) = (
                    1 + self.rng.below(60),
                    self.rng.pick(&PAIR_BS),
                    self.rng.pick(&PAIR_BS),
                );
                vec![Step::Try(vec![
                    format!("UPDATE diff.pairs SET b = 'tmp' WHERE a = {a} AND b = '{b}'"),
                    format!("UPDATE diff.pairs SET b = '{b}' WHERE a = {a} AND b = '{c}'"),
                    format!("UPDATE diff.pairs SET b = '{c}' WHERE a = {a} AND b = 'tmp'"),
                ])]
            }
            _ => {
                let w = 200 + self.rng.below(1_000) as i64;
                let a = 1 + self.rng.below((HOT - 2 * w) as usize) as i64;
                let b = a + w + self.rng.below((HOT - a - 2 * w + 1) as usize) as i64;
                let d = b - a;
                vec![Step::Try(vec![
                    format!(
                        "UPDATE diff.kv SET id = -id WHERE id BETWEEN {a} AND {}",
                        a + w - 1
                    ),
                    format!(
                        "UPDATE diff.kv SET id = id - {d} WHERE id BETWEEN {b} AND {}",
                        b + w - 1
                    ),
                    format!(
                        "UPDATE diff.kv SET id = -id + {d} WHERE id BETWEEN {} AND -{a}",
                        -(a + w - 1)
                    ),
                ])]
            }
        }
    }

    /// The same key deleted and inserted again, in one transaction.
    fn delete_and_reinsert(&mut self) -> Vec<Step> {
        if self.rng.chance(60) {
            let (k, n, s, big) = (
                self.hot(),
                self.int_or_null(),
                self.text_or_null(),
                self.big_or_null(),
            );
            vec![
                Step::Run(format!("DELETE FROM diff.kv WHERE id = {k}")),
                Step::Try(vec![format!(
                    "INSERT INTO diff.kv VALUES ({k}, {n}, {s}, {big})"
                )]),
                Step::Run(format!("UPDATE diff.kv SET n = -n WHERE id = {k}")),
            ]
        } else {
            let (a, w, tag) = (self.hot(), 300 + self.rng.below(1_500) as i64, self.tag());
            vec![
                Step::Run(format!(
                    "DELETE FROM diff.kv WHERE id BETWEEN {a} AND {}",
                    a + w - 1
                )),
                Step::Run(format!(
                    "INSERT INTO diff.kv SELECT g, {} FROM generate_series({a}, {}) g
                     ON CONFLICT (id) DO NOTHING",
                    kv_values(tag),
                    a + w - 1
                )),
            ]
        }
    }

    fn truncate(&mut self) -> Vec<Step> {
        let tag = self.tag();
        match self.rng.below(3) {
            0 => vec![Step::Run("TRUNCATE diff.bag".into())],
            1 => vec![
                Step::Run("TRUNCATE diff.pairs, diff.bag".into()),
                Step::Run(format!(
                    "INSERT INTO diff.pairs SELECT a, b, a, 'after truncate {tag}'
                       FROM generate_series(1, 30) a, unnest(ARRAY['a', 'b', 'c']) b"
                )),
            ],
            _ => vec![
                Step::Run("TRUNCATE diff.kv".into()),
                Step::Run(format!(
                    "INSERT INTO diff.kv SELECT g, {} FROM generate_series(1, 2000) g",
                    kv_values(tag)
                )),
            ],
        }
    }
}

/// `n, s, big` for a row `g` of a generated range: NULLs, awkward text, TOASTed values.
fn kv_values(tag: u64) -> String {
    format!(
        "CASE WHEN g % 13 = 0 THEN NULL ELSE (g * 7 + {m}) % 1000 END,
         CASE WHEN g % 17 = 0 THEN NULL WHEN g % 17 = 1 THEN {AWKWARD} ELSE md5(g || '{tag}') END,
         CASE WHEN g % 40 = 0 THEN {} END",
        toast(&format!("'{tag}.' || g")),
        m = tag % 1000
    )
}

/// An expression for a text of 10 kB from `seed` (an SQL expression): stored out of line.
fn toast(seed: &str) -> String {
    format!("(SELECT string_agg(md5({seed} || '.' || h), '') FROM generate_series(1, 320) h)")
}

// ---------------------------------------------------------------------------------------------
// Running it.

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    committed: u64,
    rolled_back: u64,
    /// Lost a deadlock or a unique-key race with another client: rolled back.
    abandoned: u64,
    failed_subtransactions: u64,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.committed += o.committed;
        self.rolled_back += o.rolled_back;
        self.abandoned += o.abandoned;
        self.failed_subtransactions += o.failed_subtransactions;
    }
}

/// Errors concurrent clients cause each other; any other is a bug in the generator.
fn tolerated(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        [
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::UNIQUE_VIOLATION,
            SqlState::LOCK_NOT_AVAILABLE,
        ]
        .contains(c)
    })
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => e.to_string(),
    }
}

async fn run_client(
    url: String,
    client_no: usize,
    script: Vec<Txn>,
    start: Arc<tokio::sync::Barrier>,
) -> Result<Tally, String> {
    let client = support::client(&url).await;
    client
        .batch_execute("SET deadlock_timeout = '50ms'; SET lock_timeout = '5s'")
        .await
        .map_err(|e| describe(&e))?;
    start.wait().await;
    let mut tally = Tally::default();
    let generator_bug = |i: usize, sql: &str, e: &tokio_postgres::Error| {
        format!(
            "client {client_no}, transaction {i}: {} (a bug in the generator)\n  in: {sql}",
            describe(e)
        )
    };
    for (i, txn) in script.iter().enumerate() {
        exec(&client, "BEGIN").await?;
        let mut alive = true;
        'steps: for step in &txn.steps {
            match step {
                Step::Run(sql) => {
                    if let Err(e) = client.batch_execute(sql).await {
                        if !tolerated(&e) {
                            return Err(generator_bug(i, sql, &e));
                        }
                        alive = false;
                        break 'steps;
                    }
                }
                Step::Try(sqls) => {
                    exec(&client, "SAVEPOINT try").await?;
                    let mut failed = false;
                    for sql in sqls {
                        if let Err(e) = client.batch_execute(sql).await {
                            if !tolerated(&e) {
                                return Err(generator_bug(i, sql, &e));
                            }
                            failed = true;
                            break;
                        }
                    }
                    if failed {
                        tally.failed_subtransactions += 1;
                        exec(&client, "ROLLBACK TO SAVEPOINT try").await?;
                    }
                    exec(&client, "RELEASE SAVEPOINT try").await?;
                }
            }
        }
        if !alive {
            exec(&client, "ROLLBACK").await?;
            tally.abandoned += 1;
        } else if !txn.commit {
            exec(&client, "ROLLBACK").await?;
            tally.rolled_back += 1;
        } else {
            match client.batch_execute("COMMIT").await {
                Ok(()) => tally.committed += 1,
                Err(e) if tolerated(&e) => tally.abandoned += 1,
                Err(e) => return Err(generator_bug(i, "COMMIT", &e)),
            }
        }
    }
    Ok(tally)
}

async fn exec(client: &Client, sql: &str) -> Result<(), String> {
    client
        .batch_execute(sql)
        .await
        .map_err(|e| format!("{sql}: {}", describe(&e)))
}

/// What one seed did.
struct Outcome {
    clients: usize,
    batch_rows: usize,
    tally: Tally,
    streamed: i64,
    rows: usize,
}

async fn run_seed(seed: u64, txns: usize, timeout: Duration) -> Result<Outcome, String> {
    let work = workload(seed, txns);
    let pair = Pair::new("diff", DDL).await;
    pair.src.batch_execute(INITIAL).await.unwrap();
    let mut pipeline = pair.pipeline(&TABLES);
    pipeline.stream_after_kib = 64;
    pipeline.batch_rows = work.batch_rows;
    let (slot, origin) = (pipeline.slot(), pipeline.origin());
    let running = support::start(pipeline);
    running.streaming().await;

    let result = drive(&pair, &running, &work, timeout).await;
    let streamed = streamed(&pair.src, &slot).await;
    let _ = running.stop.send(true);
    let mut task = running.task;
    let stopped = tokio::time::timeout(Duration::from_secs(5), &mut task).await;
    if stopped.is_err() {
        task.abort();
    }
    // Replication origins belong to the cluster, not the database dropped with the pair, and
    // each in use takes one of a few dozen state slots: seed after seed they would run out.
    let _ = pair
        .dst
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE application_name LIKE 'fig-replication-' || $1 || '%'",
            &[&pair.name],
        )
        .await;
    for _ in 0..50 {
        if replication::source::drop_origin(&pair.dst, &origin)
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (tally, rows) = result?;
    match stopped {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(format!("the pipeline stopped with an error: {e}")),
        Ok(Err(e)) => return Err(format!("the pipeline task failed: {e}")),
        Err(_) => return Err("the pipeline did not stop within 5 s".into()),
    }
    Ok(Outcome {
        clients: work.scripts.len(),
        batch_rows: work.batch_rows,
        tally,
        streamed,
        rows,
    })
}

/// The workload, the catch-up and the comparison: the tally and the rows compared.
async fn drive(
    pair: &Pair,
    running: &support::Running,
    work: &Workload,
    timeout: Duration,
) -> Result<(Tally, usize), String> {
    let start = Arc::new(tokio::sync::Barrier::new(work.scripts.len()));
    let clients: Vec<_> = work
        .scripts
        .iter()
        .enumerate()
        .map(|(c, script)| {
            tokio::spawn(run_client(
                pair.source.url().to_string(),
                c,
                script.clone(),
                start.clone(),
            ))
        })
        .collect();
    let mut tally = Tally::default();
    let deadline = tokio::time::Instant::now() + timeout * 6;
    for client in clients {
        let abort = client.abort_handle();
        match tokio::time::timeout_at(deadline, client).await {
            Ok(Ok(Ok(t))) => tally.add(t),
            Ok(Ok(Err(e))) => return Err(format!("the source workload failed: {e}")),
            Ok(Err(e)) => return Err(format!("a source client panicked: {e}")),
            Err(_) => {
                abort.abort();
                return Err(format!(
                    "the source workload did not finish within {} s",
                    (timeout * 6).as_secs()
                ));
            }
        }
    }
    caught_up(pair, running, timeout).await?;
    let mut compared = 0;
    let mut differences = String::new();
    for table in TABLES {
        let want = table_rows(&pair.src, table).await;
        let got = table_rows(&pair.dst, table).await;
        compared += want.len();
        differences += &diff(table, &want, &got);
    }
    if differences.is_empty() {
        Ok((tally, compared))
    } else {
        Err(format!(
            "the target differs from the source ({tally:?}):{differences}"
        ))
    }
}

/// Every row as text, sorted (byte order: duplicates of keyless rows stay side by side).
async fn table_rows(client: &Client, table: &str) -> Vec<String> {
    let mut rows = support::texts(client, &format!("SELECT t::text FROM {table} t")).await;
    rows.sort_unstable();
    rows
}

/// The rows only one side has (as multisets), counted, and the first few shown.
fn diff(table: &str, want: &[String], got: &[String]) -> String {
    let mut count: BTreeMap<&str, i64> = BTreeMap::new();
    for r in want {
        *count.entry(r).or_default() += 1;
    }
    for r in got {
        *count.entry(r).or_default() -= 1;
    }
    let missing: Vec<(&str, i64)> = count
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| (*r, *n))
        .collect();
    let extra: Vec<(&str, i64)> = count
        .iter()
        .filter(|(_, n)| **n < 0)
        .map(|(r, n)| (*r, -*n))
        .collect();
    if missing.is_empty() && extra.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\n  {table}: source {} rows, target {}; {} only on the source, {} only on the target",
        want.len(),
        got.len(),
        missing.iter().map(|(_, n)| n).sum::<i64>(),
        extra.iter().map(|(_, n)| n).sum::<i64>()
    );
    for (side, rows) in [("source only", &missing), ("target only", &extra)] {
        for (row, n) in rows.iter().take(4) {
            let short: String = row.chars().take(140).collect();
            let more = if short.len() < row.len() { "..." } else { "" };
            let times = if *n > 1 {
                format!(" (x{n})")
            } else {
                String::new()
            };
            let _ = write!(out, "\n    {side}: {short}{more}{times}");
        }
    }
    out
}

/// Polls until the target has applied everything the source has now; on a recorded error, a
/// pipeline that ended, or no progress for `timeout` (a hang), says what the target's sessions
/// do.
async fn caught_up(
    pair: &Pair,
    running: &support::Running,
    timeout: Duration,
) -> Result<(), String> {
    let goal = support::current_lsn(&pair.src).await;
    let mut last = (String::new(), Instant::now());
    loop {
        let row = pair
            .dst
            .query_opt(
                "SELECT applied_lsn >= $2::text::pg_lsn, applied_lsn::text, phase, last_error
                   FROM fig_replication.pipelines WHERE name = $1",
                &[&pair.name, &goal],
            )
            .await
            .map_err(|e| describe(&e))?;
        let (done, applied, error) = match &row {
            Some(r) => (
                r.get::<_, bool>(0) && r.get::<_, String>(2) == "streaming",
                r.get::<_, String>(1),
                r.get::<_, Option<String>>(3),
            ),
            None => (false, "nothing".into(), None),
        };
        if let Some(error) = error {
            return Err(format!("the pipeline stopped: {error}"));
        }
        if done {
            return Ok(());
        }
        if running.task.is_finished() {
            return Err("the pipeline ended without recording an error".into());
        }
        if applied != last.0 {
            last = (applied, Instant::now());
        } else if last.1.elapsed() > timeout {
            return Err(format!(
                "hang: the target applied nothing for {} s, stuck at {applied} short of {goal}{}",
                timeout.as_secs(),
                sessions(&pair.dst, &pair.name).await
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pipeline's target sessions: what each waits on, and who blocks it.
async fn sessions(target: &Client, name: &str) -> String {
    let rows = target
        .query(
            "SELECT pid, application_name, state, coalesce(wait_event_type || ':' || wait_event, '-'),
                    pg_blocking_pids(pid)::text, left(regexp_replace(query, '\\s+', ' ', 'g'), 100)
               FROM pg_stat_activity
              WHERE application_name LIKE 'fig-replication-' || $1 || '%'
              ORDER BY pid",
            &[&name],
        )
        .await;
    let mut out = String::from("\n  the pipeline's target sessions:");
    match rows {
        Ok(rows) => {
            for r in rows {
                let _ = write!(
                    out,
                    "\n    pid {} {} ({}, waits {}, blocked by {}): {}",
                    r.get::<_, i32>(0),
                    r.get::<_, String>(1),
                    r.get::<_, Option<String>>(2).unwrap_or_default(),
                    r.get::<_, String>(3),
                    r.get::<_, String>(4),
                    r.get::<_, Option<String>>(5).unwrap_or_default()
                );
            }
        }
        Err(e) => {
            let _ = write!(out, " (could not read them: {})", describe(&e));
        }
    }
    out
}

/// Transactions the walsender streamed while in progress (the server's count).
async fn streamed(source: &Client, slot: &str) -> i64 {
    source
        .query_opt(
            "SELECT stream_txns FROM pg_stat_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .ok()
        .flatten()
        .map_or(-1, |r| r.get(0))
}

// ---------------------------------------------------------------------------------------------

struct Plan {
    seeds: Vec<u64>,
    txns: usize,
    timeout: Duration,
    /// The environment the replay command must repeat besides the seed.
    replay_env: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn number(name: &str, text: &str) -> u64 {
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("{name}={text:?} is not a number"))
}

impl Plan {
    fn from_env() -> Plan {
        let txns = env("FIG_DIFF_TXNS").map_or(CI_TXNS, |v| number("FIG_DIFF_TXNS", &v) as usize);
        let timeout = env("FIG_DIFF_TIMEOUT").map_or(TIMEOUT, |v| {
            Duration::from_secs(number("FIG_DIFF_TIMEOUT", &v))
        });
        let count = env("FIG_DIFF_SEEDS").map(|v| number("FIG_DIFF_SEEDS", &v));
        let first = env("FIG_DIFF_SEED").map(|v| number("FIG_DIFF_SEED", &v));
        let seeds = match (first, count) {
            (None, None) => CI_SEEDS.to_vec(),
            (first, count) => {
                let first = first.unwrap_or_else(|| {
                    let now = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default();
                    Rng(now.as_nanos() as u64).next() % 1_000_000_000
                });
                (0..count.unwrap_or(1)).map(|i| first + i).collect()
            }
        };
        let mut replay_env = String::new();
        if txns != CI_TXNS {
            replay_env += &format!("FIG_DIFF_TXNS={txns} ");
        }
        if timeout != TIMEOUT {
            replay_env += &format!("FIG_DIFF_TIMEOUT={} ", timeout.as_secs());
        }
        Plan {
            seeds,
            txns,
            timeout,
            replay_env,
        }
    }

    fn replay(&self, seed: u64) -> String {
        format!(
            "FIG_DIFF_SEED={seed} {}cargo test -p replication --test differential -- --nocapture",
            self.replay_env
        )
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .map_or("panicked".into(), |s| format!("panicked: {s}")),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_concurrent_workloads_end_with_the_target_equal_to_the_source() {
    let plan = Plan::from_env();
    let mut failures = Vec::new();
    for &seed in &plan.seeds {
        let began = Instant::now();
        let result = tokio::spawn(run_seed(seed, plan.txns, plan.timeout))
            .await
            .unwrap_or_else(|e| Err(panic_text(e)));
        let secs = began.elapsed().as_secs_f64();
        match result {
            Ok(o) => eprintln!(
                "differential: seed={seed} txns={} clients={} batch_rows={} committed={} rolled_back={} abandoned={} failed_subtransactions={} streamed={} rows={} secs={secs:.1} result=ok",
                plan.txns,
                o.clients,
                o.batch_rows,
                o.tally.committed,
                o.tally.rolled_back,
                o.tally.abandoned,
                o.tally.failed_subtransactions,
                o.streamed,
                o.rows
            ),
            Err(why) => {
                eprintln!(
                    "differential: seed={seed} txns={} secs={secs:.1} result=FAIL\n  {why}\n  replay: {}",
                    plan.txns,
                    plan.replay(seed)
                );
                failures.push((seed, why));
            }
        }
    }
    if !failures.is_empty() {
        let mut text = format!("{} of {} seeds failed:", failures.len(), plan.seeds.len());
        for (seed, why) in &failures {
            let _ = write!(
                text,
                "\n\nseed {seed}: {why}\n  replay: {}",
                plan.replay(*seed)
            );
        }
        panic!("{text}");
    }
}

#[test]
fn the_comparison_counts_rows_either_side_lacks_duplicates_included() {
    let rows = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let same = rows(&["(1,a)", "(2,b)", "(2,b)"]);
    assert_eq!(diff("t", &same, &same), "");
    let text = diff(
        "t",
        &rows(&["(1,a)", "(2,b)", "(2,b)", "(3,c)"]),
        &rows(&["(1,a)", "(2,b)", "(4,d)"]),
    );
    assert!(
        text.contains("t: source 4 rows, target 3; 2 only on the source, 1 only on the target"),
        "{text}"
    );
    assert!(text.contains("source only: (3,c)"), "{text}");
    assert!(text.contains("target only: (4,d)"), "{text}");
}

#[test]
fn a_seed_always_generates_the_same_scripts() {
    let text = |w: Workload| format!("{} {:?}", w.batch_rows, w.scripts);
    assert_eq!(text(workload(7, 40)), text(workload(7, 40)));
    assert_ne!(text(workload(7, 40)), text(workload(8, 40)));
    let w = workload(7, 40);
    assert_eq!(w.scripts.iter().map(Vec::len).sum::<usize>(), 40);
}
