//! The few GIOP messages the daemon itself sends: read-only queries to the Tango database.
//!
//! Little-endian CDR, GIOP 1.0 (what Tango uses for `corbaloc` objects such as `database`).

/// A growing little-endian CDR buffer; alignment is relative to the GIOP message start.
#[derive(Debug, Default)]
pub struct CdrWriter {
    buf: Vec<u8>,
}

impl CdrWriter {
    pub fn new() -> Self {
        CdrWriter { buf: Vec::with_capacity(128) }
    }

    pub fn align(&mut self, n: usize) {
        while !self.buf.len().is_multiple_of(n) {
            self.buf.push(0);
        }
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn u32(&mut self, v: u32) {
        self.align(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// u32 length including the NUL | bytes | NUL
    pub fn string(&mut self, s: &str) {
        self.u32(s.len() as u32 + 1);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }

    /// sequence<octet>
    pub fn octets(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.buf.extend_from_slice(b);
    }

    /// An `any` holding a string: TypeCode tk_string (18) with bound 0, then the value.
    pub fn any_string(&mut self, s: &str) {
        self.u32(18);
        self.u32(0);
        self.string(s);
    }

    /// An `any` holding a `DevVarStringArray`: TypeCode tk_sequence (19) of unbounded tk_string
    /// (omniORB compares TypeCodes by equivalence, so the alias name is not needed), then the value.
    pub fn any_string_seq(&mut self, items: &[&str]) {
        self.u32(19);
        // encapsulation: byte order (+3 pad) | element TypeCode tk_string, bound 0 | max length 0
        self.u32(16);
        self.buf.extend_from_slice(&[1, 0, 0, 0]);
        self.buf.extend_from_slice(&18u32.to_le_bytes());
        self.buf.extend_from_slice(&0u32.to_le_bytes());
        self.buf.extend_from_slice(&0u32.to_le_bytes());
        self.u32(items.len() as u32);
        for item in items {
            self.string(item);
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// A GIOP 1.0 Request expecting a reply; `body` writes the arguments.
pub fn request_1_0(
    request_id: u32,
    object_key: &[u8],
    operation: &str,
    body: impl FnOnce(&mut CdrWriter),
) -> Vec<u8> {
    let mut w = CdrWriter::new();
    // header: magic | version 1.0 | flags (little-endian) | Request | body size (patched below)
    w.buf.extend_from_slice(b"GIOP\x01\x00\x01\x00\0\0\0\0");
    // service contexts | request_id | response_expected + 3 pad | key | operation | principal
    w.u32(0);
    w.u32(request_id);
    w.u8(1);
    w.octets(object_key);
    w.string(operation);
    w.octets(&[]);
    body(&mut w);
    let mut bytes = w.into_bytes();
    let body_len = (bytes.len().saturating_sub(12) as u32).to_le_bytes();
    if let Some(size) = bytes.get_mut(8..12) {
        size.copy_from_slice(&body_len);
    }
    bytes
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        reason = "tests"
    )]
    use super::*;
    use crate::{
        giop::{Message, parse_message},
        tango::{ArgValue, TangoCall, parse_request},
    };

    #[test]
    fn a_string_sequence_any_parses_back() {
        let bytes = request_1_0(1, b"database", "command_inout", |w| {
            w.string("DbGetDeviceProperty");
            w.any_string_seq(&["sys/tg_test/1", "telemetry_enable"]);
        });
        let Ok((_, Message::Request(request))) = parse_message(&bytes) else {
            panic!("not a request");
        };
        let parsed = parse_request(request.operation, request.body);
        assert_eq!(
            parsed.call,
            TangoCall::CommandInout {
                command: "DbGetDeviceProperty".into(),
                argin: Some(ArgValue::StringArray(vec!["sys/tg_test/1".into(), "telemetry_enable".into()]))
            }
        );
    }

    #[test]
    fn a_command_inout_request_parses_back() {
        let bytes = request_1_0(7, b"database", "command_inout", |w| {
            w.string("DbImportDevice");
            w.any_string("sys/tg_test/1");
        });
        let Ok((header, Message::Request(request))) = parse_message(&bytes) else {
            panic!("not a request");
        };
        assert_eq!(header.message_len(), bytes.len());
        assert_eq!(
            (request.request_id, request.object_key, request.operation),
            (7, &b"database"[..], "command_inout")
        );
        let parsed = parse_request(request.operation, request.body);
        assert_eq!(
            parsed.call,
            TangoCall::CommandInout {
                command: "DbImportDevice".into(),
                argin: Some(ArgValue::String("sys/tg_test/1".into()))
            }
        );
    }
}
