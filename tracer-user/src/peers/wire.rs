//! What goes over a link between two daemons, and how it is protected.
//!
//! A link is one TCP connection carrying frames: a 2-byte big-endian length, then that many
//! bytes. The first two frames are the Noise handshake `NNpsk0_25519_ChaChaPoly_BLAKE2s`
//! (48 bytes each: an ephemeral key and an empty encrypted payload), keyed by the shared key;
//! a side that does not hold it fails there and learns nothing. Every later frame is one Noise
//! transport message: the [`Message`]s of a batch, postcard-encoded back to back, and a 16-byte
//! tag. The prologue names the protocol version, so daemons of incompatible versions refuse
//! each other as they would a wrong key.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use snow::{HandshakeState, TransportState};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::{counters::Counters, key::PeerKey};
use crate::crosshost::LinkKey;

const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Binds the handshake to this protocol and its version.
const PROLOGUE: &[u8] = b"tango-tracer peer link 1";
/// Largest frame (a Noise message cannot be longer).
const MAX_FRAME: usize = 65_535;
/// The authentication tag of every Noise transport message.
const TAG_LEN: usize = 16;
/// Bytes of messages put into one frame at most (the rest goes into the next).
pub const BATCH_BYTES: usize = 16 * 1024;
/// The length before each frame.
pub const LENGTH_PREFIX: usize = 2;

/// One message of a batch. The order of variants is part of the protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Subscriber → publisher: stream me the calls to these addresses (mine). Sent again when
    /// they change.
    Subscribe { addrs: Vec<Ipv4Addr> },
    /// Either way, when nothing else was sent for a while: the link is alive.
    Beat,
    /// See [`crate::crosshost::Outgoing::Call`].
    Call { key: LinkKey, trace_id: [u8; 16], settled: bool },
    /// See [`crate::crosshost::Outgoing::Progress`].
    Progress { client: SocketAddrV4, server: SocketAddrV4, next_seq: u32 },
    /// See [`crate::crosshost::Outgoing::Settled`].
    Settled { provisional: [u8; 16], trace_id: [u8; 16] },
}

impl Message {
    /// Appends the message to a batch.
    pub fn encode(&self, batch: &mut Vec<u8>) {
        // Serializing these types into a Vec cannot fail; an error would only shorten the batch.
        if let Ok(bytes) = postcard::to_extend(self, std::mem::take(batch)) {
            *batch = bytes;
        }
    }

    /// The messages of a batch, in order; an error if any of it does not decode.
    pub fn decode_batch(mut batch: &[u8], out: &mut Vec<Message>) -> Result<(), postcard::Error> {
        while !batch.is_empty() {
            let (message, rest) = postcard::take_from_bytes(batch)?;
            out.push(message);
            batch = rest;
        }
        Ok(())
    }
}

/// Why a link was not made.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("no handshake within {0:?}")]
    Timeout(Duration),
    #[error("the peer closed the connection during the handshake")]
    Closed,
    #[error("the peer did not prove the shared key (or runs an incompatible version): {0}")]
    Refused(snow::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// An authenticated, encrypted link.
pub struct Session {
    framed: Framed<TcpStream, LengthDelimitedCodec>,
    transport: TransportState,
    /// Reused buffer for the next frame.
    cipher: Vec<u8>,
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().length_field_length(LENGTH_PREFIX).max_frame_length(MAX_FRAME).new_codec()
}

fn builder(key: &PeerKey) -> Result<snow::Builder<'_>, snow::Error> {
    let params = NOISE_PARAMS.parse()?;
    snow::Builder::new(params).psk(0, key.psk())?.prologue(PROLOGUE)
}

/// The dialing side's handshake.
pub async fn initiate(
    stream: TcpStream,
    key: &PeerKey,
    timeout: Duration,
    counters: &Counters,
) -> Result<Session, HandshakeError> {
    let handshake = builder(key).and_then(|b| b.build_initiator()).map_err(HandshakeError::Refused)?;
    tokio::time::timeout(timeout, handshake_exchange(stream, handshake, counters))
        .await
        .map_err(|_| HandshakeError::Timeout(timeout))?
}

/// The listening side's handshake.
pub async fn respond(
    stream: TcpStream,
    key: &PeerKey,
    timeout: Duration,
    counters: &Counters,
) -> Result<Session, HandshakeError> {
    let handshake = builder(key).and_then(|b| b.build_responder()).map_err(HandshakeError::Refused)?;
    tokio::time::timeout(timeout, handshake_exchange(stream, handshake, counters))
        .await
        .map_err(|_| HandshakeError::Timeout(timeout))?
}

async fn handshake_exchange(
    stream: TcpStream,
    mut handshake: HandshakeState,
    counters: &Counters,
) -> Result<Session, HandshakeError> {
    let mut framed = Framed::new(stream, codec());
    let mut buf = vec![0u8; MAX_FRAME];
    let mut payload = vec![0u8; MAX_FRAME];
    while !handshake.is_handshake_finished() {
        if handshake.is_my_turn() {
            let len = handshake.write_message(&[], &mut buf).map_err(HandshakeError::Refused)?;
            let frame = Bytes::copy_from_slice(buf.get(..len).unwrap_or_default());
            framed.send(frame).await?;
            counters.add_sent_bytes(len + LENGTH_PREFIX);
        } else {
            let frame = framed.next().await.ok_or(HandshakeError::Closed)??;
            counters.add_received_bytes(frame.len() + LENGTH_PREFIX);
            handshake.read_message(&frame, &mut payload).map_err(HandshakeError::Refused)?;
        }
    }
    let transport = handshake.into_transport_mode().map_err(HandshakeError::Refused)?;
    Ok(Session { framed, transport, cipher: vec![0u8; MAX_FRAME] })
}

/// Why a link ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the peer closed the link")]
    Closed,
    #[error("a frame failed authentication: {0}")]
    Forged(snow::Error),
    #[error("a frame did not decode: {0}")]
    Undecodable(postcard::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Session {
    /// Encrypts and sends one batch (at most [`BATCH_BYTES`] plus one message).
    pub async fn send(&mut self, batch: &[u8], counters: &Counters) -> Result<(), LinkError> {
        let len = self.transport.write_message(batch, &mut self.cipher).map_err(LinkError::Forged)?;
        let frame = Bytes::copy_from_slice(self.cipher.get(..len).unwrap_or_default());
        self.framed.send(frame).await?;
        counters.add_sent_bytes(len + LENGTH_PREFIX);
        Ok(())
    }

    /// The next batch's messages (appended to `out`). Cancel-safe: a frame half read stays
    /// buffered for the next call.
    pub async fn recv(&mut self, out: &mut Vec<Message>, counters: &Counters) -> Result<(), LinkError> {
        let frame: BytesMut = self.framed.next().await.ok_or(LinkError::Closed)??;
        counters.add_received_bytes(frame.len() + LENGTH_PREFIX);
        let len = self.transport.read_message(&frame, &mut self.cipher).map_err(LinkError::Forged)?;
        let plain = self.cipher.get(..len).unwrap_or_default();
        Message::decode_batch(plain, out).map_err(LinkError::Undecodable)
    }

    /// Where the peer is.
    pub fn peer(&self) -> Option<std::net::SocketAddr> {
        self.framed.get_ref().peer_addr().ok()
    }
}

/// Bytes a batch of `plain` bytes takes on the wire.
pub const fn frame_bytes(plain: usize) -> usize {
    LENGTH_PREFIX + plain + TAG_LEN
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

    use super::*;

    fn key() -> LinkKey {
        LinkKey {
            client: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 40312),
            server: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 10000),
            seq: 3_141_592_653,
        }
    }

    fn encoded(message: &Message) -> Vec<u8> {
        let mut batch = Vec::new();
        message.encode(&mut batch);
        batch
    }

    #[test]
    fn a_batch_decodes_to_the_messages_encoded() {
        let messages = vec![
            Message::Subscribe { addrs: vec![Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(192, 168, 1, 7)] },
            Message::Call { key: key(), trace_id: [0xab; 16], settled: false },
            Message::Progress { client: key().client, server: key().server, next_seq: u32::MAX },
            Message::Settled { provisional: [0xab; 16], trace_id: [0xcd; 16] },
            Message::Beat,
        ];
        let mut batch = Vec::new();
        for message in &messages {
            message.encode(&mut batch);
        }
        let mut out = Vec::new();
        Message::decode_batch(&batch, &mut out).unwrap();
        assert_eq!(out, messages);
    }

    #[test]
    fn a_cut_or_unknown_message_is_an_error() {
        let call = encoded(&Message::Call { key: key(), trace_id: [1; 16], settled: true });
        let mut out = Vec::new();
        assert!(Message::decode_batch(&call[..call.len() - 1], &mut out).is_err());
        out.clear();
        assert!(Message::decode_batch(&[9], &mut out).is_err(), "variant 9 does not exist");
        out.clear();
        // Half a key's address.
        assert!(Message::decode_batch(&[2, 10, 0], &mut out).is_err());
    }

    /// The sizes the report and BENCHMARKS.md quote, pinned (postcard varints: ports and
    /// sequence numbers take 1–5 bytes).
    #[test]
    fn message_sizes() {
        assert_eq!(encoded(&Message::Call { key: key(), trace_id: [1; 16], settled: true }).len(), 36);
        let progress = Message::Progress { client: key().client, server: key().server, next_seq: key().seq };
        assert_eq!(encoded(&progress).len(), 19);
        let settled = Message::Settled { provisional: [1; 16], trace_id: [2; 16] };
        assert_eq!(encoded(&settled).len(), 33);
        assert_eq!(encoded(&Message::Subscribe { addrs: vec![Ipv4Addr::LOCALHOST] }).len(), 6);
        assert_eq!(encoded(&Message::Beat).len(), 1);
        assert_eq!(frame_bytes(36), 54);
    }
}
