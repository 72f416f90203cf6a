//! Per-connection state: GIOP reassembly per (pid, fd, direction), the peer of server-side
//! connections, and connections whose client is the daemon itself. Freed when the socket closes
//! or its process exits.

use std::{collections::hash_map::Entry, sync::Arc};

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use tracer_wire::{
    cdr::CdrReader,
    giop::{Feed, MessageAssembler, MessageRef},
};

use super::request::{ParsedRequest, RecentRequests};
use crate::{probe::record::Direction, stats::has_room};

/// Most connections followed at once; beyond, new ones are refused and counted.
const MAX_CONNECTIONS: usize = 65_536;

/// Object keys kept per connection: omniORB multiplexes the calls to every device of one server
/// process over one connection, but a connection mostly carries one or a few.
const OBJECT_KEYS_PER_CONNECTION: usize = 4;

#[derive(Default)]
struct Connection {
    assemblers: [Option<MessageAssembler>; 2],
    /// Per direction: probe records were lost, so bytes are skipped until one starts a GIOP
    /// message (a lost chunk would otherwise splice the wrong bytes into a message).
    resync: [bool; 2],
    /// Object keys of the latest requests, most recent last: shared by their calls and spans.
    object_keys: Vec<Arc<[u8]>>,
    /// Per direction: the latest requests, parsed (a repeat is not parsed again).
    recent_requests: [RecentRequests; 2],
}

/// Every traced connection.
pub struct Connections {
    /// Bytes kept per message (the capture length).
    max_keep: usize,
    /// By (pid, fd): small integers, hashed by FxHash rather than SipHash.
    connections: HashMap<(u32, i32), Connection>,
    /// Peer addresses of server-side connections, resolved by the run loop.
    /// Shared with every span of the connection (no copy of the text per span).
    locations: HashMap<(u32, i32), std::sync::Arc<str>>,
    /// Server-side connections whose client is the daemon itself (its database queries).
    ignored: HashSet<(u32, i32)>,
    /// Bytes skipped because they did not start or continue a GIOP message.
    pub discarded_bytes: u64,
    /// Connections not followed because the table was full.
    pub refused_full: u64,
}

impl Connections {
    pub fn new(max_keep: usize) -> Self {
        Connections {
            max_keep,
            connections: HashMap::default(),
            locations: HashMap::default(),
            ignored: HashSet::default(),
            discarded_bytes: 0,
            refused_full: 0,
        }
    }

    /// Whether bytes on `fd` are GIOP: they start a message, or continue one.
    pub fn carries_giop(&self, pid: u32, fd: i32, bytes: &[u8]) -> bool {
        bytes.starts_with(b"GIOP") || self.connections.contains_key(&(pid, fd))
    }

    /// Starts feeding the bytes of one call; take its whole messages with
    /// [`Connections::next_message`]. Returns `None` when the connection is not followed, else
    /// the feed and the stream position of the call's first byte (see
    /// [`MessageRef::stream_start`]).
    pub fn feed(
        &mut self,
        (pid, fd, direction): (u32, i32, Direction),
        bytes: &[u8],
        total_len: usize,
    ) -> Option<(Feed, u64)> {
        let followed = self.connections.len();
        let connection = match self.connections.entry((pid, fd)) {
            Entry::Occupied(connection) => connection.into_mut(),
            Entry::Vacant(slot) if has_room(followed, MAX_CONNECTIONS, &mut self.refused_full) => {
                slot.insert(Connection::default())
            }
            Entry::Vacant(_) => return None,
        };
        let (slot, resync) = match direction {
            Direction::Send => (&mut connection.assemblers[0], &mut connection.resync[0]),
            Direction::Recv => (&mut connection.assemblers[1], &mut connection.resync[1]),
        };
        if *resync {
            if !bytes.starts_with(b"GIOP") {
                self.discarded_bytes += total_len.max(bytes.len()) as u64;
                return None;
            }
            *resync = false;
        }
        let assembler = slot.get_or_insert_with(|| MessageAssembler::new(self.max_keep));
        let discarded = assembler.stats().discarded_bytes;
        let position = assembler.pushed();
        let feed = assembler.feed(bytes, total_len);
        self.discarded_bytes += assembler.stats().discarded_bytes - discarded;
        Some((feed, position))
    }

    /// The next whole message of the call [`Connections::feed`] started; `bytes` are its bytes.
    pub fn next_message<'a>(
        &mut self,
        (pid, fd, direction): (u32, i32, Direction),
        feed: &mut Feed,
        bytes: &'a [u8],
    ) -> Option<MessageRef<'a>> {
        if feed.is_done() {
            return None;
        }
        let connection = self.connections.get_mut(&(pid, fd))?;
        let assembler = match direction {
            Direction::Send => connection.assemblers[0].as_mut(),
            Direction::Recv => connection.assemblers[1].as_mut(),
        }?;
        let discarded = assembler.stats().discarded_bytes;
        let message = assembler.next_message(feed, bytes);
        self.discarded_bytes += assembler.stats().discarded_bytes - discarded;
        message
    }

    /// The arguments of a request on this stream, parsed once for repeated bytes.
    pub fn parse_request(
        &mut self,
        (pid, fd, direction): (u32, i32, Direction),
        operation: &str,
        body: CdrReader<'_>,
    ) -> Arc<ParsedRequest> {
        let Some(connection) = self.connections.get_mut(&(pid, fd)) else {
            return Arc::new(ParsedRequest::parse(operation, body));
        };
        let recent = match direction {
            Direction::Send => &mut connection.recent_requests[0],
            Direction::Recv => &mut connection.recent_requests[1],
        };
        recent.parse(operation, body)
    }

    /// `object_key` as shared by the calls on this connection: made once per device, not per call.
    pub fn object_key(&mut self, pid: u32, fd: i32, object_key: &[u8]) -> Arc<[u8]> {
        let Some(connection) = self.connections.get_mut(&(pid, fd)) else {
            return Arc::from(object_key);
        };
        let keys = &mut connection.object_keys;
        if let Some(key) = keys.last().filter(|key| ***key == *object_key) {
            return Arc::clone(key);
        }
        if let Some(at) = keys.iter().position(|key| **key == *object_key) {
            let key = keys.remove(at);
            keys.push(Arc::clone(&key));
            return key;
        }
        if keys.len() >= OBJECT_KEYS_PER_CONNECTION {
            keys.remove(0);
        }
        let key: Arc<[u8]> = Arc::from(object_key);
        keys.push(Arc::clone(&key));
        key
    }

    /// The run loop tells where the client of a server-side connection is (`giop:tcp:…`).
    pub fn set_location(&mut self, pid: u32, fd: i32, location: String) {
        if self.locations.contains_key(&(pid, fd))
            || has_room(self.locations.len(), MAX_CONNECTIONS, &mut self.refused_full)
        {
            self.locations.insert((pid, fd), location.into());
        }
    }

    pub fn location(&self, pid: u32, fd: i32) -> Option<&std::sync::Arc<str>> {
        self.locations.get(&(pid, fd))
    }

    /// Whether the peer of this server-side connection is still to be resolved.
    pub fn needs_location(&self, pid: u32, fd: i32) -> bool {
        !self.locations.contains_key(&(pid, fd))
    }

    /// Requests arriving on this server-side connection come from the daemon: no spans.
    pub fn ignore(&mut self, pid: u32, fd: i32) {
        if has_room(self.ignored.len(), MAX_CONNECTIONS, &mut self.refused_full) {
            self.ignored.insert((pid, fd));
        }
    }

    pub fn is_ignored(&self, pid: u32, fd: i32) -> bool {
        self.ignored.contains(&(pid, fd))
    }

    /// Probe records were lost: every message in progress is dropped and each stream starts
    /// again at the next GIOP header (the bytes skipped until then are counted as discarded).
    pub fn lose_sync(&mut self) {
        for connection in self.connections.values_mut() {
            for assembler in connection.assemblers.iter_mut().flatten() {
                assembler.reset();
            }
            connection.resync = [true; 2];
        }
    }

    pub fn on_close(&mut self, pid: u32, fd: i32) {
        self.connections.remove(&(pid, fd));
        self.locations.remove(&(pid, fd));
        self.ignored.remove(&(pid, fd));
    }

    pub fn on_exit(&mut self, pid: u32) {
        self.connections.retain(|&(p, _), _| p != pid);
        self.locations.retain(|&(p, _), _| p != pid);
        self.ignored.retain(|&(p, _)| p != pid);
    }

    pub fn report(&self, out: &mut crate::stats::StageStats) {
        out.size("assemble", "connection_entries", self.connections.len());
        out.size("assemble", "location_entries", self.locations.len());
        out.size("assemble", "ignored_connection_entries", self.ignored.len());
    }
}
