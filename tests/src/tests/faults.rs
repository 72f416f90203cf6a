//! The daemon under faults: signals, a second daemon, a killed daemon, a starved daemon, bytes
//! that are not Tango. Each test checks that nothing is lost silently and nothing is invented.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tracer_export::json::SpanJson;

use crate::harness::{DemoServer, MARKER, Proc, python, run_client, script, tracer_binary, unique_marker};

/// A daemon whose standard error is kept in a file, for the lines it logs at stop.
struct LoggedDaemon {
    proc: Proc,
    dir: PathBuf,
}

impl LoggedDaemon {
    fn start(marker: &str, dir: &Path) -> LoggedDaemon {
        crate::harness::require_root();
        std::fs::create_dir_all(dir).expect("creating the daemon's directory");
        let ready = dir.join("ready");
        let _ = std::fs::remove_file(&ready);
        let proc = Proc {
            child: daemon_command(marker, dir).spawn().expect("starting tango-tracer"),
            name: "tango-tracer".into(),
        };
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
        .arg("--exporter")
        .arg("store")
        .arg("--store")
        .arg(dir.join("spans.jsonl"))
        .env("RUST_LOG", "info")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(stderr);
    command
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tango-tracer-faults-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
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
