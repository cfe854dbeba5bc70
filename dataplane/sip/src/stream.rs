//! Cutting messages out of a TCP or TLS byte stream (RFC 3261 §18.3).

use memchr::{memchr, memmem};

use crate::error::{CodecError, fault};
use crate::parse::MAX_MESSAGE_LEN;
use crate::scan::{Fields, Line};

/// What [`frame_stream`] found at the start of the buffer. Either way, drop
/// [`StreamFrame::consumed`] bytes from the front of the buffer once handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFrame {
    /// `len` CR/LF bytes before any message. RFC 3261 §7.5 ignores CRLF before a start line;
    /// RFC 5626 §3.5.1 makes a double CRLF a keep-alive ping, to be answered with a single CRLF
    /// pong (see [`StreamFrame::is_ping`]).
    KeepAlive { len: usize },
    /// One complete message in `buf[..len]`, header section and Content-Length body: hand exactly
    /// that slice to [`crate::parse`].
    Message { len: usize },
}

impl StreamFrame {
    /// How many bytes to drop from the front of the buffer.
    pub fn consumed(self) -> usize {
        match self {
            Self::KeepAlive { len } | Self::Message { len } => len,
        }
    }

    /// A double-CRLF ping (RFC 5626 §3.5.1): answer it with `\r\n`.
    pub fn is_ping(self) -> bool {
        matches!(self, Self::KeepAlive { len } if len >= 4)
    }
}

/// Finds the first message in a stream buffer: Ok(None) while more bytes are needed.
///
/// On a stream, Content-Length is mandatory (RFC 3261 §18.3). Any error means the stream cannot
/// be re-synchronised: count it and close the connection (none of these errors can be answered).
pub fn frame_stream(buf: &[u8]) -> Result<Option<StreamFrame>, CodecError> {
    let mut crlf = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if crlf == buf.len() && buf.ends_with(b"\r") {
        // Half a CRLF: wait for its LF, so that a ping is seen whole.
        crlf -= 1;
    }
    if crlf > 0 {
        return Ok(Some(StreamFrame::KeepAlive { len: crlf }));
    }
    let window = &buf[..buf.len().min(MAX_MESSAGE_LEN)];
    let Some(end) = memmem::find(window, b"\r\n\r\n") else {
        if buf.len() >= MAX_MESSAGE_LEN {
            return Err(fault(
                CodecError::TooLarge,
                format!("no end of header section in {MAX_MESSAGE_LEN} bytes"),
            ));
        }
        return Ok(None);
    };
    // Only Content-Length matters here; bytes that are not UTF-8 are left for `parse` to refuse.
    let head = String::from_utf8_lossy(&buf[..end]);
    let lines = memchr(b'\n', head.as_bytes()).map_or("", |lf| &head[lf + 1..]);
    let mut length = None;
    for line in Fields::new(lines) {
        let Line::Field { name, value } = line else {
            continue;
        };
        if !(name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l")) {
            continue;
        }
        let n = Some(value)
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<usize>().ok())
            .ok_or_else(|| fault(CodecError::ContentLength, "not a length"))?;
        if length.is_some_and(|l| l != n) {
            return Err(fault(CodecError::ContentLength, "two different values"));
        }
        length = Some(n);
    }
    let Some(length) = length else {
        return Err(fault(
            CodecError::Framing,
            "a message on a stream needs Content-Length (RFC 3261 §18.3)",
        ));
    };
    let len = (end + 4).saturating_add(length);
    if len > MAX_MESSAGE_LEN {
        return Err(fault(
            CodecError::TooLarge,
            format!("{len} bytes, more than {MAX_MESSAGE_LEN}"),
        ));
    }
    Ok((buf.len() >= len).then_some(StreamFrame::Message { len }))
}
