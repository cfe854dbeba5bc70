//! Datagrams the kernel dropped before the edge could read them (a receive buffer full under a
//! flood), read from `/proc/net/udp` and `/proc/net/udp6`: no socket call reports them, and a
//! relay that looks idle while the kernel drops half its input is the worst case to debug.

use std::collections::HashMap;
use std::time::Duration;

/// How often the tables are read.
pub const EVERY: Duration = Duration::from_secs(5);

/// Which of the edge's sockets a local port is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Socket {
    SipPublic,
    SipInternal,
    Rtp,
}

impl Socket {
    pub fn label(self) -> &'static str {
        match self {
            Socket::SipPublic => "sip_public",
            Socket::SipInternal => "sip_internal",
            Socket::Rtp => "rtp",
        }
    }
}

/// One row of `/proc/net/udp{,6}`: (local port, socket inode, drops).
fn row(line: &str) -> Option<(u16, u64, u64)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
    if f.len() < 13 {
        return None;
    }
    let port = u16::from_str_radix(f[1].rsplit_once(':')?.1, 16).ok()?;
    let inode = f[9].parse().ok()?;
    let drops = f[12].parse().ok()?;
    Some((port, inode, drops))
}

/// Turns readings of the tables into monotonic per-kind totals: each socket's new drops since it
/// was last seen (sockets come and go with calls; a closed one keeps what it added).
#[derive(Default)]
pub struct DropCounter {
    seen: HashMap<u64, u64>,
}

impl DropCounter {
    /// Adds one reading (the text of both tables); returns the new drops per kind.
    pub fn read(
        &mut self,
        tables: &str,
        kind: impl Fn(u16) -> Option<Socket>,
    ) -> Vec<(Socket, u64)> {
        let mut fresh: HashMap<u64, u64> = HashMap::with_capacity(self.seen.len());
        let mut out: Vec<(Socket, u64)> = Vec::new();
        for (port, inode, drops) in tables.lines().filter_map(row) {
            let Some(k) = kind(port) else { continue };
            let before = self.seen.get(&inode).copied().unwrap_or(0);
            let new = drops.saturating_sub(before);
            if new > 0 {
                match out.iter_mut().find(|(s, _)| *s == k) {
                    Some((_, n)) => *n += new,
                    None => out.push((k, new)),
                }
            }
            fresh.insert(inode, drops);
        }
        self.seen = fresh;
        out
    }
}

/// Reads both tables (an empty string where one is missing: no IPv6, no /proc).
pub fn read_tables() -> String {
    let mut s = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    s.push_str(&std::fs::read_to_string("/proc/net/udp6").unwrap_or_default());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n";

    fn line(port: u16, inode: u64, drops: u64) -> String {
        format!(
            "  12: 0100007F:{port:04X} 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 {inode} 2 0000000000000000 {drops}\n"
        )
    }

    fn kind(port: u16) -> Option<Socket> {
        match port {
            5060 => Some(Socket::SipPublic),
            20000..=20099 => Some(Socket::Rtp),
            _ => None,
        }
    }

    #[test]
    fn new_drops_are_counted_once_per_socket_and_closed_sockets_keep_theirs() {
        let mut c = DropCounter::default();
        let first = format!(
            "{HEAD}{}{}{}",
            line(5060, 1, 7),
            line(20000, 2, 3),
            line(9999, 3, 100)
        );
        assert_eq!(
            c.read(&first, kind),
            [(Socket::SipPublic, 7), (Socket::Rtp, 3)]
        );
        // Same readings: nothing new. The RTP socket closes, another opens with 2 drops.
        let second = format!("{HEAD}{}{}", line(5060, 1, 7), line(20002, 4, 2));
        assert_eq!(c.read(&second, kind), [(Socket::Rtp, 2)]);
        let third = format!("{HEAD}{}{}", line(5060, 1, 10), line(20002, 4, 2));
        assert_eq!(c.read(&third, kind), [(Socket::SipPublic, 3)]);
        assert!(c.read("garbage\n", kind).is_empty());
    }
}
