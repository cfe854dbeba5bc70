//! Digest authentication at the edge: challenging carriers on inbound calls and answering
//! carriers' challenges on outbound calls, from HA1 hashes only (RFC 3261 §22, RFC 8760).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use trunkgate_crds::DigestAlgorithm;
use trunkgate_crds::digest::DigestCredentials;
use trunkgate_digest::{Algorithm, AuthError, Credentials, NonceIssuer};
use trunkgate_sip::{Request, Response};

use crate::guard::lockout::Lockout;
use crate::sip::msg;

/// What to do with a request that failed the check.
pub enum AuthRefusal {
    /// 401 with these `WWW-Authenticate` values.
    Challenge {
        values: Vec<String>,
        label: Option<&'static str>,
    },
    /// 403: wrong credentials.
    Forbidden { label: &'static str, text: String },
}

/// One worker's digest state (nonce key and replay guard), and the lockout all workers share.
pub struct AuthState {
    issuer: NonceIssuer,
    lockout: Arc<Lockout>,
    /// `trunkgate_edge_auth_blocks_total{scope}`.
    blocks: prometheus::IntCounterVec,
    /// `trunkgate_edge_auth_uri_differs_total`.
    uri_differs: prometheus::IntCounter,
}

/// What a carrier is told while its address or username is slowed down or blocked: the same
/// whether the password would have been right or not.
const LOCKED_OUT: &str = "too many failed authentication attempts; try again later";

fn algorithm(a: DigestAlgorithm) -> Algorithm {
    match a {
        DigestAlgorithm::Md5 => Algorithm::Md5,
        DigestAlgorithm::Sha256 => Algorithm::Sha256,
    }
}

fn creds(c: &DigestCredentials) -> Credentials<'_> {
    Credentials {
        realm: &c.realm,
        username: &c.username,
        ha1_md5: &c.ha1_md5,
        ha1_sha256: &c.ha1_sha256,
    }
}

impl AuthState {
    /// `worker` goes into every nonce this worker mints; only it accepts them.
    pub fn new(
        key: [u8; 32],
        worker: usize,
        lockout: Arc<Lockout>,
        blocks: prometheus::IntCounterVec,
        uri_differs: prometheus::IntCounter,
    ) -> Self {
        Self {
            issuer: NonceIssuer::new(key).with_issuer(worker as u8),
            lockout,
            blocks,
            uri_differs,
        }
    }

    /// Checks a carrier's INVITE against the trunk's credentials; challenges offer
    /// `algorithms` in that order and an answer in another algorithm is refused.
    /// A source that failed too often is refused before its credentials are looked at
    /// ([`Lockout`]).
    pub fn check(
        &mut self,
        req: &Request,
        c: &DigestCredentials,
        algorithms: &[DigestAlgorithm],
        src: IpAddr,
    ) -> Result<(), AuthRefusal> {
        let value = msg::header(req, "Authorization");
        // Per source only: a guesser must not lock the trunk's other addresses out.
        let now = Instant::now();
        if value.is_some()
            && let Err(v) = self.lockout.admit(src, now)
        {
            return Err(AuthRefusal::Forbidden {
                label: v.metric_label(),
                text: LOCKED_OUT.into(),
            });
        }
        let result = self.verify(req, value, c, algorithms);
        match &result {
            Ok(()) => self.lockout.succeeded(src),
            Err(AuthRefusal::Forbidden { .. }) => {
                if let Some(failures) = self.lockout.failed(src, now) {
                    self.blocks.with_label_values(&["source"]).inc();
                    tracing::warn!(
                        source = %src,
                        failures,
                        "digest: blocked after repeated authentication failures"
                    );
                }
            }
            Err(AuthRefusal::Challenge { .. }) => {}
        }
        result
    }

    fn verify(
        &mut self,
        req: &Request,
        value: Option<&str>,
        c: &DigestCredentials,
        algorithms: &[DigestAlgorithm],
    ) -> Result<(), AuthRefusal> {
        let offered: Vec<Algorithm> = algorithms.iter().map(|a| algorithm(*a)).collect();
        let ruri = req.uri.to_string();
        match self
            .issuer
            .verify(value, "INVITE", &ruri, &creds(c), SystemTime::now())
        {
            Ok(v) if offered.contains(&v.algorithm) => {
                if v.uri_differs {
                    self.uri_differs.inc();
                }
                Ok(())
            }
            Ok(v) => Err(AuthRefusal::Forbidden {
                label: "algorithm_not_offered",
                text: format!(
                    "digest algorithm {} is not offered on this trunk",
                    v.algorithm.as_str()
                ),
            }),
            Err(AuthError::Missing) => Err(AuthRefusal::Challenge {
                values: self.issuer.challenges(&c.realm, false, &offered),
                label: None,
            }),
            Err(e @ (AuthError::Stale | AuthError::OtherIssuer | AuthError::BadNonce)) => {
                Err(AuthRefusal::Challenge {
                    values: self.issuer.challenges(
                        &c.realm,
                        !matches!(e, AuthError::BadNonce),
                        &offered,
                    ),
                    label: Some(e.metric_label()),
                })
            }
            Err(e) => Err(AuthRefusal::Forbidden {
                label: e.metric_label(),
                text: format!("digest authentication failed: {e}"),
            }),
        }
    }

    /// The `Authorization` (401) or `Proxy-Authorization` (407) line answering a carrier's
    /// challenge for `method` to `ruri`, and whether the challenge said `stale=true` (the
    /// credentials were right, only the nonce had expired: RFC 2617 §3.2.1).
    pub fn answer(
        &mut self,
        resp: &Response,
        method: &str,
        ruri: &str,
        c: &DigestCredentials,
    ) -> Result<(String, bool), Unusable> {
        let (ask, give) = if resp.status_code.code() == 407 {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        let challenges: Vec<_> = msg::headers(resp, ask)
            .filter_map(|v| trunkgate_digest::parse_challenge(v).ok())
            .collect();
        let chosen = trunkgate_digest::choose(&challenges).ok_or(Unusable::NoChallenge(ask))?;
        let value = trunkgate_digest::answer(
            chosen,
            method,
            ruri,
            &creds(c),
            trunkgate_digest::random_cnonce,
            1,
        )?;
        Ok((format!("{give}: {value}\r\n"), chosen.stale))
    }
}

/// Why a carrier's challenge could not be answered with the trunk's credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("the carrier sent no {0} the edge can answer")]
    NoChallenge(&'static str),
    #[error(transparent)]
    Digest(#[from] trunkgate_digest::AuthError),
    #[error("the request is gone")]
    Gone,
    #[error("the request cannot be rebuilt")]
    NotRebuilt,
}
