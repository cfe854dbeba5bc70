//! What a user meets starting and stopping the edge: a port another process (another edge, too)
//! holds is refused at start-up naming address and protocol, as is a missing config folder; a
//! second Ctrl-C ends the drain at once, hanging the calls up with BYE and writing their records.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use trunkgate_tests::edge::edge_bin;
use trunkgate_tests::sip::RawInvite;
use trunkgate_tests::*;

const NUMBER: &str = "+6498879333";
const WAIT: Duration = Duration::from_secs(5);

fn config(lab: &Lab, platform: SocketAddr) {
    lab.write_config(
        "acme.yaml",
        &config::documents(&[
            Trunk::new("acme", "pacific", "127.0.0.10/32", platform).yaml(),
            Numbers::byoc("acme", "numbers", "pacific", &["+6498879300-+6498879399"]).yaml(),
        ]),
    );
}

/// Runs the edge binary to its (expected) failure; returns its exit code and stderr.
fn run_to_failure(args: &[String]) -> (Option<i32>, String) {
    let out = Command::new("timeout")
        .arg("10")
        .arg(edge_bin())
        .args(args)
        .output()
        .expect("run the edge");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn args(
    config: &std::path::Path,
    public: SocketAddr,
    internal: SocketAddr,
    admin: SocketAddr,
) -> Vec<String> {
    vec![
        "--config".into(),
        config.display().to_string(),
        "--public-sip".into(),
        public.to_string(),
        "--internal-sip".into(),
        internal.to_string(),
        "--admin".into(),
        admin.to_string(),
    ]
}

#[test]
fn a_second_edge_on_the_same_ports_refuses_to_start_naming_address_and_protocol() {
    let lab = Lab::new("startup_ports");
    config(&lab, Sipp::reserve(PLATFORM));
    let edge = Edge::start(&lab, EdgeOptions::default());
    let spare = || SocketAddr::new(EDGE_INTERNAL_IP, free_port());
    // Same SIP address as the running edge (whose SO_REUSEPORT sockets would share it).
    let (code, err) = run_to_failure(&args(&lab.config_dir(), edge.public, spare(), spare()));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("UDP {}", edge.public)) && err.contains("in use"),
        "names the protocol and address: {err}"
    );
    // Same admin address.
    let (code, err) = run_to_failure(&args(&lab.config_dir(), spare(), spare(), edge.admin));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("TCP {}", edge.admin)), "{err}");
    // A plain socket of another program on the platform-side port.
    let other = UdpSocket::bind((EDGE_INTERNAL_IP, 0)).expect("a socket");
    let taken = other.local_addr().expect("its address");
    let (code, err) = run_to_failure(&args(&lab.config_dir(), spare(), taken, spare()));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("UDP {taken}")), "{err}");
    // The running edge was not disturbed.
    assert!(matches!(edge.get("/readyz"), Some((200, _))));
}

/// What a new user tripped on (issue 25): an edge that would advertise 0.0.0.0, both SIP sides
/// on one address, and an RTP range with room for no call all started and failed later, call
/// by call. Now each is refused at start with what to set.
#[test]
fn settings_that_cannot_work_are_refused_at_start_with_what_to_set() {
    let lab = Lab::new("startup_refusals");
    config(&lab, Sipp::reserve(PLATFORM));
    let spare = || SocketAddr::new(EDGE_INTERNAL_IP, free_port());
    let wildcard = SocketAddr::from(([0, 0, 0, 0], free_port()));
    let (code, err) = run_to_failure(&args(&lab.config_dir(), wildcard, spare(), spare()));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("binds every address") && err.contains("--advertise-host"),
        "{err}"
    );
    assert!(err.contains("set --public-media-ip"), "{err}");
    let same = spare();
    let (code, err) = run_to_failure(&args(&lab.config_dir(), same, same, spare()));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("overlap"), "{err}");
    let mut tiny = args(&lab.config_dir(), spare(), spare(), spare());
    tiny.extend(["--rtp-ports", "30000-30001", "--workers", "1"].map(String::from));
    let (code, err) = run_to_failure(&tiny);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("a relayed call needs 2"), "{err}");
}

#[test]
fn a_missing_config_folder_is_an_error_at_start_up() {
    let lab = Lab::new("startup_no_config");
    let spare = || SocketAddr::new(EDGE_INTERNAL_IP, free_port());
    let missing = lab.path("no-such-folder");
    let (code, err) = run_to_failure(&args(&missing, spare(), spare(), spare()));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no such folder"), "{err}");
}

#[test]
fn a_second_ctrl_c_hangs_up_the_calls_and_stops_at_once() {
    let lab = Lab::new("startup_second_sigint");
    let platform = Sipp::reserve(PLATFORM);
    config(&lab, platform);
    let mut edge = Edge::start(
        &lab,
        EdgeOptions {
            extra_args: vec!["--drain-seconds".into(), "120".into()],
            ..EdgeOptions::default()
        },
    );
    let uas = Sipp::answering(&lab, "platform", platform).start();
    let carrier = RawUdp::bind(CARRIER);
    let inv = RawInvite::new(&edge.public_uri(NUMBER), "+6421555123", "sigint");
    carrier.send(edge.public, &inv.invite(carrier.local));
    let ok = carrier.recv_final("INVITE", WAIT).expect("answered");
    assert_eq!(ok.code(), Some(200), "{}", ok.text());
    carrier.send(
        edge.public,
        &inv.in_dialog("ACK", inv.cseq, carrier.local, &ok),
    );

    edge.signal_edge("INT");
    assert!(
        edge.wait_exit(Duration::from_secs(2)).is_none(),
        "the first Ctrl-C drains: the call may go on"
    );
    edge.signal_edge("INT");
    let status = edge
        .wait_exit(WAIT)
        .expect("the second Ctrl-C stops it at once");
    assert!(status.success(), "{status:?}");
    let bye = eventually(WAIT, || {
        carrier.recv_msg(WAIT).filter(|m| m.method() == Some("BYE"))
    })
    .expect("the carrier gets a BYE");
    assert!(
        bye.header("Reason").is_some_and(|r| r.contains("503")),
        "{}",
        bye.text()
    );
    let cdr = edge.wait_cdr("the call", |c| c["callee"] == NUMBER);
    assert_eq!(cdr["endedBy"], "edge", "{cdr}");
    assert!(
        uas.stop().received().any(|m| m.method() == Some("BYE")),
        "the platform gets a BYE"
    );
}
