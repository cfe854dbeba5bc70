//! SIP over TLS (RFC 3261 §26.2) between the real edge and Kamailio 5.6 with its `tls` module as
//! the carrier, certificates from a test CA made with `openssl`:
//! - inbound: the carrier's phone (sipp, UDP) calls through Kamailio, which reaches the edge's
//!   `--public-sips` listener over TLS and checks the edge's certificate; answered, ended by
//!   the carrier through the same connection;
//! - outbound: the platform calls a `sips:` target; the edge checks Kamailio's certificate
//!   against `--tls-ca` and the target's address, and Kamailio asks for the edge's (mutual
//!   TLS); a certificate of another CA is refused, counted, and the platform gets 503;
//! - bad input on the TLS port: plaintext SIP and a handshake that never finishes are closed
//!   and counted, and get no SIP answer;
//! - rotation: new certificate files (a renewed Secret) are presented to the next connection
//!   (`openssl s_client` reads them), a broken file is reported and the old one stays.
//!
//! Addresses: the carrier's phone `127.0.0.11` behind its Kamailio on `127.0.0.10`, the
//! platform `127.0.0.20`; outbound: Kamailio on `127.0.0.30`, its far end (sipp) `127.0.0.31`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use trunkgate_tests::config::{self, documents};
use trunkgate_tests::kamailio::{self, Kamailio, KamailioTls, Transport};
use trunkgate_tests::pki::Pki;
use trunkgate_tests::sipp::{Sipp, scenario};
use trunkgate_tests::*;

const CARRIER_PHONE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11));
const CALLER: &str = "+6421555123";
const NUMBER: &str = "+6498879333";
const BYOC: &str = "+6498879301";
const SIPP_SECS: u64 = 15;

/// The edge with a TLS listener on the carrier side and the test CA's certificate for
/// 127.0.0.1 (and `edge.test`); (edge, its TLS address).
fn tls_edge(lab: &Lab, pki: &Pki, extra: &[&str]) -> (Edge, SocketAddr) {
    let mut args = vec!["--tls-ca", pki.ca.cert.to_str().unwrap_or_default()];
    args.extend_from_slice(extra);
    tls_edge_without_ca(lab, pki, &args)
}

/// [`tls_edge`] without `--tls-ca`: only the system roots and the trunks' own CA bundles.
use trunkgate_tests::pki::tls_edge as tls_edge_without_ca;

/// A lab with one trunk from 127.0.0.1 and an edge with a TLS listener (`tls_edge`), for the
/// tests that talk to the TLS port directly; (lab, its CA, edge, its TLS address).
fn lab_with_tls_port(name: &str, extra: &[&str]) -> (Lab, Pki, Edge, SocketAddr) {
    let lab = Lab::new(name);
    let pki = Pki::new(&lab, "ca");
    let trunk = Trunk::new(
        "acme",
        "pacific",
        "127.0.0.1/32",
        SocketAddr::from(([127, 0, 0, 20], 5999)),
    );
    lab.write_config("acme.yaml", &trunk.yaml());
    let (edge, sips) = tls_edge(&lab, &pki, extra);
    (lab, pki, edge, sips)
}

fn tls_failures(edge: &Edge, direction: &str, reason: &str) -> f64 {
    edge.metric(
        "trunkgate_edge_tls_handshake_failures_total",
        &[("direction", direction), ("reason", reason)],
    )
}

#[test]
fn an_inbound_call_over_tls_through_kamailio_is_answered_and_ended() {
    let lab = Lab::new("tls_inbound");
    let pki = Pki::new(&lab, "ca");
    let platform = Sipp::reserve(PLATFORM);
    let trunk = Trunk::new("acme", "pacific", "127.0.0.10/32", platform);
    lab.write_config(
        "acme.yaml",
        &documents(&[
            trunk.yaml(),
            Numbers::byoc("acme", "numbers", "pacific", &[NUMBER]).yaml(),
        ]),
    );
    let (edge, sips) = tls_edge(&lab, &pki, &[]);
    let mut cfg =
        kamailio::carrier_proxy(Kamailio::reserve(CARRIER), sips, Transport::Tls, true, None);
    cfg.tls = Some(KamailioTls {
        listen: SocketAddr::new(CARRIER, free_port()),
        own: pki.leaf("kamailio", &["127.0.0.10"]),
        ca: pki.ca.cert.clone(),
    });
    let kam = Kamailio::start(&lab, "kamailio", &cfg);
    let uas = Sipp::uas_at(
        &lab,
        "platform",
        scenario(&lab, "uas_answer.xml", &[("RING_MS", "200")]),
        platform,
    )
    .timeout_secs(SIPP_SECS)
    .start();
    let ruri = kam.uri(NUMBER);
    let caller = Sipp::uac(
        &lab,
        "carrier-phone",
        scenario(
            &lab,
            "uac_rr_call.xml",
            &[("RURI", &ruri), ("FROM_USER", CALLER), ("HOLD_MS", "300")],
        ),
        CARRIER_PHONE,
        kam.addr,
    )
    .timeout_secs(SIPP_SECS)
    .run();
    caller.assert_ok();
    let uas = uas.wait();
    uas.request("BYE");
    // Kamailio reached the edge over TLS, the INVITE and the caller's BYE alike.
    for method in ["INVITE", "BYE"] {
        let tls_out: Vec<_> = kam
            .events_of("OUT", method)
            .into_iter()
            .filter(|e| e.names(sips) && e.proto() == Some("tls"))
            .collect();
        assert!(
            !tls_out.is_empty(),
            "Kamailio sent the {method} to the edge over TLS:\n{}",
            kam.report()
        );
    }
    // The edge's Contact on the TLS leg names its TLS listener (RFC 3261 §12.1.1).
    let ok = caller.response(200, "INVITE");
    let contact = ok.header("Contact").unwrap_or_default();
    assert!(
        contact.contains(&sips.to_string()) && contact.contains("transport=tls"),
        "the 200's Contact: {contact}"
    );
    let cdr = edge.wait_cdr("the call", |c| c["callee"] == NUMBER);
    assert_eq!(cdr["finalStatus"], 200, "{cdr}");
    assert_eq!(cdr["endedBy"], "carrier", "{cdr}");
    assert_eq!(cdr["carrierTransport"], "tls", "{cdr}");
    assert_eq!(cdr["platformTransport"], "udp", "{cdr}");
    assert_eq!(tls_failures(&edge, "accepted", "certificate"), 0.0);
}

/// The platform's call to a `sips:` target; the target's Kamailio presents `kam_cert`.
struct Outbound {
    edge: Edge,
    kam: Kamailio,
    far_end: SocketAddr,
    lab: Lab,
}

/// How an [`Outbound`] lab differs from the plain one.
struct Setup<'a> {
    /// The CA of Kamailio's certificate: "ca" (the edge's) or another.
    kamailio_ca: &'a str,
    /// The names on Kamailio's certificate.
    kamailio_names: &'a [&'a str],
    /// The trunk's `tls`: its CA bundle from a Secret (the lab's CA), its `serverName`.
    trunk_ca: bool,
    server_name: Option<&'a str>,
    /// The edge is given `--tls-ca` (the lab's CA).
    edge_ca: bool,
    /// Kamailio's certificate expired in 2020.
    expired: bool,
}

const PLAIN: Setup<'static> = Setup {
    kamailio_ca: "ca",
    kamailio_names: &["127.0.0.30"],
    trunk_ca: false,
    server_name: None,
    edge_ca: true,
    expired: false,
};

impl Outbound {
    fn start(name: &str, kamailio_ca: &str) -> Self {
        Self::start_with(
            name,
            Setup {
                kamailio_ca,
                ..PLAIN
            },
        )
    }

    fn start_with(name: &str, setup: Setup<'_>) -> Self {
        let kamailio_ca = setup.kamailio_ca;
        let lab = Lab::new(name);
        let pki = Pki::new(&lab, "ca");
        let kam_addr = Kamailio::reserve(CARRIER_TARGET);
        let kam_tls = SocketAddr::new(CARRIER_TARGET, free_port());
        let far_end = Sipp::reserve(CARRIER_TARGET_2);
        let mut trunk = Trunk::new(
            "acme",
            "pacific",
            "127.0.0.30/32",
            SocketAddr::from(([127, 0, 0, 20], 5999)),
        );
        trunk.targets.push((format!("sips:{kam_tls}"), 1, 1));
        trunk.routes.push(("+".into(), 100));
        if setup.trunk_ca || setup.server_name.is_some() {
            trunk = trunk.tls(
                setup.trunk_ca.then_some("carrier-ca"),
                setup.server_name,
                &[],
            );
        }
        lab.write_config(
            "acme.yaml",
            &documents(&[
                trunk.yaml(),
                Numbers::byoc("acme", "numbers", "pacific", &[BYOC]).yaml(),
                config::ca_secret("acme", "carrier-ca", &pki.ca.cert),
            ]),
        );
        let (edge, _) = if setup.edge_ca {
            tls_edge(&lab, &pki, &[])
        } else {
            tls_edge_without_ca(&lab, &pki, &[])
        };
        // Kamailio's certificate: from the edge's CA, or from another one.
        let own = if setup.expired {
            pki.expired_leaf("kamailio", setup.kamailio_names)
        } else if kamailio_ca == "ca" {
            pki.leaf("kamailio", setup.kamailio_names)
        } else {
            Pki::new(&lab, kamailio_ca).leaf("kamailio", setup.kamailio_names)
        };
        let mut cfg = kamailio::relaying_carrier(kam_addr, far_end);
        cfg.tls = Some(KamailioTls {
            listen: kam_tls,
            own,
            ca: pki.ca.cert.clone(),
        });
        let kam = Kamailio::start(&lab, "kamailio", &cfg);
        Self {
            edge,
            kam,
            far_end,
            lab,
        }
    }

    fn platform_call(
        &self,
        template: &str,
        vars: &[(&str, &str)],
    ) -> trunkgate_tests::sipp::SippRun {
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
}

#[test]
fn an_outbound_call_to_a_sips_target_checks_its_certificate_and_goes_through() {
    let t = Outbound::start("tls_outbound", "ca");
    let far = Sipp::uas_at(
        &t.lab,
        "carrier-far-end",
        scenario(&t.lab, "uas_rr_answer.xml", &[]),
        t.far_end,
    )
    .timeout_secs(SIPP_SECS)
    .start();
    let call = t.platform_call("uac_call.xml", &[("HOLD_MS", "300")]);
    call.assert_ok();
    far.wait().request("BYE");
    let from_edge: Vec<_> = t
        .kam
        .events_of("IN", "INVITE")
        .into_iter()
        .filter(|e| e.from_ip(EDGE_PUBLIC_IP) && e.proto() == Some("tls"))
        .collect();
    assert!(
        !from_edge.is_empty(),
        "the edge's INVITE reached Kamailio over TLS:\n{}",
        t.kam.report()
    );
    assert!(
        !t.kam
            .events_of("IN", "BYE")
            .into_iter()
            .any(|e| e.from_ip(EDGE_PUBLIC_IP) && e.proto() != Some("tls")),
        "the edge's BYE went over TLS too:\n{}",
        t.kam.report()
    );
    assert_eq!(tls_failures(&t.edge, "opened", "certificate"), 0.0);
}

#[test]
fn a_sips_target_with_a_certificate_of_another_ca_is_refused_and_counted() {
    let t = Outbound::start("tls_outbound_wrong_ca", "other-ca");
    // The only target cannot be trusted: 503 (sipp fails on any other answer).
    let call = t.platform_call("uac_refused.xml", &[("CODE", "503")]);
    call.assert_ok();
    assert!(
        tls_failures(&t.edge, "opened", "certificate") >= 1.0,
        "counted:\n{}",
        t.edge.metrics()
    );
    assert!(
        t.kam.events_of("IN", "INVITE").is_empty(),
        "no SIP reached the target:\n{}",
        t.kam.report()
    );
}

#[test]
fn plaintext_and_a_stalled_handshake_on_the_tls_port_are_closed_and_counted() {
    let (_lab, _pki, edge, sips) =
        lab_with_tls_port("tls_bad_input", &["--tls-handshake-seconds", "1"]);

    // Plaintext SIP where a TLS ClientHello belongs: no SIP answer, the connection closed.
    let mut plain = TcpStream::connect(sips).expect("connect to the TLS port");
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a read timeout");
    let invite = format!(
        "OPTIONS sip:{sips} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-plain\r\nFrom: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:{sips}>\r\nCall-ID: plain@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    plain.write_all(invite.as_bytes()).expect("write");
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        !String::from_utf8_lossy(&got).contains("SIP/2.0"),
        "no SIP answer on the TLS port: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eventually!(
        tls_failures(&edge, "accepted", "not_tls") >= 1.0,
        Duration::from_secs(5),
        "plaintext counted:\n{}",
        edge.metrics()
    );

    // A connection that never says anything is closed after --tls-handshake-seconds.
    let mut silent = TcpStream::connect(sips).expect("connect to the TLS port");
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a read timeout");
    let mut buf = [0u8; 64];
    let n = silent.read(&mut buf);
    assert!(
        matches!(n, Ok(0)) || n.is_err(),
        "closed without a byte: {n:?}"
    );
    assert_eventually!(
        tls_failures(&edge, "accepted", "timeout") >= 1.0,
        Duration::from_secs(5),
        "timeout counted:\n{}",
        edge.metrics()
    );
}

/// The subject of the certificate the edge presents at `addr`, as `openssl s_client` (a peer
/// nobody here wrote) prints it.
fn presented_subject(addr: SocketAddr) -> String {
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-brief"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find(|l| l.contains("Peer certificate:") || l.starts_with("subject="))
        .unwrap_or(&text)
        .to_string()
}

#[test]
fn a_rotated_certificate_is_used_for_new_connections_and_a_broken_one_is_not() {
    let (lab, pki, edge, sips) = lab_with_tls_port("tls_rotation", &[]);
    let first = presented_subject(sips);
    assert!(
        first.contains("127.0.0.1"),
        "the first certificate: {first}"
    );
    let reloads =
        |result: &str| edge.metric("trunkgate_edge_tls_reloads_total", &[("result", result)]);

    // cert-manager renews: new files in place (the kubelet swaps a mounted Secret the same way).
    let renewed = pki.leaf("renewed", &["rotated.test", "127.0.0.1"]);
    let (cert, key) = (lab.path("edge.crt"), lab.path("edge.key"));
    std::fs::copy(&renewed.key, &key).expect("copy the key");
    std::fs::copy(&renewed.cert, &cert).expect("copy the certificate");
    assert_eventually!(
        reloads("ok") >= 1.0,
        Duration::from_secs(10),
        "the new files were read:\n{}",
        edge.log_tail(20)
    );
    let second = presented_subject(sips);
    assert!(
        second.contains("rotated.test"),
        "the renewed certificate: {second}"
    );

    // A broken file is reported and the certificate in use stays. (Key and certificate are
    // copied one after the other above, so a look between the two may already have counted
    // an error: count from here.)
    std::thread::sleep(Duration::from_millis(2_500));
    let errors = reloads("error");
    std::fs::write(&cert, "not a certificate\n").expect("write");
    assert_eventually!(
        reloads("error") > errors,
        Duration::from_secs(10),
        "the broken file was reported:\n{}",
        edge.log_tail(20)
    );
    let third = presented_subject(sips);
    assert!(
        third.contains("rotated.test"),
        "still the renewed certificate: {third}"
    );
}

#[test]
fn a_trunks_own_ca_bundle_and_server_name_verify_a_target_the_edge_alone_would_not_trust() {
    // Kamailio's certificate names only sbc.carrier.test, not the address the target is given
    // by, and the edge has no --tls-ca: only the trunk's spec.tls makes the call possible.
    let t = Outbound::start_with(
        "tls_trunk_ca",
        Setup {
            kamailio_names: &["sbc.carrier.test"],
            trunk_ca: true,
            server_name: Some("sbc.carrier.test"),
            edge_ca: false,
            ..PLAIN
        },
    );
    let far = Sipp::uas_at(
        &t.lab,
        "carrier-far-end",
        scenario(&t.lab, "uas_rr_answer.xml", &[]),
        t.far_end,
    )
    .timeout_secs(SIPP_SECS)
    .start();
    t.platform_call("uac_call.xml", &[("HOLD_MS", "300")])
        .assert_ok();
    far.wait().request("BYE");
    assert_eq!(tls_failures(&t.edge, "opened", "certificate"), 0.0);
}

#[test]
fn a_target_with_an_expired_certificate_is_refused_and_counted() {
    let t = Outbound::start_with(
        "tls_expired",
        Setup {
            expired: true,
            ..PLAIN
        },
    );
    t.platform_call("uac_refused.xml", &[("CODE", "503")])
        .assert_ok();
    assert!(tls_failures(&t.edge, "opened", "certificate") >= 1.0);
    let log = t.edge.log_tail(400);
    assert!(
        log.contains("Expired") || log.contains("expired"),
        "the edge says why: the certificate expired:\n{log}"
    );
    assert!(
        t.kam.events_of("IN", "INVITE").is_empty(),
        "no SIP reached the target:\n{}",
        t.kam.report()
    );
}

#[test]
fn without_the_trunks_server_name_the_same_target_is_refused() {
    // As above but without serverName: the certificate does not name 127.0.0.30.
    let t = Outbound::start_with(
        "tls_trunk_ca_no_name",
        Setup {
            kamailio_names: &["sbc.carrier.test"],
            trunk_ca: true,
            edge_ca: false,
            ..PLAIN
        },
    );
    t.platform_call("uac_refused.xml", &[("CODE", "503")])
        .assert_ok();
    assert!(tls_failures(&t.edge, "opened", "certificate") >= 1.0);
}

/// Kamailio on `ip` in front of the edge's TLS listener, presenting a certificate of the lab's
/// CA for `names` as its client certificate.
fn tls_carrier_proxy(
    lab: &Lab,
    pki: &Pki,
    ip: IpAddr,
    sips: SocketAddr,
    names: &[&str],
    file: &str,
) -> Kamailio {
    let mut cfg = kamailio::carrier_proxy(Kamailio::reserve(ip), sips, Transport::Tls, true, None);
    cfg.tls = Some(KamailioTls {
        listen: SocketAddr::new(ip, free_port()),
        own: pki.leaf(file, names),
        ca: pki.ca.cert.clone(),
    });
    Kamailio::start(lab, file, &cfg)
}

#[test]
fn a_client_certificate_identifies_the_trunk_and_one_it_does_not_name_is_refused_403() {
    let lab = Lab::new("tls_client_names");
    let pki = Pki::new(&lab, "ca");
    let platform = Sipp::reserve(PLATFORM);
    // Kamailio A (127.0.0.10) presents kamailio.carrier.test: trunk acme/pacific asks for it.
    // Kamailio B (127.0.0.12) presents the same name, but its trunk acme/strict asks for
    // someone.else.test. Both trunks trust the lab's CA through their own Secret; the edge has
    // no --tls-ca.
    let pacific = Trunk::new("acme", "pacific", "127.0.0.10/32", platform).tls(
        Some("carrier-ca"),
        None,
        &["kamailio.carrier.test"],
    );
    let strict = Trunk::new("acme", "strict", "127.0.0.12/32", platform).tls(
        Some("carrier-ca"),
        None,
        &["someone.else.test"],
    );
    lab.write_config(
        "acme.yaml",
        &documents(&[
            pacific.yaml(),
            strict.yaml(),
            Numbers::byoc("acme", "numbers", "pacific", &[NUMBER]).yaml(),
            Numbers::byoc("acme", "strict-numbers", "strict", &[BYOC]).yaml(),
            config::ca_secret("acme", "carrier-ca", &pki.ca.cert),
        ]),
    );
    let (edge, sips) = tls_edge_without_ca(&lab, &pki, &[]);
    let kam_a = tls_carrier_proxy(
        &lab,
        &pki,
        CARRIER,
        sips,
        &["kamailio.carrier.test"],
        "kamailio-a",
    );
    let strict_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 12));
    let kam_b = tls_carrier_proxy(
        &lab,
        &pki,
        strict_ip,
        sips,
        &["kamailio.carrier.test"],
        "kamailio-b",
    );

    let uas = Sipp::uas_at(
        &lab,
        "platform",
        scenario(&lab, "uas_answer.xml", &[("RING_MS", "100")]),
        platform,
    )
    .timeout_secs(SIPP_SECS)
    .start();
    let ruri = kam_a.uri(NUMBER);
    Sipp::uac(
        &lab,
        "carrier-phone",
        scenario(
            &lab,
            "uac_rr_call.xml",
            &[("RURI", &ruri), ("FROM_USER", CALLER), ("HOLD_MS", "200")],
        ),
        CARRIER_PHONE,
        kam_a.addr,
    )
    .timeout_secs(SIPP_SECS)
    .run()
    .assert_ok();
    uas.wait().request("BYE");
    let cdr = edge.wait_cdr("the call", |c| c["callee"] == NUMBER);
    assert_eq!(cdr["trunk"], "acme/pacific", "{cdr}");

    let ruri = kam_b.uri(BYOC);
    Sipp::uac(
        &lab,
        "carrier-phone-b",
        scenario(&lab, "uac_refused.xml", &[("RURI", &ruri), ("CODE", "403")]),
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 13)),
        kam_b.addr,
    )
    .timeout_secs(SIPP_SECS)
    .run()
    .assert_ok();
    assert_eq!(
        edge.metric(
            "trunkgate_edge_refusals_total",
            &[("trunk", "acme/strict"), ("reason", "client_certificate")]
        ),
        1.0
    );
}

/// A flood of new TLS connections from one allowed address (the attack report: 2,071
/// handshakes/s cost 41.5% of a core) is cut to --tls-handshake-rate: the excess is closed
/// before a handshake starts, counted; the address is not blocked, so a real handshake a
/// moment later goes through.
#[test]
fn a_flood_of_tls_connections_from_one_address_is_cut_to_its_handshake_rate() {
    let (_lab, _pki, edge, sips) =
        lab_with_tls_port("tls_handshake_rate", &["--tls-handshake-rate", "10"]);
    let mut held = Vec::new();
    for _ in 0..200 {
        if let Ok(s) = TcpStream::connect(sips) {
            held.push(s);
        }
    }
    let refused = || {
        edge.metric(
            "trunkgate_edge_tcp_refused_total",
            &[("side", "public"), ("reason", "tls_handshake_rate")],
        )
    };
    assert_eventually!(
        refused() >= 150.0,
        Duration::from_secs(5),
        "past the burst (20) the connections are refused: {}",
        refused()
    );
    drop(held);
    std::thread::sleep(Duration::from_secs(1));
    let subject = presented_subject(sips);
    assert!(
        subject.contains("127.0.0.1"),
        "a handshake at the rate still goes through: {subject}"
    );
}
