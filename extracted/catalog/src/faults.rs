//! Deliberate defects, for tests only: `CATALOG_FAULTS` makes this service answer some album
//! reads wrongly, so that a test can check that the parallel run's report names each defect at
//! its JSON path (or `status`) and counts it right.
//!
//! Off unless the setting is given; a value that does not parse stops the service at start-up,
//! and so does any fault on a service that owns its writes (its answers would reach clients).
//! The faults touch only the answers to `GET /catalog/albums`, `GET /catalog/albums/batch` and
//! `GET /catalog/albums/{id}`, after the handlers: the data, the handlers and every other answer
//! are as without them.
//!
//! Syntax: faults separated by `;`, ids by `,`, blanks around them ignored:
//!
//! | fault | effect |
//! |---|---|
//! | `price+N:IDS`, `price-N:IDS` | those albums' `price.amount_cents` is N more (less), wherever they appear |
//! | `drop:FIELD` , `drop:FIELD:IDS` | the album field (`genre`, `stock`, …) is left out of every album, or of those |
//! | `reverse:albums` | the items of `GET /catalog/albums` come in reverse order |
//! | `404:IDS` | `GET /catalog/albums/{id}` answers `404 not_found`, as for an album that does not exist |
//! | `slow:IDS=DURATION` | `GET /catalog/albums/{id}` answers after `DURATION` (`800ms`, `2s`) more |
//!
//! For example `price+1:3,5; drop:genre; reverse:albums; 404:7; slow:9=800ms`.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError, web};
use serde_json::Value;

/// The environment variable (and `fig up --catalog-faults`). For tests only.
pub const ENV_FAULTS: &str = "CATALOG_FAULTS";

/// The fields of an album answer (`AlbumBody`), the only ones `drop:` takes.
const ALBUM_FIELDS: [&str; 9] = [
    "id",
    "sku",
    "title",
    "artist",
    "genre",
    "release_year",
    "price",
    "stock",
    "updated_at",
];

/// The longest `slow:` delay taken.
const SLOWEST: Duration = Duration::from_secs(60);

/// Which albums a fault touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Albums {
    Every,
    Only(BTreeSet<i64>),
}

impl Albums {
    fn has(&self, id: Option<i64>) -> bool {
        match self {
            Albums::Every => true,
            Albums::Only(ids) => id.is_some_and(|id| ids.contains(&id)),
        }
    }
}

/// The defects a service was started with; the default has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Album id → cents added to its price.
    pub price: BTreeMap<i64, i64>,
    /// Album fields left out, each of every album or of some.
    pub drop: Vec<(String, Albums)>,
    /// The album list's items reversed.
    pub reverse_list: bool,
    /// Albums answered `404`.
    pub not_found: BTreeSet<i64>,
    /// Albums answered late, by how much.
    pub slow: BTreeMap<i64, Duration>,
}

/// A read whose answer faults may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /catalog/albums`
    List,
    /// `GET /catalog/albums/batch`
    Batch,
    /// `GET /catalog/albums/{id}`
    Album(i64),
}

/// Which endpoint a request is, if faults may touch its answer.
pub fn endpoint(method: &Method, path: &str) -> Option<Endpoint> {
    if method != Method::GET {
        return None;
    }
    match path.strip_prefix("/catalog/albums")? {
        "" => Some(Endpoint::List),
        "/batch" => Some(Endpoint::Batch),
        rest => {
            let raw = rest.strip_prefix('/')?;
            platform::path_id(raw, "album").ok().map(Endpoint::Album)
        }
    }
}

impl Faults {
    pub fn is_empty(&self) -> bool {
        *self == Faults::default()
    }

    /// How long a read of `endpoint` is held before it is answered.
    pub fn delay(&self, endpoint: Endpoint) -> Option<Duration> {
        match endpoint {
            Endpoint::Album(id) => self.slow.get(&id).copied(),
            _ => None,
        }
    }

    /// Whether a read of `endpoint` is answered `404` instead.
    pub fn answers_not_found(&self, endpoint: Endpoint) -> bool {
        matches!(endpoint, Endpoint::Album(id) if self.not_found.contains(&id))
    }

    /// Whether an answer to `endpoint` could change (spares re-encoding the others).
    fn touches(&self, endpoint: Endpoint) -> bool {
        !self.price.is_empty()
            || !self.drop.is_empty()
            || (self.reverse_list && endpoint == Endpoint::List)
    }

    /// Applies the faults to one album answer, by its `id`.
    pub fn album(&self, album: &mut Value) {
        let Some(fields) = album.as_object_mut() else {
            return;
        };
        let id = fields.get("id").and_then(Value::as_i64);
        if let Some(cents) = id.and_then(|id| self.price.get(&id))
            && let Some(amount) = fields
                .get_mut("price")
                .and_then(|p| p.get_mut("amount_cents"))
            && let Some(n) = amount.as_i64()
        {
            *amount = Value::from(n.saturating_add(*cents));
        }
        for (field, albums) in &self.drop {
            if albums.has(id) {
                fields.remove(field);
            }
        }
    }

    /// Applies the faults to a successful answer to `endpoint`: every album in it, and the list's
    /// order.
    pub fn answer(&self, endpoint: Endpoint, body: &mut Value) {
        match endpoint {
            Endpoint::Album(_) => self.album(body),
            Endpoint::List | Endpoint::Batch => {
                let Some(items) = body.get_mut("items").and_then(Value::as_array_mut) else {
                    return;
                };
                items.iter_mut().for_each(|album| self.album(album));
                if self.reverse_list && endpoint == Endpoint::List {
                    items.reverse();
                }
            }
        }
    }
}

/// Why a `CATALOG_FAULTS` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fault {fault:?}: {problem}")]
pub struct FaultsError {
    pub fault: String,
    pub problem: String,
}

impl FromStr for Faults {
    type Err = FaultsError;

    fn from_str(text: &str) -> Result<Faults, FaultsError> {
        let mut faults = Faults::default();
        for fault in text.split(';').map(str::trim).filter(|f| !f.is_empty()) {
            faults.add(fault).map_err(|problem| FaultsError {
                fault: fault.to_string(),
                problem,
            })?;
        }
        Ok(faults)
    }
}

impl Faults {
    fn add(&mut self, fault: &str) -> Result<(), String> {
        let (kind, rest) = fault
            .split_once(':')
            .ok_or("expected KIND:..., one of price+N, price-N, drop, reverse, 404, slow")?;
        let kind = kind.trim();
        let rest = rest.trim();
        if let Some(cents) = kind.strip_prefix("price") {
            let cents: i64 = cents
                .parse()
                .ok()
                .filter(|n| *n != 0 && (cents.starts_with('+') || cents.starts_with('-')))
                .ok_or("the price change must be +N or -N cents, not 0")?;
            for id in ids(rest)? {
                self.price.insert(id, cents);
            }
            return Ok(());
        }
        match kind {
            "drop" => {
                let (field, albums) = match rest.split_once(':') {
                    Some((field, list)) => (field.trim(), Albums::Only(ids(list)?)),
                    None => (rest, Albums::Every),
                };
                if !ALBUM_FIELDS.contains(&field) {
                    return Err(format!(
                        "{field:?} is not an album field ({})",
                        ALBUM_FIELDS.join(", ")
                    ));
                }
                self.drop.push((field.to_string(), albums));
            }
            "reverse" if rest == "albums" => self.reverse_list = true,
            "reverse" => return Err("only reverse:albums (the album list) is known".into()),
            "404" => self.not_found.extend(ids(rest)?),
            "slow" => {
                let (list, delay) = rest.split_once('=').ok_or("expected slow:IDS=DURATION")?;
                let delay = duration(delay.trim())?;
                for id in ids(list)? {
                    self.slow.insert(id, delay);
                }
            }
            other => return Err(format!("unknown kind {other:?}")),
        }
        Ok(())
    }
}

/// `3,5`: album ids, at least one.
fn ids(list: &str) -> Result<BTreeSet<i64>, String> {
    list.split(',')
        .map(|id| {
            let id = id.trim();
            id.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{id:?} is not an album id"))
        })
        .collect()
}

/// `800ms` or `2s`: more than nothing, at most a minute.
fn duration(text: &str) -> Result<Duration, String> {
    let parsed = if let Some(ms) = text.strip_suffix("ms") {
        ms.parse().ok().map(Duration::from_millis)
    } else if let Some(s) = text.strip_suffix('s') {
        s.parse().ok().map(Duration::from_secs)
    } else {
        None
    };
    parsed
        .filter(|d| !d.is_zero() && *d <= SLOWEST)
        .ok_or_else(|| format!("{text:?} is not a duration from 1ms to 60s (800ms, 2s)"))
}

/// Middleware (`from_fn`), innermost, installed only with faults (as `web::Data<Faults>`): holds
/// a slow read, answers `404` for an album said to be missing, and rewrites a successful album
/// answer.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let faults = req.app_data::<web::Data<Faults>>().cloned();
    let Some((faults, endpoint)) =
        faults.and_then(|f| endpoint(req.method(), req.path()).map(|e| (f, e)))
    else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    if let Some(delay) = faults.delay(endpoint) {
        tokio::time::sleep(delay).await;
    }
    if faults.answers_not_found(endpoint) {
        let missing = platform::ApiError::not_found("album").error_response();
        return Ok(req.into_response(missing));
    }
    let response = next.call(req).await?;
    if response.status() != StatusCode::OK || !faults.touches(endpoint) {
        return Ok(response.map_into_boxed_body());
    }
    let (req, response) = response.into_parts();
    let (head, body) = response.into_parts();
    let broken = |e: String| actix_web::error::ErrorInternalServerError(e);
    let bytes = actix_web::body::to_bytes(body).await.map_err(|e| {
        let e: Box<dyn std::error::Error> = e.into();
        broken(e.to_string())
    })?;
    let mut value: Value = serde_json::from_slice(&bytes).map_err(|e| broken(e.to_string()))?;
    faults.answer(endpoint, &mut value);
    let mut changed = HttpResponse::build(head.status());
    for (name, value) in head.headers() {
        if name != header::CONTENT_LENGTH {
            changed.append_header((name.clone(), value.clone()));
        }
    }
    Ok(ServiceResponse::new(req, changed.json(value)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn album(id: i64) -> Value {
        json!({
            "id": id, "sku": format!("MC-{id:06}"), "title": "T",
            "artist": {"id": 1, "name": "A"}, "genre": "rock", "release_year": 1999,
            "price": {"amount_cents": 1000 + id, "currency": "EUR"}, "stock": 5,
            "updated_at": "2024-01-01T00:00:00Z"
        })
    }

    fn faults(text: &str) -> Faults {
        text.parse()
            .unwrap_or_else(|e| panic!("{text:?} refused: {e}"))
    }

    #[test]
    fn settings_parse_into_faults() {
        let ids = |list: &[i64]| list.iter().copied().collect::<BTreeSet<i64>>();
        assert!(faults("").is_empty());
        assert!(faults(" ; ").is_empty());
        let f = faults("price+1:3,5; drop:genre; reverse:albums; 404:7; slow:9=800ms");
        assert_eq!(
            f,
            Faults {
                price: [(3, 1), (5, 1)].into(),
                drop: vec![("genre".into(), Albums::Every)],
                reverse_list: true,
                not_found: ids(&[7]),
                slow: [(9, Duration::from_millis(800))].into(),
            }
        );
        let f = faults("price-250:4;drop:stock:1, 2;slow:6,8=2s;404:1;404:2");
        assert_eq!(f.price, [(4, -250)].into());
        assert_eq!(f.drop, vec![("stock".into(), Albums::Only(ids(&[1, 2])))]);
        assert_eq!(f.not_found, ids(&[1, 2]));
        assert_eq!(
            f.slow,
            [(6, Duration::from_secs(2)), (8, Duration::from_secs(2))].into()
        );
    }

    #[test]
    fn bad_settings_are_refused_naming_the_fault() {
        for (text, fault, problem) in [
            ("price+1", "price+1", "expected KIND"),
            ("price1:3", "price1:3", "+N or -N"),
            ("price+0:3", "price+0:3", "not 0"),
            ("price+x:3", "price+x:3", "+N or -N"),
            ("price+1:", "price+1:", "\"\" is not an album id"),
            (
                "price+1:3;price+1:0",
                "price+1:0",
                "\"0\" is not an album id",
            ),
            ("404:7,x", "404:7,x", "\"x\" is not an album id"),
            ("drop:colour", "drop:colour", "not an album field"),
            ("drop:genre:", "drop:genre:", "not an album id"),
            ("reverse:artists", "reverse:artists", "only reverse:albums"),
            ("slow:9", "slow:9", "slow:IDS=DURATION"),
            ("slow:9=800", "slow:9=800", "not a duration"),
            ("slow:9=0ms", "slow:9=0ms", "not a duration"),
            ("slow:9=61s", "slow:9=61s", "not a duration"),
            ("crash:1", "crash:1", "unknown kind"),
        ] {
            let e = text.parse::<Faults>().unwrap_err();
            assert_eq!(e.fault, fault, "{text}");
            assert!(e.problem.contains(problem), "{text}: {e}");
        }
    }

    #[test]
    fn only_album_reads_are_endpoints() {
        for (method, path, want) in [
            (Method::GET, "/catalog/albums", Some(Endpoint::List)),
            (Method::GET, "/catalog/albums/batch", Some(Endpoint::Batch)),
            (Method::GET, "/catalog/albums/7", Some(Endpoint::Album(7))),
            (Method::GET, "/catalog/albums/0", None),
            (Method::GET, "/catalog/albums/x", None),
            (Method::GET, "/catalog/albums/7/x", None),
            (Method::GET, "/catalog/albumsx", None),
            (Method::GET, "/catalog/artists/7", None),
            (Method::PATCH, "/catalog/albums/7", None),
            (Method::POST, "/catalog/albums", None),
        ] {
            assert_eq!(endpoint(&method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn each_fault_changes_its_answers_only() {
        let f = faults("price+1:3; price-2:4; drop:genre:3; drop:stock; 404:7; slow:9=800ms");
        // One album: the price of 3 and 4 only, genre of 3 only, stock of every album.
        for (id, cents, genre) in [(3, 1004, false), (4, 1002, true), (5, 1005, true)] {
            let mut body = album(id);
            f.answer(Endpoint::Album(id), &mut body);
            let mut want = album(id);
            want["price"]["amount_cents"] = json!(cents);
            let fields = want.as_object_mut().unwrap();
            fields.remove("stock");
            if !genre {
                fields.remove("genre");
            }
            assert_eq!(body, want, "album {id}");
        }
        assert!(f.answers_not_found(Endpoint::Album(7)));
        assert!(!f.answers_not_found(Endpoint::Album(9)));
        assert!(!f.answers_not_found(Endpoint::List));
        assert_eq!(
            f.delay(Endpoint::Album(9)),
            Some(Duration::from_millis(800))
        );
        assert_eq!(f.delay(Endpoint::Album(7)), None);
        assert_eq!(f.delay(Endpoint::List), None);
    }

    #[test]
    fn lists_change_per_album_and_only_the_album_list_is_reversed() {
        let page = || json!({"items": [album(1), album(2), album(3)], "next_cursor": "3"});
        let f = faults("price+1:2; reverse:albums");
        let mut list = page();
        f.answer(Endpoint::List, &mut list);
        let ids: Vec<_> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, [3, 2, 1]);
        assert_eq!(list["items"][1]["price"]["amount_cents"], 1003);
        assert_eq!(list["items"][0], album(3));
        assert_eq!(list["next_cursor"], "3");
        let mut batch = json!({"items": [album(1), album(2)], "missing": [9]});
        f.answer(Endpoint::Batch, &mut batch);
        assert_eq!(batch["items"][0], album(1), "a batch keeps its order");
        assert_eq!(batch["items"][1]["price"]["amount_cents"], 1003);
        assert_eq!(batch["missing"], json!([9]));
        // Nothing set, nothing changed (and no answer needs re-encoding).
        let none = Faults::default();
        let mut same = page();
        none.answer(Endpoint::List, &mut same);
        assert_eq!(same, page());
        assert!(!none.touches(Endpoint::List));
        assert!(!faults("404:1; slow:2=1ms").touches(Endpoint::Album(1)));
        assert!(faults("reverse:albums").touches(Endpoint::List));
        assert!(!faults("reverse:albums").touches(Endpoint::Batch));
    }
}
