//! Call quality seen from the relay: RFC 3550 loss from sequence gaps (A.1, A.3), interarrival
//! jitter (A.8), and an estimated MOS from a simplified ITU-T G.107 E-model.

use std::time::Instant;

/// RFC 3550 A.1: a forward jump larger than this is a restart, not loss.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: a packet this far behind the highest sequence seen is late, not new.
const MAX_MISORDER: u16 = 100;
/// Clock rate assumed when the SDP named none (G.711 and most narrowband codecs).
pub const DEFAULT_CLOCK_RATE: u32 = 8000;

/// Receive statistics of one direction of one stream (RTP packets from one side).
#[derive(Debug, Clone)]
pub struct Receiver {
    clock_rate: u32,
    epoch: Instant,
    started: bool,
    ssrc: u32,
    /// RFC 3550 A.1 state of the current SSRC.
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    bad_seq: Option<u16>,
    received: u64,
    /// Expected and received packets of earlier SSRCs in this stream (a re-INVITE or a
    /// music-on-hold source changes the SSRC; loss is summed over all of them).
    prior_expected: u64,
    prior_received: u64,
    /// RFC 3550 A.8 state.
    last_transit: Option<i32>,
    last_ts: u32,
    last_pt: u8,
    jitter: f64,
    payload_type: Option<u8>,
}

/// The RFC 3550 state of a [`Receiver`], handed to the kernel fast path and back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RxState {
    pub epoch: Instant,
    pub clock_rate: u32,
    pub ssrc: u32,
    pub base_seq: u32,
    pub max_seq: u16,
    pub cycles: u32,
    pub bad_seq: Option<u16>,
    pub received: u64,
    pub prior_expected: u64,
    pub prior_received: u64,
    pub last_transit: Option<i32>,
    pub last_ts: u32,
    pub last_pt: u8,
    pub jitter: f64,
}

impl Receiver {
    /// Its state once a packet has started it.
    pub(crate) fn state(&self) -> Option<RxState> {
        self.started.then_some(RxState {
            epoch: self.epoch,
            clock_rate: self.clock_rate,
            ssrc: self.ssrc,
            base_seq: self.base_seq,
            max_seq: self.max_seq,
            cycles: self.cycles,
            bad_seq: self.bad_seq,
            received: self.received,
            prior_expected: self.prior_expected,
            prior_received: self.prior_received,
            last_transit: self.last_transit,
            last_ts: self.last_ts,
            last_pt: self.last_pt,
            jitter: self.jitter,
        })
    }

    /// Starts from state the kernel fast path kept (a restored call whose stream the kernel
    /// forwarded while no process ran): its SSRC, clock and epoch too.
    pub(crate) fn start_as(&mut self, s: RxState) {
        self.started = true;
        self.ssrc = s.ssrc;
        self.epoch = s.epoch;
        self.clock_rate = s.clock_rate.max(1);
        self.payload_type = Some(s.last_pt);
        self.set_state(s);
    }

    /// Takes back the state the kernel carried on (same SSRC, epoch and clock).
    pub(crate) fn set_state(&mut self, s: RxState) {
        self.base_seq = s.base_seq;
        self.max_seq = s.max_seq;
        self.cycles = s.cycles;
        self.bad_seq = s.bad_seq;
        self.received = s.received;
        self.prior_expected = s.prior_expected;
        self.prior_received = s.prior_received;
        self.last_transit = s.last_transit;
        self.last_ts = s.last_ts;
        self.last_pt = s.last_pt;
        self.jitter = s.jitter;
    }

    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            epoch: Instant::now(),
            started: false,
            ssrc: 0,
            base_seq: 0,
            max_seq: 0,
            cycles: 0,
            bad_seq: None,
            received: 0,
            prior_expected: 0,
            prior_received: 0,
            last_transit: None,
            last_ts: 0,
            last_pt: 0,
            jitter: 0.0,
            payload_type: None,
        }
    }

    /// The RTP clock rate of this direction (from the SDP), for jitter in timestamp units.
    pub fn set_clock_rate(&mut self, clock_rate: u32) {
        let clock_rate = clock_rate.max(1);
        if clock_rate != self.clock_rate {
            self.clock_rate = clock_rate;
            self.last_transit = None;
        }
    }

    /// The SSRC, rollover count (RFC 3550 A.1 `cycles`, unshifted) and highest sequence number
    /// of the current source, once a packet has started it.
    pub fn progress(&self) -> Option<(u32, u32, u16)> {
        self.started
            .then_some((self.ssrc, self.cycles >> 16, self.max_seq))
    }

    /// Counts one RTP packet (header fields) that arrived at `now`.
    pub fn on_packet(&mut self, seq: u16, ts: u32, ssrc: u32, pt: u8, now: Instant) {
        if !self.started || ssrc != self.ssrc {
            self.fold();
            self.restart(seq, ssrc);
        } else if !self.update_seq(seq) {
            return;
        }
        self.received += 1;
        if self.payload_type.is_none() && pt < 96 && pt != 13 {
            self.payload_type = Some(pt);
        }
        self.update_jitter(ts, pt, now);
    }

    fn fold(&mut self) {
        if self.started {
            self.prior_expected += self.expected_current();
            self.prior_received += self.received;
        }
    }

    fn restart(&mut self, seq: u16, ssrc: u32) {
        self.started = true;
        self.ssrc = ssrc;
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.cycles = 0;
        self.bad_seq = None;
        self.received = 0;
        self.last_transit = None;
    }

    /// RFC 3550 A.1 `update_seq`, without probation: false when the packet must not be counted.
    fn update_seq(&mut self, seq: u16) -> bool {
        let udelta = seq.wrapping_sub(self.max_seq);
        if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles += 1 << 16;
            }
            self.max_seq = seq;
        } else if udelta <= u16::MAX - MAX_MISORDER {
            // A big jump: the sender restarted, once two packets agree on the new numbering.
            if self.bad_seq == Some(seq) {
                self.fold();
                let ssrc = self.ssrc;
                self.restart(seq, ssrc);
            } else {
                self.bad_seq = Some(seq.wrapping_add(1));
                return false;
            }
        }
        // Otherwise a duplicate or a reordered packet: counted, max unchanged.
        true
    }

    /// RFC 3550 A.8: J += (|D(i-1,i)| - J) / 16, in timestamp units. Packets whose payload
    /// type changed (RFC 4733 events between voice) or that repeat the timestamp (event
    /// updates, RFC 4733 §2.5.1.2) carry no timing information and are skipped.
    fn update_jitter(&mut self, ts: u32, pt: u8, now: Instant) {
        let nanos = now.saturating_duration_since(self.epoch).as_nanos();
        let arrival = (nanos * u128::from(self.clock_rate) / 1_000_000_000) as u32;
        let transit = arrival.wrapping_sub(ts) as i32;
        let comparable = pt == self.last_pt && ts != self.last_ts;
        if let (Some(last), true) = (self.last_transit, comparable) {
            let d = f64::from(transit.wrapping_sub(last).unsigned_abs());
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
        self.last_ts = ts;
        self.last_pt = pt;
    }

    fn expected_current(&self) -> u64 {
        if !self.started {
            return 0;
        }
        let ext_max = u64::from(self.cycles) + u64::from(self.max_seq);
        (ext_max + 1).saturating_sub(u64::from(self.base_seq))
    }

    /// Packets the sequence numbers say should have arrived (RFC 3550 A.3).
    pub fn expected(&self) -> u64 {
        self.prior_expected + self.expected_current()
    }

    /// RTP packets counted (duplicates included, as RFC 3550 A.3 does).
    pub fn received(&self) -> u64 {
        self.prior_received + self.received
    }

    /// Cumulative packets lost (never negative: duplicates do not make loss negative).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received())
    }

    /// Interarrival jitter in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter * 1000.0 / f64::from(self.clock_rate)
    }

    /// Estimated MOS of what arrived, or None before the first packet.
    pub fn mos(&self) -> Option<f64> {
        let expected = self.expected();
        if expected == 0 {
            return None;
        }
        let loss = self.lost() as f64 / expected as f64;
        let codec = Impairment::for_payload_type(self.payload_type);
        Some(estimated_mos(loss, self.jitter_ms(), codec))
    }
}

/// E-model codec parameters (ITU-T G.113 Appendix I): equipment impairment `ie` and packet
/// loss robustness `bpl`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    pub ie: f64,
    pub bpl: f64,
}

impl Impairment {
    /// G.711 with packet loss concealment.
    pub const G711: Impairment = Impairment { ie: 0.0, bpl: 25.1 };
    /// G.729A.
    pub const G729: Impairment = Impairment {
        ie: 11.0,
        bpl: 19.0,
    };
    /// G.723.1 at 6.3 kbit/s.
    pub const G723: Impairment = Impairment {
        ie: 15.0,
        bpl: 16.1,
    };

    /// By static payload type (RFC 3551); anything else is rated like G.711.
    pub fn for_payload_type(pt: Option<u8>) -> Impairment {
        match pt {
            Some(18) => Self::G729,
            Some(4) => Self::G723,
            _ => Self::G711,
        }
    }
}

/// Packetization delay assumed (20 ms frames).
const PACKETIZATION_MS: f64 = 20.0;
/// One-way network delay assumed beyond the edge: the relay sees only its own hop.
const NETWORK_ONE_WAY_MS: f64 = 20.0;
/// The smallest jitter buffer a receiver runs.
const MIN_JITTER_BUFFER_MS: f64 = 20.0;

/// The mouth-to-ear delay the E-model is fed: framing, a one-way network estimate, and a
/// jitter buffer twice the measured jitter.
pub fn estimated_delay_ms(jitter_ms: f64) -> f64 {
    PACKETIZATION_MS + NETWORK_ONE_WAY_MS + (2.0 * jitter_ms).max(MIN_JITTER_BUFFER_MS)
}

/// Delay impairment Id, the usual simplification of G.107 §7.4 (Cole & Rosenbluth):
/// Id = 0.024·d + 0.11·(d − 177.3)·H(d − 177.3).
pub fn delay_impairment(delay_ms: f64) -> f64 {
    let d = delay_ms.max(0.0);
    0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 }
}

/// G.107 §7.5 effective equipment impairment with random loss (BurstR = 1):
/// Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl + Bpl), Ppl in percent.
pub fn effective_impairment(loss: f64, codec: Impairment) -> f64 {
    let ppl = (loss * 100.0).clamp(0.0, 100.0);
    codec.ie + (95.0 - codec.ie) * ppl / (ppl + codec.bpl)
}

/// Transmission rating R = 93.2 − Id − Ie,eff (the other G.107 terms at their defaults).
pub fn r_factor(delay_ms: f64, loss: f64, codec: Impairment) -> f64 {
    93.2 - delay_impairment(delay_ms) - effective_impairment(loss, codec)
}

/// G.107 Annex B: MOS = 1 + 0.035·R + R·(R − 60)·(100 − R)·7·10⁻⁶, clamped to [1, 4.5].
pub fn mos_from_r(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6
    }
}

/// MOS estimated from a loss fraction (0..1) and jitter in milliseconds.
pub fn estimated_mos(loss: f64, jitter_ms: f64, codec: Impairment) -> f64 {
    mos_from_r(r_factor(estimated_delay_ms(jitter_ms), loss, codec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn close(a: f64, b: f64, eps: f64) -> bool {
        (a - b).abs() <= eps
    }

    #[test]
    fn mos_from_r_table() {
        for (r, want) in [
            (-5.0, 1.0),
            (0.0, 1.0),
            (50.0, 2.575),
            (70.0, 3.6),
            (80.0, 4.02),
            (93.2, 4.41),
            (100.0, 4.5),
        ] {
            let got = mos_from_r(r);
            assert!(close(got, want, 0.01), "R={r}: {got} != {want}");
        }
    }

    #[test]
    fn mos_by_loss_and_jitter() {
        let clean = estimated_mos(0.0, 0.0, Impairment::G711);
        assert!(close(clean, 4.4, 0.05), "{clean}");
        let lossy = estimated_mos(0.05, 0.0, Impairment::G711);
        assert!(lossy < 3.95 && lossy > 3.7, "{lossy}");
        let very = estimated_mos(0.20, 0.0, Impairment::G711);
        assert!(very < 3.0, "{very}");
        let jittery = estimated_mos(0.0, 120.0, Impairment::G711);
        assert!(jittery < clean - 0.2, "{jittery}");
        let g729 = estimated_mos(0.0, 0.0, Impairment::G729);
        assert!(g729 < clean && g729 > 3.9, "{g729}");
    }

    #[test]
    fn impairments_table() {
        assert!(close(delay_impairment(100.0), 2.4, 1e-9));
        assert!(close(delay_impairment(200.0), 4.8 + 0.11 * 22.7, 1e-9));
        assert!(close(
            effective_impairment(0.0, Impairment::G711),
            0.0,
            1e-9
        ));
        // 5 % loss on G.711: 95 · 5 / 30.1.
        assert!(close(
            effective_impairment(0.05, Impairment::G711),
            15.78,
            0.01
        ));
    }

    fn feed(rx: &mut Receiver, seqs: &[u16], t0: Instant) {
        for &s in seqs {
            let n = u32::from(s);
            rx.on_packet(
                s,
                n.wrapping_mul(160),
                7,
                0,
                t0 + Duration::from_millis(u64::from(n) * 20),
            );
        }
    }

    #[test]
    fn loss_from_gaps_with_wrap_and_reordering() {
        let t0 = Instant::now();
        // In order across the 16-bit wrap: nothing lost.
        let mut rx = Receiver::new(8000);
        let seqs: Vec<u16> = (0..100u16).map(|i| 65500u16.wrapping_add(i)).collect();
        feed(&mut rx, &seqs, t0);
        assert_eq!((rx.expected(), rx.received(), rx.lost()), (100, 100, 0));

        // Two dropped, one pair swapped: loss 2, reordering costs nothing.
        let mut rx = Receiver::new(8000);
        feed(&mut rx, &[1, 2, 4, 3, 5, 8, 9, 10], t0);
        assert_eq!(rx.lost(), 2);

        // A duplicate does not make loss negative.
        let mut rx = Receiver::new(8000);
        feed(&mut rx, &[1, 2, 2, 3], t0);
        assert_eq!(rx.lost(), 0);

        // A new SSRC starts a new count; earlier loss is kept.
        let mut rx = Receiver::new(8000);
        feed(&mut rx, &[1, 3], t0);
        rx.on_packet(5000, 0, 8, 0, t0);
        rx.on_packet(5001, 160, 8, 0, t0 + Duration::from_millis(20));
        assert_eq!((rx.expected(), rx.lost()), (5, 1));

        // A jump past MAX_DROPOUT is a restart once confirmed, not 40000 lost packets.
        let mut rx = Receiver::new(8000);
        feed(&mut rx, &[1, 2, 40000, 40001, 40002], t0);
        assert_eq!(rx.lost(), 0);
    }

    #[test]
    fn jitter_zero_when_regular_and_grows_when_not() {
        let t0 = Instant::now();
        let mut rx = Receiver::new(8000);
        for i in 0..50u32 {
            rx.on_packet(
                i as u16,
                i * 160,
                1,
                0,
                t0 + Duration::from_millis(u64::from(i) * 20),
            );
        }
        assert!(rx.jitter_ms() < 0.2, "{}", rx.jitter_ms());
        let mut rx = Receiver::new(8000);
        for i in 0..200u32 {
            let wobble = if i % 2 == 0 { 0 } else { 10 };
            rx.on_packet(
                i as u16,
                i * 160,
                1,
                0,
                t0 + Duration::from_millis(u64::from(i) * 20 + wobble),
            );
        }
        // |D| = 10 ms each packet: J converges to 10 ms.
        assert!(close(rx.jitter_ms(), 10.0, 0.5), "{}", rx.jitter_ms());
        assert!(rx.mos().is_some_and(|m| m < 4.4));
    }
}
