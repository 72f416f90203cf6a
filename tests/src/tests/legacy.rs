//! Drop-in tracing through the Tango database: Debian's DataBaseds and TangoTest 9.3.4 on MariaDB,
//! a PyTango 10.3.1 device server registered in it, and clients of both generations. Same-host
//! clients reach database-registered servers over Unix sockets; requests carry opaque POA keys.

use std::time::Duration;

use tracer_export::{json::SpanJson, tree::render_trees};

use crate::{
    dbstack::{DbStack, DemoDbServer, TangoTestServer, legacy_python, run_db_client},
    harness::{TracerDaemon, python, unique_marker},
    otlp_receiver::OtlpReceiver,
};

const WAIT: Duration = Duration::from_secs(30);

fn endpoint(receiver: &OtlpReceiver) -> String {
    receiver.http_endpoint().trim_end_matches("/v1/traces").to_string()
}

fn databaseds_pid(stack: &DbStack) -> String {
    let path = stack.dir().join("databaseds.pid");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_string()
}

/// Traces this test's processes and the stack's DataBaseds.
fn daemon_for(stack: &DbStack, marker: &str, receiver: &OtlpReceiver) -> TracerDaemon {
    TracerDaemon::start(
        marker,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint(receiver))],
        &["--pid", &databaseds_pid(stack)],
    )
}

fn client_span<'a>(spans: &'a [SpanJson], pid: i64, name: &str, argument: &str) -> &'a SpanJson {
    spans
        .iter()
        .find(|s| {
            s.kind == "CLIENT"
                && s.name == name
                && s.resource.get_i64("tango.process.id") == Some(pid)
                && s.attributes.get_str("tango.operation.argument") == Some(argument)
        })
        .unwrap_or_else(|| panic!("no CLIENT {name}({argument}) of pid {pid}:\n{}", render_trees(spans)))
}

fn server_child<'a>(spans: &'a [SpanJson], client: &SpanJson, name: &str) -> &'a SpanJson {
    spans
        .iter()
        .find(|s| s.kind == "SERVER" && s.parent_span_id == client.span_id && s.name == name)
        .unwrap_or_else(|| panic!("no SERVER {name} under {}:\n{}", client.name, render_trees(spans)))
}

fn assert_device(span: &SpanJson, class: &str, device: &str, server: &str, tango_host: &str, version: &str) {
    let r = &span.resource;
    assert_eq!(r.get_str("service.name"), Some(class), "{span:?}");
    assert_eq!(r.get_str("service.instance.id"), Some(device), "{span:?}");
    assert_eq!(r.get_str("tango.server.name"), Some(server), "{span:?}");
    assert_eq!(r.get_str("tango.process.kind"), Some("server"));
    assert_eq!(r.get_str("tango.host"), Some(tango_host), "{span:?}");
    assert_eq!(span.scope.version, version, "scope version = the server's libtango");
}

#[test]
fn tangotest_9_3_4_running_before_the_daemon_is_traced_over_unix_sockets() {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("legacy");
    let stack = DbStack::start();
    let host = stack.tango_host();
    // Started before the daemon: its opaque keys are learnt by asking the database.
    let tangotest = TangoTestServer::start(&stack, &marker, "test");
    let mut daemon = daemon_for(&stack, &marker, &receiver);
    let out = run_db_client(
        &stack,
        &marker,
        &python(),
        "legacy_client.py",
        &[
            &tangotest.device,
            "read_attribute=double_scalar",
            "command_inout=DevDouble:3.5",
            "command_inout=DevString:abc",
        ],
        &[],
    );
    let pid = out["pid"].as_i64().expect("client pid");
    let _ = receiver.wait_for_blocking(
        |s| {
            s.iter()
                .filter(|x| x.kind == "SERVER" && x.resource.get_str("service.name") == Some("TangoTest"))
                .count()
                >= 3
        },
        WAIT,
    );
    daemon.stop();
    // Everything the daemon flushed at stop, not only what had arrived when the wait ended.
    let spans = receiver.spans();

    let read = client_span(&spans, pid, "Tango::DeviceProxy::read_attribute", "double_scalar");
    assert_eq!(read.attributes.get_str("tango.operation.target"), Some("sys/tg_test/1"));
    assert_eq!(read.resource.get_str("tango.host"), Some(host.as_str()));
    assert_eq!(read.scope.version, "10.3.3");
    let served = server_child(&spans, read, "Tango::Device_5Impl::read_attributes_5");
    assert_device(served, "TangoTest", "sys/tg_test/1", "TangoTest/test", &host, "9.3.4");
    let location = served.attributes.get_str("tango.client_ident.location").unwrap_or_default();
    assert!(
        location.starts_with("giop:unix:/tmp/omni-"),
        "same-host clients use the Unix socket: {location}"
    );
    for (command, _) in [("DevDouble", 3.5), ("DevString", 0.0)] {
        let client = client_span(&spans, pid, "Tango::Connection::command_inout", command);
        let server = server_child(&spans, client, "Tango::Device_4Impl::command_inout_4");
        assert_eq!(server.attributes.get_str("tango.operation.argument"), Some(command));
        assert_eq!(server.attributes.get_i64("tango.client_ident.pid"), Some(pid));
    }

    // Database calls look as natively: command_inout on sys/database/2, served by DataBaseds.
    let import = client_span(&spans, pid, "Tango::Connection::command_inout", "DbImportDevice");
    assert_eq!(import.attributes.get_str("tango.operation.target"), Some("sys/database/2"));
    let db_side = server_child(&spans, import, "Tango::Device_4Impl::command_inout_4");
    assert_eq!(db_side.resource.get_str("service.name"), Some("DataBase"));
    assert_eq!(db_side.resource.get_str("service.instance.id"), Some("sys/database/2"));
    assert!(db_side.resource.get_str("tango.server.name").is_some_and(|s| s.starts_with("DataBaseds/")));
    // The daemon's own database queries are not traced.
    assert!(
        !spans
            .iter()
            .any(|s| s.attributes.get_str("tango.operation.argument") == Some("DbGetDeviceExportedList")),
        "{}",
        render_trees(&spans)
    );
}

#[test]
fn tcp_forced_client_reaches_the_same_spans_with_a_tcp_location() {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("tcp");
    let stack = DbStack::start();
    let mut daemon = daemon_for(&stack, &marker, &receiver);
    // Started after the daemon: its keys are learnt from its own DbExportDevice.
    let tangotest = TangoTestServer::start(&stack, &marker, "test");
    let out = run_db_client(
        &stack,
        &marker,
        &python(),
        "legacy_client.py",
        &[&tangotest.device, "read_attribute=double_scalar"],
        &[("ORBclientTransportRule", "* tcp")],
    );
    let pid = out["pid"].as_i64().expect("client pid");
    let _ = receiver.wait_for_blocking(
        |s| {
            s.iter().any(|x| x.kind == "SERVER" && x.name == "Tango::Device_5Impl::read_attributes_5")
                && s.iter().any(|x| x.kind == "CLIENT" && x.resource.get_i64("tango.process.id") == Some(pid))
        },
        WAIT,
    );
    daemon.stop();
    // Everything the daemon flushed at stop, not only what had arrived when the wait ended.
    let spans = receiver.spans();
    let read = client_span(&spans, pid, "Tango::DeviceProxy::read_attribute", "double_scalar");
    let served = server_child(&spans, read, "Tango::Device_5Impl::read_attributes_5");
    assert_device(served, "TangoTest", "sys/tg_test/1", "TangoTest/test", &stack.tango_host(), "9.3.4");
    let location = served.attributes.get_str("tango.client_ident.location").unwrap_or_default();
    assert!(location.starts_with("giop:tcp:127.0.0.1:"), "{location}");
    assert!(
        !spans
            .iter()
            .any(|s| s.attributes.get_str("tango.operation.argument") == Some("DbGetDeviceExportedList")),
        "the daemon's own database queries are not traced:\n{}",
        render_trees(&spans)
    );
}

#[test]
fn mixed_generation_chains_are_one_trace_each() {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("mixed");
    let stack = DbStack::start();
    let host = stack.tango_host();
    let tangotest = TangoTestServer::start(&stack, &marker, "test");
    let mut daemon = daemon_for(&stack, &marker, &receiver);
    let demo = DemoDbServer::start(&stack, &marker, "mixed", &["test/dbdemo/1"]);
    let demo_device = demo.devices[0].clone();

    // PyTango 10.3.1 device → TangoTest 9.3.4, driven by a PyTango 10.3.1 client.
    let peer = format!("{}/double_scalar", tangotest.device);
    let new_client = run_db_client(
        &stack,
        &marker,
        &python(),
        "legacy_client.py",
        &[&demo_device, &format!("nested={peer}")],
        &[],
    );
    assert_eq!(
        new_client["steps"].as_object().and_then(|s| s.values().next()).and_then(|v| v.as_str()),
        Some("ok")
    );
    // Debian's PyTango 9.3 (libtango 9.3.4) client → PyTango 10.3.1 device, and a failing command.
    let old_client = run_db_client(
        &stack,
        &marker,
        &legacy_python(),
        "legacy_client.py",
        &[&demo_device, "read_attribute=temperature", "command_inout=Fail:BoomReason"],
        &[],
    );
    let new_pid = new_client["pid"].as_i64().expect("pid");
    let old_pid = old_client["pid"].as_i64().expect("pid");
    let _ = receiver.wait_for_blocking(
        |s| {
            s.iter().any(|x| {
                x.name == "Tango::Device_5Impl::read_attributes_5"
                    && x.resource.get_str("service.name") == Some("TangoTest")
            }) && s.iter().filter(|x| x.resource.get_i64("tango.process.id") == Some(old_pid)).count() >= 2
        },
        WAIT,
    );
    daemon.stop();
    // Everything the daemon flushed at stop, not only what had arrived when the wait ended.
    let spans = receiver.spans();

    // 10.3.1 client → Demo (10.3.1) → TangoTest (9.3.4).
    let outer = client_span(&spans, new_pid, "Tango::Connection::command_inout", "ReadPeer");
    let serving = server_child(&spans, outer, "Tango::Device_4Impl::command_inout_4");
    assert_device(serving, "Demo", "test/dbdemo/1", "Demo/mixed", &host, "10.3.3");
    let nested = spans
        .iter()
        .find(|s| s.parent_span_id == serving.span_id && s.name == "Tango::DeviceProxy::read_attribute")
        .unwrap_or_else(|| panic!("no nested read under ReadPeer:\n{}", render_trees(&spans)));
    assert_eq!(nested.attributes.get_str("tango.operation.target"), Some("sys/tg_test/1"));
    let inner = server_child(&spans, nested, "Tango::Device_5Impl::read_attributes_5");
    assert_device(inner, "TangoTest", "sys/tg_test/1", "TangoTest/test", &host, "9.3.4");
    for span in [serving, nested, inner] {
        assert_eq!(span.trace_id, outer.trace_id);
    }

    // 9.3.4 client → 10.3.1 device: the same names as a 10.3 server would produce.
    let read = client_span(&spans, old_pid, "Tango::DeviceProxy::read_attribute", "temperature");
    assert_eq!(read.scope.version, "9.3.4");
    let served = server_child(&spans, read, "Tango::Device_5Impl::read_attributes_5");
    assert_eq!(served.attributes.get_i64("tango.client_ident.pid"), Some(old_pid));
    assert_eq!(served.attributes.get_str("tango.client_ident.lang"), Some("CPP"));
    assert_device(served, "Demo", "test/dbdemo/1", "Demo/mixed", &host, "10.3.3");
    let fail = client_span(&spans, old_pid, "Tango::Connection::command_inout", "Fail");
    let failed = server_child(&spans, fail, "Tango::Device_4Impl::command_inout_4");
    for span in [fail, failed] {
        assert_eq!(span.status.code, 2, "{span:?}");
        let event = span.events.iter().find(|e| e.name == "exception caught").expect("exception event");
        let message = event.attributes.get_str("exception.message").unwrap_or_default();
        assert!(message.starts_with("REASON:BoomReason;"), "{message}");
    }
}

#[test]
fn a_device_proxy_built_through_the_database_matches_the_native_reference() {
    use crate::{
        harness::reference_steps,
        reference::{self, ANY, NATIVE_DATABASE},
        tests::pytango::{compare_steps, native_step, wait_for_count},
    };
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("dbconnect");
    let stack = DbStack::start();
    let demo = DemoDbServer::start(&stack, &marker, "ref", &["test/dbdemo/1"]);
    // DataBaseds 9.3.4 has no telemetry of its own and is not traced here, as in the reference.
    let mut daemon =
        TracerDaemon::start(&marker, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint(&receiver))], &[]);
    let out = run_db_client(
        &stack,
        &marker,
        &python(),
        "reference_client.py",
        &[&demo.devices[0], "-", "connect", "read_attribute"],
        &[],
    );
    let (_, ran) = reference_steps(&out);
    // connect: the INTERNAL span with the database calls cppTango makes inside it.
    let connect = reference::forest(&reference::load(NATIVE_DATABASE, "connect.json")).expect("reference");
    // read_attribute: the DB-less reference's pair, served by a device registered in a database.
    let mut read = native_step("read_attribute");
    for server in &mut read[0].children {
        server.resource.insert("service.instance.id".into(), "test/dbdemo/1".into());
        server.resource.insert("tango.server.name".into(), "Demo/ref".into());
        server.resource.insert("tango.host".into(), ANY.into());
    }
    read[0].attributes.insert("tango.operation.target".into(), "test/dbdemo/1".into());
    let expected = vec![connect, read];
    let total = expected.iter().flatten().map(reference::Shape::len).sum();
    wait_for_count(&receiver, total, WAIT);
    daemon.stop();
    let problems = compare_steps(&receiver.spans(), &ran, &expected);
    assert!(problems.is_empty(), "differences from the native reference:\n{}", problems.join("\n"));
}
