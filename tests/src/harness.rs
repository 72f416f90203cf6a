//! Real Tango processes and the real daemon, started and stopped by the tests themselves.
//!
//! Everything listens on 127.0.0.1 with ephemeral ports; processes are stopped by PID; the daemon
//! traces only processes whose environment carries this test's marker.

use std::{
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// Environment variable that marks the processes of one test.
pub const MARKER: &str = "TANGO_TRACER_TEST";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The Python of the venv holding PyTango (set up by the bootstrap script).
pub fn python() -> PathBuf {
    std::env::var_os("TANGO_TRACER_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/venv"))
        .join("bin/python")
}

/// A script of `tests/python/`.
pub fn script(name: &str) -> PathBuf {
    workspace_root().join("tests/python").join(name)
}

/// The daemon binary: `TANGO_TRACER_BIN`, else the debug build `cargo xtask test` makes first.
pub fn tracer_binary() -> PathBuf {
    std::env::var_os("TANGO_TRACER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/tango-tracer"))
}

/// Fails loudly unless the tests can load eBPF programs.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "these tests load eBPF programs and must run as root");
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

/// A unique marker value for this test.
pub fn unique_marker(test: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!("{test}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A child process stopped by PID when dropped (SIGTERM, then SIGKILL).
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, proc: &mut Proc, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!("{} exited ({status}) before listening on port {port}", proc.name);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} did not listen on port {port} within {timeout:?}", proc.name);
}

/// A PyTango `Demo` device server without database (tests/python/demo_server.py).
pub struct DemoServer {
    pub proc: Proc,
    pub port: u16,
}

impl DemoServer {
    pub fn start(marker: &str, instance: &str, devices: &[&str]) -> DemoServer {
        let port = free_port();
        let child = Command::new(python())
            .arg(script("demo_server.py"))
            .arg(instance)
            .arg(port.to_string())
            .args(devices)
            .env(MARKER, marker)
            .env_remove("TANGO_TELEMETRY_ENABLE")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting demo_server.py");
        let mut proc = Proc { child, name: format!("demo server {instance}") };
        wait_for_port(port, &mut proc, Duration::from_secs(30));
        DemoServer { proc, port }
    }

    /// `tango://127.0.0.1:<port>/<device>#dbase=no`
    pub fn url(&self, device: &str) -> String {
        format!("tango://127.0.0.1:{}/{device}#dbase=no", self.port)
    }
}

/// Runs `demo_client.py` to completion with extra environment; returns its JSON output.
pub fn run_client(marker: &str, args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let mut command = Command::new(python());
    command.arg(script("demo_client.py")).args(args).env(MARKER, marker);
    for (name, value) in env {
        command.env(name, value);
    }
    let output: Output = command.output().expect("running demo_client.py");
    assert!(
        output.status.success(),
        "demo_client.py failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("client output {stdout:?}: {e}"))
}

/// The tango-tracer daemon, traced processes limited to this test's marker.
pub struct TracerDaemon {
    pub proc: Proc,
    pub dir: PathBuf,
}

impl TracerDaemon {
    /// Starts `tango-tracer run` with `env` (OTEL_* settings) and extra arguments; waits for its
    /// ready file.
    pub fn start(marker: &str, env: &[(&str, &str)], args: &[&str]) -> TracerDaemon {
        Self::start_with_stderr(marker, env, args, false)
    }

    /// Like [`start`](Self::start), with the daemon's log written to [`log`](Self::log) instead
    /// of the test's standard error.
    pub fn start_logged(marker: &str, env: &[(&str, &str)], args: &[&str]) -> TracerDaemon {
        Self::start_with_stderr(marker, env, args, true)
    }

    /// The daemon's log so far (daemons started with [`start_logged`](Self::start_logged)).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    fn start_with_stderr(marker: &str, env: &[(&str, &str)], args: &[&str], logged: bool) -> TracerDaemon {
        require_root();
        let dir = std::env::temp_dir().join(format!("tango-tracer-{marker}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the daemon's test directory");
        let ready = dir.join("ready");
        let mut command = Command::new(tracer_binary());
        command
            .arg("run")
            .arg("--ready-file")
            .arg(&ready)
            .arg("--select-env")
            .arg(format!("{MARKER}={marker}"))
            .arg("--export-interval")
            .arg("200ms")
            .arg("--control-socket")
            .arg(dir.join("ctl.sock"))
            .args(args)
            .env("TANGO_TRACER_STORE", dir.join("spans.jsonl"))
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        if logged {
            let log = std::fs::File::create(dir.join("daemon.log")).expect("creating the daemon's log");
            command.stderr(log);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", tracer_binary().display()));
        let mut proc = Proc { child, name: "tango-tracer".into() };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.exists() {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("tango-tracer exited ({status}) before it was ready");
            }
            assert!(Instant::now() < deadline, "tango-tracer was not ready within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        TracerDaemon { proc, dir }
    }

    /// Runs `tango-tracer ctl <args>` against this daemon; returns its standard output.
    pub fn ctl(&self, args: &[&str]) -> String {
        let output = Command::new(tracer_binary())
            .arg("ctl")
            .arg("--socket")
            .arg(self.dir.join("ctl.sock"))
            .args(args)
            .output()
            .expect("running tango-tracer ctl");
        assert!(
            output.status.success(),
            "tango-tracer ctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// SIGTERM and wait: the daemon flushes everything it holds.
    pub fn stop(&mut self) {
        self.proc.stop(Duration::from_secs(20));
    }
}
