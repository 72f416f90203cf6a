//! Tail sampling in the daemon, from outside: a PyTango device (`user_code_server.py`, no
//! database) called many times fast, a few times slowly and a few times failing, traced with
//! `--tail-sampling slower-than=5ms,errors,ratio=0.05`.

use std::{
    collections::{HashMap, HashSet},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tracer_export::{json::SpanJson, tree::render_trees};

use crate::{
    harness::{MARKER, Proc, TracerDaemon, free_port, python, script, unique_marker, wait_for_port},
    otlp_receiver::OtlpReceiver,
};

const FAST_CALLS: usize = 1000;
const SLOW_CALLS: usize = 20;
const FAILED_CALLS: usize = 20;
const SLOWER_THAN_US: f64 = 5_000.0;
const RATIO: f64 = 0.05;

/// OpenTelemetry's `TraceIdRatioBased` test, restated from its specification: the low 8 bytes
/// of the trace id (big-endian), shifted right once, below ratio × 2^63.
fn ratio_keeps(trace_id: &str) -> bool {
    let low = u64::from_str_radix(&trace_id[16..32], 16).expect("a 32-digit trace id");
    (low >> 1) < (RATIO * (1u64 << 63) as f64) as u64
}

/// A counter of `ctl stats` (text).
fn counter(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| l.trim().strip_prefix(name).filter(|rest| rest.starts_with(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{stats}"))
}

#[test]
fn tail_sampling_keeps_every_slow_and_failed_trace_whole_and_about_the_ratio_of_the_rest() {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("sampling");
    let endpoint = receiver.http_endpoint().trim_end_matches("/v1/traces").to_string();
    let mut daemon = TracerDaemon::start(
        &marker,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            // The option through the environment, as a service unit gives it.
            ("TANGO_TRACER_TAIL_SAMPLING", "slower-than=5ms,errors,ratio=0.05,decision-wait=1s"),
        ],
        &["--exporter", "otlp"],
    );
    let port = free_port();
    let device = "test/sampled/1";
    let child = Command::new(python())
        .arg(script("user_code_server.py"))
        .arg("sampled")
        .arg(port.to_string())
        .arg(device)
        .env(MARKER, &marker)
        .env("USER_CODE_HOOK_MS", "0")
        .env("USER_CODE_POLLING", "off")
        .env_remove("TANGO_TELEMETRY_ENABLE")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting user_code_server.py");
    let mut server = Proc { child, name: "user code server".into() };
    wait_for_port(port, &mut server, Duration::from_secs(30));

    // Fast reads of `fast` (1 ms), with slow requests (read_attributes of fast, medium and slow:
    // 26 ms) and failing commands among them.
    let url = format!("tango://127.0.0.1:{port}/{device}#dbase=no");
    let mut steps = Vec::new();
    for _ in 0..SLOW_CALLS {
        steps.push(format!("loop:{}", FAST_CALLS / SLOW_CALLS));
        steps.extend(["read3".to_string(), "fail".to_string()]);
    }
    let output = Command::new(python())
        .arg(script("user_code_client.py"))
        .arg(&url)
        .args(&steps)
        .env(MARKER, &marker)
        .output()
        .expect("running user_code_client.py");
    assert!(output.status.success(), "user_code_client.py: {}", String::from_utf8_lossy(&output.stderr));
    let client: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&output.stdout).lines().last().unwrap_or_default())
            .expect("the client's JSON");
    let client_pid = client["pid"].as_i64().expect("client pid");

    // Every trace decided (the wait is 1 s after a trace's last span) and exported.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stats = loop {
        let stats = daemon.ctl(&["stats"]);
        let decided = counter(&stats, "sampling.traces_kept_ratio")
            + counter(&stats, "sampling.traces_kept_slow")
            + counter(&stats, "sampling.traces_kept_error")
            + counter(&stats, "sampling.traces_sampled_out");
        if counter(&stats, "sampling.trace_entries") == 0
            && decided >= (FAST_CALLS + SLOW_CALLS + FAILED_CALLS) as u64
        {
            break stats;
        }
        assert!(Instant::now() < deadline, "sampling did not settle:\n{stats}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let spans_kept = counter(&stats, "sampling.spans_kept") as usize;
    let _ = receiver.wait_for_blocking(|s| s.len() >= spans_kept, Duration::from_secs(30));
    daemon.stop();
    server.stop(Duration::from_secs(5));
    let spans = receiver.spans();

    // The counters match what arrived, and every released span was kept or dropped.
    assert_eq!(spans.len(), spans_kept, "spans kept: {stats}");
    assert_eq!(
        counter(&stats, "pipeline.released"),
        counter(&stats, "sampling.spans_kept") + counter(&stats, "sampling.spans_sampled_out"),
        "{stats}"
    );
    let mut traces: HashMap<&str, Vec<&SpanJson>> = HashMap::new();
    for span in &spans {
        traces.entry(&span.trace_id).or_default().push(span);
    }
    let kept_traces = counter(&stats, "sampling.traces_kept_ratio")
        + counter(&stats, "sampling.traces_kept_slow")
        + counter(&stats, "sampling.traces_kept_error");
    assert_eq!(traces.len() as u64, kept_traces, "{stats}");
    let lost = stats.split("\nexport").next().unwrap_or_default();
    assert!(!lost.contains("sampling"), "sampling reported as a loss:\n{stats}");

    // Whole traces: every CLIENT span of the client has its SERVER span, in the same trace.
    let calls: Vec<&SpanJson> = spans
        .iter()
        .filter(|s| s.kind == "CLIENT" && s.resource.get_i64("tango.process.id") == Some(client_pid))
        .collect();
    for call in &calls {
        assert!(
            traces[call.trace_id.as_str()]
                .iter()
                .any(|s| s.kind == "SERVER" && s.parent_span_id == call.span_id),
            "{} kept without its SERVER span:\n{}",
            call.name,
            render_trees(&spans)
        );
    }
    // Every failed call and every slow call is there.
    let argument = |s: &SpanJson| s.attributes.get_str("tango.operation.argument").map(str::to_string);
    let failed = calls.iter().filter(|c| argument(c).as_deref() == Some("Fail")).count();
    assert_eq!(failed, FAILED_CALLS, "failed calls kept");
    let slow =
        calls.iter().filter(|c| c.name.contains("read_attributes") && c.duration_us > SLOWER_THAN_US).count();
    assert_eq!(slow, SLOW_CALLS, "slow calls kept");
    // The rest: only traces whose id the ratio keeps (the same decision on any host), and about
    // the ratio of them (50 of 1000 expected; 2–10 % is more than 4 standard deviations).
    let mut fast_kept = HashSet::new();
    for (trace_id, members) in &traces {
        let slow_or_failed = members.iter().any(|s| s.is_error() || s.duration_us > SLOWER_THAN_US);
        if !slow_or_failed {
            assert!(ratio_keeps(trace_id), "trace {trace_id} kept neither slow, failed nor by its id");
            fast_kept.insert(*trace_id);
        }
    }
    let (by_ratio, dropped) =
        (counter(&stats, "sampling.traces_kept_ratio"), counter(&stats, "sampling.traces_sampled_out"));
    let fraction = by_ratio as f64 / (by_ratio + dropped) as f64;
    assert!((0.02..=0.10).contains(&fraction), "kept {by_ratio} of {} by ratio\n{stats}", by_ratio + dropped);
    assert!(dropped >= (FAST_CALLS * 8 / 10) as u64, "most fast traces dropped: {stats}");
    assert!(fast_kept.len() as u64 <= by_ratio, "{} fast traces kept, {by_ratio} by ratio", fast_kept.len());
}
