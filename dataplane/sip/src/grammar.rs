//! Small pieces of the RFC 3261 §25.1 grammar, over `&str`, without allocating unless a value must
//! be rewritten.

use std::borrow::Cow;

/// Character classes of RFC 3261 §25.1, one bit each, looked up per octet.
const TOKEN: u8 = 1;
/// word = 1*(token chars / "(" / ")" / "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}")
const WORD: u8 = 2;
/// What a Request-URI may hold: visible ASCII but what RFC 3986 §2 never allows unescaped.
const URI: u8 = 4;

const CLASSES: [u8; 256] = {
    const fn mark(mut table: [u8; 256], octets: &[u8], class: u8) -> [u8; 256] {
        let mut i = 0;
        while i < octets.len() {
            table[octets[i] as usize] |= class;
            i += 1;
        }
        table
    }
    let alphanum = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut table = mark([0; 256], alphanum, TOKEN | WORD);
    table = mark(table, b"-.!%*_+`'~", TOKEN | WORD);
    table = mark(table, b"()<>:\\\"/[]?{}", WORD);
    let mut b = 0x21;
    while b < 0x7f {
        if !matches!(
            b,
            b'<' | b'>' | b'"' | b'{' | b'}' | b'|' | b'\\' | b'^' | b'`'
        ) {
            table[b as usize] |= URI;
        }
        b += 1;
    }
    table
};

/// RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
pub(crate) fn is_token_byte(b: u8) -> bool {
    CLASSES[usize::from(b)] & TOKEN != 0
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

/// Whether `b` may appear in a Request-URI as written (RFC 3261 §25.1, RFC 3986 §2).
pub(crate) fn is_uri_byte(b: u8) -> bool {
    CLASSES[usize::from(b)] & URI != 0
}

/// RFC 3261 §25.1: Call-ID = word [ "@" word ].
pub(crate) fn is_call_id(s: &str) -> bool {
    let word = |w: &str| !w.is_empty() && w.bytes().all(|b| CLASSES[usize::from(b)] & WORD != 0);
    match split_byte(s, b'@') {
        Some((left, right)) => word(left) && word(right),
        None => word(s),
    }
}

pub(crate) fn is_lws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

pub(crate) fn trim_lws(s: &str) -> &str {
    let bytes = s.as_bytes();
    let start = bytes
        .iter()
        .position(|&b| !is_lws(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| !is_lws(b))
        .map_or(start, |i| i + 1);
    // SP and HTAB are ASCII, so the cuts are on char boundaries.
    &s[start..end]
}

/// Where an ASCII byte first occurs. Header values are short: a plain loop beats `str::find`'s
/// memchr and memcmp calls.
pub(crate) fn find_byte(s: &str, byte: u8) -> Option<usize> {
    s.bytes().position(|b| b == byte)
}

/// `s` split around the first `byte` (ASCII, so both halves are on char boundaries).
pub(crate) fn split_byte(s: &str, byte: u8) -> Option<(&str, &str)> {
    find_byte(s, byte).map(|i| (&s[..i], &s[i + 1..]))
}

/// Whether a header value carries a control character outside a quoted-pair (RFC 3261 §25.1
/// allows them only as `"\" CHAR` inside a quoted-string; intmeth in RFC 4475 uses that).
pub(crate) fn has_stray_control(value: &str) -> bool {
    let is_control = |b: u8| (b < 0x20 && b != b'\t') || b == 0x7f;
    // No early exit, so the compiler can check many octets at once: most values have none.
    if !value.bytes().fold(false, |seen, b| seen | is_control(b)) {
        return false;
    }
    let bytes = value.as_bytes();
    let mut quoted = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => quoted = !quoted,
            b'\\' if quoted && i + 1 < bytes.len() => {
                // A quoted-pair may escape CR or LF neither (%x0A, %x0D are excluded).
                if matches!(bytes[i + 1], b'\r' | b'\n') {
                    return true;
                }
                i += 2;
                continue;
            }
            b if is_control(b) => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// Rewrites a header value so whitespace is canonical: SWS around the given separators (SEMI,
/// EQUAL, COMMA, SLASH, COLON in RFC 3261 §25.1) is dropped and other runs of LWS become one SP.
/// Quoted strings and `<...>` are copied untouched. Borrows when nothing changes.
pub(crate) fn tidy<'a>(value: &'a str, separators: &[u8]) -> Cow<'a, str> {
    let bytes = value.as_bytes();
    let needs = memchr::memchr2_iter(b' ', b'\t', bytes).any(|i| {
        bytes[i] == b'\t'
            || i == 0
            || i + 1 == bytes.len()
            || is_lws(bytes[i - 1])
            || is_lws(bytes[i + 1])
            || separators.contains(&bytes[i - 1])
            || separators.contains(&bytes[i + 1])
    });
    if !needs {
        return Cow::Borrowed(value);
    }
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let (mut quoted, mut angle) = (false, false);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if quoted {
            out.push(b);
            if b == b'\\' && i + 1 < bytes.len() {
                out.push(bytes[i + 1]);
                i += 1;
            } else if b == b'"' {
                quoted = false;
            }
            i += 1;
            continue;
        }
        if angle {
            out.push(b);
            angle = b != b'>';
            i += 1;
            continue;
        }
        if is_lws(b) {
            while i < bytes.len() && is_lws(bytes[i]) {
                i += 1;
            }
            let prev = out.last().copied();
            let next = bytes.get(i).copied();
            let by_separator = prev.is_some_and(|p| separators.contains(&p))
                || next.is_some_and(|n| separators.contains(&n));
            if prev.is_some() && next.is_some() && !by_separator {
                out.push(b' ');
            }
            continue;
        }
        quoted = b == b'"';
        angle = b == b'<';
        out.push(b);
        i += 1;
    }
    // Only ASCII whitespace was removed, so the bytes are still UTF-8.
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(_) => Cow::Borrowed(value),
    }
}

/// Splits a list header value at commas outside quoted strings and `<...>` (RFC 3261 §7.3.1),
/// trimming each entry.
pub(crate) fn split_list(value: &str) -> List<'_> {
    List(Some(value))
}

/// The entries of a list header value (`Route`, `Record-Route`, `Contact`, ...), split at commas
/// outside quoted strings and `<...>` (RFC 3261 §7.3.1), trimmed, empty ones skipped.
pub fn list_entries(value: &str) -> impl Iterator<Item = &str> {
    split_list(value).filter(|e| !e.is_empty())
}

pub(crate) struct List<'a>(Option<&'a str>);

impl<'a> Iterator for List<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let value = self.0?;
        let bytes = value.as_bytes();
        // Fast path: a comma before any quote or angle bracket (or neither at all) ends the
        // entry; only a quoted-string or a name-addr needs the scan below. Via, the list read
        // most, is almost always this.
        match memchr::memchr3(b',', b'"', b'<', bytes) {
            None => {
                self.0 = None;
                return Some(trim_lws(value));
            }
            Some(i) if bytes[i] == b',' => {
                self.0 = Some(&value[i + 1..]);
                return Some(trim_lws(&value[..i]));
            }
            Some(_) => {}
        }
        let (mut quoted, mut angle) = (false, false);
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if quoted => i += 1,
                b'"' if !angle => quoted = !quoted,
                b'<' if !quoted => angle = true,
                b'>' if !quoted => angle = false,
                b',' if !quoted && !angle => {
                    self.0 = Some(&value[i + 1..]);
                    return Some(trim_lws(&value[..i]));
                }
                _ => {}
            }
            i += 1;
        }
        self.0 = None;
        Some(trim_lws(value))
    }
}

/// The index just past the closing quote of the quoted-string that opens `bytes`.
pub(crate) fn quoted_string_end(bytes: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// A name-addr or addr-spec (RFC 3261 §20.10): From, To, Contact, Route entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NameAddr<'a> {
    pub uri: &'a str,
    /// The header parameters: empty, or starting with ';'.
    pub params: &'a str,
}

/// Reads one name-addr / addr-spec, refusing what RFC 4475 §3.1.2 calls invalid: an unterminated
/// quoted display name, a display name that is neither tokens nor a quoted string, whitespace in
/// `<addr-spec>`, and an addr-spec that carries `,`, `?` or whitespace without `<>`.
pub(crate) fn name_addr(value: &str) -> Result<NameAddr<'_>, &'static str> {
    let value = trim_lws(value);
    let bytes = value.as_bytes();
    let (uri, rest) = if bytes.first() == Some(&b'"') {
        let end = quoted_string_end(bytes).ok_or("unterminated quoted display name")?;
        let after = value[end..].trim_start_matches([' ', '\t']);
        let open = value.len() - after.len();
        if !after.starts_with('<') {
            return Err("quoted display name not followed by <URI>");
        }
        bracketed(value, open)?
    } else if let Some(open) = find_byte(value, b'<') {
        // RFC 3261 §25.1 wants tokens; UTF-8 letters are let through, as some UAs send them
        // unquoted, but not the ',' or ';' of RFC 4475 baddn.
        let word = |w: &str| w.bytes().all(|b| is_token_byte(b) || b >= 0x80);
        if !value[..open].split_ascii_whitespace().all(word) {
            return Err("display name is neither tokens nor a quoted string");
        }
        bracketed(value, open)?
    } else {
        // RFC 3261 §20.10: a URI holding a comma, question mark or semicolon must be in <>; an
        // unbracketed one therefore ends at the first ';', which starts the header parameters.
        let end = find_byte(value, b';').unwrap_or(value.len());
        let uri = trim_lws(&value[..end]);
        if uri.bytes().any(|b| b == b'?' || b == b',' || is_lws(b)) {
            return Err("a URI with '?', ',' or whitespace must be enclosed in <>");
        }
        (uri, &value[end..])
    };
    if scheme(uri).is_none() {
        return Err("URI without a scheme");
    }
    check_params(rest)?;
    Ok(NameAddr { uri, params: rest })
}

fn bracketed(value: &str, open: usize) -> Result<(&str, &str), &'static str> {
    let inner = &value[open + 1..];
    let close = find_byte(inner, b'>').ok_or("'<' without '>'")?;
    let uri = &inner[..close];
    // RFC 3261 §25.1: LAQUOT = SWS "<" and RAQUOT = ">" SWS: no whitespace inside (badaspec).
    if uri.is_empty() || uri.bytes().any(|b| is_lws(b) || b == b'<') {
        return Err("whitespace or '<' inside <addr-spec>");
    }
    let rest = trim_lws(&inner[close + 1..]);
    if !rest.is_empty() && !rest.starts_with(';') {
        return Err("text after <addr-spec> that is not a parameter");
    }
    Ok((uri, rest))
}

/// Checks `*( SEMI generic-param )`, generic-param = token [ EQUAL gen-value ].
pub(crate) fn check_params(params: &str) -> Result<(), &'static str> {
    for param in Params(params) {
        let (name, value) = param;
        if !is_token(name) {
            return Err("empty or malformed header parameter");
        }
        if let Some(value) = value {
            let quoted = value.len() >= 2
                && value.starts_with('"')
                && quoted_string_end(value.as_bytes()) == Some(value.len());
            let plain = !value.is_empty()
                && value
                    .bytes()
                    .all(|b| is_token_byte(b) || b == b':' || b == b'[' || b == b']');
            if !quoted && !plain {
                return Err("malformed header parameter value");
            }
        }
    }
    Ok(())
}

/// Iterates `;name[=value]` parameters, honouring quoted values. Whitespace around names and
/// values is trimmed.
pub(crate) struct Params<'a>(pub &'a str);

impl<'a> Iterator for Params<'a> {
    type Item = (&'a str, Option<&'a str>);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = trim_lws(self.0).strip_prefix(';')?;
        let bytes = rest.as_bytes();
        // Fast path: the next `;` comes before any quote (a backslash only escapes in quotes).
        let end = match memchr::memchr2(b';', b'"', bytes) {
            None => bytes.len(),
            Some(j) if bytes[j] == b';' => j,
            Some(_) => param_end(bytes),
        };
        let param = &rest[..end];
        self.0 = &rest[end..];
        Some(match split_byte(param, b'=') {
            Some((name, value)) => (trim_lws(name), Some(trim_lws(value))),
            None => (trim_lws(param), None),
        })
    }
}

/// Where the parameter that starts `bytes` ends: the first `;` outside a quoted value.
fn param_end(bytes: &[u8]) -> usize {
    let mut quoted = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b';' if !quoted => break,
            _ => {}
        }
        i += 1;
    }
    i.min(bytes.len())
}

/// The value of parameter `name` (ASCII case-insensitive) among `;`-parameters.
pub(crate) fn param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    Params(params)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v)
}

/// RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), followed by ':'.
pub(crate) fn scheme(uri: &str) -> Option<&str> {
    let (scheme, _) = split_byte(uri, b':')?;
    let mut bytes = scheme.bytes();
    let first = bytes.next()?;
    (first.is_ascii_alphabetic()
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.'))
    .then_some(scheme)
}

/// The user part of a URI as written: the userinfo of a sip/sips URI without its password, or the
/// number of a tel URI. None for other schemes and for URIs without a user.
pub(crate) fn uri_user(uri: &str) -> Option<&str> {
    let (scheme, rest) = split_byte(uri, b':')?;
    if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
        // '@' never appears unescaped after the userinfo (RFC 3261 §25.1), so the first one ends it.
        let (userinfo, _) = split_byte(rest, b'@')?;
        Some(split_byte(userinfo, b':').map_or(userinfo, |(user, _)| user))
    } else if scheme.eq_ignore_ascii_case("tel") {
        Some(split_byte(rest, b';').map_or(rest, |(number, _)| number))
    } else {
        None
    }
}

/// Decodes %-escapes (RFC 3261 §19.1.2). None when an escape is malformed or the octets are not
/// UTF-8. Borrows when there is nothing to decode.
pub(crate) fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_on_commas_outside_quotes_and_angle_brackets() {
        let cases: &[(&str, &[&str])] = &[
            ("a", &["a"]),
            (
                "SIP/2.0/UDP h1;branch=z9hG4bK1 , SIP/2.0/UDP h2",
                &["SIP/2.0/UDP h1;branch=z9hG4bK1", "SIP/2.0/UDP h2"],
            ),
            (
                "\"Doe, J\" <sip:a@h>, <sip:b@h>",
                &["\"Doe, J\" <sip:a@h>", "<sip:b@h>"],
            ),
            ("<sip:a@h;x=1,2>;q=1, c", &["<sip:a@h;x=1,2>;q=1", "c"]),
            ("x, \"a\\\",b\", y", &["x", "\"a\\\",b\"", "y"]),
        ];
        for (value, want) in cases {
            assert_eq!(split_list(value).collect::<Vec<_>>(), *want, "{value}");
        }
    }

    #[test]
    fn params_split_on_semicolons_outside_quotes() {
        let got: Vec<_> = Params(";branch=z9hG4bK1;rport ; x=\"a;b\";y").collect();
        assert_eq!(
            got,
            vec![
                ("branch", Some("z9hG4bK1")),
                ("rport", None),
                ("x", Some("\"a;b\"")),
                ("y", None)
            ]
        );
        assert_eq!(param(";a=1;B=2", "b"), Some("2"));
    }

    #[test]
    fn character_classes_follow_rfc_3261() {
        assert!(is_token("!interesting-Method0123456789_*+`.%indeed'~"));
        assert!(!is_token("a b") && !is_token("a,b") && !is_token(""));
        assert!(is_call_id("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"));
        assert!(!is_call_id("a@b@c") && !is_call_id("a b"));
        assert!("sip:user@example.com;lr".bytes().all(is_uri_byte));
        assert!(!"<>\" {}|\\^`".bytes().any(is_uri_byte));
    }

    #[test]
    fn tidy_drops_whitespace_around_separators_but_not_inside_quotes_or_brackets() {
        assert_eq!(
            tidy(
                "SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8",
                b";=/:,"
            ),
            "SIP/2.0/TCP spindle.example.com;branch=z9hG4bK9ikj8"
        );
        assert_eq!(
            tidy("\"a ;  b\"  <sip:x@y> ; tag = 1", b";=,"),
            "\"a ;  b\" <sip:x@y>;tag=1"
        );
        assert!(matches!(tidy("<sip:a@b>;tag=1", b";="), Cow::Borrowed(_)));
    }

    #[test]
    fn name_addr_reads_the_forms_rfc_4475_calls_valid() {
        let cases = [
            (
                "caller<sip:caller@example.com>;tag=323",
                "sip:caller@example.com",
            ),
            ("sip:user@example.com;tag=1", "sip:user@example.com"),
            (
                "\"J Rosenberg \\\\\\\"\" <sip:jdrosen@example.com>;tag=98asjd8",
                "sip:jdrosen@example.com",
            ),
            (
                "token1~` token2'+_ <sip:mundane@example.com>;p=\"a;b\";tag=x",
                "sip:mundane@example.com",
            ),
            (
                "<http://www.example.com>;tag=3234233",
                "http://www.example.com",
            ),
            ("isbn:2983792873", "isbn:2983792873"),
            ("José Ñandú <sip:jose@example.com>", "sip:jose@example.com"),
        ];
        for (value, uri) in cases {
            assert_eq!(name_addr(value).map(|n| n.uri), Ok(uri), "{value}");
        }
        let na = name_addr("token1~` token2'+_ <sip:mundane@example.com>;p=\"a;b\";tag=x").unwrap();
        assert_eq!(param(na.params, "TAG"), Some("x"));
    }

    #[test]
    fn name_addr_refuses_what_rfc_4475_calls_invalid() {
        for value in [
            "\"Mr. J. User <sip:j.user@example.com>",
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "\"Watson, Thomas\" < sip:t.watson@example.org >",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "<sip:joe@example.org>;;;;",
            "user@example.com",
        ] {
            assert!(name_addr(value).is_err(), "{value}");
        }
    }

    #[test]
    fn percent_decode_refuses_broken_escapes() {
        assert_eq!(percent_decode("I%20have").as_deref(), Some("I have"));
        assert_eq!(percent_decode("%Z1"), None);
        assert_eq!(percent_decode("a%4"), None);
        assert_eq!(percent_decode("%FF"), None);
    }
}
