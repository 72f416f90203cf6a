//! Decoding ring-buffer records into owned values.

use tracer_common::{DATA_RECORD_HEADER_LEN, RecordHeader, direction, kind};

/// Which way bytes moved, seen from the traced process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Direction {
    Send,
    Recv,
}

/// The peer of a socket, as the kernel saw it during a receive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Peer {
    #[default]
    Unknown,
    Inet(std::net::Ipv4Addr, u16),
    Unix,
    Other(u16),
}

/// One record from the probes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Record {
    /// Bytes sent or received on socket `fd` (a prefix of `total_len` bytes).
    Data {
        pid: u32,
        tid: u32,
        fd: i32,
        ts_ns: u64,
        direction: Direction,
        total_len: u32,
        #[serde(with = "hex_bytes")]
        bytes: Vec<u8>,
        #[serde(default)]
        peer: Peer,
    },
    Close {
        pid: u32,
        fd: i32,
        ts_ns: u64,
    },
    LibOpened {
        pid: u32,
        ts_ns: u64,
    },
    Exit {
        pid: u32,
        ts_ns: u64,
    },
    Exec {
        pid: u32,
        ts_ns: u64,
    },
    Fork {
        pid: u32,
        child: u32,
        ts_ns: u64,
    },
    /// Thread `tid` queued the last part of a ZMQ message (an event push, or a heartbeat).
    ZmqSend {
        pid: u32,
        tid: u32,
        ts_ns: u64,
    },
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record shorter than its header ({0} bytes)")]
    Short(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
}

impl Record {
    /// Decodes one ring-buffer item.
    pub fn decode(raw: &[u8]) -> Result<Record, RecordError> {
        let header_len = size_of::<RecordHeader>();
        if raw.len() < header_len {
            return Err(RecordError::Short(raw.len()));
        }
        let u32_at = |o: usize| u32::from_ne_bytes([raw[o], raw[o + 1], raw[o + 2], raw[o + 3]]);
        let kind = u32_at(0);
        let pid = u32_at(4);
        let tid = u32_at(8);
        let fd = u32_at(12) as i32;
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&raw[16..24]);
        let ts_ns = u64::from_ne_bytes(ts);
        Ok(match kind {
            kind::DATA => {
                if raw.len() < DATA_RECORD_HEADER_LEN {
                    return Err(RecordError::Short(raw.len()));
                }
                let total_len = u32_at(header_len);
                let captured = u32_at(header_len + 4) as usize;
                let dir = raw[header_len + 8];
                let family = u16::from_ne_bytes([raw[header_len + 10], raw[header_len + 11]]);
                let addr =
                    [raw[header_len + 12], raw[header_len + 13], raw[header_len + 14], raw[header_len + 15]];
                let port = u16::from_ne_bytes([raw[header_len + 16], raw[header_len + 17]]);
                let peer = match family {
                    0 => Peer::Unknown,
                    1 => Peer::Unix,
                    2 => Peer::Inet(std::net::Ipv4Addr::from(addr), port),
                    other => Peer::Other(other),
                };
                let end = (DATA_RECORD_HEADER_LEN + captured).min(raw.len());
                Record::Data {
                    pid,
                    tid,
                    fd,
                    ts_ns,
                    direction: if dir == direction::SEND { Direction::Send } else { Direction::Recv },
                    total_len,
                    bytes: raw[DATA_RECORD_HEADER_LEN..end].to_vec(),
                    peer,
                }
            }
            kind::CLOSE => Record::Close { pid, fd, ts_ns },
            kind::LIB_OPENED => Record::LibOpened { pid, ts_ns },
            kind::EXIT => Record::Exit { pid, ts_ns },
            kind::EXEC => Record::Exec { pid, ts_ns },
            kind::FORK => Record::Fork { pid, child: fd as u32, ts_ns },
            kind::ZMQ_SEND => Record::ZmqSend { pid, tid, ts_ns },
            other => return Err(RecordError::UnknownKind(other)),
        })
    }

    pub fn pid(&self) -> u32 {
        match self {
            Record::Data { pid, .. }
            | Record::Close { pid, .. }
            | Record::LibOpened { pid, .. }
            | Record::Exit { pid, .. }
            | Record::Exec { pid, .. }
            | Record::Fork { pid, .. }
            | Record::ZmqSend { pid, .. } => *pid,
        }
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}
