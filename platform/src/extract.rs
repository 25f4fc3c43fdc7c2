//! Request input: JSON bodies, query parameters and path ids, checked the same way on every
//! side (the order of the checks and every message are in docs/api.md).
//!
//! [`JsonBody`] checks the content type (415), the size (413, [`BODY_LIMIT`]), JSON syntax
//! (400), NUL characters (422, [`nul_path`]) and that the body is an object (422), then
//! deserialises the shape from the raw bytes rather than from the parsed tree, so that a key given
//! twice is refused and the first error in document order is the one reported;
//! `serde_path_to_error` names its field path. [`QueryMap`] gives typed, named query parameters;
//! [`path_id`] makes a non-positive or non-numeric id the same 404 as one that does not exist.

use std::collections::HashMap;
use std::str::FromStr;

use actix_web::dev::Payload;
use actix_web::http::{StatusCode, header};
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::StreamExt;
use futures_util::future::{LocalBoxFuture, Ready, ready};
use serde::de::DeserializeOwned;

use super::ApiError;

/// Largest request body any endpoint accepts; more is refused with 413 before it is buffered.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON request body: 400 when it is not JSON, 422 naming the field when a field is missing or
/// of the wrong type, 413 over [`BODY_LIMIT`], 415 for a non-JSON content type.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let checked = check_headers(req);
        let mut payload = payload.take();
        Box::pin(async move {
            checked?;
            let mut body = Vec::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_body",
                        "could not read the request body",
                    )
                })?;
                if body.len() + chunk.len() > BODY_LIMIT {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            parse_json(&body).map(JsonBody)
        })
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("request body is larger than {BODY_LIMIT} bytes"),
    )
}

fn check_headers(req: &HttpRequest) -> Result<(), ApiError> {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "request body must be application/json",
            )
            .with_field("Content-Type"));
        }
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > BODY_LIMIT) {
        return Err(too_large());
    }
    Ok(())
}

/// Parses a JSON body, naming the offending field on failure.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let malformed = |detail: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("request body is not valid JSON: {detail}"),
        )
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(malformed("the body is empty".into()));
    }
    // Parse to a tree first: syntax errors are 400, and strings can be checked before any
    // reaches a query.
    let tree: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
    if let Some(field) = nul_path(&tree) {
        let field = if field.is_empty() {
            "body".to_string()
        } else {
            field
        };
        return Err(ApiError::invalid(
            field,
            "text must not contain NUL characters",
        ));
    }
    if !tree.is_object() {
        return Err(ApiError::invalid("body", "the body must be a JSON object"));
    }
    // Deserialise from the bytes, not the tree: the tree would hide duplicate keys (last wins)
    // and report errors in key order instead of document order.
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = field_name(&path, &inner.to_string());
        ApiError::invalid(field, strip_position(&inner.to_string()))
    })
}

/// The path (`strategies[0].parameters.groupId`) of the first string in `value`, a value or an
/// object key, that holds U+0000, which PostgreSQL text and jsonb cannot store; `""` when
/// `value` is that string itself.
pub fn nul_path(value: &serde_json::Value) -> Option<String> {
    nul_path_under(value, String::new())
}

fn nul_path_under(value: &serde_json::Value, path: String) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => Some(path),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_path_under(v, format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let child = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            if k.contains('\0') {
                Some(child)
            } else {
                nul_path_under(v, child)
            }
        }),
        _ => None,
    }
}

/// serde reports a missing or unknown field with the path of its parent; name the field itself.
fn field_name(path: &str, message: &str) -> String {
    let named = ["missing field `", "unknown field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    match (path, named) {
        (".", Some(name)) => name.to_string(),
        (parent, Some(name)) if !parent.ends_with(name) => format!("{parent}.{name}"),
        (".", None) => "body".to_string(),
        (path, _) => path.to_string(),
    }
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Query parameters as a map; each endpoint parses the ones it knows and names any bad one.
#[derive(Debug, Default)]
pub struct QueryMap(HashMap<String, String>);

impl FromRequest for QueryMap {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let bad = || {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_query",
                "the query string is not valid",
            )
        };
        let parsed = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
            .map_err(|_| bad())
            .map(web::Query::into_inner)
            // PostgreSQL text cannot hold NUL: refuse it here rather than fail inside a query.
            .and_then(|pairs| {
                if pairs
                    .iter()
                    .any(|(k, v)| k.contains('\0') || v.contains('\0'))
                {
                    return Err(bad());
                }
                Ok(QueryMap(pairs.into_iter().collect()))
            });
        ready(parsed)
    }
}

impl QueryMap {
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        QueryMap(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// `name` parsed as `T`, or a 422 that names it and says what was expected.
    pub fn parsed<T: FromStr>(&self, name: &str, expected: &str) -> Result<Option<T>, ApiError> {
        self.text(name)
            .map(|raw| {
                raw.parse::<T>()
                    .map_err(|_| ApiError::invalid(name, format!("{name} must be {expected}")))
            })
            .transpose()
    }
}

/// An id from the path. Anything that is not a positive integer names no resource: 404.
pub fn path_id(raw: &str, what: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::not_found(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_paths_name_the_string() {
        use serde_json::json;
        let cases = [
            (json!({"a": "x"}), None),
            (json!({"a": "x\0"}), Some("a")),
            (json!({"a": [1, {"b": ["ok", "\0"]}]}), Some("a[1].b[1]")),
            (json!({"a": {"k\0": 1}}), Some("a.k\0")),
            (json!("\0"), Some("")),
        ];
        for (value, expected) in cases {
            assert_eq!(nul_path(&value).as_deref(), expected, "{value}");
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Line {
        album_id: i64,
        quantity: i32,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Order {
        customer_id: i64,
        lines: Vec<Line>,
    }

    fn err(body: &str) -> ApiError {
        parse_json::<Order>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn json_errors_name_the_field() {
        let cases = [
            ("", 400, None),
            ("{", 400, None),
            ("{\"customer_id\": 1, \"lines\": []} trailing", 400, None),
            ("{\"lines\": []}", 422, Some("customer_id")),
            (
                "{\"customer_id\": \"x\", \"lines\": []}",
                422,
                Some("customer_id"),
            ),
            (
                "{\"customer_id\": 1, \"lines\": [{\"album_id\": 1}]}",
                422,
                Some("lines[0].quantity"),
            ),
            (
                "{\"customer_id\": 1, \"lines\": [{\"album_id\": 1, \"quantity\": true}]}",
                422,
                Some("lines[0].quantity"),
            ),
            (
                "{\"customer_id\": 1, \"lines\": [], \"extra\": 1}",
                422,
                Some("extra"),
            ),
            ("42", 422, Some("body")),
            ("[1, [[1, 1]]]", 422, Some("body")),
            (
                "{\"customer_id\": 1, \"customer_id\": 2, \"lines\": []}",
                422,
                Some("customer_id"),
            ),
            (
                "{\"lines\": [{\"album_id\": \"x\"}], \"customer_id\": \"y\"}",
                422,
                Some("lines[0].album_id"),
            ),
            (
                "{\"customer_id\": 1, \"lines\": [{\"album_id\": \"\\u0000\"}]}",
                422,
                Some("lines[0].album_id"),
            ),
        ];
        for (body, status, field) in cases {
            let e = err(body);
            assert_eq!(e.status.as_u16(), status, "{body}: {e:?}");
            assert_eq!(e.field.as_deref(), field, "{body}: {e:?}");
        }
    }

    #[test]
    fn path_ids_that_are_not_positive_integers_are_not_found() {
        assert_eq!(path_id("42", "album").unwrap(), 42);
        for raw in ["0", "-1", "abc", "1.5", "99999999999999999999"] {
            assert_eq!(
                path_id(raw, "album").unwrap_err().status,
                StatusCode::NOT_FOUND,
                "{raw}"
            );
        }
    }

    #[test]
    fn bad_query_values_are_named() {
        let q = QueryMap::from_pairs([("limit", "ten")]);
        let e = q.parsed::<u32>("limit", "an integer").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("limit"));
        assert_eq!(q.parsed::<u32>("cursor", "an id").unwrap(), None);
    }
}
