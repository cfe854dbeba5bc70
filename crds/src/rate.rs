//! Rates and what a call costs by them. Prices are kept in millionths of the currency unit
//! (integers: no rounding drift over millions of calls); billing follows the carrier's
//! increments (`60/60`: a minute minimum, then whole minutes; `1/1`: per second).

use serde::{Deserialize, Serialize};

/// Millionths of a currency unit.
pub type Micros = u64;

/// A carrier's rate for a prefix, as the edge runs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateConfig {
    /// Per minute, in millionths.
    pub per_minute: Micros,
    /// ISO 4217 code.
    pub currency: String,
    /// Seconds billed at least, once answered.
    pub first: u32,
    /// Seconds of each further step.
    pub next: u32,
    /// Once per answered call, in millionths.
    #[serde(default)]
    pub connection_fee: Micros,
}

impl RateConfig {
    /// The seconds billed for a call answered for `duration_ms` (0: never answered): the
    /// duration in whole seconds, rounded up, at least `first`, then in steps of `next`.
    pub fn billed_seconds(&self, duration_ms: u64) -> u64 {
        let talked = duration_ms.div_ceil(1000);
        if duration_ms == 0 {
            return 0;
        }
        let (first, next) = (u64::from(self.first), u64::from(self.next.max(1)));
        if talked <= first {
            return first;
        }
        first + (talked - first).div_ceil(next) * next
    }

    /// The cost of `billed` seconds (0: nothing, not even the connection fee), in millionths,
    /// rounded up to the next millionth.
    pub fn cost(&self, billed: u64) -> Micros {
        if billed == 0 {
            return 0;
        }
        let minutes = (u128::from(billed) * u128::from(self.per_minute)).div_ceil(60);
        let total = minutes + u128::from(self.connection_fee);
        Micros::try_from(total).unwrap_or(Micros::MAX)
    }
}

/// A decimal price (`"0.0125"`: digits, up to 6 decimals) in millionths; None when it is not
/// one.
pub fn parse_price(s: &str) -> Option<Micros> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || whole.len() > 9
        || frac.len() > 6
        || (s.contains('.') && frac.is_empty())
        || !digits(whole)
        || !digits(frac)
    {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let frac: u64 = format!("{frac:0<6}").parse().ok()?;
    Some(whole * 1_000_000 + frac)
}

/// Billing increments `first/next` in seconds (both 1 to 9999).
pub fn parse_increments(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('/')?;
    let n = |v: &str| {
        let ok = !v.is_empty() && v.len() <= 4 && v.bytes().all(|c| c.is_ascii_digit());
        ok.then(|| v.parse::<u32>().ok())
            .flatten()
            .filter(|n| *n >= 1)
    };
    Some((n(a)?, n(b)?))
}

/// Millionths as a decimal string with at least two decimals: `25000` → `"0.025"`,
/// `1_000_000` → `"1.00"`.
pub fn format_micros(m: Micros) -> String {
    let s = format!("{}.{:06}", m / 1_000_000, m % 1_000_000);
    let trimmed = s.trim_end_matches('0');
    let decimals = trimmed.len() - trimmed.find('.').map_or(trimmed.len(), |i| i + 1);
    if decimals >= 2 {
        trimmed.to_string()
    } else {
        s[..s.len() - 4].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_minute: &str, increments: &str, fee: &str) -> RateConfig {
        let (first, next) = parse_increments(increments).expect("increments");
        RateConfig {
            per_minute: parse_price(per_minute).expect("price"),
            currency: "USD".into(),
            first,
            next,
            connection_fee: parse_price(fee).expect("fee"),
        }
    }

    #[test]
    fn prices_are_exact_millionths() {
        assert_eq!(parse_price("0.0125"), Some(12_500));
        assert_eq!(parse_price("1"), Some(1_000_000));
        assert_eq!(parse_price("12.000001"), Some(12_000_001));
        for bad in [
            "",
            ".5",
            "1.",
            "1.0000001",
            "-1",
            "1e3",
            "0,5",
            "1234567890",
        ] {
            assert_eq!(parse_price(bad), None, "{bad}");
        }
    }

    #[test]
    fn increments_are_two_whole_numbers_of_seconds() {
        assert_eq!(parse_increments("60/60"), Some((60, 60)));
        assert_eq!(parse_increments("30/6"), Some((30, 6)));
        for bad in ["60", "0/60", "60/0", "a/b", "60/60/1", "10000/1"] {
            assert_eq!(parse_increments(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_call_is_billed_in_the_carriers_increments() {
        let minute = rate("0.02", "60/60", "0");
        assert_eq!(minute.billed_seconds(0), 0, "not answered");
        assert_eq!(minute.billed_seconds(1), 60);
        assert_eq!(minute.billed_seconds(60_000), 60);
        assert_eq!(minute.billed_seconds(61_000), 120, "61 s on 60/60");
        assert_eq!(minute.billed_seconds(60_200), 120, "a part second counts");
        let six = rate("0.02", "30/6", "0");
        assert_eq!(six.billed_seconds(10_000), 30);
        assert_eq!(six.billed_seconds(31_000), 36);
        let second = rate("0.02", "1/1", "0");
        assert_eq!(second.billed_seconds(61_400), 62);
    }

    #[test]
    fn cost_is_the_minutes_billed_plus_the_fee_rounded_up_to_a_millionth() {
        let r = rate("0.0125", "60/60", "0.01");
        assert_eq!(r.cost(120), 25_000 + 10_000);
        assert_eq!(r.cost(0), 0, "an unanswered call costs nothing");
        let odd = rate("0.000007", "1/1", "0");
        assert_eq!(odd.cost(1), 1, "7/60 of a millionth rounds up");
        let huge = rate("999999999.999999", "1/1", "0");
        assert!(huge.cost(9_999_999) > 0, "no overflow");
    }

    #[test]
    fn costs_print_as_decimals() {
        assert_eq!(format_micros(25_000), "0.025");
        assert_eq!(format_micros(20_000), "0.02");
        assert_eq!(format_micros(1_000_000), "1.00");
        assert_eq!(format_micros(0), "0.00");
        assert_eq!(format_micros(12_345_678), "12.345678");
    }
}
