//! RFC 3263 server location against a tiny authoritative DNS server on 127.0.0.1 that answers
//! from a fixed zone with hand-built wire messages (RFC 1035 §4) and logs every question.

use std::{
    net::{Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::net::UdpSocket;
use trunkgate_resolve::{Destination, Error, Resolver, Target, Transport};

const A: u16 = 1;
const AAAA: u16 = 28;
const SRV: u16 = 33;
const NAPTR: u16 = 35;

/// One resource record, RDATA already encoded.
#[derive(Clone)]
struct Rr {
    name: &'static str,
    rtype: u16,
    rdata: Vec<u8>,
}

fn encode_name(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(u8::try_from(label.len()).expect("label fits a byte"));
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

fn a(name: &'static str, ip: [u8; 4]) -> Rr {
    Rr {
        name,
        rtype: A,
        rdata: ip.to_vec(),
    }
}

fn aaaa(name: &'static str, ip: Ipv6Addr) -> Rr {
    Rr {
        name,
        rtype: AAAA,
        rdata: ip.octets().to_vec(),
    }
}

fn srv(name: &'static str, priority: u16, weight: u16, port: u16, target: &str) -> Rr {
    let mut rdata = [priority, weight, port]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    encode_name(&mut rdata, target);
    Rr {
        name,
        rtype: SRV,
        rdata,
    }
}

fn naptr(
    name: &'static str,
    order: u16,
    pref: u16,
    flags: &str,
    service: &str,
    replacement: &str,
) -> Rr {
    let mut rdata: Vec<u8> = [order, pref].iter().flat_map(|v| v.to_be_bytes()).collect();
    for text in [flags, service, ""] {
        rdata.push(u8::try_from(text.len()).expect("short text"));
        rdata.extend_from_slice(text.as_bytes());
    }
    encode_name(&mut rdata, replacement);
    Rr {
        name,
        rtype: NAPTR,
        rdata,
    }
}

/// Records, plus records returned in the additional section of a given (name, type) question.
#[derive(Clone, Default)]
struct Zone {
    records: Vec<Rr>,
    glue: Vec<(&'static str, u16, Rr)>,
}

struct FakeDns {
    addr: SocketAddr,
    questions: Arc<Mutex<Vec<(String, u16)>>>,
}

impl FakeDns {
    async fn start(zone: Zone) -> Self {
        Self::spawn(Some(zone)).await
    }

    /// Reads questions and never answers them.
    async fn silent() -> Self {
        Self::spawn(None).await
    }

    async fn spawn(zone: Option<Zone>) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = socket.local_addr().expect("local addr");
        let questions = Arc::new(Mutex::new(Vec::new()));
        let log = questions.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
                let Some((name, qtype, question_end)) = parse_question(&buf[..len]) else {
                    continue;
                };
                log.lock().expect("log").push((name.clone(), qtype));
                if let Some(zone) = &zone {
                    let reply = answer(zone, &buf[..question_end], &name, qtype);
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        });
        Self { addr, questions }
    }

    fn resolver(&self) -> Resolver {
        Resolver::with_nameserver(self.addr)
    }

    fn questions(&self) -> Vec<(String, u16)> {
        self.questions.lock().expect("log").clone()
    }

    fn asked(&self, name: &str, qtype: u16) -> bool {
        self.questions()
            .iter()
            .any(|(n, t)| n == name && *t == qtype)
    }
}

/// The question's lower-cased name, type, and where the question section ends.
fn parse_question(packet: &[u8]) -> Option<(String, u16, usize)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*packet.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(packet.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]);
    Some((labels.join("."), qtype, at + 4))
}

/// A response echoing the query's id and question: NXDOMAIN for a name the zone has nothing at.
fn answer(zone: &Zone, query: &[u8], name: &str, qtype: u16) -> Vec<u8> {
    let exists = zone.records.iter().any(|r| r.name == name);
    let answers: Vec<&Rr> = zone
        .records
        .iter()
        .filter(|r| r.name == name && r.rtype == qtype)
        .collect();
    let glue: Vec<&Rr> = zone
        .glue
        .iter()
        .filter(|(n, t, _)| *n == name && *t == qtype)
        .map(|(.., rr)| rr)
        .collect();
    let rd = query[2] & 0x01;
    let rcode = if exists { 0 } else { 3 };
    let counts = [1, answers.len(), 0, glue.len()].map(|c| u16::try_from(c).expect("count"));
    let mut out = vec![query[0], query[1], 0x84 | rd, 0x80 | rcode];
    out.extend(counts.iter().flat_map(|c| c.to_be_bytes()));
    out.extend_from_slice(&query[12..]);
    for rr in answers.into_iter().chain(glue) {
        encode_name(&mut out, rr.name);
        out.extend(rr.rtype.to_be_bytes());
        out.extend(1u16.to_be_bytes());
        out.extend(60u32.to_be_bytes());
        out.extend(u16::try_from(rr.rdata.len()).expect("rdata").to_be_bytes());
        out.extend_from_slice(&rr.rdata);
    }
    out
}

fn target(host: &str) -> Target<'_> {
    Target {
        host,
        port: None,
        transport: None,
        secure: false,
    }
}

fn dest(addr: &str, transport: Transport) -> Destination {
    Destination {
        addr: addr.parse().expect("test address"),
        transport,
    }
}

/// NAPTR (listed out of order) → SRV per transport → A, as a carrier publishes it.
fn chain_zone() -> Zone {
    Zone {
        records: vec![
            naptr(
                "chain.example",
                30,
                10,
                "s",
                "SIPS+D2T",
                "_sips._tcp.chain.example",
            ),
            naptr(
                "chain.example",
                20,
                10,
                "s",
                "SIP+D2T",
                "_sip._tcp.chain.example",
            ),
            naptr(
                "chain.example",
                10,
                10,
                "s",
                "SIP+D2U",
                "_sip._udp.chain.example",
            ),
            srv(
                "_sip._udp.chain.example",
                10,
                0,
                5070,
                "sbc-a.chain.example",
            ),
            srv(
                "_sip._tcp.chain.example",
                10,
                0,
                5071,
                "sbc-b.chain.example",
            ),
            srv(
                "_sips._tcp.chain.example",
                10,
                0,
                5072,
                "sbc-b.chain.example",
            ),
            a("sbc-a.chain.example", [127, 0, 0, 10]),
            a("sbc-b.chain.example", [127, 0, 0, 11]),
        ],
        glue: vec![],
    }
}

#[tokio::test]
async fn naptr_srv_a_chain_follows_naptr_order() {
    let dns = FakeDns::start(chain_zone()).await;
    let found = dns
        .resolver()
        .resolve(&target("chain.example"))
        .await
        .expect("resolves");
    assert_eq!(
        found,
        [
            dest("127.0.0.10:5070", Transport::Udp),
            dest("127.0.0.11:5071", Transport::Tcp),
            dest("127.0.0.11:5072", Transport::Tls),
        ]
    );
}

#[tokio::test]
async fn sips_target_follows_only_the_tls_naptr() {
    let dns = FakeDns::start(chain_zone()).await;
    let sips = Target {
        secure: true,
        ..target("chain.example")
    };
    let found = dns.resolver().resolve(&sips).await.expect("resolves");
    assert_eq!(found, [dest("127.0.0.11:5072", Transport::Tls)]);
    assert!(!dns.asked("_sip._udp.chain.example", SRV));
}

#[tokio::test]
async fn srv_without_naptr_tries_udp_then_tcp_by_priority() {
    let dns = FakeDns::start(Zone {
        records: vec![
            srv("_sip._udp.srv.example", 20, 0, 5061, "backup.srv.example"),
            srv("_sip._udp.srv.example", 10, 0, 5060, "main.srv.example"),
            srv("_sip._tcp.srv.example", 10, 0, 5062, "main.srv.example"),
            a("main.srv.example", [127, 0, 0, 20]),
            a("backup.srv.example", [127, 0, 0, 21]),
        ],
        glue: vec![],
    })
    .await;
    let found = dns
        .resolver()
        .resolve(&target("srv.example"))
        .await
        .expect("resolves");
    assert_eq!(
        found,
        [
            dest("127.0.0.20:5060", Transport::Udp),
            dest("127.0.0.21:5061", Transport::Udp),
            dest("127.0.0.20:5062", Transport::Tcp),
        ]
    );
    assert!(dns.asked("srv.example", NAPTR));
}

#[tokio::test]
async fn srv_additional_section_saves_the_address_lookup() {
    let dns = FakeDns::start(Zone {
        records: vec![srv(
            "_sip._udp.glue.example",
            10,
            0,
            5080,
            "sbc.glue.example",
        )],
        glue: vec![(
            "_sip._udp.glue.example",
            SRV,
            a("sbc.glue.example", [127, 0, 0, 30]),
        )],
    })
    .await;
    let found = dns
        .resolver()
        .resolve(&target("glue.example"))
        .await
        .expect("resolves");
    assert_eq!(found, [dest("127.0.0.30:5080", Transport::Udp)]);
    assert!(!dns.asked("sbc.glue.example", A));
}

#[tokio::test]
async fn a_records_only_use_the_default_port_over_udp() {
    let dns = FakeDns::start(Zone {
        records: vec![
            a("plain.example", [127, 0, 0, 40]),
            aaaa("plain.example", Ipv6Addr::LOCALHOST),
        ],
        glue: vec![],
    })
    .await;
    let found = dns
        .resolver()
        .resolve(&target("plain.example"))
        .await
        .expect("resolves");
    assert_eq!(
        found,
        [
            dest("127.0.0.40:5060", Transport::Udp),
            dest("[::1]:5060", Transport::Udp)
        ]
    );

    let sips = Target {
        secure: true,
        ..target("plain.example")
    };
    let found = dns.resolver().resolve(&sips).await.expect("resolves");
    assert_eq!(found[0], dest("127.0.0.40:5061", Transport::Tls));
}

#[tokio::test]
async fn explicit_port_skips_naptr_and_srv() {
    let dns = FakeDns::start(chain_zone()).await;
    let mut zone_host = target("sbc-a.chain.example");
    zone_host.port = Some(5099);
    zone_host.transport = Some(Transport::Tcp);
    let found = dns.resolver().resolve(&zone_host).await.expect("resolves");
    assert_eq!(found, [dest("127.0.0.10:5099", Transport::Tcp)]);
    assert!(
        dns.questions().iter().all(|(_, t)| *t == A || *t == AAAA),
        "{:?}",
        dns.questions()
    );
}

#[tokio::test]
async fn transport_without_port_asks_srv_for_that_transport_only() {
    let dns = FakeDns::start(chain_zone()).await;
    let tcp = Target {
        transport: Some(Transport::Tcp),
        ..target("chain.example")
    };
    let found = dns.resolver().resolve(&tcp).await.expect("resolves");
    assert_eq!(found, [dest("127.0.0.11:5071", Transport::Tcp)]);
    assert!(!dns.asked("chain.example", NAPTR));
    assert!(!dns.asked("_sip._udp.chain.example", SRV));
}

#[tokio::test]
async fn numeric_ip_never_queries_dns() {
    let dns = FakeDns::start(chain_zone()).await;
    let resolver = dns.resolver();
    let found = resolver
        .resolve(&target("192.0.2.7"))
        .await
        .expect("resolves");
    assert_eq!(found, [dest("192.0.2.7:5060", Transport::Udp)]);
    let found = resolver
        .resolve(&target("[2001:db8::7]"))
        .await
        .expect("resolves");
    assert_eq!(found, [dest("[2001:db8::7]:5060", Transport::Udp)]);
    assert_eq!(dns.questions(), []);
}

#[tokio::test]
async fn unknown_domain_is_nxdomain() {
    let dns = FakeDns::start(chain_zone()).await;
    let error = dns
        .resolver()
        .resolve(&target("gone.example"))
        .await
        .expect_err("no such domain");
    assert_eq!(error.metric_label(), "nxdomain");
    assert!(
        error
            .to_string()
            .starts_with("gone.example: domain does not exist"),
        "{error}"
    );
}

#[tokio::test]
async fn existing_name_without_sip_records_says_what_was_tried() {
    let dns = FakeDns::start(Zone {
        records: vec![naptr("mail.example", 10, 10, "u", "E2U+email", "")],
        glue: vec![],
    })
    .await;
    let error = dns
        .resolver()
        .resolve(&target("mail.example"))
        .await
        .expect_err("no SIP records");
    assert_eq!(error.metric_label(), "no_records");
    assert_eq!(
        error.to_string(),
        "mail.example: no NAPTR/SRV/A/AAAA records"
    );
}

#[tokio::test]
async fn srv_target_without_address_does_not_fall_back_to_the_domain() {
    let dns = FakeDns::start(Zone {
        records: vec![
            srv("_sip._udp.dead.example", 10, 0, 5060, "sbc.dead.example"),
            a("dead.example", [127, 0, 0, 50]),
        ],
        glue: vec![],
    })
    .await;
    let error = dns
        .resolver()
        .resolve(&target("dead.example"))
        .await
        .expect_err("SRV leads nowhere");
    assert_eq!(error.metric_label(), "no_records");
    assert_eq!(error.to_string(), "sbc.dead.example: no A/AAAA records");
}

#[tokio::test]
async fn silent_nameserver_times_out_within_the_budget() {
    let dns = FakeDns::silent().await;
    let budget = Duration::from_millis(300);
    let started = Instant::now();
    let error = dns
        .resolver()
        .with_timeout(budget)
        .resolve(&target("sbc1.carrier.example"))
        .await
        .expect_err("no answer");
    assert_eq!(error.metric_label(), "timeout");
    assert!(matches!(error, Error::Timeout { .. }));
    assert!(
        error
            .to_string()
            .starts_with("sbc1.carrier.example: no answer from DNS 127.0.0.1:"),
        "{error}"
    );
    // generous slack: this guards against waiting for hickory's own 5 s × 2 attempts
    assert!(
        started.elapsed() < budget + Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(dns.asked("sbc1.carrier.example", NAPTR));
}
