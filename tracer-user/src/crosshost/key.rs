//! The name both hosts of a connection give a request without touching it: the connection's two
//! ends and the TCP sequence number of the request's first byte. From it each side derives the
//! client span's id (and the trace id of a call that starts a trace) without asking the other.

use std::net::SocketAddrV4;

use opentelemetry::trace::{SpanId, TraceId};
use xxhash_rust::xxh3::xxh3_128_with_seed;

/// Seeds that keep the span id and the trace id of one key unrelated.
const SPAN_SEED: u64 = 0x7461_6e67_6f73_7061; // "tangospa"
const TRACE_SEED: u64 = 0x7461_6e67_6f74_7263; // "tangotrc"

/// A GIOP request on a TCP connection between two hosts, as both of them see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct LinkKey {
    /// The calling process's end of the connection.
    pub client: SocketAddrV4,
    /// The serving process's end.
    pub server: SocketAddrV4,
    /// Sequence number of the request message's first byte.
    pub seq: u32,
}

impl LinkKey {
    fn bytes(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[0..4].copy_from_slice(&self.client.ip().octets());
        out[4..6].copy_from_slice(&self.client.port().to_be_bytes());
        out[6..10].copy_from_slice(&self.server.ip().octets());
        out[10..12].copy_from_slice(&self.server.port().to_be_bytes());
        out[12..16].copy_from_slice(&self.seq.to_be_bytes());
        out
    }

    /// The client span's id: the server side's parent, known to both hosts.
    pub fn span_id(&self) -> SpanId {
        let hash = xxh3_128_with_seed(&self.bytes(), SPAN_SEED) as u64;
        SpanId::from_bytes(hash.max(1).to_be_bytes())
    }

    /// The trace id of a call that starts its trace (a client call made outside any request).
    pub fn trace_id(&self) -> TraceId {
        let hash = xxh3_128_with_seed(&self.bytes(), TRACE_SEED);
        TraceId::from_bytes(hash.max(1).to_be_bytes())
    }

    /// The key as one attribute value, so a backend can join the two sides itself:
    /// `<client ip>:<port>><server ip>:<port>#<seq>`.
    pub fn attribute(&self) -> String {
        format!("{}>{}#{}", self.client, self.server, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn key(seq: u32) -> LinkKey {
        LinkKey {
            client: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 40000),
            server: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 10000),
            seq,
        }
    }

    #[test]
    fn ids_are_stable_valid_and_distinct_per_key() {
        let a = key(1_000);
        assert_eq!(a.span_id(), key(1_000).span_id());
        assert_eq!(a.trace_id(), key(1_000).trace_id());
        assert_ne!(a.span_id(), key(1_001).span_id());
        assert_ne!(a.trace_id(), key(1_001).trace_id());
        assert_ne!(a.span_id(), SpanId::INVALID);
        assert_ne!(a.trace_id(), TraceId::INVALID);
        // Pinned: both hosts must derive the same ids whatever version each daemon runs.
        assert_eq!(a.attribute(), "10.0.0.1:40000>10.0.0.2:10000#1000");
        assert_eq!(format!("{}", a.span_id()), format!("{}", key(1_000).span_id()));
    }
}
