//! Decoding of pgoutput logical replication messages: the payload of each XLogData.
//!
//! Covers protocol versions 1 and 2 (`proto_version` '1' or '2' in `START_REPLICATION`); version
//! 2 adds streaming of in-progress transactions, where every data message between StreamStart and
//! StreamStop carries the xid of its transaction, so [`decode`] needs to know whether it is inside
//! such a block. Layouts: "Logical Replication Message Formats" in the PostgreSQL protocol
//! documentation.
//!
//! Decoding is pure: no state is kept between messages. Relating Insert/Update/Delete to the
//! columns of an earlier Relation message, and tracking stream blocks, is the caller's job.
//!
//! Conventions for all message structs:
//! - LSNs are [`Lsn`] (`u64`), xids `u32`, relation and type ids are Oids (`u32`);
//! - timestamps are [`TimestampTz`]: microseconds since 2000-01-01 00:00:00 UTC, exactly as on
//!   the wire (add [`POSTGRES_EPOCH_UNIX_MICROS`] for microseconds since the Unix epoch);
//! - `xid: Option<u32>` on data messages is `Some` exactly when decoded with `streaming = true`.

mod error;
mod reader;

use bytes::Bytes;

pub use error::DecodeError;
use reader::Reader;

/// A WAL position (PostgreSQL's `XLogRecPtr`), shown by PostgreSQL as `hi/lo` in hex.
pub type Lsn = u64;

/// A PostgreSQL `TimestampTz` as sent on the wire: microseconds since 2000-01-01 00:00:00 UTC.
pub type TimestampTz = i64;

/// 2000-01-01 00:00:00 UTC in microseconds since the Unix epoch: add it to a [`TimestampTz`] to
/// get Unix microseconds.
pub const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogicalMessage {
    Begin(Begin),
    Commit(Commit),
    Origin(Origin),
    Relation(Relation),
    Type(TypeMessage),
    Insert(Insert),
    Update(Update),
    Delete(Delete),
    Truncate(Truncate),
    Message(LogicalDecodingMessage),
    StreamStart(StreamStart),
    StreamStop,
    StreamCommit(StreamCommit),
    StreamAbort(StreamAbort),
}

/// Start of a (non-streamed) transaction ('B').
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// The LSN of the transaction's commit record.
    pub final_lsn: Lsn,
    pub commit_time: TimestampTz,
    pub xid: u32,
}

/// End of a (non-streamed) transaction ('C').
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Currently always 0.
    pub flags: u8,
    pub commit_lsn: Lsn,
    /// The LSN just past the commit record: what to confirm as flushed once the transaction is
    /// applied.
    pub end_lsn: Lsn,
    pub commit_time: TimestampTz,
}

/// The transaction was replicated into this server from another one ('O').
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The commit LSN on the origin server.
    pub commit_lsn: Lsn,
    pub name: String,
}

/// The shape of a table, sent before the first change to it in a session and again whenever it
/// changes ('R').
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub xid: Option<u32>,
    pub id: u32,
    /// Empty for `pg_catalog`.
    pub namespace: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    /// Only the published columns (never generated ones), in the order tuples carry them.
    pub columns: Vec<Column>,
}

/// Which old values an Update or Delete carries (`pg_class.relreplident`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// 'd': the primary key.
    Default,
    /// 'n': nothing, so updates and deletes cannot be replicated.
    Nothing,
    /// 'f': all columns.
    Full,
    /// 'i': the columns of a chosen unique index.
    Index,
}

impl ReplicaIdentity {
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            b'd' => Some(Self::Default),
            b'n' => Some(Self::Nothing),
            b'f' => Some(Self::Full),
            b'i' => Some(Self::Index),
            _ => None,
        }
    }

    pub fn as_byte(self) -> u8 {
        match self {
            Self::Default => b'd',
            Self::Nothing => b'n',
            Self::Full => b'f',
            Self::Index => b'i',
        }
    }
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Bit [`Column::KEY`] marks a replica identity column; the others are unused so far but kept
    /// rather than dropped.
    pub flags: u8,
    pub name: String,
    pub type_oid: u32,
    /// `atttypmod`: -1 when the type has none.
    pub type_modifier: i32,
}

impl Column {
    /// The flag bit marking a column as part of the replica identity key.
    pub const KEY: u8 = 1;

    /// Whether the column is part of the replica identity, i.e. present in a 'K' old tuple.
    pub fn is_key(&self) -> bool {
        self.flags & Self::KEY != 0
    }
}

/// A data type used by a published column, sent before the first [`Relation`] using it when the
/// type is not built in ('Y').
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMessage {
    pub xid: Option<u32>,
    pub id: u32,
    /// Empty for `pg_catalog`.
    pub namespace: String,
    pub name: String,
}

/// A new row ('I').
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    pub xid: Option<u32>,
    pub relation_id: u32,
    pub new: Tuple,
}

/// A changed row ('U').
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub xid: Option<u32>,
    pub relation_id: u32,
    /// `None` when the replica identity columns did not change (and identity is not FULL): the
    /// key is then the one in `new`.
    pub old: Option<OldTuple>,
    pub new: Tuple,
}

/// A removed row ('D').
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    pub xid: Option<u32>,
    pub relation_id: u32,
    pub old: OldTuple,
}

/// The old row of an Update or Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// 'K': only the replica identity columns are set; every other column is [`Cell::Null`].
    Key(Tuple),
    /// 'O': the whole old row (replica identity FULL).
    Full(Tuple),
}

impl OldTuple {
    pub fn tuple(&self) -> &Tuple {
        match self {
            Self::Key(tuple) | Self::Full(tuple) => tuple,
        }
    }

    pub fn into_tuple(self) -> Tuple {
        match self {
            Self::Key(tuple) | Self::Full(tuple) => tuple,
        }
    }
}

/// TRUNCATE of one or more tables in one statement ('T').
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    pub xid: Option<u32>,
    /// Bits [`Truncate::CASCADE`] and [`Truncate::RESTART_IDENTITY`].
    pub options: u8,
    pub relation_ids: Vec<u32>,
}

impl Truncate {
    pub const CASCADE: u8 = 1;
    pub const RESTART_IDENTITY: u8 = 2;

    pub fn cascade(&self) -> bool {
        self.options & Self::CASCADE != 0
    }

    pub fn restart_identity(&self) -> bool {
        self.options & Self::RESTART_IDENTITY != 0
    }
}

/// A `pg_logical_emit_message` payload ('M'; only sent with the `messages` option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalDecodingMessage {
    pub xid: Option<u32>,
    /// Transactional messages arrive inside their transaction; others as soon as decoded, even if
    /// the emitting transaction later aborts.
    pub transactional: bool,
    pub lsn: Lsn,
    pub prefix: String,
    pub content: Bytes,
}

/// Start of a block of changes of an in-progress transaction ('S', protocol version 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStart {
    pub xid: u32,
    /// The first block for this xid: the caller starts buffering a new transaction.
    pub first_segment: bool,
}

/// A streamed transaction committed ('c', protocol version 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCommit {
    pub xid: u32,
    /// Currently always 0.
    pub flags: u8,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    pub commit_time: TimestampTz,
}

/// A streamed transaction, or one of its subtransactions, aborted ('A', protocol version 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAbort {
    pub xid: u32,
    /// Equal to `xid` when the whole transaction aborted; otherwise only the changes of this
    /// subtransaction are discarded.
    pub subxid: u32,
}

/// A row: one cell per column of the relation, in [`Relation::columns`] order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tuple(pub Vec<Cell>);

/// One column value of a [`Tuple`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// 'n': SQL NULL (also every non-key column of a 'K' old tuple).
    Null,
    /// 'u': a TOASTed value that did not change; the server does not resend it.
    UnchangedToast,
    /// 't': the value in the type's text output format.
    Text(Bytes),
    /// 'b': the value in the type's binary send format (only with the `binary` option).
    Binary(Bytes),
}

/// Decodes one pgoutput message, copying `buf` once so column values can share it.
///
/// `streaming` says whether the message arrived between StreamStart and StreamStop, where data
/// messages (Relation, Type, Insert, Update, Delete, Truncate, Message) start with the xid of
/// their transaction.
///
/// # Errors
///
/// A [`DecodeError`] when `buf` is not exactly one well-formed message of protocol version 1 or
/// 2: cut short, unknown tags or kinds, bad strings, negative counts or bytes left over.
pub fn decode(buf: &[u8], streaming: bool) -> Result<LogicalMessage, DecodeError> {
    decode_bytes(Bytes::copy_from_slice(buf), streaming)
}

/// Like [`decode`], but column values and message contents are slices of `buf`: no copying.
///
/// # Errors
///
/// As for [`decode`].
pub fn decode_bytes(buf: Bytes, streaming: bool) -> Result<LogicalMessage, DecodeError> {
    let mut r = Reader::new(buf);
    let tag = r.u8("tag")?;
    let message = decode_body(tag, &mut r, streaming)?;
    r.finish()?;
    Ok(message)
}

fn decode_body(tag: u8, r: &mut Reader, streaming: bool) -> Result<LogicalMessage, DecodeError> {
    use LogicalMessage as M;
    Ok(match tag {
        b'B' => M::Begin(begin(r.named("Begin"))?),
        b'C' => M::Commit(commit(r.named("Commit"))?),
        b'O' => M::Origin(origin(r.named("Origin"))?),
        b'R' => M::Relation(relation(r.named("Relation"), streaming)?),
        b'Y' => M::Type(type_message(r.named("Type"), streaming)?),
        b'I' => M::Insert(insert(r.named("Insert"), streaming)?),
        b'U' => M::Update(update(r.named("Update"), streaming)?),
        b'D' => M::Delete(delete(r.named("Delete"), streaming)?),
        b'T' => M::Truncate(truncate(r.named("Truncate"), streaming)?),
        b'M' => M::Message(logical_decoding_message(r.named("Message"), streaming)?),
        b'S' => M::StreamStart(stream_start(r.named("StreamStart"))?),
        b'E' => {
            r.named("StreamStop");
            M::StreamStop
        }
        b'c' => M::StreamCommit(stream_commit(r.named("StreamCommit"))?),
        b'A' => M::StreamAbort(stream_abort(r.named("StreamAbort"))?),
        _ => return Err(DecodeError::UnknownMessage(tag)),
    })
}

/// The leading xid that data messages carry inside a stream block.
fn stream_xid(r: &mut Reader, streaming: bool) -> Result<Option<u32>, DecodeError> {
    streaming.then(|| r.u32("xid")).transpose()
}

fn begin(r: &mut Reader) -> Result<Begin, DecodeError> {
    Ok(Begin {
        final_lsn: r.u64("final LSN")?,
        commit_time: r.i64("commit timestamp")?,
        xid: r.u32("xid")?,
    })
}

fn commit(r: &mut Reader) -> Result<Commit, DecodeError> {
    Ok(Commit {
        flags: r.u8("flags")?,
        commit_lsn: r.u64("commit LSN")?,
        end_lsn: r.u64("end LSN")?,
        commit_time: r.i64("commit timestamp")?,
    })
}

fn origin(r: &mut Reader) -> Result<Origin, DecodeError> {
    Ok(Origin {
        commit_lsn: r.u64("commit LSN")?,
        name: r.cstr("origin name")?,
    })
}

fn relation(r: &mut Reader, streaming: bool) -> Result<Relation, DecodeError> {
    let xid = stream_xid(r, streaming)?;
    let id = r.u32("relation id")?;
    let namespace = r.cstr("namespace")?;
    let name = r.cstr("relation name")?;
    let identity = r.u8("replica identity")?;
    let replica_identity = ReplicaIdentity::from_byte(identity)
        .ok_or(DecodeError::UnknownReplicaIdentity(identity))?;
    let columns = columns(r)?;
    Ok(Relation {
        xid,
        id,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn columns(r: &mut Reader) -> Result<Vec<Column>, DecodeError> {
    // Flags, an empty name with its NUL, type oid and modifier.
    const MIN_COLUMN_LEN: usize = 1 + 1 + 4 + 4;
    let count = r.i16_count("column count")?;
    let mut columns = Vec::with_capacity(r.capacity_for(count, MIN_COLUMN_LEN));
    for _ in 0..count {
        columns.push(Column {
            flags: r.u8("column flags")?,
            name: r.cstr("column name")?,
            type_oid: r.u32("column type oid")?,
            type_modifier: r.i32("column type modifier")?,
        });
    }
    Ok(columns)
}

fn type_message(r: &mut Reader, streaming: bool) -> Result<TypeMessage, DecodeError> {
    Ok(TypeMessage {
        xid: stream_xid(r, streaming)?,
        id: r.u32("type id")?,
        namespace: r.cstr("namespace")?,
        name: r.cstr("type name")?,
    })
}

fn insert(r: &mut Reader, streaming: bool) -> Result<Insert, DecodeError> {
    let xid = stream_xid(r, streaming)?;
    let relation_id = r.u32("relation id")?;
    expect_tuple_kind(r, b'N')?;
    Ok(Insert {
        xid,
        relation_id,
        new: tuple(r)?,
    })
}

fn update(r: &mut Reader, streaming: bool) -> Result<Update, DecodeError> {
    let xid = stream_xid(r, streaming)?;
    let relation_id = r.u32("relation id")?;
    let (old, kind) = match r.u8("tuple kind")? {
        b'N' => (None, b'N'),
        kind => (Some(old_tuple(r, kind)?), r.u8("tuple kind")?),
    };
    if kind != b'N' {
        return Err(unexpected_tuple_kind(r, kind));
    }
    Ok(Update {
        xid,
        relation_id,
        old,
        new: tuple(r)?,
    })
}

fn delete(r: &mut Reader, streaming: bool) -> Result<Delete, DecodeError> {
    let xid = stream_xid(r, streaming)?;
    let relation_id = r.u32("relation id")?;
    let kind = r.u8("tuple kind")?;
    Ok(Delete {
        xid,
        relation_id,
        old: old_tuple(r, kind)?,
    })
}

/// The TupleData after a 'K' or 'O' marker that has already been read.
fn old_tuple(r: &mut Reader, kind: u8) -> Result<OldTuple, DecodeError> {
    match kind {
        b'K' => tuple(r).map(OldTuple::Key),
        b'O' => tuple(r).map(OldTuple::Full),
        _ => Err(unexpected_tuple_kind(r, kind)),
    }
}

fn expect_tuple_kind(r: &mut Reader, expected: u8) -> Result<(), DecodeError> {
    match r.u8("tuple kind")? {
        kind if kind == expected => Ok(()),
        kind => Err(unexpected_tuple_kind(r, kind)),
    }
}

fn unexpected_tuple_kind(r: &Reader, tag: u8) -> DecodeError {
    DecodeError::UnknownTupleKind {
        message: r.message(),
        tag,
    }
}

fn tuple(r: &mut Reader) -> Result<Tuple, DecodeError> {
    // Null and unchanged-TOAST cells are a single kind byte.
    const MIN_CELL_LEN: usize = 1;
    let count = r.i16_count("column count")?;
    let mut cells = Vec::with_capacity(r.capacity_for(count, MIN_CELL_LEN));
    for column in 0..count {
        cells.push(cell(r, column)?);
    }
    Ok(Tuple(cells))
}

fn cell(r: &mut Reader, column: usize) -> Result<Cell, DecodeError> {
    match r.u8("column kind")? {
        b'n' => Ok(Cell::Null),
        b'u' => Ok(Cell::UnchangedToast),
        b't' => r.length_prefixed("column value").map(Cell::Text),
        b'b' => r.length_prefixed("column value").map(Cell::Binary),
        tag => Err(DecodeError::UnknownColumnKind {
            message: r.message(),
            column,
            tag,
        }),
    }
}

fn truncate(r: &mut Reader, streaming: bool) -> Result<Truncate, DecodeError> {
    const OID_LEN: usize = 4;
    let xid = stream_xid(r, streaming)?;
    let count = r.i32_count("relation count")?;
    let options = r.u8("options")?;
    let mut relation_ids = Vec::with_capacity(r.capacity_for(count, OID_LEN));
    for _ in 0..count {
        relation_ids.push(r.u32("relation id")?);
    }
    Ok(Truncate {
        xid,
        options,
        relation_ids,
    })
}

fn logical_decoding_message(
    r: &mut Reader,
    streaming: bool,
) -> Result<LogicalDecodingMessage, DecodeError> {
    const TRANSACTIONAL: u8 = 1;
    Ok(LogicalDecodingMessage {
        xid: stream_xid(r, streaming)?,
        transactional: r.u8("flags")? & TRANSACTIONAL != 0,
        lsn: r.u64("LSN")?,
        prefix: r.cstr("prefix")?,
        content: r.length_prefixed("content")?,
    })
}

fn stream_start(r: &mut Reader) -> Result<StreamStart, DecodeError> {
    Ok(StreamStart {
        xid: r.u32("xid")?,
        first_segment: r.u8("first segment")? != 0,
    })
}

fn stream_commit(r: &mut Reader) -> Result<StreamCommit, DecodeError> {
    Ok(StreamCommit {
        xid: r.u32("xid")?,
        flags: r.u8("flags")?,
        commit_lsn: r.u64("commit LSN")?,
        end_lsn: r.u64("end LSN")?,
        commit_time: r.i64("commit timestamp")?,
    })
}

/// Protocol version 4 (PostgreSQL 16, parallel apply) appends the abort LSN and time; we never
/// ask for it, so those bytes would be reported as trailing.
fn stream_abort(r: &mut Reader) -> Result<StreamAbort, DecodeError> {
    Ok(StreamAbort {
        xid: r.u32("xid")?,
        subxid: r.u32("subtransaction xid")?,
    })
}
