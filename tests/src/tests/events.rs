//! Tango events end to end: the subscribe pair, push (PRODUCER) and delivery (CONSUMER) spans
//! linked across processes, pushes from inside a command and from the polling thread.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use tracer_export::{json::SpanJson, tree::render_trees};

use crate::{
    dbstack::{DbStack, TangoTestServer, run_db_client},
    harness::{DemoServer, MARKER, TracerDaemon, python, script, unique_marker},
    otlp_receiver::OtlpReceiver,
};

const WAIT: Duration = Duration::from_secs(30);
const PUSH: &str = "Tango::ZmqEventSupplier::push_event";
const DELIVERY: &str = "Tango::ZmqEventConsumer::push_zmq_event";

fn endpoint(receiver: &OtlpReceiver) -> String {
    receiver.http_endpoint().trim_end_matches("/v1/traces").to_string()
}

/// Runs event_client.py; returns (pid, received values).
pub(super) fn event_client(marker: &str, args: &[&str]) -> (i64, usize) {
    let output = Command::new(python())
        .arg(script("event_client.py"))
        .args(args)
        .env(MARKER, marker)
        .stderr(Stdio::inherit())
        .output()
        .expect("running event_client.py");
    assert!(output.status.success(), "event_client.py failed: {}", output.status);
    let text = String::from_utf8_lossy(&output.stdout);
    let json: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    (json["pid"].as_i64().expect("pid"), json["received"].as_array().map(Vec::len).unwrap_or(0))
}

pub(super) fn of_pid<'a>(spans: &'a [SpanJson], pid: i64, name: &str) -> Vec<&'a SpanJson> {
    spans.iter().filter(|s| s.name == name && s.resource.get_i64("tango.process.id") == Some(pid)).collect()
}

fn counter(span: &SpanJson) -> i64 {
    span.attributes.get_i64("tango.event.counter").unwrap_or(-1)
}

#[test]
fn pushes_from_a_command_reach_two_subscribers_linked_to_one_push() {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("events");
    let server = DemoServer::start(&marker, "ev", &["test/demo/1"]);
    let mut daemon =
        TracerDaemon::start(&marker, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint(&receiver))], &[]);
    let url = server.url("test/demo/1");
    let server_pid = i64::from(server.proc.pid());

    // A passive subscriber waits for three events while another subscribes and pushes them.
    let passive = {
        let marker = marker.clone();
        let url = url.clone();
        std::thread::spawn(move || event_client(&marker, &[&url, "temperature", "4", "--wait", "20"]))
    };
    std::thread::sleep(Duration::from_secs(2));
    let (pusher, got) =
        event_client(&marker, &[&url, "temperature", "3", "--push", "PushTemperature", "--pause", "0.2"]);
    assert_eq!(got, 4, "initial value and three pushes");
    let (listener, _) = passive.join().expect("passive subscriber");

    let spans = receiver.wait_for_blocking(
        |s| {
            of_pid(s, pusher, DELIVERY).len() >= 3
                && of_pid(s, listener, DELIVERY).len() >= 3
                && of_pid(s, server_pid, PUSH).len() >= 3
                && !of_pid(s, listener, "Tango::DeviceProxy::unsubscribe_event").is_empty()
        },
        WAIT,
    );
    daemon.stop();
    let dump = render_trees(&spans);

    // The subscribe pair: the client's command_inout and the admin device's server span.
    let subscribe = spans
        .iter()
        .find(|s| {
            s.kind == "CLIENT"
                && s.resource.get_i64("tango.process.id") == Some(pusher)
                && s.attributes.get_str("tango.operation.argument") == Some("ZmqEventSubscriptionChange")
        })
        .unwrap_or_else(|| panic!("no subscribe span:\n{dump}"));
    assert_eq!(subscribe.name, "Tango::Connection::command_inout");
    assert_eq!(subscribe.attributes.get_str("tango.operation.target"), Some("dserver/demo/ev"));
    let admin = spans
        .iter()
        .find(|s| s.parent_span_id == subscribe.span_id && s.kind == "SERVER")
        .unwrap_or_else(|| panic!("no admin-device span under the subscribe:\n{dump}"));
    assert_eq!(admin.name, "Tango::Device_4Impl::command_inout_4");
    assert_eq!(admin.resource.get_str("service.instance.id"), Some("dserver/demo/ev"));
    for span in [subscribe, admin] {
        assert_eq!(span.attributes.get_str("tango.event.device"), Some("test/demo/1"), "{span:?}");
        assert_eq!(span.attributes.get_str("tango.event.attribute"), Some("temperature"));
        assert_eq!(span.attributes.get_str("tango.event.type"), Some("change"));
        assert!(
            span.attributes.get_str("tango.event.endpoint").is_some_and(|e| e.starts_with("tcp://")),
            "{span:?}"
        );
    }

    // Every push is one PRODUCER span, the child of the PushTemperature request that pushed it.
    let pushes = of_pid(&spans, server_pid, PUSH);
    for push in &pushes {
        assert_eq!(push.kind, "PRODUCER");
        assert_eq!(push.resource.get_str("service.instance.id"), Some("test/demo/1"));
        assert_eq!(push.attributes.get_str("messaging.system"), Some("zeromq"));
        assert!(
            push.attributes.get_str("messaging.destination.name").is_some_and(|t| t.contains("temperature"))
        );
        let parent = spans
            .iter()
            .find(|s| s.span_id == push.parent_span_id)
            .unwrap_or_else(|| panic!("push {} has no parent:\n{dump}", counter(push)));
        assert_eq!(parent.name, "Tango::Device_4Impl::command_inout_4");
        assert_eq!(parent.attributes.get_str("tango.operation.argument"), Some("PushTemperature"));
    }
    let mut parents: Vec<_> = pushes.iter().map(|p| p.parent_span_id.clone()).collect();
    parents.sort();
    parents.dedup();
    assert_eq!(parents.len(), pushes.len(), "each push under its own command:\n{dump}");

    // Each subscriber's delivery is a CONSUMER child of, and linked to, the same push.
    for push in &pushes {
        for subscriber in [pusher, listener] {
            let delivery = of_pid(&spans, subscriber, DELIVERY)
                .into_iter()
                .find(|d| counter(d) == counter(push))
                .unwrap_or_else(|| panic!("pid {subscriber} has no delivery of {}:\n{dump}", counter(push)));
            assert_eq!(delivery.kind, "CONSUMER");
            assert_eq!(delivery.parent_span_id, push.span_id);
            assert_eq!(delivery.trace_id, push.trace_id);
            assert_eq!(delivery.links.first().map(|l| l.span_id.as_str()), Some(push.span_id.as_str()));
            assert!(delivery.attributes.get_i64("tango.event.delay_us").is_some());
            assert_eq!(delivery.attributes.get("tango.event.lost"), None);
        }
    }
    // The last unsubscription of a client from a server cancels the server's heartbeat
    // subscription on the wire: a client span of its own.
    let unsubscribe = of_pid(&spans, listener, "Tango::DeviceProxy::unsubscribe_event");
    assert_eq!(unsubscribe[0].kind, "CLIENT");
    assert_eq!(unsubscribe[0].attributes.get_str("tango.event.action"), Some("unsubscribe"));
}

#[test]
fn polling_pushes_are_root_spans_and_a_subscriber_may_exit_without_unsubscribing() {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("polling");
    let stack = DbStack::start();
    let tangotest =
        TangoTestServer::start_with_change_events(&stack, &marker, "test", Duration::from_millis(100));
    let mut daemon =
        TracerDaemon::start(&marker, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint(&receiver))], &[]);
    let server_pid = i64::from(tangotest.proc.pid());
    // This subscriber exits without unsubscribing.
    let out = run_db_client(
        &stack,
        &marker,
        &python(),
        "event_client.py",
        &[&tangotest.device, "double_scalar", "4", "--no-unsubscribe"],
        &[],
    );
    let subscriber = out["pid"].as_i64().expect("pid");
    let spans = receiver.wait_for_blocking(|s| of_pid(s, subscriber, DELIVERY).len() >= 3, WAIT);
    // Polling goes on after the subscriber left; the daemon keeps tracing and nothing breaks.
    std::thread::sleep(Duration::from_millis(500));
    daemon.stop();
    let dump = render_trees(&spans);
    let pushes = of_pid(&spans, server_pid, PUSH);
    assert!(!pushes.is_empty(), "{dump}");
    for push in &pushes {
        assert_eq!(push.parent_span_id, "", "pushed by the polling thread: a root span\n{dump}");
        assert_eq!(push.resource.get_str("service.name"), Some("TangoTest"));
        assert_eq!(push.attributes.get_str("tango.event.attribute"), Some("double_scalar"));
        assert_eq!(push.scope.version, "9.3.4");
    }
    for delivery in of_pid(&spans, subscriber, DELIVERY) {
        if let Some(push) = pushes.iter().find(|p| counter(p) == counter(delivery)) {
            assert_eq!(delivery.parent_span_id, push.span_id);
        }
    }
}
