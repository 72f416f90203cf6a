//! User code inside a request, from outside: the INTERNAL spans of `always_executed_hook`, each
//! attribute read and each command under their SERVER span, for a PyTango 10.3.1 device
//! (libtango 10.3.3 of the wheel) and Debian's TangoTest 9.3.4 through the database.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use tracer_export::{json::SpanJson, tree::render_trees};

use crate::{
    dbstack::{DbStack, TangoTestServer, run_db_client},
    harness::{MARKER, Proc, TracerDaemon, free_port, python, script, unique_marker, wait_for_port},
    otlp_receiver::OtlpReceiver,
};

const WAIT: Duration = Duration::from_secs(30);
const MS: f64 = 1_000.0;

fn endpoint(receiver: &OtlpReceiver) -> String {
    receiver.http_endpoint().trim_end_matches("/v1/traces").to_string()
}

/// `tests/python/user_code_server.py` (class `Slow`, no database), stopped by PID on drop.
struct SlowServer {
    proc: Proc,
    port: u16,
}

impl SlowServer {
    fn start(marker: &str, device: &str) -> SlowServer {
        let port = free_port();
        let child = Command::new(python())
            .arg(script("user_code_server.py"))
            .arg("user")
            .arg(port.to_string())
            .arg(device)
            .env(MARKER, marker)
            .env_remove("TANGO_TELEMETRY_ENABLE")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting user_code_server.py");
        let mut proc = Proc { child, name: "user code server".into() };
        wait_for_port(port, &mut proc, Duration::from_secs(30));
        SlowServer { proc, port }
    }
}

/// Runs `user_code_client.py` against `url`; its JSON output.
fn run_steps(marker: &str, url: &str, steps: &[&str]) -> serde_json::Value {
    let output = Command::new(python())
        .arg(script("user_code_client.py"))
        .arg(url)
        .args(steps)
        .env(MARKER, marker)
        .output()
        .expect("running user_code_client.py");
    assert!(output.status.success(), "user_code_client.py: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("client output {stdout:?}: {e}"))
}

/// The SERVER span of a request whose CLIENT span (of process `client`) has this name and
/// argument (`None`: any).
fn server_span<'a>(spans: &'a [SpanJson], client: i64, name: &str, argument: Option<&str>) -> &'a SpanJson {
    let calls: Vec<&SpanJson> = spans
        .iter()
        .filter(|s| {
            s.kind == "CLIENT"
                && s.name == name
                && s.resource.get_i64("tango.process.id") == Some(client)
                && argument.is_none_or(|a| s.attributes.get_str("tango.operation.argument") == Some(a))
        })
        .collect();
    let call =
        calls.first().unwrap_or_else(|| panic!("no CLIENT {name} {argument:?}:\n{}", render_trees(spans)));
    spans
        .iter()
        .find(|s| s.kind == "SERVER" && s.parent_span_id == call.span_id && s.trace_id == call.trace_id)
        .unwrap_or_else(|| panic!("no SERVER span under {name} {argument:?}:\n{}", render_trees(spans)))
}

/// The INTERNAL children of `parent`, in the order they started.
fn user_code<'a>(spans: &'a [SpanJson], parent: &SpanJson) -> Vec<&'a SpanJson> {
    let mut children: Vec<&SpanJson> = spans
        .iter()
        .filter(|s| {
            s.kind == "INTERNAL" && s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id
        })
        .collect();
    children.sort_by_key(|s| s.start_ns);
    children
}

fn names<'a>(spans: &[&'a SpanJson]) -> Vec<&'a str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}

/// Children ran one after the other inside their parent's window.
fn assert_sequential(parent: &SpanJson, children: &[&SpanJson], spans: &[SpanJson]) {
    let mut previous_end = parent.start_ns;
    for child in children {
        assert!(
            child.start_ns >= previous_end && child.end_ns >= child.start_ns && child.end_ns <= parent.end_ns,
            "{} is not inside {} after its previous sibling:\n{}",
            child.name,
            parent.name,
            render_trees(spans)
        );
        previous_end = child.end_ns;
    }
}

/// The method took `nominal_ms` (a sleep) give or take scheduling: never less, and not much
/// more on a loaded 2-core machine (the bound is loose: the order of the durations is the point).
fn assert_took(span: &SpanJson, nominal_ms: f64) {
    let ms = span.duration_us / MS;
    assert!(
        ms >= nominal_ms * 0.97 && ms < nominal_ms + 15.0,
        "{} took {ms:.3} ms, expected ~{nominal_ms} ms",
        span.name
    );
}

fn exception_message(span: &SpanJson) -> String {
    span.events
        .iter()
        .find(|e| e.name == "exception caught")
        .and_then(|e| e.attributes.get_str("exception.message"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_pytango_request_shows_its_hook_each_attribute_read_and_its_command_in_order() {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("userspans");
    let mut daemon = TracerDaemon::start(
        &marker,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint(&receiver))],
        &["--user-spans", "on", "--exporter", "otlp", "--exporter", "store"],
    );
    let device = "test/slow/1";
    let server = SlowServer::start(&marker, device);
    let url = format!("tango://127.0.0.1:{}/{device}#dbase=no", server.port);
    let out = run_steps(&marker, &url, &["read3", "work", "fail", "broken", "wait"]);
    let client = out["pid"].as_i64().expect("client pid");
    let _ = receiver.wait_for_blocking(|s| s.iter().filter(|x| x.kind == "INTERNAL").count() >= 10, WAIT);
    let stats = daemon.ctl(&["stats"]);
    daemon.stop();
    let spans = receiver.spans();

    // read_attributes(["fast", "medium", "slow"]): the hook, then each read, in order.
    let read = server_span(
        &spans,
        client,
        "std::vector<Tango::DeviceAttribute>* Tango::DeviceProxy::read_attributes",
        None,
    );
    assert_eq!(read.name, "Tango::Device_5Impl::read_attributes_5");
    let children = user_code(&spans, read);
    assert_eq!(
        names(&children),
        ["Slow.always_executed_hook", "Slow.fast", "Slow.medium", "Slow.slow"],
        "{}",
        render_trees(&spans)
    );
    assert_sequential(read, &children, &spans);
    for (child, nominal_ms) in children.iter().zip([2.0, 1.0, 5.0, 20.0]) {
        assert_took(child, nominal_ms);
        assert!(!child.is_error(), "{}", child.name);
        assert_eq!(child.resource.get_str("service.instance.id"), Some(device), "the device's resource");
        assert_eq!(child.resource.get_str("service.name"), Some("Slow"));
        assert_eq!(child.scope.version, "10.3.3");
    }
    let arguments: Vec<_> =
        children.iter().map(|c| c.attributes.get_str("tango.operation.argument")).collect();
    assert_eq!(arguments, [None, Some("fast"), Some("medium"), Some("slow")]);

    // A command: the hook, then the command itself.
    let work = server_span(&spans, client, "Tango::Connection::command_inout", Some("Work"));
    let children = user_code(&spans, work);
    assert_eq!(names(&children), ["Slow.always_executed_hook", "Slow.Work"], "{}", render_trees(&spans));
    assert_sequential(work, &children, &spans);
    assert_took(children[1], 3.0);
    assert_eq!(children[1].attributes.get_str("tango.operation.argument"), Some("Work"));

    // A command that raises ends as an error with the exception its reply carries.
    let fail = server_span(&spans, client, "Tango::Connection::command_inout", Some("Fail"));
    let children = user_code(&spans, fail);
    assert_eq!(names(&children), ["Slow.always_executed_hook", "Slow.Fail"]);
    assert!(!children[0].is_error());
    assert!(children[1].is_error(), "{}", render_trees(&spans));
    assert!(
        exception_message(children[1]).contains("the command failed on purpose"),
        "{:?}",
        children[1].events
    );
    assert!(children[1].end_ns <= fail.end_ns);

    // A read that raises inside read_attributes: the other read is fine, the broken one is an
    // error with its own error from the reply (the request itself succeeds).
    let broken = spans
        .iter()
        .filter(|s| s.kind == "SERVER" && s.name == "Tango::Device_5Impl::read_attributes_5")
        .find(|s| user_code(&spans, s).iter().any(|c| c.name == "Slow.broken"))
        .unwrap_or_else(|| panic!("no request reading broken:\n{}", render_trees(&spans)));
    assert!(!broken.is_error());
    let children = user_code(&spans, broken);
    assert_eq!(names(&children), ["Slow.always_executed_hook", "Slow.fast", "Slow.broken"]);
    assert!(!children[1].is_error() && children[2].is_error());
    assert!(
        exception_message(children[2]).contains("the hardware did not answer"),
        "{:?}",
        children[2].events
    );

    // The polling thread read `polled` every 100 ms meanwhile: seen, but no span anywhere.
    assert!(!spans.iter().any(|s| s.name == "Slow.polled"), "{}", render_trees(&spans));
    let unserved = stats
        .lines()
        .find_map(|l| l.trim().strip_prefix("userspans.unserved_hits"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no userspans.unserved_hits in\n{stats}"));
    assert!(unserved >= 4, "the polling thread's reads were not seen: {stats}");

    // `tango-tracer show` prints them from the embedded store, the slowest read marked.
    let output = Command::new(crate::harness::tracer_binary())
        .args(["show", "--store"])
        .arg(daemon.dir.join("spans.jsonl"))
        .output()
        .expect("running tango-tracer show");
    let text = String::from_utf8_lossy(&output.stdout);
    let slow = text.lines().find(|l| l.contains("[INTERNAL] Slow.slow ")).unwrap_or_else(|| panic!("{text}"));
    assert!(slow.contains("<< slowest, "), "the slowest read is not marked:\n{text}");
    assert!(!text.lines().any(|l| l.contains("Slow.fast ") && l.contains("slowest")), "{text}");

    // One line per process says which probes it got.
    let log = daemon.log();
    let line = format!(
        "pid {}: user-level spans: always_executed_hook, attribute reads, commands (known build cppTango 10.3.3",
        server.proc.pid()
    );
    assert!(log.contains(&line), "no `{line}` in the log:\n{log}");
}

#[test]
fn tangotest_9_3_4_through_the_database_shows_its_reads_and_commands() {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("userspans-legacy");
    let stack = DbStack::start();
    let mut daemon = TracerDaemon::start(
        &marker,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint(&receiver))],
        &["--user-spans", "on"],
    );
    let tangotest = TangoTestServer::start(&stack, &marker, "test");
    let out = run_db_client(
        &stack,
        &marker,
        &python(),
        "legacy_client.py",
        &[
            &tangotest.device,
            "read_attributes=double_scalar,long_scalar",
            "command_inout=DevDouble:3.5",
            // Sent in lower case: the span keeps the command's declared name.
            "command_inout=devdouble:2.5",
        ],
        &[],
    );
    let client = out["pid"].as_i64().expect("client pid");
    let _ = receiver.wait_for_blocking(
        |s| s.iter().filter(|x| x.kind == "INTERNAL" && x.name.starts_with("TangoTest.")).count() >= 7,
        WAIT,
    );
    daemon.stop();
    let spans = receiver.spans();

    let read = server_span(
        &spans,
        client,
        "std::vector<Tango::DeviceAttribute>* Tango::DeviceProxy::read_attributes",
        None,
    );
    let children = user_code(&spans, read);
    assert_eq!(
        names(&children),
        ["TangoTest.always_executed_hook", "TangoTest.double_scalar", "TangoTest.long_scalar"],
        "{}",
        render_trees(&spans)
    );
    assert_sequential(read, &children, &spans);
    for child in &children {
        assert_eq!(child.resource.get_str("service.instance.id"), Some("sys/tg_test/1"));
        assert_eq!(child.resource.get_str("tango.host"), Some(stack.tango_host().as_str()));
        assert_eq!(child.scope.version, "9.3.4");
    }
    for argument in ["DevDouble", "devdouble"] {
        let command = server_span(&spans, client, "Tango::Connection::command_inout", Some(argument));
        let children = user_code(&spans, command);
        assert_eq!(
            names(&children),
            ["TangoTest.always_executed_hook", "TangoTest.DevDouble"],
            "{}",
            render_trees(&spans)
        );
        assert_sequential(command, &children, &spans);
        assert_eq!(children[1].attributes.get_str("tango.operation.argument"), Some("DevDouble"));
    }
    let log = daemon.log();
    let line = format!(
        "pid {}: user-level spans: always_executed_hook, attribute reads, commands (known build cppTango 9.3.4",
        tangotest.proc.pid()
    );
    assert!(log.contains(&line), "no `{line}` in the log:\n{log}");
}
