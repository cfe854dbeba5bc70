//! The `Digest` auth-param list of WWW-Authenticate, Authorization and their Proxy- twins
//! (RFC 3261 §25.1, RFC 7616 §3.3–§3.4): `name = token / quoted-string`, separated by commas.

use std::borrow::Cow;

use crate::{AuthError, Result};

/// The longest header value read. Real ones are a few hundred bytes.
pub const MAX_HEADER_LEN: usize = 4096;
const MAX_PARAMS: usize = 32;
const SCHEME: &str = "Digest";

/// The parameters of one `Digest` header value; names compare case-insensitively.
pub(crate) struct DigestParams<'a>(Vec<(&'a str, Cow<'a, str>)>);

impl<'a> DigestParams<'a> {
    pub(crate) fn parse(value: &'a str) -> Result<Self> {
        if value.len() > MAX_HEADER_LEN {
            return Err(malformed("header value too long"));
        }
        let value = value.trim_start_matches(is_lws);
        let scheme_end = value.find(is_lws).unwrap_or(value.len());
        if !value[..scheme_end].eq_ignore_ascii_case(SCHEME) {
            return Err(malformed("not the Digest scheme"));
        }
        let mut rest = value[scheme_end..].trim_start_matches(is_lws);
        let mut params: Vec<(&str, Cow<str>)> = Vec::new();
        while !rest.is_empty() {
            let (name, after) = token(rest)?;
            let after = after.trim_start_matches(is_lws);
            let after = after.strip_prefix('=').ok_or(malformed("expected '='"))?;
            let after = after.trim_start_matches(is_lws);
            let (value, after) = match after.strip_prefix('"') {
                Some(quoted) => quoted_string(quoted)?,
                None => token(after).map(|(v, after)| (Cow::Borrowed(v), after))?,
            };
            if params.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                return Err(malformed("duplicate parameter"));
            }
            if params.len() == MAX_PARAMS {
                return Err(malformed("too many parameters"));
            }
            params.push((name, value));
            let after = after.trim_start_matches(is_lws);
            rest = match after.strip_prefix(',') {
                Some(next) => next.trim_start_matches(is_lws),
                None if after.is_empty() => after,
                None => return Err(malformed("expected ','")),
            };
        }
        Ok(Self(params))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        let (_, value) = self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name))?;
        Some(value)
    }

    pub(crate) fn require(&self, name: &str) -> Result<&str> {
        self.get(name).ok_or(malformed("missing parameter"))
    }
}

/// Writes `Digest a="x", b=y`, escaping quoted values (RFC 3261 §25.1 quoted-pair).
pub(crate) struct DigestWriter(String);

impl DigestWriter {
    pub(crate) fn new() -> Self {
        Self(String::from(SCHEME))
    }

    fn name(&mut self, name: &str) {
        self.0.push_str(if self.0.len() == SCHEME.len() {
            " "
        } else {
            ", "
        });
        self.0.push_str(name);
        self.0.push('=');
    }

    pub(crate) fn quoted(&mut self, name: &str, value: &str) -> &mut Self {
        self.name(name);
        self.0.push('"');
        for c in value.chars() {
            if matches!(c, '"' | '\\') {
                self.0.push('\\');
            }
            self.0.push(c);
        }
        self.0.push('"');
        self
    }

    pub(crate) fn token(&mut self, name: &str, value: &str) -> &mut Self {
        self.name(name);
        self.0.push_str(value);
        self
    }

    pub(crate) fn finish(&mut self) -> String {
        std::mem::take(&mut self.0)
    }
}

fn malformed(reason: &'static str) -> AuthError {
    AuthError::Malformed(reason)
}

/// LWS, including folded lines (RFC 3261 §25.1).
fn is_lws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// RFC 3261 §25.1 token characters.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn token(s: &str) -> Result<(&str, &str)> {
    let len = s.bytes().take_while(|&b| is_token_byte(b)).count();
    if len == 0 {
        return Err(malformed("expected a token"));
    }
    Ok(s.split_at(len))
}

/// The rest of a quoted-string after its opening quote: its unescaped value and what follows.
fn quoted_string(s: &str) -> Result<(Cow<'_, str>, &str)> {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut escaped = false;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' => {
                escaped = true;
                i += 2;
            }
            // A '"' byte is never inside a UTF-8 sequence, so both slices are on char boundaries.
            b'"' => {
                let (raw, rest) = (&s[..i], &s[i + 1..]);
                return Ok((
                    if escaped {
                        unescape(raw)
                    } else {
                        Cow::Borrowed(raw)
                    },
                    rest,
                ));
            }
            _ => i += 1,
        }
    }
    Err(malformed("unterminated quoted string"))
}

fn unescape(raw: &str) -> Cow<'_, str> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        out.extend(if c == '\\' { chars.next() } else { Some(c) });
    }
    Cow::Owned(out)
}
