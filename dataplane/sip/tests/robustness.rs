//! No input panics the boundary. Every RFC 4475 message is cut at every byte offset and has bytes
//! overwritten at a sample of offsets, and each variant goes through `parse`, `frame_stream`, the
//! accessors and `serialize`. What `parse` accepts, `serialize` writes so that `parse` reads it
//! back.
#![allow(clippy::unwrap_used)]

use trunkgate_sip::{
    SipMessage, call_id, cseq, frame_stream, from_tag, from_user, max_forwards, parse,
    request_uri_user, serialize, to_tag, to_user, top_via_branch,
};

/// Octets that matter to a SIP reader, and some that must never confuse it.
const TRICKY: &[&[u8]] = &[
    b"<",
    b">",
    b"\"",
    b";",
    b",",
    b":",
    b"@",
    b"[",
    b"]",
    b"?",
    b"=",
    b"%",
    b"\\",
    b" ",
    b"\t",
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n ",
    b"\0",
    b"/",
    b"\xff",
    b"\xc3",
    "é".as_bytes(),
    "𝄞".as_bytes(),
    b"[::1]",
    b"9999999999999999999999",
    b"-1",
    b"SIP/2.0",
    b"z9hG4bK",
];

fn exercise(bytes: &[u8]) {
    let _ = frame_stream(bytes);
    match parse(bytes) {
        Ok(message) => {
            let _ = (top_via_branch(&message), call_id(&message), cseq(&message));
            let _ = trunkgate_sip::top_via_sent_by(&message);
            let _ = (from_tag(&message), to_tag(&message), max_forwards(&message));
            let _ = (from_user(&message), to_user(&message));
            if let SipMessage::Request(request) = &message {
                let _ = request_uri_user(request);
            }
            let wire = serialize(&message);
            if let Err(e) = parse(&wire) {
                panic!(
                    "accepted {:?}\nbut not its own output {:?}: {e}",
                    String::from_utf8_lossy(bytes),
                    String::from_utf8_lossy(&wire)
                );
            }
        }
        Err(error) => {
            let _ = (error.metric_label(), error.reason(), error.reply_status());
            // A reply to a broken request echoes its broken fields, so it is only written.
            if let Some(reply) = error.reply() {
                let _ = serialize(&reply);
            }
        }
    }
}

fn corpus() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/rfc4475");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dat"))
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn truncated_messages_never_panic() {
    for message in corpus() {
        for end in 0..=message.len() {
            exercise(&message[..end]);
        }
    }
}

#[test]
fn messages_with_overwritten_bytes_never_panic() {
    // xorshift64: reproducible without a dependency.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for message in corpus() {
        for _ in 0..400 {
            let mut variant = message.clone();
            for _ in 0..1 + next() % 3 {
                let at = (next() as usize) % variant.len().max(1);
                let with = TRICKY[(next() as usize) % TRICKY.len()];
                let end = (at + 1).min(variant.len());
                variant.splice(at..end, with.iter().copied());
            }
            exercise(&variant);
        }
    }
}
