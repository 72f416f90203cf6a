//! The probes under pipelining: many GIOP requests in one write, sends cut short by a full
//! receive window or refused with EAGAIN. Every request is traced, or counted as missed beyond the
//! documented per-syscall limit (128 messages reported per syscall, 1,024 headers walked).

use std::{collections::HashMap, process::Command, time::Duration};

use tracer_export::json::SpanJson;

use crate::{
    harness::{DemoServer, MARKER, TracerDaemon, python, script, unique_marker},
    otlp_receiver::OtlpReceiver,
};

const WAIT: Duration = Duration::from_secs(60);
/// `tracer_common::MAX_MESSAGES_PER_CALL` and `MAX_HEADERS_PER_CALL` (+2 steps of the loop for the
/// message an earlier syscall began), as documented.
const PER_CALL_LIMIT: u64 = 128;
const HEADERS_WALKED: u64 = 1026;

/// How `pipelined_client.py` writes its requests.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// All in one blocking send.
    OneSend,
    /// Non-blocking sends against a server held stopped until a send fails with EAGAIN.
    ShortSends,
    /// One send, from a child forked after omniORB was loaded.
    ForkedChild,
    /// Half a request, then exit.
    HalfAndExit,
    /// One whole request, then close the connection without reading the reply.
    SendAndClose,
}

/// Runs `pipelined_client.py`: `count` requests (odd ids read `temperature`, even ids call
/// `Fail`) written back to back on one connection to `server`, every reply read.
fn pipelined_client(marker: &str, server: &DemoServer, count: u64, mode: Mode) -> serde_json::Value {
    let mut command = Command::new(python());
    command
        .arg(script("pipelined_client.py"))
        .arg(server.port.to_string())
        .arg("test/demo/1")
        .arg(count.to_string());
    match mode {
        Mode::OneSend => {}
        Mode::ShortSends => {
            command.arg("--short-sends").arg(server.proc.pid().to_string());
        }
        Mode::ForkedChild => {
            command.arg("--fork");
        }
        Mode::HalfAndExit | Mode::SendAndClose => {
            command.arg(if mode == Mode::HalfAndExit { "--half-and-exit" } else { "--send-and-close" });
            let output = command.env(MARKER, marker).output().expect("running pipelined_client.py");
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            return serde_json::from_slice(&output.stdout).expect("client output");
        }
    }
    let output = command.env(MARKER, marker).output().expect("running pipelined_client.py");
    assert!(
        output.status.success(),
        "pipelined_client.py failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let out: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("client output {stdout:?}: {e}"));
    // The server answered every request, each as its kind asks: the premise of every test here.
    assert_eq!(out["replies"].as_u64(), Some(count), "{out}");
    assert_eq!(out["wrong_status"].as_u64(), Some(0), "{out}");
    assert_eq!(out["sent_bytes"], out["stream_bytes"], "{out}");
    out
}

/// (read_attributes spans, of them ERROR; command_inout spans, of them ERROR) of `kind` and `pid`.
fn tally(spans: &[SpanJson], kind: &str, pid: u32) -> (u64, u64, u64, u64) {
    let mut t = (0, 0, 0, 0);
    for span in
        spans.iter().filter(|s| s.kind == kind && s.resource.get_i64("tango.process.id") == Some(pid.into()))
    {
        let error = u64::from(span.status.code == 2);
        if span.name.contains("read_attribute") {
            t.0 += 1;
            t.1 += error;
        } else if span.name.contains("command_inout") {
            t.2 += 1;
            t.3 += error;
        } else {
            panic!("unexpected span {span:?}");
        }
    }
    t
}

/// The daemon's stop line.
fn stop_line(log: &str) -> &str {
    log.lines()
        .find(|l| l.contains("stopped:"))
        .unwrap_or_else(|| panic!("no stop line in the daemon's log:\n{log}"))
}

/// The probes' loss totals of the stop line (`lost: probes <cause>: <n>, …`), by cause.
fn probe_losses(log: &str) -> HashMap<String, u64> {
    let line = stop_line(log);
    let lost = line.rsplit("lost: ").next().unwrap_or_else(|| panic!("no totals in {line}"));
    if lost.trim() == "none" {
        return HashMap::new();
    }
    lost.split(", ")
        .filter_map(|entry| entry.trim().strip_prefix("probes "))
        .map(|entry| {
            let (cause, total) = entry.rsplit_once(": ").unwrap_or_else(|| panic!("{entry} in {line}"));
            (cause.to_string(), total.parse().unwrap_or_else(|e| panic!("{entry}: {e}")))
        })
        .collect()
}

/// Stops the daemon; fails on anything wrong but the losses, which it returns.
fn stop(mut daemon: TracerDaemon) -> HashMap<String, u64> {
    let exit = daemon.stop_unchecked();
    let problems: Vec<_> = exit.problems().into_iter().filter(|p| !p.starts_with("loss reported")).collect();
    assert!(problems.is_empty(), "{problems:?}\n{}", exit.log);
    probe_losses(&exit.log)
}

fn run(count: u64, mode: Mode) -> (Vec<SpanJson>, serde_json::Value, HashMap<String, u64>, u32) {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("pipelined");
    let server = DemoServer::start(&marker, "p", &["test/demo/1"]);
    let endpoint = receiver.http_endpoint().trim_end_matches("/v1/traces").to_string();
    let daemon = TracerDaemon::start(&marker, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)], &[]);
    let out = pipelined_client(&marker, &server, count, mode);
    let server_pid = server.proc.pid();
    receiver.wait_for_blocking(|s| s.iter().filter(|x| x.kind == "SERVER").count() as u64 >= count, WAIT);
    let losses = stop(daemon);
    // Read again after the stop: nothing may arrive late, nothing twice.
    let spans = receiver.spans();
    let mut ids: Vec<_> = spans.iter().map(|s| &s.span_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), spans.len(), "duplicate spans");
    (spans, out, losses, server_pid)
}

#[test]
fn requests_written_in_one_send_are_all_traced_up_to_the_per_call_limit() {
    let count = 1_000;
    let (spans, out, losses, server_pid) = run(count, Mode::OneSend);
    assert_eq!(out["sends"].as_u64(), Some(1), "{out}");
    // The server received them in many reads: every request traced, each paired with its own
    // reply (the failing commands, and only they, are ERROR).
    assert_eq!(tally(&spans, "SERVER", server_pid), (500, 0, 500, 500));
    // The client wrote them in one send: the first 128 reported, the rest counted exactly.
    let client_pid = out["pid"].as_u64().expect("client pid") as u32;
    assert_eq!(tally(&spans, "CLIENT", client_pid), (64, 0, 64, 64));
    let expected = HashMap::from([("messages over per call limit".to_string(), count - PER_CALL_LIMIT)]);
    assert_eq!(losses, expected);
}

#[test]
fn ten_thousand_requests_in_one_write_give_ten_thousand_server_spans() {
    let count = 10_000;
    let (spans, out, losses, server_pid) = run(count, Mode::OneSend);
    assert_eq!(out["sends"].as_u64(), Some(1), "{out}");
    assert_eq!(tally(&spans, "SERVER", server_pid), (5_000, 0, 5_000, 5_000));
    // The client's one send holds more headers than one syscall walks: those walked are counted
    // exactly, the rest of the send is one "not walked to the end" (a lower bound).
    let client_pid = out["pid"].as_u64().expect("client pid") as u32;
    assert_eq!(tally(&spans, "CLIENT", client_pid), (64, 0, 64, 64));
    let expected = HashMap::from([
        ("messages over per call limit".to_string(), HEADERS_WALKED - PER_CALL_LIMIT),
        ("syscalls not walked to end".to_string(), 1),
    ]);
    assert_eq!(losses, expected);
}

#[test]
fn short_sends_and_eagain_lose_nothing() {
    let count = 1_000;
    let (spans, out, losses, server_pid) = run(count, Mode::ShortSends);
    // The premise: the stream went out in several sends, cut by a full window, with EAGAIN between.
    assert!(out["sends"].as_u64().is_some_and(|n| n >= 2), "{out}");
    assert!(out["eagain"].as_u64().is_some_and(|n| n >= 1), "{out}");
    let client_pid = out["pid"].as_u64().expect("client pid") as u32;
    // Each send reported what it moved and no more; messages cut between sends were followed.
    assert_eq!(tally(&spans, "CLIENT", client_pid), (500, 0, 500, 500));
    assert_eq!(tally(&spans, "SERVER", server_pid), (500, 0, 500, 500));
    assert_eq!(losses, HashMap::new());
}

#[test]
fn a_forked_child_is_traced_from_its_facts_record() {
    // The child loads nothing: only the BTF fork tracepoint (child pid and tgid read at BTF
    // offsets, a facts record naming its parent) makes it known.
    let count = 20;
    let (spans, out, losses, server_pid) = run(count, Mode::ForkedChild);
    let child_pid = out["pid"].as_u64().expect("child pid") as u32;
    assert_eq!(tally(&spans, "CLIENT", child_pid), (10, 0, 10, 10));
    assert_eq!(tally(&spans, "SERVER", server_pid), (10, 0, 10, 10));
    assert_eq!(losses, HashMap::new());
}

#[test]
fn a_call_whose_connection_closes_before_its_reply_ends_with_the_close() {
    // The client's close is the only thing that ends its call: it reads no reply and lives on.
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("sendclose");
    let server = DemoServer::start(&marker, "c", &["test/demo/1"]);
    let endpoint = receiver.http_endpoint().trim_end_matches("/v1/traces").to_string();
    let daemon = TracerDaemon::start(&marker, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)], &[]);
    let out = pipelined_client(&marker, &server, 1, Mode::SendAndClose);
    let client_pid = out["pid"].as_u64().expect("client pid");
    let client_span = |spans: &[SpanJson]| {
        spans
            .iter()
            .find(|s| s.kind == "CLIENT" && s.resource.get_i64("tango.process.id") == Some(client_pid as i64))
            .cloned()
    };
    receiver.wait_for_blocking(|spans| client_span(spans).is_some(), WAIT);
    let span = client_span(&receiver.spans()).expect("the client's span");
    assert_eq!(span.attributes.get_str("tango_tracer.incomplete"), Some("connection closed"), "{span:?}");
    assert_eq!(stop(daemon), HashMap::new());
}

#[test]
fn a_capture_too_small_for_tango_arguments_is_refused_at_start() {
    let output = Command::new(crate::harness::tracer_binary())
        .args(["run", "--capture-bytes", "16", "--control-socket", "/nonexistent/ctl.sock"])
        .output()
        .expect("running tango-tracer");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("'--capture-bytes <CAPTURE_BYTES>': must be between 1024 and 8192"), "{stderr}");
}

#[test]
fn kernel_state_of_a_process_is_freed_when_it_exits() {
    // Half a message leaves "the rest is still to come" in the kernel, for the client (which
    // exits without closing) and for the server (which closes the connection).
    let marker = unique_marker("halfexit");
    let server = DemoServer::start(&marker, "h", &["test/demo/1"]);
    let daemon = TracerDaemon::start(&marker, &[], &[]);
    pipelined_client(&marker, &server, 1, Mode::HalfAndExit);
    let tables = || {
        let text = daemon.ctl(&["stats", "--json"]);
        let json: serde_json::Value = serde_json::from_str(&text).expect("ctl stats --json");
        (
            json["tables"]["probe.pending_syscall_entries"].as_u64(),
            json["tables"]["probe.partial_message_entries"].as_u64(),
        )
    };
    // The exit record reaches the daemon within its drain interval.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while tables() != (Some(0), Some(0)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(tables(), (Some(0), Some(0)));
    assert_eq!(stop(daemon), HashMap::new());
}
