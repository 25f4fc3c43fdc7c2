//! Order types and the pure rules of placing one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::OrdersError;
use crate::catalog::{AlbumId, Money};
use crate::customers::CustomerId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(pub i64);

pub const MAX_LINES: usize = 50;
pub const MAX_QUANTITY: i32 = 100;
pub const MAX_KEY_LEN: usize = 200;

/// A validated order request. Serialises canonically, which is what an Idempotency-Key is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderRequest {
    pub customer_id: CustomerId,
    pub lines: Vec<LineRequest>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LineRequest {
    pub album_id: AlbumId,
    pub quantity: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    pub album_id: AlbumId,
    pub quantity: i32,
    pub unit_price: Money,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub customer_id: CustomerId,
    pub status: String,
    pub lines: Vec<OrderLine>,
    pub total: Money,
    pub placed_at: DateTime<Utc>,
}

/// A client-chosen key that makes order placement safe to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, OrdersError> {
        let ok =
            (1..=MAX_KEY_LEN).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(OrdersError::Invalid {
                field: "Idempotency-Key".into(),
                message: format!(
                    "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
                ),
            });
        }
        Ok(IdempotencyKey(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn invalid(field: String, message: impl Into<String>) -> OrdersError {
    OrdersError::Invalid {
        field,
        message: message.into(),
    }
}

impl OrderRequest {
    pub fn parse(customer_id: i64, lines: &[(i64, i32)]) -> Result<OrderRequest, OrdersError> {
        if customer_id <= 0 {
            return Err(invalid(
                "customer_id".into(),
                "customer_id must be a positive id",
            ));
        }
        if lines.is_empty() || lines.len() > MAX_LINES {
            return Err(invalid(
                "lines".into(),
                format!("an order has 1 to {MAX_LINES} lines"),
            ));
        }
        let mut parsed: Vec<LineRequest> = Vec::with_capacity(lines.len());
        for (i, &(album_id, quantity)) in lines.iter().enumerate() {
            if album_id <= 0 {
                return Err(invalid(
                    format!("lines[{i}].album_id"),
                    "album_id must be a positive id",
                ));
            }
            if !(1..=MAX_QUANTITY).contains(&quantity) {
                return Err(invalid(
                    format!("lines[{i}].quantity"),
                    format!("quantity must be between 1 and {MAX_QUANTITY}"),
                ));
            }
            if parsed.iter().any(|l| l.album_id.0 == album_id) {
                return Err(invalid(
                    format!("lines[{i}].album_id"),
                    "each album may appear on one line only",
                ));
            }
            parsed.push(LineRequest {
                album_id: AlbumId(album_id),
                quantity,
            });
        }
        Ok(OrderRequest {
            customer_id: CustomerId(customer_id),
            lines: parsed,
        })
    }

    /// Line indexes in ascending album id order: stock is taken in this order so that two orders
    /// for overlapping albums lock rows in the same order and cannot deadlock.
    pub fn lock_order(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.lines.len()).collect();
        idx.sort_by_key(|&i| self.lines[i].album_id);
        idx
    }
}

/// Sums the lines; every line must be in the same currency.
pub fn total(lines: &[OrderLine]) -> Result<Money, OrdersError> {
    let currency = lines
        .first()
        .map(|l| l.unit_price.currency.clone())
        .ok_or_else(|| invalid("lines".into(), "an order has at least one line"))?;
    let mut amount: i64 = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.unit_price.currency != currency {
            return Err(invalid(
                format!("lines[{i}].album_id"),
                format!("all albums in one order must be priced in one currency ({currency})"),
            ));
        }
        amount += line.unit_price.amount_cents * i64::from(line.quantity);
    }
    Ok(Money {
        amount_cents: amount,
        currency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(e: OrdersError) -> String {
        match e {
            OrdersError::Invalid { field, .. } => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn order_request_rules() {
        assert!(OrderRequest::parse(1, &[(5, 1), (3, 2)]).is_ok());
        type Case = (i64, Vec<(i64, i32)>, &'static str);
        let cases: [Case; 6] = [
            (0, vec![(1, 1)], "customer_id"),
            (1, vec![], "lines"),
            (1, vec![(1, 1); MAX_LINES + 1], "lines"),
            (1, vec![(1, 1), (0, 1)], "lines[1].album_id"),
            (1, vec![(1, 0)], "lines[0].quantity"),
            (1, vec![(1, 1), (2, 1), (1, 3)], "lines[2].album_id"),
        ];
        for (customer, lines, want) in cases {
            assert_eq!(
                field(OrderRequest::parse(customer, &lines).unwrap_err()),
                want
            );
        }
    }

    #[test]
    fn stock_is_locked_in_album_id_order() {
        let r = OrderRequest::parse(1, &[(9, 1), (2, 1), (5, 1)]).unwrap();
        assert_eq!(r.lock_order(), vec![1, 2, 0]);
    }

    #[test]
    fn totals_need_one_currency() {
        let line = |cents, cur: &str, q| OrderLine {
            album_id: AlbumId(1),
            quantity: q,
            unit_price: Money {
                amount_cents: cents,
                currency: cur.into(),
            },
        };
        assert_eq!(
            total(&[line(100, "USD", 2), line(250, "USD", 1)]).unwrap(),
            Money {
                amount_cents: 450,
                currency: "USD".into()
            }
        );
        assert_eq!(
            field(total(&[line(100, "USD", 1), line(1, "EUR", 1)]).unwrap_err()),
            "lines[1].album_id"
        );
    }

    #[test]
    fn idempotency_keys_are_bounded_visible_ascii() {
        assert!(IdempotencyKey::parse("order-2026-11-23-abc").is_ok());
        for bad in ["", "has space", "ünïcode", &"k".repeat(MAX_KEY_LEN + 1)] {
            assert_eq!(
                field(IdempotencyKey::parse(bad).unwrap_err()),
                "Idempotency-Key",
                "{bad}"
            );
        }
    }
}
