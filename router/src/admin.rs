//! The admin API, on its own port, behind a bearer token: toggles (list, get, put, on/off,
//! rollout %, import, delete) and segments, their audit history, the route table, the live write
//! ownership, `explain` and `evaluate`, stale toggles, and the Unleash client API
//! (`/api/client/features`) for official SDKs.

mod segments;

use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use chrono::Utc;
use platform::{ApiError, JsonBody, Pool, QueryMap, blocking};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use unleash_types::client_features::{ClientFeature, ClientFeatures, Strategy};
use unleash_yggdrasil::Context;

use crate::decide::RequestHead;
use crate::headers;
use crate::ownership::{self, OwnershipError};
use crate::proxy::Router;
use crate::store::{self, Change, StoreError, Subject};
use crate::sync;
use crate::toggles::wire::{self, to_json};
use crate::toggles::{self, ToggleError};

/// What the admin handlers share.
pub struct Admin {
    pub pool: Pool,
    pub router: Arc<Router>,
    /// Set when toggles come from an Unleash server: changes must be made there.
    pub managed_elsewhere: Option<String>,
}

impl Admin {
    fn writable(&self) -> Result<(), ApiError> {
        match &self.managed_elsewhere {
            None => Ok(()),
            Some(url) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "toggles_managed_elsewhere",
                format!(
                    "this router reads its toggles from the Unleash server at {url}; change them there"
                ),
            )),
        }
    }
}

/// The bearer token, as app data for the auth middleware.
#[derive(Clone)]
pub struct AdminToken(pub Arc<str>);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/admin/toggles")
            .route(web::get().to(list))
            .route(web::post().to(import)),
    )
    .service(
        web::resource("/admin/toggles/{name}")
            .route(web::get().to(get))
            .route(web::put().to(put))
            .route(web::delete().to(delete)),
    )
    .service(web::resource("/admin/toggles/{name}/enable").route(web::post().to(enable)))
    .service(web::resource("/admin/toggles/{name}/disable").route(web::post().to(disable)))
    .service(web::resource("/admin/toggles/{name}/rollout").route(web::post().to(rollout)))
    .service(web::resource("/admin/audit").route(web::get().to(audit)))
    .service(web::resource("/admin/routes").route(web::get().to(routes)))
    .service(web::resource("/admin/ownership").route(web::get().to(write_ownership)))
    .service(web::resource("/admin/explain").route(web::get().to(explain)))
    .service(web::resource("/admin/evaluate").route(web::post().to(evaluate)))
    .service(web::resource("/admin/stale").route(web::get().to(stale)))
    .service(web::resource("/admin/upstreams").route(web::get().to(upstreams)))
    .service(
        web::resource("/admin/diffs")
            .route(web::get().to(diffs))
            .route(web::delete().to(reset_diffs)),
    )
    .configure(segments::configure)
    .configure(crate::migrate::api::configure)
    .service(web::resource("/metrics").route(web::get().to(metrics)))
    .service(web::resource("/api/client/features").route(web::get().to(client_features)))
    .service(web::resource("/api/client/register").route(web::post().to(accepted)))
    .service(web::resource("/api/client/metrics").route(web::post().to(accepted)));
}

/// Accepts `Authorization: Bearer <token>`, or the bare token as Unleash SDKs send it; compares
/// in constant time. Anything else is a 401 before any handler runs.
pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let expected = req.app_data::<web::Data<AdminToken>>().map(|t| t.0.clone());
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_string());
    let ok = match (expected, given) {
        (Some(expected), Some(given)) => bool::from(expected.as_bytes().ct_eq(given.as_bytes())),
        _ => false,
    };
    if !ok {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid admin token is required",
        )
        .error_response();
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            actix_web::http::header::HeaderValue::from_static("Bearer"),
        );
        return Ok(req.into_response(response).map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(name) => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("toggle {name} not found"),
            )
            .with_field("name"),
            StoreError::SegmentNotFound(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("segment {id} not found"),
            )
            .with_field("id"),
            StoreError::SegmentInUse { id, toggles } => ApiError::new(
                StatusCode::CONFLICT,
                "segment_in_use",
                format!(
                    "segment {id} is used by {}; take it out of their strategies first",
                    toggles.join(", ")
                ),
            )
            .with_field("id"),
            StoreError::Invalid(e) => e.into(),
            StoreError::Db(e) => e.into(),
            other => {
                tracing::error!(error = %other, "toggle store failed");
                ApiError::internal()
            }
        }
    }
}

impl From<OwnershipError> for ApiError {
    fn from(e: OwnershipError) -> Self {
        match e {
            OwnershipError::Db(e) => e.into(),
            other => {
                tracing::error!(error = %other, "write ownership store failed");
                ApiError::internal()
            }
        }
    }
}

impl From<ToggleError> for ApiError {
    fn from(e: ToggleError) -> Self {
        match e {
            ToggleError::Invalid { field, message } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_toggle", message).with_field(field)
            }
        }
    }
}

/// A toggle name from the path (`field` = `name`), a query or a body that is not a definition:
/// Unleash's rules ([`toggles::check_name`]), or `400 invalid_name`. Checked before anything
/// else, so a name that could never be stored reaches neither the store nor the engine.
fn valid_name(name: &str, field: &str) -> Result<(), ApiError> {
    toggles::check_name(name).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", e.to_string()).with_field(field)
    })
}

/// A definition body with U+0000 in any string (a value or a key) is refused naming that
/// string: PostgreSQL text and jsonb cannot store it. Runs on a body that parsed.
fn refuse_nul(body: &[u8]) -> Result<(), ApiError> {
    let tree: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_toggle", e.to_string()).with_field("body")
    })?;
    match platform::extract::nul_path(&tree) {
        None => Ok(()),
        Some(path) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_toggle",
            "text must not contain NUL characters",
        )
        .with_field(if path.is_empty() { "body".into() } else { path })),
    }
}

/// `X-Actor` and `X-Reason`: every change says who made it and why.
pub(crate) fn who(req: &HttpRequest) -> Result<(String, String), ApiError> {
    let header = |name: &'static str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 500)
            .map(str::to_string)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "missing_header",
                    format!("{name} is required on every change"),
                )
                .with_field(name)
            })
    };
    Ok((header("X-Actor")?, header("X-Reason")?))
}

/// A problem found in the one-definition document a `PUT` or an edit is checked as, with its
/// field as the client sent the definition (`strategies[0]…`, not `features[0].strategies[0]…`).
fn in_definition(e: StoreError) -> ApiError {
    match e {
        StoreError::Invalid(e) => e.under("features[0]").into(),
        other => other.into(),
    }
}

/// Applies the store's new state here at once (other instances follow their NOTIFY).
async fn applied(admin: &Admin, version: i64) -> Result<i64, ApiError> {
    sync::reload(&admin.pool, &admin.router.toggles)
        .await
        .map_err(ApiError::from)?;
    Ok(version)
}

async fn list(admin: web::Data<Admin>) -> Result<HttpResponse, ApiError> {
    let ((version, features), changes) = blocking(&admin.pool, |c| {
        Ok::<_, StoreError>((store::load(c)?, store::latest_changes(c)?))
    })
    .await?;
    // Who changed each listed toggle last, and when: what an operator scanning the list asks.
    let last_changes: serde_json::Map<String, serde_json::Value> = changes
        .into_iter()
        .filter(|c| features.features.iter().any(|f| f.name == c.name))
        .map(|c| {
            let change = json!({"at": c.at, "actor": c.actor, "reason": c.reason});
            (c.name, change)
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "version": version,
        "features": to_json(&features.features),
        "segments": to_json(&features.segments.unwrap_or_default()),
        "last_changes": last_changes,
    })))
}

async fn get(admin: web::Data<Admin>, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    valid_name(&name, "name")?;
    let feature = blocking(&admin.pool, move |c| store::get(c, &name)).await?;
    Ok(HttpResponse::Ok().json(to_json(&feature)))
}

async fn put(
    admin: web::Data<Admin>,
    req: HttpRequest,
    name: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    valid_name(&name, "name")?;
    admin.writable()?;
    let (actor, reason) = who(&req)?;
    let feature: ClientFeature = parse_feature(&body)?;
    refuse_nul(&body)?;
    if feature.name != *name {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_toggle",
            "the definition's name must match the path",
        )
        .with_field("name"));
    }
    toggles::validate_input(&store::document(vec![feature.clone()]))
        .map_err(|e| e.under("features[0]"))?;
    let stored = feature.clone();
    let version = blocking(&admin.pool, move |c| {
        store::put(
            c,
            &stored,
            &Change {
                actor: &actor,
                reason: &reason,
            },
        )
        .map_err(in_definition)
    })
    .await?;
    let version = applied(&admin, version).await?;
    Ok(HttpResponse::Ok().json(json!({"version": version, "toggle": to_json(&feature)})))
}

fn parse_feature(body: &[u8]) -> Result<ClientFeature, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_toggle",
            e.inner().to_string(),
        )
        .with_field(match e.path().to_string() {
            p if p == "." => "body".to_string(),
            p => p,
        })
    })
}

/// Edits one stored toggle under its row lock, checks the result, applies it.
async fn edit(
    admin: web::Data<Admin>,
    req: HttpRequest,
    name: String,
    change: impl FnOnce(&mut ClientFeature) + Send + 'static,
) -> Result<HttpResponse, ApiError> {
    valid_name(&name, "name")?;
    admin.writable()?;
    let (actor, reason) = who(&req)?;
    let (version, feature) = blocking(&admin.pool, move |c| {
        store::update(
            c,
            &name,
            &Change {
                actor: &actor,
                reason: &reason,
            },
            change,
        )
        .map_err(in_definition)
    })
    .await?;
    let version = applied(&admin, version).await?;
    Ok(HttpResponse::Ok().json(json!({"version": version, "toggle": to_json(&feature)})))
}

async fn enable(
    admin: web::Data<Admin>,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    edit(admin, req, name.into_inner(), |f| f.enabled = true).await
}

async fn disable(
    admin: web::Data<Admin>,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    edit(admin, req, name.into_inner(), |f| f.enabled = false).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutBody {
    percent: u32,
}

/// Sets the percentage of a `flexibleRollout` (sticky on user, then session); a toggle without
/// one gets one in place of its strategies. Setting a percentage turns the toggle on: the
/// percentage is then what decides.
pub fn set_rollout(feature: &mut ClientFeature, percent: u32) {
    feature.enabled = true;
    let strategies = feature.strategies.get_or_insert_with(Vec::new);
    match strategies.iter_mut().find(|s| s.name == "flexibleRollout") {
        Some(s) => {
            s.parameters
                .get_or_insert_with(Default::default)
                .insert("rollout".into(), percent.to_string());
        }
        None => {
            let parameters = [
                ("rollout".to_string(), percent.to_string()),
                ("stickiness".to_string(), "default".to_string()),
                ("groupId".to_string(), feature.name.clone()),
            ]
            .into_iter()
            .collect();
            *strategies = vec![Strategy {
                name: "flexibleRollout".into(),
                sort_order: None,
                segments: None,
                constraints: None,
                parameters: Some(parameters),
                variants: None,
            }];
        }
    }
}

async fn rollout(
    admin: web::Data<Admin>,
    req: HttpRequest,
    name: web::Path<String>,
    body: JsonBody<RolloutBody>,
) -> Result<HttpResponse, ApiError> {
    valid_name(&name, "name")?;
    let percent = body.0.percent;
    if percent > 100 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_toggle",
            "percent must be 0 to 100",
        )
        .with_field("percent"));
    }
    edit(admin, req, name.into_inner(), move |f| {
        set_rollout(f, percent)
    })
    .await
}

async fn import(
    admin: web::Data<Admin>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    admin.writable()?;
    let (actor, reason) = who(&req)?;
    let features: ClientFeatures = toggles::parse_features(&body)?;
    refuse_nul(&body)?;
    toggles::validate_input(&features)?;
    let (version, changed) = blocking(&admin.pool, move |c| {
        store::import(
            c,
            &features,
            &Change {
                actor: &actor,
                reason: &reason,
            },
        )
    })
    .await?;
    let version = applied(&admin, version).await?;
    Ok(HttpResponse::Ok().json(json!({"version": version, "changed": changed})))
}

async fn delete(
    admin: web::Data<Admin>,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    valid_name(&name, "name")?;
    admin.writable()?;
    let (actor, reason) = who(&req)?;
    let version = blocking(&admin.pool, move |c| {
        store::delete(
            c,
            &name,
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

async fn audit(admin: web::Data<Admin>, q: QueryMap) -> Result<HttpResponse, ApiError> {
    let name = q.text("toggle").map(str::to_string);
    if let Some(name) = &name {
        valid_name(name, "toggle")?;
    }
    let segment = q
        .parsed::<i32>("segment", "a segment id: a positive integer")?
        .map(|id| match id {
            1.. => Ok(id),
            _ => Err(ApiError::invalid(
                "segment",
                "segment must be a segment id: a positive integer",
            )),
        })
        .transpose()?;
    if name.is_some() && segment.is_some() {
        return Err(ApiError::invalid(
            "segment",
            "give toggle or segment, not both",
        ));
    }
    let limit = q
        .parsed::<i64>("limit", "an integer from 1 to 1000")?
        .unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "limit must be 1 to 1000"));
    }
    let entries = blocking(&admin.pool, move |c| {
        let subject = match (&name, segment) {
            (Some(name), _) => Some(Subject::Toggle(name)),
            (None, Some(id)) => Some(Subject::Segment(id)),
            (None, None) => None,
        };
        store::history(c, subject, limit)
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({"entries": entries})))
}

async fn routes(admin: web::Data<Admin>) -> HttpResponse {
    let t = &admin.router.table;
    let owners = admin.router.owners.load_full();
    let owned = |i: usize| {
        owners
            .get(i)
            .copied()
            .unwrap_or(ownership::Owned::by(t.capabilities[i].write_owner))
    };
    HttpResponse::Ok().json(json!({
        "default_upstream": t.upstreams[t.default_upstream].name,
        "upstreams": t.upstreams.iter().map(|u| json!({"name": u.name, "url": u.url})).collect::<Vec<_>>(),
        // The write owner this instance applies now (the table's until a flip stored one).
        "capabilities": t.capabilities.iter().enumerate().map(|(i, c)| json!({
            "name": c.name,
            "legacy": t.upstreams[c.legacy].name,
            "extracted": t.upstreams[c.extracted].name,
            "read_toggle": c.read_toggle,
            "shadow_toggle": c.shadow_toggle,
            "write_owner": owned(i).owner,
            "held": owned(i).held,
            "timeout_ms": c.timeout.as_millis() as u64,
        })).collect::<Vec<_>>(),
        "routes": t.routes.iter().map(|r| json!({
            "prefix": r.prefix, "capability": t.capabilities[r.capability].name, "methods": r.methods,
        })).collect::<Vec<_>>(),
    }))
}

/// Each capability's write ownership as this instance applies it, at which version, and every
/// instance's acknowledgement from the router database (what a flip waits for). Read-only: only
/// a flip changes ownership.
async fn write_ownership(admin: web::Data<Admin>) -> Result<HttpResponse, ApiError> {
    let instances = blocking(&admin.pool, ownership::instances).await?;
    let t = &admin.router.table;
    let owners = admin.router.owners.load_full();
    let capabilities: Vec<_> = t
        .capabilities
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let owned = owners
                .get(i)
                .copied()
                .unwrap_or(ownership::Owned::by(c.write_owner));
            json!({
                "name": c.name,
                "owner": owned.owner,
                "held": owned.held,
                "held_since": owned.held_since,
                "configured_owner": c.write_owner,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "version": owners.version,
        "capabilities": capabilities,
        "instances": instances,
    })))
}

/// The plan for a described request, and why: what the router would do with it right now. The
/// method and target are read exactly as the data path reads them (methods are case-sensitive;
/// the target goes through [`headers::routing_target`]), so the answer is the data path's.
async fn explain(admin: web::Data<Admin>, q: QueryMap) -> Result<HttpResponse, ApiError> {
    let method = q.text("method").unwrap_or("GET");
    if !is_method(method) {
        return Err(ApiError::invalid(
            "method",
            "method must be an HTTP method: 1 to 32 letters, digits or !#$%&'*+-.^_`|~",
        ));
    }
    let target = q
        .text("path")
        .ok_or_else(|| ApiError::invalid("path", "path is required"))?;
    let target = headers::routing_target(target).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request_target", e.to_string())
            .with_field("path")
    })?;
    let head = RequestHead {
        method,
        path: &target.path,
        user_id: q.text("user_id"),
        session_id: q.text("session_id"),
        remote_addr: q.text("remote_addr"),
    };
    let plan = admin.router.plan(&head);
    let t = &admin.router.table;
    let live = admin.router.toggles.load();
    // Strategies of the toggles this plan consulted that can never be on, and why.
    let notes: Vec<String> = plan
        .capability
        .map(|c| &t.capabilities[c])
        .into_iter()
        .flat_map(|c| [&c.read_toggle, &c.shadow_toggle])
        .flat_map(|name| live.notes(name).iter().map(move |n| format!("{name}: {n}")))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "capability": plan.capability.map(|c| t.capabilities[c].name.clone()),
        "primary": t.upstreams[plan.primary].name,
        "shadow": plan.shadow.map(|s| t.upstreams[s].name.clone()),
        "reason": plan.reason.as_str(),
        "notes": notes,
        "toggles_version": live.version,
    })))
}

/// An HTTP method as RFC 9110 spells one (a token), of a sensible length.
fn is_method(method: &str) -> bool {
    (1..=32).contains(&method.len())
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvaluateBody {
    toggle: String,
    #[serde(default)]
    context: Option<Context>,
}

async fn evaluate(
    admin: web::Data<Admin>,
    body: JsonBody<EvaluateBody>,
) -> Result<HttpResponse, ApiError> {
    valid_name(&body.0.toggle, "toggle")?;
    let context = body.0.context.unwrap_or_default();
    let live = admin.router.toggles.load();
    let known = live
        .features()
        .features
        .iter()
        .any(|f| f.name == body.0.toggle);
    Ok(HttpResponse::Ok().json(json!({
        "toggle": body.0.toggle,
        "known": known,
        "enabled": live.evaluate(&body.0.toggle, &context),
        "variant": live.variant(&body.0.toggle, &context),
        "explain": live.notes(&body.0.toggle),
    })))
}

/// The most `days` that `stale` takes: a century, far from the limits of date arithmetic.
const MAX_STALE_DAYS: i64 = 36_500;

/// Toggles fully on or fully off and unchanged for `days`: the migration step is done, so the
/// toggle (and the code path it guards) is ready to remove.
async fn stale(admin: web::Data<Admin>, q: QueryMap) -> Result<HttpResponse, ApiError> {
    let out_of_range = || ApiError::invalid("days", format!("days must be 0 to {MAX_STALE_DAYS}"));
    let days = q
        .parsed::<i64>(
            "days",
            &format!("a number of days from 0 to {MAX_STALE_DAYS}"),
        )?
        .unwrap_or(14);
    if !(0..=MAX_STALE_DAYS).contains(&days) {
        return Err(out_of_range());
    }
    let cutoff = chrono::TimeDelta::try_days(days)
        .and_then(|d| Utc::now().checked_sub_signed(d))
        .ok_or_else(out_of_range)?;
    let changes = blocking(&admin.pool, store::last_changes).await?;
    let live = admin.router.toggles.load();
    let stale: Vec<_> = changes
        .into_iter()
        .filter(|(_, at)| *at <= cutoff)
        .filter_map(|(name, at)| {
            let feature = live.features().features.iter().find(|f| f.name == name)?;
            toggles::settled(feature)
                .map(|state| json!({"name": name, "state": state, "unchanged_since": at}))
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"days": days, "stale": stale})))
}

/// What official Unleash SDKs poll: the live definitions, with the segments for an SDK whose
/// `Unleash-Client-Spec` says it reads them and with their constraints inlined otherwise, as
/// Unleash answers.
async fn client_features(
    admin: web::Data<Admin>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let header = req.headers().get(wire::CLIENT_SPEC_HEADER);
    let spec = header.map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let with_segments = wire::wants_segments(spec).map_err(|message| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_header", message)
            .with_field(wire::CLIENT_SPEC_HEADER)
    })?;
    let live = admin.router.toggles.load();
    Ok(HttpResponse::Ok().json(live.client_document(with_segments)))
}

/// SDK registration and metrics: accepted and not kept (the router counts its own evaluations).
async fn accepted() -> HttpResponse {
    HttpResponse::Accepted().finish()
}

/// Upstream health as the router sees it: each circuit's state.
async fn upstreams(admin: web::Data<Admin>) -> HttpResponse {
    let r = &admin.router;
    let list: Vec<_> = r
        .table
        .upstreams
        .iter()
        .zip(&r.breakers)
        .map(|(u, b)| json!({"name": u.name, "url": u.url, "circuit": b.state().as_str()}))
        .collect();
    HttpResponse::Ok().json(json!({"upstreams": list}))
}

/// The parallel run's reports, per route (`METHOD prefix`), summed over every instance (this
/// one's latest counts stored first; another's may be up to `reports::FLUSH_EVERY` behind).
async fn diffs(admin: web::Data<Admin>) -> Result<HttpResponse, ApiError> {
    let shadows = &admin.router.shadows;
    let stored = crate::reports::flush(&admin.pool, shadows).await?;
    let limits = shadows.limits();
    Ok(HttpResponse::Ok().json(json!({
        "routes": stored,
        "limits": {
            "in_flight": limits.in_flight,
            "bytes": limits.bytes,
            "answer_bytes": limits.answer,
            "recheck_ms": limits.recheck.as_millis() as u64,
            "noise_every": limits.noise_every,
        },
    })))
}

/// Forgets one route's report (`?route=GET /catalog/albums`), or every route's, for every
/// instance (each forgets its own unsaved counts when it next hears of it: at once here).
async fn reset_diffs(admin: web::Data<Admin>, q: QueryMap) -> Result<HttpResponse, ApiError> {
    let route = q.text("route").map(str::to_string);
    let local = admin.router.shadows.reset(route.as_deref());
    let which = route.clone();
    let stored = blocking(&admin.pool, move |c| {
        crate::reports::delete(c, which.as_deref())
    })
    .await?;
    if let Some(route) = route
        && local + stored == 0
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_such_report",
            format!("no report for route {route:?}: GET /admin/diffs lists them"),
        ));
    }
    Ok(HttpResponse::Ok().json(json!({"reset": stored.max(local)})))
}

/// Prometheus text exposition (scrape with the admin token as a bearer token).
async fn metrics(admin: web::Data<Admin>) -> HttpResponse {
    let r = &admin.router;
    let mut text = r.metrics.render(
        &r.table,
        r.toggles.load().version,
        r.owners.version(),
        &r.breakers,
    );
    text.push_str(&crate::metrics::render_shadows(&r.shadows));
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text)
}
