//! Reservation types and the pure rules for moving between states.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::error::ReservationError;
use crate::catalog::{AlbumId, Money};

pub const MAX_LINES: usize = 50;
pub const MAX_QUANTITY: i32 = 100;
pub const MAX_KEY_LEN: usize = 200;
pub const DEFAULT_TTL_SECONDS: i64 = 900;
pub const MAX_TTL_SECONDS: i64 = 86_400;

/// The caller's idempotency key, used in paths, so limited to URL-safe characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationKey(String);

impl ReservationKey {
    pub fn parse(raw: &str) -> Result<Self, ReservationError> {
        let ok = (1..=MAX_KEY_LEN).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if !ok {
            return Err(ReservationError::Invalid {
                field: "key".into(),
                message: format!("key must be 1 to {MAX_KEY_LEN} of A-Z a-z 0-9 - _ . :"),
            });
        }
        Ok(ReservationKey(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Stock is held for the caller.
    Reserved,
    /// The caller's order went through; the stock is sold.
    Confirmed,
    /// The caller gave the stock back (or released before reserving: a tombstone).
    Released,
    /// Never confirmed in time; the stock went back.
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Reserved => "reserved",
            Status::Confirmed => "confirmed",
            Status::Released => "released",
            Status::Expired => "expired",
        }
    }

    pub fn parse(raw: &str) -> Option<Status> {
        [
            Status::Reserved,
            Status::Confirmed,
            Status::Released,
            Status::Expired,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LineRequest {
    pub album_id: AlbumId,
    pub quantity: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveRequest {
    pub lines: Vec<LineRequest>,
    pub ttl_seconds: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedLine {
    pub album_id: AlbumId,
    pub quantity: i32,
    pub unit_price: Money,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub key: String,
    pub status: Status,
    pub lines: Vec<ReservedLine>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

fn invalid(field: String, message: impl Into<String>) -> ReservationError {
    ReservationError::Invalid {
        field,
        message: message.into(),
    }
}

impl ReserveRequest {
    pub fn parse(lines: &[(i64, i32)], ttl_seconds: Option<i64>) -> Result<Self, ReservationError> {
        if lines.is_empty() || lines.len() > MAX_LINES {
            return Err(invalid(
                "lines".into(),
                format!("a reservation has 1 to {MAX_LINES} lines"),
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
        let ttl_seconds = ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
        if !(1..=MAX_TTL_SECONDS).contains(&ttl_seconds) {
            return Err(invalid(
                "ttl_seconds".into(),
                format!("ttl_seconds must be between 1 and {MAX_TTL_SECONDS}"),
            ));
        }
        Ok(ReserveRequest {
            lines: parsed,
            ttl_seconds,
        })
    }

    /// What a key is bound to: the lines, not the time to live.
    pub fn fingerprint(&self) -> String {
        serde_json::to_string(&self.lines).unwrap_or_default()
    }

    /// Line indexes in ascending album id order, the order stock rows are locked in.
    pub fn lock_order(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.lines.len()).collect();
        idx.sort_by_key(|&i| self.lines[i].album_id);
        idx
    }
}

/// What confirming does from each state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConfirm {
    /// Stock is still held (even past `expires_at`, if the sweeper has not run): confirm it.
    Confirm,
    AlreadyConfirmed,
    /// The stock went back at expiry: take it again if it is still there.
    Retake,
    Refuse,
}

pub fn on_confirm(status: Status) -> OnConfirm {
    match status {
        Status::Reserved => OnConfirm::Confirm,
        Status::Confirmed => OnConfirm::AlreadyConfirmed,
        Status::Expired => OnConfirm::Retake,
        Status::Released => OnConfirm::Refuse,
    }
}

/// What releasing does from each state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRelease {
    ReturnStock,
    /// Nothing is held any more; releasing again is a no-op, so retries are safe.
    AlreadyDone,
    Refuse,
}

pub fn on_release(status: Status) -> OnRelease {
    match status {
        Status::Reserved => OnRelease::ReturnStock,
        Status::Released | Status::Expired => OnRelease::AlreadyDone,
        Status::Confirmed => OnRelease::Refuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirm_rules() {
        let table = [
            (Status::Reserved, OnConfirm::Confirm),
            (Status::Confirmed, OnConfirm::AlreadyConfirmed),
            (Status::Expired, OnConfirm::Retake),
            (Status::Released, OnConfirm::Refuse),
        ];
        for (status, want) in table {
            assert_eq!(on_confirm(status), want, "{status:?}");
        }
    }

    #[test]
    fn release_rules() {
        let table = [
            (Status::Reserved, OnRelease::ReturnStock),
            (Status::Released, OnRelease::AlreadyDone),
            (Status::Expired, OnRelease::AlreadyDone),
            (Status::Confirmed, OnRelease::Refuse),
        ];
        for (status, want) in table {
            assert_eq!(on_release(status), want, "{status:?}");
        }
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            Status::Reserved,
            Status::Confirmed,
            Status::Released,
            Status::Expired,
        ] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("pending"), None);
    }

    #[test]
    fn keys_are_url_safe() {
        assert!(ReservationKey::parse("order-42:attempt.1_x").is_ok());
        for bad in ["", "a/b", "a b", "ü", &"k".repeat(MAX_KEY_LEN + 1)] {
            assert!(ReservationKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn requests_are_validated_and_fingerprinted_without_ttl() {
        let a = ReserveRequest::parse(&[(2, 1), (1, 3)], Some(60)).unwrap();
        let b = ReserveRequest::parse(&[(2, 1), (1, 3)], None).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.lock_order(), vec![1, 0]);
        assert!(ReserveRequest::parse(&[], None).is_err());
        assert!(ReserveRequest::parse(&[(1, 0)], None).is_err());
        assert!(ReserveRequest::parse(&[(1, 1), (1, 2)], None).is_err());
        assert!(ReserveRequest::parse(&[(1, 1)], Some(0)).is_err());
    }
}
