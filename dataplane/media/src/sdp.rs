//! SDP (RFC 8866) as the relay needs it: parsed into lines kept in order, read for where each
//! media stream wants its RTP and RTCP, rewritten so media flows through the edge, and
//! filtered down to the codecs a trunk allows. Lines it does not touch pass byte for byte.
//!
//! Bad input is an [`Error`], never a panic: the edge answers [`Error::status`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::quality::DEFAULT_CLOCK_RATE;

/// Largest body accepted.
pub const MAX_BODY: usize = 16 * 1024;
/// Most `m=` sections accepted (each costs two port pairs).
pub const MAX_MEDIA: usize = 8;
/// Most lines accepted.
pub const MAX_LINES: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("malformed SDP: {0}")]
    Malformed(&'static str),
    #[error("SDP too large: {0}")]
    TooLarge(&'static str),
    #[error("no codec allowed on this trunk is offered in an audio stream")]
    NoCommonCodec,
    #[error("unsupported SDP: {0}")]
    Unsupported(&'static str),
}

impl Error {
    /// The SIP status the edge answers (RFC 3261 §21.4.1 400, §21.4.26 488).
    pub fn status(&self) -> u16 {
        match self {
            Error::Malformed(_) | Error::TooLarge(_) => 400,
            Error::NoCommonCodec | Error::Unsupported(_) => 488,
        }
    }

    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Malformed(_) => "sdp_malformed",
            Error::TooLarge(_) => "sdp_too_large",
            Error::NoCommonCodec => "no_common_codec",
            Error::Unsupported(_) => "sdp_unsupported",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// RFC 8866 §6.7 media direction, as the peer that wrote the SDP sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn from_attribute(name: &str) -> Option<Direction> {
        Some(match name {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }

    /// The peer takes media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// Where one side of one media stream wants its media, read from that side's SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    /// `c=` and `m=` port. The IP is 0.0.0.0 (or ::) for RFC 2543-style hold; port 0 is a
    /// disabled stream (RFC 3264 §8.2).
    pub rtp: SocketAddr,
    /// RTCP: `a=rtcp` (RFC 3605), else the RTP port + 1; the RTP address with `a=rtcp-mux`.
    pub rtcp: SocketAddr,
    /// `a=rtcp-mux` (RFC 5761): RTCP shares the RTP port.
    pub rtcp_mux: bool,
    pub direction: Direction,
    /// RTP clock rate of the first format (`a=rtpmap`, or RFC 3551's static table).
    pub clock_rate: u32,
}

impl Remote {
    /// A stream this side turned off with port 0.
    pub fn disabled(&self) -> bool {
        self.rtp.port() == 0
    }

    /// On hold (RFC 3264 §8.4): `c=0.0.0.0`, or a direction in which this side takes no media.
    pub fn on_hold(&self) -> bool {
        self.rtp.ip().is_unspecified() || !self.direction.receives()
    }

    /// The relay sends to this side.
    pub fn receives(&self) -> bool {
        !self.disabled() && !self.on_hold()
    }

    /// Silence is expected from both ends (inactive, or the old hold that says "send nothing
    /// here"): the media timeout does not run.
    pub fn paused(&self) -> bool {
        self.rtp.ip().is_unspecified() || self.direction == Direction::Inactive
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    kind: u8,
    value: String,
}

impl Line {
    /// `a=name:value` → ("name", Some("value")); `a=flag` → ("flag", None).
    fn attribute(&self) -> Option<(&str, Option<&str>)> {
        if self.kind != b'a' {
            return None;
        }
        Some(match self.value.split_once(':') {
            Some((n, v)) => (n, Some(v)),
            None => (self.value.as_str(), None),
        })
    }

    fn is_attribute(&self, name: &str) -> bool {
        self.attribute()
            .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

/// One `m=` section: its parsed `m=` line and the lines under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    kind: String,
    port: u16,
    proto: String,
    formats: Vec<String>,
    lines: Vec<Line>,
}

impl Media {
    fn parse(value: &str) -> Result<Media> {
        let mut t = value.split_ascii_whitespace();
        let (Some(kind), Some(port), Some(proto)) = (t.next(), t.next(), t.next()) else {
            return Err(Error::Malformed("m= needs media, port, proto and formats"));
        };
        if port.contains('/') {
            return Err(Error::Unsupported("m= with a port count"));
        }
        let port = port
            .parse()
            .map_err(|_| Error::Malformed("m= port is not a number"))?;
        let formats: Vec<String> = t.map(str::to_string).collect();
        if formats.is_empty() {
            return Err(Error::Malformed("m= without formats"));
        }
        Ok(Media {
            kind: kind.to_string(),
            port,
            proto: proto.to_string(),
            formats,
            lines: Vec::new(),
        })
    }

    /// `audio`, `video`, `image` …
    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn proto(&self) -> &str {
        &self.proto
    }

    /// Payload types (or formats) in the order of preference the `m=` line gives.
    pub fn formats(&self) -> &[String] {
        &self.formats
    }

    /// The value of `a=name:value` (`Some("")` for a flag such as `a=rtcp-mux`).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.lines.iter().find_map(|l| match l.attribute() {
            Some((n, v)) if n.eq_ignore_ascii_case(name) => Some(v.unwrap_or("")),
            _ => None,
        })
    }

    /// Encoding name and clock rate of a payload type: `a=rtpmap`, else RFC 3551's table.
    pub fn codec(&self, pt: &str) -> Option<(&str, u32)> {
        let mapped = self.lines.iter().find_map(|l| match l.attribute() {
            Some((n, Some(v))) if n.eq_ignore_ascii_case("rtpmap") => {
                let (p, rest) = v.split_once(' ')?;
                (p == pt).then_some(rest.trim())
            }
            _ => None,
        });
        match mapped {
            Some(enc) => {
                let mut parts = enc.split('/');
                let name = parts.next().unwrap_or("");
                let rate = parts
                    .next()
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(DEFAULT_CLOCK_RATE);
                Some((name, rate))
            }
            None => pt.parse().ok().and_then(static_payload_type),
        }
    }

    /// The values of its `a=crypto` attributes (RFC 4568), in order.
    pub fn crypto(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().filter_map(|l| match l.attribute() {
            Some((n, Some(v))) if n.eq_ignore_ascii_case("crypto") => Some(v),
            _ => None,
        })
    }

    /// A secure RTP profile: `RTP/SAVP` (RFC 3711 §12) or `RTP/SAVPF` (RFC 5124), and
    /// DTLS-SRTP's `UDP/TLS/RTP/SAVP[F]`.
    pub fn is_secure(&self) -> bool {
        self.proto.to_ascii_uppercase().contains("SAVP")
    }

    /// DTLS-SRTP (RFC 5763): keys from a DTLS handshake on the media path, not from SDP.
    pub fn is_dtls(&self) -> bool {
        self.proto.to_ascii_uppercase().contains("TLS")
    }

    /// Turns `RTP/AVP[F]` into `RTP/SAVP[F]` or back; other profiles stay.
    pub fn set_secure(&mut self, secure: bool) {
        let upper = self.proto.to_ascii_uppercase();
        self.proto = match (upper.as_str(), secure) {
            ("RTP/AVP", true) => "RTP/SAVP".into(),
            ("RTP/AVPF", true) => "RTP/SAVPF".into(),
            ("RTP/SAVP", false) => "RTP/AVP".into(),
            ("RTP/SAVPF", false) => "RTP/AVPF".into(),
            _ => return,
        };
    }

    /// Sets the profile as written (an answer repeats the offer's, RFC 3264 §6).
    pub fn set_proto(&mut self, proto: &str) {
        proto.clone_into(&mut self.proto);
    }

    /// Replaces every `a=crypto` with these values, in order, after the other attributes.
    pub fn set_crypto<S: AsRef<str>>(&mut self, values: &[S]) {
        self.lines.retain(|l| !l.is_attribute("crypto"));
        for v in values {
            self.lines.push(Line {
                kind: b'a',
                value: format!("crypto:{}", v.as_ref()),
            });
        }
    }

    fn connection(&self) -> Result<Option<IpAddr>> {
        self.lines
            .iter()
            .find(|l| l.kind == b'c')
            .map(|l| parse_connection(&l.value))
            .transpose()
    }

    fn direction(&self) -> Option<Direction> {
        direction_of(&self.lines)
    }

    pub(crate) fn is_rtp(&self) -> bool {
        self.proto.to_ascii_uppercase().contains("RTP")
    }

    fn write_m_line(&self, out: &mut String) {
        out.push_str("m=");
        out.push_str(&self.kind);
        out.push(' ');
        out.push_str(&self.port.to_string());
        out.push(' ');
        out.push_str(&self.proto);
        for f in &self.formats {
            out.push(' ');
            out.push_str(f);
        }
        out.push_str("\r\n");
    }
}

/// RFC 3551 §6 static payload types.
fn static_payload_type(pt: u8) -> Option<(&'static str, u32)> {
    Some(match pt {
        0 => ("PCMU", 8000),
        3 => ("GSM", 8000),
        4 => ("G723", 8000),
        5 => ("DVI4", 8000),
        6 => ("DVI4", 16000),
        7 => ("LPC", 8000),
        8 => ("PCMA", 8000),
        // RFC 3551 §4.5.2: G.722 keeps an 8000 Hz RTP clock.
        9 => ("G722", 8000),
        10 | 11 => ("L16", 44100),
        12 => ("QCELP", 8000),
        13 => ("CN", 8000),
        14 => ("MPA", 90000),
        15 => ("G728", 8000),
        16 => ("DVI4", 11025),
        17 => ("DVI4", 22050),
        18 => ("G729", 8000),
        _ => return None,
    })
}

/// Formats that are not a voice codec: RFC 4733 events (always kept) and RFC 3389 comfort noise.
fn is_voice(name: &str) -> bool {
    !name.eq_ignore_ascii_case("telephone-event") && !name.eq_ignore_ascii_case("CN")
}

/// ICE (RFC 8839) attributes: the relay is the only media path, so candidates would leak
/// addresses and invite the peers to bypass it.
fn is_ice(l: &Line) -> bool {
    l.attribute().is_some_and(|(n, _)| {
        matches!(
            n.to_ascii_lowercase().as_str(),
            "candidate"
                | "ice-ufrag"
                | "ice-pwd"
                | "ice-options"
                | "ice-lite"
                | "ice-mismatch"
                | "end-of-candidates"
                | "remote-candidates"
        )
    })
}

fn direction_of(lines: &[Line]) -> Option<Direction> {
    lines
        .iter()
        .filter_map(|l| l.attribute())
        .find_map(|(n, v)| v.is_none().then(|| Direction::from_attribute(n)).flatten())
}

/// `c=IN IP4 192.0.2.1[/ttl]` → the address.
fn parse_connection(value: &str) -> Result<IpAddr> {
    let mut t = value.split_ascii_whitespace();
    let (Some(net), Some(family), Some(addr), None) = (t.next(), t.next(), t.next(), t.next())
    else {
        return Err(Error::Malformed(
            "c= needs network type, address type and address",
        ));
    };
    if !net.eq_ignore_ascii_case("IN") {
        return Err(Error::Unsupported("c= network type other than IN"));
    }
    let addr = addr.split('/').next().unwrap_or(addr);
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| Error::Unsupported("c= address is not an IP literal"))?;
    match (family.to_ascii_uppercase().as_str(), ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(ip),
        ("IP4" | "IP6", _) => Err(Error::Malformed("c= address does not match its type")),
        _ => Err(Error::Unsupported("c= address type other than IP4 and IP6")),
    }
}

/// RFC 3605 `a=rtcp:port [IN IP4 addr]`.
fn parse_rtcp(value: &str, default_ip: IpAddr) -> Result<SocketAddr> {
    let value = value.trim();
    let (port, rest) = value.split_once(' ').unwrap_or((value, ""));
    let port = port
        .parse()
        .map_err(|_| Error::Malformed("a=rtcp port is not a number"))?;
    let ip = if rest.trim().is_empty() {
        default_ip
    } else {
        parse_connection(rest)?
    };
    Ok(SocketAddr::new(ip, port))
}

fn connection_value(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => format!("IN IP4 {ip}"),
        IpAddr::V6(ip) => format!("IN IP6 {ip}"),
    }
}

fn is_hold_connection(value: &str) -> bool {
    parse_connection(value).is_ok_and(|ip| ip.is_unspecified())
}

/// A parsed SDP body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp {
    session: Vec<Line>,
    media: Vec<Media>,
}

impl Sdp {
    pub fn parse(body: &[u8]) -> Result<Sdp> {
        if body.len() > MAX_BODY {
            return Err(Error::TooLarge("body"));
        }
        let text = std::str::from_utf8(body).map_err(|_| Error::Malformed("not UTF-8"))?;
        let mut session = Vec::new();
        let mut media: Vec<Media> = Vec::new();
        let mut count = 0usize;
        for raw in text.split('\n') {
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if raw.is_empty() {
                continue;
            }
            count += 1;
            if count > MAX_LINES {
                return Err(Error::TooLarge("lines"));
            }
            let line = parse_line(raw)?;
            if count == 1 && (line.kind != b'v' || line.value.trim() != "0") {
                return Err(Error::Malformed("does not start with v=0"));
            }
            if line.kind == b'm' {
                if media.len() == MAX_MEDIA {
                    return Err(Error::TooLarge("m= lines"));
                }
                media.push(Media::parse(&line.value)?);
            } else if let Some(m) = media.last_mut() {
                m.lines.push(line);
            } else {
                session.push(line);
            }
        }
        if count == 0 {
            return Err(Error::Malformed("empty"));
        }
        if !session.iter().any(|l| l.kind == b'o') {
            return Err(Error::Malformed("no o= line"));
        }
        let sdp = Sdp { session, media };
        // Every address must be readable now, so the rest of a call cannot trip on it.
        sdp.session_connection()?;
        for i in 0..sdp.media.len() {
            sdp.remote(i)?;
        }
        Ok(sdp)
    }

    pub fn media(&self) -> &[Media] {
        &self.media
    }

    pub fn media_mut(&mut self) -> &mut [Media] {
        &mut self.media
    }

    fn session_connection(&self) -> Result<Option<IpAddr>> {
        self.session
            .iter()
            .find(|l| l.kind == b'c')
            .map(|l| parse_connection(&l.value))
            .transpose()
    }

    /// Where media section `i` wants its RTP and RTCP, and in which direction.
    pub fn remote(&self, i: usize) -> Result<Remote> {
        let m = self
            .media
            .get(i)
            .ok_or(Error::Malformed("no such m= line"))?;
        let ip = match (m.connection()?, self.session_connection()?) {
            (Some(ip), _) | (None, Some(ip)) => ip,
            (None, None) if m.port == 0 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            (None, None) => return Err(Error::Malformed("an m= line without a c= line")),
        };
        let rtp = SocketAddr::new(ip, m.port);
        let rtcp_mux = m.attribute("rtcp-mux").is_some();
        let rtcp = match m.attribute("rtcp") {
            _ if rtcp_mux => rtp,
            Some(v) => parse_rtcp(v, ip)?,
            None => SocketAddr::new(ip, m.port.saturating_add(1)),
        };
        let direction = m
            .direction()
            .or_else(|| direction_of(&self.session))
            .unwrap_or_default();
        let clock_rate = m
            .formats
            .first()
            .and_then(|f| m.codec(f))
            .map_or(DEFAULT_CLOCK_RATE, |(_, rate)| rate);
        Ok(Remote {
            rtp,
            rtcp,
            rtcp_mux,
            direction,
            clock_rate,
        })
    }

    /// Keeps only the allowed codecs (by encoding name, case-insensitive) in audio RTP
    /// streams, with their `a=rtpmap`, `a=fmtp` and `a=rtcp-fb` lines; telephone-event always
    /// stays. An empty list allows everything. An audio stream left without a voice codec is
    /// [`Error::NoCommonCodec`].
    pub fn filter_codecs<S: AsRef<str>>(&mut self, allowed: &[S]) -> Result<()> {
        if allowed.is_empty() {
            return Ok(());
        }
        let allows = |name: &str| {
            name.eq_ignore_ascii_case("telephone-event")
                || allowed
                    .iter()
                    .any(|a| a.as_ref().eq_ignore_ascii_case(name))
        };
        for m in &mut self.media {
            if m.port == 0 || !m.kind.eq_ignore_ascii_case("audio") || !m.is_rtp() {
                continue;
            }
            let (keep, drop): (Vec<String>, Vec<String>) = m
                .formats
                .iter()
                .cloned()
                .partition(|pt| m.codec(pt).is_some_and(|(name, _)| allows(name)));
            if !keep
                .iter()
                .any(|pt| m.codec(pt).is_some_and(|(name, _)| is_voice(name)))
            {
                return Err(Error::NoCommonCodec);
            }
            m.lines.retain(|l| match l.attribute() {
                Some((n, Some(v)))
                    if ["rtpmap", "fmtp", "rtcp-fb"]
                        .iter()
                        .any(|a| n.eq_ignore_ascii_case(a)) =>
                {
                    let pt = v.split(' ').next().unwrap_or("");
                    !drop.iter().any(|d| d == pt)
                }
                _ => true,
            });
            m.formats = keep;
        }
        Ok(())
    }

    /// Rewrites the body for one leg so its media comes to the relay: `o=` and every `c=`
    /// carry `ip` (a `c=0.0.0.0` hold stays as it is), `m=` section `i` carries `ports[i]`
    /// (a disabled stream keeps port 0; a missing entry disables the stream), and `a=rtcp`
    /// names `ports[i] + 1`, or `ports[i]` under rtcp-mux. ICE attributes are removed.
    /// Direction attributes and every other line are kept.
    pub fn rewrite(&mut self, ip: IpAddr, ports: &[u16]) {
        let connection = connection_value(ip);
        self.session.retain(|l| !is_ice(l));
        for l in &mut self.session {
            match l.kind {
                b'o' => rewrite_origin(l, ip),
                b'c' if !is_hold_connection(&l.value) => l.value.clone_from(&connection),
                _ => {}
            }
        }
        for (i, m) in self.media.iter_mut().enumerate() {
            let port = ports.get(i).copied().unwrap_or(0);
            if m.port != 0 {
                m.port = port;
            }
            let mux = m.attribute("rtcp-mux").is_some();
            m.lines.retain(|l| !is_ice(l));
            for l in &mut m.lines {
                if l.kind == b'c' && !is_hold_connection(&l.value) {
                    l.value.clone_from(&connection);
                } else if l.is_attribute("rtcp") {
                    let rtcp_port = if mux {
                        m.port
                    } else {
                        m.port.saturating_add(1)
                    };
                    let has_addr = l.value.split_ascii_whitespace().count() > 1;
                    l.value = if has_addr {
                        format!("rtcp:{rtcp_port} {connection}")
                    } else {
                        format!("rtcp:{rtcp_port}")
                    };
                }
            }
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

/// `o=user sess-id sess-version IN IP4 address`: the address becomes ours (topology hiding);
/// user, session id and version stay, so the origin is stable across re-offers.
fn rewrite_origin(l: &mut Line, ip: IpAddr) {
    let t: Vec<&str> = l.value.split_ascii_whitespace().collect();
    if let [user, id, version, _, _, _] = t.as_slice() {
        l.value = format!("{user} {id} {version} {}", connection_value(ip));
    }
}

fn parse_line(raw: &str) -> Result<Line> {
    let b = raw.as_bytes();
    if b.len() < 2 || b[1] != b'=' || !b[0].is_ascii_alphabetic() {
        return Err(Error::Malformed("a line is not <letter>=<value>"));
    }
    // Bytes 0 and 1 are ASCII, so 2 is a character boundary.
    Ok(Line {
        kind: b[0],
        value: raw[2..].to_string(),
    })
}

impl fmt::Display for Sdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::with_capacity(512);
        let push = |out: &mut String, l: &Line| {
            out.push(char::from(l.kind));
            out.push('=');
            out.push_str(&l.value);
            out.push_str("\r\n");
        };
        for l in &self.session {
            push(&mut out, l);
        }
        for m in &self.media {
            m.write_m_line(&mut out);
            for l in &m.lines {
                push(&mut out, l);
            }
        }
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\n\
o=carrier 1234 5678 IN IP4 198.51.100.7\r\n\
s=call\r\n\
c=IN IP4 198.51.100.7\r\n\
t=0 0\r\n\
m=audio 40000 RTP/AVP 0 8 18 9 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=no\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

    const WEBRTC_ISH: &str = "v=0\r\n\
o=- 42 2 IN IP4 10.1.2.3\r\n\
s=-\r\n\
t=0 0\r\n\
a=ice-lite\r\n\
m=audio 5004 RTP/AVP 111 0 101\r\n\
c=IN IP4 10.1.2.3\r\n\
a=rtcp:5005 IN IP4 10.1.2.3\r\n\
a=rtcp-mux\r\n\
a=candidate:1 1 UDP 2130706431 10.1.2.3 5004 typ host\r\n\
a=ice-ufrag:abcd\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=recvonly\r\n\
m=video 0 RTP/AVP 96\r\n\
a=rtpmap:96 VP8/90000\r\n";

    fn parse(s: &str) -> Sdp {
        Sdp::parse(s.as_bytes()).expect("sample SDP parses")
    }

    fn text(sdp: &Sdp) -> String {
        sdp.to_string()
    }

    #[test]
    fn untouched_lines_round_trip_in_order() {
        let sdp = parse(OFFER);
        assert_eq!(text(&sdp), OFFER);
        // LF-only bodies come back with CRLF, otherwise unchanged.
        let lf = OFFER.replace("\r\n", "\n");
        assert_eq!(text(&parse(&lf)), OFFER);
    }

    #[test]
    fn remote_addresses_per_stream() {
        let sdp = parse(OFFER);
        let r = sdp.remote(0).expect("stream 0");
        assert_eq!(r.rtp, "198.51.100.7:40000".parse().expect("addr"));
        assert_eq!(r.rtcp, "198.51.100.7:40001".parse().expect("addr"));
        assert!(!r.rtcp_mux && r.receives() && !r.on_hold() && !r.paused());
        assert_eq!(r.clock_rate, 8000);

        let sdp = parse(WEBRTC_ISH);
        let r = sdp.remote(0).expect("stream 0");
        assert_eq!(r.rtp, "10.1.2.3:5004".parse().expect("addr"));
        assert_eq!(r.rtcp, r.rtp, "rtcp-mux: RTCP on the RTP port");
        assert_eq!(r.direction, Direction::RecvOnly);
        assert_eq!(r.clock_rate, 48000);
        let v = sdp.remote(1).expect("stream 1");
        assert!(v.disabled() && !v.receives());

        let with_rtcp = OFFER.replace("a=ptime:20", "a=rtcp:41000 IN IP4 198.51.100.9");
        let r = parse(&with_rtcp).remote(0).expect("stream 0");
        assert_eq!(r.rtcp, "198.51.100.9:41000".parse().expect("addr"));
    }

    #[test]
    fn rewrite_table() {
        let ip: IpAddr = "203.0.113.10".parse().expect("ip");
        /// (input, ports, lines that must appear, text that must not)
        type Case<'a> = (String, Vec<u16>, Vec<&'a str>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                OFFER.into(),
                vec![20000],
                vec![
                    "o=carrier 1234 5678 IN IP4 203.0.113.10",
                    "c=IN IP4 203.0.113.10",
                    "m=audio 20000 RTP/AVP 0 8 18 9 101",
                    "a=sendrecv",
                    "a=fmtp:101 0-16",
                ],
                vec!["198.51.100.7"],
            ),
            (
                OFFER.replace("a=ptime:20", "a=rtcp:40001"),
                vec![20000],
                vec!["a=rtcp:20001"],
                vec!["a=rtcp:40001"],
            ),
            (
                WEBRTC_ISH.into(),
                vec![20002, 20004],
                vec![
                    "m=audio 20002 RTP/AVP 111 0 101",
                    "a=rtcp:20002 IN IP4 203.0.113.10",
                    "a=rtcp-mux",
                    "a=recvonly",
                    "m=video 0 RTP/AVP 96",
                ],
                vec!["10.1.2.3", "candidate", "ice-", "5004"],
            ),
            (
                // RFC 2543 hold: c=0.0.0.0 stays, so the far side still sees a hold.
                OFFER.replace("c=IN IP4 198.51.100.7", "c=IN IP4 0.0.0.0"),
                vec![20000],
                vec!["c=IN IP4 0.0.0.0", "m=audio 20000 "],
                vec!["c=IN IP4 203.0.113.10"],
            ),
            (
                OFFER.replace("a=sendrecv", "a=sendonly"),
                vec![20000],
                vec!["a=sendonly", "c=IN IP4 203.0.113.10"],
                vec!["a=sendrecv"],
            ),
            (
                OFFER.replace("a=sendrecv", "a=inactive"),
                vec![20000],
                vec!["a=inactive"],
                vec![],
            ),
            (
                // A relay stream missing disables the m= line rather than leaking its port.
                OFFER.into(),
                vec![],
                vec!["m=audio 0 RTP/AVP"],
                vec!["40000"],
            ),
        ];
        for (i, (input, ports, want, never)) in cases.into_iter().enumerate() {
            let mut sdp = parse(&input);
            sdp.rewrite(ip, &ports);
            let out = text(&sdp);
            for w in want {
                assert!(
                    out.lines().any(|l| l.starts_with(w)),
                    "case {i}: no line {w:?} in\n{out}"
                );
            }
            for n in never {
                assert!(!out.contains(n), "case {i}: {n:?} left in\n{out}");
            }
            // The rewritten body parses again.
            Sdp::parse(out.as_bytes()).expect("rewritten SDP parses");
        }
    }

    #[test]
    fn hold_survives_rewriting() {
        let ip: IpAddr = "203.0.113.10".parse().expect("ip");
        for (body, paused) in [
            (
                OFFER.replace("c=IN IP4 198.51.100.7", "c=IN IP4 0.0.0.0"),
                true,
            ),
            (OFFER.replace("a=sendrecv", "a=sendonly"), false),
            (OFFER.replace("a=sendrecv", "a=inactive"), true),
            (
                // Session-level direction applies to media without its own.
                OFFER
                    .replace("a=sendrecv\r\n", "")
                    .replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n"),
                false,
            ),
        ] {
            let mut sdp = parse(&body);
            let before = sdp.remote(0).expect("remote");
            assert!(before.on_hold() && !before.receives(), "{body}");
            assert_eq!(before.paused(), paused);
            sdp.rewrite(ip, &[20000]);
            let after = Sdp::parse(&sdp.to_bytes())
                .expect("parses")
                .remote(0)
                .expect("remote");
            assert!(after.on_hold(), "hold lost in rewriting:\n{sdp}");
            assert_eq!(after.paused(), paused);
        }
    }

    #[test]
    fn ipv6_connection_lines() {
        let v6 = OFFER.replace("IN IP4 198.51.100.7", "IN IP6 2001:db8::7");
        let mut sdp = parse(&v6);
        assert_eq!(
            sdp.remote(0).expect("remote").rtp,
            "[2001:db8::7]:40000".parse().expect("addr")
        );
        sdp.rewrite("2001:db8::10".parse().expect("ip"), &[20000]);
        let out = text(&sdp);
        assert!(out.contains("c=IN IP6 2001:db8::10\r\n"), "{out}");
        assert!(out.contains("o=carrier 1234 5678 IN IP6 2001:db8::10\r\n"));
        // Towards an IPv4 leg the family changes with the address.
        sdp.rewrite("192.0.2.1".parse().expect("ip"), &[20000]);
        assert!(text(&sdp).contains("c=IN IP4 192.0.2.1\r\n"));
        // A mismatched family is malformed; a host name is not supported here.
        let bad = OFFER.replace("c=IN IP4 198.51.100.7", "c=IN IP6 198.51.100.7");
        assert_eq!(Sdp::parse(bad.as_bytes()).map_err(|e| e.status()), Err(400));
        let fqdn = OFFER.replace("c=IN IP4 198.51.100.7", "c=IN IP4 media.example.com");
        assert_eq!(
            Sdp::parse(fqdn.as_bytes()).map_err(|e| e.status()),
            Err(488)
        );
    }

    #[test]
    fn codec_filter_table() {
        // (allowed, formats left, lines gone)
        let cases: Vec<(Vec<&str>, &str, Vec<&str>)> = vec![
            (vec![], "0 8 18 9 101", vec![]),
            (
                vec!["PCMA"],
                "8 101",
                vec!["a=rtpmap:0 ", "a=rtpmap:18", "a=fmtp:18"],
            ),
            (vec!["pcmu", "G729"], "0 18 101", vec!["a=rtpmap:8 "]),
            // Static types without an rtpmap are named from RFC 3551.
            (vec!["G722"], "9 101", vec!["a=rtpmap:0 "]),
        ];
        for (allowed, formats, gone) in cases {
            let mut sdp = parse(OFFER);
            sdp.filter_codecs(&allowed).expect("a codec is left");
            let out = text(&sdp);
            assert!(
                out.contains(&format!("m=audio 40000 RTP/AVP {formats}\r\n")),
                "{allowed:?}:\n{out}"
            );
            assert!(out.contains("a=rtpmap:101 telephone-event/8000"));
            for g in gone {
                assert!(!out.contains(g), "{allowed:?}: {g} kept\n{out}");
            }
        }
        // Nothing allowed is offered (telephone-event alone is no codec): 488.
        let mut sdp = parse(OFFER);
        let err = sdp.filter_codecs(&["opus"]).expect_err("no common codec");
        assert_eq!((err.status(), err.metric_label()), (488, "no_common_codec"));
        // A disabled stream and non-audio streams are not filtered.
        let mut sdp = parse(WEBRTC_ISH);
        sdp.filter_codecs(&["opus"]).expect("opus offered");
        assert!(text(&sdp).contains("m=audio 5004 RTP/AVP 111 101\r\n"));
        assert!(text(&sdp).contains("m=video 0 RTP/AVP 96\r\n"));
    }

    #[test]
    fn malformed_and_oversized_are_errors() {
        let big_line = format!(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns={}\r\n",
            "x".repeat(MAX_BODY)
        );
        let many_media = format!(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n{}",
            "m=audio 4000 RTP/AVP 0\r\n".repeat(MAX_MEDIA + 1)
        );
        let cases: Vec<(Vec<u8>, u16, &str)> = vec![
            (b"".to_vec(), 400, "sdp_malformed"),
            (b"hello".to_vec(), 400, "sdp_malformed"),
            (
                b"v=1\r\no=- 1 1 IN IP4 192.0.2.1\r\n".to_vec(),
                400,
                "sdp_malformed",
            ),
            (b"v=0\r\ns=-\r\n".to_vec(), 400, "sdp_malformed"),
            (
                OFFER.replace("m=audio 40000", "m=audio 99999").into_bytes(),
                400,
                "sdp_malformed",
            ),
            (
                OFFER
                    .replace(
                        "m=audio 40000 RTP/AVP 0 8 18 9 101",
                        "m=audio 40000 RTP/AVP",
                    )
                    .into_bytes(),
                400,
                "sdp_malformed",
            ),
            (
                OFFER.replace("c=IN IP4 198.51.100.7\r\n", "").into_bytes(),
                400,
                "sdp_malformed",
            ),
            (
                OFFER
                    .replace("m=audio 40000", "m=audio 40000/2")
                    .into_bytes(),
                488,
                "sdp_unsupported",
            ),
            (
                vec![b'v', b'=', b'0', b'\n', 0xff, 0xfe],
                400,
                "sdp_malformed",
            ),
            (big_line.into_bytes(), 400, "sdp_too_large"),
            (many_media.into_bytes(), 400, "sdp_too_large"),
        ];
        for (body, status, label) in cases {
            let err = Sdp::parse(&body).expect_err("must be refused");
            assert_eq!(
                (err.status(), err.metric_label()),
                (status, label),
                "{:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    /// Fuzz-style: every truncation and many byte flips of the samples either parse (and then
    /// survive filtering, rewriting and a second parse) or are an error. None may panic.
    #[test]
    fn truncations_and_byte_flips_never_panic() {
        let ip: IpAddr = "203.0.113.10".parse().expect("ip");
        let mut inputs = 0usize;
        let check = |body: &[u8]| {
            if let Ok(mut sdp) = Sdp::parse(body) {
                for i in 0..sdp.media().len() {
                    let _ = sdp.remote(i);
                }
                let _ = sdp.clone().filter_codecs(&["PCMA", "opus"]);
                sdp.rewrite(ip, &[20000, 20002]);
                Sdp::parse(&sdp.to_bytes()).expect("a rewritten SDP parses again");
            }
        };
        for sample in [OFFER, WEBRTC_ISH] {
            let b = sample.as_bytes();
            for n in 0..=b.len() {
                check(&b[..n]);
                inputs += 1;
            }
            for pos in 0..b.len() {
                for flip in [0x01u8, 0x20, 0x80, 0xff] {
                    let mut m = b.to_vec();
                    m[pos] ^= flip;
                    check(&m);
                }
                for put in [b' ', b'/', b':', b'=', b'\n', b'0', b'9'] {
                    let mut m = b.to_vec();
                    m[pos] = put;
                    check(&m);
                }
                inputs += 11;
            }
        }
        assert!(inputs > 5000);
    }
}
