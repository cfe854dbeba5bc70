//! Reading one SIP message from a datagram, or from one message that [`crate::frame_stream`] cut out
//! of a stream.
//!
//! rsipstack's own reader (`rsipstack::sip::parser::parse_message`) is not used: it ends the header
//! section silently at the first line that is not UTF-8, skips lines without a colon, reads a
//! malformed Content-Length as 0 and drops the body of a datagram without Content-Length, and it
//! cannot hold a request whose method it does not know. The boundary reads the framing itself and
//! builds rsipstack's model (`Request`, `Response`, `Header`, `Uri`) from what it has checked, with
//! rsipstack's own parsers where they are sound (the top Via, hosts and ports, URI parameters).

use std::borrow::Cow;

use memchr::memmem;
use rsipstack::sip::headers::make_header;
use rsipstack::sip::typed;
use rsipstack::sip::{
    CSeq, CallId, Contact, ContentLength, From, HasHeaders, Header, Headers, MaxForwards, Method,
    Request, Response, StatusCode, To, Uri, Version, Via,
};

use crate::error::{CodecError, fault};
use crate::grammar::{
    check_params, find_byte, has_stray_control, is_call_id, is_token, name_addr, split_byte,
    split_list, tidy,
};
use crate::scan::{Fields, Line};

/// The largest message the boundary reads: the largest UDP payload. A stream message that would
/// be longer is refused before it is buffered.
pub const MAX_MESSAGE_LEN: usize = 65_535;

/// A message read by [`crate::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipMessage {
    Request(Request),
    Response(Response),
    /// A request with a method rsipstack's closed `Method` enum cannot hold. Legal SIP
    /// (RFC 3261 §25.1 extension-method); the caller answers it, usually 501 (RFC 3261 §21.5.2).
    Extension(ExtensionRequest),
}

/// A request whose method is not one rsipstack knows, e.g. `NEWMETHOD`, or `invite`: methods are
/// case-sensitive (RFC 3261 §25.1 spells each one as case-sensitive octets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionRequest {
    pub method: String,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl HasHeaders for ExtensionRequest {
    fn headers(&self) -> &Headers {
        &self.headers
    }
    fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }
}

impl HasHeaders for SipMessage {
    fn headers(&self) -> &Headers {
        match self {
            Self::Request(r) => &r.headers,
            Self::Response(r) => &r.headers,
            Self::Extension(r) => &r.headers,
        }
    }
    fn headers_mut(&mut self) -> &mut Headers {
        match self {
            Self::Request(r) => &mut r.headers,
            Self::Response(r) => &mut r.headers,
            Self::Extension(r) => &mut r.headers,
        }
    }
}

impl std::convert::From<Request> for SipMessage {
    fn from(request: Request) -> Self {
        Self::Request(request)
    }
}

impl std::convert::From<Response> for SipMessage {
    fn from(response: Response) -> Self {
        Self::Response(response)
    }
}

/// Reads one SIP message from a UDP datagram, or from `buf[..len]` after
/// [`crate::frame_stream`] returned a message of `len` bytes.
///
/// On UDP a body longer than Content-Length is cut to it and a message without Content-Length
/// takes the rest of the datagram (RFC 3261 §18.3).
pub fn parse(datagram: &[u8]) -> Result<SipMessage, CodecError> {
    if datagram.len() > MAX_MESSAGE_LEN {
        return Err(fault(
            CodecError::TooLarge,
            format!("{} bytes, more than {MAX_MESSAGE_LEN}", datagram.len()),
        ));
    }
    // RFC 3261 §7.5: CRLF before the start line is ignored; a datagram of nothing else is a ping.
    let Some(start) = datagram.iter().position(|&b| b != b'\r' && b != b'\n') else {
        return Err(if datagram.is_empty() {
            fault(CodecError::Framing, "empty datagram")
        } else {
            CodecError::KeepAlive
        });
    };
    Reader::default().read(&datagram[start..])
}

enum StartLine<'a> {
    Request {
        method: &'a str,
        uri: Option<Uri>,
        /// Whether it can be answered at all: a token method other than ACK, ending in SIP/x.
        answerable: bool,
    },
    Response {
        code: u16,
        reason: &'a str,
    },
}

/// Single-valued header fields (RFC 3261 §7.3): a second copy with another value is refused, an
/// identical copy dropped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Single {
    From,
    To,
    CallId,
    CSeq,
    ContentLength,
    MaxForwards,
}

#[derive(Default)]
struct Reader {
    /// The first fault found; reading goes on so that a refused request can still be answered.
    fault: Option<CodecError>,
    singles: Vec<(Single, usize)>,
}

impl Reader {
    fn fail(&mut self, kind: fn(crate::Rejection) -> CodecError, reason: impl Into<String>) {
        if self.fault.is_none() {
            self.fault = Some(fault(kind, reason));
        }
    }

    fn fail_with(&mut self, error: CodecError) {
        if self.fault.is_none() {
            self.fault = Some(error);
        }
    }

    fn read(mut self, buf: &[u8]) -> Result<SipMessage, CodecError> {
        let (head, mut body) = match memmem::find(buf, b"\r\n\r\n") {
            Some(end) => (&buf[..end], &buf[end + 4..]),
            // A datagram that ends after a complete header line ends its header section too
            // (RFC 4475 baddn.dat has no empty line); the sender only omitted the final CRLF.
            None if buf.ends_with(b"\r\n") => (&buf[..buf.len() - 2], &[][..]),
            None => {
                self.fail(
                    CodecError::Framing,
                    "no empty line after the header fields (truncated?)",
                );
                let end = memmem::rfind(buf, b"\r\n").unwrap_or(buf.len());
                (&buf[..end], &[][..])
            }
        };
        let (first, lines) = match memchr::memchr(b'\n', head) {
            Some(lf) => (&head[..lf], &head[lf + 1..]),
            None => (head, &[][..]),
        };
        let first = first.strip_suffix(b"\r").unwrap_or(first);
        let Ok(first) = std::str::from_utf8(first) else {
            return Err(fault(CodecError::StartLine, "start line is not UTF-8"));
        };
        // One UTF-8 check for all header lines. Lines that are not UTF-8 are read with U+FFFD
        // in place of the bad octets, only to answer the request.
        let lines = match std::str::from_utf8(lines) {
            Ok(lines) => Cow::Borrowed(lines),
            Err(_) => {
                self.fail(CodecError::MalformedHeader, "header field is not UTF-8");
                String::from_utf8_lossy(lines)
            }
        };
        let start = self.start_line(first);

        let headers = self.header_fields(&lines);
        let checked = self.check(&headers);

        if let Some(declared) = checked.content_length {
            if declared > body.len() {
                // RFC 3261 §18.3: on UDP a Content-Length beyond the datagram is a 400.
                self.fail(
                    CodecError::ContentLength,
                    format!("{declared} but only {} body bytes arrived", body.len()),
                );
            } else {
                // RFC 3261 §18.3: octets past Content-Length are discarded (RFC 4475 dblreq).
                body = &body[..declared];
            }
        }

        if let StartLine::Request { method, .. } = &start
            && let Some((_, cseq_method)) = checked.cseq
            && cseq_method != *method
        {
            // RFC 4475 §3.1.2.18 prefers 501 when the method is unknown as well.
            let status = if known_method(method).is_some() {
                400
            } else {
                501
            };
            self.fail_with(CodecError::CSeq(
                crate::Rejection::new(format!(
                    "method {cseq_method} does not match the request method {method}"
                ))
                .with_status(status),
            ));
        }

        let top_via = checked.top_via;
        let headers = Headers::from(headers);
        match start {
            StartLine::Request {
                method,
                uri,
                answerable,
            } => match (self.fault, uri) {
                (None, Some(uri)) => Ok(request(method, uri, headers, body.to_vec())),
                (fault, _) => {
                    let error = fault.unwrap_or_else(|| {
                        crate::error::fault(CodecError::RequestUri, "unreadable Request-URI")
                    });
                    Err(if answerable && top_via {
                        error.answerable(headers)
                    } else {
                        error
                    })
                }
            },
            StartLine::Response { code, reason } => match self.fault {
                Some(error) => Err(error),
                None => Ok(SipMessage::Response(response(
                    code,
                    reason,
                    headers,
                    body.to_vec(),
                ))),
            },
        }
    }

    fn start_line<'a>(&mut self, line: &'a str) -> StartLine<'a> {
        if line
            .get(..4)
            .is_some_and(|v| v.eq_ignore_ascii_case("SIP/"))
        {
            return self.status_line(line);
        }
        // RFC 3261 §7.1: Request-Line = Method SP Request-URI SP SIP-Version CRLF, single SPs.
        let mut parts = line.split(' ');
        let (method, uri, version) = (parts.next(), parts.next(), parts.next());
        let method = method.unwrap_or_default();
        let ends_in_version = line
            .rsplit(' ')
            .find(|part| !part.is_empty())
            .and_then(|part| part.get(..4))
            .is_some_and(|v| v.eq_ignore_ascii_case("SIP/"));
        let answerable = is_token(method) && method != "ACK" && ends_in_version;
        let (Some(uri), Some(version), None) = (uri, version, parts.next()) else {
            self.fail(
                CodecError::StartLine,
                "Request-Line is not Method SP Request-URI SP SIP-Version",
            );
            return StartLine::Request {
                method,
                uri: None,
                answerable,
            };
        };
        if !is_token(method) {
            self.fail(CodecError::StartLine, "method is not a token");
        } else if has_stray_control(line) {
            self.fail(
                CodecError::StartLine,
                "control character in the Request-Line",
            );
        } else if !version.eq_ignore_ascii_case("SIP/2.0") {
            if is_version(version) {
                self.fail_with(CodecError::Version(
                    crate::Rejection::new(version.to_owned()).with_status(505),
                ));
            } else {
                self.fail(CodecError::StartLine, "malformed SIP-Version");
            }
        }
        let uri = match crate::uri::request_uri(uri) {
            Ok(uri) => Some(uri),
            Err(reason) => {
                self.fail(CodecError::RequestUri, reason);
                None
            }
        };
        StartLine::Request {
            method,
            uri,
            answerable,
        }
    }

    fn status_line<'a>(&mut self, line: &'a str) -> StartLine<'a> {
        // RFC 3261 §7.2: Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF.
        let (version, rest) = line.split_once(' ').unwrap_or((line, ""));
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        if !version.eq_ignore_ascii_case("SIP/2.0") {
            self.fail_with(CodecError::Version(
                crate::Rejection::new(version.to_owned()).with_status(505),
            ));
        }
        let code = match code.parse::<u16>() {
            Ok(n) if code.len() == 3 && (100..=699).contains(&n) => n,
            _ => {
                self.fail(
                    CodecError::StartLine,
                    "status code is not three digits from 100 to 699",
                );
                0
            }
        };
        if has_stray_control(reason) {
            self.fail(
                CodecError::StartLine,
                "control character in the Reason-Phrase",
            );
        }
        StartLine::Response { code, reason }
    }

    fn header_fields(&mut self, lines: &str) -> Vec<Header> {
        let mut headers = Vec::with_capacity(32);
        let mut fields = Fields::new(lines);
        for line in &mut fields {
            match line {
                Line::Malformed(reason) => self.fail(CodecError::MalformedHeader, reason),
                Line::Field { name, value } => {
                    if has_stray_control(&value) {
                        self.fail(
                            CodecError::MalformedHeader,
                            format!("control character in {name}"),
                        );
                    }
                    self.push(&mut headers, name, value);
                }
            }
        }
        if fields.bare_lf {
            self.fail(CodecError::Framing, "a line ends in LF without CR");
        }
        headers
    }

    fn push(&mut self, headers: &mut Vec<Header>, name: &str, value: Cow<'_, str>) {
        let is = |long: &str, short: &str| {
            name.eq_ignore_ascii_case(long) || name.eq_ignore_ascii_case(short)
        };
        let (single, header) = if is("Via", "v") {
            // Whitespace around '/', ';', '=', ':', ',' is insignificant (RFC 3261 §20.42, §25.1);
            // removing it lets rsipstack see `branch` in `branch = z9hG4bK...` (RFC 4475 wsinv).
            // Comma-joined Vias become one Header::Via each, in order (RFC 3261 §7.3.1).
            for entry in split_list(&tidy(&value, b";=/:,")) {
                if entry.is_empty() {
                    self.fail(CodecError::Via, "empty Via entry");
                } else {
                    headers.push(Header::Via(Via::new(entry)));
                }
            }
            return;
        } else if is("From", "f") {
            let v = tidy(&value, b";=,").into_owned();
            (Some(Single::From), Header::From(From::new(v)))
        } else if is("To", "t") {
            let v = tidy(&value, b";=,").into_owned();
            (Some(Single::To), Header::To(To::new(v)))
        } else if is("Contact", "m") {
            let v = tidy(&value, b";=,").into_owned();
            (None, Header::Contact(Contact::new(v)))
        } else if is("Call-ID", "i") {
            (Some(Single::CallId), Header::CallId(CallId::new(value)))
        } else if name.eq_ignore_ascii_case("CSeq") {
            let v = tidy(&value, b"").into_owned();
            (Some(Single::CSeq), Header::CSeq(CSeq::new(v)))
        } else if is("Content-Length", "l") {
            (
                Some(Single::ContentLength),
                Header::ContentLength(ContentLength::new(value)),
            )
        } else if name.eq_ignore_ascii_case("Max-Forwards") {
            (
                Some(Single::MaxForwards),
                Header::MaxForwards(MaxForwards::new(value)),
            )
        } else {
            (None, make_header(long_name(name), value.into_owned()))
        };
        if let Some(single) = single {
            if let Some(&(_, first)) = self.singles.iter().find(|(s, _)| *s == single) {
                if headers[first].value() != header.value() {
                    let kind = match single {
                        Single::ContentLength => CodecError::ContentLength,
                        _ => CodecError::ConflictingHeader,
                    };
                    self.fail(
                        kind,
                        format!("two different {} header fields", header.name()),
                    );
                }
                return;
            }
            self.singles.push((single, headers.len()));
        }
        headers.push(header);
    }

    /// Checks the header fields every request and response must carry right (RFC 3261 §8.1.1,
    /// §20) and returns what the rest of the reading needs.
    fn check<'h>(&mut self, headers: &'h [Header]) -> Checked<'h> {
        let mut checked = Checked::default();
        const MANDATORY: [&str; 5] = ["Via", "From", "To", "Call-ID", "CSeq"];
        let mut present = [false; 5];
        for header in headers {
            let slot = match header {
                Header::Via(_) => 0,
                Header::From(_) => 1,
                Header::To(_) => 2,
                Header::CallId(_) => 3,
                Header::CSeq(_) => 4,
                _ => continue,
            };
            present[slot] = true;
        }
        if present.contains(&false) {
            let missing: Vec<&str> = MANDATORY
                .iter()
                .zip(present)
                .filter_map(|(name, present)| (!present).then_some(*name))
                .collect();
            self.fail(CodecError::MissingHeader, missing.join(", "));
        }

        let mut first_via = true;
        for header in headers {
            match header {
                Header::Via(via) => {
                    if let Err(reason) = via_entry(via.value()) {
                        self.fail(CodecError::Via, reason);
                    }
                    if std::mem::take(&mut first_via) {
                        // The reply goes to the top Via's sent-by (RFC 3261 §18.2.2).
                        checked.top_via = typed::Via::parse(via.value()).is_ok();
                        if !checked.top_via {
                            self.fail(CodecError::Via, "unreadable top Via");
                        }
                    }
                }
                Header::From(from) => self.address("From", from.value()),
                Header::To(to) => self.address("To", to.value()),
                Header::Contact(contact) if contact.value() != "*" => {
                    for entry in split_list(contact.value()) {
                        if let Err(reason) = name_addr(entry) {
                            self.fail(CodecError::MalformedHeader, format!("Contact: {reason}"));
                        }
                    }
                }
                Header::CallId(call_id) if !is_call_id(call_id.value()) => {
                    self.fail(CodecError::MalformedHeader, "Call-ID is not word[@word]");
                }
                Header::CSeq(cseq) => match crate::fields::read_cseq(cseq.value()) {
                    Some(pair) => checked.cseq = Some(pair),
                    None => self.fail(
                        CodecError::CSeq,
                        "not a 32-bit unsigned number and a method token",
                    ),
                },
                Header::MaxForwards(mf)
                    if crate::fields::read_max_forwards(mf.value()).is_none() =>
                {
                    // RFC 3261 §20.22: 0-255.
                    self.fail(CodecError::MalformedHeader, "Max-Forwards is not 0-255");
                }
                Header::ContentLength(cl) => {
                    let value = cl.value();
                    match value.parse::<usize>() {
                        Ok(n) if value.bytes().all(|b| b.is_ascii_digit()) => {
                            checked.content_length = Some(n);
                        }
                        _ => self.fail(
                            CodecError::ContentLength,
                            format!("{value:?} is not a length"),
                        ),
                    }
                }
                // RFC 3261 §20.17: SIP-date is an RFC 1123 date, always in GMT (RFC 4475 baddate).
                Header::Date(date) if !date.value().ends_with(" GMT") => {
                    self.fail(CodecError::MalformedHeader, "Date is not in GMT");
                }
                _ => {}
            }
        }
        checked
    }

    fn address(&mut self, name: &str, value: &str) {
        if let Err(reason) = name_addr(value) {
            self.fail(CodecError::MalformedHeader, format!("{name}: {reason}"));
        }
    }
}

#[derive(Default)]
struct Checked<'h> {
    top_via: bool,
    cseq: Option<(u32, &'h str)>,
    content_length: Option<usize>,
}

/// RFC 3261 §20.42: via-parm = sent-protocol LWS sent-by *( SEMI via-params ), on a value whose
/// whitespace [`tidy`] made canonical.
fn via_entry(value: &str) -> Result<(), &'static str> {
    let (protocol, rest) = split_byte(value, b' ').ok_or("no sent-by")?;
    let mut parts = protocol.split('/');
    let well_formed = parts.by_ref().take(3).filter(|p| is_token(p)).count() == 3;
    if !well_formed || parts.next().is_some() {
        return Err("sent-protocol is not name/version/transport");
    }
    let (sent_by, params) = rest.split_at(find_byte(rest, b';').unwrap_or(rest.len()));
    let host = sent_by.rsplit_once(':').map_or(sent_by, |(host, _)| host);
    let host_ok = sent_by.starts_with('[')
        || (!host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    if !host_ok || rsipstack::sip::HostWithPort::try_from(sent_by).is_err() {
        return Err("malformed sent-by");
    }
    check_params(params).map_err(|_| "malformed Via parameter")
}

/// RFC 3261 §25.1: SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT.
fn is_version(text: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    text.get(4..)
        .and_then(|v| v.split_once('.'))
        .is_some_and(|(major, minor)| digits(major) && digits(minor))
}

/// The rsipstack method a request line names, compared case-sensitively (RFC 3261 §25.1).
pub(crate) fn known_method(method: &str) -> Option<Method> {
    Some(match method {
        "ACK" => Method::Ack,
        "BYE" => Method::Bye,
        "CANCEL" => Method::Cancel,
        "INFO" => Method::Info,
        "INVITE" => Method::Invite,
        "MESSAGE" => Method::Message,
        "NOTIFY" => Method::Notify,
        "OPTIONS" => Method::Options,
        "PRACK" => Method::PRack,
        "PUBLISH" => Method::Publish,
        "REFER" => Method::Refer,
        "REGISTER" => Method::Register,
        "SUBSCRIBE" => Method::Subscribe,
        "UPDATE" => Method::Update,
        _ => return None,
    })
}

/// Compact forms rsipstack's `make_header` does not know (RFC 3265, 3841, 4474).
fn long_name(name: &str) -> &str {
    match name.as_bytes() {
        [b'u' | b'U'] => "Allow-Events",
        [b'a' | b'A'] => "Accept-Contact",
        [b'j' | b'J'] => "Reject-Contact",
        [b'd' | b'D'] => "Request-Disposition",
        [b'y' | b'Y'] => "Identity",
        [b'n' | b'N'] => "Identity-Info",
        _ => name,
    }
}

fn request(method: &str, uri: Uri, headers: Headers, body: Vec<u8>) -> SipMessage {
    match known_method(method) {
        Some(method) => SipMessage::Request(Request {
            method,
            uri,
            version: Version::V2,
            headers,
            body,
        }),
        None => SipMessage::Extension(ExtensionRequest {
            method: method.to_owned(),
            uri,
            headers,
            body,
        }),
    }
}

fn response(code: u16, reason: &str, headers: Headers, body: Vec<u8>) -> Response {
    let status_code = StatusCode::from(code);
    let status_code = match status_code {
        // An unknown code keeps its phrase in StatusCode::Other.
        StatusCode::Other(..) => StatusCode::Other(code, reason.to_owned()),
        known => known,
    };
    let wire_reason = (!reason.is_empty()
        && !matches!(status_code, StatusCode::Other(..))
        && !reason.eq_ignore_ascii_case(status_code.text()))
    .then(|| reason.to_owned());
    Response {
        status_code,
        wire_reason,
        version: Version::V2,
        headers,
        body,
    }
}
