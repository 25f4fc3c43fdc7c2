//! The wishlist service's view of the services that own what it shows: albums (catalog) and
//! customers. Both are reached over HTTP through configurable base URLs, normally the router,
//! so they follow whichever side currently serves each capability.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

use crate::wishlist::domain::{AlbumDetails, AlbumId, Money};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{service} did not answer within {timeout_ms} ms")]
    Timeout {
        service: &'static str,
        timeout_ms: u128,
    },
    #[error("{service} unreachable: {detail}")]
    Unreachable {
        service: &'static str,
        detail: String,
    },
    #[error("{service} answered {status}")]
    Status { service: &'static str, status: u16 },
    #[error("{service} answered a body we cannot read: {detail}")]
    Body {
        service: &'static str,
        detail: String,
    },
}

impl ClientError {
    fn from_reqwest(service: &'static str, timeout: Duration, e: reqwest::Error) -> Self {
        if e.is_timeout() {
            ClientError::Timeout {
                service,
                timeout_ms: timeout.as_millis(),
            }
        } else {
            ClientError::Unreachable {
                service,
                detail: e.to_string(),
            }
        }
    }
}

/// Album details from the catalog's batch read: one call for a whole wishlist.
#[derive(Debug, Clone)]
pub struct CatalogClient {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
}

#[derive(Debug, Deserialize)]
struct BatchReply {
    items: Vec<BatchAlbum>,
}

#[derive(Debug, Deserialize)]
struct BatchAlbum {
    id: i64,
    title: String,
    artist: ArtistName,
    price: Money,
    stock: i32,
}

#[derive(Debug, Deserialize)]
struct ArtistName {
    name: String,
}

impl CatalogClient {
    pub fn new(http: reqwest::Client, base: &str, timeout: Duration) -> Self {
        CatalogClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            timeout,
        }
    }

    /// Details of the albums among `ids` that exist, in one request.
    pub async fn albums(
        &self,
        ids: &[AlbumId],
    ) -> Result<Vec<(AlbumId, AlbumDetails)>, ClientError> {
        const SERVICE: &str = "catalog";
        let list = ids
            .iter()
            .map(|id| id.0.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let url = format!("{}/catalog/albums/batch?ids={list}", self.base);
        let reply = self
            .http
            .get(&url)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| ClientError::from_reqwest(SERVICE, self.timeout, e))?;
        if !reply.status().is_success() {
            return Err(ClientError::Status {
                service: SERVICE,
                status: reply.status().as_u16(),
            });
        }
        let body: BatchReply = reply.json().await.map_err(|e| {
            if e.is_timeout() {
                ClientError::from_reqwest(SERVICE, self.timeout, e)
            } else {
                ClientError::Body {
                    service: SERVICE,
                    detail: e.to_string(),
                }
            }
        })?;
        Ok(body
            .items
            .into_iter()
            .map(|a| {
                (
                    AlbumId(a.id),
                    AlbumDetails {
                        title: a.title,
                        artist: a.artist.name,
                        price: a.price,
                        in_stock: a.stock > 0,
                    },
                )
            })
            .collect())
    }
}

/// Whether a customer exists, from the service that owns customers. Customers are never deleted,
/// so a customer seen once is remembered (a cache, bounded, not a source of truth).
#[derive(Debug)]
pub struct CustomerDirectory {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
    known: Mutex<HashSet<i64>>,
}

const MAX_REMEMBERED: usize = 100_000;

impl CustomerDirectory {
    pub fn new(http: reqwest::Client, base: &str, timeout: Duration) -> Self {
        CustomerDirectory {
            http,
            base: base.trim_end_matches('/').to_string(),
            timeout,
            known: Mutex::new(HashSet::new()),
        }
    }

    fn remembered(&self, id: i64) -> bool {
        self.known.lock().map(|k| k.contains(&id)).unwrap_or(false)
    }

    fn remember(&self, id: i64) {
        if let Ok(mut known) = self.known.lock() {
            if known.len() >= MAX_REMEMBERED {
                known.clear();
            }
            known.insert(id);
        }
    }

    pub async fn exists(&self, id: i64) -> Result<bool, ClientError> {
        const SERVICE: &str = "customers";
        if self.remembered(id) {
            return Ok(true);
        }
        let reply = self
            .http
            .get(format!("{}/customers/{id}", self.base))
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| ClientError::from_reqwest(SERVICE, self.timeout, e))?;
        match reply.status().as_u16() {
            200 => {
                self.remember(id);
                Ok(true)
            }
            404 => Ok(false),
            status => Err(ClientError::Status {
                service: SERVICE,
                status,
            }),
        }
    }
}
