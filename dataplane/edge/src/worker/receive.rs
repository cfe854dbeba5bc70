//! What receiving needs besides the worker's demultiplexing (`demux.rs`): the lines every
//! response repeats from its request, and loop detection.

use std::net::SocketAddr;

use trunkgate_sip::{HasHeaders, Request};

use super::Shared;
use crate::sip::ids::owner;
use crate::sip::msg;

/// RFC 3261 §16.3 item 4 in spirit: a request carrying a Via we minted came back to us.
pub fn is_loop(shared: &Shared, req: &Request) -> bool {
    msg::headers(req, "Via")
        .flat_map(trunkgate_sip::list_entries)
        .any(|v| {
            msg::via_param(v, "branch").and_then(owner).is_some()
                && (v.contains(shared.public_hostport.as_str())
                    || v.contains(shared.internal_hostport.as_str()))
        })
}

/// The lines every response to `req` repeats: Via (top one with received/rport, RFC 3581),
/// From, To (with our tag), Call-ID, CSeq.
pub fn response_prefix(req: &Request, src: SocketAddr, tag: Option<&str>) -> String {
    response_prefix_of(req, src, tag)
}

pub fn response_prefix_of(m: &impl HasHeaders, src: SocketAddr, tag: Option<&str>) -> String {
    let mut s = String::with_capacity(512);
    for (i, via) in msg::headers(m, "Via").enumerate() {
        s.push_str("Via: ");
        if i == 0 {
            s.push_str(&with_received(via, src));
        } else {
            s.push_str(via);
        }
        s.push_str("\r\n");
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        if let Some(v) = msg::header(m, name) {
            s.push_str(name);
            s.push_str(": ");
            s.push_str(v);
            if name == "To"
                && msg::header_param(v, "tag").is_none()
                && let Some(t) = tag
            {
                s.push_str(";tag=");
                s.push_str(t);
            }
            s.push_str("\r\n");
        }
    }
    s
}

/// RFC 3261 §18.2.1 `received` and RFC 3581 `rport` on the top Via.
pub(super) fn with_received(via: &str, src: SocketAddr) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (i, p) in via.split(';').enumerate() {
        let name = p.split('=').next().unwrap_or("").trim();
        if i > 0 && name.eq_ignore_ascii_case("rport") {
            parts.push(format!("rport={}", src.port()));
        } else if i > 0 && name.eq_ignore_ascii_case("received") {
            continue;
        } else {
            parts.push(p.to_string());
        }
    }
    let mut out = parts.join(";");
    out.push_str(&format!(";received={}", src.ip()));
    out
}
