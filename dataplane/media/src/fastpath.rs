//! The RTP fast path in the kernel: a TC classifier (`bpf/fastpath.c`, built by `build.rs` with
//! clang) attached to the ingress of the interfaces media arrives on forwards established
//! stream directions without the packets reaching the relay's sockets. The relay installs a
//! direction once its source is latched and the other side's address is known, and takes it
//! back (reading the counters and RFC 3550 state the program kept) whenever anything about the
//! stream changes: a new SDP (hold, re-INVITE), another SSRC, the call's end. Everything the
//! program does not know stays with the userspace relay.
//!
//! Loading needs CAP_BPF and CAP_NET_ADMIN (root in the tests); without them, or on a kernel
//! that refuses the program, [`FastPath::load`] says why and the edge relays in userspace.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;

use aya::Ebpf;
use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::programs::{SchedClassifier, TcAttachType, tc};

use crate::quality::Receiver;

/// The program's bytes, aligned as the ELF parser reads them (an `include_bytes!` array is
/// byte-aligned, and the parser refuses misaligned section headers).
#[repr(C, align(32))]
struct Aligned<B: ?Sized> {
    bytes: B,
}

/// The program as built (empty when clang was missing at build time).
static OBJECT: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/fastpath.o")),
};

/// `struct fp_key`: addresses and ports in network order, as the packet carries them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    src_ip: u32,
    dst_ip: u32,
    src_port: u16,
    dst_port: u16,
}

/// `struct fp_value`, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Value {
    lock: u32,
    out_src_ip: u32,
    out_dst_ip: u32,
    out_src_port: u16,
    out_dst_port: u16,
    ssrc: u32,
    clock_rate: u32,
    epoch_ns: u64,
    pub packets: u64,
    pub bytes: u64,
    pub forwarded: u64,
    pub last_ns: u64,
    base_seq: u32,
    cycles: u32,
    max_seq: u32,
    bad_seq: u32,
    received: u64,
    prior_expected: u64,
    prior_received: u64,
    last_transit: i32,
    has_transit: u32,
    last_ts: u32,
    last_pt: u32,
    jitter_q16: u64,
}

// SAFETY: both are plain `#[repr(C)]` structs of integers with no padding the kernel could
// leave uninitialised in a way Rust would read as invalid (every bit pattern is a valid value),
// laid out exactly as `struct fp_key` and `struct fp_value` in bpf/fastpath.c.
#[allow(unsafe_code)]
unsafe impl aya::Pod for Key {}
#[allow(unsafe_code)]
unsafe impl aya::Pod for Value {}

fn ipv4(a: SocketAddr) -> Option<(u32, u16)> {
    match a.ip() {
        IpAddr::V4(ip) if !ip.is_unspecified() => {
            Some((u32::from_ne_bytes(ip.octets()), a.port().to_be()))
        }
        _ => None,
    }
}

impl Key {
    /// Packets from `peer` to our `local` port (IPv4 only).
    pub fn new(peer: SocketAddr, local: SocketAddr) -> Option<Key> {
        let (src_ip, src_port) = ipv4(peer)?;
        let (dst_ip, dst_port) = ipv4(local)?;
        Some(Key {
            src_ip,
            dst_ip,
            src_port,
            dst_port,
        })
    }
}

/// CLOCK_MONOTONIC now, in ns: the program's `bpf_ktime_get_ns`, and `Instant`'s clock.
fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| (t.tv_sec() as u64) * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The monotonic time of `at` in ns.
fn instant_ns(at: Instant) -> u64 {
    let now = Instant::now();
    let base = monotonic_ns();
    match now.checked_duration_since(at) {
        Some(d) => base.saturating_sub(d.as_nanos() as u64),
        None => base + at.duration_since(now).as_nanos() as u64,
    }
}

/// The `Instant` of a monotonic time in ns.
pub fn ns_instant(ns: u64) -> Instant {
    let now = Instant::now();
    let base = monotonic_ns();
    if ns <= base {
        now.checked_sub(std::time::Duration::from_nanos(base - ns))
            .unwrap_or(now)
    } else {
        now + std::time::Duration::from_nanos(ns - base)
    }
}

impl Value {
    /// An entry that rewrites to `from` (our other port) → `to`, carrying on `rx`'s state.
    pub fn new(from: SocketAddr, to: SocketAddr, rx: &Receiver) -> Option<Value> {
        let (out_src_ip, out_src_port) = ipv4(from)?;
        let (out_dst_ip, out_dst_port) = ipv4(to)?;
        let s = rx.state()?;
        Some(Value {
            out_src_ip,
            out_dst_ip,
            out_src_port,
            out_dst_port,
            ssrc: s.ssrc,
            clock_rate: s.clock_rate,
            epoch_ns: instant_ns(s.epoch),
            base_seq: s.base_seq,
            cycles: s.cycles,
            max_seq: u32::from(s.max_seq),
            bad_seq: s.bad_seq.map_or(0, |b| 0x10000 + u32::from(b)),
            received: s.received,
            prior_expected: s.prior_expected,
            prior_received: s.prior_received,
            last_transit: s.last_transit.unwrap_or(0),
            has_transit: u32::from(s.last_transit.is_some()),
            last_ts: s.last_ts,
            last_pt: u32::from(s.last_pt),
            jitter_q16: (s.jitter * 65536.0).round() as u64,
            ..Value::default()
        })
    }

    /// Puts the program's RFC 3550 state back into `rx`.
    pub fn restore(&self, rx: &mut Receiver) {
        let Some(mut s) = rx.state() else {
            return;
        };
        s.base_seq = self.base_seq;
        s.cycles = self.cycles;
        s.max_seq = self.max_seq as u16;
        s.bad_seq = self.bad_seq.checked_sub(0x10000).map(|b| b as u16);
        s.received = self.received;
        s.prior_expected = self.prior_expected;
        s.prior_received = self.prior_received;
        s.last_transit = (self.has_transit != 0).then_some(self.last_transit);
        s.last_ts = self.last_ts;
        s.last_pt = self.last_pt as u8;
        s.jitter = self.jitter_q16 as f64 / 65536.0;
        rx.set_state(s);
    }
}

/// Why the fast path is off.
#[derive(Debug, thiserror::Error)]
pub enum FastPathError {
    #[error("not built: clang was missing when the edge was compiled")]
    NotBuilt,
    #[error("the kernel refused the program (needs CAP_BPF and CAP_NET_ADMIN): {0}")]
    Load(String),
    #[error("cannot attach to {iface}: {reason}")]
    Attach { iface: String, reason: String },
}

impl FastPathError {
    pub fn label(&self) -> &'static str {
        match self {
            FastPathError::NotBuilt => "not_built",
            FastPathError::Load(_) => "load",
            FastPathError::Attach { .. } => "attach",
        }
    }
}

/// The loaded program and its map, shared by every worker's relay.
pub struct FastPath {
    streams: Mutex<BpfHashMap<MapData, Key, Value>>,
    /// Keeps the program and its attachments alive.
    _ebpf: Mutex<Ebpf>,
}

impl FastPath {
    /// Loads the program and attaches it to the ingress of every interface in `interfaces`.
    pub fn load(interfaces: &[String]) -> Result<FastPath, FastPathError> {
        if OBJECT.bytes.is_empty() {
            return Err(FastPathError::NotBuilt);
        }
        let mut ebpf = Ebpf::load(&OBJECT.bytes).map_err(|e| FastPathError::Load(e.to_string()))?;
        let program: &mut SchedClassifier = ebpf
            .program_mut("rtp_fastpath")
            .ok_or_else(|| FastPathError::Load("no rtp_fastpath program".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| FastPathError::Load(e.to_string()))?;
        program
            .load()
            .map_err(|e| FastPathError::Load(e.to_string()))?;
        for iface in interfaces {
            // Already there is fine (another edge, or an earlier run).
            let _ = tc::qdisc_add_clsact(iface);
            program
                .attach(iface, TcAttachType::Ingress)
                .map_err(|e| FastPathError::Attach {
                    iface: iface.clone(),
                    reason: e.to_string(),
                })?;
        }
        let map = ebpf
            .take_map("STREAMS")
            .ok_or_else(|| FastPathError::Load("no STREAMS map".into()))?;
        let streams = BpfHashMap::try_from(map).map_err(|e| FastPathError::Load(e.to_string()))?;
        Ok(FastPath {
            streams: Mutex::new(streams),
            _ebpf: Mutex::new(ebpf),
        })
    }

    /// Hands a stream direction to the kernel.
    pub fn install(&self, key: Key, value: Value) -> bool {
        self.streams
            .lock()
            .map(|mut m| m.insert(key, value, 0).is_ok())
            .unwrap_or(false)
    }

    /// What the kernel counted so far, the entry left in place.
    pub fn peek(&self, key: &Key) -> Option<Value> {
        self.streams.lock().ok()?.get(key, 0).ok()
    }

    /// Takes a stream direction back: the entry is removed and its last state returned.
    pub fn take(&self, key: &Key) -> Option<Value> {
        let mut m = self.streams.lock().ok()?;
        let v = m.get(key, 0).ok();
        let _ = m.remove(key);
        v
    }
}
