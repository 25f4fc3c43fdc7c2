//! Liveness and readiness, for `fig up`, load balancers and the router's health checks.

use actix_web::{HttpResponse, web};
use diesel::RunQueryDsl;
use serde_json::json;

use crate::{ApiError, Db};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").route(web::get().to(healthz)))
        .service(web::resource("/readyz").route(web::get().to(readyz)));
}

/// The process is up.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The process can reach its database.
async fn readyz(db: Db) -> Result<HttpResponse, ApiError> {
    db.run(|c| {
        diesel::sql_query("SELECT 1")
            .execute(c)
            .map_err(|_| ApiError::unavailable())
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}
