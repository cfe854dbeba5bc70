use std::{sync::Arc, time::Duration};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a SIP target could not be located. Every message starts with the name that failed, so a
/// NOC can paste it into `dig`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{host:?} is not a valid host name: {reason}")]
    InvalidHost { host: String, reason: String },

    #[error("cannot read the DNS configuration from /etc/resolv.conf: {reason}")]
    Config { reason: String },

    #[error("{name}: domain does not exist (NXDOMAIN from DNS {servers})")]
    NxDomain { name: String, servers: Arc<str> },

    /// `looked_up` lists the record types tried, e.g. `NAPTR/SRV/A/AAAA`.
    #[error("{name}: no {looked_up} records")]
    NoRecords {
        name: String,
        looked_up: &'static str,
    },

    #[error("{name}: no answer from DNS {servers} within {after:?}")]
    Timeout {
        name: String,
        servers: Arc<str>,
        after: Duration,
    },

    /// The server answered with an error code (SERVFAIL, REFUSED...) or a malformed message.
    #[error("{name}: DNS {servers} failed the query: {reason}")]
    ServerFailure {
        name: String,
        servers: Arc<str>,
        reason: String,
    },

    #[error("{name}: cannot reach DNS {servers}: {reason}")]
    Io {
        name: String,
        servers: Arc<str>,
        reason: String,
    },
}

impl Error {
    /// A low-cardinality label for `trunkgate_edge_*` failure counters.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::InvalidHost { .. } => "invalid_host",
            Self::Config { .. } => "config",
            Self::NxDomain { .. } => "nxdomain",
            Self::NoRecords { .. } => "no_records",
            Self::Timeout { .. } => "timeout",
            Self::ServerFailure { .. } => "server_failure",
            Self::Io { .. } => "io",
        }
    }
}
