//! Reservation endpoints (catalog service only; the monolith takes stock in its own transaction).

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::domain::{Reservation, ReservationKey, ReserveRequest, Status};
use crate::catalog::Money;
use platform::{ApiError, Db, JsonBody};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/catalog/reservations/{key}")
            .route(web::put().to(reserve))
            .route(web::get().to(get)),
    )
    .service(web::resource("/catalog/reservations/{key}/confirm").route(web::post().to(confirm)))
    .service(web::resource("/catalog/reservations/{key}/release").route(web::post().to(release)));
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveBody {
    lines: Vec<LineBody>,
    #[serde(default)]
    ttl_seconds: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineBody {
    album_id: i64,
    quantity: i32,
}

#[derive(Debug, Serialize)]
struct ReservationBody {
    key: String,
    status: Status,
    lines: Vec<ReservedLineBody>,
    expires_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
struct ReservedLineBody {
    album_id: i64,
    quantity: i32,
    unit_price: Money,
}

impl From<Reservation> for ReservationBody {
    fn from(r: Reservation) -> Self {
        ReservationBody {
            key: r.key,
            status: r.status,
            lines: r
                .lines
                .into_iter()
                .map(|l| ReservedLineBody {
                    album_id: l.album_id.0,
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                })
                .collect(),
            expires_at: r.expires_at,
            created_at: r.created_at,
        }
    }
}

fn key(raw: &str) -> Result<ReservationKey, ApiError> {
    Ok(ReservationKey::parse(raw)?)
}

async fn reserve(
    db: Db,
    path: web::Path<String>,
    body: JsonBody<ReserveBody>,
) -> Result<HttpResponse, ApiError> {
    let key = key(&path)?;
    let lines: Vec<(i64, i32)> = body
        .0
        .lines
        .iter()
        .map(|l| (l.album_id, l.quantity))
        .collect();
    let request = ReserveRequest::parse(&lines, body.0.ttl_seconds)?;
    let (reservation, created) = db.run(move |c| super::reserve(c, &key, &request)).await?;
    let mut response = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(response.json(ReservationBody::from(reservation)))
}

async fn get(db: Db, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let key = key(&path)?;
    let reservation = db.run(move |c| super::get(c, &key)).await?;
    Ok(HttpResponse::Ok().json(ReservationBody::from(reservation)))
}

async fn confirm(db: Db, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let key = key(&path)?;
    let reservation = db.run(move |c| super::confirm(c, &key)).await?;
    Ok(HttpResponse::Ok().json(ReservationBody::from(reservation)))
}

async fn release(db: Db, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let key = key(&path)?;
    let reservation = db.run(move |c| super::release(c, &key)).await?;
    Ok(HttpResponse::Ok().json(ReservationBody::from(reservation)))
}
