//! Order endpoints.

use actix_web::http::header::LOCATION;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::domain::{IdempotencyKey, Order, OrderId, OrderRequest};
use super::{OrdersDeps, OrdersError, Placement, Removal};
use crate::catalog::Money;
use platform::db::DbError;
use platform::{ApiError, Db, JsonBody, path_id};

pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
pub const REPLAYED: &str = "Idempotent-Replayed";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/orders").route(web::post().to(place_order)))
        .service(web::resource("/orders/{order_id}").route(web::get().to(get_order)));
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceOrder {
    customer_id: i64,
    lines: Vec<PlaceLine>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceLine {
    album_id: i64,
    quantity: i32,
}

#[derive(Debug, Serialize)]
struct OrderBody {
    id: i64,
    customer_id: i64,
    status: String,
    lines: Vec<LineBody>,
    total: Money,
    placed_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
struct LineBody {
    album_id: i64,
    quantity: i32,
    unit_price: Money,
}

impl From<Order> for OrderBody {
    fn from(o: Order) -> Self {
        OrderBody {
            id: o.id.0,
            customer_id: o.customer_id.0,
            status: o.status,
            lines: o
                .lines
                .into_iter()
                .map(|l| LineBody {
                    album_id: l.album_id.0,
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                })
                .collect(),
            total: o.total,
            placed_at: o.placed_at,
        }
    }
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<IdempotencyKey>, ApiError> {
    req.headers()
        .get(IDEMPOTENCY_KEY)
        .map(|v| IdempotencyKey::parse(v.to_str().unwrap_or("\u{0}")).map_err(ApiError::from))
        .transpose()
}

async fn place_order(
    db: Db,
    deps: web::Data<OrdersDeps>,
    req: HttpRequest,
    body: JsonBody<PlaceOrder>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req)?;
    let lines: Vec<(i64, i32)> = body
        .0
        .lines
        .iter()
        .map(|l| (l.album_id, l.quantity))
        .collect();
    let request = OrderRequest::parse(body.0.customer_id, &lines)?;
    // Local while the monolith owns stock: the fence admits the order inside its transaction.
    // Once the catalog service owns stock, that transaction is refused before it wrote anything,
    // and the order goes through the saga instead.
    let removal = deps.removal;
    let (local_request, local_key) = (request.clone(), key.clone());
    let local = db
        .run(move |c| super::place_order(c, &local_request, local_key.as_ref(), removal))
        .await;
    let placement = match (local, &deps.stock) {
        (Err(OrdersError::Db(DbError::NotOwner(_))), Some(stock)) => {
            super::saga::place_order(&db, stock, &deps.outbox, removal, request, key).await?
        }
        (placed, _) => placed?,
    };
    // In a dry run the whole placement is rolled back, its outbox row with it: nothing for the
    // worker to deliver, so no wake-up either.
    if removal == Removal::LocalOrOutbox && !db.is_dry_run() {
        deps.outbox.wake();
    }
    let (order, replayed) = match placement {
        Placement::Created(order) => (order, false),
        Placement::Replayed(order) => (order, true),
    };
    let mut response = HttpResponse::Created();
    response.insert_header((LOCATION, format!("/orders/{}", order.id.0)));
    if replayed {
        response.insert_header((REPLAYED, "true"));
    }
    Ok(response.json(OrderBody::from(order)))
}

async fn get_order(db: Db, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = OrderId(path_id(&id, "order")?);
    let order = db.run(move |c| super::get_order(c, id)).await?;
    Ok(HttpResponse::Ok().json(OrderBody::from(order)))
}
