//! `make bench`: compile 1,000 trunks and 100,000 numbers (single numbers and ranges) and report
//! compile time, snapshot size and number lookup time. Prints figures; asserts nothing.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use trunkgate_crds::acl::SourceAcl;
use trunkgate_crds::e164::E164;
use trunkgate_crds::snapshot::NumberIndex;
use trunkgate_crds::{CarrierTrunk, NumberOwnership, Secrets, compile};

const TRUNKS: usize = 1_000;

fn main() {
    let mut trunks = Vec::with_capacity(TRUNKS);
    let mut owns = Vec::with_capacity(TRUNKS * 2);
    let mut owned: Vec<E164> = Vec::new();
    for i in 0..TRUNKS {
        let ns = format!("tenant-{i}");
        let cidr = format!("10.{}.{}.0/24", i / 256, i % 256);
        trunks.push(
            CarrierTrunk::test(&ns, "carrier")
                .with_cidrs(&[&cidr])
                .with_targets(&["sip:sbc1.carrier.example", "sip:sbc2.carrier.example"])
                .with_route("+64", 10)
                .created_at(i as i64),
        );
        // Per trunk: 50 single numbers (every other number of a block) and one 50-number range.
        let base = 6_490_000_000u64 + (i as u64) * 1_000;
        let singles: Vec<String> = (0..50).map(|k| format!("+{}", base + 2 * k)).collect();
        let range = format!("+{}-+{}", base + 500, base + 549);
        owned.extend((0..50).map(|k| {
            E164::parse(&format!("+{}", base + 2 * k)).unwrap_or(E164 { len: 10, value: 0 })
        }));
        owns.push(NumberOwnership::test(
            &ns,
            "singles",
            "carrier",
            &singles.iter().map(String::as_str).collect::<Vec<_>>(),
        ));
        owns.push(NumberOwnership::test(&ns, "range", "carrier", &[&range]));
    }
    let secrets = Secrets::new();

    let mut times = Vec::new();
    let mut compiled = None;
    for _ in 0..5 {
        let t = Instant::now();
        let c = compile(&trunks, &owns, &secrets, None);
        times.push(t.elapsed());
        compiled = Some(c);
    }
    let Some(compiled) = compiled else { return };
    times.sort();
    let problems = compiled.problems().count();
    let json = serde_json::to_vec(&compiled.config)
        .map(|v| v.len())
        .unwrap_or(0);
    let gz = compiled.config.encode().map(|v| v.len());
    let t = Instant::now();
    let index = NumberIndex::of(&compiled.config);
    let index_time = t.elapsed();

    // Lookups: half owned numbers, half neighbours nobody owns, in a scattered order.
    let mut probes: Vec<E164> = Vec::with_capacity(owned.len() * 2);
    for n in &owned {
        probes.push(*n);
        probes.push(E164 {
            len: n.len,
            value: n.value + 1,
        });
    }
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..probes.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        probes.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let rounds = 20;
    let t = Instant::now();
    let mut hits = 0usize;
    for _ in 0..rounds {
        for p in &probes {
            hits += usize::from(!black_box(index.owners(black_box(*p))).is_empty());
        }
    }
    let per_lookup = t.elapsed().as_nanos() as f64 / (rounds * probes.len()) as f64;

    let (acl_build, acl_trunks, acl_allows, acl_linear) = acl_lookups(&compiled.config);

    println!(
        "== compile benchmark (cargo run --release -p trunkgate-crds --example compile_bench) =="
    );
    println!(
        "input: {} trunks, {} NumberOwnerships, {} numbers; problems: {problems}",
        trunks.len(),
        owns.len(),
        compiled.number_count()
    );
    println!(
        "compile: median {:.1} ms, min {:.1} ms (5 runs)",
        times[2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3
    );
    match gz {
        Ok(gz) => println!("snapshot: {json} bytes JSON, {gz} bytes gzip (Secret limit 1,000,000)"),
        Err(e) => println!("snapshot: {json} bytes JSON, not publishable: {e}"),
    }
    println!(
        "index: {} segments built in {:.1} ms (what an edge pod does on load)",
        index.segments(),
        index_time.as_secs_f64() * 1e3
    );
    println!(
        "lookup: {per_lookup:.1} ns per number ({} lookups, {:.0}% owned)",
        rounds * probes.len(),
        100.0 * hits as f64 / (rounds * probes.len()) as f64
    );
    println!(
        "carrier ACL: {} networks indexed in {:.2} ms; source lookup {acl_trunks:.1} ns (trunks), {acl_allows:.1} ns (allowed?) against {acl_linear:.0} ns for a scan of every network (half the sources allowed)",
        compiled
            .config
            .trunks
            .iter()
            .map(|t| t.inbound.allowed_cidrs.len())
            .sum::<usize>(),
        acl_build * 1e3
    );
}

/// The edge's carrier ACL over the compiled trunks: build time (s) and ns per lookup for the
/// index's two questions, and for the linear scan it replaced (the same answers, checked).
fn acl_lookups(config: &trunkgate_crds::EdgeConfig) -> (f64, f64, f64, f64) {
    let nets: Vec<(ipnet::IpNet, u32)> = config
        .trunks
        .iter()
        .enumerate()
        .flat_map(|(i, t)| t.inbound.allowed_cidrs.iter().map(move |n| (*n, i as u32)))
        .collect();
    let t = Instant::now();
    let acl = SourceAcl::build(nets.iter().copied());
    let build = t.elapsed().as_secs_f64();
    // Sources: every trunk's network (a host in it) and as many addresses outside them all.
    let sources: Vec<IpAddr> = (0..nets.len() as u32)
        .flat_map(|i| {
            let inside = Ipv4Addr::new(10, (i / 256) as u8, (i % 256) as u8, 7);
            let outside = Ipv4Addr::new(172, 16 + (i / 256) as u8, (i % 256) as u8, 7);
            [IpAddr::V4(inside), IpAddr::V4(outside)]
        })
        .collect();
    let linear = |ip: IpAddr| -> Vec<u32> {
        let mut v: Vec<u32> = nets
            .iter()
            .filter(|(n, _)| n.contains(&ip))
            .map(|(_, t)| *t)
            .collect();
        v.dedup();
        v
    };
    for ip in sources.iter().step_by(97) {
        assert_eq!(
            acl.trunks(*ip),
            linear(*ip),
            "index and scan disagree on {ip}"
        );
    }
    let per = |f: &dyn Fn(IpAddr) -> usize, rounds: usize| {
        let t = Instant::now();
        let mut n = 0usize;
        for _ in 0..rounds {
            for ip in &sources {
                n += f(black_box(*ip));
            }
        }
        black_box(n);
        t.elapsed().as_nanos() as f64 / (rounds * sources.len()) as f64
    };
    (
        build,
        per(&|ip| acl.trunks(ip).len(), 200),
        per(&|ip| usize::from(acl.allows(ip)), 200),
        per(&|ip| linear(ip).len(), 5),
    )
}
