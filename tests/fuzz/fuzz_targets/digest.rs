//! Digest header values from carriers: a challenge to answer (outbound) and an Authorization to
//! verify (inbound). Neither panics; a forged Authorization never verifies.
#![no_main]

use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use trunkgate_digest::{Credentials, NonceIssuer, answer, ha1, parse_challenge, Algorithm};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let md5 = ha1(Algorithm::Md5, "trunk", "realm", "secret");
    let sha = ha1(Algorithm::Sha256, "trunk", "realm", "secret");
    let creds = Credentials {
        realm: "realm",
        username: "trunk",
        ha1_md5: &md5,
        ha1_sha256: &sha,
    };
    if let Ok(challenge) = parse_challenge(text) {
        let _ = answer(&challenge, "INVITE", "sip:x@y", &creds, || "c".to_string(), 1);
    }
    let mut issuer = NonceIssuer::new([9; 32]);
    let verified = issuer.verify(Some(text), "INVITE", "sip:x@y", &creds, SystemTime::now());
    assert!(verified.is_err(), "a nonce this issuer never minted verified");
});
