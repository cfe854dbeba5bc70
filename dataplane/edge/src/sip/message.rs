//! Writing the messages the edge sends. Every request and response leaving the edge is built here
//! from the edge's own identifiers plus a short list of headers copied from the other leg, so
//! nothing of one side's topology reaches the other (RFC 3261 §16 does not apply: we are a B2BUA).

use std::fmt::Write as _;

/// Methods the edge accepts (RFC 3261 §20.5).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, PRACK, UPDATE, INFO";

/// Headers copied from one leg to the other (everything else is dropped: topology hiding).
pub const COPIED_HEADERS: &[&str] = &[
    "Content-Type",
    "Content-Disposition",
    "Allow",
    "Supported",
    "Require",
    "Session-Expires",
    "Min-SE",
    "Accept",
    "RSeq",
    "Reason",
    "Privacy",
    "Event",
    "Subscription-State",
    "Info-Package",
    "Recv-Info",
];

/// The extension options the edge passes through in Require/Supported.
pub fn copy_header(name: &str) -> bool {
    COPIED_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// A SIP message under construction.
pub struct Builder {
    buf: String,
}

impl Builder {
    /// `METHOD uri SIP/2.0`.
    pub fn request(method: &str, ruri: &str) -> Self {
        let mut buf = String::with_capacity(1024);
        let _ = write!(buf, "{method} {ruri} SIP/2.0\r\n");
        Self { buf }
    }

    /// A request the edge sends: request line, its Via value and `Max-Forwards: 70` (RFC 3261
    /// §8.1.1).
    pub fn request_via(method: &str, ruri: &str, via: &str) -> Self {
        Self::request(method, ruri)
            .header("Via", via)
            .header("Max-Forwards", "70")
    }

    /// The transaction's identity after Via: `ident` (its From and Call-ID lines), To and
    /// `CSeq: cseq method`.
    pub fn ids(self, ident: &str, to: &str, cseq: u32, method: &str) -> Self {
        self.raw(ident)
            .header("To", to)
            .header("CSeq", &format!("{cseq} {method}"))
    }

    /// `SIP/2.0 code reason`.
    pub fn response(code: u16, reason: &str) -> Self {
        let mut buf = String::with_capacity(768);
        let _ = write!(buf, "SIP/2.0 {code} {reason}\r\n");
        Self { buf }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.push(name, value);
        self
    }

    pub fn push(&mut self, name: &str, value: &str) {
        // Header values never carry raw line breaks: a value from the network that did would
        // inject headers. The codec unfolds, so this only guards our own mistakes.
        let clean = value.contains(['\r', '\n']);
        self.buf.push_str(name);
        self.buf.push_str(": ");
        if clean {
            self.buf.push_str(&value.replace(['\r', '\n'], " "));
        } else {
            self.buf.push_str(value);
        }
        self.buf.push_str("\r\n");
    }

    /// Lines already formatted as `Name: value\r\n`.
    pub fn raw(mut self, lines: &str) -> Self {
        self.buf.push_str(lines);
        self
    }

    /// Ends the headers with a correct Content-Length and appends the body.
    pub fn body(self, body: &[u8]) -> Vec<u8> {
        let mut out = self.buf.into_bytes();
        let _ = std::io::Write::write_fmt(
            &mut out,
            format_args!("Content-Length: {}\r\n\r\n", body.len()),
        );
        out.extend_from_slice(body);
        out
    }

    pub fn finish(self) -> Vec<u8> {
        self.body(&[])
    }
}

/// A request the edge built, sent again with credentials (RFC 3261 §22.2, §8.1.3.5): a new
/// branch (a new transaction), CSeq `cseq`, earlier `Authorization`/`Proxy-Authorization` lines
/// dropped and `auth_line` added. None when `sent` is not a request this module wrote with
/// `branch`.
pub fn resend_with(
    sent: &[u8],
    branch: &str,
    new_branch: &str,
    cseq: u32,
    auth_line: &str,
) -> Option<Vec<u8>> {
    let split = sent.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&sent[..split + 2]).ok()?;
    let body = &sent[split + 4..];
    let mut out = String::with_capacity(head.len() + auth_line.len() + 16);
    let mut lines = head.split_inclusive("\r\n");
    out.push_str(lines.next()?);
    let mut via_done = false;
    let mut content_length = None;
    for line in lines {
        let name = line.split(':').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("Authorization")
            || name.eq_ignore_ascii_case("Proxy-Authorization")
        {
            continue;
        }
        if !via_done && name.eq_ignore_ascii_case("Via") {
            via_done = true;
            let old = format!(";branch={branch}");
            if !line.contains(&old) {
                return None;
            }
            out.push_str(&line.replacen(&old, &format!(";branch={new_branch}"), 1));
        } else if name.eq_ignore_ascii_case("CSeq") {
            let method = line.split_whitespace().nth(2)?;
            let _ = write!(out, "CSeq: {cseq} {method}\r\n");
        } else if name.eq_ignore_ascii_case("Content-Length") {
            content_length = Some(line);
        } else {
            out.push_str(line);
        }
    }
    out.push_str(auth_line);
    out.push_str(content_length?);
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    via_done.then_some(bytes)
}

/// A Via value for a request we send (RFC 3261 §18.1.1: sent-by is where responses come back).
pub fn via(transport: &str, host_port: &str, branch: &str) -> String {
    format!("SIP/2.0/{transport} {host_port};branch={branch};rport")
}

/// `"Display" <uri>;tag=x` (RFC 3261 §20.20, §20.39).
pub fn name_addr(display: Option<&str>, uri: &str, tag: Option<&str>) -> String {
    let mut s = String::with_capacity(uri.len() + 40);
    if let Some(d) = display.filter(|d| !d.is_empty()) {
        s.push('"');
        for c in d
            .chars()
            .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        {
            s.push(c);
        }
        s.push_str("\" ");
    }
    s.push('<');
    s.push_str(uri);
    s.push('>');
    if let Some(t) = tag {
        s.push_str(";tag=");
        s.push_str(t);
    }
    s
}

/// A Warning value (RFC 3261 §20.43, code 399 "miscellaneous") saying why in words.
pub fn warning(agent: &str, text: &str) -> String {
    let text: String = text
        .chars()
        .filter(|c| *c != '"' && !c.is_control())
        .collect();
    format!("399 {agent} \"{text}\"")
}

/// The standard reason phrase for the codes the edge sends itself.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        422 => "Session Interval Too Small",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        603 => "Decline",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_with_content_length_and_no_injection() {
        let msg = Builder::request("INVITE", "sip:+6498879333@10.0.0.1:5060")
            .header("Via", &via("UDP", "10.0.0.2:5070", "z9hG4bKx"))
            .header("Subject", "evil\r\nX-Injected: 1")
            .body(b"v=0\r\n");
        let text = String::from_utf8_lossy(&msg);
        assert!(text.starts_with("INVITE sip:+6498879333@10.0.0.1:5060 SIP/2.0\r\n"));
        assert!(text.contains("Via: SIP/2.0/UDP 10.0.0.2:5070;branch=z9hG4bKx;rport\r\n"));
        assert!(!text.contains("\r\nX-Injected"));
        assert!(text.ends_with("Content-Length: 5\r\n\r\nv=0\r\n"));
        assert_eq!(
            name_addr(Some("A \"B\""), "sip:x@y", Some("t")),
            "\"A B\" <sip:x@y>;tag=t"
        );
    }

    #[test]
    fn a_challenged_request_goes_again_with_credentials_and_a_new_transaction() {
        let sent = Builder::request_via("BYE", "sip:c@10.0.0.1", &via("UDP", "e:5060", "z9hG4bKa"))
            .ids(
                "From: <sip:a@e>;tag=1\r\nCall-ID: x\r\n",
                "<sip:b@c>;tag=2",
                7,
                "BYE",
            )
            .header("Proxy-Authorization", "Digest old")
            .body(b"v=0\r\n");
        let again = resend_with(
            &sent,
            "z9hG4bKa",
            "z9hG4bKb",
            8,
            "Proxy-Authorization: Digest new\r\n",
        )
        .expect("our own request");
        let text = String::from_utf8_lossy(&again);
        assert!(
            text.starts_with(
                "BYE sip:c@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP e:5060;branch=z9hG4bKb;rport\r\n"
            ),
            "{text}"
        );
        assert!(text.contains("CSeq: 8 BYE\r\n"), "{text}");
        assert!(!text.contains("Digest old"), "{text}");
        assert!(
            text.ends_with("Proxy-Authorization: Digest new\r\nContent-Length: 5\r\n\r\nv=0\r\n"),
            "{text}"
        );
        assert!(resend_with(&sent, "z9hG4bKother", "z9hG4bKb", 8, "").is_none());
        assert!(resend_with(b"garbage", "z9hG4bKa", "z9hG4bKb", 8, "").is_none());
    }
}
