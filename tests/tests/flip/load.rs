//! The workload a flip runs under, and what the clients saw: a log of every acknowledged write
//! (the reference the databases are checked against) and of every answer no client should get.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use e2e::{Client, Reply};
use serde_json::json;

use super::stack::{Fixture, Stack};

/// What the clients were told.
#[derive(Debug, Default)]
pub struct Log {
    /// Writes answered 2xx.
    pub acknowledged: AtomicU64,
    /// Artists created (names are unique per write).
    pub artists: Mutex<BTreeSet<String>>,
    /// (customer, album) wishes of the customers who never buy nor remove.
    pub wishes: Mutex<BTreeSet<(i64, i64)>>,
    /// Orders placed: id and album.
    pub orders: Mutex<Vec<(i64, i64)>>,
    /// Documented refusals, by error code.
    pub refused: Mutex<BTreeMap<String, u64>>,
    /// Answers outside the contract: 5xx other than the documented 503s, reads that failed.
    pub unexpected: Mutex<Vec<String>>,
}

impl Log {
    fn ack(&self) {
        self.acknowledged.fetch_add(1, Ordering::Relaxed);
    }

    /// Sorts an answer: `true` when acknowledged; a documented refusal is counted; anything
    /// else is unexpected.
    fn judge(&self, what: &str, reply: &Reply, ok: &[u16], fine: &[(u16, &str)]) -> bool {
        let status = reply.status.as_u16();
        if ok.contains(&status) {
            return true;
        }
        let code = reply.body["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let documented = [
            (503, "write_held"),
            (503, "not_write_owner"),
            (503, "dependency_unavailable"),
        ];
        if documented.contains(&(status, code.as_str())) || fine.contains(&(status, code.as_str()))
        {
            *self.refused.lock().unwrap().entry(code).or_default() += 1;
        } else {
            self.unexpected
                .lock()
                .unwrap()
                .push(format!("{what}: {status} {}", reply.body));
        }
        false
    }
}

/// A small deterministic generator (xorshift64*): the same seed, the same workload.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// `workers` clients ([`client`]), spread over the three routers, until `stop`.
pub fn clients(
    stack: &Stack,
    workers: u64,
    fixture: &Arc<Fixture>,
    log: &Arc<Log>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|worker| {
            tokio::spawn(client(
                worker,
                stack.front(worker as usize),
                fixture.clone(),
                log.clone(),
                stop.clone(),
            ))
        })
        .collect()
}

/// One client through one router until `stop`: catalog writes (new artists, price changes),
/// wishlist additions, orders, and reads of both.
pub async fn client(
    worker: u64,
    front: Client,
    fixture: Arc<Fixture>,
    log: Arc<Log>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng::new(0x5EED_0000 + worker);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let album = *rng.pick(&fixture.albums);
        match rng.below(100) {
            0..30 => {
                let name = format!("load-{worker}-{n}");
                let reply = front
                    .post("/catalog/artists", json!({"name": name, "country": "GB"}))
                    .await;
                if log.judge("create artist", &reply, &[201], &[]) {
                    log.artists.lock().unwrap().insert(name);
                    log.ack();
                }
            }
            30..45 => {
                let cents = 1000 + rng.below(500);
                let reply = front
                    .patch(
                        &format!("/catalog/albums/{album}"),
                        json!({"price": {"amount_cents": cents, "currency": "USD"}}),
                    )
                    .await;
                if log.judge("change a price", &reply, &[200], &[]) {
                    log.ack();
                }
            }
            45..65 => {
                let customer = *rng.pick(&fixture.adders);
                let reply = front
                    .put(&format!("/wishlists/{customer}/items/{album}"))
                    .await;
                if log.judge("wish", &reply, &[200, 201], &[]) {
                    log.wishes.lock().unwrap().insert((customer, album));
                    log.ack();
                }
            }
            65..80 => {
                let customer = *rng.pick(&fixture.buyers);
                let reply = front
                    .post(
                        "/orders",
                        json!({"customer_id": customer, "lines": [{"album_id": album, "quantity": 1}]}),
                    )
                    .await;
                if log.judge("order", &reply, &[201], &[]) {
                    log.orders.lock().unwrap().push((reply.id("id"), album));
                    log.ack();
                }
            }
            80..90 => {
                let reply = front.get(&format!("/catalog/albums/{album}")).await;
                log.judge("read an album", &reply, &[200], &[]);
            }
            _ => {
                let customer = *rng.pick(&fixture.adders);
                let reply = front.get(&format!("/wishlists/{customer}")).await;
                log.judge("read a wishlist", &reply, &[200], &[]);
            }
        }
    }
}

/// Writes straight to both sides' own URLs, past every router: only the owner of the moment
/// may accept one (the other answers 503 `not_write_owner`), including a write in flight when
/// the fence is taken. Every acknowledged one must survive the flips.
pub async fn direct(sides: [Client; 2], log: Arc<Log>, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let side = &sides[(n % 2) as usize];
        let name = format!("direct-{n}");
        let reply = side
            .post("/catalog/artists", json!({"name": name, "country": "GB"}))
            .await;
        if log.judge("direct write", &reply, &[201], &[]) {
            log.artists.lock().unwrap().insert(name);
            log.ack();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
