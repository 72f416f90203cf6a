//! Peer links on loopback, with real TCP: each test's "hosts" are addresses of its own
//! 127.0.N.0/24 listening at one shared ephemeral port, as every host's daemon listens at 4320.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "tests")]

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    time::{Duration, Instant},
};

use opentelemetry::trace::TraceId;

use super::*;
use crate::crosshost::LinkKey;

/// Longest wait for anything a test expects.
const TIMEOUT: Duration = Duration::from_secs(10);
const PAUSE: Duration = Duration::from_millis(500);

fn key() -> PeerKey {
    PeerKey::from_secret(&[0x5a; 32]).unwrap()
}

fn host(net: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, net, host)
}

fn options(ip: Ipv4Addr, port: u16, key: PeerKey) -> PeerOptions {
    let mut options = PeerOptions::new(key);
    options.listen = SocketAddr::from((ip, port));
    options.addrs = Some(vec![ip]);
    options.retry_pause = PAUSE;
    options
}

/// A link for each address, all at one port.
fn start_hosts(ips: &[Ipv4Addr]) -> Vec<PeerLink> {
    'attempt: for _ in 0..20 {
        let first = PeerLink::start(options(ips[0], 0, key())).unwrap();
        let port = first.local_addr().port();
        let mut links = vec![first];
        for ip in &ips[1..] {
            match PeerLink::start(options(*ip, port, key())) {
                Ok(link) => links.push(link),
                // That port is taken at this address: another one.
                Err(_) => continue 'attempt,
            }
        }
        return links;
    }
    panic!("no common free port for {ips:?}");
}

async fn next(link: &mut PeerLink) -> Incoming {
    tokio::time::timeout(TIMEOUT, link.recv()).await.expect("a message within the timeout").expect("open")
}

fn stat(link: &PeerLink, name: &str) -> u64 {
    let mut stats = StageStats::default();
    link.report(&mut stats);
    stats.get("peers", name).unwrap_or_else(|| panic!("no counter {name}"))
}

/// Waits until a counter of `link` satisfies `ok`.
async fn wait_stat(link: &PeerLink, name: &str, ok: impl Fn(u64) -> bool) {
    let start = Instant::now();
    while !ok(stat(link, name)) {
        assert!(start.elapsed() < TIMEOUT, "peers.{name} stayed at {}", stat(link, name));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn call_key(client: Ipv4Addr, server: Ipv4Addr, seq: u32) -> LinkKey {
    LinkKey { client: SocketAddrV4::new(client, 40000), server: SocketAddrV4::new(server, 10000), seq }
}

fn trace(n: u8) -> TraceId {
    TraceId::from_bytes([n; 16])
}

/// Links `subscriber` to the daemon at `ip` and waits until that daemon serves it.
async fn link_up(subscriber: &mut PeerLink, publisher: &PeerLink, ip: Ipv4Addr, subscribers: u64) {
    subscriber.send(Outgoing::Want { ip });
    assert_eq!(next(subscriber).await, Incoming::Up { ip });
    wait_stat(publisher, "subscribers", |n| n == subscribers).await;
}

#[tokio::test]
async fn calls_progress_and_renames_stream_to_the_servers_host() {
    let (a, b) = (host(1, 2), host(1, 3));
    let [mut link_a, mut link_b] = <[PeerLink; 2]>::try_from(start_hosts(&[a, b])).ok().unwrap();
    link_up(&mut link_b, &link_a, a, 1).await;

    // A call to a third host is not B's business.
    link_a.send(Outgoing::Call { key: call_key(a, host(1, 9), 1), trace_id: trace(9), settled: true });
    let k = call_key(a, b, 1000);
    link_a.send(Outgoing::Call { key: k, trace_id: trace(1), settled: false });
    link_a.send(Outgoing::Progress { client: k.client, server: k.server, next_seq: 1200 });
    link_a.send(Outgoing::Settled { provisional: trace(1), trace_id: trace(2) });

    assert_eq!(next(&mut link_b).await, Incoming::Call { key: k, trace_id: trace(1), settled: false });
    let mut rest = vec![next(&mut link_b).await, next(&mut link_b).await];
    rest.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(
        rest,
        vec![
            Incoming::Progress { client: k.client, server: k.server, next_seq: 1200 },
            Incoming::Settled { provisional: trace(1), trace_id: trace(2) },
        ]
    );
    assert_eq!(stat(&link_a, "sent_calls"), 1);
    assert_eq!(stat(&link_b, "received_calls"), 1);
    assert_eq!(stat(&link_b, "linked_peers"), 1);
    assert!(stat(&link_b, "received_bytes") > 0 && stat(&link_a, "sent_bytes") > 0);
    link_a.stop().await;
    link_b.stop().await;
}

#[tokio::test]
async fn a_call_made_before_the_subscription_is_replayed() {
    let (a, b) = (host(2, 2), host(2, 3));
    let [mut link_a, mut link_b] = <[PeerLink; 2]>::try_from(start_hosts(&[a, b])).ok().unwrap();
    let k = call_key(a, b, 77);
    link_a.send(Outgoing::Call { key: k, trace_id: trace(3), settled: true });
    link_a.send(Outgoing::Progress { client: k.client, server: k.server, next_seq: 90 });
    wait_stat(&link_a, "replay_entries", |n| n == 1).await;
    wait_stat(&link_a, "progress_entries", |n| n == 1).await;

    link_b.send(Outgoing::Want { ip: a });
    assert_eq!(next(&mut link_b).await, Incoming::Up { ip: a });
    assert_eq!(next(&mut link_b).await, Incoming::Call { key: k, trace_id: trace(3), settled: true });
    assert_eq!(
        next(&mut link_b).await,
        Incoming::Progress { client: k.client, server: k.server, next_seq: 90 }
    );
    link_a.stop().await;
    link_b.stop().await;
}

#[tokio::test]
async fn progress_never_overtakes_a_call_it_covers() {
    let (a, b) = (host(3, 2), host(3, 3));
    let [mut link_a, mut link_b] = <[PeerLink; 2]>::try_from(start_hosts(&[a, b])).ok().unwrap();
    link_up(&mut link_b, &link_a, a, 1).await;
    // Every third request continues a trace; progress after each request.
    const REQUESTS: u32 = 3000;
    for i in 0..REQUESTS {
        let k = call_key(a, b, i * 100);
        if i % 3 == 0 {
            link_a.send(Outgoing::Call { key: k, trace_id: trace(4), settled: true });
        }
        link_a.send(Outgoing::Progress { client: k.client, server: k.server, next_seq: i * 100 + 100 });
    }
    let mut calls_seen = 0u32;
    loop {
        match next(&mut link_b).await {
            Incoming::Call { key, .. } => {
                assert_eq!(key.seq, calls_seen * 300, "calls in order");
                calls_seen += 1;
            }
            Incoming::Progress { next_seq, .. } => {
                // Every call before next_seq was seen.
                let calls_before = (next_seq / 100).div_ceil(3);
                assert!(calls_seen >= calls_before, "progress {next_seq} before call {calls_seen}");
                if next_seq == REQUESTS * 100 {
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(calls_seen, REQUESTS.div_ceil(3));
    // Coalesced: far fewer progress messages than updates.
    assert!(stat(&link_a, "sent_progress") < u64::from(REQUESTS), "{}", stat(&link_a, "sent_progress"));
    link_a.stop().await;
    link_b.stop().await;
}

#[tokio::test]
async fn three_hosts_each_hear_only_of_calls_to_them() {
    let (a, b, c) = (host(4, 2), host(4, 3), host(4, 4));
    let [link_a, mut link_b, mut link_c] = <[PeerLink; 3]>::try_from(start_hosts(&[a, b, c])).ok().unwrap();
    link_up(&mut link_b, &link_a, a, 1).await;
    link_up(&mut link_c, &link_a, a, 2).await;
    let (to_b, to_c) = (call_key(a, b, 5), call_key(a, c, 6));
    link_a.send(Outgoing::Call { key: to_b, trace_id: trace(5), settled: true });
    link_a.send(Outgoing::Call { key: to_c, trace_id: trace(6), settled: true });
    link_a.send(Outgoing::Settled { provisional: trace(7), trace_id: trace(8) });
    let settled = Incoming::Settled { provisional: trace(7), trace_id: trace(8) };
    assert_eq!(next(&mut link_b).await, Incoming::Call { key: to_b, trace_id: trace(5), settled: true });
    assert_eq!(next(&mut link_b).await, settled);
    assert_eq!(next(&mut link_c).await, Incoming::Call { key: to_c, trace_id: trace(6), settled: true });
    assert_eq!(next(&mut link_c).await, settled);

    // The chain goes on: C subscribes to B too, and hears of B's call to it.
    link_up(&mut link_c, &link_b, b, 1).await;
    let b_to_c = call_key(b, c, 9);
    link_b.send(Outgoing::Call { key: b_to_c, trace_id: trace(5), settled: true });
    assert_eq!(next(&mut link_c).await, Incoming::Call { key: b_to_c, trace_id: trace(5), settled: true });
    assert_eq!(stat(&link_c, "linked_peers"), 2);
    for mut link in [link_a, link_b, link_c] {
        link.stop().await;
    }
}

#[tokio::test]
async fn a_peer_without_the_key_is_refused_both_ways_and_hears_nothing() {
    let (a, b) = (host(5, 2), host(5, 3));
    let mut link_a = PeerLink::start(options(a, 0, key())).unwrap();
    let port = link_a.local_addr().port();
    let wrong = PeerKey::from_secret(&[0x5b; 32]).unwrap();
    let mut link_b = PeerLink::start(options(b, port, wrong)).unwrap();

    // A has a call for B before anything happens: it must not leak.
    link_a.send(Outgoing::Call { key: call_key(a, b, 1), trace_id: trace(1), settled: true });

    link_b.send(Outgoing::Want { ip: a });
    assert_eq!(next(&mut link_b).await, Incoming::Absent { ip: a, why: Absence::Refused });
    wait_stat(&link_a, "refused_inbound", |n| n == 1).await;
    link_a.send(Outgoing::Want { ip: b });
    assert_eq!(next(&mut link_a).await, Incoming::Absent { ip: b, why: Absence::Refused });
    wait_stat(&link_b, "refused_inbound", |n| n == 1).await;

    assert_eq!(stat(&link_a, "refused_outbound"), 1);
    assert_eq!(stat(&link_b, "refused_outbound"), 1);
    for link in [&link_a, &link_b] {
        assert_eq!(stat(link, "subscribers"), 0);
        assert_eq!(stat(link, "linked_peers"), 0);
        assert_eq!(stat(link, "sent_calls") + stat(link, "received_calls"), 0);
        assert_eq!(stat(link, "sent_subscribes") + stat(link, "received_subscribes"), 0);
    }
    assert!(link_b.incoming.as_mut().unwrap().try_recv().is_err());
    link_a.stop().await;
    link_b.stop().await;
}

#[tokio::test]
async fn bytes_that_are_not_a_handshake_are_refused() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let a = host(6, 2);
    let mut link_a = PeerLink::start(options(a, 0, key())).unwrap();
    let mut stream = tokio::net::TcpStream::connect(link_a.local_addr()).await.unwrap();
    // A frame of 48 bytes that is no Noise message of the key.
    let mut forged = vec![0u8, 48];
    forged.extend([0x42u8; 48]);
    stream.write_all(&forged).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut answer)).await.unwrap();
    assert!(read.is_err() || answer.is_empty(), "answered {answer:?}");
    wait_stat(&link_a, "refused_inbound", |n| n == 1).await;
    assert_eq!(stat(&link_a, "subscribers"), 0);

    // And a listener that answers with garbage is no daemon we believe.
    let b = host(6, 3);
    let fake = tokio::net::TcpListener::bind((b, link_a.local_addr().port())).await.unwrap();

    link_a.send(Outgoing::Want { ip: b });
    let (mut accepted, _) = tokio::time::timeout(TIMEOUT, fake.accept()).await.unwrap().unwrap();
    accepted.write_all(&forged).await.unwrap();
    assert_eq!(next(&mut link_a).await, Incoming::Absent { ip: b, why: Absence::Refused });
    assert_eq!(stat(&link_a, "refused_outbound"), 1);
    link_a.stop().await;
}

#[tokio::test]
async fn no_daemon_is_absent_at_once_and_one_started_later_is_linked_after_the_pause() {
    let (a, b) = (host(7, 2), host(7, 3));
    let mut link_a = PeerLink::start(options(a, 0, key())).unwrap();
    let port = link_a.local_addr().port();

    link_a.send(Outgoing::Want { ip: b });
    assert_eq!(next(&mut link_a).await, Incoming::Absent { ip: b, why: Absence::NoDaemon });
    let failed = Instant::now();
    // Answered by the refused connection, not by the connect timeout.
    assert_eq!(stat(&link_a, "connect_timeouts"), 0);
    assert_eq!(stat(&link_a, "connect_failures"), 1);

    let mut link_b = PeerLink::start(options(b, port, key())).unwrap();
    // Within the pause: still absent, without dialing.
    link_a.send(Outgoing::Want { ip: b });
    assert_eq!(next(&mut link_a).await, Incoming::Absent { ip: b, why: Absence::NoDaemon });
    assert_eq!(stat(&link_a, "connect_failures"), 1);

    // The pipeline asks once per held span; after the pause the daemon is linked.
    let up = loop {
        link_a.send(Outgoing::Want { ip: b });
        match tokio::time::timeout(Duration::from_millis(50), link_a.recv()).await {
            Ok(Some(Incoming::Up { ip })) => break (ip, Instant::now()),
            Ok(Some(Incoming::Absent { why: Absence::NoDaemon, .. })) | Err(_) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(failed.elapsed() < TIMEOUT, "not linked again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(up.0, b);
    assert!(up.1 - failed >= PAUSE, "dialed again after {:?}, before the pause", up.1 - failed);
    assert_eq!(stat(&link_a, "connect_failures"), 1);
    wait_stat(&link_b, "subscribers", |n| n == 1).await;
    link_a.stop().await;
    link_b.stop().await;
}

#[tokio::test]
async fn a_daemon_restarted_mid_run_is_lost_then_linked_again() {
    let (a, b) = (host(8, 2), host(8, 3));
    let [mut link_a, mut link_b] = <[PeerLink; 2]>::try_from(start_hosts(&[a, b])).ok().unwrap();
    let port = link_a.local_addr().port();
    link_up(&mut link_b, &link_a, a, 1).await;

    link_a.stop().await;
    assert_eq!(next(&mut link_b).await, Incoming::Absent { ip: a, why: Absence::Lost });
    assert_eq!(stat(&link_b, "links_broken"), 1);
    assert_eq!(stat(&link_b, "linked_peers"), 0);

    let mut link_a = PeerLink::start(options(a, port, key())).unwrap();
    // A lost link is dialed again at the next want, without a pause.
    link_up(&mut link_b, &link_a, a, 1).await;
    let k = call_key(a, b, 31);
    link_a.send(Outgoing::Call { key: k, trace_id: trace(2), settled: true });
    assert_eq!(next(&mut link_b).await, Incoming::Call { key: k, trace_id: trace(2), settled: true });
    assert_eq!(stat(&link_b, "links_made"), 2);
    link_a.stop().await;
    link_b.stop().await;
}

#[tokio::test]
async fn wants_are_deduplicated() {
    let (a, b) = (host(9, 2), host(9, 3));
    let [mut link_a, mut link_b] = <[PeerLink; 2]>::try_from(start_hosts(&[a, b])).ok().unwrap();
    for _ in 0..50 {
        link_b.send(Outgoing::Want { ip: a });
    }
    assert_eq!(next(&mut link_b).await, Incoming::Up { ip: a });
    wait_stat(&link_a, "subscribers", |n| n == 1).await;
    for _ in 0..50 {
        link_b.send(Outgoing::Want { ip: a });
    }
    // A want answered at once, after those: they were handled by then.
    let nobody = host(9, 9);
    link_b.send(Outgoing::Want { ip: nobody });
    assert_eq!(next(&mut link_b).await, Incoming::Absent { ip: nobody, why: Absence::NoDaemon });
    assert_eq!(stat(&link_a, "subscriptions_served"), 1);
    assert_eq!(stat(&link_b, "links_made"), 1);
    link_a.stop().await;
    link_b.stop().await;
}

/// What a link and a call cost on the wire (the figures BENCHMARKS.md quotes): the handshake is
/// two 50-byte frames, the subscription one of 24; a call alone in its frame 54 bytes.
#[tokio::test]
async fn wire_cost_of_a_link_and_a_call() {
    let (a, b) = (host(10, 2), host(10, 3));
    let [mut link_a, mut link_b] = <[PeerLink; 2]>::try_from(start_hosts(&[a, b])).ok().unwrap();
    link_up(&mut link_b, &link_a, a, 1).await;
    // Beats may cross at any time (19 bytes each).
    let beats = |link: &PeerLink, direction: &str| 19 * stat(link, &format!("{direction}_beats"));
    assert_eq!(stat(&link_a, "received_bytes"), 50 + 24 + beats(&link_a, "received"));
    assert_eq!(stat(&link_b, "sent_bytes"), 50 + 24 + beats(&link_b, "sent"));
    assert_eq!(stat(&link_a, "sent_bytes"), 50 + beats(&link_a, "sent"));
    let k = LinkKey {
        client: SocketAddrV4::new(a, 40312),
        server: SocketAddrV4::new(b, 10000),
        seq: 3_141_592_653,
    };
    link_a.send(Outgoing::Call { key: k, trace_id: trace(1), settled: true });
    assert!(matches!(next(&mut link_b).await, Incoming::Call { .. }));
    assert_eq!(stat(&link_a, "sent_bytes"), 50 + 54 + beats(&link_a, "sent"));
    link_a.stop().await;
    link_b.stop().await;
}

#[tokio::test]
async fn a_subscriber_whose_addresses_change_hears_of_calls_to_the_new_ones() {
    let (a, b, b2) = (host(11, 2), host(11, 3), host(11, 4));
    let [mut link_a, mut link_b] = <[PeerLink; 2]>::try_from(start_hosts(&[a, b])).ok().unwrap();
    let early = call_key(a, b2, 1);
    link_a.send(Outgoing::Call { key: early, trace_id: trace(1), settled: true });
    wait_stat(&link_a, "replay_entries", |n| n == 1).await;
    link_up(&mut link_b, &link_a, a, 1).await;

    link_b.set_addrs(vec![b, b2]);
    // The call made before the change is replayed, then live calls to the new address follow.
    assert_eq!(next(&mut link_b).await, Incoming::Call { key: early, trace_id: trace(1), settled: true });
    let late = call_key(a, b2, 2);
    link_a.send(Outgoing::Call { key: late, trace_id: trace(2), settled: true });
    assert_eq!(next(&mut link_b).await, Incoming::Call { key: late, trace_id: trace(2), settled: true });
    assert_eq!(stat(&link_a, "received_subscribes"), 2);
    link_a.stop().await;
    link_b.stop().await;
}

/// A link that goes silent without closing (a host gone) is found broken by its beats, both ways.
#[tokio::test]
async fn a_silent_link_is_lost_both_ways() {
    let (a, b) = (host(12, 2), host(12, 3));
    let beat = Duration::from_millis(100);
    let mut options_a = options(a, 0, key());
    options_a.beat = beat;
    let mut link_a = PeerLink::start(options_a).unwrap();
    let port = link_a.local_addr().port();
    let counters = Counters::default();

    // A daemon at B that holds the key, takes the subscription, then says nothing.
    let silent = tokio::net::TcpListener::bind((b, port)).await.unwrap();
    link_a.send(Outgoing::Want { ip: b });
    let (stream, _) = tokio::time::timeout(TIMEOUT, silent.accept()).await.unwrap().unwrap();
    let mut session = wire::respond(stream, &key(), TIMEOUT, &counters).await.unwrap();
    let mut subscribe = Vec::new();
    session.recv(&mut subscribe, &counters).await.unwrap();
    assert_eq!(subscribe, vec![wire::Message::Subscribe { addrs: vec![a] }]);
    assert_eq!(next(&mut link_a).await, Incoming::Up { ip: b });
    let up = Instant::now();
    assert_eq!(next(&mut link_a).await, Incoming::Absent { ip: b, why: Absence::Lost });
    assert!(up.elapsed() >= beat * 3, "lost after {:?}", up.elapsed());
    assert_eq!(stat(&link_a, "links_broken"), 1);

    // A subscriber at B that goes silent after subscribing: A stops serving it.
    let stream = tokio::net::TcpStream::connect((a, port)).await.unwrap();
    let mut session = wire::initiate(stream, &key(), TIMEOUT, &counters).await.unwrap();
    let mut batch = Vec::new();
    wire::Message::Subscribe { addrs: vec![b] }.encode(&mut batch);
    session.send(&batch, &counters).await.unwrap();
    wait_stat(&link_a, "subscribers", |n| n == 1).await;
    wait_stat(&link_a, "subscribers", |n| n == 0).await;
    drop(session);
    link_a.stop().await;
}
