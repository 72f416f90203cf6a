//! Real Tango processes and the real daemon, started and stopped by the tests themselves.
//!
//! Everything listens on 127.0.0.1 with ephemeral ports; processes are stopped by PID; the daemon
//! traces only processes whose environment carries this test's marker.

use std::{
    io::{BufRead as _, BufReader},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU32, Ordering},
    },
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
        self.stop_status(grace);
    }

    /// Like [`Proc::stop`]; the exit status if the process ended by itself within `grace` (or
    /// had already ended), `None` if it had to be killed.
    pub fn stop_status(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, proc: &mut Proc, timeout: Duration) {
    wait_for_address(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), proc, timeout);
}

/// Waits until something accepts connections at `address`.
pub fn wait_for_address(address: SocketAddr, proc: &mut Proc, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!("{} exited ({status}) before listening on {address}", proc.name);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} did not listen on {address} within {timeout:?}", proc.name);
}

/// A PyTango `Demo` device server without database (tests/python/demo_server.py).
pub struct DemoServer {
    pub proc: Proc,
    /// The address it listens on: 127.0.0.1, or a simulated host's (see [`crate::hosts`]).
    pub address: IpAddr,
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
        DemoServer { proc, address: IpAddr::V4(Ipv4Addr::LOCALHOST), port }
    }

    /// `tango://<address>:<port>/<device>#dbase=no`
    pub fn url(&self, device: &str) -> String {
        format!("tango://{}:{}/{device}#dbase=no", self.address, self.port)
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

/// One step of `reference_client.py`: its name and wall-clock window.
#[derive(Clone, Debug)]
pub struct Step {
    pub name: String,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// The pid and steps printed by `reference_client.py`.
///
/// # Panics
/// When the output is not the script's JSON.
pub fn reference_steps(out: &serde_json::Value) -> (i64, Vec<Step>) {
    let pid = out["pid"].as_i64().unwrap_or_else(|| panic!("no pid in {out}"));
    let steps = out["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps in {out}"))
        .iter()
        .map(|step| Step {
            name: step[0].as_str().unwrap_or_default().to_owned(),
            start_ns: step[1].as_u64().unwrap_or_default(),
            end_ns: step[2].as_u64().unwrap_or_default(),
        })
        .collect();
    (pid, steps)
}

/// Runs `reference_client.py URL PEER STEP…` to completion; returns its pid and steps.
pub fn run_reference_client(
    marker: &str,
    url: &str,
    peer: &str,
    steps: &[&str],
    env: &[(&str, &str)],
) -> (i64, Vec<Step>) {
    let mut command = Command::new(python());
    command.arg(script("reference_client.py")).arg(url).arg(peer).args(steps).env(MARKER, marker);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("running reference_client.py");
    assert!(
        output.status.success(),
        "reference_client.py failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    reference_steps(&serde_json::from_str(line).unwrap_or_else(|e| panic!("client output {stdout:?}: {e}")))
}

/// The tango-tracer daemon, traced processes limited to this test's marker.
pub struct TracerDaemon {
    pub proc: Proc,
    pub dir: PathBuf,
    /// Its control socket, and the binary whose `ctl` talks to it.
    pub socket: PathBuf,
    ctl_binary: PathBuf,
    /// Everything the daemon wrote to its standard error so far (also copied to the test's).
    log: Arc<Mutex<String>>,
    log_reader: Option<std::thread::JoinHandle<()>>,
    checked: bool,
}

/// How the daemon ended: its exit status and everything it logged.
#[derive(Debug)]
pub struct DaemonExit {
    pub status: Option<ExitStatus>,
    pub log: String,
}

impl DaemonExit {
    /// Every way the run went wrong: a panic, a non-zero or missing exit status, no stop line,
    /// losses reported (see [`loss_reports`]).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match self.status {
            Some(status) if status.success() => {}
            Some(status) => problems.push(format!("the daemon exited with {status}")),
            None => problems.push("the daemon did not exit on SIGTERM and was killed".to_owned()),
        }
        for line in self.log.lines().filter(|l| l.contains("panicked")) {
            problems.push(format!("panic: {line}"));
        }
        if !self.log.lines().any(|l| log_message(l).starts_with("stopped:")) {
            problems.push("no `stopped:` line: the daemon did not report its totals".to_owned());
        }
        problems.extend(loss_reports(&self.log).into_iter().map(|l| format!("loss reported: {l}")));
        problems
    }
}

/// The message of an env_logger line (`[time LEVEL target] message`), or the line itself.
fn log_message(line: &str) -> &str {
    match line.strip_prefix('[').and_then(|rest| rest.split_once("] ")) {
        Some((_, message)) => message,
        None => line,
    }
}

/// Lines of the daemon's log that report a loss: "lost", "dropped" or "missed" with a non-zero
/// count in the same clause (text between `,`, `;`, `(`, `)`: `3 probe records lost`, `dropped 1
/// span(s)`), or followed by a colon and a list with a non-zero count in it (`lost: ring buffer 0,
/// map full 2`). `0 probe records lost` is no loss. Kept in one place: when the daemon's wording
/// changes, only this changes.
pub fn loss_reports(log: &str) -> Vec<String> {
    const WORDS: [&str; 3] = ["lost", "dropped", "missed"];
    let non_zero = |text: &str| {
        text.split(|c: char| !c.is_ascii_digit()).any(|number| number.parse::<u64>().is_ok_and(|n| n > 0))
    };
    log.lines()
        .filter(|line| {
            let message = log_message(line).to_ascii_lowercase();
            let in_clause = message
                .split([',', ';', '(', ')'])
                .any(|clause| WORDS.iter().any(|w| clause.contains(w)) && non_zero(clause));
            let in_list = WORDS.iter().any(|word| {
                message.match_indices(&format!("{word}:")).any(|(at, _)| non_zero(&message[at..]))
            });
            in_clause || in_list
        })
        .map(str::to_owned)
        .collect()
}

/// How to start a daemon: [`TracerDaemon::start`] for the usual one, this for the daemons of
/// simulated hosts (see [`crate::hosts`]).
#[derive(Clone, Debug, Default)]
pub struct DaemonLaunch {
    /// Its directory under the system temp dir (ready file, control socket, store); removed and
    /// made anew at start.
    pub dir_name: String,
    /// Traces only processes with `MARKER=<select_marker>` in their environment.
    pub select_marker: String,
    /// Environment (OTEL_* settings).
    pub env: Vec<(String, String)>,
    /// More arguments of `tango-tracer run`.
    pub args: Vec<String>,
    /// Runs it inside this network namespace (`nsenter --net=<path>`, which leaves `/sys` and
    /// tracefs as they are, unlike `ip netns exec`).
    pub enter_netns: Option<PathBuf>,
    /// Put in front of each line of its log copied to the test's output (several daemons).
    pub log_prefix: String,
    /// Runs it as its service would instead (see [`ServiceLaunch`]).
    pub service: Option<ServiceLaunch>,
    /// A command the daemon runs under (`setpriv … --`: another user, fewer capabilities); its
    /// directory is then writable by every user.
    pub wrapper: Vec<String>,
    /// The daemon binary, when not [`tracer_binary`].
    pub binary: Option<PathBuf>,
}

/// A daemon started the way its systemd unit starts it: an installed binary, under a wrapper
/// that sets the unit's user and capabilities (`setpriv`), with the service's default control
/// socket and store (no `--control-socket`, no `TANGO_TRACER_STORE`).
#[derive(Clone, Debug)]
pub struct ServiceLaunch {
    /// The wrapper's program and arguments, put in front of `binary`.
    pub wrapper: Vec<String>,
    /// The daemon's binary and the arguments of the unit's `ExecStart=` (`run` included); that
    /// binary's `ctl` talks to it.
    pub exec_start: Vec<String>,
    /// The service's user and group: the test directory (ready file) is theirs.
    pub owner: (u32, u32),
    /// Where the daemon's default control socket is, for [`TracerDaemon::ctl`].
    pub control_socket: PathBuf,
}

impl TracerDaemon {
    /// Starts `tango-tracer run` with `env` (OTEL_* settings) and extra arguments; waits for its
    /// ready file. Without `--user-spans` among `args` it runs with `--user-spans off`: the tests
    /// compare with what cppTango emits natively, which has no spans for user code inside a
    /// request; the user-level span tests turn them on.
    pub fn start(marker: &str, env: &[(&str, &str)], args: &[&str]) -> TracerDaemon {
        TracerDaemon::launch(&DaemonLaunch {
            dir_name: format!("tango-tracer-{marker}"),
            select_marker: marker.to_owned(),
            env: env.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            enter_netns: None,
            log_prefix: String::new(),
            service: None,
            wrapper: Vec::new(),
            binary: None,
        })
    }

    /// Starts `tango-tracer run` as `launch` says; waits for its ready file.
    pub fn launch(launch: &DaemonLaunch) -> TracerDaemon {
        require_root();
        let dir = std::env::temp_dir().join(&launch.dir_name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the daemon's test directory");
        if !launch.wrapper.is_empty() {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .expect("opening the daemon's directory to its user");
        }
        let ready = dir.join("ready");
        let binary = launch.binary.clone().unwrap_or_else(tracer_binary);
        let mut command = match (&launch.service, &launch.enter_netns, launch.wrapper.split_first()) {
            (Some(service), _, _) => {
                let (uid, gid) = service.owner;
                std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("giving the test directory away");
                let mut command = Command::new(&service.wrapper[0]);
                command.args(&service.wrapper[1..]).args(&service.exec_start);
                command
            }
            (None, Some(netns), _) => {
                let mut command = Command::new("nsenter");
                command.arg(format!("--net={}", netns.display())).arg("--").arg(&binary).arg("run");
                command
            }
            (None, None, Some((program, args))) => {
                let mut command = Command::new(program);
                command.args(args).arg(&binary).arg("run");
                command
            }
            (None, None, None) => {
                let mut command = Command::new(&binary);
                command.arg("run");
                command
            }
        };
        let (socket, ctl_binary) = match &launch.service {
            Some(service) => (service.control_socket.clone(), PathBuf::from(&service.exec_start[0])),
            None => {
                command.arg("--control-socket").arg(dir.join("ctl.sock"));
                command.env("TANGO_TRACER_STORE", dir.join("spans.jsonl"));
                (dir.join("ctl.sock"), binary.clone())
            }
        };
        command
            .arg("--ready-file")
            .arg(&ready)
            .arg("--select-env")
            .arg(format!("{MARKER}={}", launch.select_marker))
            .arg("--export-interval")
            .arg("200ms")
            .args(&launch.args)
            // User-level spans only where a test asks for them: the other tests compare with
            // native telemetry, which has none.
            .args(if launch.args.iter().any(|a| a == "--user-spans") {
                &[][..]
            } else {
                &["--user-spans", "off"][..]
            })
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped());
        for (name, value) in &launch.env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let log_reader = child.stderr.take().map(|stderr| {
            let log = log.clone();
            let prefix = launch.log_prefix.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("{prefix}{line}");
                    let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                    log.push_str(&line);
                    log.push('\n');
                }
            })
        });
        let mut proc =
            Proc { child, name: format!("tango-tracer {}", launch.log_prefix).trim_end().to_owned() };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.exists() {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("{} exited ({status}) before it was ready", proc.name);
            }
            assert!(Instant::now() < deadline, "{} was not ready within 60 s", proc.name);
            std::thread::sleep(Duration::from_millis(50));
        }
        TracerDaemon { proc, dir, socket, ctl_binary, log, log_reader, checked: false }
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Runs `tango-tracer ctl <args>`; its standard output, or what went wrong.
    pub fn try_ctl(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new(&self.ctl_binary)
            .arg("ctl")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .map_err(|e| format!("running tango-tracer ctl: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!("tango-tracer ctl {args:?}: {}", String::from_utf8_lossy(&output.stderr)))
        }
    }

    /// The daemon's resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.proc.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS for the daemon"))
    }

    /// Runs `tango-tracer ctl <args>` against this daemon; returns its standard output.
    pub fn ctl(&self, args: &[&str]) -> String {
        let output = Command::new(&self.ctl_binary)
            .arg("ctl")
            .arg("--socket")
            .arg(&self.socket)
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

    /// SIGTERM and wait: the daemon flushes everything it holds. Fails the test unless it ended
    /// cleanly and reported no loss (see [`DaemonExit::problems`]).
    pub fn stop(&mut self) {
        let exit = self.stop_unchecked();
        let problems = exit.problems();
        assert!(problems.is_empty(), "{} did not end cleanly:\n{}", self.proc.name, problems.join("\n"));
    }

    /// SIGTERM and wait, without judging the outcome (for tests that provoke losses).
    pub fn stop_unchecked(&mut self) -> DaemonExit {
        self.checked = true;
        let status = self.proc.stop_status(Duration::from_secs(20));
        if let Some(reader) = self.log_reader.take() {
            let _ = reader.join();
        }
        DaemonExit { status, log: self.log() }
    }

    /// SIGKILL and wait: a daemon that dies without flushing (what it held is lost, by design).
    pub fn kill(&mut self) -> DaemonExit {
        self.checked = true;
        let _ = self.proc.child.kill();
        let status = self.proc.child.wait().ok();
        if let Some(reader) = self.log_reader.take() {
            let _ = reader.join();
        }
        DaemonExit { status, log: self.log() }
    }
}

impl Drop for TracerDaemon {
    fn drop(&mut self) {
        if !self.checked && !std::thread::panicking() {
            // A test that never stopped its daemon still gets its end checked.
            self.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_are_found_by_their_words_and_non_zero_counts() {
        let log = "\
[2026-11-30T03:37:02Z INFO  tango_tracer::daemon] stopping: ending open calls and flushing exporters
[2026-11-30T03:37:02Z INFO  tango_tracer::daemon] stopped: 108 GIOP messages, 54 spans, 0 unparsable, 0 probe records lost
[2026-11-30T03:37:02Z INFO  tango_tracer::daemon] tracing pid 4211 (python): omniORB 3.4
";
        assert!(loss_reports(log).is_empty(), "{:?}", loss_reports(log));
        let exit = DaemonExit { status: None, log: log.to_owned() };
        assert_eq!(exit.problems().len(), 1, "killed, otherwise clean: {:?}", exit.problems());
        for bad in [
            "[t WARN  x] export to http://h/v1/traces: dropped 1 span(s) (queue full); 1 dropped so far",
            "[t INFO  x] stopped: 5 GIOP messages, 2 spans, 0 unparsable, 3 probe records lost",
            "[t WARN  x] lost: ring buffer 0, map full 2",
            "[t WARN  x] 12 requests missed on one connection",
        ] {
            assert_eq!(loss_reports(bad).len(), 1, "{bad}");
        }
        let panicked = DaemonExit {
            status: None,
            log: "thread 'main' panicked at src/x.rs:1:1:\n[t INFO  x] stopped: 1 spans, 0 lost".into(),
        };
        assert!(panicked.problems().iter().any(|p| p.starts_with("panic:")));
    }
}
