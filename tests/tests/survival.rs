//! A killed edge loses no call and no call record: calls answered through an edge (100 with
//! sipp and Redis, 20 with the file journal, one with raw RTP, one between two baresip phones
//! talking) that is then killed with `kill -9` are restored by the edge started again with the
//! same identity (the same addresses, the same store), end normally from either side, and get
//! exactly one call record, marked `recovered`. With a real `redis-server` as the fleet's
//! store, and standalone with the call journal in `--state-dir`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use trunkgate_tests::config::write_acme;
use trunkgate_tests::redis::Redis;
use trunkgate_tests::sipp::scenario;
use trunkgate_tests::*;

const NUMBER: &str = "+6498879333";

fn trunk(lab: &Lab, platform: SocketAddr) {
    write_acme(
        lab,
        &Trunk::new("acme", "pacific", "127.0.0.10/32", platform),
    );
}

/// Whether `edge` pinned its fast path (`trunkgate_edge_kernel_fast_path{state="pinned"}`),
/// checked to be so exactly when this run pins ([`trunkgate_tests::edge::fast_path_pins`]).
fn pinned(edge: &Edge) -> bool {
    let pinned = edge.metric("trunkgate_edge_kernel_fast_path", &[("state", "pinned")]) == 1.0;
    assert_eq!(
        pinned,
        trunkgate_tests::edge::fast_path_pins(),
        "the fast path is pinned exactly when it is on and bpffs is mounted"
    );
    pinned
}

/// Starts an edge with `state` flags on `sip` addresses (None: fresh ones) and `rtp` ports.
fn edge(
    lab: &Lab,
    name: &str,
    state: &[String],
    sip: Option<(SocketAddr, SocketAddr)>,
    rtp: u16,
) -> Edge {
    let mut extra: Vec<String> = state.to_vec();
    extra.extend([
        "--state-identity".into(),
        "edge-0".into(),
        "--rtp-ports".into(),
        format!("{rtp}-{}", rtp + 511),
    ]);
    Edge::start_named(
        lab,
        name,
        EdgeOptions {
            extra_args: extra,
            sip,
            ..Default::default()
        },
    )
}

/// `n` calls up through an edge killed and started again: the carrier hangs them up after the
/// restart; every call ends normally and has one record, marked recovered.
fn calls_survive_a_kill(lab: &Lab, state: &[String], n: u32, redis: Option<&Redis>) {
    let platform = Sipp::reserve(PLATFORM);
    trunk(lab, platform);
    let rtp = free_ports(512);
    let first = edge(lab, "edge-first", state, None, rtp);
    let uas = Sipp::answering(lab, "platform", platform)
        .calls(n)
        .timeout_secs(40)
        .start();
    let ruri = first.public_uri(NUMBER);
    // Calls the carrier hangs up 8 s after the answer, 50 a second.
    let carrier = Sipp::uac(
        lab,
        "carrier",
        scenario(lab, "uac_call.xml", &[("RURI", &ruri), ("HOLD_MS", "8000")]),
        CARRIER,
        first.public,
    )
    .calls(n)
    .args(&["-r", "50", "-l", &n.to_string()])
    .timeout_secs(40)
    .start();
    assert_eventually!(
        first.metric("trunkgate_edge_call_checkpoints_total", &[]) >= f64::from(n),
        Duration::from_secs(5),
        "the answered calls are checkpointed"
    );
    // Checkpoints are written in batches: give the last one its moment.
    println!("{n} calls up and checkpointed");
    std::thread::sleep(Duration::from_millis(300));
    let sip = (first.public, first.internal);
    first.signal("KILL");
    let killed = Instant::now();
    drop(first);
    let second = edge(lab, "edge-second", state, Some(sip), rtp);
    let back = killed.elapsed();
    println!("edge ready again {back:?} after kill -9, its calls restored");
    assert_eq!(
        second.metric("trunkgate_edge_calls_restored_total", &[("result", "ok")]),
        f64::from(n)
    );
    if let Some(redis) = redis {
        // Each restored call keeps the place it held: counted once, not once per life.
        assert_eq!(
            redis.zcard("trunkgate:{acme/pacific}:calls"),
            Some(u64::from(n)),
            "the trunk's count after the restart"
        );
    }
    // The carrier's BYEs reach the restarted edge: answered 200 (not 481), passed on.
    let run = carrier.wait();
    run.assert_ok();
    uas.wait().assert_ok();
    assert_eventually!(
        second.cdrs().len() == n as usize,
        Duration::from_secs(5),
        "one record per call"
    );
    for cdr in second.cdrs() {
        assert_eq!(cdr["recovered"], true, "{cdr}");
        assert_eq!(cdr["finalStatus"], 200, "{cdr}");
        assert!(
            cdr["durationSeconds"].as_f64().is_some_and(|d| d > 7.0),
            "the real start: {cdr}"
        );
    }
}

#[test]
fn calls_survive_a_killed_edge_with_redis() {
    let lab = Lab::new("survive_redis");
    trunkgate_tests::edge::edge_bin();
    let redis = Redis::start(&lab);
    calls_survive_a_kill(
        &lab,
        &["--state-store".into(), redis.url()],
        100,
        Some(&redis),
    );
    assert_eq!(
        redis.cli(&["HLEN", "trunkgate:calls:edge-0"]).as_deref(),
        Some("0"),
        "ended calls leave no checkpoint"
    );
}

#[test]
fn calls_survive_a_killed_standalone_edge_with_its_journal() {
    let lab = Lab::new("survive_journal");
    trunkgate_tests::edge::edge_bin();
    let dir = lab.path("state");
    calls_survive_a_kill(
        &lab,
        &["--state-dir".into(), dir.display().to_string()],
        20,
        None,
    );
}

/// An edge killed for good: another edge of the fleet ends its calls once it has been silent
/// for `--orphan-seconds`, BYE on both legs (to the addresses in the checkpoint), and writes
/// their records with `endReason: edge_lost`.
#[test]
fn an_edge_gone_for_good_has_its_calls_ended_by_another() {
    let lab = Lab::new("survive_orphans");
    trunkgate_tests::edge::edge_bin();
    let redis = Redis::start(&lab);
    let platform = Sipp::reserve(PLATFORM);
    trunk(&lab, platform);
    let start = |name: &str| {
        Edge::start_named(
            &lab,
            name,
            EdgeOptions::with_args(&[
                "--state-store",
                &redis.url(),
                "--state-identity",
                name,
                "--state-lease-seconds",
                "3",
                "--orphan-seconds",
                "3",
            ]),
        )
    };
    let (a, b) = (start("edge-a"), start("edge-b"));
    let uas = Sipp::answering(&lab, "platform", platform)
        .timeout_secs(40)
        .start();
    let ruri = a.public_uri(NUMBER);
    let carrier = Sipp::uac(
        &lab,
        "carrier",
        scenario(&lab, "uac_call_wait_bye.xml", &[("RURI", &ruri)]),
        CARRIER,
        a.public,
    )
    .timeout_secs(40)
    .start();
    assert_eventually!(
        a.metric("trunkgate_edge_call_checkpoints_total", &[]) >= 1.0,
        Duration::from_secs(5),
        "the call is up and checkpointed"
    );
    std::thread::sleep(Duration::from_millis(300));
    a.signal("KILL");
    let killed = Instant::now();
    // Both parties get a BYE from the other edge.
    carrier.wait().assert_ok();
    uas.wait().assert_ok();
    println!(
        "the call of the killed edge was ended {:?} after the kill (--orphan-seconds 3)",
        killed.elapsed()
    );
    assert_eventually!(
        b.cdrs().len() == 1,
        Duration::from_secs(5),
        "one record, written by the edge that ended the call"
    );
    let cdr = &b.cdrs()[0];
    assert_eq!(cdr["endReason"], "edge_lost", "{cdr}");
    assert_eq!(cdr["recovered"], true, "{cdr}");
    assert_eq!(
        b.metric("trunkgate_edge_orphan_calls_ended_total", &[]),
        1.0
    );
}

/// Audio through a killed edge: the edge started again binds the call's relay ports again and
/// relays both ways within a second of the first packets, to where media went before.
#[test]
fn audio_flows_again_through_the_restarted_edge() {
    use trunkgate_tests::rtp::*;
    use trunkgate_tests::ua::Ua;
    const WAIT: Duration = Duration::from_secs(2);
    let lab = Lab::new("survive_audio");
    trunkgate_tests::edge::edge_bin();
    let mut carrier = Ua::bind("carrier", CARRIER, "+6421555123");
    let mut platform = Ua::bind("platform", PLATFORM, "platform");
    trunk(&lab, platform.local);
    let state = [
        "--state-dir".to_string(),
        lab.path("state").display().to_string(),
    ];
    let rtp = free_ports(512);
    let first = edge(&lab, "edge-first", &state, None, rtp);
    let (c_rtp, p_rtp) = (RtpEnd::bind(CARRIER), RtpEnd::bind(PLATFORM));
    let offer = sdp(CARRIER, c_rtp.addr.port(), &[PCMU], "");
    let answer = sdp(PLATFORM, p_rtp.addr.port(), &[PCMU], "");
    let (mut cd, tx) = carrier.invite(
        first.public,
        &first.public_uri(NUMBER),
        "+6421555123",
        &offer,
    );
    let invite = platform.expect_request("INVITE", WAIT);
    platform.accept(&invite, &answer);
    let resp = carrier.final_response(&mut cd, &tx, WAIT);
    assert_eq!(resp.code(), Some(200), "{}", carrier.report());
    platform.expect_request("ACK", WAIT);
    let edge_public = sdp_rtp_addr(&resp.body).expect("the carrier's SDP answer");
    let edge_internal = sdp_rtp_addr(&invite.msg.body).expect("the platform's SDP offer");
    let both_ways = |first_seq: u16| {
        for seq in first_seq..first_seq + 3 {
            send(&c_rtp.rtp, edge_public, &g711(seq, 1, 0));
            send(&p_rtp.rtp, edge_internal, &g711(seq, 2, 0));
        }
        let up = collect(&p_rtp.rtp, 3, WAIT, Duration::from_millis(100)).len();
        let down = collect(&c_rtp.rtp, 3, WAIT, Duration::from_millis(100)).len();
        (up, down)
    };
    assert_eq!(both_ways(0), (3, 3), "audio both ways before");
    // A stream from the carrier every 20 ms across the kill and the restart; the platform's
    // arrivals give the gap a listener hears.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (sock, stop) = (c_rtp.rtp.try_clone().expect("clone"), stop.clone());
        std::thread::spawn(move || {
            let mut seq = 100u16;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = sock.send_to(&g711(seq, 7, 0), edge_public);
                seq = seq.wrapping_add(1);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let receiver = {
        let (sock, stop) = (p_rtp.rtp.try_clone().expect("clone"), stop.clone());
        std::thread::spawn(move || {
            let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
            let mut arrivals = Vec::new();
            let mut buf = [0u8; 2048];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if sock.recv_from(&mut buf).is_ok() {
                    arrivals.push(Instant::now());
                }
            }
            arrivals
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    // With the fast path pinned (root, bpffs), the kernel forwards the stream while no edge
    // runs.
    let pinned = pinned(&first);
    let sip = (first.public, first.internal);
    first.signal("KILL");
    let killed = Instant::now();
    drop(first);
    let second = edge(&lab, "edge-second", &state, Some(sip), rtp);
    let restarted = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sender.join();
    let arrivals = receiver.join().expect("the receiver");
    let gap = arrivals
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    println!(
        "RTP gap at the platform across kill -9 and restart: {gap:?} ({} packets arrived)",
        arrivals.len()
    );
    let again = arrivals
        .iter()
        .find(|t| **t > restarted)
        .map(|t| *t - restarted)
        .expect("the stream arrives again after the restart");
    println!("the first packet after the restarted edge was ready arrived {again:?} later");
    let meanwhile = arrivals
        .iter()
        .filter(|t| **t > killed + Duration::from_millis(100) && **t < restarted)
        .count();
    println!(
        "packets that reached the platform while no edge ran: {meanwhile} (fast path pinned: {pinned})"
    );
    if pinned {
        assert!(
            meanwhile > 0,
            "the pinned fast path forwards the stream while the edge is down"
        );
    }
    drain(&p_rtp.rtp, Duration::from_millis(200));
    drain(&c_rtp.rtp, Duration::from_millis(200));
    assert_eq!(
        both_ways(3),
        (3, 3),
        "audio both ways after the restart, on the same ports"
    );
    carrier.bye(&mut cd);
    platform.answer_bye(WAIT);
    let cdr = second.wait_cdr("the restored call", |c| c["callee"] == NUMBER);
    assert_eq!(cdr["recovered"], true, "{cdr}");
}

/// A real phone's call through a killed edge: baresip calls baresip through an edge keeping its
/// call journal in `--state-dir`, each phone sending its own sine tone and recording what it
/// hears. The edge is killed with `kill -9` while they talk and started again with the same
/// identity (addresses, relay ports, journal): each phone hears the other's tone again, the
/// carrier hangs up, the call ends normally on both phones (BYE answered 200 on both legs) and
/// has exactly one record, marked recovered. The silence each phone heard is printed.
#[test]
fn a_baresip_call_is_heard_again_through_a_restarted_edge() {
    baresip_call_across_a_kill(false);
}

/// The same with SRTP on the carrier leg (SDES, the trunk requiring it): the restarted edge
/// goes on with the call's keys where its contexts were, so the carrier's SRTP is opened and
/// the edge's is accepted again (no authentication failure or replay counted).
#[test]
fn an_srtp_call_is_heard_again_through_a_restarted_edge() {
    baresip_call_across_a_kill(true);
}

fn baresip_call_across_a_kill(srtp: bool) {
    use trunkgate_tests::baresip::{Baresip, Hearing, SETUP, Wav, assert_bye_crossed};
    use trunkgate_tests::baresip::{assert_given_edge_media, dominant_frequency};
    const SUBSCRIBER: &str = "+6421555123";
    const CARRIER_TONE_HZ: u32 = 1000;
    const PLATFORM_TONE_HZ: u32 = 600;
    /// Audio each phone hears before the kill, and again after the restart.
    const BEFORE: f64 = 1.5;
    const AFTER: f64 = 2.0;
    let lab = Lab::new(if srtp {
        "survive_srtp"
    } else {
        "survive_baresip"
    });
    trunkgate_tests::edge::edge_bin();
    let began = Instant::now();
    let mut platform = Baresip::phone(&lab, "platform", PLATFORM, NUMBER)
        .tone(PLATFORM_TONE_HZ)
        .auto_answer()
        .start();
    if srtp {
        write_acme(
            &lab,
            &Trunk::new("acme", "pacific", "127.0.0.10/32", platform.sip).srtp("Required"),
        );
    } else {
        trunk(&lab, platform.sip);
    }
    let state = [
        "--state-dir".to_string(),
        lab.path("state").display().to_string(),
    ];
    let rtp = free_ports(512);
    let mut first = edge(&lab, "edge-first", &state, None, rtp);
    let mut carrier = Baresip::phone(&lab, "carrier", CARRIER, SUBSCRIBER).tone(CARRIER_TONE_HZ);
    if srtp {
        carrier = carrier.srtp("srtp-mand");
    }
    let mut carrier = carrier.start();

    carrier.dial(&first.public_uri(NUMBER));
    for phone in [&mut carrier, &mut platform] {
        phone.wait_event("CALL_ESTABLISHED", SETUP);
        // RTP from the other phone reached it, through the edge's relay.
        phone.wait_event("CALL_RTPESTAB", SETUP);
    }
    assert_given_edge_media(&carrier, &first, EDGE_PUBLIC_IP);
    assert_given_edge_media(&platform, &first, EDGE_INTERNAL_IP);
    // What each phone hears of the other, every 10 ms, across the kill and the restart.
    let (at_carrier, at_platform) = (carrier.log_hearing(), platform.log_hearing());
    assert_eventually!(
        carrier.heard_seconds() >= BEFORE && platform.heard_seconds() >= BEFORE,
        Duration::from_secs(10),
        "each phone hears {BEFORE} s of the other before the kill; the carrier heard {:.2} s, \
         the platform {:.2} s",
        carrier.heard_seconds(),
        platform.heard_seconds()
    );
    assert_eventually!(
        first.metric("trunkgate_edge_call_checkpoints_total", &[]) >= 1.0,
        Duration::from_secs(5),
        "the answered call is checkpointed"
    );
    // Checkpoints are written in batches: give the last one its moment.
    std::thread::sleep(Duration::from_millis(300));

    // With the fast path pinned (root, bpffs), the kernel forwards the call's RTP while no edge
    // runs: the phones hear no gap at all.
    let pinned = pinned(&first);
    let sip = (first.public, first.internal);
    first.signal("KILL");
    let killed = Instant::now();
    assert!(
        first.wait_exit(Duration::from_secs(5)).is_some(),
        "the killed edge is gone"
    );
    // Whatever the killed edge wrote to stdout has been read by now.
    std::thread::sleep(Duration::from_millis(100));
    let records_of_the_killed = first.cdrs();
    drop(first);
    let second = edge(&lab, "edge-second", &state, Some(sip), rtp);
    let ready = Instant::now();
    println!(
        "edge ready again {:?} after kill -9, the baresip call restored",
        ready - killed
    );
    assert_eq!(
        second.metric("trunkgate_edge_calls_restored_total", &[("result", "ok")]),
        1.0,
        "the call is restored; the edge's log:\n{}",
        second.log_tail(40)
    );

    // Audio again: each phone hears AFTER seconds more of the other.
    let (carrier_then, platform_then) = (carrier.heard_seconds(), platform.heard_seconds());
    let again = eventually(Duration::from_secs(10), || {
        (carrier.heard_seconds() >= carrier_then + AFTER
            && platform.heard_seconds() >= platform_then + AFTER)
            .then_some(())
    });
    let (at_carrier, at_platform) = (at_carrier.finish(), at_platform.finish());
    let report = |who: &str, tone: u32, h: &Hearing| {
        let (silence, ended) = h.longest_silence();
        let end = h.samples.last().map_or(ready, |(t, _)| *t);
        // What the recording lacks of the wall-clock time since the kill (0 within sampling).
        let lost = ((end - killed).as_secs_f64() - (h.heard_at(end) - h.heard_at(killed))).max(0.0);
        let when = match ended {
            Some(e) if e >= killed => format!("ending {:?} after the kill", e - killed),
            Some(e) => format!("ending {:?} before the kill", killed - e),
            None => "never heard".to_string(),
        };
        format!(
            "the {who} (hearing the {tone} Hz tone): longest silence {silence:?}, {when}; \
             {lost:.2} s of audio missed in the {:.2} s from the kill",
            (end - killed).as_secs_f64(),
        )
    };
    let carrier_report = report("carrier", PLATFORM_TONE_HZ, &at_carrier);
    let platform_report = report("platform", CARRIER_TONE_HZ, &at_platform);
    println!(
        "kill -9 to the restarted edge ready: {:?} (fast path pinned: {pinned})\n\
         {carrier_report}\n{platform_report}",
        ready - killed
    );
    if trunkgate_tests::edge::kernel_fast_path().is_some() {
        assert_eq!(
            second.metric("trunkgate_edge_kernel_fast_path", &[("state", "on")]),
            1.0,
            "the restarted edge has its fast path on"
        );
    }
    assert!(
        again.is_some(),
        "each phone hears {AFTER} s more of the other after the restart; the carrier heard {:.2} \
         s more, the platform {:.2} s more\n{carrier_report}\n{platform_report}\nthe restarted \
         edge's log:\n{}",
        carrier.heard_seconds() - carrier_then,
        platform.heard_seconds() - platform_then,
        second.log_tail(60)
    );

    // The carrier hangs up: the BYE crosses the restarted edge, both phones end the call.
    carrier.hangup();
    let closed = platform.wait_event("CALL_CLOSED", SETUP);
    // baresip's words for "the peer sent BYE", as opposed to a timeout or an error.
    assert_eq!(
        closed["param"],
        "Connection reset by peer",
        "the platform's call ends by the carrier's BYE: {closed}\n{}",
        platform.trace_summary()
    );
    carrier.wait_event("CALL_CLOSED", SETUP);
    assert_bye_crossed(&carrier, &platform);
    // SRTP streams stay in userspace (the kernel does not hold keys).
    if pinned && !srtp {
        // The stream did not wait for the restarted edge.
        for (who, h) in [("carrier", &at_carrier), ("platform", &at_platform)] {
            let (silence, _) = h.longest_silence();
            assert!(
                silence < ready - killed,
                "the pinned fast path kept the {who}'s audio going while no edge ran: \
                 {silence:?} of silence, the edge was back after {:?}",
                ready - killed
            );
        }
    }

    // The tone each phone sent is what the other heard before the kill and after the restart.
    let check = |who: &str, wav: &Wav, tone: u32, from: f64, to: f64, when: &str| {
        let rate = f64::from(wav.rate);
        let mono = wav.mono();
        let part =
            &mono[((from * rate) as usize).min(mono.len())..((to * rate) as usize).min(mono.len())];
        let (freq, share) = dominant_frequency(part, wav.rate, 100, wav.rate / 2 - 100, 10);
        let rms = (part.iter().map(|x| x * x).sum::<f64>() / part.len().max(1) as f64).sqrt();
        println!(
            "[{who}] {when}: heard {freq} Hz for {:.2} s ({:.0}% of the energy, RMS {rms:.0})",
            part.len() as f64 / rate,
            share * 100.0
        );
        assert!(
            part.len() as f64 >= rate && freq.abs_diff(tone) <= 10 && share > 0.5 && rms > 1000.0,
            "the {who} heard the {tone} Hz tone {when}: {freq} Hz, {:.0}% of the energy, RMS \
             {rms:.0} over {:.2} s",
            share * 100.0,
            part.len() as f64 / rate
        );
    };
    for (who, phone, tone, hearing) in [
        ("carrier", &carrier, PLATFORM_TONE_HZ, &at_carrier),
        ("platform", &platform, CARRIER_TONE_HZ, &at_platform),
    ] {
        let wav = phone.recording();
        check(
            who,
            &wav,
            tone,
            0.0,
            hearing.heard_at(killed),
            "before the kill",
        );
        check(
            who,
            &wav,
            tone,
            hearing.heard_at(ready),
            wav.seconds(),
            "after the restart",
        );
    }

    // Exactly one record for the call, from the restarted edge.
    assert!(
        records_of_the_killed.is_empty(),
        "the killed edge wrote no record: {records_of_the_killed:?}"
    );
    let cdr = second.wait_cdr("the restored baresip call", |c| c["callee"] == NUMBER);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(second.cdrs().len(), 1, "one record: {:?}", second.cdrs());
    println!("the record: {cdr}");
    if let Some(ifaces) = trunkgate_tests::edge::kernel_fast_path() {
        let forwarded = second.metric(
            "trunkgate_edge_media_kernel_packets_total",
            &[("what", "forwarded")],
        );
        println!(
            "kernel fast path on {ifaces}: the restarted edge's kernel forwarded {forwarded} RTP packets"
        );
        if pinned && !srtp {
            assert!(
                forwarded > 0.0,
                "the restored call counts what the kernel forwarded"
            );
        }
    }
    assert_eq!(cdr["recovered"], true, "{cdr}");
    assert_eq!(cdr["finalStatus"], 200, "{cdr}");
    assert_eq!(cdr["caller"], SUBSCRIBER, "{cdr}");
    assert_eq!(cdr["endedBy"], "carrier", "{cdr}");
    assert!(
        cdr["durationSeconds"]
            .as_f64()
            .is_some_and(|d| d >= BEFORE + AFTER),
        "the real start: {cdr}"
    );
    for from in ["carrier", "platform"] {
        let m = trunkgate_tests::baresip::media_from(&cdr, from);
        // 50 packets a second, at least AFTER seconds of them relayed by the restarted edge.
        assert!(
            m["packets"].as_f64().unwrap_or(0.0) >= 50.0 * AFTER,
            "the {from}'s RTP is counted in the record: {m}"
        );
        // Scored, also when the pinned kernel fast path kept forwarding the stream and the
        // restored call took its RFC 3550 state over.
        assert!(
            m["mos"].as_f64().is_some_and(|mos| mos > 4.0),
            "the {from}'s direction has a quality score: {m}"
        );
    }
    if srtp {
        let suite = trunkgate_tests::baresip::media_from(&cdr, "carrier")["srtp"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(!suite.is_empty(), "the carrier's direction was SRTP: {cdr}");
        for reason in ["srtp_auth", "srtp_replay", "srtp_ssrc_limit"] {
            let n = second.metric(
                "trunkgate_edge_media_packets_dropped_total",
                &[("reason", reason)],
            );
            assert_eq!(n, 0.0, "{reason} after the restart: {cdr}");
        }
    }
    println!("the baresip survival test took {:?}", began.elapsed());
}
