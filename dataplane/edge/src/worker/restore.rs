//! A call's checkpoint written when it is answered and after each in-dialog change, forgotten
//! when it ends; and the calls of a previous life of this edge (same identity) rebuilt before
//! it reports ready: their dialogs answer in-dialog requests again and their relay ports are
//! bound again, so a `kill -9` loses no call and no call record.

use std::time::{Duration, Instant};

use super::Shared;
use super::io::Io;
use super::media::Relay;
use crate::call::checkpoint::{CallRecord, Clock, time_of};
use crate::call::{Call, CallState, Side};

/// How long restored calls wait for their trunk to appear in the snapshot (cluster mode
/// loads it after the workers start) before they are given up.
pub const RESTORE_WAIT: Duration = Duration::from_secs(30);

/// Writes `c`'s checkpoint (an answered call; nothing before) with its relay streams.
pub fn checkpoint(shared: &Shared, relay: &Relay, c: &mut Call, now: Instant) {
    if !shared.fleet.journals() || c.state != CallState::Confirmed {
        return;
    }
    c.checkpointed = true;
    let record = CallRecord::of(c, relay.streams(c.media), Clock::at(now));
    match serde_json::to_string(&record) {
        Ok(json) => {
            shared.fleet.journal(record.key, Some(json));
            shared.metrics.checkpoints.inc();
        }
        Err(e) => tracing::warn!(error = %e, "a call checkpoint could not be written"),
    }
}

/// The call of `r` rebuilt as call `id`: its links found or dialled again, its relay session
/// bound again on its ports, its place in the fleet's count kept.
pub fn rebuild(io: &mut Io, relay: &mut Relay, id: u64, r: CallRecord) -> Result<Call, String> {
    let rt = io.shared.runtime.load_full();
    let t = rt
        .config
        .trunks
        .iter()
        .position(|t| t.id == r.trunk)
        .ok_or_else(|| format!("trunk {} is not in the snapshot", r.trunk))? as u32;
    // Checked before anything is opened for it (links, relay ports).
    let callee = trunkgate_crds::e164::E164::parse(&r.callee)
        .ok_or_else(|| format!("called number {} is not E.164", r.callee))?;
    let trunk_cfg = rt.trunk(t).clone();
    let carrier_tls = io.shared.tls.trunk(&trunk_cfg.id);
    let mut link = |l: &crate::call::checkpoint::LegRecord| {
        let host = crate::sip::msg::host_of(&l.remote_target)
            .unwrap_or_default()
            .to_string();
        io.link_to(
            l.side(),
            l.peer,
            l.transport(),
            &host,
            carrier_tls.as_deref(),
        )
        .map_err(|e| e.to_string())
    };
    let (link_a, link_b) = (link(&r.a)?, link(&r.b)?);
    let clock = Clock::at(io.now);
    let (a, b) = (r.a.leg(link_a, clock), r.b.leg(link_b, clock));
    let media = if r.media.is_empty() {
        None
    } else {
        let signalling = |side: Side| {
            if a.side == side {
                a.peer.addr().ip()
            } else {
                b.peer.addr().ip()
            }
        };
        let policy = |side: Side| {
            crate::call::media::peer_policy(&io.shared.platform, &trunk_cfg, side, signalling(side))
        };
        Some(relay.reopen(id, &trunk_cfg, &r.media, policy)?)
    };
    let mut slot = rt.state[t as usize].restore_slot();
    // The same place in the fleet's count it held before: counted once, nothing claimed
    // (a claim would count it again against the calls per second).
    if let Some(place) = r
        .place
        .as_deref()
        .and_then(|m| io.shared.fleet.keep_place(&trunk_cfg.id, m))
    {
        slot.hold_in_fleet(place);
    }
    let key = crate::sip::transaction::TransactionKey::client(
        &format!("z9hG4bK-restored-{}", r.key),
        trunkgate_sip::Method::Invite,
    );
    tracing::info!(
        trunk = trunk_cfg.id,
        call_id = a.call_id.as_str(),
        "call of the previous run restored"
    );
    Ok(Call {
        rt,
        trunk: t,
        media_trunk: t,
        selection: trunkgate_crds::Selection::Priority,
        carriers: Vec::new(),
        identity_at: (0, 0),
        direction: r.direction(),
        a,
        b,
        state: CallState::Confirmed,
        a_invite: key,
        b_invite: None,
        hops: Vec::new(),
        next_hop: 0,
        b_user: String::new(),
        b_lines: String::new(),
        b_body: Vec::new(),
        auth_line: None,
        auth_tries: 0,
        b_ack: None,
        caller: r
            .caller
            .as_deref()
            .and_then(trunkgate_crds::e164::E164::parse),
        callee,
        started: time_of(r.started_ms),
        answered: r.answered_ms.map(time_of),
        final_code: Some(200),
        ended_by: None,
        last_failure: None,
        slot: Some(slot),
        setup: None,
        setup_source: None,
        media,
        media_stats: Vec::new(),
        bye_lines: String::new(),
        forks_ended: Vec::new(),
        redirects: 0,
        recovered: true,
        checkpointed: false,
        tried: r.attempts,
        ended: None,
        charge: None,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use trunkgate_crds::Secrets;

    use super::*;
    use crate::worker::harness::*;

    fn harness() -> Harness {
        Harness::new(&[pacific()], &[numbers("pacific")], &Secrets::new())
    }

    /// An answered call with RFC 4028 timers (the carrier leg refreshed by the edge, the
    /// platform leg by the platform), as its checkpoint says it.
    fn answered_with_session_timers(h: &mut Harness) -> CallRecord {
        h.answered_with(
            "rst1",
            "Session-Expires: 180\r\nSupported: timer\r\n",
            "Session-Expires: 180;refresher=uas\r\n",
        );
        let c = h.w.calls.values().next().expect("the call");
        CallRecord::of(c, Vec::new(), Clock::at(h.w.now))
    }

    /// RFC 4028 on a restored call: the edge refreshes the carrier leg when it was due and
    /// ends the call when the platform's refresh does not come, as the first life would have.
    #[test]
    fn a_restored_call_keeps_its_session_timers() {
        let mut first = harness();
        let record = answered_with_session_timers(&mut first);
        assert!(record.a.session.is_some_and(|s| s.edge_refreshes));
        assert!(record.b.session.is_some_and(|s| !s.edge_refreshes));

        let mut second = harness();
        second.w.restoring.push(record);
        second.w.restore_pending();
        assert_eq!(second.w.calls.len(), 1, "restored");
        let half = second.advance(Duration::from_secs(91));
        assert_eq!(summary(&half, Side::Public)[..1], ["UPDATE"]);
        let update = on(&half, Side::Public)[0];
        assert!(
            update.text.contains("Session-Expires: 180;refresher=uac"),
            "{}",
            update.text
        );
        second.carrier_sends(&update.answer(
            200,
            "",
            CARRIER,
            "Session-Expires: 180;refresher=uac\r\n",
        ));
        let end = second.advance(Duration::from_secs(58));
        assert_eq!(summary(&end, Side::Public)[..1], ["BYE"]);
        assert_eq!(summary(&end, Side::Internal)[..1], ["BYE"]);
    }

    /// A refresh that fell due while no edge ran is sent as soon as the call is back.
    #[test]
    fn a_refresh_due_while_the_edge_was_down_goes_at_once() {
        let mut first = harness();
        let mut record = answered_with_session_timers(&mut first);
        if let Some(s) = record.a.session.as_mut() {
            s.due_ms -= 100_000;
        }
        let mut second = harness();
        second.w.restoring.push(record);
        second.w.restore_pending();
        let now = second.advance(Duration::from_millis(200));
        assert_eq!(summary(&now, Side::Public)[..1], ["UPDATE"]);
    }
}
