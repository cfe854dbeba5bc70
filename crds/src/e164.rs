//! E.164 numbers, number ranges and prefixes, and normalisation of national or
//! international dialling forms into E.164 (ITU-T E.164: at most 15 digits, no leading zero).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest number E.164 allows (ITU-T E.164 §6.1).
pub const MAX_DIGITS: usize = 15;

/// An E.164 number held as its digit count and value, so that lookups compare two integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct E164 {
    /// Number of digits after the `+` (1..=15).
    pub len: u8,
    /// The digits as an integer (the first digit is never zero, so no information is lost).
    pub value: u64,
}

impl E164 {
    /// Parses `+` followed by 1..=15 digits, the first not zero.
    pub fn parse(s: &str) -> Option<Self> {
        let digits = s.strip_prefix('+')?;
        Self::from_digits(digits)
    }

    /// Parses the digits of an E.164 number written without its `+`.
    pub fn from_digits(digits: &str) -> Option<Self> {
        let bytes = digits.as_bytes();
        if bytes.is_empty() || bytes.len() > MAX_DIGITS || bytes[0] == b'0' {
            return None;
        }
        let mut value = 0u64;
        for b in bytes {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + u64::from(b - b'0');
        }
        Some(Self {
            len: bytes.len() as u8,
            value,
        })
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{:0width$}", self.value, width = self.len as usize)
    }
}

/// A block of numbers of one length, inclusive at both ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NumberRange {
    /// Digit count shared by every number in the block.
    pub len: u8,
    /// First number of the block.
    pub start: u64,
    /// Last number of the block.
    pub end: u64,
}

impl NumberRange {
    /// Whether the two blocks share a number.
    pub fn overlaps(&self, other: &NumberRange) -> bool {
        self.len == other.len && self.start <= other.end && other.start <= self.end
    }

    /// How many numbers the block holds.
    pub fn count(&self) -> u64 {
        self.end - self.start + 1
    }

    /// The numbers both blocks hold.
    pub fn overlap(&self, other: &NumberRange) -> Option<NumberRange> {
        self.overlaps(other).then(|| NumberRange {
            len: self.len,
            start: self.start.max(other.start),
            end: self.end.min(other.end),
        })
    }

    /// This block without the numbers of `other`: none, one or two blocks.
    pub fn minus(&self, other: &NumberRange) -> Vec<NumberRange> {
        if !self.overlaps(other) {
            return vec![*self];
        }
        let mut out = Vec::with_capacity(2);
        if other.start > self.start {
            out.push(NumberRange {
                len: self.len,
                start: self.start,
                end: other.start - 1,
            });
        }
        if other.end < self.end {
            out.push(NumberRange {
                len: self.len,
                start: other.end + 1,
                end: self.end,
            });
        }
        out
    }
}

impl fmt::Display for NumberRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = E164 {
            len: self.len,
            value: self.start,
        };
        if self.start == self.end {
            write!(f, "{a}")
        } else {
            let b = E164 {
                len: self.len,
                value: self.end,
            };
            write!(f, "{a}-{b}")
        }
    }
}

/// Why a `numbers` entry of a NumberOwnership cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberSpecError {
    #[error("'{0}' is not an E.164 number (+ then 1 to 15 digits, the first not 0)")]
    NotE164(String),
    #[error("range '{0}': both ends must have the same number of digits")]
    LengthMismatch(String),
    #[error("range '{0}': start is after end")]
    Reversed(String),
    #[error("prefix '{0}': write it as + and 1 to 14 digits followed by '*'")]
    BadPrefix(String),
}

/// Expands one `numbers` entry — `+6498879333`, `+6498879300-+6498879399` or the prefix
/// `+64988793*` — into same-length blocks. A prefix covers every longer number up to 15 digits.
pub fn parse_number_spec(entry: &str) -> Result<Vec<NumberRange>, NumberSpecError> {
    let entry = entry.trim();
    if let Some(prefix) = entry.strip_suffix('*') {
        let p = E164::parse(prefix)
            .filter(|p| (p.len as usize) < MAX_DIGITS)
            .ok_or_else(|| NumberSpecError::BadPrefix(entry.to_string()))?;
        let mut out = Vec::with_capacity(MAX_DIGITS - p.len as usize);
        for extra in 1..=(MAX_DIGITS - p.len as usize) as u32 {
            let scale = 10u64.pow(extra);
            out.push(NumberRange {
                len: p.len + extra as u8,
                start: p.value * scale,
                end: p.value * scale + (scale - 1),
            });
        }
        return Ok(out);
    }
    if let Some((a, b)) = entry.split_once('-') {
        let start = E164::parse(a.trim()).ok_or_else(|| NumberSpecError::NotE164(a.to_string()))?;
        let end = E164::parse(b.trim()).ok_or_else(|| NumberSpecError::NotE164(b.to_string()))?;
        if start.len != end.len {
            return Err(NumberSpecError::LengthMismatch(entry.to_string()));
        }
        if start.value > end.value {
            return Err(NumberSpecError::Reversed(entry.to_string()));
        }
        return Ok(vec![NumberRange {
            len: start.len,
            start: start.value,
            end: end.value,
        }]);
    }
    let n = E164::parse(entry).ok_or_else(|| NumberSpecError::NotE164(entry.to_string()))?;
    Ok(vec![NumberRange {
        len: n.len,
        start: n.value,
        end: n.value,
    }])
}

/// How a trunk's carrier writes numbers that are not yet E.164 (ITU-T E.164 / E.123 dialling
/// conventions): the country code plus the national and international dialling prefixes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DialPlan {
    pub country_code: String,
    pub national_prefix: String,
    pub international_prefix: String,
}

/// Why a number could not be made E.164 (the edge answers 484 Address Incomplete).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormaliseError {
    #[error("no digits")]
    Empty,
    #[error("contains characters other than digits and visual separators")]
    NotDigits,
    #[error("is not in E.164, international or national format for this trunk")]
    UnknownFormat,
    #[error("has more than 15 digits once in E.164")]
    TooLong,
}

impl DialPlan {
    /// Turns what a carrier sent (E.164 with `+`, `00`-style international, `0`-style national, or
    /// a bare number that already starts with the country code) into E.164. Visual separators
    /// (RFC 3966 §5.1.1: `-`, `.`, `(`, `)`, space) are dropped first.
    pub fn normalise(&self, raw: &str) -> Result<E164, NormaliseError> {
        let mut buf = [0u8; 32];
        let mut n = 0usize;
        let mut plus = false;
        for (i, c) in raw.bytes().enumerate() {
            match c {
                b'+' if i == 0 => plus = true,
                b'0'..=b'9' => {
                    if n == buf.len() {
                        return Err(NormaliseError::TooLong);
                    }
                    buf[n] = c;
                    n += 1;
                }
                b'-' | b'.' | b'(' | b')' | b' ' => {}
                _ => return Err(NormaliseError::NotDigits),
            }
        }
        let digits = std::str::from_utf8(&buf[..n]).map_err(|_| NormaliseError::NotDigits)?;
        if digits.is_empty() {
            return Err(NormaliseError::Empty);
        }
        let finish = |d: &str| -> Result<E164, NormaliseError> {
            if d.len() > MAX_DIGITS {
                return Err(NormaliseError::TooLong);
            }
            E164::from_digits(d).ok_or(NormaliseError::UnknownFormat)
        };
        if plus {
            return finish(digits);
        }
        if !self.international_prefix.is_empty()
            && let Some(rest) = digits.strip_prefix(self.international_prefix.as_str())
        {
            return finish(rest);
        }
        if !self.national_prefix.is_empty()
            && let Some(rest) = digits.strip_prefix(self.national_prefix.as_str())
        {
            if rest.is_empty() || rest.starts_with('0') {
                return Err(NormaliseError::UnknownFormat);
            }
            if self.country_code.len() + rest.len() > MAX_DIGITS {
                return Err(NormaliseError::TooLong);
            }
            let mut full = String::with_capacity(self.country_code.len() + rest.len());
            full.push_str(&self.country_code);
            full.push_str(rest);
            return finish(&full);
        }
        // Some carriers send E.164 without the '+': accept it only when it carries our country
        // code and is long enough to be more than the country code.
        if digits.starts_with(self.country_code.as_str())
            && digits.len() > self.country_code.len() + 4
        {
            return finish(digits);
        }
        Err(NormaliseError::UnknownFormat)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn nz() -> DialPlan {
        DialPlan {
            country_code: "64".into(),
            national_prefix: "0".into(),
            international_prefix: "00".into(),
        }
    }

    #[test]
    fn e164_parse_and_display_round_trip() {
        for s in ["+6498879333", "+1", "+999999999999999"] {
            assert_eq!(E164::parse(s).unwrap().to_string(), s);
        }
        for bad in [
            "6498879333",
            "+0649",
            "+",
            "+1234567890123456",
            "+64 9",
            "+64a",
        ] {
            assert_eq!(E164::parse(bad), None, "{bad}");
        }
    }

    type Blocks = Result<Vec<(u8, u64, u64)>, ()>;

    #[test]
    fn number_specs_expand() {
        let cases: &[(&str, Blocks)] = &[
            ("+6498879333", Ok(vec![(10, 6498879333, 6498879333)])),
            (
                "+6498879300-+6498879399",
                Ok(vec![(10, 6498879300, 6498879399)]),
            ),
            ("+6498879399-+6498879300", Err(())),
            ("+649887930-+6498879399", Err(())),
            ("+64 98879333", Err(())),
            ("+0*", Err(())),
            (
                "+64988793*",
                Ok((9..=15)
                    .map(|l| {
                        let s = 10u64.pow(l - 8);
                        (l as u8, 64988793 * s, 64988793 * s + s - 1)
                    })
                    .collect()),
            ),
        ];
        for (input, want) in cases {
            let got = parse_number_spec(input)
                .map(|v| {
                    v.into_iter()
                        .map(|r| (r.len, r.start, r.end))
                        .collect::<Vec<_>>()
                })
                .map_err(|_| ());
            assert_eq!(&got, want, "{input}");
        }
    }

    #[test]
    fn normalise_table() {
        let cases: &[(&str, Result<&str, NormaliseError>)] = &[
            ("+6498879333", Ok("+6498879333")),
            ("098879333", Ok("+6498879333")),
            ("09 887 9333", Ok("+6498879333")),
            ("(09) 887-9333", Ok("+6498879333")),
            ("006498879333", Ok("+6498879333")),
            ("0014155550100", Ok("+14155550100")),
            ("6498879333", Ok("+6498879333")),
            ("8879333", Err(NormaliseError::UnknownFormat)),
            ("0", Err(NormaliseError::UnknownFormat)),
            ("", Err(NormaliseError::Empty)),
            ("09887x9333", Err(NormaliseError::NotDigits)),
            ("+1234567890123456", Err(NormaliseError::TooLong)),
            ("anonymous", Err(NormaliseError::NotDigits)),
        ];
        for (raw, want) in cases {
            let got = nz().normalise(raw).map(|n| n.to_string());
            assert_eq!(got.as_deref().map_err(Clone::clone), want.clone(), "{raw}");
        }
    }
}
