use std::net::TcpListener;

use diesel::{Connection, PgConnection, RunQueryDsl};
use localpg::TestDb;
use monolith::platform::PoolConfig;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A monolith serving its own fresh database.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub db: TestDb,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// Asserts the error envelope: status, code and (when given) the field it names.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str, field: Option<&str>) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.body["error"]["code"], code, "body: {}", self.body);
        assert!(
            self.body["error"]["message"].is_string(),
            "body: {}",
            self.body
        );
        match field {
            Some(f) => assert_eq!(self.body["error"]["field"], f, "body: {}", self.body),
            None => assert!(
                self.body["error"].get("field").is_none(),
                "body: {}",
                self.body
            ),
        }
    }

    #[track_caller]
    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        &self.body
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        let db = TestDb::new("monolith", monolith::MIGRATIONS);
        let pool = monolith::build_pool(
            db.url(),
            PoolConfig {
                max_size: 12,
                ..PoolConfig::default()
            },
        )
        .expect("pool");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = monolith::server(listener, pool, 2).expect("server");
        tokio::spawn(server);
        TestApp {
            base,
            client: reqwest::Client::new(),
            db,
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "non-JSON body ({status}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Sends a raw body with an explicit content type.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Reply {
        let res = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "non-JSON body ({status}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(body), &[]).await
    }

    pub async fn put(&self, path: &str) -> Reply {
        self.send(Method::PUT, path, None, &[]).await
    }

    pub async fn artist(&self, name: &str) -> i64 {
        self.post("/catalog/artists", json!({"name": name, "country": "GB"}))
            .await
            .ok(201)["id"]
            .as_i64()
            .unwrap()
    }

    /// An album by a new artist with the given stock at 10.00 USD.
    pub async fn album(&self, sku: &str, stock: i32) -> i64 {
        let artist = self.artist(&format!("Artist of {sku}")).await;
        self.album_by(artist, sku, &format!("Title {sku}"), "rock", stock)
            .await
    }

    pub async fn album_by(
        &self,
        artist: i64,
        sku: &str,
        title: &str,
        genre: &str,
        stock: i32,
    ) -> i64 {
        self.post(
            "/catalog/albums",
            json!({
                "sku": sku, "title": title, "artist_id": artist, "genre": genre,
                "release_year": 1999, "price": {"amount_cents": 1000, "currency": "USD"}, "stock": stock
            }),
        )
        .await
        .ok(201)["id"]
        .as_i64()
        .unwrap()
    }

    pub async fn customer(&self, email: &str) -> i64 {
        self.post(
            "/customers",
            json!({"name": "Test Customer", "email": email}),
        )
        .await
        .ok(201)["id"]
            .as_i64()
            .unwrap()
    }

    pub async fn stock(&self, album: i64) -> i64 {
        self.get(&format!("/catalog/albums/{album}")).await.ok(200)["stock"]
            .as_i64()
            .unwrap()
    }

    /// Counts rows straight from the database, for facts the API does not expose.
    pub fn count(&self, sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = PgConnection::establish(self.db.url()).unwrap();
        diesel::sql_query(sql).get_result::<N>(&mut conn).unwrap().n
    }
}
