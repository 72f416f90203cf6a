//! The exporter against the real OTLP receiver: batching across resources, both protocols,
//! backends that are down or refuse, outages within a memory budget, flush on shutdown.

use std::time::{Duration, Instant};

use tracer_export::{
    Destination, DestinationStats, ExportConfig, ExportHub, SpanRecord,
    testing::{
        client_resource, device_resource, many_spans, reference_command_inout, reference_command_inout_error,
    },
    tree::render_trees,
};

use crate::otlp_receiver::{OtlpReceiver, Protocol, ReceiverOptions, free_local_addr};

const WAIT: Duration = Duration::from_secs(20);

/// Quick flushes and retries, so that tests take milliseconds.
fn fast_config() -> ExportConfig {
    ExportConfig {
        flush_interval: Duration::from_millis(200),
        request_timeout: Duration::from_secs(2),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        shutdown_timeout: Duration::from_secs(5),
        ..ExportConfig::default()
    }
}

/// The command_inout pair (client process + device test/demo/1), a failed call of a device
/// server's own process, and one more span of test/demo/1: four spans of three resources.
fn three_resources() -> Vec<SpanRecord> {
    let mut spans = reference_command_inout();
    spans.push(reference_command_inout_error());
    let same_device = device_resource("Demo", "test/demo/1", "Demo/Demo", 17811);
    spans.extend(many_spans(&same_device, 1, 42));
    spans
}

fn hub_submit_all(hub: &ExportHub, spans: Vec<SpanRecord>, destination: &Destination) {
    for span in spans {
        hub.submit(span, std::slice::from_ref(destination));
    }
}

/// Polls the hub's counters until `done` holds.
async fn wait_stats(
    hub: &ExportHub,
    destination: &Destination,
    done: impl Fn(&DestinationStats) -> bool,
) -> DestinationStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = hub.stats().get(destination).cloned().unwrap_or_default();
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "stats never got there: {stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn three_resources_in_one_request(protocol: Protocol) {
    let receiver = OtlpReceiver::start().await;
    let destination = match protocol {
        Protocol::Http => Destination::parse("http", &receiver.http_endpoint()),
        Protocol::Grpc => Destination::parse("grpc", &receiver.grpc_endpoint()),
    }
    .expect("receiver endpoint parses");
    let hub = ExportHub::start(fast_config());
    hub_submit_all(&hub, three_resources(), &destination);

    let spans = receiver.wait_for(|s| s.len() >= 4, WAIT).await;
    assert_eq!(receiver.request_log().len(), 1, "{:?}", receiver.request_log());
    let request = &receiver.request_log()[0];
    assert_eq!((request.protocol, request.resource_spans, request.spans), (protocol, 3, 4));
    assert!(request.gzip, "requests are compressed by default");
    assert!(spans.iter().all(|s| s.transport.as_deref() == Some(protocol.name())));

    // The spans arrive as the native telemetry shows them.
    let server = spans.iter().find(|s| s.kind == "SERVER" && s.name.ends_with("command_inout_4"));
    let server = server.expect("server span received");
    assert_eq!(server.parent_span_id, "5d5c121137108f77");
    assert_eq!(server.service(), "Demo/test/demo/1");
    assert_eq!(server.attributes.get_i64("tango.client_ident.pid"), Some(17915));
    assert_eq!(server.resource.get_i64("tango.process.id"), Some(17811));
    assert_eq!((server.scope.name.as_str(), server.scope.version.as_str()), ("tango.cpp", "10.3.3"));
    assert_eq!(server.duration_us, 238.205);
    let failed = spans.iter().find(|s| s.is_error()).expect("error span received");
    assert_eq!(failed.status.message, "exception caught (see associated event)");
    assert_eq!(failed.events.len(), 1);
    assert_eq!(failed.events[0].name, "exception caught");
    assert_eq!(failed.events[0].attributes.get_str("exception.type"), Some("Tango::DevFailed"));

    let tree = render_trees(&spans);
    assert!(
        tree.contains(
            "  - [CLIENT] Tango::Connection::command_inout  trace=b2a1fcf8 span=5d5c1211 parent=- \
             svc=tango.telemetry.default client:17915"
        ),
        "{tree}"
    );
    assert!(
        tree.contains(
            "    - [SERVER] Tango::Device_4Impl::command_inout_4  trace=b2a1fcf8 span=9621b4e8 \
             parent=5d5c1211 svc=Demo/test/demo/1 server:17811"
        ),
        "{tree}"
    );

    let stats = hub.shutdown().await.get(&destination).cloned().unwrap_or_default();
    assert_eq!((stats.spans_delivered, stats.requests_sent, stats.requests_failed), (4, 1, 0));
}

#[tokio::test]
async fn http_sends_three_resources_in_one_request() {
    three_resources_in_one_request(Protocol::Http).await;
}

#[tokio::test]
async fn grpc_sends_three_resources_in_one_request() {
    three_resources_in_one_request(Protocol::Grpc).await;
}

#[tokio::test]
async fn uncompressed_requests_are_accepted_too() {
    let receiver = OtlpReceiver::start().await;
    let hub = ExportHub::start(ExportConfig { gzip: false, ..fast_config() });
    let http = Destination::OtlpHttp { endpoint: receiver.http_endpoint() };
    // Tango's spelling of a gRPC endpoint.
    let grpc = Destination::parse("grpc", &receiver.grpc_endpoint().replace("http://", "grpc://"))
        .expect("grpc:// parses");
    for span in reference_command_inout() {
        hub.submit(span, &[http.clone(), grpc.clone()]);
    }
    receiver.wait_for(|s| s.len() >= 4, WAIT).await;
    assert_eq!(receiver.requests_by(Protocol::Http), 1);
    assert_eq!(receiver.requests_by(Protocol::Grpc), 1);
    assert!(receiver.request_log().iter().all(|r| !r.gzip && r.resource_spans == 2));
    hub.shutdown().await;
}

/// A backend that is down: attempts fail and are counted, the spans are kept (nothing panics,
/// nothing is given up), and when it comes up they arrive with those submitted since.
async fn backend_comes_up_later(protocol: Protocol) {
    let http_addr = free_local_addr().expect("free port");
    let grpc_addr = free_local_addr().expect("free port");
    let destination = match protocol {
        Protocol::Http => Destination::OtlpHttp { endpoint: format!("http://{http_addr}/v1/traces") },
        Protocol::Grpc => Destination::OtlpGrpc { endpoint: format!("http://{grpc_addr}") },
    };
    let hub = ExportHub::start(fast_config());
    hub_submit_all(&hub, reference_command_inout(), &destination);

    let stats = wait_stats(&hub, &destination, |s| s.requests_failed >= 2).await;
    assert_eq!((stats.spans_delivered, stats.dropped.total(), stats.spans_held), (0, 0, 2));
    assert!(stats.failing);
    let error = stats.last_error.unwrap_or_default();
    let port = match protocol {
        Protocol::Http => http_addr.port(),
        Protocol::Grpc => grpc_addr.port(),
    };
    assert!(error.contains(&port.to_string()), "the error names the endpoint: {error}");

    let receiver = OtlpReceiver::start_with(ReceiverOptions { http: http_addr, grpc: grpc_addr, out: None })
        .expect("receiver starts on the reserved ports");
    hub_submit_all(&hub, vec![reference_command_inout_error()], &destination);
    let spans = receiver.wait_for(|s| s.len() >= 3, WAIT).await;
    assert_eq!(spans.iter().filter(|s| s.is_error()).count(), 1);
    let stats = wait_stats(&hub, &destination, |s| s.spans_delivered == 3).await;
    assert_eq!((stats.dropped.total(), stats.spans_held, stats.failing), (0, 0, false));
    hub.shutdown().await;
    assert_eq!(receiver.spans().len(), 3, "nothing sent twice");
}

#[tokio::test]
async fn http_backend_down_then_up() {
    backend_comes_up_later(Protocol::Http).await;
}

#[tokio::test]
async fn grpc_backend_down_then_up() {
    backend_comes_up_later(Protocol::Grpc).await;
}

/// A backend answering "unavailable" is retried with backoff until it accepts.
#[tokio::test]
async fn refused_requests_are_retried() {
    let receiver = OtlpReceiver::start().await;
    let hub = ExportHub::start(fast_config());
    for (protocol, destination) in [
        (Protocol::Http, Destination::OtlpHttp { endpoint: receiver.http_endpoint() }),
        (Protocol::Grpc, Destination::OtlpGrpc { endpoint: receiver.grpc_endpoint() }),
    ] {
        receiver.clear();
        receiver.fail_next(2);
        hub_submit_all(&hub, reference_command_inout(), &destination);
        receiver.wait_for(|s| s.len() >= 2, WAIT).await;
        assert_eq!(receiver.refused(), 2, "{protocol:?}");
        assert_eq!(receiver.requests(), 1, "{protocol:?}");
        let stats = wait_stats(&hub, &destination, |s| s.spans_delivered == 2).await;
        assert_eq!((stats.requests_sent, stats.requests_failed, stats.dropped.total()), (3, 2, 0));
    }
    hub.shutdown().await;
}

/// Everything queued when shutdown starts reaches the backend, in full batches.
#[tokio::test]
async fn shutdown_flushes_everything_queued() {
    let receiver = OtlpReceiver::start().await;
    let destination = Destination::OtlpGrpc { endpoint: receiver.grpc_endpoint() };
    let hub = ExportHub::start(ExportConfig {
        // Nothing would leave before shutdown but for full batches.
        flush_interval: Duration::from_secs(3600),
        max_batch: 100,
        shutdown_timeout: Duration::from_secs(20),
        ..fast_config()
    });
    let resources: Vec<_> =
        (1..=5).map(|i| device_resource("Demo", &format!("test/demo/{i}"), "Demo/Demo", 100 + i)).collect();
    for round in 0..200u64 {
        for (i, resource) in resources.iter().enumerate() {
            let span = many_spans(resource, 1, round * 10 + i as u64 + 1).remove(0);
            hub.submit(span, std::slice::from_ref(&destination));
        }
    }
    hub.submit(client_span(), std::slice::from_ref(&destination));
    let stats = hub.shutdown().await.total();

    // Shutdown returned: everything must already be there.
    let spans = receiver.spans();
    assert_eq!(spans.len(), 1001);
    let log = receiver.request_log();
    assert_eq!(log.len(), 11, "ten full batches and the rest");
    assert!(log[..10].iter().all(|r| r.spans == 100 && r.resource_spans == 5), "{log:?}");
    assert_eq!((log[10].spans, log[10].resource_spans), (1, 1));
    assert_eq!((stats.spans_delivered, stats.dropped.total(), stats.spans_held), (1001, 0, 0));
}

fn client_span() -> SpanRecord {
    many_spans(&client_resource(4242), 1, 9999).remove(0)
}

/// A full budget drops the oldest and counts; a dead backend at shutdown counts what it held;
/// neither blocks or panics.
#[tokio::test]
async fn budget_and_dead_backend_are_counted() {
    let dead = free_local_addr().expect("free port");
    let destination = Destination::OtlpHttp { endpoint: format!("http://{dead}/v1/traces") };
    let spans = many_spans(&client_resource(1), 25, 1);
    let one = tracer_export::span_bytes(&spans[0]);
    let hub = ExportHub::start(ExportConfig {
        flush_interval: Duration::from_secs(3600),
        max_batch: 1000,
        max_backlog_bytes: 10 * one,
        shutdown_timeout: Duration::from_millis(500),
        ..fast_config()
    });
    let started = Instant::now();
    hub_submit_all(&hub, spans, &destination);
    assert!(started.elapsed() < Duration::from_secs(1), "submit never waits");
    let stats = hub.stats().get(&destination).cloned().unwrap_or_default();
    assert_eq!((stats.dropped.budget_oldest, stats.spans_held, stats.bytes_held), (15, 10, 10 * one));

    let stats = hub.shutdown().await.get(&destination).cloned().unwrap_or_default();
    assert_eq!((stats.spans_delivered, stats.dropped.budget_oldest, stats.dropped.at_shutdown), (0, 15, 10));
    assert_eq!((stats.spans_held, stats.unaccounted()), (0, 0));
}

/// A shutdown whose backend never answers ends at its timeout and counts what it could not
/// send.
#[tokio::test]
async fn shutdown_times_out_on_a_hanging_backend() {
    // A listener that accepts (in the kernel's backlog) but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    let destination = Destination::OtlpHttp { endpoint: format!("http://{addr}/v1/traces") };
    let hub = ExportHub::start(ExportConfig {
        request_timeout: Duration::from_secs(30),
        shutdown_timeout: Duration::from_millis(500),
        ..fast_config()
    });
    hub_submit_all(&hub, reference_command_inout(), &destination);
    let started = Instant::now();
    let stats = hub.shutdown().await.get(&destination).cloned().unwrap_or_default();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!((stats.spans_delivered, stats.dropped.at_shutdown, stats.spans_held), (0, 2, 0));
    drop(silent);
}

/// The receiver and the hub from a plain `#[test]` with a runtime of its own.
#[test]
fn works_from_a_plain_test() {
    let receiver = OtlpReceiver::start_blocking();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let hub = ExportHub::start_on(fast_config(), runtime.handle().clone());
    let destination = Destination::OtlpHttp { endpoint: receiver.http_endpoint() };
    hub_submit_all(&hub, reference_command_inout(), &destination);
    let spans = receiver.wait_for_blocking(|s| s.len() == 2, WAIT);
    assert_eq!(spans[0].trace_id, "b2a1fcf8dbcb987a87fc0305c3fe9fde");
    runtime.block_on(hub.shutdown());
}

/// The receiver's file holds what it received, readable as a store.
#[tokio::test]
async fn receiver_file_is_a_store() {
    let dir = tracer_export::testing::TempDir::new("receiver-out");
    let out = dir.path().join("received/spans.jsonl");
    let receiver = OtlpReceiver::start_with(ReceiverOptions { out: Some(out.clone()), ..Default::default() })
        .expect("receiver starts");
    let hub = ExportHub::start(fast_config());
    let destination = Destination::OtlpHttp { endpoint: receiver.http_endpoint() };
    hub_submit_all(&hub, reference_command_inout(), &destination);
    receiver.wait_for(|s| s.len() == 2, WAIT).await;
    hub.shutdown().await;
    receiver.stop();
    let stored = tracer_export::read_store(&out).expect("store reads");
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].transport.as_deref(), Some("http"));
}

/// The console exporter writes one line per span and counts them.
#[tokio::test]
async fn console_exports_each_span() {
    let hub = ExportHub::start(fast_config());
    let destination = Destination::parse("console", "cerr").expect("console parses");
    hub_submit_all(&hub, reference_command_inout(), &destination);
    let stats = hub.shutdown().await.get(&destination).cloned().unwrap_or_default();
    assert_eq!((stats.spans_delivered, stats.dropped.total()), (2, 0));
}

/// Spans per tick of [`SteadyLoad`], and its tick: 500 spans/s, submitted as the daemon does
/// (a burst at each drain of its ring buffer).
const LOAD_PER_TICK: u64 = 10;
const LOAD_TICK: Duration = Duration::from_millis(20);

/// Spans of one device submitted at a steady rate, numbered by their `seq` attribute from 1.
struct SteadyLoad<'a> {
    hub: &'a ExportHub,
    destination: &'a Destination,
    resource: opentelemetry_sdk::Resource,
    next_seq: u64,
    ticker: tokio::time::Interval,
    budget: u64,
}

impl SteadyLoad<'_> {
    /// Submits for `duration`, checking after each tick that the bytes held stay within the
    /// budget, and hands each tick's statistics to `after_tick`.
    async fn run_for(&mut self, duration: Duration, mut after_tick: impl FnMut(Instant, &DestinationStats)) {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            self.ticker.tick().await;
            hub_submit_all(
                self.hub,
                many_spans(&self.resource, LOAD_PER_TICK, self.next_seq),
                self.destination,
            );
            self.next_seq += LOAD_PER_TICK;
            let stats = self.hub.stats().get(self.destination).cloned().unwrap_or_default();
            assert!(stats.bytes_held <= self.budget, "over the budget: {stats:?}");
            after_tick(Instant::now(), &stats);
        }
    }
}

/// Settled spans: delivered or dropped.
fn settled(stats: &DestinationStats) -> u64 {
    stats.spans_delivered + stats.dropped.total()
}

/// The backend goes down for 3 s while spans keep coming at 500/s, then comes back on the same
/// port: memory stays within the budget, every span is accounted for exactly, the outage is
/// probed with one request per backoff period, the newest spans are delivered and the oldest
/// dropped, and the backlog drains at full speed once the backend is back.
async fn outage_then_recovery(protocol: Protocol) {
    let mut receiver = OtlpReceiver::start().await;
    let (http_addr, grpc_addr) = (receiver.http_addr(), receiver.grpc_addr());
    let destination = match protocol {
        Protocol::Http => Destination::OtlpHttp { endpoint: receiver.http_endpoint() },
        Protocol::Grpc => Destination::OtlpGrpc { endpoint: receiver.grpc_endpoint() },
    };
    let resource = device_resource("Demo", "test/demo/1", "Demo/Demo", 4711);
    // Every span of the load has the same size: the budget holds 600 of them.
    let budget = 600 * tracer_export::span_bytes(&many_spans(&resource, 1, 1)[0]);
    let config = ExportConfig {
        flush_interval: Duration::from_millis(500),
        max_batch: 100,
        max_backlog_bytes: budget,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        request_timeout: Duration::from_secs(2),
        shutdown_timeout: Duration::from_secs(10),
        ..ExportConfig::default()
    };
    let hub = ExportHub::start(config.clone());
    let mut load = SteadyLoad {
        hub: &hub,
        destination: &destination,
        resource,
        next_seq: 1,
        ticker: tokio::time::interval(LOAD_TICK),
        budget,
    };

    load.run_for(Duration::from_secs(1), |_, _| {}).await;
    receiver.close();
    let start_of_outage = load.next_seq;
    let failed_at_stop = hub.stats().get(&destination).cloned().unwrap_or_default().requests_failed;
    let outage = Duration::from_secs(3);
    load.run_for(outage, |_, _| {}).await;
    let end_of_outage = load.next_seq;

    let at_restart = hub.stats().get(&destination).cloned().unwrap_or_default();
    let probes = at_restart.requests_failed - failed_at_stop;
    // Backoff 50 ms doubling to 400 ms, each at least half its value: at most ~15 in 3 s.
    assert!((3..=20).contains(&probes), "one probe per backoff period, not {probes}");
    assert!(at_restart.dropped.budget_oldest > 0, "the outage outgrew the budget: {at_restart:?}");
    let restarted = Instant::now();
    let receiver_again =
        OtlpReceiver::start_with(ReceiverOptions { http: http_addr, grpc: grpc_addr, out: None })
            .expect("receiver starts again on its ports");
    let (mut first_delivery, mut drained) = (None, None);
    load.run_for(Duration::from_secs(2), |now, stats| {
        if first_delivery.is_none() && stats.spans_delivered > at_restart.spans_delivered {
            first_delivery = Some(now);
        }
        // Batches leave oldest first: once as many spans settled as were held at the restart,
        // the backlog of the outage is gone.
        if drained.is_none() && settled(stats) - settled(&at_restart) >= at_restart.spans_held {
            drained = Some(now);
        }
    })
    .await;
    let first_delivery = first_delivery.expect("delivery resumed");
    let drained = drained.expect("the outage's backlog drained");
    assert!(first_delivery - restarted < config.max_backoff + Duration::from_secs(1), "probed again soon");
    // One batch per flush interval would take 3 s for these 6 batches.
    assert!(
        drained - first_delivery < 2 * config.flush_interval,
        "drained back to back: {:?}",
        drained - first_delivery
    );

    let stats = hub.shutdown().await.get(&destination).cloned().unwrap_or_default();
    let submitted = load.next_seq - 1;
    eprintln!(
        "{protocol:?} outage: {probes} probes in {outage:?}; delivery resumed {:?} after the restart, \
         {} held spans drained in {:?}; {submitted} submitted, {} delivered, {} dropped (oldest); \
         peak {} of {budget} bytes",
        first_delivery - restarted,
        at_restart.spans_held,
        drained - first_delivery,
        stats.spans_delivered,
        stats.dropped.budget_oldest,
        stats.peak_bytes_held,
    );
    assert_eq!(
        (stats.spans_submitted, stats.spans_held, stats.unaccounted()),
        (submitted, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stats.dropped.total(), stats.dropped.budget_oldest, "only the budget dropped: {stats:?}");
    assert!(stats.peak_bytes_held <= budget, "{stats:?}");

    // What arrived is exactly what the hub says it delivered, once each.
    let mut received: Vec<u64> = receiver
        .spans()
        .into_iter()
        .chain(receiver_again.spans())
        .filter_map(|s| s.attributes.get_i64("seq"))
        .map(|s| s as u64)
        .collect();
    received.sort_unstable();
    let count = received.len();
    received.dedup();
    assert_eq!(count, received.len(), "nothing delivered twice");
    assert_eq!(count as u64, stats.spans_delivered);
    // The dropped spans are the oldest of the outage: most of its first 500, none of its last
    // 200 nor any later one. (A batch whose request succeeded while newer spans made room may
    // have arrived from amid them.)
    let missing: Vec<u64> = (1..=submitted).filter(|s| received.binary_search(s).is_err()).collect();
    assert_eq!(missing.len() as u64, stats.dropped.budget_oldest);
    let early = missing.iter().filter(|&&s| (start_of_outage..start_of_outage + 500).contains(&s)).count();
    assert!(early >= 400, "the oldest were dropped: {early} of the outage's first 500");
    let last = missing.iter().max().copied().unwrap_or_default();
    assert!(last < end_of_outage - 200, "the newest spans of the outage were kept (dropped up to {last})");
}

#[tokio::test]
async fn http_outage_keeps_the_newest_within_the_budget() {
    outage_then_recovery(Protocol::Http).await;
}

#[tokio::test]
async fn grpc_outage_keeps_the_newest_within_the_budget() {
    outage_then_recovery(Protocol::Grpc).await;
}

/// With the backend down, shutdown ends within its configured time and counts exactly what it
/// could not deliver.
async fn shutdown_with_the_backend_down(protocol: Protocol) {
    let addr = free_local_addr().expect("free port");
    let destination = match protocol {
        Protocol::Http => Destination::OtlpHttp { endpoint: format!("http://{addr}/v1/traces") },
        Protocol::Grpc => Destination::OtlpGrpc { endpoint: format!("http://{addr}") },
    };
    let timeout = Duration::from_secs(1);
    let hub = ExportHub::start(ExportConfig { shutdown_timeout: timeout, max_batch: 100, ..fast_config() });
    hub_submit_all(&hub, many_spans(&client_resource(7), 300, 1), &destination);
    wait_stats(&hub, &destination, |s| s.requests_failed >= 1).await;
    let started = Instant::now();
    let stats = hub.shutdown().await.get(&destination).cloned().unwrap_or_default();
    let took = started.elapsed();
    // Generous: it proves the bound, not the speed.
    assert!(took < timeout + Duration::from_secs(2), "shutdown took {took:?}");
    assert_eq!(
        (stats.spans_delivered, stats.dropped.at_shutdown, stats.dropped.total()),
        (0, 300, 300),
        "{stats:?}"
    );
    assert_eq!((stats.spans_held, stats.unaccounted()), (0, 0));
}

#[tokio::test]
async fn http_shutdown_with_the_backend_down_is_bounded() {
    shutdown_with_the_backend_down(Protocol::Http).await;
}

#[tokio::test]
async fn grpc_shutdown_with_the_backend_down_is_bounded() {
    shutdown_with_the_backend_down(Protocol::Grpc).await;
}

/// `tango-tracer run` refuses, before anything else, an endpoint without a scheme and a store
/// it cannot write, saying once what to do.
#[test]
fn bad_export_settings_are_refused_at_start() {
    let dir = tracer_export::testing::TempDir::new("refused");
    let in_the_way = dir.path().join("file");
    std::fs::write(&in_the_way, b"").expect("file");
    let store = |path: &std::path::Path| vec![("TANGO_TRACER_STORE", path.display().to_string())];
    let cases = [
        (
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4318".to_owned())],
            "OTEL_EXPORTER_OTLP_ENDPOINT \"127.0.0.1:4318\" has no scheme: add http:// or https:// in front \
             (for example \"http://127.0.0.1:4318\")",
        ),
        (store(dir.path()), "a directory is in the way"),
        (store(&in_the_way.join("spans.jsonl")), "is not a directory"),
    ];
    for (env, expected) in cases {
        let mut command = std::process::Command::new(crate::harness::tracer_binary());
        command
            .arg("run")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_TRACES_EXPORTER");
        command.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT").env_remove("TANGO_TRACER_STORE");
        command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
        let child = command.spawn().expect("tango-tracer starts");
        // Stopped by PID when dropped, should it not refuse.
        let mut proc = crate::harness::Proc { child, name: "tango-tracer".into() };
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = proc.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "{env:?} was not refused");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(proc.child.stderr.as_mut().expect("stderr"), &mut stderr)
            .expect("read");
        assert!(!status.success(), "{env:?}");
        let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("tango-tracer:")).collect();
        assert_eq!(lines.len(), 1, "one message: {stderr}");
        assert!(lines[0].contains(expected), "{stderr}");
        assert_eq!(lines[0].matches(expected).count(), 1, "said once: {stderr}");
        if expected != "has no scheme" && !expected.starts_with("OTEL") {
            assert!(lines[0].ends_with(
                "give --store (or TANGO_TRACER_STORE, store.path) a file path the daemon can write"
            ));
        }
    }
}
