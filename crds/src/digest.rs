//! Digest credentials as the edge holds them: HA1 hashes, never the password
//! (RFC 3261 §22.4 for MD5, RFC 8760 §2 for SHA-256).

use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// A username with its HA1 = H(username ":" realm ":" password) in both algorithms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DigestCredentials {
    pub realm: String,
    pub username: String,
    /// Lower-case hex MD5 HA1.
    pub ha1_md5: String,
    /// Lower-case hex SHA-256 HA1.
    pub ha1_sha256: String,
}

impl DigestCredentials {
    /// Hashes a password into HA1 values for one realm; the password is not kept.
    pub fn new(realm: &str, username: &str, password: &str) -> Self {
        let a1 = format!("{username}:{realm}:{password}");
        Self {
            realm: realm.to_string(),
            username: username.to_string(),
            ha1_md5: hex::encode(Md5::digest(a1.as_bytes())),
            ha1_sha256: hex::encode(Sha256::digest(a1.as_bytes())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha1_matches_rfc_2617_example() {
        // RFC 2617 §3.5: Mufasa / testrealm@host.com / Circle Of Life.
        let c = DigestCredentials::new("testrealm@host.com", "Mufasa", "Circle Of Life");
        assert_eq!(c.ha1_md5, "939e7578ed9e3c518a452acee763bce9");
        assert_eq!(c.ha1_sha256.len(), 64);
        assert!(!format!("{c:?}").contains("Circle"));
    }
}
