//! Device logs as OpenTelemetry log records: what a PyTango 10.3.1 device and Debian's TangoTest
//! 9.3.4 log, compared with cppTango 10.3.3's own records (`tests/reference/…/device-logs.json`)
//! and joined to the SERVER span of the request they were logged in; the logging configuration
//! (types, endpoints by property, admin command and `ctl`).

use std::{
    collections::{BTreeMap, BTreeSet},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tracer_export::json::{LogJson, SpanJson};

use crate::{
    dbstack::{DbStack, TangoTestServer, run_db_client},
    harness::{MARKER, Proc, TracerDaemon, free_port, python, script, unique_marker, wait_for_port},
    otlp_receiver::{OtlpReceiver, Protocol},
    reference::{OURS_ONLY_RESOURCE, PER_RUN, SDK_DESCRIPTION},
};

const WAIT: Duration = Duration::from_secs(30);
const SERVED_COMMAND: &str = "Tango::Device_4Impl::command_inout_4";
const LEVELS: [(&str, i32); 5] = [("DEBUG", 5), ("INFO", 9), ("WARN", 13), ("ERROR", 17), ("FATAL", 21)];

/// `tests/python/log_server.py`: class `LogDev`, no database.
struct LogServer {
    /// Stopped by PID when dropped.
    _proc: Proc,
    port: u16,
}

impl LogServer {
    fn start(marker: &str, instance: &str, devices: &[&str], env: &[(&str, &str)]) -> LogServer {
        let port = free_port();
        let mut command = Command::new(python());
        command
            .arg(script("log_server.py"))
            .arg(instance)
            .arg(port.to_string())
            .args(devices)
            .env(MARKER, marker)
            .env_remove("TANGO_TELEMETRY_ENABLE")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("starting log_server.py");
        let mut proc = Proc { child, name: format!("log server {instance}") };
        wait_for_port(port, &mut proc, Duration::from_secs(30));
        LogServer { _proc: proc, port }
    }

    fn url(&self, device: &str) -> String {
        format!("tango://127.0.0.1:{}/{device}#dbase=no", self.port)
    }
}

/// Runs `legacy_client.py DEVICE STEP…` with PyTango 10.3.1; its JSON output. Every step must
/// succeed.
fn client(marker: &str, device: &str, steps: &[&str]) -> Value {
    let output = Command::new(python())
        .arg(script("legacy_client.py"))
        .arg(device)
        .args(steps)
        .env(MARKER, marker)
        .output()
        .expect("running legacy_client.py");
    assert!(output.status.success(), "legacy_client.py: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let out: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("client output {stdout:?}: {e}"));
    for step in steps {
        assert_eq!(out["steps"][step], "ok", "{step}: {out}");
    }
    out
}

fn base(receiver: &OtlpReceiver) -> String {
    receiver.http_endpoint().trim_end_matches("/v1/traces").to_string()
}

fn has_body(logs: &[LogJson], body: &str) -> bool {
    logs.iter().any(|l| l.body_text() == body)
}

fn by_body<'a>(logs: &'a [LogJson], body: &str) -> &'a LogJson {
    let mut found = logs.iter().filter(|l| l.body_text() == body);
    let log = found.next().unwrap_or_else(|| panic!("no record {body:?} among {}", bodies(logs)));
    assert!(found.next().is_none(), "{body:?} exported twice: {}", bodies(logs));
    log
}

fn bodies(logs: &[LogJson]) -> String {
    logs.iter().map(|l| format!("{} {:?}", l.severity_text, l.body_text())).collect::<Vec<_>>().join(", ")
}

/// The SERVER span `log` was logged under: same trace and span id, the log inside its window.
fn server_span_of<'a>(spans: &'a [SpanJson], log: &LogJson) -> &'a SpanJson {
    let span = spans
        .iter()
        .find(|s| s.trace_id == log.trace_id && s.span_id == log.span_id)
        .unwrap_or_else(|| panic!("no span {}/{} for {:?}", log.trace_id, log.span_id, log.body_text()));
    assert_eq!(span.kind, "SERVER", "{:?} joined to {}", log.body_text(), span.name);
    assert!(
        span.start_ns <= log.time_ns && log.time_ns <= span.end_ns,
        "{:?} logged at {} outside its span {}..{}",
        log.body_text(),
        log.time_ns,
        span.start_ns,
        span.end_ns
    );
    assert_eq!(log.flags, 3, "cppTango's flags inside a request");
    span
}

fn argument(span: &SpanJson) -> &str {
    span.attributes.get_str("tango.operation.argument").unwrap_or_default()
}

/// The reference's records, resource and scope (cppTango 10.3.3's own export).
struct Reference {
    resource: BTreeMap<String, Value>,
    scope: (String, String),
    records: Vec<Value>,
}

fn reference() -> Reference {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("reference/cpptango-10.3.3-native/device-logs.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: Value = serde_json::from_str(&text).expect("device-logs.json");
    let resource = json["resource"]["attributes"]
        .as_array()
        .expect("resource attributes")
        .iter()
        .map(|kv| {
            let value = &kv["value"];
            let value = match (value.get("stringValue"), value.get("intValue")) {
                (Some(text), _) => text.clone(),
                (None, Some(int)) => {
                    Value::from(int.as_str().and_then(|i| i.parse::<i64>().ok()).expect("int"))
                }
                _ => panic!("unexpected value {value}"),
            };
            (kv["key"].as_str().expect("key").to_string(), value)
        })
        .collect();
    let scope = (
        json["scope"]["name"].as_str().expect("scope name").to_string(),
        json["scope"]["version"].as_str().expect("scope version").to_string(),
    );
    Reference { resource, scope, records: json["logRecords"].as_array().expect("records").clone() }
}

/// Our record's resource against the reference's: the same keys (plus ours-only ones) and
/// values, but for those that differ per run or describe the SDK.
fn assert_resource_like_native(log: &LogJson, native: &BTreeMap<String, Value>) {
    let ours: BTreeMap<String, Value> =
        log.resource.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let ours_keys: BTreeSet<&str> =
        ours.keys().map(String::as_str).filter(|k| !OURS_ONLY_RESOURCE.contains(k)).collect();
    let native_keys: BTreeSet<&str> = native.keys().map(String::as_str).collect();
    assert_eq!(ours_keys, native_keys, "resource keys of {:?}", log.body_text());
    for (key, value) in native {
        if PER_RUN.contains(&key.as_str()) || SDK_DESCRIPTION.contains(&key.as_str()) {
            continue;
        }
        assert_eq!(ours.get(key), Some(value), "resource {key} of {:?}", log.body_text());
    }
}

fn sorted_resource(attributes: &tracer_export::json::Attributes) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> =
        attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    all.sort();
    all
}

/// A PyTango 10.3.1 device without `-v` logs nothing until its level is raised; then every level
/// from the serving thread, and WARN from a thread of its own: records like cppTango's own,
/// joined to the request's SERVER span, over OTLP/HTTP.
#[test]
fn a_pytango_device_logs_like_cpptango_under_its_requests_server_span() {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("logs-pytango");
    let mut daemon = TracerDaemon::start(&marker, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &base(&receiver))], &[]);
    // Named as in the reference capture: class LogDev, server LogDev/LogDev, device test/logdev/1.
    let server = LogServer::start(&marker, "LogDev", &["test/logdev/1"], &[]);
    let url = server.url("test/logdev/1");
    let out = client(
        &marker,
        &url,
        &[
            "get_logging_level",
            "command_inout=LogAll:quiet",
            "logging_level=5",
            "command_inout=LogAll:hello",
            "command_inout=LogFromThread:bg",
        ],
    );
    let initial_level = out["values"]["get_logging_level"].as_i64().expect("a level");
    let lines: Vec<i64> = out["values"]["command_inout=LogAll:hello"]
        .as_array()
        .expect("LogAll returns its lines")
        .iter()
        .map(|v| v.as_i64().expect("a line"))
        .collect();
    let thread_line = out["values"]["command_inout=LogFromThread:bg"].as_i64().expect("a line");
    let logs =
        receiver.wait_for_logs_blocking(|l| has_body(l, "FATAL hello") && has_body(l, "thread bg"), WAIT);
    let spans = receiver.wait_for_blocking(
        |s| s.iter().filter(|s| s.name == SERVED_COMMAND && argument(s) == "LogFromThread").count() == 1,
        WAIT,
    );
    daemon.stop();
    // Only what passed the device's level check: 1 FATAL … 5 DEBUG.
    let quiet: Vec<&str> = logs
        .iter()
        .map(|l| l.severity_text.as_str())
        .zip(logs.iter())
        .filter(|(_, l)| l.body_text().ends_with(" quiet"))
        .map(|(s, _)| s)
        .collect();
    let passing: Vec<&str> = LEVELS
        .iter()
        .enumerate()
        .filter(|(i, _)| 5 - *i as i64 <= initial_level)
        .map(|(_, (name, _))| *name)
        .collect();
    assert_eq!(quiet, passing, "at the device's initial level {initial_level}: {}", bodies(&logs));

    let native = reference();
    let mut request_span = None;
    for ((level, number), line) in LEVELS.iter().zip(&lines) {
        let log = by_body(&logs, &format!("{level} hello"));
        assert_eq!((log.severity_text.as_str(), log.severity_number), (*level, *number));
        assert_eq!(log.attributes.get_str("code.filepath"), Some("log_server.py"));
        assert_eq!(log.attributes.get_i64("code.lineno"), Some(*line), "{level}");
        assert_eq!(log.attributes.len(), 2, "only code.filepath and code.lineno");
        assert_eq!((log.scope.name.clone(), log.scope.version.clone()), native.scope);
        assert_resource_like_native(log, &native.resource);
        assert_eq!(log.transport.as_deref(), Some("http"));
        let span = server_span_of(&spans, log);
        assert_eq!(argument(span), "LogAll");
        assert_eq!(
            sorted_resource(&log.resource),
            sorted_resource(&span.resource),
            "the span's own resource"
        );
        match request_span {
            None => request_span = Some(span.span_id.clone()),
            Some(ref id) => assert_eq!(&span.span_id, id, "one request"),
        }
    }
    let background = by_body(&logs, "thread bg");
    assert_eq!((background.severity_text.as_str(), background.severity_number), ("WARN", 13));
    assert_eq!((background.trace_id.as_str(), background.span_id.as_str(), background.flags), ("", "", 0));
    assert_eq!(background.attributes.get_i64("code.lineno"), Some(thread_line));
    assert_resource_like_native(background, &native.resource);

    // The reference's records have the same shape: attribute keys and kinds, trace fields.
    for record in &native.records {
        let keys: BTreeSet<&str> = record["attributes"]
            .as_array()
            .expect("attributes")
            .iter()
            .filter_map(|kv| kv["key"].as_str())
            .collect();
        assert_eq!(keys, BTreeSet::from(["code.filepath", "code.lineno"]));
        let in_request = record.get("traceId").is_some();
        assert_eq!(record.get("flags").and_then(Value::as_u64).unwrap_or(0), if in_request { 3 } else { 0 });
    }
    drop(server);
}

/// Logs of a device called by another device belong to the inner request; after the nested call
/// the outer device's logs are its own request's again; a command that pushes an event logs under
/// its request. Over OTLP/gRPC.
#[test]
fn nested_calls_and_event_pushes_log_under_the_innermost_server_span() {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("logs-nested");
    let mut daemon = TracerDaemon::start(
        &marker,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.grpc_endpoint()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
        &[],
    );
    let outer = LogServer::start(&marker, "outer", &["test/outer/1"], &[]);
    let inner = LogServer::start(&marker, "inner", &["test/inner/1"], &[]);
    let inner_url = inner.url("test/inner/1");
    client(&marker, &inner_url, &["logging_level=5"]);
    let call_peer = format!("command_inout=CallPeer:{inner_url}");
    client(&marker, &outer.url("test/outer/1"), &["logging_level=5", &call_peer, "command_inout=PushAndLog"]);
    let logs = receiver.wait_for_logs_blocking(
        |l| {
            has_body(l, &format!("after {inner_url}")) && has_body(l, "FATAL nested") && has_body(l, "pushed")
        },
        WAIT,
    );
    let spans = receiver.wait_for_blocking(
        |s| s.iter().filter(|s| s.name == SERVED_COMMAND && argument(s) == "PushAndLog").count() == 1,
        WAIT,
    );
    daemon.stop();
    assert!(receiver.log_requests_by(Protocol::Grpc) > 0 && receiver.log_requests_by(Protocol::Http) == 0);
    let before = server_span_of(&spans, by_body(&logs, &format!("before {inner_url}")));
    let after = server_span_of(&spans, by_body(&logs, &format!("after {inner_url}")));
    assert_eq!((argument(before), &before.span_id), ("CallPeer", &after.span_id), "the outer request");
    assert_eq!(before.resource.get_str("service.instance.id"), Some("test/outer/1"));
    let nested = server_span_of(&spans, by_body(&logs, "INFO nested"));
    assert_eq!(argument(nested), "LogAll");
    assert_eq!(nested.resource.get_str("service.instance.id"), Some("test/inner/1"));
    assert_eq!(nested.trace_id, before.trace_id, "one trace across both devices");
    assert_ne!(nested.span_id, before.span_id);
    let nested_log = by_body(&logs, "INFO nested");
    assert_eq!(nested_log.resource.get_str("service.instance.id"), Some("test/inner/1"));
    let pushed = server_span_of(&spans, by_body(&logs, "pushed"));
    assert_eq!(argument(pushed), "PushAndLog");
    drop((outer, inner));
}

/// `TANGO_TELEMETRY_TYPES=tracing`: spans, no logs; the same device without it logs (in the same
/// daemon, so the test can tell). A message longer than `--log-bytes` is cut, and counted.
#[test]
fn the_tracing_type_alone_exports_spans_and_no_logs_and_long_messages_are_cut() {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("logs-types");
    let mut daemon = TracerDaemon::start(
        &marker,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &base(&receiver))],
        &["--log-bytes", "100"],
    );
    let quiet =
        LogServer::start(&marker, "quiet", &["test/quiet/1"], &[("TANGO_TELEMETRY_TYPES", "tracing")]);
    let loud = LogServer::start(&marker, "loud", &["test/loud/1"], &[]);
    client(&marker, &quiet.url("test/quiet/1"), &["logging_level=5", "command_inout=LogAll:quiet"]);
    client(
        &marker,
        &loud.url("test/loud/1"),
        &["logging_level=5", "command_inout=LogLong:5000", "command_inout=LogAll:loud"],
    );
    receiver.wait_for_logs_blocking(|l| has_body(l, "FATAL loud"), WAIT);
    let spans = receiver.wait_for_blocking(
        |s| {
            s.iter().any(|s| {
                s.resource.get_str("service.instance.id") == Some("test/quiet/1") && argument(s) == "LogAll"
            })
        },
        WAIT,
    );
    let stats = daemon.ctl(&["stats"]);
    daemon.stop();
    let logs = receiver.logs();
    assert!(
        !logs.iter().any(|l| l.resource.get_str("service.instance.id") == Some("test/quiet/1")),
        "TYPES=tracing: {}",
        bodies(&logs)
    );
    assert!(spans.iter().any(|s| s.name == SERVED_COMMAND));
    by_body(&logs, &"x".repeat(100));
    let cut = stats.lines().find(|l| l.trim_start().starts_with("logs.cut_messages")).unwrap_or_default();
    assert_eq!(cut.split_whitespace().last(), Some("1"), "{stats}");
    drop((quiet, loud));
}

/// Debian's TangoTest 9.3.4 in the database: nothing until `set_logging_level(5)`, then its two
/// DEBUG lines per command, under the command's SERVER span, with the device's resource and no
/// source location (the 9.x function has none).
#[test]
fn tangotest_9_logs_its_commands_once_its_level_is_raised() {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("logs-tangotest");
    let stack = DbStack::start();
    let mut daemon = TracerDaemon::start(&marker, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &base(&receiver))], &[]);
    let server = TangoTestServer::start(&stack, &marker, "logs");
    let device = server.device.clone();
    let steps = ["command_inout=DevVoid", "logging_level=5", "command_inout=DevBoolean:1"];
    let out = run_db_client(
        &stack,
        &marker,
        &python(),
        "legacy_client.py",
        &[&device, steps[0], steps[1], steps[2]],
        &[],
    );
    for step in steps {
        assert_eq!(out["steps"][step], "ok", "{out}");
    }
    let command = format!("TangoTest::DevBoolean()  - {device}");
    let logs = receiver.wait_for_logs_blocking(|l| has_body(l, &command), WAIT);
    let spans = receiver
        .wait_for_blocking(|s| s.iter().any(|s| argument(s) == "DevBoolean" && s.kind == "SERVER"), WAIT);
    daemon.stop();
    assert!(
        !logs.iter().any(|l| l.body_text().contains("DevVoid")),
        "nothing before the level is raised: {}",
        bodies(&logs)
    );
    let hook = by_body(&logs, &format!("TangoTest::always_executed_hook()  {device}"));
    for log in [hook, by_body(&logs, &command)] {
        assert_eq!((log.severity_text.as_str(), log.severity_number), ("DEBUG", 5));
        assert!(log.attributes.is_empty(), "9.x calls carry no source location: {:?}", log.attributes);
        assert_eq!((log.scope.name.as_str(), log.scope.version.as_str()), ("cppTango", "9.3.4"));
        let span = server_span_of(&spans, log);
        assert_eq!(argument(span), "DevBoolean");
        assert_eq!(sorted_resource(&log.resource), sorted_resource(&span.resource));
        assert_eq!(log.resource.get_str("service.name"), Some("TangoTest"));
    }
    drop(server);
}

/// Two TangoTest devices of one server: one sends its logs where its properties say, the other
/// where `SetTelemetryLoggingEndpoints` says at run time (a 9.x server answers "command not
/// found"; the daemon applies it), each to its own receiver; `ctl logging … off` stops one.
#[test]
fn logging_endpoints_by_property_admin_command_and_ctl_per_device() {
    let default = OtlpReceiver::start_blocking();
    let by_property = OtlpReceiver::start_blocking();
    let by_command = OtlpReceiver::start_blocking();
    let marker = unique_marker("logs-endpoints");
    let stack = DbStack::start();
    let (one, two) = ("sys/tg_test/log1", "sys/tg_test/log2");
    let status = stack
        .command(python())
        .arg(script("db_props.py"))
        .arg(one)
        .arg("telemetry_logging_exporters=http")
        .arg(format!("telemetry_logging_endpoints={}", by_property.http_logs_endpoint()))
        .status()
        .expect("db_props.py");
    assert!(status.success());
    let mut daemon = TracerDaemon::start(&marker, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &base(&default))], &[]);
    let server = TangoTestServer::start_custom(&stack, &marker, "logs", &[one, two], &[], None);
    let run = |device: &str, steps: &[&str]| {
        let mut args = vec![device];
        args.extend_from_slice(steps);
        run_db_client(&stack, &marker, &python(), "legacy_client.py", &args, &[])
    };
    let boolean = |device: &str| format!("TangoTest::DevBoolean()  - {device}");
    run(one, &["logging_level=5", "command_inout=DevBoolean:1"]);
    run(two, &["logging_level=5", "command_inout=DevBoolean:1"]);
    by_property.wait_for_logs_blocking(|l| has_body(l, &boolean(one)), WAIT);
    default.wait_for_logs_blocking(|l| has_body(l, &boolean(two)), WAIT);

    let answer = run_db_client(
        &stack,
        &marker,
        &python(),
        "telemetry_control.py",
        &[two, "logging-endpoint", "grpc", &by_command.grpc_endpoint().replace("http://", "grpc://")],
        &[],
    );
    assert!(answer["result"].as_str().is_some_and(|r| r.starts_with("DevFailed:")), "9.x: {answer}");
    run(two, &["command_inout=DevShort:7"]);
    by_command.wait_for_logs_blocking(|l| has_body(l, &format!("TangoTest::DevShort()  - {two}")), WAIT);

    daemon.ctl(&["logging", one, "off"]);
    run(one, &["command_inout=DevShort:8"]);
    run(two, &["command_inout=DevLong:9"]);
    by_command.wait_for_logs_blocking(|l| has_body(l, &format!("TangoTest::DevLong()  - {two}")), WAIT);
    let list = daemon.ctl(&["list"]);
    daemon.stop();

    let of = |receiver: &OtlpReceiver, device: &str| {
        receiver.logs().iter().filter(|l| l.resource.get_str("service.instance.id") == Some(device)).count()
    };
    assert_eq!(of(&default, one), 0, "device one's logs go where its property says");
    assert_eq!(of(&by_command, one), 0);
    assert_eq!(of(&by_property, two), 0);
    assert!(
        !by_property.logs().iter().any(|l| l.body_text().contains("DevShort")),
        "ctl logging off: {}",
        bodies(&by_property.logs())
    );
    assert!(
        !default
            .logs()
            .iter()
            .any(|l| l.body_text().contains("DevShort") || l.body_text().contains("DevLong")),
        "after SetTelemetryLoggingEndpoints device two's logs go to the new endpoint only: {}",
        bodies(&default.logs())
    );
    assert!(list.contains("[admin command SetTelemetryLoggingEndpoints]"), "{list}");
    drop(server);
}
