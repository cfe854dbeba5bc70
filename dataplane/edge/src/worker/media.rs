//! The worker's side of its relay ([`crate::call::media`]): closing a call's session, media
//! events (timeouts, SRTP progress), the relay's counters.

use trunkgate_media::StreamStats;

use super::Worker;

impl Worker {
    /// Closes the call's relay session; the statistics go to the call record.
    pub fn close_media(&mut self, id: u64) -> Vec<StreamStats> {
        let Some(c) = self.calls.get_mut(&id) else {
            return Vec::new();
        };
        let (Some(session), Some(engine)) = (c.media.take(), self.media.as_mut()) else {
            return Vec::new();
        };
        let trunk = c.rt.trunk(c.trunk).id.as_str();
        if let Some(n) = self.rtp_by_trunk.get_mut(trunk) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.rtp_by_trunk.remove(trunk);
            }
        }
        let stats = engine.close(session);
        // What the kernel forwarded for it is counted now, not at the next relay pass.
        self.count_media_drops();
        stats
    }

    /// Media timeouts: an answered call that carried no RTP for `--media-timeout` ends with a
    /// BYE on both legs carrying a Reason header (RFC 3326).
    pub fn on_media_events(&mut self, events: Vec<trunkgate_media::MediaEvent>) {
        self.count_media_drops();
        for e in events {
            let call = match e {
                trunkgate_media::MediaEvent::Timeout { call, .. } => call,
                trunkgate_media::MediaEvent::SrtpProgress { call } => {
                    // Where its SRTP contexts stand moved on: a restarted edge resumes them
                    // from the checkpoint (crate::fleet::restore).
                    self.checkpoint(call);
                    continue;
                }
                trunkgate_media::MediaEvent::UnexpectedSource {
                    call,
                    stream,
                    from,
                    src,
                    expected,
                } => {
                    // Once per stream direction: the packets themselves are counted.
                    let trunk = self.calls.get(&call).map(|c| c.trunk_id().to_string());
                    tracing::warn!(
                        call,
                        trunk = trunk.as_deref().unwrap_or(""),
                        stream,
                        from = from.label(),
                        %src,
                        expected = ?expected,
                        "media from an unexpected address dropped (not the latched one, nor one that may latch: the SDP's IP, or with media.behindNat the side's allow-list or signalling address)"
                    );
                    continue;
                }
            };
            let Some(c) = self.calls.get_mut(&call) else {
                continue;
            };
            if c.state != crate::call::CallState::Confirmed {
                continue;
            }
            c.bye_lines = "Reason: SIP;cause=408;text=\"media timeout\"\r\n".to_string();
            self.shared
                .metrics
                .media_timeouts
                .with_label_values(&[c.trunk_id()])
                .inc();
            self.end_call(call, None, "media timeout");
        }
    }

    /// Adds what the relay dropped since the last look to
    /// `trunkgate_edge_media_packets_dropped_total`.
    fn count_media_drops(&mut self) {
        let Some(engine) = self.media.as_ref() else {
            return;
        };
        let now = engine.counters();
        let m = &self.shared.metrics.media_dropped;
        let foreign = now.foreign - self.media_counted.foreign;
        if foreign > 0 {
            m.with_label_values(&["unexpected_source"]).inc_by(foreign);
        }
        let held = now.held - self.media_counted.held;
        if held > 0 {
            m.with_label_values(&["unconfirmed_destination"])
                .inc_by(held);
        }
        let dropped = now.dropped - self.media_counted.dropped;
        if dropped > 0 {
            m.with_label_values(&["not_forwarded"]).inc_by(dropped);
        }
        for (what, now, before) in [
            (
                "forwarded",
                now.kernel_forwarded,
                self.media_counted.kernel_forwarded,
            ),
            (
                "installs",
                now.kernel_installs,
                self.media_counted.kernel_installs,
            ),
        ] {
            if now > before {
                self.shared
                    .metrics
                    .media_kernel_forwarded
                    .with_label_values(&[what])
                    .inc_by(now - before);
            }
        }
        for r in trunkgate_media::srtp::Reject::ALL {
            let n = now.srtp_rejected[r.index()] - self.media_counted.srtp_rejected[r.index()];
            if n > 0 {
                m.with_label_values(&[r.label()]).inc_by(n);
            }
        }
        self.media_counted = now;
    }
}
