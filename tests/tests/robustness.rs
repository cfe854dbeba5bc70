//! Malformed input never crashes the edge: the RFC 4475 torture messages and random garbage,
//! from an allowed carrier address and from the platform side; from a denied address nothing
//! comes back at all.

use std::net::SocketAddr;
use std::time::Duration;

use trunkgate_tests::config::write_acme;
use trunkgate_tests::sip::RawInvite;
use trunkgate_tests::sipp::scenario;
use trunkgate_tests::*;

const NUMBER: &str = "+6498879333";
/// The number the mangled INVITEs call: nobody owns it, so one that still parses is refused
/// (404) by the edge instead of becoming a call whose INVITE the edge keeps retransmitting to
/// the platform, where the UAS of the follow-up call would take it for its own.
const UNOWNED: &str = "+6498879999";

fn config(lab: &Lab, platform: SocketAddr) {
    write_acme(
        lab,
        &Trunk::new("acme", "pacific", "127.0.0.10/32", platform),
    );
}

/// xorshift64*: reproducible garbage without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The RFC 4475 messages, then random bytes, then a valid INVITE mangled in the ways parsers
/// trip over. No datagram is empty or CR/LF only (those are keep-alives, not messages).
fn corpus(edge: &Edge, local: SocketAddr) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(rfc4475_dir())
        .expect("the RFC 4475 messages")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "dat"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 40,
        "RFC 4475 has 49 messages; found {}",
        files.len()
    );
    for f in files {
        out.push(std::fs::read(f).expect("read a torture message"));
    }
    let mut rng = Rng(0x7255_6b67_6174_6531);
    for _ in 0..150 {
        let len = 1 + rng.below(1400);
        out.push((0..len).map(|_| rng.next() as u8).collect());
    }
    let valid = RawInvite::new(&edge.public_uri(UNOWNED), "+6421555123", "fuzz").invite(local);
    for i in 0..150 {
        let mut m = valid.clone();
        match i % 6 {
            // Flip some bytes.
            0 => {
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(m.len());
                    m[at] = rng.next() as u8;
                }
            }
            // Cut it short.
            1 => m.truncate(1 + rng.below(m.len() - 1)),
            // A Content-Length that lies.
            2 => {
                let text = String::from_utf8_lossy(&m).replace(
                    "Content-Length: ",
                    &format!("Content-Length: {}", rng.below(100_000)),
                );
                m = text.into_bytes();
            }
            // One header line repeated many times.
            3 => {
                let text = String::from_utf8_lossy(&m).replacen(
                    "Max-Forwards: 70\r\n",
                    &"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n".repeat(1 + rng.below(300)),
                    1,
                );
                m = text.into_bytes();
            }
            // NULs and bare LFs.
            4 => {
                let at = rng.below(m.len());
                m.insert(at, 0);
                let text = String::from_utf8_lossy(&m).replace("\r\n", "\n");
                m = text.into_bytes();
            }
            // A huge header value.
            _ => {
                let text = String::from_utf8_lossy(&m).replacen(
                    "Max-Forwards: 70",
                    &format!("Subject: {}", "A".repeat(1 + rng.below(60_000))),
                    1,
                );
                m = text.into_bytes();
            }
        }
        out.push(m);
    }
    for m in &mut out {
        if m.is_empty() {
            m.push(b'X');
        }
        if m[0] == b'\r' || m[0] == b'\n' {
            m[0] = b'X';
        }
    }
    out
}

#[test]
fn malformed_messages_never_crash_the_edge() {
    let lab = Lab::new("malformed_allowed");
    let platform = Sipp::reserve(PLATFORM);
    config(&lab, platform);
    let mut edge = Edge::start(&lab, EdgeOptions::default());
    let carrier = RawUdp::bind(CARRIER);
    let platform_side = RawUdp::bind(PLATFORM_2);
    let datagrams = corpus(&edge, carrier.local);
    for (i, d) in datagrams.iter().enumerate() {
        carrier.send(edge.public, d);
        platform_side.send(edge.internal, d);
        if i % 50 == 49 {
            // Let the edge keep up rather than measure the socket buffer.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = carrier.drain(Duration::from_millis(500));
    let _ = platform_side.drain(Duration::from_millis(10));
    assert!(
        edge.running(),
        "the edge died; its log:\n{}",
        edge.log_tail(30)
    );
    assert!(
        edge.metric("trunkgate_edge_malformed_messages_total", &[]) > 0.0,
        "malformed messages are counted"
    );

    // Still serving: health and a normal call.
    assert_eq!(edge.get("/healthz").map(|r| r.0), Some(200));
    let uas = Sipp::answering(&lab, "platform", platform).start();
    let ruri = edge.public_uri(NUMBER);
    Sipp::uac(
        &lab,
        "carrier",
        scenario(&lab, "uac_call.xml", &[("RURI", &ruri)]),
        CARRIER,
        edge.public,
    )
    .run()
    .assert_ok();
    uas.wait().assert_ok();
    assert!(
        edge.running(),
        "the edge died; its log:\n{}",
        edge.log_tail(30)
    );
}

#[test]
fn malformed_messages_from_a_denied_address_get_no_reply() {
    let lab = Lab::new("malformed_denied");
    let platform = Sipp::reserve(PLATFORM);
    config(&lab, platform);
    let mut edge = Edge::start(&lab, EdgeOptions::default());
    let scanner = RawUdp::bind(DENIED);
    let datagrams = corpus(&edge, scanner.local);
    let before = edge.denied_count();
    for (i, d) in datagrams.iter().enumerate() {
        scanner.send(edge.public, d);
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let replies = scanner.drain(Duration::from_millis(1000));
    assert!(
        replies.is_empty(),
        "{} replies to a denied address, the first:\n{}",
        replies.len(),
        replies
            .first()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .unwrap_or_default()
    );
    let n = datagrams.len() as f64;
    assert_eventually!(
        edge.denied_count() - before >= n,
        trunkgate_tests::edge::DENIED_COUNT_DELAY,
        "every one of the {n} datagrams is counted as an ACL drop"
    );
    assert!(
        edge.running(),
        "the edge died; its log:\n{}",
        edge.log_tail(30)
    );
    assert_eq!(edge.get("/healthz").map(|r| r.0), Some(200));
}
