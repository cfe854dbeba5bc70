//! The pure half of server location: which lookups a target needs, which NAPTR records count,
//! and the RFC 2782 order of SRV records. No I/O, so every rule is unit-tested here.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::proto::rr::{
    Name,
    rdata::{NAPTR, SRV},
};
use rand::Rng;

use crate::{Destination, Target, Transport};

/// The lookups RFC 3263 §4 asks for, given what the URI already says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Numeric IP: no DNS at all.
    Literal(Destination),
    /// Port given: A/AAAA only (§4.2).
    Address { port: u16, transport: Transport },
    /// Transport given, port not: SRV for that transport, then A/AAAA (§4.2).
    Srv { transport: Transport },
    /// Neither given: NAPTR, then SRV per transport, then A/AAAA (§4.1).
    Naptr { secure: bool },
}

impl Plan {
    pub(crate) fn of(target: &Target<'_>) -> Self {
        // RFC 3261 §26.2: a sips: URI is reached over TLS whatever transport it names.
        let transport = if target.secure {
            Transport::Tls
        } else {
            target.transport.unwrap_or(Transport::Udp)
        };
        if let Some(ip) = literal_ip(target.host) {
            let port = target.port.unwrap_or(transport.default_port());
            return Self::Literal(Destination {
                addr: SocketAddr::new(ip, port),
                transport,
            });
        }
        match (target.port, target.transport) {
            (Some(port), _) => Self::Address { port, transport },
            (None, Some(_)) => Self::Srv { transport },
            (None, None) => Self::Naptr {
                secure: target.secure,
            },
        }
    }
}

/// SIP URIs bracket IPv6 literals (`[2001:db8::1]`); accept both forms.
fn literal_ip(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// Transports to ask NAPTR for (§4.1): a sips: target only accepts TLS.
pub(crate) fn naptr_transports(secure: bool) -> &'static [Transport] {
    if secure {
        &[Transport::Tls]
    } else {
        &[Transport::Udp, Transport::Tcp, Transport::Tls]
    }
}

/// SRV names to try, in this order, when the domain has no usable NAPTR records (§4.1).
pub(crate) fn srv_transports(secure: bool) -> &'static [Transport] {
    if secure {
        &[Transport::Tls]
    } else {
        &[Transport::Udp, Transport::Tcp]
    }
}

/// The NAPTR records a SIP client may follow, as (transport, SRV name), in order/preference
/// order. Only terminal "s" records with a SIP service we speak qualify (RFC 3263 §4.1).
pub(crate) fn naptr_replacements(
    records: &[NAPTR],
    accepted: &[Transport],
) -> Vec<(Transport, Name)> {
    let mut usable: Vec<(u16, u16, Transport, Name)> = records
        .iter()
        .filter(|r| r.flags.eq_ignore_ascii_case(b"s"))
        .filter_map(|r| {
            let transport = accepted.iter().copied().find(|t| {
                r.services
                    .eq_ignore_ascii_case(t.naptr_service().as_bytes())
            })?;
            Some((r.order, r.preference, transport, r.replacement.clone()))
        })
        .collect();
    usable.sort_by_key(|&(order, preference, ..)| (order, preference));
    usable
        .into_iter()
        .map(|(_, _, transport, name)| (transport, name))
        .collect()
}

/// The SRV records in RFC 2782 order (see [`weighted_order`]).
pub(crate) fn order_srv<R: Rng + ?Sized>(records: Vec<SRV>, rng: &mut R) -> Vec<SRV> {
    weighted_order(
        records,
        |r| u32::from(r.priority),
        |r| u32::from(r.weight),
        rng,
    )
}

/// RFC 2782 order, for SRV records and for a trunk's configured targets alike: lowest priority
/// first; within a priority, a weighted random draw without replacement. Weight-0 entries sit
/// first in each draw, which runs over 0..=sum of weights and takes the first entry whose running
/// sum reaches it, so a weight-0 entry goes first only on a draw of 0 ("a very small chance"
/// beside weighted ones) and entries that all weigh 0 keep their order.
pub fn weighted_order<T, R: Rng + ?Sized>(
    mut items: Vec<T>,
    priority: impl Fn(&T) -> u32,
    weight: impl Fn(&T) -> u32,
    rng: &mut R,
) -> Vec<T> {
    // Stable sorts: equal keys keep the order they were given in.
    items.sort_by_key(|t| priority(t));
    let mut ordered = Vec::with_capacity(items.len());
    let mut rest = items.into_iter().peekable();
    while let Some(first) = rest.next() {
        let p = priority(&first);
        let mut pool = vec![first];
        while let Some(t) = rest.next_if(|t| priority(t) == p) {
            pool.push(t);
        }
        pool.sort_by_key(|t| weight(t) != 0);
        while !pool.is_empty() {
            let total: u64 = pool.iter().map(|t| u64::from(weight(t))).sum();
            let draw = rng.random_range(0..=total);
            let mut running = 0;
            let chosen = pool
                .iter()
                .position(|t| {
                    running += u64::from(weight(t));
                    running >= draw
                })
                .unwrap_or(0);
            ordered.push(pool.remove(chosen));
        }
    }
    ordered
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, str::FromStr};

    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    fn target(
        host: &str,
        port: Option<u16>,
        transport: Option<Transport>,
        secure: bool,
    ) -> Target<'_> {
        Target {
            host,
            port,
            transport,
            secure,
        }
    }

    fn literal(addr: &str, transport: Transport) -> Plan {
        Plan::Literal(Destination {
            addr: addr.parse().expect("test address"),
            transport,
        })
    }

    #[test]
    fn transport_selection_table() {
        use Transport::*;
        let h = "sbc1.carrier.example";
        let table = [
            // numeric IPs never reach DNS; the default port follows the transport
            (
                target("192.0.2.1", None, None, false),
                literal("192.0.2.1:5060", Udp),
            ),
            (
                target("192.0.2.1", None, Some(Tcp), false),
                literal("192.0.2.1:5060", Tcp),
            ),
            (
                target("192.0.2.1", None, None, true),
                literal("192.0.2.1:5061", Tls),
            ),
            (
                target("192.0.2.1", Some(5080), Some(Tls), false),
                literal("192.0.2.1:5080", Tls),
            ),
            (
                target("[2001:db8::1]", None, None, false),
                literal("[2001:db8::1]:5060", Udp),
            ),
            (
                target("2001:db8::1", Some(5062), None, true),
                literal("[2001:db8::1]:5062", Tls),
            ),
            // an explicit port means A/AAAA only
            (
                target(h, Some(5070), None, false),
                Plan::Address {
                    port: 5070,
                    transport: Udp,
                },
            ),
            (
                target(h, Some(5070), Some(Tcp), false),
                Plan::Address {
                    port: 5070,
                    transport: Tcp,
                },
            ),
            (
                target(h, Some(5071), None, true),
                Plan::Address {
                    port: 5071,
                    transport: Tls,
                },
            ),
            // a transport without a port means SRV for that transport
            (
                target(h, None, Some(Udp), false),
                Plan::Srv { transport: Udp },
            ),
            (
                target(h, None, Some(Tcp), false),
                Plan::Srv { transport: Tcp },
            ),
            (
                target(h, None, Some(Tls), false),
                Plan::Srv { transport: Tls },
            ),
            (
                target(h, None, Some(Tcp), true),
                Plan::Srv { transport: Tls },
            ),
            // neither means NAPTR first
            (target(h, None, None, false), Plan::Naptr { secure: false }),
            (target(h, None, None, true), Plan::Naptr { secure: true }),
        ];
        for (target, expected) in table {
            assert_eq!(Plan::of(&target), expected, "{target:?}");
        }
    }

    #[test]
    fn sips_only_follows_tls() {
        assert_eq!(naptr_transports(true), [Transport::Tls]);
        assert_eq!(srv_transports(true), [Transport::Tls]);
        assert_eq!(srv_transports(false), [Transport::Udp, Transport::Tcp]);
    }

    fn naptr(order: u16, preference: u16, flags: &str, services: &str, replacement: &str) -> NAPTR {
        NAPTR::new(
            order,
            preference,
            flags.as_bytes().into(),
            services.as_bytes().into(),
            Box::default(),
            name(replacement),
        )
    }

    fn name(n: &str) -> Name {
        Name::from_str(n).expect("test name")
    }

    #[test]
    fn naptr_records_follow_order_then_preference_and_skip_the_unusable() {
        let records = [
            naptr(20, 10, "s", "SIP+D2T", "_sip._tcp.example."),
            naptr(10, 20, "S", "sips+d2t", "_sips._tcp.example."),
            naptr(10, 10, "s", "SIP+D2U", "_sip._udp.example."),
            naptr(5, 10, "u", "E2U+sip", "ignored.example."),
            naptr(5, 10, "s", "SIP+D2S", "_sip._sctp.example."),
            naptr(5, 10, "a", "SIP+D2U", "a-record.example."),
        ];
        assert_eq!(
            naptr_replacements(&records, naptr_transports(false)),
            [
                (Transport::Udp, name("_sip._udp.example.")),
                (Transport::Tls, name("_sips._tcp.example.")),
                (Transport::Tcp, name("_sip._tcp.example.")),
            ]
        );
        assert_eq!(
            naptr_replacements(&records, naptr_transports(true)),
            [(Transport::Tls, name("_sips._tcp.example."))]
        );
    }

    fn srv(priority: u16, weight: u16, port: u16) -> SRV {
        SRV::new(priority, weight, port, name("sbc.example."))
    }

    fn ports(records: &[SRV]) -> Vec<u16> {
        records.iter().map(|r| r.port).collect()
    }

    #[test]
    fn srv_priority_order_is_strict_and_nothing_is_lost() {
        let records = vec![
            srv(20, 5, 1),
            srv(10, 0, 2),
            srv(30, 100, 3),
            srv(10, 60, 4),
            srv(20, 0, 5),
        ];
        for seed in 0..200 {
            let ordered = order_srv(records.clone(), &mut StdRng::seed_from_u64(seed));
            let priorities: Vec<u16> = ordered.iter().map(|r| r.priority).collect();
            assert!(priorities.is_sorted(), "seed {seed}: {priorities:?}");
            let seen: HashSet<u16> = ordered.iter().map(|r| r.port).collect();
            assert_eq!(seen, HashSet::from([1, 2, 3, 4, 5]), "seed {seed}");
        }
    }

    /// How often each port comes first over many seeded draws.
    fn first_counts(records: &[SRV], runs: u64) -> Vec<(u16, u32)> {
        let mut rng = StdRng::seed_from_u64(2782);
        let mut counts: Vec<(u16, u32)> = ports(records).into_iter().map(|p| (p, 0)).collect();
        for _ in 0..runs {
            let first = order_srv(records.to_vec(), &mut rng)[0].port;
            if let Some(count) = counts.iter_mut().find(|(p, _)| *p == first) {
                count.1 += 1;
            }
        }
        counts
    }

    #[test]
    fn srv_weights_share_first_place_proportionally() {
        // draws 0..=100: 11 of 101 land on the weight-10 record, 90 on the weight-90 one
        let counts = first_counts(&[srv(10, 10, 1), srv(10, 90, 2)], 10_000);
        let heavy = counts[1].1;
        assert!((8_600..9_200).contains(&heavy), "{counts:?}");
    }

    #[test]
    fn srv_weight_zero_goes_first_only_on_a_zero_draw() {
        // draws 0..=50: only 0 picks the weight-0 record, about 2% of the time
        let counts = first_counts(&[srv(10, 50, 1), srv(10, 0, 2)], 10_000);
        let zero = counts[1].1;
        assert!((50..400).contains(&zero), "{counts:?}");
    }

    #[test]
    fn srv_all_zero_weights_keep_every_record() {
        let records = vec![srv(10, 0, 1), srv(10, 0, 2), srv(10, 0, 3)];
        let ordered = order_srv(records, &mut StdRng::seed_from_u64(1));
        let mut got = ports(&ordered);
        got.sort_unstable();
        assert_eq!(got, [1, 2, 3]);
    }

    #[test]
    fn weighted_order_keeps_priorities_and_weight_zero_runs_last_but_rarely_first() {
        // (name, priority, weight): the shape of a trunk's outbound targets
        let items = [("a", 2, 0), ("b", 1, 0), ("c", 1, 50), ("d", 3, 1)];
        let mut rng = StdRng::seed_from_u64(2782);
        let mut b_first = 0;
        for _ in 0..10_000 {
            let got = weighted_order(items.to_vec(), |t| t.1, |t| t.2, &mut rng);
            let names: Vec<&str> = got.iter().map(|t| t.0).collect();
            assert!(names[2..] == ["a", "d"], "{names:?}");
            if names[0] == "b" {
                b_first += 1;
            }
        }
        // draws 0..=50: only 0 puts the weight-0 target first, about 2% of the time
        assert!((50..400).contains(&b_first), "{b_first}");
    }

    #[test]
    fn weighted_order_of_zero_weights_is_the_given_order() {
        let items = vec![(1, 0), (2, 0), (3, 0)];
        let got = weighted_order(items, |_| 1, |t| t.1, &mut StdRng::seed_from_u64(7));
        assert_eq!(got, [(1, 0), (2, 0), (3, 0)]);
    }
}
