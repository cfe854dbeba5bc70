//! Splits a header section into header fields (RFC 3261 §7.3), unfolding continuation lines.

use std::borrow::Cow;

use memchr::memchr;

use crate::grammar::{is_lws, is_token, trim_lws};

pub(crate) enum Line<'a> {
    Field {
        name: &'a str,
        /// Trimmed; folded lines joined by one SP (RFC 3261 §7.3.1).
        value: Cow<'a, str>,
    },
    Malformed(&'static str),
}

/// The header lines between the start line and the empty line, the final CRLF excluded.
pub(crate) struct Fields<'a> {
    rest: &'a str,
    /// Set once a line ended in LF without CR.
    pub bare_lf: bool,
}

impl<'a> Fields<'a> {
    pub fn new(lines: &'a str) -> Self {
        Self {
            rest: lines,
            bare_lf: false,
        }
    }

    fn next_line(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let Some(lf) = memchr(b'\n', self.rest.as_bytes()) else {
            return Some(std::mem::take(&mut self.rest));
        };
        // '\n' is ASCII, so both cuts are on char boundaries.
        let line = &self.rest[..lf];
        self.rest = &self.rest[lf + 1..];
        Some(match line.strip_suffix('\r') {
            Some(line) => line,
            None => {
                self.bare_lf = true;
                line
            }
        })
    }

    fn continues(&self) -> bool {
        self.rest.as_bytes().first().copied().is_some_and(is_lws)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Line<'a>;

    fn next(&mut self) -> Option<Line<'a>> {
        let line = self.next_line()?;
        if line.as_bytes().first().copied().is_some_and(is_lws) {
            return Some(Line::Malformed("continuation line without a header field"));
        }
        let colon = memchr(b':', line.as_bytes());
        let mut value = Cow::Borrowed(trim_lws(colon.map_or("", |c| &line[c + 1..])));
        // RFC 3261 §7.3.1: a line starting with whitespace continues the previous header field.
        while self.continues() {
            let more = self.next_line().map(trim_lws).unwrap_or_default();
            if !more.is_empty() {
                let joined = value.to_mut();
                if !joined.is_empty() {
                    joined.push(' ');
                }
                joined.push_str(more);
            }
        }
        let Some(colon) = colon else {
            return Some(Line::Malformed("header line without a colon"));
        };
        // RFC 3261 §7.3.1: HCOLON allows whitespace between the name and the colon.
        let name = trim_lws(&line[..colon]);
        if !is_token(name) {
            return Some(Line::Malformed("header field name is not a token"));
        }
        Some(Line::Field { name, value })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fields(text: &str) -> Vec<(String, String)> {
        Fields::new(text)
            .map(|line| match line {
                Line::Field { name, value } => (name.into(), value.into_owned()),
                Line::Malformed(reason) => ("!".into(), reason.into()),
            })
            .collect()
    }

    #[test]
    fn folded_lines_join_with_one_space() {
        assert_eq!(
            fields("Subject: a\r\n  b\r\n\tc\r\nVia  : x"),
            [
                ("Subject".into(), "a b c".into()),
                ("Via".into(), "x".into())
            ]
        );
    }

    #[test]
    fn lines_without_colon_or_with_a_bad_name_are_malformed() {
        let got = fields(" orphan\r\nno colon here\r\nBad Name: v\r\nOk: v");
        assert_eq!(got.iter().filter(|(n, _)| n == "!").count(), 3);
        assert_eq!(got.last().unwrap(), &("Ok".into(), "v".into()));
    }
}
