//! RED metrics of a real PyTango server and client, traced by the real daemon: the Prometheus
//! endpoint and the OTLP metrics received count exactly the calls made, on both sides; a tiny
//! series cap folds the rest into the overflow series.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{KeyValue, any_value::Value},
    metrics::v1::{HistogramDataPoint, metric::Data},
};

use crate::{
    harness::{DemoServer, TracerDaemon, free_port, run_client, unique_marker},
    otlp_receiver::{OtlpReceiver, Protocol},
};

const WAIT: Duration = Duration::from_secs(30);
const DEVICE: &str = "test/demo/1";
const READS: usize = 7;
const COMMANDS: usize = 4;

/// The body of `GET /metrics` at `port`.
fn scrape(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the metrics endpoint");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("sending the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reading the response");
    let (head, body) =
        response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP response: {response}"));
    assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    body.to_owned()
}

/// The value of the sample `name{labels}` in a Prometheus text, if it is there.
fn sample(text: &str, name: &str, labels: &str) -> Option<u64> {
    let prefix = if labels.is_empty() { format!("{name} ") } else { format!("{name}{{{labels}}} ") };
    text.lines().find_map(|line| line.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

/// `(metric, operation, argument, outcome, count)`: what the client below makes, on both sides.
fn expected() -> Vec<(&'static str, &'static str, &'static str, &'static str, u64)> {
    vec![
        ("rpc_server_call_duration_seconds", "read_attributes_5", "temperature", "ok", READS as u64),
        ("rpc_client_call_duration_seconds", "read_attribute", "temperature", "ok", READS as u64),
        ("rpc_server_call_duration_seconds", "command_inout_4", "Echo", "ok", COMMANDS as u64),
        ("rpc_client_call_duration_seconds", "command_inout", "Echo", "ok", COMMANDS as u64),
        ("rpc_server_call_duration_seconds", "command_inout_4", "Fail", "error", 1),
        ("rpc_client_call_duration_seconds", "command_inout", "Fail", "error", 1),
    ]
}

/// The client's steps: READS reads, COMMANDS commands and one failing command.
fn steps(url: &str) -> Vec<String> {
    let mut steps = vec![url.to_owned()];
    steps.extend(std::iter::repeat_n("read_attribute".to_owned(), READS));
    steps.extend(std::iter::repeat_n("command_inout".to_owned(), COMMANDS));
    steps.push("fail".to_owned());
    steps
}

fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.as_str()),
        _ => None,
    })
}

/// Every histogram data point of `metric` in `request`.
fn points<'a>(request: &'a ExportMetricsServiceRequest, metric: &str) -> Vec<&'a HistogramDataPoint> {
    request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .filter(|m| m.name == metric)
        .filter_map(|m| match &m.data {
            Some(Data::Histogram(h)) => Some(&h.data_points),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The count of the series of the last request received, if any.
fn otlp_count(
    requests: &[(Protocol, ExportMetricsServiceRequest)],
    metric: &str,
    labels: [&str; 4],
) -> Option<u64> {
    let (_, last) = requests.last()?;
    let [device, operation, argument, outcome] = labels;
    points(last, metric)
        .into_iter()
        .find(|p| {
            let attribute = |key| string_attribute(&p.attributes, key);
            attribute("tango.device") == Some(device)
                && attribute("tango.operation") == Some(operation)
                && attribute("tango.operation.argument") == Some(argument)
                && attribute("tango.outcome") == Some(outcome)
        })
        .map(|p| p.count)
}

fn wait_until(what: &str, mut done: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + WAIT;
    loop {
        match done() {
            Ok(()) => return,
            Err(why) if Instant::now() > deadline => panic!("{what} within {WAIT:?}: {why}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn prometheus_and_otlp_metrics_count_every_call_on_both_sides() {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("metrics");
    let server = DemoServer::start(&marker, "metrics", &[DEVICE]);
    let port = free_port();
    let base = receiver.http_endpoint().trim_end_matches("/v1/traces").to_owned();
    let listen = format!("127.0.0.1:{port}");
    // Spans go nowhere: the metrics count them before the configuration decides.
    let mut daemon = TracerDaemon::start(
        &marker,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &base),
            ("OTEL_TRACES_EXPORTER", "none"),
            ("OTEL_LOGS_EXPORTER", "none"),
        ],
        &["--metrics-listen", &listen, "--metrics-interval", "500ms"],
    );
    let steps = steps(&server.url(DEVICE));
    let args: Vec<&str> = steps.iter().map(String::as_str).collect();
    let out = run_client(&marker, &args, &[]);
    assert_eq!(out["steps"]["fail"], "DevFailed:BoomReason");

    let mut text = String::new();
    wait_until("the /metrics counts equal the calls made", || {
        text = scrape(port);
        for (metric, operation, argument, outcome, count) in expected() {
            let side = if metric.contains("server") { "server" } else { "client" };
            let labels = format!(
                "device=\"{DEVICE}\",operation=\"{operation}\",argument=\"{argument}\",side=\"{side}\",outcome=\"{outcome}\""
            );
            let found = sample(&text, &format!("{metric}_count"), &labels);
            if found != Some(count) {
                return Err(format!("{metric}{{{labels}}}: {found:?}, expected {count}\n{text}"));
            }
            // Every call is in the +Inf bucket, and its duration in the sum.
            let inf = sample(&text, &format!("{metric}_bucket"), &format!("{labels},le=\"+Inf\""));
            assert_eq!(inf, Some(count), "{text}");
        }
        Ok(())
    });
    assert!(text.contains("# TYPE rpc_server_call_duration_seconds histogram"), "{text}");
    assert!(sample(&text, "tango_tracer_processes", "").is_some_and(|n| n >= 1), "{text}");
    assert_eq!(
        sample(
            &text,
            "tango_tracer_stage_events_total",
            "stage=\"metrics\",name=\"points_folded_into_overflow\""
        ),
        Some(0),
        "{text}"
    );

    wait_until("the OTLP metrics counts equal the calls made", || {
        let requests = receiver.metrics_requests();
        for (metric, operation, argument, outcome, count) in expected() {
            let name = if metric.contains("server") {
                "rpc.server.call.duration"
            } else {
                "rpc.client.call.duration"
            };
            let found = otlp_count(&requests, name, [DEVICE, operation, argument, outcome]);
            if found != Some(count) {
                return Err(format!("{name} {operation} {argument} {outcome}: {found:?}, expected {count}"));
            }
        }
        Ok(())
    });
    let requests = receiver.metrics_requests();
    assert!(requests.iter().all(|(protocol, _)| *protocol == Protocol::Http));
    daemon.stop();
    assert!(receiver.spans().is_empty(), "OTEL_TRACES_EXPORTER=none: no spans");
}

#[test]
fn a_tiny_series_cap_folds_the_rest_into_the_overflow_series_over_grpc_too() {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("metrics-cap");
    let server = DemoServer::start(&marker, "metricscap", &[DEVICE]);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut daemon = TracerDaemon::start(
        &marker,
        &[
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", &receiver.grpc_endpoint()),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
        ],
        &["--metrics-listen", &listen, "--metrics-interval", "500ms", "--metrics-max-series", "2"],
    );
    let steps = steps(&server.url(DEVICE));
    let args: Vec<&str> = steps.iter().map(String::as_str).collect();
    run_client(&marker, &args, &[]);

    // Six series at least on the calls alone: two kept, the rest folded, nothing lost.
    let calls: u64 = expected().iter().map(|e| e.4).sum();
    wait_until("the overflow series holds what did not fit", || {
        let text = scrape(port);
        let count = |metric: &str| -> u64 {
            text.lines()
                .filter(|l| l.starts_with(&format!("{metric}_count{{")))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        };
        let total = count("rpc_server_call_duration_seconds") + count("rpc_client_call_duration_seconds");
        let overflow = sample(
            &text,
            "rpc_server_call_duration_seconds_count",
            "side=\"server\",otel_metric_overflow=\"true\"",
        )
        .unwrap_or(0)
            + sample(
                &text,
                "rpc_client_call_duration_seconds_count",
                "side=\"client\",otel_metric_overflow=\"true\"",
            )
            .unwrap_or(0);
        let folded = sample(
            &text,
            "tango_tracer_stage_events_total",
            "stage=\"metrics\",name=\"points_folded_into_overflow\"",
        );
        // Series are kept for cumulative export (bounded by the cap), not state that drains.
        let series =
            sample(&text, "tango_tracer_stage_events_total", "stage=\"metrics\",name=\"series_held\"");
        if total >= calls && overflow > 0 && folded == Some(overflow) && series == Some(2) {
            Ok(())
        } else {
            Err(format!(
                "total {total} of {calls} calls, overflow {overflow}, folded {folded:?}, series {series:?}\n{text}"
            ))
        }
    });
    wait_until("the overflow series arrives over OTLP/gRPC", || {
        let requests = receiver.metrics_requests();
        let overflowed = requests.iter().any(|(protocol, request)| {
            *protocol == Protocol::Grpc
                && ["rpc.server.call.duration", "rpc.client.call.duration"].iter().any(|metric| {
                    points(request, metric).iter().any(|p| {
                        p.count > 0
                            && p.attributes.iter().any(|kv| {
                                kv.key == "otel.metric.overflow"
                                    && matches!(
                                        kv.value.as_ref().and_then(|v| v.value.as_ref()),
                                        Some(Value::BoolValue(true))
                                    )
                            })
                    })
                })
        });
        if overflowed {
            Ok(())
        } else {
            Err(format!("{} requests, none with the overflow series", requests.len()))
        }
    });
    daemon.stop();
}
