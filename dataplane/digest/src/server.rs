//! The edge as the authenticating side: it challenges carriers' INVITEs and verifies their
//! credentials (RFC 3261 §22.2, RFC 7616 §3.3–§3.4).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::params::{DigestParams, DigestWriter};
use crate::{Algorithm, AuthError, Credentials, Result};

/// How long a nonce is accepted, unless [`NonceIssuer::with_expiry`] says otherwise.
pub const DEFAULT_NONCE_EXPIRY: Duration = Duration::from_secs(300);
/// How many nonces one worker remembers counts for: one per authenticated call within the expiry,
/// so 65 536 covers about 200 new nonces a second per worker with the default expiry.
pub const DEFAULT_REPLAY_CAPACITY: usize = 65_536;

/// `timestamp_secs (big-endian) || issuer || 11 random bytes`: what a nonce says, and its
/// identity.
type Stamp = [u8; STAMP_LEN];
const STAMP_LEN: usize = 8 + 1 + 11;

/// What a verified request authenticated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub algorithm: Algorithm,
    /// The digest's `uri` was not the Request-URI: a client that signs another form of it
    /// (sipp's `sip:HOST:PORT`) or a proxy that rewrote the Request-URI after the UA signed.
    /// The response still verified over the `uri` it names, and the nonce count is single use.
    pub uri_differs: bool,
}

/// Issues nonces and verifies credentials. One per worker thread, without locks. A nonce is
/// `base64url(stamp || HMAC-SHA256(secret, stamp || realm))` and names the issuer that minted it.
/// Only that issuer accepts it: the replay guard (RFC 7616 §3.4) lives with the issuer, so a
/// nonce shown to another one could be a replay that issuer cannot see. Another issuer with the
/// same secret answers such a (correct) digest with [`AuthError::OtherIssuer`], a `stale`
/// re-challenge, so the client retries with one of its own nonces without new credentials.
pub struct NonceIssuer {
    id: u8,
    mac: Hmac<Sha256>,
    expiry: Duration,
    opaque: Option<String>,
    replay: ReplayGuard,
}

impl NonceIssuer {
    /// `secret` signs the nonces; nonces of another secret are [`AuthError::BadNonce`].
    pub fn new(secret: [u8; 32]) -> Self {
        Self {
            id: 0,
            mac: Hmac::new_from_slice(&secret).expect("HMAC takes keys of any length"),
            expiry: DEFAULT_NONCE_EXPIRY,
            opaque: None,
            replay: ReplayGuard {
                seen: HashMap::new(),
                capacity: DEFAULT_REPLAY_CAPACITY,
                last_sweep: 0,
            },
        }
    }

    /// Which issuer this is among those sharing the secret (the edge: its worker index).
    pub fn with_issuer(mut self, id: u8) -> Self {
        self.id = id;
        self
    }

    pub fn with_expiry(mut self, expiry: Duration) -> Self {
        self.expiry = expiry;
        self
    }

    /// An `opaque` for the challenges. Clients echo it; it is not checked, since the signed
    /// nonce already carries all the state.
    pub fn with_opaque(mut self, opaque: impl Into<String>) -> Self {
        self.opaque = Some(opaque.into());
        self
    }

    pub fn with_replay_capacity(mut self, capacity: usize) -> Self {
        self.replay.capacity = capacity;
        self
    }

    /// One `WWW-Authenticate`/`Proxy-Authenticate` value with a fresh nonce. Set `stale` when
    /// answering [`AuthError::Stale`] (RFC 2617 §3.2.1).
    pub fn challenge(&self, realm: &str, algorithm: Algorithm, stale: bool) -> String {
        self.format(realm, algorithm, stale, &self.nonce(realm))
    }

    /// One challenge per algorithm, in the order given (most preferred first, RFC 8760 §2.4),
    /// to be sent as separate header fields (RFC 3261 §7.3.1 forbids joining them with a comma).
    /// They share one nonce.
    pub fn challenges(&self, realm: &str, stale: bool, algorithms: &[Algorithm]) -> Vec<String> {
        let nonce = self.nonce(realm);
        algorithms
            .iter()
            .map(|&algorithm| self.format(realm, algorithm, stale, &nonce))
            .collect()
    }

    /// Verifies one request's `Authorization`/`Proxy-Authorization` value against the trunk
    /// it came from. Call it once per new transaction: retransmissions repeat the nonce count
    /// and are absorbed by the transaction layer before this. `request_uri` is the
    /// Request-URI as the request carried it.
    ///
    /// The nonce's age is checked after the response, so `Stale` is only said of a right digest
    /// (RFC 2617 §3.2.1); so is the issuer, which alone remembers the nonce counts it has seen.
    pub fn verify(
        &mut self,
        authorization: Option<&str>,
        method: &str,
        request_uri: &str,
        credentials: &Credentials<'_>,
        now: SystemTime,
    ) -> Result<Verified> {
        let params = DigestParams::parse(authorization.ok_or(AuthError::Missing)?)?;
        let username = params.require("username")?;
        let realm = params.require("realm")?;
        let nonce = params.require("nonce")?;
        let uri = params.require("uri")?;
        let response = params.require("response")?;
        // RFC 7616 §3.4: qop=auth brings nc and cnonce; without qop it is the RFC 2069 form.
        let qop_auth = match params.get("qop") {
            None => None,
            Some(qop) if qop.eq_ignore_ascii_case("auth") => {
                Some((params.require("nc")?, params.require("cnonce")?))
            }
            Some(_) => return Err(AuthError::Unsupported("qop")),
        };
        let nc = qop_auth.map(|(nc, _)| parse_nc(nc)).transpose()?;

        if username != credentials.username {
            return Err(AuthError::UnknownUser);
        }
        if realm != credentials.realm {
            return Err(AuthError::WrongRealm);
        }
        let algorithm = Algorithm::from_param(params.get("algorithm"))?;
        let ha1 = credentials.ha1(algorithm)?;
        // RFC 7616 §3.4.6 lets a server refuse a uri other than the Request-URI; carriers' UAs
        // and proxies that rewrite the Request-URI make that refuse right passwords, and the
        // response is bound to the uri it names and to a single-use nonce count anyway.
        let uri_differs = uri != request_uri;
        let (stamp, issued) = self.check_nonce(nonce, realm)?;
        let expected = crate::response(algorithm, ha1, nonce, qop_auth, method, uri);
        let given = response.to_ascii_lowercase();
        if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
            return Err(AuthError::BadResponse);
        }
        let (now, expiry) = (unix_secs(now), self.expiry.as_secs());
        if now.saturating_sub(issued) > expiry {
            return Err(AuthError::Stale);
        }
        if stamp[8] != self.id {
            return Err(AuthError::OtherIssuer);
        }
        self.replay.admit(stamp, issued, nc, now, expiry)?;
        Ok(Verified {
            algorithm,
            uri_differs,
        })
    }

    fn format(&self, realm: &str, algorithm: Algorithm, stale: bool, nonce: &str) -> String {
        let mut header = DigestWriter::new();
        header
            .quoted("realm", realm)
            .quoted("nonce", nonce)
            .token("algorithm", algorithm.as_str())
            .quoted("qop", "auth");
        if let Some(opaque) = &self.opaque {
            header.quoted("opaque", opaque);
        }
        if stale {
            header.token("stale", "true");
        }
        header.finish()
    }

    fn nonce(&self, realm: &str) -> String {
        let mut stamp: Stamp = [0; STAMP_LEN];
        stamp[..8].copy_from_slice(&unix_secs(SystemTime::now()).to_be_bytes());
        stamp[8] = self.id;
        stamp[9..].copy_from_slice(&rand::random::<[u8; 11]>());
        let mut bytes = stamp.to_vec();
        bytes.extend_from_slice(&self.sign(&stamp, realm).finalize().into_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The stamp of a nonce we signed for `realm`, and when it was issued.
    fn check_nonce(&self, nonce: &str, realm: &str) -> Result<(Stamp, u64)> {
        let bytes = URL_SAFE_NO_PAD
            .decode(nonce)
            .map_err(|_| AuthError::BadNonce)?;
        let (stamp, tag) = bytes
            .split_first_chunk::<STAMP_LEN>()
            .ok_or(AuthError::BadNonce)?;
        // verify_slice compares in constant time and refuses a tag of the wrong length.
        self.sign(stamp, realm)
            .verify_slice(tag)
            .map_err(|_| AuthError::BadNonce)?;
        let (secs, _) = stamp.split_first_chunk::<8>().ok_or(AuthError::BadNonce)?;
        Ok((*stamp, u64::from_be_bytes(*secs)))
    }

    fn sign(&self, stamp: &Stamp, realm: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(stamp);
        mac.update(realm.as_bytes());
        mac
    }
}

/// The highest nonce count accepted for each nonce (RFC 7616 §3.4: a count seen before is a
/// replay), kept while the nonce lives and bounded by `capacity`.
struct ReplayGuard {
    seen: HashMap<Stamp, Seen>,
    capacity: usize,
    last_sweep: u64,
}

struct Seen {
    issued: u64,
    highest: u64,
}

impl ReplayGuard {
    fn admit(
        &mut self,
        stamp: Stamp,
        issued: u64,
        nc: Option<u32>,
        now: u64,
        expiry: u64,
    ) -> Result<()> {
        // Without qop there is no nc: such a nonce is good once, so it records the top count.
        let count = nc.map_or(u64::MAX, u64::from);
        if let Some(seen) = self.seen.get_mut(&stamp) {
            if count <= seen.highest {
                return Err(AuthError::Replay);
            }
            seen.highest = count;
            return Ok(());
        }
        // Sweep expired nonces when full, at most once a second so a full map costs no more.
        if self.seen.len() >= self.capacity && self.last_sweep != now {
            self.last_sweep = now;
            self.seen
                .retain(|_, seen| now.saturating_sub(seen.issued) <= expiry);
        }
        if self.seen.len() >= self.capacity {
            // Bounded memory first: the client retries with a fresh nonce, accepted once older
            // nonces expire.
            return Err(AuthError::Stale);
        }
        self.seen.insert(
            stamp,
            Seen {
                issued,
                highest: count,
            },
        );
        Ok(())
    }
}

/// `nc` is exactly 8 hex digits (RFC 7616 §3.4).
fn parse_nc(nc: &str) -> Result<u32> {
    let malformed = AuthError::Malformed("nc is not 8 hex digits");
    if nc.len() != 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed);
    }
    u32::from_str_radix(nc, 16).map_err(|_| malformed)
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_replay_guard_refuses_new_nonces_until_old_ones_expire() {
        let mut guard = ReplayGuard {
            seen: HashMap::new(),
            capacity: 2,
            last_sweep: 0,
        };
        let stamp = |n: u8| [n; STAMP_LEN];
        assert_eq!(guard.admit(stamp(1), 1000, Some(1), 1000, 300), Ok(()));
        assert_eq!(guard.admit(stamp(2), 1100, Some(1), 1100, 300), Ok(()));
        assert_eq!(
            guard.admit(stamp(3), 1200, Some(1), 1200, 300),
            Err(AuthError::Stale)
        );
        // Known nonces go on counting while the guard is full.
        assert_eq!(guard.admit(stamp(2), 1100, Some(2), 1200, 300), Ok(()));
        // At 1301 the first nonce has expired and makes room.
        assert_eq!(guard.admit(stamp(3), 1200, Some(1), 1301, 300), Ok(()));
        assert_eq!(guard.seen.len(), 2);
    }
}
