//! Decoding ring-buffer records. A decoded record borrows the captured bytes from the ring
//! buffer's item (no copy per record); recorded sessions and tests own theirs.

use std::borrow::Cow;

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
pub enum Record<'a> {
    /// Bytes sent or received on socket `fd` (a prefix of `total_len` bytes).
    Data {
        pid: u32,
        tid: u32,
        fd: i32,
        ts_ns: u64,
        direction: Direction,
        total_len: u32,
        #[serde(with = "hex_bytes")]
        bytes: Cow<'a, [u8]>,
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

impl Record<'_> {
    /// Decodes one ring-buffer item; a data record borrows its bytes from `raw`.
    pub fn decode(raw: &[u8]) -> Result<Record<'_>, RecordError> {
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
                    bytes: Cow::Borrowed(raw.get(DATA_RECORD_HEADER_LEN..end).unwrap_or_default()),
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

    /// The same record owning its bytes (to keep it past the ring-buffer item).
    pub fn into_owned(self) -> Record<'static> {
        match self {
            Record::Data { pid, tid, fd, ts_ns, direction, total_len, bytes, peer } => Record::Data {
                pid,
                tid,
                fd,
                ts_ns,
                direction,
                total_len,
                bytes: Cow::Owned(bytes.into_owned()),
                peer,
            },
            Record::Close { pid, fd, ts_ns } => Record::Close { pid, fd, ts_ns },
            Record::LibOpened { pid, ts_ns } => Record::LibOpened { pid, ts_ns },
            Record::Exit { pid, ts_ns } => Record::Exit { pid, ts_ns },
            Record::Exec { pid, ts_ns } => Record::Exec { pid, ts_ns },
            Record::Fork { pid, child, ts_ns } => Record::Fork { pid, child, ts_ns },
            Record::ZmqSend { pid, tid, ts_ns } => Record::ZmqSend { pid, tid, ts_ns },
        }
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
    use std::borrow::Cow;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, 'a, D: Deserializer<'de>>(d: D) -> Result<Cow<'a, [u8]>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map(Cow::Owned).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::{DataRecord, MAX_CAPTURE, chunk};

    use super::*;

    /// A data record as the probes write it: `captured` bytes of `message`.
    fn raw_data(message: &[u8], captured: usize) -> Vec<u8> {
        let mut record = DataRecord {
            header: RecordHeader { kind: kind::DATA, pid: 10, tid: 11, fd: 7, ts_ns: 99 },
            total_len: message.len() as u32,
            captured_len: captured as u32,
            direction: direction::RECV,
            flags: chunk::MESSAGE_START,
            peer_family: 2,
            peer_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            peer_port: 4242,
            _pad2: [0; 6],
            data: [0; MAX_CAPTURE],
        };
        record.data[..captured].copy_from_slice(&message[..captured]);
        // SAFETY: a plain #[repr(C)] struct viewed as its bytes, as the ring buffer carries it.
        let bytes = unsafe {
            std::slice::from_raw_parts((&record as *const DataRecord).cast::<u8>(), size_of::<DataRecord>())
        };
        bytes[..DATA_RECORD_HEADER_LEN + captured].to_vec()
    }

    #[test]
    fn data_records_borrow_their_bytes() {
        let message = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tracer-wire/tests/fixtures/giop/demo-req-read_attributes_5.bin"
        ))
        .expect("fixture");
        let raw = raw_data(&message, 40);
        let record = Record::decode(&raw).expect("decode");
        let Record::Data { pid, tid, fd, ts_ns, direction, total_len, bytes, peer } = &record else {
            panic!("{record:?}")
        };
        assert_eq!((*pid, *tid, *fd, *ts_ns, *direction), (10, 11, 7, 99, Direction::Recv));
        assert_eq!(*total_len as usize, message.len());
        assert_eq!(*peer, Peer::Inet(std::net::Ipv4Addr::new(127, 0, 0, 1), 4242));
        assert_eq!(&bytes[..], &message[..40]);
        // No copy: the bytes are the ring-buffer item's own.
        assert!(
            matches!(bytes, Cow::Borrowed(b) if std::ptr::eq(b.as_ptr(), raw[DATA_RECORD_HEADER_LEN..].as_ptr()))
        );
        let owned = record.clone().into_owned();
        assert_eq!(owned, record);
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert_eq!(Record::decode(&[0; 8]), Err(RecordError::Short(8)));
        let mut raw = raw_data(b"GIOP", 4);
        assert_eq!(
            Record::decode(&raw[..DATA_RECORD_HEADER_LEN - 1]),
            Err(RecordError::Short(DATA_RECORD_HEADER_LEN - 1))
        );
        raw[..4].copy_from_slice(&77u32.to_ne_bytes());
        assert_eq!(Record::decode(&raw), Err(RecordError::UnknownKind(77)));
    }
}
