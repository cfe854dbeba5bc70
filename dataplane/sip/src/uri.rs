//! The Request-URI, read at the boundary because rsipstack's `parse_uri` splits a sip URI at the
//! first ';' or '?' even inside the user part (RFC 4475 semiuri, intmeth) and keeps %-escapes
//! that its `Display` then escapes a second time (esc01).

use rsipstack::sip::uri::{OtherParam, OtherParamValue, Param};
use rsipstack::sip::{Auth, HostWithPort, Scheme, Uri, parse_uri};

use crate::grammar::{is_uri_byte, percent_decode, scheme, split_byte};

/// Reads a Request-URI (RFC 3261 §25.1: SIP-URI / SIPS-URI / absoluteURI).
pub(crate) fn request_uri(text: &str) -> Result<Uri, &'static str> {
    // RFC 3261 §25.1 / RFC 3986 §2: no whitespace, controls, '<', '>', '"' or other excluded
    // characters; a Request-URI in <> is refused here (RFC 4475 ltgtruri).
    if !text.bytes().all(is_uri_byte) {
        return Err("a Request-URI never holds '<', '>', '\"' or whitespace");
    }
    let name = scheme(text).ok_or("Request-URI without a scheme")?;
    let scheme = if name.eq_ignore_ascii_case("sip") {
        Scheme::Sip
    } else if name.eq_ignore_ascii_case("sips") {
        Scheme::Sips
    } else {
        // Another scheme is legal; the caller answers 416 (RFC 3261 §8.2.2.1).
        return parse_uri(text).map_err(|_| "unreadable Request-URI");
    };
    sip_uri(scheme, &text[name.len() + 1..])
}

fn sip_uri(scheme: Scheme, rest: &str) -> Result<Uri, &'static str> {
    // RFC 3261 §25.1: '@' is never unescaped outside the userinfo, so the first one ends it.
    let (userinfo, hostpart) = match split_byte(rest, b'@') {
        Some((userinfo, hostpart)) => (Some(userinfo), hostpart),
        None => (None, rest),
    };
    if hostpart.contains('@') {
        return Err("more than one '@' in the Request-URI");
    }
    let end = hostpart.find([';', '?']).unwrap_or(hostpart.len());
    let (hostport, tail) = hostpart.split_at(end);
    if tail.contains('?') {
        // RFC 3261 §19.1.1, Table 1: headers are not allowed in a Request-URI (RFC 4475 escruri).
        return Err("headers are not allowed in a Request-URI");
    }
    // rsipstack takes any text as a domain name; RFC 3261 §25.1 hostnames are alphanum, '-', '.'.
    // An IPv6 reference is left to rsipstack, which parses it.
    let name = hostport.rsplit_once(':').map_or(hostport, |(host, _)| host);
    if !hostport.starts_with('[')
        && !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err("malformed host in the Request-URI");
    }
    let host_with_port = HostWithPort::try_from(hostport)
        .map_err(|_| "malformed host or port in the Request-URI")?;
    let auth = match userinfo {
        None => None,
        Some("") => return Err("empty user part in the Request-URI"),
        // rsipstack's Auth holds the decoded user and %-escapes it again when displayed.
        Some(userinfo) => {
            let (user, password) = match split_byte(userinfo, b':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            let decode = |s| percent_decode(s).ok_or("malformed %-escape in the user part");
            Some(Auth {
                user: decode(user)?.into_owned(),
                password: password.map(decode).transpose()?.map(|p| p.into_owned()),
            })
        }
    };
    let params = tail
        .split(';')
        .filter(|p| !p.is_empty())
        .map(uri_param)
        .collect();
    Ok(Uri {
        scheme: Some(scheme),
        auth,
        host_with_port,
        params,
        headers: Vec::new(),
    })
}

/// rsipstack refuses `transport=` and `method=` values it does not know, though both are open
/// tokens (RFC 3261 §19.1.1); those stay as untyped parameters.
fn uri_param(text: &str) -> Param {
    text.parse().unwrap_or_else(|_| {
        let (name, value) = match text.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (text, None),
        };
        Param::Other(OtherParam::new(name), value.map(OtherParamValue::new))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn user_parts_with_semicolons_and_escapes_survive_a_round_trip() {
        for text in [
            "sip:user;par=u%40example.net@example.com",
            "sip:I%20have%20spaces@example.net;transport=TCP",
            "sip:+15551234567@[2001:db8::1]:5060;user=phone",
            "sips:alice:secret@example.com",
            "sip:example.com;transport=sctp-tls",
        ] {
            assert_eq!(request_uri(text).unwrap().to_string(), text);
        }
        let uri = request_uri("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(uri.user(), Some("user;par=u@example.net"));
        assert_eq!(uri.host().to_string(), "example.com");
    }

    #[test]
    fn malformed_request_uris_are_refused() {
        for text in [
            "<sip:user@example.com>",
            "sip:user@example.com?Route=%3Csip:example.com%3E",
            "sip:@example.com",
            "sip:bob@",
            "sip:a@b@c",
            "user@example.com",
            "sip:%ZZ@example.com",
            "sip:exa_mple.com",
        ] {
            assert!(request_uri(text).is_err(), "{text}");
        }
    }
}
