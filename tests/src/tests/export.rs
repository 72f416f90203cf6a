//! The exporter against the real OTLP receiver: batching across resources, both protocols,
//! backends that are down or refuse, outages within a memory budget, flush on shutdown.

use std::time::{Duration, Instant};

use tracer_export::{
    Destination, ExportConfig, ExportHub, SpanRecord,
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
    done: impl Fn(&tracer_export::DestinationStats) -> bool,
) -> tracer_export::DestinationStats {
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
