//! SIP digest authentication for both sides of the B2BUA: RFC 3261 §22 with RFC 2617 (qop=auth),
//! RFC 7616 and RFC 8760 (SHA-256 in SIP).
//!
//! The edge never holds a trunk's password, only `HA1 = H(username:realm:password)` for MD5 and
//! SHA-256 ([`Credentials`]); every response here is computed from those.
//! - Carrier → edge: [`NonceIssuer`] challenges with stateless, HMAC-signed nonces that any worker
//!   holding the same key can check, and verifies `Authorization` values, refusing replays.
//! - Edge → carrier: [`parse_challenge`], [`choose`] and [`answer`] a 401/407.
//!
//! No input panics: header values longer than [`MAX_HEADER_LEN`] are refused before parsing.
#![forbid(unsafe_code)]

mod client;
mod params;
mod server;

use sha2::Digest;

pub use client::{Challenge, answer, choose, parse_challenge, random_cnonce};
pub use params::MAX_HEADER_LEN;
pub use server::{DEFAULT_NONCE_EXPIRY, DEFAULT_REPLAY_CAPACITY, NonceIssuer, Verified};

pub type Result<T, E = AuthError> = std::result::Result<T, E>;

/// Why a request's credentials, or a carrier's challenge, were refused. The message (`Display`)
/// names no value taken from the peer except in [`AuthError::ChallengeRealm`], which is ours to
/// log, so it can go into a Warning header as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The request carried no `Authorization`/`Proxy-Authorization` value: challenge it.
    #[error("no Digest credentials")]
    Missing,
    #[error("malformed Digest header: {0}")]
    Malformed(&'static str),
    #[error("unknown username")]
    UnknownUser,
    #[error("credentials are for another realm")]
    WrongRealm,
    /// Client side: we can only compute a response for the realm whose HA1 we hold.
    #[error(
        "carrier challenged with realm {challenged:?} but the trunk's credentials are for realm {ours:?}"
    )]
    ChallengeRealm { challenged: String, ours: String },
    #[error("digest response does not match")]
    BadResponse,
    /// The digest was right but the nonce has expired, or this worker tracks too many nonces:
    /// re-challenge with `stale=true` so the client retries without new credentials
    /// (RFC 2617 §3.2.1).
    #[error("nonce expired")]
    Stale,
    #[error("nonce count already used")]
    Replay,
    /// A right digest on a nonce that another issuer sharing our secret (another worker)
    /// minted: only that one can tell a replay, so re-challenge with `stale=true`.
    #[error("nonce issued by another worker")]
    OtherIssuer,
    /// Not signed by our key: forged, or issued before a restart. Re-challenge.
    #[error("nonce not issued by this edge")]
    BadNonce,
    /// An algorithm or qop we do not do (MD5-sess, auth-int, ...), or no HA1 for the algorithm.
    #[error("unsupported Digest {0}")]
    Unsupported(&'static str),
}

impl AuthError {
    /// A low-cardinality label for `trunkgate_edge_*` counters.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed(_) => "malformed",
            Self::UnknownUser => "unknown_user",
            Self::WrongRealm | Self::ChallengeRealm { .. } => "wrong_realm",
            Self::BadResponse => "bad_response",
            Self::Stale => "stale",
            Self::Replay => "replay",
            Self::OtherIssuer => "other_worker",
            Self::BadNonce => "bad_nonce",
            Self::Unsupported(_) => "unsupported_algorithm",
        }
    }
}

/// The digest algorithms done here (RFC 7616 §3.3, RFC 8760 §2). The `-sess` variants are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// The token on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
        }
    }

    /// An `algorithm` parameter; absent means MD5 (RFC 7616 §3.3).
    fn from_param(value: Option<&str>) -> Result<Self> {
        match value {
            None => Ok(Self::Md5),
            Some(v) if v.eq_ignore_ascii_case("MD5") => Ok(Self::Md5),
            Some(v) if v.eq_ignore_ascii_case("SHA-256") => Ok(Self::Sha256),
            Some(_) => Err(AuthError::Unsupported("algorithm")),
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Self::Md5 => 32,
            Self::Sha256 => 64,
        }
    }
}

/// One trunk's digest secrets, borrowed from its configuration. Each HA1 is the lower-case hex
/// of `H(username:realm:password)`; an empty one means the algorithm is not provisioned.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub realm: &'a str,
    pub username: &'a str,
    pub ha1_md5: &'a str,
    pub ha1_sha256: &'a str,
}

impl Credentials<'_> {
    /// Refuses an HA1 that is not a hash: with an empty one anyone could compute the response.
    fn ha1(&self, algorithm: Algorithm) -> Result<&str> {
        let ha1 = match algorithm {
            Algorithm::Md5 => self.ha1_md5,
            Algorithm::Sha256 => self.ha1_sha256,
        };
        let is_hash =
            ha1.len() == algorithm.hex_len() && ha1.bytes().all(|b| b.is_ascii_hexdigit());
        if is_hash {
            Ok(ha1)
        } else {
            Err(AuthError::Unsupported("algorithm: no HA1 provisioned"))
        }
    }
}

/// `H(username:realm:password)` (RFC 7616 §3.4.2), for provisioning and tests: the edge itself
/// only ever receives the result.
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    hash_hex(algorithm, &[username, realm, password])
}

/// The `response` value. With `qop_auth = Some((nc, cnonce))` it is RFC 7616 §3.4.1
/// `H(HA1:nonce:nc:cnonce:auth:HA2)`; with `None`, the RFC 2069 form `H(HA1:nonce:HA2)`
/// (RFC 2617 §3.2.2.1). `HA2 = H(method:digest-uri)` (RFC 7616 §3.4.3).
pub fn response(
    algorithm: Algorithm,
    ha1: &str,
    nonce: &str,
    qop_auth: Option<(&str, &str)>,
    method: &str,
    digest_uri: &str,
) -> String {
    let ha2 = hash_hex(algorithm, &[method, digest_uri]);
    match qop_auth {
        Some((nc, cnonce)) => hash_hex(algorithm, &[ha1, nonce, nc, cnonce, "auth", &ha2]),
        None => hash_hex(algorithm, &[ha1, nonce, &ha2]),
    }
}

/// Lower-case hex of `H(parts joined by ':')`.
fn hash_hex(algorithm: Algorithm, parts: &[&str]) -> String {
    fn run<D: Digest>(parts: &[&str]) -> String {
        let mut hasher = D::new();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                hasher.update(b":");
            }
            hasher.update(part.as_bytes());
        }
        hex::encode(hasher.finalize())
    }
    match algorithm {
        Algorithm::Md5 => run::<md5::Md5>(parts),
        Algorithm::Sha256 => run::<sha2::Sha256>(parts),
    }
}
