//! A call's checkpoint written when it is answered and after each in-dialog change, forgotten
//! when it ends; and the calls of a previous life of this edge (same identity) rebuilt before
//! it reports ready: their dialogs answer in-dialog requests again and their relay ports are
//! bound again, so a `kill -9` loses no call and no call record.

use std::time::Duration;

use crate::call::checkpoint::{CallRecord, Clock, SrtpRecord, StreamRecord, time_of};
use crate::call::{Call, CallState, LegId, Side};
use crate::worker::Worker;

/// How long restored calls wait for their trunk to appear in the snapshot (cluster mode
/// loads it after the workers start) before they are given up.
pub const RESTORE_WAIT: Duration = Duration::from_secs(30);

impl Worker {
    /// Writes call `id`'s checkpoint (an answered call; nothing before).
    pub(crate) fn checkpoint(&mut self, id: u64) {
        if !self.shared.fleet.journals() {
            return;
        }
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if c.state != CallState::Confirmed {
            return;
        }
        c.checkpointed = true;
        let media = match (c.media, self.media.as_ref()) {
            (Some(session), Some(engine)) => {
                let mut srtp = engine.srtp(session).into_iter();
                engine
                    .endpoints(session)
                    .into_iter()
                    .map(|(ports, remotes)| StreamRecord {
                        ports,
                        remotes,
                        srtp: srtp.next().flatten().as_ref().map(SrtpRecord::of),
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        let record = CallRecord::of(c, media, Clock::at(self.now));
        match serde_json::to_string(&record) {
            Ok(json) => {
                self.shared.fleet.journal(record.key, Some(json));
                self.shared.metrics.checkpoints.inc();
            }
            Err(e) => tracing::warn!(error = %e, "a call checkpoint could not be written"),
        }
    }

    /// Rebuilds the calls this worker is given from the previous life's checkpoints, once
    /// their trunks are in the snapshot (or [`RESTORE_WAIT`] has passed).
    pub(crate) fn restore_pending(&mut self) {
        if self.restoring.is_empty() {
            return;
        }
        let rt = self.shared.runtime.load_full();
        let waited = self.now.saturating_duration_since(self.started) >= RESTORE_WAIT;
        let records = std::mem::take(&mut self.restoring);
        for r in records {
            if !waited && !rt.config.trunks.iter().any(|t| t.id == r.trunk) {
                self.restoring.push(r);
                continue;
            }
            let key = r.key.clone();
            match self.restore_call(r) {
                Ok(_) => self
                    .shared
                    .metrics
                    .calls_restored
                    .with_label_values(&["ok"])
                    .inc(),
                Err(why) => {
                    tracing::warn!(key, why, "a call of the previous run could not be restored");
                    self.shared.fleet.journal(key, None);
                    self.shared
                        .metrics
                        .calls_restored
                        .with_label_values(&["failed"])
                        .inc();
                }
            }
            self.shared
                .restoring
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }

    /// Ends the calls of edges gone for good that this process adopted (worker 0 does it): each
    /// is rebuilt without media and hung up on both legs, its record saying `edge_lost`.
    pub(crate) fn end_orphans(&mut self) {
        if self.index != 0 {
            return;
        }
        for mut r in crate::call::checkpoint::read_all(self.shared.fleet.take_orphans()) {
            // Ended at once: no media, and its place in the fleet's count runs out with the
            // dead edge's lease.
            r.media.clear();
            r.place = None;
            let key = r.key.clone();
            match self.restore_call(r) {
                Ok(id) => {
                    if let Some(c) = self.calls.get_mut(&id) {
                        c.ended_by = Some("edge_lost");
                        c.bye_lines =
                            "Reason: SIP;cause=503;text=\"the edge of this call is gone\"\r\n"
                                .into();
                    }
                    self.end_call(id, None, "edge_lost");
                    self.shared.metrics.orphans_ended.inc();
                }
                Err(why) => tracing::warn!(key, why, "an adopted call could not be ended"),
            }
        }
    }

    /// The call of `r` rebuilt on this worker; its id.
    fn restore_call(&mut self, r: CallRecord) -> Result<u64, String> {
        let rt = self.shared.runtime.load_full();
        let t = rt
            .config
            .trunks
            .iter()
            .position(|t| t.id == r.trunk)
            .ok_or_else(|| format!("trunk {} is not in the snapshot", r.trunk))?
            as u32;
        // Checked before anything is opened for it (links, relay ports).
        let callee = trunkgate_crds::e164::E164::parse(&r.callee)
            .ok_or_else(|| format!("called number {} is not E.164", r.callee))?;
        let trunk_cfg = rt.trunk(t).clone();
        let carrier_tls = self.shared.tls.trunk(&trunk_cfg.id);
        let mut link = |l: &crate::call::checkpoint::LegRecord| {
            let host = crate::sip::msg::host_of(&l.remote_target)
                .unwrap_or_default()
                .to_string();
            self.link_to(
                l.side(),
                l.peer,
                l.transport(),
                &host,
                carrier_tls.as_deref(),
            )
            .map_err(|e| e.to_string())
        };
        let (link_a, link_b) = (link(&r.a)?, link(&r.b)?);
        let clock = Clock::at(self.now);
        let (a, b) = (r.a.leg(link_a, clock), r.b.leg(link_b, clock));
        let id = self.next_call;
        self.next_call += 1;
        let media = match (r.media.is_empty(), self.media.as_mut()) {
            (true, _) => None,
            (false, None) => return Err("this edge has no media relay".into()),
            (false, Some(engine)) => {
                let ports: Vec<[u16; 2]> = r.media.iter().map(|s| s.ports).collect();
                let session = engine
                    .reopen(id, &ports)
                    .map_err(|e| format!("relay ports {ports:?}: {e}"))?;
                for (i, s) in r.media.iter().enumerate() {
                    for side in [Side::Public, Side::Internal] {
                        let Some(addr) = s.remotes[side.index()] else {
                            continue;
                        };
                        let signalling = if a.side == side {
                            a.peer.addr().ip()
                        } else {
                            b.peer.addr().ip()
                        };
                        let policy = crate::call::media::peer_policy(
                            &self.shared.platform,
                            &trunk_cfg,
                            side,
                            signalling,
                        );
                        let remote = trunkgate_media::sdp::Remote {
                            rtp: addr,
                            rtcp: std::net::SocketAddr::new(addr.ip(), addr.port().wrapping_add(1)),
                            rtcp_mux: false,
                            direction: Default::default(),
                            clock_rate: 8000,
                        };
                        let _ = engine.set_remote(session, side, i, remote, &policy);
                    }
                    // SRTP on the carrier leg goes on with the same keys, where it was.
                    let Some(record) = &s.srtp else { continue };
                    let srtp_policy = crate::call::media::srtp_policy(trunk_cfg.media.srtp);
                    let resumed = record.state().and_then(|state| {
                        engine
                            .resume_srtp(session, i, srtp_policy, state)
                            .map_err(|e| e.to_string())
                    });
                    if let Err(why) = resumed {
                        engine.close(session);
                        return Err(format!("SRTP of stream {i}: {why}"));
                    }
                }
                // With the fast path pinned, the kernel kept forwarding its streams.
                engine.adopt_kernel(session);
                *self.rtp_by_trunk.entry(trunk_cfg.id.clone()).or_insert(0) += 1;
                Some(session)
            }
        };
        let mut slot = rt.state[t as usize].restore_slot();
        // The same place in the fleet's count it held before: counted once, nothing claimed
        // (a claim would count it again against the calls per second).
        if let Some(place) = r
            .place
            .as_deref()
            .and_then(|m| self.shared.fleet.keep_place(&trunk_cfg.id, m))
        {
            slot.hold_in_fleet(place);
        }
        self.dialogs
            .insert((a.call_id.clone(), a.local_tag.clone()), (id, LegId::A));
        self.dialogs
            .insert((b.call_id.clone(), b.local_tag.clone()), (id, LegId::B));
        let key = crate::sip::transaction::TransactionKey::client(
            &format!("z9hG4bK-restored-{}", r.key),
            trunkgate_sip::Method::Invite,
        );
        tracing::info!(
            trunk = trunk_cfg.id,
            call_id = a.call_id.as_str(),
            "call of the previous run restored"
        );
        let call = Call {
            rt,
            trunk: t,
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
        };
        // RFC 4028: each leg's session timer runs on from where it was (one that fell due
        // while no edge ran fires now: a refresh sent, or the call ended for want of one).
        let timers: Vec<(LegId, std::time::Instant)> = [(LegId::A, &call.a), (LegId::B, &call.b)]
            .into_iter()
            .filter_map(|(leg, l)| Some((leg, l.session?.due)))
            .collect();
        self.calls.insert(id, call);
        for (leg, due) in timers {
            self.schedule(
                due.saturating_duration_since(self.now),
                crate::worker::Timer::Session(id, leg),
            );
        }
        self.checkpoint(id);
        Ok(id)
    }
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
