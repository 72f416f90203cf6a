//! `--netns`: a daemon traces only the processes of one network namespace (one simulated host of
//! several on one machine), enforced where processes become targets: the daemon's scan at start
//! and the kernel's openat of omniORB.

use std::{
    net::TcpStream,
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tracer_export::json::SpanJson;

use crate::{
    harness::{MARKER, Proc, TracerDaemon, free_port, python, script, unique_marker},
    otlp_receiver::OtlpReceiver,
};

const WAIT: Duration = Duration::from_secs(60);

/// A network namespace made for the test (`ip netns add`, loopback up), deleted when dropped,
/// also when the test fails.
struct Netns {
    name: String,
}

impl Netns {
    fn create(name: String) -> Netns {
        let ip = |args: &[&str]| {
            let output = Command::new("ip").args(args).output().expect("running ip");
            assert!(output.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        };
        ip(&["netns", "add", &name]);
        let netns = Netns { name };
        ip(&["-n", &netns.name, "link", "set", "lo", "up"]);
        netns
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Inode of the namespace: what `/proc/<pid>/ns/net` shows for its processes.
    fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(self.path()).expect("the namespace file").ino()
    }

    /// `python SCRIPT ARGS…` inside the namespace (`nsenter` execs it: the child is python).
    fn python(&self, marker: &str, name: &str, args: &[String]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.path().display()))
            .arg(python())
            .arg(script(name))
            .args(args)
            .env(MARKER, marker)
            .env_remove("TANGO_TELEMETRY_ENABLE");
        command
    }

    /// Waits until something accepts connections on 127.0.0.1:`port` inside the namespace.
    fn wait_for_port(&self, port: u16, proc: &mut Proc) {
        let file = std::fs::File::open(self.path()).expect("the namespace file");
        // A thread of our own enters the namespace; the test's other threads stay where they are.
        let reachable = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns on an open namespace fd; it moves only this thread.
                    let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } == 0;
                    assert!(entered, "setns: {}", std::io::Error::last_os_error());
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while Instant::now() < deadline {
                        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                            return true;
                        }
                        if let Ok(Some(status)) = proc.child.try_wait() {
                            panic!("{} exited ({status}) before listening", proc.name);
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    false
                })
                .join()
                .expect("the thread in the namespace")
        });
        assert!(reachable, "{} did not listen on port {port} in {}", proc.name, self.name);
    }

    /// A PyTango Demo server inside the namespace on 127.0.0.1:`port`.
    fn demo_server(&self, marker: &str, port: u16) -> Proc {
        let child = self
            .python(marker, "demo_server.py", &[self.name.clone(), port.to_string(), "test/demo/1".into()])
            .stdout(Stdio::null())
            .spawn()
            .expect("starting demo_server.py");
        let mut proc = Proc { child, name: format!("demo server in {}", self.name) };
        self.wait_for_port(port, &mut proc);
        proc
    }

    /// Runs `demo_client.py` against the namespace's server; returns the client's pid.
    fn demo_client(&self, marker: &str, port: u16) -> u32 {
        let url = format!("tango://127.0.0.1:{port}/test/demo/1#dbase=no");
        let args = [url, "read_attribute".into(), "command_inout".into()];
        let output = self.python(marker, "demo_client.py", &args).output().expect("running demo_client.py");
        assert!(output.status.success(), "demo_client.py: {}", String::from_utf8_lossy(&output.stderr));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let out: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("client output {stdout:?}: {e}"));
        assert_eq!(out["steps"]["read_attribute"], "ok", "{out}");
        out["pid"].as_u64().expect("the client's pid") as u32
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn pids_of(spans: &[SpanJson]) -> Vec<u32> {
    let mut pids: Vec<u32> =
        spans.iter().filter_map(|s| s.resource.get_i64("tango.process.id")).map(|pid| pid as u32).collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Pids of the records in the daemon's `--record` file.
fn recorded_pids(path: &std::path::Path) -> Vec<u32> {
    let text = std::fs::read_to_string(path).expect("the record file");
    let mut pids: Vec<u32> = text
        .lines()
        .filter_map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).expect("a JSON record");
            let (_, fields) = record.as_object()?.iter().next()?;
            // ProcessFacts carries its pid inside; the others at the top.
            fields["pid"].as_u64().map(|pid| pid as u32)
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

#[test]
fn a_daemon_given_a_network_namespace_traces_only_its_processes() {
    let marker = unique_marker("netns");
    // Declared first, dropped last: after every process inside them.
    let a = Netns::create(format!("ttnetns-{}-a", std::process::id()));
    let b = Netns::create(format!("ttnetns-{}-b", std::process::id()));
    let port = free_port();
    // Servers running before the daemon: found by its scan. Same marker, same port: only the
    // namespace tells them apart.
    let server_a = a.demo_server(&marker, port);
    let server_b = b.demo_server(&marker, port);

    let receiver = OtlpReceiver::start_blocking();
    let endpoint = receiver.http_endpoint().trim_end_matches("/v1/traces").to_string();
    let records = std::env::temp_dir().join(format!("{marker}-records.jsonl"));
    let mut daemon = TracerDaemon::start(
        &marker,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)],
        &["--netns", a.path().to_str().expect("a path"), "--record", records.to_str().expect("a path")],
    );
    // Clients started after the daemon: made targets (or not) by the kernel at their omniORB open.
    let client_a = a.demo_client(&marker, port);
    let client_b = b.demo_client(&marker, port);
    let spans = receiver.wait_for_blocking(
        |spans| {
            let pids = pids_of(spans);
            pids.contains(&client_a) && pids.contains(&server_a.pid())
        },
        WAIT,
    );
    let list = daemon.ctl(&["list"]);
    daemon.stop();
    let recorded = recorded_pids(&records);
    let _ = std::fs::remove_file(&records);

    let spans_a: Vec<&SpanJson> =
        spans.iter().filter(|s| s.resource.get_i64("tango.process.id") == Some(client_a.into())).collect();
    assert!(spans_a.iter().any(|s| s.kind == "CLIENT"), "{spans_a:?}");
    let mut expected = vec![server_a.pid(), client_a];
    expected.sort_unstable();
    assert_eq!(pids_of(&receiver.spans()), expected, "spans only of A's processes");
    // The kernel never made B's processes targets: not a single record of them.
    for pid in [server_b.pid(), client_b] {
        assert!(!recorded.contains(&pid), "records of pid {pid} of the other namespace: {recorded:?}");
    }
    assert!(recorded.contains(&client_a) && recorded.contains(&server_a.pid()), "{recorded:?}");
    // `ctl list` names the namespace of each traced process.
    assert!(list.contains(&format!("network namespace: net:[{}]", a.inode())), "{list}");
    assert!(!list.contains(&format!("pid {} ", server_b.pid())), "{list}");
}

#[test]
fn a_path_that_is_no_network_namespace_is_refused_at_start() {
    for (path, expected) in [
        ("/proc/self/ns/mnt", "/proc/self/ns/mnt is not a network namespace"),
        ("/nonexistent/netns", "cannot open /nonexistent/netns"),
    ] {
        let output = Command::new(crate::harness::tracer_binary())
            .args(["run", "--netns", path, "--control-socket", "/nonexistent/ctl.sock"])
            .output()
            .expect("running tango-tracer");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--netns") && stderr.contains(expected), "{stderr}");
    }
}
