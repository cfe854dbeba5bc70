//! The B2BUA: a call's two legs and what passes between them — setup with failover and digest,
//! provisional and final answers, end-to-end ACK, CANCEL, BYE, and in-dialog requests
//! (re-INVITE, UPDATE, PRACK, INFO) relayed with their answers.

pub(crate) mod session_timer;

use trunkgate_sip::Response;

use crate::call::{Leg, Side};
use crate::sip::message::{Builder, reason_phrase, via};
use crate::sip::msg;
use crate::transport::Link;

pub(crate) fn strip_tag(value: &str) -> String {
    value
        .split(';')
        .filter(|p| !p.trim().to_ascii_lowercase().starts_with("tag="))
        .collect::<Vec<_>>()
        .join(";")
}

/// Carrier 3xx answers one outbound call follows at most (a redirect loop ends there).
pub(crate) const MAX_REDIRECTS: u8 = 3;

pub(crate) fn reason_of(resp: &Response) -> String {
    resp.wire_reason
        .clone()
        .unwrap_or_else(|| reason_phrase(resp.status_code.code()).to_string())
}

/// What a provisional or 2xx answer on leg B teaches about its dialog: the remote tag, target
/// (Contact) and route set (Record-Route reversed, RFC 3261 §12.1.2).
pub(crate) fn learn_dialog(b: &mut Leg, resp: &Response) {
    let to = msg::header(resp, "To").unwrap_or_default();
    b.remote_tag = msg::header_param(to, "tag").map(str::to_string);
    b.remote = to.to_string();
    if let Some(ct) = msg::header(resp, "Contact") {
        b.remote_target = msg::uri_of(ct).to_string();
    }
    b.route_set = msg::list(resp, "Record-Route");
    b.route_set.reverse();
}

/// The Request-URI and Route values of a request inside a leg's dialog (RFC 3261 §12.2.1.1):
/// with a loose router first (`lr`), the remote target and the route set as it is; with a strict
/// router, that router's URI as Request-URI and the remote target as the last Route.
pub(crate) fn dialog_route(l: &Leg) -> (String, Vec<&str>) {
    let target = if l.remote_target.is_empty() {
        format!("sip:{}", crate::config::settings::host_port(l.peer.addr()))
    } else {
        l.remote_target.clone()
    };
    match l.route_set.split_first() {
        Some((first, rest)) if msg::uri_param(msg::uri_of(first), "lr").is_none() => {
            let mut routes: Vec<&str> = rest.iter().map(String::as_str).collect();
            routes.push(&l.remote_target);
            (msg::uri_of(first).to_string(), routes)
        }
        _ => (target, l.route_set.iter().map(String::as_str).collect()),
    }
}

/// RFC 3261 §12.2.2 target refresh: a re-INVITE or UPDATE (or its 2xx) with a Contact moves
/// the peer's remote target.
pub(crate) fn refresh_target(l: &mut Leg, m: &impl trunkgate_sip::HasHeaders) {
    if let Some(ct) = msg::header(m, "Contact") {
        let uri = msg::uri_of(ct);
        if !uri.is_empty() {
            l.remote_target = uri.to_string();
        }
    }
}

/// Headers of an answer relayed to leg A: our Contact and the copied ones.
pub(crate) fn answer_lines(
    env: &dyn crate::call::machine::Env,
    a: &Leg,
    resp: &Response,
) -> String {
    format!(
        "Contact: {}\r\n{}",
        contact(env.hostport_on(a.side, &a.peer), &a.peer),
        msg::copied_lines(resp)
    )
}

/// Our Contact on a leg: a `sip:` URI means UDP (RFC 3263 §4.1), so a leg over TCP says so, or
/// the peer's in-dialog requests would come back over UDP.
pub(crate) fn contact(hostport: &str, link: &Link) -> String {
    match link {
        Link::Udp(_) => format!("<sip:{hostport}>"),
        Link::Tcp(..) => format!("<sip:{hostport};transport=tcp>"),
        Link::Tls(..) => format!("<sip:{hostport};transport=tls>"),
    }
}

/// The ACK of a 2xx on leg `b` (its To, with the tag, from the answer), sent from
/// `hostport` with our `branch` (RFC 3261 §13.2.2.4: a new transaction, the INVITE's CSeq).
pub(crate) fn ack_of_2xx(b: &Leg, to: &str, branch: &str, hostport: &str) -> Vec<u8> {
    let (ruri, routes) = dialog_route(b);
    let mut m = Builder::request_via("ACK", &ruri, &via(b.peer.transport(), hostport, branch));
    for r in routes {
        if r.starts_with('<') {
            m.push("Route", r);
        } else {
            m.push("Route", &format!("<{r}>"));
        }
    }
    m.header("From", &format!("{};tag={}", b.local, b.local_tag))
        .header("To", to)
        .header("Call-ID", &b.call_id)
        .header("CSeq", &format!("{} ACK", b.invite_cseq))
        .finish()
}

/// A request inside a leg's dialog (RFC 3261 §12.2.1.1).
#[allow(clippy::too_many_arguments)]
pub(crate) fn in_dialog_request(
    l: &Leg,
    method: &str,
    branch: &str,
    cseq: u32,
    contact_hostport: Option<&str>,
    lines: &str,
    body: &[u8],
    hostport: String,
) -> (Vec<u8>, String, String, Side, Link) {
    let (ruri, routes) = dialog_route(l);
    let ident = format!(
        "From: {};tag={}\r\nCall-ID: {}\r\n",
        l.local, l.local_tag, l.call_id
    );
    let mut b = Builder::request_via(method, &ruri, &via(l.peer.transport(), &hostport, branch));
    for r in routes {
        if r.starts_with('<') {
            b.push("Route", r);
        } else {
            b.push("Route", &format!("<{r}>"));
        }
    }
    b = b
        .raw(&ident)
        .header("To", &l.remote)
        .header("CSeq", &format!("{cseq} {method}"));
    if let Some(hp) = contact_hostport {
        b.push("Contact", &contact(hp, &l.peer));
    }
    let bytes = b.raw(lines).body(body);
    (bytes, ruri, ident, l.side, l.peer.clone())
}

/// Whether `t` is a place trunk `trunk` already sends to (one of its outbound targets' host and
/// port) or takes calls from (an address inside its `allowedCidrs`).
pub(crate) fn trunk_takes(
    trunk: &trunkgate_crds::snapshot::TrunkConfig,
    t: &trunkgate_crds::snapshot::SipTarget,
) -> bool {
    let port = |p: Option<u16>, secure: bool| p.unwrap_or(if secure { 5061 } else { 5060 });
    let known = trunk
        .outbound
        .iter()
        .flat_map(|o| &o.targets)
        .any(|o| o.host == t.host && port(o.port, o.secure) == port(t.port, t.secure));
    known
        || t.host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| trunk.inbound.allowed_cidrs.iter().any(|n| n.contains(&ip)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(routes: &[&str]) -> Leg {
        Leg {
            side: Side::Public,
            peer: Link::Udp("192.0.2.7:5060".parse().expect("an address")),
            call_id: "c1".into(),
            local_tag: "tg1".into(),
            remote_tag: Some("r1".into()),
            local: "<sip:+6498879333@edge.example>".into(),
            remote: "<sip:+6421555123@carrier.example>;tag=r1".into(),
            remote_target: "sip:ua@198.51.100.9:5070".into(),
            route_set: routes.iter().map(|r| r.to_string()).collect(),
            local_cseq: 1,
            invite_cseq: 1,
            awaiting_ack: None,
            reinvite_cseq: None,
            session: None,
        }
    }

    #[test]
    fn loose_routers_keep_the_remote_target_and_the_route_set() {
        let l = leg(&["<sip:p1.example;lr;ftag=x>", "<sip:p2.example;lr=on>"]);
        let (ruri, routes) = dialog_route(&l);
        assert_eq!(ruri, "sip:ua@198.51.100.9:5070");
        assert_eq!(
            routes,
            ["<sip:p1.example;lr;ftag=x>", "<sip:p2.example;lr=on>"]
        );
    }

    #[test]
    fn a_strict_router_first_takes_the_request_uri_and_the_target_goes_last() {
        // RFC 3261 §12.2.1.1: Request-URI = first route's URI, Route = the rest + remote target.
        let l = leg(&["<sip:strict.example>", "<sip:p2.example;lr>"]);
        let (ruri, routes) = dialog_route(&l);
        assert_eq!(ruri, "sip:strict.example");
        assert_eq!(routes, ["<sip:p2.example;lr>", "sip:ua@198.51.100.9:5070"]);
    }

    #[test]
    fn no_route_set_sends_to_the_target_or_the_peer() {
        let mut l = leg(&[]);
        assert_eq!(dialog_route(&l).0, "sip:ua@198.51.100.9:5070");
        l.remote_target.clear();
        assert_eq!(dialog_route(&l).0, "sip:192.0.2.7:5060");
    }

    #[test]
    fn a_contact_in_a_reinvite_or_its_answer_moves_the_remote_target() {
        let mut l = leg(&[]);
        let req = trunkgate_sip::parse(
            b"INVITE sip:x@e SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.9;branch=z9hG4bK1\r\nFrom: <sip:a@c>;tag=r1\r\nTo: <sip:b@e>;tag=tg1\r\nCall-ID: c1\r\nCSeq: 2 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:ua@198.51.100.10:5080;transport=tcp>\r\nContent-Length: 0\r\n\r\n",
        )
        .expect("a valid request");
        let trunkgate_sip::SipMessage::Request(req) = req else {
            panic!("a request");
        };
        refresh_target(&mut l, &req);
        assert_eq!(l.remote_target, "sip:ua@198.51.100.10:5080;transport=tcp");
    }
}
