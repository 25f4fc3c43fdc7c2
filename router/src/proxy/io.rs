//! Moving bytes: bodies copied between the two sides (with an optional [`Tee`] keeping a copy),
//! writes that must make progress, and reading an answer's head.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyError {
    /// Reading the source failed.
    Read,
    /// The source ended before the body did.
    Truncated,
    /// The source sent nothing for the body's idle time.
    Stalled,
    /// The body's chunked framing is broken.
    Malformed,
    /// Writing to the destination failed, or made no progress for the body's idle time.
    Write,
}

/// Writes `out` (a head, possibly empty), then copies one body framed by `framing` from `buf`
/// and `src` to `dst`. Body bytes already in `buf` go out with the head in one write; what
/// follows the body stays in `buf`. Memory stays bounded: one read's worth at a time. Every
/// read and write must complete within `idle`; `reading` is true while it waits for `src`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn copy_body<R, W>(
    framing: Framing,
    src: &mut R,
    buf: &mut BytesMut,
    dst: &mut W,
    out: &mut Vec<u8>,
    idle: Duration,
    reading: &AtomicBool,
    mut tee: Option<&mut Tee>,
) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut remaining = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut scanner = h1::ChunkedScanner::new();
    let mut done = framing == Framing::None;
    loop {
        if !done && !buf.is_empty() {
            let take = match framing {
                Framing::None => 0,
                Framing::Length(_) => usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(buf.len()),
                Framing::Chunked => scanner.scan(buf).map_err(|_| CopyError::Malformed)?,
                Framing::UntilClose => buf.len(),
            };
            if let Some(tee) = tee.as_deref_mut() {
                tee.push(&buf[..take]);
            }
            if out.is_empty() {
                write_within(dst, &buf[..take], idle).await?;
            } else {
                out.extend_from_slice(&buf[..take]);
            }
            buf.advance(take);
            match framing {
                Framing::Length(_) => {
                    remaining -= take as u64;
                    done = remaining == 0;
                }
                Framing::Chunked => done = scanner.is_done(),
                _ => {}
            }
        }
        if !out.is_empty() {
            write_within(dst, out, idle).await?;
            out.clear();
        }
        if done {
            return Ok(());
        }
        buf.reserve(READ_SIZE);
        reading.store(true, Ordering::Relaxed);
        // As for writes, a timer only for a read that has to wait.
        let read = match src.read_buf(buf).now_or_never() {
            Some(read) => Ok(read),
            None => tokio::time::timeout(idle, src.read_buf(buf)).await,
        };
        reading.store(false, Ordering::Relaxed);
        match read {
            Err(_) => return Err(CopyError::Stalled),
            Ok(Ok(0)) if framing == Framing::UntilClose => return Ok(()),
            Ok(Ok(0)) => return Err(CopyError::Truncated),
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Err(CopyError::Read),
        }
    }
}

/// Writes all of `bytes`, each socket write making progress within `idle`.
pub(super) async fn write_within<W: AsyncWrite + Unpin>(
    dst: &mut W,
    mut bytes: &[u8],
    idle: Duration,
) -> Result<(), CopyError> {
    while !bytes.is_empty() {
        // Most writes complete at once: only one that has to wait pays for a timer.
        let written = match dst.write(bytes).now_or_never() {
            Some(written) => written,
            None => tokio::time::timeout(idle, dst.write(bytes))
                .await
                .map_err(|_| CopyError::Write)?,
        };
        match written {
            Ok(n) if n > 0 => bytes = &bytes[n..],
            _ => return Err(CopyError::Write),
        }
    }
    Ok(())
}

#[derive(Debug)]
pub(crate) enum ReadHeadError {
    /// The connection ended; `partial` if some of a head had arrived.
    Closed {
        partial: bool,
    },
    Io,
    Malformed,
}

/// Reads until `buf` starts with a complete response head. Cancel-safe: a partial head stays
/// in `buf`.
pub(crate) async fn read_head<R: AsyncRead + Unpin>(
    src: &mut R,
    buf: &mut BytesMut,
) -> Result<Head, ReadHeadError> {
    loop {
        if !buf.is_empty() {
            match h1::parse_response(buf) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(_) => return Err(ReadHeadError::Malformed),
            }
        }
        buf.reserve(READ_SIZE);
        match src.read_buf(buf).await {
            Ok(0) => {
                return Err(ReadHeadError::Closed {
                    partial: !buf.is_empty(),
                });
            }
            Ok(_) => {}
            Err(_) => return Err(ReadHeadError::Io),
        }
    }
}
