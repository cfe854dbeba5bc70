//! SDES keying of a carrier leg (RFC 4568) inside the offer/answer exchanges (RFC 3264) the
//! B2BUA relays: the edge ends SRTP at the relay, so the carrier sees an SRTP peer and the
//! platform a plain RTP one.
//!
//! Per media stream, an SDP going **from the carrier to the platform** loses its `a=crypto`
//! lines and its profile becomes `RTP/AVP[F]`; an SDP going **from the platform to the
//! carrier** gains the edge's `a=crypto` lines (an offer: one per suite, most preferred first;
//! an answer: the one suite the edge picked from the carrier's offer, under its tag). Each
//! `a=crypto` names the key its writer *sends* with (RFC 4568 §6.1), so the carrier's key
//! opens what the carrier sends and the edge's key seals what goes to it.
//!
//! The policy is the trunk's `media.srtp`:
//! - `Required`: only SRTP. A carrier offer without a usable `a=crypto` is refused 488; the
//!   edge offers `RTP/SAVP` and refuses a plain answer.
//! - `Optional`: SRTP when the carrier offers it; the edge offers `RTP/AVP` with `a=crypto`
//!   lines (best-effort SRTP, as most SBCs do) and takes a plain answer.
//! - `Disabled`: the relay does not touch keys or profiles (an SRTP call between carrier and
//!   platform passes end to end, as before SRTP was implemented).

use crate::sdp::{Error, Media};
use crate::srtp::{Crypto, Key, SUITES};

/// The trunk's `media.srtp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Policy {
    #[default]
    Disabled,
    Optional,
    Required,
}

/// What an SDP is in its exchange (RFC 3264 §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Offer,
    Answer,
}

/// The keys of the carrier leg once an exchange settles them.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Plain RTP on the carrier leg.
    Plain,
    /// SRTP: `peer` opens what the carrier sends, `ours` seals what goes to it.
    Srtp { peer: Key, ours: Key },
    /// Nothing settled yet (the edge's own offer waits for the carrier's answer).
    Unchanged,
}

/// How the B2BUA saw the SDP: in an INVITE or UPDATE (an offer), in an ACK or PRACK (an
/// answer), or in a response, which answers the side's pending offer or, with none pending,
/// is itself an offer (RFC 3261 §13.2.1: an INVITE without SDP gets the offer in the answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exchange {
    Offer,
    Answer,
    Response,
}

/// What one stream's exchanges with the carrier have said so far.
#[derive(Debug, Default, Clone)]
pub struct Keying {
    /// The edge's last offer to the carrier: a key per tag.
    offered: Vec<Crypto>,
    /// The carrier offered SRTP: the line (and the offer's profile) the edge's answer carries.
    answer: Option<(Crypto, String)>,
    /// The key the edge sends with now, kept across re-offers of the same suite so media
    /// keeps flowing while a re-INVITE is in flight.
    ours: Option<Key>,
}

impl Keying {
    /// The keying of a restored call's stream: the edge goes on sending with `ours` (a re-offer
    /// of the same suite keeps it).
    pub fn resumed(ours: Key) -> Keying {
        Keying {
            ours: Some(ours),
            ..Keying::default()
        }
    }

    /// The edge's key for a suite: the one in use, the one last offered, else a new one.
    fn key_for(&self, suite: crate::srtp::Suite) -> Key {
        self.ours
            .iter()
            .chain(self.offered.iter().map(|c| &c.key))
            .find(|k| k.suite() == suite)
            .cloned()
            .unwrap_or_else(|| Key::random(suite))
    }

    /// Records the outcome applied to the leg.
    pub fn settled(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Plain => self.ours = None,
            Outcome::Srtp { ours, .. } => self.ours = Some(ours.clone()),
            Outcome::Unchanged => {}
        }
    }
}

/// The usable `a=crypto` lines of a stream, in the writer's order of preference. Unusable
/// ones (another suite, an MKI, session parameters) are skipped, as RFC 4568 §7.1.1 lets an
/// answerer do.
fn usable(m: &Media) -> Vec<Crypto> {
    m.crypto().filter_map(|v| Crypto::parse(v).ok()).collect()
}

const NO_SUITE: &str = "no usable a=crypto (the edge takes AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32 and AEAD_AES_128_GCM, inline keys without MKI)";

/// An SDP stream the carrier sent, on its way to the platform: sets the keys for the leg and
/// leaves a plain RTP stream behind.
pub fn from_carrier(
    policy: Policy,
    role: Role,
    m: &mut Media,
    keying: &mut Keying,
) -> Result<Outcome, Error> {
    if policy == Policy::Disabled {
        return Ok(Outcome::Unchanged);
    }
    let secure = m.is_secure();
    if m.is_dtls() && m.port() != 0 {
        return Err(Error::Unsupported(
            "DTLS-SRTP (UDP/TLS/RTP/SAVP): the edge keys SRTP with SDES (a=crypto)",
        ));
    }
    let lines = usable(m);
    let had_crypto = m.crypto().next().is_some();
    // The platform leg is plain RTP.
    m.set_secure(false);
    m.set_crypto::<&str>(&[]);
    if m.port() == 0 || !m.is_rtp() {
        return Ok(Outcome::Plain);
    }
    match role {
        Role::Offer => {
            keying.offered.clear();
            let Some(c) = lines.into_iter().next() else {
                if secure || (had_crypto && policy == Policy::Required) {
                    return Err(Error::Unsupported(NO_SUITE));
                }
                if policy == Policy::Required {
                    return Err(Error::Unsupported(
                        "this trunk requires SRTP: offer RTP/SAVP with a=crypto (SDES)",
                    ));
                }
                keying.answer = None;
                return Ok(Outcome::Plain);
            };
            let ours = keying.key_for(c.key.suite());
            let proto = if secure { "RTP/SAVP" } else { "RTP/AVP" };
            let proto = proto.to_string() + if m_is_feedback(m) { "F" } else { "" };
            keying.answer = Some((
                Crypto {
                    tag: c.tag,
                    key: ours.clone(),
                },
                proto,
            ));
            Ok(Outcome::Srtp { peer: c.key, ours })
        }
        Role::Answer => {
            let picked = lines.into_iter().find_map(|c| {
                keying
                    .offered
                    .iter()
                    .find(|o| o.tag == c.tag && o.key.suite() == c.key.suite())
                    .map(|o| (c.key, o.key.clone()))
            });
            if let Some((peer, ours)) = picked {
                return Ok(Outcome::Srtp { peer, ours });
            }
            if had_crypto || secure {
                return Err(Error::Unsupported(
                    "the answer's a=crypto names no tag and suite the edge offered",
                ));
            }
            if policy == Policy::Required && !keying.offered.is_empty() {
                return Err(Error::Unsupported(
                    "this trunk requires SRTP: the carrier answered plain RTP",
                ));
            }
            Ok(Outcome::Plain)
        }
    }
}

/// `RTP/AVPF` or `RTP/SAVPF` (RFC 4585 feedback).
fn m_is_feedback(m: &Media) -> bool {
    m.proto().to_ascii_uppercase().ends_with("AVPF")
}

/// An SDP stream the platform sent, on its way to the carrier: gains the edge's keys.
pub fn to_carrier(
    policy: Policy,
    role: Role,
    m: &mut Media,
    keying: &mut Keying,
) -> Result<Outcome, Error> {
    if policy == Policy::Disabled {
        return Ok(Outcome::Unchanged);
    }
    if m.port() != 0 && (m.is_secure() || m.crypto().next().is_some()) {
        return Err(Error::Unsupported(
            "the platform leg is plain RTP: this trunk's SRTP ends at the edge",
        ));
    }
    if m.port() == 0 || !m.is_rtp() {
        return Ok(Outcome::Unchanged);
    }
    match role {
        Role::Offer => {
            keying.answer = None;
            let offered: Vec<Crypto> = SUITES
                .iter()
                .zip(1u32..)
                .map(|(&suite, tag)| Crypto {
                    tag,
                    key: keying.key_for(suite),
                })
                .collect();
            m.set_crypto(&offered.iter().map(Crypto::to_value).collect::<Vec<_>>());
            // Optional: best-effort SRTP on RTP/AVP unless SRTP is already in use.
            m.set_secure(policy == Policy::Required || keying.ours.is_some());
            keying.offered = offered;
            Ok(Outcome::Unchanged)
        }
        Role::Answer => {
            if let Some((line, proto)) = &keying.answer {
                m.set_proto(proto);
                m.set_crypto(&[line.to_value()]);
            }
            Ok(Outcome::Unchanged)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::Sdp;
    use crate::srtp::Suite;

    fn sdp(proto: &str, crypto: &[String]) -> Sdp {
        let mut s = format!(
            "v=0\r\no=c 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 {proto} 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
        );
        for c in crypto {
            s.push_str(&format!("a=crypto:{c}\r\n"));
        }
        Sdp::parse(s.as_bytes()).expect("test SDP")
    }

    fn line(tag: u32, suite: Suite) -> Crypto {
        Crypto {
            tag,
            key: Key::random(suite),
        }
    }

    #[test]
    fn a_carrier_offer_is_answered_with_the_edge_key_under_the_carriers_tag() {
        let gcm = line(4, Suite::AeadAes128Gcm);
        let cm = line(7, Suite::AesCm128HmacSha1_80);
        let mut offer = sdp(
            "RTP/SAVP",
            &[
                "1 F8_128_HMAC_SHA1_80 inline:AAAA".into(),
                gcm.to_value(),
                cm.to_value(),
            ],
        );
        let mut k = Keying::default();
        let out = from_carrier(
            Policy::Optional,
            Role::Offer,
            &mut offer.media_mut()[0],
            &mut k,
        )
        .expect("offer");
        let Outcome::Srtp { peer, ours } = &out else {
            panic!("{out:?}")
        };
        assert_eq!(peer, &gcm.key, "the carrier's first usable line wins");
        assert_eq!(ours.suite(), Suite::AeadAes128Gcm);
        let m = &offer.media()[0];
        assert_eq!(
            (m.proto(), m.crypto().count()),
            ("RTP/AVP", 0),
            "plain to the platform"
        );
        k.settled(&out);
        let mut answer = sdp("RTP/AVP", &[]);
        to_carrier(
            Policy::Optional,
            Role::Answer,
            &mut answer.media_mut()[0],
            &mut k,
        )
        .expect("answer");
        let m = &answer.media()[0];
        assert_eq!(m.proto(), "RTP/SAVP");
        let c: Vec<&str> = m.crypto().collect();
        assert_eq!(c.len(), 1);
        assert_eq!(
            Crypto::parse(c[0]).map(|c| (c.tag, c.key)),
            Ok((4, ours.clone()))
        );
        // A re-INVITE with the same keys keeps the edge's key.
        let mut again = sdp("RTP/SAVP", &[gcm.to_value()]);
        let out2 = from_carrier(
            Policy::Optional,
            Role::Offer,
            &mut again.media_mut()[0],
            &mut k,
        )
        .expect("re-offer");
        assert_eq!(out2, out);
    }

    #[test]
    fn policy_table_for_carrier_offers() {
        let cm = line(1, Suite::AesCm128HmacSha1_32);
        for (policy, proto, crypto, ok) in [
            (Policy::Required, "RTP/AVP", vec![], false),
            (Policy::Optional, "RTP/AVP", vec![], true),
            (Policy::Required, "RTP/SAVP", vec![cm.to_value()], true),
            (Policy::Required, "RTP/AVP", vec![cm.to_value()], true),
            (
                Policy::Optional,
                "RTP/SAVP",
                vec!["1 F8_128_HMAC_SHA1_80 inline:AAAA".into()],
                false,
            ),
            (
                Policy::Optional,
                "RTP/AVP",
                vec!["1 F8_128_HMAC_SHA1_80 inline:AAAA".into()],
                true,
            ),
            (Policy::Required, "UDP/TLS/RTP/SAVP", vec![], false),
        ] {
            let mut s = sdp(proto, &crypto);
            let r = from_carrier(
                policy,
                Role::Offer,
                &mut s.media_mut()[0],
                &mut Keying::default(),
            );
            assert_eq!(r.is_ok(), ok, "{policy:?} {proto} {crypto:?}: {r:?}");
            if let Err(e) = r {
                assert_eq!(e.status(), 488);
            }
        }
        // Disabled touches nothing.
        let mut s = sdp("RTP/SAVP", &[cm.to_value()]);
        let before = s.clone();
        let r = from_carrier(
            Policy::Disabled,
            Role::Offer,
            &mut s.media_mut()[0],
            &mut Keying::default(),
        );
        assert_eq!((r, s), (Ok(Outcome::Unchanged), before));
    }

    #[test]
    fn the_edge_offers_every_suite_and_takes_the_tag_the_carrier_answers() {
        for (policy, proto) in [
            (Policy::Required, "RTP/SAVP"),
            (Policy::Optional, "RTP/AVP"),
        ] {
            let mut k = Keying::default();
            let mut offer = sdp("RTP/AVP", &[]);
            to_carrier(policy, Role::Offer, &mut offer.media_mut()[0], &mut k).expect("offer");
            let m = &offer.media()[0];
            assert_eq!(m.proto(), proto, "{policy:?}");
            let lines: Vec<Crypto> = m
                .crypto()
                .map(|v| Crypto::parse(v).expect("ours"))
                .collect();
            let suites: Vec<Suite> = lines.iter().map(|c| c.key.suite()).collect();
            assert_eq!(suites, SUITES.to_vec());
            // The carrier picks tag 2 and answers with its own key.
            let theirs = line(2, Suite::AesCm128HmacSha1_32);
            let mut answer = sdp("RTP/SAVP", &[theirs.to_value()]);
            let out = from_carrier(policy, Role::Answer, &mut answer.media_mut()[0], &mut k)
                .expect("answer");
            assert_eq!(
                out,
                Outcome::Srtp {
                    peer: theirs.key.clone(),
                    ours: lines[1].key.clone()
                }
            );
            assert_eq!(answer.media()[0].proto(), "RTP/AVP");
            // A tag that was not offered, or the wrong suite under a tag, is refused.
            for bad in [
                line(9, Suite::AesCm128HmacSha1_80),
                line(1, Suite::AeadAes128Gcm),
            ] {
                let mut a = sdp("RTP/SAVP", &[bad.to_value()]);
                assert!(from_carrier(policy, Role::Answer, &mut a.media_mut()[0], &mut k).is_err());
            }
            let mut plain = sdp("RTP/AVP", &[]);
            let r = from_carrier(policy, Role::Answer, &mut plain.media_mut()[0], &mut k);
            assert_eq!(
                r.is_ok(),
                policy == Policy::Optional,
                "{policy:?}: plain answer"
            );
        }
    }

    #[test]
    fn srtp_from_the_platform_is_refused_when_the_edge_keys_the_carrier_leg() {
        let mut s = sdp(
            "RTP/SAVP",
            &[line(1, Suite::AesCm128HmacSha1_80).to_value()],
        );
        let e = to_carrier(
            Policy::Optional,
            Role::Offer,
            &mut s.media_mut()[0],
            &mut Keying::default(),
        )
        .expect_err("platform SRTP");
        assert_eq!(e.status(), 488);
    }
}
