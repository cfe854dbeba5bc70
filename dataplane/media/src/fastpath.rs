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

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{SchedClassifier, TcAttachType, tc};
use aya::{Ebpf, EbpfLoader};

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

/// The same program with its map pinned by name (`LIBBPF_PIN_BY_NAME`).
static PINNED_OBJECT: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/fastpath_pinned.o")),
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

    /// The program's RFC 3550 state (for the SSRC, clock and epoch it was installed with).
    fn rx_state(&self) -> crate::quality::RxState {
        crate::quality::RxState {
            epoch: ns_instant(self.epoch_ns),
            clock_rate: self.clock_rate,
            ssrc: self.ssrc,
            base_seq: self.base_seq,
            max_seq: self.max_seq as u16,
            cycles: self.cycles,
            bad_seq: self.bad_seq.checked_sub(0x10000).map(|b| b as u16),
            received: self.received,
            prior_expected: self.prior_expected,
            prior_received: self.prior_received,
            last_transit: (self.has_transit != 0).then_some(self.last_transit),
            last_ts: self.last_ts,
            last_pt: self.last_pt as u8,
            jitter: self.jitter_q16 as f64 / 65536.0,
        }
    }

    /// The program's RFC 3550 state into `rx`, which starts from it when it has not started
    /// (a restored call's receiver).
    pub fn resume(&self, rx: &mut Receiver) {
        if rx.state().is_some() {
            rx.set_state(self.rx_state());
        } else {
            rx.start_as(self.rx_state());
        }
    }

    /// Puts the program's RFC 3550 state back into `rx` (one that has started).
    pub fn restore(&self, rx: &mut Receiver) {
        if rx.state().is_some() {
            rx.set_state(self.rx_state());
        }
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
    /// Where the map and the attachments are pinned (None: they end with the process).
    pinned: Option<PathBuf>,
    /// The attachments pinned in bpffs, one per interface.
    links: Mutex<Vec<PinnedLink>>,
    /// Entries a restored call took over; [`FastPath::sweep`] removes the others.
    adopted: Mutex<Option<HashSet<Key>>>,
    /// Keeps the program and its attachments alive.
    _ebpf: Mutex<Ebpf>,
}

/// The bpffs magic number (`statfs` `f_type`).
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

/// Whether `dir` (or the nearest existing folder above it) is on bpffs.
fn on_bpffs(dir: &Path) -> bool {
    let existing = dir.ancestors().find(|d| d.exists());
    existing
        .and_then(|d| nix::sys::statfs::statfs(d).ok())
        .is_some_and(|s| s.filesystem_type().0 as u64 == BPF_FS_MAGIC)
}

impl FastPath {
    /// Loads the program and attaches it to the ingress of every interface in `interfaces`.
    ///
    /// With `pin` (a folder on bpffs, one per edge identity), the stream map and the TCX
    /// attachments are pinned there: a killed edge's established streams keep forwarding in
    /// the kernel until the next run of the same edge loads its program against the same map,
    /// attaches it, and only then detaches the old program (no gap). Without bpffs at `pin` the
    /// map is the process's own ([`FastPath::pinned`] says None).
    pub fn load(interfaces: &[String], pin: Option<&Path>) -> Result<FastPath, FastPathError> {
        if OBJECT.bytes.is_empty() {
            return Err(FastPathError::NotBuilt);
        }
        let pin = pin.filter(|p| on_bpffs(p));
        let mut ebpf = match pin {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    FastPathError::Load(format!("cannot make {}: {e}", dir.display()))
                })?;
                EbpfLoader::new()
                    .map_pin_path(dir)
                    .load(&PINNED_OBJECT.bytes)
            }
            None => Ebpf::load(&OBJECT.bytes),
        }
        .map_err(|e| FastPathError::Load(e.to_string()))?;
        let program: &mut SchedClassifier = ebpf
            .program_mut("rtp_fastpath")
            .ok_or_else(|| FastPathError::Load("no rtp_fastpath program".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| FastPathError::Load(e.to_string()))?;
        program
            .load()
            .map_err(|e| FastPathError::Load(e.to_string()))?;
        let mut links = Vec::new();
        for iface in interfaces {
            // Already there is fine (another edge, or an earlier run).
            let _ = tc::qdisc_add_clsact(iface);
            let attach_error = |e: &dyn std::fmt::Display| FastPathError::Attach {
                iface: iface.clone(),
                reason: e.to_string(),
            };
            let id = program
                .attach(iface, TcAttachType::Ingress)
                .map_err(|e| attach_error(&e))?;
            let Some(dir) = pin else { continue };
            // TCX (Linux 6.6+) attachments are links that can be pinned; a netlink filter (older
            // kernels) outlives the process by itself, its program still on the pinned map.
            let link = program.take_link(id).map_err(|e| attach_error(&e))?;
            let fd = match FdLink::try_from(link) {
                Ok(fd) => fd,
                Err(_) => continue,
            };
            let path = dir.join(format!("link-{iface}"));
            // The last run's attachment goes only now that this one forwards (unpinned, its
            // last descriptor closes and it detaches).
            if let Ok(old) = PinnedLink::from_pin(&path) {
                let _ = old.unpin();
            }
            let _ = std::fs::remove_file(&path);
            links.push(fd.pin(&path).map_err(|e| attach_error(&e))?);
        }
        let map = ebpf
            .take_map("STREAMS")
            .ok_or_else(|| FastPathError::Load("no STREAMS map".into()))?;
        let streams = BpfHashMap::try_from(map).map_err(|e| FastPathError::Load(e.to_string()))?;
        Ok(FastPath {
            streams: Mutex::new(streams),
            pinned: pin.map(Path::to_path_buf),
            links: Mutex::new(links),
            adopted: Mutex::new(pin.map(|_| HashSet::new())),
            _ebpf: Mutex::new(ebpf),
        })
    }

    /// The bpffs folder the map and attachments are pinned in.
    pub fn pinned(&self) -> Option<&Path> {
        self.pinned.as_deref()
    }

    /// Stream directions the kernel forwards now.
    pub fn entries(&self) -> usize {
        self.streams.lock().map(|m| m.keys().count()).unwrap_or(0)
    }

    /// A restored call takes over an entry the last run installed (the kernel kept forwarding
    /// it meanwhile); its state so far, or None when there is no such entry.
    pub fn adopt(&self, key: Key) -> Option<Value> {
        let v = self.peek(&key)?;
        if let Ok(mut a) = self.adopted.lock()
            && let Some(set) = a.as_mut()
        {
            set.insert(key);
        }
        Some(v)
    }

    /// Once restored calls have taken over theirs, the last run's other entries (calls that
    /// ended meanwhile, or were ended by another pod) are removed; the count removed.
    pub fn sweep(&self) -> usize {
        let Some(adopted) = self.adopted.lock().ok().and_then(|mut a| a.take()) else {
            return 0;
        };
        let Ok(mut m) = self.streams.lock() else {
            return 0;
        };
        let stale: Vec<Key> = m
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !adopted.contains(k))
            .collect();
        stale.iter().filter(|k| m.remove(k).is_ok()).count()
    }

    /// Hands a stream direction to the kernel.
    pub fn install(&self, key: Key, value: Value) -> bool {
        let done = self
            .streams
            .lock()
            .map(|mut m| m.insert(key, value, 0).is_ok())
            .unwrap_or(false);
        if done
            && let Ok(mut a) = self.adopted.lock()
            && let Some(set) = a.as_mut()
        {
            // Before the sweep: an entry of this run, not one to sweep.
            set.insert(key);
        }
        done
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

impl Drop for FastPath {
    /// A clean exit with no stream left in the kernel takes the pins away (the program
    /// detaches); with streams left (calls a next run restores) they stay.
    fn drop(&mut self) {
        let Some(dir) = self.pinned.take() else {
            return;
        };
        if self.entries() > 0 {
            return;
        }
        if let Ok(mut links) = self.links.lock() {
            for l in links.drain(..) {
                // Unpinned and dropped: the attachment ends.
                let _ = l.unpin();
            }
        }
        let _ = std::fs::remove_file(dir.join("STREAMS"));
        let _ = std::fs::remove_dir(&dir);
    }
}
