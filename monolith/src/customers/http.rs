//! Customer endpoints.

use actix_web::http::header::LOCATION;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::domain::{Customer, CustomerId, NewCustomer};
use platform::{ApiError, Db, JsonBody, path_id};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/customers").route(web::post().to(create_customer)))
        .service(web::resource("/customers/{customer_id}").route(web::get().to(get_customer)));
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCustomer {
    name: String,
    email: String,
}

#[derive(Debug, Serialize)]
struct CustomerBody {
    id: i64,
    name: String,
    email: String,
    created_at: DateTime<Utc>,
}

impl From<Customer> for CustomerBody {
    fn from(c: Customer) -> Self {
        CustomerBody {
            id: c.id.0,
            name: c.name,
            email: c.email,
            created_at: c.created_at,
        }
    }
}

async fn create_customer(db: Db, body: JsonBody<CreateCustomer>) -> Result<HttpResponse, ApiError> {
    let new = NewCustomer::parse(&body.0.name, &body.0.email)?;
    let customer = db.run(move |c| super::create_customer(c, &new)).await?;
    Ok(HttpResponse::Created()
        .insert_header((LOCATION, format!("/customers/{}", customer.id.0)))
        .json(CustomerBody::from(customer)))
}

async fn get_customer(db: Db, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = CustomerId(path_id(&id, "customer")?);
    let customer = db.run(move |c| super::get_customer(c, id)).await?;
    Ok(HttpResponse::Ok().json(CustomerBody::from(customer)))
}
