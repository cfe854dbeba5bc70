//! The B2BUA's use of the media relay: each SDP body that crosses the edge is rewritten so RTP
//! and RTCP flow through this worker's relay (trunkgate-media), and the relay's statistics end
//! up in the call record and the per-trunk histograms.

use std::net::IpAddr;

use trunkgate_crds::snapshot::TrunkConfig;
use trunkgate_media::{Exchange, MediaEngine, MediaError, PeerPolicy, Sdp, SessionId, SrtpPolicy};
use trunkgate_sip::Method;

use crate::call::Side;

/// A body the edge refused: the status to answer, the words for the Warning, a metric label.
pub struct SdpRefusal {
    pub code: u16,
    pub text: String,
    pub label: &'static str,
}

impl From<MediaError> for SdpRefusal {
    fn from(e: MediaError) -> Self {
        Self {
            code: e.status(),
            label: e.metric_label(),
            text: e.to_string(),
        }
    }
}

impl From<trunkgate_media::sdp::Error> for SdpRefusal {
    fn from(e: trunkgate_media::sdp::Error) -> Self {
        Self {
            code: e.status(),
            label: e.metric_label(),
            text: format!("SDP refused: {e}"),
        }
    }
}

/// The trunk's `media.srtp` as the relay takes it.
pub fn srtp_policy(p: trunkgate_crds::trunk::SrtpPolicy) -> SrtpPolicy {
    use trunkgate_crds::trunk::SrtpPolicy as P;
    match p {
        P::Disabled => SrtpPolicy::Disabled,
        P::Optional => SrtpPolicy::Optional,
        P::Required => SrtpPolicy::Required,
    }
}

/// Who may be the peer of a call's leg on `side` (whose signalling comes from `signalling`):
/// the carrier leg's RTP may come from (and, before it is heard, go to) the trunk's
/// `inbound.allowedCidrs`, with its `media.behindNat`; the platform leg's the platform networks
/// (`--platform-cidrs`). See `trunkgate_media::latch` for the rules (RFC 7362 §3).
pub fn peer_policy(
    platform: &crate::guard::platform::PlatformAcl,
    trunk: &TrunkConfig,
    side: Side,
    signalling: IpAddr,
) -> PeerPolicy {
    match side {
        Side::Public => PeerPolicy {
            networks: trunk.inbound.allowed_cidrs.as_slice().into(),
            behind_nat: trunk.media.behind_nat,
            signalling: Some(signalling),
        },
        Side::Internal => PeerPolicy {
            networks: platform.networks(),
            behind_nat: false,
            signalling: Some(signalling),
        },
    }
}

/// What a body is in the offer/answer model (RFC 3264): SDP in an INVITE or UPDATE request is
/// an offer (RFC 3311), in an ACK or PRACK an answer (RFC 3261 §13.2.1, RFC 3262 §5), in a
/// response to INVITE, UPDATE or PRACK whichever the exchange calls for. None for a body the
/// relay does not touch: another method's (INFO's DTMF, MESSAGE text) or another type's.
/// A body without Content-Type, or a multipart one, is read as SDP (and refused if it is not),
/// so media never bypasses the relay.
pub fn exchange_of(method: Method, request: bool, content_type: Option<&str>) -> Option<Exchange> {
    if let Some(ct) = content_type {
        let ty = ct.split(';').next().unwrap_or("").trim();
        let sdp = ty.eq_ignore_ascii_case("application/sdp")
            || ty.to_ascii_lowercase().starts_with("multipart/");
        if !sdp {
            return None;
        }
    }
    match (method, request) {
        (Method::Invite | Method::Update, true) => Some(Exchange::Offer),
        (Method::Ack | Method::PRack, true) => Some(Exchange::Answer),
        (Method::Invite | Method::Update | Method::PRack, false) => Some(Exchange::Response),
        _ => None,
    }
}

/// [`exchange_of`] for a request as it came.
pub fn request_exchange(req: &crate::sip::msg::rsip_model::Request) -> Option<Exchange> {
    exchange_of(
        req.method,
        true,
        crate::sip::msg::header(req, "Content-Type"),
    )
}

/// [`exchange_of`] for a response to `method`.
pub fn response_exchange(
    method: Method,
    resp: &crate::sip::msg::rsip_model::Response,
) -> Option<Exchange> {
    exchange_of(method, false, crate::sip::msg::header(resp, "Content-Type"))
}

/// Whether a trunk with `mine` relayed calls may open one more, with `free` of `total`
/// port pairs free and `trunks` trunks relaying media. While ports are plentiful (over a fifth
/// free) any trunk may; under pressure only a trunk below its fair share (the pairs split evenly
/// among the trunks) may, so one trunk flooding never leaves the others without ports. A lone
/// trunk's share is the whole pool.
pub fn may_take_ports(free: usize, total: usize, mine: u32, trunks: usize) -> bool {
    // Nothing free at all is the relay's own refusal (ports_exhausted), whoever asks; a relayed
    // (audio) call holds a pair on each side.
    free == 0 || free * 5 > total || 2 * (mine as usize) < total / trunks.max(1)
}

/// Opens the relay for a new call whose offer (`body`, maybe empty) came from `from`; returns
/// the session and the body to send on the other leg. `codecs` is the trunk's allow-list.
pub fn open(
    media: &mut Option<MediaEngine>,
    call: u64,
    from: Side,
    body: &[u8],
    codecs: &[String],
    policy: &PeerPolicy,
    srtp: SrtpPolicy,
) -> Result<(SessionId, Vec<u8>), SdpRefusal> {
    let Some(engine) = media.as_mut() else {
        return Err(SdpRefusal {
            code: 503,
            text: "media relay unavailable on this edge".into(),
            label: "media_unavailable",
        });
    };
    if body.is_empty() {
        // Late offer: it comes in the 2xx, the answer in the ACK (RFC 3261 §13.2.1).
        let session = engine.open(call, 0)?;
        engine.set_srtp(session, srtp)?;
        return Ok((session, Vec::new()));
    }
    let mut sdp = Sdp::parse(body)?;
    sdp.filter_codecs(codecs)?;
    let session = engine.open(call, sdp.media().len())?;
    let relayed = engine
        .set_srtp(session, srtp)
        .and_then(|()| engine.relay_sdp_as(session, from, &mut sdp, policy, Exchange::Offer));
    if let Err(e) = relayed {
        engine.close(session);
        return Err(e.into());
    }
    Ok((session, sdp.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::{exchange_of, may_take_ports};
    use trunkgate_media::Exchange;
    use trunkgate_sip::Method;

    #[test]
    fn which_bodies_are_sdp_offers_or_answers() {
        let sdp = Some("application/sdp");
        for (method, request, ct, want) in [
            (Method::Invite, true, sdp, Some(Exchange::Offer)),
            (
                Method::Update,
                true,
                Some("Application/SDP; charset=x"),
                Some(Exchange::Offer),
            ),
            (Method::Ack, true, sdp, Some(Exchange::Answer)),
            (Method::PRack, true, None, Some(Exchange::Answer)),
            (Method::Invite, false, sdp, Some(Exchange::Response)),
            (
                Method::Invite,
                true,
                Some("multipart/mixed;boundary=x"),
                Some(Exchange::Offer),
            ),
            // INFO's DTMF and MESSAGE text are not SDP: passed on untouched, not refused.
            (Method::Info, true, Some("application/dtmf-relay"), None),
            (Method::Info, true, sdp, None),
            (Method::Message, true, Some("text/plain"), None),
            (Method::Invite, true, Some("application/isup"), None),
        ] {
            assert_eq!(
                exchange_of(method, request, ct),
                want,
                "{method:?} {request} {ct:?}"
            );
        }
    }

    #[test]
    fn a_trunk_gets_its_fair_share_of_ports_under_pressure() {
        // Plenty free: anyone, however many it holds.
        assert!(may_take_ports(300, 1000, 350, 2));
        // Under pressure, two trunks: the one with 440 calls (880 pairs) is stopped, the other
        // still gets ports.
        assert!(
            !may_take_ports(100, 1000, 440, 2),
            "the flooding trunk is stopped"
        );
        assert!(
            may_take_ports(100, 1000, 20, 2),
            "the other one still gets ports"
        );
        // A lone trunk may use the whole pool.
        assert!(may_take_ports(2, 1000, 499, 1));
        assert!(
            may_take_ports(0, 1000, 0, 2),
            "nothing free: the relay refuses it as ports_exhausted"
        );
    }
}
