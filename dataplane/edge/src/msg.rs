//! Reading what the edge needs from a parsed message (the codec's model) and from header values.

use rsip_model::{HasHeaders, Header, Method};

pub use trunkgate_sip::model as rsip_model;

/// The method of a request as written.
pub fn method_name(m: &Method) -> &'static str {
    match m {
        Method::Ack => "ACK",
        Method::Bye => "BYE",
        Method::Cancel => "CANCEL",
        Method::Info => "INFO",
        Method::Invite => "INVITE",
        Method::Message => "MESSAGE",
        Method::Notify => "NOTIFY",
        Method::Options => "OPTIONS",
        Method::PRack => "PRACK",
        Method::Publish => "PUBLISH",
        Method::Refer => "REFER",
        Method::Register => "REGISTER",
        Method::Subscribe => "SUBSCRIBE",
        Method::Update => "UPDATE",
    }
}

/// The first value of a header, by name, case-insensitively.
pub fn header<'m>(m: &'m impl HasHeaders, name: &str) -> Option<&'m str> {
    m.headers()
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .map(Header::value)
}

/// Every value of a header, in order.
pub fn headers<'m>(m: &'m impl HasHeaders, name: &'m str) -> impl Iterator<Item = &'m str> + 'm {
    m.headers()
        .iter()
        .filter(move |h| h.name().eq_ignore_ascii_case(name))
        .map(Header::value)
}

/// Every entry of a list header (`Record-Route`, `Route`), across repeated fields and
/// comma-joined values, in order (RFC 3261 §7.3.1).
pub fn list(m: &impl HasHeaders, name: &str) -> Vec<String> {
    headers(m, name)
        .flat_map(trunkgate_sip::list_entries)
        .map(str::to_string)
        .collect()
}

/// The URI inside a name-addr or addr-spec value (`"A" <sip:x@y>;tag=1` → `sip:x@y`).
pub fn uri_of(value: &str) -> &str {
    let v = value.trim();
    if let (Some(a), Some(b)) = (v.find('<'), v.find('>'))
        && a < b
    {
        return &v[a + 1..b];
    }
    v.split(';').next().unwrap_or(v).trim()
}

/// The display name of a name-addr, unquoted.
pub fn display_of(value: &str) -> Option<&str> {
    let v = value.trim();
    let lt = v.find('<')?;
    let d = v[..lt].trim().trim_matches('"').trim();
    (!d.is_empty()).then_some(d)
}

/// The user part of a sip:, sips: or tel: URI, without user parameters.
pub fn user_of(uri: &str) -> Option<&str> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
        .or_else(|| uri.strip_prefix("tel:"));
    let rest = rest?;
    let user = if uri.starts_with("tel:") {
        rest
    } else {
        &rest[..rest.find('@')?]
    };
    Some(user.split([';', '?']).next().unwrap_or(user))
}

/// The host of a sip: URI (lower-case not applied), without port or parameters.
pub fn host_of(uri: &str) -> Option<&str> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = hostport.split([';', '?']).next().unwrap_or(hostport);
    if let Some(v6) = hostport.strip_prefix('[') {
        return v6.split(']').next();
    }
    Some(hostport.split(':').next().unwrap_or(hostport))
}

/// A parameter of a header value or URI (`;name=value`), case-insensitive name.
pub fn param<'v>(value: &'v str, name: &str) -> Option<&'v str> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Headers of `m` that the edge copies to the other leg, as `Name: value\r\n` lines.
pub fn copied_lines(m: &impl HasHeaders) -> String {
    let mut s = String::new();
    for h in m.headers().iter() {
        if crate::message::copy_header(h.name()) {
            s.push_str(h.name());
            s.push_str(": ");
            s.push_str(h.value());
            s.push_str("\r\n");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_helpers() {
        assert_eq!(
            uri_of("\"Alice\" <sip:+6498879333@carrier.example;user=phone>;tag=abc"),
            "sip:+6498879333@carrier.example;user=phone"
        );
        assert_eq!(uri_of("sip:bob@example.com;tag=1"), "sip:bob@example.com");
        assert_eq!(display_of("\"Alice\" <sip:a@b>"), Some("Alice"));
        assert_eq!(display_of("<sip:a@b>"), None);
        assert_eq!(
            user_of("sip:+6498879333;npdi@carrier.example;user=phone"),
            Some("+6498879333")
        );
        assert_eq!(
            user_of("tel:+6498879333;phone-context=x"),
            Some("+6498879333")
        );
        assert_eq!(user_of("sip:carrier.example"), None);
        assert_eq!(
            host_of("sip:+649@Acme.SIP.example.net:5060;user=phone"),
            Some("Acme.SIP.example.net")
        );
        assert_eq!(host_of("sip:[2001:db8::1]:5060"), Some("2001:db8::1"));
        assert_eq!(param("<sip:a@b>;tag=xyz;foo", "TAG"), Some("xyz"));
    }
}
