//! Reading what the edge needs from a parsed message: the SIP codec's field and value readers
//! (one grammar, `trunkgate_sip::values`), and which header fields the edge copies across.

pub use trunkgate_sip::model as rsip_model;
pub use trunkgate_sip::values::{
    display_of, header, header_param, headers, host_of, list, method_name, uri_of, uri_param,
    user_of, via_param,
};

use rsip_model::HasHeaders;

/// Headers of `m` that the edge copies to the other leg, as `Name: value\r\n` lines.
pub fn copied_lines(m: &impl HasHeaders) -> String {
    let mut s = String::new();
    for h in m.headers().iter() {
        if crate::sip::message::copy_header(h.name()) {
            s.push_str(h.name());
            s.push_str(": ");
            s.push_str(h.value());
            s.push_str("\r\n");
        }
    }
    s
}

/// Every `name` header of `m` as `Name: value` lines, values and order untouched.
pub fn header_lines(m: &impl trunkgate_sip::HasHeaders, name: &str) -> String {
    let mut s = String::new();
    for v in headers(m, name) {
        s.push_str(name);
        s.push_str(": ");
        s.push_str(v);
        s.push_str("\r\n");
    }
    s
}
