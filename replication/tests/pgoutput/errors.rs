//! Every way we know a message can be malformed yields the matching typed error.

use replication::pgoutput::{DecodeError, decode};

use crate::fixtures;

fn err(bytes: &[u8], streaming: bool) -> DecodeError {
    match decode(bytes, streaming) {
        Ok(message) => panic!("{bytes:02x?} decoded to {message:?}"),
        Err(e) => e,
    }
}

/// A message cut short anywhere is an error: `Truncated`, or `MissingNul` when the cut falls
/// inside a C string (its NUL is what is missing). Never a panic, never a partial message.
#[test]
fn every_strict_prefix_of_every_fixture_is_truncated() {
    let mut checked = 0;
    for fixture in fixtures::all() {
        for len in 0..fixture.bytes.len() {
            let prefix = &fixture.bytes[..len];
            match err(prefix, fixture.streaming) {
                DecodeError::Truncated {
                    needed, remaining, ..
                } => assert!(needed > remaining, "{}[..{len}]", fixture.name),
                DecodeError::MissingNul { .. } => assert!(
                    fixture.bytes[len..].contains(&0),
                    "{}[..{len}]: no NUL was cut off",
                    fixture.name
                ),
                other => panic!("{}[..{len}]: {other:?}", fixture.name),
            }
            checked += 1;
        }
    }
    assert!(checked > 500, "only {checked} prefixes");
}

#[test]
fn empty_input_is_truncated_at_the_tag() {
    assert_eq!(
        err(&[], false),
        DecodeError::Truncated {
            message: "message",
            field: "tag",
            needed: 1,
            remaining: 0,
        }
    );
}

#[test]
fn cut_inside_a_value_reports_the_field() {
    // Insert with a text cell announcing 5 bytes but carrying 2.
    let bytes = [
        b"I".as_slice(),
        &[0, 0, 0x40, 5],
        b"N",
        &[0, 1],
        b"t",
        &[0, 0, 0, 5],
        b"ha",
    ];
    assert_eq!(
        err(&bytes.concat(), false),
        DecodeError::Truncated {
            message: "Insert",
            field: "column value",
            needed: 5,
            remaining: 2,
        }
    );
}

#[test]
fn unknown_message_tags() {
    // 'b' and 'P' are protocol version 3 (two-phase) messages we never ask for; 'k' and 'w'
    // are the replication stream's own framing, which must never reach this decoder.
    for tag in [b'Z', b'b', b'P', b'K', b'r', b'p', b'k', b'w', 0, 0xff] {
        assert_eq!(
            err(&[tag, 0, 0, 0, 0], false),
            DecodeError::UnknownMessage(tag)
        );
    }
}

#[test]
fn unknown_tuple_kinds() {
    let relation: &[u8] = &[0, 0, 0x40, 5];
    let cases: [(&[&[u8]], &str, u8); 4] = [
        // Insert only carries a new tuple.
        (&[b"I", relation, b"X", &[0, 0]], "Insert", b'X'),
        (&[b"I", relation, b"K", &[0, 0]], "Insert", b'K'),
        // An old tuple must be followed by the new one.
        (
            &[b"U", relation, b"K", &[0, 0], b"O", &[0, 0]],
            "Update",
            b'O',
        ),
        // Delete only carries an old tuple.
        (&[b"D", relation, b"N", &[0, 0]], "Delete", b'N'),
    ];
    for (fields, message, tag) in cases {
        assert_eq!(
            err(&fields.concat(), false),
            DecodeError::UnknownTupleKind { message, tag }
        );
    }
}

#[test]
fn unknown_column_kind() {
    let bytes = [b"D".as_slice(), &[0, 0, 0x40, 5], b"O", &[0, 2], b"n", b"x"];
    assert_eq!(
        err(&bytes.concat(), false),
        DecodeError::UnknownColumnKind {
            message: "Delete",
            column: 1,
            tag: b'x',
        }
    );
}

#[test]
fn unknown_replica_identity() {
    let bytes = [
        b"R".as_slice(),
        &[0, 0, 0x40, 5],
        b"public\0",
        b"t\0",
        b"x",
        &[0, 0],
    ];
    assert_eq!(
        err(&bytes.concat(), false),
        DecodeError::UnknownReplicaIdentity(b'x')
    );
}

#[test]
fn invalid_utf8_names_the_field() {
    let relation = [
        b"R".as_slice(),
        &[0, 0, 0x40, 5],
        b"public\0",
        b"caf\xe9\0",
        b"d",
        &[0, 0],
    ];
    assert_eq!(
        err(&relation.concat(), false),
        DecodeError::InvalidUtf8 {
            message: "Relation",
            field: "relation name",
        }
    );
    let column = [
        b"R".as_slice(),
        &[0, 0, 0x40, 5],
        b"public\0",
        b"t\0",
        b"d",
        &[0, 1],
        &[1],
        b"\xc3\x28\0",
        &[0, 0, 0, 23],
        &[0xff; 4],
    ];
    assert_eq!(
        err(&column.concat(), false),
        DecodeError::InvalidUtf8 {
            message: "Relation",
            field: "column name",
        }
    );
    let origin = [b"O".as_slice(), &[0; 8], b"\xff\0"];
    assert_eq!(
        err(&origin.concat(), false),
        DecodeError::InvalidUtf8 {
            message: "Origin",
            field: "origin name",
        }
    );
}

#[test]
fn missing_nul_names_the_field() {
    let origin = [b"O".as_slice(), &[0; 8], b"node_a"];
    assert_eq!(
        err(&origin.concat(), false),
        DecodeError::MissingNul {
            message: "Origin",
            field: "origin name",
        }
    );
    let type_message = [b"Y".as_slice(), &[0, 0, 0x40, 1], b"public\0", b"mood"];
    assert_eq!(
        err(&type_message.concat(), false),
        DecodeError::MissingNul {
            message: "Type",
            field: "type name",
        }
    );
}

#[test]
fn trailing_bytes_after_a_complete_message() {
    for fixture in fixtures::all() {
        let mut bytes = fixture.bytes.clone();
        bytes.push(0);
        let count = match err(&bytes, fixture.streaming) {
            DecodeError::TrailingBytes { count, .. } => count,
            other => panic!("{}: {other:?}", fixture.name),
        };
        assert_eq!(count, 1, "{}", fixture.name);
    }
    // Protocol version 4 appends the abort LSN and time to StreamAbort.
    let v4_abort = [
        b"A".as_slice(),
        &[0, 0, 2, 0xe4],
        &[0, 0, 2, 0xe4],
        &[0; 16],
    ];
    assert_eq!(
        err(&v4_abort.concat(), false),
        DecodeError::TrailingBytes {
            message: "StreamAbort",
            count: 16,
        }
    );
}

/// Decoding a streamed message as if outside a block reads its xid as the relation id and then
/// runs out of step; it must fail, not produce a plausible message.
#[test]
fn streamed_truncate_decoded_without_streaming_is_an_error() {
    let streamed = fixtures::all()
        .into_iter()
        .find(|f| f.name == "streamed_truncate")
        .expect("fixture exists");
    assert!(matches!(
        err(&streamed.bytes, false),
        DecodeError::Truncated { .. } | DecodeError::TrailingBytes { .. }
    ));
}

#[test]
fn negative_counts_and_lengths() {
    let rel: &[u8] = &[0, 0, 0x40, 5];
    let cases: [(&[&[u8]], &str, &str, i64); 5] = [
        (
            &[b"I", rel, b"N", &[0xff, 0xff]],
            "Insert",
            "column count",
            -1,
        ),
        (
            &[b"I", rel, b"N", &[0, 1], b"t", &[0x80, 0, 0, 0]],
            "Insert",
            "column value",
            i64::from(i32::MIN),
        ),
        (
            &[b"R", rel, b"p\0", b"t\0", b"d", &[0x80, 0x00]],
            "Relation",
            "column count",
            -32768,
        ),
        (
            &[b"T", &[0xff, 0xff, 0xff, 0xfe], &[0]],
            "Truncate",
            "relation count",
            -2,
        ),
        (
            &[b"M", &[1], &[0; 8], b"p\0", &[0xff, 0xff, 0xff, 0xff]],
            "Message",
            "content",
            -1,
        ),
    ];
    for (fields, message, field, count) in cases {
        assert_eq!(
            err(&fields.concat(), false),
            DecodeError::BadCount {
                message,
                field,
                count,
            }
        );
    }
}

/// Counts far beyond what the message holds fail as soon as the bytes run out, without first
/// reserving room for the announced number of elements.
#[test]
fn huge_counts_are_truncated() {
    let rel: &[u8] = &[0, 0, 0x40, 5];
    let tuple = [b"I".as_slice(), rel, b"N", &[0x7f, 0xff], b"n"].concat();
    assert_eq!(
        err(&tuple, false),
        DecodeError::Truncated {
            message: "Insert",
            field: "column kind",
            needed: 1,
            remaining: 0,
        }
    );
    let truncate = [b"T".as_slice(), &[0x7f, 0xff, 0xff, 0xff], &[0], rel].concat();
    assert_eq!(
        err(&truncate, false),
        DecodeError::Truncated {
            message: "Truncate",
            field: "relation id",
            needed: 4,
            remaining: 0,
        }
    );
    let value = [
        b"I".as_slice(),
        rel,
        b"N",
        &[0, 1],
        b"b",
        &[0x7f, 0xff, 0xff, 0xff],
    ]
    .concat();
    assert_eq!(
        err(&value, false),
        DecodeError::Truncated {
            message: "Insert",
            field: "column value",
            needed: 0x7fff_ffff,
            remaining: 0,
        }
    );
}

#[test]
fn errors_read_well() {
    let e = DecodeError::Truncated {
        message: "Insert",
        field: "column value",
        needed: 5,
        remaining: 2,
    };
    assert_eq!(
        e.to_string(),
        "Insert: column value needs 5 bytes but only 2 remain"
    );
    let e = DecodeError::UnknownColumnKind {
        message: "Update",
        column: 3,
        tag: b'x',
    };
    assert_eq!(
        e.to_string(),
        "Update: column 3 has unknown kind 'x' (0x78)"
    );
    assert_eq!(
        DecodeError::UnknownReplicaIdentity(b'?').to_string(),
        "Relation: unknown replica identity '?' (0x3f)"
    );
}
