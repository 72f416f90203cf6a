//! Pure parsers of the bytes Tango Controls puts on the wire.
//!
//! Everything here works on byte slices the tracer captured from `sendto`/`recvfrom`
//! (or from probes on omniORB/libzmq), which may be cut short: a capture keeps only a prefix
//! of each buffer. No parser panics on any input, allocates from a count read off the wire
//! before checking it against the bytes present, or needs anything but `std`.
//!
//! - [`cdr`]: a CORBA CDR reader with explicit byte order and alignment origin.
//! - [`giop`]: GIOP 1.0–1.2 headers, Request/Reply headers, system exceptions, and a
//!   [`giop::MessageAssembler`] that cuts a byte stream into whole messages.
//! - [`tango`]: the arguments and replies of Tango's `Device_*` operations (`ClntIdent`,
//!   `any` values, `DevFailed`, `DevInfo`).
//! - [`zmtp`]: ZMTP 3 frames and Tango's ZeroMQ event messages.
//!
//! Errors are one small [`WireError`] that tells "the capture ended too early"
//! ([`WireError::Incomplete`]) apart from "these bytes are not this protocol"
//! ([`WireError::NotThisProtocol`]) and "this protocol, but impossible values"
//! ([`WireError::Malformed`]).
//!
//! ```
//! use tracer_wire::{giop, tango};
//!
//! # fn demo(bytes: &[u8]) -> Result<(), tracer_wire::WireError> {
//! if giop::check_payload(bytes) {
//!     if let (_, giop::Message::Request(req)) = giop::parse_message(bytes)? {
//!         let call = tango::parse_request(req.operation, req.body);
//!         println!("{} {:?}", req.operation, call.call);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::fmt;

pub mod cdr;
pub mod encode;
pub mod giop;
pub mod ior;
pub mod tango;
pub mod zmtp;

/// Why bytes could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The bytes ran out before the value did: the capture is a prefix of something longer.
    Incomplete,
    /// The bytes do not start like this protocol at all.
    NotThisProtocol,
    /// The protocol matched but a value is impossible (bad length, bad boolean, unknown tag…).
    Malformed(&'static str),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Incomplete => f.write_str("incomplete data: the capture ended early"),
            WireError::NotThisProtocol => f.write_str("not this protocol"),
            WireError::Malformed(why) => write!(f, "malformed data: {why}"),
        }
    }
}

impl std::error::Error for WireError {}
