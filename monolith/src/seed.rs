//! Deterministic seed data: the same size always produces the same rows, so a demo, a bug report
//! and a parallel-run comparison can all talk about "album 42".
//!
//! SplitMix64 with a fixed seed, and fixed timestamps for the order history. One transaction,
//! refused on a database that already has albums. It writes only through each module's
//! functions: the `pub(crate)` bulk inserts, and `orders::record_history`, which records a past
//! order and its lines without taking stock or touching wishlists.

use chrono::{DateTime, Duration, Utc};
use diesel::{Connection, PgConnection};

use crate::catalog::{self, AlbumId, ArtistId, Money, NewAlbum, NewArtist};
use crate::customers::{self, CustomerId, NewCustomer};
use crate::orders::{self, OrderLine};
use crate::wishlist;

/// How much to generate. [`SeedSize::default`] is the demo size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedSize {
    pub artists: usize,
    pub albums: usize,
    pub customers: usize,
    pub orders: usize,
}

impl Default for SeedSize {
    fn default() -> Self {
        SeedSize {
            artists: 200,
            albums: 2_000,
            customers: 1_000,
            orders: 5_000,
        }
    }
}

impl SeedSize {
    /// The default size times `factor` (at least one of each).
    pub fn scaled(factor: f64) -> Self {
        let d = SeedSize::default();
        let s = |n: usize| ((n as f64 * factor).round() as usize).max(1);
        SeedSize {
            artists: s(d.artists),
            albums: s(d.albums),
            customers: s(d.customers),
            orders: s(d.orders),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeedReport {
    pub artists: usize,
    pub albums: usize,
    pub customers: usize,
    pub wishlist_items: usize,
    pub orders: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("the database already holds catalog data; seed only an empty database")]
    NotEmpty,
    #[error("seeding failed: {0}")]
    Failed(String),
}

impl From<diesel::result::Error> for SeedError {
    fn from(e: diesel::result::Error) -> Self {
        SeedError::Failed(e.to_string())
    }
}

macro_rules! from_module_error {
    ($($t:ty),*) => {$(
        impl From<$t> for SeedError {
            fn from(e: $t) -> Self {
                SeedError::Failed(e.to_string())
            }
        }
    )*};
}
from_module_error!(
    catalog::CatalogError,
    customers::CustomersError,
    wishlist::WishlistError,
    orders::OrdersError
);

/// SplitMix64: tiny, fast and fixed forever, unlike a library RNG whose stream may change
/// between versions and silently reshuffle the seed data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() as u64 - 1) as usize]
    }
}

const SEED: u64 = 0x6D75_7369_6363_6F72; // "musiccor"
const ADJECTIVES: &[&str] = &[
    "Velvet", "Electric", "Silent", "Golden", "Broken", "Neon", "Wild", "Midnight", "Crimson",
    "Hollow", "Lucky", "Paper", "Iron", "Glass", "Northern", "Lazy", "Cosmic", "Rusty", "Blue",
    "Secret",
];
const NOUNS: &[&str] = &[
    "Foxes",
    "Rivers",
    "Engines",
    "Ghosts",
    "Harbours",
    "Tigers",
    "Lanterns",
    "Comets",
    "Orchards",
    "Wolves",
    "Satellites",
    "Pilots",
    "Saints",
    "Machines",
    "Sparrows",
    "Mirrors",
];
const TITLE_WORDS: &[&str] = &[
    "Summer",
    "Echoes",
    "Gravity",
    "Home",
    "Static",
    "Blossom",
    "Afterglow",
    "Signals",
    "Tides",
    "Fever",
    "Horizon",
    "Motel",
    "Satellite",
    "Lullaby",
    "Thunder",
    "Daylight",
    "Avenue",
    "Dust",
    "Harvest",
    "Reverie",
    "Voltage",
    "Canyon",
    "Parade",
    "Quiet",
];
const GENRES: &[&str] = &[
    "rock",
    "jazz",
    "pop",
    "electronic",
    "hip-hop",
    "classical",
    "folk",
    "metal",
    "soul",
    "blues",
    "reggae",
    "country",
];
const COUNTRIES: &[&str] = &["GB", "US", "DE", "FR", "SE", "JP", "BR", "NG", "KR", "AU"];
const FIRST_NAMES: &[&str] = &[
    "Ada", "Bo", "Chen", "Dara", "Emeka", "Freya", "Goro", "Hana", "Ines", "Jonas", "Kofi", "Lena",
    "Mateo", "Noor", "Olu", "Priya", "Quinn", "Rosa", "Sven", "Tariq",
];
const LAST_NAMES: &[&str] = &[
    "Okafor",
    "Lindqvist",
    "Tanaka",
    "Moreau",
    "Silva",
    "Kim",
    "Novak",
    "Haddad",
    "Murphy",
    "Schmidt",
    "Rossi",
    "Nguyen",
    "Patel",
    "Kowalski",
    "Dubois",
    "Ibrahim",
];
/// Rows per multi-row INSERT, well under PostgreSQL's 65,535 bind parameters.
const CHUNK: usize = 1_000;

/// Whether the database already holds catalog data.
pub fn is_seeded(conn: &mut PgConnection) -> Result<bool, SeedError> {
    Ok(catalog::count_albums(conn)? > 0)
}

/// Fills an empty, migrated database in one transaction.
pub fn seed(conn: &mut PgConnection, size: SeedSize) -> Result<SeedReport, SeedError> {
    seed_with_progress(conn, size, &mut |_, _| {})
}

/// As [`seed`], telling `progress` how many of the artists, albums, customers and orders (the
/// rows whose number the size fixes) are written, out of how many. The tables are analyzed at
/// the end, so the planner (and a replication copy's progress) knows their sizes at once.
pub fn seed_with_progress(
    conn: &mut PgConnection,
    size: SeedSize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<SeedReport, SeedError> {
    conn.transaction(|tx| {
        if is_seeded(tx)? {
            return Err(SeedError::NotEmpty);
        }
        let report = generate(tx, size, progress)?;
        diesel::connection::SimpleConnection::batch_execute(tx, "ANALYZE")?;
        Ok(report)
    })
}

/// Counts the rows written and tells whoever asked.
struct Written<'a> {
    done: usize,
    total: usize,
    progress: &'a mut dyn FnMut(usize, usize),
}

impl Written<'_> {
    fn add(&mut self, rows: usize) {
        self.done += rows;
        (self.progress)(self.done, self.total);
    }
}

/// Rows between two progress reports while orders are written one by one.
const ORDERS_PER_REPORT: usize = 500;

fn generate(
    tx: &mut PgConnection,
    size: SeedSize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<SeedReport, SeedError> {
    let mut rng = Rng(SEED);
    let mut report = SeedReport::default();
    let mut written = Written {
        done: 0,
        total: size.artists + size.albums + size.customers + size.orders,
        progress,
    };

    let artists: Vec<NewArtist> = (0..size.artists)
        .map(|i| NewArtist {
            name: format!("The {} {} {}", rng.pick(ADJECTIVES), rng.pick(NOUNS), i + 1),
            country: (rng.range(0, 9) > 0).then(|| rng.pick(COUNTRIES).to_string()),
        })
        .collect();
    let mut artist_ids: Vec<ArtistId> = Vec::new();
    for chunk in artists.chunks(CHUNK) {
        artist_ids.extend(catalog::insert_artists_bulk(tx, chunk)?);
        written.add(chunk.len());
    }
    report.artists = artist_ids.len();

    let albums: Vec<NewAlbum> = (0..size.albums)
        .map(|i| NewAlbum {
            sku: format!("MC-{:06}", i + 1),
            title: format!("{} {}", rng.pick(TITLE_WORDS), rng.pick(TITLE_WORDS)),
            artist_id: *rng.pick(&artist_ids),
            genre: rng.pick(GENRES).to_string(),
            release_year: rng.range(1960, 2026) as i32,
            price: Money {
                amount_cents: (rng.range(5, 29) * 100 + 99) as i64,
                currency: "USD".into(),
            },
            // About one album in twenty is sold out.
            stock: if rng.range(0, 19) == 0 {
                0
            } else {
                rng.range(1, 60) as i32
            },
        })
        .collect();
    let mut album_ids: Vec<AlbumId> = Vec::new();
    for chunk in albums.chunks(CHUNK) {
        album_ids.extend(catalog::insert_albums_bulk(tx, chunk)?);
        written.add(chunk.len());
    }
    report.albums = album_ids.len();

    let customers: Vec<NewCustomer> = (0..size.customers)
        .map(|i| {
            let (first, last) = (rng.pick(FIRST_NAMES), rng.pick(LAST_NAMES));
            NewCustomer {
                name: format!("{first} {last}"),
                email: format!(
                    "{}.{}.{}@example.com",
                    first.to_lowercase(),
                    last.to_lowercase(),
                    i + 1
                ),
            }
        })
        .collect();
    let mut customer_ids: Vec<CustomerId> = Vec::new();
    for chunk in customers.chunks(CHUNK) {
        customer_ids.extend(customers::insert_customers_bulk(tx, chunk)?);
        written.add(chunk.len());
    }
    report.customers = customer_ids.len();

    let mut wished: Vec<(CustomerId, AlbumId)> = Vec::new();
    for &customer in &customer_ids {
        for _ in 0..rng.range(0, 6) {
            let album = *rng.pick(&album_ids);
            if !wished.contains(&(customer, album)) {
                wished.push((customer, album));
            }
        }
    }
    for chunk in wished.chunks(CHUNK) {
        report.wishlist_items += wishlist::insert_items_bulk(tx, chunk)?;
    }

    // Order history over 2026 from a fixed start, so the same seed gives the same timestamps.
    let start: DateTime<Utc> = DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
    let prices: std::collections::HashMap<AlbumId, Money> = album_ids
        .iter()
        .zip(&albums)
        .map(|(id, a)| (*id, a.price.clone()))
        .collect();
    let mut orders_reported = 0;
    for _ in 0..size.orders {
        let customer = *rng.pick(&customer_ids);
        let mut lines: Vec<OrderLine> = Vec::new();
        for _ in 0..rng.range(1, 3) {
            let album = *rng.pick(&album_ids);
            if lines.iter().all(|l| l.album_id != album) {
                lines.push(OrderLine {
                    album_id: album,
                    quantity: rng.range(1, 2) as i32,
                    unit_price: prices[&album].clone(),
                });
            }
        }
        let placed_at = start + Duration::seconds(rng.range(0, 300 * 86_400) as i64);
        orders::record_history(tx, customer, &lines, placed_at)?;
        report.orders += 1;
        if report.orders % ORDERS_PER_REPORT == 0 || report.orders == size.orders {
            written.add(report.orders - orders_reported);
            orders_reported = report.orders;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_fixed() {
        let mut a = Rng(SEED);
        let mut b = Rng(SEED);
        let xs: Vec<u64> = (0..5).map(|_| a.next()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next()).collect();
        assert_eq!(xs, ys);
        // Pinned: a change here reshuffles every seeded database.
        assert_eq!(Rng(0).next(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn ranges_stay_in_bounds() {
        let mut r = Rng(1);
        for _ in 0..10_000 {
            let v = r.range(3, 7);
            assert!((3..=7).contains(&v));
        }
    }

    #[test]
    fn scaling_keeps_at_least_one_of_each() {
        assert_eq!(SeedSize::scaled(1.0), SeedSize::default());
        let tiny = SeedSize::scaled(0.0001);
        assert_eq!(
            (tiny.artists, tiny.albums, tiny.customers, tiny.orders),
            (1, 1, 1, 1)
        );
    }
}
