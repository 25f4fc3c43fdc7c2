//! Segments in the admin API: Unleash's shared lists of constraints, which strategies name by id
//! (`"segments": [3]`). List, get, create or replace, delete; an import
//! (`POST /admin/toggles`) can carry them too.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use platform::{ApiError, blocking};
use serde_json::json;
use unleash_types::client_features::Segment;

use super::{Admin, applied, refuse_nul, who};
use crate::store::{self, Change};
use crate::toggles::{self, ToggleError, wire::to_json};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/admin/segments").route(web::get().to(list)))
        .service(
            web::resource("/admin/segments/{id}")
                .route(web::get().to(get))
                .route(web::put().to(put))
                .route(web::delete().to(delete)),
        );
}

/// A segment id from the path: a positive 32-bit integer, as Unleash numbers them. Anything else
/// names no segment.
fn segment_id(raw: &str) -> Result<i32, ApiError> {
    raw.parse::<i32>().ok().filter(|id| *id > 0).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "segment not found").with_field("id")
    })
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_segment", message).with_field(field)
}

async fn list(admin: web::Data<Admin>) -> Result<HttpResponse, ApiError> {
    let (version, features) = blocking(&admin.pool, store::load).await?;
    Ok(HttpResponse::Ok().json(json!({
        "version": version,
        "segments": to_json(&features.segments.unwrap_or_default()),
    })))
}

async fn get(admin: web::Data<Admin>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = segment_id(&id)?;
    let segment = blocking(&admin.pool, move |c| store::get_segment(c, id)).await?;
    Ok(HttpResponse::Ok().json(to_json(&segment)))
}

fn parse_segment(body: &[u8]) -> Result<Segment, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = match e.path().to_string() {
            p if p == "." => "body".to_string(),
            p => p,
        };
        invalid(field, e.inner().to_string())
    })
}

/// Creates or replaces a segment: every strategy naming it follows at once, on every instance.
async fn put(
    admin: web::Data<Admin>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = segment_id(&id)?;
    admin.writable()?;
    let (actor, reason) = who(&req)?;
    let segment = parse_segment(&body)?;
    refuse_nul(&body).map_err(|e| ApiError {
        code: "invalid_segment",
        ..e
    })?;
    if segment.id != id {
        return Err(invalid("id", "the segment's id must match the path"));
    }
    toggles::validate_segment(&segment).map_err(|e| {
        let ToggleError::Invalid { field, message } = e;
        invalid(field, message)
    })?;
    let stored = segment.clone();
    let version = blocking(&admin.pool, move |c| {
        store::put_segment(
            c,
            &stored,
            &Change {
                actor: &actor,
                reason: &reason,
            },
        )
    })
    .await?;
    let version = applied(&admin, version).await?;
    Ok(HttpResponse::Ok().json(json!({"segment": to_json(&segment), "version": version})))
}

/// Deletes a segment no strategy names; one in use is `409 segment_in_use`, naming the toggles.
async fn delete(
    admin: web::Data<Admin>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = segment_id(&id)?;
    admin.writable()?;
    let (actor, reason) = who(&req)?;
    let version = blocking(&admin.pool, move |c| {
        store::delete_segment(
            c,
            id,
            &Change {
                actor: &actor,
                reason: &reason,
            },
        )
    })
    .await?;
    let version = applied(&admin, version).await?;
    Ok(HttpResponse::Ok().json(json!({"version": version})))
}
