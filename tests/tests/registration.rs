//! Registration trunks (`outbound.registration`): the real edge registers with a sipp registrar
//! that challenges it and checks the digest answer with sipp's own code, refreshes before the
//! binding runs out, backs off after a 403, takes calls sent to its registered contact, and in
//! a fleet sharing Redis exactly one edge registers, another taking over when it is killed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use trunkgate_tests::config::documents;
use trunkgate_tests::redis::Redis;
use trunkgate_tests::sipp::scenario;
use trunkgate_tests::*;

const REALM: &str = "sip.carrier.example";
const USER: &str = "acme-trunk";
const PASSWORD: &str = "reg-secret-1";
const NUMBER: &str = "+6498879333";

/// The trunk `acme/pacific`: carrier at 127.0.0.10, its registrar (and only target) at
/// `registrar`, calls delivered to `platform`, registering with `registration`.
fn registration_trunk(lab: &Lab, platform: SocketAddr, registrar: SocketAddr, registration: &str) {
    let trunk = Trunk::new("acme", "pacific", "127.0.0.10/32", platform)
        .target(registrar)
        .outbound_auth("pacific-outbound", REALM)
        .registration(registration);
    lab.write_config(
        "acme.yaml",
        &documents(&[
            trunk.yaml(),
            secret("acme", "pacific-outbound", USER, PASSWORD),
            Numbers::byoc("acme", "numbers", "pacific", &["+6498879300-+6498879399"]).yaml(),
        ]),
    );
}

fn snapshot(edge: &Edge) -> serde_json::Value {
    let (code, body) = edge.get("/snapshot").expect("the admin endpoint answers");
    assert_eq!(code, 200);
    serde_json::from_str(&body).expect("JSON")
}

fn registration(edge: &Edge) -> serde_json::Value {
    snapshot(edge)["registrations"]["acme/pacific"].clone()
}

#[test]
fn the_edge_registers_with_digest_refreshes_and_takes_calls_to_its_contact() {
    let lab = Lab::new("register_digest");
    // Built before the registrar's clock starts.
    trunkgate_tests::edge::edge_bin();
    let platform = Sipp::reserve(PLATFORM);
    let registrar_addr = Sipp::reserve(CARRIER_TARGET);
    registration_trunk(&lab, platform, registrar_addr, "{expiresSeconds: 60}");
    // The registrar grants 3 s, so the refresh comes within the test.
    let registrar = Sipp::uas_at(
        &lab,
        "registrar",
        scenario(
            &lab,
            "uas_registrar.xml",
            &[
                ("REALM", REALM),
                ("NONCE", "n0nce"),
                ("USER", USER),
                ("PASSWORD", PASSWORD),
                ("EXPIRES", "3"),
            ],
        ),
        registrar_addr,
    )
    .timeout_secs(20)
    .start();
    let edge = Edge::start(&lab, EdgeOptions::default());
    let run = registrar.wait();
    run.assert_ok();
    let registers = run.requests("REGISTER");
    assert_eq!(
        registers.len(),
        4,
        "challenged, registered, challenged, refreshed"
    );
    let first = registers[0];
    assert_eq!(
        first.header("Contact"),
        Some(format!("<sip:{USER}@{}>", edge.public).as_str()),
        "the edge's own contact"
    );
    assert_eq!(first.header("Expires"), Some("60"));
    assert_eq!(
        first.header("Call-ID"),
        registers[3].header("Call-ID"),
        "one Call-ID for the binding (RFC 3261 §10.2.4)"
    );
    let cseqs: Vec<u32> = registers.iter().filter_map(|r| r.cseq_number()).collect();
    assert!(
        cseqs.windows(2).all(|w| w[1] > w[0]),
        "CSeq rises: {cseqs:?}"
    );
    assert_eq!(
        edge.metric(
            "trunkgate_edge_registrations_total",
            &[("trunk", "acme/pacific"), ("result", "ok")]
        ),
        2.0
    );
    let r = registration(&edge);
    assert_eq!(r["registered"], true, "{r}");
    assert!(
        r["expires"].as_str().is_some_and(|e| e.ends_with('Z')),
        "{r}"
    );

    // The carrier delivers a call to the registered contact, the number in To.
    let uas = Sipp::answering(&lab, "platform", platform).start();
    let ruri = format!("sip:{USER}@{}", edge.public);
    let to = format!("sip:{NUMBER}@{REALM}");
    Sipp::uac(
        &lab,
        "carrier",
        scenario(&lab, "uac_call.xml", &[("RURI", &ruri), ("TO_URI", &to)]),
        CARRIER,
        edge.public,
    )
    .run()
    .assert_ok();
    let delivered = uas.wait();
    delivered.assert_ok();
    let invite = delivered.request("INVITE");
    assert!(
        invite
            .uri()
            .is_some_and(|u| u.starts_with(&format!("sip:{NUMBER}@"))),
        "the platform gets the called number from To: {}",
        invite.text()
    );
}

#[test]
fn a_refused_registration_backs_off_and_says_why() {
    let lab = Lab::new("register_forbidden");
    // Built before the registrar's clock starts.
    trunkgate_tests::edge::edge_bin();
    let platform = Sipp::reserve(PLATFORM);
    let registrar_addr = Sipp::reserve(CARRIER_TARGET);
    registration_trunk(&lab, platform, registrar_addr, "{expiresSeconds: 60}");
    let registrar = Sipp::uas_at(
        &lab,
        "registrar",
        scenario(&lab, "uas_registrar_forbidden.xml", &[("HOLD_MS", "6000")]),
        registrar_addr,
    )
    .timeout_secs(20)
    .start();
    let edge = Edge::start(&lab, EdgeOptions::default());
    let run = registrar.wait();
    assert_eq!(
        run.requests("REGISTER").len(),
        1,
        "no second REGISTER within 6 s of a 403 (backoff, not every tick)"
    );
    let r = registration(&edge);
    assert_eq!(r["registered"], false, "{r}");
    assert_eq!(r["lastError"], "403 Forbidden", "{r}");
    assert_eq!(
        edge.metric(
            "trunkgate_edge_registrations_total",
            &[("trunk", "acme/pacific"), ("result", "failed")]
        ),
        1.0
    );
    assert!(edge.log_tail(200).contains("registration failed"));
}

/// Which edge's contact (by port) each REGISTER the registrar received carried.
fn contacts(run: &SippRun) -> Vec<String> {
    run.requests("REGISTER")
        .iter()
        .filter_map(|r| r.header("Contact").map(str::to_string))
        .collect()
}

#[test]
fn one_edge_of_the_fleet_registers_and_another_takes_over_when_it_dies() {
    let lab = Lab::new("register_fleet");
    // Built before the registrar's clock starts.
    trunkgate_tests::edge::edge_bin();
    let redis = Redis::start(&lab);
    let platform = Sipp::reserve(PLATFORM);
    let registrar_addr = Sipp::reserve(CARRIER_TARGET);
    // No challenge here: the election is what is tested.
    let trunk = Trunk::new("acme", "pacific", "127.0.0.10/32", platform)
        .target(registrar_addr)
        .registration(&format!(
            "{{aor: \"sip:{USER}@{REALM}\", expiresSeconds: 60}}"
        ));
    lab.write_config(
        "acme.yaml",
        &documents(&[
            trunk.yaml(),
            Numbers::byoc("acme", "numbers", "pacific", &["+6498879300-+6498879399"]).yaml(),
        ]),
    );
    let registrar = Sipp::uas_at(
        &lab,
        "registrar",
        scenario(&lab, "uas_registrar_open.xml", &[("EXPIRES", "2")]),
        registrar_addr,
    )
    .calls(10)
    .timeout_secs(60)
    .start();
    let start = |name: &str| {
        Edge::start_named(
            &lab,
            name,
            EdgeOptions::with_args(&[
                "--state-store",
                &redis.url(),
                "--state-lease-seconds",
                "3",
                "--state-identity",
                name,
            ]),
        )
    };
    let edges = vec![start("edge-a"), start("edge-b")];
    // Both edges run for a while: the binding is refreshed every second by one of them only.
    std::thread::sleep(Duration::from_secs(5));
    let holders: Vec<usize> = edges
        .iter()
        .enumerate()
        .filter(|(_, e)| registration(e)["registered"] == true)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(holders.len(), 1, "exactly one registrant: {holders:?}");
    let holder = holders[0];
    let other = 1 - holder;
    let own = |e: &Edge| format!("@{}", e.public);
    let before = std::fs::read_to_string(lab.path("registrar.msg")).unwrap_or_default();
    assert!(before.contains(&own(&edges[holder])));
    assert!(
        !before.contains(&own(&edges[other])),
        "the other edge never registered"
    );
    // The registrant dies without a word; the other takes over.
    edges[holder].signal("KILL");
    let killed = Instant::now();
    assert_eventually!(
        registration(&edges[other])["registered"] == true,
        Duration::from_secs(15),
        "the other edge registers"
    );
    let took = killed.elapsed();
    println!("registration taken over {took:?} after the registrant was killed (lease 3 s)");
    let run = registrar.stop();
    let all = contacts(&run);
    assert!(
        all.iter().any(|c| c.contains(&own(&edges[other]))),
        "{all:?}"
    );
    drop(edges);
}
