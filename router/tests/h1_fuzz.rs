//! Randomized tests of the HTTP/1.1 framing code (`router::h1`): mutated request and response
//! heads and chunked bodies never panic, and what parses keeps its promises (the head is taken
//! off the buffer and nothing else; a chunked body's end does not depend on how its bytes were
//! split). Deterministic: each case is derived from a seed printed on failure.

use bytes::BytesMut;
use router::h1::{self, ChunkedScanner, Framing, HopFields};

mod support;

use support::rng::Rng;

/// Bytes that matter to HTTP/1.1 parsers: delimiters, whitespace, controls, obs-text.
const SPECIAL: &[u8] = b"\r\n\0\t :;,=\"%/?#\x7f\x80\xff0123456789aAfFzZ-+.";

const REQUESTS: &[&str] = &[
    "GET /catalog/albums?limit=3 HTTP/1.1\r\nHost: shop\r\nX-User-Id: u1\r\n\r\n",
    "POST /orders HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\n\r\nhello",
    "POST /orders HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "GET / HTTP/1.0\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\r\n",
    "PUT http://shop/catalog/1 HTTP/1.1\r\nHost: shop\r\nContent-Length: 0, 0\r\nExpect: 100-continue\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\nHost: shop\r\nConnection: close\r\nVia: 1.1 edge\r\n\r\n",
];

const RESPONSES: &[&str] = &[
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1 204 No Content\r\n\r\n",
    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "HTTP/1.0 304 Not Modified\r\nConnection: Content-Length\r\nContent-Length: 7\r\n\r\n",
    "HTTP/1.1 404 été\r\nTransfer-Encoding: gzip\r\n\r\n",
];

const CHUNKED: &[&str] = &[
    "5\r\nhello\r\n0\r\n\r\n",
    "4;ext=1\r\nWiki\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n",
    "0\r\n\r\n",
    "a \r\n0123456789\r\n0;last\r\n\r\n",
];

/// A mutated copy of `template`: a few random edits (a byte replaced, inserted, removed; a
/// stretch duplicated; the end cut off).
fn mutate(rng: &mut Rng, template: &[u8]) -> Vec<u8> {
    let mut out = template.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        let byte = if rng.below(3) == 0 {
            rng.next() as u8
        } else {
            rng.pick(SPECIAL)
        };
        match rng.below(6) {
            0 if at < out.len() => out[at] = byte,
            1 => out.insert(at, byte),
            2 if at < out.len() => {
                out.remove(at);
            }
            3 => {
                let len = rng.below(24).min(out.len() - at);
                let stretch = out[at..at + len].to_vec();
                out.splice(at..at, stretch);
            }
            4 => out.truncate(at),
            _ => {}
        }
    }
    out
}

/// Everything the proxy asks of a parsed head.
fn exercise(head: &h1::Head) {
    let _ = (
        head.method(),
        head.target(),
        head.reason(),
        head.keep_alive(),
    );
    let hop = HopFields::of(head);
    for (name, value) in head.fields() {
        let _ = (hop.stays(name), value.len());
    }
    let _ = head.list("connection").count();
    let _ = head.get("host");
    let _ = hop.names_framing();
    let _ = router::headers::routing_target(head.target());
}

const CASES: u64 = 200_000;

#[test]
fn mutated_request_heads_never_panic_and_only_the_head_is_taken() {
    let mut parsed = 0;
    for seed in 0..CASES {
        let mut rng = Rng(seed);
        let template = rng_pick_bytes(&mut rng, REQUESTS);
        let input = mutate(&mut rng, template);
        let mut buf = BytesMut::from(&input[..]);
        let result = std::panic::catch_unwind(move || {
            let before = buf.len();
            if let Ok(Some(head)) = h1::parse_request(&mut buf) {
                exercise(&head);
                if let Ok(framing) = h1::check_request(&head) {
                    assert_eq!(Ok(framing), h1::request_framing(&head));
                    assert_ne!(
                        framing,
                        Framing::UntilClose,
                        "requests never run until close"
                    );
                }
                return Some(before - buf.len());
            }
            None
        });
        match result {
            Ok(Some(len)) => {
                parsed += 1;
                assert!(
                    input[..len].ends_with(b"\n"),
                    "seed {seed}: a head ends with its blank line: {:?}",
                    String::from_utf8_lossy(&input)
                );
            }
            Ok(None) => {}
            Err(_) => panic!("seed {seed}: {:?}", String::from_utf8_lossy(&input)),
        }
    }
    assert!(
        parsed > CASES / 10,
        "mutations too destructive: {parsed} parsed"
    );
}

#[test]
fn mutated_response_heads_never_panic() {
    let mut parsed = 0;
    for seed in 0..CASES {
        let mut rng = Rng(seed ^ 0x5EED);
        let template = rng_pick_bytes(&mut rng, RESPONSES);
        let input = mutate(&mut rng, template);
        let mut buf = BytesMut::from(&input[..]);
        let result = std::panic::catch_unwind(move || {
            let mut heads = 0;
            // A 1xx may be followed by the final answer in the same bytes.
            while let Ok(Some(head)) = h1::parse_response(&mut buf) {
                exercise(&head);
                for method in ["GET", "HEAD", "POST"] {
                    let _ = h1::response_framing(&head, method);
                }
                heads += 1;
            }
            heads
        });
        match result {
            Ok(heads) => parsed += heads,
            Err(_) => panic!("seed {seed}: {:?}", String::from_utf8_lossy(&input)),
        }
    }
    assert!(
        parsed > CASES / 10,
        "mutations too destructive: {parsed} parsed"
    );
}

#[test]
fn chunked_bodies_end_in_the_same_place_however_they_are_split() {
    for seed in 0..CASES {
        let mut rng = Rng(seed ^ 0xC4_u64 << 32);
        let template = rng_pick_bytes(&mut rng, CHUNKED);
        let mut input = mutate(&mut rng, template);
        input.extend_from_slice(b"GET /next HTTP/1.1\r\n");
        let whole = std::panic::catch_unwind(|| scan(&input, &[input.len()]));
        let Ok(whole) = whole else {
            panic!("seed {seed}: {:?}", String::from_utf8_lossy(&input));
        };
        let splits: Vec<usize> = (0..rng.below(8)).map(|_| 1 + rng.below(16)).collect();
        let pieces = std::panic::catch_unwind(|| scan(&input, &splits));
        match pieces {
            Ok(pieces) => assert_eq!(
                whole,
                pieces,
                "seed {seed}: {:?} split {splits:?}",
                String::from_utf8_lossy(&input)
            ),
            Err(_) => panic!("seed {seed}: {:?}", String::from_utf8_lossy(&input)),
        }
    }
}

/// Scans `input` in pieces of the given sizes (the last repeats): the bytes used, whether the
/// body ended, or an error.
fn scan(input: &[u8], sizes: &[usize]) -> Result<(usize, bool), ()> {
    let mut scanner = ChunkedScanner::new();
    let mut used = 0;
    let mut at = 0;
    let mut i = 0;
    while at < input.len() && !scanner.is_done() {
        let size = sizes
            .get(i)
            .or(sizes.last())
            .copied()
            .unwrap_or(input.len());
        let piece = &input[at..(at + size.max(1)).min(input.len())];
        let n = scanner.scan(piece).map_err(|_| ())?;
        assert!(n <= piece.len());
        used += n;
        at += piece.len();
        i += 1;
    }
    Ok((used, scanner.is_done()))
}

fn rng_pick_bytes(rng: &mut Rng, templates: &[&'static str]) -> &'static [u8] {
    rng.pick(templates).as_bytes()
}
