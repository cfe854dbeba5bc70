//! Reading SIP messages as a test sees them (from sipp traces or a raw socket), a raw UDP peer,
//! and the MD5 digest computation (RFC 2617 §3.2.2, RFC 3261 §22.4) done independently of the
//! edge's own digest code.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// One SIP message.
#[derive(Clone, Debug)]
pub struct SipMsg {
    /// Sent by the owner of the trace (false: received by it).
    pub sent: bool,
    /// Request-Line or Status-Line.
    pub start: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Compact header forms (RFC 3261 §7.3.3) mapped to their full names.
fn full_name(name: &str) -> &str {
    match name.to_ascii_lowercase().as_str() {
        "i" => "Call-ID",
        "f" => "From",
        "t" => "To",
        "v" => "Via",
        "m" => "Contact",
        "l" => "Content-Length",
        "c" => "Content-Type",
        "k" => "Supported",
        "s" => "Subject",
        "e" => "Content-Encoding",
        _ => name,
    }
}

impl SipMsg {
    /// Parses a message; None when there is no start line.
    pub fn parse(text: &str, sent: bool) -> Option<SipMsg> {
        let (head, body) = match text.find("\r\n\r\n") {
            Some(i) => (&text[..i], &text[i + 4..]),
            None => match text.find("\n\n") {
                Some(i) => (&text[..i], &text[i + 2..]),
                None => (text, ""),
            },
        };
        let mut lines = head.lines().map(|l| l.trim_end_matches('\r'));
        let start = lines.find(|l| !l.trim().is_empty())?.trim().to_string();
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                // Folded continuation (RFC 3261 §7.3.1).
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
                continue;
            }
            if let Some((n, v)) = line.split_once(':') {
                headers.push((full_name(n.trim()).to_string(), v.trim().to_string()));
            }
        }
        Some(SipMsg {
            sent,
            start,
            headers,
            body: body.to_string(),
        })
    }

    pub fn is_request(&self) -> bool {
        !self.start.starts_with("SIP/")
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&str> {
        self.is_request()
            .then(|| self.start.split_whitespace().next())
            .flatten()
    }

    /// The Request-URI of a request.
    pub fn uri(&self) -> Option<&str> {
        self.is_request()
            .then(|| self.start.split_whitespace().nth(1))
            .flatten()
    }

    /// The status code of a response.
    pub fn code(&self) -> Option<u16> {
        if self.is_request() {
            return None;
        }
        self.start.split_whitespace().nth(1)?.parse().ok()
    }

    /// The first value of a header (case-insensitive; compact forms understood).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, comma-joined values split for Via.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The method named in CSeq.
    pub fn cseq_method(&self) -> Option<&str> {
        self.header("CSeq")?.split_whitespace().nth(1)
    }

    pub fn cseq_number(&self) -> Option<u32> {
        self.header("CSeq")?.split_whitespace().next()?.parse().ok()
    }

    /// Every header line as `Name: value`, for leak checks (the body is not included).
    pub fn header_text(&self) -> String {
        let mut s = self.start.clone();
        for (n, v) in &self.headers {
            s.push('\n');
            s.push_str(n);
            s.push_str(": ");
            s.push_str(v);
        }
        s
    }

    /// One line for failure messages: `-> INVITE sip:..` or `<- 200 OK (INVITE)`.
    pub fn summary(&self) -> String {
        let arrow = if self.sent { "->" } else { "<-" };
        match self.is_request() {
            true => format!("{arrow} {}", self.start),
            false => format!(
                "{arrow} {} ({})",
                self.start,
                self.cseq_method().unwrap_or("?")
            ),
        }
    }

    /// The whole message as text.
    pub fn text(&self) -> String {
        let mut s = self.header_text();
        s.push_str("\n\n");
        s.push_str(&self.body);
        s
    }
}

/// The user part of the URI in a header value or URI (`"A" <sip:+64..@h;user=phone>;tag=x`
/// → `+64..`).
pub fn uri_user(value: &str) -> Option<String> {
    let v = value.trim();
    let uri = match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => &v[a + 1..b],
        _ => v.split(';').next().unwrap_or(v),
    };
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
        .or_else(|| uri.strip_prefix("tel:"))?;
    let user = match rest.find('@') {
        Some(i) => &rest[..i],
        None if uri.starts_with("tel:") => rest,
        None => return None,
    };
    Some(user.split([';', '?']).next().unwrap_or(user).to_string())
}

/// The URI inside a name-addr (`<sip:x@y>;tag=1` → `sip:x@y`).
pub fn uri_of(value: &str) -> String {
    let v = value.trim();
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => v[a + 1..b].to_string(),
        _ => v.split(';').next().unwrap_or(v).trim().to_string(),
    }
}

/// A `;name=value` parameter of a header value.
pub fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// The parameters of a Digest challenge or credentials value, names lower-cased, quotes
/// removed.
pub fn digest_params(value: &str) -> std::collections::HashMap<String, String> {
    let v = value.trim();
    let v = v
        .strip_prefix("Digest")
        .or_else(|| v.strip_prefix("digest"))
        .unwrap_or(v);
    let mut out = std::collections::HashMap::new();
    let mut rest = v.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let name = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = rest[eq + 1..].trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (q[..end].to_string(), q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.insert(name, value);
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

fn md5_hex(s: &str) -> String {
    use md5::{Digest, Md5};
    let d = Md5::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The MD5 digest `response` (RFC 2617 §3.2.2.1); with `qop=auth` when `nc_cnonce` is given.
pub fn digest_md5_response(
    user: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    nc_cnonce: Option<(&str, &str)>,
) -> String {
    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    match nc_cnonce {
        Some((nc, cnonce)) => md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")),
        None => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

/// An `Authorization` value answering an MD5 challenge with qop=auth.
pub fn digest_md5_authorization(
    user: &str,
    realm: &str,
    password: &str,
    uri: &str,
    nonce: &str,
) -> String {
    let (nc, cnonce) = ("00000001", "e2ecnonce42");
    let response = digest_md5_response(
        user,
        realm,
        password,
        "INVITE",
        uri,
        nonce,
        Some((nc, cnonce)),
    );
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"{cnonce}\""
    )
}

/// A UDP socket that speaks raw SIP, for what sipp cannot do.
pub struct RawUdp {
    pub sock: UdpSocket,
    pub local: SocketAddr,
}

impl RawUdp {
    /// Binds an ephemeral port on `ip`.
    pub fn bind(ip: IpAddr) -> Self {
        let sock = UdpSocket::bind((ip, 0)).expect("bind a raw UDP socket");
        let local = sock.local_addr().expect("local address");
        Self { sock, local }
    }

    pub fn send(&self, to: SocketAddr, bytes: &[u8]) {
        // Datagrams larger than the loopback MTU still go as one datagram; an error here is a
        // test bug (e.g. over 64 KiB).
        self.sock.send_to(bytes, to).expect("send a datagram");
    }

    /// The next datagram within `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65_535];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.sock.set_read_timeout(Some(left)).ok()?;
            match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => return Some(buf[..n].to_vec()),
                // ICMP port unreachable from an earlier send shows up as an error here.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(_) => return None,
            }
        }
    }

    /// The next SIP message within `timeout`.
    pub fn recv_msg(&self, timeout: Duration) -> Option<SipMsg> {
        let bytes = self.recv(timeout)?;
        SipMsg::parse(&String::from_utf8_lossy(&bytes), false)
    }

    /// The first response with a final status (>= 200) to `method` within `timeout`; the
    /// provisional ones before it are skipped.
    pub fn recv_final(&self, method: &str, timeout: Duration) -> Option<SipMsg> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self.recv_msg(left)?;
            if m.code().is_some_and(|c| c >= 200) && m.cseq_method() == Some(method) {
                return Some(m);
            }
        }
    }

    /// Everything that arrives within `window`.
    pub fn drain(&self, window: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        while let Some(d) = self.recv(deadline.saturating_duration_since(Instant::now())) {
            out.push(d);
        }
        out
    }
}

/// A carrier's INVITE written by hand, for the raw socket.
#[derive(Clone, Debug)]
pub struct RawInvite {
    pub ruri: String,
    pub from_user: String,
    pub call_id: String,
    pub from_tag: String,
    pub branch: String,
    pub cseq: u32,
    pub extra: String,
}

impl RawInvite {
    /// An INVITE to `ruri` from `local` with fresh identifiers.
    pub fn new(ruri: &str, from_user: &str, label: &str) -> Self {
        Self {
            ruri: ruri.into(),
            from_user: from_user.into(),
            call_id: format!("{label}-{}@e2e.test", unique()),
            from_tag: format!("ft{}", unique()),
            branch: format!("z9hG4bK-e2e-{}", unique()),
            cseq: 1,
            extra: String::new(),
        }
    }

    /// The next request of the same caller: new branch and CSeq, same Call-ID and tag.
    pub fn next(&self) -> Self {
        Self {
            branch: format!("z9hG4bK-e2e-{}", unique()),
            cseq: self.cseq + 1,
            extra: String::new(),
            ..self.clone()
        }
    }

    fn common(&self, method: &str, ruri: &str, local: SocketAddr, cseq_method: &str) -> String {
        format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={};rport\r\nFrom: <sip:{}@{}>;tag={}\r\nTo: <{}>\r\nCall-ID: {}\r\nCSeq: {} {cseq_method}\r\nMax-Forwards: 70\r\n",
            self.branch,
            self.from_user,
            local.ip(),
            self.from_tag,
            self.ruri,
            self.call_id,
            self.cseq
        )
    }

    /// The INVITE with an SDP offer.
    pub fn invite(&self, local: SocketAddr) -> Vec<u8> {
        let body = format!(
            "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
            ip = local.ip()
        );
        let mut s = self.common("INVITE", &self.ruri, local, "INVITE");
        s.push_str(&format!(
            "Contact: <sip:{}@{local}>\r\n{}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            self.from_user,
            self.extra,
            body.len()
        ));
        s.into_bytes()
    }

    /// The CANCEL of this INVITE (same branch, Request-URI, Call-ID, From, To and CSeq
    /// number: RFC 3261 §9.1), with `local` in its Via.
    pub fn cancel(&self, local: SocketAddr) -> Vec<u8> {
        let s = self.common("CANCEL", &self.ruri, local, "CANCEL");
        format!("{s}Content-Length: 0\r\n\r\n").into_bytes()
    }

    /// The ACK of a non-2xx final answer (same branch, RFC 3261 §17.1.1.3).
    pub fn ack_non_2xx(&self, local: SocketAddr, resp: &SipMsg) -> Vec<u8> {
        let to = resp.header("To").unwrap_or_default();
        let s = self.common("ACK", &self.ruri, local, "ACK");
        let s = replace_to(&s, to);
        format!("{s}Content-Length: 0\r\n\r\n").into_bytes()
    }

    /// An in-dialog request (`ACK` of a 2xx or `BYE`) after `answer`, sent to its Contact.
    pub fn in_dialog(
        &self,
        method: &str,
        cseq: u32,
        local: SocketAddr,
        answer: &SipMsg,
    ) -> Vec<u8> {
        let target = answer
            .header("Contact")
            .map(uri_of)
            .unwrap_or_else(|| self.ruri.clone());
        let to = answer.header("To").unwrap_or_default();
        let req = Self {
            branch: format!("z9hG4bK-e2e-{}", unique()),
            cseq,
            ..self.clone()
        };
        let s = req.common(method, &target, local, method);
        let s = replace_to(&s, to);
        format!("{s}Content-Length: 0\r\n\r\n").into_bytes()
    }
}

/// `msg` (header lines ending in CRLF) with its To line replaced.
fn replace_to(msg: &str, to: &str) -> String {
    let mut out = String::with_capacity(msg.len() + to.len());
    for line in msg.split_terminator("\r\n") {
        if line.starts_with("To:") {
            out.push_str("To: ");
            out.push_str(to);
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}x{n}x{t:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_messages_and_values() {
        let m = SipMsg::parse(
            "SIP/2.0 401 Unauthorized\r\nv: SIP/2.0/UDP a;branch=z9hG4bK1\r\nWWW-Authenticate: Digest realm=\"r\", nonce=\"n1\", algorithm=SHA-256, qop=\"auth\"\r\nWWW-Authenticate: Digest realm=\"r\", nonce=\"n1\", algorithm=MD5\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .expect("a message");
        assert_eq!(m.code(), Some(401));
        assert_eq!(m.cseq_method(), Some("INVITE"));
        assert_eq!(m.header("via"), Some("SIP/2.0/UDP a;branch=z9hG4bK1"));
        let md5 = m.header_all("WWW-Authenticate")[1];
        let p = digest_params(md5);
        assert_eq!(p.get("nonce").map(String::as_str), Some("n1"));
        assert_eq!(p.get("algorithm").map(String::as_str), Some("MD5"));
        assert_eq!(
            uri_user("\"A\" <sip:+6498879333@h;user=phone>;tag=1").as_deref(),
            Some("+6498879333")
        );
        assert_eq!(param("<sip:a@b>;tag=xyz", "tag").as_deref(), Some("xyz"));
    }

    #[test]
    fn md5_digest_matches_rfc_2617() {
        // RFC 2617 §3.5 (the URI and method of the example).
        let r = digest_md5_response(
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some(("00000001", "0a4f113b")),
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }
}
