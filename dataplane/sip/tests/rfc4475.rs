//! The 49 RFC 4475 torture messages (tests/rfc4475/, byte-exact copies): each one parses, or is
//! refused with the status the RFC calls for, or dropped when no reply is possible.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use trunkgate_sip::{HasHeaders, SipMessage, parse, serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Parses to a request of a method rsipstack knows.
    Request,
    /// Parses to a request with an extension method (the caller answers 501).
    Extension,
    /// Parses to a response.
    Response,
    /// Refused for this reason (`metric_label`); the caller answers with this status.
    Reject(u16, &'static str),
    /// Refused for this reason; no reply is possible (a response): dropped and counted.
    Drop(&'static str),
}
use Expect::*;

/// File, RFC 4475 section, expected outcome, what the RFC says the message tests.
#[rustfmt::skip]
const TABLE: &[(&str, &str, Expect, &str)] = &[
    // §3.1.1 Valid messages: all must parse.
    ("wsinv.dat", "3.1.1.1", Request, "short tortuous INVITE: LWS, folding, escapes, comma-joined Vias"),
    ("intmeth.dat", "3.1.1.2", Extension, "wide range of valid characters, unknown method"),
    ("esc01.dat", "3.1.1.3", Request, "valid use of %-escapes"),
    ("escnull.dat", "3.1.1.4", Request, "escaped NULs in URIs"),
    ("esc02.dat", "3.1.1.5", Extension, "% that is not an escape; RE%47IST%45R is an unknown method"),
    ("lwsdisp.dat", "3.1.1.6", Request, "no LWS between display name and <"),
    ("longreq.dat", "3.1.1.7", Request, "long values in header fields"),
    ("dblreq.dat", "3.1.1.8", Request, "extra trailing octets in a UDP datagram: ignored"),
    ("semiuri.dat", "3.1.1.9", Request, "semicolon-separated parameters in the URI user part"),
    ("transports.dat", "3.1.1.10", Request, "varied and unknown transport types in Via"),
    ("mpart01.dat", "3.1.1.11", Request, "multipart MIME body with binary part"),
    ("unreason.dat", "3.1.1.12", Response, "unusual reason phrase (UTF-8)"),
    ("noreason.dat", "3.1.1.13", Response, "empty reason phrase"),
    // §3.1.2 Invalid messages.
    ("badinv01.dat", "3.1.2.1", Reject(400, "via"), "extraneous header field separators"),
    ("clerr.dat", "3.1.2.2", Reject(400, "content_length"), "Content-Length larger than the message"),
    ("ncl.dat", "3.1.2.3", Reject(400, "content_length"), "negative Content-Length"),
    ("scalar02.dat", "3.1.2.4", Reject(400, "cseq"), "request scalar fields with overlarge values (CSeq)"),
    ("scalarlg.dat", "3.1.2.5", Drop("cseq"), "response scalar fields with overlarge values: discard"),
    ("quotbal.dat", "3.1.2.6", Reject(400, "malformed_header"), "unterminated quoted string in display name"),
    ("ltgtruri.dat", "3.1.2.7", Reject(400, "request_uri"), "<> enclosing the Request-URI"),
    ("lwsruri.dat", "3.1.2.8", Reject(400, "start_line"), "malformed Request-URI (embedded LWS)"),
    ("lwsstart.dat", "3.1.2.9", Reject(400, "start_line"), "multiple SP separating Request-Line elements"),
    ("trws.dat", "3.1.2.10", Reject(400, "start_line"), "SP characters at the end of the Request-Line"),
    ("escruri.dat", "3.1.2.11", Reject(400, "request_uri"), "escaped headers in a SIP Request-URI"),
    ("baddate.dat", "3.1.2.12", Reject(400, "malformed_header"), "invalid time zone in Date"),
    ("regbadct.dat", "3.1.2.13", Reject(400, "malformed_header"), "name-addr URI with '?' not enclosed in <>"),
    ("badaspec.dat", "3.1.2.14", Reject(400, "malformed_header"), "spaces within addr-spec"),
    ("baddn.dat", "3.1.2.15", Reject(400, "malformed_header"), "non-token characters in an unquoted display name"),
    ("badvers.dat", "3.1.2.16", Reject(505, "version"), "unknown protocol version"),
    ("mismatch01.dat", "3.1.2.17", Reject(400, "cseq"), "start line and CSeq method mismatch"),
    ("mismatch02.dat", "3.1.2.18", Reject(501, "cseq"), "unknown method with CSeq method mismatch: 501 preferred"),
    ("bigcode.dat", "3.1.2.19", Drop("start_line"), "overlarge response code"),
    // §3.2 Transaction layer: a bare z9hG4bK branch parses; the transaction layer may 400 it.
    ("badbranch.dat", "3.2.1", Request, "missing transaction identifier after z9hG4bK"),
    // §3.3 Application layer: these parse; the application answers (416, 420, 415, 401, ...).
    ("insuf.dat", "3.3.1", Reject(400, "missing_header"), "missing Call-ID, From, To"),
    ("unkscm.dat", "3.3.2", Request, "unknown Request-URI scheme (application answers 416)"),
    ("novelsc.dat", "3.3.3", Request, "novel Request-URI scheme (application answers 416)"),
    ("unksm2.dat", "3.3.4", Request, "unknown URI schemes in header fields"),
    ("bext01.dat", "3.3.5", Request, "unknown Require/Proxy-Require (application answers 420)"),
    ("invut.dat", "3.3.6", Request, "unknown Content-Type (application answers 415)"),
    ("regaut01.dat", "3.3.7", Request, "unknown authorization scheme"),
    ("multi01.dat", "3.3.8", Reject(400, "conflicting_header"), "multiple values in single-value fields"),
    ("mcl01.dat", "3.3.9", Reject(400, "content_length"), "multiple Content-Length values"),
    ("bcast.dat", "3.3.10", Response, "200 OK with a broadcast Via (the UA drops it: two Vias)"),
    ("zeromf.dat", "3.3.11", Request, "Max-Forwards 0 (application answers or 483)"),
    // §3.4 Backward compatibility: all parse.
    ("cparam01.dat", "3.4.1", Request, "Contact parameter without <>"),
    ("cparam02.dat", "3.4.2", Request, "Contact parameter in <>"),
    ("regescrt.dat", "3.4.3", Request, "REGISTER with escaped Route header in a Contact URI"),
    ("sdp01.dat", "3.4.4", Request, "Accept with an unknown type"),
    ("inv2543.dat", "3.4.5", Request, "RFC 2543 INVITE: no branch, no From tag, no Content-Length"),
];

/// Messages the boundary cannot yet handle as the RFC says: (file, what happens now, why). Each
/// row still asserts what happens now, so a change is noticed. None today: all 49 behave as the
/// RFC calls for.
const KNOWN_GAPS: &[(&str, Expect, &str)] = &[];

fn read(file: &str) -> Vec<u8> {
    let path = format!("{}/tests/rfc4475/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn outcome(bytes: &[u8]) -> Expect {
    match parse(bytes) {
        Ok(SipMessage::Request(_)) => Request,
        Ok(SipMessage::Extension(_)) => Extension,
        Ok(SipMessage::Response(_)) => Response,
        Err(e) => match e.reply_status() {
            Some(status) => Reject(status, e.metric_label()),
            None => Drop(e.metric_label()),
        },
    }
}

#[test]
fn every_message_has_the_outcome_the_rfc_calls_for() {
    let mut failures = Vec::new();
    for &(file, section, expected, what) in TABLE {
        let expected = KNOWN_GAPS
            .iter()
            .find(|(gap, ..)| *gap == file)
            .map_or(expected, |&(_, now, _)| now);
        let got = outcome(&read(file));
        println!("{file:15} §{section:9} expected {expected:?}, got {got:?}");
        if got != expected {
            failures.push(format!(
                "{file} (§{section}, {what}): expected {expected:?}, got {got:?} ({:?})",
                parse(&read(file)).err()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_table_covers_all_49_files() {
    let mut files: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/rfc4475"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|f| f.ends_with(".dat"))
            .collect();
    files.sort();
    let mut listed: Vec<&str> = TABLE.iter().map(|row| row.0).collect();
    listed.sort();
    assert_eq!(files.len(), 49);
    assert_eq!(files, listed);
}

#[test]
fn refused_requests_get_a_reply_carrying_their_via_and_cseq() {
    for &(file, _, expected, _) in TABLE {
        let Reject(status, _) = expected else {
            continue;
        };
        let error = parse(&read(file)).unwrap_err();
        let reply = error.reply().expect(file);
        assert_eq!(reply.status_code.code(), status, "{file}");
        let vias = reply
            .headers
            .iter()
            .filter(|h| matches!(h, trunkgate_sip::Header::Via(_)));
        assert!(vias.count() >= 1, "{file}");
        let cseqs = reply
            .headers
            .iter()
            .filter(|h| matches!(h, trunkgate_sip::Header::CSeq(_)));
        assert_eq!(cseqs.count(), 1, "{file}");
        let wire = String::from_utf8(serialize(&reply)).unwrap();
        assert!(
            wire.starts_with(&format!("SIP/2.0 {status} ")),
            "{file}: {wire}"
        );
        assert!(
            wire.ends_with("Content-Length: 0\r\n\r\n"),
            "{file}: {wire}"
        );
    }
}

#[test]
fn valid_messages_survive_a_round_trip_through_serialize() {
    for &(file, _, expected, _) in TABLE {
        if !matches!(expected, Request | Extension | Response) {
            continue;
        }
        let once = serialize(&parse(&read(file)).unwrap());
        let again = parse(&once)
            .unwrap_or_else(|e| panic!("{file}: {e}\n{}", String::from_utf8_lossy(&once)));
        assert_eq!(serialize(&again), once, "{file}");
    }
}

/// What rsipstack's own reader does with the same messages: the reason this boundary exists.
/// If rsipstack starts refusing one of these, this test says so and the boundary can be revisited.
#[test]
fn rsipstack_alone_accepts_invalid_messages_and_refuses_valid_ones() {
    let accepted = |file| rsipstack::sip::parser::parse_message(&read(file)).is_ok();
    let invalid_but_accepted = [
        "badinv01.dat",
        "clerr.dat",
        "ncl.dat",
        "scalar02.dat",
        "scalarlg.dat",
        "quotbal.dat",
        "ltgtruri.dat",
        "trws.dat",
        "escruri.dat",
        "baddate.dat",
        "regbadct.dat",
        "badaspec.dat",
        "badvers.dat",
        "mismatch01.dat",
        "insuf.dat",
        "multi01.dat",
        "mcl01.dat",
    ];
    for file in invalid_but_accepted {
        assert!(accepted(file), "rsipstack now refuses {file}");
    }
    for file in ["intmeth.dat", "esc02.dat"] {
        assert!(!accepted(file), "rsipstack now accepts {file}");
    }
    // Without Content-Length, rsipstack drops a datagram's body (RFC 3261 §18.3 keeps it).
    let Ok(rsipstack::sip::SipMessage::Request(inv)) =
        rsipstack::sip::parser::parse_message(&read("inv2543.dat"))
    else {
        panic!("inv2543 unreadable");
    };
    assert!(inv.body.is_empty());
    let Ok(SipMessage::Request(ours)) = parse(&read("inv2543.dat")) else {
        panic!()
    };
    assert!(ours.body.starts_with(b"v=0"));
    let _ = ours.headers();
}

fn message(file: &str) -> SipMessage {
    parse(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn valid_messages_read_as_the_rfc_describes() {
    use trunkgate_sip::{
        call_id, cseq, from_tag, from_user, request_uri_user, to_tag, to_user, top_via_branch,
    };

    // wsinv: LWS everywhere, folded values, three Vias of which two share one line.
    let SipMessage::Request(wsinv) = message("wsinv.dat") else {
        panic!()
    };
    assert_eq!(to_tag(&wsinv), Some("1918181833n"));
    assert_eq!(from_tag(&wsinv), Some("98asjd8"));
    assert_eq!(cseq(&wsinv), Some((9, "INVITE")));
    assert_eq!(top_via_branch(&wsinv), Some("390skdjuw"));
    assert_eq!(trunkgate_sip::top_via_sent_by(&wsinv), Some("192.0.2.2"));
    let vias = wsinv
        .headers
        .iter()
        .filter(|h| matches!(h, trunkgate_sip::Header::Via(_)));
    assert_eq!(vias.count(), 3);
    assert_eq!(trunkgate_sip::max_forwards(&wsinv), Some(68));
    assert_eq!(wsinv.body.len(), 150);

    // intmeth and esc02: extension methods, exposed as written.
    let SipMessage::Extension(intmeth) = message("intmeth.dat") else {
        panic!()
    };
    assert_eq!(
        intmeth.method,
        "!interesting-Method0123456789_*+`.%indeed'~"
    );
    assert_eq!(cseq(&intmeth), Some((139122385, intmeth.method.as_str())));
    assert_eq!(
        call_id(&intmeth),
        Some("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{")
    );
    assert_eq!(from_tag(&intmeth), Some("_token~1'+`*%!-."));
    assert_eq!(
        to_user(&intmeth).as_deref(),
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(
        intmeth.uri.user(),
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    let SipMessage::Extension(esc02) = message("esc02.dat") else {
        panic!()
    };
    assert_eq!(esc02.method, "RE%47IST%45R");

    // esc01, escnull, semiuri: user parts decoded; they write back escaped.
    let SipMessage::Request(esc01) = message("esc01.dat") else {
        panic!()
    };
    assert_eq!(request_uri_user(&esc01), Some("sips:user@example.com"));
    assert_eq!(to_user(&esc01).as_deref(), Some("user"));
    assert_eq!(from_user(&esc01).as_deref(), Some("I have spaces"));
    assert!(
        serialize(&esc01)
            .starts_with(b"INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0\r\n")
    );
    let SipMessage::Request(escnull) = message("escnull.dat") else {
        panic!()
    };
    assert_eq!(to_user(&escnull).as_deref(), Some("null-\0-null"));
    let SipMessage::Request(semiuri) = message("semiuri.dat") else {
        panic!()
    };
    assert_eq!(request_uri_user(&semiuri), Some("user;par=u@example.net"));
    assert_eq!(semiuri.uri.host().to_string(), "example.com");

    // dblreq: the REGISTER only; the INVITE after its empty body is ignored.
    let SipMessage::Request(dblreq) = message("dblreq.dat") else {
        panic!()
    };
    assert_eq!(dblreq.method, trunkgate_sip::Method::Register);
    assert!(dblreq.body.is_empty());
    assert_eq!(
        call_id(&dblreq),
        Some("dblreq.0ha0isndaksdj99sdfafnl3lk233412")
    );

    // mpart01: a binary body of exactly Content-Length octets.
    let SipMessage::Request(mpart01) = message("mpart01.dat") else {
        panic!()
    };
    assert_eq!(mpart01.body.len(), 553);

    // unreason, noreason: the reason phrase as sent.
    let SipMessage::Response(unreason) = message("unreason.dat") else {
        panic!()
    };
    assert_eq!(unreason.status_code.code(), 200);
    assert!(
        unreason
            .wire_reason
            .as_deref()
            .is_some_and(|r| r.starts_with("= 2**3 * 5**2 "))
    );
    let SipMessage::Response(noreason) = message("noreason.dat") else {
        panic!()
    };
    assert_eq!(
        (noreason.status_code.code(), noreason.wire_reason.as_deref()),
        (100, None)
    );

    // inv2543: no branch, no From tag, body to the end of the datagram.
    let SipMessage::Request(inv2543) = message("inv2543.dat") else {
        panic!()
    };
    assert_eq!((top_via_branch(&inv2543), from_tag(&inv2543)), (None, None));
    assert!(inv2543.body.starts_with(b"v=0\r\n") && inv2543.body.ends_with(b"RTP/AVP 0\r\n"));

    // unkscm, novelsc: another scheme, for the application to answer 416.
    for file in ["unkscm.dat", "novelsc.dat"] {
        let SipMessage::Request(request) = message(file) else {
            panic!()
        };
        assert!(
            !matches!(
                request.uri.scheme,
                Some(trunkgate_sip::model::Scheme::Sip | trunkgate_sip::model::Scheme::Sips)
            ),
            "{file}"
        );
    }
}

/// The team's notes on rsipstack, checked: it unfolds continuation lines, knows the compact
/// forms, keeps a comma-joined Via whole (as one header) and reads an IPv6 Request-URI.
#[test]
fn rsipstack_alone_reads_folding_compact_forms_and_ipv6() {
    use rsipstack::sip::{HasHeaders, Header, SipMessage as Raw, parser::parse_message};
    let Ok(Raw::Request(wsinv)) = parse_message(&read("wsinv.dat")) else {
        panic!("wsinv")
    };
    let vias: Vec<&str> = wsinv
        .headers()
        .iter()
        .filter_map(|h| match h {
            Header::Via(v) => Some(v.value()),
            _ => None,
        })
        .collect();
    assert_eq!(vias.len(), 2, "{vias:?}");
    assert!(
        vias[1].contains("z9hG4bK9ikj8") && vias[1].contains("z9hG4bK30239"),
        "{vias:?}"
    );
    let Ok(Raw::Request(longreq)) = parse_message(&read("longreq.dat")) else {
        panic!("longreq")
    };
    let via_count = longreq
        .headers()
        .iter()
        .filter(|h| matches!(h, Header::Via(_)))
        .count();
    assert_eq!(via_count, 34);
    let ipv6 = b"OPTIONS sip:[2001:db8::1]:5060 SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::2];branch=z9hG4bK1\r\n\
        From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: 6\r\nCSeq: 1 OPTIONS\r\n\r\n";
    assert!(matches!(parse_message(ipv6), Ok(Raw::Request(_))));
}
