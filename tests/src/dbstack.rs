//! The legacy Tango stack with a real database, for tests that need database-registered devices.
//!
//! [`DbStack`] runs `scripts/tango-stack.sh` (a private MariaDB and DataBaseds 9.3.4 from Debian 12,
//! everything in one directory under the system temp dir, DataBaseds on an ephemeral 127.0.0.1
//! port). Against it run [`TangoTestServer`] (Debian's TangoTest 9.3.4), [`DemoDbServer`] (the
//! PyTango 10.3.1 `Demo` server of `tests/python/demo_server.py`, registered in the database) and
//! clients of either PyTango: [`run_db_client`] with [`python()`] (10.3.1) or [`legacy_python()`]
//! (Debian's PyTango 9.3 on libtango 9.3.4).
//!
//! Every process gets `TANGO_HOST` of the stack: the packages write a machine-wide `/etc/tangorc`
//! pointing elsewhere. Same-host clients of database-registered devices talk to them over omniORB's
//! Unix socket (`/tmp/omni-<user>/…`); set `ORBclientTransportRule=* tcp` in a client's `env` to
//! force TCP. The database itself is always reached over TCP.
//!
//! Drop order matters: declare the stack first, so that servers (dropped first) can unexport
//! themselves from a still-running database.
//!
//! [`DbStack::start_on`] puts the stack on a simulated host instead (see [`crate::hosts`]): the
//! script, DataBaseds and everything started with [`DbStack::command`] run inside the host's
//! network namespace, and DataBaseds and TangoTest listen on the host's address, so that clients
//! on other hosts reach them.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use crate::harness::{MARKER, Proc, python, script};

/// Seconds a server gets to register itself and answer a ping.
const SERVER_START_TIMEOUT_S: u32 = 30;

/// Debian's TangoTest 9.3.4 (package `tango-test`).
const TANGOTEST: &str = "/usr/lib/tango/TangoTest";

/// Debian's Python with PyTango 9.3 (`python3-tango`); `TANGO_TRACER_LEGACY_PYTHON` overrides.
/// It must be the distribution's interpreter: the `python3` first on `PATH` may be another one.
pub fn legacy_python() -> PathBuf {
    std::env::var_os("TANGO_TRACER_LEGACY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/python3"))
}

fn stack_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/tango-stack.sh")
}

/// Runs a command to completion; panics with its output unless it succeeds.
fn run_checked(command: &mut Command, what: &str) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Where a stack runs when not on this host's loopback: a simulated host.
#[derive(Clone, Debug)]
pub struct StackHost {
    /// The host's network namespace (`/run/netns/NAME`), entered with `nsenter --net`.
    pub netns: PathBuf,
    /// The host's address: DataBaseds and TangoTest listen on it.
    pub address: Ipv4Addr,
    /// Environment of every process of the host (its marker, its transport rule).
    pub env: Vec<(String, String)>,
}

/// A private MariaDB + DataBaseds 9.3.4, stopped (and its directory removed) on drop.
pub struct DbStack {
    dir: PathBuf,
    tango_host: String,
    host: Option<StackHost>,
}

impl DbStack {
    /// Starts a stack in a new directory under the system temp dir and waits until the database
    /// device answers.
    pub fn start() -> DbStack {
        Self::start_with(None)
    }

    /// Like [`start`](Self::start), on a simulated host: DataBaseds listens on its address.
    pub fn start_on(host: StackHost) -> DbStack {
        Self::start_with(Some(host))
    }

    fn start_with(host: Option<StackHost>) -> DbStack {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        // Short: the MariaDB socket lives in it, and Unix socket paths are limited to 108 bytes.
        let dir = std::env::temp_dir().join(format!(
            "tango-db-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut stack = DbStack { dir, tango_host: String::new(), host };
        // From here on, Drop stops whatever the script got to start.
        let mut start = stack.in_host("bash");
        if let Some(host) = &stack.host {
            start.env("TANGO_STACK_ADDRESS", host.address.to_string());
        }
        run_checked(start.arg(stack_script()).arg("start").arg(&stack.dir), "tango-stack.sh start");
        let env_file = stack.dir.join("env");
        let env = std::fs::read_to_string(&env_file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", env_file.display()));
        stack.tango_host = env
            .lines()
            .find_map(|line| line.strip_prefix("TANGO_HOST="))
            .unwrap_or_else(|| panic!("no TANGO_HOST in {}:\n{env}", env_file.display()))
            .to_owned();
        stack
    }

    /// `<address>:<port>` of the stack's DataBaseds (address 127.0.0.1 unless on a host).
    pub fn tango_host(&self) -> String {
        self.tango_host.clone()
    }

    /// The `-ORBendPoint` of servers started against the stack: any port of its address.
    pub fn endpoint(&self) -> String {
        let address = self.host.as_ref().map_or(Ipv4Addr::LOCALHOST, |h| h.address);
        format!("giop:tcp:{address}:")
    }

    /// `program` inside the stack's host (if any), with the host's environment; stdin closed.
    fn in_host(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = match &self.host {
            Some(host) => {
                let mut command = Command::new("nsenter");
                command.arg(format!("--net={}", host.netns.display())).arg("--").arg(program);
                for (name, value) in &host.env {
                    command.env(name, value);
                }
                command
            }
            None => Command::new(program),
        };
        command.stdin(Stdio::null());
        command
    }

    /// The stack's directory (MariaDB datadir, logs, pid files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A command with this stack's `TANGO_HOST`, and without the environment of the test runner
    /// that would change how Tango processes behave; on a host, inside it with its environment.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = self.in_host(program);
        command.env("TANGO_HOST", &self.tango_host).env_remove("TANGO_TELEMETRY_ENABLE");
        if self.host.is_none() {
            command.env_remove("ORBclientTransportRule");
        }
        command
    }

    /// Runs `tests/python/db_register.py` with the venv's PyTango (see its usage).
    pub fn db_register(&self, args: &[&str]) {
        run_checked(
            self.command(python()).arg(script("db_register.py")).args(args),
            &format!("db_register.py {}", args.join(" ")),
        );
    }

    /// Waits until `proc` has exported every device to the database and each answers a ping.
    fn wait_exported(&self, proc: &mut Proc, devices: &[String]) {
        let output = self
            .command(python())
            .arg(script("db_register.py"))
            .arg("wait")
            .arg(proc.pid().to_string())
            .arg(SERVER_START_TIMEOUT_S.to_string())
            .args(devices)
            .output()
            .unwrap_or_else(|e| panic!("running db_register.py wait: {e}"));
        if !output.status.success() {
            let exited = proc.child.try_wait().ok().flatten();
            panic!(
                "{} did not serve {devices:?} (exit status {exited:?}): {}",
                proc.name,
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

impl Drop for DbStack {
    fn drop(&mut self) {
        let stopped = Command::new("bash")
            .arg(stack_script())
            .arg("stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        // Keep the logs of a failed test; the datadir of a passed one is just ~40 MB of litter.
        if stopped && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("tango stack left in {}", self.dir.display());
        }
    }
}

/// Debian's TangoTest 9.3.4 registered in the stack's database, stopped by PID on drop.
pub struct TangoTestServer {
    pub proc: Proc,
    /// The device it serves (`sys/tg_test/1` for instance `test`, else `sys/tg_test/<instance>`).
    pub device: String,
}

impl TangoTestServer {
    /// Starts `TangoTest <instance>` with the stack's `TANGO_HOST` and `MARKER=marker`; waits until
    /// its device answers. `double_scalar` is neither polled nor has change events.
    pub fn start(stack: &DbStack, marker: &str, instance: &str) -> TangoTestServer {
        Self::start_with(stack, marker, instance, None)
    }

    /// Like [`start`](Self::start), with `double_scalar` polled every `period` and firing change
    /// events on any change (`abs_change`), so clients can subscribe to them.
    pub fn start_with_change_events(
        stack: &DbStack,
        marker: &str,
        instance: &str,
        period: Duration,
    ) -> TangoTestServer {
        Self::start_with(stack, marker, instance, Some(period))
    }

    /// TangoTest serving `devices` (all registered under TangoTest/`instance`), with extra
    /// environment, optionally with `/etc/tangorc` replaced by `tangorc` in a private mount
    /// namespace of its own (so the machine's file is untouched).
    pub fn start_custom(
        stack: &DbStack,
        marker: &str,
        instance: &str,
        devices: &[&str],
        env: &[(&str, &str)],
        tangorc: Option<&Path>,
    ) -> TangoTestServer {
        let server = format!("TangoTest/{instance}");
        let mut args = vec!["server", server.as_str(), "TangoTest"];
        args.extend_from_slice(devices);
        stack.db_register(&args);
        let mut command = match tangorc {
            Some(file) => {
                let mut c = stack.command("unshare");
                c.args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg(r#"mount --bind "$0" /etc/tangorc && exec "$@""#)
                    .arg(file)
                    .arg(TANGOTEST);
                c
            }
            None => stack.command(TANGOTEST),
        };
        command.arg(instance).args(["-ORBendPoint", &stack.endpoint()]).env(MARKER, marker);
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command
            .stdout(log_file(stack, &format!("tangotest-{instance}.log")))
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {TANGOTEST}: {e}"));
        let mut proc = Proc { child, name: format!("TangoTest {instance}") };
        let names: Vec<String> = devices.iter().map(|d| d.to_string()).collect();
        stack.wait_exported(&mut proc, &names);
        TangoTestServer { proc, device: names.first().cloned().unwrap_or_default() }
    }

    fn start_with(
        stack: &DbStack,
        marker: &str,
        instance: &str,
        polling: Option<Duration>,
    ) -> TangoTestServer {
        // The schema registers TangoTest/test with sys/tg_test/1; other instances get their own.
        let device =
            if instance == "test" { "sys/tg_test/1".to_owned() } else { format!("sys/tg_test/{instance}") };
        let period_ms = polling.map(|p| p.as_millis().max(1).to_string());
        let mut args = vec!["tangotest", instance, &device];
        if let Some(period_ms) = &period_ms {
            // TangoTest's double_scalar moves by more than this between reads.
            args.extend([period_ms.as_str(), "0.001"]);
        }
        stack.db_register(&args);
        let child = stack
            .command(TANGOTEST)
            .arg(instance)
            .args(["-ORBendPoint", &stack.endpoint()])
            .env(MARKER, marker)
            // Logs in the stack's directory: a test's output stays readable, and they survive a failure.
            .stdout(log_file(stack, &format!("tangotest-{instance}.log")))
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {TANGOTEST}: {e}"));
        let mut proc = Proc { child, name: format!("TangoTest {instance}") };
        stack.wait_exported(&mut proc, std::slice::from_ref(&device));
        TangoTestServer { proc, device }
    }
}

fn log_file(stack: &DbStack, name: &str) -> Stdio {
    let path = stack.dir().join(name);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map(Stdio::from)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// The PyTango 10.3.1 `Demo` server (`tests/python/demo_db_server.py`) registered in the stack's
/// database as `Demo/<instance>`, stopped by PID on drop.
pub struct DemoDbServer {
    pub proc: Proc,
    pub devices: Vec<String>,
}

impl DemoDbServer {
    /// Registers and starts the server with `MARKER=marker`; waits until every device answers.
    pub fn start(stack: &DbStack, marker: &str, instance: &str, devices: &[&str]) -> DemoDbServer {
        let child = stack
            .command(python())
            .arg(script("demo_db_server.py"))
            .arg(instance)
            .args(devices)
            .env(MARKER, marker)
            .stdout(log_file(stack, &format!("demo-{instance}.log")))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting demo_db_server.py");
        let mut proc = Proc { child, name: format!("Demo db server {instance}") };
        let devices: Vec<String> = devices.iter().map(|d| (*d).to_owned()).collect();
        stack.wait_exported(&mut proc, &devices);
        DemoDbServer { proc, devices }
    }
}

/// Runs a client script of `tests/python/` (e.g. `legacy_client.py`, which works with both
/// PyTango versions) to completion with `python` ([`python()`] or [`legacy_python()`]), the stack's
/// `TANGO_HOST`, `MARKER=marker` and extra `env`; returns the JSON object it printed last.
pub fn run_db_client(
    stack: &DbStack,
    marker: &str,
    python: &Path,
    script_name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> serde_json::Value {
    let mut command = stack.command(python);
    command.arg(script(script_name)).args(args).env(MARKER, marker);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = run_checked(&mut command, &format!("{} {script_name}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{script_name} output {stdout:?}: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        reason = "tests"
    )]
    use std::time::Instant;

    use super::*;
    use crate::harness::unique_marker;

    fn assert_read(result: &serde_json::Value, version_prefix: &str) {
        assert_eq!(result["steps"]["read_attribute=double_scalar"], "ok", "{result}");
        assert!(result["values"]["read_attribute=double_scalar"].is_f64(), "{result}");
        assert_eq!(result["steps"]["command_inout=DevString:hello"], "ok", "{result}");
        assert_eq!(result["values"]["command_inout=DevString:hello"], "hello", "{result}");
        let version = result["version"].as_str().unwrap_or_default();
        assert!(version.starts_with(version_prefix), "PyTango {version}, wanted {version_prefix}: {result}");
    }

    /// The stack, TangoTest 9.3.4, and both PyTango generations reading from it.
    #[test]
    fn dbstack_tangotest_with_both_clients() {
        let marker = unique_marker("dbstack");
        let started = Instant::now();
        let stack = DbStack::start();
        eprintln!("stack up in {:?} at {}", started.elapsed(), stack.tango_host());
        assert!(stack.tango_host().starts_with("127.0.0.1:"), "{}", stack.tango_host());

        let started = Instant::now();
        let server = TangoTestServer::start(&stack, &marker, "test");
        eprintln!("TangoTest up in {:?}", started.elapsed());
        assert_eq!(server.device, "sys/tg_test/1");

        let steps = [server.device.as_str(), "read_attribute=double_scalar", "command_inout=DevString:hello"];
        let modern = run_db_client(&stack, &marker, &python(), "legacy_client.py", &steps, &[]);
        assert_read(&modern, "10.");
        let legacy = run_db_client(&stack, &marker, &legacy_python(), "legacy_client.py", &steps, &[]);
        assert_read(&legacy, "9.3");
        // Forcing TCP changes the transport, not the outcome.
        let tcp = run_db_client(
            &stack,
            &marker,
            &legacy_python(),
            "legacy_client.py",
            &steps,
            &[("ORBclientTransportRule", "* tcp")],
        );
        assert_read(&tcp, "9.3");
    }

    /// A PyTango 10.3.1 server found through the database, change events from a polled TangoTest,
    /// and a second `start` of a running stack.
    #[test]
    fn dbstack_demo_server_and_events() {
        let marker = unique_marker("dbstack-demo");
        let stack = DbStack::start();
        let demo = DemoDbServer::start(&stack, &marker, "dbtest", &["test/dbdemo/1", "test/dbdemo/2"]);
        let result = run_db_client(
            &stack,
            &marker,
            &legacy_python(),
            "legacy_client.py",
            &[&demo.devices[0], "read_attribute", "command_inout", "fail", "nested=test/dbdemo/2"],
            &[],
        );
        assert_eq!(result["steps"]["read_attribute"], "ok", "{result}");
        assert_eq!(result["steps"]["command_inout"], "ok", "{result}");
        assert_eq!(result["steps"]["fail"], "DevFailed:BoomReason", "{result}");
        assert_eq!(result["steps"]["nested=test/dbdemo/2"], "ok", "{result}");

        let server =
            TangoTestServer::start_with_change_events(&stack, &marker, "events", Duration::from_millis(100));
        assert_eq!(server.device, "sys/tg_test/events");
        let events = run_db_client(
            &stack,
            &marker,
            &python(),
            "legacy_client.py",
            &[&server.device, "change_events=double_scalar:2"],
            &[],
        );
        assert_eq!(events["steps"]["change_events=double_scalar:2"], "ok", "{events}");

        // Idempotent: a second start of a running stack reports the same database.
        let again = run_checked(
            Command::new("bash").arg(stack_script()).arg("start").arg(stack.dir()),
            "second tango-stack.sh start",
        );
        let stdout = String::from_utf8_lossy(&again.stdout);
        assert_eq!(stdout.trim(), format!("TANGO_HOST={}", stack.tango_host()));
    }
}
