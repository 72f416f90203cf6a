//! The peer link's counters: shared by its tasks, read by `ctl stats`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::wire::Message;
use crate::stats::StageStats;

const STAGE: &str = "peers";

/// Counters of one kind of message, one direction.
#[derive(Debug, Default)]
pub struct ByKind {
    pub calls: AtomicU64,
    pub progress: AtomicU64,
    pub settled: AtomicU64,
    pub subscribes: AtomicU64,
    pub beats: AtomicU64,
}

impl ByKind {
    pub fn count(&self, message: &Message) {
        let counter = match message {
            Message::Call { .. } => &self.calls,
            Message::Progress { .. } => &self.progress,
            Message::Settled { .. } => &self.settled,
            Message::Subscribe { .. } => &self.subscribes,
            Message::Beat => &self.beats,
        };
        counter.fetch_add(1, Relaxed);
    }

    fn report(&self, stats: &mut StageStats, names: [&'static str; 5]) {
        let counters = [&self.calls, &self.progress, &self.settled, &self.subscribes, &self.beats];
        for (name, counter) in names.into_iter().zip(counters) {
            stats.push(STAGE, name, counter.load(Relaxed));
        }
    }
}

#[derive(Debug, Default)]
pub struct Counters {
    /// Daemons we subscribe to, linked now.
    pub linked_peers: AtomicU64,
    /// Daemons subscribed to us now.
    pub subscribers: AtomicU64,
    /// Links made to other daemons, and subscriptions accepted from them, ever.
    pub links_made: AtomicU64,
    pub subscriptions_served: AtomicU64,
    pub sent: ByKind,
    pub received: ByKind,
    pub sent_bytes: AtomicU64,
    pub received_bytes: AtomicU64,
    pub sent_frames: AtomicU64,
    pub received_frames: AtomicU64,
    /// A daemon that dialed us failed the handshake (it does not hold the key).
    pub refused_inbound: AtomicU64,
    /// A daemon we dialed failed the handshake (or refused ours).
    pub refused_outbound: AtomicU64,
    /// Nothing listened at a peer's address, or the connection failed.
    pub connect_failures: AtomicU64,
    /// A connection or handshake that took longer than the connect timeout.
    pub connect_timeouts: AtomicU64,
    /// Links that broke (closed, silent, or a bad frame).
    pub links_broken: AtomicU64,
    /// Incoming connections turned away because too many were open.
    pub inbound_over_limit: AtomicU64,
    /// Progress forwarded at once because the per-connection table was full.
    pub progress_uncoalesced: AtomicU64,
    // Losses.
    /// Messages from the pipeline dropped because the link's queue was full, by kind.
    pub queue_full_calls: AtomicU64,
    pub queue_full_progress: AtomicU64,
    pub queue_full_settled: AtomicU64,
    pub queue_full_wants: AtomicU64,
    /// Messages from the pipeline after the link stopped.
    pub after_stop: AtomicU64,
    /// Calls and renames pushed out of the replay log by its size cap before their time.
    pub replay_evicted: AtomicU64,
    /// Subscribers cut off because they did not keep up (they subscribe again and get the replay).
    pub subscribers_cut: AtomicU64,
    /// Up/Absent answers to the pipeline dropped because its queue was full.
    pub answers_dropped: AtomicU64,
    // Table sizes (set by the hub).
    pub replay_entries: AtomicU64,
    pub progress_entries: AtomicU64,
    pub peer_entries: AtomicU64,
}

impl Counters {
    pub fn add_sent_bytes(&self, bytes: usize) {
        self.sent_bytes.fetch_add(bytes as u64, Relaxed);
        self.sent_frames.fetch_add(1, Relaxed);
    }

    pub fn add_received_bytes(&self, bytes: usize) {
        self.received_bytes.fetch_add(bytes as u64, Relaxed);
        self.received_frames.fetch_add(1, Relaxed);
    }

    pub fn report(&self, stats: &mut StageStats) {
        let get = |counter: &AtomicU64| counter.load(Relaxed);
        stats.push(STAGE, "linked_peers", get(&self.linked_peers));
        stats.push(STAGE, "subscribers", get(&self.subscribers));
        stats.push(STAGE, "links_made", get(&self.links_made));
        stats.push(STAGE, "subscriptions_served", get(&self.subscriptions_served));
        self.sent
            .report(stats, ["sent_calls", "sent_progress", "sent_settled", "sent_subscribes", "sent_beats"]);
        self.received.report(
            stats,
            [
                "received_calls",
                "received_progress",
                "received_settled",
                "received_subscribes",
                "received_beats",
            ],
        );
        stats.push(STAGE, "sent_frames", get(&self.sent_frames));
        stats.push(STAGE, "sent_bytes", get(&self.sent_bytes));
        stats.push(STAGE, "received_frames", get(&self.received_frames));
        stats.push(STAGE, "received_bytes", get(&self.received_bytes));
        stats.push(STAGE, "refused_inbound", get(&self.refused_inbound));
        stats.push(STAGE, "refused_outbound", get(&self.refused_outbound));
        stats.push(STAGE, "connect_failures", get(&self.connect_failures));
        stats.push(STAGE, "connect_timeouts", get(&self.connect_timeouts));
        stats.push(STAGE, "links_broken", get(&self.links_broken));
        stats.push(STAGE, "inbound_over_limit", get(&self.inbound_over_limit));
        stats.push(STAGE, "progress_uncoalesced", get(&self.progress_uncoalesced));
        stats.loss(STAGE, "queue_full_calls", get(&self.queue_full_calls));
        stats.loss(STAGE, "queue_full_progress", get(&self.queue_full_progress));
        stats.loss(STAGE, "queue_full_settled", get(&self.queue_full_settled));
        stats.loss(STAGE, "queue_full_wants", get(&self.queue_full_wants));
        stats.loss(STAGE, "after_stop", get(&self.after_stop));
        stats.loss(STAGE, "replay_evicted", get(&self.replay_evicted));
        stats.loss(STAGE, "subscribers_cut", get(&self.subscribers_cut));
        stats.loss(STAGE, "answers_dropped", get(&self.answers_dropped));
        stats.push(STAGE, "replay_entries", get(&self.replay_entries));
        stats.push(STAGE, "progress_entries", get(&self.progress_entries));
        stats.push(STAGE, "peer_entries", get(&self.peer_entries));
    }
}
