//! What the daemon knows about a process (environment, command line, tangorc, libraries) is copied
//! in the kernel the moment the process becomes a target: short-lived clients on a busy host that
//! exit before the daemon reads anything keep their own `TANGO_HOST` and telemetry settings.

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    time::Duration,
};

use tracer_export::{json::SpanJson, tree::render_trees};

use crate::{
    harness::{DemoServer, MARKER, Proc, TracerDaemon, python, script, unique_marker},
    otlp_receiver::OtlpReceiver,
};

const WAIT: Duration = Duration::from_secs(60);
const CLIENTS: usize = 60;
/// Clients started together while the daemon is stopped.
const BATCH: usize = 6;
/// CPU-bound loops keeping both cores busy for the whole test, niced so that the clients' calls
/// still meet their 3 s timeout, and below the daemon (nice 10 by default).
const SPINNERS: usize = 2;
const READ: &str = "Tango::DeviceProxy::read_attribute";

/// The daemon is not scheduled while this lives (SIGSTOP), and runs again when it is dropped
/// (SIGCONT), also when the test fails.
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        // SAFETY: signalling our own child by its PID.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0, "SIGSTOP the daemon");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

/// What one client's spans must show.
#[derive(Debug)]
struct Expected {
    tango_host: String,
    /// `None`: its environment turns telemetry off, so it has no span.
    service: Option<String>,
}

fn spinner(n: usize) -> Proc {
    let child = Command::new("nice")
        .args(["-n", "19", "sh", "-c", "while :; do :; done"])
        .stdout(Stdio::null())
        .spawn()
        .expect("starting a CPU-bound loop");
    Proc { child, name: format!("spinner {n}") }
}

fn client_spans(spans: &[SpanJson], pid: i64) -> Vec<&SpanJson> {
    spans
        .iter()
        .filter(|s| s.kind == "CLIENT" && s.resource.get_i64("tango.process.id") == Some(pid))
        .collect()
}

#[test]
fn short_lived_clients_gone_before_the_daemon_looks_keep_their_own_environment() {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("facts");
    let endpoint = receiver.http_endpoint().trim_end_matches("/v1/traces").to_string();
    let server = DemoServer::start(&marker, "facts", &["test/facts/1"]);
    let mut daemon = TracerDaemon::start(&marker, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)], &[]);
    let busy: Vec<Proc> = (0..SPINNERS).map(spinner).collect();
    let url = server.url("test/facts/1");

    let mut expected: HashMap<i64, Expected> = HashMap::new();
    for batch in 0..CLIENTS / BATCH {
        // Every client of the batch starts, calls and exits while the daemon cannot run: what the
        // daemon learns about them can only come from what the kernel copied.
        let stopped = Stopped::new(daemon.proc.pid());
        let mut running = Vec::new();
        for n in batch * BATCH..(batch + 1) * BATCH {
            let tango_host = format!("127.0.0.1:{}", 20000 + n);
            let mut command = Command::new(python());
            command
                .arg(script("demo_client.py"))
                .args([url.as_str(), "read_attribute"])
                .env(MARKER, &marker)
                .env("TANGO_HOST", &tango_host)
                .env_remove("TANGO_TELEMETRY_ENABLE")
                .env_remove("PYTANGO_TELEMETRY_CLIENT_SERVICE_NAME")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let service = if n % 3 == 0 {
                command.env("TANGO_TELEMETRY_ENABLE", "off");
                None
            } else {
                let service = format!("facts-client-{n}");
                command.env("PYTANGO_TELEMETRY_CLIENT_SERVICE_NAME", &service);
                Some(service)
            };
            let child = command.spawn().expect("starting demo_client.py");
            running.push((child, Expected { tango_host, service }));
        }
        for (child, expect) in running {
            let output = child.wait_with_output().expect("waiting for demo_client.py");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "demo_client.py failed: {}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
                .unwrap_or_else(|e| panic!("client output {stdout:?}: {e}"));
            assert_eq!(
                result["steps"]["read_attribute"],
                "ok",
                "{result}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let pid = result["pid"].as_i64().expect("the client's pid");
            expected.insert(pid, expect);
        }
        drop(stopped);
    }
    assert_eq!(expected.len(), CLIENTS);

    let traced: Vec<i64> =
        expected.iter().filter(|(_, e)| e.service.is_some()).map(|(pid, _)| *pid).collect();
    receiver.wait_for_blocking(|spans| traced.iter().all(|pid| !client_spans(spans, *pid).is_empty()), WAIT);
    daemon.stop();
    drop(busy);
    let spans = receiver.spans();

    let mut wrong = Vec::new();
    for (pid, expect) in &expected {
        let mine = client_spans(&spans, *pid);
        match &expect.service {
            None if !mine.is_empty() => {
                wrong.push(format!("pid {pid} turned telemetry off but has {} span(s)", mine.len()))
            }
            None => {}
            Some(service) => {
                if mine.len() != 1 || mine[0].name != READ {
                    wrong.push(format!("pid {pid}: {} client span(s), want one {READ}", mine.len()));
                }
                for span in mine {
                    let host = span.resource.get_str("tango.host");
                    if host != Some(expect.tango_host.as_str()) {
                        wrong.push(format!(
                            "pid {pid}: tango.host {host:?}, its environment says {}",
                            expect.tango_host
                        ));
                    }
                    let name = span.resource.get_str("service.name");
                    if name != Some(service.as_str()) {
                        wrong.push(format!(
                            "pid {pid}: service.name {name:?}, its environment says {service}"
                        ));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{} problem(s):\n{}\n{}", wrong.len(), wrong.join("\n"), render_trees(&spans));
}

#[test]
fn a_forked_child_inherits_the_facts_of_its_parent() {
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("fork");
    let endpoint = receiver.http_endpoint().trim_end_matches("/v1/traces").to_string();
    let server = DemoServer::start(&marker, "fork", &["test/fork/1"]);
    let mut daemon = TracerDaemon::start(&marker, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)], &[]);
    // Parent and child start, call and exit while the daemon cannot run.
    let stopped = Stopped::new(daemon.proc.pid());
    let output = Command::new(python())
        .arg(script("fork_client.py"))
        .arg(server.url("test/fork/1"))
        .env(MARKER, &marker)
        .env("TANGO_HOST", "127.0.0.1:20999")
        .env("PYTANGO_TELEMETRY_CLIENT_SERVICE_NAME", "forked")
        .env_remove("TANGO_TELEMETRY_ENABLE")
        .output()
        .expect("running fork_client.py");
    drop(stopped);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "fork_client.py: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("fork_client.py output {stdout:?}: {e}"));
    assert_eq!(result["child_status"], 0, "the child's call failed: {result}");
    let child = result["child"].as_i64().expect("the child's pid");

    let spans = receiver.wait_for_blocking(|spans| !client_spans(spans, child).is_empty(), WAIT);
    daemon.stop();
    let mine = client_spans(&spans, child);
    assert_eq!(mine.len(), 1, "{}", render_trees(&spans));
    assert_eq!(mine[0].name, READ);
    assert_eq!(mine[0].resource.get_str("tango.host"), Some("127.0.0.1:20999"), "{:?}", mine[0]);
    assert_eq!(mine[0].resource.get_str("service.name"), Some("forked"), "{:?}", mine[0]);
    assert_eq!(mine[0].scope.version, "10.3.3", "the libtango version comes from the parent's facts");
}
