//! GIOP: message headers, Request/Reply headers, CORBA system exceptions, and a
//! [`MessageAssembler`] that cuts one direction of a connection into whole messages.
//!
//! GIOP 1.1+ may cut a message into fragments: the first carries the "more fragments" flag, each
//! `Fragment` message after it (GIOP 1.2: naming its request id) carries more of the body. The
//! assembler joins them into one message, as if it had been sent whole.
//!
//! Detection ([`check_payload`]) is separate from parsing ([`parse_message`]), and both tell
//! "need more bytes" ([`WireError::Incomplete`]) apart from "not GIOP"
//! ([`WireError::NotThisProtocol`]).
//!
//! omniORB sends GIOP 1.0 to `corbaloc` addresses (DB-less devices, the database object)
//! and GIOP 1.2 to objects whose IOR came from the database. It leaves padding bytes
//! uninitialised, so padding is skipped, never checked.

use std::borrow::Cow;

use crate::{WireError, cdr::CdrReader};

/// `"GIOP"`, the first four bytes of every message.
pub const MAGIC: [u8; 4] = *b"GIOP";
/// Length of the fixed message header.
pub const HEADER_LEN: usize = 12;
/// Largest body length believed: cppTango sets omniORB's `giopMaxMsgSize` to its
/// `MAX_TRANSFER_SIZE`, 256 MiB, in clients and servers, so a Tango peer refuses anything larger.
/// A header claiming more is garbage. The probes use the same limit.
pub const MAX_BODY_LEN: u32 = 256 * 1024 * 1024;
/// Length of a GIOP 1.2 `Fragment` header: the message header and the request id.
pub const FRAGMENT_HEADER_LEN_1_2: usize = HEADER_LEN + 4;
/// Fragmented messages one stream direction may have open at once (GIOP 1.2 interleaves them
/// by request id); beyond it the oldest is given up.
pub const MAX_OPEN_FRAGMENTED: usize = 16;

/// GIOP message type (header byte 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MsgType {
    Request,
    Reply,
    CancelRequest,
    LocateRequest,
    LocateReply,
    CloseConnection,
    MessageError,
    Fragment,
}

impl MsgType {
    /// The type for its wire value, if known.
    pub fn from_u8(v: u8) -> Option<MsgType> {
        Some(match v {
            0 => MsgType::Request,
            1 => MsgType::Reply,
            2 => MsgType::CancelRequest,
            3 => MsgType::LocateRequest,
            4 => MsgType::LocateReply,
            5 => MsgType::CloseConnection,
            6 => MsgType::MessageError,
            7 => MsgType::Fragment,
            _ => return None,
        })
    }

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// The 12-byte GIOP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub major: u8,
    pub minor: u8,
    pub little_endian: bool,
    /// GIOP 1.1+: more fragments of this message follow.
    pub more_fragments: bool,
    pub msg_type: MsgType,
    /// Length of the message after the header.
    pub body_len: u32,
}

impl Header {
    /// Length of the whole message, header included.
    pub fn message_len(&self) -> usize {
        HEADER_LEN + self.body_len as usize
    }
}

/// Whether `bytes` starts with a plausible GIOP header (12 bytes needed).
pub fn check_payload(bytes: &[u8]) -> bool {
    parse_header(bytes).is_ok()
}

/// Parses the 12-byte header at the start of `bytes`.
///
/// Fewer than 12 bytes that could still start a header give [`WireError::Incomplete`];
/// a wrong magic or an unknown version gives [`WireError::NotThisProtocol`].
pub fn parse_header(bytes: &[u8]) -> Result<Header, WireError> {
    // "GIOP" | major | minor | flags | type | u32 body length (in the flags' byte order)
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes.get(..magic_len) != MAGIC.get(..magic_len) {
        return Err(WireError::NotThisProtocol);
    }
    let Some(head) = bytes.first_chunk::<HEADER_LEN>() else {
        return match bytes.get(4) {
            Some(&major) if major != 1 => Err(WireError::NotThisProtocol),
            _ => Err(WireError::Incomplete),
        };
    };
    let [_, _, _, _, major, minor, flags, msg_type, l0, l1, l2, l3] = *head;
    if major != 1 || minor > 3 {
        return Err(WireError::NotThisProtocol);
    }
    // 1.0 has a boolean byte order here; 1.1+ a flags octet with two defined bits.
    let known_flags = if minor == 0 { 0x01 } else { 0x03 };
    if flags & !known_flags != 0 {
        return Err(WireError::Malformed("unknown GIOP flag bits"));
    }
    let msg_type = MsgType::from_u8(msg_type).ok_or(WireError::Malformed("unknown GIOP message type"))?;
    if minor == 0 && msg_type == MsgType::Fragment {
        return Err(WireError::Malformed("Fragment in GIOP 1.0"));
    }
    let little_endian = flags & 0x01 != 0;
    let len = [l0, l1, l2, l3];
    let body_len = if little_endian { u32::from_le_bytes(len) } else { u32::from_be_bytes(len) };
    if body_len > MAX_BODY_LEN {
        return Err(WireError::Malformed("GIOP body length over 256 MiB"));
    }
    Ok(Header { major, minor, little_endian, more_fragments: flags & 0x02 != 0, msg_type, body_len })
}

/// A Request header and the reader of its arguments.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub request_id: u32,
    /// GIOP 1.0/1.1 `response_expected`; GIOP 1.2: bit 0 of `response_flags`.
    pub response_expected: bool,
    /// The object key; empty when a GIOP 1.2 target is a profile or an IOR.
    pub object_key: &'a [u8],
    pub operation: &'a str,
    /// Positioned at the first argument (GIOP 1.2: aligned to 8).
    pub body: CdrReader<'a>,
}

/// Reply status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStatus {
    NoException,
    UserException,
    SystemException,
    LocationForward,
    LocationForwardPerm,
    NeedsAddressingMode,
    Unknown(u32),
}

impl ReplyStatus {
    fn from_u32(v: u32) -> ReplyStatus {
        match v {
            0 => ReplyStatus::NoException,
            1 => ReplyStatus::UserException,
            2 => ReplyStatus::SystemException,
            3 => ReplyStatus::LocationForward,
            4 => ReplyStatus::LocationForwardPerm,
            5 => ReplyStatus::NeedsAddressingMode,
            v => ReplyStatus::Unknown(v),
        }
    }
}

/// A Reply header and the reader of its result or exception.
#[derive(Debug, Clone)]
pub struct Reply<'a> {
    pub request_id: u32,
    pub status: ReplyStatus,
    /// Positioned at the result (GIOP 1.2: aligned to 8).
    pub body: CdrReader<'a>,
}

/// A parsed GIOP message.
#[derive(Debug, Clone)]
pub enum Message<'a> {
    Request(Request<'a>),
    Reply(Reply<'a>),
    /// A continuation of a fragmented message; GIOP 1.2 names its request.
    Fragment {
        request_id: Option<u32>,
    },
    Other(MsgType),
}

/// Parses one GIOP message, header included.
///
/// `msg` may be cut short (the tracer keeps a prefix): the Request/Reply header must be
/// present, and the returned body reader holds whatever follows it and reports
/// [`WireError::Incomplete`] when it runs out. Bytes past the header's length are ignored.
pub fn parse_message(msg: &[u8]) -> Result<(Header, Message<'_>), WireError> {
    let header = parse_header(msg)?;
    let complete = msg.len() >= header.message_len();
    let data = msg.get(..header.message_len()).unwrap_or(msg);
    let mut r = CdrReader::new(data, header.little_endian, 0);
    if complete {
        r = r.mark_complete();
    }
    r.skip(HEADER_LEN)?;
    let message = match header.msg_type {
        MsgType::Request => Message::Request(parse_request(&header, r)?),
        MsgType::Reply => Message::Reply(parse_reply(&header, r)?),
        MsgType::Fragment if header.minor >= 2 => Message::Fragment { request_id: Some(r.u32()?) },
        MsgType::Fragment => Message::Fragment { request_id: None },
        other => Message::Other(other),
    };
    Ok((header, message))
}

/// Skips a service-context list: u32 count | count × (u32 id | octet sequence).
fn skip_service_contexts(r: &mut CdrReader<'_>) -> Result<(), WireError> {
    let count = r.seq_len(8)?;
    for _ in 0..count {
        r.u32()?;
        r.octets()?;
    }
    Ok(())
}

/// Skips GIOP 1.2 padding before a body: the body starts 8-aligned, but a message without
/// a body may end before the padding.
fn align_body(r: &mut CdrReader<'_>) -> Result<(), WireError> {
    let pad = (8 - r.offset() % 8) % 8;
    if r.remaining() <= pad && !r.may_be_truncated() { r.skip(r.remaining()) } else { r.skip(pad) }
}

/// Reads the header fields after the ones a tracer needs (operation, status). A capture cut
/// there still gives the message, with an empty body reader that reports `Incomplete`.
fn header_tail<'a>(
    r: &mut CdrReader<'a>,
    tail: impl FnOnce(&mut CdrReader<'a>) -> Result<(), WireError>,
) -> Result<(), WireError> {
    match tail(r) {
        // A failed read has emptied the reader.
        Err(WireError::Incomplete) => Ok(()),
        other => other,
    }
}

/// Skips an `IOP::TaggedProfile`: u32 tag | octet sequence.
fn skip_tagged_profile(r: &mut CdrReader<'_>) -> Result<(), WireError> {
    r.u32()?;
    r.octets()?;
    Ok(())
}

fn parse_request<'a>(h: &Header, mut r: CdrReader<'a>) -> Result<Request<'a>, WireError> {
    let (request_id, response_expected, object_key, operation);
    if h.minor >= 2 {
        // u32 request_id | octet response_flags | 3 reserved | TargetAddress | operation |
        // service contexts | body aligned to 8
        request_id = r.u32()?;
        response_expected = r.u8()? & 0x01 != 0;
        r.skip(3)?;
        object_key = match r.i16()? {
            // KeyAddr: octet sequence
            0 => r.octets()?,
            // ProfileAddr: TaggedProfile
            1 => {
                skip_tagged_profile(&mut r)?;
                &[]
            }
            // ReferenceAddr: u32 selected profile | IOR (string type id | profiles)
            2 => {
                r.u32()?;
                r.string_bytes()?;
                let profiles = r.seq_len(8)?;
                for _ in 0..profiles {
                    skip_tagged_profile(&mut r)?;
                }
                &[]
            }
            _ => return Err(r.fail(WireError::Malformed("unknown TargetAddress kind"))),
        };
        operation = r.string()?;
        header_tail(&mut r, |r| {
            skip_service_contexts(r)?;
            align_body(r)
        })?;
    } else {
        // service contexts | u32 request_id | boolean response_expected
        // | 3 octets (1.0 padding, 1.1 reserved) | octet seq object_key | operation
        // | octet seq principal | body
        skip_service_contexts(&mut r)?;
        request_id = r.u32()?;
        response_expected = r.u8()? != 0;
        object_key = r.octets()?;
        operation = r.string()?;
        header_tail(&mut r, |r| r.octets().map(drop))?;
    }
    Ok(Request { request_id, response_expected, object_key, operation, body: r.rebased() })
}

fn parse_reply<'a>(h: &Header, mut r: CdrReader<'a>) -> Result<Reply<'a>, WireError> {
    let (request_id, status);
    if h.minor >= 2 {
        // u32 request_id | u32 reply_status | service contexts | body aligned to 8
        request_id = r.u32()?;
        status = ReplyStatus::from_u32(r.u32()?);
        header_tail(&mut r, |r| {
            skip_service_contexts(r)?;
            align_body(r)
        })?;
    } else {
        // service contexts | u32 request_id | u32 reply_status | body
        skip_service_contexts(&mut r)?;
        request_id = r.u32()?;
        status = ReplyStatus::from_u32(r.u32()?);
    }
    Ok(Reply { request_id, status, body: r.rebased() })
}

/// `CORBA::CompletionStatus` of a system exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionStatus {
    Yes,
    No,
    Maybe,
    Unknown(u32),
}

/// A CORBA system exception, the body of a `SYSTEM_EXCEPTION` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemException<'a> {
    /// E.g. `IDL:omg.org/CORBA/OBJECT_NOT_EXIST:1.0`.
    pub repository_id: &'a str,
    /// Vendor minor code (omniORB's start with `0x4f4d` "OM").
    pub minor: u32,
    pub completed: CompletionStatus,
}

impl SystemException<'_> {
    /// The exception name (`OBJECT_NOT_EXIST`) from the repository id.
    pub fn name(&self) -> &str {
        let id = self.repository_id;
        let id = id.strip_suffix(":1.0").unwrap_or(id);
        id.rsplit('/').next().unwrap_or(id)
    }
}

/// Parses the body of a `SYSTEM_EXCEPTION` reply.
pub fn parse_system_exception(mut body: CdrReader<'_>) -> Result<SystemException<'_>, WireError> {
    // string exception id | u32 minor | u32 completion status
    let repository_id = body.string()?;
    let minor = body.u32()?;
    let completed = match body.u32()? {
        0 => CompletionStatus::Yes,
        1 => CompletionStatus::No,
        2 => CompletionStatus::Maybe,
        v => CompletionStatus::Unknown(v),
    };
    Ok(SystemException { repository_id, minor, completed })
}

/// One whole GIOP message cut out of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssembledMessage {
    /// The message's first bytes, header included: at most `max_keep`, and fewer when
    /// part of the message was not captured.
    pub bytes: Vec<u8>,
    /// Length of the whole message on the wire.
    pub total_len: usize,
    /// Every byte of the message was captured (even if `bytes` keeps only a prefix).
    pub complete_capture: bool,
    /// Where the message's first byte is in the stream: bytes pushed into the assembler before
    /// it (for a fragmented message, before its first part).
    pub stream_start: u64,
}

/// One whole GIOP message cut out of a stream, borrowed from the chunk that holds it whole
/// (see [`MessageAssembler::next_message`]). The fields mean what [`AssembledMessage`]'s do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef<'a> {
    pub bytes: Cow<'a, [u8]>,
    pub total_len: usize,
    pub complete_capture: bool,
    pub stream_start: u64,
}

impl MessageRef<'_> {
    /// The message with its bytes owned.
    pub fn into_owned(self) -> AssembledMessage {
        AssembledMessage {
            bytes: self.bytes.into_owned(),
            total_len: self.total_len,
            complete_capture: self.complete_capture,
            stream_start: self.stream_start,
        }
    }
}

impl From<AssembledMessage> for MessageRef<'_> {
    fn from(message: AssembledMessage) -> Self {
        MessageRef {
            bytes: Cow::Owned(message.bytes),
            total_len: message.total_len,
            complete_capture: message.complete_capture,
            stream_start: message.stream_start,
        }
    }
}

/// Where [`MessageAssembler::next_message`] is in the chunk [`MessageAssembler::feed`] started.
#[derive(Debug)]
pub struct Feed {
    /// Offset of the next byte to assemble.
    at: usize,
    /// Bytes that moved in the chunk, captured or not.
    total: usize,
    /// Stream position of the chunk's first byte.
    base: u64,
}

impl Feed {
    /// Whether every byte of the chunk has been assembled: no message is left in it.
    pub fn is_done(&self) -> bool {
        self.at >= self.total
    }
}

/// Counters of a [`MessageAssembler`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AssemblerStats {
    /// Messages returned.
    pub messages: u64,
    /// Bytes that moved on the wire but were not captured.
    pub missing_bytes: u64,
    /// Bytes dropped while looking for the next message start.
    pub discarded_bytes: u64,
    /// Times the assembler lost track of message boundaries.
    pub resyncs: u64,
    /// Messages returned that were joined from fragments.
    pub joined: u64,
    /// Fragments that continued no open message (its start was lost), dropped.
    pub orphan_fragments: u64,
    /// Fragmented messages given up unfinished (over [`MAX_OPEN_FRAGMENTED`]).
    pub abandoned_fragmented: u64,
}

/// A message whose fragments are still coming.
#[derive(Debug)]
struct Fragmented {
    /// GIOP 1.2: the request id the fragments name; `None` for 1.1 (no interleaving).
    request_id: Option<u32>,
    /// The first message's kept bytes, header included, then the bodies of its fragments.
    bytes: Vec<u8>,
    /// Header and joined bodies so far.
    total_len: usize,
    complete_capture: bool,
    stream_start: u64,
}

#[derive(Debug)]
struct Partial {
    bytes: Vec<u8>,
    total_len: usize,
    /// Bytes of the message that have gone by, captured or not.
    seen: usize,
    complete_capture: bool,
    stream_start: u64,
}

/// Cuts the bytes of one connection direction into GIOP messages.
///
/// Feed it every `send`/`recv` in order with [`push`](Self::push). It handles several
/// messages in one chunk, messages (and headers) split over chunks, chunks of which only a
/// prefix was captured (the uncaptured bytes are counted and skipped; the message boundary
/// is kept from the lengths), and garbage: when it cannot tell where a message starts it
/// drops bytes until a chunk starts with `GIOP`.
#[derive(Debug)]
pub struct MessageAssembler {
    max_keep: usize,
    header: [u8; HEADER_LEN],
    header_len: usize,
    current: Option<Partial>,
    /// Messages waiting for more fragments, oldest first.
    fragmented: Vec<Fragmented>,
    resync: bool,
    /// Bytes pushed so far, captured or not.
    pushed: u64,
    stats: AssemblerStats,
}

impl MessageAssembler {
    /// An assembler keeping at most `max_keep` bytes of each message.
    pub fn new(max_keep: usize) -> Self {
        MessageAssembler {
            max_keep,
            header: [0; HEADER_LEN],
            header_len: 0,
            current: None,
            fragmented: Vec::new(),
            resync: false,
            pushed: 0,
            stats: AssemblerStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> AssemblerStats {
        self.stats
    }

    /// Bytes pushed so far, captured or not: the stream position of the next chunk.
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    /// Forgets any partial message (e.g. when the connection is reused).
    pub fn reset(&mut self) {
        self.header_len = 0;
        self.current = None;
        self.fragmented.clear();
        self.resync = false;
    }

    /// True when a message, a header or a fragmented message has started and not finished.
    pub fn in_message(&self) -> bool {
        self.current.is_some() || self.header_len > 0 || !self.fragmented.is_empty()
    }

    fn lose_sync(&mut self) {
        self.header_len = 0;
        self.current = None;
        self.resync = true;
        self.stats.resyncs += 1;
    }

    /// Feeds one chunk: `captured` holds the first bytes of the `total_len` bytes that moved.
    /// Whole messages are appended to `out`.
    pub fn push(&mut self, captured: &[u8], total_len: usize, out: &mut Vec<AssembledMessage>) {
        let mut feed = self.feed(captured, total_len);
        while let Some(message) = self.next_message(&mut feed, captured) {
            out.push(message.into_owned());
        }
    }

    /// Starts feeding one chunk: `captured` holds the first bytes of the `total_len` bytes that
    /// moved. Take its whole messages with [`next_message`](Self::next_message) until `None`;
    /// bytes not taken are not assembled.
    pub fn feed(&mut self, captured: &[u8], total_len: usize) -> Feed {
        let total = total_len.max(captured.len());
        let base = self.pushed;
        self.pushed += total as u64;
        let mut at = 0;
        if self.resync {
            if captured.starts_with(&MAGIC) {
                self.resync = false;
            } else {
                self.stats.discarded_bytes += total as u64;
                at = total;
            }
        }
        Feed { at, total, base }
    }

    /// The next whole message of the chunk [`feed`](Self::feed) started (`captured` is the
    /// same chunk). A message that lies whole in the chunk, as most do, is borrowed from it;
    /// one that spans chunks or fragments was kept in the assembler and is handed over.
    pub fn next_message<'a>(&mut self, feed: &mut Feed, captured: &'a [u8]) -> Option<MessageRef<'a>> {
        let total = feed.total;
        while feed.at < total {
            let p = feed.at;
            if let Some(cur) = self.current.as_mut() {
                let n = (cur.total_len - cur.seen).min(total - p);
                let known = captured.get(p..(p + n).min(captured.len())).unwrap_or_default();
                let room = self.max_keep.saturating_sub(cur.bytes.len());
                if cur.complete_capture {
                    cur.bytes.extend_from_slice(known.get(..room.min(known.len())).unwrap_or_default());
                }
                // Bytes past what is kept need not be captured (the probes copy a message's
                // first bytes only); those that would have been kept are missing.
                if known.len() < n.min(room) {
                    // Later bytes of this message would land at the wrong place: stop keeping.
                    cur.complete_capture = false;
                    self.stats.missing_bytes += (n.min(room) - known.len()) as u64;
                }
                cur.seen += n;
                feed.at += n;
                if cur.seen == cur.total_len
                    && let Some(message) = self.finish()
                {
                    return Some(message.into());
                }
                continue;
            }
            // Between messages: collect a 12-byte header.
            let Some(avail) = captured.get(p..).filter(|a| !a.is_empty()) else {
                // The next header was not captured: boundaries are lost.
                self.stats.missing_bytes += (total - p) as u64;
                self.lose_sync();
                feed.at = total;
                return None;
            };
            if self.header_len == 0
                && let Some(message) = self.whole_in_chunk(feed, avail)
            {
                return Some(message);
            }
            let take = (HEADER_LEN - self.header_len).min(avail.len());
            if let (Some(dst), Some(src)) =
                (self.header.get_mut(self.header_len..self.header_len + take), avail.get(..take))
            {
                dst.copy_from_slice(src);
            }
            let had = self.header_len;
            self.header_len += take;
            let header = self.header.get(..self.header_len).unwrap_or_default();
            match parse_header(header) {
                Ok(h) => {
                    let keep = HEADER_LEN.min(self.max_keep);
                    // Room for what is kept, as far as this chunk shows it exists.
                    let room = h.message_len().min(self.max_keep).min(had + avail.len());
                    let mut bytes = Vec::with_capacity(room);
                    bytes.extend_from_slice(self.header.get(..keep).unwrap_or_default());
                    self.current = Some(Partial {
                        bytes,
                        total_len: h.message_len(),
                        seen: HEADER_LEN,
                        complete_capture: true,
                        stream_start: (feed.base + p as u64).saturating_sub(had as u64),
                    });
                    self.header_len = 0;
                    feed.at += take;
                    if h.body_len == 0
                        && let Some(message) = self.finish()
                    {
                        return Some(message.into());
                    }
                }
                Err(WireError::Incomplete) => feed.at += take,
                Err(_) => {
                    self.stats.discarded_bytes += (had + total - p) as u64;
                    self.lose_sync();
                    feed.at = total;
                    return None;
                }
            }
        }
        None
    }

    /// A message that starts at the feed's position and whose kept bytes are all captured in
    /// this chunk, unless it is a fragment or fragmented: borrowed, nothing copied.
    fn whole_in_chunk<'a>(&mut self, feed: &mut Feed, avail: &'a [u8]) -> Option<MessageRef<'a>> {
        let h = parse_header(avail).ok()?;
        let len = h.message_len();
        if h.msg_type == MsgType::Fragment || h.more_fragments || len > feed.total - feed.at {
            return None;
        }
        let bytes = avail.get(..len.min(self.max_keep))?;
        let stream_start = feed.base + feed.at as u64;
        feed.at += len;
        self.stats.messages += 1;
        Some(MessageRef { bytes: Cow::Borrowed(bytes), total_len: len, complete_capture: true, stream_start })
    }

    /// The message just completed, unless it is fragmented and waits for more fragments.
    fn finish(&mut self) -> Option<AssembledMessage> {
        let cur = self.current.take()?;
        let message = AssembledMessage {
            bytes: cur.bytes,
            total_len: cur.total_len,
            complete_capture: cur.complete_capture,
            stream_start: cur.stream_start,
        };
        // The header was whole when the message started, so at least its kept part is here.
        match message.bytes.first_chunk::<HEADER_LEN>().map(|h| parse_header(h)) {
            Some(Ok(h)) if h.msg_type == MsgType::Fragment => self.continue_fragmented(&h, message),
            Some(Ok(h)) if h.more_fragments => {
                self.open_fragmented(&h, message);
                None
            }
            _ => Some(self.emit(message)),
        }
    }

    fn emit(&mut self, message: AssembledMessage) -> AssembledMessage {
        self.stats.messages += 1;
        message
    }

    /// The first part of a fragmented message: kept until its last fragment.
    fn open_fragmented(&mut self, header: &Header, message: AssembledMessage) {
        // GIOP 1.2 Request, Reply, LocateRequest and LocateReply start with the request id.
        let request_id =
            if header.minor >= 2 { request_id_at(&message.bytes, HEADER_LEN, header) } else { None };
        if header.minor >= 2 && request_id.is_none() {
            // Too little captured to tell which fragments belong to it.
            self.stats.abandoned_fragmented += 1;
            return;
        }
        if self.fragmented.len() >= MAX_OPEN_FRAGMENTED {
            self.fragmented.remove(0);
            self.stats.abandoned_fragmented += 1;
        }
        self.fragmented.push(Fragmented {
            request_id,
            bytes: message.bytes,
            total_len: message.total_len,
            complete_capture: message.complete_capture,
            stream_start: message.stream_start,
        });
    }

    /// A `Fragment`: its body continues the open message it names (GIOP 1.2) or the open one
    /// (GIOP 1.1); the last one completes it.
    fn continue_fragmented(
        &mut self,
        header: &Header,
        fragment: AssembledMessage,
    ) -> Option<AssembledMessage> {
        let (index, body_at) = if header.minor >= 2 {
            let id = request_id_at(&fragment.bytes, HEADER_LEN, header);
            let index = id.and_then(|id| self.fragmented.iter().position(|f| f.request_id == Some(id)));
            (index, FRAGMENT_HEADER_LEN_1_2)
        } else {
            (self.fragmented.iter().position(|f| f.request_id.is_none()), HEADER_LEN)
        };
        let Some(index) = index else {
            self.stats.orphan_fragments += 1;
            return None;
        };
        let open = self.fragmented.get_mut(index)?;
        let body_len = fragment.total_len.saturating_sub(body_at);
        if open.complete_capture && open.bytes.len() == open.total_len {
            // Everything so far is kept: the fragment's body goes right after it.
            let body = fragment.bytes.get(body_at..).unwrap_or_default();
            let room = self.max_keep.saturating_sub(open.bytes.len());
            open.bytes.extend_from_slice(body.get(..room.min(body.len())).unwrap_or_default());
            if body.len() < body_len.min(room) {
                open.complete_capture = false;
            }
        }
        open.complete_capture &= fragment.complete_capture;
        open.total_len += body_len;
        if header.more_fragments {
            return None;
        }
        let open = self.fragmented.remove(index);
        let mut bytes = open.bytes;
        // The joined message reads as if sent whole: no "more fragments", the joined length.
        if let Some(head) = bytes.first_chunk_mut::<HEADER_LEN>() {
            head[6] &= !0x02;
            let body_len = u32::try_from(open.total_len - HEADER_LEN).unwrap_or(u32::MAX);
            let little_endian = head[6] & 0x01 != 0;
            let len = if little_endian { body_len.to_le_bytes() } else { body_len.to_be_bytes() };
            head[8..].copy_from_slice(&len);
        }
        self.stats.joined += 1;
        Some(self.emit(AssembledMessage {
            bytes,
            total_len: open.total_len,
            complete_capture: open.complete_capture,
            stream_start: open.stream_start,
        }))
    }
}

/// The u32 at `at` in `bytes`, in the header's byte order.
fn request_id_at(bytes: &[u8], at: usize, header: &Header) -> Option<u32> {
    let raw = *bytes.get(at..)?.first_chunk::<4>()?;
    Some(if header.little_endian { u32::from_le_bytes(raw) } else { u32::from_be_bytes(raw) })
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

    /// A GIOP 1.0 `ping` request from PyTango 10.3.1 to the DB-less device `test/demo/1`.
    const PING_1_0: [u8; 56] = [
        b'G', b'I', b'O', b'P', 0x01, 0x00, // GIOP 1.0
        0x01, // little-endian
        0x00, // Request
        0x2c, 0x00, 0x00, 0x00, // body: 44 bytes
        0x00, 0x00, 0x00, 0x00, // service contexts: none
        0x08, 0x00, 0x00, 0x00, // request id 8
        0x01, 0x30, 0x30, 0x30, // response expected, 3 padding bytes ('0')
        0x0b, 0x00, 0x00, 0x00, b't', b'e', b's', b't', b'/', b'd', b'e', b'm', b'o', b'/',
        b'1', // object key (11)
        0x75, // padding ('u')
        0x05, 0x00, 0x00, 0x00, b'p', b'i', b'n', b'g', 0x00, // operation "ping"
        0x65, 0x78, 0x69, // padding ("exi")
        0x00, 0x00, 0x00, 0x00, // principal: empty
    ];

    /// The GIOP 1.2 `_non_existent` request omniORB sends first on a connection to a device
    /// whose IOR came from the database: a transient object key and the codeset context.
    const NON_EXISTENT_1_2: [u8; 88] = [
        b'G', b'I', b'O', b'P', 0x01, 0x02, // GIOP 1.2
        0x01, 0x00, // little-endian, Request
        0x4c, 0x00, 0x00, 0x00, // body: 76 bytes
        0x02, 0x00, 0x00, 0x00, // request id 2
        0x03, 0x00, 0x00, 0x00, // response flags 3, reserved
        0x00, 0x00, // TargetAddress: KeyAddr
        0x30, 0x30, // padding
        0x0e, 0x00, 0x00, 0x00, 0xfe, 0x52, 0x53, 0x01, 0x6b, 0x00, 0x00, 0x23, 0xf2, 0x00, 0x00, 0x00, 0x00,
        0x00, // 14-byte transient POA key
        0x2f, 0x73, // padding
        0x0e, 0x00, 0x00, 0x00, b'_', b'n', b'o', b'n', b'_', b'e', b'x', b'i', b's', b't', b'e', b'n', b't',
        0x00, // operation
        0x32, 0x3a, // padding
        0x01, 0x00, 0x00, 0x00, // one service context
        0x01, 0x00, 0x00, 0x00, // id 1: CodeSets
        0x0c, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x09, 0x01, 0x01,
        0x00, // encapsulation: LE, char ISO-8859-1, wchar UTF-16
    ];

    #[test]
    fn header_fields() {
        let h = parse_header(&PING_1_0).expect("header");
        assert_eq!((h.major, h.minor, h.little_endian), (1, 0, true));
        assert_eq!(h.msg_type, MsgType::Request);
        assert_eq!(h.message_len(), PING_1_0.len());
        assert!(check_payload(&PING_1_0));
    }

    #[test]
    fn header_errors() {
        assert_eq!(parse_header(b"GIO"), Err(WireError::Incomplete));
        assert_eq!(parse_header(b"GIOP\x01\x00"), Err(WireError::Incomplete));
        assert_eq!(parse_header(b"HTTP/1.1 200"), Err(WireError::NotThisProtocol));
        assert_eq!(parse_header(b"GIOP\x02\x00\x00\x00\0\0\0\0"), Err(WireError::NotThisProtocol));
        assert!(matches!(parse_header(b"GIOP\x01\x02\x00\x09\0\0\0\0"), Err(WireError::Malformed(_))));
        assert!(!check_payload(b"GIOP"));
    }

    #[test]
    fn request_1_0() {
        let (_, m) = parse_message(&PING_1_0).expect("parse");
        let Message::Request(r) = m else { panic!("not a request") };
        assert_eq!(r.request_id, 8);
        assert!(r.response_expected);
        assert_eq!(r.object_key, b"test/demo/1");
        assert_eq!(r.operation, "ping");
        assert!(r.body.is_empty());
    }

    #[test]
    fn request_1_2_with_codeset_context() {
        let (h, m) = parse_message(&NON_EXISTENT_1_2).expect("parse");
        assert_eq!(h.minor, 2);
        let Message::Request(r) = m else { panic!("not a request") };
        assert_eq!(r.request_id, 2);
        assert_eq!(r.object_key.len(), 14);
        assert_eq!(r.operation, "_non_existent");
        assert!(r.body.is_empty());
    }

    #[test]
    fn truncated_body_still_gives_header() {
        let (_, m) = parse_message(&PING_1_0[..50]).expect("parse");
        let Message::Request(r) = m else { panic!("not a request") };
        assert_eq!(r.operation, "ping");
        assert_eq!(parse_message(&PING_1_0[..30]).err(), Some(WireError::Incomplete));
    }

    #[test]
    fn big_endian_reply() {
        // A GIOP 1.2 big-endian reply with an empty body, as a big-endian ORB sends it.
        let msg = [
            b'G', b'I', b'O', b'P', 1, 2, 0x00, 0x01, // BE Reply
            0, 0, 0, 12, // body 12
            0, 0, 0, 7, // request id 7
            0, 0, 0, 0, // NO_EXCEPTION
            0, 0, 0, 0, // no service contexts
        ];
        let (h, m) = parse_message(&msg).expect("parse");
        assert!(!h.little_endian);
        let Message::Reply(r) = m else { panic!("not a reply") };
        assert_eq!((r.request_id, r.status), (7, ReplyStatus::NoException));
    }

    #[test]
    fn assembler_header_split_and_two_in_one() {
        let mut a = MessageAssembler::new(4096);
        let mut out = Vec::new();
        let mut stream = PING_1_0.to_vec();
        stream.extend_from_slice(&NON_EXISTENT_1_2);
        a.push(&stream[..5], 5, &mut out);
        a.push(&stream[5..60], 55, &mut out);
        assert_eq!(out.len(), 1);
        a.push(&stream[60..], stream.len() - 60, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].bytes, PING_1_0);
        assert_eq!(out[1].bytes, NON_EXISTENT_1_2);
        assert!(out.iter().all(|m| m.complete_capture));
    }

    #[test]
    fn messages_whole_in_a_chunk_are_borrowed_others_handed_over() {
        let mut a = MessageAssembler::new(40);
        // One whole message (kept to 40 bytes), then the first 30 bytes of the next.
        let mut chunk = PING_1_0.to_vec();
        chunk.extend_from_slice(&NON_EXISTENT_1_2[..30]);
        let mut feed = a.feed(&chunk, chunk.len());
        let first = a.next_message(&mut feed, &chunk).expect("the whole message");
        assert!(matches!(first.bytes, Cow::Borrowed(_)));
        assert_eq!(first.bytes, &PING_1_0[..40]);
        assert_eq!((first.total_len, first.complete_capture, first.stream_start), (56, true, 0));
        assert!(a.next_message(&mut feed, &chunk).is_none());
        assert!(a.in_message());
        // The rest arrives, only its first 10 bytes captured: the kept 40 were all seen.
        let rest = &NON_EXISTENT_1_2[30..];
        let mut feed = a.feed(&rest[..10], rest.len());
        let second = a.next_message(&mut feed, &rest[..10]).expect("the split message");
        assert!(matches!(second.bytes, Cow::Owned(_)));
        assert_eq!(second.bytes, &NON_EXISTENT_1_2[..40]);
        assert_eq!((second.total_len, second.complete_capture, second.stream_start), (88, true, 56));
        assert!(a.next_message(&mut feed, &rest[..10]).is_none());
        assert_eq!(a.stats().messages, 2);
    }

    #[test]
    fn assembler_uncaptured_tail_and_garbage() {
        let mut a = MessageAssembler::new(4096);
        let mut out = Vec::new();
        // Only 20 of 56 bytes captured; the boundary is kept from the header's length.
        a.push(&PING_1_0[..20], PING_1_0.len(), &mut out);
        assert_eq!(out.len(), 1);
        assert!(!out[0].complete_capture);
        assert_eq!(out[0].bytes, PING_1_0[..20]);
        assert_eq!(a.stats().missing_bytes, 36);
        // Garbage: dropped until a chunk starts with GIOP.
        a.push(b"garbage", 7, &mut out);
        a.push(&PING_1_0[3..], PING_1_0.len() - 3, &mut out);
        a.push(&PING_1_0, PING_1_0.len(), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].bytes, PING_1_0);
        // The header itself was not captured: boundaries are lost until the next GIOP.
        a.push(&[], 100, &mut out);
        assert_eq!(a.stats().resyncs, 2);
    }

    #[test]
    fn assembler_keeps_prefix() {
        let mut a = MessageAssembler::new(16);
        let mut out = Vec::new();
        a.push(&PING_1_0, PING_1_0.len(), &mut out);
        assert_eq!(out[0].bytes, PING_1_0[..16]);
        assert_eq!(out[0].total_len, 56);
        assert!(out[0].complete_capture);
    }

    /// omniORB 4.3.4's answer to a GIOP 1.2 `command_inout_4("Echo", <20,007 characters>)`
    /// (request id 10): a Reply with "more fragments" (body 8,180 bytes), a Fragment (8,180),
    /// the last Fragment (3,680). Captured from the socket, as read.
    const FRAGMENTED_REPLY: &[u8] =
        include_bytes!("../tests/fixtures/giop-fragmented/giop12-rep-command_inout_4-echo-20k.bin");
    /// The request it answers.
    const FRAGMENTED_REQUEST: &[u8] =
        include_bytes!("../tests/fixtures/giop/giop12-req-command_inout_4-echo-20k.bin");

    /// The message lengths inside a byte stream.
    fn message_lengths(stream: &[u8]) -> Vec<usize> {
        let mut lengths = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let len = parse_header(&stream[at..]).expect("header").message_len();
            lengths.push(len);
            at += len;
        }
        lengths
    }

    /// The Echo argument (a string in an Any) of the request, and the reply's result.
    fn echoed(message: &[u8]) -> String {
        let (_, m) = parse_message(message).expect("parse");
        let mut body = match m {
            Message::Request(r) => {
                let mut body = r.body;
                assert_eq!(body.string().expect("command name"), "Echo");
                body
            }
            Message::Reply(r) => {
                assert_eq!((r.request_id, r.status), (10, ReplyStatus::NoException));
                r.body
            }
            other => panic!("{other:?}"),
        };
        // Any: TypeCode tk_string (18), bound 0, then the string.
        assert_eq!((body.u32().expect("kind"), body.u32().expect("bound")), (18, 0));
        body.string().expect("echoed string").to_string()
    }

    #[test]
    fn fragments_are_joined_into_the_message_sent_whole() {
        assert_eq!(message_lengths(FRAGMENTED_REPLY), [8192, 8192, 3692]);
        let mut a = MessageAssembler::new(64 * 1024);
        let mut out = Vec::new();
        a.push(FRAGMENTED_REPLY, FRAGMENTED_REPLY.len(), &mut out);
        assert_eq!(out.len(), 1);
        let joined = &out[0];
        // Header and first body, then each fragment's body after its 16-byte header.
        assert_eq!(joined.total_len, 8192 + (8192 - 16) + (3692 - 16));
        assert_eq!(joined.bytes.len(), joined.total_len);
        assert!(joined.complete_capture);
        let h = parse_header(&joined.bytes).expect("header");
        assert!(!h.more_fragments);
        assert_eq!(h.message_len(), joined.total_len);
        // CDR alignment survives the joining: the reply carries exactly what was sent.
        let sent = echoed(FRAGMENTED_REQUEST);
        assert_eq!(sent.len(), 20_007);
        assert_eq!(echoed(&joined.bytes), sent);
        assert_eq!((a.stats().messages, a.stats().joined), (1, 1));
        assert!(!a.in_message());
    }

    #[test]
    fn fragments_captured_as_prefixes_still_join() {
        // The probes report each fragment as one record, its first 2 KiB captured.
        let keep = 2048;
        let mut a = MessageAssembler::new(keep);
        let mut out = Vec::new();
        let mut at = 0;
        for len in message_lengths(FRAGMENTED_REPLY) {
            let message = &FRAGMENTED_REPLY[at..at + len];
            a.push(&message[..keep.min(len)], len, &mut out);
            at += len;
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].total_len, 20_044);
        assert_eq!(out[0].bytes, {
            let mut head = FRAGMENTED_REPLY[..keep].to_vec();
            head[6] = 0x01;
            head[8..12].copy_from_slice(&20_032u32.to_le_bytes());
            head
        });
        let (_, m) = parse_message(&out[0].bytes).expect("parse");
        assert!(matches!(m, Message::Reply(Reply { request_id: 10, .. })));
        assert_eq!(a.stats().missing_bytes, 0, "bytes past what is kept are not missing");
    }

    #[test]
    fn interleaved_fragmented_messages_join_by_request_id() {
        let lengths = message_lengths(FRAGMENTED_REPLY);
        let parts: Vec<&[u8]> = {
            let mut at = 0;
            lengths
                .iter()
                .map(|&len| {
                    at += len;
                    &FRAGMENTED_REPLY[at - len..at]
                })
                .collect()
        };
        // The same reply for request 11, its parts interleaved with those of request 10.
        let renumbered: Vec<Vec<u8>> = parts
            .iter()
            .map(|p| {
                let mut p = p.to_vec();
                p[12..16].copy_from_slice(&11u32.to_le_bytes());
                p
            })
            .collect();
        let mut a = MessageAssembler::new(64 * 1024);
        let mut out = Vec::new();
        for (ten, eleven) in parts.iter().zip(&renumbered) {
            a.push(ten, ten.len(), &mut out);
            a.push(eleven, eleven.len(), &mut out);
        }
        assert_eq!(out.len(), 2);
        assert_eq!(echoed(&out[0].bytes), echoed(FRAGMENTED_REQUEST));
        let (_, m) = parse_message(&out[1].bytes).expect("parse");
        assert!(matches!(m, Message::Reply(Reply { request_id: 11, .. })));
        assert_eq!(out[1].bytes[16..], out[0].bytes[16..]);
    }

    #[test]
    fn fragments_without_their_start_are_counted_and_dropped() {
        let first = message_lengths(FRAGMENTED_REPLY)[0];
        let rest = &FRAGMENTED_REPLY[first..];
        let mut a = MessageAssembler::new(64 * 1024);
        let mut out = Vec::new();
        a.push(rest, rest.len(), &mut out);
        assert!(out.is_empty());
        assert_eq!(a.stats().orphan_fragments, 2);
        // The stream itself stays in sync: the next message comes out.
        a.push(&PING_1_0, PING_1_0.len(), &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn open_fragmented_messages_are_bounded() {
        let first = message_lengths(FRAGMENTED_REPLY)[0];
        let mut a = MessageAssembler::new(64);
        let mut out = Vec::new();
        for id in 0..MAX_OPEN_FRAGMENTED as u32 + 3 {
            let mut start = FRAGMENTED_REPLY[..first].to_vec();
            start[12..16].copy_from_slice(&id.to_le_bytes());
            a.push(&start[..64], first, &mut out);
        }
        assert!(out.is_empty());
        assert_eq!(a.stats().abandoned_fragmented, 3);
        a.reset();
        assert!(!a.in_message());
    }

    #[test]
    fn body_length_over_the_maximum_is_garbage() {
        let mut head = *b"GIOP\x01\x02\x01\x00\0\0\0\0";
        head[8..].copy_from_slice(&MAX_BODY_LEN.to_le_bytes());
        assert_eq!(parse_header(&head).map(|h| h.body_len), Ok(MAX_BODY_LEN));
        head[8..].copy_from_slice(&(MAX_BODY_LEN + 1).to_le_bytes());
        assert!(matches!(parse_header(&head), Err(WireError::Malformed(_))));
        // The assembler does not wait for gigabytes: it resynchronises.
        let mut a = MessageAssembler::new(4096);
        let mut out = Vec::new();
        a.push(&head, 1 << 20, &mut out);
        a.push(&PING_1_0, PING_1_0.len(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(a.stats().resyncs, 1);
    }

    #[test]
    fn system_exception_name() {
        let e = SystemException {
            repository_id: "IDL:omg.org/CORBA/OBJECT_NOT_EXIST:1.0",
            minor: 0,
            completed: CompletionStatus::No,
        };
        assert_eq!(e.name(), "OBJECT_NOT_EXIST");
    }
}
