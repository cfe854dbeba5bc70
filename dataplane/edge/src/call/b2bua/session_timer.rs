//! RFC 4028 session timers, with the edge a participant on each leg. Each leg negotiates its
//! own interval and refresher in the 2xx of an INVITE or UPDATE: where the edge is the
//! refresher it sends an UPDATE at half the interval (§7.4, §9), so a carrier that uses the
//! refresh as a liveness check hears from the edge even when the far side never refreshes;
//! where the peer is the refresher and no refresh comes, the edge ends the call on both legs
//! before the interval runs out (§10). A refresh either side sends still crosses the edge and
//! refreshes both legs.

use std::time::{Duration, Instant};

use trunkgate_sip::{HasHeaders, Response};

use crate::call::{CallState, LegId};
use crate::sip::msg;
use crate::worker::{Purpose, Timer, Worker};

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

    fn new(interval: u32, edge_refreshes: bool, now: Instant) -> Self {
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

impl Worker {
    /// A 2xx to an INVITE or UPDATE passed on `leg` (the edge its UAC or its UAS there): the
    /// leg's session timer starts again from it.
    pub(crate) fn session_negotiated(
        &mut self,
        id: u64,
        leg: LegId,
        resp: &Response,
        edge_is_uac: bool,
    ) {
        let now = self.now;
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let timer = SessionTimer::from_2xx(resp, edge_is_uac, now);
        c.leg_mut(leg).session = timer;
        if let Some(t) = timer {
            self.schedule(
                t.due.saturating_duration_since(now),
                Timer::Session(id, leg),
            );
        }
    }

    /// A leg's session timer fired: refresh it, or end a call whose peer did not refresh.
    pub(crate) fn session_due(&mut self, id: u64, leg: LegId) {
        let now = self.now;
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(t) = c.leg(leg).session else {
            return;
        };
        // A refresh since then moved the deadline (its own timer is set), or the call is over.
        if c.state != CallState::Confirmed || now + Duration::from_millis(5) < t.due {
            return;
        }
        let trunk = c.trunk_id().to_string();
        let result = if t.edge_refreshes { "sent" } else { "expired" };
        self.shared
            .metrics
            .session_refreshes
            .with_label_values(&[trunk.as_str(), result])
            .inc();
        if t.edge_refreshes {
            // Until the refresh is answered, the leg waits as if the peer kept the timer: no
            // answer by that deadline ends the call like a missed refresh would.
            let waiting = SessionTimer::new(t.interval, false, now);
            c.leg_mut(leg).session = Some(waiting);
            self.schedule(waiting.due - now, Timer::Session(id, leg));
            return self.send_refresh(id, leg, t.interval);
        }
        tracing::info!(
            call = id,
            ?leg,
            "session timer expired without a refresh: the call ends (RFC 4028 §10)"
        );
        c.bye_lines = "Reason: SIP;cause=408;text=\"session timer expired\"\r\n".into();
        self.end_call(id, None, "session timer expired");
    }

    /// An UPDATE without a body that refreshes the session on `leg` (RFC 4028 §7.4, §9).
    fn send_refresh(&mut self, id: u64, leg: LegId, interval: u32) {
        let branch = self.mint.branch();
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        // A carrier that challenges it is answered like any request of ours (crate::call::challenge).
        let lines = format!("Session-Expires: {interval};refresher=uac\r\nSupported: timer\r\n");
        let l = c.leg_mut(leg);
        l.local_cseq += 1;
        let cseq = l.local_cseq;
        let hostport = super::self_hostport(&self.shared, l);
        let contact = hostport.clone();
        let (bytes, ruri, ident, side, peer) = super::in_dialog_request(
            l,
            "UPDATE",
            &branch,
            cseq,
            Some(&contact),
            &lines,
            &[],
            hostport,
        );
        self.open_client(
            id,
            leg,
            Purpose::Refresh,
            side,
            peer,
            trunkgate_sip::Method::Update,
            branch,
            bytes,
            ruri,
            ident,
            cseq,
        );
    }

    /// The answer to our refresh: a 2xx restarts the leg's timer; 481 or 408 (§10) end the
    /// call; anything else (an UPDATE the peer does not take) stops the edge refreshing it.
    pub(crate) fn refresh_answered(&mut self, id: u64, leg: LegId, resp: &Response) {
        let code = resp.status_code.code();
        if (200..300).contains(&code) {
            let Some(c) = self.calls.get(&id) else {
                return;
            };
            let interval = c.leg(leg).session.map_or(MIN_SE, |s| s.interval);
            if session_expires(resp).is_some() {
                return self.session_negotiated(id, leg, resp, true);
            }
            // A 2xx without Session-Expires: the peer keeps no timer; refresh on our own.
            let t = SessionTimer::new(interval, true, self.now);
            if let Some(c) = self.calls.get_mut(&id) {
                c.leg_mut(leg).session = Some(t);
            }
            return self.schedule(
                t.due.saturating_duration_since(self.now),
                Timer::Session(id, leg),
            );
        }
        if code < 200 {
            return;
        }
        if code == 481 || code == 408 {
            return self.refresh_failed(id, code);
        }
        tracing::info!(
            call = id,
            ?leg,
            code,
            "the peer refused the session refresh; the edge stops refreshing this leg"
        );
        if let Some(c) = self.calls.get_mut(&id) {
            c.leg_mut(leg).session = None;
        }
    }

    /// Our refresh got 481/408 or no answer: the session is gone (RFC 4028 §10).
    pub(crate) fn refresh_failed(&mut self, id: u64, code: u16) {
        if let Some(c) = self.calls.get_mut(&id) {
            c.bye_lines = format!("Reason: SIP;cause={code};text=\"session refresh failed\"\r\n");
        }
        self.end_call(id, None, "session refresh failed");
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
