//! Unmodified PyTango 10.3.1 servers and clients traced end to end by the real daemon, compared
//! with the spans cppTango 10.3.3 emits natively for the same calls (`tests/reference/`).

use std::time::{Duration, Instant};

use tracer_export::{json::SpanJson, tree::render_trees};

use crate::{
    harness::{DemoServer, Step, TracerDaemon, free_port, run_client, run_reference_client, unique_marker},
    otlp_receiver::OtlpReceiver,
    reference::{self, ANY, NATIVE, Shape},
};

const WAIT: Duration = Duration::from_secs(30);

/// The reference client's steps, in the order of `client-steps.json`.
pub const REFERENCE_STEPS: [&str; 11] = [
    "connect",
    "read_attribute",
    "write_attribute",
    "read_attribute_counter",
    "command_inout",
    "command_inout_echo",
    "read_attributes",
    "nested",
    "subscribe_event",
    "push_event",
    "unsubscribe_event",
];

fn find<'a>(spans: &'a [SpanJson], name: &str, argument: Option<&str>, kind: &str) -> &'a SpanJson {
    spans
        .iter()
        .find(|s| {
            s.name == name
                && s.kind == kind
                && argument.is_none_or(|a| s.attributes.get_str("tango.operation.argument") == Some(a))
        })
        .unwrap_or_else(|| panic!("no {kind} span {name} ({argument:?}) in\n{}", render_trees(spans)))
}

fn children<'a>(spans: &'a [SpanJson], parent: &SpanJson) -> Vec<&'a SpanJson> {
    spans.iter().filter(|s| s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id).collect()
}

fn only_child<'a>(spans: &'a [SpanJson], parent: &SpanJson, name: &str) -> &'a SpanJson {
    let found: Vec<_> = children(spans, parent).into_iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "{} should have one child {name}:\n{}", parent.name, render_trees(spans));
    found[0]
}

/// The native trees of one reference step.
pub fn native_step(step: &str) -> Vec<Shape> {
    reference::forest(&reference::load(NATIVE, &format!("{step}.json")))
        .unwrap_or_else(|e| panic!("reference {step}: {e}"))
}

/// The resource of the reference's client process, on a span of its own.
fn native_client() -> Shape {
    native_step("read_attribute").swap_remove(0)
}

/// What the `events` topic adds to a step beyond native telemetry (README, "Events"): the admin
/// device's SERVER span under the subscription and `tango.event.*` on both, a PRODUCER span per
/// push with a CONSUMER span per subscriber under it, the CLIENT span of the last unsubscription.
pub fn add_events_topic(step: &str, trees: &mut Vec<Shape>, admin_device: &str) {
    let client = native_client();
    let subscription = [
        ("tango.event.device", "test/demo/1"),
        ("tango.event.attribute", "temperature"),
        ("tango.event.action", "subscribe"),
        ("tango.event.type", "change"),
        ("tango.event.endpoint", ANY),
        ("tango.event.heartbeat_endpoint", ANY),
    ];
    let event = [
        ("tango.event.attribute", "temperature"),
        ("tango.event.device", "test/demo/1"),
        ("tango.event.type", "change"),
        ("tango.event.counter", ANY),
        ("messaging.system", "zeromq"),
        ("messaging.destination.name", ANY),
    ];
    let added = match step {
        "subscribe_event" => {
            let device_server = trees
                .iter()
                .find_map(|t| t.children.iter().find(|c| c.kind == "SERVER"))
                .cloned()
                .expect("the subscription's read_attribute has a SERVER span");
            let is_subscription = |s: &Shape| s.has("tango.operation.argument", "ZmqEventSubscriptionChange");
            trees.iter_mut().map(|t| t.add_attributes_where(&is_subscription, &subscription)).sum::<usize>()
                + trees
                    .iter_mut()
                    .map(|t| {
                        t.add_child_where(&is_subscription, &|_| {
                            let mut attributes =
                                vec![("tango.operation.argument", "ZmqEventSubscriptionChange")];
                            attributes.extend(subscription);
                            attributes.extend([
                                ("tango.client_ident.pid", ANY),
                                ("tango.client_ident.lang", "CPP"),
                                ("tango.client_ident.location", ANY),
                            ]);
                            Shape::like(
                                &device_server,
                                "SERVER",
                                "Tango::Device_4Impl::command_inout_4",
                                &attributes,
                            )
                            .with_resource(&[
                                ("service.name", "DServer"),
                                ("service.instance.id", admin_device),
                            ])
                        })
                    })
                    .sum::<usize>()
        }
        "push_event" => {
            let is_push =
                |s: &Shape| s.kind == "SERVER" && s.has("tango.operation.argument", "PushTemperature");
            trees
                .iter_mut()
                .map(|t| {
                    t.add_child_where(&is_push, &|server| {
                        let mut push =
                            Shape::like(server, "PRODUCER", "Tango::ZmqEventSupplier::push_event", &event);
                        let mut delivered = event.to_vec();
                        delivered.push(("tango.event.delay_us", ANY));
                        push.children.push(Shape::like(
                            &client,
                            "CONSUMER",
                            "Tango::ZmqEventConsumer::push_zmq_event",
                            &delivered,
                        ));
                        push
                    })
                })
                .sum()
        }
        "unsubscribe_event" => {
            trees.push(Shape::like(
                &client,
                "CLIENT",
                "Tango::DeviceProxy::unsubscribe_event",
                &[
                    ("tango.event.device", admin_device),
                    ("tango.event.type", "heartbeat"),
                    ("messaging.system", "zeromq"),
                    ("messaging.destination.name", ANY),
                    ("tango.event.action", "unsubscribe"),
                ],
            ));
            1
        }
        _ => 0,
    };
    let expected_additions = match step {
        "subscribe_event" => 2,
        "push_event" => 2,
        "unsubscribe_event" => 1,
        _ => 0,
    };
    assert_eq!(added, expected_additions, "events topic additions to {step}");
}

/// The native spans of the reference's `Kill` of a server's admin device. The reference's test
/// context sent it from inside the server process: its resource says `tango.process.kind=server`
/// and the call failed (`BAD_INV_ORDER_ORBHasShutdown`, its own ORB going down). Ours comes from a
/// client process and succeeds. The `DeviceProxy` argument is the name the caller typed
/// (`dserver/Demo/demo`); cppTango sends it lowercased as the object key, and nothing else on the
/// wire spells it, so the daemon's reconstruction (README, "The spans") is lowercase.
fn native_kill() -> Vec<Shape> {
    let spans: Vec<SpanJson> = reference::load(NATIVE, "outside-client-steps.json")
        .into_iter()
        .filter(|s| s.resource.get_i64("tango.process.id") == Some(17811))
        .collect();
    let mut trees = reference::forest(&spans).expect("outside-client-steps");
    for tree in &mut trees {
        tree.resource.insert("tango.process.kind".into(), "client".into());
        tree.status = 0;
        tree.events.clear();
        if tree.name == "Tango::DeviceProxy::DeviceProxy"
            && let Some(argument) = tree.attributes.get_mut("tango.operation.argument")
        {
            *argument = argument.to_ascii_lowercase();
        }
    }
    trees
}

/// Waits until `receiver` holds at least `count` spans or `timeout` passed (no panic: the
/// comparison that follows says what is missing).
pub fn wait_for_count(receiver: &OtlpReceiver, count: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while receiver.spans().len() < count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Compares the spans of each step with its expected trees; every span must belong to a step.
/// Returns every difference found.
pub fn compare_steps(spans: &[SpanJson], steps: &[Step], expected: &[Vec<Shape>]) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = reference::forest(spans) {
        problems.push(format!("the spans received are not a clean forest:\n{e}"));
    }
    let mut accounted = 0;
    for (step, want) in steps.iter().zip(expected) {
        let in_step = reference::trees_in_window(spans, step.start_ns, step.end_ns);
        accounted += in_step.len();
        let got = match reference::forest(&in_step) {
            Ok(trees) => trees,
            Err(e) => {
                problems.push(format!("step {}: {e}", step.name));
                continue;
            }
        };
        if let Err(difference) = reference::compare(want, &got) {
            problems.push(format!("step {}: {difference}", step.name));
        }
    }
    if accounted != spans.len() {
        problems.push(format!(
            "{} span(s) outside every step:\n{}",
            spans.len() - accounted,
            render_trees(spans)
        ));
    }
    problems
}

#[test]
fn pytango_calls_match_the_native_reference_step_by_step() {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("parity");
    // Named as in the reference (server Demo/Demo, admin device dserver/demo/demo). Device A runs
    // before the daemon starts (found by the /proc scan), device B after it (found when it loads
    // omniORB).
    let server_a = DemoServer::start(&marker, "Demo", &["test/demo/1"]);
    let mut daemon =
        TracerDaemon::start(&marker, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver_base(&receiver))], &[]);
    let server_b = DemoServer::start(&marker, "Demo", &["test/demo/2"]);
    let admin_a = format!("tango://127.0.0.1:{}/dserver/Demo/demo#dbase=no", server_a.port);
    let mut steps: Vec<String> = REFERENCE_STEPS.iter().map(|s| (*s).to_owned()).collect();
    steps.push(format!("kill={admin_a}"));
    let step_args: Vec<&str> = steps.iter().map(String::as_str).collect();
    // The reference client's resource has a tango.host (from the machine's tangorc); this one gets
    // it from its environment, pointing nowhere: no call here uses a database.
    let tango_host = format!("127.0.0.1:{}", free_port());
    let (_, ran) = run_reference_client(
        &marker,
        &server_a.url("test/demo/1"),
        &server_b.url("test/demo/2"),
        &step_args,
        &[("TANGO_HOST", &tango_host)],
    );
    let expected: Vec<Vec<Shape>> = ran
        .iter()
        .map(|step| {
            if step.name == "kill" {
                return native_kill();
            }
            let mut trees = native_step(&step.name);
            add_events_topic(&step.name, &mut trees, "dserver/demo/demo");
            trees
        })
        .collect();
    let total: usize = expected.iter().flatten().map(Shape::len).sum();
    wait_for_count(&receiver, total, WAIT);
    // Read again once the daemon has flushed and gone: nothing more, nothing twice.
    daemon.stop();
    let spans = receiver.spans();
    let problems = compare_steps(&spans, &ran, &expected);
    assert!(problems.is_empty(), "differences from the native reference:\n{}", problems.join("\n"));

    // Spans of many devices share requests: never one request per device.
    let per_request = receiver.resource_spans_per_request();
    assert!(per_request.iter().any(|&n| n > 1), "resources per request: {per_request:?}");
}

#[test]
fn a_failing_command_is_an_error_on_both_ends_as_natively() {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("fail");
    let server = DemoServer::start(&marker, "fail", &["test/demo/1"]);
    let mut daemon =
        TracerDaemon::start(&marker, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver_base(&receiver))], &[]);
    let out = run_client(&marker, &[&server.url("test/demo/1"), "fail"], &[]);
    assert_eq!(out["steps"]["fail"], "DevFailed:BoomReason");
    wait_for_count(&receiver, 3, WAIT);
    daemon.stop();
    let spans = receiver.spans();
    // The client's DeviceProxy (reference: connect.json) and the pair, nothing else.
    assert_eq!(spans.len(), 3, "{}", render_trees(&spans));
    find(&spans, "Tango::DeviceProxy::DeviceProxy", Some(&server.url("test/demo/1")), "INTERNAL");
    // Native records a DevFailed as status ERROR with cppTango's description and an event naming
    // the first error (tango-facts §7; no reference capture has an error).
    let client = find(&spans, "Tango::Connection::command_inout", Some("Fail"), "CLIENT");
    let server = only_child(&spans, client, "Tango::Device_4Impl::command_inout_4");
    for span in [client, server] {
        assert_eq!(span.status.code, 2, "{span:?}");
        assert_eq!(span.status.message, "exception caught (see associated event)");
        let event = span.events.iter().find(|e| e.name == "exception caught").expect("exception event");
        assert_eq!(event.attributes.get_str("exception.type"), Some("Tango::DevFailed"));
        let message = event.attributes.get_str("exception.message").unwrap_or_default();
        assert!(message.starts_with("REASON:BoomReason;DESC:Failed on request;ORIGIN:"), "{message}");
    }
}

/// `OTEL_EXPORTER_OTLP_ENDPOINT` is the base URL; the exporter adds `/v1/traces`.
fn receiver_base(receiver: &OtlpReceiver) -> String {
    receiver.http_endpoint().trim_end_matches("/v1/traces").to_string()
}

#[test]
fn short_lived_client_loses_nothing_over_otlp_grpc() {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("grpc");
    let server = DemoServer::start(&marker, "g", &["test/demo/1"]);
    let mut daemon = TracerDaemon::start(
        &marker,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.grpc_endpoint()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
        &[],
    );
    // Five clients, each started after the daemon and exiting right after one call.
    let mut pids = Vec::new();
    for _ in 0..5 {
        let out = run_client(&marker, &[&server.url("test/demo/1"), "increment"], &[]);
        pids.push(out["pid"].as_i64().expect("client pid"));
    }
    // Each client: its DeviceProxy, its call and the call's SERVER span.
    receiver.wait_for_blocking(|s| s.len() >= 15, WAIT);
    daemon.stop();
    let spans = receiver.spans();
    assert_eq!(spans.len(), 15, "{}", render_trees(&spans));
    for pid in pids {
        let client = spans
            .iter()
            .find(|s| s.kind == "CLIENT" && s.resource.get_i64("tango.process.id") == Some(pid))
            .unwrap_or_else(|| panic!("no client span of short-lived pid {pid}:\n{}", render_trees(&spans)));
        assert_eq!(client.transport.as_deref(), Some("grpc"));
        assert_eq!(client.attributes.get_str("tango.operation.argument"), Some("Increment"));
        only_child(&spans, client, "Tango::Device_4Impl::command_inout_4");
    }
}

#[test]
fn w3c_context_from_native_client_telemetry_is_joined_not_duplicated() {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("w3c");
    let server = DemoServer::start(&marker, "w", &["test/demo/1"]);
    let mut daemon =
        TracerDaemon::start(&marker, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver_base(&receiver))], &[]);
    // This client runs cppTango's own telemetry and sends W3C context in its ClntIdent.
    let endpoint = receiver.http_endpoint();
    let native = [
        ("TANGO_TELEMETRY_ENABLE", "on"),
        ("TANGO_TELEMETRY_TRACING_EXPORTERS", "http"),
        ("TANGO_TELEMETRY_TRACING_ENDPOINTS", endpoint.as_str()),
        ("TANGO_TELEMETRY_LOGGING_EXPORTERS", "console"),
        ("TANGO_TELEMETRY_LOGGING_ENDPOINTS", "cerr"),
    ];
    let out = run_client(&marker, &[&server.url("test/demo/1"), "read_attribute"], &native);
    let client_pid = out["pid"].as_i64().expect("client pid");
    let spans = receiver.wait_for_blocking(
        |s| {
            s.iter().any(|x| {
                x.kind == "SERVER" && x.resource.get_str("telemetry.distro.name") == Some("tango-tracer")
            }) && s.iter().any(|x| x.kind == "CLIENT" && x.name == "Tango::DeviceProxy::read_attribute")
        },
        WAIT,
    );
    daemon.stop();
    let native_client = find(&spans, "Tango::DeviceProxy::read_attribute", Some("temperature"), "CLIENT");
    assert_eq!(
        native_client.resource.get_str("telemetry.sdk.language"),
        Some("cpp"),
        "the client span is the native one"
    );
    let ours = only_child(&spans, native_client, "Tango::Device_5Impl::read_attributes_5");
    assert_eq!(ours.resource.get_str("telemetry.distro.name"), Some("tango-tracer"));
    let duplicates = spans
        .iter()
        .filter(|s| s.kind == "CLIENT" && s.resource.get_i64("tango.process.id") == Some(client_pid))
        .filter(|s| s.resource.get_str("telemetry.distro.name") == Some("tango-tracer"))
        .count();
    assert_eq!(duplicates, 0, "a natively traced client is not traced twice:\n{}", render_trees(&spans));
}

#[test]
fn embedded_store_keeps_traces_for_show_when_no_backend_is_configured() {
    let marker = unique_marker("store");
    let server = DemoServer::start(&marker, "s", &["test/demo/1"]);
    let mut daemon = TracerDaemon::start(&marker, &[], &[]);
    run_client(&marker, &[&server.url("test/demo/1"), "read_attribute"], &[]);
    let store = daemon.dir.join("spans.jsonl");
    // Spans reach the store within the export interval, before the daemon stops.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let spans = tracer_export::read_store(&store).unwrap_or_default();
        if spans.len() >= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "store {} stayed empty", store.display());
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.stop();
    let output = std::process::Command::new(crate::harness::tracer_binary())
        .args(["show", "--store"])
        .arg(&store)
        .output()
        .expect("running tango-tracer show");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    let client_line =
        text.lines().position(|l| l.contains("[CLIENT] Tango::DeviceProxy::read_attribute")).expect(&text);
    let server_line = text
        .lines()
        .position(|l| l.contains("[SERVER] Tango::Device_5Impl::read_attributes_5"))
        .expect(&text);
    assert_eq!(server_line, client_line + 1, "server span printed under its client:\n{text}");
}
