//! The legacy-server row: `read_attribute("double_scalar")` round trips of the PyTango 10 client
//! against Debian's TangoTest 9.3.4 (cppTango 9.3.4), registered in a private Tango database
//! (MariaDB + DataBaseds 9.3.4 of `scripts/tango-stack.sh`), untraced and traced in alternating
//! rounds. A same-host client of a database-registered device talks to it over omniORB's Unix
//! socket. cppTango 9.3.4 has no telemetry of its own, so there is no native configuration.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    procs::{self, Proc},
    roundtrip::{
        self, ClientJob, Config, Daemon, MARKER, Pids, Programs, Receiver, RequestStats, Sample, Sizes,
    },
};

/// The TangoTest instance the benchmark registers, and its device.
pub const INSTANCE: &str = "bench";
pub const DEVICE: &str = "sys/tg_test/bench";
/// The attribute every call reads.
pub const ATTRIBUTE: &str = "double_scalar";
/// Seconds a server gets to export its device and answer a ping.
const SERVER_START_TIMEOUT_S: u32 = 30;

/// The configurations of this row, in the order of even rounds.
pub const CONFIGS: [Config; 2] = [Config::Untraced, Config::Traced];

/// Everything the legacy-server benchmark measured.
#[derive(Clone, Debug)]
pub struct Legacy {
    pub sizes: Sizes,
    pub samples: Vec<Sample>,
    /// PyTango of the client.
    pub pytango: String,
    /// cppTango of the server, from the library it mapped.
    pub server_libtango: Option<String>,
    /// What the daemon's receiver got, over all traced runs.
    pub traced_requests: RequestStats,
    /// Read calls (warm-up included) of the traced runs.
    pub traced_calls: usize,
    /// Probe records the daemons reported lost to a full ring buffer, all traced runs together.
    /// (None when no daemon reported them.)
    pub daemon_lost_records: Option<u64>,
    pub quiet_waited: Duration,
    /// Time to start MariaDB and DataBaseds.
    pub stack_start: Duration,
}

impl Legacy {
    pub fn of(&self, config: Config) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(move |s| s.config == config)
    }
}

/// Runs `command` to completion; fails with its output unless it succeeds.
fn run_checked(command: &mut Command, what: &str) -> anyhow::Result<String> {
    let output = command.stdin(Stdio::null()).output().with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A private MariaDB + DataBaseds 9.3.4 (`scripts/tango-stack.sh`), stopped when dropped.
struct DbStack {
    script: PathBuf,
    dir: PathBuf,
    tango_host: String,
    /// mariadbd and DataBaseds: processes of the benchmark, though not its children.
    pids: Vec<u32>,
}

impl DbStack {
    fn start(programs: &Programs, dir: PathBuf) -> anyhow::Result<DbStack> {
        let mut stack =
            DbStack { script: programs.stack_script.clone(), dir, tango_host: String::new(), pids: vec![] };
        // From here on, Drop stops whatever the script got to start.
        let mut command = Command::new("bash");
        command.arg(&stack.script).arg("start").arg(&stack.dir);
        if let Some(venv) = programs.python.parent().and_then(Path::parent) {
            command.env("TANGO_TRACER_VENV", venv);
        }
        run_checked(&mut command, "tango-stack.sh start")?;
        let env_file = stack.dir.join("env");
        let env = std::fs::read_to_string(&env_file).context("reading the stack's env file")?;
        let value = |name: &str| {
            env.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
        };
        stack.tango_host = value("TANGO_HOST").context("no TANGO_HOST in the stack's env file")?.to_string();
        stack.pids = ["MYSQLD_PID", "DATABASEDS_PID"].iter().filter_map(|n| value(n)?.parse().ok()).collect();
        Ok(stack)
    }
}

impl Drop for DbStack {
    fn drop(&mut self) {
        let stopped = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if stopped {
            // The datadir is throw-away; the logs stay with the benchmark's other logs.
            let _ = std::fs::remove_dir_all(self.dir.join("mysql"));
        } else {
            eprintln!("tango-bench: could not stop the Tango database stack in {}", self.dir.display());
        }
    }
}

/// Runs the legacy-server benchmark; `dir` keeps logs.
pub fn run(programs: &Programs, sizes: Sizes, dir: &Path) -> anyhow::Result<Legacy> {
    anyhow::ensure!(sizes.rounds >= 1 && sizes.calls >= 1, "nothing to run");
    let marker = format!("legacy-{}", std::process::id());
    let started = Instant::now();
    let stack = DbStack::start(programs, dir.join("db"))?;
    let stack_start = started.elapsed();
    let env = [("TANGO_HOST", stack.tango_host.clone()), (MARKER, marker.clone())];
    let receiver = Receiver::start("legacy-receiver", programs, dir)?;

    let mut register = roundtrip::python_command(programs, &env);
    register.arg(&programs.db_register).args(["tangotest", INSTANCE, DEVICE]);
    run_checked(&mut register, "db_register.py tangotest")?;
    let mut command = roundtrip::clean_command(&programs.tangotest, &env);
    command.arg(INSTANCE).args(["-ORBendPoint", "giop:tcp:127.0.0.1:"]);
    let server = Proc::spawn("tangotest", command, dir)?;
    let mut wait = roundtrip::python_command(programs, &env);
    wait.arg(&programs.db_register)
        .arg("wait")
        .arg(server.pid().to_string())
        .arg(SERVER_START_TIMEOUT_S.to_string())
        .arg(DEVICE);
    run_checked(&mut wait, "db_register.py wait (TangoTest)")?;
    let server_libtango = procs::libtango_version(server.pid());

    let mut result = Legacy {
        sizes,
        samples: Vec::new(),
        pytango: String::new(),
        server_libtango,
        traced_requests: RequestStats::default(),
        traced_calls: 0,
        daemon_lost_records: None,
        quiet_waited: Duration::ZERO,
        stack_start,
    };
    let mut quiet_budget = sizes.quiet_budget;
    for round in 0..sizes.rounds {
        let mut order = CONFIGS;
        if round % 2 == 1 {
            order.reverse();
        }
        for config in order {
            let daemon = if config == Config::Traced {
                let name = format!("legacy-daemon-{round}");
                Some(Daemon::start_logging(&name, programs, dir, &marker, &receiver, "info")?.0)
            } else {
                None
            };
            let daemon_pid = daemon.as_ref().map(|d| d.proc.pid());
            let ours: Vec<u32> = [receiver.proc.pid(), server.pid(), std::process::id()]
                .into_iter()
                .chain(stack.pids.iter().copied())
                .chain(daemon_pid)
                .collect();
            let budget_before = quiet_budget;
            procs::wait_for_quiet(&ours, roundtrip::QUIET_THRESHOLD, &mut quiet_budget);
            result.quiet_waited += budget_before - quiet_budget;

            let mut command = roundtrip::python_command(programs, &env);
            command
                .arg(&programs.attribute_client)
                .arg(DEVICE)
                .arg(ATTRIBUTE)
                .arg(sizes.calls.to_string())
                .arg("--warmup")
                .arg(sizes.warmup.to_string());
            let job = ClientJob {
                name: format!("legacy-client-{round}-{}", config.short()),
                command,
                server_pid: server.pid(),
                calls: sizes.calls,
                warmup: sizes.warmup,
            };
            let receiver_pid = daemon.is_some().then(|| receiver.proc.pid());
            let pids = Pids { daemon: daemon_pid, receiver: receiver_pid, ours: &ours };
            let (sample, pytango) = roundtrip::run_client(dir, job, (round, config), &pids)?;
            eprintln!(
                "tango-bench: legacy round {}/{} {:<24} {:>8.0} calls/s  p50 {:>6.1} us  p99 {:>7.1} us  other load {:.2}",
                round + 1,
                sizes.rounds,
                config.label(),
                sample.calls_per_s,
                sample.p50_us,
                sample.p99_us,
                sample.foreign_cores.unwrap_or(f64::NAN),
            );
            result.pytango = pytango;
            result.samples.push(sample);
            if let Some(daemon) = daemon {
                result.traced_calls += sizes.calls + sizes.warmup;
                if let Some(totals) = daemon.stop()? {
                    *result.daemon_lost_records.get_or_insert(0) += totals.lost_records;
                }
            }
        }
    }
    // The server unexports itself from the database on SIGTERM: stop it before the stack.
    drop(server);
    drop(stack);
    result.traced_requests = receiver.finish();
    Ok(result)
}
