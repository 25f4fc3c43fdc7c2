//! A bounds-checked cursor over one message.
//!
//! Every read checks the remaining length first and reports a [`DecodeError`] naming the message
//! and field, so the decoders above never index, never panic and never trust a length they have
//! not checked against the bytes actually present.

use bytes::Bytes;

use super::DecodeError;

pub(super) struct Reader {
    buf: Bytes,
    pos: usize,
    message: &'static str,
}

impl Reader {
    pub(super) fn new(buf: Bytes) -> Self {
        Self {
            buf,
            pos: 0,
            message: "message",
        }
    }

    /// Names the message for errors once its tag is known.
    pub(super) fn named(&mut self, message: &'static str) -> &mut Self {
        self.message = message;
        self
    }

    pub(super) fn message(&self) -> &'static str {
        self.message
    }

    pub(super) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&[u8], DecodeError> {
        let start = self.pos;
        let end = start.checked_add(n);
        let Some(slice) = end.and_then(|end| self.buf.get(start..end)) else {
            return Err(DecodeError::Truncated {
                message: self.message,
                field,
                needed: n,
                remaining: self.buf.len().saturating_sub(start),
            });
        };
        self.pos = start + n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    pub(super) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.array::<1>(field).map(|[b]| b)
    }

    pub(super) fn i16(&mut self, field: &'static str) -> Result<i16, DecodeError> {
        self.array(field).map(i16::from_be_bytes)
    }

    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_be_bytes)
    }

    pub(super) fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        self.array(field).map(i32::from_be_bytes)
    }

    pub(super) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.array(field).map(u64::from_be_bytes)
    }

    pub(super) fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        self.array(field).map(i64::from_be_bytes)
    }

    /// The next `n` bytes as a slice of the input: no copy, so column values cost a reference
    /// count rather than an allocation.
    pub(super) fn bytes(&mut self, n: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        let start = self.pos;
        self.take(n, field)?;
        Ok(self.buf.slice(start..self.pos))
    }

    /// An Int32 length followed by that many bytes.
    pub(super) fn length_prefixed(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.i32_count(field)?;
        self.bytes(len, field)
    }

    /// A NUL-terminated UTF-8 string.
    pub(super) fn cstr(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return Err(DecodeError::MissingNul {
                message: self.message,
                field,
            });
        };
        let text = rest.get(..nul).unwrap_or_default();
        let text = std::str::from_utf8(text).map_err(|_| DecodeError::InvalidUtf8 {
            message: self.message,
            field,
        })?;
        let text = text.to_owned();
        self.pos += nul + 1;
        Ok(text)
    }

    /// An Int16 count: negative is malformed.
    pub(super) fn i16_count(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let raw = self.i16(field)?;
        self.count(raw.into(), field)
    }

    /// An Int32 count or length: negative is malformed.
    pub(super) fn i32_count(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let raw = self.i32(field)?;
        self.count(raw.into(), field)
    }

    fn count(&self, raw: i64, field: &'static str) -> Result<usize, DecodeError> {
        usize::try_from(raw).map_err(|_| DecodeError::BadCount {
            message: self.message,
            field,
            count: raw,
        })
    }

    /// How many elements of at least `min_len` bytes each the rest of the message could hold.
    ///
    /// Preallocating `count` itself would let a forged count of 32767 columns in a 20-byte
    /// message reserve memory for all of them; the loop reading them fails with `Truncated` at
    /// the first missing element anyway.
    pub(super) fn capacity_for(&self, count: usize, min_len: usize) -> usize {
        count.min(self.remaining() / min_len.max(1))
    }

    /// Insists the message was consumed exactly.
    pub(super) fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes {
                message: self.message,
                count,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_bounded_by_the_bytes_left() {
        let r = Reader::new(Bytes::from_static(&[0; 20]));
        assert_eq!(r.capacity_for(32767, 10), 2);
        assert_eq!(r.capacity_for(1, 10), 1);
        assert_eq!(r.capacity_for(5, 0), 5);
    }

    #[test]
    fn truncated_reads_leave_the_position_alone() {
        let mut r = Reader::new(Bytes::from_static(&[1, 2, 3]));
        assert!(matches!(
            r.u32("x"),
            Err(DecodeError::Truncated {
                needed: 4,
                remaining: 3,
                ..
            })
        ));
        assert_eq!(r.remaining(), 3);
        assert_eq!(r.i16("y"), Ok(0x0102));
    }
}
