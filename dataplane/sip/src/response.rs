//! Responses built from a request (RFC 3261 §8.2.6).

use rsipstack::sip::{
    ContentLength, HasHeaders, Header, Headers, Response, StatusCode, To, Version, Warning,
};

use crate::grammar::{is_token_byte, name_addr, param};

/// A response to `request` (RFC 3261 §8.2.6): every Via in order, From, Call-ID, CSeq and To copied,
/// `Content-Length: 0`, and the standard reason phrase unless `reason` is given.
///
/// For a status above 100, a To without a tag gets `to_tag`, or when that is None a tag derived
/// from the request's branch, Call-ID and From tag, so that a retransmitted request gets the
/// same reply (RFC 3261 §8.2.6.2). A dialog-creating response should pass its own random tag
/// (RFC 3261 §19.3). Add more header fields by pushing onto `headers`:
///
/// ```
/// # let bytes = b"OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n\
/// # From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n\r\n";
/// # let Ok(trunkgate_sip::SipMessage::Request(request)) = trunkgate_sip::parse(bytes) else { panic!() };
/// use trunkgate_sip::model::{Header, RetryAfter};
/// let mut reply = trunkgate_sip::response_to(&request, 503, None, None);
/// reply.headers.push(Header::RetryAfter(RetryAfter::new("30")));
/// reply.headers.push(trunkgate_sip::warning("edge.example.net", "trunk draining"));
/// let wire = trunkgate_sip::serialize(&reply);
/// ```
pub fn response_to(
    request: &impl HasHeaders,
    status: u16,
    reason: Option<&str>,
    to_tag: Option<&str>,
) -> Response {
    build(request.headers(), status, reason, to_tag)
}

pub(crate) fn build(
    headers: &Headers,
    status: u16,
    reason: Option<&str>,
    to_tag: Option<&str>,
) -> Response {
    let mut out = Vec::with_capacity(8);
    let (mut from, mut to, mut call_id, mut cseq) = (false, false, false, false);
    for header in headers.iter() {
        let copy = match header {
            Header::Via(_) => true,
            Header::From(_) => !std::mem::replace(&mut from, true),
            Header::CallId(_) => !std::mem::replace(&mut call_id, true),
            Header::CSeq(_) => !std::mem::replace(&mut cseq, true),
            // RFC 3261 §8.2.6.1: a 100 Trying echoes Timestamp.
            Header::Timestamp(_) => status == 100,
            Header::To(value) if !std::mem::replace(&mut to, true) => {
                let value = value.value();
                let tagged = match name_addr(value) {
                    Ok(parts) if status > 100 && param(parts.params, "tag").is_none() => {
                        let tag = to_tag.map_or_else(|| stable_tag(headers), str::to_owned);
                        format!("{value};tag={tag}")
                    }
                    _ => value.to_owned(),
                };
                out.push(Header::To(To::new(tagged)));
                false
            }
            _ => false,
        };
        if copy {
            out.push(header.clone());
        }
    }
    out.push(Header::ContentLength(ContentLength::new("0")));
    let reason = reason.map(|r| r.replace(|c: char| c.is_control(), " "));
    let status_code = match StatusCode::from(status) {
        StatusCode::Other(..) => StatusCode::Other(
            status,
            reason
                .clone()
                .unwrap_or_else(|| class_phrase(status).into()),
        ),
        known => known,
    };
    let wire_reason =
        reason.filter(|r| !matches!(status_code, StatusCode::Other(..)) && r != status_code.text());
    Response {
        status_code,
        wire_reason,
        version: Version::V2,
        headers: Headers::from(out),
        body: Vec::new(),
    }
}

/// `Warning: 399 agent "text"` (RFC 3261 §20.43), text escaped as a quoted-string; for the reason
/// of a [`crate::CodecError`] or of a policy refusal.
pub fn warning(agent: &str, text: &str) -> Header {
    let agent: String = agent
        .chars()
        .map(|c| {
            if c.is_ascii() && (is_token_byte(c as u8) || c == ':' || c == '[' || c == ']') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut quoted = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            c if c.is_control() => quoted.push(' '),
            c => quoted.push(c),
        }
    }
    let agent = if agent.is_empty() { "-".into() } else { agent };
    Header::Warning(Warning::new(format!("399 {agent} \"{quoted}\"")))
}

/// FNV-1a over what identifies the request, as 16 hex digits.
fn stable_tag(headers: &Headers) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [
        crate::fields::branch_in(headers),
        crate::fields::call_id_in(headers),
        crate::fields::from_tag_in(headers),
    ] {
        for b in part.unwrap_or_default().bytes().chain([0]) {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

fn class_phrase(status: u16) -> &'static str {
    match status / 100 {
        1 => "Trying",
        2 => "OK",
        3 => "Redirect",
        4 => "Request Failure",
        5 => "Server Failure",
        _ => "Global Failure",
    }
}
