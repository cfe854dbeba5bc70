//! The carrier ACL as the edge looks it up: which trunks' `allowedCidrs` hold a source address.
//!
//! Networks are kept per address family in one hash map keyed by (prefix length, network
//! address), so a lookup costs one probe per distinct prefix length in use (a handful in
//! practice: /32, /29, /24 …) however many trunks there are. A linear scan over every CIDR, as
//! before, grew with the trunk count and ran twice for every new INVITE.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

use ipnet::IpNet;

/// Trunks by source network (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct SourceAcl {
    v4: Family<u32>,
    v6: Family<u128>,
}

#[derive(Clone, Debug)]
struct Family<A> {
    /// Prefix lengths present.
    lens: Vec<u8>,
    /// (prefix length, network address) → trunks, ascending, without repeats.
    nets: HashMap<(u8, A), Vec<u32>>,
}

impl<A> Default for Family<A> {
    fn default() -> Self {
        Family {
            lens: Vec::new(),
            nets: HashMap::new(),
        }
    }
}

/// An address as an integer whose top `len` bits can be kept.
trait Bits: Copy + Eq + Hash {
    fn keep(self, len: u8) -> Self;
}

/// `Bits` for an unsigned integer of the given width.
macro_rules! bits {
    ($t:ty) => {
        impl Bits for $t {
            fn keep(self, len: u8) -> $t {
                match u32::from(len).min(<$t>::BITS) {
                    0 => 0,
                    l => self & (<$t>::MAX << (<$t>::BITS - l)),
                }
            }
        }
    };
}
bits!(u32);
bits!(u128);

impl<A: Bits> Family<A> {
    fn insert(&mut self, len: u8, addr: A, trunk: u32) {
        let trunks = self.nets.entry((len, addr.keep(len))).or_default();
        if let Err(at) = trunks.binary_search(&trunk) {
            trunks.insert(at, trunk);
        }
        if !self.lens.contains(&len) {
            self.lens.push(len);
        }
    }

    fn hits(&self, addr: A) -> impl Iterator<Item = &[u32]> + '_ {
        self.lens
            .iter()
            .filter_map(move |&len| self.nets.get(&(len, addr.keep(len))).map(Vec::as_slice))
    }
}

impl SourceAcl {
    /// Builds the index from (network, trunk index) pairs, in any order.
    pub fn build(entries: impl IntoIterator<Item = (IpNet, u32)>) -> Self {
        let mut acl = SourceAcl::default();
        for (net, trunk) in entries {
            match net {
                IpNet::V4(n) => acl.v4.insert(n.prefix_len(), u32::from(n.network()), trunk),
                IpNet::V6(n) => acl
                    .v6
                    .insert(n.prefix_len(), u128::from(n.network()), trunk),
            }
        }
        acl
    }

    /// Whether any trunk admits `ip` (the gate in front of everything else).
    pub fn allows(&self, ip: IpAddr) -> bool {
        match canonical(ip) {
            IpAddr::V4(a) => self.v4.hits(u32::from(a)).next().is_some(),
            IpAddr::V6(a) => self.v6.hits(u128::from(a)).next().is_some(),
        }
    }

    /// The trunks whose networks hold `ip`, ascending, each once (empty = deny).
    pub fn trunks(&self, ip: IpAddr) -> Vec<u32> {
        let mut out: Vec<u32> = match canonical(ip) {
            IpAddr::V4(a) => self.v4.hits(u32::from(a)).flatten().copied().collect(),
            IpAddr::V6(a) => self.v6.hits(u128::from(a)).flatten().copied().collect(),
        };
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Distinct networks held.
    pub fn networks(&self) -> usize {
        self.v4.nets.len() + self.v6.nets.len()
    }
}

/// An IPv4 peer reached over an IPv6 socket arrives as `::ffff:a.b.c.d`; the ACL holds it as
/// IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn acl(entries: &[(&str, u32)]) -> SourceAcl {
        SourceAcl::build(entries.iter().map(|(n, t)| (n.parse().unwrap(), *t)))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn overlapping_networks_give_every_trunk_once_in_order() {
        let a = acl(&[
            ("203.0.113.0/28", 3),
            ("198.51.100.0/24", 1),
            ("203.0.113.8/29", 1),
            ("203.0.113.8/29", 3),
            ("203.0.113.9/32", 0),
        ]);
        assert_eq!(a.trunks(ip("203.0.113.9")), vec![0, 1, 3]);
        assert_eq!(a.trunks(ip("203.0.113.10")), vec![1, 3]);
        assert_eq!(a.trunks(ip("203.0.113.1")), vec![3]);
        assert_eq!(a.trunks(ip("203.0.113.16")), Vec::<u32>::new());
        assert_eq!(a.trunks(ip("198.51.100.255")), vec![1]);
        assert!(a.allows(ip("198.51.100.7")) && !a.allows(ip("198.51.101.7")));
        assert_eq!(a.networks(), 4);
    }

    #[test]
    fn mapped_ipv4_and_native_ipv6_are_told_apart() {
        let a = acl(&[
            ("192.0.2.0/24", 0),
            ("2001:db8::/32", 1),
            ("2001:db8:1::1/128", 2),
        ]);
        assert_eq!(a.trunks(ip("::ffff:192.0.2.5")), vec![0]);
        assert_eq!(a.trunks(ip("2001:db8:1::1")), vec![1, 2]);
        assert_eq!(a.trunks(ip("2001:db8:2::1")), vec![1]);
        assert!(!a.allows(ip("2001:db9::1")));
        // The IPv4 network says nothing about the IPv6 address with the same low bits.
        assert!(!a.allows(ip("::c000:205")));
    }

    #[test]
    fn zero_length_prefixes_hold_everything_of_their_family() {
        let a = acl(&[("0.0.0.0/0", 4), ("::/0", 5)]);
        assert_eq!(a.trunks(ip("8.8.8.8")), vec![4]);
        assert_eq!(a.trunks(ip("2001:db8::1")), vec![5]);
    }

    #[test]
    fn host_bits_in_a_network_are_ignored() {
        // compile() truncates networks already; the index must not depend on it.
        let a = acl(&[("10.1.2.3/8", 0)]);
        assert_eq!(a.trunks(ip("10.200.0.1")), vec![0]);
    }

    #[test]
    fn empty_acl_denies() {
        let a = SourceAcl::default();
        assert!(!a.allows(ip("127.0.0.1")) && a.trunks(ip("::1")).is_empty());
    }
}
