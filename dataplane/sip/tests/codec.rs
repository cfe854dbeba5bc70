//! What the edge sees through the codec: what it accepts, refuses, frames and writes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use trunkgate_sip::model::{Header, Host};
use trunkgate_sip::{
    HasHeaders, Method, SipMessage, StreamFrame, call_id, cseq, frame_stream, from_tag, from_user,
    max_forwards, parse, request_uri_user, response_to, serialize, to_tag, to_user, top_via_branch,
    warning,
};

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

/// A carrier's INVITE; `edit` rewrites header lines before the message is assembled.
fn invite(edit: impl Fn(Vec<String>) -> Vec<String>, body: &str) -> Vec<u8> {
    let lines = [
        "INVITE sip:+15551230000@edge.example.net SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKcarrier1;rport",
        "Max-Forwards: 70",
        "From: \"Carrier\" <sip:+15559870000@carrier.example.com>;tag=f1",
        "To: <sip:+15551230000@edge.example.net>",
        "Call-ID: a84b4c76e66710@192.0.2.10",
        "CSeq: 314159 INVITE",
        "Contact: <sip:+15559870000@192.0.2.10:5060>",
        "Content-Type: application/sdp",
    ];
    let mut lines = edit(lines.iter().map(|l| l.to_string()).collect());
    if !lines
        .iter()
        .any(|l| l.to_ascii_lowercase().starts_with("content-length"))
    {
        lines.push(format!("Content-Length: {}", body.len()));
    }
    format!("{}\r\n\r\n{body}", lines.join("\r\n")).into_bytes()
}

fn keep(lines: Vec<String>) -> Vec<String> {
    lines
}

fn request(bytes: &[u8]) -> trunkgate_sip::Request {
    match parse(bytes) {
        Ok(SipMessage::Request(r)) => r,
        other => panic!(
            "not a request: {other:?}\n{}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

fn refusal(bytes: &[u8]) -> (Option<u16>, &'static str) {
    let error = parse(bytes).expect_err("accepted");
    (error.reply_status(), error.metric_label())
}

fn replace(from: &'static str, to: &'static str) -> impl Fn(Vec<String>) -> Vec<String> {
    move |lines| {
        lines
            .into_iter()
            .map(|l| {
                if l.starts_with(from) {
                    to.to_string()
                } else {
                    l
                }
            })
            .collect()
    }
}

fn add(line: &'static str) -> impl Fn(Vec<String>) -> Vec<String> {
    move |mut lines| {
        lines.push(line.to_string());
        lines
    }
}

#[test]
fn a_typical_invite_reads_with_every_accessor() {
    let invite = request(&invite(keep, SDP));
    assert_eq!(invite.method, Method::Invite);
    assert_eq!(invite.body, SDP.as_bytes());
    assert_eq!(top_via_branch(&invite), Some("z9hG4bKcarrier1"));
    assert_eq!(
        trunkgate_sip::top_via_sent_by(&invite),
        Some("192.0.2.10:5060")
    );
    assert_eq!(call_id(&invite), Some("a84b4c76e66710@192.0.2.10"));
    assert_eq!(cseq(&invite), Some((314159, "INVITE")));
    assert_eq!(from_tag(&invite), Some("f1"));
    assert_eq!(to_tag(&invite), None);
    assert_eq!(request_uri_user(&invite), Some("+15551230000"));
    assert_eq!(from_user(&invite).as_deref(), Some("+15559870000"));
    assert_eq!(to_user(&invite).as_deref(), Some("+15551230000"));
    assert_eq!(max_forwards(&invite), Some(70));
}

#[test]
fn body_longer_than_content_length_is_cut_to_it() {
    // RFC 3261 §18.3: on UDP the octets past Content-Length are discarded.
    let bytes = invite(add("Content-Length: 10"), SDP);
    assert_eq!(request(&bytes).body, &SDP.as_bytes()[..10]);
}

#[test]
fn content_length_beyond_the_datagram_is_refused_with_400() {
    let bytes = invite(add("Content-Length: 500"), SDP);
    assert_eq!(refusal(&bytes), (Some(400), "content_length"));
}

#[test]
fn missing_content_length_on_udp_takes_the_rest_of_the_datagram() {
    let bytes = invite(add("Content-Length: 0"), "");
    let without = String::from_utf8(bytes)
        .unwrap()
        .replace("Content-Length: 0\r\n", "")
        + SDP;
    assert_eq!(request(without.as_bytes()).body, SDP.as_bytes());
}

#[test]
fn malformed_or_conflicting_content_lengths_are_refused() {
    for line in [
        "Content-Length: -1",
        "Content-Length: 1e3",
        "Content-Length: 99999999999999999999999",
    ] {
        assert_eq!(
            refusal(&invite(add(line), "")),
            (Some(400), "content_length"),
            "{line}"
        );
    }
    let two = invite(|l| add("l: 3")(add("Content-Length: 4")(l)), "abcd");
    assert_eq!(refusal(&two), (Some(400), "content_length"));
    let same = invite(|l| add("l: 4")(add("Content-Length: 4")(l)), "abcd");
    assert_eq!(request(&same).body, b"abcd");
}

#[test]
fn compact_forms_read_as_their_long_names() {
    let bytes = b"OPTIONS sip:edge.example.net SIP/2.0\r\n\
        v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKc1\r\nf: <sip:a@example.com>;tag=9\r\n\
        t: <sip:b@example.net>\r\ni: compact-1\r\nm: <sip:a@192.0.2.1>\r\nc: text/plain\r\n\
        k: timer\r\ns: hi\r\nCSeq: 1 OPTIONS\r\nl: 2\r\n\r\nhi";
    let options = request(bytes);
    let has = |f: fn(&Header) -> bool| options.headers.iter().any(f);
    assert!(has(|h| matches!(h, Header::Via(_))));
    assert!(has(|h| matches!(h, Header::Contact(_))));
    assert!(has(|h| matches!(h, Header::ContentType(_))));
    assert!(has(|h| matches!(h, Header::Supported(_))));
    assert!(has(|h| matches!(h, Header::Subject(_))));
    assert_eq!(top_via_branch(&options), Some("z9hG4bKc1"));
    assert_eq!(from_tag(&options), Some("9"));
    assert_eq!(call_id(&options), Some("compact-1"));
    assert_eq!(options.body, b"hi");
}

#[test]
fn comma_joined_vias_become_separate_vias_in_order() {
    let bytes = invite(
        replace(
            "Via:",
            "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKtop , SIP/2.0/TCP proxy.example.com;branch=z9hG4bKnext",
        ),
        SDP,
    );
    let vias: Vec<String> = request(&bytes)
        .headers
        .iter()
        .filter_map(|h| match h {
            Header::Via(v) => Some(v.value().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        vias,
        [
            "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKtop",
            "SIP/2.0/TCP proxy.example.com;branch=z9hG4bKnext"
        ]
    );
}

#[test]
fn folded_header_fields_are_joined() {
    let bytes = invite(
        replace(
            "From:",
            "From: \"Carrier\"\r\n  <sip:+15559870000@carrier.example.com>\r\n\t;tag = f1",
        ),
        SDP,
    );
    let invite = request(&bytes);
    assert_eq!(from_tag(&invite), Some("f1"));
    assert_eq!(
        invite
            .headers
            .iter()
            .find(|h| matches!(h, Header::From(_)))
            .unwrap()
            .value(),
        "\"Carrier\" <sip:+15559870000@carrier.example.com>;tag=f1"
    );
}

#[test]
fn ipv6_request_uri_and_via_are_read() {
    let bytes = invite(
        |l| {
            let l = replace(
                "INVITE",
                "INVITE sip:+15551230000@[2001:db8::1]:5060;user=phone SIP/2.0",
            )(l);
            replace(
                "Via:",
                "Via: SIP/2.0/UDP [2001:db8::10]:5060;branch=z9hG4bK6",
            )(l)
        },
        SDP,
    );
    let invite = request(&bytes);
    assert_eq!(
        invite.uri.host(),
        &Host::IpAddr("2001:db8::1".parse().unwrap())
    );
    assert_eq!(request_uri_user(&invite), Some("+15551230000"));
    let reply = response_to(&invite, 404, None, None);
    assert_eq!(top_via_branch(&reply), Some("z9hG4bK6"));
    assert_eq!(
        trunkgate_sip::top_via_sent_by(&reply),
        Some("[2001:db8::10]:5060")
    );
}

#[test]
fn unknown_and_lowercase_methods_parse_as_extension_requests() {
    for method in ["PING", "invite"] {
        let bytes = String::from_utf8(invite(keep, ""))
            .unwrap()
            .replace("INVITE sip", &format!("{method} sip"))
            .replace("CSeq: 314159 INVITE", &format!("CSeq: 314159 {method}"));
        let Ok(SipMessage::Extension(request)) = parse(bytes.as_bytes()) else {
            panic!("{method}");
        };
        assert_eq!(request.method, method);
        assert_eq!(cseq(&request), Some((314159, method)));
        let reply = response_to(&request, 501, None, None);
        assert!(serialize(&reply).starts_with(b"SIP/2.0 501 Not Implemented\r\n"));
    }
}

#[test]
fn mandatory_and_single_valued_header_fields_are_enforced() {
    let without_call_id = invite(
        |l| {
            l.into_iter()
                .filter(|l| !l.starts_with("Call-ID"))
                .collect()
        },
        SDP,
    );
    assert_eq!(refusal(&without_call_id), (Some(400), "missing_header"));
    let without_max_forwards = invite(
        |l| l.into_iter().filter(|l| !l.starts_with("Max-")).collect(),
        SDP,
    );
    assert_eq!(max_forwards(&request(&without_max_forwards)), None);
    let two_call_ids = invite(add("i: another@192.0.2.10"), SDP);
    assert_eq!(refusal(&two_call_ids), (Some(400), "conflicting_header"));
    let same_call_id_twice = invite(add("Call-ID: a84b4c76e66710@192.0.2.10"), SDP);
    let invite = request(&same_call_id_twice);
    assert_eq!(
        invite
            .headers
            .iter()
            .filter(|h| matches!(h, Header::CallId(_)))
            .count(),
        1
    );
}

#[test]
fn cseq_and_max_forwards_must_be_in_range_and_match() {
    let cases = [
        ("CSeq: 4294967296 INVITE", "cseq"),
        ("CSeq: 1 BYE", "cseq"),
        ("CSeq: INVITE", "cseq"),
        ("Max-Forwards: 256", "malformed_header"),
    ];
    for (line, label) in cases {
        let field = line.split(':').next().unwrap();
        let bytes = invite(
            move |l| {
                l.into_iter()
                    .map(|h| {
                        if h.starts_with(field) {
                            line.to_string()
                        } else {
                            h
                        }
                    })
                    .collect()
            },
            SDP,
        );
        assert_eq!(refusal(&bytes), (Some(400), label), "{line}");
    }
    let largest = invite(replace("CSeq:", "CSeq: 4294967295 INVITE"), SDP);
    assert_eq!(cseq(&request(&largest)), Some((u32::MAX, "INVITE")));
}

#[test]
fn requests_that_cannot_be_answered_are_dropped() {
    // An ACK is never answered (RFC 3261 §17.2.1).
    let ack = String::from_utf8(invite(add("Date: yesterday"), ""))
        .unwrap()
        .replace("INVITE", "ACK");
    assert_eq!(refusal(ack.as_bytes()), (None, "malformed_header"));
    // Without a readable top Via there is nowhere to send a reply.
    let no_via = invite(replace("Via:", "Via: garbage"), SDP);
    assert_eq!(refusal(&no_via), (None, "via"));
    // A response is never answered.
    let response = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n\r\n";
    assert_eq!(refusal(response), (None, "missing_header"));
    assert_eq!(refusal(b"\x16\x03\x01\x02\x00garbage"), (None, "framing"));
    assert_eq!(
        refusal(b"\x16\x03\x01\x02\x00\xffgarbage\r\n\r\n"),
        (None, "start_line")
    );
}

#[test]
fn a_crlf_only_datagram_is_a_keep_alive() {
    assert_eq!(parse(b"\r\n\r\n").unwrap_err().metric_label(), "keep_alive");
    // RFC 3261 §7.5: CRLF before the start line is ignored.
    let mut bytes = b"\r\n\r\n".to_vec();
    bytes.extend(invite(keep, SDP));
    request(&bytes);
}

#[test]
fn a_datagram_without_the_empty_line_is_refused_unless_it_ends_after_a_header() {
    let whole = invite(keep, "");
    let ends_after_a_header = &whole[..whole.len() - 2];
    request(ends_after_a_header);
    let cut_mid_line = &whole[..whole.len() - 6];
    assert_eq!(refusal(cut_mid_line), (Some(400), "framing"));
}

#[test]
fn stream_framing_waits_for_the_whole_message() {
    let message = invite(keep, SDP);
    for end in 0..message.len() {
        assert_eq!(frame_stream(&message[..end]).unwrap(), None, "cut at {end}");
    }
    assert_eq!(
        frame_stream(&message).unwrap(),
        Some(StreamFrame::Message { len: message.len() })
    );
}

#[test]
fn stream_framing_cuts_two_messages_apart() {
    let first = invite(keep, SDP);
    let second = invite(replace("CSeq:", "CSeq: 314160 INVITE"), "");
    let mut buf = [first.clone(), second.clone()].concat();
    let frame = frame_stream(&buf).unwrap().unwrap();
    assert_eq!(frame, StreamFrame::Message { len: first.len() });
    assert_eq!(
        cseq(&request(&buf[..frame.consumed()])),
        Some((314159, "INVITE"))
    );
    buf.drain(..frame.consumed());
    assert_eq!(buf, second);
    assert_eq!(
        frame_stream(&buf).unwrap().unwrap().consumed(),
        second.len()
    );
}

#[test]
fn stream_keep_alives_are_reported_for_dropping_and_pings_for_a_pong() {
    let message = invite(keep, "");
    let ping = [b"\r\n\r\n".as_slice(), &message].concat();
    let frame = frame_stream(&ping).unwrap().unwrap();
    assert_eq!(frame, StreamFrame::KeepAlive { len: 4 });
    assert!(frame.is_ping());
    let pong = frame_stream(b"\r\n").unwrap().unwrap();
    assert_eq!(pong, StreamFrame::KeepAlive { len: 2 });
    assert!(!pong.is_ping());
    // Half a CRLF waits for the rest.
    assert_eq!(frame_stream(b"\r").unwrap(), None);
    assert_eq!(
        frame_stream(b"\r\n\r").unwrap(),
        Some(StreamFrame::KeepAlive { len: 2 })
    );
}

#[test]
fn stream_messages_need_a_sane_content_length() {
    let without = String::from_utf8(invite(add("Content-Length: 0"), ""))
        .unwrap()
        .replace("Content-Length: 0\r\n", "");
    assert_eq!(
        frame_stream(without.as_bytes()).unwrap_err().metric_label(),
        "framing"
    );
    let folded = invite(add("Content-Length:\r\n 3"), "abc");
    assert_eq!(
        frame_stream(&folded).unwrap().unwrap().consumed(),
        folded.len()
    );
    let huge = invite(add("Content-Length: 70000"), "");
    assert_eq!(frame_stream(&huge).unwrap_err().metric_label(), "too_large");
    let endless = vec![b'a'; trunkgate_sip::MAX_MESSAGE_LEN];
    assert_eq!(
        frame_stream(&endless).unwrap_err().metric_label(),
        "too_large"
    );
    assert!(frame_stream(&endless).unwrap_err().reply_status().is_none());
}

#[test]
fn response_to_copies_what_rfc_3261_8_2_6_says() {
    let bytes = invite(
        |l| {
            let l = replace(
                "Via:",
                "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKcarrier1",
            )(l);
            add("Via: SIP/2.0/TCP 198.51.100.1;branch=z9hG4bKsecond")(add("Timestamp: 54")(l))
        },
        SDP,
    );
    let invite = request(&bytes);
    let reply = response_to(&invite, 486, None, Some("edge-7"));
    let wire = String::from_utf8(serialize(&reply)).unwrap();
    assert_eq!(
        wire,
        "SIP/2.0 486 Busy Here\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKcarrier1\r\n\
         From: \"Carrier\" <sip:+15559870000@carrier.example.com>;tag=f1\r\n\
         To: <sip:+15551230000@edge.example.net>;tag=edge-7\r\n\
         Call-ID: a84b4c76e66710@192.0.2.10\r\n\
         CSeq: 314159 INVITE\r\n\
         Via: SIP/2.0/TCP 198.51.100.1;branch=z9hG4bKsecond\r\n\
         Content-Length: 0\r\n\r\n"
    );
    // 100 Trying: no To tag, Timestamp echoed (RFC 3261 §8.2.6.1).
    let trying = response_to(&invite, 100, None, None);
    assert_eq!(to_tag(&trying), None);
    assert!(
        trying
            .headers
            .iter()
            .any(|h| matches!(h, Header::Timestamp(_)))
    );
    // Without a tag argument the tag is stable for a retransmission of the same request.
    let once = response_to(&invite, 480, None, None);
    let again = response_to(&request(&bytes), 480, None, None);
    assert_eq!(to_tag(&once), to_tag(&again));
    assert!(to_tag(&once).is_some_and(|t| !t.is_empty()));
}

#[test]
fn response_to_keeps_an_existing_to_tag_and_a_given_reason() {
    let in_dialog = invite(
        replace("To:", "To: <sip:+15551230000@edge.example.net>;tag=mine"),
        SDP,
    );
    let mut reply = response_to(
        &request(&in_dialog),
        403,
        Some("Trunk Disabled"),
        Some("other"),
    );
    assert_eq!(to_tag(&reply), Some("mine"));
    reply.headers.push(warning(
        "edge.example.net",
        "trunk \"carrier-a\" is disabled",
    ));
    let wire = String::from_utf8(serialize(&reply)).unwrap();
    assert!(wire.starts_with("SIP/2.0 403 Trunk Disabled\r\n"), "{wire}");
    assert!(
        wire.contains(
            "\r\nWarning: 399 edge.example.net \"trunk \\\"carrier-a\\\" is disabled\"\r\n"
        ),
        "{wire}"
    );
    let custom = response_to(&request(&in_dialog), 499, None, None);
    assert!(serialize(&custom).starts_with(b"SIP/2.0 499 Request Failure\r\n"));
}

#[test]
fn serialize_writes_the_true_content_length_and_no_injected_lines() {
    let mut invite = request(&invite(keep, SDP));
    invite.body.truncate(3);
    invite
        .headers
        .push(Header::Subject(trunkgate_sip::model::Subject::new(
            "hi\r\nX-Evil: 1",
        )));
    let wire = String::from_utf8(serialize(&invite)).unwrap();
    assert_eq!(wire.matches("Content-Length").count(), 1);
    assert!(wire.contains("\r\nContent-Length: 3\r\n"));
    assert!(wire.contains("\r\nSubject: hi  X-Evil: 1\r\n"));
    assert!(wire.ends_with("\r\n\r\nv=0"));
}

#[test]
fn a_refused_request_can_be_answered_with_a_warning() {
    let bytes = invite(replace("CSeq:", "CSeq: 1 BYE"), SDP);
    let error = parse(&bytes).unwrap_err();
    let mut reply = error.reply().unwrap();
    reply
        .headers
        .push(warning("edge.example.net", error.reason()));
    let wire = String::from_utf8(serialize(&reply)).unwrap();
    assert!(wire.starts_with("SIP/2.0 400 Bad Request\r\n"));
    assert!(wire.contains(
        "Warning: 399 edge.example.net \"method BYE does not match the request method INVITE\""
    ));
    assert_eq!(call_id(&reply), Some("a84b4c76e66710@192.0.2.10"));
}

#[test]
fn user_parts_are_decoded_and_tel_uris_give_their_number() {
    let bytes = invite(
        |l| {
            let l = replace(
                "INVITE",
                "INVITE tel:+15551230000;phone-context=example.net SIP/2.0",
            )(l);
            let l = replace(
                "From:",
                "From: <sip:alice%20smith@example.com;user=phone>;tag=f1",
            )(l);
            replace("To:", "To: <tel:+15551230000>")(l)
        },
        SDP,
    );
    let invite = request(&bytes);
    assert_eq!(request_uri_user(&invite), Some("+15551230000"));
    assert_eq!(from_user(&invite).as_deref(), Some("alice smith"));
    assert_eq!(to_user(&invite).as_deref(), Some("+15551230000"));
    let wire = serialize(&invite);
    assert!(wire.starts_with(b"INVITE tel:+15551230000;phone-context=example.net SIP/2.0\r\n"));
}

#[test]
fn header_fields_that_are_not_utf8_or_carry_controls_are_refused() {
    let latin1 = invite(add("Subject: caf\u{e9}"), SDP);
    let latin1 = String::from_utf8(latin1)
        .unwrap()
        .replace("caf\u{e9}", "caf\u{1}");
    assert_eq!(refusal(latin1.as_bytes()), (Some(400), "malformed_header"));
    let mut bytes = invite(add("Subject: cafe"), SDP);
    let at = bytes.windows(4).position(|w| w == b"cafe").unwrap();
    bytes[at + 3] = 0xe9;
    assert_eq!(refusal(&bytes), (Some(400), "malformed_header"));
}

#[test]
fn messages_for_each_accepted_kind_serialize_back_to_what_was_read() {
    let original = invite(keep, SDP);
    assert_eq!(serialize(&parse(&original).unwrap()), original);
    let message = parse(&original).unwrap();
    assert_eq!(message.headers().len(), 9);
}
