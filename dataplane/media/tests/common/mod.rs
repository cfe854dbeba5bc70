//! What the relay's loopback tests share: the peers' addresses, sockets, an engine, and reading
//! what arrives within a bounded wait.
#![allow(dead_code)] // each test file uses its own part

use std::net::{IpAddr, UdpSocket};
use std::time::{Duration, Instant};

use trunkgate_media::{MediaConfig, MediaEngine, PeerPolicy, Side, StreamStats};

pub const CARRIER: &str = "127.0.0.20";
pub const PLATFORM: &str = "127.0.0.21";
pub const WAIT: Duration = Duration::from_secs(3);

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip literal")
}

/// The carrier leg's policy: its trunk allows only CARRIER (a stranger on another loopback
/// address is outside), `media.behindNat` as given.
pub fn carrier_policy(behind_nat: bool) -> PeerPolicy {
    PeerPolicy {
        networks: vec![format!("{CARRIER}/32").parse().expect("cidr")].into(),
        behind_nat,
        signalling: None,
    }
}

/// The platform leg's policy: the platform networks are PLATFORM alone.
pub fn platform_policy() -> PeerPolicy {
    PeerPolicy {
        networks: vec![format!("{PLATFORM}/32").parse().expect("cidr")].into(),
        behind_nat: false,
        signalling: None,
    }
}

/// An engine on loopback with its own port slice.
pub fn engine(ports: (u16, u16)) -> MediaEngine {
    let lo = ip("127.0.0.1");
    MediaEngine::new(MediaConfig::new(lo, lo, ports)).expect("engine")
}

/// A non-blocking socket on `host`, any port.
pub fn peer(host: &str) -> UdpSocket {
    let s = UdpSocket::bind((ip(host), 0)).expect("bind peer");
    s.set_nonblocking(true).expect("nonblocking");
    s
}

/// Runs the relay and collects what `sock` receives until `n` datagrams came or `limit` passed.
pub fn collect(m: &mut MediaEngine, sock: &UdpSocket, n: usize, limit: Duration) -> Vec<Vec<u8>> {
    let until = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while got.len() < n && Instant::now() < until {
        let _ = m.relay();
        while let Ok(k) = sock.recv(&mut buf) {
            got.push(buf[..k].to_vec());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    got
}

/// The statistics of stream 0 as `side` sent it.
pub fn from(stats: &[StreamStats], side: Side) -> StreamStats {
    stats
        .iter()
        .find(|s| s.from == side && s.stream == 0)
        .cloned()
        .expect("stats for that side")
}
