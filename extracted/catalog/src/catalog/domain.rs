//! Catalog types and the pure rules that validate them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::CatalogError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ArtistId(pub i64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AlbumId(pub i64);

/// An amount in the currency's minor unit (cents), never a float.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Money {
    pub amount_cents: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artist {
    pub id: ArtistId,
    pub name: String,
    pub country: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Album {
    pub id: AlbumId,
    pub sku: String,
    pub title: String,
    pub artist: Artist,
    pub genre: String,
    pub release_year: i32,
    pub price: Money,
    pub stock: i32,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewArtist {
    pub name: String,
    pub country: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAlbum {
    pub sku: String,
    pub title: String,
    pub artist_id: ArtistId,
    pub genre: String,
    pub release_year: i32,
    pub price: Money,
    pub stock: i32,
}

/// A partial update: only the fields present change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlbumChange {
    pub price: Option<Money>,
    pub stock: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlbumFilter {
    pub artist_id: Option<ArtistId>,
    pub genre: Option<String>,
    /// Case-insensitive substring of the title or the artist's name.
    pub text: Option<String>,
    pub page: PageRequest,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ArtistFilter {
    pub text: Option<String>,
    pub page: PageRequest,
}

/// Keyset pagination: items after `after`, ordered by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub after: Option<i64>,
    pub limit: u32,
}

pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 200;
/// Most ids one batch read accepts.
pub const MAX_BATCH: usize = 100;

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            after: None,
            limit: DEFAULT_PAGE_SIZE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass back as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<i64>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows: the extra row only says another page exists.
    pub fn from_overfetch(mut rows: Vec<T>, limit: u32, id_of: impl Fn(&T) -> i64) -> Self {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = if more { rows.last().map(&id_of) } else { None };
        Page {
            items: rows,
            next_cursor,
        }
    }
}

fn invalid(field: &str, message: impl Into<String>) -> CatalogError {
    CatalogError::Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

/// Trims `value` and checks its length in characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<String, CatalogError> {
    let value = value.trim();
    let len = value.chars().count();
    if len == 0 || len > max {
        return Err(invalid(
            field,
            format!("{field} must be 1 to {max} characters"),
        ));
    }
    Ok(value.to_string())
}

pub fn validate_money(field: &str, money: Money) -> Result<Money, CatalogError> {
    if !(0..=100_000_000).contains(&money.amount_cents) {
        return Err(invalid(
            &format!("{field}.amount_cents"),
            "amount_cents must be between 0 and 100000000",
        ));
    }
    if money.currency.len() != 3 || !money.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(invalid(
            &format!("{field}.currency"),
            "currency must be a three-letter ISO 4217 code such as USD",
        ));
    }
    Ok(money)
}

pub fn validate_stock(stock: i32) -> Result<i32, CatalogError> {
    if !(0..=1_000_000).contains(&stock) {
        return Err(invalid("stock", "stock must be between 0 and 1000000"));
    }
    Ok(stock)
}

pub fn validate_sku(sku: &str) -> Result<String, CatalogError> {
    let ok = (1..=64).contains(&sku.len())
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(invalid(
            "sku",
            "sku must be 1 to 64 letters, digits, '-' or '_'",
        ));
    }
    Ok(sku.to_string())
}

pub fn validate_release_year(year: i32) -> Result<i32, CatalogError> {
    if !(1900..=2100).contains(&year) {
        return Err(invalid(
            "release_year",
            "release_year must be between 1900 and 2100",
        ));
    }
    Ok(year)
}

/// An id in a body must be positive; a positive id that does not exist is `unknown_reference`.
pub fn validate_reference(field: &str, id: i64) -> Result<i64, CatalogError> {
    if id <= 0 {
        return Err(invalid(field, format!("{field} must be a positive id")));
    }
    Ok(id)
}

pub fn validate_country(country: Option<String>) -> Result<Option<String>, CatalogError> {
    match country {
        Some(c) if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) => Err(invalid(
            "country",
            "country must be a two-letter ISO 3166 code such as GB",
        )),
        other => Ok(other),
    }
}

pub fn validate_change(change: AlbumChange) -> Result<AlbumChange, CatalogError> {
    if change.price.is_none() && change.stock.is_none() {
        return Err(invalid("body", "give at least one of price, stock"));
    }
    Ok(AlbumChange {
        price: change
            .price
            .map(|p| validate_money("price", p))
            .transpose()?,
        stock: change.stock.map(validate_stock).transpose()?,
    })
}

pub fn validate_page(after: Option<i64>, limit: Option<u32>) -> Result<PageRequest, CatalogError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(invalid(
            "limit",
            format!("limit must be between 1 and {MAX_PAGE_SIZE}"),
        ));
    }
    if after.is_some_and(|a| a < 0) {
        return Err(invalid(
            "cursor",
            "cursor must be a value returned as next_cursor",
        ));
    }
    Ok(PageRequest { after, limit })
}

/// Parses `ids=1,2,3` for a batch read: 1 to [`MAX_BATCH`] positive ids, duplicates removed,
/// first-seen order kept.
pub fn parse_batch_ids(raw: Option<&str>) -> Result<Vec<AlbumId>, CatalogError> {
    let raw = raw.ok_or_else(|| {
        invalid(
            "ids",
            "ids is required: a comma-separated list of album ids",
        )
    })?;
    // Bounded before parsing, so a huge list costs nothing.
    if raw.split(',').count() > MAX_BATCH {
        return Err(invalid(
            "ids",
            format!("at most {MAX_BATCH} ids per request"),
        ));
    }
    let mut ids: Vec<AlbumId> = Vec::new();
    for part in raw.split(',') {
        let id = part
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| {
                invalid(
                    "ids",
                    format!("ids must be positive integers, got {part:?}"),
                )
            })?;
        if !ids.contains(&AlbumId(id)) {
            ids.push(AlbumId(id));
        }
    }
    Ok(ids)
}

/// Escapes `%`, `_` and `\` so user text matches literally inside an ILIKE pattern.
pub fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: CatalogError) -> String {
        match e {
            CatalogError::Invalid { field, .. } => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn money_rules() {
        let ok = Money {
            amount_cents: 1299,
            currency: "USD".into(),
        };
        assert_eq!(validate_money("price", ok.clone()).unwrap(), ok);
        let cases = [
            (-1, "USD", "price.amount_cents"),
            (100_000_001, "USD", "price.amount_cents"),
            (100, "usd", "price.currency"),
            (100, "US", "price.currency"),
            (100, "USDX", "price.currency"),
        ];
        for (amount, currency, field) in cases {
            let m = Money {
                amount_cents: amount,
                currency: currency.into(),
            };
            assert_eq!(field_of(validate_money("price", m).unwrap_err()), field);
        }
    }

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(text("title", "  Abbey Road ", 200).unwrap(), "Abbey Road");
        assert_eq!(field_of(text("title", "   ", 200).unwrap_err()), "title");
        assert_eq!(
            field_of(text("title", &"x".repeat(201), 200).unwrap_err()),
            "title"
        );
        assert!(
            text("title", &"é".repeat(200), 200).is_ok(),
            "counts characters, not bytes"
        );
    }

    #[test]
    fn sku_year_stock_country_rules() {
        assert!(validate_sku("MC-000001").is_ok());
        assert_eq!(field_of(validate_sku("has space").unwrap_err()), "sku");
        assert_eq!(field_of(validate_sku("").unwrap_err()), "sku");
        assert_eq!(
            field_of(validate_release_year(1899).unwrap_err()),
            "release_year"
        );
        assert!(validate_release_year(2024).is_ok());
        assert_eq!(field_of(validate_stock(-1).unwrap_err()), "stock");
        assert_eq!(
            validate_country(Some("GB".into())).unwrap().as_deref(),
            Some("GB")
        );
        assert_eq!(validate_country(None).unwrap(), None);
        assert_eq!(
            field_of(validate_country(Some("gbr".into())).unwrap_err()),
            "country"
        );
    }

    #[test]
    fn an_empty_change_is_refused() {
        let e = validate_change(AlbumChange {
            price: None,
            stock: None,
        })
        .unwrap_err();
        assert_eq!(field_of(e), "body");
        assert!(
            validate_change(AlbumChange {
                price: None,
                stock: Some(3)
            })
            .is_ok()
        );
    }

    #[test]
    fn page_rules() {
        assert_eq!(validate_page(None, None).unwrap(), PageRequest::default());
        assert_eq!(field_of(validate_page(None, Some(0)).unwrap_err()), "limit");
        assert_eq!(
            field_of(validate_page(None, Some(MAX_PAGE_SIZE + 1)).unwrap_err()),
            "limit"
        );
        assert_eq!(
            field_of(validate_page(Some(-5), None).unwrap_err()),
            "cursor"
        );
    }

    #[test]
    fn overfetched_rows_make_a_cursor_only_when_more_exist() {
        let page = Page::from_overfetch(vec![1, 2, 3], 2, |x| *x as i64);
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(page.next_cursor, Some(2));
        let last = Page::from_overfetch(vec![1, 2], 2, |x| *x as i64);
        assert_eq!(last.next_cursor, None);
    }

    #[test]
    fn batch_ids_are_parsed_deduplicated_and_bounded() {
        assert_eq!(
            parse_batch_ids(Some("3, 1,3")).unwrap(),
            vec![AlbumId(3), AlbumId(1)]
        );
        assert_eq!(field_of(parse_batch_ids(None).unwrap_err()), "ids");
        assert_eq!(field_of(parse_batch_ids(Some("1,x")).unwrap_err()), "ids");
        assert_eq!(field_of(parse_batch_ids(Some("0")).unwrap_err()), "ids");
        let many = (1..=101)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(field_of(parse_batch_ids(Some(&many)).unwrap_err()), "ids");
    }

    #[test]
    fn like_patterns_match_literally() {
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
