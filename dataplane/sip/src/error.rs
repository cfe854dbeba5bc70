//! Why the codec refused some bytes, and whether the sender can be told.

use std::fmt;

use rsipstack::sip::{Headers, Response};

/// What every refusal carries besides its kind: a reason for a Warning header or a log line, and,
/// when the request could be read far enough to answer, the status to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    reason: String,
    status: u16,
    /// The request's header fields, kept only when a reply can reach the sender.
    answerable: Option<Box<Headers>>,
}

impl Rejection {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            status: 400,
            answerable: None,
        }
    }

    pub(crate) fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Why [`crate::parse`] or [`crate::frame_stream`] refused their input. Each variant is a kind that
/// [`CodecError::metric_label`] names; [`CodecError::reply_status`] says whether to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A datagram holding only CR/LF: a keep-alive, not a message. Not worth a log line.
    #[error("CRLF keep-alive")]
    KeepAlive,
    /// No end of the header section, bare CR/LF line ends, or a stream message without
    /// Content-Length. On a stream the connection cannot be re-synchronised: close it.
    #[error("framing: {0}")]
    Framing(Rejection),
    /// More than [`crate::MAX_MESSAGE_LEN`] bytes.
    #[error("message too large: {0}")]
    TooLarge(Rejection),
    /// A Request-Line or Status-Line that is not `Method SP Request-URI SP SIP-Version` or
    /// `SIP-Version SP 3DIGIT SP Reason-Phrase` (RFC 3261 §7.1, §7.2).
    #[error("start line: {0}")]
    StartLine(Rejection),
    /// A SIP version other than SIP/2.0 (answered 505, RFC 3261 §21.5.6).
    #[error("SIP version not supported: {0}")]
    Version(Rejection),
    #[error("Request-URI: {0}")]
    RequestUri(Rejection),
    /// One of Via, From, To, Call-ID, CSeq is missing (RFC 3261 §8.1.1).
    #[error("missing header field: {0}")]
    MissingHeader(Rejection),
    /// A single-valued header field appears twice with different values (RFC 3261 §7.3).
    #[error("conflicting header fields: {0}")]
    ConflictingHeader(Rejection),
    #[error("malformed header field: {0}")]
    MalformedHeader(Rejection),
    #[error("CSeq: {0}")]
    CSeq(Rejection),
    #[error("Via: {0}")]
    Via(Rejection),
    #[error("Content-Length: {0}")]
    ContentLength(Rejection),
}

impl CodecError {
    /// A low-cardinality label for `trunkgate_edge_*` error counters.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::KeepAlive => "keep_alive",
            Self::Framing(_) => "framing",
            Self::TooLarge(_) => "too_large",
            Self::StartLine(_) => "start_line",
            Self::Version(_) => "version",
            Self::RequestUri(_) => "request_uri",
            Self::MissingHeader(_) => "missing_header",
            Self::ConflictingHeader(_) => "conflicting_header",
            Self::MalformedHeader(_) => "malformed_header",
            Self::CSeq(_) => "cseq",
            Self::Via(_) => "via",
            Self::ContentLength(_) => "content_length",
        }
    }

    /// The status to answer with (400, 505, 501), or None when no reply can be sent: a response,
    /// an ACK (RFC 3261 §17.2.1), or a request whose start line or top Via could not be read.
    /// The caller drops and counts those.
    pub fn reply_status(&self) -> Option<u16> {
        let rejection = self.rejection()?;
        rejection.answerable.as_ref().map(|_| rejection.status)
    }

    /// Human-readable text for a Warning header (see [`crate::warning`]) or a log line.
    pub fn reason(&self) -> &str {
        match self.rejection() {
            Some(rejection) => &rejection.reason,
            None => "CRLF keep-alive",
        }
    }

    /// The reply [`CodecError::reply_status`] calls for, built by [`crate::response_to`] from the
    /// refused request. Add a Warning with [`crate::warning`] before sending it.
    pub fn reply(&self) -> Option<Response> {
        let rejection = self.rejection()?;
        let headers = rejection.answerable.as_deref()?;
        Some(crate::response::build(
            headers,
            rejection.status,
            None,
            None,
        ))
    }

    fn rejection(&self) -> Option<&Rejection> {
        match self {
            Self::KeepAlive => None,
            Self::Framing(r)
            | Self::TooLarge(r)
            | Self::StartLine(r)
            | Self::Version(r)
            | Self::RequestUri(r)
            | Self::MissingHeader(r)
            | Self::ConflictingHeader(r)
            | Self::MalformedHeader(r)
            | Self::CSeq(r)
            | Self::Via(r)
            | Self::ContentLength(r) => Some(r),
        }
    }

    /// Keeps the request's header fields so the sender can be answered.
    pub(crate) fn answerable(mut self, headers: Headers) -> Self {
        match &mut self {
            Self::KeepAlive => {}
            Self::Framing(r)
            | Self::TooLarge(r)
            | Self::StartLine(r)
            | Self::Version(r)
            | Self::RequestUri(r)
            | Self::MissingHeader(r)
            | Self::ConflictingHeader(r)
            | Self::MalformedHeader(r)
            | Self::CSeq(r)
            | Self::Via(r)
            | Self::ContentLength(r) => r.answerable = Some(Box::new(headers)),
        }
        self
    }
}

/// Builds an error of one kind: `fault(CodecError::Via, "empty Via entry")`.
pub(crate) fn fault(kind: fn(Rejection) -> CodecError, reason: impl Into<String>) -> CodecError {
    kind(Rejection::new(reason))
}
