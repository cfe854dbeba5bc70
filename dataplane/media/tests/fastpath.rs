//! The kernel fast path on loopback: the same calls as the userspace relay's tests, with the
//! TC program attached to `lo`. Needs root (CAP_BPF, CAP_NET_ADMIN), as `make test` runs in CI;
//! elsewhere the tests say why they did not run.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trunkgate_media::fastpath::FastPath;
use trunkgate_media::{MediaConfig, MediaEngine, Sdp, SessionId, Side};

mod common;
use common::{CARRIER, PLATFORM, carrier_policy, from, ip, peer, platform_policy};

/// The fast path on `lo`, or None (with the reason printed) when this process may not load it.
fn fast_path() -> Option<Arc<FastPath>> {
    match FastPath::load(&["lo".to_string()], None) {
        Ok(f) => Some(Arc::new(f)),
        Err(e) if !is_root() => {
            eprintln!("SKIPPED: the kernel fast path needs root: {e}");
            None
        }
        Err(e) => panic!("the fast path must load as root: {e}"),
    }
}

/// Effective uid 0 (`/proc/self/status`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_string();
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

fn engine(ports: (u16, u16), fast: Option<Arc<FastPath>>) -> MediaEngine {
    let lo = ip("127.0.0.1");
    let mut m = MediaEngine::new(MediaConfig::new(lo, lo, ports)).expect("engine");
    if let Some(f) = fast {
        m.set_fast_path(f);
    }
    m
}

fn sdp_for(addr: SocketAddr) -> Sdp {
    let body = format!(
        "v=0\r\no=peer 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        ip = addr.ip(),
        port = addr.port()
    );
    Sdp::parse(body.as_bytes()).expect("test SDP parses")
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[seq as u8; 160]);
    p
}

struct Call {
    s: SessionId,
    carrier: UdpSocket,
    platform: UdpSocket,
    public: SocketAddr,
    internal: SocketAddr,
}

fn call(m: &mut MediaEngine, id: u64) -> Call {
    let carrier = peer(CARRIER);
    let platform = peer(PLATFORM);
    let s = m.open(id, 1).expect("open");
    let mut offer = sdp_for(carrier.local_addr().expect("addr"));
    m.relay_sdp(s, Side::Public, &mut offer, &carrier_policy(false))
        .expect("offer");
    let mut answer = sdp_for(platform.local_addr().expect("addr"));
    m.relay_sdp(s, Side::Internal, &mut answer, &platform_policy())
        .expect("answer");
    let c = Call {
        s,
        public: m.local(s, Side::Public, 0).expect("public"),
        internal: m.local(s, Side::Internal, 0).expect("internal"),
        carrier,
        platform,
    };
    latch(m, &c.platform, c.internal, &c.carrier);
    c
}

/// `from` sends one RTP packet (another SSRC than the tests' streams) to the relay at `to`,
/// which latches it; what reaches `other` is read away. The fast path takes a direction only
/// once both ends are latched.
fn latch(m: &mut MediaEngine, from: &UdpSocket, to: SocketAddr, other: &UdpSocket) {
    from.send_to(&rtp(0, 0xabcd), to).expect("send");
    let mut buf = [0u8; 2048];
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let _ = m.relay();
        if other.recv(&mut buf).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("the latching packet was not relayed");
}

/// Sends `seqs` from `from` to `to` 2 ms apart, running the relay, and returns what `at` got
/// (payload and source) within a bounded wait.
fn stream(
    m: &mut MediaEngine,
    from: &UdpSocket,
    to: SocketAddr,
    at: &UdpSocket,
    seqs: &[u16],
    ssrc: u32,
) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let mut drain = |m: &mut MediaEngine, got: &mut Vec<(Vec<u8>, SocketAddr)>| {
        let _ = m.relay();
        while let Ok((n, src)) = at.recv_from(&mut buf) {
            got.push((buf[..n].to_vec(), src));
        }
    };
    for &seq in seqs {
        from.send_to(&rtp(seq, ssrc), to).expect("send");
        let until = Instant::now() + Duration::from_millis(2);
        while Instant::now() < until {
            drain(m, &mut got);
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let until = Instant::now() + Duration::from_secs(2);
    while got.len() < seqs.len() && Instant::now() < until {
        drain(m, &mut got);
        std::thread::sleep(Duration::from_millis(1));
    }
    got
}

/// 1..=300 without 100..=104 (lost), with 200 and 201 swapped (reordered).
fn pattern() -> Vec<u16> {
    let mut seqs: Vec<u16> = (1..=300).filter(|s| !(100..=104).contains(s)).collect();
    let a = seqs.iter().position(|&s| s == 200).expect("200");
    seqs.swap(a, a + 1);
    seqs
}

#[test]
fn a_direction_waits_for_the_other_end_to_latch() {
    let Some(fast) = fast_path() else { return };
    let mut m = engine((31700, 31799), Some(fast));
    let carrier = peer(CARRIER);
    let platform = peer(PLATFORM);
    let s = m.open(5, 1).expect("open");
    let mut offer = sdp_for(carrier.local_addr().expect("addr"));
    m.relay_sdp(s, Side::Public, &mut offer, &carrier_policy(false))
        .expect("offer");
    let mut answer = sdp_for(platform.local_addr().expect("addr"));
    m.relay_sdp(s, Side::Internal, &mut answer, &platform_policy())
        .expect("answer");
    let public = m.local(s, Side::Public, 0).expect("public");
    let internal = m.local(s, Side::Internal, 0).expect("internal");
    let first: Vec<u16> = (1..=20).collect();
    assert_eq!(
        stream(&mut m, &carrier, public, &platform, &first, 3).len(),
        20
    );
    assert_eq!(
        m.counters().kernel_installs,
        0,
        "the platform has sent nothing yet"
    );
    latch(&mut m, &platform, internal, &carrier);
    let next: Vec<u16> = (21..=40).collect();
    assert_eq!(
        stream(&mut m, &carrier, public, &platform, &next, 3).len(),
        20
    );
    assert_eq!(m.counters().kernel_installs, 1, "both ends latched");
    let stats = m.close(s);
    assert_eq!(from(&stats, Side::Public).packets, 40);
}

#[test]
fn established_rtp_is_forwarded_by_the_kernel_with_the_same_figures_as_userspace() {
    let Some(fast) = fast_path() else { return };
    let seqs = pattern();
    let mut results = Vec::new();
    for (n, kernel) in [(0u16, false), (1, true)] {
        let mut m = engine(
            (31100 + n * 100, 31199 + n * 100),
            kernel.then(|| fast.clone()),
        );
        let c = call(&mut m, 1);
        let got = stream(&mut m, &c.carrier, c.public, &c.platform, &seqs, 0x1234);
        assert_eq!(
            got.len(),
            seqs.len(),
            "kernel={kernel}: every packet arrived"
        );
        for ((payload, src), &seq) in got.iter().zip(&seqs) {
            assert_eq!(
                *payload,
                rtp(seq, 0x1234),
                "kernel={kernel}: unchanged, in order"
            );
            assert_eq!(
                *src, c.internal,
                "kernel={kernel}: from the relay's platform-side port"
            );
        }
        let counters = m.counters();
        if kernel {
            assert_eq!(
                counters.kernel_installs, 1,
                "the direction went to the kernel"
            );
        }
        let stats = m.close(c.s);
        let carrier = from(&stats, Side::Public);
        if kernel {
            assert!(
                m.counters().kernel_forwarded > 250,
                "the kernel forwarded most of them: {:?}",
                m.counters()
            );
        }
        results.push(carrier);
    }
    let (user, kern) = (&results[0], &results[1]);
    eprintln!(
        "userspace: {} packets, {} lost, jitter {:.3} ms, MOS {:?}; kernel: {} packets, {} lost, jitter {:.3} ms, MOS {:?}",
        user.packets,
        user.lost,
        user.jitter_ms,
        user.mos,
        kern.packets,
        kern.lost,
        kern.jitter_ms,
        kern.mos
    );
    for s in [user, kern] {
        assert_eq!(
            (s.packets, s.forwarded),
            (seqs.len() as u64, seqs.len() as u64)
        );
        assert_eq!((s.expected, s.lost), (300, 5), "RFC 3550 loss: {s:?}");
        assert_eq!(s.bytes, 172 * seqs.len() as u64);
    }
    // Jitter from real arrival times: the two runs differ only by the machine's timing.
    assert!(
        (user.jitter_ms - kern.jitter_ms).abs() < 2.0,
        "jitter userspace {} ms, kernel {} ms",
        user.jitter_ms,
        kern.jitter_ms
    );
    assert!(kern.mos.is_some());
}

#[test]
fn a_new_sdp_takes_the_stream_back_and_nothing_reaches_the_old_address() {
    let Some(fast) = fast_path() else { return };
    let mut m = engine((31400, 31499), Some(fast));
    let c = call(&mut m, 2);
    let first: Vec<u16> = (1..=20).collect();
    assert_eq!(
        stream(&mut m, &c.carrier, c.public, &c.platform, &first, 7).len(),
        20
    );
    assert_eq!(m.counters().kernel_installs, 1);
    // The platform moves (a re-INVITE's answer names a new port).
    let moved = peer(PLATFORM);
    let mut answer = sdp_for(moved.local_addr().expect("addr"));
    m.relay_sdp(c.s, Side::Internal, &mut answer, &platform_policy())
        .expect("new answer");
    latch(&mut m, &moved, c.internal, &c.carrier);
    let next: Vec<u16> = (21..=60).collect();
    let got = stream(&mut m, &c.carrier, c.public, &moved, &next, 7);
    assert_eq!(got.len(), next.len(), "all at the new address");
    let mut buf = [0u8; 2048];
    assert!(
        c.platform.recv(&mut buf).is_err(),
        "nothing went to the old address after the new SDP"
    );
    let stats = m.close(c.s);
    let carrier = from(&stats, Side::Public);
    assert_eq!((carrier.packets, carrier.lost), (60, 0));
    assert_eq!(
        m.counters().kernel_installs,
        2,
        "handed back, then to the kernel again"
    );
}

#[test]
fn another_ssrc_goes_to_userspace_and_the_figures_still_add_up() {
    let Some(fast) = fast_path() else { return };
    let mut m = engine((31500, 31599), Some(fast));
    let c = call(&mut m, 3);
    let a: Vec<u16> = (1..=30).collect();
    assert_eq!(
        stream(&mut m, &c.carrier, c.public, &c.platform, &a, 1).len(),
        30
    );
    // Music on hold from another source: new SSRC, new numbering.
    let b: Vec<u16> = (5000..5030).collect();
    assert_eq!(
        stream(&mut m, &c.carrier, c.public, &c.platform, &b, 2).len(),
        30
    );
    let stats = m.close(c.s);
    let carrier = from(&stats, Side::Public);
    assert_eq!(
        (carrier.packets, carrier.expected, carrier.lost),
        (60, 60, 0)
    );
}

#[test]
fn rtp_the_kernel_forwards_keeps_the_call_from_the_media_timeout() {
    let Some(fast) = fast_path() else { return };
    let lo = ip("127.0.0.1");
    let mut cfg = MediaConfig::new(lo, lo, (31600, 31699));
    cfg.timeout = Duration::from_millis(400);
    let mut m = MediaEngine::new(cfg).expect("engine");
    m.set_fast_path(fast);
    let c = call(&mut m, 4);
    let mut events = Vec::new();
    let mut buf = [0u8; 2048];
    let talking_until = Instant::now() + Duration::from_millis(1500);
    let mut seq = 1u16;
    while Instant::now() < talking_until {
        c.carrier.send_to(&rtp(seq, 5), c.public).expect("send");
        seq += 1;
        events.extend(m.relay());
        while c.platform.recv(&mut buf).is_ok() {}
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        m.counters().kernel_installs,
        1,
        "the kernel carried the stream"
    );
    assert!(
        events.is_empty(),
        "no media timeout while the kernel forwards RTP: {events:?}"
    );
    // Silence: now the timeout fires.
    let until = Instant::now() + Duration::from_secs(2);
    while events.is_empty() && Instant::now() < until {
        events.extend(m.relay());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        matches!(
            events.first(),
            Some(trunkgate_media::MediaEvent::Timeout { call: 4, .. })
        ),
        "{events:?}"
    );
    let stats = m.close(c.s);
    assert_eq!(from(&stats, Side::Public).packets, u64::from(seq - 1));
}

#[test]
fn a_stranger_sending_to_a_port_the_kernel_forwards_gets_nothing_through() {
    let Some(fast) = fast_path() else { return };
    let mut m = engine((31800, 31899), Some(fast));
    let c = call(&mut m, 6);
    let first: Vec<u16> = (1..=20).collect();
    assert_eq!(
        stream(&mut m, &c.carrier, c.public, &c.platform, &first, 7).len(),
        20
    );
    assert_eq!(m.counters().kernel_installs, 1);
    // Same SSRC, next sequence number, from another address: the kernel's entry is for the
    // latched source only, and userspace drops it as foreign.
    let stranger = peer("127.0.0.66");
    let forged: Vec<u16> = (21..=25).collect();
    let got = stream(&mut m, &stranger, c.public, &c.platform, &forged, 7);
    assert!(
        got.is_empty(),
        "nothing from the stranger reached the platform: {got:?}"
    );
    assert_eq!(
        m.counters().foreign,
        5,
        "each counted as from an unexpected source"
    );
    assert_eq!(
        m.counters().kernel_installs,
        1,
        "the stranger did not make the relay take the stream back"
    );
    let stats = m.close(c.s);
    assert_eq!(from(&stats, Side::Public).packets, 20);
}

/// Behind NAT: while the kernel forwards the carrier's RTP, another source of the carrier's
/// cannot take over (the kernel's last-seen counts as the latched source speaking); once the
/// carrier went quiet for a second, a new source relatches, the kernel's entries (which name
/// the old source) go, and both directions are handed to the kernel again.
#[test]
fn a_relatch_takes_the_stream_back_from_the_kernel_and_hands_it_over_again() {
    let Some(fast) = fast_path() else { return };
    let mut m = engine((34000, 34099), Some(fast));
    let carrier = peer(CARRIER);
    let platform = peer(PLATFORM);
    let s = m.open(9, 1).expect("open");
    let mut offer = sdp_for(carrier.local_addr().expect("addr"));
    m.relay_sdp(s, Side::Public, &mut offer, &carrier_policy(true))
        .expect("offer");
    let mut answer = sdp_for(platform.local_addr().expect("addr"));
    m.relay_sdp(s, Side::Internal, &mut answer, &platform_policy())
        .expect("answer");
    let public = m.local(s, Side::Public, 0).expect("public");
    let internal = m.local(s, Side::Internal, 0).expect("internal");
    // Behind NAT the carrier is latched first (nothing goes to its SDP address before).
    latch(&mut m, &carrier, public, &platform);
    latch(&mut m, &platform, internal, &carrier);
    let up: Vec<u16> = (1..=600).collect();
    assert_eq!(
        stream(&mut m, &carrier, public, &platform, &up, 7).len(),
        600
    );
    let down: Vec<u16> = (1..=20).collect();
    assert_eq!(
        stream(&mut m, &platform, internal, &carrier, &down, 8).len(),
        20
    );
    assert_eq!(
        m.counters().kernel_installs,
        2,
        "both directions in the kernel"
    );

    // The kernel carried the carrier's last second: it is not quiet, the other port is refused.
    let rebound = peer(CARRIER);
    assert!(stream(&mut m, &rebound, public, &platform, &[1, 2, 3], 9).is_empty());
    assert_eq!(from(&m.stats(s), Side::Public).foreign, 3);

    // Quiet for a second: three packets in a row from the new port take the latch.
    std::thread::sleep(Duration::from_millis(1100));
    let got = stream(&mut m, &rebound, public, &platform, &[4, 5, 6], 9);
    assert_eq!(got.len(), 1, "the third packet relatches and is relayed");
    let down: Vec<u16> = (21..=60).collect();
    assert_eq!(
        stream(&mut m, &platform, internal, &rebound, &down, 8).len(),
        40,
        "the platform's RTP follows the new source"
    );
    let mut buf = [0u8; 2048];
    assert!(
        carrier.recv(&mut buf).is_err(),
        "nothing reaches the old source, not even from the kernel"
    );
    let up: Vec<u16> = (7..=40).collect();
    assert_eq!(
        stream(&mut m, &rebound, public, &platform, &up, 9).len(),
        34
    );
    assert_eq!(
        m.counters().kernel_installs,
        4,
        "both directions taken back and handed over again"
    );
    let stats = m.close(s);
    assert_eq!(
        from(&stats, Side::Public).latched,
        rebound.local_addr().ok()
    );
}

/// A pinned fast path outlives its process: the next run on the same folder loads against the
/// same map (what the last run installed is there to adopt), sweeps what nobody adopted, and
/// a clean exit with nothing left removes the pins.
#[test]
fn a_pinned_map_is_found_again_by_the_next_run_and_swept_of_what_it_does_not_adopt() {
    use trunkgate_media::fastpath::{Key, Value};
    use trunkgate_media::quality::Receiver;
    if !is_root() {
        eprintln!("SKIPPED: the kernel fast path needs root");
        return;
    }
    let dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/trunkgate-tests/media-pin-{}",
        std::process::id()
    ));
    let lo = |port: u16| SocketAddr::new(ip("127.0.0.1"), port);
    let mut rx = Receiver::new(8000);
    rx.on_packet(1, 160, 7, 0, Instant::now());
    let value = Value::new(lo(40002), lo(40003), &rx).expect("an entry");
    let kept = Key::new(lo(41000), lo(40000)).expect("key");
    let gone = Key::new(lo(41002), lo(40000)).expect("key");
    let first = FastPath::load(&["lo".to_string()], Some(&dir)).expect("loads as root");
    if first.pinned().is_none() {
        eprintln!("SKIPPED: no bpffs at /sys/fs/bpf");
        return;
    }
    assert!(first.install(kept, value) && first.install(gone, value));
    // Killed: nothing of it is dropped (its descriptors stay open in this test process, as
    // the pins do in bpffs).
    std::mem::forget(first);
    let second = FastPath::load(&["lo".to_string()], Some(&dir)).expect("loads again");
    assert_eq!(second.entries(), 2, "the last run's entries are there");
    assert!(second.adopt(kept).is_some());
    assert_eq!(second.sweep(), 1, "the entry nobody adopted is removed");
    assert_eq!(second.entries(), 1);
    assert!(second.take(&kept).is_some());
    drop(second);
    assert!(
        !dir.exists(),
        "a clean exit with no stream left removes its pins"
    );
}
