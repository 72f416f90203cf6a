//! Churn under one daemon: over a thousand short-lived clients and fifty server restarts. Every
//! span arrives exactly once, the daemon's memory stays flat and its state tables return to their
//! size before the churn.

use std::{
    collections::{HashMap, HashSet},
    process::Command,
    time::Duration,
};

use tracer_export::json::SpanJson;

use crate::{
    harness::{DemoServer, MARKER, TracerDaemon, python, script, unique_marker},
    otlp_receiver::OtlpReceiver,
    tests::pytango::wait_for_count,
};

const WARM_UP_CLIENTS: usize = 100;
const CLIENTS: usize = 1_000;
const PARALLEL: usize = 8;
const RESTARTS: usize = 50;
/// Spans of one client: its `DeviceProxy` (reference connect.json) and the command pair
/// (reference command_inout.json).
const SPANS_PER_CLIENT: usize = 3;
/// Growth of the daemon's resident memory from after the warm-up to the end that still counts as
/// flat: generous, a leak of a few KiB per process over 1,050 processes shows anyway.
const RSS_GROWTH_KIB: u64 = 24 * 1024;

#[derive(Debug, Default)]
struct Churned {
    clients: Vec<i64>,
    servers: Vec<i64>,
}

/// Runs `churn.py ARGS` to completion.
fn churn(marker: &str, args: &[&str]) -> Churned {
    let output = Command::new(python())
        .arg(script("churn.py"))
        .args(args)
        .env(MARKER, marker)
        .env_remove("TANGO_TELEMETRY_ENABLE")
        .current_dir(script(""))
        .output()
        .expect("running churn.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "churn.py {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("churn.py output {stdout:?}: {e}"));
    assert_eq!(json["failed"], 0, "every churned call succeeds: {json}");
    let pids = |key: &str| {
        json[key].as_array().map(|a| a.iter().filter_map(|p| p.as_i64()).collect()).unwrap_or_default()
    };
    Churned { clients: pids("clients"), servers: pids("servers") }
}

/// The sizes of the daemon's state tables, from `tango-tracer ctl stats --json`.
///
/// PROPOSED interface (another change adds the command): a JSON object with a `tables` object
/// mapping each table's name to its number of entries, e.g.
/// `{"tables": {"processes": 2, "connections": 1, "pending_calls": 0, "devices": 1, …}, …}`.
fn tables(daemon: &TracerDaemon) -> Result<HashMap<String, u64>, String> {
    let text = daemon.try_ctl(&["stats", "--json"])?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("ctl stats --json: {e}: {text}"))?;
    let tables = json["tables"]
        .as_object()
        .ok_or_else(|| format!("ctl stats --json has no `tables` object: {text}"))?;
    tables
        .iter()
        .map(|(name, size)| {
            size.as_u64().map(|n| (name.clone(), n)).ok_or_else(|| format!("table {name}: {size}"))
        })
        .collect()
}

fn of_pid(spans: &[SpanJson], pid: i64) -> impl Iterator<Item = &SpanJson> {
    spans.iter().filter(move |s| s.resource.get_i64("tango.process.id") == Some(pid))
}

/// What is wrong with the spans of `clients`, each expected to have made one DeviceProxy and one
/// `Increment`.
fn check_clients(spans: &[SpanJson], clients: &[i64], problems: &mut Vec<String>) {
    let mut missing = Vec::new();
    for &pid in clients {
        let mine: Vec<_> = of_pid(spans, pid).collect();
        let calls: Vec<_> = mine
            .iter()
            .filter(|s| {
                s.kind == "CLIENT"
                    && s.name == "Tango::Connection::command_inout"
                    && s.attributes.get_str("tango.operation.argument") == Some("Increment")
            })
            .collect();
        let proxies = mine
            .iter()
            .filter(|s| s.kind == "INTERNAL" && s.name == "Tango::DeviceProxy::DeviceProxy")
            .count();
        let served = calls
            .iter()
            .map(|c| {
                spans
                    .iter()
                    .filter(|s| {
                        s.parent_span_id == c.span_id && s.name == "Tango::Device_4Impl::command_inout_4"
                    })
                    .count()
            })
            .sum::<usize>();
        // Own spans: the DeviceProxy and the call; the SERVER span is the server's.
        if !(calls.len() == 1 && proxies == 1 && served == 1 && mine.len() == 2) {
            missing.push(format!(
                "pid {pid}: {} call(s), {proxies} DeviceProxy, {served} served, {} own span(s)",
                calls.len(),
                mine.len()
            ));
        }
    }
    if !missing.is_empty() {
        problems.push(format!(
            "{} of {} clients not traced exactly once, e.g.:\n{}",
            missing.len(),
            clients.len(),
            missing.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
        ));
    }
}

/// The daemon forgets an exited process 5 s after its exit (spans still in flight may need its
/// facts until then); a little more for the last ones.
const SETTLE: Duration = Duration::from_secs(8);

#[test]
fn a_thousand_short_lived_clients_and_fifty_server_restarts_lose_nothing_and_leak_nothing() {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("churn");
    let endpoint = receiver.http_endpoint().trim_end_matches("/v1/traces").to_string();
    let mut daemon = TracerDaemon::start(&marker, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)], &[]);
    let server = DemoServer::start(&marker, "churn", &["test/demo/1"]);
    let url = server.url("test/demo/1");
    let mut problems = Vec::new();
    let parallel = PARALLEL.to_string();
    let warm_up = churn(&marker, &["clients", &url, &WARM_UP_CLIENTS.to_string(), &parallel]);
    wait_for_count(&receiver, warm_up.clients.len() * SPANS_PER_CLIENT, Duration::from_secs(60));
    // The baseline: the server has served and the warm-up clients are forgotten.
    std::thread::sleep(SETTLE);
    let baseline = tables(&daemon);
    let rss_warm = daemon.rss_kib();

    // Clients and restarts at the same time, as on a busy host.
    let restarts = {
        let marker = marker.clone();
        std::thread::spawn(move || churn(&marker, &["restarts", &RESTARTS.to_string()]))
    };
    let main = churn(&marker, &["clients", &url, &CLIENTS.to_string(), &parallel]);
    let restarted = restarts.join().expect("restarts");
    assert_eq!(restarted.servers.len(), RESTARTS);
    assert!(main.clients.len() + warm_up.clients.len() + restarted.clients.len() >= CLIENTS + RESTARTS);

    let all_clients: Vec<i64> =
        warm_up.clients.iter().chain(&main.clients).chain(&restarted.clients).copied().collect();
    let expected = all_clients.len() * SPANS_PER_CLIENT;
    wait_for_count(&receiver, expected, Duration::from_secs(120));
    // Let exits and closes settle, and exited processes be forgotten, before looking at memory
    // and tables.
    std::thread::sleep(SETTLE);
    let rss_end = daemon.rss_kib();
    if rss_end > rss_warm + RSS_GROWTH_KIB {
        problems.push(format!("daemon RSS grew from {rss_warm} KiB after the warm-up to {rss_end} KiB"));
    }
    eprintln!("churn: daemon RSS {rss_warm} KiB after the warm-up, {rss_end} KiB at the end");
    match (baseline, tables(&daemon)) {
        (Ok(before), Ok(after)) if before == after => {}
        (Ok(before), Ok(after)) => problems
            .push(format!("state tables not back to their baseline: before {before:?}, after {after:?}")),
        (Err(e), _) | (_, Err(e)) => problems.push(format!("table sizes unavailable: {e}")),
    }

    daemon.stop();
    let spans = receiver.spans();
    let mut ids = HashSet::new();
    let duplicates = spans.iter().filter(|s| !ids.insert(s.span_id.as_str())).count();
    if duplicates > 0 {
        problems.push(format!("{duplicates} span(s) received twice"));
    }
    if spans.len() != expected {
        problems.push(format!(
            "{} spans received, {expected} expected ({} clients)",
            spans.len(),
            all_clients.len()
        ));
    }
    check_clients(&spans, &all_clients, &mut problems);
    // The restarted servers served their client each, under their own device resource.
    for &pid in &restarted.servers {
        let served = of_pid(&spans, pid).filter(|s| s.kind == "SERVER").count();
        if served != 1 {
            problems.push(format!("restarted server pid {pid}: {served} SERVER span(s), 1 expected"));
        }
    }
    assert!(problems.is_empty(), "churn:\n{}", problems.join("\n"));
}
