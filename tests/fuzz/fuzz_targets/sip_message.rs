//! A datagram through the SIP codec boundary: no input panics it, every accessor answers, and
//! what `parse` accepts `serialize` writes so that `parse` reads it back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trunkgate_sip::{
    SipMessage, call_id, cseq, from_tag, from_user, list_entries, max_forwards, parse,
    request_uri_user, serialize, to_tag, to_user, top_via_branch,
};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = parse(data) else { return };
    let bytes = match &msg {
        SipMessage::Request(r) => {
            let _ = (call_id(r), cseq(r), from_tag(r), to_tag(r), top_via_branch(r));
            let _ = (from_user(r), to_user(r), max_forwards(r), request_uri_user(r));
            for h in r.headers.iter() {
                let _ = list_entries(h.value()).count();
            }
            serialize(r)
        }
        SipMessage::Response(r) => {
            let _ = (call_id(r), cseq(r), top_via_branch(r));
            serialize(r)
        }
        SipMessage::Extension(_) => return,
    };
    assert!(parse(&bytes).is_ok(), "serialize wrote what parse refuses");
});
