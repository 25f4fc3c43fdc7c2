//! Header rules of a well-behaved proxy (RFC 9110 §7.6): the client's address is appended to
//! `X-Forwarded-For`, every hop adds itself to `Via`, routing sees the path the upstream will
//! see, and a W3C `traceparent` is carried through or started. (Which fields stay on their hop
//! is in [`crate::h1`].)

use std::borrow::Cow;

/// Whether a request whose `Via` elements are `via` already passed through the router named
/// `token` (a routing loop).
pub fn has_passed<'a>(mut via: impl Iterator<Item = &'a str>, token: &str) -> bool {
    via.any(|hop| hop.split_whitespace().nth(1) == Some(token))
}

/// Writes `name: <earlier elements, comma-separated>, <last>` and a line end: the list-valued
/// headers a proxy extends (`X-Forwarded-For`, `Via`), never replacing what earlier hops wrote.
pub fn write_appended<'a>(
    out: &mut Vec<u8>,
    name: &str,
    earlier: impl Iterator<Item = &'a str>,
    last: &str,
) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    for element in earlier {
        out.extend_from_slice(element.as_bytes());
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(last.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes one `name: value` line.
pub fn write_field(out: &mut Vec<u8>, name: impl AsRef<[u8]>, value: &[u8]) {
    out.extend_from_slice(name.as_ref());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Why a request target cannot be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the request target must be a path")]
    NotAPath,
    #[error("the path has dot segments or bad escapes")]
    BadPath,
}

/// A request target as the router uses it: what it forwards, and the path it routes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// The origin-form target (path and query), forwarded unchanged.
    pub forwarded: &'a str,
    /// The path without its query, percent-decoded, as the upstream will read it.
    pub path: Cow<'a, str>,
}

/// The one reading of a request target that both the data path and `explain` use, so that
/// `explain` always gives the data path's answer: origin form as is; absolute form (which a
/// client talking to a proxy may send) reduced to its path; the path decoded for routing
/// (`/%63atalog/` is `/catalog/` to the upstream); anything else refused.
pub fn routing_target(target: &str) -> Result<Target<'_>, TargetError> {
    let forwarded = origin_form(target).ok_or(TargetError::NotAPath)?;
    let path = forwarded.split_once('?').map_or(forwarded, |(p, _)| p);
    let path = decoded_path(path).ok_or(TargetError::BadPath)?;
    Ok(Target { forwarded, path })
}

fn origin_form(target: &str) -> Option<&str> {
    if target.starts_with('/') {
        return Some(target);
    }
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))?;
    Some(rest.find('/').map_or("/", |i| &rest[i..]))
}

/// Writes `content-length: <length>` and a line end, without allocating.
pub fn write_length(out: &mut Vec<u8>, length: u64) {
    out.extend_from_slice(b"content-length: ");
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = length;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// The path with percent-escapes decoded, as the upstream will interpret it; `None` for a path
/// with dot segments (`/a/../b`) or broken escapes, which could route one way and land another.
pub fn decoded_path(path: &str) -> Option<Cow<'_, str>> {
    let dotted = |p: &str| {
        p.split('/')
            .any(|segment| segment == "." || segment == "..")
    };
    // Most paths have no escapes: nothing to copy.
    if !path.contains('%') {
        return (!dotted(path)).then_some(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Two hex digits exactly: `from_str_radix` alone would also take a sign (`%+1`).
            let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
            let (high, low) = (hex(i + 1)?, hex(i + 2)?);
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(out).ok()?;
    (!dotted(&decoded)).then_some(Cow::Owned(decoded))
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

/// A new W3C `traceparent` from three random ids (two for the trace, one for the span); the
/// low bits are set so no id is all zeros.
pub fn fresh_traceparent((hi, lo, span): (u64, u64, u64)) -> [u8; 55] {
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    let mut put = |at: usize, id: u64| {
        for (i, byte) in out[at..at + 16].iter_mut().enumerate() {
            *byte = b"0123456789abcdef"[(id >> (60 - 4 * i)) as usize & 0xf];
        }
    };
    put(3, hi);
    put(19, lo | 1);
    put(36, span | 1);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_headers_are_extended_never_replaced() {
        let mut out = Vec::new();
        write_appended(
            &mut out,
            "x-forwarded-for",
            ["203.0.113.7", "10.0.0.2"].into_iter(),
            "127.0.0.1",
        );
        write_appended(&mut out, "via", std::iter::empty(), "1.1 fig-router-a");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "x-forwarded-for: 203.0.113.7, 10.0.0.2, 127.0.0.1\r\nvia: 1.1 fig-router-a\r\n"
        );
    }

    #[test]
    fn lengths_are_written_as_plain_digits() {
        for (length, line) in [
            (0, "content-length: 0\r\n"),
            (82, "content-length: 82\r\n"),
            (u64::MAX, "content-length: 18446744073709551615\r\n"),
        ] {
            let mut out = Vec::new();
            write_length(&mut out, length);
            assert_eq!(String::from_utf8(out).unwrap(), line);
        }
    }

    #[test]
    fn via_reveals_loops() {
        let via = ["1.1 edge", "1.1 fig-router-a"];
        assert!(has_passed(via.into_iter(), "fig-router-a"));
        assert!(!has_passed(via.into_iter(), "fig-router-b"));
        assert!(!has_passed(std::iter::empty(), "fig-router-a"));
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
            "/a%+1",
            "/a%-1",
            "/a% 1",
        ] {
            assert_eq!(decoded_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn request_targets_reduce_to_a_decoded_path() {
        fn ok(t: &str) -> Result<(&str, String), TargetError> {
            routing_target(t).map(|t| (t.forwarded, t.path.into_owned()))
        }
        assert_eq!(ok("/a?b"), Ok(("/a?b", "/a".into())));
        assert_eq!(
            ok("/%63atalog/x?q=%2e%2e"),
            Ok(("/%63atalog/x?q=%2e%2e", "/catalog/x".into()))
        );
        assert_eq!(ok("http://x:1/a?b"), Ok(("/a?b", "/a".into())));
        assert_eq!(ok("http://x"), Ok(("/", "/".into())));
        assert_eq!(ok("*"), Err(TargetError::NotAPath));
        assert_eq!(ok("x/y"), Err(TargetError::NotAPath));
        assert_eq!(ok("example.com:443"), Err(TargetError::NotAPath));
        assert_eq!(ok("/a/../b"), Err(TargetError::BadPath));
        assert_eq!(ok("/a%+1"), Err(TargetError::BadPath));
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
        let started = fresh_traceparent((0, 0, 0));
        let started = std::str::from_utf8(&started).unwrap();
        assert!(valid_traceparent(started), "{started}");
        let known = fresh_traceparent((
            0x4bf9_2f35_77b3_4da6,
            0xa3ce_929d_0e0e_4736,
            0x00f0_67aa_0ba9_02b7,
        ));
        assert_eq!(
            &known,
            b"00-4bf92f3577b34da6a3ce929d0e0e4737-00f067aa0ba902b7-01"
        );
    }
}
