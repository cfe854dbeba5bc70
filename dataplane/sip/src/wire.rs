//! Writing messages: the one place the edge turns a message into bytes.

use std::fmt::Write;

use rsipstack::sip::{Header, Headers, Request, Response};

use crate::parse::{ExtensionRequest, SipMessage};

mod sealed {
    pub trait Sealed {}
    impl Sealed for rsipstack::sip::Request {}
    impl Sealed for rsipstack::sip::Response {}
    impl Sealed for crate::parse::ExtensionRequest {}
    impl Sealed for crate::parse::SipMessage {}
}

/// A message [`serialize`] writes: `Request`, `Response`, [`ExtensionRequest`], [`SipMessage`].
pub trait Outbound: sealed::Sealed {
    #[doc(hidden)]
    fn start_line(&self, out: &mut String);
    #[doc(hidden)]
    fn parts(&self) -> (&Headers, &[u8]);
}

impl Outbound for Request {
    fn start_line(&self, out: &mut String) {
        let _ = write!(out, "{} {} {}", self.method, self.uri, self.version);
    }
    fn parts(&self) -> (&Headers, &[u8]) {
        (&self.headers, &self.body)
    }
}

impl Outbound for ExtensionRequest {
    fn start_line(&self, out: &mut String) {
        let _ = write!(out, "{} {} SIP/2.0", self.method, self.uri);
    }
    fn parts(&self) -> (&Headers, &[u8]) {
        (&self.headers, &self.body)
    }
}

impl Outbound for Response {
    fn start_line(&self, out: &mut String) {
        // rsipstack's own writer drops `wire_reason`; a reason given to `response_to` is kept.
        let reason = self
            .wire_reason
            .as_deref()
            .unwrap_or(self.status_code.text());
        let _ = write!(out, "{} {} {reason}", self.version, self.status_code.code());
    }
    fn parts(&self) -> (&Headers, &[u8]) {
        (&self.headers, &self.body)
    }
}

impl Outbound for SipMessage {
    fn start_line(&self, out: &mut String) {
        match self {
            Self::Request(m) => m.start_line(out),
            Self::Response(m) => m.start_line(out),
            Self::Extension(m) => m.start_line(out),
        }
    }
    fn parts(&self) -> (&Headers, &[u8]) {
        match self {
            Self::Request(m) => m.parts(),
            Self::Response(m) => m.parts(),
            Self::Extension(m) => m.parts(),
        }
    }
}

/// The message's bytes, with a Content-Length that matches the body whatever the header said
/// (RFC 3261 §20.14), in place of the first Content-Length or last. A CR or LF inside a value
/// becomes a space, so no value can inject a header line.
pub fn serialize(message: &impl Outbound) -> Vec<u8> {
    let (headers, body) = message.parts();
    let mut out = String::with_capacity(64 + headers.len() * 48);
    message.start_line(&mut out);
    one_line(&mut out, 0);
    let mut length_written = false;
    for header in headers.iter() {
        if let Header::ContentLength(_) = header {
            if !std::mem::replace(&mut length_written, true) {
                let _ = write!(out, "Content-Length: {}\r\n", body.len());
            }
            continue;
        }
        let start = out.len();
        let _ = write!(out, "{header}");
        one_line(&mut out, start);
    }
    if !length_written {
        let _ = write!(out, "Content-Length: {}\r\n", body.len());
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Ends the line started at `start` with CRLF, after turning any CR or LF inside it into a space.
fn one_line(out: &mut String, start: usize) {
    if out[start..].contains(['\r', '\n']) {
        let line = out[start..].replace(['\r', '\n'], " ");
        out.truncate(start);
        out.push_str(&line);
    }
    out.push_str("\r\n");
}
