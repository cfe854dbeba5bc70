//! SRTP on a carrier leg: the crypto suites the edge speaks, SDES keys and the `a=crypto`
//! attribute (RFC 4568 §9.1), and the packet transforms (RFC 3711 AES-CM with HMAC-SHA1,
//! RFC 7714 AES-GCM) done by `webrtc-srtp`, a maintained pure-Rust implementation: no cipher
//! is written here.
//!
//! What this module adds around the library is the edge's own rules:
//! - every length the library indexes without checking is checked first (a datagram is
//!   input from the network);
//! - replay protection on receipt (RFC 3711 §3.3.2, a 64-packet window per SSRC);
//! - a cap on the SSRCs one direction may hold state for, so a forged stream cannot make the
//!   relay allocate per packet;
//! - after a rekey the previous receive key keeps working until the first packet under the
//!   new one authenticates (packets in flight during a re-INVITE are not lost).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use rand::RngCore;
use webrtc_srtp::context::Context;
use webrtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use webrtc_srtp::protection_profile::ProtectionProfile;

/// RFC 3711 §3.3.2: the replay window the edge keeps per SSRC.
const REPLAY_WINDOW: usize = 64;
/// Distinct SSRCs one direction of one stream may carry (a call uses one or two).
pub const MAX_SSRCS: usize = 8;
/// The SRTCP index and E flag that end every SRTCP packet (RFC 3711 §3.4).
const SRTCP_INDEX: usize = 4;
/// The fixed RTCP header with the sender's SSRC.
const RTCP_HEADER: usize = 8;

/// A crypto suite the edge negotiates, in the order it prefers them when it offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Suite {
    /// RFC 4568 §6.2.1: AES-128 counter mode, 80-bit HMAC-SHA1 tag.
    AesCm128HmacSha1_80,
    /// RFC 4568 §6.2.2: the same with a 32-bit tag on RTP (SRTCP keeps 80 bits).
    AesCm128HmacSha1_32,
    /// RFC 7714 §14.2: AES-128 in Galois/Counter Mode, 16-byte tag.
    AeadAes128Gcm,
}

/// Every suite, most preferred first: what the edge offers a carrier.
pub const SUITES: [Suite; 3] = [
    Suite::AesCm128HmacSha1_80,
    Suite::AesCm128HmacSha1_32,
    Suite::AeadAes128Gcm,
];

impl Suite {
    /// The name in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Suite::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    pub fn from_name(name: &str) -> Option<Suite> {
        SUITES.into_iter().find(|s| s.name() == name)
    }

    fn profile(self) -> ProtectionProfile {
        match self {
            Suite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            Suite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
            Suite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        }
    }

    /// Master key bytes.
    pub fn key_len(self) -> usize {
        16
    }

    /// Master salt bytes: 112 bits for AES-CM (RFC 3711 §8.2), 96 for GCM (RFC 7714 §12).
    pub fn salt_len(self) -> usize {
        match self {
            Suite::AeadAes128Gcm => 12,
            _ => 14,
        }
    }

    /// Bytes an SRTP packet carries beyond the RTP one.
    fn rtp_tag(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 => 10,
            Suite::AesCm128HmacSha1_32 => 4,
            Suite::AeadAes128Gcm => 16,
        }
    }

    /// The SRTCP authentication tag (80 bits for both AES-CM suites, RFC 4568 §6.2.2).
    fn rtcp_tag(self) -> usize {
        match self {
            Suite::AeadAes128Gcm => 16,
            _ => 10,
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A master key and salt for one suite. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    suite: Suite,
    material: Vec<u8>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({}, <{} bytes>)", self.suite, self.material.len())
    }
}

impl Key {
    /// A fresh key from the operating system's generator (RFC 4568 §6.1: keys must be random).
    pub fn random(suite: Suite) -> Key {
        let mut material = vec![0u8; suite.key_len() + suite.salt_len()];
        rand::rng().fill_bytes(&mut material);
        Key { suite, material }
    }

    /// A key from its concatenated master key and salt; None when the length is wrong.
    pub fn from_material(suite: Suite, material: Vec<u8>) -> Option<Key> {
        (material.len() == suite.key_len() + suite.salt_len()).then_some(Key { suite, material })
    }

    pub fn suite(&self) -> Suite {
        self.suite
    }

    fn context(&self, replay: bool) -> Result<Context, Reject> {
        let (k, salt) = self.material.split_at(self.suite.key_len());
        let (rtp, rtcp) = if replay {
            (
                Some(srtp_replay_protection(REPLAY_WINDOW)),
                Some(srtcp_replay_protection(REPLAY_WINDOW)),
            )
        } else {
            (None, None)
        };
        Context::new(k, salt, self.suite.profile(), rtp, rtcp).map_err(|_| Reject::Malformed)
    }
}

/// One `a=crypto` attribute: the key its writer sends with, under a tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    pub key: Key,
}

impl Crypto {
    /// Reads the value of `a=crypto:` (RFC 4568 §9.1):
    /// `tag SP suite SP inline:<base64 key||salt>[|lifetime][|MKI:length] [session-params]`.
    /// The error says why the edge cannot use it (the caller skips it or refuses the SDP):
    /// an unknown suite, several keys or an MKI, session parameters the edge does not
    /// implement (RFC 4568 §6.3: unencrypted or unauthenticated SRTP, a key derivation rate,
    /// FEC order), or a key of the wrong length.
    pub fn parse(value: &str) -> Result<Crypto, &'static str> {
        let mut t = value.split_ascii_whitespace();
        let (Some(tag), Some(suite), Some(params)) = (t.next(), t.next(), t.next()) else {
            return Err("a=crypto needs a tag, a suite and key parameters");
        };
        if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
            return Err("a=crypto tag is not 1 to 9 digits");
        }
        let tag: u32 = tag.parse().map_err(|_| "a=crypto tag is not a number")?;
        let suite = Suite::from_name(suite).ok_or("crypto suite not supported")?;
        for session_param in t {
            // WSH is a hint for the receiver's replay window (RFC 4568 §6.3.7); every other
            // session parameter changes the transform.
            let name = session_param.split('=').next().unwrap_or("");
            if !name.eq_ignore_ascii_case("WSH") {
                return Err("a=crypto session parameters not supported");
            }
        }
        if params.contains(';') {
            return Err("a=crypto with several keys not supported");
        }
        let inline = params
            .strip_prefix("inline:")
            .ok_or("a=crypto key method is not inline")?;
        let mut parts = inline.split('|');
        let b64 = parts.next().unwrap_or("");
        for p in parts {
            if p.contains(':') {
                return Err("a=crypto with an MKI not supported");
            }
            let lifetime_ok = match p.strip_prefix("2^") {
                Some(exp) => exp.parse::<u8>().is_ok_and(|e| e <= 48),
                None => p.parse::<u64>().is_ok(),
            };
            if !lifetime_ok {
                return Err("a=crypto key lifetime is malformed");
            }
        }
        // RFC 4568 §6.1 writes keys in base64 with its padding; rtpengine (and others) leave the
        // padding off the 28-byte GCM key, so either is read.
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let material = lenient
            .decode(b64)
            .map_err(|_| "a=crypto key is not base64")?;
        let key = Key::from_material(suite, material).ok_or("a=crypto key has the wrong length")?;
        Ok(Crypto { tag, key })
    }

    /// The value of an `a=crypto:` attribute carrying this key.
    pub fn to_value(&self) -> String {
        format!(
            "{} {} inline:{}",
            self.tag,
            self.key.suite.name(),
            STANDARD.encode(&self.key.material)
        )
    }
}

/// Why a packet was not relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Reject {
    /// The authentication tag did not verify (a wrong key, a forged or damaged packet).
    Auth,
    /// A packet index already seen or behind the replay window (RFC 3711 §3.3.2).
    Replay,
    /// More SSRCs than [`MAX_SSRCS`] in one direction.
    SsrcLimit,
    /// Too short or not RTP/RTCP version 2.
    Malformed,
}

impl Reject {
    /// Every reason, in [`Reject::index`] order.
    pub const ALL: [Reject; 4] = [
        Reject::Auth,
        Reject::Replay,
        Reject::SsrcLimit,
        Reject::Malformed,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// The `reason` label of `trunkgate_edge_media_packets_dropped_total`.
    pub fn label(self) -> &'static str {
        match self {
            Reject::Auth => "srtp_auth",
            Reject::Replay => "srtp_replay",
            Reject::SsrcLimit => "srtp_ssrc_limit",
            Reject::Malformed => "srtp_malformed",
        }
    }
}

fn rejected(e: &webrtc_srtp::Error) -> Reject {
    use webrtc_srtp::Error as E;
    match e {
        E::SrtpSsrcDuplicated(..) | E::SrtcpSsrcDuplicated(..) | E::ErrDuplicated => Reject::Replay,
        E::ErrTooShortRtp
        | E::ErrTooShortRtcp
        | E::SrtpTooSmall(..)
        | E::SrtcpTooSmall(..)
        | E::Util(_) => Reject::Malformed,
        _ => Reject::Auth,
    }
}

/// RTP version 2 with a whole fixed header: its SSRC.
fn rtp_ssrc(p: &[u8]) -> Option<u32> {
    let h = p.get(..12)?;
    (h[0] >> 6 == 2).then(|| u32::from_be_bytes([h[8], h[9], h[10], h[11]]))
}

/// Whether an RTP header's CSRC list and extension fit in the packet, element by element for
/// RFC 8285 one- and two-byte extensions: the `rtp` crate's header parser indexes past the end
/// of a packet that says otherwise (found by `make fuzz`), so nothing reaches it unchecked.
fn rtp_header_fits(p: &[u8]) -> bool {
    let Some(&first) = p.first() else {
        return false;
    };
    let mut off = 12 + 4 * usize::from(first & 0x0f);
    if p.len() < off {
        return false;
    }
    if first & 0x10 == 0 {
        return true;
    }
    let Some(ext) = p.get(off..off + 4) else {
        return false;
    };
    let profile = u16::from_be_bytes([ext[0], ext[1]]);
    let end = off + 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
    off += 4;
    if p.len() < end {
        return false;
    }
    match profile {
        // One-byte elements (RFC 8285 §4.2): ID and length-1 in one byte; ID 15 stops.
        0xBEDE => {
            while off < end {
                let b = p[off];
                off += 1;
                if b == 0 {
                    continue;
                }
                if b >> 4 == 15 {
                    break;
                }
                off += usize::from(b & 0x0f) + 1;
                if off > end {
                    return false;
                }
            }
        }
        // Two-byte elements (RFC 8285 §4.3): an ID byte, a length byte.
        0x1000 => {
            while off < end {
                let b = p[off];
                off += 1;
                if b == 0 {
                    continue;
                }
                let Some(&len) = p.get(off).filter(|_| off < end) else {
                    return false;
                };
                off += 1 + usize::from(len);
                if off > end {
                    return false;
                }
            }
        }
        _ => {}
    }
    true
}

/// RTCP version 2 with the sender's SSRC: that SSRC.
fn rtcp_ssrc(p: &[u8]) -> Option<u32> {
    let h = p.get(..RTCP_HEADER)?;
    (h[0] >> 6 == 2).then(|| u32::from_be_bytes([h[4], h[5], h[6], h[7]]))
}

/// One direction's SRTP context under one key.
struct Transform {
    key: Key,
    ctx: Context,
    ssrcs: Vec<u32>,
}

impl Transform {
    fn new(key: Key, receiving: bool) -> Result<Transform, Reject> {
        Ok(Transform {
            ctx: key.context(receiving)?,
            key,
            ssrcs: Vec::new(),
        })
    }

    /// The library keeps state per SSRC: a new one is let in only while under the cap.
    fn admit(&mut self, ssrc: u32) -> Result<(), Reject> {
        if self.ssrcs.contains(&ssrc) {
            return Ok(());
        }
        if self.ssrcs.len() >= MAX_SSRCS {
            return Err(Reject::SsrcLimit);
        }
        self.ssrcs.push(ssrc);
        Ok(())
    }

    fn unprotect(&mut self, p: &[u8], rtcp: bool) -> Result<Bytes, Reject> {
        let suite = self.key.suite;
        let out = if rtcp {
            if p.len() < RTCP_HEADER + suite.rtcp_tag() + SRTCP_INDEX {
                return Err(Reject::Malformed);
            }
            self.admit(rtcp_ssrc(p).ok_or(Reject::Malformed)?)?;
            self.ctx.decrypt_rtcp(p)
        } else {
            if p.len() < 12 + suite.rtp_tag() || !rtp_header_fits(p) {
                return Err(Reject::Malformed);
            }
            self.admit(rtp_ssrc(p).ok_or(Reject::Malformed)?)?;
            self.ctx.decrypt_rtp(p)
        };
        out.map_err(|e| rejected(&e))
    }

    fn protect(&mut self, p: &[u8], rtcp: bool) -> Result<Bytes, Reject> {
        let out = if rtcp {
            self.admit(rtcp_ssrc(p).ok_or(Reject::Malformed)?)?;
            self.ctx.encrypt_rtcp(p)
        } else {
            if !rtp_header_fits(p) {
                return Err(Reject::Malformed);
            }
            self.admit(rtp_ssrc(p).ok_or(Reject::Malformed)?)?;
            self.ctx.encrypt_rtp(p)
        };
        out.map_err(|e| rejected(&e))
    }
}

/// How far one direction's SRTP context has gone: its SSRC, rollover counter (RFC 3711
/// §3.3.1) and highest sequence number. What a restarted edge needs, with the keys, to go on
/// protecting and unprotecting a call's media where the last run left off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    pub ssrc: u32,
    pub roc: u32,
    pub seq: u16,
}

impl Progress {
    /// Its packet index (RFC 3711 §3.3.1: `roc·2^16 + seq`).
    pub fn index(self) -> u64 {
        (u64::from(self.roc) << 16) | u64::from(self.seq)
    }

    /// Which quarter of the sequence space (16,384 packets) the index is in: a direction that
    /// enters the next one is checkpointed again ([`crate::MediaEvent::SrtpProgress`]).
    pub fn quarter(self) -> u64 {
        self.index() >> 14
    }
}

/// Rollover counters a resumed context is brought to at most (4,096 × 65,536 packets: 62 days
/// of a 20 ms stream); past that the call resumes with signalling only.
pub const MAX_RESUMED_ROC: u32 = 4096;

/// Sequence steps a context is walked forward by while resuming: under half the sequence
/// space, so each step is taken as "later" (RFC 3711 §3.3.1 index estimation).
const RESUME_STEP: u64 = 30_000;

/// A plain RTP packet of `ssrc` with sequence number `seq`, for walking a context forward.
fn priming_rtp(ssrc: u32, seq: u16) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = 0x80;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p
}

/// The sequence numbers that walk a fresh context to `at` (index `roc·2^16 + seq`).
fn walk(at: Progress) -> Result<Vec<u16>, Reject> {
    if at.roc > MAX_RESUMED_ROC {
        return Err(Reject::Malformed);
    }
    let target = at.index();
    if at.roc == 0 {
        return Ok(vec![at.seq]);
    }
    let mut steps = vec![0u16];
    let mut index = 0u64;
    while index < target {
        index = (index + RESUME_STEP).min(target);
        steps.push(index as u16);
    }
    Ok(steps)
}

impl Transform {
    /// Walks a fresh sending context to `at`: the next packet of that SSRC is protected with
    /// the rollover counter the peer expects.
    fn resume_sending(&mut self, at: Progress) -> Result<(), Reject> {
        for seq in walk(at)? {
            self.protect(&priming_rtp(at.ssrc, seq), false)?;
        }
        Ok(())
    }

    /// Walks a fresh receiving context to `at`, by unprotecting packets sealed with its own
    /// key (never sent anywhere).
    fn resume_receiving(&mut self, at: Progress) -> Result<(), Reject> {
        let mut sealer = Transform::new(self.key.clone(), false)?;
        for seq in walk(at)? {
            let sealed = sealer.protect(&priming_rtp(at.ssrc, seq), false)?;
            self.unprotect(&sealed, false)?;
        }
        Ok(())
    }

    /// Moves the SRTCP index of a sending context past `sent` packets of `ssrc`: the peer's
    /// replay check refuses an index it has seen (RFC 3711 §3.3.2).
    fn resume_srtcp(&mut self, ssrc: u32, sent: u64) -> Result<(), Reject> {
        let mut rr = [0u8; 8];
        rr[0] = 0x80;
        rr[1] = 201;
        rr[3] = 1;
        rr[4..8].copy_from_slice(&ssrc.to_be_bytes());
        for _ in 0..sent.min(u64::from(MAX_RESUMED_SRTCP)) {
            self.protect(&rr, true)?;
        }
        Ok(())
    }
}

/// SRTCP packets a resumed context skips at most.
pub const MAX_RESUMED_SRTCP: u32 = 1 << 20;

/// SRTCP packets the edge may have sent after the checkpoint a restarted edge resumes from,
/// skipped too: a checkpoint is written at least every 16,384 packets of a direction (5.5 min
/// of 20 ms packets), in which RTCP at its 5 s minimum interval (RFC 3550 §6.2) sends 66; twice
/// that leaves room for the outage. An index the peer has already seen would be a replay to it.
pub const SRTCP_SINCE_CHECKPOINT: u64 = 128;

/// SRTP on one leg of one stream: what the peer sends is checked and decrypted with the
/// peer's key, what goes to the peer is encrypted with the edge's.
pub struct LegSrtp {
    rx: Transform,
    /// The receive key before the last rekey, until the new one is in use.
    rx_old: Option<Transform>,
    tx: Transform,
}

impl fmt::Debug for LegSrtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LegSrtp")
            .field("rx", &self.rx.key)
            .field("tx", &self.tx.key)
            .field("rx_old", &self.rx_old.is_some())
            .finish()
    }
}

impl LegSrtp {
    /// `peer` is the key in the peer's `a=crypto`, `ours` the one in the edge's.
    pub fn new(peer: Key, ours: Key) -> Result<LegSrtp, Reject> {
        Ok(LegSrtp {
            rx: Transform::new(peer, true)?,
            rx_old: None,
            tx: Transform::new(ours, false)?,
        })
    }

    /// A leg of a restored call: the same keys, each context walked to where the last run
    /// left it (`received`: the peer's stream, `sent`: ours to it, `srtcp_sent`: SRTCP packets
    /// sent to it, an upper bound). Later packets are then protected and checked as if the
    /// process had never stopped, within RFC 3711's index estimation (half the sequence space
    /// past where it was).
    pub fn resume(
        peer: Key,
        ours: Key,
        received: Option<Progress>,
        sent: Option<Progress>,
        srtcp_sent: u64,
    ) -> Result<LegSrtp, Reject> {
        let mut leg = LegSrtp::new(peer, ours)?;
        if let Some(at) = received {
            leg.rx.resume_receiving(at)?;
        }
        if let Some(at) = sent {
            leg.tx.resume_sending(at)?;
            leg.tx
                .resume_srtcp(at.ssrc, srtcp_sent.saturating_add(SRTCP_SINCE_CHECKPOINT))?;
        }
        Ok(leg)
    }

    /// The keys: the peer's and the edge's.
    pub fn keys(&self) -> (&Key, &Key) {
        (&self.rx.key, &self.tx.key)
    }

    /// The suite the peer sends with.
    pub fn suite(&self) -> Suite {
        self.rx.key.suite
    }

    /// A new offer/answer exchange: a changed key starts a new context (fresh replay and
    /// rollover state, RFC 4568 §7.1.4); an unchanged one keeps its state.
    pub fn rekey(&mut self, peer: Key, ours: Key) -> Result<(), Reject> {
        if peer != self.rx.key {
            let old = std::mem::replace(&mut self.rx, Transform::new(peer, true)?);
            self.rx_old = Some(old);
        }
        if ours != self.tx.key {
            self.tx = Transform::new(ours, false)?;
        }
        Ok(())
    }

    /// An SRTP or SRTCP packet from the peer, as plain RTP or RTCP.
    pub fn unprotect(&mut self, p: &[u8], rtcp: bool) -> Result<Bytes, Reject> {
        match self.rx.unprotect(p, rtcp) {
            Ok(plain) => {
                self.rx_old = None;
                Ok(plain)
            }
            Err(Reject::Auth) => match self.rx_old.as_mut() {
                Some(old) => old.unprotect(p, rtcp),
                None => Err(Reject::Auth),
            },
            Err(e) => Err(e),
        }
    }

    /// A plain RTP or RTCP packet for the peer, as SRTP or SRTCP.
    pub fn protect(&mut self, p: &[u8], rtcp: bool) -> Result<Bytes, Reject> {
        self.tx.protect(p, rtcp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0, 0, 0, 0];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p.extend((0..160).map(|i| i as u8));
        p
    }

    fn sender_report(ssrc: u32) -> Vec<u8> {
        // RFC 3550 §6.4.1 SR without report blocks: 28 bytes.
        let mut p = vec![0x80, 200, 0, 6];
        p.extend(ssrc.to_be_bytes());
        p.extend([0u8; 20]);
        p
    }

    /// Two ends of one leg: `a` is the peer, `b` the edge.
    fn pair(suite: Suite) -> (LegSrtp, LegSrtp) {
        let (ka, kb) = (Key::random(suite), Key::random(suite));
        (
            LegSrtp::new(kb.clone(), ka.clone()).expect("peer"),
            LegSrtp::new(ka, kb).expect("edge"),
        )
    }

    /// What a checkpoint keeps of a leg: its keys.
    fn owned_keys(leg: &LegSrtp) -> (Key, Key) {
        let (peer, ours) = leg.keys();
        (peer.clone(), ours.clone())
    }

    /// A restarted edge resumes a leg past two rollovers: the peer's stream goes on being
    /// opened and the edge's goes on being accepted (RTP and SRTCP, the peer's replay check
    /// on), where contexts made afresh from the same keys fail both ways.
    #[test]
    fn a_resumed_leg_carries_on_past_rollovers() {
        const PEER_SSRC: u32 = 0x1111;
        const OUR_SSRC: u32 = 0x2222;
        let suite = Suite::AesCm128HmacSha1_80;
        let (mut peer, mut edge) = pair(suite);
        // 2 rollovers and a bit each way, in steps the index estimation follows.
        let run = |seal: &mut LegSrtp, open: &mut LegSrtp, ssrc: u32, upto: u64| {
            let mut i = 0u64;
            while i <= upto {
                let p = seal.protect(&rtp(i as u16, ssrc), false).expect("sealed");
                open.unprotect(&p, false).expect("opened");
                i += 1000;
            }
        };
        run(&mut peer, &mut edge, PEER_SSRC, (2 << 16) + 5000);
        run(&mut edge, &mut peer, OUR_SSRC, (2 << 16) + 7000);
        for _ in 0..3 {
            let r = edge.protect(&sender_report(OUR_SSRC), true).expect("srtcp");
            peer.unprotect(&r, true).expect("srtcp opened");
        }
        let (peer_key, our_key) = owned_keys(&edge);
        // Where the last run's checkpoint left each direction (highest sequence seen).
        let received = Progress {
            ssrc: PEER_SSRC,
            roc: 2,
            seq: 5000,
        };
        let sent = Progress {
            ssrc: OUR_SSRC,
            roc: 2,
            seq: 7000,
        };
        let mut resumed = LegSrtp::resume(
            peer_key.clone(),
            our_key.clone(),
            Some(received),
            Some(sent),
            3,
        )
        .expect("resumed");
        let mut fresh = LegSrtp::new(peer_key, our_key).expect("fresh");
        // The peer goes on where it was (a few hundred packets later).
        let from_peer = peer.protect(&rtp(5400, PEER_SSRC), false).expect("sealed");
        assert!(resumed.unprotect(&from_peer, false).is_ok());
        assert_eq!(fresh.unprotect(&from_peer, false), Err(Reject::Auth));
        let to_peer = resumed
            .protect(&rtp(7300, OUR_SSRC), false)
            .expect("sealed");
        assert!(peer.unprotect(&to_peer, false).is_ok());
        let stale = fresh.protect(&rtp(7301, OUR_SSRC), false).expect("sealed");
        assert!(peer.unprotect(&stale, false).is_err());
        let report = resumed
            .protect(&sender_report(OUR_SSRC), true)
            .expect("srtcp");
        assert!(peer.unprotect(&report, true).is_ok(), "a fresh SRTCP index");
        assert!(
            walk(Progress {
                ssrc: 1,
                roc: MAX_RESUMED_ROC + 1,
                seq: 0
            })
            .is_err()
        );
    }

    /// The checkpoint lags: the edge sent SRTCP after it. The resumed context skips past those
    /// too, so the peer does not take its next report for a replay.
    #[test]
    fn a_resumed_leg_skips_the_srtcp_sent_after_its_checkpoint() {
        const OUR_SSRC: u32 = 0x2222;
        let (mut peer, mut edge) = pair(Suite::AesCm128HmacSha1_80);
        let p = edge.protect(&rtp(10, OUR_SSRC), false).expect("sealed");
        peer.unprotect(&p, false).expect("opened");
        for _ in 0..5 {
            let r = edge.protect(&sender_report(OUR_SSRC), true).expect("srtcp");
            peer.unprotect(&r, true).expect("srtcp opened");
        }
        let (peer_key, our_key) = owned_keys(&edge);
        let sent = Progress {
            ssrc: OUR_SSRC,
            roc: 0,
            seq: 10,
        };
        // The checkpoint was written after the second report.
        let mut resumed = LegSrtp::resume(peer_key, our_key, None, Some(sent), 2).expect("resumed");
        let report = resumed
            .protect(&sender_report(OUR_SSRC), true)
            .expect("srtcp");
        assert!(
            peer.unprotect(&report, true).is_ok(),
            "not a replay to the peer"
        );
    }

    #[test]
    fn crypto_attribute_table() {
        let k80 = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
        let ok = Crypto::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k80}|2^20|"));
        assert!(ok.is_err(), "an empty lifetime field is malformed");
        let c = Crypto::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k80}|2^20"))
            .expect("RFC 4568 example");
        assert_eq!((c.tag, c.key.suite()), (1, Suite::AesCm128HmacSha1_80));
        assert_eq!(
            c.to_value(),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k80}")
        );
        for (value, why) in [
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k80}|2^20|1:4"),
                "MKI",
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k80};inline:{k80}"),
                "several keys",
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{k80} UNENCRYPTED_SRTP"),
                "session",
            ),
            (format!("1 F8_128_HMAC_SHA1_80 inline:{k80}"), "suite"),
            (format!("1 AEAD_AES_128_GCM inline:{k80}"), "wrong length"),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!".to_string(),
                "base64",
            ),
            ("x AES_CM_128_HMAC_SHA1_80 inline:AAAA".to_string(), "tag"),
            ("1 AES_CM_128_HMAC_SHA1_80".to_string(), "needs"),
        ] {
            let e = Crypto::parse(&value).expect_err(&value);
            assert!(e.contains(why), "{value}: {e}");
        }
        // rtpengine writes the 28-byte GCM key without its '=' padding.
        let gcm = Crypto {
            tag: 2,
            key: Key::random(Suite::AeadAes128Gcm),
        };
        let padded = gcm.to_value();
        assert!(padded.ends_with('='), "written with padding: {padded}");
        assert_eq!(Crypto::parse(padded.trim_end_matches('=')), Ok(gcm.clone()));
        let wsh = Crypto::parse(&format!("7 AES_CM_128_HMAC_SHA1_32 inline:{k80} WSH=128"));
        assert_eq!(wsh.map(|c| c.tag), Ok(7), "WSH is only a hint");
        for suite in SUITES {
            let c = Crypto {
                tag: 3,
                key: Key::random(suite),
            };
            assert_eq!(Crypto::parse(&c.to_value()), Ok(c), "{suite} round trip");
        }
    }

    #[test]
    fn every_suite_round_trips_rtp_and_rtcp_and_refuses_replays_and_forgeries() {
        for suite in SUITES {
            let (mut peer, mut edge) = pair(suite);
            for seq in [1u16, 2, 3] {
                let plain = rtp(seq, 0x1234);
                let sealed = peer.protect(&plain, false).expect("protect");
                assert_eq!(sealed.len(), plain.len() + suite.rtp_tag(), "{suite}");
                assert_ne!(sealed[12..], plain[12..], "{suite}: payload encrypted");
                assert_eq!(
                    edge.unprotect(&sealed, false),
                    Ok(Bytes::from(plain.clone())),
                    "{suite}"
                );
                assert_eq!(
                    edge.unprotect(&sealed, false),
                    Err(Reject::Replay),
                    "{suite}: the same packet twice"
                );
                // And the other way: the edge seals, the peer opens.
                let back = edge.protect(&plain, false).expect("protect");
                assert_eq!(peer.unprotect(&back, false), Ok(Bytes::from(plain)));
            }
            let mut forged = peer
                .protect(&rtp(9, 0x1234), false)
                .expect("protect")
                .to_vec();
            let last = forged.len() - 1;
            forged[last] ^= 1;
            assert_eq!(edge.unprotect(&forged, false), Err(Reject::Auth), "{suite}");
            let sr = sender_report(0x1234);
            let sealed = peer.protect(&sr, true).expect("protect rtcp");
            assert_eq!(
                edge.unprotect(&sealed, true),
                Ok(Bytes::from(sr.clone())),
                "{suite} SRTCP"
            );
            assert_eq!(edge.unprotect(&sealed, true), Err(Reject::Replay));
        }
    }

    #[test]
    fn short_or_garbage_packets_are_refused_without_panicking() {
        for suite in SUITES {
            let (_, mut edge) = pair(suite);
            for len in 0..48 {
                let junk: Vec<u8> = (0..len).map(|i| (i * 37) as u8 | 0x80).collect();
                for rtcp in [false, true] {
                    assert!(edge.unprotect(&junk, rtcp).is_err(), "{suite} len {len}");
                    // Protecting junk from the platform never panics either.
                    let _ = edge.protect(&junk, rtcp);
                }
            }
        }
    }

    #[test]
    fn rtp_extensions_that_overrun_the_packet_are_malformed() {
        // Found by the srtp fuzz target: a one-byte extension element longer than the packet.
        let crash = [
            0x90u8, 0, 0, 0, 0, 0x60, 0x3b, 0xb2, 0x25, 0x02, 0, 0, 0x10, 0, 0, 1, 0, 0, 0, 0x60,
            0x24, 0x7a, 0xb2, 0,
        ];
        let mut one_byte = rtp(1, 9);
        one_byte[0] |= 0x10;
        one_byte.splice(12..12, [0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]);
        assert!(rtp_header_fits(&one_byte), "a well-formed element fits");
        one_byte[16] = 0x1e; // ID 1, 15 bytes: past its one-word block
        assert!(!rtp_header_fits(&one_byte));
        let mut two_byte = rtp(1, 9);
        two_byte[0] |= 0x10;
        two_byte.splice(12..12, [0x10, 0x00, 0, 1, 0x01, 0x09, 0, 0]);
        assert!(
            !rtp_header_fits(&two_byte),
            "a 9-byte element in a 4-byte block"
        );
        for suite in SUITES {
            let (_, mut edge) = pair(suite);
            assert_eq!(
                edge.unprotect(&crash, false),
                Err(Reject::Malformed),
                "{suite}"
            );
            assert_eq!(edge.unprotect(&one_byte, false), Err(Reject::Malformed));
            assert_eq!(edge.protect(&one_byte, false), Err(Reject::Malformed));
        }
    }

    #[test]
    fn ssrcs_are_capped() {
        let (peer_key, ours) = (
            Key::random(Suite::AesCm128HmacSha1_80),
            Key::random(Suite::AesCm128HmacSha1_80),
        );
        let mut edge = LegSrtp::new(peer_key.clone(), ours.clone()).expect("edge");
        // A sender per SSRC: the cap holds on the sending side too.
        let sealed = |ssrc: u32| {
            let mut peer = LegSrtp::new(ours.clone(), peer_key.clone()).expect("peer");
            peer.protect(&rtp(1, ssrc), false).expect("protect")
        };
        for ssrc in 0..MAX_SSRCS as u32 {
            assert!(edge.unprotect(&sealed(ssrc), false).is_ok());
        }
        assert_eq!(edge.unprotect(&sealed(999), false), Err(Reject::SsrcLimit));
        assert!(
            edge.unprotect(&sealed(0), false).is_err(),
            "seq 1 of SSRC 0 again: a replay"
        );
    }

    #[test]
    fn after_a_rekey_the_old_key_works_until_the_new_one_is_used() {
        let suite = Suite::AeadAes128Gcm;
        let (old_peer, ours) = (Key::random(suite), Key::random(suite));
        let mut edge = LegSrtp::new(old_peer.clone(), ours.clone()).expect("edge");
        let mut sender_old = LegSrtp::new(ours.clone(), old_peer.clone()).expect("old");
        let new_peer = Key::random(suite);
        let mut sender_new = LegSrtp::new(ours.clone(), new_peer.clone()).expect("new");
        edge.rekey(new_peer, ours).expect("rekey");
        let in_flight = sender_old.protect(&rtp(10, 5), false).expect("old key");
        assert!(edge.unprotect(&in_flight, false).is_ok(), "in flight");
        let fresh = sender_new.protect(&rtp(11, 5), false).expect("new key");
        assert!(edge.unprotect(&fresh, false).is_ok(), "new key");
        let late = sender_old.protect(&rtp(12, 5), false).expect("old key");
        assert_eq!(
            edge.unprotect(&late, false),
            Err(Reject::Auth),
            "the old key is gone once the new one is in use"
        );
    }
}
