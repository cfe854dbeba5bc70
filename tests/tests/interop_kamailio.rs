//! Interop with Kamailio 5.6 as the carrier's equipment, next to the real edge:
//! - a record-routing carrier proxy in front of the edge (RFC 3261 §16.6, §12.1.1): the edge's
//!   answers carry its Record-Route, in-dialog requests either way pass through it (loose
//!   routing), over UDP and TCP; BYE, CANCEL and re-INVITE from either side;
//! - the outbound carrier that challenges every INVITE, re-INVITE and BYE with 407 (§22.3),
//!   and refuses a wrong password;
//! - a carrier proxy whose `uac_auth()` answers the edge's own digest challenge, and sipp's
//!   `[authentication]` doing the same, both MD5-only (the trunk's default algorithm list).
//!
//! Addresses: the carrier's phone (sipp) `127.0.0.11` behind its Kamailio on `127.0.0.10`, the
//! platform `127.0.0.20`; outbound: Kamailio on `127.0.0.30`, the carrier's far end (sipp)
//! on `127.0.0.31`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use trunkgate_tests::config::documents;
use trunkgate_tests::kamailio::{self, Credentials, Kamailio, Transport};
use trunkgate_tests::sip::digest_params;
use trunkgate_tests::sipp::{Sipp, SippRun, scenario};
use trunkgate_tests::*;

/// The carrier's phone behind its proxy.
const CARRIER_PHONE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11));
const CALLER: &str = "+6421555123";
const NUMBER: &str = "+6498879333";
const BYOC: &str = "+6498879301";

/// What the edge asks of the carrier on inbound calls (`inbound.auth`).
const INBOUND_REALM: &str = "trunkgate.example";
const INBOUND_USER: &str = "pacific-sbc";
const INBOUND_PASSWORD: &str = "inbound-secret-42";
/// What the carrier asks of the edge on outbound calls (`outbound.auth`).
const OUTBOUND_REALM: &str = "pacific-telco.example";
const OUTBOUND_USER: &str = "acme-trunk-0412";
const OUTBOUND_PASSWORD: &str = "change-me-outbound";

/// How long a sipp run may last; a test stays well under a minute.
const SIPP_SECS: u64 = 15;

/// `acme/pacific`: the carrier's proxy at 127.0.0.10 calls `platform`; outbound calls go to
/// `carrier` with the trunk's `outbound.auth` (password `outbound_password`); `inbound_auth`
/// makes the edge challenge the carrier.
fn config(
    lab: &Lab,
    platform: SocketAddr,
    carrier: Option<SocketAddr>,
    outbound_password: &str,
    inbound_auth: bool,
) {
    let mut trunk = Trunk::new("acme", "pacific", "127.0.0.10/32", platform);
    let mut docs = vec![];
    if let Some(c) = carrier {
        trunk = trunk
            .target(c)
            .outbound_auth("pacific-outbound", OUTBOUND_REALM);
        docs.push(secret(
            "acme",
            "pacific-outbound",
            OUTBOUND_USER,
            outbound_password,
        ));
    }
    if inbound_auth {
        // No `algorithms`: the default list is what plain MD5 clients answer.
        trunk = trunk.inbound_auth(INBOUND_REALM, "pacific-inbound");
        docs.push(secret(
            "acme",
            "pacific-inbound",
            INBOUND_USER,
            INBOUND_PASSWORD,
        ));
    }
    docs.push(trunk.yaml());
    docs.push(Numbers::byoc("acme", "numbers", "pacific", &["+6498879300-+6498879399"]).yaml());
    lab.write_config("acme.yaml", &documents(&docs));
}

// ---- inbound through a carrier proxy --------------------------------------------------------

/// An edge for inbound calls to a platform UAS, with the carrier's Kamailio in front of it.
/// Fields drop in order: the processes end before the lab folder is kept or removed.
struct Inbound {
    kam: Kamailio,
    edge: Edge,
    platform: SocketAddr,
    transport: Transport,
    lab: Lab,
}

impl Inbound {
    fn start(name: &str, transport: Transport, record_route: bool, inbound_auth: bool) -> Self {
        let lab = Lab::new(name);
        let platform = Sipp::reserve(PLATFORM);
        config(&lab, platform, None, "", inbound_auth);
        let edge = Edge::start(&lab, EdgeOptions::default());
        let creds = Credentials::new(INBOUND_USER, INBOUND_REALM, INBOUND_PASSWORD);
        let cfg = kamailio::carrier_proxy(
            Kamailio::reserve(CARRIER),
            edge.public,
            transport,
            record_route,
            inbound_auth.then_some(&creds),
        );
        let kam = Kamailio::start(&lab, "kamailio", &cfg);
        Self {
            lab,
            edge,
            kam,
            platform,
            transport,
        }
    }

    /// The platform answering with `template`.
    fn platform(&self, template: &str, vars: &[(&str, &str)]) -> Sipp {
        Sipp::uas_at(
            &self.lab,
            "platform",
            scenario(&self.lab, template, vars),
            self.platform,
        )
        .timeout_secs(SIPP_SECS)
        .start()
    }

    /// The carrier's phone calling `NUMBER` through Kamailio with `template`.
    fn caller(&self, template: &str, vars: &[(&str, &str)]) -> Sipp {
        let ruri = self.kam.uri(NUMBER);
        let mut all = vec![("RURI", ruri.as_str()), ("FROM_USER", CALLER)];
        all.extend_from_slice(vars);
        Sipp::uac(
            &self.lab,
            "carrier-phone",
            scenario(&self.lab, template, &all),
            CARRIER_PHONE,
            self.kam.addr,
        )
        .args(self.transport.sipp_args())
        .timeout_secs(SIPP_SECS)
        .start()
    }

    /// Kamailio's Record-Route value as it puts it in INVITEs (RFC 3261 §16.6 step 4).
    fn kam_route_host(&self) -> String {
        format!("sip:{}", self.kam.addr)
    }

    /// Panics unless `msg` (an answer the edge sent back through Kamailio) carries Kamailio's
    /// Record-Route: RFC 3261 §12.1.1, a UAS copies the request's Record-Route into every
    /// 101-299 answer, so the caller's route set goes through the proxy.
    fn assert_record_route(&self, msg: &SipMsg, what: &str, caller: &SippRun) {
        let rr = msg.header_all("Record-Route").join(", ");
        assert!(
            rr.contains(&self.kam_route_host()),
            "the edge's {what} lacks the Record-Route Kamailio put in the INVITE \
             (RFC 3261 §12.1.1: copied into every 101-299 answer), so the caller's ACK, BYE \
             and re-INVITE cannot take the proxy's path.\nwhat the caller got:\n{}\n\
             the caller's exchange:\n{}Kamailio:\n{}",
            msg.text(),
            caller.report(),
            self.kam.report()
        );
        if self.transport == Transport::Tcp {
            assert!(
                rr.contains("transport=tcp"),
                "Kamailio's TCP Record-Route: {rr}"
            );
        }
    }

    /// Panics unless Kamailio relayed an in-dialog `method` from the caller to the edge by
    /// its Route (loose routing).
    fn assert_routed_to_edge(&self, method: &str, caller: &SippRun) {
        let routed = self.kam.events_of("LOOSE-ROUTE", method);
        let to_edge = self.sent_to(method, self.edge.public);
        assert!(
            !routed.is_empty() && !to_edge.is_empty(),
            "the caller's {method} did not reach the edge through Kamailio's loose_route() \
             (Kamailio drops an ACK and refuses other requests without a Route naming it)\n\
             Kamailio:\n{}the caller:\n{}",
            self.kam.report(),
            caller.report()
        );
    }

    /// Panics unless every request between Kamailio and the edge, either way, used the call's
    /// transport. Checked last, so the other checks of a TCP test still speak first: the
    /// edge's Contact is the caller's remote target (RFC 3261 §12.1.1) and without
    /// `transport=tcp` a sip: URI means UDP (RFC 3263 §4.1), so a TCP dialog would fall back
    /// to UDP for ACK, BYE and re-INVITE.
    fn assert_dialog_transport(&self, caller: &SippRun) {
        let proto = self.transport.param();
        let edge = self.edge.public;
        let wrong: Vec<String> = self
            .kam
            .events()
            .into_iter()
            .filter(|e| {
                let to_edge = e.kind == "OUT" && e.names(edge);
                let from_edge = e.kind == "IN" && e.from_ip(edge.ip());
                (to_edge || from_edge) && e.proto() != Some(proto)
            })
            .map(|e| format!("{} {}", e.kind, e.text))
            .collect();
        let contact = caller
            .received()
            .find(|m| m.code() == Some(200) && m.cseq_method() == Some("INVITE"))
            .and_then(|m| m.header("Contact"))
            .unwrap_or("(no 200)")
            .to_string();
        assert!(
            wrong.is_empty(),
            "in a {proto} dialog these requests between Kamailio and the edge used another \
             transport:\n  {}\nthe edge's Contact in its 200: {contact} (without \
             transport={proto} a sip: URI means UDP, RFC 3263 §4.1; RFC 3261 §12.1.1)\n\
             Kamailio:\n{}",
            wrong.join("\n  "),
            self.kam.report()
        );
    }

    /// Panics unless the edge sent `method` to Kamailio with a Route naming it, and Kamailio
    /// (loose routing) passed it on to the caller, who got it.
    fn assert_routed_from_edge(&self, method: &str, caller: &SippRun) {
        let from_edge: Vec<_> = self
            .kam
            .events_of("IN", method)
            .into_iter()
            .filter(|e| e.from_ip(EDGE_PUBLIC_IP))
            .collect();
        assert!(
            !from_edge.is_empty(),
            "the edge's {method} towards the carrier never reached Kamailio (sent straight \
             to the caller's Contact instead of along the route set?)\nKamailio:\n{}\
             the caller:\n{}",
            self.kam.report(),
            caller.report()
        );
        assert!(
            from_edge.iter().all(|e| e
                .text
                .contains(&format!("route=[<{}", self.kam_route_host()))),
            "the edge's {method} must carry Route: <Kamailio's Record-Route> (RFC 3261 \
             §12.2.1.1), or Kamailio's loose_route() refuses it:\n{}",
            self.kam.report()
        );
        assert!(
            !self.kam.events_of("LOOSE-ROUTE", method).is_empty(),
            "Kamailio did not loose-route the edge's {method}:\n{}",
            self.kam.report()
        );
        let got = caller.requests(method);
        assert!(
            !got.is_empty(),
            "the caller never got the edge's {method}:\n{}",
            caller.report()
        );
        let top_via = got[0].header("Via").unwrap_or_default();
        assert!(
            top_via.contains(&self.kam.addr.to_string()),
            "the {method} came through Kamailio (its Via on top):\n{}",
            got[0].text()
        );
    }

    /// Kamailio's `KAM-OUT` lines for `method` sent to `to`.
    fn sent_to(&self, method: &str, to: SocketAddr) -> Vec<kamailio::Event> {
        self.kam
            .events_of("OUT", method)
            .into_iter()
            .filter(|e| e.names(to))
            .collect()
    }

    fn cdr(&self) -> serde_json::Value {
        self.edge
            .wait_cdr("the inbound call", |c| c["callee"] == NUMBER)
    }
}

/// Waits (at most 5 s) until `uas` has received `method`, then until it exits; stops it at
/// once when the request never comes (so a test fails in seconds, not at sipp's timeout).
fn settle(uas: Sipp, method: &str) -> SippRun {
    if eventually(Duration::from_secs(5), || {
        uas.has_received(method).then_some(())
    })
    .is_some()
    {
        uas.wait()
    } else {
        uas.stop()
    }
}

/// The carrier's phone calls, the platform answers, the phone hangs up: the answers carry
/// Kamailio's Record-Route, ACK and BYE are loose-routed to the edge.
fn call_ended_by_the_carrier(transport: Transport) {
    let t = Inbound::start(
        &format!("kam_rr_call_{}", transport.param()),
        transport,
        true,
        false,
    );
    let platform = t.platform("uas_answer.xml", &[("RING_MS", "200")]);
    let caller = t.caller("uac_rr_call.xml", &[("HOLD_MS", "300")]).wait();
    let platform = settle(platform, "BYE");

    let ringing = caller.response(180, "INVITE");
    t.assert_record_route(ringing, "180", &caller);
    let ok = caller.response(200, "INVITE");
    t.assert_record_route(ok, "200 to the INVITE", &caller);
    t.assert_routed_to_edge("ACK", &caller);
    t.assert_routed_to_edge("BYE", &caller);
    platform.request("ACK");
    platform.request("BYE");
    caller.assert_ok();
    platform.assert_ok();
    let cdr = t.cdr();
    assert_eq!(cdr["direction"], "inbound", "{cdr}");
    assert_eq!(cdr["finalStatus"], 200, "answered: {cdr}");
    assert!(!cdr["answer"].is_null(), "answered: {cdr}");
    assert_eq!(cdr["endedBy"], "carrier", "{cdr}");
    t.assert_dialog_transport(&caller);
}

#[test]
fn kamailio_record_routing_proxy_udp_call_ended_by_the_carrier() {
    call_ended_by_the_carrier(Transport::Udp);
}

#[test]
fn kamailio_record_routing_proxy_tcp_call_ended_by_the_carrier() {
    call_ended_by_the_carrier(Transport::Tcp);
}

/// The platform hangs up: the edge's BYE to the carrier carries Route: Kamailio, whose
/// loose_route() passes it to the phone.
fn call_ended_by_the_platform(transport: Transport) {
    let t = Inbound::start(
        &format!("kam_rr_bye_platform_{}", transport.param()),
        transport,
        true,
        false,
    );
    let platform = t.platform("uas_answer_bye.xml", &[("HOLD_MS", "300")]);
    let caller = t.caller("uac_rr_call_wait_bye.xml", &[]).wait();
    let platform = platform.wait();

    let ok = caller.response(200, "INVITE");
    t.assert_record_route(ok, "200 to the INVITE", &caller);
    t.assert_routed_to_edge("ACK", &caller);
    t.assert_routed_from_edge("BYE", &caller);
    caller.assert_ok();
    platform.assert_ok();
    platform.response(200, "BYE");
    let cdr = t.cdr();
    assert_eq!(cdr["finalStatus"], 200, "{cdr}");
    assert_eq!(cdr["endedBy"], "platform", "{cdr}");
    t.assert_dialog_transport(&caller);
}

#[test]
fn kamailio_record_routing_proxy_udp_bye_from_the_platform() {
    call_ended_by_the_platform(Transport::Udp);
}

#[test]
fn kamailio_record_routing_proxy_tcp_bye_from_the_platform() {
    call_ended_by_the_platform(Transport::Tcp);
}

/// The phone gives up while the platform rings: the CANCEL passes Kamailio (hop by hop,
/// RFC 3261 §16.10) and reaches the platform; the phone gets 200 and 487.
fn cancel_from_the_carrier(transport: Transport) {
    let t = Inbound::start(
        &format!("kam_rr_cancel_{}", transport.param()),
        transport,
        true,
        false,
    );
    let platform = t.platform("uas_ring_cancel.xml", &[]);
    let caller = t.caller("uac_cancel.xml", &[]).wait();
    let platform = settle(platform, "CANCEL");

    // Kamailio builds its own CANCEL (onsend_route does not see it): the edge's 200 shows it.
    assert!(
        t.kam
            .events_of("REPLY", "200")
            .iter()
            .any(|e| e.text.starts_with("200 CANCEL")),
        "the edge answered Kamailio's CANCEL:\n{}",
        t.kam.report()
    );
    platform.request("CANCEL");
    let ringing = caller.response(180, "INVITE");
    t.assert_record_route(ringing, "180", &caller);
    caller.response(200, "CANCEL");
    caller.response(487, "INVITE");
    caller.assert_ok();
    platform.assert_ok();
    let cdr = t.cdr();
    assert_eq!(cdr["finalStatus"], 487, "{cdr}");
    assert_eq!(cdr["endedBy"], "carrier", "{cdr}");
    assert!(cdr["answer"].is_null(), "never answered: {cdr}");
    t.assert_dialog_transport(&caller);
}

#[test]
fn kamailio_record_routing_proxy_udp_cancel_from_the_carrier() {
    cancel_from_the_carrier(Transport::Udp);
}

#[test]
fn kamailio_record_routing_proxy_tcp_cancel_from_the_carrier() {
    cancel_from_the_carrier(Transport::Tcp);
}

/// The phone re-INVITEs (a hold): Kamailio loose-routes it to the edge, the platform gets the
/// new offer and its answer comes back the same way.
fn reinvite_from_the_carrier(transport: Transport) {
    let t = Inbound::start(
        &format!("kam_rr_reinvite_carrier_{}", transport.param()),
        transport,
        true,
        false,
    );
    let platform = t.platform("uas_reinvite.xml", &[]);
    let caller = t
        .caller("uac_rr_reinvite.xml", &[("HOLD_MS", "300")])
        .wait();
    let platform = settle(platform, "BYE");

    let ok = caller.response(200, "INVITE");
    t.assert_record_route(ok, "200 to the INVITE", &caller);
    t.assert_routed_to_edge("ACK", &caller);
    t.assert_routed_to_edge("INVITE", &caller);
    let invites = platform.requests("INVITE");
    assert_eq!(invites.len(), 2, "{}", platform.report());
    assert!(
        invites[1].body.contains("a=sendonly"),
        "the new offer reaches the platform:\n{}",
        invites[1].text()
    );
    let answer = caller
        .received()
        .find(|m| m.code() == Some(200) && m.cseq_number() == Some(2))
        .unwrap_or_else(|| panic!("no 200 for the re-INVITE:\n{}", caller.report()));
    assert!(
        answer.body.contains("a=recvonly"),
        "the platform's answer reaches the phone:\n{}",
        answer.text()
    );
    t.assert_routed_to_edge("BYE", &caller);
    caller.assert_ok();
    platform.assert_ok();
    assert_eq!(platform.requests("ACK").len(), 2, "{}", platform.report());
    assert_eq!(t.cdr()["endedBy"], "carrier");
    t.assert_dialog_transport(&caller);
}

#[test]
fn kamailio_record_routing_proxy_udp_reinvite_from_the_carrier() {
    reinvite_from_the_carrier(Transport::Udp);
}

#[test]
fn kamailio_record_routing_proxy_tcp_reinvite_from_the_carrier() {
    reinvite_from_the_carrier(Transport::Tcp);
}

/// The platform re-INVITEs: the edge's re-INVITE and its ACK to the carrier carry Route:
/// Kamailio and reach the phone through it; the phone's answer comes back.
fn reinvite_from_the_platform(transport: Transport) {
    let t = Inbound::start(
        &format!("kam_rr_reinvite_platform_{}", transport.param()),
        transport,
        true,
        false,
    );
    let platform = t.platform("uas_send_reinvite.xml", &[("HOLD_MS", "300")]);
    let caller = t.caller("uac_rr_answer_reinvite.xml", &[]).wait();
    let platform = settle(platform, "BYE");

    let ok = caller.response(200, "INVITE");
    t.assert_record_route(ok, "200 to the INVITE", &caller);
    t.assert_routed_to_edge("ACK", &caller);
    t.assert_routed_from_edge("INVITE", &caller);
    let reinvite = caller.request("INVITE");
    assert!(
        reinvite.body.contains("a=sendonly"),
        "the platform's new offer reaches the phone:\n{}",
        reinvite.text()
    );
    let answer = platform
        .received()
        .find(|m| m.code() == Some(200) && m.cseq_method() == Some("INVITE"))
        .unwrap_or_else(|| panic!("no 200 for the re-INVITE:\n{}", platform.report()));
    assert!(
        answer.body.contains("a=recvonly"),
        "the phone's answer reaches the platform:\n{}",
        answer.text()
    );
    // The ACK of the re-INVITE's 200 is a new request along the route set too (§13.2.2.4).
    t.assert_routed_from_edge("ACK", &caller);
    t.assert_routed_to_edge("BYE", &caller);
    caller.assert_ok();
    platform.assert_ok();
    assert_eq!(t.cdr()["endedBy"], "carrier");
    t.assert_dialog_transport(&caller);
}

#[test]
fn kamailio_record_routing_proxy_udp_reinvite_from_the_platform() {
    reinvite_from_the_platform(Transport::Udp);
}

#[test]
fn kamailio_record_routing_proxy_tcp_reinvite_from_the_platform() {
    reinvite_from_the_platform(Transport::Tcp);
}

// ---- outbound to a challenging carrier --------------------------------------------------------

/// An edge whose outbound trunk points at a Kamailio that challenges every INVITE, re-INVITE
/// and BYE of the edge (realm `OUTBOUND_REALM`), in front of the carrier's far end.
struct Outbound {
    kam: Kamailio,
    edge: Edge,
    far_end: SocketAddr,
    lab: Lab,
}

impl Outbound {
    fn start(name: &str, trunk_password: &str) -> Self {
        let lab = Lab::new(name);
        let kam_addr = Kamailio::reserve(CARRIER_TARGET);
        let far_end = Sipp::reserve(CARRIER_TARGET_2);
        config(
            &lab,
            SocketAddr::from(([127, 0, 0, 20], 5999)),
            Some(kam_addr),
            trunk_password,
            false,
        );
        let edge = Edge::start(&lab, EdgeOptions::default());
        let cfg = kamailio::challenging_carrier(
            kam_addr,
            EDGE_PUBLIC_IP,
            far_end,
            &Credentials::new(OUTBOUND_USER, OUTBOUND_REALM, OUTBOUND_PASSWORD),
        );
        let kam = Kamailio::start(&lab, "kamailio", &cfg);
        Self {
            lab,
            edge,
            kam,
            far_end,
        }
    }

    fn far_end(&self, template: &str) -> Sipp {
        Sipp::uas_at(
            &self.lab,
            "carrier-far-end",
            scenario(&self.lab, template, &[]),
            self.far_end,
        )
        .timeout_secs(SIPP_SECS)
        .start()
    }

    /// The platform calls `CALLER` from a BYOC number of the trunk.
    fn platform_call(&self, template: &str, vars: &[(&str, &str)]) -> SippRun {
        let ruri = self.edge.internal_uri(CALLER);
        let mut all = vec![
            ("RURI", ruri.as_str()),
            ("FROM_USER", BYOC),
            ("HEADERS", "X-Trunkgate-Trunk: acme/pacific"),
        ];
        all.extend_from_slice(vars);
        Sipp::uac(
            &self.lab,
            "platform",
            scenario(&self.lab, template, &all),
            PLATFORM,
            self.edge.internal,
        )
        .timeout_secs(SIPP_SECS)
        .run()
    }

    /// Panics unless the edge's in-dialog `method` reached Kamailio with a Route naming it:
    /// the route set of the outbound leg is the 200's Record-Route, reversed (RFC 3261
    /// §12.1.2), so later requests pass the carrier's proxy (and its challenge) too.
    fn assert_routed(&self, method: &str, far_end: &SippRun) {
        let ok = far_end
            .sent()
            .find(|m| m.code() == Some(200) && m.cseq_method() == Some("INVITE"))
            .unwrap_or_else(|| panic!("the far end answered:\n{}", far_end.report()));
        assert!(
            ok.header("Record-Route").is_some(),
            "harness: the far end's 200 copies Kamailio's Record-Route:\n{}",
            ok.text()
        );
        let mine = format!("route=[<sip:{}", self.kam.addr);
        let ins: Vec<_> = self
            .kam
            .events_of("IN", method)
            .into_iter()
            .filter(|e| e.from_ip(EDGE_PUBLIC_IP))
            .collect();
        assert!(
            ins.iter().any(|e| e.text.contains(&mine)),
            "the edge's in-dialog {method} to the carrier lacks Route: <Kamailio's \
             Record-Route> (RFC 3261 §12.1.2, §12.2.1.1), so Kamailio refuses it\n\
             Kamailio:\n{}",
            self.kam.report()
        );
    }

    /// Kamailio's verdicts on `method`: (challenges sent, credentials accepted).
    fn auth(&self, method: &str) -> (usize, usize) {
        let events: Vec<_> = self
            .kam
            .events()
            .into_iter()
            .filter(|e| e.kind == "AUTH")
            .collect();
        let count = |verdict: &str| {
            events
                .iter()
                .filter(|e| e.text.starts_with(&format!("{verdict} {method} ")))
                .count()
        };
        (count("challenge"), count("accepted"))
    }

    /// Panics unless Kamailio challenged `n` of the edge's `method` requests and accepted the
    /// edge's answer to each (RFC 3261 §22.3: the request again with Proxy-Authorization).
    fn assert_answered(&self, method: &str, n: usize, platform: &SippRun) {
        let (challenged, accepted) = self.auth(method);
        assert!(
            challenged >= n && accepted == n,
            "Kamailio challenged the edge's {method} {challenged} time(s) and accepted \
             credentials {accepted} time(s), want {n} answered challenge(s): the edge must \
             answer a 407 to any request it sends the carrier with the trunk's outbound.auth \
             (RFC 3261 §22.3)\nKamailio:\n{}the platform:\n{}",
            self.kam.report(),
            platform.report()
        );
    }
}

/// The carrier challenges the edge's OPTIONS health probes too: each is answered with the
/// trunk's credentials, and the target counts as up.
#[test]
fn kamailio_challenging_carrier_options_probes_are_answered() {
    let lab = Lab::new("kam_challenge_options");
    let kam_addr = Kamailio::reserve(CARRIER_TARGET);
    let trunk = Trunk::new(
        "acme",
        "pacific",
        "127.0.0.10/32",
        SocketAddr::from(([127, 0, 0, 20], 5999)),
    )
    .target(kam_addr)
    .outbound_auth("pacific-outbound", OUTBOUND_REALM)
    .health_check(1, 1);
    lab.write_config(
        "acme.yaml",
        &documents(&[
            trunk.yaml(),
            secret("acme", "pacific-outbound", OUTBOUND_USER, OUTBOUND_PASSWORD),
        ]),
    );
    let edge = Edge::start(&lab, EdgeOptions::default());
    let cfg = kamailio::challenging_carrier(
        kam_addr,
        EDGE_PUBLIC_IP,
        Sipp::reserve(CARRIER_TARGET_2),
        &Credentials::new(OUTBOUND_USER, OUTBOUND_REALM, OUTBOUND_PASSWORD),
    );
    let kam = Kamailio::start(&lab, "kamailio", &cfg);
    let answered = || {
        edge.metric(
            "trunkgate_edge_carrier_challenges_total",
            &[("method", "OPTIONS"), ("result", "answered")],
        )
    };
    assert_eventually!(
        answered() >= 2.0,
        Duration::from_secs(10),
        "probes challenged and answered: {}\nKamailio:\n{}",
        answered(),
        kam.report()
    );
    let accepted = kam
        .events()
        .into_iter()
        .filter(|e| e.kind == "AUTH" && e.text.starts_with("accepted OPTIONS"))
        .count();
    assert!(
        accepted >= 2,
        "Kamailio accepted the probes' credentials:\n{}",
        kam.report()
    );
    assert_eq!(
        edge.metric(
            "trunkgate_edge_trunk_targets_healthy",
            &[("trunk", "acme/pacific")]
        ),
        1.0
    );
}

/// The carrier challenges the INVITE and later the BYE: the edge answers both.
#[test]
fn kamailio_challenging_carrier_invite_and_bye_are_answered() {
    let t = Outbound::start("kam_challenge_bye", OUTBOUND_PASSWORD);
    let far_end = t.far_end("uas_rr_answer.xml");
    let platform = t.platform_call("uac_call.xml", &[("HOLD_MS", "300")]);
    let far_end = settle(far_end, "BYE");

    t.assert_answered("INVITE", 1, &platform);
    let invite = far_end.request("INVITE");
    assert!(
        invite.header("Proxy-Authorization").is_none(),
        "Kamailio consumed the credentials:\n{}",
        invite.text()
    );
    platform.response(200, "INVITE");
    t.assert_routed("ACK", &far_end);
    t.assert_routed("BYE", &far_end);
    t.assert_answered("BYE", 1, &platform);
    far_end.request("BYE");
    platform.assert_ok();
    far_end.assert_ok();
    let cdr = t
        .edge
        .wait_cdr("the outbound call", |c| c["caller"] == BYOC);
    assert_eq!(cdr["direction"], "outbound", "{cdr}");
    assert_eq!(cdr["finalStatus"], 200, "{cdr}");
    assert_eq!(cdr["endedBy"], "platform", "{cdr}");
}

/// The carrier challenges the re-INVITE too: the platform's re-INVITE still gets 200.
#[test]
fn kamailio_challenging_carrier_reinvite_is_answered() {
    let t = Outbound::start("kam_challenge_reinvite", OUTBOUND_PASSWORD);
    let far_end = t.far_end("uas_rr_reinvite.xml");
    let platform = t.platform_call("uac_reinvite.xml", &[("HOLD_MS", "300")]);
    let far_end = settle(far_end, "BYE");

    t.assert_routed("INVITE", &far_end);
    t.assert_answered("INVITE", 2, &platform);
    let answer = platform
        .received()
        .find(|m| m.code().is_some_and(|c| c >= 200) && m.cseq_number() == Some(2))
        .unwrap_or_else(|| panic!("no final answer to the re-INVITE:\n{}", platform.report()));
    assert_eq!(
        answer.code(),
        Some(200),
        "the platform's re-INVITE is answered 200, not the carrier's challenge:\n{}",
        answer.text()
    );
    let invites = far_end.requests("INVITE");
    assert_eq!(invites.len(), 2, "{}", far_end.report());
    assert!(
        invites[1].body.contains("a=sendonly"),
        "the re-INVITE reaches the far end:\n{}",
        invites[1].text()
    );
    t.assert_answered("BYE", 1, &platform);
    platform.assert_ok();
    far_end.assert_ok();
}

/// A wrong password in the trunk's Secret: Kamailio challenges the answer again, and the
/// platform gets 403 whose Warning says the carrier refused the credentials.
#[test]
fn kamailio_challenging_carrier_wrong_password_gives_403_naming_the_credentials() {
    let t = Outbound::start("kam_challenge_wrong_password", "not-the-password");
    let platform = t.platform_call("uac_refused.xml", &[("CODE", "403")]);

    let (challenged, accepted) = t.auth("INVITE");
    assert_eq!(accepted, 0, "{}", t.kam.report());
    assert!(
        challenged >= 2,
        "the edge answered the first challenge (and was challenged again):\n{}",
        t.kam.report()
    );
    let refusal = platform
        .final_response("INVITE")
        .unwrap_or_else(|| panic!("no final answer:\n{}", platform.report()));
    assert_eq!(refusal.code(), Some(403), "{}", refusal.text());
    let warning = refusal
        .header("Warning")
        .unwrap_or_else(|| panic!("a 403 says why in Warning:\n{}", refusal.text()));
    let w = warning.to_ascii_lowercase();
    assert!(
        (w.contains("password") || w.contains("refused") || w.contains("rejected"))
            && !w.contains("no usable outbound credentials")
            && !w.contains("no outbound.auth"),
        "the Warning names refused credentials (a wrong password), not missing ones: {warning}"
    );
    platform.assert_ok();
    assert!(
        t.kam
            .events_of("OUT", "INVITE")
            .iter()
            .all(|e| !e.names(t.far_end)),
        "nothing reached the far end:\n{}",
        t.kam.report()
    );
}

// ---- the edge's own challenge, answered by Kamailio and by sipp ------------------------------

/// The trunk has `inbound.auth`: the edge challenges with 401 (MD5 by default); Kamailio's
/// failure_route answers with `uac_auth()` and sends the INVITE again; the call goes through.
/// Kamailio is the phone's outbound proxy here (no record-routing), so the result depends on
/// the digest exchange alone.
#[test]
fn kamailio_uac_auth_answers_the_edge_challenge() {
    let t = Inbound::start("kam_uac_auth", Transport::Udp, false, true);
    let platform = t.platform("uas_answer.xml", &[]);
    let caller = t.caller("uac_rr_call.xml", &[("HOLD_MS", "300")]).wait();
    let platform = settle(platform, "BYE");

    let challenges = t.kam.events_of("REPLY", "401");
    assert!(
        !challenges.is_empty(),
        "the edge challenged Kamailio's INVITE:\n{}",
        t.kam.report()
    );
    let events = t.kam.events();
    assert!(
        !events
            .iter()
            .any(|e| e.kind == "AUTH" && e.text.contains("could not answer")),
        "Kamailio's uac_auth() could not answer the edge's 401 (it takes the first \
         WWW-Authenticate and only MD5): the trunk's default algorithms must be [MD5]\n\
         Kamailio log:\n{}",
        t.kam.log_tail(40)
    );
    let invites_to_edge = t.sent_to("INVITE", t.edge.public);
    assert_eq!(
        invites_to_edge.len(),
        2,
        "the INVITE, then again with credentials:\n{}",
        t.kam.report()
    );
    assert!(
        t.kam
            .events_of("REPLY", "200")
            .iter()
            .any(|e| e.text.starts_with("200 INVITE")),
        "the edge accepted Kamailio's credentials:\n{}",
        t.kam.report()
    );
    caller.assert_ok();
    platform.assert_ok();
    assert_eq!(
        platform.requests("INVITE").len(),
        1,
        "{}",
        platform.report()
    );
    let cdr = t.cdr();
    assert_eq!(cdr["finalStatus"], 200, "{cdr}");
}

/// sipp as the carrier answers the edge's 401 itself with `[authentication]` (MD5 only).
#[test]
fn sipp_authentication_answers_the_edge_challenge() {
    let lab = Lab::new("sipp_auth");
    let platform_addr = Sipp::reserve(PLATFORM);
    config(&lab, platform_addr, None, "", true);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let platform = Sipp::answering(&lab, "platform", platform_addr)
        .timeout_secs(SIPP_SECS)
        .start();
    let ruri = edge.public_uri(NUMBER);
    let caller = Sipp::uac(
        &lab,
        "carrier",
        scenario(
            &lab,
            "uac_auth_call.xml",
            &[
                ("RURI", ruri.as_str()),
                ("FROM_USER", CALLER),
                ("HOLD_MS", "300"),
            ],
        ),
        CARRIER,
        edge.public,
    )
    // sipp's own default: its digest uri is `sip:<remote ip:port>`, not the Request-URI
    // (the issue saw 403 "digest uri does not match the Request-URI" for it). The edge takes
    // any uri the response verifies over, and counts the difference.
    .args(&["-au", INBOUND_USER, "-ap", INBOUND_PASSWORD])
    .timeout_secs(SIPP_SECS)
    .run();
    let platform = settle(platform, "BYE");

    let challenge = caller.response(401, "INVITE");
    let offered = challenge.header_all("WWW-Authenticate");
    let first = digest_params(offered.first().copied().unwrap_or_default());
    assert!(
        first
            .get("algorithm")
            .is_none_or(|a| a.eq_ignore_ascii_case("MD5")),
        "the default challenge is MD5 first (what sipp, Kamailio and baresip answer): {offered:?}"
    );
    let retry = caller
        .sent()
        .filter(|m| m.method() == Some("INVITE"))
        .nth(1)
        .unwrap_or_else(|| panic!("sipp could not answer the challenge:\n{}", caller.report()));
    let auth = retry
        .header("Authorization")
        .unwrap_or_else(|| panic!("sipp's retry carries Authorization:\n{}", retry.text()));
    let p = digest_params(auth);
    assert_eq!(
        p.get("realm").map(String::as_str),
        Some(INBOUND_REALM),
        "{auth}"
    );
    assert_eq!(
        p.get("uri").map(String::as_str),
        Some(format!("sip:{}", edge.public).as_str()),
        "sipp signs sip:HOST:PORT, not the Request-URI: {auth}"
    );
    caller.assert_ok();
    assert_eq!(
        edge.metric("trunkgate_edge_auth_uri_differs_total", &[]),
        1.0,
        "the difference is counted"
    );
    platform.assert_ok();
    assert_eq!(
        platform.requests("INVITE").len(),
        1,
        "{}",
        platform.report()
    );
    let cdr = edge.wait_cdr("the call", |c| c["callee"] == NUMBER);
    assert_eq!(cdr["finalStatus"], 200, "{cdr}");
    assert_eq!(cdr["endedBy"], "carrier", "{cdr}");
}
