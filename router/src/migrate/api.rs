//! The admin API of the flip (token-protected like every admin route):
//! - `GET /admin/migrations`: every movable capability's owner, phase and latest flips;
//! - `GET /admin/migrations/{capability}`: the same for one;
//! - `POST /admin/migrations/{capability}/cutover` and `.../rollback` (`X-Actor`, `X-Reason`):
//!   runs the flip and answers with its record: `200` when the writes ended with the requested
//!   owner (flipped now, or already there), `409 flip_undone` when a step failed and the flip
//!   gave the writes back (the message names the step), `409 flip_in_progress` when another
//!   flip of the capability runs, `500 flip_failed` when even the undo failed.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use platform::ApiError;
use serde_json::json;

use super::{Direction, FlipError, Flipper, Outcome};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/admin/migrations").route(web::get().to(list)))
        .service(web::resource("/admin/migrations/{capability}").route(web::get().to(one)))
        .service(
            web::resource("/admin/migrations/{capability}/{direction}").route(web::post().to(flip)),
        );
}

/// The flipper, or a 501 saying this router was started without migrations.
fn flipper(flipper: Option<web::Data<Arc<Flipper>>>) -> Result<Arc<Flipper>, ApiError> {
    flipper.map(|f| Arc::clone(f.get_ref())).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "migrations_not_configured",
            "this router instance was started without migrations (ROUTER_MIGRATIONS): it cannot \
             flip write ownership",
        )
    })
}

fn failed(e: FlipError) -> ApiError {
    match e {
        FlipError::Unknown(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            .with_field("capability"),
        FlipError::Busy(_) => {
            ApiError::new(StatusCode::CONFLICT, "flip_in_progress", e.to_string())
        }
        FlipError::Store(_) | FlipError::Settle(_) => {
            tracing::error!(error = %e, "flip failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "flip_failed",
                e.to_string(),
            )
        }
    }
}

async fn list(f: Option<web::Data<Arc<Flipper>>>) -> Result<HttpResponse, ApiError> {
    let status = flipper(f)?.status(None).await.map_err(failed)?;
    Ok(HttpResponse::Ok().json(json!({ "capabilities": status })))
}

async fn one(
    f: Option<web::Data<Arc<Flipper>>>,
    capability: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let flipper = flipper(f)?;
    if flipper.migrations().find(&capability).is_none() {
        return Err(failed(FlipError::Unknown(capability.into_inner())));
    }
    let status = flipper.status(Some(&capability)).await.map_err(failed)?;
    Ok(HttpResponse::Ok().json(&status[0]))
}

async fn flip(
    f: Option<web::Data<Arc<Flipper>>>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let flipper = flipper(f)?;
    let (capability, direction) = path.into_inner();
    let Some(direction) = Direction::parse(&direction) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{direction:?} is not a flip: use cutover or rollback"),
        )
        .with_field("direction"));
    };
    let (actor, reason) = crate::admin::who(&req)?;
    let outcome = flipper
        .flip(&capability, direction, &actor, &reason)
        .await
        .map_err(failed)?;
    let flip = match &outcome {
        Outcome::AlreadyThere { .. } => return Ok(HttpResponse::Ok().json(&outcome)),
        Outcome::Flipped { flip, .. } => flip,
    };
    if flip.outcome == "done" {
        return Ok(HttpResponse::Ok().json(&outcome));
    }
    let (status, code) = if flip.outcome == "undone" {
        (StatusCode::CONFLICT, "flip_undone")
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, "flip_failed")
    };
    let message = format!(
        "the {} of {} failed at step {}: {}{}",
        direction.as_str(),
        capability,
        flip.step,
        flip.error.as_deref().unwrap_or("unknown error"),
        if flip.outcome == "undone" {
            "; the writes are back with the old owner"
        } else {
            "; undoing it failed too, run the command again"
        }
    );
    // The usual error envelope (`field` names the step), plus the record.
    let mut body = serde_json::to_value(&outcome).unwrap_or_default();
    if let Some(map) = body.as_object_mut() {
        map.insert(
            "error".into(),
            json!({"code": code, "message": message, "field": flip.step}),
        );
    }
    Ok(HttpResponse::build(status).json(body))
}
