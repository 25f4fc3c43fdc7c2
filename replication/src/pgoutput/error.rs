//! Why a pgoutput message could not be decoded.

use std::fmt;

/// A malformed, truncated or unsupported pgoutput message.
///
/// `message` names the message being decoded (`"Insert"`, `"Relation"`, …, or `"message"` before
/// the tag is known) and `field` the part of it that was wrong, so a log line alone is enough to
/// tell a server bug, a protocol version mismatch and a framing bug in the caller apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ended before `field` could be read.
    #[error("{message}: {field} needs {needed} bytes but only {remaining} remain")]
    Truncated {
        message: &'static str,
        field: &'static str,
        needed: usize,
        remaining: usize,
    },
    /// The first byte is not a message type of protocol versions 1 or 2 (two-phase messages of
    /// version 3 land here too: we never ask for them).
    #[error("unknown message tag {}", Tag(*.0))]
    UnknownMessage(u8),
    /// The byte before a TupleData is neither of the kinds this message allows ('N' new, 'K' key,
    /// 'O' old).
    #[error("{message}: unexpected tuple kind {}", Tag(*.tag))]
    UnknownTupleKind { message: &'static str, tag: u8 },
    /// A column in a TupleData is neither 'n' (null), 'u' (unchanged TOAST), 't' (text) nor 'b'
    /// (binary).
    #[error("{message}: column {column} has unknown kind {}", Tag(*.tag))]
    UnknownColumnKind {
        message: &'static str,
        column: usize,
        tag: u8,
    },
    /// A Relation message's replica identity is none of 'd', 'n', 'f', 'i'.
    #[error("Relation: unknown replica identity {}", Tag(*.0))]
    UnknownReplicaIdentity(u8),
    /// A string field is not UTF-8 (we require `client_encoding` UTF8 on the connection).
    #[error("{message}: {field} is not valid UTF-8")]
    InvalidUtf8 {
        message: &'static str,
        field: &'static str,
    },
    /// A C string runs to the end of the message without its terminating NUL.
    #[error("{message}: {field} has no terminating NUL")]
    MissingNul {
        message: &'static str,
        field: &'static str,
    },
    /// The message decoded completely but bytes are left over: most likely a newer protocol
    /// version than the one we asked for, or the wrong `streaming` flag.
    #[error("{message}: {count} trailing bytes")]
    TrailingBytes { message: &'static str, count: usize },
    /// A count or length field is negative.
    #[error("{message}: {field} is {count}")]
    BadCount {
        message: &'static str,
        field: &'static str,
        count: i64,
    },
}

/// Shows a tag byte as the character the protocol documentation uses, with its hex value since
/// the offending byte is often not printable.
struct Tag(u8);

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}' (0x{:02x})", char::from(self.0), self.0)
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DecodeError;

    #[test]
    fn tags_show_as_characters_when_printable() {
        assert_eq!(
            DecodeError::UnknownMessage(b'Z').to_string(),
            "unknown message tag 'Z' (0x5a)"
        );
        assert_eq!(
            DecodeError::UnknownMessage(0).to_string(),
            "unknown message tag 0x00"
        );
    }
}
