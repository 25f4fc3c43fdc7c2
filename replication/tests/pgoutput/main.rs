//! Tests of the pgoutput decoder: literal fixtures, every malformation we can name, a
//! deterministic fuzzer and an encode/decode round trip.

mod encode;
mod errors;
mod fixtures;
mod fuzz;
mod rng;
mod roundtrip;

use bytes::Bytes;
use replication::pgoutput::{Cell, LogicalMessage, decode, decode_bytes};

use crate::fixtures::Fixture;

/// Checks a fixture through both entry points and, for messages that carry no stream xid, with
/// either `streaming` flag: a control message must not care whether it is inside a block.
fn assert_decodes(fixture: &Fixture) {
    let Fixture {
        name,
        bytes,
        streaming,
        expected,
    } = fixture;
    assert_eq!(decode(bytes, *streaming).as_ref(), Ok(expected), "{name}");
    assert_eq!(
        decode_bytes(Bytes::copy_from_slice(bytes), *streaming).as_ref(),
        Ok(expected),
        "{name} via decode_bytes"
    );
    if !has_stream_xid(expected) {
        assert_eq!(
            decode(bytes, !*streaming).as_ref(),
            Ok(expected),
            "{name} with streaming = {}",
            !*streaming
        );
    }
}

fn has_stream_xid(message: &LogicalMessage) -> bool {
    use LogicalMessage as M;
    matches!(
        message,
        M::Relation(_)
            | M::Type(_)
            | M::Insert(_)
            | M::Update(_)
            | M::Delete(_)
            | M::Truncate(_)
            | M::Message(_)
    )
}

#[test]
fn every_message_type_has_a_fixture() {
    use LogicalMessage as M;
    let all = fixtures::all();
    let has = |pred: fn(&LogicalMessage) -> bool| all.iter().any(|f| pred(&f.expected));
    assert!(has(|m| matches!(m, M::Begin(_))));
    assert!(has(|m| matches!(m, M::Commit(_))));
    assert!(has(|m| matches!(m, M::Origin(_))));
    assert!(has(|m| matches!(m, M::Relation(_))));
    assert!(has(|m| matches!(m, M::Type(_))));
    assert!(has(|m| matches!(m, M::Insert(_))));
    assert!(has(|m| matches!(m, M::Update(_))));
    assert!(has(|m| matches!(m, M::Delete(_))));
    assert!(has(|m| matches!(m, M::Truncate(_))));
    assert!(has(|m| matches!(m, M::Message(_))));
    assert!(has(|m| matches!(m, M::StreamStart(_))));
    assert!(has(|m| matches!(m, M::StreamStop)));
    assert!(has(|m| matches!(m, M::StreamCommit(_))));
    assert!(has(|m| matches!(m, M::StreamAbort(_))));
    let streamed = all
        .iter()
        .filter(|f| f.streaming && has_stream_xid(&f.expected));
    assert_eq!(streamed.count(), 7, "one streamed fixture per data message");
}

#[test]
fn fixture_names_match_their_functions() {
    let mut names: Vec<_> = fixtures::all().iter().map(|f| f.name).collect();
    let count = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), count, "fixture names are unique");
}

/// The test encoder agrees byte for byte with every hand-written fixture, so round trips through
/// it test the decoder against the documented layout rather than against itself.
#[test]
fn encoder_reproduces_every_fixture() {
    for fixture in fixtures::all() {
        assert_eq!(
            encode::encode(&fixture.expected),
            fixture.bytes,
            "{}",
            fixture.name
        );
    }
}

/// The engine decodes millions of rows: column values must be slices of the input, not copies.
#[test]
fn decode_bytes_slices_cells_out_of_the_input() {
    let fixture = fixtures::all()
        .into_iter()
        .find(|f| f.name == "insert_every_cell_kind")
        .expect("fixture exists");
    let input = Bytes::from(fixture.bytes);
    let range = input.as_ptr_range();
    let Ok(LogicalMessage::Insert(insert)) = decode_bytes(input.clone(), false) else {
        panic!("insert decodes");
    };
    let values: Vec<&Bytes> = insert
        .new
        .0
        .iter()
        .filter_map(|cell| match cell {
            Cell::Text(v) | Cell::Binary(v) => Some(v),
            Cell::Null | Cell::UnchangedToast => None,
        })
        .filter(|v| !v.is_empty())
        .collect();
    assert_eq!(values.len(), 2);
    for value in values {
        assert!(range.contains(&value.as_ptr()), "{value:?} was copied");
    }
}

#[test]
fn helpers_read_flag_bits() {
    use replication::pgoutput::{Column, Truncate};
    let truncate = |options| Truncate {
        xid: None,
        options,
        relation_ids: vec![],
    };
    assert!(!truncate(0).cascade() && !truncate(0).restart_identity());
    assert!(truncate(1).cascade() && !truncate(1).restart_identity());
    assert!(!truncate(2).cascade() && truncate(2).restart_identity());
    assert!(truncate(3).cascade() && truncate(3).restart_identity());
    let column = |flags| Column {
        flags,
        name: "c".into(),
        type_oid: 25,
        type_modifier: -1,
    };
    assert!(column(1).is_key());
    assert!(!column(0).is_key());
    assert!(!column(2).is_key());
}
