//! A gate in front of a real service: passes requests through, or misbehaves on purpose (fails,
//! or answers late) for the requests it is told to. The only fake in these tests, and only
//! because the tests need an upstream that misbehaves.

use std::sync::Mutex;
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use e2e::{Running, bind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// 503 for requests whose path contains the text ("" matches all); nothing is forwarded.
    Fail(String),
    /// Forwards requests whose path contains the text, then holds the answer back this long.
    AnswerLate(String, Duration),
}

struct Shared {
    target: Mutex<String>,
    http: reqwest::Client,
    mode: Mutex<Mode>,
}

pub struct Gate {
    pub base: String,
    shared: web::Data<Shared>,
    _server: Running,
}

impl Gate {
    pub fn open(target: &str) -> Gate {
        let shared = web::Data::new(Shared {
            target: Mutex::new(target.to_string()),
            http: reqwest::Client::new(),
            mode: Mutex::new(Mode::Pass),
        });
        let (listener, base) = bind();
        let data = shared.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(forward))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("gate listens")
        .run();
        Gate {
            base,
            shared,
            _server: Running::spawn(server),
        }
    }

    /// Points the gate at another service (one started after the gate's URL was handed out).
    pub fn retarget(&self, target: &str) {
        *self.shared.target.lock().unwrap() = target.to_string();
    }

    pub fn set(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }
}

async fn forward(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let mode = shared.mode.lock().unwrap().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let late = match &mode {
        Mode::Fail(part) if path.contains(part.as_str()) => {
            return HttpResponse::ServiceUnavailable()
                .content_type("application/json")
                .body(r#"{"error":{"code":"unavailable","message":"gate closed"}}"#);
        }
        Mode::AnswerLate(part, wait) if path.contains(part.as_str()) => Some(*wait),
        _ => None,
    };
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .unwrap_or(reqwest::Method::GET);
    let target = shared.target.lock().unwrap().clone();
    let mut upstream = shared
        .http
        .request(method, format!("{target}{path}"))
        .body(body.to_vec());
    if let Some(ct) = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
    {
        upstream = upstream.header("content-type", ct);
    }
    let answer = match upstream.send().await {
        Ok(a) => a,
        Err(e) => return HttpResponse::BadGateway().body(e.to_string()),
    };
    let status = answer.status().as_u16();
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let bytes = answer.bytes().await.unwrap_or_default();
    if let Some(wait) = late {
        tokio::time::sleep(wait).await;
    }
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY),
    )
    .content_type(content_type)
    .body(bytes)
}
