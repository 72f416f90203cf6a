//! Decoding ring-buffer records. A decoded record borrows the captured bytes from the ring
//! buffer's item (no copy per record); recorded sessions and tests own theirs.

use std::{borrow::Cow, os::unix::ffi::OsStrExt as _, path::PathBuf};

use tracer_common::{
    DATA_RECORD_HEADER_LEN, DataRecord, FACTS_RECORD_HEADER_LEN, FactsRecord, LIBRARY_RECORD_HEADER_LEN,
    LOG_RECORD_HEADER_LEN, LibraryRecord, LogRecord, MAX_CMDLINE, MAX_ENVIRON, MAX_LOG_FILE, MAX_LOG_MESSAGE,
    MAX_LOGGER_NAME, MAX_PATH, RecordHeader, USER_CODE_RECORD_HEADER_LEN, UserCodeRecord, chunk, direction,
    kind, log_flags, unreadable,
    user_code::{MAX_CLASS_NAME, MAX_MEMBER_NAME},
};

/// Which way bytes moved, seen from the traced process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Direction {
    Send,
    Recv,
}

/// The peer of a socket, as the kernel saw it during the send or receive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Peer {
    #[default]
    Unknown,
    Inet(std::net::Ipv4Addr, u16),
    Unix,
    Other(u16),
}

/// Where a chunk sits in a TCP/IPv4 connection, as the kernel saw it during the syscall: both ends
/// of the connection and the sequence number of the chunk's first byte. Both hosts of a connection
/// see the same numbers for the same bytes, so they can name a request without touching it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TcpPosition {
    /// This process's end.
    pub local: std::net::SocketAddrV4,
    /// The other end.
    pub remote: std::net::SocketAddrV4,
    /// Sequence number of the chunk's first byte (`write_seq` for a send, `copied_seq` for a
    /// receive, plus the chunk's offset in the syscall).
    pub seq: u32,
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
        /// The chunk's place in its TCP connection, when the probe could read it.
        #[serde(default)]
        tcp: Option<TcpPosition>,
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
    /// No probe sends this any more (a forked child arrives as `ProcessFacts` with its parent);
    /// kept while the daemon's pipeline and its tests still name it.
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
    /// A process became a target; what the kernel copied about it at that moment. When it opened
    /// omniORB, that path follows as a `LibraryPath`, then the libtango/libzmq paths it opened
    /// before.
    ProcessFacts(Box<CapturedFacts>),
    /// A path naming libomniORB4, libtango or libzmq that the process opened (the last path of a
    /// name is the one that opened: the dynamic loader stops at the first that exists).
    LibraryPath {
        pid: u32,
        ts_ns: u64,
        path: PathBuf,
    },
    /// Thread `tid` logged a message that passed its logger's level check.
    Log(LogMessage<'a>),
    /// Thread `tid` passed a libtango probe point around user code.
    UserCode(UserCodeHit<'a>),
}

/// What a libtango probe point around user code saw (`tracer_common::user_code`); the names
/// borrow from the ring-buffer item.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserCodeHit<'a> {
    pub pid: u32,
    pub tid: u32,
    pub ts_ns: u64,
    /// `tracer_common::user_code::point`.
    pub point: u8,
    /// The `DeviceImpl*` (0 at end points).
    pub device: u64,
    /// The device's class name (start points).
    #[serde(with = "hex_bytes")]
    pub class: Cow<'a, [u8]>,
    /// The attribute or command name (read and command starts).
    #[serde(with = "hex_bytes")]
    pub name: Cow<'a, [u8]>,
    /// `tracer_common::user_code::unreadable` bits.
    pub unreadable: u32,
    /// The branch goes to the user code (a hook point: the device has a hook of its own).
    #[serde(default)]
    pub taken: bool,
}

/// A device log message as the probe read it; the texts borrow from the ring-buffer item.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogMessage<'a> {
    pub pid: u32,
    pub tid: u32,
    pub ts_ns: u64,
    /// log4tango's level (200 FATAL … 600 DEBUG).
    pub level: i32,
    /// The source line, when the call carried a location (cppTango ≥ 10).
    pub line: Option<i32>,
    /// The logger's name: the lowercased device name, or `dserver/<server>/<instance>`.
    #[serde(with = "hex_bytes")]
    pub logger: Cow<'a, [u8]>,
    /// The last bytes of the source file's path (empty without a location).
    #[serde(with = "hex_bytes")]
    pub file: Cow<'a, [u8]>,
    /// The first bytes of the message (`--log-bytes`).
    #[serde(with = "hex_bytes")]
    pub message: Cow<'a, [u8]>,
    /// The message's whole length in the process.
    pub message_len: u32,
    /// Fields the probe could not read ([`tracer_common::log_flags`] bits other than the
    /// location's).
    pub unreadable: u32,
}

impl LogMessage<'_> {
    /// Only a prefix of the message was copied.
    pub fn truncated(&self) -> bool {
        self.message.len() < self.message_len as usize
    }

    fn into_owned(self) -> LogMessage<'static> {
        LogMessage {
            logger: Cow::Owned(self.logger.into_owned()),
            file: Cow::Owned(self.file.into_owned()),
            message: Cow::Owned(self.message.into_owned()),
            ..self
        }
    }
}

/// Facts the kernel copied about a process while it could not exit (see `FactsRecord`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CapturedFacts {
    pub pid: u32,
    pub ts_ns: u64,
    /// The target that forked it; `None` when it opened omniORB itself.
    pub parent: Option<u32>,
    pub comm: String,
    pub euid: Option<u32>,
    /// Inode of its mount namespace.
    pub mnt_ns: Option<u32>,
    /// Inode of its network namespace.
    #[serde(default)]
    pub net_ns: Option<u32>,
    /// NUL-separated arguments.
    pub cmdline: CapturedBlock,
    /// NUL-separated `NAME=value` entries.
    pub environ: CapturedBlock,
}

/// A block of process memory copied by the kernel up to a limit, with its true length.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CapturedBlock {
    #[serde(with = "hex_bytes")]
    pub bytes: Vec<u8>,
    /// Length of the whole block in the process.
    pub len: u32,
    /// The kernel could not read it (`bytes` is then empty).
    pub unreadable: bool,
}

impl CapturedBlock {
    /// Only a prefix was copied.
    pub fn truncated(&self) -> bool {
        !self.unreadable && self.bytes.len() < self.len as usize
    }
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record shorter than its header ({0} bytes)")]
    Short(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("record of kind {kind} has {len} bytes, fewer than its fixed part")]
    Truncated { kind: u32, len: usize },
}

/// Reads a native-endian `u32` at `offset`, if the record is long enough.
fn read_u32(raw: &[u8], offset: usize) -> Option<u32> {
    let bytes = raw.get(offset..offset + 4)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

/// Reads a native-endian `u16` at `offset`, if the record is long enough.
fn read_u16(raw: &[u8], offset: usize) -> Option<u16> {
    let bytes = raw.get(offset..offset + 2)?;
    Some(u16::from_ne_bytes(bytes.try_into().ok()?))
}

/// `len` bytes at `offset`, clamped to `limit` and to what the record holds.
fn bytes_at(raw: &[u8], offset: usize, len: u32, limit: usize) -> &[u8] {
    let end = offset.saturating_add((len as usize).min(limit)).min(raw.len());
    raw.get(offset..end).unwrap_or_default()
}

/// A NUL-padded C string.
fn c_string(bytes: &[u8]) -> &[u8] {
    bytes.split(|b| *b == 0).next().unwrap_or_default()
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
                use std::mem::offset_of;
                if raw.len() < DATA_RECORD_HEADER_LEN {
                    return Err(RecordError::Short(raw.len()));
                }
                // The fixed part is whole: every field below is there.
                let u32_field = |offset: usize| read_u32(raw, offset).unwrap_or_default();
                let u16_field = |offset: usize| read_u16(raw, offset).unwrap_or_default();
                let byte_field = |offset: usize| raw.get(offset).copied().unwrap_or_default();
                let total_len = u32_field(offset_of!(DataRecord, total_len));
                let captured = u32_field(offset_of!(DataRecord, captured_len)) as usize;
                let dir = byte_field(offset_of!(DataRecord, direction));
                let flags = byte_field(offset_of!(DataRecord, flags));
                let family = u16_field(offset_of!(DataRecord, peer_family));
                // Addresses travel in network byte order: their bytes are the address.
                let peer_addr = u32_field(offset_of!(DataRecord, peer_addr)).to_ne_bytes();
                let peer_port = u16_field(offset_of!(DataRecord, peer_port));
                let peer = match family {
                    0 => Peer::Unknown,
                    1 => Peer::Unix,
                    2 => Peer::Inet(std::net::Ipv4Addr::from(peer_addr), peer_port),
                    other => Peer::Other(other),
                };
                let tcp = (flags & chunk::TCP_POSITION != 0).then(|| {
                    let local_addr = u32_field(offset_of!(DataRecord, local_addr)).to_ne_bytes();
                    TcpPosition {
                        local: std::net::SocketAddrV4::new(
                            local_addr.into(),
                            u16_field(offset_of!(DataRecord, local_port)),
                        ),
                        remote: std::net::SocketAddrV4::new(peer_addr.into(), peer_port),
                        seq: u32_field(offset_of!(DataRecord, tcp_seq)),
                    }
                });
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
                    tcp,
                }
            }
            kind::CLOSE => Record::Close { pid, fd, ts_ns },
            kind::LIB_OPENED => Record::LibOpened { pid, ts_ns },
            kind::EXIT => Record::Exit { pid, ts_ns },
            kind::EXEC => Record::Exec { pid, ts_ns },
            kind::ZMQ_SEND => Record::ZmqSend { pid, tid, ts_ns },
            kind::PROCESS_FACTS => Record::ProcessFacts(Box::new(decode_facts(raw, pid, ts_ns)?)),
            kind::LIBRARY_PATH => {
                const PATH: usize = LIBRARY_RECORD_HEADER_LEN;
                let path_len = read_u32(raw, std::mem::offset_of!(LibraryRecord, path_len))
                    .ok_or(RecordError::Truncated { kind: kind::LIBRARY_PATH, len: raw.len() })?;
                let path = bytes_at(raw, PATH, path_len, MAX_PATH);
                Record::LibraryPath { pid, ts_ns, path: PathBuf::from(std::ffi::OsStr::from_bytes(path)) }
            }
            kind::LOG => Record::Log(decode_log(raw, pid, tid, ts_ns)?),
            kind::USER_CODE => Record::UserCode(decode_user_code(raw, pid, tid, ts_ns)?),
            other => return Err(RecordError::UnknownKind(other)),
        })
    }

    /// The same record owning its bytes (to keep it past the ring-buffer item).
    pub fn into_owned(self) -> Record<'static> {
        match self {
            Record::Data { pid, tid, fd, ts_ns, direction, total_len, bytes, peer, tcp } => Record::Data {
                pid,
                tid,
                fd,
                ts_ns,
                direction,
                total_len,
                bytes: Cow::Owned(bytes.into_owned()),
                peer,
                tcp,
            },
            Record::Close { pid, fd, ts_ns } => Record::Close { pid, fd, ts_ns },
            Record::LibOpened { pid, ts_ns } => Record::LibOpened { pid, ts_ns },
            Record::Exit { pid, ts_ns } => Record::Exit { pid, ts_ns },
            Record::Exec { pid, ts_ns } => Record::Exec { pid, ts_ns },
            Record::Fork { pid, child, ts_ns } => Record::Fork { pid, child, ts_ns },
            Record::ZmqSend { pid, tid, ts_ns } => Record::ZmqSend { pid, tid, ts_ns },
            Record::ProcessFacts(facts) => Record::ProcessFacts(facts),
            Record::LibraryPath { pid, ts_ns, path } => Record::LibraryPath { pid, ts_ns, path },
            Record::Log(log) => Record::Log(log.into_owned()),
            Record::UserCode(hit) => Record::UserCode(UserCodeHit {
                class: Cow::Owned(hit.class.into_owned()),
                name: Cow::Owned(hit.name.into_owned()),
                ..hit
            }),
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
            | Record::ZmqSend { pid, .. }
            | Record::LibraryPath { pid, .. } => *pid,
            Record::ProcessFacts(facts) => facts.pid,
            Record::Log(log) => log.pid,
            Record::UserCode(hit) => hit.pid,
        }
    }
}

/// Decodes a `LogRecord` (only `LOG_RECORD_HEADER_LEN` + the captured texts travel); the texts
/// borrow from `raw`.
fn decode_log(raw: &[u8], pid: u32, tid: u32, ts_ns: u64) -> Result<LogMessage<'_>, RecordError> {
    use std::mem::offset_of;
    if raw.len() < LOG_RECORD_HEADER_LEN {
        return Err(RecordError::Truncated { kind: kind::LOG, len: raw.len() });
    }
    let field = |offset: usize| read_u32(raw, offset).unwrap_or_default();
    let flags = field(offset_of!(LogRecord, flags));
    let logger_captured = (field(offset_of!(LogRecord, logger_captured)) as usize).min(MAX_LOGGER_NAME);
    let file_captured = (field(offset_of!(LogRecord, file_captured)) as usize).min(MAX_LOG_FILE);
    let text = offset_of!(LogRecord, text);
    let logger = bytes_at(raw, text, logger_captured as u32, MAX_LOGGER_NAME);
    let file = bytes_at(raw, text + logger_captured, file_captured as u32, MAX_LOG_FILE);
    let message = bytes_at(
        raw,
        text + logger_captured + file_captured,
        field(offset_of!(LogRecord, message_captured)),
        MAX_LOG_MESSAGE,
    );
    let has_location = flags & log_flags::HAS_LOCATION != 0;
    Ok(LogMessage {
        pid,
        tid,
        ts_ns,
        level: field(offset_of!(LogRecord, level)) as i32,
        line: has_location.then(|| field(offset_of!(LogRecord, line)) as i32),
        logger: Cow::Borrowed(logger),
        file: Cow::Borrowed(file),
        message: Cow::Borrowed(message),
        message_len: field(offset_of!(LogRecord, message_len)),
        unreadable: flags & !log_flags::HAS_LOCATION,
    })
}

/// Decodes a `UserCodeRecord` (end points send only its fixed part); the names borrow from `raw`.
fn decode_user_code(raw: &[u8], pid: u32, tid: u32, ts_ns: u64) -> Result<UserCodeHit<'_>, RecordError> {
    use std::mem::offset_of;
    if raw.len() < USER_CODE_RECORD_HEADER_LEN {
        return Err(RecordError::Truncated { kind: kind::USER_CODE, len: raw.len() });
    }
    let field = |offset: usize| read_u32(raw, offset).unwrap_or_default();
    let half = |offset: usize| raw.get(offset..offset + 2).map_or(0, |b| u16::from_ne_bytes([b[0], b[1]]));
    let class_len = u32::from(half(offset_of!(UserCodeRecord, class_len))).min(MAX_CLASS_NAME as u32);
    let name_len = u32::from(half(offset_of!(UserCodeRecord, name_len)));
    let text = offset_of!(UserCodeRecord, text);
    let device = raw
        .get(offset_of!(UserCodeRecord, device)..)
        .and_then(|b| b.get(..8))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_ne_bytes);
    Ok(UserCodeHit {
        pid,
        tid,
        ts_ns,
        point: field(offset_of!(UserCodeRecord, point)) as u8,
        device,
        class: Cow::Borrowed(bytes_at(raw, text, class_len, MAX_CLASS_NAME)),
        name: Cow::Borrowed(bytes_at(raw, text + class_len as usize, name_len, MAX_MEMBER_NAME)),
        unreadable: field(offset_of!(UserCodeRecord, unreadable)),
        taken: field(offset_of!(UserCodeRecord, flags)) & tracer_common::user_code::flags::TAKEN != 0,
    })
}

/// Decodes a `FactsRecord` (only `FACTS_RECORD_HEADER_LEN` + the captured blocks travel).
fn decode_facts(raw: &[u8], pid: u32, ts_ns: u64) -> Result<CapturedFacts, RecordError> {
    use std::mem::offset_of;
    if raw.len() < FACTS_RECORD_HEADER_LEN {
        return Err(RecordError::Truncated { kind: kind::PROCESS_FACTS, len: raw.len() });
    }
    let field = |offset: usize| read_u32(raw, offset).unwrap_or_default();
    let missing = field(offset_of!(FactsRecord, unreadable));
    let known = |bit: u32, value: u32| (missing & bit == 0).then_some(value);
    let block = |bytes_offset: usize, len_offset: usize, captured_offset: usize, limit: usize, bit: u32| {
        let unreadable = missing & (bit | unreadable::MM) != 0;
        CapturedBlock {
            bytes: bytes_at(raw, bytes_offset, field(captured_offset), limit).to_vec(),
            len: field(len_offset),
            unreadable,
        }
    };
    let blocks = offset_of!(FactsRecord, blocks);
    let cmdline_captured = (field(offset_of!(FactsRecord, cmdline_captured)) as usize).min(MAX_CMDLINE);
    let parent = field(offset_of!(FactsRecord, parent_pid));
    let comm = bytes_at(raw, offset_of!(FactsRecord, comm), 16, 16);
    Ok(CapturedFacts {
        pid,
        ts_ns,
        parent: (parent != 0).then_some(parent),
        comm: String::from_utf8_lossy(c_string(comm)).into_owned(),
        euid: known(unreadable::EUID, field(offset_of!(FactsRecord, euid))),
        mnt_ns: known(unreadable::MNT_NS, field(offset_of!(FactsRecord, mnt_ns))),
        net_ns: known(unreadable::NET_NS, field(offset_of!(FactsRecord, net_ns))),
        cmdline: block(
            blocks,
            offset_of!(FactsRecord, cmdline_len),
            offset_of!(FactsRecord, cmdline_captured),
            MAX_CMDLINE,
            unreadable::CMDLINE,
        ),
        environ: block(
            blocks + cmdline_captured,
            offset_of!(FactsRecord, environ_len),
            offset_of!(FactsRecord, environ_captured),
            MAX_ENVIRON,
            unreadable::ENVIRON,
        ),
    })
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, T: AsRef<[u8]>>(bytes: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes.as_ref()))
    }

    /// Into an owned `Vec<u8>` or `Cow<[u8]>`.
    pub fn deserialize<'de, D: Deserializer<'de>, T: From<Vec<u8>>>(d: D) -> Result<T, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map(T::from).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        reason = "tests"
    )]

    use super::*;

    /// Records the kernel sent for Debian's TangoTest 9.3.4 started as
    /// `env -i FACTSTRY=1 TANGO_HOST=127.0.0.1:10000 [BIG=x…] /usr/lib/tango/TangoTest test`
    /// (captured again when the facts gained the network namespace).
    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/records").join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn facts(name: &str) -> CapturedFacts {
        match Record::decode(&fixture(name)) {
            Ok(Record::ProcessFacts(facts)) => *facts,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn decodes_the_facts_the_kernel_copied_from_a_tango_server() {
        let facts = facts("facts-tangotest.bin");
        assert_eq!(facts.comm, "TangoTest");
        assert_eq!(facts.parent, None);
        assert_eq!(facts.euid, Some(0));
        // The host's initial namespaces have fixed inodes.
        assert_eq!(facts.mnt_ns, Some(4_026_531_832));
        assert_eq!(facts.net_ns, Some(4_026_531_833));
        assert_eq!(facts.cmdline.bytes, b"/usr/lib/tango/TangoTest\0test\0");
        assert_eq!(facts.cmdline.len, 30);
        assert_eq!(facts.environ.bytes, b"FACTSTRY=1\0TANGO_HOST=127.0.0.1:10000\0");
        assert!(!facts.cmdline.truncated() && !facts.environ.truncated());
        assert!(!facts.cmdline.unreadable && !facts.environ.unreadable);
    }

    #[test]
    fn a_long_environment_is_a_known_truncation() {
        let facts = facts("facts-tangotest-long-environment.bin");
        assert_eq!(facts.environ.bytes.len(), MAX_ENVIRON);
        assert_eq!(facts.environ.len, 11 + 27 + 9005, "FACTSTRY=1, TANGO_HOST=…, BIG= and 9000 x");
        assert!(facts.environ.truncated());
        assert!(facts.environ.bytes.starts_with(b"FACTSTRY=1\0TANGO_HOST=127.0.0.1:10000\0BIG=xxx"));
        assert_eq!(facts.cmdline.bytes, b"/usr/lib/tango/TangoTest\0test\0");
    }

    #[test]
    fn decodes_library_paths_opened_before_and_after_omniorb() {
        let path = |name: &str| match Record::decode(&fixture(name)) {
            Ok(Record::LibraryPath { pid, path, .. }) => (pid, path),
            other => panic!("{name}: {other:?}"),
        };
        let pid = facts("facts-tangotest.bin").pid;
        assert_eq!(
            path("library-tangotest-libtango.bin"),
            (pid, "/lib/x86_64-linux-gnu/libtango.so.9".into())
        );
        assert_eq!(
            path("library-tangotest-libomniorb4.bin"),
            (pid, "/lib/x86_64-linux-gnu/libomniORB4.so.2".into())
        );
        assert_eq!(path("library-tangotest-libzmq.bin"), (pid, "/lib/x86_64-linux-gnu/libzmq.so.5".into()));
    }

    #[test]
    fn cut_records_are_refused_or_clamped_never_overread() {
        let raw = fixture("facts-tangotest.bin");
        let fixed = FACTS_RECORD_HEADER_LEN;
        assert_eq!(
            Record::decode(&raw[..fixed - 1]),
            Err(RecordError::Truncated { kind: kind::PROCESS_FACTS, len: fixed - 1 })
        );
        // Cut inside the environment: what is there, and the true length that says it is partial.
        let Ok(Record::ProcessFacts(cut)) = Record::decode(&raw[..raw.len() - 10]) else {
            panic!("a cut facts record still decodes")
        };
        assert_eq!(cut.environ.bytes, b"FACTSTRY=1\0TANGO_HOST=127.0.");
        assert!(cut.environ.truncated());
        let library = fixture("library-tangotest-libtango.bin");
        let Ok(Record::LibraryPath { path, .. }) = Record::decode(&library[..library.len() - 2]) else {
            panic!("a cut library record still decodes")
        };
        assert_eq!(path, std::path::PathBuf::from("/lib/x86_64-linux-gnu/libtango.so"));
    }

    #[test]
    fn unreadable_facts_are_marked_not_invented() {
        let mut raw = fixture("facts-tangotest.bin");
        let at = std::mem::offset_of!(FactsRecord, unreadable);
        raw[at..at + 4].copy_from_slice(
            &(unreadable::EUID | unreadable::MNT_NS | unreadable::NET_NS | unreadable::MM).to_ne_bytes(),
        );
        let Ok(Record::ProcessFacts(facts)) = Record::decode(&raw) else { panic!("decodes") };
        assert_eq!((facts.euid, facts.mnt_ns, facts.net_ns), (None, None, None));
        assert!(facts.cmdline.unreadable && facts.environ.unreadable);
        assert!(!facts.environ.truncated());
    }

    use tracer_common::MAX_CAPTURE;

    /// A data record as the probes write it: `captured` bytes of `message`.
    fn raw_data(message: &[u8], captured: usize) -> Vec<u8> {
        let record = DataRecord {
            header: RecordHeader { kind: kind::DATA, pid: 10, tid: 11, fd: 7, ts_ns: 99 },
            total_len: message.len() as u32,
            captured_len: captured as u32,
            direction: direction::RECV,
            flags: chunk::MESSAGE_START,
            peer_family: 2,
            peer_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            peer_port: 4242,
            local_port: 0,
            local_addr: 0,
            tcp_seq: 0,
            _pad2: 0,
            data: [0; MAX_CAPTURE],
        };
        record_bytes(record, &message[..captured])
    }

    /// `record` with `data` as the ring buffer carries it (fixed part, then only `data`).
    fn record_bytes(mut record: DataRecord, data: &[u8]) -> Vec<u8> {
        record.data[..data.len()].copy_from_slice(data);
        // SAFETY: a plain #[repr(C)] struct viewed as its bytes, as the ring buffer carries it.
        let bytes = unsafe {
            std::slice::from_raw_parts((&record as *const DataRecord).cast::<u8>(), size_of::<DataRecord>())
        };
        bytes[..DATA_RECORD_HEADER_LEN + data.len()].to_vec()
    }

    #[test]
    fn a_tcp_position_is_decoded_when_the_probe_marked_it() {
        let message = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tracer-wire/tests/fixtures/giop/demo-req-read_attributes_5.bin"
        ))
        .expect("fixture");
        // A client's send on 10.0.0.1:40000 → 10.0.0.2:10000 at sequence number 0xfffffff0 (it
        // wraps within the message: the assembler adds offsets modulo 2^32).
        let mut record = DataRecord {
            header: RecordHeader { kind: kind::DATA, pid: 10, tid: 11, fd: 7, ts_ns: 99 },
            total_len: message.len() as u32,
            captured_len: message.len() as u32,
            direction: direction::SEND,
            flags: chunk::MESSAGE_START | chunk::TCP_POSITION,
            peer_family: 2,
            peer_addr: u32::from_ne_bytes([10, 0, 0, 2]),
            peer_port: 10000,
            local_port: 40000,
            local_addr: u32::from_ne_bytes([10, 0, 0, 1]),
            tcp_seq: 0xffff_fff0,
            _pad2: 0,
            data: [0; MAX_CAPTURE],
        };
        let raw = record_bytes(record, &message);
        let Ok(Record::Data { direction, peer, tcp, bytes, .. }) = Record::decode(&raw) else {
            panic!("decodes")
        };
        let ends = |a: [u8; 4], port| std::net::SocketAddrV4::new(a.into(), port);
        assert_eq!(direction, Direction::Send);
        assert_eq!(peer, Peer::Inet(std::net::Ipv4Addr::new(10, 0, 0, 2), 10000));
        assert_eq!(
            tcp,
            Some(TcpPosition {
                local: ends([10, 0, 0, 1], 40000),
                remote: ends([10, 0, 0, 2], 10000),
                seq: 0xffff_fff0
            })
        );
        assert_eq!(&bytes[..], &message[..]);
        // Through the recorder's JSON lines and back.
        let line = serde_json::to_string(&Record::decode(&raw).expect("decodes")).expect("JSON");
        let back: Record<'static> = serde_json::from_str(&line).expect("from JSON");
        assert_eq!(back, Record::decode(&raw).expect("decodes"));
        // Without the flag the same fields mean nothing (a Unix socket, a kernel without the
        // tracepoints): no position, the peer as before.
        record.flags = chunk::MESSAGE_START;
        let raw = record_bytes(record, &message);
        let Ok(Record::Data { peer, tcp, .. }) = Record::decode(&raw) else { panic!("decodes") };
        assert_eq!(tcp, None);
        assert_eq!(peer, Peer::Inet(std::net::Ipv4Addr::new(10, 0, 0, 2), 10000));
        // A record recorded before positions existed reads back without one.
        let old_line =
            line.replace(&format!(",\"tcp\":{}", serde_json::to_string(&tcp_of(&back)).expect("JSON")), "");
        assert!(!old_line.contains("\"tcp\""), "{old_line}");
        let old: Record<'static> = serde_json::from_str(&old_line).expect("an old line");
        assert!(matches!(old, Record::Data { tcp: None, .. }));
    }

    fn tcp_of(record: &Record) -> Option<TcpPosition> {
        match record {
            Record::Data { tcp, .. } => *tcp,
            _ => None,
        }
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
        let Record::Data { pid, tid, fd, ts_ns, direction, total_len, bytes, peer, .. } = &record else {
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

    /// A log record as the probe writes it: the logger's name, the file's last bytes and the
    /// message's first bytes, packed; `message_len` is the message's true length.
    fn raw_log(logger: &[u8], file: Option<(&[u8], i32)>, message: &[u8], message_len: u32) -> Vec<u8> {
        use tracer_common::{LogRecord, log_flags};
        let mut record = LogRecord {
            header: RecordHeader { kind: kind::LOG, pid: 10, tid: 12, fd: -1, ts_ns: 99 },
            level: 400,
            line: 0,
            flags: 0,
            logger_len: logger.len() as u32,
            logger_captured: logger.len() as u32,
            file_len: 0,
            file_captured: 0,
            message_len,
            message_captured: message.len() as u32,
            _pad: 0,
            text: [0; MAX_LOGGER_NAME + MAX_LOG_FILE + MAX_LOG_MESSAGE],
        };
        let mut at = 0;
        record.text[..logger.len()].copy_from_slice(logger);
        at += logger.len();
        if let Some((file, line)) = file {
            record.flags |= log_flags::HAS_LOCATION;
            record.line = line;
            record.file_len = file.len() as u32;
            record.file_captured = file.len() as u32;
            record.text[at..at + file.len()].copy_from_slice(file);
            at += file.len();
        }
        record.text[at..at + message.len()].copy_from_slice(message);
        at += message.len();
        // SAFETY: a plain #[repr(C)] struct viewed as its bytes, as the ring buffer carries it.
        let bytes = unsafe {
            std::slice::from_raw_parts((&record as *const LogRecord).cast::<u8>(), size_of::<LogRecord>())
        };
        bytes[..LOG_RECORD_HEADER_LEN + at].to_vec()
    }

    #[test]
    fn log_records_borrow_their_texts_and_say_what_was_cut() {
        let raw = raw_log(b"test/logdev/1", Some((b"/srv/dev/pydev2.py", 20)), b"hello \xff", 300);
        let Ok(Record::Log(log)) = Record::decode(&raw) else { panic!("a log record") };
        assert_eq!((log.pid, log.tid, log.ts_ns, log.level, log.line), (10, 12, 99, 400, Some(20)));
        assert_eq!((&log.logger[..], &log.file[..]), (&b"test/logdev/1"[..], &b"/srv/dev/pydev2.py"[..]));
        assert_eq!(&log.message[..], b"hello \xff");
        assert!(log.truncated(), "300 bytes long, 7 copied");
        assert!(matches!(log.message, Cow::Borrowed(_)));
        let owned = Record::Log(log.clone()).into_owned();
        assert_eq!(owned, Record::Log(log));

        // cppTango 9: no location.
        let raw = raw_log(b"sys/tg_test/1", None, b"TangoTest::DevVoid()  - sys/tg_test/1", 37);
        let Ok(Record::Log(log)) = Record::decode(&raw) else { panic!("a log record") };
        assert_eq!((log.line, log.file.len(), log.truncated()), (None, 0, false));

        // Cut short by a bad length: refused below the fixed part, clamped above it.
        assert_eq!(
            Record::decode(&raw[..LOG_RECORD_HEADER_LEN - 1]),
            Err(RecordError::Truncated { kind: kind::LOG, len: LOG_RECORD_HEADER_LEN - 1 })
        );
        let Ok(Record::Log(cut)) = Record::decode(&raw[..raw.len() - 5]) else { panic!("still decodes") };
        assert_eq!(&cut.message[..], b"TangoTest::DevVoid()  - sys/tg_t");
    }

    /// A record as the libtango probe builds it: `class` then `name` in its text, only the used
    /// bytes sent.
    fn raw_user_code(point: u8, class: &[u8], name: &[u8]) -> Vec<u8> {
        let mut record = UserCodeRecord {
            header: RecordHeader { kind: kind::USER_CODE, pid: 10, tid: 12, fd: -1, ts_ns: 77 },
            point: point as u32,
            unreadable: 0,
            device: 0x7f00_1234_5678,
            class_len: class.len() as u16,
            name_len: name.len() as u16,
            flags: tracer_common::user_code::flags::TAKEN,
            text: [0; MAX_CLASS_NAME + MAX_MEMBER_NAME],
        };
        record.text[..class.len()].copy_from_slice(class);
        record.text[class.len()..class.len() + name.len()].copy_from_slice(name);
        // SAFETY: a plain #[repr(C)] struct viewed as its bytes, as the ring buffer carries it.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&record as *const UserCodeRecord).cast::<u8>(),
                size_of::<UserCodeRecord>(),
            )
        };
        bytes[..USER_CODE_RECORD_HEADER_LEN + class.len() + name.len()].to_vec()
    }

    #[test]
    fn user_code_records_carry_class_and_member_names() {
        use tracer_common::user_code::point;
        let raw = raw_user_code(point::READ_START, b"TangoTest", b"double_scalar");
        let Record::UserCode(hit) = Record::decode(&raw).unwrap() else { panic!("not a user-code record") };
        assert_eq!((hit.pid, hit.tid, hit.ts_ns, hit.point), (10, 12, 77, point::READ_START));
        assert_eq!((&hit.class[..], &hit.name[..]), (&b"TangoTest"[..], &b"double_scalar"[..]));
        assert_eq!(hit.device, 0x7f00_1234_5678);
        assert!(hit.taken);
        // An end point sends only the fixed part.
        let raw = raw_user_code(point::READ_END, b"", b"");
        assert_eq!(raw.len(), USER_CODE_RECORD_HEADER_LEN);
        let Record::UserCode(hit) = Record::decode(&raw).unwrap() else { panic!("not a user-code record") };
        assert!(hit.class.is_empty() && hit.name.is_empty());
        // A record cut inside its fixed part is refused; names past the end are clamped.
        assert!(Record::decode(&raw[..USER_CODE_RECORD_HEADER_LEN - 1]).is_err());
        let raw = raw_user_code(point::COMMAND_START, b"Demo", b"Increment");
        let Record::UserCode(hit) = Record::decode(&raw[..raw.len() - 3]).unwrap() else { panic!() };
        assert_eq!(&hit.name[..], b"Increm");
    }
}
