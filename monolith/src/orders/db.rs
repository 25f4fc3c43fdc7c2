//! Order tables, private to this module.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::domain::{IdempotencyKey, Order, OrderId, OrderLine};
use crate::catalog::{AlbumId, Money};
use crate::customers::CustomerId;

diesel::table! {
    orders.orders (id) {
        id -> Int8,
        customer_id -> Int8,
        status -> Text,
        total_cents -> Int8,
        currency -> Text,
        placed_at -> Timestamptz,
    }
}

diesel::table! {
    orders.order_lines (order_id, line_no) {
        order_id -> Int8,
        line_no -> Int4,
        album_id -> Int8,
        quantity -> Int4,
        unit_price_cents -> Int8,
    }
}

diesel::table! {
    orders.idempotency_keys (key) {
        key -> Text,
        request_body -> Text,
        order_id -> Nullable<Int8>,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(order_lines -> orders (order_id));
diesel::allow_tables_to_appear_in_same_query!(orders, order_lines);

#[derive(Queryable, Selectable)]
#[diesel(table_name = orders)]
struct OrderRow {
    id: i64,
    customer_id: i64,
    status: String,
    total_cents: i64,
    currency: String,
    placed_at: DateTime<Utc>,
}

/// A header row to insert; `placed_at` is given only by the seed generator (history).
pub struct NewOrder<'a> {
    pub customer: CustomerId,
    pub total: &'a Money,
    pub placed_at: Option<DateTime<Utc>>,
}

pub fn insert_order(
    conn: &mut PgConnection,
    new: &NewOrder,
) -> QueryResult<(OrderId, DateTime<Utc>)> {
    let placed_at = new.placed_at.unwrap_or_else(Utc::now);
    diesel::insert_into(orders::table)
        .values((
            orders::customer_id.eq(new.customer.0),
            orders::total_cents.eq(new.total.amount_cents),
            orders::currency.eq(&new.total.currency),
            orders::placed_at.eq(placed_at),
        ))
        .returning((orders::id, orders::placed_at))
        .get_result::<(i64, DateTime<Utc>)>(conn)
        .map(|(id, at)| (OrderId(id), at))
}

pub fn insert_lines(
    conn: &mut PgConnection,
    order: OrderId,
    lines: &[OrderLine],
) -> QueryResult<usize> {
    let values: Vec<_> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            (
                order_lines::order_id.eq(order.0),
                order_lines::line_no.eq(i as i32),
                order_lines::album_id.eq(l.album_id.0),
                order_lines::quantity.eq(l.quantity),
                order_lines::unit_price_cents.eq(l.unit_price.amount_cents),
            )
        })
        .collect();
    diesel::insert_into(order_lines::table)
        .values(values)
        .execute(conn)
}

pub fn get_order(conn: &mut PgConnection, id: OrderId) -> QueryResult<Option<Order>> {
    // A pending saga order is not an order yet.
    let Some(head) = orders::table
        .find(id.0)
        .filter(orders::status.ne("pending"))
        .select(OrderRow::as_select())
        .first(conn)
        .optional()?
    else {
        return Ok(None);
    };
    let lines: Vec<(i64, i32, i64)> = order_lines::table
        .filter(order_lines::order_id.eq(id.0))
        .order(order_lines::line_no.asc())
        .select((
            order_lines::album_id,
            order_lines::quantity,
            order_lines::unit_price_cents,
        ))
        .load(conn)?;
    Ok(Some(Order {
        id: OrderId(head.id),
        customer_id: CustomerId(head.customer_id),
        status: head.status,
        lines: lines
            .into_iter()
            .map(|(album_id, quantity, cents)| OrderLine {
                album_id: AlbumId(album_id),
                quantity,
                unit_price: Money {
                    amount_cents: cents,
                    currency: head.currency.clone(),
                },
            })
            .collect(),
        total: Money {
            amount_cents: head.total_cents,
            currency: head.currency,
        },
        placed_at: head.placed_at,
    }))
}

/// Claims `key` for this request inside the caller's transaction. Returns false when the key is
/// already taken; a concurrent claimant blocks here until the first transaction ends.
pub fn claim_key(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
    request_body: &str,
) -> QueryResult<bool> {
    diesel::insert_into(idempotency_keys::table)
        .values((
            idempotency_keys::key.eq(key.as_str()),
            idempotency_keys::request_body.eq(request_body),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .map(|n| n == 1)
}

pub fn attach_order(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
    order: OrderId,
) -> QueryResult<usize> {
    diesel::update(idempotency_keys::table.find(key.as_str()))
        .set(idempotency_keys::order_id.eq(order.0))
        .execute(conn)
}

/// The request body a key was first used with, and the order it produced.
pub fn key_record(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
) -> QueryResult<Option<(String, Option<i64>)>> {
    idempotency_keys::table
        .find(key.as_str())
        .select((idempotency_keys::request_body, idempotency_keys::order_id))
        .first(conn)
        .optional()
}

diesel::table! {
    orders.outbox (id) {
        id -> Int8,
        kind -> Text,
        payload -> Jsonb,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

pub fn enqueue(
    conn: &mut PgConnection,
    kind: &str,
    payload: &serde_json::Value,
) -> QueryResult<i64> {
    diesel::insert_into(outbox::table)
        .values((outbox::kind.eq(kind), outbox::payload.eq(payload)))
        .returning(outbox::id)
        .get_result(conn)
}

/// A message leased for delivery. `attempts` counts its leases, this one included; it also
/// tells this lease from a later one, so that a worker never moves a row another worker leased
/// since.
pub struct Leased {
    pub id: i64,
    pub kind: String,
    pub payload: serde_json::Value,
    pub attempts: i32,
}

/// Leases the first due message with an id above `after` for `lease`: other workers skip it until
/// the lease runs out, so a worker that dies mid-delivery only delays a message, never loses it.
/// One message at a time, so that a lease only has to cover one delivery.
pub fn lease_next(
    conn: &mut PgConnection,
    after: i64,
    lease: std::time::Duration,
) -> QueryResult<Option<Leased>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
        #[diesel(sql_type = diesel::sql_types::Text)]
        kind: String,
        #[diesel(sql_type = diesel::sql_types::Jsonb)]
        payload: serde_json::Value,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        attempts: i32,
    }
    let row: Option<Row> = diesel::sql_query(
        "UPDATE orders.outbox SET next_attempt_at = now() + make_interval(secs => $2), attempts = attempts + 1
         WHERE id = (SELECT id FROM orders.outbox WHERE next_attempt_at <= now() AND id > $1
                     ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING id, kind, payload, attempts",
    )
    .bind::<diesel::sql_types::BigInt, _>(after)
    .bind::<diesel::sql_types::Double, _>(lease.as_secs_f64())
    .get_result(conn)
    .optional()?;
    Ok(row.map(|r| Leased {
        id: r.id,
        kind: r.kind,
        payload: r.payload,
        attempts: r.attempts,
    }))
}

pub fn delivered(conn: &mut PgConnection, id: i64) -> QueryResult<usize> {
    diesel::delete(outbox::table.find(id)).execute(conn)
}

/// Makes a leased message due again after `after` (`Duration::ZERO`: at once), noting why, unless
/// it was leased again since (`attempts` moved on) or is gone.
pub fn retry_later(
    conn: &mut PgConnection,
    id: i64,
    attempts: i32,
    after: std::time::Duration,
    error: &str,
) -> QueryResult<usize> {
    diesel::sql_query(
        "UPDATE orders.outbox SET next_attempt_at = now() + make_interval(secs => $3), last_error = $4
         WHERE id = $1 AND attempts = $2",
    )
    .bind::<diesel::sql_types::BigInt, _>(id)
    .bind::<diesel::sql_types::Integer, _>(attempts)
    .bind::<diesel::sql_types::Double, _>(after.as_secs_f64())
    .bind::<diesel::sql_types::Text, _>(error)
    .execute(conn)
}

pub fn outbox_len(conn: &mut PgConnection) -> QueryResult<i64> {
    outbox::table.count().get_result(conn)
}

/// A saga order: claimed before the catalog is asked, completed or removed after.
pub fn insert_pending(conn: &mut PgConnection, customer: CustomerId) -> QueryResult<OrderId> {
    diesel::insert_into(orders::table)
        .values((
            orders::customer_id.eq(customer.0),
            orders::status.eq("pending"),
            orders::total_cents.eq(0),
            orders::currency.eq(""),
        ))
        .returning(orders::id)
        .get_result(conn)
        .map(OrderId)
}

/// A pending order with a given id: a dry run redoing transaction A under the id it drew the
/// first time (that id was rolled back with it, so no other order can have it).
pub fn insert_pending_as(
    conn: &mut PgConnection,
    customer: CustomerId,
    id: OrderId,
) -> QueryResult<OrderId> {
    diesel::insert_into(orders::table)
        .values((
            orders::id.eq(id.0),
            orders::customer_id.eq(customer.0),
            orders::status.eq("pending"),
            orders::total_cents.eq(0),
            orders::currency.eq(""),
        ))
        .returning(orders::id)
        .get_result(conn)
        .map(OrderId)
}

/// Locks a pending order; `None` once it is no longer pending (completed, or abandoned).
pub fn lock_pending(conn: &mut PgConnection, id: OrderId) -> QueryResult<Option<CustomerId>> {
    orders::table
        .find(id.0)
        .filter(orders::status.eq("pending"))
        .select(orders::customer_id)
        .for_update()
        .first(conn)
        .optional()
        .map(|c| c.map(CustomerId))
}

pub fn mark_placed(
    conn: &mut PgConnection,
    id: OrderId,
    total: &Money,
) -> QueryResult<DateTime<Utc>> {
    diesel::update(orders::table.find(id.0))
        .set((
            orders::status.eq("placed"),
            orders::total_cents.eq(total.amount_cents),
            orders::currency.eq(&total.currency),
            orders::placed_at.eq(Utc::now()),
        ))
        .returning(orders::placed_at)
        .get_result(conn)
}

pub fn set_status(conn: &mut PgConnection, id: OrderId, status: &str) -> QueryResult<usize> {
    diesel::update(orders::table.find(id.0))
        .set(orders::status.eq(status))
        .execute(conn)
}

/// Removes an order that is still pending, and the Idempotency-Key that claimed it (so a retry
/// starts afresh), in one transaction. Returns false, touching nothing, when the order is no
/// longer pending: it completed (its key must stay) or was abandoned already.
pub fn delete_pending(conn: &mut PgConnection, id: OrderId) -> QueryResult<bool> {
    conn.transaction(|tx| {
        if lock_pending(tx, id)?.is_none() {
            return Ok(false);
        }
        diesel::delete(idempotency_keys::table.filter(idempotency_keys::order_id.eq(id.0)))
            .execute(tx)?;
        diesel::delete(orders::table.find(id.0)).execute(tx)?;
        Ok(true)
    })
}

/// Pending orders older than `age`: their request died between the two saga transactions.
pub fn stale_pending(
    conn: &mut PgConnection,
    age: std::time::Duration,
) -> QueryResult<Vec<OrderId>> {
    let before = Utc::now() - chrono::Duration::milliseconds(age.as_millis() as i64);
    orders::table
        .filter(orders::status.eq("pending"))
        .filter(orders::placed_at.lt(before))
        .select(orders::id)
        .load(conn)
        .map(|ids| ids.into_iter().map(OrderId).collect())
}

pub fn status_of(conn: &mut PgConnection, id: OrderId) -> QueryResult<Option<String>> {
    orders::table
        .find(id.0)
        .select(orders::status)
        .first(conn)
        .optional()
}
