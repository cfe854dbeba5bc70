//! RFC 4028 session timers, with the edge a participant on each leg. Each leg negotiates its
//! own interval and refresher in the 2xx of an INVITE or UPDATE: where the edge is the
//! refresher it sends an UPDATE at half the interval (§7.4, §9), so a carrier that uses the
//! refresh as a liveness check hears from the edge even when the far side never refreshes;
//! where the peer is the refresher and no refresh comes, the edge ends the call on both legs
//! before the interval runs out (§10). A refresh either side sends still crosses the edge and
//! refreshes both legs.

use std::time::{Duration, Instant};

use trunkgate_sip::{HasHeaders, Response};

use crate::sip::msg;

/// The smallest session interval the edge takes (RFC 4028 §4: never below 90 s); a request
/// asking for less gets 422 with `Min-SE` (§6).
pub const MIN_SE: u32 = 90;

/// Who refreshes (RFC 4028 §4 `refresher`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refresher {
    Uac,
    Uas,
}

/// The session timer of one leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionTimer {
    /// The negotiated interval in seconds.
    pub interval: u32,
    /// The edge sends the refreshes on this leg (else it waits for the peer's).
    pub edge_refreshes: bool,
    /// When the edge refreshes, or when it gives up on the peer's refresh.
    pub due: Instant,
}

/// `Session-Expires` (compact `x`): the interval and the refresher, when given.
pub fn session_expires(m: &impl HasHeaders) -> Option<(u32, Option<Refresher>)> {
    let v = msg::header(m, "Session-Expires").or_else(|| msg::header(m, "x"))?;
    let mut parts = v.split(';');
    let interval = parts.next()?.trim().parse().ok()?;
    let refresher = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("refresher") {
            return None;
        }
        match v.trim().to_ascii_lowercase().as_str() {
            "uac" => Some(Refresher::Uac),
            "uas" => Some(Refresher::Uas),
            _ => None,
        }
    });
    Some((interval, refresher))
}

impl SessionTimer {
    /// The timer a 2xx sets on a leg where the edge was the UAC (`edge_is_uac`) or the UAS;
    /// None when the 2xx carries no `Session-Expires` (no timer on that leg).
    pub fn from_2xx(resp: &Response, edge_is_uac: bool, now: Instant) -> Option<Self> {
        let (interval, refresher) = session_expires(resp)?;
        let interval = interval.max(MIN_SE);
        // §7.2: a 2xx names the refresher; without one the UAC is taken to refresh.
        let refresher = refresher.unwrap_or(Refresher::Uac);
        let edge_refreshes = (refresher == Refresher::Uac) == edge_is_uac;
        Some(Self::new(interval, edge_refreshes, now))
    }

    pub fn new(interval: u32, edge_refreshes: bool, now: Instant) -> Self {
        let due = if edge_refreshes {
            // §10: the refresher refreshes at half the interval.
            Duration::from_secs(u64::from(interval) / 2)
        } else {
            // §10: the other side sends BYE before the interval ends, at the interval less
            // a third of it or 32 s, whichever is less.
            let margin = (interval / 3).min(32);
            Duration::from_secs(u64::from(interval - margin))
        };
        Self {
            interval,
            edge_refreshes,
            due: now + due,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_gives_interval_and_refresher() {
        let parse = |v: &str| {
            let text = format!(
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: st1\r\nCSeq: 1 INVITE\r\nSession-Expires: {v}\r\nContent-Length: 0\r\n\r\n"
            );
            match trunkgate_sip::parse(text.as_bytes()) {
                Ok(trunkgate_sip::SipMessage::Response(r)) => session_expires(&r),
                _ => None,
            }
        };
        assert_eq!(
            parse("1800;refresher=uas"),
            Some((1800, Some(Refresher::Uas)))
        );
        assert_eq!(
            parse("90 ; refresher = UAC"),
            Some((90, Some(Refresher::Uac)))
        );
        assert_eq!(parse("600"), Some((600, None)));
        assert_eq!(parse("soon"), None);
    }

    #[test]
    fn the_edge_refreshes_at_half_and_gives_up_on_the_peer_before_the_end() {
        let now = Instant::now();
        let ours = SessionTimer::new(1800, true, now);
        assert_eq!(ours.due, now + Duration::from_secs(900));
        let theirs = SessionTimer::new(1800, false, now);
        assert_eq!(theirs.due, now + Duration::from_secs(1800 - 32));
        let short = SessionTimer::new(90, false, now);
        assert_eq!(short.due, now + Duration::from_secs(60));
    }
}
