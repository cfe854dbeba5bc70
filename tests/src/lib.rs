//! End-to-end harness: runs the real `trunkgate-edge` binary on loopback and drives it with sipp
//! (as carrier and as platform) and with a raw UDP socket where sipp cannot say what a test
//! needs (digest over MD5 next to SHA-256, malformed datagrams).
//!
//! Addresses (all loopback, so tests need no privileges):
//! - the edge: public side `127.0.0.1`, internal side `127.0.0.2`;
//! - the carrier: `127.0.0.10` allowed; a scanner: `127.0.0.66`, denied;
//! - platform UAS/UAC: `127.0.0.20`/`127.0.0.21`; carrier targets for outbound calls:
//!   `127.0.0.30`/`127.0.0.31`.
//!
//! Ports come from [`free_ports`], so tests run in parallel threads without colliding. Every
//! process is started in its own process group and killed by a guard when the test ends, also on
//! panic.
#![forbid(unsafe_code)]

pub mod apiserver;
pub mod baresip;
pub mod config;
pub mod edge;
pub mod kamailio;
pub mod pki;
pub mod redis;
pub mod rtp;
pub mod sip;
pub mod sipp;
pub mod ua;

use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

pub use config::{Numbers, Trunk, secret};
pub use edge::{Edge, EdgeOptions};
pub use sip::{RawUdp, SipMsg};
pub use sipp::{Sipp, SippRun};

/// The edge's carrier-side address.
pub const EDGE_PUBLIC_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
/// The edge's platform-side address.
pub const EDGE_INTERNAL_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// A carrier SBC the trunks allow.
pub const CARRIER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10));
/// An address no trunk allows (a scanner).
pub const DENIED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 66));
/// The platform (first tenant or the only one).
pub const PLATFORM: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 20));
/// The platform of a second tenant.
pub const PLATFORM_2: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 21));
/// Carrier targets for outbound calls.
pub const CARRIER_TARGET: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 30));
pub const CARRIER_TARGET_2: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 31));

/// Polls a condition every 50 ms until it holds, and panics with the message when `timeout`
/// passes first. Use it instead of a sleep wherever a state can be observed.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $timeout:expr, $($msg:tt)+) => {{
        let timeout: std::time::Duration = $timeout;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if $cond {
                break;
            }
            if std::time::Instant::now() >= deadline {
                panic!(
                    "`{}` did not hold within {:?}: {}",
                    stringify!($cond),
                    timeout,
                    format!($($msg)+)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }};
    ($cond:expr, $timeout:expr) => {
        $crate::assert_eventually!($cond, $timeout, "no detail")
    };
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `timeout`.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- ports ---------------------------------------------------------------------------------

static NEXT_PORT: AtomicU32 = AtomicU32::new(0);
const PORT_LOW: u32 = 20_000;
const PORT_SPAN: u32 = 12_000;

/// The first of `n` consecutive ports that are free for UDP and TCP on every address. Ports
/// come from 20000-31999 (below the kernel's ephemeral range), starting at an offset derived
/// from the process id so two test processes rarely probe the same ports.
pub fn free_ports(n: u16) -> u16 {
    let n = u32::from(n.max(1));
    let start_offset = (std::process::id() % 40) * 300;
    for _ in 0..2_000 {
        let off = NEXT_PORT.fetch_add(n, Ordering::SeqCst);
        let first = PORT_LOW + (start_offset + off) % PORT_SPAN;
        if first + n > PORT_LOW + PORT_SPAN {
            continue;
        }
        let all_free = (first..first + n).all(|p| {
            let p = p as u16;
            UdpSocket::bind((Ipv4Addr::UNSPECIFIED, p)).is_ok()
                && TcpListener::bind((Ipv4Addr::UNSPECIFIED, p)).is_ok()
        });
        if all_free {
            return first as u16;
        }
    }
    panic!(
        "no {n} consecutive free ports in {PORT_LOW}-{}",
        PORT_LOW + PORT_SPAN - 1
    );
}

/// One free port.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// Whether something is bound to UDP `port` (on `ip` or on any address), read from
/// /proc/net/udp so that probing does not race the process that binds it.
pub fn udp_bound(ip: IpAddr, port: u16) -> bool {
    let IpAddr::V4(v4) = ip else { return false };
    let Ok(table) = std::fs::read_to_string("/proc/net/udp") else {
        return false;
    };
    // local_address is the IPv4 address as a little-endian hex word, then ':' and the port.
    let want_ip = format!("{:08X}", u32::from_le_bytes(v4.octets()));
    let want_port = format!("{port:04X}");
    table.lines().skip(1).any(|line| {
        let Some(local) = line.split_whitespace().nth(1) else {
            return false;
        };
        let Some((a, p)) = local.split_once(':') else {
            return false;
        };
        p == want_port && (a == want_ip || a == "00000000")
    })
}

// ---- processes -----------------------------------------------------------------------------

/// A child started in its own process group; dropping it kills the whole group and reaps it.
pub struct ProcessGroup {
    pub child: Child,
    pub what: String,
}

impl ProcessGroup {
    /// Spawns `cmd` as the leader of a new process group.
    pub fn spawn(mut cmd: Command, what: &str) -> Self {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
        Self {
            child,
            what: what.to_string(),
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the leader is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the leader to exit, at most `timeout`; None when it is still running.
    pub fn wait_for(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => return None,
            }
        }
    }

    /// Kills every process of the group (SIGKILL) and reaps the leader.
    pub fn kill(&mut self) {
        if self.running() {
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill")
                .args(["-KILL", "--", &group])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---- a test's working folder ---------------------------------------------------------------

/// How many tests of one test binary run their processes at the same time (the machine has
/// two cores; sipp and the edge both like one).
fn parallelism() -> usize {
    std::env::var("TRUNKGATE_E2E_PARALLEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .max(1)
}

static RUNNING: Mutex<usize> = Mutex::new(0);
static SLOT_FREED: Condvar = Condvar::new();

/// A place in the limited set of tests running at once, released when dropped.
struct Slot;

impl Slot {
    fn take() -> Self {
        let mut n = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= parallelism() {
            n = SLOT_FREED.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut n = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        SLOT_FREED.notify_one();
    }
}

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// One test's temporary folder: the edge's config folder, the instantiated sipp scenarios and
/// every trace. Removed when the test passes, kept (and its path printed) when it fails.
pub struct Lab {
    pub dir: PathBuf,
    pub name: String,
    _slot: Slot,
}

impl Lab {
    pub fn new(name: &str) -> Self {
        let slot = Slot::take();
        let seq = LAB_SEQ.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("trunkgate-e2e-{}-{seq}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("config")).expect("create the test folder");
        Self {
            dir,
            name: name.to_string(),
            _slot: slot,
        }
    }

    /// The bpffs folder this lab's edges pin their RTP fast path in (with the fast path on and
    /// calls to restore); removed with the lab, which detaches what a killed edge left there.
    pub fn bpf_pin(&self) -> PathBuf {
        let name = self
            .dir
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        PathBuf::from("/sys/fs/bpf/trunkgate-tests").join(name)
    }

    /// The folder the edge reads (standalone mode).
    pub fn config_dir(&self) -> PathBuf {
        self.dir.join("config")
    }

    /// Writes (or replaces) one YAML file of the config folder atomically: the edge never
    /// reads half a file.
    pub fn write_config(&self, file: &str, yaml: &str) {
        write_atomically(&self.config_dir().join(file), yaml);
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Kernel state, kept by nobody: always removed.
        let _ = std::fs::remove_dir_all(self.bpf_pin());
        if std::thread::panicking() {
            eprintln!(
                "[{}] test failed; edge log, config and sipp traces kept in {}",
                self.name,
                self.dir.display()
            );
        } else if std::env::var_os("TRUNKGATE_E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn write_atomically(path: &Path, text: &str) {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a file name");
    // A leading dot: the edge skips the file while it is being written.
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write a config file");
    std::fs::rename(&tmp, path).expect("move a config file into place");
}

/// The RFC 4475 torture messages kept with the SIP codec.
pub fn rfc4475_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dataplane/sip/tests/rfc4475")
}
