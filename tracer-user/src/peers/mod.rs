//! Talking to the tango-tracer daemons of other hosts: the transport under
//! [`crate::crosshost::exchange`].
//!
//! Every daemon listens at the same port (`--peer-listen`, 4320 by default). A daemon holding
//! server spans of requests from another host subscribes to the daemon there, at the client's
//! address; that daemon then streams, for connections from its host to the subscriber's
//! addresses, the calls that continue a trace, each connection's progress, and renames of
//! provisional trace ids. One [`PeerLink`] does both sides: it listens and publishes
//! ([`publish`]), and it dials and subscribes ([`link`]). Links are authenticated and encrypted
//! with the shared key ([`key`], [`wire`]); a peer without it gets nothing and is not believed.
//!
//! One hub task owns the state (the publisher's log and progress, each peer's state); one task
//! per link does the reading and writing. The pipeline never waits on any of it: [`PeerLink::send`]
//! drops (and counts) when the queue is full, and what comes back is read from a queue the run
//! loop selects on.

mod addrs;
mod counters;
pub mod key;
mod link;
pub mod publish;
#[cfg(test)]
mod tests;
pub mod wire;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use anyhow::Context as _;
use log::{info, warn};
use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
    task::JoinSet,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use self::{
    counters::Counters,
    link::{Event, Shared},
    publish::{Publisher, SubscriberId},
};
pub use self::{key::PeerKey, publish::PublishLimits};
use crate::{
    crosshost::{Absence, Incoming, Outgoing},
    stats::StageStats,
};

/// The port every daemon listens at, unless told otherwise.
pub const DEFAULT_PORT: u16 = 4320;
/// Messages from the pipeline waiting for the hub.
const OUTGOING_QUEUE: usize = 65_536;
/// Messages from other daemons waiting for the pipeline.
const INCOMING_QUEUE: usize = 4096;
/// How long progress waits to be coalesced before it is written.
const PROGRESS_FLUSH: Duration = Duration::from_millis(10);
/// How often the hub expires state.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// How often this host's addresses are read again.
const ADDRESS_REFRESH: Duration = Duration::from_secs(10);
/// Most peers tracked at once (linked, linking or paused).
const MAX_PEERS: usize = 4096;
/// Most inbound connections open at once.
const MAX_INBOUND: usize = 1024;
/// A peer's repeated failures are logged at most this often (each is counted).
const LOG_QUIET: Duration = Duration::from_secs(60);

/// Options of the peer link (`--peer-*`).
#[derive(Clone, Debug)]
pub struct PeerOptions {
    /// Where to listen; its port is where every other daemon is reached.
    pub listen: SocketAddr,
    pub key: PeerKey,
    /// How long a server span waits for the daemon on its client's host (read by the pipeline).
    pub wait: Duration,
    /// How long a peer found absent is left alone before it is dialed again.
    pub retry_pause: Duration,
    /// Longest time a connection and its handshake may take.
    pub connect_timeout: Duration,
    /// A link says something at least this often; one silent for 3.5 times as long is broken.
    pub beat: Duration,
    /// This host's addresses as told to publishers; `None`: every interface's but loopback,
    /// read again every few seconds.
    pub addrs: Option<Vec<Ipv4Addr>>,
    pub limits: PublishLimits,
}

impl PeerOptions {
    pub fn new(key: PeerKey) -> Self {
        PeerOptions {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_PORT)),
            key,
            wait: Duration::from_millis(1500),
            retry_pause: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(1),
            beat: Duration::from_secs(2),
            addrs: None,
            limits: PublishLimits::default(),
        }
    }
}

/// The link to the daemons of other hosts (both directions); owned by the run loop.
pub struct PeerLink {
    outgoing: mpsc::Sender<Outgoing>,
    incoming: Option<mpsc::Receiver<Incoming>>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    hub: Option<tokio::task::JoinHandle<()>>,
    local_addr: SocketAddr,
    /// This host's addresses as told to publishers (shared with the hub).
    addrs: Arc<watch::Sender<Vec<Ipv4Addr>>>,
}

impl PeerLink {
    /// Listens and starts the hub (within a tokio runtime).
    pub fn start(options: PeerOptions) -> anyhow::Result<PeerLink> {
        let listener = std::net::TcpListener::bind(options.listen)
            .with_context(|| format!("listening for other hosts' daemons at {}", options.listen))?;
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let local_addr = listener.local_addr()?;
        let fixed_addrs = options.addrs.is_some();
        let addrs = match options.addrs.clone() {
            Some(addrs) => addrs,
            None => addrs::local_ipv4().context("reading this host's addresses")?,
        };
        let counters = Arc::new(Counters::default());
        let cancel = CancellationToken::new();
        let (outgoing, outgoing_rx) = mpsc::channel(OUTGOING_QUEUE);
        let (incoming_tx, incoming) = mpsc::channel(INCOMING_QUEUE);
        let (events, events_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            key: options.key.clone(),
            port: local_addr.port(),
            connect_timeout: options.connect_timeout,
            beat: options.beat,
            silence: options.beat * 7 / 2,
            counters: counters.clone(),
            incoming: incoming_tx,
            events,
            cancel: cancel.clone(),
        });
        let addrs = Arc::new(watch::channel(addrs).0);
        let hub = Hub {
            publisher: Publisher::new(options.limits, counters.clone()),
            options,
            shared,
            listener,
            fixed_addrs,
            addrs: addrs.clone(),
            peers: HashMap::new(),
            tasks: JoinSet::new(),
            next_id: 0,
            inbound_open: 0,
            quiet: Quiet::default(),
        };
        let hub = tokio::spawn(hub.run(outgoing_rx, events_rx));
        Ok(PeerLink {
            outgoing,
            incoming: Some(incoming),
            counters,
            cancel,
            hub: Some(hub),
            local_addr,
            addrs,
        })
    }

    /// Hands a message to the link; never waits. When the queue is full it is dropped and
    /// counted by kind.
    ///
    /// A `Want` for a host that is linked or being linked is ignored (its `Up` or `Absent` is
    /// coming or came); for a host found absent less than the retry pause ago it is answered
    /// `Absent` at once; otherwise the host is dialed and `Up` or `Absent` follows within the
    /// connect timeout. A link that breaks later says `Absent { why: Lost }`.
    pub fn send(&self, message: Outgoing) {
        let counter = match &message {
            Outgoing::Call { .. } => &self.counters.queue_full_calls,
            Outgoing::Progress { .. } => &self.counters.queue_full_progress,
            Outgoing::Settled { .. } => &self.counters.queue_full_settled,
            Outgoing::Want { .. } => &self.counters.queue_full_wants,
        };
        match self.outgoing.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                counter.fetch_add(1, Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.counters.after_stop.fetch_add(1, Relaxed);
            }
        }
    }

    /// What other daemons said, for the run loop to select on (once).
    pub fn take_incoming(&mut self) -> Option<mpsc::Receiver<Incoming>> {
        self.incoming.take()
    }

    /// The next message from other daemons (when the receiver was not taken).
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.incoming.as_mut()?.recv().await
    }

    /// Changes the addresses told to publishers, as the hub does when the interfaces change.
    #[cfg(test)]
    fn set_addrs(&self, addrs: Vec<Ipv4Addr>) {
        self.addrs.send_replace(addrs);
    }

    /// This host's addresses as told to publishers now.
    pub fn addrs(&self) -> Vec<Ipv4Addr> {
        self.addrs.borrow().clone()
    }

    /// Where the link listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The link's counters, for `ctl stats`.
    pub fn report(&self, stats: &mut StageStats) {
        self.counters.report(stats);
    }

    /// Closes every link and the listener, and waits for the tasks to end. The counters stay
    /// readable; what is sent afterwards is counted as sent after the stop.
    pub async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(hub) = self.hub.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), hub).await;
        }
    }
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Where we stand with the daemon at one address.
#[derive(Clone, Copy, Debug)]
enum PeerState {
    Linking,
    Up,
    /// Found absent; not dialed again before `until`.
    Paused {
        until: Instant,
        why: Absence,
    },
}

/// Repeated failures of one peer, logged at most once per [`LOG_QUIET`].
#[derive(Default)]
struct Quiet {
    last: HashMap<(IpAddr, &'static str), (Instant, u64)>,
}

impl Quiet {
    /// Whether to log now, and how many were left unlogged since the last line.
    fn check(&mut self, ip: IpAddr, what: &'static str, now: Instant) -> Option<u64> {
        let room = self.last.len() < MAX_PEERS;
        match self.last.get_mut(&(ip, what)) {
            Some((at, unlogged)) if now.saturating_duration_since(*at) < LOG_QUIET => {
                *unlogged += 1;
                None
            }
            Some((at, unlogged)) => {
                *at = now;
                Some(std::mem::take(unlogged))
            }
            None if room => {
                self.last.insert((ip, what), (now, 0));
                Some(0)
            }
            None => None,
        }
    }

    fn expire(&mut self, now: Instant) {
        self.last.retain(|_, (at, _)| now.saturating_duration_since(*at) < LOG_QUIET);
    }
}

fn unlogged_text(unlogged: u64) -> String {
    if unlogged == 0 { String::new() } else { format!(" ({unlogged} more since the last report)") }
}

struct Hub {
    options: PeerOptions,
    shared: Arc<Shared>,
    listener: TcpListener,
    publisher: Publisher,
    fixed_addrs: bool,
    /// This host's addresses, watched by every subscribing link.
    addrs: Arc<watch::Sender<Vec<Ipv4Addr>>>,
    peers: HashMap<Ipv4Addr, PeerState>,
    tasks: JoinSet<()>,
    next_id: SubscriberId,
    inbound_open: usize,
    quiet: Quiet,
}

impl Hub {
    async fn run(
        mut self,
        mut outgoing: mpsc::Receiver<Outgoing>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        let cancel = self.shared.cancel.clone();
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        let mut last_refresh = Instant::now();
        let mut flush_at: Option<Instant> = None;
        let mut accept_resume: Option<Instant> = None;
        loop {
            let flush = async move {
                match flush_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let resume = async move {
                match accept_resume {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                message = outgoing.recv() => {
                    let Some(message) = message else { break };
                    self.on_outgoing(message);
                    if flush_at.is_none() && self.publisher.has_unflushed() {
                        flush_at = Some(Instant::now() + PROGRESS_FLUSH);
                    }
                }
                Some(event) = events.recv() => self.on_event(event),
                _ = flush => {
                    flush_at = None;
                    self.publisher.flush();
                }
                accepted = self.listener.accept(), if accept_resume.is_none() => match accepted {
                    Ok((stream, peer)) => self.on_accept(stream, peer),
                    Err(e) => {
                        // Out of file descriptors, typically: do not spin on it.
                        warn!("accepting a peer connection: {e}");
                        accept_resume = Some(Instant::now() + Duration::from_millis(200));
                    }
                },
                _ = resume => accept_resume = None,
                _ = housekeeping.tick() => {
                    let now = Instant::now();
                    self.publisher.expire(now.into_std());
                    self.peers.retain(|_, state| !matches!(state, PeerState::Paused { until, .. } if *until <= now));
                    self.shared.counters.peer_entries.store(self.peers.len() as u64, Relaxed);
                    self.quiet.expire(now);
                    if !self.fixed_addrs && now.saturating_duration_since(last_refresh) >= ADDRESS_REFRESH {
                        last_refresh = now;
                        self.refresh_addrs();
                    }
                }
                Some(()) = reap(&mut self.tasks) => {}
            }
        }
        // Aborts every link task: their sockets close, and peers see the links end.
        self.tasks.shutdown().await;
    }

    fn on_outgoing(&mut self, message: Outgoing) {
        let now = Instant::now().into_std();
        match message {
            Outgoing::Call { key, trace_id, settled } => {
                self.publisher.call(key, trace_id.to_bytes(), settled, now)
            }
            Outgoing::Progress { client, server, next_seq } => {
                self.publisher.progress(client, server, next_seq, now)
            }
            Outgoing::Settled { provisional, trace_id } => {
                self.publisher.settled(provisional.to_bytes(), trace_id.to_bytes(), now)
            }
            Outgoing::Want { ip } => self.on_want(ip),
        }
    }

    /// Dials `ip` unless linked, linking, or in its pause (then it is absent still).
    fn on_want(&mut self, ip: Ipv4Addr) {
        let now = Instant::now();
        match self.peers.get(&ip) {
            Some(PeerState::Linking | PeerState::Up) => return,
            Some(PeerState::Paused { until, why }) if *until > now => {
                self.answer(Incoming::Absent { ip, why: *why });
                return;
            }
            Some(PeerState::Paused { .. }) => {}
            None if self.peers.len() >= MAX_PEERS => {
                self.answer(Incoming::Absent { ip, why: Absence::NoDaemon });
                return;
            }
            None => {}
        }
        self.peers.insert(ip, PeerState::Linking);
        self.shared.counters.peer_entries.store(self.peers.len() as u64, Relaxed);
        let addrs = self.addrs.subscribe();
        self.tasks.spawn(link::subscribe(self.shared.clone(), ip, addrs));
    }

    /// Tells the pipeline without waiting (it reads this queue; a full one loses the answer,
    /// counted, and the span waits its full time instead).
    fn answer(&self, incoming: Incoming) {
        if self.shared.incoming.try_send(incoming).is_err() {
            self.shared.counters.answers_dropped.fetch_add(1, Relaxed);
        }
    }

    fn on_accept(&mut self, stream: tokio::net::TcpStream, peer: SocketAddr) {
        if self.inbound_open >= MAX_INBOUND {
            self.shared.counters.inbound_over_limit.fetch_add(1, Relaxed);
            return;
        }
        self.inbound_open += 1;
        self.next_id += 1;
        self.tasks.spawn(link::serve(self.shared.clone(), stream, peer, self.next_id));
    }

    fn on_event(&mut self, event: Event) {
        let now = Instant::now();
        let counters = &self.shared.counters;
        match event {
            Event::Linked { ip } => {
                self.peers.insert(ip, PeerState::Up);
                counters.links_made.fetch_add(1, Relaxed);
                info!("linked to the tango-tracer daemon at {ip}");
            }
            Event::LinkEnded { ip, why: Absence::Lost, error } => {
                // Dialed again at the next want, without a pause: a restarted daemon is back soon.
                self.peers.remove(&ip);
                info!("the link to the tango-tracer daemon at {ip} broke off: {error}");
            }
            Event::LinkEnded { ip, why, error } => {
                let until = now + self.options.retry_pause;
                self.peers.insert(ip, PeerState::Paused { until, why });
                let what = if why == Absence::Refused { "refused" } else { "absent" };
                if let Some(unlogged) = self.quiet.check(IpAddr::V4(ip), what, now) {
                    let pause = self.options.retry_pause;
                    let more = unlogged_text(unlogged);
                    match why {
                        Absence::Refused => warn!(
                            "the daemon at {ip}:{} refused the link or failed the shared key: {error}; \
                             trying again after {pause:?}{more}",
                            self.shared.port
                        ),
                        _ => info!(
                            "no tango-tracer daemon answers at {ip}:{} ({error}); its calls are not \
                             waited for; trying again after {pause:?}{more}",
                            self.shared.port
                        ),
                    }
                }
            }
            Event::RefusedInbound { peer, error } => {
                if let Some(unlogged) = self.quiet.check(peer.ip(), "refused inbound", now) {
                    warn!("refused a link from {peer}: {error}{}", unlogged_text(unlogged));
                }
            }
            Event::Subscribed { id, peer, addrs, feed } => {
                info!("the tango-tracer daemon at {peer} subscribed for calls to {addrs:?}");
                self.publisher.subscribe(id, peer, addrs, feed);
            }
            Event::Resubscribed { id, addrs } => self.publisher.resubscribe(id, addrs),
            Event::InboundEnded { id } => {
                if let Some(peer) = self.publisher.subscriber_peer(id) {
                    info!("the tango-tracer daemon at {peer} unsubscribed");
                }
                self.publisher.unsubscribe(id);
                self.inbound_open = self.inbound_open.saturating_sub(1);
            }
        }
        let up = self.peers.values().filter(|s| matches!(s, PeerState::Up)).count();
        counters.linked_peers.store(up as u64, Relaxed);
        counters.peer_entries.store(self.peers.len() as u64, Relaxed);
    }

    fn refresh_addrs(&mut self) {
        match addrs::local_ipv4() {
            Ok(addrs) => {
                self.addrs.send_if_modified(|current| {
                    let changed = *current != addrs;
                    if changed {
                        info!("this host's addresses are now {addrs:?}");
                        *current = addrs;
                    }
                    changed
                });
            }
            Err(e) => warn!("reading this host's addresses: {e}"),
        }
    }
}

/// The next finished task (never ready while there is none).
async fn reap(tasks: &mut JoinSet<()>) -> Option<()> {
    if tasks.is_empty() {
        return std::future::pending().await;
    }
    tasks.join_next().await.map(|_| ())
}
