//! How long `parse` takes on a typical carrier INVITE with SDP.
//!
//! `cargo run --release -p trunkgate-sip --example parse_bench`

use std::hint::black_box;
use std::time::Instant;

const HEAD: &str = "INVITE sip:+15551230000@edge.example.net;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---a3f9c2d1e0b4;rport\r\n\
Max-Forwards: 69\r\n\
Record-Route: <sip:192.0.2.10:5060;lr>\r\n\
From: \"CARRIER\" <sip:+15559870000@carrier.example.com;user=phone>;tag=3a9f02c1\r\n\
To: <sip:+15551230000@edge.example.net;user=phone>\r\n\
Call-ID: 7f3c9a21-4be0-4c55-9d0e-1b2a3c4d5e6f@192.0.2.10\r\n\
CSeq: 102 INVITE\r\n\
Contact: <sip:+15559870000@192.0.2.10:5060;transport=udp>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK, REFER, NOTIFY\r\n\
Supported: timer, 100rel, replaces\r\n\
Session-Expires: 1800;refresher=uac\r\n\
Min-SE: 90\r\n\
P-Asserted-Identity: <sip:+15559870000@carrier.example.com;user=phone>\r\n\
User-Agent: CarrierSBC/4.2\r\n\
Content-Type: application/sdp\r\n";

const SDP: &str = "v=0\r\n\
o=- 3864421530 3864421530 IN IP4 192.0.2.20\r\n\
s=-\r\n\
c=IN IP4 192.0.2.20\r\n\
t=0 0\r\n\
m=audio 30000 RTP/AVP 0 8 18 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

fn main() {
    const ROUNDS: u32 = 200_000;
    let invite = format!("{HEAD}Content-Length: {}\r\n\r\n{SDP}", SDP.len());
    let datagram = invite.as_bytes();
    if let Err(error) = trunkgate_sip::parse(datagram) {
        eprintln!("the benchmark INVITE does not parse: {error}");
        std::process::exit(1);
    }
    for _ in 0..10_000 {
        let _ = black_box(trunkgate_sip::parse(black_box(datagram)));
    }
    let start = Instant::now();
    for _ in 0..ROUNDS {
        let _ = black_box(trunkgate_sip::parse(black_box(datagram)));
    }
    let elapsed = start.elapsed();
    println!(
        "parse: {:.0} ns/message ({ROUNDS} INVITEs of {} bytes in {:.3} s)",
        elapsed.as_nanos() as f64 / f64::from(ROUNDS),
        datagram.len(),
        elapsed.as_secs_f64()
    );
}
