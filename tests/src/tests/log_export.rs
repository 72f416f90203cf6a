//! Log records through the export hub to the real OTLP receiver: `/v1/logs` and the gRPC
//! `LogsService`, batched across devices, compared with cppTango 10.3.3's own records, and kept
//! apart from spans sent to the same backend.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_export::{
    Destination, DestinationStats, ExportConfig, ExportHub, LogRecord, Signal,
    json::LogJson,
    testing::{device_resource, many_logs, reference_command_inout, reference_device_logs},
};

use crate::otlp_receiver::{OtlpReceiver, Protocol};

const WAIT: Duration = Duration::from_secs(20);

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

fn submit_logs(hub: &ExportHub, logs: Vec<LogRecord>, destination: &Destination) {
    for log in logs {
        hub.submit_log(log, std::slice::from_ref(destination));
    }
}

async fn wait_log_stats(
    hub: &ExportHub,
    destination: &Destination,
    done: impl Fn(&DestinationStats) -> bool,
) -> DestinationStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = hub.stats().get_logs(destination).cloned().unwrap_or_default();
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "stats never got there: {stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The native capture: resource, scope and records in protobuf's JSON mapping.
fn native_capture() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("reference/cpptango-10.3.3-native/device-logs.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// An OTLP JSON `AnyValue` as plain JSON (`intValue` is a string in protobuf's mapping).
fn any_value(value: &Value) -> Value {
    match (value.get("stringValue"), value.get("intValue")) {
        (Some(s), _) => s.clone(),
        (None, Some(i)) => Value::from(i.as_str().unwrap().parse::<i64>().unwrap()),
        _ => panic!("a kind of value the capture does not hold: {value}"),
    }
}

fn key_values(list: &Value) -> BTreeMap<String, Value> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|kv| (kv["key"].as_str().unwrap().to_owned(), any_value(&kv["value"])))
        .collect()
}

/// Each received record equals the native one with the same body: resource, scope, time,
/// severity number and text, attributes (with their types), trace and span ids and flags.
fn assert_like_native(received: &[LogJson]) {
    let native = native_capture();
    let resource = key_values(&native["resource"]["attributes"]);
    let records = native["logRecords"].as_array().unwrap();
    assert_eq!(received.len(), records.len());
    for record in records {
        let body = record["body"]["stringValue"].as_str().unwrap();
        let ours = received.iter().find(|l| l.body == body).unwrap_or_else(|| panic!("{body}"));
        let ours_resource: BTreeMap<String, Value> =
            ours.resource.iter().map(|(k, v)| (k.to_owned(), v.clone())).collect();
        assert_eq!(ours_resource, resource, "{body}: resource");
        assert_eq!(ours.scope.name, native["scope"]["name"].as_str().unwrap(), "{body}: scope");
        assert_eq!(ours.scope.version, native["scope"]["version"].as_str().unwrap(), "{body}: scope");
        let nanos = |key: &str| record[key].as_str().unwrap().parse::<u64>().unwrap();
        assert_eq!((ours.time_ns, ours.observed_ns), (nanos("timeUnixNano"), nanos("observedTimeUnixNano")));
        assert_eq!(i64::from(ours.severity_number), record["severityNumber_int"].as_i64().unwrap(), "{body}");
        assert_eq!(ours.severity_text, record["severityText"].as_str().unwrap(), "{body}");
        let ours_attributes: BTreeMap<String, Value> =
            ours.attributes.iter().map(|(k, v)| (k.to_owned(), v.clone())).collect();
        assert_eq!(ours_attributes, key_values(&record["attributes"]), "{body}: attributes");
        let text = |key: &str| record.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
        assert_eq!(
            (ours.trace_id.clone(), ours.span_id.clone()),
            (text("traceId"), text("spanId")),
            "{body}"
        );
        assert_eq!(u64::from(ours.flags), record.get("flags").and_then(Value::as_u64).unwrap_or(0), "{body}");
    }
}

async fn logs_of_two_devices_in_one_request(protocol: Protocol) {
    let receiver = OtlpReceiver::start().await;
    // Tango's spellings of logging endpoints: an HTTP origin gets `/v1/logs`.
    let destination = match protocol {
        Protocol::Http => {
            let origin = receiver.http_logs_endpoint().trim_end_matches("/v1/logs").to_owned();
            Destination::parse_for(Signal::Logs, "http", &origin)
        }
        Protocol::Grpc => Destination::parse_for(
            Signal::Logs,
            "grpc",
            &receiver.grpc_endpoint().replace("http://", "grpc://"),
        ),
    }
    .unwrap();
    if let Destination::OtlpHttp { endpoint } = &destination {
        assert_eq!(endpoint, &receiver.http_logs_endpoint());
    }
    let hub = ExportHub::start(fast_config());
    let other = device_resource("Demo", "test/demo/2", "Demo/Demo", 4242);
    let mut logs = reference_device_logs();
    logs.insert(1, many_logs(&other, 1, 1).remove(0));
    submit_logs(&hub, logs, &destination);

    let received = receiver.wait_for_logs(|l| l.len() >= 4, WAIT).await;
    let requests = receiver.log_request_log();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(
        (request.protocol, request.resource_logs, request.records, request.gzip),
        (protocol, 2, 4, true)
    );
    assert!(received.iter().all(|l| l.transport.as_deref() == Some(protocol.name())));
    assert!(receiver.spans().is_empty() && receiver.requests() == 0, "logs are not spans");

    let (reference, other): (Vec<LogJson>, Vec<LogJson>) =
        received.into_iter().partition(|l| l.service() == "LogDev/test/logdev/1");
    assert_like_native(&reference);
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].resource.get_i64("tango.process.id"), Some(4242));

    let stats = hub.shutdown().await;
    let l = stats.get_logs(&destination).cloned().unwrap();
    assert_eq!((l.spans_submitted, l.spans_delivered, l.requests_sent, l.requests_failed), (4, 4, 1, 0));
    assert!(stats.destinations.is_empty(), "no destination of spans: {stats:?}");
}

#[tokio::test]
async fn http_sends_logs_of_two_devices_in_one_request_as_native_does() {
    logs_of_two_devices_in_one_request(Protocol::Http).await;
}

#[tokio::test]
async fn grpc_sends_logs_of_two_devices_in_one_request_as_native_does() {
    logs_of_two_devices_in_one_request(Protocol::Grpc).await;
}

/// One backend for both signals, over both protocols: spans arrive as spans, logs as logs, each
/// counted by its own destination; a gRPC endpoint shared by both is two exporters.
#[tokio::test]
async fn spans_and_logs_to_one_backend_stay_apart() {
    let receiver = OtlpReceiver::start().await;
    let spans_http = Destination::parse("http", &receiver.http_endpoint()).unwrap();
    let logs_http = Destination::parse_for(Signal::Logs, "http", &receiver.http_logs_endpoint()).unwrap();
    let grpc = Destination::parse("grpc", &receiver.grpc_endpoint()).unwrap();
    let hub = ExportHub::start(fast_config());
    for span in reference_command_inout() {
        hub.submit(span, &[spans_http.clone(), grpc.clone()]);
    }
    for log in reference_device_logs() {
        hub.submit_log(log, &[logs_http.clone(), grpc.clone()]);
    }
    receiver.wait_for(|s| s.len() >= 4, WAIT).await;
    receiver.wait_for_logs(|l| l.len() >= 6, WAIT).await;
    assert_eq!((receiver.requests_by(Protocol::Http), receiver.requests_by(Protocol::Grpc)), (1, 1));
    assert_eq!((receiver.log_requests_by(Protocol::Http), receiver.log_requests_by(Protocol::Grpc)), (1, 1));

    let stats = hub.shutdown().await;
    assert_eq!(stats.get(&grpc).unwrap().spans_delivered, 2);
    assert_eq!(stats.get_logs(&grpc).unwrap().spans_delivered, 3);
    assert_eq!(stats.get_logs(&logs_http).unwrap().spans_delivered, 3);
    assert!(stats.get_logs(&spans_http).is_none() && stats.get(&logs_http).is_none());
    assert_eq!((stats.total().spans_delivered, stats.logs_total().spans_delivered), (4, 6));
}

/// A logs backend that refuses for a while gets every record once it accepts again; the
/// refusals are counted, nothing is dropped.
#[tokio::test]
async fn refused_logs_are_retried_until_delivered() {
    let receiver = OtlpReceiver::start().await;
    receiver.fail_next_logs(3);
    let destination = Destination::parse_for(Signal::Logs, "grpc", &receiver.grpc_endpoint()).unwrap();
    let hub = ExportHub::start(ExportConfig { max_batch: 50, ..fast_config() });
    submit_logs(
        &hub,
        many_logs(&device_resource("Demo", "test/demo/1", "Demo/Demo", 1), 120, 1),
        &destination,
    );
    let l = wait_log_stats(&hub, &destination, |s| s.spans_delivered == 120).await;
    assert_eq!((l.requests_failed, l.dropped.total(), l.spans_held), (3, 0, 0), "{l:?}");
    assert_eq!(receiver.logs_refused(), 3);
    let mut seqs: Vec<i64> = receiver.logs().iter().filter_map(|l| l.attributes.get_i64("seq")).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=120).collect::<Vec<_>>());
    hub.shutdown().await;
}
