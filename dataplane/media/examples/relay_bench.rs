//! In-process load test of the relay on loopback.
//!
//! N calls are set up through one `MediaEngine` exactly as the B2BUA does it (offer and answer
//! SDP through `relay_sdp`). A sender thread paces 172-byte RTP packets (12-byte header + 160
//! bytes of G.711) on every stream in both directions, evenly spread in time; a receiver thread
//! reads them back. The relay runs on a thread of its own, on a current_thread tokio runtime
//! like an edge worker (`--mode tokio`), or blocking on its epoll (`--mode thread`);
//! `--mode direct` leaves the relay out (the harness's own ceiling and latency).
//! `--mode edge` sets the calls up through a running trunkgate-edge (SIP INVITE/200/ACK) and
//! `--mode rtpengine` through a running rtpengine's ng port (offer/answer), so one generator
//! measures both relays; their CPU is read from `/proc/PID/stat` (`--pid`).
//!
//! `--srtp SUITE` (AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32, AEAD_AES_128_GCM) makes
//! the carrier side of every call SDES-SRTP and the platform side plain RTP, so the relay
//! bridges SRTP <-> RTP: the carrier offers RTP/SAVP with an `a=crypto` of that suite
//! (in-process: the session's policy is `Required`; `--mode edge`: the edge's trunk must have
//! `media: {srtp: Required}`; `--mode rtpengine`: the ng offer asks for RTP/AVP towards the
//! platform and the answer for RTP/SAVP towards the carrier), and the relay's `a=crypto` is read
//! from the answer it gives the carrier. The generator seals what each carrier socket sends and
//! opens what it receives with `trunkgate_media::srtp::LegSrtp`; a packet that does not open
//! (or reaches the platform still encrypted) is counted as `srtp_failed` and as lost. That
//! crypto runs in the generator's own sender and receiver threads: the relay's CPU is its own
//! process's (or thread's) and does not include it.
//!
//! Reported: packets/s forwarded and loss, the relay thread's CPU (getrusage RUSAGE_THREAD,
//! user + system) per forwarded packet, added latency p50/p99 (from the moment just before
//! `send()`, after any sealing, kept per stream and sequence number, to the moment `recv()`
//! returns, before any opening), and memory per call (user-space RSS and kernel slab growth
//! while the calls are opened).
//!
//! ```sh
//! cargo run --release -p trunkgate-media --example relay_bench -- --calls 1000 --pps 100000 --seconds 10
//! cargo run --release -p trunkgate-media --example relay_bench -- --calls 50 --pps 5000 --seconds 3 --srtp AES_CM_128_HMAC_SHA1_80
//! ```
//!
//! Loopback only; every loop is bounded by `--seconds` (and `--settle yes`, edge mode: twice
//! 34 s, for the edge's memory per call once the calls' transactions have ended).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::time::TimeValLike;
use trunkgate_media::srtp::{Crypto, Key, LegSrtp, SUITES, Suite};
use trunkgate_media::{Exchange, MediaConfig, MediaEngine, PeerPolicy, Sdp, Side, SrtpPolicy};

const PACKET: usize = 172;
/// Every payload byte (G.711 µ-law silence): what the receiver checks a packet still carries.
const PAYLOAD: u8 = 0xd5;
/// Send times kept per stream: the last RING sequence numbers (5 s at 50 pps).
const RING: usize = 256;
/// Latency histogram: 1 µs buckets up to 20 ms.
const BUCKETS: usize = 20_000;

/// Run phases shared by the threads.
const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const DRAIN: u8 = 2;
const STOP: u8 = 3;

#[derive(Clone)]
struct Args {
    calls: usize,
    pps: f64,
    seconds: f64,
    warmup: f64,
    /// `--mode edge`: also measure the edge's memory per call once the calls' transactions
    /// are gone (RFC 6026 keeps an answered INVITE's transactions 32 s).
    settle: bool,
    mode: String,
    ports: (u16, u16),
    /// Pin the relay to CPU 1 and the sender and receiver to CPU 0.
    pin: bool,
    /// `--mode edge`: the running edge's carrier-side SIP address, its PID (for its CPU time),
    /// the platform address its trunk delivers to, and the first called number.
    edge_sip: Option<SocketAddr>,
    relay_pid: u32,
    platform_sip: SocketAddr,
    /// `--mode rtpengine`: its ng control address (bencode over UDP).
    ng: SocketAddr,
    number: u64,
    /// `--srtp SUITE`: the carrier side of every call speaks SRTP with this suite.
    srtp: Option<Suite>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        calls: 1000,
        pps: 100_000.0,
        seconds: 10.0,
        warmup: 1.0,
        settle: false,
        mode: "tokio".into(),
        // Below the kernel's ephemeral range (32768+), where the peers' sockets land.
        ports: (10000, 31999),
        pin: false,
        edge_sip: None,
        relay_pid: 0,
        platform_sip: SocketAddr::from(([127, 0, 0, 20], 5090)),
        ng: SocketAddr::from(([127, 0, 0, 1], 2223)),
        number: 6_499_990_000,
        srtp: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let num = |v: &str| {
            v.parse::<f64>()
                .map_err(|_| format!("{k}: not a number: {v}"))
        };
        match k.as_str() {
            "--calls" => a.calls = num(&v)? as usize,
            "--pps" => a.pps = num(&v)?,
            "--seconds" => a.seconds = num(&v)?.clamp(1.0, 120.0),
            "--warmup" => a.warmup = num(&v)?.clamp(0.0, 10.0),
            "--mode" => a.mode = v,
            "--settle" => a.settle = v == "yes" || v == "true" || v == "1",
            "--pin" => a.pin = v == "yes" || v == "true" || v == "1",
            "--edge-sip" => a.edge_sip = Some(v.parse().map_err(|_| "--edge-sip IP:PORT")?),
            "--edge-pid" | "--pid" => a.relay_pid = v.parse().map_err(|_| "--pid PID")?,
            "--ng" => a.ng = v.parse().map_err(|_| "--ng IP:PORT")?,
            "--platform-sip" => a.platform_sip = v.parse().map_err(|_| "--platform-sip IP:PORT")?,
            "--srtp" => {
                a.srtp = match v.as_str() {
                    "" | "none" | "off" => None,
                    name => Some(Suite::from_name(name).ok_or_else(|| {
                        let names: Vec<&str> = SUITES.iter().map(|s| s.name()).collect();
                        format!("--srtp {name}: not one of {}", names.join(", "))
                    })?),
                }
            }
            "--ports" => {
                let (lo, hi) = v.split_once('-').ok_or("--ports LO-HI")?;
                a.ports = (
                    lo.parse().map_err(|_| "--ports LO-HI")?,
                    hi.parse().map_err(|_| "--ports LO-HI")?,
                );
            }
            _ => return Err(format!("unknown flag {k}")),
        }
    }
    if !["tokio", "thread", "direct", "edge", "rtpengine"].contains(&a.mode.as_str()) {
        return Err("--mode tokio|thread|direct|edge|rtpengine".into());
    }
    if a.mode == "edge" && (a.edge_sip.is_none() || a.relay_pid == 0) {
        return Err("--mode edge needs --edge-sip IP:PORT and --pid PID (the edge's)".into());
    }
    if a.mode == "rtpengine" && a.relay_pid == 0 {
        return Err("--mode rtpengine needs --pid PID (rtpengine's, for its CPU time)".into());
    }
    if a.srtp.is_some() && a.mode == "direct" {
        return Err("--srtp needs a relay to bridge SRTP to RTP (not --mode direct)".into());
    }
    if !a.ng.ip().is_loopback() {
        return Err("--ng must be a loopback address".into());
    }
    if a.calls == 0 || a.pps <= 0.0 {
        return Err("--calls and --pps must be positive".into());
    }
    Ok(a)
}

/// CPU time of a fixed piece of work, to see how fast the (shared, drifting) machine is now.
fn cpu_ref() -> Duration {
    let c0 = thread_cpu();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..30_000_000u64 {
        x = (x ^ i).rotate_left(13).wrapping_mul(0xff51_afd7_ed55_8ccd);
    }
    std::hint::black_box(x);
    thread_cpu() - c0
}

fn pin(on: bool, cpu: usize) {
    if !on {
        return;
    }
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_err()
        || nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_err()
    {
        eprintln!("relay_bench: could not pin a thread to CPU {cpu}");
    }
}

fn thread_cpu() -> Duration {
    getrusage(UsageWho::RUSAGE_THREAD).map_or(Duration::ZERO, |u| {
        let us = u.user_time().num_microseconds() + u.system_time().num_microseconds();
        Duration::from_micros(us.max(0) as u64)
    })
}

fn process_cpu() -> Duration {
    getrusage(UsageWho::RUSAGE_SELF).map_or(Duration::ZERO, |u| {
        let us = u.user_time().num_microseconds() + u.system_time().num_microseconds();
        Duration::from_micros(us.max(0) as u64)
    })
}

/// Seconds all CPUs spent (busy, of which in softirq) since boot, from /proc/stat.
fn machine_busy() -> (f64, f64) {
    let Ok(s) = std::fs::read_to_string("/proc/stat") else {
        return (0.0, 0.0);
    };
    // cpu  user nice system idle iowait irq softirq steal …
    let f: Vec<u64> = s
        .lines()
        .next()
        .map(|l| {
            l.split_ascii_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let at = |i: usize| f.get(i).copied().unwrap_or(0) as f64 / 100.0; // USER_HZ = 100
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    (busy, at(6))
}

/// VmRSS of a process (`"self"` or a PID).
fn rss_kib(process: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) of a process so far, in clock ticks (1/100 s).
fn ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // After "pid (comm) ", utime and stime are fields 12 and 13 (state is not numeric).
    f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0)
}

/// A relay process's CPU time (user + system) over the measured window, and the window.
fn cpu_during_measure(pid: u32, phase: &AtomicU8) -> (Duration, Duration) {
    let hz = 100.0; // CLK_TCK on Linux
    while phase.load(Ordering::Relaxed) < MEASURE {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (t0, c0) = (Instant::now(), ticks(pid));
    while phase.load(Ordering::Relaxed) < DRAIN {
        std::thread::sleep(Duration::from_millis(5));
    }
    let cpu = (ticks(pid).saturating_sub(c0)) as f64 / hz;
    (Duration::from_secs_f64(cpu), t0.elapsed())
}

/// Bytes in the slab caches a UDP socket lives in (readable as root; 0 otherwise).
fn socket_slab_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/slabinfo") else {
        return 0;
    };
    s.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_ascii_whitespace().collect();
            let name = *f.first()?;
            let wanted = [
                "UDP",
                "UDPv6",
                "sock_inode_cache",
                "filp",
                "dentry",
                "eventpoll_epi",
            ];
            if !wanted.contains(&name) {
                return None;
            }
            let active: u64 = f.get(1)?.parse().ok()?;
            let size: u64 = f.get(3)?.parse().ok()?;
            Some(active * size)
        })
        .sum()
}

fn peer() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind a peer socket on loopback");
    s.set_nonblocking(true).expect("nonblocking");
    s
}

/// The SDP every bench peer offers or answers: G.711 and telephone-events at `addr`; with
/// `crypto`, as SDES-SRTP (RTP/SAVP and that `a=crypto`).
fn sdp_text(addr: SocketAddr, crypto: Option<&Crypto>) -> String {
    let mut body = format!(
        "v=0\r\no=bench 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} {proto} 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n",
        ip = addr.ip(),
        port = addr.port(),
        proto = if crypto.is_some() {
            "RTP/SAVP"
        } else {
            "RTP/AVP"
        }
    );
    if let Some(c) = crypto {
        body.push_str(&format!("a=crypto:{}\r\n", c.to_value()));
    }
    body
}

fn sdp(addr: SocketAddr, crypto: Option<&Crypto>) -> Sdp {
    Sdp::parse(sdp_text(addr, crypto).as_bytes()).expect("bench SDP")
}

/// The SRTP keys of one call's carrier leg: the carrier's own (in its offer) and the relay's
/// (in the answer the relay gave the carrier).
#[derive(Clone)]
struct CarrierKeys {
    carrier: Key,
    relay: Key,
}

impl CarrierKeys {
    /// The carrier's end of the leg: seals with its key, opens with the relay's.
    fn leg(&self) -> LegSrtp {
        LegSrtp::new(self.relay.clone(), self.carrier.clone()).expect("SRTP context")
    }
}

/// One call as the generator sees it: where its carrier socket sends, where its platform
/// socket sends, and the carrier leg's keys when it is SRTP.
type Target = (SocketAddr, SocketAddr, Option<CarrierKeys>);

/// A carrier's offered crypto: tag 1, a fresh key of `suite`.
fn carrier_crypto(suite: Suite) -> Crypto {
    Crypto {
        tag: 1,
        key: Key::random(suite),
    }
}

/// The relay's key in the answer it sent the carrier (its first `a=crypto`), which must be of
/// the suite the carrier offered.
fn answered_key(body: &str, suite: Suite) -> Result<Key, String> {
    let value = body
        .lines()
        .find_map(|l| l.trim().strip_prefix("a=crypto:"))
        .ok_or_else(|| format!("the answer to the carrier has no a=crypto:\n{body}"))?;
    // rtpengine writes the 28-byte AEAD_AES_128_GCM key and salt as base64 without its `=`
    // padding, which Crypto::parse refuses: the generator pads it (the relay's parsing of the
    // carrier's offer is not what is measured here).
    let c = Crypto::parse(value)
        .or_else(|e| Crypto::parse(&pad_inline_key(value)).map_err(|_| e))
        .map_err(|e| format!("the answer's a=crypto:{value}: {e}"))?;
    if c.key.suite() != suite {
        return Err(format!(
            "the answer's a=crypto is {}, the carrier offered {suite}",
            c.key.suite()
        ));
    }
    Ok(c.key)
}

/// An `a=crypto` value with its inline key's base64 padded to a multiple of 4 characters.
fn pad_inline_key(value: &str) -> String {
    let Some((head, rest)) = value.split_once("inline:") else {
        return value.to_string();
    };
    let end = rest.find(['|', ' ']).unwrap_or(rest.len());
    let (b64, tail) = rest.split_at(end);
    let pad = "=".repeat((4 - b64.len() % 4) % 4);
    format!("{head}inline:{b64}{pad}{tail}")
}

/// An SDP body sent to the platform must be plain RTP when the carrier leg is SRTP.
fn check_plain(body: &str, what: &str) -> Result<(), String> {
    if body.contains("RTP/SAVP") || body.contains("a=crypto") {
        return Err(format!("{what} is not plain RTP:\n{body}"));
    }
    Ok(())
}

/// Where an SDP body wants RTP: `c=` address and first `m=` port.
fn sdp_rtp_addr(body: &str) -> Option<SocketAddr> {
    let ip = body
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))?
        .trim();
    let port = body
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))?
        .split_whitespace()
        .next()?;
    format!("{ip}:{port}").parse().ok()
}

struct RelayReport {
    forwarded: u64,
    totals: trunkgate_media::Counters,
    cpu: Duration,
    wall: Duration,
    rss_per_call_kib: f64,
    slab_per_call_bytes: f64,
}

/// The relay thread: sets the calls up, then relays until STOP.
fn relay_thread(
    a: &Args,
    peers: Vec<(SocketAddr, SocketAddr)>,
    phase: Arc<AtomicU8>,
    ready: mpsc::Sender<Vec<Target>>,
) -> RelayReport {
    pin(a.pin, 1);
    let tokio_mode = a.mode == "tokio";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = tokio_mode.then(|| rt.enter());
    let lo: IpAddr = "127.0.0.1".parse().expect("ip");
    let mut cfg = MediaConfig::new(lo, lo, a.ports);
    cfg.timeout = Duration::from_secs(3600);
    let mut m = MediaEngine::new(cfg).expect("engine");
    // Both ends are the generator's own loopback sockets: every SDP address may be sent to.
    let loopback = PeerPolicy {
        networks: vec!["127.0.0.0/8".parse().expect("cidr")].into(),
        ..PeerPolicy::default()
    };
    let (rss0, slab0) = (rss_kib("self"), socket_slab_bytes());
    let mut locals = Vec::with_capacity(peers.len());
    for (i, (carrier, platform)) in peers.iter().enumerate() {
        let s = m.open(i as u64, 1).expect("open (raise --ports range?)");
        let offered = a.srtp.map(carrier_crypto);
        if offered.is_some() {
            m.set_srtp(s, SrtpPolicy::Required).expect("SRTP policy");
        }
        let mut offer = sdp(*carrier, offered.as_ref());
        m.relay_sdp_as(s, Side::Public, &mut offer, &loopback, Exchange::Offer)
            .expect("offer");
        let mut answer = sdp(*platform, None);
        m.relay_sdp_as(
            s,
            Side::Internal,
            &mut answer,
            &loopback,
            Exchange::Response,
        )
        .expect("answer");
        let keys = offered.map(|c| {
            check_plain(&offer.to_string(), "the offer to the platform").expect("plain offer");
            CarrierKeys {
                relay: answered_key(&answer.to_string(), c.key.suite()).expect("relay's key"),
                carrier: c.key,
            }
        });
        // What each peer now sends to: the relay address in the SDP it was given.
        locals.push((
            answer.remote(0).expect("answer").rtp,
            offer.remote(0).expect("offer").rtp,
            keys,
        ));
    }
    let calls = peers.len().max(1) as f64;
    let rss_per_call_kib = rss_kib("self").saturating_sub(rss0) as f64 / calls;
    let slab_per_call_bytes = socket_slab_bytes().saturating_sub(slab0) as f64 / calls;
    let _ = ready.send(locals);

    let mut snap: Option<(Instant, Duration, u64)> = None;
    let mut report = None;
    let mut on_turn = |m: &MediaEngine| {
        let p = phase.load(Ordering::Relaxed);
        if p >= MEASURE && snap.is_none() {
            snap = Some((Instant::now(), thread_cpu(), m.counters().forwarded));
        }
        if p >= DRAIN
            && report.is_none()
            && let Some((t0, c0, f0)) = snap
        {
            report = Some((t0.elapsed(), thread_cpu() - c0, m.counters().forwarded - f0));
        }
        p == STOP
    };
    if tokio_mode {
        rt.block_on(async {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tokio::select! {
                    _ = m.wait() => { let _ = m.relay(); }
                    _ = tick.tick() => if on_turn(&m) { break },
                }
            }
        });
    } else {
        loop {
            let _ = m.relay_blocking(Duration::from_millis(20));
            if on_turn(&m) {
                break;
            }
        }
    }
    let (wall, cpu, forwarded) = report.unwrap_or_default();
    RelayReport {
        forwarded,
        totals: m.counters(),
        cpu,
        wall,
        rss_per_call_kib,
        slab_per_call_bytes,
    }
}

fn now_ns(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

struct SendReport {
    sent: u64,
    cpu: Duration,
    send_errors: u64,
}

/// Paces `pps` packets/s round robin over the streams: each stream sends every
/// `streams / pps` seconds, the streams evenly staggered, as independent calls would be.
#[allow(clippy::too_many_arguments)]
fn sender(
    socks: Arc<Vec<UdpSocket>>,
    mut sealers: Vec<Option<LegSrtp>>,
    stamps: Arc<Vec<AtomicU64>>,
    pps: f64,
    warmup: f64,
    seconds: f64,
    epoch: Instant,
    phase: Arc<AtomicU8>,
    start_ns: Arc<AtomicU64>,
) -> SendReport {
    let n = socks.len();
    let mut seq = vec![0u16; n];
    let mut pkt = [PAYLOAD; PACKET];
    pkt[0] = 0x80; // V=2
    pkt[1] = 0; // PT 0, PCMU
    let total_s = warmup + seconds;
    let t0 = Instant::now();
    let (mut k, mut sent, mut errors) = (0u64, 0u64, 0u64);
    let mut cpu0 = Duration::ZERO;
    loop {
        let t = t0.elapsed().as_secs_f64();
        if t >= total_s {
            break;
        }
        if t >= warmup && phase.load(Ordering::Relaxed) == WARMUP {
            start_ns.store(now_ns(epoch), Ordering::Release);
            phase.store(MEASURE, Ordering::Release);
            cpu0 = thread_cpu();
            sent = 0;
            errors = 0;
        }
        let due = (t * pps) as u64;
        if k >= due {
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        while k < due {
            let i = (k % n as u64) as usize;
            let s = seq[i];
            seq[i] = s.wrapping_add(1);
            pkt[2..4].copy_from_slice(&s.to_be_bytes());
            pkt[4..8].copy_from_slice(&(u32::from(s) * 160).to_be_bytes());
            pkt[8..12].copy_from_slice(&(i as u32).to_be_bytes());
            k += 1;
            // The carrier side seals (its CPU is the generator's, not the relay's).
            let sealed;
            let out: &[u8] = match sealers[i].as_mut().map(|leg| leg.protect(&pkt, false)) {
                None => &pkt,
                Some(Ok(p)) => {
                    sealed = p;
                    &sealed
                }
                Some(Err(_)) => {
                    errors += 1;
                    continue;
                }
            };
            stamps[i * RING + usize::from(s) % RING].store(now_ns(epoch), Ordering::Release);
            match socks[i].send(out) {
                Ok(_) => sent += 1,
                Err(_) => errors += 1,
            }
        }
    }
    phase.store(DRAIN, Ordering::Relaxed);
    SendReport {
        sent: sent + errors,
        cpu: thread_cpu() - cpu0,
        send_errors: errors,
    }
}

struct RecvReport {
    received: u64,
    hist: Vec<u32>,
    over: u64,
    cpu: Duration,
    reordered: u64,
    /// `--srtp`: packets that did not open at the carrier, or reached the platform encrypted.
    srtp_failed: u64,
}

/// Reads every stream back. Stream `i` receives what stream `i ^ 1` (the other side of its
/// call) sent; its send time is looked up by that stream and the sequence number. With
/// `--srtp`, the carrier side (`openers[i]`) opens each packet, and the platform side must get
/// it plain.
fn receiver(
    socks: Arc<Vec<UdpSocket>>,
    mut openers: Vec<Option<LegSrtp>>,
    srtp: bool,
    stamps: Arc<Vec<AtomicU64>>,
    epoch: Instant,
    phase: Arc<AtomicU8>,
    start_ns: Arc<AtomicU64>,
) -> RecvReport {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).expect("epoll");
    for (i, s) in socks.iter().enumerate() {
        epoll
            .add(s, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
            .expect("epoll add");
    }
    let mut events = vec![EpollEvent::empty(); 256];
    let mut buf = [0u8; 2048];
    let mut last = vec![None::<u16>; socks.len()];
    let mut r = RecvReport {
        received: 0,
        hist: vec![0; BUCKETS],
        over: 0,
        cpu: Duration::ZERO,
        reordered: 0,
        srtp_failed: 0,
    };
    let mut measuring_since: Option<(u64, Duration)> = None;
    let mut drain_until: Option<Instant> = None;
    loop {
        let n = epoll.wait(&mut events, 10u16).unwrap_or(0);
        // After the wait: a packet sent after the phase changed is seen with the new phase.
        let p = phase.load(Ordering::Acquire);
        if p >= MEASURE && measuring_since.is_none() {
            measuring_since = Some((start_ns.load(Ordering::Acquire), thread_cpu()));
        }
        if p >= DRAIN && drain_until.is_none() {
            drain_until = Some(Instant::now() + Duration::from_millis(500));
        }
        if drain_until.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        for ev in &events[..n] {
            let i = ev.data() as usize;
            let Ok(len) = socks[i].recv(&mut buf) else {
                continue;
            };
            let at = now_ns(epoch);
            let (Some((start, _)), true) = (measuring_since, len >= 12) else {
                continue;
            };
            let seq = u16::from_be_bytes([buf[2], buf[3]]);
            let sent_at = stamps
                .get((i ^ 1) * RING + usize::from(seq) % RING)
                .map_or(0, |t| t.load(Ordering::Acquire));
            if sent_at < start {
                continue; // sent during warm-up
            }
            if srtp {
                let intact =
                    |p: &[u8]| p.len() == PACKET && p[12] == PAYLOAD && p[PACKET - 1] == PAYLOAD;
                let ok = match openers[i].as_mut() {
                    Some(leg) => leg.unprotect(&buf[..len], false).is_ok_and(|p| intact(&p)),
                    None => intact(&buf[..len]),
                };
                if !ok {
                    r.srtp_failed += 1;
                    continue;
                }
            }
            r.received += 1;
            if last[i].is_some_and(|l| seq.wrapping_sub(l) != 1) {
                r.reordered += 1;
            }
            last[i] = Some(seq);
            let us = at.saturating_sub(sent_at) / 1000;
            match r.hist.get_mut(us as usize) {
                Some(b) => *b += 1,
                None => r.over += 1,
            }
        }
    }
    if let Some((_, c0)) = measuring_since {
        r.cpu = thread_cpu() - c0;
    }
    r
}

fn percentile(hist: &[u32], over: u64, q: f64) -> String {
    let total: u64 = hist.iter().map(|&c| u64::from(c)).sum::<u64>() + over;
    if total == 0 {
        return "-".into();
    }
    let want = (q * total as f64).ceil() as u64;
    let mut acc = 0u64;
    for (us, &c) in hist.iter().enumerate() {
        acc += u64::from(c);
        if acc >= want {
            return format!("{us} µs");
        }
    }
    format!(">{} µs", hist.len())
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("relay_bench: {e}");
            std::process::exit(2);
        }
    };
    let fd_limit = trunkgate_media::raise_fd_limit().unwrap_or(0);
    if (a.calls as u64) * 6 + 64 > fd_limit {
        eprintln!(
            "relay_bench: {} calls need ~{} descriptors, limit {fd_limit}",
            a.calls,
            a.calls * 6
        );
        std::process::exit(2);
    }
    let streams = a.calls * 2;
    let reference = cpu_ref();
    println!(
        "relay_bench: mode={}{}{} calls={} streams={} offered={} pps ({:.1} pps per stream) for {} s after {} s warm-up",
        a.mode,
        if a.pin { " pinned" } else { "" },
        a.srtp
            .map(|s| format!(" srtp={s} (carrier side SRTP, platform side RTP)"))
            .unwrap_or_default(),
        a.calls,
        streams,
        a.pps,
        a.pps / streams as f64,
        a.seconds,
        a.warmup
    );

    // One socket per call side: it sends to the relay and receives what the relay sends back.
    let carriers: Vec<UdpSocket> = (0..a.calls).map(|_| peer()).collect();
    let platforms: Vec<UdpSocket> = (0..a.calls).map(|_| peer()).collect();
    let addr = |s: &UdpSocket| s.local_addr().expect("local addr");
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let epoch = Instant::now();

    let mut relay_process_cpu = None;
    let mut settled = None;
    let (relay, targets) = if a.mode == "edge" || a.mode == "rtpengine" {
        let (rss0, slab0) = (rss_kib(&a.relay_pid.to_string()), socket_slab_bytes());
        let setup = |first: usize, last: usize| {
            let (c, p) = (&carriers[first..last], &platforms[first..last]);
            let set_up = if a.mode == "edge" {
                edge::setup_calls(&a, first, c, p)
            } else {
                rtpengine::setup_calls(a.ng, a.srtp, first, c, p)
            };
            set_up.unwrap_or_else(|e| {
                eprintln!("relay_bench: call setup through {} failed: {e}", a.mode);
                std::process::exit(1);
            })
        };
        // With --settle, half the calls first, measured once their transactions are gone, so
        // the second half shows what one more call costs beyond the allocator's first growth.
        let half = if a.settle && a.mode == "edge" {
            a.calls / 2
        } else {
            0
        };
        let mut t = Vec::with_capacity(a.calls);
        let mut half_settled = None;
        if half > 0 {
            t.extend(setup(0, half));
            std::thread::sleep(edge::LINGER);
            half_settled = Some(rss_kib(&a.relay_pid.to_string()));
        }
        t.extend(setup(half, a.calls));
        let rss = rss_kib(&a.relay_pid.to_string());
        settled = half_settled.map(|h| (rss0, h, Instant::now()));
        let calls = a.calls.max(1) as f64;
        println!(
            "  {} memory per active call: {:.2} KiB user space (its RSS), {:.2} KiB kernel slab (its relay sockets)",
            a.mode,
            rss.saturating_sub(rss0) as f64 / calls,
            socket_slab_bytes().saturating_sub(slab0) as f64 / calls / 1024.0
        );
        if let Some(h) = half_settled {
            println!(
                "  edge memory per added call ({} more on top of {half}, their transactions still up): {:.2} KiB user space",
                a.calls - half,
                rss.saturating_sub(h) as f64 / (a.calls - half).max(1) as f64
            );
        }
        let (ph, pid) = (phase.clone(), a.relay_pid);
        relay_process_cpu = Some(std::thread::spawn(move || cpu_during_measure(pid, &ph)));
        (None, t)
    } else if a.mode == "direct" {
        let t: Vec<Target> = carriers
            .iter()
            .zip(&platforms)
            .map(|(c, p)| (addr(p), addr(c), None))
            .collect();
        (None, t)
    } else {
        let peers: Vec<(SocketAddr, SocketAddr)> = carriers
            .iter()
            .zip(&platforms)
            .map(|(c, p)| (addr(c), addr(p)))
            .collect();
        let (tx, rx) = mpsc::channel();
        let (ph, args) = (phase.clone(), a.clone());
        let h = std::thread::Builder::new()
            .name("relay".into())
            .spawn(move || relay_thread(&args, peers, ph, tx))
            .expect("relay thread");
        let t = rx.recv().expect("relay set up");
        (Some(h), t)
    };
    // Stream 2i is call i's carrier side, 2i+1 its platform side; the sender and the receiver
    // share the sockets (no duplicated descriptors). With --srtp, the carrier side's sealing
    // context goes to the sender and its opening one to the receiver.
    let mut socks = Vec::with_capacity(streams);
    let (mut sealers, mut openers) = (Vec::with_capacity(streams), Vec::with_capacity(streams));
    for ((c, p), (to_from_c, to_from_p, keys)) in carriers.into_iter().zip(platforms).zip(&targets)
    {
        for (s, to) in [(c, to_from_c), (p, to_from_p)] {
            s.connect(to).expect("connect");
            socks.push(s);
        }
        sealers.extend([keys.as_ref().map(CarrierKeys::leg), None]);
        openers.extend([keys.as_ref().map(CarrierKeys::leg), None]);
    }
    let socks = Arc::new(socks);
    let stamps: Arc<Vec<AtomicU64>> =
        Arc::new((0..streams * RING).map(|_| AtomicU64::new(0)).collect());
    let (send_socks, recv_socks) = (socks.clone(), socks);
    let (send_stamps, recv_stamps) = (stamps.clone(), stamps);
    let start_ns = Arc::new(AtomicU64::new(0));
    let (rx_phase, rx_start) = (phase.clone(), start_ns.clone());
    let pinned = a.pin;
    let srtp = a.srtp.is_some();
    let rx = std::thread::spawn(move || {
        pin(pinned, 0);
        receiver(
            recv_socks,
            openers,
            srtp,
            recv_stamps,
            epoch,
            rx_phase,
            rx_start,
        )
    });
    let tx_phase = phase.clone();
    let (pps, warmup, seconds) = (a.pps, a.warmup, a.seconds);
    // The relay under test, when it is another process, is not "other tenants".
    let relay_cpu = || match a.relay_pid {
        0 => 0.0,
        pid => ticks(pid) as f64 / 100.0,
    };
    let (machine0, process0, relay0) = (machine_busy(), process_cpu(), relay_cpu());
    let tx = std::thread::spawn(move || {
        pin(pinned, 0);
        sender(
            send_socks,
            sealers,
            send_stamps,
            pps,
            warmup,
            seconds,
            epoch,
            tx_phase,
            start_ns,
        )
    });
    let s = tx.join().expect("sender");
    let (machine1, process1, relay1) = (machine_busy(), process_cpu(), relay_cpu());
    let r = rx.join().expect("receiver");
    phase.store(STOP, Ordering::Relaxed);
    let relay = relay.map(|h| h.join().expect("relay"));

    println!(
        "  cpu_ref: {:.0} ms (the same fixed work every run: higher = slower machine now)",
        reference.as_secs_f64() * 1e3
    );
    let loss = 100.0 * s.sent.saturating_sub(r.received) as f64 / s.sent.max(1) as f64;
    println!(
        "  sent={} received={} loss={loss:.4}% send_errors={} out_of_order={} tx={:.0} pps rx={:.0} pps srtp_failed={}",
        s.sent,
        r.received,
        s.send_errors,
        r.reordered,
        s.sent as f64 / a.seconds,
        r.received as f64 / a.seconds,
        r.srtp_failed
    );
    println!(
        "  latency send→receive: p50={} p99={} p99.9={} (over 20 ms: {})",
        percentile(&r.hist, r.over, 0.50),
        percentile(&r.hist, r.over, 0.99),
        percentile(&r.hist, r.over, 0.999),
        r.over
    );
    println!(
        "  harness CPU: sender {:.1}% receiver {:.1}% of a core",
        100.0 * s.cpu.as_secs_f64() / a.seconds,
        100.0 * r.cpu.as_secs_f64() / a.seconds
    );
    // Loopback delivery runs in softirq, charged to whichever thread it interrupts (this
    // kernel has no IRQ time accounting): mostly ours. Busy time beyond this process is other
    // tenants of the machine.
    let run = a.warmup + a.seconds;
    let busy = machine1.0 - machine0.0;
    let softirq = machine1.1 - machine0.1;
    let own = (process1 - process0).as_secs_f64();
    let relay_process = relay1 - relay0;
    println!(
        "  machine over the run: this process {:.1}% (softirq anywhere {:.1}%), the relay process {:.1}%, other tenants {:.1}% of a core (noisy if > 10)",
        100.0 * own / run,
        100.0 * softirq / run,
        100.0 * relay_process / run,
        100.0 * (busy - own - relay_process).max(0.0) / run
    );
    // Whole-machine CPU per packet: what every row can be compared on, the kernel fast path
    // included (its work runs in softirq, charged to whichever thread it interrupts). The
    // no-relay row gives the generator's own share.
    println!(
        "  machine: {:.2} µs per packet (all CPUs busy over the run / packets offered)",
        busy * 1e6 / (a.pps * run).max(1.0)
    );
    if let Some((cpu, wall)) = relay_process_cpu.and_then(|h| h.join().ok()) {
        // Packets the receiver counted in the measured window went through the edge once each.
        let per = cpu.as_secs_f64() * 1e6 / r.received.max(1) as f64;
        println!(
            "  {} (pid {}): CPU={:.3} s over {:.1} s = {:.1}% of a core → {per:.2} µs per forwarded packet",
            a.mode,
            a.relay_pid,
            cpu.as_secs_f64(),
            wall.as_secs_f64(),
            100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9)
        );
    }
    if let Some((rss0, half_settled, set_up)) = settled {
        // The calls are still up (the bench never hangs up); their setup transactions end
        // 32 s after the setup (timers L/M, RFC 6026), a little after that here.
        std::thread::sleep((set_up + edge::LINGER).saturating_duration_since(Instant::now()));
        let rss = rss_kib(&a.relay_pid.to_string());
        let added = (a.calls - a.calls / 2).max(1) as f64;
        println!(
            "  edge memory once the 32 s transaction linger is over: {:.2} KiB per active call (RSS growth / calls), {:.2} KiB per added call (second half)",
            rss.saturating_sub(rss0) as f64 / a.calls.max(1) as f64,
            rss.saturating_sub(half_settled) as f64 / added
        );
    }
    if let Some(rr) = relay {
        let per = rr.cpu.as_secs_f64() * 1e6 / rr.forwarded.max(1) as f64;
        println!(
            "  relay: forwarded={} ({:.0} pps) CPU={:.3} s = {:.1}% of a core → {per:.2} µs per forwarded packet",
            rr.forwarded,
            rr.forwarded as f64 / rr.wall.as_secs_f64().max(1e-9),
            rr.cpu.as_secs_f64(),
            100.0 * rr.cpu.as_secs_f64() / rr.wall.as_secs_f64().max(1e-9),
        );
        println!(
            "  relay totals (whole run): received={} forwarded={} dropped={} foreign={}",
            rr.totals.received, rr.totals.forwarded, rr.totals.dropped, rr.totals.foreign
        );
        println!(
            "  memory per call: {:.2} KiB user space (RSS), {:.2} KiB kernel slab (socket, file, epoll entries)",
            rr.rss_per_call_kib,
            rr.slab_per_call_bytes / 1024.0
        );
    }
}

/// `--mode edge`: the calls are set up through a running trunkgate-edge with plain SIP (the
/// bench is the carrier and the platform), and the edge's own CPU time is read from /proc.
mod edge {
    use std::net::{SocketAddr, UdpSocket};
    use std::time::{Duration, Instant};

    use super::Args;

    /// An answered call's setup transactions live 32 s (RFC 6026 timers L and M); a little more.
    pub const LINGER: Duration = Duration::from_secs(34);

    fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
        msg.split("\r\n")
            .take_while(|l| !l.is_empty())
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim())
            })
    }

    /// Where a SIP message's SDP body wants RTP.
    fn sdp_addr(msg: &str) -> Option<SocketAddr> {
        super::sdp_rtp_addr(msg.split_once("\r\n\r\n")?.1)
    }

    fn recv_matching(
        s: &UdpSocket,
        want: impl Fn(&str) -> bool,
    ) -> Result<(String, SocketAddr), String> {
        let mut buf = vec![0u8; 65_535];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match s.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if want(&m) {
                        return Ok((m, from));
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("no answer from the edge within 5 s".into())
    }

    /// One INVITE / 200 / ACK per call; returns, per call, where the carrier side and the
    /// platform side send RTP (the edge's relay addresses), and with `--srtp` the carrier leg's
    /// keys (the INVITE offers RTP/SAVP with an `a=crypto`, the 200 carries the edge's).
    /// Sets up one call per (carrier, platform) socket pair; `first` numbers them.
    pub fn setup_calls(
        a: &Args,
        first: usize,
        carriers: &[UdpSocket],
        platforms: &[UdpSocket],
    ) -> Result<Vec<super::Target>, String> {
        let edge = a.edge_sip.ok_or("no --edge-sip")?;
        let c = UdpSocket::bind("127.0.0.10:0").map_err(|e| format!("carrier SIP socket: {e}"))?;
        let p = UdpSocket::bind(a.platform_sip)
            .map_err(|e| format!("platform SIP socket {}: {e}", a.platform_sip))?;
        for s in [&c, &p] {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .map_err(|e| e.to_string())?;
        }
        let me = c.local_addr().map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(carriers.len());
        for (i, (cs, ps)) in carriers.iter().zip(platforms).enumerate() {
            let i = first + i;
            let callee = format!("+{}", a.number + i as u64);
            let call_id = format!("bench-{i}-{}@127.0.0.10", std::process::id());
            let offered = a.srtp.map(super::carrier_crypto);
            let offer = super::sdp_text(
                cs.local_addr().map_err(|e| e.to_string())?,
                offered.as_ref(),
            );
            let invite = format!(
                "INVITE sip:{callee}@{edge} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKbench{i}\r\nMax-Forwards: 70\r\n\
                 From: <sip:+6495550100@127.0.0.10>;tag=c{i}\r\nTo: <sip:{callee}@{edge}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
                 Contact: <sip:bench@{me}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
                offer.len()
            );
            c.send_to(invite.as_bytes(), edge)
                .map_err(|e| e.to_string())?;
            let (inv, from) = recv_matching(&p, |m| m.starts_with("INVITE "))?;
            let to_platform = sdp_addr(&inv).ok_or("the edge's INVITE has no SDP")?;
            if offered.is_some() {
                super::check_plain(&inv, "the edge's INVITE to the platform")?;
            }
            let answer = super::sdp_text(ps.local_addr().map_err(|e| e.to_string())?, None);
            let mut ok = String::from("SIP/2.0 200 OK\r\n");
            for l in inv.split("\r\n").take_while(|l| !l.is_empty()).skip(1) {
                let name = l
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                if ["via", "from", "call-id", "cseq"].contains(&name.as_str()) {
                    ok.push_str(l);
                    ok.push_str("\r\n");
                }
            }
            ok.push_str(&format!(
                "To: {};tag=p{i}\r\nContact: <sip:platform@{}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}",
                header(&inv, "To").unwrap_or_default(),
                a.platform_sip,
                answer.len()
            ));
            p.send_to(ok.as_bytes(), from).map_err(|e| e.to_string())?;
            let (resp, _) =
                recv_matching(&c, |m| m.starts_with("SIP/2.0 200") && m.contains(&call_id))?;
            let to_carrier = sdp_addr(&resp).ok_or("the edge's 200 has no SDP")?;
            let keys = match offered {
                Some(c) => Some(super::CarrierKeys {
                    relay: super::answered_key(&resp, c.key.suite())?,
                    carrier: c.key,
                }),
                None => None,
            };
            let to = header(&resp, "To").unwrap_or_default();
            let ack = format!(
                "ACK sip:{callee}@{edge} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKbenchack{i}\r\nMax-Forwards: 70\r\n\
                 From: <sip:+6495550100@127.0.0.10>;tag=c{i}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
            );
            c.send_to(ack.as_bytes(), edge).map_err(|e| e.to_string())?;
            out.push((to_carrier, to_platform, keys));
        }
        Ok(out)
    }
}

/// `--mode rtpengine`: the same calls set up through rtpengine's ng control protocol
/// (bencode dictionaries over UDP behind a cookie), offer from the carrier side and answer from
/// the platform side, as a SIP proxy in front of it would do. With `--srtp`, the carrier's
/// offer is RTP/SAVP with its `a=crypto` and asks for `"transport-protocol": "RTP/AVP"` towards
/// the platform; the platform's plain answer asks for `"RTP/SAVP"` towards the carrier, and
/// rtpengine's own `a=crypto` is read from the answer it returns.
mod rtpengine {
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;

    use trunkgate_media::srtp::Suite;

    fn bstr(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(format!("{}:", s.len()).as_bytes());
        out.extend_from_slice(s);
    }

    /// A bencode dictionary of strings; keys must be given sorted, as bencode requires.
    fn dict(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = b"d".to_vec();
        for (k, v) in pairs {
            bstr(&mut out, k.as_bytes());
            bstr(&mut out, v.as_bytes());
        }
        out.push(b'e');
        out
    }

    /// The string value of `key` in a flat reply dictionary (enough for `result` and `sdp`).
    fn value(reply: &[u8], key: &str) -> Option<Vec<u8>> {
        let needle = format!("{}:{key}", key.len());
        let at = reply
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())?
            + needle.len();
        let rest = reply.get(at..)?;
        let colon = rest.iter().position(|&b| b == b':')?;
        let len: usize = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
        rest.get(colon + 1..colon + 1 + len).map(<[u8]>::to_vec)
    }

    fn command(ng: &UdpSocket, to: SocketAddr, n: usize, body: &[u8]) -> Result<Vec<u8>, String> {
        let cookie = format!("rb{}_{n}", std::process::id());
        let mut msg = format!("{cookie} ").into_bytes();
        msg.extend_from_slice(body);
        let mut buf = vec![0u8; 65_535];
        for _ in 0..3 {
            ng.send_to(&msg, to).map_err(|e| format!("ng send: {e}"))?;
            while let Ok(len) = ng.recv(&mut buf) {
                let reply = &buf[..len];
                if let Some(body) = reply.strip_prefix(format!("{cookie} ").as_bytes()) {
                    if value(body, "result").as_deref() != Some(b"ok") {
                        return Err(format!("rtpengine: {}", String::from_utf8_lossy(body)));
                    }
                    return value(body, "sdp").ok_or_else(|| "rtpengine reply without sdp".into());
                }
            }
        }
        Err("no reply from rtpengine's ng port".into())
    }

    /// One offer and one answer per call; returns, per call, where the carrier side and the
    /// platform side send RTP (rtpengine's ports), and with `srtp` the carrier leg's keys.
    pub fn setup_calls(
        ng_addr: SocketAddr,
        srtp: Option<Suite>,
        first: usize,
        carriers: &[UdpSocket],
        platforms: &[UdpSocket],
    ) -> Result<Vec<super::Target>, String> {
        let ng = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("ng socket: {e}"))?;
        ng.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(carriers.len());
        for (i, (cs, ps)) in carriers.iter().zip(platforms).enumerate() {
            let i = first + i;
            let (call_id, from_tag, to_tag) = (format!("rb-{i}"), format!("f{i}"), format!("t{i}"));
            let local = |s: &UdpSocket| s.local_addr().map_err(|e| e.to_string());
            let offered = srtp.map(super::carrier_crypto);
            let offer = super::sdp_text(local(cs)?, offered.as_ref());
            let mut req = vec![
                ("call-id", call_id.as_str()),
                ("command", "offer"),
                ("from-tag", &from_tag),
                ("sdp", &offer),
            ];
            if offered.is_some() {
                req.push(("transport-protocol", "RTP/AVP"));
            }
            let to_platform = command(&ng, ng_addr, 2 * i, &dict(&req))?;
            let answer = super::sdp_text(local(ps)?, None);
            let mut req = vec![
                ("call-id", call_id.as_str()),
                ("command", "answer"),
                ("from-tag", &from_tag),
                ("sdp", &answer),
                ("to-tag", &to_tag),
            ];
            if offered.is_some() {
                req.push(("transport-protocol", "RTP/SAVP"));
            }
            let to_carrier = command(&ng, ng_addr, 2 * i + 1, &dict(&req))?;
            let text = |sdp: &[u8]| String::from_utf8_lossy(sdp).into_owned();
            let addr = |sdp: &[u8]| {
                super::sdp_rtp_addr(&text(sdp))
                    .ok_or_else(|| "rtpengine's SDP has no c=/m= address".to_string())
            };
            let keys = match offered {
                Some(c) => {
                    super::check_plain(&text(&to_platform), "rtpengine's offer to the platform")?;
                    Some(super::CarrierKeys {
                        relay: super::answered_key(&text(&to_carrier), c.key.suite())?,
                        carrier: c.key,
                    })
                }
                None => None,
            };
            out.push((addr(&to_carrier)?, addr(&to_platform)?, keys));
        }
        Ok(out)
    }
}
