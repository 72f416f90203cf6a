//! The device-logs row: a PyTango device logging INFO messages, untraced and traced in
//! alternating rounds, and what the daemon did with them.
//!
//! One `log_server.py` device (level raised to DEBUG by the driver) logs N messages per run, in
//! one of two workloads: a **burst** (`LogBurst(N)`: a tight loop, as fast as PyTango logs) or
//! **paced** (`LogPaced([N, R])`: R messages per second). A traced run has a fresh daemon whose
//! log records go to an OTLP receiver; its `ctl stats` and stop line tell how many messages it
//! saw, delivered and lost. CPU per message is measured from the kernel's per-thread run time
//! (`/proc/<pid>/task/*/schedstat`, nanoseconds), for the device's process and the daemon.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, bail};

use crate::{
    procs::{self, Proc},
    roundtrip::{self, Config, Daemon, DaemonTotals, MARKER, Programs, Receiver},
};

/// The device of the log server.
pub const DEVICE: &str = "test/logbench/1";

/// How the device logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// `LogBurst(N)`: N messages in a tight loop.
    Burst,
    /// `LogPaced([N, R])`: N messages at R per second.
    Paced,
}

impl Workload {
    pub const ALL: [Workload; 2] = [Workload::Burst, Workload::Paced];

    pub fn short(self) -> &'static str {
        match self {
            Workload::Burst => "burst",
            Workload::Paced => "paced",
        }
    }
}

/// The configurations of this row, in the order of even rounds.
pub const CONFIGS: [Config; 2] = [Config::Untraced, Config::Traced];

/// Sizes of the log benchmark.
#[derive(Clone, Copy, Debug)]
pub struct LogSizes {
    pub rounds: usize,
    /// Messages of one burst.
    pub burst: usize,
    /// Messages of one paced run, and their rate per second.
    pub paced: usize,
    pub rate: usize,
    pub quiet_budget: Duration,
}

impl LogSizes {
    pub fn messages(&self, workload: Workload) -> usize {
        match workload {
            Workload::Burst => self.burst,
            Workload::Paced => self.paced,
        }
    }
}

/// One run.
#[derive(Clone, Debug)]
pub struct LogSample {
    pub workload: Workload,
    pub config: Config,
    pub round: usize,
    pub messages: usize,
    /// Messages per second of the device's logging loop.
    pub logged_per_s: f64,
    /// CPU per message of the device's process and of the daemon, in µs.
    pub server_cpu_us: Option<f64>,
    pub daemon_cpu_us: Option<f64>,
    /// The daemon's CPU per message without what it spends idle (its timers, measured for a
    /// second before the run and subtracted for the run's length), in µs.
    pub daemon_busy_us: Option<f64>,
    /// Messages the daemon's log stage saw (`logs.messages`), traced runs.
    pub seen: Option<u64>,
    /// What the run's daemon reported on exit (traced runs).
    pub daemon_totals: Option<DaemonTotals>,
}

/// Everything the log benchmark measured.
#[derive(Clone, Debug)]
pub struct Logs {
    pub sizes: LogSizes,
    pub samples: Vec<LogSample>,
    pub pytango: String,
    pub server_libtango: Option<String>,
}

impl Logs {
    pub fn of(&self, workload: Workload, config: Config) -> impl Iterator<Item = &LogSample> {
        self.samples.iter().filter(move |s| s.workload == workload && s.config == config)
    }
}

/// The driver's JSON line.
#[derive(serde::Deserialize)]
struct DriverOutput {
    pytango: String,
    server_seconds: f64,
}

/// Run time of all threads of `pid` so far, from the scheduler (nanosecond resolution).
fn run_time(pid: u32) -> Option<Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    for task in tasks.filter_map(Result::ok) {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        total += stat.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    }
    Some(Duration::from_nanos(total))
}

/// Runs the log benchmark; `dir` keeps logs.
pub fn run(programs: &Programs, sizes: LogSizes, dir: &Path) -> anyhow::Result<Logs> {
    anyhow::ensure!(sizes.rounds >= 1 && sizes.burst >= 1 && sizes.paced >= 1, "nothing to run");
    let marker = format!("logs-{}", std::process::id());
    let marked = [(MARKER, marker.clone())];
    let receiver = Receiver::start("log-receiver", programs, dir)?;
    let port = procs::free_port()?;
    let mut command = roundtrip::python_command(programs, &marked);
    command.arg(&programs.log_server).arg("logbench").arg(port.to_string()).arg(DEVICE);
    let mut server = Proc::spawn("log-server", command, dir)?;
    procs::wait_for_port(port, &mut server, Duration::from_secs(60))?;
    let url = format!("tango://127.0.0.1:{port}/{DEVICE}#dbase=no");
    let mut result = Logs {
        sizes,
        samples: Vec::new(),
        pytango: String::new(),
        server_libtango: procs::libtango_version(server.pid()),
    };
    let mut quiet_budget = sizes.quiet_budget;
    for round in 0..sizes.rounds {
        let mut order = CONFIGS;
        if round % 2 == 1 {
            order.reverse();
        }
        for config in order {
            for workload in Workload::ALL {
                let messages = sizes.messages(workload);
                // A fresh daemon for every traced run: its totals on exit are that run's.
                let daemon = if config == Config::Traced {
                    let name = format!("log-daemon-{round}-{}", workload.short());
                    Some(Daemon::start_logging(&name, programs, dir, &marker, &receiver, "info")?.0)
                } else {
                    None
                };
                let daemon_pid = daemon.as_ref().map(|d| d.proc.pid());
                let ours: Vec<u32> = [receiver.proc.pid(), server.pid(), std::process::id()]
                    .into_iter()
                    .chain(daemon_pid)
                    .collect();
                procs::wait_for_quiet(&ours, roundtrip::QUIET_THRESHOLD, &mut quiet_budget);
                let idle_per_s = daemon_pid.and_then(|pid| {
                    let start = (run_time(pid)?, std::time::Instant::now());
                    std::thread::sleep(Duration::from_secs(1));
                    Some(run_time(pid)?.checked_sub(start.0)?.as_secs_f64() / start.1.elapsed().as_secs_f64())
                });
                let started = std::time::Instant::now();
                let before = (run_time(server.pid()), daemon_pid.and_then(run_time));
                let mut command = roundtrip::python_command(programs, &marked);
                command.arg(&programs.log_driver).arg(&url).arg(messages.to_string());
                if workload == Workload::Paced {
                    command.arg("--rate").arg(sizes.rate.to_string());
                }
                let name = format!("log-driver-{round}-{}{}", workload.short(), config.short());
                let mut driver = Proc::spawn(&name, command, dir)?;
                let status = driver.wait(Duration::from_secs(600))?;
                if !status.success() {
                    bail!("{} failed ({status}):\n{}", driver.name(), driver.stderr_tail());
                }
                let per_message = |before: Option<Duration>, pid: Option<u32>| -> Option<f64> {
                    let used = run_time(pid?)?.checked_sub(before?)?;
                    Some(used.as_secs_f64() * 1e6 / messages as f64)
                };
                // The daemon drains the ring buffer every 20 ms and holds messages logged in a
                // request 250 ms: let it finish this run's before its CPU is read.
                let seen = match &daemon {
                    Some(daemon) => Some(wait_seen(daemon, programs, messages as u64)?),
                    None => None,
                };
                let server_cpu_us = per_message(before.0, Some(server.pid()));
                let daemon_cpu_us = per_message(before.1, daemon_pid);
                let idle_us =
                    idle_per_s.map(|idle| idle * started.elapsed().as_secs_f64() * 1e6 / messages as f64);
                let daemon_busy_us = daemon_cpu_us.zip(idle_us).map(|(cpu, idle)| (cpu - idle).max(0.0));
                let out: DriverOutput = {
                    let stdout = driver.stdout();
                    let line = stdout.lines().last().unwrap_or_default();
                    serde_json::from_str(line).with_context(|| {
                        format!("{} printed {stdout:?}, not its JSON result", driver.name())
                    })?
                };
                let daemon_totals = match daemon {
                    Some(daemon) => daemon.stop()?,
                    None => None,
                };
                let sample = LogSample {
                    workload,
                    config,
                    round,
                    messages,
                    logged_per_s: messages as f64 / out.server_seconds.max(1e-9),
                    server_cpu_us,
                    daemon_cpu_us,
                    daemon_busy_us,
                    seen,
                    daemon_totals,
                };
                eprintln!(
                    "tango-bench: logs round {}/{} {:<24} {} {:>6} messages: {:>8.0} logged/s, device {:.2} µs, daemon {} µs ({} busy) per message",
                    round + 1,
                    sizes.rounds,
                    config.label(),
                    workload.short(),
                    messages,
                    sample.logged_per_s,
                    sample.server_cpu_us.unwrap_or(f64::NAN),
                    sample.daemon_cpu_us.map_or("-".to_string(), |c| format!("{c:.2}")),
                    sample.daemon_busy_us.map_or("-".to_string(), |c| format!("{c:.2}")),
                );
                result.pytango = out.pytango;
                result.samples.push(sample);
            }
        }
    }
    server.stop(Duration::from_secs(10));
    receiver.finish();
    Ok(result)
}

/// Waits until the daemon's log stage has seen `expected` messages and released them (or 10 s
/// passed); returns how many it saw.
fn wait_seen(daemon: &Daemon, programs: &Programs, expected: u64) -> anyhow::Result<u64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = daemon.stats(programs)?;
        let seen = stats.counters.get("logs.messages").copied().unwrap_or(0);
        let waiting = stats.tables.get("logs.waiting_log_entries").copied().unwrap_or(0);
        if (seen >= expected && waiting == 0) || std::time::Instant::now() >= deadline {
            return Ok(seen);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
