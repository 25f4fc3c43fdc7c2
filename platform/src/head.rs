//! `HEAD` on every `GET` resource (RFC 9110 §9.3.2): routed as the `GET` it mirrors.
//!
//! The handlers stay `GET`-only; this middleware, outermost, makes a `HEAD` request look like a
//! `GET` to the router and the handlers. actix's HTTP/1 codec remembers that the request line
//! said `HEAD` and writes the response's head (status, headers, `Content-Length` of the body the
//! `GET` would send) without the body. Nothing else in a service can tell the two apart, which
//! is the point: the fence admits `HEAD` like `GET`, as a read.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;

/// Middleware (`from_fn`): a `HEAD` request goes on as a `GET`.
pub async fn head_as_get(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if req.method() == Method::HEAD {
        req.head_mut().method = Method::GET;
    }
    next.call(req).await
}
