//! The daemon under a service manager: readiness, status, watchdog and stop notifications on a
//! real `NOTIFY_SOCKET`; `ctl health` and `GET /healthz`; log lines fit for journald.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    os::unix::net::UnixDatagram,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::privileges::{NEEDED, as_nobody_with, binary_for_nobody};
use crate::harness::{
    DemoServer, MARKER, TracerDaemon, free_port, require_root, run_client, tracer_binary, unique_marker,
};

/// One datagram from the daemon: when it came, its text, and whether the ready file was there.
#[derive(Debug)]
struct Notification {
    at: Instant,
    text: String,
    ready_file_existed: bool,
}

/// `GET path` on 127.0.0.1:`port`: (status code, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the metrics listener");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("sending the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reading the response");
    let (head, body) =
        response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP response: {response}"));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, body.to_owned())
}

/// `tango-tracer ctl health`: (success, stdout, stderr).
fn ctl_health(daemon: &TracerDaemon) -> (bool, String, String) {
    let output = Command::new(tracer_binary())
        .arg("ctl")
        .arg("--socket")
        .arg(daemon.dir.join("ctl.sock"))
        .arg("health")
        .output()
        .expect("running tango-tracer ctl health");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn ready_status_watchdog_and_stopping_reach_the_notify_socket() {
    require_root();
    let marker = unique_marker("notify");
    let server = DemoServer::start(&marker, "notify", &["test/demo/1"]);
    let socket_path = std::env::temp_dir().join(format!("tango-tracer-notify-{marker}.sock"));
    let _ = std::fs::remove_file(&socket_path);
    let socket = UnixDatagram::bind(&socket_path).expect("binding the notify socket");
    socket.set_read_timeout(Some(Duration::from_millis(200))).expect("read timeout");
    let ready_file = std::env::temp_dir().join(format!("tango-tracer-{marker}")).join("ready");
    let received = Arc::new(Mutex::new(Vec::<Notification>::new()));
    let stop_reading = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let received = received.clone();
        let stop_reading = stop_reading.clone();
        let ready_file = ready_file.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while !stop_reading.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buffer) {
                    let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                    let ready_file_existed = ready_file.exists();
                    received.lock().unwrap().push(Notification {
                        at: Instant::now(),
                        text,
                        ready_file_existed,
                    });
                }
            }
        })
    };
    let socket_env = socket_path.display().to_string();
    let mut daemon =
        TracerDaemon::start(&marker, &[("NOTIFY_SOCKET", &socket_env), ("WATCHDOG_USEC", "1000000")], &[]);
    let started = Instant::now();
    let url = server.url("test/demo/1");
    run_client(&marker, &[&url, "read_attribute"], &[]);
    let (healthy, text, _) = ctl_health(&daemon);
    assert!(healthy && text.starts_with("healthy: "), "{text}");
    std::thread::sleep(Duration::from_millis(6500));
    let stop_asked = Instant::now();
    daemon.stop();
    std::thread::sleep(Duration::from_millis(300));
    stop_reading.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.join().expect("notify reader");
    let _ = std::fs::remove_file(&socket_path);
    let received = received.lock().unwrap();
    let all: Vec<&str> = received.iter().map(|n| n.text.as_str()).collect();

    // READY=1 first, once the ready file (probes attached, scan done) was there, with a status.
    let first = received.first().unwrap_or_else(|| panic!("nothing on the notify socket"));
    assert!(first.text.lines().any(|l| l == "READY=1"), "{all:?}");
    assert!(first.ready_file_existed, "READY=1 before the ready file: {all:?}");
    assert!(
        first
            .text
            .lines()
            .any(|l| l.starts_with("STATUS=") && l.ends_with("processes traced, 0 spans exported, 0 lost")),
        "{all:?}"
    );
    // STATUS renewed every 5 s, counting what was traced.
    let statuses: Vec<&str> =
        received.iter().flat_map(|n| n.text.lines()).filter_map(|l| l.strip_prefix("STATUS=")).collect();
    assert!(
        statuses.iter().any(|s| !s.contains(", 0 spans exported, ")),
        "no status after the call: {statuses:?}"
    );
    // The watchdog every half WATCHDOG_USEC while running.
    let watchdogs =
        received.iter().filter(|n| n.at < stop_asked && n.text.lines().any(|l| l == "WATCHDOG=1")).count();
    let running = stop_asked.duration_since(started).as_secs_f64();
    assert!(watchdogs as f64 >= running * 2.0 * 0.8, "{watchdogs} watchdog pings in {running:.1} s: {all:?}");
    // STOPPING=1 on SIGTERM, and READY never again.
    let stopping = received
        .iter()
        .position(|n| n.text.lines().any(|l| l == "STOPPING=1"))
        .unwrap_or_else(|| panic!("no STOPPING=1: {all:?}"));
    assert!(received[stopping].at >= stop_asked);
    assert!(received[stopping..].iter().all(|n| !n.text.contains("READY=1")), "{all:?}");
}

#[test]
fn ctl_health_and_healthz_turn_unhealthy_while_export_fails() {
    require_root();
    let marker = unique_marker("health");
    let server = DemoServer::start(&marker, "health", &["test/demo/1"]);
    // Nothing listens there: every export fails.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let metrics_port = free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let mut daemon = TracerDaemon::start(
        &marker,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &dead), ("OTEL_METRICS_EXPORTER", "none")],
        &["--metrics-listen", &listen, "--shutdown-timeout", "1s"],
    );
    let (healthy, text, _) = ctl_health(&daemon);
    assert!(healthy, "{text}");
    let (code, body) = get(metrics_port, "/healthz");
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("healthy: "), "{body}");

    run_client(&marker, &[&server.url("test/demo/1"), "read_attribute"], &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let reason = loop {
        let (healthy, text, error) = ctl_health(&daemon);
        if !healthy {
            assert!(text.starts_with("unhealthy: "), "{text}");
            break error;
        }
        assert!(Instant::now() < deadline, "still healthy 30 s after export began to fail: {text}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(reason.contains("export failing for ") && reason.contains("127.0.0.1"), "{reason}");
    let (code, body) = get(metrics_port, "/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("unhealthy: ") && body.contains("export failing for "), "{body}");
    // What could not be delivered is counted at stop, as it should be.
    let exit = daemon.stop_unchecked();
    assert!(exit.status.is_some_and(|s| s.success()), "{:?}", exit.status);
}

#[test]
fn logs_off_a_terminal_have_no_colour_and_under_journald_carry_their_priority() {
    require_root();
    // Standard error a pipe (as the harness runs it): no escape sequence anywhere.
    let marker = unique_marker("plainlog");
    let mut daemon = TracerDaemon::start(&marker, &[], &[]);
    daemon.stop();
    let log = daemon.log();
    assert!(log.contains("tango-tracer ready"), "{log}");
    assert!(!log.contains('\u{1b}'), "escape sequences in a piped log:\n{log:?}");

    // Standard error journald's stream (JOURNAL_STREAM names it): a priority on every line, no
    // time, no colour.
    let marker = unique_marker("journallog");
    let dir = std::env::temp_dir().join(format!("tango-tracer-{marker}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the test directory");
    let mut command = Command::new(tracer_binary());
    command
        .args(["run", "--select-env", &format!("{MARKER}={marker}"), "--exporter", "store"])
        .arg("--ready-file")
        .arg(dir.join("ready"))
        .arg("--control-socket")
        .arg(dir.join("ctl.sock"))
        .env("TANGO_TRACER_STORE", dir.join("spans.jsonl"));
    let lines = journal_run(command, Some(&dir.join("ready")));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        lines.iter().any(|l| l.starts_with("<6>INFO  tango_tracer::run: tango-tracer ready: ")),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("<6>INFO  tango_tracer::run: stopped: ")), "{lines:#?}");
    for line in &lines {
        assert!(["<3>", "<4>", "<6>", "<7>"].iter().any(|p| line.starts_with(p)), "{line:?}");
        assert!(!line.contains('\u{1b}') && !line.contains("Z INFO"), "{line:?}");
    }

    // The error that ends the daemon is an error for journald too.
    let wrapper = as_nobody_with(&NEEDED[1..]);
    let binary = binary_for_nobody("journallog");
    let mut command = Command::new(&wrapper[0]);
    command.args(&wrapper[1..]).arg(&binary).args(["run", "--exporter", "store"]);
    let lines = journal_run(command, None);
    assert!(
        lines.iter().any(|l| l
            .starts_with("<3>ERROR tango-tracer: tango-tracer run needs more privileges: missing CAP_BPF")),
        "{lines:#?}"
    );
}

/// Runs `command` with standard error on a pipe that `JOURNAL_STREAM` names, as journald's
/// stream would be; with `ready`, stops it with SIGTERM once that file appears. Its lines.
fn journal_run(mut command: Command, ready: Option<&std::path::Path>) -> Vec<String> {
    use std::os::{fd::AsRawFd as _, unix::fs::MetadataExt as _};
    let (reader, writer) = std::io::pipe().expect("a pipe");
    let meta = std::fs::metadata(format!("/proc/self/fd/{}", writer.as_raw_fd())).expect("the pipe's inode");
    let mut child = command
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(writer)
        .spawn()
        .expect("starting the daemon");
    // The command holds our copy of the pipe's writing end: the reader sees its end only
    // once the daemon's is closed too.
    drop(command);
    let lines =
        std::thread::spawn(move || BufReader::new(reader).lines().map_while(Result::ok).collect::<Vec<_>>());
    if let Some(ready) = ready {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.exists() {
            assert!(child.try_wait().expect("try_wait").is_none(), "the daemon exited before it was ready");
            assert!(Instant::now() < deadline, "not ready within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    let status = child.wait().expect("waiting for the daemon");
    assert_eq!(status.success(), ready.is_some(), "{status}");
    lines.join().expect("reading the daemon's standard error")
}
