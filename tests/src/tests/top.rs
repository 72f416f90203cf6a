//! `tango-tracer top` on a running daemon: a device with one slow attribute (20 ms) among fast
//! ones under a read loop comes first by p99, in `--once`, in `--json` and in the interactive
//! view in an 80×24 tmux window, which `q` ends.

use std::{
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::harness::{
    MARKER, Proc, TracerDaemon, free_port, python, script, tracer_binary, unique_marker, wait_for_port,
};

const SLOW: &str = "test/topslow/1";
const FAST: &str = "test/topfast/1";

/// What the tests read of `top --json` (the keys are its documented contract).
#[derive(Debug, Deserialize)]
struct LiveSnapshot {
    rows: Vec<Row>,
    processes: Vec<ProcessRow>,
    health: Health,
}

#[derive(Debug, Deserialize)]
struct Row {
    device: String,
    operation: String,
    argument: String,
    side: String,
    count: u64,
    errors: u64,
    calls_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Deserialize)]
struct ProcessRow {
    process: String,
    spans: u64,
}

#[derive(Debug, Deserialize)]
struct Health {
    traced_processes: u64,
    records_lost: u64,
    spans_dropped: u64,
}

/// The server of both devices and a client reading all their attributes in a loop.
struct Workload {
    _server: Proc,
    client: Proc,
}

impl Workload {
    fn start(marker: &str) -> Workload {
        let port = free_port();
        let child = Command::new(python())
            .arg(script("top_server.py"))
            .args(["top", &port.to_string(), SLOW, FAST])
            .env(MARKER, marker)
            .env_remove("TANGO_TELEMETRY_ENABLE")
            .stdout(Stdio::null())
            .spawn()
            .expect("starting top_server.py");
        let mut server = Proc { child, name: "top_server.py".into() };
        wait_for_port(port, &mut server, Duration::from_secs(30));
        let url = |device: &str| format!("tango://127.0.0.1:{port}/{device}#dbase=no");
        let child = Command::new(python())
            .arg(script("top_loop.py"))
            .args([url(SLOW), url(FAST)])
            .env(MARKER, marker)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting top_loop.py");
        Workload { _server: server, client: Proc { child, name: "top_loop.py".into() } }
    }

    /// Ends the loop (stdin closed); what it read, by "url attribute".
    fn stop(mut self) -> serde_json::Value {
        use std::io::Read as _;
        drop(self.client.child.stdin.take());
        let mut output = String::new();
        if let Some(mut stdout) = self.client.child.stdout.take() {
            let _ = stdout.read_to_string(&mut output);
        }
        let line = output.lines().last().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|e| panic!("top_loop.py printed {output:?}: {e}"))
    }
}

fn top(daemon: &TracerDaemon, args: &[&str]) -> String {
    let output: Output = Command::new(tracer_binary())
        .arg("top")
        .arg("--socket")
        .arg(daemon.dir.join("ctl.sock"))
        .args(args)
        .output()
        .expect("running tango-tracer top");
    assert!(output.status.success(), "top {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Waits until the live view has seen the slow attribute a few times from the client.
fn settled(daemon: &TracerDaemon) -> LiveSnapshot {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let snapshot: LiveSnapshot = serde_json::from_str(&top(daemon, &["--json", "--sort", "p99"]))
            .expect("top --json is a snapshot");
        let seen =
            snapshot.rows.iter().any(|r| r.argument == "lagging" && r.side == "client" && r.count >= 20);
        if seen {
            return snapshot;
        }
        assert!(Instant::now() < deadline, "the slow attribute never showed: {snapshot:#?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn top_shows_the_slow_attribute_first_by_p99() {
    let marker = unique_marker("top");
    let mut daemon = TracerDaemon::start(&marker, &[], &[]);
    let workload = Workload::start(&marker);
    std::thread::sleep(Duration::from_secs(3));
    let snapshot = settled(&daemon);

    // --json: rows by p99, the slow device first; its attribute row has the numbers.
    let first = &snapshot.rows[0];
    assert_eq!(first.device, SLOW, "{snapshot:#?}");
    let attribute_rows: Vec<_> = snapshot
        .rows
        .iter()
        .filter(|r| ["fast_a", "fast_b", "lagging"].contains(&r.argument.as_str()))
        .collect();
    let slow = attribute_rows[0];
    assert_eq!((slow.device.as_str(), slow.argument.as_str()), (SLOW, "lagging"), "{snapshot:#?}");
    assert_eq!((slow.operation.as_str(), slow.side.as_str()), ("read_attribute", "client"));
    assert!((18.0..=40.0).contains(&slow.p99_ms), "p99 of the 20 ms attribute: {slow:?}");
    assert!(slow.p50_ms >= 18.0 && slow.max_ms >= slow.p99_ms, "{slow:?}");
    assert!(slow.count >= 20 && slow.calls_per_s > 0.0 && slow.errors == 0, "{slow:?}");
    for fast in &attribute_rows[1..] {
        assert!(fast.p99_ms < 15.0, "a fast attribute is not slow: {fast:?}");
        assert!(fast.calls_per_s > 0.0);
    }
    // Both devices' fast attributes are there, on the client side.
    for (device, attribute) in [(SLOW, "fast_a"), (FAST, "fast_a"), (FAST, "fast_b"), (FAST, "lagging")] {
        assert!(
            attribute_rows
                .iter()
                .any(|r| r.device == device && r.argument == attribute && r.side == "client"),
            "no row for {device} {attribute}: {snapshot:#?}"
        );
    }
    // Server side: the slow device's reads, served.
    assert!(snapshot.rows.iter().any(|r| r.device == SLOW && r.side == "server" && r.p99_ms >= 18.0));
    // The process view has both processes; the daemon lost nothing.
    assert!(snapshot.processes.len() >= 2, "{:#?}", snapshot.processes);
    assert!(snapshot.processes.iter().all(|p| p.spans > 0 && !p.process.is_empty()));
    assert_eq!(
        (snapshot.health.records_lost, snapshot.health.spans_dropped),
        (0, 0),
        "{:?}",
        snapshot.health
    );
    assert!(snapshot.health.traced_processes >= 2);

    // --once: the same order as text, the slow device on the first row.
    let text = top(&daemon, &["--once", "--sort", "p99"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].starts_with("DEVICE"), "{text}");
    assert!(lines[2].starts_with(SLOW), "{text}");
    assert!(text.contains("\nevents: ") && text.contains("\ndaemon: ") && text.contains("SPANS/S"), "{text}");
    // By rate: the server rows, each device's three attributes in one `read_attributes_5`, lead.
    let by_rate: LiveSnapshot = serde_json::from_str(&top(&daemon, &["--json", "--sort", "rate"])).unwrap();
    assert!(by_rate.rows.windows(2).all(|w| w[0].calls_per_s >= w[1].calls_per_s), "{by_rate:#?}");
    assert_eq!((by_rate.rows[0].side.as_str(), by_rate.rows[0].argument.as_str()), ("server", ""));

    interactive(&daemon, &marker);

    let reads = workload.stop();
    assert!(reads["reads"].as_object().is_some_and(|r| r.values().all(|n| n.as_u64() > Some(0))), "{reads}");
    daemon.stop();
}

/// The interactive view in an 80×24 tmux window of a tmux server of its own: the slow device
/// shows, `q` ends it.
fn interactive(daemon: &TracerDaemon, marker: &str) {
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-L")
            .arg(marker)
            .args(args)
            .output()
            .expect("running tmux (Debian package tmux)")
    };
    let command =
        format!("{} top --socket {}", tracer_binary().display(), daemon.dir.join("ctl.sock").display());
    let started = tmux(&["new-session", "-d", "-s", "top", "-x", "80", "-y", "24", &command]);
    assert!(started.status.success(), "tmux: {}", String::from_utf8_lossy(&started.stderr));
    let deadline = Instant::now() + Duration::from_secs(15);
    let pane = loop {
        let pane = String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned();
        if pane.contains(SLOW) && pane.contains("q quit") {
            break pane;
        }
        assert!(Instant::now() < deadline, "the slow device never showed in the view:\n{pane}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let lines: Vec<&str> = pane.lines().collect();
    assert!(lines.len() <= 24 && lines.iter().all(|l| l.chars().count() <= 80), "{pane}");
    let header = lines.iter().position(|l| l.starts_with("DEVICE")).expect("the table's header");
    assert!(lines[header + 1].starts_with(SLOW), "the slow device first by p99:\n{pane}");
    // Another sort, then the process view: the keys work.
    let _ = tmux(&["send-keys", "-t", "top", "v"]);
    std::thread::sleep(Duration::from_millis(1500));
    let pane = String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned();
    assert!(pane.contains("PID") && pane.contains("SPANS/S"), "the process view:\n{pane}");
    let _ = tmux(&["send-keys", "-t", "top", "q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux(&["has-session", "-t", "top"]).status.success() {
        if Instant::now() > deadline {
            let _ = tmux(&["kill-server"]);
            panic!("q did not end top");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The tmux server of this test ends with its last session; make sure.
    let _ = tmux(&["kill-server"]);
}
