//! An SDP body from either side: parsing, the codec filter, SDES keying (`a=crypto`) under each
//! SRTP policy and role, and writing never panic, and what is written parses again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trunkgate_media::Sdp;
use trunkgate_media::sdes::{self, Keying, Policy, Role};

fuzz_target!(|data: &[u8]| {
    let Ok(mut sdp) = Sdp::parse(data) else { return };
    let _ = sdp.media().len();
    let written = sdp.to_bytes();
    assert!(Sdp::parse(&written).is_ok(), "to_bytes wrote what parse refuses");
    if sdp.filter_codecs(&["PCMU", "PCMA", "telephone-event"]).is_ok() {
        let _ = Sdp::parse(&sdp.to_bytes());
    }
    for policy in [Policy::Optional, Policy::Required] {
        for role in [Role::Offer, Role::Answer] {
            let mut keyed = sdp.clone();
            let mut keying = Keying::default();
            for m in keyed.media_mut() {
                let _ = sdes::from_carrier(policy, role, m, &mut keying);
                let _ = sdes::to_carrier(policy, role, m, &mut keying);
            }
            // Keys add lines: a body at the line limit may go over it, nothing else.
            let again = Sdp::parse(&keyed.to_bytes());
            assert!(
                again.is_ok() || matches!(again, Err(trunkgate_media::sdp::Error::TooLarge(_))),
                "keyed SDP does not parse: {again:?}"
            );
        }
    }
});
