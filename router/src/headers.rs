//! Header rules of a well-behaved proxy (RFC 9110 §7.6): hop-by-hop headers stay on their hop,
//! the client's address is appended to `X-Forwarded-For`, every hop adds itself to `Via`, and a
//! W3C `traceparent` is carried through or started.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1, plus the
/// non-standard ones proxies conventionally drop).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Appends `client` to `X-Forwarded-For` (never replacing what earlier hops wrote) and sets
/// `X-Forwarded-Proto` and `X-Forwarded-Host`.
pub fn add_forwarded(headers: &mut HeaderMap, client: &str, original_host: Option<HeaderValue>) {
    let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(earlier) if !earlier.trim().is_empty() => format!("{earlier}, {client}"),
        _ => client.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&chain) {
        headers.insert("x-forwarded-for", v);
    }
    // An earlier hop (a TLS-terminating balancer) knows the original scheme better than we do.
    if !headers.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    if let Some(host) = original_host {
        headers.insert("x-forwarded-host", host);
    }
}

/// Appends this hop to `Via`.
pub fn add_via(headers: &mut HeaderMap, token: &str) {
    let via = match headers.get(http::header::VIA).and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, 1.1 {token}"),
        None => format!("1.1 {token}"),
    };
    if let Ok(v) = HeaderValue::from_str(&via) {
        headers.insert(http::header::VIA, v);
    }
}

/// Whether this request already passed through the router named `token` (a routing loop).
pub fn has_passed(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(http::header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|hop| hop.split_whitespace().nth(1) == Some(token))
}

/// The path with percent-escapes decoded, as the upstream will interpret it; `None` for a path
/// with dot segments (`/a/../b`) or broken escapes, which could route one way and land another.
pub fn decoded_path(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(out).ok()?;
    let dotted = decoded
        .split('/')
        .any(|segment| segment == "." || segment == "..");
    (!dotted).then_some(decoded)
}

/// Is `value` a valid W3C traceparent: `00-<32 hex>-<16 hex>-<2 hex>`, lower-case, ids not all
/// zero, version not `ff`?
pub fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && nonzero(parts[1])
        && hex(parts[2], 16)
        && nonzero(parts[2])
        && hex(parts[3], 2)
}

/// Keeps a valid `traceparent`, or starts a trace with the ids `fresh` gives (two random u64
/// for the trace, one for the span). `tracestate` travels untouched either way.
pub fn ensure_traceparent(headers: &mut HeaderMap, fresh: impl FnOnce() -> (u64, u64, u64)) {
    let valid = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .is_some_and(valid_traceparent);
    if valid {
        return;
    }
    let (hi, lo, span) = fresh();
    let value = format!("00-{:016x}{:016x}-{:016x}-01", hi, lo | 1, span | 1);
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert("traceparent", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_dropped() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("x-keep", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
    }

    #[test]
    fn the_client_is_appended_to_the_forwarding_chain() {
        let mut h = map(&[("x-forwarded-for", "203.0.113.7")]);
        add_forwarded(
            &mut h,
            "127.0.0.1",
            Some(HeaderValue::from_static("shop.example")),
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        let mut fresh = HeaderMap::new();
        add_forwarded(&mut fresh, "10.0.0.1", None);
        assert_eq!(fresh["x-forwarded-for"], "10.0.0.1");
    }

    #[test]
    fn via_accumulates_and_reveals_loops() {
        let mut h = map(&[("via", "1.1 edge")]);
        assert!(!has_passed(&h, "fig-router-a"));
        add_via(&mut h, "fig-router-a");
        assert_eq!(h["via"], "1.1 edge, 1.1 fig-router-a");
        assert!(has_passed(&h, "fig-router-a"));
        assert!(!has_passed(&h, "fig-router-b"));
    }

    #[test]
    fn paths_are_decoded_for_routing_and_dot_segments_refused() {
        assert_eq!(
            decoded_path("/%63atalog/albums").as_deref(),
            Some("/catalog/albums")
        );
        assert_eq!(
            decoded_path("/catalog/a%20b").as_deref(),
            Some("/catalog/a b")
        );
        for bad in [
            "/wishlists/../catalog/x",
            "/./catalog",
            "/%2e%2e/catalog",
            "/a%zz",
            "/a%4",
        ] {
            assert_eq!(decoded_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_earlier_hops_scheme_is_kept() {
        let mut h = map(&[("x-forwarded-proto", "https")]);
        add_forwarded(&mut h, "127.0.0.1", None);
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn traceparents_are_kept_when_valid_and_started_otherwise() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(valid_traceparent(good));
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            assert!(!valid_traceparent(bad), "{bad}");
        }
        let mut kept = map(&[("traceparent", good)]);
        ensure_traceparent(&mut kept, || panic!("not needed"));
        assert_eq!(kept["traceparent"], good);
        let mut started = map(&[("traceparent", "garbage")]);
        ensure_traceparent(&mut started, || (0, 0, 0));
        let value = started["traceparent"].to_str().unwrap().to_string();
        assert!(valid_traceparent(&value), "{value}");
    }
}
