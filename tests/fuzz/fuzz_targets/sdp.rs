//! An SDP body from either side: parsing, the codec filter and writing never panic, and what is
//! written parses again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trunkgate_media::Sdp;

fuzz_target!(|data: &[u8]| {
    let Ok(mut sdp) = Sdp::parse(data) else { return };
    let _ = sdp.media().len();
    let written = sdp.to_bytes();
    assert!(Sdp::parse(&written).is_ok(), "to_bytes wrote what parse refuses");
    if sdp.filter_codecs(&["PCMU", "PCMA", "telephone-event"]).is_ok() {
        let _ = Sdp::parse(&sdp.to_bytes());
    }
});
