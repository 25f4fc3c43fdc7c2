//! A test-only pgoutput encoder: the inverse of `decode`, for round trips and for building
//! malformed variants of valid messages.

use replication::pgoutput::{Cell, Column, LogicalMessage, OldTuple, Tuple};

pub fn encode(message: &LogicalMessage) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    w.message(message);
    w.0
}

struct Writer(Vec<u8>);

impl Writer {
    fn message(&mut self, message: &LogicalMessage) {
        use LogicalMessage as M;
        match message {
            M::Begin(m) => {
                self.u8(b'B');
                self.u64(m.final_lsn);
                self.i64(m.commit_time);
                self.u32(m.xid);
            }
            M::Commit(m) => {
                self.u8(b'C');
                self.u8(m.flags);
                self.u64(m.commit_lsn);
                self.u64(m.end_lsn);
                self.i64(m.commit_time);
            }
            M::Origin(m) => {
                self.u8(b'O');
                self.u64(m.commit_lsn);
                self.cstr(&m.name);
            }
            M::Relation(m) => {
                self.u8(b'R');
                self.xid(m.xid);
                self.u32(m.id);
                self.cstr(&m.namespace);
                self.cstr(&m.name);
                self.u8(m.replica_identity.as_byte());
                self.i16(m.columns.len());
                m.columns.iter().for_each(|c| self.column(c));
            }
            M::Type(m) => {
                self.u8(b'Y');
                self.xid(m.xid);
                self.u32(m.id);
                self.cstr(&m.namespace);
                self.cstr(&m.name);
            }
            M::Insert(m) => {
                self.u8(b'I');
                self.xid(m.xid);
                self.u32(m.relation_id);
                self.u8(b'N');
                self.tuple(&m.new);
            }
            M::Update(m) => {
                self.u8(b'U');
                self.xid(m.xid);
                self.u32(m.relation_id);
                if let Some(old) = &m.old {
                    self.old_tuple(old);
                }
                self.u8(b'N');
                self.tuple(&m.new);
            }
            M::Delete(m) => {
                self.u8(b'D');
                self.xid(m.xid);
                self.u32(m.relation_id);
                self.old_tuple(&m.old);
            }
            M::Truncate(m) => {
                self.u8(b'T');
                self.xid(m.xid);
                self.u32(m.relation_ids.len() as u32);
                self.u8(m.options);
                m.relation_ids.iter().for_each(|&id| self.u32(id));
            }
            M::Message(m) => {
                self.u8(b'M');
                self.xid(m.xid);
                self.u8(m.transactional.into());
                self.u64(m.lsn);
                self.cstr(&m.prefix);
                self.len_prefixed(&m.content);
            }
            M::StreamStart(m) => {
                self.u8(b'S');
                self.u32(m.xid);
                self.u8(m.first_segment.into());
            }
            M::StreamStop => self.u8(b'E'),
            M::StreamCommit(m) => {
                self.u8(b'c');
                self.u32(m.xid);
                self.u8(m.flags);
                self.u64(m.commit_lsn);
                self.u64(m.end_lsn);
                self.i64(m.commit_time);
            }
            M::StreamAbort(m) => {
                self.u8(b'A');
                self.u32(m.xid);
                self.u32(m.subxid);
            }
        }
    }

    fn column(&mut self, column: &Column) {
        self.u8(column.flags);
        self.cstr(&column.name);
        self.u32(column.type_oid);
        self.0
            .extend_from_slice(&column.type_modifier.to_be_bytes());
    }

    fn old_tuple(&mut self, old: &OldTuple) {
        match old {
            OldTuple::Key(_) => self.u8(b'K'),
            OldTuple::Full(_) => self.u8(b'O'),
        }
        self.tuple(old.tuple());
    }

    fn tuple(&mut self, tuple: &Tuple) {
        self.i16(tuple.0.len());
        for cell in &tuple.0 {
            match cell {
                Cell::Null => self.u8(b'n'),
                Cell::UnchangedToast => self.u8(b'u'),
                Cell::Text(value) => {
                    self.u8(b't');
                    self.len_prefixed(value);
                }
                Cell::Binary(value) => {
                    self.u8(b'b');
                    self.len_prefixed(value);
                }
            }
        }
    }

    fn xid(&mut self, xid: Option<u32>) {
        if let Some(xid) = xid {
            self.u32(xid);
        }
    }

    fn len_prefixed(&mut self, bytes: &[u8]) {
        self.u32(bytes.len() as u32);
        self.0.extend_from_slice(bytes);
    }

    fn cstr(&mut self, text: &str) {
        self.0.extend_from_slice(text.as_bytes());
        self.0.push(0);
    }

    fn i16(&mut self, count: usize) {
        self.0.extend_from_slice(&(count as i16).to_be_bytes());
    }

    fn u8(&mut self, byte: u8) {
        self.0.push(byte);
    }

    fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }

    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }

    fn i64(&mut self, value: i64) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
}
