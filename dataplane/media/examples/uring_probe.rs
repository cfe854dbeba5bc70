//! Does io_uring pay for the relay's socket I/O on this kernel?
//!
//! The relay has one socket per RTP/RTCP port and each socket sees ~50 packets a second, so
//! recvmmsg/sendmmsg (one socket per call) batch nothing. io_uring can batch across sockets:
//! one `io_uring_enter` submits every pending receive and send. This measures both ways of
//! forwarding on the same load, with the relay's own shape and nothing else (no latching, no
//! statistics): N sockets on 127.0.0.1, a paced sender spreading G.711-sized packets (172 bytes)
//! over them, each packet sent on from the socket it arrived on to one sink.
//!
//! - `epoll`: level-triggered epoll, one `recvfrom` and one `sendto` per packet (the relay today);
//! - `uring`: io_uring with the sockets registered (fixed files), one RECVMSG armed per socket,
//!   a SENDMSG queued per packet, everything submitted in one enter per loop.
//!
//! Reported: the relay thread's own CPU time (RUSAGE_THREAD) per forwarded packet.
//!
//! cargo run --release -p trunkgate-media --example uring_probe -- [SOCKETS] [PPS] [SECONDS]
//!
//! Loopback only, bounded by SECONDS. The relay does not use io_uring: this is the measurement
//! that decides whether it should (see the README's figures).
#![allow(unsafe_code)] // io_uring hands the kernel raw buffers; confined to this probe.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode, types};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::resource::{UsageWho, getrusage};

const PACKET: usize = 172;

fn thread_cpu() -> Duration {
    getrusage(UsageWho::RUSAGE_THREAD).map_or(Duration::ZERO, |u| {
        let (a, b) = (u.user_time(), u.system_time());
        Duration::from_micros(
            (a.tv_sec() * 1_000_000 + a.tv_usec() + b.tv_sec() * 1_000_000 + b.tv_usec()) as u64,
        )
    })
}

fn relay_epoll(socks: &[UdpSocket], sink: SocketAddr, stop: &AtomicBool) -> (u64, Duration) {
    let epoll = Epoll::new(EpollCreateFlags::empty()).expect("epoll");
    for (i, s) in socks.iter().enumerate() {
        epoll
            .add(s, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
            .expect("epoll add");
    }
    let mut events = vec![EpollEvent::empty(); 1024];
    let mut buf = [0u8; 2048];
    let (mut n, cpu0) = (0u64, thread_cpu());
    while !stop.load(Ordering::Relaxed) {
        let ready = epoll
            .wait(&mut events, EpollTimeout::from(100u16))
            .unwrap_or(0);
        for e in &events[..ready] {
            let s = &socks[e.data() as usize];
            if let Ok((len, _)) = s.recv_from(&mut buf)
                && s.send_to(&buf[..len], sink).is_ok()
            {
                n += 1;
            }
        }
    }
    (n, thread_cpu() - cpu0)
}

/// Per socket: its buffer and the two message headers that point into it.
struct Slot {
    buf: [u8; 2048],
    iov: libc::iovec,
    recv: libc::msghdr,
    send: libc::msghdr,
    from: libc::sockaddr_storage,
}

const RECV: u64 = 1 << 32;

fn relay_uring(socks: &[UdpSocket], sink: SocketAddr, stop: &AtomicBool) -> (u64, Duration) {
    let mut ring = IoUring::new(4096).expect("io_uring (kernel.io_uring_disabled?)");
    let fds: Vec<i32> = socks.iter().map(AsRawFd::as_raw_fd).collect();
    ring.submitter()
        .register_files(&fds)
        .expect("register files");
    let SocketAddr::V4(sink4) = sink else {
        panic!("IPv4 sink")
    };
    let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    to.sin_family = libc::AF_INET as libc::sa_family_t;
    to.sin_port = sink4.port().to_be();
    to.sin_addr.s_addr = u32::from(*sink4.ip()).to_be();
    // Boxed so the addresses handed to the kernel never move.
    let mut slots: Vec<Box<Slot>> = (0..socks.len())
        .map(|_| {
            Box::new(Slot {
                buf: [0; 2048],
                iov: libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                },
                recv: unsafe { std::mem::zeroed() },
                send: unsafe { std::mem::zeroed() },
                from: unsafe { std::mem::zeroed() },
            })
        })
        .collect();
    for s in &mut slots {
        s.iov.iov_base = s.buf.as_mut_ptr().cast();
        s.iov.iov_len = s.buf.len();
        s.recv.msg_iov = &mut s.iov;
        s.recv.msg_iovlen = 1;
        s.recv.msg_name = (&mut s.from as *mut libc::sockaddr_storage).cast();
        s.recv.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        s.send.msg_iov = &mut s.iov;
        s.send.msg_iovlen = 1;
        s.send.msg_name = (&mut to as *mut libc::sockaddr_in).cast();
        s.send.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
    }
    let arm = |ring: &mut IoUring, slots: &mut [Box<Slot>], i: usize| {
        let s = &mut slots[i];
        s.iov.iov_len = s.buf.len();
        s.recv.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        let e = opcode::RecvMsg::new(types::Fixed(i as u32), &mut s.recv)
            .build()
            .user_data(RECV | i as u64);
        while unsafe { ring.submission().push(&e) }.is_err() {
            let _ = ring.submit();
        }
    };
    for i in 0..slots.len() {
        arm(&mut ring, &mut slots, i);
    }
    let ts = types::Timespec::new().nsec(100_000_000);
    let args = types::SubmitArgs::new().timespec(&ts);
    let (mut n, cpu0) = (0u64, thread_cpu());
    let mut done = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let _ = ring.submitter().submit_with_args(1, &args);
        done.clear();
        done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        for &(tag, res) in &done {
            let i = (tag & 0xffff_ffff) as usize;
            if tag & RECV != 0 && res > 0 {
                let s = &mut slots[i];
                s.iov.iov_len = res as usize;
                let e = opcode::SendMsg::new(types::Fixed(i as u32), &s.send)
                    .build()
                    .user_data(i as u64);
                while unsafe { ring.submission().push(&e) }.is_err() {
                    let _ = ring.submit();
                }
            } else {
                if tag & RECV == 0 && res > 0 {
                    n += 1;
                }
                arm(&mut ring, &mut slots, i);
            }
        }
    }
    (n, thread_cpu() - cpu0)
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sockets = args.first().copied().unwrap_or(2000) as usize;
    let pps = args.get(1).copied().unwrap_or(100_000);
    let seconds = args.get(2).copied().unwrap_or(5).clamp(1, 60);
    println!(
        "uring_probe: {sockets} relay sockets, {pps} pps of {PACKET}-byte packets for {seconds} s per mode"
    );
    for mode in ["epoll", "uring"] {
        let socks: Vec<UdpSocket> = (0..sockets)
            .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind relay socket"))
            .collect();
        let addrs: Vec<SocketAddr> = socks
            .iter()
            .map(|s| s.local_addr().expect("addr"))
            .collect();
        for s in &socks {
            s.set_nonblocking(true).expect("nonblocking");
        }
        let sink = UdpSocket::bind("127.0.0.2:0").expect("bind sink");
        sink.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let sink_addr = sink.local_addr().expect("sink addr");
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let counter = {
            let (stop, received) = (stop.clone(), received.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if sink.recv_from(&mut buf).is_ok() {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        let relay = {
            let stop = stop.clone();
            std::thread::spawn(move || match mode {
                "epoll" => relay_epoll(&socks, sink_addr, &stop),
                _ => relay_uring(&socks, sink_addr, &stop),
            })
        };
        // Paced sender: every millisecond, the packets due by then.
        let tx = UdpSocket::bind("127.0.0.3:0").expect("bind sender");
        let packet = [0x80u8; PACKET];
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < Duration::from_secs(seconds) {
            let due = (start.elapsed().as_secs_f64() * pps as f64) as u64;
            while sent < due {
                let _ = tx.send_to(&packet, addrs[(sent as usize) % addrs.len()]);
                sent += 1;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        let (forwarded, cpu) = relay.join().expect("relay thread");
        let _ = counter.join();
        let got = received.load(Ordering::Relaxed);
        println!(
            "  {mode}: sent={sent} forwarded={forwarded} received={got} loss={:.3}% relay CPU={:.3} s → {:.2} µs per forwarded packet",
            100.0 * sent.saturating_sub(got) as f64 / sent.max(1) as f64,
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / forwarded.max(1) as f64
        );
    }
}
