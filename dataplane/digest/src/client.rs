//! The edge as the authenticated side: it answers a carrier's 401/407 on an outbound request
//! (RFC 3261 §22.2–§22.3, RFC 7616 §3.4).

use crate::params::{DigestParams, DigestWriter};
use crate::{Algorithm, AuthError, Credentials, Result};

/// One `WWW-Authenticate`/`Proxy-Authenticate` value we can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub algorithm: Algorithm,
    /// The challenge offered qop=auth; without qop, the answer takes the RFC 2069 form.
    pub qop_auth: bool,
    pub opaque: Option<String>,
    /// The previous nonce expired but the credentials were right (RFC 2617 §3.2.1).
    pub stale: bool,
}

/// Reads one challenge value. Unknown parameters (`domain`, ...) are ignored (RFC 7616 §3.3);
/// an algorithm or qop we cannot answer is [`AuthError::Unsupported`].
pub fn parse_challenge(value: &str) -> Result<Challenge> {
    let params = DigestParams::parse(value)?;
    // RFC 7616 §3.3: qop is a quoted list; of its options only "auth" is done here.
    let qop_auth = match params.get("qop") {
        None => false,
        Some(options)
            if options
                .split(',')
                .any(|o| o.trim().eq_ignore_ascii_case("auth")) =>
        {
            true
        }
        Some(_) => return Err(AuthError::Unsupported("qop")),
    };
    Ok(Challenge {
        realm: params.require("realm")?.to_owned(),
        nonce: params.require("nonce")?.to_owned(),
        algorithm: Algorithm::from_param(params.get("algorithm"))?,
        qop_auth,
        opaque: params.get("opaque").map(str::to_owned),
        stale: params
            .get("stale")
            .is_some_and(|s| s.eq_ignore_ascii_case("true")),
    })
}

/// The challenge to answer among those offered: SHA-256 when there is one, so a downgrade to
/// MD5 needs the carrier's consent (RFC 8760 §2); otherwise the first.
pub fn choose(challenges: &[Challenge]) -> Option<&Challenge> {
    challenges
        .iter()
        .find(|c| c.algorithm == Algorithm::Sha256)
        .or_else(|| challenges.first())
}

/// The `Authorization`/`Proxy-Authorization` value answering `challenge` for a request with
/// `method` and `request_uri`. `cnonce` is called only when the challenge offered qop=auth
/// ([`random_cnonce`] in production); `nc` counts the requests sent with this nonce, from 1.
pub fn answer(
    challenge: &Challenge,
    method: &str,
    request_uri: &str,
    credentials: &Credentials<'_>,
    cnonce: impl FnOnce() -> String,
    nc: u32,
) -> Result<String> {
    if challenge.realm != credentials.realm {
        return Err(AuthError::ChallengeRealm {
            challenged: challenge.realm.clone(),
            ours: credentials.realm.to_owned(),
        });
    }
    let ha1 = credentials.ha1(challenge.algorithm)?;
    let qop = challenge.qop_auth.then(|| (format!("{nc:08x}"), cnonce()));
    let response = crate::response(
        challenge.algorithm,
        ha1,
        &challenge.nonce,
        qop.as_ref()
            .map(|(nc, cnonce)| (nc.as_str(), cnonce.as_str())),
        method,
        request_uri,
    );
    let mut header = DigestWriter::new();
    header
        .quoted("username", credentials.username)
        .quoted("realm", &challenge.realm)
        .quoted("nonce", &challenge.nonce)
        .quoted("uri", request_uri)
        .quoted("response", &response)
        .token("algorithm", challenge.algorithm.as_str());
    if let Some((nc, cnonce)) = &qop {
        header
            .quoted("cnonce", cnonce)
            .token("qop", "auth")
            .token("nc", nc);
    }
    if let Some(opaque) = &challenge.opaque {
        header.quoted("opaque", opaque);
    }
    Ok(header.finish())
}

/// 128 random bits in hex: a cnonce the carrier cannot predict (RFC 7616 §3.4).
pub fn random_cnonce() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}
