//! The two kinds of link task: one that subscribes to the daemon on a client's host and hands
//! what it streams to the pipeline ([`subscribe`]), and one per daemon subscribed to us that
//! writes it our stream ([`serve`]).

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use opentelemetry::trace::TraceId;
use tokio::{
    net::TcpStream,
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{
    counters::Counters,
    key::PeerKey,
    publish::{Feed, SubscriberId},
    wire::{self, BATCH_BYTES, HandshakeError, Message, Session},
};
use crate::crosshost::{Absence, Incoming};

/// Longest time one frame may take to leave.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages queued for one subscriber (a replay is one).
pub const FEED_QUEUE: usize = 4096;
/// Most addresses a subscriber may name.
const MAX_SUBSCRIBED_ADDRS: usize = 256;

/// What every link task needs.
pub struct Shared {
    pub key: PeerKey,
    /// Every daemon listens at this port.
    pub port: u16,
    pub connect_timeout: Duration,
    /// A link says something at least this often, so its peer knows it is alive.
    pub beat: Duration,
    /// A link silent this long is broken.
    pub silence: Duration,
    pub counters: Arc<Counters>,
    pub incoming: mpsc::Sender<Incoming>,
    pub events: mpsc::UnboundedSender<Event>,
    pub cancel: CancellationToken,
}

/// What link tasks tell the hub.
#[derive(Debug)]
pub enum Event {
    /// The daemon at `ip` proved the key and took our subscription.
    Linked { ip: Ipv4Addr },
    /// The link to `ip` was not made, or broke.
    LinkEnded { ip: Ipv4Addr, why: Absence, error: String },
    /// A daemon that dialed us did not prove the key.
    RefusedInbound { peer: SocketAddr, error: String },
    /// A daemon subscribed to us.
    Subscribed { id: SubscriberId, peer: SocketAddr, addrs: Vec<Ipv4Addr>, feed: mpsc::Sender<Feed> },
    /// A subscriber's addresses changed.
    Resubscribed { id: SubscriberId, addrs: Vec<Ipv4Addr> },
    /// An inbound connection ended (subscribed or not).
    InboundEnded { id: SubscriberId },
}

/// Subscribes to the daemon at `ip` and hands its stream to the pipeline until the link breaks
/// or the peer link stops. Tells the pipeline `Up` or `Absent` in every case but the stop.
pub async fn subscribe(shared: Arc<Shared>, ip: Ipv4Addr, mut addrs: watch::Receiver<Vec<Ipv4Addr>>) {
    let linked = tokio::select! {
        _ = shared.cancel.cancelled() => return,
        linked = connect(&shared, ip, &mut addrs) => linked,
    };
    let session = match linked {
        Ok(session) => session,
        Err((why, error)) => {
            let _ = shared.events.send(Event::LinkEnded { ip, why, error });
            let _ = shared.incoming.send(Incoming::Absent { ip, why }).await;
            return;
        }
    };
    let _ = shared.events.send(Event::Linked { ip });
    if shared.incoming.send(Incoming::Up { ip }).await.is_err() {
        return;
    }
    let error = tokio::select! {
        _ = shared.cancel.cancelled() => return,
        error = follow(&shared, session, ip, &mut addrs) => error,
    };
    shared.counters.links_broken.fetch_add(1, Relaxed);
    let _ = shared.events.send(Event::LinkEnded { ip, why: Absence::Lost, error: error.clone() });
    let _ = shared.incoming.send(Incoming::Absent { ip, why: Absence::Lost }).await;
}

/// Connects, proves the key and subscribes, all within the connect timeout.
async fn connect(
    shared: &Shared,
    ip: Ipv4Addr,
    addrs: &mut watch::Receiver<Vec<Ipv4Addr>>,
) -> Result<Session, (Absence, String)> {
    let counters = &shared.counters;
    let deadline = Instant::now() + shared.connect_timeout;
    let stream = match tokio::time::timeout_at(deadline, TcpStream::connect((ip, shared.port))).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            counters.connect_failures.fetch_add(1, Relaxed);
            return Err((Absence::NoDaemon, e.to_string()));
        }
        Err(_) => {
            counters.connect_timeouts.fetch_add(1, Relaxed);
            return Err((Absence::NoDaemon, format!("no connection within {:?}", shared.connect_timeout)));
        }
    };
    let _ = stream.set_nodelay(true);
    let remaining = deadline.saturating_duration_since(Instant::now());
    let mut session = match wire::initiate(stream, &shared.key, remaining, counters).await {
        Ok(session) => session,
        Err(HandshakeError::Timeout(_)) => {
            counters.connect_timeouts.fetch_add(1, Relaxed);
            let error = format!("no handshake within {:?}", shared.connect_timeout);
            return Err((Absence::NoDaemon, error));
        }
        Err(e) => {
            counters.refused_outbound.fetch_add(1, Relaxed);
            return Err((Absence::Refused, e.to_string()));
        }
    };
    let subscribe = Message::Subscribe { addrs: addrs.borrow_and_update().clone() };
    send(&mut session, &[subscribe], counters).await.map_err(|e| (Absence::NoDaemon, e))?;
    Ok(session)
}

/// Hands the stream to the pipeline; returns why it ended.
async fn follow(
    shared: &Shared,
    mut session: Session,
    ip: Ipv4Addr,
    addrs: &mut watch::Receiver<Vec<Ipv4Addr>>,
) -> String {
    let counters = &shared.counters;
    let mut messages = Vec::new();
    let mut last_read = Instant::now();
    let mut last_write = Instant::now();
    let mut tick = tokio::time::interval(shared.beat / 2);
    loop {
        tokio::select! {
            received = session.recv(&mut messages, counters) => {
                if let Err(e) = received {
                    return e.to_string();
                }
                last_read = Instant::now();
                for message in messages.drain(..) {
                    counters.received.count(&message);
                    let incoming = match message {
                        Message::Call { key, trace_id, settled } => {
                            Incoming::Call { key, trace_id: TraceId::from_bytes(trace_id), settled }
                        }
                        Message::Progress { client, server, next_seq } => {
                            Incoming::Progress { client, server, next_seq }
                        }
                        Message::Settled { provisional, trace_id } => Incoming::Settled {
                            provisional: TraceId::from_bytes(provisional),
                            trace_id: TraceId::from_bytes(trace_id),
                        },
                        Message::Beat | Message::Subscribe { .. } => continue,
                    };
                    // Waits when the pipeline is behind: the publisher then waits on TCP.
                    if shared.incoming.send(incoming).await.is_err() {
                        return "the daemon is stopping".into();
                    }
                }
            }
            changed = addrs.changed() => {
                if changed.is_err() {
                    return "the daemon is stopping".into();
                }
                let subscribe = Message::Subscribe { addrs: addrs.borrow_and_update().clone() };
                log::info!("telling the daemon at {ip} our addresses changed: {subscribe:?}");
                if let Err(e) = send(&mut session, &[subscribe], counters).await {
                    return e;
                }
                last_write = Instant::now();
            }
            _ = tick.tick() => {
                if let Some(error) = keep_alive(shared, &mut session, last_read, &mut last_write).await {
                    return error;
                }
            }
        }
    }
}

/// Serves one daemon that dialed us: the handshake, its subscription, then our stream.
pub async fn serve(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, id: SubscriberId) {
    let ended = || {
        let _ = shared.events.send(Event::InboundEnded { id });
    };
    let accepted = tokio::select! {
        _ = shared.cancel.cancelled() => return ended(),
        accepted = accept(&shared, stream) => accepted,
    };
    let (session, addrs) = match accepted {
        Ok(accepted) => accepted,
        Err(error) => {
            shared.counters.refused_inbound.fetch_add(1, Relaxed);
            let _ = shared.events.send(Event::RefusedInbound { peer, error });
            return ended();
        }
    };
    let (feed, feed_rx) = mpsc::channel(FEED_QUEUE);
    let _ = shared.events.send(Event::Subscribed { id, peer, addrs, feed });
    tokio::select! {
        _ = shared.cancel.cancelled() => {}
        error = publish(&shared, session, feed_rx, id) => log::debug!("the link from {peer} ended: {error}"),
    }
    ended();
}

/// The handshake and the first message, which must be a subscription.
async fn accept(shared: &Shared, stream: TcpStream) -> Result<(Session, Vec<Ipv4Addr>), String> {
    let _ = stream.set_nodelay(true);
    let deadline = Instant::now() + shared.connect_timeout;
    let counters = &shared.counters;
    let mut session = wire::respond(stream, &shared.key, shared.connect_timeout, counters)
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = Vec::new();
    match tokio::time::timeout_at(deadline, session.recv(&mut messages, counters)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("no subscription within {:?}", shared.connect_timeout)),
    }
    for message in &messages {
        counters.received.count(message);
    }
    match messages.into_iter().next() {
        Some(Message::Subscribe { mut addrs }) => {
            addrs.truncate(MAX_SUBSCRIBED_ADDRS);
            Ok((session, addrs))
        }
        other => Err(format!("expected a subscription, got {other:?}")),
    }
}

/// Writes the subscriber's feed and reads its updates; returns why it ended.
async fn publish(
    shared: &Shared,
    mut session: Session,
    mut feed_rx: mpsc::Receiver<Feed>,
    id: SubscriberId,
) -> String {
    let counters = &shared.counters;
    let mut messages = Vec::new();
    let mut batch = Vec::with_capacity(BATCH_BYTES + 64);
    let mut last_read = Instant::now();
    let mut last_write = Instant::now();
    let mut tick = tokio::time::interval(shared.beat / 2);
    loop {
        tokio::select! {
            feed = feed_rx.recv() => {
                let Some(feed) = feed else {
                    return "cut off: it did not keep up".into();
                };
                if let Err(e) = write_feed(&mut session, feed, &mut feed_rx, &mut batch, counters).await {
                    return e;
                }
                last_write = Instant::now();
            }
            received = session.recv(&mut messages, counters) => {
                if let Err(e) = received {
                    return e.to_string();
                }
                last_read = Instant::now();
                for message in messages.drain(..) {
                    counters.received.count(&message);
                    if let Message::Subscribe { mut addrs } = message {
                        addrs.truncate(MAX_SUBSCRIBED_ADDRS);
                        let _ = shared.events.send(Event::Resubscribed { id, addrs });
                    }
                }
            }
            _ = tick.tick() => {
                if let Some(error) = keep_alive(shared, &mut session, last_read, &mut last_write).await {
                    return error;
                }
            }
        }
    }
}

/// Writes `first` and whatever else is queued, in frames of about [`BATCH_BYTES`].
async fn write_feed(
    session: &mut Session,
    first: Feed,
    feed_rx: &mut mpsc::Receiver<Feed>,
    batch: &mut Vec<u8>,
    counters: &Counters,
) -> Result<(), String> {
    batch.clear();
    let mut next = Some(first);
    while let Some(feed) = next {
        match feed {
            Feed::One(message) => push(session, &message, batch, counters).await?,
            Feed::Replay(messages) => {
                for message in &messages {
                    push(session, message, batch, counters).await?;
                }
            }
        }
        next = feed_rx.try_recv().ok();
    }
    if !batch.is_empty() {
        send_frame(session, batch, counters).await?;
    }
    Ok(())
}

/// Adds a message to the batch; sends the batch once it is full.
async fn push(
    session: &mut Session,
    message: &Message,
    batch: &mut Vec<u8>,
    counters: &Counters,
) -> Result<(), String> {
    counters.sent.count(message);
    message.encode(batch);
    if batch.len() >= BATCH_BYTES {
        send_frame(session, batch, counters).await?;
        batch.clear();
    }
    Ok(())
}

/// Sends a beat when nothing was written for a while; an error when nothing was read for too long.
async fn keep_alive(
    shared: &Shared,
    session: &mut Session,
    last_read: Instant,
    last_write: &mut Instant,
) -> Option<String> {
    if last_read.elapsed() > shared.silence {
        return Some(format!("nothing heard for {:?}", shared.silence));
    }
    if last_write.elapsed() >= shared.beat {
        if let Err(e) = send(session, &[Message::Beat], &shared.counters).await {
            return Some(e);
        }
        *last_write = Instant::now();
    }
    None
}

async fn send(session: &mut Session, messages: &[Message], counters: &Counters) -> Result<(), String> {
    let mut batch = Vec::new();
    for message in messages {
        counters.sent.count(message);
        message.encode(&mut batch);
    }
    send_frame(session, &batch, counters).await
}

async fn send_frame(session: &mut Session, batch: &[u8], counters: &Counters) -> Result<(), String> {
    match tokio::time::timeout(WRITE_TIMEOUT, session.send(batch, counters)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("a frame took longer than {WRITE_TIMEOUT:?} to leave")),
    }
}
