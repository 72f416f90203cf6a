//! The daemon under faults: signals, a second daemon, a killed daemon, a starved daemon, bytes
//! that are not Tango. Each test checks that nothing is lost silently and nothing is invented.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tracer_export::json::SpanJson;

use crate::{
    harness::{DemoServer, MARKER, Proc, python, run_client, script, tracer_binary, unique_marker},
    otlp_receiver::{OtlpReceiver, ReceiverOptions},
};

/// A daemon whose standard error is kept in a file, for the lines it logs at stop.
struct LoggedDaemon {
    proc: Proc,
    dir: PathBuf,
}

impl LoggedDaemon {
    /// A daemon writing to its own store.
    fn start(marker: &str, dir: &Path) -> LoggedDaemon {
        let store = dir.join("spans.jsonl");
        let store = store.to_string_lossy();
        Self::start_with(marker, dir, &["--exporter", "store", "--store", &store], &[])
    }

    fn start_with(marker: &str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> LoggedDaemon {
        crate::harness::require_root();
        std::fs::create_dir_all(dir).expect("creating the daemon's directory");
        let ready = dir.join("ready");
        let _ = std::fs::remove_file(&ready);
        let mut command = daemon_command(marker, dir);
        command.args(args).envs(env.iter().copied());
        let proc =
            Proc { child: command.spawn().expect("starting tango-tracer"), name: "tango-tracer".into() };
        let mut daemon = LoggedDaemon { proc, dir: dir.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.exists() {
            if let Ok(Some(status)) = daemon.proc.child.try_wait() {
                panic!("tango-tracer exited ({status}) before it was ready:\n{}", daemon.log());
            }
            assert!(Instant::now() < deadline, "tango-tracer was not ready within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    fn pid(&self) -> i32 {
        self.proc.pid() as i32
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// Waits for the daemon to exit by itself (after a signal); its exit status.
    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.proc.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "the daemon did not exit within {timeout:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn spans(&self) -> Vec<SpanJson> {
        tracer_export::read_store(self.dir.join("spans.jsonl")).unwrap_or_default()
    }
}

fn daemon_command(marker: &str, dir: &Path) -> Command {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stderr"))
        .expect("opening the daemon's log");
    let mut command = Command::new(tracer_binary());
    command
        .arg("run")
        .arg("--ready-file")
        .arg(dir.join("ready"))
        .arg("--select-env")
        .arg(format!("{MARKER}={marker}"))
        .arg("--export-interval")
        .arg("200ms")
        .arg("--control-socket")
        .arg(dir.join("ctl.sock"))
        // Like every test daemon comparing with native telemetry (see `TracerDaemon::start`).
        .args(["--user-spans", "off"])
        .env("RUST_LOG", "info")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(stderr);
    command
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("tango-tracer-faults-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Scratch(dir)
}

/// A test's scratch directory, removed when the test ends (recordings are large).
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Server spans of `read_attribute` calls (one per call the client made).
fn server_reads(spans: &[SpanJson]) -> usize {
    spans.iter().filter(|s| s.kind == "SERVER" && s.name == "Tango::Device_5Impl::read_attributes_5").count()
}

/// Runs `calls` read_attribute calls in one client process; returns when it has exited.
fn read_loop(marker: &str, url: &str, calls: u32) {
    let output = Command::new(python())
        .arg(script("bench_read_loop.py"))
        .arg(url)
        .arg(calls.to_string())
        .arg("--warmup")
        .arg("0")
        .env(MARKER, marker)
        .output()
        .expect("running bench_read_loop.py");
    assert!(output.status.success(), "client failed: {}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn every_ending_signal_flushes_and_sighup_does_not_end_the_daemon() {
    for (signal, name) in [(libc::SIGTERM, "TERM"), (libc::SIGINT, "INT"), (libc::SIGQUIT, "QUIT")] {
        let marker = unique_marker(&format!("sig{name}"));
        let server = DemoServer::start(&marker, "sig", &["test/demo/1"]);
        let dir = scratch(&format!("sig{name}"));
        let mut daemon = LoggedDaemon::start(&marker, &dir);
        read_loop(&marker, &server.url("test/demo/1"), 300);
        // At once: the last calls' spans are still in the daemon.
        daemon.signal(signal);
        let status = daemon.wait_exit(Duration::from_secs(20));
        assert!(status.success(), "SIG{name}: the daemon exited with {status}:\n{}", daemon.log());
        let spans = daemon.spans();
        assert_eq!(server_reads(&spans), 300, "SIG{name}: every call's server span is in the store");
        assert!(!dir.join("ctl.sock").exists(), "SIG{name}: the control socket is removed at exit");
    }

    let marker = unique_marker("sigHUP");
    let server = DemoServer::start(&marker, "hup", &["test/demo/1"]);
    let dir = scratch("sigHUP");
    let mut daemon = LoggedDaemon::start(&marker, &dir);
    read_loop(&marker, &server.url("test/demo/1"), 100);
    daemon.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_secs(1));
    assert!(matches!(daemon.proc.child.try_wait(), Ok(None)), "SIGHUP ended the daemon:\n{}", daemon.log());
    read_loop(&marker, &server.url("test/demo/1"), 100);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(20)).success(), "{}", daemon.log());
    assert_eq!(server_reads(&daemon.spans()), 200, "calls before and after SIGHUP are all traced");
}

#[test]
fn a_second_daemon_is_refused_and_a_killed_one_is_replaced() {
    let marker = unique_marker("second");
    let server = DemoServer::start(&marker, "second", &["test/demo/1"]);
    let dir = scratch("second");
    let mut first = LoggedDaemon::start(&marker, &dir);

    let other_dir = scratch("second-other");
    std::fs::create_dir_all(&other_dir).expect("creating a directory");
    let mut second = daemon_command(&marker, &other_dir);
    second.args(["--exporter", "store", "--store"]).arg(other_dir.join("spans.jsonl"));
    // The same control socket: the same instance.
    let args: Vec<_> = second.get_args().map(|a| a.to_os_string()).collect();
    let socket_at = args.iter().position(|a| a == "--control-socket").expect("socket flag") + 1;
    let mut command = Command::new(tracer_binary());
    for (i, arg) in args.iter().enumerate() {
        command.arg(if i == socket_at { dir.join("ctl.sock").into_os_string() } else { arg.clone() });
    }
    second = command;
    let second_log = other_dir.join("second-stderr");
    let log_file = std::fs::File::create(&second_log).expect("creating the second daemon's log");
    let child = second.stderr(log_file).spawn().expect("starting a second daemon");
    let mut second = Proc { child, name: "second tango-tracer".into() };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Ok(Some(status)) = second.child.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(second);
    let stderr = std::fs::read_to_string(&second_log).unwrap_or_default();
    assert!(status.is_some_and(|s| !s.success()), "a second daemon started ({status:?}):\n{stderr}");
    assert!(
        stderr.contains(&first.pid().to_string()) && stderr.contains("ctl.sock"),
        "the refusal names the running daemon's pid and socket:\n{stderr}"
    );

    // SIGKILL leaves the socket file behind; the next daemon reclaims it and traces.
    first.signal(libc::SIGKILL);
    let _ = first.wait_exit(Duration::from_secs(10));
    assert!(dir.join("ctl.sock").exists(), "a killed daemon cannot remove its socket");
    let mut replacement = LoggedDaemon::start(&marker, &dir);
    read_loop(&marker, &server.url("test/demo/1"), 50);
    replacement.signal(libc::SIGTERM);
    assert!(replacement.wait_exit(Duration::from_secs(20)).success(), "{}", replacement.log());
    let spans = replacement.spans();
    assert!(server_reads(&spans) >= 50, "the replacement traces: {} server spans", server_reads(&spans));
}

#[test]
fn a_starved_daemon_invents_no_errors_and_reports_its_losses() {
    let marker = unique_marker("starved");
    let server = DemoServer::start(&marker, "starved", &["test/demo/1"]);
    let dir = scratch("starved");
    let mut daemon = LoggedDaemon::start(&marker, &dir);
    let url = server.url("test/demo/1");
    let mut client = Command::new(python())
        .arg(script("bench_read_loop.py"))
        .arg(&url)
        .arg("40000")
        .arg("--warmup")
        .arg("0")
        .env(MARKER, &marker)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the client loop");
    std::thread::sleep(Duration::from_secs(1));
    daemon.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(5));
    daemon.signal(libc::SIGCONT);
    let status = client.wait().expect("waiting for the client");
    assert!(status.success(), "every call of the client succeeded");
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(30)).success(), "{}", daemon.log());

    let spans = daemon.spans();
    let log = daemon.log();
    let errors: Vec<_> = spans.iter().filter(|s| s.status.code == 2).collect();
    assert!(
        errors.is_empty(),
        "{} ERROR span(s) for calls that succeeded, e.g. {:?}",
        errors.len(),
        errors.first()
    );
    for span in &spans {
        if span.attributes.get("tango_tracer.incomplete").is_some() {
            assert_eq!(span.start_ns, span.end_ns, "an incomplete span has no invented duration: {span:?}");
        }
    }
    let calls = 40_000;
    let traced = server_reads(&spans);
    // What was not traced was lost to the starved daemon, and said so.
    if traced < calls {
        assert!(
            log.lines().any(|l| l.contains("lost") && l.contains("ring buffer full")),
            "{} of {calls} calls not traced and no loss reported:\n{log}",
            calls - traced
        );
    }
}

#[test]
fn bytes_that_are_not_tango_on_a_live_socket_are_counted_and_harmless() {
    use std::io::Write as _;

    let marker = unique_marker("garbage");
    let server = DemoServer::start(&marker, "garbage", &["test/demo/1"]);
    let dir = scratch("garbage");
    let mut daemon = LoggedDaemon::start(&marker, &dir);
    // A GIOP header that claims 2 GiB, then noise, then a truncated header: the server drops the
    // connection; the daemon must neither stall nor invent a call.
    for garbage in [
        &b"GIOP\x01\x02\x01\x00\xff\xff\xff\x7fnot a request at all"[..],
        &[0x47, 0x49, 0x4f, 0x50, 0x01, 0x02, 0x01, 0x09, 0, 0, 0, 4, 1, 2, 3, 4][..],
        &b"GIO"[..],
    ] {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", server.port)) {
            let _ = stream.write_all(garbage);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let out = run_client(&marker, &[&server.url("test/demo/1"), "read_attribute", "command_inout"], &[]);
    assert_eq!(out["steps"]["read_attribute"], "ok");
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(20)).success(), "{}", daemon.log());
    let spans = daemon.spans();
    assert_eq!(server_reads(&spans), 1, "only the real call is traced");
    assert_eq!(spans.iter().filter(|s| s.kind == "SERVER").count(), 2, "read and command, nothing invented");
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}

/// The daemon's resident memory, in KiB.
fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:")?.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// `tango-tracer ctl stats --json` of a daemon.
fn ctl_stats(dir: &Path) -> serde_json::Value {
    let output = Command::new(tracer_binary())
        .args(["ctl", "--socket"])
        .arg(dir.join("ctl.sock"))
        .args(["stats", "--json"])
        .output()
        .expect("running tango-tracer ctl stats");
    assert!(output.status.success(), "ctl stats: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("ctl stats --json is JSON")
}

/// `N word` in the daemon's stop line (`export: 10 submitted, 8 delivered, 2 dropped, 0 held`).
fn stop_count(log: &str, word: &str) -> u64 {
    let line =
        log.lines().rev().find(|l| l.contains("stopped:")).unwrap_or_else(|| panic!("no stop line:\n{log}"));
    let export = line.split("export:").nth(1).unwrap_or_else(|| panic!("no export totals: {line}"));
    export
        .split([',', ';'])
        .find_map(|part| part.trim().strip_suffix(word)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{word}` count in {line}"))
}

#[test]
fn backend_down_for_minutes_then_back_bounded_and_exactly_counted() {
    const RATE: f64 = 150.0;
    const BEFORE: Duration = Duration::from_secs(15);
    const OUTAGE: Duration = Duration::from_secs(120);
    const AFTER: Duration = Duration::from_secs(20);
    const BUDGET: u64 = 2 * 1024 * 1024;

    let mut receiver = OtlpReceiver::start_with(ReceiverOptions::default()).expect("starting the receiver");
    let http = receiver.http_addr();
    let endpoint = format!("http://{http}");
    let marker = unique_marker("outage");
    let server = DemoServer::start(&marker, "outage", &["test/demo/1"]);
    let dir = scratch("outage");
    let mut daemon = LoggedDaemon::start_with(
        &marker,
        &dir,
        &["--exporter", "otlp", "--export-memory", "2MiB"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)],
    );
    let total = BEFORE + OUTAGE + AFTER;
    let client = Command::new(python())
        .arg(script("paced_loop.py"))
        .arg(server.url("test/demo/1"))
        .arg(RATE.to_string())
        .arg(total.as_secs().to_string())
        .env(MARKER, &marker)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the paced client");

    std::thread::sleep(BEFORE);
    // Closed first, then read: a request answered while it closes is among the spans read.
    receiver.close();
    let mut received = receiver.spans();
    let outage_start = Instant::now();
    let baseline_rss = rss_kib(daemon.pid());
    let mut peak_rss = baseline_rss;
    while outage_start.elapsed() < OUTAGE {
        std::thread::sleep(Duration::from_secs(2));
        peak_rss = peak_rss.max(rss_kib(daemon.pid()));
        let stats = ctl_stats(&dir);
        for destination in stats["export"].as_array().into_iter().flatten() {
            let held = destination["bytes_held"].as_u64().unwrap_or(0);
            assert!(held <= BUDGET, "export holds {held} bytes, above its {BUDGET}-byte budget");
        }
    }
    let mut receiver = OtlpReceiver::start_with(ReceiverOptions { http, ..ReceiverOptions::default() })
        .expect("starting the receiver again on the same port");
    let back = Instant::now();

    let output = client.wait_with_output().expect("waiting for the client");
    assert!(output.status.success(), "the client failed");
    let out: serde_json::Value =
        serde_json::from_slice(output.stdout.trim_ascii()).expect("the client's JSON summary");
    let calls = out["calls"].as_u64().expect("calls");
    assert_eq!(out["failed"], 0, "every call succeeded");
    std::thread::sleep(Duration::from_secs(3));
    let stats = ctl_stats(&dir);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(30)).success(), "{}", daemon.log());
    receiver.close();
    received.extend(receiver.spans());

    // Every span accounted for, delivered or counted as dropped: a CLIENT and a SERVER span per
    // call, and the client's DeviceProxy span.
    let log = daemon.log();
    let mut ids: Vec<&str> = received.iter().map(|s| s.span_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), received.len(), "no span delivered twice");
    let (submitted, delivered, dropped, held) = (
        stop_count(&log, "submitted"),
        stop_count(&log, "delivered"),
        stop_count(&log, "dropped"),
        stop_count(&log, "held"),
    );
    // The exact per-call count is the churn test's; here the outage's accounting is what counts,
    // and a call in flight when the client stopped may give one span more or less.
    assert!(
        submitted.abs_diff(2 * calls + 1) <= 2,
        "{submitted} spans submitted for {calls} calls (two per call and one DeviceProxy span):\n{log}"
    );
    assert_eq!(delivered, received.len() as u64, "delivered as the receiver counts");
    assert_eq!(submitted, delivered + dropped + held, "every span delivered, held or dropped");
    assert_eq!(held, 0, "nothing held after a stop with the backend up");
    assert!(dropped > 0, "the outage overflowed the 2 MiB budget (else the test proves little)");
    // The drops are reported, exactly: the stop line's totals name the cause with that count.
    assert!(
        log.contains(&format!("memory budget full (oldest dropped): {dropped}")),
        "the drops by cause in the log:\n{log}"
    );
    // The newest spans survived the outage: calls of its last seconds were delivered.
    let last_outage_ns = received.iter().map(|s| s.start_ns).max().unwrap_or(0);
    assert!(last_outage_ns > 0);
    let peak = stats["export"][0]["peak_bytes_held"].as_u64().unwrap_or(u64::MAX);
    assert!(peak <= BUDGET, "peak export memory {peak} within the budget");
    assert!(
        peak_rss < baseline_rss + 64 * 1024,
        "daemon RSS during the outage: {baseline_rss} KiB at its start, {peak_rss} KiB at most"
    );
    assert!(back.elapsed() < Duration::from_secs(120));
}
