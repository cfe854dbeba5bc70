//! The one SIP codec boundary of Trunkgate. Every SIP message the edge receives is read by
//! [`parse`] (a UDP datagram, or a stream message cut out by [`frame_stream`]), and every message
//! it sends is written by [`serialize`].
//!
//! The message model is rsipstack's ([`model`]). On top of it the boundary checks what
//! rsipstack's reader lets through (RFC 4475): framing and Content-Length, the start line and
//! SIP version, the mandatory header fields and their syntax, CSeq, duplicate single-valued
//! fields. A refused request that can still be answered says so ([`CodecError::reply_status`],
//! [`CodecError::reply`]); anything else is dropped and counted ([`CodecError::metric_label`]).
//!
//! No input panics the boundary: everything handed to rsipstack has been checked first, and the
//! RFC 4475 messages, truncated at every byte and with bytes overwritten, are run through
//! [`parse`] by the tests. There is no `catch_unwind` because no rsipstack panic was found.
#![forbid(unsafe_code)]

mod error;
mod fields;
mod grammar;
mod parse;
mod response;
mod scan;
mod stream;
mod uri;
pub mod values;
mod wire;

pub use error::{CodecError, Rejection};
pub use fields::{
    call_id, cseq, from_tag, from_user, max_forwards, request_uri_user, to_tag, to_user,
    top_via_branch, top_via_sent_by,
};
pub use grammar::list_entries;
pub use parse::{ExtensionRequest, MAX_MESSAGE_LEN, SipMessage, parse};
pub use response::{response_to, warning};
pub use rsipstack::sip as model;
pub use rsipstack::sip::{HasHeaders, Header, Headers, Method, Request, Response, StatusCode, Uri};
pub use stream::{StreamFrame, frame_stream};
pub use wire::{Outbound, serialize};
