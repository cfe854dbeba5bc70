//! Digest authentication as the carriers see it: the RFC examples, the edge's challenges answered
//! and verified, every refusal with its metric label, and input that must never panic.

use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use trunkgate_digest::{
    Algorithm, AuthError, Challenge, Credentials, MAX_HEADER_LEN, NonceIssuer, answer, choose, ha1,
    parse_challenge, random_cnonce, response,
};

const REALM: &str = "sip.carrier.example";
const USER: &str = "trunk-7";
const PASSWORD: &str = "Circle Of Life";
const URI: &str = "sip:+15551234567@edge.example.net";
const SECRET: [u8; 32] = [7; 32];
/// What a trunk with `algorithms: [SHA-256, MD5]` offers.
const BOTH: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Md5];

/// A trunk's digest secrets as the configuration holds them: HA1 values, never the password.
struct Trunk {
    realm: String,
    username: String,
    ha1_md5: String,
    ha1_sha256: String,
}

impl Trunk {
    fn new(realm: &str, username: &str, password: &str) -> Self {
        Self {
            realm: realm.into(),
            username: username.into(),
            ha1_md5: ha1(Algorithm::Md5, username, realm, password),
            ha1_sha256: ha1(Algorithm::Sha256, username, realm, password),
        }
    }

    fn credentials(&self) -> Credentials<'_> {
        Credentials {
            realm: &self.realm,
            username: &self.username,
            ha1_md5: &self.ha1_md5,
            ha1_sha256: &self.ha1_sha256,
        }
    }
}

fn edge_trunk() -> Trunk {
    Trunk::new(REALM, USER, PASSWORD)
}

/// What a carrier holding `trunk` sends back for an INVITE after `challenge_value`.
fn carrier_answer(challenge_value: &str, trunk: &Trunk, nc: u32) -> String {
    let challenge = parse_challenge(challenge_value).expect("the edge's challenge parses");
    answer(
        &challenge,
        "INVITE",
        URI,
        &trunk.credentials(),
        random_cnonce,
        nc,
    )
    .expect("the challenge is answerable")
}

fn verify_at(
    issuer: &mut NonceIssuer,
    header: Option<&str>,
    trunk: &Trunk,
    later: u64,
) -> Result<Algorithm, AuthError> {
    let now = SystemTime::now() + Duration::from_secs(later);
    issuer
        .verify(header, "INVITE", URI, &trunk.credentials(), now)
        .map(|verified| verified.algorithm)
}

fn label(result: &Result<Algorithm, AuthError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.metric_label(),
    }
}

#[test]
fn rfc_examples_give_the_published_responses() {
    let rfc2617_nonce = "dcd98b7102dd2f0e8b11d0f600bfb0c093";
    let rfc7616_nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    let rfc7616_cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    #[rustfmt::skip]
    let cases = [
        ("RFC 2617 §3.5", Algorithm::Md5, "testrealm@host.com", "Circle Of Life",
         rfc2617_nonce, "0a4f113b", "6629fae49393a05397450978507c4ef1"),
        ("RFC 7616 §3.9.1 MD5", Algorithm::Md5, "http-auth@example.org", "Circle of Life",
         rfc7616_nonce, rfc7616_cnonce, "8ca523f5e9506fed4657c9700eebdbec"),
        ("RFC 7616 §3.9.1 SHA-256", Algorithm::Sha256, "http-auth@example.org", "Circle of Life",
         rfc7616_nonce, rfc7616_cnonce,
         "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ];
    for (name, algorithm, realm, password, nonce, cnonce, expected) in cases {
        let ha1 = ha1(algorithm, "Mufasa", realm, password);
        let got = response(
            algorithm,
            &ha1,
            nonce,
            Some(("00000001", cnonce)),
            "GET",
            "/dir/index.html",
        );
        assert_eq!(got, expected, "{name}");
    }
    assert_eq!(
        ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life"
        ),
        "939e7578ed9e3c518a452acee763bce9"
    );
}

#[test]
fn answering_the_rfc_7616_challenges_picks_sha_256_and_reproduces_its_authorization() {
    let offered = [
        r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
        r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
    ];
    let challenges: Vec<Challenge> = offered
        .iter()
        .map(|v| parse_challenge(v).expect("RFC 7616 challenge"))
        .collect();
    let chosen = choose(&challenges).expect("one is chosen");
    let mufasa = Trunk::new("http-auth@example.org", "Mufasa", "Circle of Life");
    let cnonce = || "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ".to_owned();
    let header = answer(
        chosen,
        "GET",
        "/dir/index.html",
        &mufasa.credentials(),
        cnonce,
        1,
    );
    assert_eq!(
        header.expect("answered"),
        concat!(
            r#"Digest username="Mufasa", realm="http-auth@example.org", "#,
            r#"nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", uri="/dir/index.html", "#,
            r#"response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", "#,
            r#"algorithm=SHA-256, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", "#,
            r#"qop=auth, nc=00000001, opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
        )
    );
}

#[test]
fn the_edge_offers_its_challenges_in_the_order_asked() {
    let issuer = NonceIssuer::new(SECRET).with_opaque("edge-1");
    let md5_only: Vec<Algorithm> = issuer
        .challenges(REALM, false, &[Algorithm::Md5])
        .iter()
        .map(|v| parse_challenge(v).expect("our challenge parses").algorithm)
        .collect();
    assert_eq!(md5_only, [Algorithm::Md5]);
    for stale in [false, true] {
        let offered: Vec<Challenge> = issuer
            .challenges(REALM, stale, &BOTH)
            .iter()
            .map(|v| parse_challenge(v).expect("our challenge parses"))
            .collect();
        let algorithms: Vec<Algorithm> = offered.iter().map(|c| c.algorithm).collect();
        assert_eq!(algorithms, [Algorithm::Sha256, Algorithm::Md5]);
        for challenge in &offered {
            assert_eq!(challenge.realm, REALM);
            assert!(challenge.qop_auth);
            assert_eq!(challenge.stale, stale);
            assert_eq!(challenge.opaque.as_deref(), Some("edge-1"));
        }
    }
}

#[test]
fn answers_to_the_edges_challenges_verify() {
    let trunk = edge_trunk();
    let mut issuer = NonceIssuer::new(SECRET);
    // Each case has its own nonce: the two challenges of one 401 share theirs, and so its count.
    let cases = [
        (
            "both offered",
            issuer.challenges(REALM, false, &BOTH),
            Algorithm::Sha256,
        ),
        (
            "MD5 only",
            issuer.challenges(REALM, false, &[Algorithm::Md5]),
            Algorithm::Md5,
        ),
        (
            "SHA-256 only",
            vec![issuer.challenge(REALM, Algorithm::Sha256, false)],
            Algorithm::Sha256,
        ),
    ];
    for (name, offered, expected) in cases {
        let challenges: Vec<Challenge> = offered
            .iter()
            .map(|v| parse_challenge(v).expect("our challenge parses"))
            .collect();
        let chosen = choose(&challenges).expect("one is chosen");
        let header = answer(
            chosen,
            "INVITE",
            URI,
            &trunk.credentials(),
            random_cnonce,
            1,
        );
        let header = header.expect("answered");
        let verified = verify_at(&mut issuer, Some(&header), &trunk, 0);
        assert_eq!(verified, Ok(expected), "{name}: {header}");
    }
}

#[test]
fn a_nonce_from_one_worker_is_re_challenged_as_stale_by_another() {
    // Worker B cannot see the counts worker A has accepted, so accepting A's nonce would let a
    // replay through whenever the kernel or the Call-ID hash picks another worker.
    let trunk = edge_trunk();
    let mut worker_a = NonceIssuer::new(SECRET).with_issuer(0);
    let mut worker_b = NonceIssuer::new(SECRET).with_issuer(1);
    let header = carrier_answer(
        &worker_a.challenge(REALM, Algorithm::Sha256, false),
        &trunk,
        1,
    );
    assert_eq!(
        verify_at(&mut worker_b, Some(&header), &trunk, 0),
        Err(AuthError::OtherIssuer)
    );
    assert_eq!(
        verify_at(&mut worker_a, Some(&header), &trunk, 0),
        Ok(Algorithm::Sha256)
    );
    assert_eq!(
        verify_at(&mut worker_b, Some(&header), &trunk, 0),
        Err(AuthError::OtherIssuer),
        "the replay on the other worker is still not accepted"
    );
    assert_eq!(
        verify_at(&mut worker_a, Some(&header), &trunk, 0),
        Err(AuthError::Replay)
    );
    // A wrong digest on another worker's nonce is a wrong digest, not a stale nonce.
    let wrong = header.replace("response=\"", "response=\"0");
    assert_eq!(
        verify_at(&mut worker_b, Some(&wrong), &trunk, 0),
        Err(AuthError::BadResponse)
    );
}

#[test]
fn the_rfc_2069_form_without_qop_verifies_once() {
    let trunk = edge_trunk();
    let mut issuer = NonceIssuer::new(SECRET);
    for algorithm in [Algorithm::Md5, Algorithm::Sha256] {
        let mut challenge = parse_challenge(&issuer.challenge(REALM, algorithm, false))
            .expect("our challenge parses");
        challenge.qop_auth = false;
        let no_cnonce = || unreachable!("no cnonce without qop");
        let header = answer(
            &challenge,
            "INVITE",
            URI,
            &trunk.credentials(),
            no_cnonce,
            1,
        )
        .expect("answered");
        assert!(!header.contains("qop") && !header.contains("nc=") && !header.contains("cnonce"));
        let first = verify_at(&mut issuer, Some(&header), &trunk, 0);
        let again = verify_at(&mut issuer, Some(&header), &trunk, 0);
        assert_eq!((label(&first), label(&again)), ("ok", "replay"), "{header}");
    }
}

#[test]
fn refusals_carry_their_metric_label_and_a_warning_text() {
    let trunk = edge_trunk();
    let mut issuer = NonceIssuer::new(SECRET);
    let other_key = NonceIssuer::new([8; 32]);
    let sha = |issuer: &NonceIssuer| issuer.challenge(REALM, Algorithm::Sha256, false);
    let md5 = |issuer: &NonceIssuer| issuer.challenge(REALM, Algorithm::Md5, false);
    let mut without_sha256 = edge_trunk();
    without_sha256.ha1_sha256.clear();

    let mut tampered = parse_challenge(&sha(&issuer)).expect("our challenge parses");
    let flipped = if tampered.nonce.starts_with('A') {
        "B"
    } else {
        "A"
    };
    tampered.nonce.replace_range(..1, flipped);
    let tampered = answer(
        &tampered,
        "INVITE",
        URI,
        &trunk.credentials(),
        random_cnonce,
        1,
    );

    let other_uri = answer(
        &parse_challenge(&sha(&issuer)).expect("our challenge parses"),
        "INVITE",
        "sip:198.51.100.1:5060",
        &trunk.credentials(),
        random_cnonce,
        1,
    );

    let by_hand = |extra: &str| {
        format!(
            r#"Digest username="{USER}", realm="{REALM}", nonce="AAAA", uri="{URI}", response="00"{extra}"#
        )
    };
    #[rustfmt::skip]
    let cases: Vec<(&str, Option<String>, &Trunk, u64, &str)> = vec![
        ("right credentials", Some(carrier_answer(&sha(&issuer), &trunk, 1)), &trunk, 0, "ok"),
        ("right MD5 credentials", Some(carrier_answer(&md5(&issuer), &trunk, 1)), &trunk, 0, "ok"),
        ("no Authorization", None, &trunk, 0, "missing"),
        ("wrong password",
         Some(carrier_answer(&sha(&issuer), &Trunk::new(REALM, USER, "guess"), 1)), &trunk, 0,
         "bad_response"),
        ("wrong MD5 password",
         Some(carrier_answer(&md5(&issuer), &Trunk::new(REALM, USER, "guess"), 1)), &trunk, 0,
         "bad_response"),
        ("another username",
         Some(carrier_answer(&sha(&issuer), &Trunk::new(REALM, "mallory", PASSWORD), 1)), &trunk,
         0, "unknown_user"),
        ("another realm",
         Some(carrier_answer(&issuer.challenge("other.example", Algorithm::Sha256, false),
              &Trunk::new("other.example", USER, PASSWORD), 1)), &trunk, 0, "wrong_realm"),
        ("expired nonce", Some(carrier_answer(&sha(&issuer), &trunk, 1)), &trunk, 301, "stale"),
        ("nonce at the end of its life", Some(carrier_answer(&sha(&issuer), &trunk, 1)), &trunk,
         299, "ok"),
        ("expired nonce, wrong password",
         Some(carrier_answer(&sha(&issuer), &Trunk::new(REALM, USER, "guess"), 1)), &trunk, 301,
         "bad_response"),
        ("nonce signed with another key", Some(carrier_answer(&sha(&other_key), &trunk, 1)),
         &trunk, 0, "bad_nonce"),
        ("tampered nonce", tampered.ok(), &trunk, 0, "bad_nonce"),
        ("short nonce", Some(by_hand("")), &trunk, 0, "bad_nonce"),
        ("SHA-256 HA1 not provisioned", Some(carrier_answer(&sha(&issuer), &trunk, 1)),
         &without_sha256, 0, "unsupported_algorithm"),
        ("MD5-sess", Some(by_hand(", algorithm=MD5-sess")), &trunk, 0, "unsupported_algorithm"),
        ("SHA-512-256", Some(by_hand(", algorithm=SHA-512-256")), &trunk, 0,
         "unsupported_algorithm"),
        ("auth-int", Some(by_hand(r#", qop=auth-int, nc=00000001, cnonce="x""#)), &trunk, 0,
         "unsupported_algorithm"),
        // sipp signs sip:HOST:PORT; a proxy may rewrite the Request-URI after the UA signed.
        ("a right answer over another uri", other_uri.ok(), &trunk, 0, "ok"),
        ("a forged answer over another uri",
         Some(by_hand("").replace(URI, "sip:other@edge.example.net")), &trunk, 0, "bad_nonce"),
    ];
    for (name, header, verify_with, later, expected) in cases {
        let result = verify_at(&mut issuer, header.as_deref(), verify_with, later);
        assert_eq!(label(&result), expected, "{name}: {header:?}");
        if let Err(e) = result {
            let warning = e.to_string();
            assert!(
                !warning.is_empty() && !warning.contains(['"', '\r', '\n']),
                "{warning}"
            );
        }
    }
}

#[test]
fn malformed_credentials_are_refused_as_malformed() {
    let trunk = edge_trunk();
    let mut issuer = NonceIssuer::new(SECRET);
    let valid = carrier_answer(
        &issuer.challenge(REALM, Algorithm::Sha256, false),
        &trunk,
        1,
    );
    let huge = format!("{valid}, x=\"{}\"", "a".repeat(MAX_HEADER_LEN));
    let without = |param: &str| {
        let start = valid.find(&format!("{param}=")).expect("param present");
        let end = valid[start..]
            .find(", ")
            .map_or(valid.len(), |e| start + e + 2);
        valid[..start].to_owned() + &valid[end..]
    };
    let cases = [
        String::new(),
        "   ".into(),
        "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==".into(),
        "Digest".into(),
        "Digest ".into(),
        format!(r#"Digest username="{USER}"#),
        format!(r#"Digest username="{USER}", USERNAME="{USER}""#),
        valid.replacen("Digest ", "Digest realm=\"x\", ", 1),
        "Digest username".into(),
        "Digest =x".into(),
        r#"Digest username="a" realm="b""#.into(),
        "Digest username=, realm=b".into(),
        huge,
        without("response"),
        without("nonce"),
        without("nc"),
        without("cnonce"),
        valid.replace("nc=00000001", "nc=1"),
        valid.replace("nc=00000001", "nc=0000000g"),
        valid.replace("nc=00000001", "nc=+0000001"),
    ];
    for header in cases {
        let result = verify_at(&mut issuer, Some(&header), &trunk, 0);
        assert_eq!(label(&result), "malformed", "{header:?}");
    }
    assert_eq!(
        verify_at(&mut issuer, Some(&valid), &trunk, 0),
        Ok(Algorithm::Sha256)
    );
}

#[test]
fn a_nonce_count_is_accepted_once_and_must_grow() {
    let trunk = edge_trunk();
    let mut issuer = NonceIssuer::new(SECRET);
    let challenge = issuer.challenge(REALM, Algorithm::Sha256, false);
    let steps = [
        (1, "ok"),
        (1, "replay"),
        (3, "ok"),
        (2, "replay"),
        (3, "replay"),
        (4, "ok"),
    ];
    for (nc, expected) in steps {
        let header = carrier_answer(&challenge, &trunk, nc);
        let result = verify_at(&mut issuer, Some(&header), &trunk, 0);
        assert_eq!(label(&result), expected, "nc {nc}");
    }
}

#[test]
fn a_full_replay_guard_refuses_new_nonces_as_stale() {
    let trunk = edge_trunk();
    let mut issuer = NonceIssuer::new(SECRET).with_replay_capacity(1);
    let first = issuer.challenge(REALM, Algorithm::Sha256, false);
    let second = issuer.challenge(REALM, Algorithm::Sha256, false);
    let steps = [(&first, 1, "ok"), (&second, 1, "stale"), (&first, 2, "ok")];
    for (challenge, nc, expected) in steps {
        let header = carrier_answer(challenge, &trunk, nc);
        let result = verify_at(&mut issuer, Some(&header), &trunk, 0);
        assert_eq!(label(&result), expected, "nc {nc}");
    }
}

#[test]
fn answers_count_in_eight_hex_digits() {
    let trunk = edge_trunk();
    let issuer = NonceIssuer::new(SECRET);
    let challenge = issuer.challenge(REALM, Algorithm::Md5, false);
    for (nc, expected) in [
        (1, "nc=00000001"),
        (10, "nc=0000000a"),
        (u32::MAX, "nc=ffffffff"),
    ] {
        let header = carrier_answer(&challenge, &trunk, nc);
        assert!(header.ends_with(expected), "{header}");
    }
}

#[test]
fn answering_a_challenge_for_another_realm_says_which_realms() {
    let challenge = parse_challenge(r#"Digest realm="carrier.example", nonce="n", qop="auth""#)
        .expect("parses");
    let result = answer(
        &challenge,
        "INVITE",
        URI,
        &edge_trunk().credentials(),
        random_cnonce,
        1,
    );
    let error = result.expect_err("another realm");
    assert_eq!(error.metric_label(), "wrong_realm");
    assert_eq!(
        error.to_string(),
        r#"carrier challenged with realm "carrier.example" but the trunk's credentials are for realm "sip.carrier.example""#
    );
}

#[test]
fn carrier_challenges_parse() {
    let challenge = |algorithm, qop_auth, stale, realm: &str, opaque: Option<&str>| Challenge {
        realm: realm.into(),
        nonce: "f84f1cec41e6cbe5aea9c8e88d359".into(),
        algorithm,
        qop_auth,
        opaque: opaque.map(Into::into),
        stale,
    };
    #[rustfmt::skip]
    let cases = [
        // RFC 3261 §25's own example.
        (r#"Digest realm="atlanta.com", domain="sip:ss1.carrier.com", qop="auth", nonce="f84f1cec41e6cbe5aea9c8e88d359", opaque="", stale=FALSE, algorithm=MD5"#,
         Ok(challenge(Algorithm::Md5, true, false, "atlanta.com", Some("")))),
        (" digest  REALM = \"atlanta.com\" ,\tNONCE=\"f84f1cec41e6cbe5aea9c8e88d359\",Algorithm=sha-256,qop=\"auth-int, auth\",stale=TRUE",
         Ok(challenge(Algorithm::Sha256, true, true, "atlanta.com", None))),
        (r#"Digest realm="a\"b\\c", nonce=f84f1cec41e6cbe5aea9c8e88d359"#,
         Ok(challenge(Algorithm::Md5, false, false, r#"a"b\c"#, None))),
        (r#"Digest realm="atlanta.com", nonce="n", qop="auth-int""#, Err("unsupported_algorithm")),
        (r#"Digest realm="atlanta.com", nonce="n", algorithm=MD5-sess"#, Err("unsupported_algorithm")),
        (r#"Digest realm="atlanta.com", nonce="n", algorithm=SHA-512-256"#, Err("unsupported_algorithm")),
        (r#"Digest realm="atlanta.com""#, Err("malformed")),
        (r#"Digest realm="atlanta.com", nonce="n", realm="x""#, Err("malformed")),
        (r#"Digest realm="atlanta.com, nonce="n""#, Err("malformed")),
        ("Bearer realm=\"atlanta.com\"", Err("malformed")),
    ];
    for (value, expected) in cases {
        let got = parse_challenge(value).map_err(|e| e.metric_label());
        assert_eq!(got, expected, "{value}");
    }
}

#[test]
fn an_escaped_realm_round_trips() {
    let realm = r#"odd "realm" \ here"#;
    let trunk = Trunk::new(realm, USER, PASSWORD);
    let mut issuer = NonceIssuer::new(SECRET);
    let header = carrier_answer(
        &issuer.challenge(realm, Algorithm::Sha256, false),
        &trunk,
        1,
    );
    assert_eq!(
        verify_at(&mut issuer, Some(&header), &trunk, 0),
        Ok(Algorithm::Sha256)
    );
}

#[test]
fn choose_prefers_sha_256() {
    let offer = |algorithm| Challenge {
        realm: REALM.into(),
        nonce: "n".into(),
        algorithm,
        qop_auth: true,
        opaque: None,
        stale: false,
    };
    let (md5, sha) = (offer(Algorithm::Md5), offer(Algorithm::Sha256));
    let cases: [(Vec<Challenge>, Option<Algorithm>); 4] = [
        (vec![md5.clone(), sha.clone()], Some(Algorithm::Sha256)),
        (vec![sha.clone(), md5.clone()], Some(Algorithm::Sha256)),
        (vec![md5.clone()], Some(Algorithm::Md5)),
        (vec![], None),
    ];
    for (offered, expected) in cases {
        assert_eq!(
            choose(&offered).map(|c| c.algorithm),
            expected,
            "{offered:?}"
        );
    }
}

/// Pieces that matter to a Digest reader, and some that must never confuse it.
const TRICKY: &[&str] = &[
    "Digest ",
    "\"",
    "\\",
    ",",
    "=",
    " ",
    "\t",
    "\r\n",
    "\0",
    "é",
    "𝄞",
    "username",
    "realm",
    "nonce",
    "nc",
    "qop=auth",
    "algorithm=SHA-256",
    "=\"",
    "\",",
    "\\\"",
    "\u{ffff}",
];

fn exercise(issuer: &mut NonceIssuer, trunk: &Trunk, value: &str) -> Result<Algorithm, AuthError> {
    let _ = parse_challenge(value);
    verify_at(issuer, Some(value), trunk, 0)
}

#[test]
fn random_input_never_panics() {
    let trunk = edge_trunk();
    let mut issuer = NonceIssuer::new(SECRET);
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for _ in 0..5_000 {
        let mut value = String::new();
        for _ in 0..rng.random_range(0..40) {
            if rng.random_bool(0.5) {
                value.push_str(TRICKY[rng.random_range(0..TRICKY.len())]);
            } else {
                let bytes: Vec<u8> = (0..rng.random_range(1..8)).map(|_| rng.random()).collect();
                value.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        assert!(exercise(&mut issuer, &trunk, &value).is_err(), "{value:?}");
    }
}

#[test]
fn cut_or_overwritten_headers_never_panic_and_a_cut_one_never_verifies() {
    let trunk = edge_trunk();
    let mut issuer = NonceIssuer::new(SECRET);
    let challenge = issuer.challenge(REALM, Algorithm::Sha256, false);
    let valid = carrier_answer(&challenge, &trunk, 1);
    for (cut, _) in valid.char_indices() {
        assert!(
            exercise(&mut issuer, &trunk, &valid[..cut]).is_err(),
            "{}",
            &valid[..cut]
        );
        let _ = parse_challenge(&challenge[..cut.min(challenge.len())]);
        for piece in TRICKY {
            let mut changed = valid.clone();
            changed.replace_range(cut..=cut, piece);
            let _ = exercise(&mut issuer, &trunk, &changed);
        }
    }
}
