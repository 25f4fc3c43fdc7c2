//! A deterministic fuzzer: mutated fixtures, mutated generated messages and plain noise must
//! each decode to a message or a typed error, never panic.
//!
//! Seeded, so a failure reproduces on every run; the offending input is printed in hex.

use std::panic;

use replication::pgoutput::{DecodeError, LogicalMessage, decode};

use crate::encode::encode;
use crate::fixtures;
use crate::rng::SplitMix64;
use crate::roundtrip::arbitrary_message;

const INPUTS: usize = 200_000;
const SEED: u64 = 0x7067_6f75_7470_7574; // "pgoutput"

/// Every tag the decoder knows, so noise reaches the message bodies instead of stopping at
/// `UnknownMessage`.
const TAGS: &[u8] = b"BCORYIUDTMSEcA";

#[derive(Default)]
struct Tally {
    ok: usize,
    err: usize,
}

#[test]
fn decode_never_panics() {
    let mut rng = SplitMix64::new(SEED);
    let seeds = seed_corpus(&mut rng);
    let mut tally = Tally::default();
    for i in 0..INPUTS {
        let (input, streaming) = if i % 8 == 0 {
            (noise(&mut rng), rng.bool())
        } else {
            let (seed, streaming) = rng.pick(&seeds);
            let donor = &rng.pick(&seeds).0;
            // Mostly keep the seed's own flag; sometimes flip it to misread the xid.
            let streaming = if rng.one_in(8) {
                !streaming
            } else {
                *streaming
            };
            (mutate(&mut rng, seed, donor), streaming)
        };
        check(&input, streaming, &mut tally);
    }
    eprintln!(
        "{INPUTS} inputs: {} decoded, {} rejected",
        tally.ok, tally.err
    );
    // Mutations that leave a message valid are common enough to reach the whole decoder, yet
    // most inputs are malformed: otherwise the mutator is too timid or too destructive.
    assert!(tally.ok > INPUTS / 50, "only {} inputs decoded", tally.ok);
    assert!(tally.err > INPUTS / 2, "only {} inputs rejected", tally.err);
}

fn check(input: &[u8], streaming: bool, tally: &mut Tally) {
    match panic::catch_unwind(|| decode(input, streaming)) {
        Ok(Ok(message)) => {
            assert_reencodes(input, streaming, &message);
            tally.ok += 1;
        }
        Ok(Err(error)) => {
            // Displaying must not panic either, and every error says something.
            assert!(!error.to_string().is_empty());
            assert_bounded(input, &error);
            tally.err += 1;
        }
        Err(_) => panic!(
            "decode panicked on streaming={streaming} input {}",
            hex(input)
        ),
    }
}

/// Whatever decoded is a message the encoder can write back, and that decodes to itself.
/// (Not byte-identical to the input: flag bytes such as first_segment normalise to 0/1.)
fn assert_reencodes(input: &[u8], streaming: bool, message: &LogicalMessage) {
    let again = decode(&encode(message), streaming);
    assert_eq!(
        again.as_ref(),
        Ok(message),
        "re-encoding changed the message decoded from {}",
        hex(input)
    );
}

/// Errors describe the input: nothing claims more bytes remained than the input had.
fn assert_bounded(input: &[u8], error: &DecodeError) {
    match error {
        DecodeError::Truncated {
            needed, remaining, ..
        } => assert!(
            needed > remaining && *remaining < input.len().max(1),
            "{error:?} on {}",
            hex(input)
        ),
        DecodeError::TrailingBytes { count, .. } => {
            assert!(
                *count > 0 && *count < input.len(),
                "{error:?} on {}",
                hex(input)
            )
        }
        _ => {}
    }
}

/// The fixtures plus generated messages of every kind, each with its streaming flag.
fn seed_corpus(rng: &mut SplitMix64) -> Vec<(Vec<u8>, bool)> {
    let fixtures = fixtures::all().into_iter().map(|f| (f.bytes, f.streaming));
    let generated = (0..200).map(|_| {
        let (message, streaming) = arbitrary_message(rng);
        (encode(&message), streaming)
    });
    fixtures.chain(generated).collect()
}

fn noise(rng: &mut SplitMix64) -> Vec<u8> {
    let len = rng.below(48);
    let mut bytes = rng.bytes(len);
    if let Some(first) = bytes.first_mut().filter(|_| rng.bool()) {
        *first = *rng.pick(TAGS);
    }
    bytes
}

/// One to three stacked mutations of `seed`; `donor` is another seed to splice from.
fn mutate(rng: &mut SplitMix64, seed: &[u8], donor: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..rng.between(1, 3) {
        match rng.below(9) {
            0 => flip_bits(rng, &mut bytes),
            1 => insert_bytes(rng, &mut bytes),
            2 => delete_range(rng, &mut bytes),
            3 => bytes.truncate(rng.below(bytes.len() + 1)),
            4 => bytes = splice(rng, &bytes, donor),
            5 => huge_count(rng, &mut bytes),
            6 => duplicate_range(rng, &mut bytes),
            7 => retag(rng, &mut bytes),
            _ => overwrite_byte(rng, &mut bytes),
        }
    }
    bytes
}

fn flip_bits(rng: &mut SplitMix64, bytes: &mut [u8]) {
    if bytes.is_empty() {
        return;
    }
    for _ in 0..rng.between(1, 4) {
        let at = rng.below(bytes.len());
        bytes[at] ^= 1 << rng.below(8);
    }
}

fn insert_bytes(rng: &mut SplitMix64, bytes: &mut Vec<u8>) {
    let at = rng.below(bytes.len() + 1);
    let len = rng.between(1, 4);
    let new = rng.bytes(len);
    bytes.splice(at..at, new);
}

fn delete_range(rng: &mut SplitMix64, bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        return;
    }
    let at = rng.below(bytes.len());
    let len = rng.between(1, 4).min(bytes.len() - at);
    bytes.drain(at..at + len);
}

/// The head of one message on the tail of another: right tags with wrong bodies and vice versa.
fn splice(rng: &mut SplitMix64, head: &[u8], tail: &[u8]) -> Vec<u8> {
    let cut_head = rng.below(head.len() + 1);
    let cut_tail = rng.below(tail.len() + 1);
    [&head[..cut_head], &tail[cut_tail..]].concat()
}

/// Overwrites two or four bytes with a value that is absurd as a count or length: huge,
/// negative or just past the end.
fn huge_count(rng: &mut SplitMix64, bytes: &mut [u8]) {
    const WIDE: &[[u8; 4]] = &[
        [0x7f, 0xff, 0xff, 0xff],
        [0x80, 0x00, 0x00, 0x00],
        [0xff, 0xff, 0xff, 0xff],
        [0x00, 0x01, 0x00, 0x00],
        [0x00, 0x00, 0x00, 0x40],
    ];
    const NARROW: &[[u8; 2]] = &[[0x7f, 0xff], [0x80, 0x00], [0xff, 0xff], [0x01, 0x00]];
    if rng.bool() && bytes.len() >= 4 {
        let at = rng.below(bytes.len() - 3);
        bytes[at..at + 4].copy_from_slice(&rng.pick(WIDE)[..]);
    } else if bytes.len() >= 2 {
        let at = rng.below(bytes.len() - 1);
        bytes[at..at + 2].copy_from_slice(&rng.pick(NARROW)[..]);
    }
}

fn duplicate_range(rng: &mut SplitMix64, bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        return;
    }
    let at = rng.below(bytes.len());
    let len = rng.between(1, 8).min(bytes.len() - at);
    let copy = bytes[at..at + len].to_vec();
    bytes.splice(at..at, copy);
}

fn retag(rng: &mut SplitMix64, bytes: &mut [u8]) {
    if let Some(tag) = bytes.first_mut() {
        *tag = *rng.pick(TAGS);
    }
}

/// Bytes the grammar gives meaning to: tuple and cell kinds, replica identities, NUL.
fn overwrite_byte(rng: &mut SplitMix64, bytes: &mut [u8]) {
    const MEANINGFUL: &[u8] = b"NKOnutbdfix\0\x01\xff";
    if !bytes.is_empty() {
        let at = rng.below(bytes.len());
        bytes[at] = *rng.pick(MEANINGFUL);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
