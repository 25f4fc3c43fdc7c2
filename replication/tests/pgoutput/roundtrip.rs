//! Property: decoding what the encoder wrote gives back the message, for generated messages of
//! every kind.

use bytes::Bytes;
use replication::pgoutput::*;

use crate::encode::encode;
use crate::rng::SplitMix64;

/// A random valid message and the `streaming` flag to decode it with.
pub fn arbitrary_message(rng: &mut SplitMix64) -> (LogicalMessage, bool) {
    use LogicalMessage as M;
    let streaming = rng.bool();
    let xid = streaming.then(|| rng.u32());
    let message = match rng.below(14) {
        0 => M::Begin(Begin {
            final_lsn: rng.next_u64(),
            commit_time: rng.next_u64() as i64,
            xid: rng.u32(),
        }),
        1 => M::Commit(Commit {
            flags: rng.u8(),
            commit_lsn: rng.next_u64(),
            end_lsn: rng.next_u64(),
            commit_time: rng.next_u64() as i64,
        }),
        2 => M::Origin(Origin {
            commit_lsn: rng.next_u64(),
            name: string(rng),
        }),
        3 => M::Relation(Relation {
            xid,
            id: rng.u32(),
            namespace: string(rng),
            name: string(rng),
            replica_identity: *rng.pick(&[
                ReplicaIdentity::Default,
                ReplicaIdentity::Nothing,
                ReplicaIdentity::Full,
                ReplicaIdentity::Index,
            ]),
            columns: (0..rng.below(6)).map(|_| column(rng)).collect(),
        }),
        4 => M::Type(TypeMessage {
            xid,
            id: rng.u32(),
            namespace: string(rng),
            name: string(rng),
        }),
        5 => M::Insert(Insert {
            xid,
            relation_id: rng.u32(),
            new: tuple(rng),
        }),
        6 => M::Update(Update {
            xid,
            relation_id: rng.u32(),
            old: rng.bool().then(|| old_tuple(rng)),
            new: tuple(rng),
        }),
        7 => M::Delete(Delete {
            xid,
            relation_id: rng.u32(),
            old: old_tuple(rng),
        }),
        8 => M::Truncate(Truncate {
            xid,
            options: rng.u8(),
            relation_ids: (0..rng.below(5)).map(|_| rng.u32()).collect(),
        }),
        9 => M::Message(LogicalDecodingMessage {
            xid,
            transactional: rng.bool(),
            lsn: rng.next_u64(),
            prefix: string(rng),
            content: value(rng),
        }),
        10 => M::StreamStart(StreamStart {
            xid: rng.u32(),
            first_segment: rng.bool(),
        }),
        11 => M::StreamStop,
        12 => M::StreamCommit(StreamCommit {
            xid: rng.u32(),
            flags: rng.u8(),
            commit_lsn: rng.next_u64(),
            end_lsn: rng.next_u64(),
            commit_time: rng.next_u64() as i64,
        }),
        _ => M::StreamAbort(StreamAbort {
            xid: rng.u32(),
            subxid: rng.u32(),
        }),
    };
    (message, streaming)
}

/// Short strings mixing ASCII with two- and three-byte UTF-8, never NUL.
fn string(rng: &mut SplitMix64) -> String {
    const CHARS: &[char] = &[
        'a', 'z', '_', '.', ' ', '"', 'é', 'ß', '日', '本', '\u{7f}', '\u{1}',
    ];
    (0..rng.below(9)).map(|_| *rng.pick(CHARS)).collect()
}

fn value(rng: &mut SplitMix64) -> Bytes {
    let len = rng.below(12);
    Bytes::from(rng.bytes(len))
}

fn column(rng: &mut SplitMix64) -> Column {
    Column {
        flags: rng.u8(),
        name: string(rng),
        type_oid: rng.u32(),
        type_modifier: rng.u32() as i32,
    }
}

fn tuple(rng: &mut SplitMix64) -> Tuple {
    let cells = (0..rng.below(7)).map(|_| match rng.below(4) {
        0 => Cell::Null,
        1 => Cell::UnchangedToast,
        2 => Cell::Text(value(rng)),
        _ => Cell::Binary(value(rng)),
    });
    Tuple(cells.collect())
}

fn old_tuple(rng: &mut SplitMix64) -> OldTuple {
    if rng.bool() {
        OldTuple::Key(tuple(rng))
    } else {
        OldTuple::Full(tuple(rng))
    }
}

#[test]
fn decode_inverts_encode() {
    let mut rng = SplitMix64::new(0x5eed_0fc0_ffee);
    for i in 0..20_000 {
        let (message, streaming) = arbitrary_message(&mut rng);
        let bytes = encode(&message);
        assert_eq!(
            decode(&bytes, streaming).as_ref(),
            Ok(&message),
            "case {i}: {bytes:02x?}"
        );
    }
}
