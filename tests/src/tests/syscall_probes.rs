//! The syscall-tracepoint probes (the path of kernels without the `sock:*` tracepoints, forced
//! here with `TANGO_TRACER_SYSCALL_PROBES=1`) give the spans the socket probes give. Their
//! records carry no peer: the daemon reads it from `/proc`.

use std::time::Duration;

use tracer_export::{json::SpanJson, tree::render_trees};

use crate::{
    harness::{DemoServer, TracerDaemon, run_client, unique_marker},
    otlp_receiver::OtlpReceiver,
    reference,
    tests::pytango::wait_for_count,
};

const WAIT: Duration = Duration::from_secs(30);
const SYSCALL_PROBES: &str = "TANGO_TRACER_SYSCALL_PROBES";
/// What the daemon logs when the syscall probes read sends and receives.
const SYSCALL_PROBES_LOG: &str = "sends and receives are read at the syscall tracepoints";

/// The spans of a client that builds a proxy of `url` and reads an attribute, traced by a daemon
/// whose `TANGO_TRACER_SYSCALL_PROBES` is `syscall_probes`; whether it used the syscall probes.
fn traced_read(marker: &str, url: &str, syscall_probes: &str) -> (Vec<SpanJson>, bool) {
    let receiver = OtlpReceiver::start_blocking();
    let endpoint = receiver.http_endpoint().trim_end_matches("/v1/traces").to_string();
    let mut daemon = TracerDaemon::start(
        marker,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), (SYSCALL_PROBES, syscall_probes)],
        &[],
    );
    // Paused before it exits: `/proc` tells a connection's peer only while the connection exists,
    // and the daemon reads data records when it next drains the ring buffer.
    let out = run_client(marker, &[url, "read_attribute", "pause"], &[]);
    assert_eq!(out["steps"]["read_attribute"], "ok", "{out}");
    // The DeviceProxy, the read's client span and its server span.
    wait_for_count(&receiver, 3, WAIT);
    daemon.stop();
    (receiver.spans(), daemon.log().contains(SYSCALL_PROBES_LOG))
}

/// The `tango.client_ident.location` of the server span: `giop:tcp:<client ip>:<client port>`.
fn client_location(spans: &[SpanJson]) -> String {
    let server = spans.iter().find(|s| s.kind == "SERVER").expect("a server span");
    let location = server.attributes.get_str("tango.client_ident.location").unwrap_or_default();
    location.to_owned()
}

#[test]
fn syscall_probes_give_the_spans_of_the_socket_probes() {
    let marker = unique_marker("syscallprobes");
    let server = DemoServer::start(&marker, "syscalls", &["test/demo/1"]);
    let url = server.url("test/demo/1");
    let (socket_spans, socket_used_syscalls) = traced_read(&marker, &url, "0");
    let (syscall_spans, syscall_used_syscalls) = traced_read(&marker, &url, "1");
    assert!(!socket_used_syscalls, "the socket probes were not used:\n{}", render_trees(&socket_spans));
    assert!(syscall_used_syscalls, "the syscall probes were not used:\n{}", render_trees(&syscall_spans));

    // The construction's argument is rebuilt from the peer of the client's connection, which only
    // `/proc` tells on this path.
    for spans in [&socket_spans, &syscall_spans] {
        assert_eq!(spans.len(), 3, "{}", render_trees(spans));
        let proxy = spans
            .iter()
            .find(|s| s.name == "Tango::DeviceProxy::DeviceProxy")
            .unwrap_or_else(|| panic!("no DeviceProxy span:\n{}", render_trees(spans)));
        assert_eq!(proxy.attributes.get_str("tango.operation.argument"), Some(url.as_str()));
        let location = client_location(spans);
        let port = location.strip_prefix("giop:tcp:127.0.0.1:").and_then(|p| p.parse::<u16>().ok());
        assert!(port.is_some_and(|p| p != server.port), "client location {location:?}");
    }

    // Everything else compared, span by span (per-run values left out).
    let socket_trees = reference::forest(&socket_spans).expect("a clean forest");
    let syscall_trees = reference::forest(&syscall_spans).expect("a clean forest");
    if let Err(difference) = reference::compare(&socket_trees, &syscall_trees) {
        panic!("the syscall probes' spans differ from the socket probes':\n{difference}");
    }
}
