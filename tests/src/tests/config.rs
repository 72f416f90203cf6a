//! Tango's telemetry configuration honoured for 9.x servers that have never heard of it: each
//! source and each precedence step, runtime retargeting, invalid values, per-device receivers.

use std::{path::Path, time::Duration};

use tracer_export::{json::SpanJson, tree::render_trees};

use crate::{
    dbstack::{DbStack, TangoTestServer, run_db_client},
    harness::{TracerDaemon, python, script, unique_marker},
    otlp_receiver::OtlpReceiver,
};

const WAIT: Duration = Duration::from_secs(30);
const SERVED_READ: &str = "Tango::Device_5Impl::read_attributes_5";

fn base(receiver: &OtlpReceiver) -> String {
    receiver.http_endpoint().trim_end_matches("/v1/traces").to_string()
}

fn set_properties(stack: &DbStack, device: &str, settings: &[&str]) {
    let status = stack
        .command(python())
        .arg(script("db_props.py"))
        .arg(device)
        .args(settings)
        .status()
        .expect("running db_props.py");
    assert!(status.success(), "db_props.py {device} {settings:?}");
}

fn read(stack: &DbStack, marker: &str, device: &str) {
    let out = run_db_client(
        stack,
        marker,
        &python(),
        "legacy_client.py",
        &[device, "read_attribute=double_scalar"],
        &[],
    );
    assert_eq!(out["steps"]["read_attribute=double_scalar"], "ok", "{out}");
}

/// Changes `device`'s telemetry with PyTango's API, which sends the admin-device command.
fn control(stack: &DbStack, marker: &str, device: &str, action: &str, args: &[&str]) -> String {
    let mut all = vec![device, action];
    all.extend_from_slice(args);
    let out = run_db_client(stack, marker, &python(), "telemetry_control.py", &all, &[]);
    out["result"].as_str().unwrap_or_default().to_string()
}

/// Server spans of reads served by `device`.
fn served(spans: &[SpanJson], device: &str) -> usize {
    spans
        .iter()
        .filter(|s| s.name == SERVED_READ && s.resource.get_str("service.instance.id") == Some(device))
        .count()
}

/// Reads `device`, then waits until `receiver` has `expected` served reads of it.
fn read_and_expect(
    stack: &DbStack,
    marker: &str,
    receiver: &OtlpReceiver,
    device: &str,
    expected: usize,
) -> Vec<SpanJson> {
    read(stack, marker, device);
    receiver.wait_for_blocking(|s| served(s, device) >= expected, WAIT)
}

#[test]
fn environment_property_admin_command_and_restart_each_take_precedence_in_turn() {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("precedence");
    let stack = DbStack::start();
    let (one, two) = ("sys/tg_test/cfg1", "sys/tg_test/cfg2");
    // Property beats environment for device one only.
    set_properties(&stack, one, &["telemetry_enable=true"]);
    let mut daemon = TracerDaemon::start(&marker, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &base(&receiver))], &[]);
    let env_off = [("TANGO_TELEMETRY_ENABLE", "off")];
    let server = TangoTestServer::start_custom(&stack, &marker, "cfg", &[one, two], &env_off, None);

    // Environment beats the daemon's default (device two); the property beats the environment.
    read(&stack, &marker, two);
    let spans = read_and_expect(&stack, &marker, &receiver, one, 1);
    assert_eq!(served(&spans, two), 0, "env off beats the daemon default:\n{}", render_trees(&spans));

    // Admin commands beat properties, also when the 9.x server answers "command not found".
    let answer = control(&stack, &marker, one, "stop", &[]);
    assert!(answer.starts_with("DevFailed:"), "a 9.x server does not know the command: {answer}");
    control(&stack, &marker, two, "start", &[]);
    read(&stack, &marker, one);
    let spans = read_and_expect(&stack, &marker, &receiver, two, 1);
    assert_eq!(served(&spans, one), 1, "StopTelemetry beats the property:\n{}", render_trees(&spans));

    // A restart forgets runtime changes: back to property (one on) and environment (two off).
    drop(server);
    let _server = TangoTestServer::start_custom(&stack, &marker, "cfg", &[one, two], &env_off, None);
    read(&stack, &marker, two);
    let spans = read_and_expect(&stack, &marker, &receiver, one, 2);
    assert_eq!(served(&spans, two), 1, "StartTelemetry ended with the process:\n{}", render_trees(&spans));
    daemon.stop();
}

#[test]
fn a_9x_server_switched_on_by_start_telemetry_and_retargeted_at_runtime() {
    let first = OtlpReceiver::start_blocking();
    let second = OtlpReceiver::start_blocking();
    let marker = unique_marker("runtime");
    let stack = DbStack::start();
    let device = "sys/tg_test/sw1";
    // Only what enables telemetry is traced; an invalid topic list is reported and ignored.
    let mut daemon = TracerDaemon::start(
        &marker,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &base(&first))],
        &["--default-telemetry", "off"],
    );
    let bad = [("TANGO_TELEMETRY_TOPICS", "user,bogus")];
    let _server = TangoTestServer::start_custom(&stack, &marker, "sw", &[device], &bad, None);
    read(&stack, &marker, device);
    control(&stack, &marker, device, "start", &[]);
    let spans = read_and_expect(&stack, &marker, &first, device, 1);
    assert_eq!(served(&spans, device), 1, "the read before StartTelemetry is not traced");

    // Retarget at runtime, no restart: the admin command, then tango-tracer ctl.
    let second_endpoint = second.http_endpoint();
    control(&stack, &marker, device, "tracing-endpoint", &["http", &second_endpoint]);
    read_and_expect(&stack, &marker, &second, device, 1);
    let changed = daemon.ctl(&["endpoints", "sys/tg_test/*", "http", &first.http_endpoint()]);
    assert!(changed.contains(device), "{changed}");
    let spans = read_and_expect(&stack, &marker, &first, device, 2);
    assert_eq!(served(&second.spans(), device), 1, "{}", render_trees(&spans));

    let list = daemon.ctl(&["list"]);
    assert!(list.contains(device) && list.contains("TangoTest"), "{list}");
    assert!(list.contains("tango-tracer ctl"), "the source of the endpoints is shown:\n{list}");
    assert!(list.contains("bogus"), "the invalid value is reported:\n{list}");
    daemon.ctl(&["stop", device]);
    read(&stack, &marker, device);
    daemon.ctl(&["start", device]);
    let spans = read_and_expect(&stack, &marker, &first, device, 3);
    assert_eq!(served(&spans, device), 3, "the read while stopped is not traced");
    daemon.stop();
}

#[test]
fn tangorc_enables_and_two_devices_of_one_process_export_to_two_receivers() {
    let first = OtlpReceiver::start_blocking();
    let second = OtlpReceiver::start_blocking();
    let marker = unique_marker("tangorc");
    let stack = DbStack::start();
    let (one, two) = ("sys/tg_test/rc1", "sys/tg_test/rc2");
    for (device, receiver) in [(one, &first), (two, &second)] {
        let endpoint = receiver.http_endpoint();
        set_properties(
            &stack,
            device,
            &["telemetry_tracing_exporters=http", &format!("telemetry_tracing_endpoints={endpoint}")],
        );
    }
    // The daemon traces nothing by default; the server's /etc/tangorc (its own mount namespace)
    // switches telemetry on. cppTango lowercases tangorc lines.
    let mut daemon = TracerDaemon::start(&marker, &[], &["--default-telemetry", "off"]);
    let tangorc = daemon.dir.join("tangorc");
    std::fs::write(&tangorc, "# test\nTANGO_TELEMETRY_ENABLE=ON\n").expect("writing the test tangorc");
    let _server =
        TangoTestServer::start_custom(&stack, &marker, "rc", &[one, two], &[], Some(Path::new(&tangorc)));
    read(&stack, &marker, one);
    read(&stack, &marker, two);
    let a = first.wait_for_blocking(|s| served(s, one) >= 1, WAIT);
    let b = second.wait_for_blocking(|s| served(s, two) >= 1, WAIT);
    daemon.stop();
    assert_eq!(served(&a, two), 0, "{}", render_trees(&a));
    assert_eq!(served(&b, one), 0, "{}", render_trees(&b));
}
