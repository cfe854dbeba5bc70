//! A datagram on an SRTP carrier leg: opening it as SRTP or SRTCP under every suite never
//! panics (the library indexes some lengths unchecked; `trunkgate_media::srtp` checks them
//! first), and what the edge seals from a plain packet opens again to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trunkgate_media::srtp::{Key, LegSrtp, SUITES};

fuzz_target!(|data: &[u8]| {
    let Some((&first, packet)) = data.split_first() else { return };
    let suite = SUITES[usize::from(first) % SUITES.len()];
    let rtcp = first & 0x80 != 0;
    let material = vec![7u8; suite.key_len() + suite.salt_len()];
    let (Some(a), Some(b)) = (
        Key::from_material(suite, material.clone()),
        Key::from_material(suite, material.iter().map(|x| x ^ 0x5a).collect()),
    ) else {
        return;
    };
    let Ok(mut edge) = LegSrtp::new(a.clone(), b.clone()) else { return };
    let Ok(mut peer) = LegSrtp::new(b, a) else { return };
    let _ = edge.unprotect(packet, rtcp);
    if let Ok(sealed) = edge.protect(packet, rtcp) {
        let opened = peer.unprotect(&sealed, rtcp);
        assert_eq!(opened.as_deref().ok(), Some(packet), "sealed then opened differs");
    }
});
