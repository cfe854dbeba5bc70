//! A load generator for attack benchmarks (`bench/attack.sh`), loopback only: a UDP flood of
//! SIP requests from a range of source addresses at a fixed rate, or many TCP connections held
//! open. It prints what it did as one `key=value` line.
//!
//!   flood udp --to 127.0.0.1:5060 --from 127.0.1.1-127.0.1.50 --pps 100000 --seconds 10 \
//!       [--kind invite|options|junk] [--number +6499990001]
//!   flood tcp --to 127.0.0.1:5060 --from 127.0.1.1-127.0.1.200 --connections 20000 --seconds 10

use std::io::{ErrorKind, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn parsed<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    arg(args, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `127.0.1.1-127.0.1.50` or one address.
fn sources(spec: &str) -> Vec<IpAddr> {
    let (a, b) = spec.split_once('-').unwrap_or((spec, spec));
    let (Ok(a), Ok(b)) = (a.parse::<Ipv4Addr>(), b.parse::<Ipv4Addr>()) else {
        eprintln!("--from: expected A or A-B (IPv4)");
        std::process::exit(2);
    };
    (u32::from(a)..=u32::from(b))
        .map(|n| IpAddr::V4(Ipv4Addr::from(n)))
        .collect()
}

fn request(kind: &str, to: SocketAddr, from: SocketAddr, number: &str, n: u64) -> Vec<u8> {
    if kind == "junk" {
        return format!("junk {n} {}", "x".repeat(200)).into_bytes();
    }
    let method = if kind == "options" {
        "OPTIONS"
    } else {
        "INVITE"
    };
    let body = if method == "INVITE" {
        format!(
            "v=0\r\no=- {n} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
            ip = from.ip()
        )
    } else {
        String::new()
    };
    let ctype = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} sip:{number}@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-fl{n};rport\r\nMax-Forwards: 70\r\nFrom: <sip:+6421555123@{ip}>;tag=fl{n}\r\nTo: <sip:{number}@{to}>\r\nCall-ID: fl{n}@{ip}\r\nCSeq: 1 {method}\r\nContact: <sip:f@{from}>\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
        body.len(),
        ip = from.ip()
    )
    .into_bytes()
}

fn udp(args: &[String], to: SocketAddr, from: &[IpAddr]) {
    let pps: u64 = parsed(args, "--pps", 10_000);
    let seconds: f64 = parsed(args, "--seconds", 10.0);
    let kind = arg(args, "--kind").unwrap_or_else(|| "invite".into());
    let number = arg(args, "--number").unwrap_or_else(|| "+6499990001".into());
    let socks: Vec<UdpSocket> = from
        .iter()
        .filter_map(|ip| UdpSocket::bind((*ip, 0)).ok())
        .collect();
    if socks.is_empty() {
        eprintln!("no source socket could be bound");
        std::process::exit(2);
    }
    for s in &socks {
        let _ = s.set_nonblocking(true);
    }
    let locals: Vec<SocketAddr> = socks.iter().filter_map(|s| s.local_addr().ok()).collect();
    let start = Instant::now();
    let end = Duration::from_secs_f64(seconds);
    let (mut sent, mut failed, mut n) = (0u64, 0u64, 0u64);
    let mut buf = [0u8; 2048];
    while start.elapsed() < end {
        // Paced in 1 ms steps: as many as the rate allows so far.
        let due = (start.elapsed().as_secs_f64() * pps as f64) as u64;
        while sent + failed < due {
            let i = (n as usize) % socks.len();
            let msg = request(&kind, to, locals[i], &number, n);
            match socks[i].send_to(&msg, to) {
                Ok(_) => sent += 1,
                Err(_) => failed += 1,
            }
            n += 1;
        }
        // Drain replies so the flood's own sockets do not fill (replies are counted below).
        for s in &socks {
            while s.recv_from(&mut buf).is_ok() {}
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let wall = start.elapsed().as_secs_f64();
    println!(
        "flood=udp kind={kind} sources={} sent={sent} send_errors={failed} seconds={wall:.2} pps={:.0}",
        socks.len(),
        sent as f64 / wall
    );
}

fn tcp(args: &[String], to: SocketAddr, from: &[IpAddr]) {
    let want: usize = parsed(args, "--connections", 1000);
    let seconds: f64 = parsed(args, "--seconds", 10.0);
    let mut conns = Vec::with_capacity(want);
    let mut refused = 0usize;
    let start = Instant::now();
    for i in 0..want {
        let ip = from[i % from.len()];
        let sock = match socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        ) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("socket: {e} after {i} connections");
                break;
            }
        };
        if sock.bind(&SocketAddr::new(ip, 0).into()).is_err()
            || sock
                .connect_timeout(&to.into(), Duration::from_secs(1))
                .is_err()
        {
            refused += 1;
            continue;
        }
        let s: TcpStream = sock.into();
        let _ = s.set_nonblocking(true);
        conns.push(s);
    }
    let opened = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    // Which are still open: a read that would block means nothing closed it.
    let mut buf = [0u8; 64];
    let mut open = 0usize;
    for s in conns.iter_mut() {
        if matches!(s.read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock) {
            open += 1;
        }
    }
    println!(
        "flood=tcp attempted={want} connected={} refused_at_connect={refused} still_open={open} open_seconds={opened:.2}",
        conns.len()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).cloned().unwrap_or_default();
    let Some(to) = arg(&args, "--to").and_then(|t| t.parse::<SocketAddr>().ok()) else {
        eprintln!("usage: flood udp|tcp --to ADDR --from A[-B] ...");
        std::process::exit(2);
    };
    if !to.ip().is_loopback() {
        eprintln!("flood only targets loopback addresses");
        std::process::exit(2);
    }
    let from = sources(&arg(&args, "--from").unwrap_or_else(|| "127.0.1.1".into()));
    match mode.as_str() {
        "udp" => udp(&args, to, &from),
        "tcp" => tcp(&args, to, &from),
        _ => {
            eprintln!("mode must be udp or tcp");
            std::process::exit(2);
        }
    }
}
