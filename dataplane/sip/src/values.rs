//! Reading header fields and values of a parsed message, on the codec's one grammar
//! (`grammar.rs`): quoted strings and `<...>` are honoured everywhere, so a `;tag=` inside a
//! quoted display name or inside a bracketed URI is never taken for a header parameter.

use rsipstack::sip::{HasHeaders, Header, Method};

use crate::grammar::{self, Params, find_byte, split_byte, trim_lws};

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

/// The first value of a header field, by name, ASCII case-insensitively.
pub fn header<'m>(m: &'m impl HasHeaders, name: &str) -> Option<&'m str> {
    m.headers()
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .map(Header::value)
}

/// Every value of a header field, in order.
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
        .flat_map(grammar::list_entries)
        .map(str::to_string)
        .collect()
}

/// The URI of a name-addr or addr-spec value (`"A" <sip:x@y>;tag=1` → `sip:x@y`), RFC 3261
/// §20.10. A value the grammar refuses gives its text up to the first `;`.
pub fn uri_of(value: &str) -> &str {
    match grammar::name_addr(value) {
        Ok(na) => na.uri,
        Err(_) => {
            let v = trim_lws(value);
            split_byte(v, b';').map_or(v, |(uri, _)| trim_lws(uri))
        }
    }
}

/// The display name of a name-addr, without its quotes (escapes left as written).
pub fn display_of(value: &str) -> Option<&str> {
    let v = trim_lws(value);
    let display = if v.starts_with('"') {
        let end = grammar::quoted_string_end(v.as_bytes())?;
        &v[1..end - 1]
    } else {
        trim_lws(&v[..find_byte(v, b'<')?])
    };
    let display = display.trim();
    (!display.is_empty()).then_some(display)
}

/// A header parameter of a name-addr value (`To`, `From`, `Contact`, `Route`), after the URI.
pub fn header_param<'v>(value: &'v str, name: &str) -> Option<&'v str> {
    let params = grammar::name_addr(value).ok()?.params;
    param_in(params, name)
}

/// A parameter of a `Via` value (`branch`, `received`, `rport`): after the sent-by.
pub fn via_param<'v>(value: &'v str, name: &str) -> Option<&'v str> {
    let v = trim_lws(value);
    param_in(&v[find_byte(v, b';')?..], name)
}

/// A URI parameter (`lr`, `transport`): between the host part and any `?headers`.
pub fn uri_param<'v>(uri: &'v str, name: &str) -> Option<&'v str> {
    let uri = split_byte(uri, b'?').map_or(uri, |(u, _)| u);
    param_in(&uri[find_byte(uri, b';')?..], name)
}

/// `name` among `;`-parameters: Some("") for a parameter without a value.
fn param_in<'v>(params: &'v str, name: &str) -> Option<&'v str> {
    Params(params)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.unwrap_or(""))
}

/// The user part of a sip:, sips: or tel: URI, without user parameters.
pub fn user_of(uri: &str) -> Option<&str> {
    let user = grammar::uri_user(uri)?;
    Some(user.split([';', '?']).next().unwrap_or(user))
}

/// The host of a sip: or sips: URI as written, without port or parameters (IPv6 without
/// brackets).
pub fn host_of(uri: &str) -> Option<&str> {
    let (scheme, rest) = split_byte(uri, b':')?;
    if !(scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips")) {
        return None;
    }
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = hostport.split([';', '?']).next().unwrap_or(hostport);
    if let Some(v6) = hostport.strip_prefix('[') {
        return v6.split(']').next();
    }
    Some(hostport.split(':').next().unwrap_or(hostport))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_and_display_of_name_addrs() {
        assert_eq!(
            uri_of("\"Alice\" <sip:+6498879333@carrier.example;user=phone>;tag=abc"),
            "sip:+6498879333@carrier.example;user=phone"
        );
        assert_eq!(uri_of("sip:bob@example.com;tag=1"), "sip:bob@example.com");
        assert_eq!(uri_of("  <sip:p.example;lr>  "), "sip:p.example;lr");
        assert_eq!(display_of("\"Alice\" <sip:a@b>"), Some("Alice"));
        assert_eq!(display_of("Alice Smith <sip:a@b>"), Some("Alice Smith"));
        assert_eq!(display_of("\"A <b>\" <sip:a@b>"), Some("A <b>"));
        assert_eq!(display_of("<sip:a@b>"), None);
        assert_eq!(display_of("sip:a@b"), None);
    }

    #[test]
    fn parameters_are_read_where_they_belong() {
        assert_eq!(header_param("<sip:a@b>;tag=xyz;foo", "TAG"), Some("xyz"));
        assert_eq!(header_param("<sip:a@b>;tag=xyz;foo", "foo"), Some(""));
        // A tag inside the URI or inside a quoted display name is not the header's.
        assert_eq!(header_param("<sip:a@b;tag=evil>", "tag"), None);
        assert_eq!(header_param("\"x;tag=evil\" <sip:a@b>", "tag"), None);
        assert_eq!(header_param("sip:a@b;tag=1", "tag"), Some("1"));
        assert_eq!(
            via_param("SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bK1", "branch"),
            Some("z9hG4bK1")
        );
        assert_eq!(
            via_param("SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bK1", "rport"),
            Some("")
        );
        assert_eq!(via_param("SIP/2.0/UDP 192.0.2.1", "branch"), None);
        assert_eq!(uri_param("sip:p.example;lr", "lr"), Some(""));
        assert_eq!(
            uri_param("sip:p.example;transport=TCP?x=1", "transport"),
            Some("TCP")
        );
        assert_eq!(uri_param("sip:p.example?h=;lr", "lr"), None);
        assert_eq!(uri_param("sip:p.example", "lr"), None);
    }

    #[test]
    fn user_and_host_of_uris() {
        assert_eq!(
            user_of("sip:+6498879333;npdi@carrier.example;user=phone"),
            Some("+6498879333")
        );
        assert_eq!(
            user_of("SIP:+6498879333@carrier.example"),
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
        assert_eq!(host_of("tel:+6498879333"), None);
    }
}
