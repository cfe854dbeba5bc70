//! A small SIP user agent on a raw UDP socket, for calls whose media a test drives itself: it
//! places or answers a call with an SDP the test wrote (naming the test's own RTP sockets),
//! sends and answers re-INVITEs and BYEs inside the dialog, and shows every message it saw.
//!
//! It is deliberately plain: one transaction at a time, the test decides the order. Datagrams
//! that arrive while it waits for something else are kept for later; retransmissions of a
//! message already seen are dropped (loopback loses nothing, so they only mean "slow").

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::sip::{SipMsg, param, uri_of};

/// A request or response the agent received, with where it came from.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub msg: SipMsg,
    pub src: SocketAddr,
}

/// One side's view of a dialog (RFC 3261 §12).
#[derive(Clone, Debug)]
pub struct Dialog {
    pub call_id: String,
    /// Our From value (with our tag) in requests we send.
    pub local: String,
    /// Their To value (with their tag once known).
    pub remote: String,
    /// Request-URI of in-dialog requests: the other side's Contact.
    pub target: String,
    /// Where requests go (the edge).
    pub peer: SocketAddr,
    pub cseq: u32,
    /// The Request-URI of the initial INVITE (a non-2xx ACK repeats it).
    pub first_uri: String,
}

/// A request we sent and whose answer we wait for.
#[derive(Clone, Debug)]
pub struct Tx {
    pub method: String,
    pub cseq: u32,
    pub branch: String,
    /// The request line's URI.
    pub uri: String,
    /// When it was sent.
    pub at: Instant,
}

pub struct Ua {
    pub name: String,
    sock: UdpSocket,
    pub local: SocketAddr,
    user: String,
    stash: VecDeque<Incoming>,
    seen: HashSet<String>,
    /// Every message sent and received, in order (for failure reports).
    pub log: Vec<SipMsg>,
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}u{n}u{t:x}", std::process::id())
}

impl Ua {
    /// An agent on an ephemeral port of `ip`, whose Contact user is `user`.
    pub fn bind(name: &str, ip: IpAddr, user: &str) -> Self {
        let sock = UdpSocket::bind((ip, 0)).expect("bind a SIP socket");
        Self::on(name, sock, user)
    }

    /// An agent on `addr` (an address put in a trunk before the agent was made).
    pub fn bind_at(name: &str, addr: SocketAddr, user: &str) -> Self {
        let sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        Self::on(name, sock, user)
    }

    fn on(name: &str, sock: UdpSocket, user: &str) -> Self {
        let local = sock.local_addr().expect("local address");
        Self {
            name: name.to_string(),
            sock,
            local,
            user: user.to_string(),
            stash: VecDeque::new(),
            seen: HashSet::new(),
            log: Vec::new(),
        }
    }

    pub fn contact(&self) -> String {
        format!("<sip:{}@{}>", self.user, self.local)
    }

    /// The exchange so far, one line per message.
    pub fn report(&self) -> String {
        let mut s = format!("{} ({}):\n", self.name, self.local);
        for m in &self.log {
            s.push_str("  ");
            s.push_str(&m.summary());
            s.push('\n');
        }
        s
    }

    fn send_text(&mut self, to: SocketAddr, text: String) {
        if let Some(m) = SipMsg::parse(&text, true) {
            self.log.push(m);
        }
        self.sock
            .send_to(text.as_bytes(), to)
            .unwrap_or_else(|e| panic!("{}: send to {to}: {e}", self.name));
    }

    /// The first message `pred` accepts within `timeout` (kept ones first).
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&SipMsg) -> bool,
    ) -> Option<Incoming> {
        if let Some(i) = self.stash.iter().position(|m| pred(&m.msg)) {
            return self.stash.remove(i);
        }
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65_535];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // A zero read timeout means "block forever": poll for a millisecond instead.
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            let (n, src) = match self.sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(_) => return None,
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let Some(msg) = SipMsg::parse(&text, false) else {
                continue;
            };
            if !self.seen.insert(dedupe_key(&msg)) {
                continue;
            }
            self.log.push(msg.clone());
            let inc = Incoming { msg, src };
            if pred(&inc.msg) {
                return Some(inc);
            }
            self.stash.push_back(inc);
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// The next request with `method`, or a panic showing the exchange.
    pub fn expect_request(&mut self, method: &str, timeout: Duration) -> Incoming {
        self.wait_for(timeout, |m| m.method() == Some(method))
            .unwrap_or_else(|| {
                panic!(
                    "{} received no {method} within {timeout:?}\n{}",
                    self.name,
                    self.report()
                )
            })
    }

    /// Whether a request with `method` arrives within `window`.
    pub fn gets_request(&mut self, method: &str, window: Duration) -> Option<Incoming> {
        self.wait_for(window, |m| m.method() == Some(method))
    }

    // ---- as caller ---------------------------------------------------------------------

    /// Sends an INVITE to `ruri` at `peer` with an SDP body (empty: none); returns the new
    /// dialog (no remote tag yet) and the transaction.
    pub fn invite(
        &mut self,
        peer: SocketAddr,
        ruri: &str,
        from_user: &str,
        sdp: &str,
    ) -> (Dialog, Tx) {
        let mut d = Dialog {
            call_id: format!("media-{}@e2e.test", unique()),
            local: format!("<sip:{from_user}@{}>;tag=t{}", self.local.ip(), unique()),
            remote: format!("<{ruri}>"),
            target: ruri.to_string(),
            peer,
            cseq: 0,
            first_uri: ruri.to_string(),
        };
        let tx = self.request(&mut d, "INVITE", "", sdp);
        (d, tx)
    }

    /// Sends an in-dialog request (or the initial INVITE) with the next CSeq.
    pub fn request(&mut self, d: &mut Dialog, method: &str, extra: &str, body: &str) -> Tx {
        d.cseq += 1;
        let branch = format!("z9hG4bK-ua-{}", unique());
        let contact = if matches!(method, "INVITE" | "UPDATE") {
            format!("Contact: {}\r\n", self.contact())
        } else {
            String::new()
        };
        let text = format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{contact}{extra}{body}",
            uri = d.target,
            local = self.local,
            from = d.local,
            to = d.remote,
            cid = d.call_id,
            cseq = d.cseq,
            body = body_part(body),
        );
        self.send_text(d.peer, text);
        Tx {
            method: method.to_string(),
            cseq: d.cseq,
            branch,
            uri: d.target.clone(),
            at: Instant::now(),
        }
    }

    /// The final answer to `tx` (provisional ones skipped). An INVITE's answer is ACKed: a
    /// 2xx with a new ACK in the dialog it confirms (whose tag and Contact the dialog learns),
    /// anything else hop by hop with the INVITE's branch.
    pub fn final_response(&mut self, d: &mut Dialog, tx: &Tx, timeout: Duration) -> SipMsg {
        let (cseq, method) = (tx.cseq, tx.method.clone());
        let inc = self
            .wait_for(timeout, |m| {
                m.code().is_some_and(|c| c >= 200)
                    && m.cseq_number() == Some(cseq)
                    && m.cseq_method() == Some(method.as_str())
            })
            .unwrap_or_else(|| {
                panic!(
                    "{} got no final answer to {method} (CSeq {cseq}) within {timeout:?}\n{}",
                    self.name,
                    self.report()
                )
            });
        let resp = inc.msg;
        let code = resp.code().unwrap_or(0);
        if method == "INVITE" {
            if (200..300).contains(&code) {
                if let Some(to) = resp.header("To") {
                    d.remote = to.to_string();
                }
                if let Some(c) = resp.header("Contact") {
                    d.target = uri_of(c);
                }
                let text = format!(
                    "ACK {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-ua-{b};rport\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                    uri = d.target,
                    local = self.local,
                    b = unique(),
                    from = d.local,
                    to = d.remote,
                    cid = d.call_id,
                );
                self.send_text(d.peer, text);
            } else {
                let text = format!(
                    "ACK {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                    uri = tx.uri,
                    local = self.local,
                    branch = tx.branch,
                    from = d.local,
                    to = resp.header("To").unwrap_or_default(),
                    cid = d.call_id,
                );
                self.send_text(d.peer, text);
            }
        }
        resp
    }

    /// Places a call and waits for its final answer (ACKed).
    pub fn call(
        &mut self,
        peer: SocketAddr,
        ruri: &str,
        from_user: &str,
        sdp: &str,
    ) -> (Dialog, SipMsg) {
        let (mut d, tx) = self.invite(peer, ruri, from_user, sdp);
        let resp = self.final_response(&mut d, &tx, Duration::from_secs(5));
        (d, resp)
    }

    /// A re-INVITE with a new offer, answered and ACKed; returns the answer.
    pub fn reinvite(&mut self, d: &mut Dialog, sdp: &str) -> SipMsg {
        let tx = self.request(d, "INVITE", "", sdp);
        self.final_response(d, &tx, Duration::from_secs(5))
    }

    /// Sends BYE and waits for its answer.
    pub fn bye(&mut self, d: &mut Dialog) -> SipMsg {
        let tx = self.request(d, "BYE", "", "");
        self.final_response(d, &tx, Duration::from_secs(5))
    }

    // ---- as callee ---------------------------------------------------------------------

    /// Answers a request: Via, From, To (with `to_tag` added when it has none), Call-ID and
    /// CSeq copied, our Contact on INVITE answers, the SDP body when not empty.
    pub fn respond(&mut self, req: &Incoming, code: u16, reason: &str, to_tag: &str, body: &str) {
        self.respond_with(req, code, reason, to_tag, "", body);
    }

    /// [`Ua::respond`] with `extra` header lines (each ending in CRLF).
    pub fn respond_with(
        &mut self,
        req: &Incoming,
        code: u16,
        reason: &str,
        to_tag: &str,
        extra: &str,
        body: &str,
    ) {
        let m = &req.msg;
        let mut text = format!("SIP/2.0 {code} {reason}\r\n");
        for via in m.header_all("Via") {
            text.push_str(&format!("Via: {via}\r\n"));
        }
        let to = m.header("To").unwrap_or_default();
        let to = if param(to, "tag").is_some() || code == 100 {
            to.to_string()
        } else {
            format!("{to};tag={to_tag}")
        };
        text.push_str(&format!(
            "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n",
            m.header("From").unwrap_or_default(),
            m.header("Call-ID").unwrap_or_default(),
            m.header("CSeq").unwrap_or_default(),
        ));
        if m.method() == Some("INVITE") && (200..300).contains(&code) {
            text.push_str(&format!("Contact: {}\r\n", self.contact()));
        }
        text.push_str(extra);
        text.push_str(&body_part(body));
        self.send_text(req.src, text);
    }

    /// Answers an INVITE with 200 and `sdp`, and returns the dialog it makes on our side.
    pub fn accept(&mut self, invite: &Incoming, sdp: &str) -> Dialog {
        let tag = format!("p{}", unique());
        self.respond(invite, 200, "OK", &tag, sdp);
        let m = &invite.msg;
        Dialog {
            call_id: m.header("Call-ID").unwrap_or_default().to_string(),
            local: format!("{};tag={tag}", m.header("To").unwrap_or_default()),
            remote: m.header("From").unwrap_or_default().to_string(),
            target: m.header("Contact").map(uri_of).unwrap_or_default(),
            peer: invite.src,
            cseq: 100,
            first_uri: m.uri().unwrap_or_default().to_string(),
        }
    }

    /// Waits for an INVITE, answers it with `sdp`, takes its ACK; returns the INVITE and the
    /// dialog.
    pub fn answer(&mut self, sdp: &str) -> (Incoming, Dialog) {
        let invite = self.expect_request("INVITE", Duration::from_secs(5));
        let d = self.accept(&invite, sdp);
        self.expect_request("ACK", Duration::from_secs(5));
        (invite, d)
    }

    /// Waits for a re-INVITE, answers it with `sdp` and takes its ACK; returns the re-INVITE.
    pub fn answer_reinvite(&mut self, sdp: &str) -> Incoming {
        let invite = self.expect_request("INVITE", Duration::from_secs(5));
        self.respond(&invite, 200, "OK", "", sdp);
        self.expect_request("ACK", Duration::from_secs(5));
        invite
    }

    /// Waits for a BYE and answers 200.
    pub fn answer_bye(&mut self, timeout: Duration) -> Incoming {
        let bye = self.expect_request("BYE", timeout);
        self.respond(&bye, 200, "OK", "", "");
        bye
    }
}

/// `Content-Type`/`Content-Length` and the body, or just `Content-Length: 0`.
fn body_part(body: &str) -> String {
    if body.is_empty() {
        "Content-Length: 0\r\n\r\n".to_string()
    } else {
        format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }
}

/// Same key for a message and its retransmissions.
fn dedupe_key(m: &SipMsg) -> String {
    let branch = m
        .header("Via")
        .and_then(|v| param(v, "branch"))
        .unwrap_or_default();
    format!(
        "{}|{}|{}|{}",
        m.start,
        m.header("Call-ID").unwrap_or_default(),
        m.header("CSeq").unwrap_or_default(),
        branch
    )
}

/// A re-INVITE from `from` on `d` that crosses the edge to `to`, which answers 200 with
/// `answer`; `from` ACKs and `to` sees the ACK. Returns the re-INVITE as `to` got it and the 200
/// as `from` got it.
pub fn reinvite_through(
    from: &mut Ua,
    d: &mut Dialog,
    to: &mut Ua,
    offer: &str,
    answer: &str,
) -> (Incoming, SipMsg) {
    let wait = Duration::from_secs(5);
    let tx = from.request(d, "INVITE", "", offer);
    let reinvite = to.expect_request("INVITE", wait);
    to.respond(&reinvite, 200, "OK", "", answer);
    let ok = from.final_response(d, &tx, wait);
    to.expect_request("ACK", wait);
    (reinvite, ok)
}
