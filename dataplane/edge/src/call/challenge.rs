//! Answering a carrier's digest challenge (401/407) on the requests the edge sends it after the
//! initial INVITE: re-INVITE, UPDATE, INFO, PRACK, BYE and OPTIONS probes (RFC 3261 §22.2,
//! §22.3). Carriers that challenge every request are common; passing their 407 to the platform,
//! which has no credentials for them, would break hold, transfer and hang-up.
//!
//! Once per challenge: a request sent with credentials that is challenged again is given up
//! unless the new challenge says `stale=true` (the nonce expired, the password was right:
//! RFC 2617 §3.2.1), and then only once more.

/// How many times one request is sent again with credentials: once, plus once after `stale`.
pub const MAX_TRIES: u8 = 2;

pub use crate::guard::auth::Unusable;

/// Why a challenge was not answered, for the Warning and `trunkgate_edge_carrier_challenges_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unanswered {
    /// The trunk has no `outbound.auth`.
    NoCredentials,
    /// Challenged again after credentials without `stale=true`: wrong username or password.
    Refused { username: String, realm: String },
    /// The challenge could not be answered (another realm, an algorithm without an HA1, ...).
    Unusable(Unusable),
}

impl Unanswered {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NoCredentials => "no_credentials",
            Self::Refused { .. } => "refused",
            Self::Unusable(_) => "unusable",
        }
    }

    /// The Warning text for the platform (or the log), naming the real cause.
    pub fn text(&self, trunk: &str, method: &str) -> String {
        match self {
            Self::NoCredentials => format!(
                "the carrier challenged our {method} and trunk {trunk} has no outbound.auth credentials"
            ),
            Self::Refused { username, realm } => format!(
                "the carrier refused trunk {trunk}'s credentials for {method} (username '{username}', realm '{realm}'): check the password in outbound.auth's Secret"
            ),
            Self::Unusable(why) => {
                format!("cannot answer the carrier's challenge to {method} on trunk {trunk}: {why}")
            }
        }
    }
}
