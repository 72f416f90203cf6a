//! Unmodified PyTango 10.3.1 servers and clients traced end to end by the real daemon, checked
//! against the spans cppTango 10.3.3 emits natively (names, kinds, parents, attributes, resources).

use std::time::Duration;

use tracer_export::{json::SpanJson, tree::render_trees};

use crate::{
    harness::{DemoServer, TracerDaemon, run_client, unique_marker},
    otlp_receiver::OtlpReceiver,
};

const WAIT: Duration = Duration::from_secs(30);

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

fn assert_client_resource(span: &SpanJson, pid: i64) {
    let r = &span.resource;
    assert_eq!(r.get_str("service.name"), Some("tango.telemetry.default"), "{span:?}");
    assert_eq!(r.get_str("service.namespace"), Some("tango"));
    assert_eq!(r.get_str("tango.process.kind"), Some("client"));
    assert_eq!(r.get_i64("tango.process.id"), Some(pid));
    assert_eq!(r.get("service.instance.id"), None);
}

fn assert_device_resource(span: &SpanJson, device: &str, pid: i64) {
    let r = &span.resource;
    assert_eq!(r.get_str("service.name"), Some("Demo"), "{span:?}");
    assert_eq!(r.get_str("service.instance.id"), Some(device));
    assert_eq!(r.get_str("service.namespace"), Some("tango"));
    assert_eq!(r.get_str("tango.process.kind"), Some("server"));
    assert_eq!(r.get_i64("tango.process.id"), Some(pid));
    assert!(r.get_str("tango.server.name").is_some_and(|s| s.starts_with("Demo/")), "{span:?}");
    // Devices without a database carry no tango.host, as natively.
    assert_eq!(r.get("tango.host"), None);
}

fn assert_scope(span: &SpanJson) {
    assert_eq!(span.scope.name, "tango.cpp");
    assert_eq!(span.scope.version, "10.3.3");
}

/// Client span with its SERVER child, both as cppTango names them.
fn assert_pair<'a>(
    spans: &'a [SpanJson],
    client_name: &str,
    argument: Option<&str>,
    server_name: &str,
    client_pid: i64,
    server_pid: i64,
) -> (&'a SpanJson, &'a SpanJson) {
    let client = spans
        .iter()
        .find(|s| {
            s.name == client_name
                && s.kind == "CLIENT"
                && s.resource.get_i64("tango.process.id") == Some(client_pid)
                && argument.is_none_or(|a| s.attributes.get_str("tango.operation.argument") == Some(a))
        })
        .unwrap_or_else(|| {
            panic!(
                "no CLIENT span {client_name} ({argument:?}) of pid {client_pid} in\n{}",
                render_trees(spans)
            )
        });
    assert_eq!(client.parent_span_id, "", "a client call of a plain client is a root span");
    assert_eq!(client.attributes.get_str("tango.operation.target"), Some("test/demo/1"));
    assert!(client.attributes.get_str("thread.id").is_some());
    assert_client_resource(client, client_pid);
    assert_scope(client);
    let server = only_child(spans, client, server_name);
    assert_eq!(server.kind, "SERVER");
    assert_eq!(server.attributes.get_i64("tango.client_ident.pid"), Some(client_pid));
    assert_eq!(server.attributes.get_str("tango.client_ident.lang"), Some("CPP"));
    assert!(
        server
            .attributes
            .get_str("tango.client_ident.location")
            .is_some_and(|l| l.starts_with("giop:tcp:127.0.0.1:")),
        "{server:?}"
    );
    assert_device_resource(server, "test/demo/1", server_pid);
    assert!(server.start_ns >= client.start_ns && server.end_ns <= client.end_ns, "server inside client");
    (client, server)
}

#[test]
fn pytango_calls_are_traced_end_to_end_over_otlp_http() {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("e2e");
    // Device A runs before the daemon starts (found by the /proc scan), device B after it
    // (found when it loads omniORB).
    let server_a = DemoServer::start(&marker, "a", &["test/demo/1"]);
    let mut daemon =
        TracerDaemon::start(&marker, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver_base(&receiver))], &[]);
    let server_b = DemoServer::start(&marker, "b", &["test/demo/2"]);
    let url_a = server_a.url("test/demo/1");
    let url_b = server_b.url("test/demo/2");
    let out = run_client(
        &marker,
        &[
            &url_a,
            &url_b,
            "read_attribute",
            "read_attributes",
            "write_attribute",
            "command_inout",
            "fail",
            "nested",
        ],
        &[],
    );
    assert_eq!(out["steps"]["fail"], "DevFailed:BoomReason");
    let client_pid = out["pid"].as_i64().expect("client pid");
    let a_pid = i64::from(server_a.proc.pid());
    let b_pid = i64::from(server_b.proc.pid());

    let spans = receiver.wait_for_blocking(|s| s.len() >= 14, WAIT);
    daemon.stop();

    assert_pair(
        &spans,
        "Tango::DeviceProxy::read_attribute",
        Some("temperature"),
        "Tango::Device_5Impl::read_attributes_5",
        client_pid,
        a_pid,
    );
    let (client, _) = assert_pair(
        &spans,
        "std::vector<Tango::DeviceAttribute>* Tango::DeviceProxy::read_attributes",
        None,
        "Tango::Device_5Impl::read_attributes_5",
        client_pid,
        a_pid,
    );
    assert_eq!(client.attributes.get("tango.operation.argument"), None);
    assert_pair(
        &spans,
        "Tango::DeviceProxy::write_attribute",
        Some("counter"),
        "Tango::Device_4Impl::write_attributes_4",
        client_pid,
        a_pid,
    );
    let (_, server) = assert_pair(
        &spans,
        "Tango::Connection::command_inout",
        Some("Echo"),
        "Tango::Device_4Impl::command_inout_4",
        client_pid,
        a_pid,
    );
    assert_eq!(server.attributes.get_str("tango.operation.argument"), Some("Echo"));

    // A failing command: ERROR on both ends with cppTango's exception event.
    let (client, server) = assert_pair(
        &spans,
        "Tango::Connection::command_inout",
        Some("Fail"),
        "Tango::Device_4Impl::command_inout_4",
        client_pid,
        a_pid,
    );
    for span in [client, server] {
        assert_eq!(span.status.code, 2, "{span:?}");
        assert_eq!(span.status.message, "exception caught (see associated event)");
        let event = span.events.iter().find(|e| e.name == "exception caught").expect("exception event");
        assert_eq!(event.attributes.get_str("exception.type"), Some("Tango::DevFailed"));
        let message = event.attributes.get_str("exception.message").unwrap_or_default();
        assert!(message.starts_with("REASON:BoomReason;DESC:Failed on request;ORIGIN:"), "{message}");
    }

    // client → device A → device B: one trace over three processes.
    let (outer, serving) = assert_pair(
        &spans,
        "Tango::Connection::command_inout",
        Some("ReadPeer"),
        "Tango::Device_4Impl::command_inout_4",
        client_pid,
        a_pid,
    );
    let nested = only_child(&spans, serving, "Tango::DeviceProxy::read_attribute");
    assert_eq!(nested.kind, "CLIENT");
    assert_eq!(nested.attributes.get_str("tango.operation.target"), Some("test/demo/2"));
    assert_eq!(nested.attributes.get_str("tango.operation.argument"), Some("temperature"));
    assert_device_resource(nested, "test/demo/1", a_pid);
    let inner = only_child(&spans, nested, "Tango::Device_5Impl::read_attributes_5");
    assert_eq!(inner.attributes.get_i64("tango.client_ident.pid"), Some(a_pid));
    assert_device_resource(inner, "test/demo/2", b_pid);
    for span in [outer, serving, nested, inner] {
        assert_eq!(span.trace_id, outer.trace_id);
    }

    // Spans of many devices share requests: never one request per device.
    let per_request = receiver.resource_spans_per_request();
    assert!(per_request.iter().any(|&n| n > 1), "resources per request: {per_request:?}");
    // Each span exactly once.
    let mut ids: Vec<_> = spans.iter().map(|s| s.span_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), spans.len(), "duplicate spans:\n{}", render_trees(&spans));
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
    let spans = receiver.wait_for_blocking(|s| s.len() >= 10, WAIT);
    daemon.stop();
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
