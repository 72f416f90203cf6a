//! The publishing side: what this daemon tells the daemons subscribed to it about calls from
//! its host to theirs.
//!
//! Calls and renames are written to every interested subscriber at once, and kept a while in a
//! log replayed to whoever subscribes later. Progress is coalesced per connection and flushed
//! on a short timer, so it is always written after every Call it covers: a subscriber that
//! sees a connection's progress pass a request without a Call may derive that request's ids.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use super::{counters::Counters, wire::Message};
use crate::crosshost::LinkKey;

/// Names one subscription (one inbound link).
pub type SubscriberId = u64;

/// What goes into a subscriber's queue: one live message, or a replay.
#[derive(Debug)]
pub enum Feed {
    One(Message),
    Replay(Vec<Message>),
}

/// Bounds of the publisher's state.
#[derive(Clone, Copy, Debug)]
pub struct PublishLimits {
    /// How long calls and renames are kept for replay, and how long an idle connection's
    /// progress is kept.
    pub keep: Duration,
    /// Most calls and renames kept for replay.
    pub log_entries: usize,
    /// Most connections whose progress is kept.
    pub progress_entries: usize,
}

impl Default for PublishLimits {
    fn default() -> Self {
        PublishLimits { keep: Duration::from_secs(30), log_entries: 65_536, progress_entries: 65_536 }
    }
}

#[derive(Debug)]
enum Logged {
    Call { key: LinkKey, trace_id: [u8; 16], settled: bool },
    Settled { provisional: [u8; 16], trace_id: [u8; 16] },
}

#[derive(Debug)]
struct ConnectionProgress {
    next_seq: u32,
    updated: Instant,
    /// Changed since the last flush (and listed in `dirty`).
    dirty: bool,
}

#[derive(Debug)]
struct Subscriber {
    peer: SocketAddr,
    /// The subscriber's host's addresses: the servers whose calls it is told about.
    addrs: Vec<Ipv4Addr>,
    feed: mpsc::Sender<Feed>,
}

type Connection = (SocketAddrV4, SocketAddrV4);

pub struct Publisher {
    limits: PublishLimits,
    log: VecDeque<(Instant, Logged)>,
    progress: HashMap<Connection, ConnectionProgress>,
    dirty: Vec<Connection>,
    subscribers: HashMap<SubscriberId, Subscriber>,
    /// Subscribers to drop after a fan-out (reused).
    cut: Vec<SubscriberId>,
    counters: Arc<Counters>,
}

impl Publisher {
    pub fn new(limits: PublishLimits, counters: Arc<Counters>) -> Self {
        Publisher {
            limits,
            log: VecDeque::new(),
            progress: HashMap::new(),
            dirty: Vec::new(),
            subscribers: HashMap::new(),
            cut: Vec::new(),
            counters,
        }
    }

    /// A call that continues a trace: to its server's host's subscribers now, and to the log.
    pub fn call(&mut self, key: LinkKey, trace_id: [u8; 16], settled: bool, now: Instant) {
        self.log_push(now, Logged::Call { key, trace_id, settled });
        let server = *key.server.ip();
        self.fan_out(|addrs| addrs.contains(&server), &Message::Call { key, trace_id, settled });
    }

    /// A rename: to every subscriber now (any of them may hold the provisional id), and to the log.
    pub fn settled(&mut self, provisional: [u8; 16], trace_id: [u8; 16], now: Instant) {
        self.log_push(now, Logged::Settled { provisional, trace_id });
        self.fan_out(|_| true, &Message::Settled { provisional, trace_id });
    }

    /// How far a connection's calls are announced: written at the next [`Publisher::flush`].
    pub fn progress(&mut self, client: SocketAddrV4, server: SocketAddrV4, next_seq: u32, now: Instant) {
        let connection = (client, server);
        let room = self.progress.len() < self.limits.progress_entries;
        match self.progress.get_mut(&connection) {
            Some(entry) => {
                entry.next_seq = next_seq;
                entry.updated = now;
                if !entry.dirty {
                    entry.dirty = true;
                    self.dirty.push(connection);
                }
            }
            None if room => {
                self.progress.insert(connection, ConnectionProgress { next_seq, updated: now, dirty: true });
                self.dirty.push(connection);
                self.counters.progress_entries.store(self.progress.len() as u64, Relaxed);
            }
            None => {
                // No room to coalesce: written now, still after every Call before it.
                self.counters.progress_uncoalesced.fetch_add(1, Relaxed);
                let ip = *server.ip();
                self.fan_out(|addrs| addrs.contains(&ip), &Message::Progress { client, server, next_seq });
            }
        }
    }

    /// Whether progress waits for [`Publisher::flush`].
    pub fn has_unflushed(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Writes the progress changed since the last flush.
    pub fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for connection in &dirty {
            let Some(entry) = self.progress.get_mut(connection) else { continue };
            entry.dirty = false;
            let (client, server) = *connection;
            let message = Message::Progress { client, server, next_seq: entry.next_seq };
            let ip = *server.ip();
            self.fan_out(|addrs| addrs.contains(&ip), &message);
        }
        self.dirty = dirty;
        self.dirty.clear();
    }

    /// A new subscriber: first what it may have missed, then live messages.
    pub fn subscribe(
        &mut self,
        id: SubscriberId,
        peer: SocketAddr,
        addrs: Vec<Ipv4Addr>,
        feed: mpsc::Sender<Feed>,
    ) {
        let replay = self.replay(&addrs);
        if feed.try_send(Feed::Replay(replay)).is_err() {
            return;
        }
        self.subscribers.insert(id, Subscriber { peer, addrs, feed });
        self.counters.subscribers.store(self.subscribers.len() as u64, Relaxed);
        self.counters.subscriptions_served.fetch_add(1, Relaxed);
    }

    /// A subscriber's addresses changed: it gets the replay for the new ones.
    pub fn resubscribe(&mut self, id: SubscriberId, addrs: Vec<Ipv4Addr>) {
        let Some(subscriber) = self.subscribers.get(&id) else { return };
        let added: Vec<Ipv4Addr> = addrs.iter().filter(|a| !subscriber.addrs.contains(a)).copied().collect();
        let replay = if added.is_empty() { Vec::new() } else { self.replay(&added) };
        let Some(subscriber) = self.subscribers.get_mut(&id) else { return };
        subscriber.addrs = addrs;
        if !replay.is_empty() && subscriber.feed.try_send(Feed::Replay(replay)).is_err() {
            self.cut.push(id);
            self.drop_cut();
        }
    }

    pub fn unsubscribe(&mut self, id: SubscriberId) {
        self.subscribers.remove(&id);
        self.counters.subscribers.store(self.subscribers.len() as u64, Relaxed);
    }

    /// Where a subscriber is.
    pub fn subscriber_peer(&self, id: SubscriberId) -> Option<SocketAddr> {
        self.subscribers.get(&id).map(|s| s.peer)
    }

    /// Forgets log entries and idle connections older than [`PublishLimits::keep`].
    pub fn expire(&mut self, now: Instant) {
        let keep = self.limits.keep;
        while self.log.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > keep) {
            self.log.pop_front();
        }
        self.progress.retain(|_, entry| entry.dirty || now.saturating_duration_since(entry.updated) <= keep);
        self.counters.replay_entries.store(self.log.len() as u64, Relaxed);
        self.counters.progress_entries.store(self.progress.len() as u64, Relaxed);
    }

    fn log_push(&mut self, now: Instant, entry: Logged) {
        if self.log.len() >= self.limits.log_entries && self.log.pop_front().is_some() {
            self.counters.replay_evicted.fetch_add(1, Relaxed);
        }
        self.log.push_back((now, entry));
        self.counters.replay_entries.store(self.log.len() as u64, Relaxed);
    }

    /// The calls to `addrs` in the log, the renames of their provisional trace ids, then the
    /// progress of every connection to `addrs`.
    fn replay(&self, addrs: &[Ipv4Addr]) -> Vec<Message> {
        let mut out = Vec::new();
        let mut provisional: HashSet<[u8; 16]> = HashSet::new();
        for (_, entry) in &self.log {
            match *entry {
                Logged::Call { key, trace_id, settled } if addrs.contains(key.server.ip()) => {
                    if !settled {
                        provisional.insert(trace_id);
                    }
                    out.push(Message::Call { key, trace_id, settled });
                }
                Logged::Settled { provisional: id, trace_id } if provisional.contains(&id) => {
                    out.push(Message::Settled { provisional: id, trace_id });
                }
                _ => {}
            }
        }
        for (&(client, server), entry) in &self.progress {
            if addrs.contains(server.ip()) {
                out.push(Message::Progress { client, server, next_seq: entry.next_seq });
            }
        }
        out
    }

    /// Queues `message` for every subscriber `wants` accepts; one whose queue is full is cut
    /// off (a stream with a hole would mislead it) and will subscribe again.
    fn fan_out(&mut self, wants: impl Fn(&[Ipv4Addr]) -> bool, message: &Message) {
        for (id, subscriber) in &self.subscribers {
            if !wants(&subscriber.addrs) {
                continue;
            }
            match subscriber.feed.try_send(Feed::One(message.clone())) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.counters.subscribers_cut.fetch_add(1, Relaxed);
                    self.cut.push(*id);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => self.cut.push(*id),
            }
        }
        self.drop_cut();
    }

    fn drop_cut(&mut self) {
        if self.cut.is_empty() {
            return;
        }
        for id in self.cut.drain(..) {
            self.subscribers.remove(&id);
        }
        self.counters.subscribers.store(self.subscribers.len() as u64, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

    use super::*;

    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const C: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

    fn addr(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(ip, port)
    }

    fn key(server: Ipv4Addr, seq: u32) -> LinkKey {
        LinkKey { client: addr(Ipv4Addr::new(10, 0, 0, 1), 40000), server: addr(server, 10000), seq }
    }

    fn publisher(limits: PublishLimits) -> Publisher {
        Publisher::new(limits, Arc::new(Counters::default()))
    }

    fn subscribe(
        p: &mut Publisher,
        id: SubscriberId,
        addrs: &[Ipv4Addr],
        cap: usize,
    ) -> mpsc::Receiver<Feed> {
        let (tx, rx) = mpsc::channel(cap);
        p.subscribe(id, "10.0.0.9:1".parse().unwrap(), addrs.to_vec(), tx);
        rx
    }

    fn drain(rx: &mut mpsc::Receiver<Feed>) -> Vec<Message> {
        let mut out = Vec::new();
        while let Ok(feed) = rx.try_recv() {
            match feed {
                Feed::One(m) => out.push(m),
                Feed::Replay(ms) => out.extend(ms),
            }
        }
        out
    }

    #[test]
    fn calls_go_to_their_servers_host_and_progress_follows_them() {
        let mut p = publisher(PublishLimits::default());
        let now = Instant::now();
        let mut to_b = subscribe(&mut p, 1, &[B], 64);
        let mut to_c = subscribe(&mut p, 2, &[C], 64);
        let k = key(B, 100);
        p.progress(k.client, k.server, 100, now);
        p.call(k, [7; 16], true, now);
        p.progress(k.client, k.server, 150, now);
        assert!(p.has_unflushed());
        p.flush();
        assert!(!p.has_unflushed());
        assert_eq!(
            drain(&mut to_b),
            vec![
                Message::Call { key: k, trace_id: [7; 16], settled: true },
                Message::Progress { client: k.client, server: k.server, next_seq: 150 },
            ]
        );
        assert_eq!(drain(&mut to_c), vec![]);
        p.settled([7; 16], [8; 16], now);
        assert_eq!(drain(&mut to_c), vec![Message::Settled { provisional: [7; 16], trace_id: [8; 16] }]);
    }

    #[test]
    fn a_late_subscriber_gets_the_calls_renames_and_progress_it_missed() {
        let mut p = publisher(PublishLimits::default());
        let now = Instant::now();
        let (to_b, to_c) = (key(B, 100), key(C, 5));
        p.call(to_b, [1; 16], false, now);
        p.call(to_c, [2; 16], false, now);
        p.settled([1; 16], [3; 16], now);
        p.settled([2; 16], [4; 16], now);
        p.progress(to_b.client, to_b.server, 200, now);
        p.progress(to_c.client, to_c.server, 9, now);
        p.flush();
        let mut rx = subscribe(&mut p, 1, &[B], 4);
        assert_eq!(
            drain(&mut rx),
            vec![
                Message::Call { key: to_b, trace_id: [1; 16], settled: false },
                Message::Settled { provisional: [1; 16], trace_id: [3; 16] },
                Message::Progress { client: to_b.client, server: to_b.server, next_seq: 200 },
            ]
        );
        // A new address: its part of the log.
        p.resubscribe(1, vec![B, C]);
        assert_eq!(
            drain(&mut rx),
            vec![
                Message::Call { key: to_c, trace_id: [2; 16], settled: false },
                Message::Settled { provisional: [2; 16], trace_id: [4; 16] },
                Message::Progress { client: to_c.client, server: to_c.server, next_seq: 9 },
            ]
        );
    }

    #[test]
    fn the_log_and_progress_are_bounded_and_expire() {
        let limits = PublishLimits { keep: Duration::from_secs(30), log_entries: 2, progress_entries: 1 };
        let mut p = publisher(limits);
        let start = Instant::now();
        for seq in 0..3 {
            p.call(key(B, seq), [1; 16], true, start);
        }
        assert_eq!(p.counters.replay_evicted.load(Relaxed), 1);
        assert_eq!(p.log.len(), 2);
        let mut rx = subscribe(&mut p, 1, &[B], 8);
        drain(&mut rx);
        p.progress(addr(B, 1), addr(B, 2), 1, start);
        // The table is full: the second connection's progress is written at once.
        p.progress(addr(B, 3), addr(B, 4), 1, start);
        assert_eq!(
            drain(&mut rx),
            vec![Message::Progress { client: addr(B, 3), server: addr(B, 4), next_seq: 1 }]
        );
        assert_eq!(p.counters.progress_uncoalesced.load(Relaxed), 1);
        p.flush();
        p.expire(start + Duration::from_secs(31));
        assert!(p.log.is_empty());
        assert!(p.progress.is_empty());
        assert_eq!(p.counters.replay_entries.load(Relaxed), 0);
        assert_eq!(p.counters.progress_entries.load(Relaxed), 0);
    }

    #[test]
    fn a_subscriber_that_does_not_keep_up_is_cut_off() {
        let mut p = publisher(PublishLimits::default());
        let now = Instant::now();
        let mut rx = subscribe(&mut p, 1, &[B], 2);
        // The replay took one place; one more fits.
        p.call(key(B, 1), [1; 16], true, now);
        p.call(key(B, 2), [1; 16], true, now);
        assert_eq!(p.counters.subscribers_cut.load(Relaxed), 1);
        assert_eq!(p.counters.subscribers.load(Relaxed), 0);
        assert_eq!(drain(&mut rx).len(), 1);
        // Its queue closes once drained: the link ends and the peer subscribes again.
        assert!(rx.try_recv().is_err());
    }
}
