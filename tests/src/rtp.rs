//! The test's own media endpoints: an RTP/RTCP socket pair standing for the carrier's or the
//! platform's media, RTP packets built by hand, and the few SDP readings the media tests need.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::free_ports;

/// A media endpoint: RTP on an even port, RTCP on the odd one above it.
pub struct RtpEnd {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    /// The RTP address (what goes into `c=` and `m=`).
    pub addr: SocketAddr,
}

impl RtpEnd {
    /// A pair on `ip`, on fresh ports of the harness's range.
    pub fn bind(ip: IpAddr) -> Self {
        for _ in 0..20 {
            let first = free_ports(3);
            let even = first + first % 2;
            let (Ok(rtp), Ok(rtcp)) =
                (UdpSocket::bind((ip, even)), UdpSocket::bind((ip, even + 1)))
            else {
                continue;
            };
            let addr = SocketAddr::new(ip, even);
            return Self { rtp, rtcp, addr };
        }
        panic!("no free RTP port pair on {ip}");
    }

    /// A single socket on an ephemeral port of `ip` (a NAT's outside port, a stranger).
    pub fn socket(ip: IpAddr) -> UdpSocket {
        UdpSocket::bind((ip, 0)).expect("bind a UDP socket")
    }

    pub fn rtcp_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr.ip(), self.addr.port() + 1)
    }
}

/// Sends a datagram, panicking on a local error.
pub fn send(sock: &UdpSocket, to: SocketAddr, bytes: &[u8]) {
    sock.send_to(bytes, to)
        .unwrap_or_else(|e| panic!("send {} bytes to {to}: {e}", bytes.len()));
}

/// An RTP version 2 packet (no CSRC, no extension).
pub fn rtp_packet(seq: u16, ts: u32, ssrc: u32, pt: u8, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload.len());
    p.push(0x80);
    p.push(pt | if marker { 0x80 } else { 0 });
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// The sequence number of an RTP packet.
pub fn rtp_seq(p: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(2)?, *p.get(3)?]))
}

/// A 20 ms G.711 packet (160 payload bytes, 172 in all) whose payload tells `seq` and the
/// sender apart.
pub fn g711(seq: u16, ssrc: u32, pt: u8) -> Vec<u8> {
    let mut payload = [0u8; 160];
    for (i, b) in payload.iter_mut().enumerate() {
        *b = (ssrc as u8) ^ (seq as u8).wrapping_add(i as u8);
    }
    rtp_packet(seq, u32::from(seq) * 160, ssrc, pt, seq == 0, &payload)
}

/// An RTCP receiver report with no report blocks (8 bytes).
pub fn rtcp_rr(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 201, 0, 1];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p
}

/// Datagrams arriving on `sock`: returns once `want` arrived (then keeps reading for `linger`
/// to catch any extra) or when `timeout` passes.
pub fn collect(
    sock: &UdpSocket,
    want: usize,
    timeout: Duration,
    linger: Duration,
) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut out = Vec::new();
    let mut deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65_535];
    let mut extended = false;
    loop {
        if out.len() >= want && !extended {
            deadline = Instant::now() + linger;
            extended = true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return out;
        }
        if sock.set_read_timeout(Some(left)).is_err() {
            return out;
        }
        match sock.recv_from(&mut buf) {
            Ok((n, src)) => out.push((buf[..n].to_vec(), src)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(_) => return out,
        }
    }
}

/// Everything that arrives on `sock` within `window`.
pub fn drain(sock: &UdpSocket, window: Duration) -> Vec<(Vec<u8>, SocketAddr)> {
    collect(sock, usize::MAX, window, Duration::ZERO)
}

// ---- SDP ----------------------------------------------------------------------------------

/// An audio offer or answer: `c=`/`o=` on `ip`, `m=audio port RTP/AVP` with `formats`
/// (payload type, rtpmap value), then `extra` lines (each ending in CRLF).
pub fn sdp(ip: IpAddr, port: u16, formats: &[(u8, &str)], extra: &str) -> String {
    let pts: Vec<String> = formats.iter().map(|(pt, _)| pt.to_string()).collect();
    let mut s = format!(
        "v=0\r\no=- 4242 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {}\r\n",
        pts.join(" ")
    );
    for (pt, map) in formats {
        s.push_str(&format!("a=rtpmap:{pt} {map}\r\n"));
    }
    s.push_str(extra);
    s
}

pub const PCMU: (u8, &str) = (0, "PCMU/8000");
pub const PCMA: (u8, &str) = (8, "PCMA/8000");
pub const EVENTS: (u8, &str) = (101, "telephone-event/8000");

fn sdp_lines(body: &str) -> impl Iterator<Item = &str> {
    body.lines().map(|l| l.trim_end_matches('\r'))
}

/// The address of every `c=` line.
pub fn sdp_connections(body: &str) -> Vec<String> {
    sdp_lines(body)
        .filter_map(|l| l.strip_prefix("c="))
        .filter_map(|v| v.split_whitespace().nth(2).map(str::to_string))
        .collect()
}

/// The `o=` line's address.
pub fn sdp_origin(body: &str) -> Option<String> {
    sdp_lines(body)
        .find_map(|l| l.strip_prefix("o="))
        .and_then(|v| v.split_whitespace().nth(5))
        .map(str::to_string)
}

/// Port and formats of the first `m=audio` line.
pub fn sdp_audio(body: &str) -> Option<(u16, Vec<String>)> {
    let m = sdp_lines(body).find_map(|l| l.strip_prefix("m=audio "))?;
    let mut t = m.split_whitespace();
    let port = t.next()?.parse().ok()?;
    let _proto = t.next()?;
    Some((port, t.map(str::to_string).collect()))
}

/// Where the SDP's first audio stream wants its RTP.
pub fn sdp_rtp_addr(body: &str) -> Option<SocketAddr> {
    let ip: IpAddr = sdp_connections(body).last()?.parse().ok()?;
    Some(SocketAddr::new(ip, sdp_audio(body)?.0))
}

/// Whether a line equals `line` (e.g. `a=sendonly`).
pub fn sdp_has(body: &str, line: &str) -> bool {
    sdp_lines(body).any(|l| l == line)
}

/// The `a=` attribute lines.
pub fn sdp_attributes(body: &str) -> Vec<String> {
    sdp_lines(body)
        .filter(|l| l.starts_with("a="))
        .map(str::to_string)
        .collect()
}
