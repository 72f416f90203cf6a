//! ZMTP 3 framing and Tango's ZeroMQ event messages.
//!
//! libzmq writes a 64-byte greeting (often in three `send`s: the 10-byte signature, the
//! major version, the rest), command frames (`READY`, and in 3.1 `SUBSCRIBE`/`CANCEL`), then
//! message frames. One `send` may carry several whole multipart messages.
//!
//! A Tango event is a multipart message of four frames: the topic
//! (`tango://host:port/dev/attr.idl5_change`), one byte-order octet, a CDR `ZmqCallInfo`,
//! and the CDR value. Both CDR frames align from their own first byte.

use crate::{WireError, cdr::CdrReader};

/// Length of the ZMTP 3 greeting.
pub const GREETING_LEN: usize = 64;

/// Marker cppTango puts before the CDR value of an event.
pub const VALUE_MARKER: [u8; 4] = [0xc0, 0xde, 0xc0, 0xde];

/// Whether `bytes` starts with (a prefix of) a ZMTP 3 greeting: `0xff`, 8 bytes, `0x7f`.
pub fn check_payload(bytes: &[u8]) -> bool {
    match (bytes.first(), bytes.get(9)) {
        (Some(0xff), Some(0x7f)) => bytes.get(10).is_none_or(|&major| major >= 3),
        _ => false,
    }
}

/// A ZMTP 3 greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greeting<'a> {
    pub major: u8,
    pub minor: u8,
    /// `NULL`, `PLAIN` or `CURVE`.
    pub mechanism: &'a str,
    pub as_server: bool,
}

/// Parses a greeting and returns the bytes after it.
pub fn parse_greeting(bytes: &[u8]) -> Result<(Greeting<'_>, &[u8]), WireError> {
    // 0xff | 8 padding | 0x7f | major | minor | mechanism[20] | as-server | filler[31]
    if !check_payload(bytes) {
        return match bytes.first() {
            Some(0xff) if bytes.len() < 10 => Err(WireError::Incomplete),
            _ => Err(WireError::NotThisProtocol),
        };
    }
    let (Some(head), Some(rest)) = (bytes.get(..GREETING_LEN), bytes.get(GREETING_LEN..)) else {
        return Err(WireError::Incomplete);
    };
    let field = |range: std::ops::Range<usize>| head.get(range).unwrap_or_default();
    let mechanism = field(12..32);
    let mechanism = mechanism.split(|&b| b == 0).next().unwrap_or_default();
    let greeting = Greeting {
        major: field(10..11).first().copied().unwrap_or_default(),
        minor: field(11..12).first().copied().unwrap_or_default(),
        mechanism: std::str::from_utf8(mechanism)
            .map_err(|_| WireError::Malformed("ZMTP mechanism is not text"))?,
        as_server: field(32..33).first() == Some(&1),
    };
    Ok((greeting, rest))
}

/// One ZMTP frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// More frames of this message follow.
    pub more: bool,
    /// A command frame (READY, SUBSCRIBE, …) rather than a message frame.
    pub command: bool,
    pub body: &'a [u8],
}

/// A command frame's name and data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command<'a> {
    pub name: &'a str,
    pub data: &'a [u8],
}

impl<'a> Frame<'a> {
    /// The command in a command frame.
    pub fn as_command(&self) -> Option<Command<'a>> {
        // u8 name length | name | data
        let (&len, rest) = self.body.split_first()?;
        let name = rest.get(..usize::from(len))?;
        Some(Command { name: std::str::from_utf8(name).ok()?, data: rest.get(usize::from(len)..)? })
    }
}

/// Parses one frame and returns the bytes after it.
pub fn parse_frame(bytes: &[u8]) -> Result<(Frame<'_>, &[u8]), WireError> {
    // flags (bit 0 MORE, bit 1 LONG, bit 2 COMMAND) | size (u8, or u64 BE if LONG) | body
    let (&flags, rest) = bytes.split_first().ok_or(WireError::Incomplete)?;
    if flags & !0x07 != 0 {
        return Err(WireError::NotThisProtocol);
    }
    let (len, rest) = if flags & 0x02 != 0 {
        let (size, rest) = rest.split_first_chunk::<8>().ok_or(WireError::Incomplete)?;
        let len = usize::try_from(u64::from_be_bytes(*size))
            .map_err(|_| WireError::Malformed("ZMTP frame too long"))?;
        (len, rest)
    } else {
        let (&size, rest) = rest.split_first().ok_or(WireError::Incomplete)?;
        (usize::from(size), rest)
    };
    let body = rest.get(..len).ok_or(WireError::Incomplete)?;
    let frame = Frame { more: flags & 0x01 != 0, command: flags & 0x04 != 0, body };
    Ok((frame, rest.get(len..).unwrap_or_default()))
}

/// Splits `bytes` into whole multipart messages (command frames are single-frame messages).
/// Returns the messages and the bytes of an unfinished message at the end.
pub fn split_messages(bytes: &[u8]) -> Result<(Vec<Vec<Frame<'_>>>, &[u8]), WireError> {
    let mut messages = Vec::new();
    let mut current = Vec::new();
    let mut start = bytes;
    let mut rest = bytes;
    while !rest.is_empty() {
        let (frame, after) = match parse_frame(rest) {
            Ok(v) => v,
            Err(WireError::Incomplete) => break,
            Err(e) => return Err(e),
        };
        rest = after;
        let done = !frame.more || frame.command;
        current.push(frame);
        if done {
            messages.push(std::mem::take(&mut current));
            start = rest;
        }
    }
    Ok((messages, start))
}

/// cppTango's `ZmqCallInfo`, the third frame of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZmqCallInfo<'a> {
    pub version: i32,
    /// Event counter, per event channel.
    pub ctr: u32,
    pub method_name: &'a str,
    pub oid: &'a [u8],
    pub call_is_except: bool,
}

/// Parses a `ZmqCallInfo` frame body.
pub fn parse_call_info(body: &[u8], little_endian: bool) -> Result<ZmqCallInfo<'_>, WireError> {
    // long version | ulong ctr | string method_name | octet seq oid | boolean call_is_except
    let mut r = CdrReader::new(body, little_endian, 0).mark_complete();
    Ok(ZmqCallInfo {
        version: r.i32()?,
        ctr: r.u32()?,
        method_name: r.string()?,
        oid: r.octets()?,
        call_is_except: r.bool()?,
    })
}

/// The parts of an event topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic<'a> {
    /// `host:port` of the device server (or the database for DB devices).
    pub host: &'a str,
    pub device: &'a str,
    /// The attribute; `None` for device-level events (interface change).
    pub attribute: Option<&'a str>,
    /// E.g. `idl5_change`, `idl5_periodic`, `intr_change`.
    pub event: &'a str,
    /// The `#dbase=no` marker of DB-less devices.
    pub no_database: bool,
}

/// Splits `tango://host:port/domain/family/member[/attr][#dbase=no].event`.
pub fn parse_topic(topic: &str) -> Option<Topic<'_>> {
    let rest = topic.strip_prefix("tango://")?;
    let (host, path) = rest.split_once('/')?;
    let (path, event) = path.rsplit_once('.')?;
    let (path, no_database) = match path.strip_suffix("#dbase=no") {
        Some(p) => (p, true),
        None => (path, false),
    };
    let mut slashes = path.match_indices('/').map(|(i, _)| i);
    let (_, _, third) = (slashes.next()?, slashes.next()?, slashes.next());
    let (device, attribute) = match third {
        Some(i) => (path.get(..i)?, path.get(i + 1..)),
        None => (path, None),
    };
    Some(Topic { host, device, attribute, event, no_database })
}

/// A Tango event message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventMessage<'a> {
    pub topic: &'a str,
    pub little_endian: bool,
    pub call_info: ZmqCallInfo<'a>,
    /// The CDR value frame, marker included.
    pub data: &'a [u8],
}

impl<'a> EventMessage<'a> {
    /// A reader of the value, after the `c0dec0de` marker when present.
    ///
    /// Alignment counts from the byte after the marker (a `double` sits at frame offset 12,
    /// not 16): cppTango writes the marker so the value that follows is 8-aligned in memory,
    /// which is what omniORB's memory streams align against.
    pub fn value_reader(&self) -> CdrReader<'a> {
        let value = self.data.strip_prefix(&VALUE_MARKER).unwrap_or(self.data);
        CdrReader::new(value, self.little_endian, 0).mark_complete()
    }
}

/// Parses the frames of one Tango event message.
pub fn parse_event<'a>(frames: &[Frame<'a>]) -> Result<EventMessage<'a>, WireError> {
    // topic | byte order octet | ZmqCallInfo | value
    let [topic, order, call_info, data] = frames else {
        return Err(if frames.len() < 4 { WireError::Incomplete } else { WireError::NotThisProtocol });
    };
    if frames.iter().any(|f| f.command) {
        return Err(WireError::NotThisProtocol);
    }
    let topic = std::str::from_utf8(topic.body).map_err(|_| WireError::Malformed("topic is not text"))?;
    if !topic.starts_with("tango://") {
        return Err(WireError::NotThisProtocol);
    }
    let little_endian = match order.body {
        [0] => false,
        [1] => true,
        _ => return Err(WireError::Malformed("event byte-order frame")),
    };
    Ok(EventMessage {
        topic,
        little_endian,
        call_info: parse_call_info(call_info.body, little_endian)?,
        data: data.body,
    })
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

    #[test]
    fn topic_parts() {
        let t = parse_topic("tango://vm:45871/test/demo/1/temperature#dbase=no.idl5_change").expect("topic");
        assert_eq!(t.host, "vm:45871");
        assert_eq!(t.device, "test/demo/1");
        assert_eq!(t.attribute, Some("temperature"));
        assert_eq!(t.event, "idl5_change");
        assert!(t.no_database);
        let t = parse_topic("tango://db:10000/sys/tg_test/1.intr_change").expect("topic");
        assert_eq!((t.device, t.attribute), ("sys/tg_test/1", None));
        assert_eq!(parse_topic("http://x/y"), None);
    }

    #[test]
    fn call_info_frame() {
        // The ZmqCallInfo of a change event pushed by a PyTango 10.3.1 device.
        let body = [
            0x01, 0x00, 0x00, 0x00, // version 1
            0x01, 0x00, 0x00, 0x00, // ctr 1
            0x01, 0x00, 0x00, 0x00, 0x00, // method_name ""
            0x55, 0x00, 0x00, // padding (garbage 'U')
            0x00, 0x00, 0x00, 0x00, // oid: empty
            0x00, // call_is_except false
        ];
        let ci = parse_call_info(&body, true).expect("call info");
        assert_eq!((ci.version, ci.ctr, ci.method_name), (1, 1, ""));
        assert!(!ci.call_is_except);
    }

    #[test]
    fn frames_and_commands() {
        let bytes = [0x04, 0x06, 0x05, b'R', b'E', b'A', b'D', b'Y', 0x01, 0x01, 0xaa, 0x00];
        let (msgs, rest) = split_messages(&bytes).expect("split");
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0][0].as_command().map(|c| c.name), Some("READY"));
        assert_eq!(rest, &bytes[8..]);
        let long = [0x02, 0, 0, 0, 0, 0, 0, 0, 2, b'h', b'i'];
        let (f, rest) = parse_frame(&long).expect("long frame");
        assert_eq!(f.body, b"hi");
        assert!(rest.is_empty());
        assert_eq!(parse_frame(&long[..9]), Err(WireError::Incomplete));
    }
}
