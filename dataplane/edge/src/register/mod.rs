//! Registration trunks (`outbound.registration`): the edge registers a contact of its own with
//! the carrier's registrar (RFC 3261 §10.2), answers its digest challenges with the trunk's
//! `outbound.auth`, refreshes the binding at half its lifetime and backs off after failures.
//! One pod of the fleet holds each registration (the fleet's store elects it, [`crate::fleet`]);
//! within a pod, the worker that probes the trunk's targets does it. Calls to the registered
//! contact are matched to the trunk by [`crate::route::admission`].

pub mod binding;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use trunkgate_crds::snapshot::RegistrationConfig;
use trunkgate_sip::Response;

use crate::config::Runtime;
use crate::sip::msg;

/// What `/snapshot` says of a registration this pod holds (the operator's `Registered`).
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub registered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    pub registrant: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The registrations this process holds, by trunk id, for `/snapshot`.
pub type Statuses = Arc<Mutex<BTreeMap<String, Status>>>;

pub(crate) fn rfc3339(t: SystemTime) -> Option<String> {
    let ts = jiff::Timestamp::try_from(t).ok()?;
    Some(ts.round(jiff::Unit::Second).ok()?.to_string())
}

/// The lifetime the registrar gave `contact_user`'s contact: the Contact's `expires`
/// parameter, else the Expires header (RFC 3261 §10.2.4).
pub(crate) fn granted(resp: &Response, contact_user: &str, hostport: &str) -> Option<u32> {
    let ours = format!("{contact_user}@{hostport}");
    let from_contact = msg::headers(resp, "Contact")
        .flat_map(trunkgate_sip::list_entries)
        .find(|c| c.contains(&ours))
        .and_then(|c| msg::header_param(c, "expires"))
        .and_then(|v| v.trim().parse().ok());
    from_contact.or_else(|| msg::header(resp, "Expires")?.trim().parse().ok())
}

/// The registration of trunk `id` in `rt`, if it has one.
pub fn registration_of<'r>(rt: &'r Runtime, id: &str) -> Option<&'r RegistrationConfig> {
    rt.config
        .trunks
        .iter()
        .find(|t| t.id == id)?
        .outbound
        .as_ref()?
        .registration
        .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lifetime_granted_to_our_contact_wins_over_the_expires_header() {
        let text = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK-1\r\nFrom: <sip:acme@reg.example>;tag=a\r\nTo: <sip:acme@reg.example>;tag=b\r\nCall-ID: r1\r\nCSeq: 1 REGISTER\r\nContact: <sip:acme@203.0.113.9:5060>;expires=3600, <sip:acme@198.51.100.1:5060>;expires=120\r\nExpires: 900\r\nContent-Length: 0\r\n\r\n";
        let Ok(trunkgate_sip::SipMessage::Response(r)) = trunkgate_sip::parse(text.as_bytes())
        else {
            panic!("a response");
        };
        assert_eq!(granted(&r, "acme", "198.51.100.1:5060"), Some(120));
        assert_eq!(granted(&r, "acme", "198.51.100.2:5060"), Some(900));
    }

    #[test]
    fn expiry_is_written_as_rfc3339() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        assert_eq!(rfc3339(t).as_deref(), Some("2027-01-15T08:00:00Z"));
    }
}
