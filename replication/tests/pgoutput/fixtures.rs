//! Literal pgoutput messages and what they decode to.
//!
//! Each message is written field by field from "Logical Replication Message Formats" in the
//! PostgreSQL protocol documentation. Those marked "captured" are byte for byte what PostgreSQL
//! 15.18 sent (`pg_logical_slot_peek_binary_changes` with pgoutput) for
//!
//! ```sql
//! CREATE TYPE mood AS ENUM ('sad', 'happy');                       -- oid 16385
//! CREATE TABLE t (id int PRIMARY KEY, name text, m mood, big text); -- oid 16389
//! CREATE TABLE u (a int, b text); ALTER TABLE u REPLICA IDENTITY FULL; -- oid 16396
//! ```
//!
//! and a few changes to them, so they check our reading of the documentation against the server.
//! The others fill in what a session rarely produces on demand (origins, aborts of streamed
//! transactions, every replica identity, every cell kind in one row).

use bytes::Bytes;
use replication::pgoutput::*;

pub struct Fixture {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    pub streaming: bool,
    pub expected: LogicalMessage,
}

impl Fixture {
    /// `fields` are the message's fields in wire order, one literal per field so each can carry
    /// its own comment.
    fn new(
        name: &'static str,
        fields: &[&[u8]],
        streaming: bool,
        expected: LogicalMessage,
    ) -> Self {
        Self {
            name,
            bytes: fields.concat(),
            streaming,
            expected,
        }
    }
}

macro_rules! fixtures {
    ($($name:ident),* $(,)?) => {
        pub fn all() -> Vec<Fixture> {
            vec![$($name()),*]
        }

        /// One test per fixture, so a failure names the message.
        mod decodes {
            $(
                #[test]
                fn $name() {
                    super::super::assert_decodes(&super::$name());
                }
            )*
        }
    };
}

fixtures![
    begin,
    commit,
    origin,
    type_enum,
    relation_default_identity_with_key_column,
    relation_full_identity,
    relation_nothing_identity,
    relation_index_identity_with_multibyte_names,
    relation_without_columns,
    insert_text_and_null,
    insert_every_cell_kind,
    update_without_old_tuple,
    update_with_key_old_tuple,
    update_with_full_old_tuple,
    update_binary_with_unchanged_toast,
    delete_with_key_old_tuple,
    delete_with_full_old_tuple,
    truncate_cascade_restart_identity,
    truncate_cascade_only,
    truncate_restart_identity_only,
    message_transactional,
    message_non_transactional_empty,
    stream_start_first_segment,
    stream_start_later_segment,
    streamed_relation,
    streamed_type,
    streamed_insert_binary,
    streamed_update_with_key_old_tuple,
    streamed_delete_with_full_old_tuple,
    streamed_truncate,
    streamed_message,
    stream_stop,
    stream_commit,
    stream_abort_subtransaction,
    stream_abort_whole_transaction,
];

fn text(value: &'static str) -> Cell {
    Cell::Text(Bytes::from_static(value.as_bytes()))
}

fn binary(value: &'static [u8]) -> Cell {
    Cell::Binary(Bytes::from_static(value))
}

fn column(flags: u8, name: &str, type_oid: u32, type_modifier: i32) -> Column {
    Column {
        flags,
        name: name.to_owned(),
        type_oid,
        type_modifier,
    }
}

const INT4: u32 = 23;
const TEXT: u32 = 25;
const VARCHAR: u32 = 1043;
const MOOD: u32 = 16385;
const T: u32 = 16389;
const U: u32 = 16396;

/// Columns of table t, as its captured Relation message describes them.
fn t_columns() -> Vec<Column> {
    vec![
        column(1, "id", INT4, -1),
        column(0, "name", TEXT, -1),
        column(0, "m", MOOD, -1),
        column(0, "big", TEXT, -1),
    ]
}

/// Captured: the Begin of xid 729.
fn begin() -> Fixture {
    Fixture::new(
        "begin",
        &[
            b"B",
            &[0x00, 0x00, 0x00, 0x00, 0x01, 0x52, 0xe8, 0x80], // final LSN 0/152E880
            &[0x00, 0x03, 0x03, 0xf0, 0x4b, 0x34, 0xa1, 0x27], // commit time, µs since 2000
            &[0x00, 0x00, 0x02, 0xd9],                         // xid 729
        ],
        false,
        LogicalMessage::Begin(Begin {
            final_lsn: 0x0152_e880,
            // 2026-11-23 13:25:18.906663 UTC
            commit_time: 848_755_518_906_663,
            xid: 729,
        }),
    )
}

/// Captured: the Commit of xid 729.
fn commit() -> Fixture {
    Fixture::new(
        "commit",
        &[
            b"C",
            &[0x00],                                           // flags (unused)
            &[0x00, 0x00, 0x00, 0x00, 0x01, 0x52, 0xe8, 0x80], // commit LSN 0/152E880
            &[0x00, 0x00, 0x00, 0x00, 0x01, 0x52, 0xe8, 0xb0], // end LSN 0/152E8B0
            &[0x00, 0x03, 0x03, 0xf0, 0x4b, 0x34, 0xa1, 0x27], // commit time
        ],
        false,
        LogicalMessage::Commit(Commit {
            flags: 0,
            commit_lsn: 0x0152_e880,
            end_lsn: 0x0152_e8b0,
            commit_time: 848_755_518_906_663,
        }),
    )
}

fn origin() -> Fixture {
    Fixture::new(
        "origin",
        &[
            b"O",
            &[0x00, 0x00, 0x00, 0x07, 0x12, 0x34, 0x56, 0x78], // commit LSN 7/12345678 upstream
            b"node_a\0",                                       // origin name
        ],
        false,
        LogicalMessage::Origin(Origin {
            commit_lsn: 0x0007_1234_5678,
            name: "node_a".into(),
        }),
    )
}

/// Captured: the enum type used by t.m, sent before t's Relation.
fn type_enum() -> Fixture {
    Fixture::new(
        "type_enum",
        &[
            b"Y",
            &[0x00, 0x00, 0x40, 0x01], // type oid 16385
            b"public\0",               // namespace
            b"mood\0",                 // type name
        ],
        false,
        LogicalMessage::Type(TypeMessage {
            xid: None,
            id: MOOD,
            namespace: "public".into(),
            name: "mood".into(),
        }),
    )
}

/// Captured: table t, replica identity default (its primary key `id`).
fn relation_default_identity_with_key_column() -> Fixture {
    Fixture::new(
        "relation_default_identity_with_key_column",
        &[
            b"R",
            &[0x00, 0x00, 0x40, 0x05], // relation oid 16389
            b"public\0",               // namespace
            b"t\0",                    // relation name
            b"d",                      // replica identity: default
            &[0x00, 0x04],             // 4 columns
            &[0x01],                   // flags: key
            b"id\0",                   //   name
            &[0x00, 0x00, 0x00, 0x17], //   type oid 23 (int4)
            &[0xff, 0xff, 0xff, 0xff], //   type modifier -1
            &[0x00],                   // flags: none
            b"name\0",                 //   name
            &[0x00, 0x00, 0x00, 0x19], //   type oid 25 (text)
            &[0xff, 0xff, 0xff, 0xff], //   type modifier -1
            &[0x00],                   // flags: none
            b"m\0",                    //   name
            &[0x00, 0x00, 0x40, 0x01], //   type oid 16385 (mood)
            &[0xff, 0xff, 0xff, 0xff], //   type modifier -1
            &[0x00],                   // flags: none
            b"big\0",                  //   name
            &[0x00, 0x00, 0x00, 0x19], //   type oid 25 (text)
            &[0xff, 0xff, 0xff, 0xff], //   type modifier -1
        ],
        false,
        LogicalMessage::Relation(Relation {
            xid: None,
            id: T,
            namespace: "public".into(),
            name: "t".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: t_columns(),
        }),
    )
}

/// Captured: table u, replica identity full, where the server flags every column as key.
fn relation_full_identity() -> Fixture {
    Fixture::new(
        "relation_full_identity",
        &[
            b"R",
            &[0x00, 0x00, 0x40, 0x0c], // relation oid 16396
            b"public\0",               // namespace
            b"u\0",                    // relation name
            b"f",                      // replica identity: full
            &[0x00, 0x02],             // 2 columns
            &[0x01],                   // flags: key
            b"a\0",                    //   name
            &[0x00, 0x00, 0x00, 0x17], //   type oid 23 (int4)
            &[0xff, 0xff, 0xff, 0xff], //   type modifier -1
            &[0x01],                   // flags: key
            b"b\0",                    //   name
            &[0x00, 0x00, 0x00, 0x19], //   type oid 25 (text)
            &[0xff, 0xff, 0xff, 0xff], //   type modifier -1
        ],
        false,
        LogicalMessage::Relation(Relation {
            xid: None,
            id: U,
            namespace: "public".into(),
            name: "u".into(),
            replica_identity: ReplicaIdentity::Full,
            columns: vec![column(1, "a", INT4, -1), column(1, "b", TEXT, -1)],
        }),
    )
}

fn relation_nothing_identity() -> Fixture {
    Fixture::new(
        "relation_nothing_identity",
        &[
            b"R",
            &[0x00, 0x00, 0x50, 0x00], // relation oid 20480
            b"audit\0",                // namespace
            b"log\0",                  // relation name
            b"n",                      // replica identity: nothing
            &[0x00, 0x01],             // 1 column
            &[0x00],                   // flags: none
            b"line\0",                 //   name
            &[0x00, 0x00, 0x00, 0x19], //   type oid 25 (text)
            &[0xff, 0xff, 0xff, 0xff], //   type modifier -1
        ],
        false,
        LogicalMessage::Relation(Relation {
            xid: None,
            id: 20480,
            namespace: "audit".into(),
            name: "log".into(),
            replica_identity: ReplicaIdentity::Nothing,
            columns: vec![column(0, "line", TEXT, -1)],
        }),
    )
}

/// Replica identity using an index on (code, région); identifiers need not be ASCII.
fn relation_index_identity_with_multibyte_names() -> Fixture {
    Fixture::new(
        "relation_index_identity_with_multibyte_names",
        &[
            b"R",
            &[0x00, 0x01, 0x00, 0x00],  // relation oid 65536
            b"",                        // namespace: empty means pg_catalog
            b"\0",                      //   (its NUL)
            "caf\u{e9}s\0".as_bytes(),  // relation name "cafés"
            b"i",                       // replica identity: index
            &[0x00, 0x03],              // 3 columns
            &[0x01],                    // flags: key
            b"code\0",                  //   name
            &[0x00, 0x00, 0x04, 0x13],  //   type oid 1043 (varchar)
            &[0x00, 0x00, 0x00, 0x0e],  //   type modifier 14: varchar(10)
            &[0x00],                    // flags: none
            "\u{65e5}\0".as_bytes(),    //   name "日"
            &[0x00, 0x00, 0x00, 0x19],  //   type oid 25 (text)
            &[0xff, 0xff, 0xff, 0xff],  //   type modifier -1
            &[0x01],                    // flags: key
            "r\u{e9}gion\0".as_bytes(), //   name "région"
            &[0x00, 0x00, 0x00, 0x17],  //   type oid 23 (int4)
            &[0xff, 0xff, 0xff, 0xff],  //   type modifier -1
        ],
        false,
        LogicalMessage::Relation(Relation {
            xid: None,
            id: 65536,
            namespace: String::new(),
            name: "cafés".into(),
            replica_identity: ReplicaIdentity::Index,
            columns: vec![
                column(1, "code", VARCHAR, 14),
                column(0, "日", TEXT, -1),
                column(1, "région", INT4, -1),
            ],
        }),
    )
}

fn relation_without_columns() -> Fixture {
    Fixture::new(
        "relation_without_columns",
        &[
            b"R",
            &[0x00, 0x00, 0x50, 0x01], // relation oid 20481
            b"public\0",               // namespace
            b"empty\0",                // relation name
            b"d",                      // replica identity: default
            &[0x00, 0x00],             // 0 columns
        ],
        false,
        LogicalMessage::Relation(Relation {
            xid: None,
            id: 20481,
            namespace: "public".into(),
            name: "empty".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![],
        }),
    )
}

/// Captured: `INSERT INTO t VALUES (1, 'a', 'happy', NULL)`.
fn insert_text_and_null() -> Fixture {
    Fixture::new(
        "insert_text_and_null",
        &[
            b"I",
            &[0x00, 0x00, 0x40, 0x05], // relation oid 16389
            b"N",                      // new tuple
            &[0x00, 0x04],             // 4 columns
            b"t",                      // text
            &[0x00, 0x00, 0x00, 0x01], //   length 1
            b"1",                      //   id
            b"t",                      // text
            &[0x00, 0x00, 0x00, 0x01], //   length 1
            b"a",                      //   name
            b"t",                      // text
            &[0x00, 0x00, 0x00, 0x05], //   length 5
            b"happy",                  //   m
            b"n",                      // null: big
        ],
        false,
        LogicalMessage::Insert(Insert {
            xid: None,
            relation_id: T,
            new: Tuple(vec![text("1"), text("a"), text("happy"), Cell::Null]),
        }),
    )
}

fn insert_every_cell_kind() -> Fixture {
    Fixture::new(
        "insert_every_cell_kind",
        &[
            b"I",
            &[0x00, 0x00, 0x40, 0x05], // relation oid 16389
            b"N",                      // new tuple
            &[0x00, 0x05],             // 5 columns
            b"n",                      // null
            b"u",                      // unchanged TOAST
            b"t",                      // text
            &[0x00, 0x00, 0x00, 0x02], //   length 2
            b"42",                     //   value
            b"b",                      // binary
            &[0x00, 0x00, 0x00, 0x04], //   length 4
            &[0x00, 0x00, 0x00, 0x2a], //   int4 42 in send format
            b"t",                      // text
            &[0x00, 0x00, 0x00, 0x00], //   length 0: the empty string, not null
        ],
        false,
        LogicalMessage::Insert(Insert {
            xid: None,
            relation_id: T,
            new: Tuple(vec![
                Cell::Null,
                Cell::UnchangedToast,
                text("42"),
                binary(&[0, 0, 0, 42]),
                text(""),
            ]),
        }),
    )
}

/// Captured: `UPDATE t SET name = 'b' WHERE id = 1`: the key did not change, so no old tuple.
fn update_without_old_tuple() -> Fixture {
    Fixture::new(
        "update_without_old_tuple",
        &[
            b"U",
            &[0x00, 0x00, 0x40, 0x05], // relation oid 16389
            b"N",                      // new tuple
            &[0x00, 0x04],             // 4 columns
            b"t",                      // text
            &[0x00, 0x00, 0x00, 0x01], //   length 1
            b"1",                      //   id
            b"t",                      // text
            &[0x00, 0x00, 0x00, 0x01], //   length 1
            b"b",                      //   name
            b"t",                      // text
            &[0x00, 0x00, 0x00, 0x05], //   length 5
            b"happy",                  //   m
            b"n",                      // null: big
        ],
        false,
        LogicalMessage::Update(Update {
            xid: None,
            relation_id: T,
            old: None,
            new: Tuple(vec![text("1"), text("b"), text("happy"), Cell::Null]),
        }),
    )
}

/// Captured: `UPDATE t SET id = 2 WHERE id = 1`: the key changed, so the old key comes first.
fn update_with_key_old_tuple() -> Fixture {
    Fixture::new(
        "update_with_key_old_tuple",
        &[
            b"U",
            &[0x00, 0x00, 0x40, 0x05], // relation oid 16389
            b"K",                      // old key tuple
            &[0x00, 0x04],             // 4 columns
            b"t",                      // text
            &[0x00, 0x00, 0x00, 0x01], //   length 1
            b"1",                      //   old id
            b"n",                      // null: not part of the key
            b"n",                      // null: not part of the key
            b"n",                      // null: not part of the key
            b"N",                      // new tuple
            &[0x00, 0x04],             // 4 columns
            b"t",                      // text
            &[0x00, 0x00, 0x00, 0x01], //   length 1
            b"2",                      //   id
            b"t",                      // text
            &[0x00, 0x00, 0x00, 0x01], //   length 1
            b"b",                      //   name
            b"t",                      // text
            &[0x00, 0x00, 0x00, 0x05], //   length 5
            b"happy",                  //   m
            b"n",                      // null: big
        ],
        false,
        LogicalMessage::Update(Update {
            xid: None,
            relation_id: T,
            old: Some(OldTuple::Key(Tuple(vec![
                text("1"),
                Cell::Null,
                Cell::Null,
                Cell::Null,
            ]))),
            new: Tuple(vec![text("2"), text("b"), text("happy"), Cell::Null]),
        }),
    )
}

/// Captured: `UPDATE u SET b = 'y'` with replica identity full.
fn update_with_full_old_tuple() -> Fixture {
    Fixture::new(
        "update_with_full_old_tuple",
        &[
            b"U",
            &[0x00, 0x00, 0x40, 0x0c], // relation oid 16396
            b"O",                      // old full tuple
            &[0x00, 0x02],             // 2 columns
            b"t",                      // text
            &[0x00, 0x00, 0x00, 0x01], //   length 1
            b"7",                      //   a
            b"t",                      // text
            &[0x00, 0x00, 0x00, 0x01], //   length 1
            b"x",                      //   old b
            b"N",                      // new tuple
            &[0x00, 0x02],             // 2 columns
            b"t",                      // text
            &[0x00, 0x00, 0x00, 0x01], //   length 1
            b"7",                      //   a
            b"t",                      // text
            &[0x00, 0x00, 0x00, 0x01], //   length 1
            b"y",                      //   new b
        ],
        false,
        LogicalMessage::Update(Update {
            xid: None,
            relation_id: U,
            old: Some(OldTuple::Full(Tuple(vec![text("7"), text("x")]))),
            new: Tuple(vec![text("7"), text("y")]),
        }),
    )
}

/// Captured with the `binary` option: `UPDATE t SET name = 'z' WHERE id = 5` where `big` is a
/// TOASTed value the server does not resend.
fn update_binary_with_unchanged_toast() -> Fixture {
    Fixture::new(
        "update_binary_with_unchanged_toast",
        &[
            b"U",
            &[0x00, 0x00, 0x40, 0x05], // relation oid 16389
            b"N",                      // new tuple
            &[0x00, 0x04],             // 4 columns
            b"b",                      // binary
            &[0x00, 0x00, 0x00, 0x04], //   length 4
            &[0x00, 0x00, 0x00, 0x05], //   id: int4 5
            b"b",                      // binary
            &[0x00, 0x00, 0x00, 0x01], //   length 1
            b"z",                      //   name
            b"b",                      // binary
            &[0x00, 0x00, 0x00, 0x03], //   length 3
            b"sad",                    //   m: enums send their label
            b"u",                      // unchanged TOAST: big
        ],
        false,
        LogicalMessage::Update(Update {
            xid: None,
            relation_id: T,
            old: None,
            new: Tuple(vec![
                binary(&[0, 0, 0, 5]),
                binary(b"z"),
                binary(b"sad"),
                Cell::UnchangedToast,
            ]),
        }),
    )
}

/// Captured: `DELETE FROM t WHERE id = 2`.
fn delete_with_key_old_tuple() -> Fixture {
    Fixture::new(
        "delete_with_key_old_tuple",
        &[
            b"D",
            &[0x00, 0x00, 0x40, 0x05], // relation oid 16389
            b"K",                      // old key tuple
            &[0x00, 0x04],             // 4 columns
            b"t",                      // text
            &[0x00, 0x00, 0x00, 0x01], //   length 1
            b"2",                      //   id
            b"n",                      // null: not part of the key
            b"n",                      // null: not part of the key
            b"n",                      // null: not part of the key
        ],
        false,
        LogicalMessage::Delete(Delete {
            xid: None,
            relation_id: T,
            old: OldTuple::Key(Tuple(vec![text("2"), Cell::Null, Cell::Null, Cell::Null])),
        }),
    )
}

/// Captured: `DELETE FROM u` with replica identity full.
fn delete_with_full_old_tuple() -> Fixture {
    Fixture::new(
        "delete_with_full_old_tuple",
        &[
            b"D",
            &[0x00, 0x00, 0x40, 0x0c], // relation oid 16396
            b"O",                      // old full tuple
            &[0x00, 0x02],             // 2 columns
            b"t",                      // text
            &[0x00, 0x00, 0x00, 0x01], //   length 1
            b"7",                      //   a
            b"t",                      // text
            &[0x00, 0x00, 0x00, 0x01], //   length 1
            b"y",                      //   b
        ],
        false,
        LogicalMessage::Delete(Delete {
            xid: None,
            relation_id: U,
            old: OldTuple::Full(Tuple(vec![text("7"), text("y")])),
        }),
    )
}

/// Captured: `TRUNCATE t, u RESTART IDENTITY CASCADE`.
fn truncate_cascade_restart_identity() -> Fixture {
    Fixture::new(
        "truncate_cascade_restart_identity",
        &[
            b"T",
            &[0x00, 0x00, 0x00, 0x02], // 2 relations
            &[0x03],                   // options: CASCADE | RESTART IDENTITY
            &[0x00, 0x00, 0x40, 0x05], // relation oid 16389
            &[0x00, 0x00, 0x40, 0x0c], // relation oid 16396
        ],
        false,
        LogicalMessage::Truncate(Truncate {
            xid: None,
            options: 3,
            relation_ids: vec![T, U],
        }),
    )
}

fn truncate_cascade_only() -> Fixture {
    Fixture::new(
        "truncate_cascade_only",
        &[
            b"T",
            &[0x00, 0x00, 0x00, 0x03], // 3 relations
            &[0x01],                   // options: CASCADE
            &[0x00, 0x00, 0x40, 0x05], // relation oid 16389
            &[0x00, 0x00, 0x40, 0x0c], // relation oid 16396
            &[0xff, 0xff, 0xff, 0xfe], // relation oid 4294967294: oids are unsigned
        ],
        false,
        LogicalMessage::Truncate(Truncate {
            xid: None,
            options: Truncate::CASCADE,
            relation_ids: vec![T, U, 4_294_967_294],
        }),
    )
}

fn truncate_restart_identity_only() -> Fixture {
    Fixture::new(
        "truncate_restart_identity_only",
        &[
            b"T",
            &[0x00, 0x00, 0x00, 0x01], // 1 relation
            &[0x02],                   // options: RESTART IDENTITY
            &[0x00, 0x00, 0x40, 0x05], // relation oid 16389
        ],
        false,
        LogicalMessage::Truncate(Truncate {
            xid: None,
            options: Truncate::RESTART_IDENTITY,
            relation_ids: vec![T],
        }),
    )
}

/// Captured: `SELECT pg_logical_emit_message(true, 'pfx', 'hello')`.
fn message_transactional() -> Fixture {
    Fixture::new(
        "message_transactional",
        &[
            b"M",
            &[0x01],                                           // flags: transactional
            &[0x00, 0x00, 0x00, 0x00, 0x01, 0x53, 0x02, 0x18], // LSN 0/1530218
            b"pfx\0",                                          // prefix
            &[0x00, 0x00, 0x00, 0x05],                         // content length 5
            b"hello",                                          // content
        ],
        false,
        LogicalMessage::Message(LogicalDecodingMessage {
            xid: None,
            transactional: true,
            lsn: 0x0153_0218,
            prefix: "pfx".into(),
            content: Bytes::from_static(b"hello"),
        }),
    )
}

fn message_non_transactional_empty() -> Fixture {
    Fixture::new(
        "message_non_transactional_empty",
        &[
            b"M",
            &[0x00],                                           // flags: none
            &[0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00], // LSN 1/0
            b"cdc.heartbeat\0",                                // prefix
            &[0x00, 0x00, 0x00, 0x00],                         // content length 0
        ],
        false,
        LogicalMessage::Message(LogicalDecodingMessage {
            xid: None,
            transactional: false,
            lsn: 0x0001_0000_0000,
            prefix: "cdc.heartbeat".into(),
            content: Bytes::new(),
        }),
    )
}

/// Captured: the first block of xid 740, streamed once it outgrew `logical_decoding_work_mem`.
fn stream_start_first_segment() -> Fixture {
    Fixture::new(
        "stream_start_first_segment",
        &[
            b"S",
            &[0x00, 0x00, 0x02, 0xe4], // xid 740
            &[0x01],                   // first segment
        ],
        false,
        LogicalMessage::StreamStart(StreamStart {
            xid: 740,
            first_segment: true,
        }),
    )
}

/// Captured: a later block of xid 740.
fn stream_start_later_segment() -> Fixture {
    Fixture::new(
        "stream_start_later_segment",
        &[
            b"S",
            &[0x00, 0x00, 0x02, 0xe4], // xid 740
            &[0x00],                   // not the first segment
        ],
        false,
        LogicalMessage::StreamStart(StreamStart {
            xid: 740,
            first_segment: false,
        }),
    )
}

/// Captured: u's Relation inside the first block of xid 740.
fn streamed_relation() -> Fixture {
    Fixture::new(
        "streamed_relation",
        &[
            b"R",
            &[0x00, 0x00, 0x02, 0xe4], // xid 740
            &[0x00, 0x00, 0x40, 0x0c], // relation oid 16396
            b"public\0",               // namespace
            b"u\0",                    // relation name
            b"f",                      // replica identity: full
            &[0x00, 0x02],             // 2 columns
            &[0x01],                   // flags: key
            b"a\0",                    //   name
            &[0x00, 0x00, 0x00, 0x17], //   type oid 23 (int4)
            &[0xff, 0xff, 0xff, 0xff], //   type modifier -1
            &[0x01],                   // flags: key
            b"b\0",                    //   name
            &[0x00, 0x00, 0x00, 0x19], //   type oid 25 (text)
            &[0xff, 0xff, 0xff, 0xff], //   type modifier -1
        ],
        true,
        LogicalMessage::Relation(Relation {
            xid: Some(740),
            id: U,
            namespace: "public".into(),
            name: "u".into(),
            replica_identity: ReplicaIdentity::Full,
            columns: vec![column(1, "a", INT4, -1), column(1, "b", TEXT, -1)],
        }),
    )
}

fn streamed_type() -> Fixture {
    Fixture::new(
        "streamed_type",
        &[
            b"Y",
            &[0x00, 0x00, 0x02, 0xe4], // xid 740
            &[0x00, 0x00, 0x40, 0x01], // type oid 16385
            b"public\0",               // namespace
            b"mood\0",                 // type name
        ],
        true,
        LogicalMessage::Type(TypeMessage {
            xid: Some(740),
            id: MOOD,
            namespace: "public".into(),
            name: "mood".into(),
        }),
    )
}

/// The shape captured in xid 740's stream with the `binary` option; the 100-byte value is
/// shortened to 3.
fn streamed_insert_binary() -> Fixture {
    Fixture::new(
        "streamed_insert_binary",
        &[
            b"I",
            &[0x00, 0x00, 0x02, 0xe4], // xid 740
            &[0x00, 0x00, 0x40, 0x0c], // relation oid 16396
            b"N",                      // new tuple
            &[0x00, 0x02],             // 2 columns
            b"b",                      // binary
            &[0x00, 0x00, 0x00, 0x04], //   length 4
            &[0x00, 0x00, 0x00, 0x01], //   a: int4 1
            b"b",                      // binary
            &[0x00, 0x00, 0x00, 0x03], //   length 3
            b"xxx",                    //   b
        ],
        true,
        LogicalMessage::Insert(Insert {
            xid: Some(740),
            relation_id: U,
            new: Tuple(vec![binary(&[0, 0, 0, 1]), binary(b"xxx")]),
        }),
    )
}

fn streamed_update_with_key_old_tuple() -> Fixture {
    Fixture::new(
        "streamed_update_with_key_old_tuple",
        &[
            b"U",
            &[0x00, 0x00, 0x02, 0xe4], // xid 740
            &[0x00, 0x00, 0x40, 0x05], // relation oid 16389
            b"K",                      // old key tuple
            &[0x00, 0x02],             // 2 columns
            b"t",                      // text
            &[0x00, 0x00, 0x00, 0x01], //   length 1
            b"1",                      //   old id
            b"n",                      // null: not part of the key
            b"N",                      // new tuple
            &[0x00, 0x02],             // 2 columns
            b"t",                      // text
            &[0x00, 0x00, 0x00, 0x01], //   length 1
            b"2",                      //   id
            b"u",                      // unchanged TOAST
        ],
        true,
        LogicalMessage::Update(Update {
            xid: Some(740),
            relation_id: T,
            old: Some(OldTuple::Key(Tuple(vec![text("1"), Cell::Null]))),
            new: Tuple(vec![text("2"), Cell::UnchangedToast]),
        }),
    )
}

fn streamed_delete_with_full_old_tuple() -> Fixture {
    Fixture::new(
        "streamed_delete_with_full_old_tuple",
        &[
            b"D",
            &[0x00, 0x00, 0x02, 0xe4], // xid 740
            &[0x00, 0x00, 0x40, 0x0c], // relation oid 16396
            b"O",                      // old full tuple
            &[0x00, 0x02],             // 2 columns
            b"t",                      // text
            &[0x00, 0x00, 0x00, 0x01], //   length 1
            b"7",                      //   a
            b"n",                      // null: b
        ],
        true,
        LogicalMessage::Delete(Delete {
            xid: Some(740),
            relation_id: U,
            old: OldTuple::Full(Tuple(vec![text("7"), Cell::Null])),
        }),
    )
}

fn streamed_truncate() -> Fixture {
    Fixture::new(
        "streamed_truncate",
        &[
            b"T",
            &[0x00, 0x00, 0x02, 0xe4], // xid 740
            &[0x00, 0x00, 0x00, 0x02], // 2 relations
            &[0x03],                   // options: CASCADE | RESTART IDENTITY
            &[0x00, 0x00, 0x40, 0x05], // relation oid 16389
            &[0x00, 0x00, 0x40, 0x0c], // relation oid 16396
        ],
        true,
        LogicalMessage::Truncate(Truncate {
            xid: Some(740),
            options: 3,
            relation_ids: vec![T, U],
        }),
    )
}

fn streamed_message() -> Fixture {
    Fixture::new(
        "streamed_message",
        &[
            b"M",
            &[0x00, 0x00, 0x02, 0xe4],                         // xid 740
            &[0x01],                                           // flags: transactional
            &[0x00, 0x00, 0x00, 0x00, 0x01, 0x53, 0x3b, 0x00], // LSN 0/1533B00
            b"app\0",                                          // prefix
            &[0x00, 0x00, 0x00, 0x03],                         // content length 3
            &[0x00, 0xff, 0x0a],                               // content: any bytes
        ],
        true,
        LogicalMessage::Message(LogicalDecodingMessage {
            xid: Some(740),
            transactional: true,
            lsn: 0x0153_3b00,
            prefix: "app".into(),
            content: Bytes::from_static(&[0x00, 0xff, 0x0a]),
        }),
    )
}

/// Captured: the end of each block of xid 740. Decoded the same inside or outside a block.
fn stream_stop() -> Fixture {
    Fixture::new("stream_stop", &[b"E"], true, LogicalMessage::StreamStop)
}

/// Captured: the commit of streamed xid 740.
fn stream_commit() -> Fixture {
    Fixture::new(
        "stream_commit",
        &[
            b"c",
            &[0x00, 0x00, 0x02, 0xe4],                         // xid 740
            &[0x00],                                           // flags (unused)
            &[0x00, 0x00, 0x00, 0x00, 0x01, 0x55, 0xad, 0xd8], // commit LSN 0/155ADD8
            &[0x00, 0x00, 0x00, 0x00, 0x01, 0x55, 0xae, 0x08], // end LSN 0/155AE08
            &[0x00, 0x03, 0x03, 0xf0, 0x4b, 0x89, 0xfa, 0xc8], // commit time
        ],
        false,
        LogicalMessage::StreamCommit(StreamCommit {
            xid: 740,
            flags: 0,
            commit_lsn: 0x0155_add8,
            end_lsn: 0x0155_ae08,
            // 2026-11-23 13:25:24.500168 UTC
            commit_time: 848_755_524_500_168,
        }),
    )
}

fn stream_abort_subtransaction() -> Fixture {
    Fixture::new(
        "stream_abort_subtransaction",
        &[
            b"A",
            &[0x00, 0x00, 0x02, 0xe4], // xid 740
            &[0x00, 0x00, 0x02, 0xe5], // subtransaction xid 741
        ],
        false,
        LogicalMessage::StreamAbort(StreamAbort {
            xid: 740,
            subxid: 741,
        }),
    )
}

fn stream_abort_whole_transaction() -> Fixture {
    Fixture::new(
        "stream_abort_whole_transaction",
        &[
            b"A",
            &[0x00, 0x00, 0x02, 0xe4], // xid 740
            &[0x00, 0x00, 0x02, 0xe4], // subtransaction xid 740: the top level itself
        ],
        true,
        LogicalMessage::StreamAbort(StreamAbort {
            xid: 740,
            subxid: 740,
        }),
    )
}
