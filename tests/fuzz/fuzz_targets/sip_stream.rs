//! A TCP byte stream cut into messages: framing never panics, never claims more bytes than it
//! has, and every frame it cuts goes through `parse` without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trunkgate_sip::{StreamFrame, frame_stream, parse};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some(frame)) = frame_stream(rest) {
        let len = match frame {
            StreamFrame::KeepAlive { len } => len,
            StreamFrame::Message { len } => {
                assert!(len <= rest.len());
                let _ = parse(&rest[..len]);
                len
            }
        };
        assert!(len > 0 && len <= rest.len(), "a frame takes some of what there is");
        rest = &rest[len..];
    }
});
