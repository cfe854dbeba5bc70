//! The header values the B2BUA reads on every message, read straight from the header text without
//! allocating (a user part with %-escapes is the one exception).
//!
//! Prefer these to rsipstack's typed From/To/Via: its URI reader splits a user part at ';' or '?'
//! (`sip:user;par=x@host` reads as host `user`), and it does not find `branch` or `tag` written
//! with whitespace around '=' when the model was not built by [`crate::parse`].

use std::borrow::Cow;

use rsipstack::sip::{HasHeaders, Header, Headers, Host, Request, Scheme};

use crate::grammar::{find_byte, name_addr, param, percent_decode, split_list, trim_lws, uri_user};

fn first(message: &impl HasHeaders, pick: fn(&Header) -> Option<&str>) -> Option<&str> {
    message.headers().iter().find_map(pick)
}

/// The branch of the top Via: the transaction key (RFC 3261 §17.2.3). None for an RFC 2543 Via
/// without one.
pub fn top_via_branch(message: &impl HasHeaders) -> Option<&str> {
    branch_in(message.headers())
}

pub(crate) fn branch_in(headers: &Headers) -> Option<&str> {
    let via = headers.iter().find_map(|h| match h {
        Header::Via(v) => Some(v.value()),
        _ => None,
    })?;
    let entry = split_list(via).next()?;
    param(&entry[find_byte(entry, b';')?..], "branch")
}

/// The sent-by (`host[:port]`) of the top Via: with the branch and the method, the key of a
/// server transaction (RFC 3261 §17.2.3).
pub fn top_via_sent_by(message: &impl HasHeaders) -> Option<&str> {
    let via = first(message, |h| match h {
        Header::Via(v) => Some(v.value()),
        _ => None,
    })?;
    let entry = split_list(via).next()?;
    let entry = &entry[..find_byte(entry, b';').unwrap_or(entry.len())];
    // §20.42: sent-protocol is name/version/transport, slashes maybe with LWS around them.
    let transport_on = entry.splitn(3, '/').nth(2)?.trim_start();
    let (_, sent_by) = transport_on.split_once(|c: char| c.is_ascii_whitespace())?;
    let sent_by = sent_by.trim();
    (!sent_by.is_empty()).then_some(sent_by)
}

pub fn call_id(message: &impl HasHeaders) -> Option<&str> {
    call_id_in(message.headers())
}

pub(crate) fn call_id_in(headers: &Headers) -> Option<&str> {
    headers
        .iter()
        .find_map(|h| match h {
            Header::CallId(v) => Some(v.value()),
            _ => None,
        })
        .map(trim_lws)
}

/// CSeq number and method token (the method as written: it may be an extension method).
pub fn cseq(message: &impl HasHeaders) -> Option<(u32, &str)> {
    read_cseq(first(message, |h| match h {
        Header::CSeq(v) => Some(v.value()),
        _ => None,
    })?)
}

pub fn from_tag(message: &impl HasHeaders) -> Option<&str> {
    from_tag_in(message.headers())
}

pub(crate) fn from_tag_in(headers: &Headers) -> Option<&str> {
    let from = headers.iter().find_map(|h| match h {
        Header::From(v) => Some(v.value()),
        _ => None,
    })?;
    param(name_addr(from).ok()?.params, "tag")
}

pub fn to_tag(message: &impl HasHeaders) -> Option<&str> {
    param(name_addr(to_value(message)?).ok()?.params, "tag")
}

/// The user of a sip/sips From URI (%-escapes decoded), or the number of a tel URI.
pub fn from_user(message: &impl HasHeaders) -> Option<Cow<'_, str>> {
    decoded_user(name_addr(from_value(message)?).ok()?.uri)
}

/// The user of a sip/sips To URI (%-escapes decoded), or the number of a tel URI.
pub fn to_user(message: &impl HasHeaders) -> Option<Cow<'_, str>> {
    decoded_user(name_addr(to_value(message)?).ok()?.uri)
}

/// The user of a sip/sips Request-URI (already decoded by [`crate::parse`]), or the number of a
/// tel Request-URI.
pub fn request_uri_user(request: &Request) -> Option<&str> {
    match (&request.uri.scheme, &request.uri.host_with_port.host) {
        (Some(Scheme::Other(scheme)), Host::Domain(number))
            if scheme.eq_ignore_ascii_case("tel") =>
        {
            Some(number.0.as_str())
        }
        (Some(Scheme::Other(_)), _) | (None, _) => None,
        _ => request.uri.user(),
    }
}

/// Max-Forwards, None when absent (RFC 3261 §16.6 then treats it as 70 when forwarding).
pub fn max_forwards(message: &impl HasHeaders) -> Option<u8> {
    read_max_forwards(first(message, |h| match h {
        Header::MaxForwards(v) => Some(v.value()),
        _ => None,
    })?)
}

fn from_value(message: &impl HasHeaders) -> Option<&str> {
    first(message, |h| match h {
        Header::From(v) => Some(v.value()),
        _ => None,
    })
}

fn to_value(message: &impl HasHeaders) -> Option<&str> {
    first(message, |h| match h {
        Header::To(v) => Some(v.value()),
        _ => None,
    })
}

fn decoded_user(uri: &str) -> Option<Cow<'_, str>> {
    let user = uri_user(uri)?;
    Some(percent_decode(user).unwrap_or(Cow::Borrowed(user)))
}

/// RFC 3261 §20.16: CSeq = 1*DIGIT LWS Method, the number a 32-bit unsigned integer (§8.1.1.5).
pub(crate) fn read_cseq(value: &str) -> Option<(u32, &str)> {
    let (number, method) = trim_lws(value).split_once([' ', '\t'])?;
    let method = trim_lws(method);
    let digits = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
    (digits && crate::grammar::is_token(method)).then_some(())?;
    Some((number.parse().ok()?, method))
}

/// RFC 3261 §20.22: Max-Forwards = 1*DIGIT, 0-255.
pub(crate) fn read_max_forwards(value: &str) -> Option<u8> {
    let value = trim_lws(value);
    let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| value.parse().ok()).flatten()
}
