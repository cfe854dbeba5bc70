//! A worker's relay ([`crate::call::media`] has what a call does with it): the engine, the
//! sessions open per trunk (for the RTP port fair share), the relay's counters as metrics, and
//! a call's streams as its checkpoint keeps them.

use trunkgate_crds::snapshot::TrunkConfig;
use trunkgate_media::{MediaEngine, PeerPolicy, SessionId, StreamStats};

use super::Table;
use crate::call::Side;
use crate::call::checkpoint::{SrtpRecord, StreamRecord};
use crate::call::media::SdpRefusal;
use crate::metrics::Metrics;

/// One worker's relay.
pub struct Relay {
    /// None when it could not start: relayed calls get 503.
    engine: Option<MediaEngine>,
    /// The relay's totals already added to the metrics.
    counted: trunkgate_media::Counters,
    /// Relay sessions open on this worker, per trunk id (for the RTP port fair share).
    by_trunk: Table<String, u32>,
    metrics: Metrics,
}

impl Relay {
    pub fn new(engine: Option<MediaEngine>, metrics: Metrics) -> Self {
        Relay {
            engine,
            counted: Default::default(),
            by_trunk: Default::default(),
            metrics,
        }
    }

    pub fn engine_mut(&mut self) -> Option<&mut MediaEngine> {
        self.engine.as_mut()
    }

    /// Whether `trunk` may open one more session ([`crate::call::media::may_take_ports`]) with
    /// `relaying` trunks relaying media.
    pub fn may_take_ports(&self, trunk: &str, relaying: usize) -> bool {
        let Some(engine) = &self.engine else {
            return true;
        };
        let mine = self.by_trunk.get(trunk).copied().unwrap_or(0);
        crate::call::media::may_take_ports(
            engine.ports_available(),
            engine.port_pairs(),
            mine,
            relaying,
        )
    }

    /// Opens call `id`'s session ([`crate::call::media::open`]) for `trunk`.
    pub fn open(
        &mut self,
        id: u64,
        trunk: &TrunkConfig,
        from: Side,
        body: &[u8],
        policy: &PeerPolicy,
    ) -> Result<(SessionId, Vec<u8>), SdpRefusal> {
        let opened = crate::call::media::open(
            &mut self.engine,
            id,
            from,
            body,
            &trunk.media.codecs,
            policy,
            crate::call::media::srtp_policy(trunk.media.srtp),
        )?;
        *self.by_trunk.entry(trunk.id.clone()).or_insert(0) += 1;
        Ok(opened)
    }

    /// Closes `session` of `trunk`; its statistics (for the call record).
    pub fn close(&mut self, session: SessionId, trunk: &str) -> Vec<StreamStats> {
        let Some(engine) = self.engine.as_mut() else {
            return Vec::new();
        };
        if let Some(n) = self.by_trunk.get_mut(trunk) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_trunk.remove(trunk);
            }
        }
        let stats = engine.close(session);
        // What the kernel forwarded for it is counted now, not at the next relay pass.
        self.count();
        stats
    }

    /// `session`'s streams as a checkpoint keeps them: ports, latched remotes, SRTP state.
    pub fn streams(&self, session: Option<SessionId>) -> Vec<StreamRecord> {
        let (Some(session), Some(engine)) = (session, self.engine.as_ref()) else {
            return Vec::new();
        };
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

    /// Call `id`'s session of a previous run bound again on its ports with its remotes and
    /// SRTP where they were; `policy` is who may be the peer on a side.
    pub fn reopen(
        &mut self,
        id: u64,
        trunk: &TrunkConfig,
        streams: &[StreamRecord],
        policy: impl Fn(Side) -> PeerPolicy,
    ) -> Result<SessionId, String> {
        let Some(engine) = self.engine.as_mut() else {
            return Err("this edge has no media relay".into());
        };
        let ports: Vec<[u16; 2]> = streams.iter().map(|s| s.ports).collect();
        let session = engine
            .reopen(id, &ports)
            .map_err(|e| format!("relay ports {ports:?}: {e}"))?;
        for (i, s) in streams.iter().enumerate() {
            for side in [Side::Public, Side::Internal] {
                let Some(addr) = s.remotes[side.index()] else {
                    continue;
                };
                let remote = trunkgate_media::sdp::Remote {
                    rtp: addr,
                    rtcp: std::net::SocketAddr::new(addr.ip(), addr.port().wrapping_add(1)),
                    rtcp_mux: false,
                    direction: Default::default(),
                    clock_rate: 8000,
                };
                let _ = engine.set_remote(session, side, i, remote, &policy(side));
            }
            // SRTP on the carrier leg goes on with the same keys, where it was.
            let Some(record) = &s.srtp else { continue };
            let srtp_policy = crate::call::media::srtp_policy(trunk.media.srtp);
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
        *self.by_trunk.entry(trunk.id.clone()).or_insert(0) += 1;
        Ok(session)
    }

    /// The relay's work since the last pass (packets moved, events out), counted.
    pub fn relay(&mut self) -> Vec<trunkgate_media::MediaEvent> {
        let events = self
            .engine
            .as_mut()
            .map(MediaEngine::relay)
            .unwrap_or_default();
        self.count();
        events
    }

    /// Resolves when the relay has work; never when this worker has no relay.
    pub async fn wait(&self) {
        match &self.engine {
            Some(m) => m.wait().await,
            None => std::future::pending().await,
        }
    }

    /// Adds what the relay dropped and the kernel forwarded since the last look to the metrics.
    fn count(&mut self) {
        let Some(engine) = self.engine.as_ref() else {
            return;
        };
        let now = engine.counters();
        let before = &self.counted;
        let m = &self.metrics.media_dropped;
        for (label, now, before) in [
            ("unexpected_source", now.foreign, before.foreign),
            ("unconfirmed_destination", now.held, before.held),
            ("not_forwarded", now.dropped, before.dropped),
        ] {
            if now > before {
                m.with_label_values(&[label]).inc_by(now - before);
            }
        }
        for (what, now, before) in [
            ("forwarded", now.kernel_forwarded, before.kernel_forwarded),
            ("installs", now.kernel_installs, before.kernel_installs),
        ] {
            if now > before {
                self.metrics
                    .media_kernel_forwarded
                    .with_label_values(&[what])
                    .inc_by(now - before);
            }
        }
        for r in trunkgate_media::srtp::Reject::ALL {
            let n = now.srtp_rejected[r.index()] - before.srtp_rejected[r.index()];
            if n > 0 {
                m.with_label_values(&[r.label()]).inc_by(n);
            }
        }
        self.counted = now;
    }
}
