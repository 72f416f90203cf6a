#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

use std::time::Instant;

use tracer_export::json::SpanJson;

use super::{compare::Threshold, *};

/// A CLIENT read of `attribute` and its SERVER `read_attributes_5` (no argument, as natively).
fn call(n: u64, attribute: &str, duration_ns: u64) -> [SpanJson; 2] {
    let trace = format!("{:032x}", n + 1);
    let (client_id, server_id) = (format!("{:016x}", 2 * n + 1), format!("{:016x}", 2 * n + 2));
    let start = 1_000_000_000 + n * 100_000_000;
    let client = format!(
        r#"{{"resource": {{"service.name": "tango.telemetry.default", "tango.process.kind": "client"}}, "scope": {{"name": "tango.cpp", "version": "10.3.3"}}, "name": "Tango::DeviceProxy::read_attribute", "kind": "CLIENT", "trace_id": "{trace}", "span_id": "{client_id}", "parent_span_id": "", "trace_state": "", "start_ns": {start}, "end_ns": {}, "duration_us": 1.0, "attributes": {{"tango.operation.target": "test/bench/1", "tango.operation.argument": "{attribute}"}}, "events": [], "links": [], "status": {{"code": 0, "message": ""}}}}"#,
        start + duration_ns + 100_000
    );
    let server = format!(
        r#"{{"resource": {{"service.name": "Bench", "service.instance.id": "test/bench/1", "tango.process.kind": "server"}}, "scope": {{"name": "tango.cpp", "version": "10.3.3"}}, "name": "Tango::Device_5Impl::read_attributes_5", "kind": "SERVER", "trace_id": "{trace}", "span_id": "{server_id}", "parent_span_id": "{client_id}", "trace_state": "", "start_ns": {}, "end_ns": {}, "duration_us": 1.0, "attributes": {{}}, "events": [], "links": [], "status": {{"code": 0, "message": ""}}}}"#,
        start + 50_000,
        start + 50_000 + duration_ns
    );
    [serde_json::from_str(&client).unwrap(), serde_json::from_str(&server).unwrap()]
}

/// `n` calls each of `fast` (0.1–0.2 ms) and `slow` (`slow_ms`).
fn session_spans(n: u64, slow_ms: f64) -> Vec<SpanJson> {
    let mut spans = Vec::new();
    for i in 0..n {
        spans.extend(call(2 * i, "fast", 100_000 + (i * 7919) % 100_000));
        spans.extend(call(2 * i + 1, "slow", (slow_ms * 1e6) as u64 + (i * 104_729) % 1_000_000));
    }
    spans
}

#[test]
fn rows_slowest_first_with_server_arguments_from_their_clients() {
    let dir = std::env::temp_dir().join(format!("tango-tracer-report-{}", std::process::id()));
    let path = dir.join("store.db");
    tracer_export::db::write_spans(&path, "slow", 1 << 30, session_spans(200, 20.0)).unwrap();
    tracer_export::db::write_spans(&path, "fast", 1 << 30, session_spans(200, 0.1)).unwrap();
    let reader = open_store(&path).unwrap();

    let report = build(&reader, Some("slow")).unwrap();
    let first = &report.rows[0];
    assert_eq!(
        (first.side, first.operation.as_str(), first.argument.as_str()),
        ("client", "read_attribute", "slow")
    );
    assert_eq!((first.device.as_str(), first.count, first.errors), ("test/bench/1", 200, 0));
    assert!(first.p50_ms > 20.0 && first.p50_ms < 21.2, "{first:?}");
    assert!(first.p99_ms >= first.p90_ms && first.max_ms >= first.p99_ms && first.max_ms < 21.2);
    let second = &report.rows[1];
    assert_eq!(
        (second.side, second.operation.as_str(), second.argument.as_str()),
        ("server", "read_attributes_5", "slow")
    );
    assert_eq!(report.rows.len(), 4);
    // The slowest trace's critical path ends in the server span, whose own time dominates.
    let slowest = &report.slowest[0];
    assert_eq!(slowest.path.len(), 2);
    assert_eq!(slowest.dominant, 1, "{slowest:?}");
    let text = render_text(&report);
    assert!(
        text.lines().nth(2).unwrap().contains("read_attribute") && text.contains("<< own time dominates"),
        "{text}"
    );
    let html = render_html(&report);
    assert_eq!(html.matches("<svg").count(), 4);
    assert!(
        !html.contains("http://")
            || html.matches("http://").all(|_| html.contains("xmlns=\"http://www.w3.org/2000/svg\""))
    );

    // The newest session without a name; unknown names are refused with the list.
    assert_eq!(build(&reader, None).unwrap().session, "fast");
    let err = build(&reader, Some("nope")).unwrap_err().to_string();
    assert!(err.contains("sessions: slow, fast"), "{err}");

    // Slow → fast: the slow attribute's rows are faster; the fast attribute's are not changed.
    let fast = build(&reader, Some("fast")).unwrap();
    let rows = compare::compare(&report, &fast, Threshold::default());
    assert_eq!(rows.len(), 4);
    for row in &rows {
        let want = if row.argument == "slow" { "faster" } else { "unchanged" };
        assert_eq!(row.verdict, want, "{row:?}");
    }
    // A shift below the practical threshold is no change, however significant.
    let strict = Threshold { absolute_ms: 100.0, ..Threshold::default() };
    assert!(compare::compare(&report, &fast, strict).iter().all(|r| r.verdict == "unchanged"));
    std::fs::remove_dir_all(&dir).unwrap();

    // A JSON-lines store is refused with what to do.
    let err = open_store(Path::new("spans.jsonl")).err().unwrap().to_string();
    assert!(err.contains("--store FILE.db"), "{err}");
}

/// A report over a large session: how long it takes (`TANGO_TRACER_REPORT_SPANS`, default
/// 100,000 spans; BENCHMARKS.md gives the time for a million). With `TANGO_TRACER_REPORT_STORE`
/// the store is written there and kept, for timing `tango-tracer report` on it.
#[test]
fn a_large_session_is_reported() {
    let spans: u64 =
        std::env::var("TANGO_TRACER_REPORT_SPANS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let kept = std::env::var_os("TANGO_TRACER_REPORT_STORE").map(std::path::PathBuf::from);
    let dir = std::env::temp_dir().join(format!("tango-tracer-report-large-{}", std::process::id()));
    let path = kept.clone().unwrap_or_else(|| dir.join("store.db"));
    let started = Instant::now();
    for chunk in 0..spans / 20_000 {
        let mut batch = Vec::new();
        for i in 0..5_000 {
            let n = chunk * 5_000 + i;
            batch.extend(call(2 * n, "fast", 100_000 + n % 1000));
            batch.extend(call(2 * n + 1, "slow", 20_000_000 + n % 1000));
        }
        tracer_export::db::write_spans(&path, "big", 1 << 40, batch).unwrap();
    }
    let written = started.elapsed();
    let started = Instant::now();
    let reader = open_store(&path).unwrap();
    let report = build(&reader, Some("big")).unwrap();
    let took = started.elapsed();
    eprintln!("{spans} spans: written in {written:?}, reported in {took:?}");
    assert_eq!(report.spans, spans);
    assert_eq!(report.rows[0].count, spans / 4);
    if kept.is_none() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
