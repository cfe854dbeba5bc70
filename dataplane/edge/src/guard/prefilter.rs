//! A classic BPF filter on the carrier-side UDP sockets that drops, in the kernel, datagrams from
//! IPv4 addresses the edge has no reason to hear from: a flood from outside the allow-lists
//! then never wakes a worker (measured: 100k pps of denied INVITEs cost the edge about half a
//! core in wake-ups and `recvfrom` before; `bench/attack.sh deny`).
//!
//! An optimisation, never the enforcement: userspace checks every datagram as before. So the
//! filter only ever widens while the edge runs: every `allowedCidrs` entry of every snapshot
//! loaded (calls keep the configuration they started with, and their carriers must still reach
//! them after a reload removed the address), the numeric addresses of outbound targets, and the
//! addresses resolved for named targets, added before anything is sent there. IPv6 datagrams
//! pass to userspace. A set too large for one program (over ~1,000 networks) turns the filter
//! off. Datagrams it drops show in `trunkgate_edge_kernel_receive_drops_total{socket="sip_public"}`
//! (the kernel counts them as socket drops).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

use socket2::{SockFilter, SockRef};
use trunkgate_crds::snapshot::EdgeConfig;

/// `SKF_NET_OFF`: loads relative to the network header.
const NET: u32 = 0xFFF0_0000;
const LD_B_ABS: u16 = 0x30;
const LD_W_ABS: u16 = 0x20;
const ALU_RSH_K: u16 = 0x74;
const ALU_AND_K: u16 = 0x54;
const JMP_JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;
const MISC_TAX: u16 = 0x07;
const MISC_TXA: u16 = 0x87;
const ACCEPT: u32 = 0xFFFF_FFFF;
const DROP: u32 = 0;
/// The kernel's limit on classic BPF program length.
const MAX_INSNS: usize = 4096;

/// An IPv4 network as (address, mask), host byte order.
type Net = (u32, u32);

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

fn net(ip: Ipv4Addr, prefix: u8) -> Net {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    (u32::from(ip) & mask, mask)
}

/// The networks not already inside a wider one of the set.
fn pruned(nets: &BTreeSet<Net>) -> Vec<Net> {
    let mut by_width: Vec<Net> = nets.iter().copied().collect();
    by_width.sort_by_key(|(_, m)| m.count_ones());
    let mut kept: Vec<Net> = Vec::new();
    for (addr, mask) in by_width {
        if !kept.iter().any(|(a, m)| addr & m == *a) {
            kept.push((addr, mask));
        }
    }
    kept
}

/// The program: IPv6 (anything but IPv4) passes; an IPv4 source inside one of `nets` passes;
/// the rest is dropped. Four instructions a network, no jump longer than one. None when it
/// would not fit.
pub fn program(nets: &[Net]) -> Option<Vec<Insn>> {
    let len = 7 + 4 * nets.len();
    if len > MAX_INSNS {
        return None;
    }
    let mut p = Vec::with_capacity(len);
    p.push(insn(LD_B_ABS, 0, 0, NET));
    p.push(insn(ALU_RSH_K, 0, 0, 4));
    p.push(insn(JMP_JEQ_K, 1, 0, 4));
    p.push(insn(RET_K, 0, 0, ACCEPT));
    p.push(insn(LD_W_ABS, 0, 0, NET + 12));
    p.push(insn(MISC_TAX, 0, 0, 0));
    for &(addr, mask) in nets {
        p.push(insn(MISC_TXA, 0, 0, 0));
        p.push(insn(ALU_AND_K, 0, 0, mask));
        p.push(insn(JMP_JEQ_K, 0, 1, addr));
        p.push(insn(RET_K, 0, 0, ACCEPT));
    }
    p.push(insn(RET_K, 0, 0, DROP));
    Some(p)
}

struct State {
    nets: BTreeSet<Net>,
    /// Duplicates of the workers' carrier-side UDP sockets (same sockets, other descriptors).
    sockets: Vec<std::net::UdpSocket>,
    /// Off for good: the set outgrew one program, or the kernel refused it.
    off: bool,
}

pub struct Prefilter {
    enabled: bool,
    state: Mutex<State>,
}

impl Prefilter {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            state: Mutex::new(State {
                nets: BTreeSet::new(),
                sockets: Vec::new(),
                off: !enabled,
            }),
        }
    }

    /// The sockets to filter (the workers' carrier-side UDP sockets, duplicated).
    pub fn add_sockets(&self, sockets: Vec<std::net::UdpSocket>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.sockets.extend(sockets);
        attach(&mut st);
    }

    /// Everything a snapshot may need to hear from: its carriers' networks and the numeric
    /// addresses of its outbound targets.
    pub fn allow_snapshot(&self, config: &EdgeConfig) {
        let mut add = Vec::new();
        for t in &config.trunks {
            for n in &t.inbound.allowed_cidrs {
                if let ipnet::IpNet::V4(v4) = n {
                    add.push(net(v4.network(), v4.prefix_len()));
                }
            }
            let registrar = t
                .outbound
                .iter()
                .filter_map(|o| Some(&o.registration.as_ref()?.registrar));
            for target in t.outbound.iter().flat_map(|o| &o.targets).chain(registrar) {
                if let Ok(IpAddr::V4(ip)) = target.host.parse::<IpAddr>() {
                    add.push(net(ip, 32));
                }
            }
        }
        self.allow(add);
    }

    /// An address the edge is about to send to (a resolved target): its answers must pass.
    pub fn allow_ip(&self, ip: IpAddr) {
        if let IpAddr::V4(v4) = ip {
            self.allow([net(v4, 32)]);
        }
    }

    fn allow(&self, nets: impl IntoIterator<Item = Net>) {
        if !self.enabled {
            return;
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.off {
            return;
        }
        let before = st.nets.len();
        st.nets.extend(nets);
        if st.nets.len() != before {
            attach(&mut st);
        }
    }
}

/// (Re)attaches the program for the current set to every socket, or detaches it for good.
fn attach(st: &mut State) {
    if st.off || st.sockets.is_empty() || st.nets.is_empty() {
        return;
    }
    let Some(prog) = program(&pruned(&st.nets)) else {
        tracing::warn!(
            networks = st.nets.len(),
            "too many carrier networks for the kernel prefilter; it is off (userspace still drops what is not allowed)"
        );
        off(st);
        return;
    };
    let prog: Vec<SockFilter> = prog
        .iter()
        .map(|i| SockFilter::new(i.code, i.jt, i.jf, i.k))
        .collect();
    for s in &st.sockets {
        if let Err(e) = SockRef::from(s).attach_filter(&prog) {
            tracing::warn!(error = %e, "the kernel refused the prefilter; it is off");
            off(st);
            return;
        }
    }
}

fn off(st: &mut State) {
    st.off = true;
    for s in &st.sockets {
        let _ = SockRef::from(s).detach_filter();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the subset of classic BPF the program uses over an IP packet's header.
    fn run(prog: &[Insn], packet: &[u8]) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        loop {
            let Insn { code, jt, jf, k } = prog[pc];
            pc += 1;
            match code {
                LD_B_ABS => a = u32::from(packet[(k - NET) as usize]),
                LD_W_ABS => {
                    let o = (k - NET) as usize;
                    a = u32::from_be_bytes([
                        packet[o],
                        packet[o + 1],
                        packet[o + 2],
                        packet[o + 3],
                    ]);
                }
                ALU_RSH_K => a >>= k,
                ALU_AND_K => a &= k,
                MISC_TAX => x = a,
                MISC_TXA => a = x,
                JMP_JEQ_K => pc += usize::from(if a == k { jt } else { jf }),
                RET_K => return k,
                other => panic!("opcode {other:#x} not expected"),
            }
        }
    }

    fn v4_from(ip: [u8; 4]) -> Vec<u8> {
        let mut h = vec![0x45u8, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
        h.extend_from_slice(&ip);
        h.extend_from_slice(&[127, 0, 0, 1]);
        h
    }

    #[test]
    fn allowed_networks_pass_the_rest_is_dropped_and_ipv6_passes() {
        let mut set = BTreeSet::new();
        set.insert(net(Ipv4Addr::new(203, 0, 113, 0), 28));
        set.insert(net(Ipv4Addr::new(198, 51, 100, 7), 32));
        set.insert(net(Ipv4Addr::new(10, 0, 0, 0), 8));
        set.insert(net(Ipv4Addr::new(10, 1, 2, 3), 32));
        let nets = pruned(&set);
        assert_eq!(nets.len(), 3, "10.1.2.3/32 is inside 10.0.0.0/8");
        let prog = program(&nets).expect("fits");
        for (ip, pass) in [
            ([203, 0, 113, 5], true),
            ([203, 0, 113, 16], false),
            ([198, 51, 100, 7], true),
            ([198, 51, 100, 8], false),
            ([10, 200, 0, 1], true),
            ([192, 0, 2, 1], false),
        ] {
            assert_eq!(run(&prog, &v4_from(ip)) == ACCEPT, pass, "{ip:?}");
        }
        let v6 = [0x60u8; 40];
        assert_eq!(run(&prog, &v6), ACCEPT, "IPv6 is left to userspace");
    }

    #[test]
    fn a_set_too_large_for_one_program_gives_none() {
        let many: Vec<Net> = (0..2000u32).map(|i| (i << 8, 0xFFFF_FF00)).collect();
        assert!(program(&many).is_none());
        assert!(program(&many[..1000]).is_some());
    }
}
