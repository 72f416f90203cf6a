//! `tango-bench`: runs the benchmarks and writes BENCHMARKS.md at the workspace root.
//!
//! Normally started by `cargo xtask bench`, which installs the test stack and builds
//! `tango-tracer`, `otlp-receiver` and this binary in release mode first.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use benches::{
    churn::{self, ChurnSizes},
    crosshost::{self, CrossHostSizes},
    events::{self, EventSizes},
    legacy,
    logs::{self, LogSizes},
    memory::{self, MemorySizes},
    outage::{self, OutageSizes},
    procs, replay,
    report::{Assembly, Machine, Report},
    roundtrip::{self, Programs, Sizes},
    session_file,
    usercode::{self, UserCodeSizes},
    workspace_root,
};
use clap::Parser;

/// Benchmarks of tango-tracer; results go to BENCHMARKS.md.
#[derive(Parser, Debug)]
#[command(name = "tango-bench")]
struct Options {
    /// A shorter run (about 3 minutes): fewer rounds, calls, pushes and clients, a shorter outage.
    #[arg(long)]
    quick: bool,
    /// Rounds of the round-trip benchmark (each runs every configuration once).
    #[arg(long)]
    rounds: Option<usize>,
    /// Timed read_attribute calls per client run.
    #[arg(long)]
    calls: Option<usize>,
    /// Untimed calls before the timed ones.
    #[arg(long)]
    warmup: Option<usize>,
    /// Seconds, all runs together, the benchmark may wait for other processes to go quiet
    /// before a run (a shared machine).
    #[arg(long)]
    quiet_budget: Option<f64>,
    /// Rounds of the legacy-server benchmark (untraced and traced against TangoTest 9.3.4).
    #[arg(long)]
    legacy_rounds: Option<usize>,
    /// Timed read_attribute calls per client run against TangoTest.
    #[arg(long)]
    legacy_calls: Option<usize>,
    /// Rounds of the event benchmark (each runs both workloads untraced and traced).
    #[arg(long)]
    event_rounds: Option<usize>,
    /// Pushes of one burst (one PushBurst command).
    #[arg(long)]
    burst_pushes: Option<usize>,
    /// Pushes of one command loop (PushTemperature commands).
    #[arg(long)]
    command_pushes: Option<usize>,
    /// Leave out the headline round trips (and everything computed from them).
    #[arg(long)]
    skip_headline: bool,
    /// Leave out the legacy-server benchmark.
    #[arg(long)]
    skip_legacy: bool,
    /// Leave out the event benchmark.
    #[arg(long)]
    skip_events: bool,
    /// Rounds of the device-log benchmark (each runs both workloads untraced and traced).
    #[arg(long)]
    log_rounds: Option<usize>,
    /// Messages of one logging burst.
    #[arg(long)]
    log_burst: Option<usize>,
    /// Leave out the device-log benchmark.
    #[arg(long)]
    skip_logs: bool,
    /// Short-lived clients of the churn benchmark (after 100 for warming up).
    #[arg(long)]
    churn_clients: Option<usize>,
    /// Server restarts of the churn benchmark, side by side with the clients.
    #[arg(long)]
    churn_restarts: Option<usize>,
    /// Leave out the churn benchmark.
    #[arg(long)]
    skip_churn: bool,
    /// Device servers of the memory benchmark (each runs `--memory-devices` devices).
    #[arg(long)]
    memory_servers: Option<usize>,
    /// Devices per server of the memory benchmark.
    #[arg(long)]
    memory_devices: Option<usize>,
    /// Leave out the memory benchmark (many traced devices under one daemon).
    #[arg(long)]
    skip_memory: bool,
    /// Seconds the backend is down in the outage benchmark.
    #[arg(long)]
    outage_seconds: Option<f64>,
    /// Read calls per second during the outage benchmark.
    #[arg(long)]
    outage_rate: Option<u32>,
    /// The daemon's `--export-memory` in the outage benchmark, MiB.
    #[arg(long)]
    outage_budget_mib: Option<u64>,
    /// Leave out the outage benchmark.
    #[arg(long)]
    skip_outage: bool,
    /// Rounds of the user-code benchmark (each runs both workloads untraced and traced).
    #[arg(long)]
    user_code_rounds: Option<usize>,
    /// Timed read_attributes calls per run of the user-code benchmark.
    #[arg(long)]
    user_code_calls: Option<usize>,
    /// Leave out the user-code benchmark.
    #[arg(long)]
    skip_user_code: bool,
    /// Read calls per second A → B in the cross-host benchmark.
    #[arg(long)]
    crosshost_rate: Option<u32>,
    /// Seconds of each cross-host workload.
    #[arg(long)]
    crosshost_seconds: Option<f64>,
    /// Leave out the cross-host benchmark.
    #[arg(long)]
    skip_crosshost: bool,
    /// Seconds each replay of the recorded session runs (at least 2).
    #[arg(long)]
    replay_seconds: Option<f64>,
    /// Only the assembly throughput (no root, no Tango processes); BENCHMARKS.md is not written.
    #[arg(long)]
    replay_only: bool,
    /// Record a new session into the session file instead of benchmarking (root).
    #[arg(long)]
    record_session: bool,
    /// Operations of the client when recording a session.
    #[arg(long, default_value_t = 150)]
    session_operations: usize,
    /// The recorded session to replay.
    #[arg(long)]
    session: Option<PathBuf>,
    /// Where to write the report (default: BENCHMARKS.md at the workspace root).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Keep the logs of every process started (the temporary directory is printed).
    #[arg(long)]
    keep_logs: bool,
}

/// Export memory of the daemon in the outage benchmark (a quarter of it in a quick run): about
/// half of what the full run's minute at 1,000 calls/s submits, so the budget overflows and its
/// policy shows.
const OUTAGE_BUDGET_MIB: u64 = 32;

/// Debian's TangoTest 9.3.4 (package `tango-test`).
const TANGOTEST: &str = "/usr/lib/tango/TangoTest";

/// Paths next to this binary (cargo builds them into the same directory) and in the workspace.
fn programs() -> anyhow::Result<Programs> {
    let exe = std::env::current_exe().context("locating tango-bench")?;
    let bin_dir = exe.parent().context("tango-bench has no directory")?;
    let root = workspace_root();
    let python = std::env::var_os("TANGO_TRACER_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/venv"))
        .join("bin/python");
    let python_script = |name: &str| root.join("tests/python").join(name);
    let programs = Programs {
        python,
        demo_server: python_script("demo_server.py"),
        client: python_script("bench_read_loop.py"),
        tracer: bin_dir.join("tango-tracer"),
        receiver: bin_dir.join("otlp-receiver"),
        stack_script: root.join("scripts/tango-stack.sh"),
        db_register: python_script("db_register.py"),
        tangotest: PathBuf::from(TANGOTEST),
        attribute_client: python_script("bench_attribute_loop.py"),
        event_sink: python_script("bench_event_sink.py"),
        event_driver: python_script("bench_event_push.py"),
        churn: python_script("churn.py"),
        paced_client: root.join("benches/python/paced_read_loop.py"),
        log_server: python_script("log_server.py"),
        log_driver: python_script("bench_log_loop.py"),
        user_code_server: python_script("user_code_server.py"),
        user_code_client: root.join("benches/python/user_code_loop.py"),
        many_servers: root.join("benches/python/many_servers.py"),
    };
    let needed = [
        (&programs.python, "scripts/bootstrap.sh --test-stack"),
        (&programs.demo_server, "the workspace"),
        (&programs.client, "the workspace"),
        (&programs.tracer, "cargo build --release -p tango-tracer"),
        (&programs.receiver, "cargo build --release -p integration-tests --bin otlp-receiver"),
        (&programs.stack_script, "the workspace"),
        (&programs.db_register, "the workspace"),
        (&programs.tangotest, "scripts/bootstrap.sh --test-stack (Debian's tango-test)"),
        (&programs.attribute_client, "the workspace"),
        (&programs.event_sink, "the workspace"),
        (&programs.event_driver, "the workspace"),
        (&programs.churn, "the workspace"),
        (&programs.paced_client, "the workspace"),
        (&programs.log_server, "the workspace"),
        (&programs.log_driver, "the workspace"),
        (&programs.user_code_server, "the workspace"),
        (&programs.user_code_client, "the workspace"),
        (&programs.many_servers, "the workspace"),
    ];
    for (path, from) in needed {
        if !path.exists() {
            bail!(
                "{} is missing (it comes from `{from}`; `cargo xtask bench` does all of it)",
                path.display()
            );
        }
    }
    Ok(programs)
}

/// Runs the daemon and the receiver from copies: a build in the shared target directory
/// during the benchmark cannot swap them between rounds.
fn private_copies(mut programs: Programs, dir: &Path) -> anyhow::Result<Programs> {
    for path in [&mut programs.tracer, &mut programs.receiver] {
        let name = path.file_name().context("a program without a name")?;
        let copy = dir.join(name);
        std::fs::copy(&*path, &copy).with_context(|| format!("copying {}", path.display()))?;
        *path = copy;
    }
    Ok(programs)
}

/// A temporary directory for logs, removed unless asked to keep it or the run failed.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    fn create(name: &str) -> anyhow::Result<WorkDir> {
        let path = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(WorkDir { path, keep: true })
    }

    fn done(mut self, keep: bool) {
        self.keep = keep;
        if keep {
            eprintln!("tango-bench: logs kept in {}", self.path.display());
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn assembly(session: &Path, seconds: f64) -> anyhow::Result<Assembly> {
    let records = replay::load(session)?;
    let min_time = Duration::from_secs_f64(seconds.max(2.0));
    eprintln!(
        "tango-bench: replaying {} records through the pipeline for {:.0} s",
        records.len(),
        min_time.as_secs_f64()
    );
    let run = replay::replay(&records, min_time, false)?;
    eprintln!("tango-bench: … and through OTLP request building");
    let otlp = replay::replay(&records, min_time, true)?;
    Ok(Assembly {
        session_records: records.len(),
        session_operations: run.operations_per_pass,
        assembly: run,
        otlp: Some(otlp),
    })
}

/// The arguments as BENCHMARKS.md shows them: without file paths of this machine.
fn shown_arguments(args: impl Iterator<Item = String>) -> String {
    let mut shown = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        let name = arg.split('=').next().unwrap_or_default();
        if matches!(name, "--output" | "--session") {
            skip_value = !arg.contains('=');
            continue;
        }
        shown.push(arg);
    }
    shown.join(" ")
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let arguments = shown_arguments(std::env::args().skip(1));
    let sizes = Sizes {
        rounds: options.rounds.unwrap_or(if options.quick { 5 } else { 11 }),
        calls: options.calls.unwrap_or(if options.quick { 2000 } else { 5000 }),
        warmup: options.warmup.unwrap_or(if options.quick { 200 } else { 300 }),
        quiet_budget: Duration::from_secs_f64(options.quiet_budget.unwrap_or(if options.quick {
            10.0
        } else {
            60.0
        })),
    };
    let legacy_sizes = Sizes {
        rounds: options.legacy_rounds.unwrap_or(if options.quick { 3 } else { 9 }),
        calls: options.legacy_calls.unwrap_or(if options.quick { 3000 } else { 8000 }),
        warmup: sizes.warmup,
        quiet_budget: Duration::from_secs(if options.quick { 5 } else { 20 }),
    };
    let event_sizes = EventSizes {
        rounds: options.event_rounds.unwrap_or(if options.quick { 3 } else { 7 }),
        burst: options.burst_pushes.unwrap_or(if options.quick { 5000 } else { 10000 }),
        commands: options.command_pushes.unwrap_or(if options.quick { 1000 } else { 2000 }),
        quiet_budget: Duration::from_secs(if options.quick { 5 } else { 20 }),
    };
    let log_sizes = LogSizes {
        rounds: options.log_rounds.unwrap_or(if options.quick { 3 } else { 7 }),
        burst: options.log_burst.unwrap_or(if options.quick { 20_000 } else { 50_000 }),
        paced: if options.quick { 20_000 } else { 50_000 },
        rate: 10_000,
        quiet_budget: Duration::from_secs(if options.quick { 5 } else { 20 }),
    };
    let churn_sizes = ChurnSizes {
        warmup_clients: 100,
        clients: options.churn_clients.unwrap_or(if options.quick { 300 } else { 1000 }),
        parallel: 8,
        restarts: options.churn_restarts.unwrap_or(if options.quick { 20 } else { 50 }),
    };
    let memory_sizes = MemorySizes {
        servers: options.memory_servers.unwrap_or(if options.quick { 20 } else { 100 }),
        devices_per_server: options.memory_devices.unwrap_or(10),
    };
    let outage_sizes = OutageSizes {
        rate: options.outage_rate.unwrap_or(1000),
        steady: Duration::from_secs(if options.quick { 2 } else { 10 }),
        outage: Duration::from_secs_f64(options.outage_seconds.unwrap_or(if options.quick {
            10.0
        } else {
            60.0
        })),
        drain_timeout: Duration::from_secs(if options.quick { 30 } else { 120 }),
        after: Duration::from_secs(if options.quick { 2 } else { 5 }),
        final_outage: Duration::from_secs(if options.quick { 2 } else { 3 }),
        budget_mib: options.outage_budget_mib.unwrap_or(if options.quick {
            OUTAGE_BUDGET_MIB / 4
        } else {
            OUTAGE_BUDGET_MIB
        }),
    };
    let user_code_sizes = UserCodeSizes {
        rounds: options.user_code_rounds.unwrap_or(if options.quick { 3 } else { 7 }),
        calls: options.user_code_calls.unwrap_or(if options.quick { 2000 } else { 5000 }),
        warmup: sizes.warmup,
    };
    let crosshost_seconds =
        Duration::from_secs_f64(options.crosshost_seconds.unwrap_or(if options.quick { 10.0 } else { 30.0 }));
    let crosshost_sizes = CrossHostSizes {
        rate: options.crosshost_rate.unwrap_or(1000),
        seconds: crosshost_seconds,
        // Each ReadPeer builds a DeviceProxy to C: a few ms of the server's time.
        nested_rate: 100,
        nested_seconds: crosshost_seconds,
    };
    let replay_seconds = options.replay_seconds.unwrap_or(if options.quick { 2.0 } else { 3.0 });
    let session = options.session.clone().unwrap_or_else(session_file);

    if options.record_session {
        let programs = programs()?;
        let dir = WorkDir::create("tango-bench-record")?;
        let count = replay::record_session(&programs, &dir.path, options.session_operations, &session)
            .with_context(|| format!("recording (logs in {})", dir.path.display()))?;
        let bytes = std::fs::metadata(&session).map_or(0, |m| m.len());
        println!("recorded {count} records ({} KiB) into {}", bytes / 1024, session.display());
        dir.done(options.keep_logs);
        return Ok(());
    }

    let machine = Machine::read();
    let started = Instant::now();
    let (mut round_trips, mut legacy, mut events, mut device_logs) = (None, None, None, None);
    let (mut churn, mut outage, mut user_code, mut cross_host) = (None, None, None, None);
    let mut daemon_memory = None;
    if !options.replay_only {
        procs::require_root("the round-trip benchmark")?;
        let dir = WorkDir::create("tango-bench")?;
        let programs = private_copies(programs()?, &dir.path)?;
        let logs = || format!("logs in {}", dir.path.display());
        if !options.skip_headline {
            eprintln!(
                "tango-bench: {} rounds × 4 configurations × {} calls (+{} warm-up)",
                sizes.rounds, sizes.calls, sizes.warmup
            );
            let result = roundtrip::run(&programs, sizes, &dir.path)
                .with_context(|| format!("round trips ({})", logs()))?;
            round_trips = Some(result);
        }
        if !options.skip_legacy {
            eprintln!(
                "tango-bench: legacy server: {} rounds × 2 configurations × {} calls (+{} warm-up)",
                legacy_sizes.rounds, legacy_sizes.calls, legacy_sizes.warmup
            );
            let result = legacy::run(&programs, legacy_sizes, &dir.path)
                .with_context(|| format!("legacy server ({})", logs()))?;
            legacy = Some(result);
        }
        if !options.skip_events {
            eprintln!(
                "tango-bench: events: {} rounds × 2 configurations × ({} pushes in a burst, {} commands)",
                event_sizes.rounds, event_sizes.burst, event_sizes.commands
            );
            let result = events::run(&programs, event_sizes, &dir.path)
                .with_context(|| format!("events ({})", logs()))?;
            events = Some(result);
        }
        if !options.skip_logs {
            eprintln!(
                "tango-bench: device logs: {} rounds × 2 configurations × ({} messages in a burst, {} at {}/s)",
                log_sizes.rounds, log_sizes.burst, log_sizes.paced, log_sizes.rate
            );
            let result = logs::run(&programs, log_sizes, &dir.path)
                .with_context(|| format!("device logs ({})", logs()))?;
            device_logs = Some(result);
        }
        if !options.skip_churn {
            let result = churn::run(&programs, churn_sizes, &dir.path)
                .with_context(|| format!("churn ({})", logs()))?;
            churn = Some(result);
        }
        if !options.skip_memory {
            let result = memory::run(&programs, memory_sizes, &dir.path)
                .with_context(|| format!("memory ({})", logs()))?;
            daemon_memory = Some(result);
        }
        if !options.skip_outage {
            let result = outage::run(&programs, outage_sizes, &dir.path)
                .with_context(|| format!("backend outage ({})", logs()))?;
            outage = Some(result);
        }
        if !options.skip_user_code {
            eprintln!(
                "tango-bench: user code: {} rounds × 2 configurations × {:?} attributes × {} calls (+{} warm-up)",
                user_code_sizes.rounds,
                usercode::WORKLOADS,
                user_code_sizes.calls,
                user_code_sizes.warmup
            );
            let result = usercode::run(&programs, user_code_sizes, &dir.path)
                .with_context(|| format!("user code ({})", logs()))?;
            user_code = Some(result);
        }
        if !options.skip_crosshost {
            let result = crosshost::run(&programs, crosshost_sizes, &dir.path)
                .with_context(|| format!("cross-host ({})", logs()))?;
            cross_host = Some(result);
        }
        dir.done(options.keep_logs);
    }
    let assembly = assembly(&session, replay_seconds)?;
    let report = Report {
        machine: &machine,
        arguments: &arguments,
        round_trips: round_trips.as_ref(),
        legacy: legacy.as_ref(),
        events: events.as_ref(),
        logs: device_logs.as_ref(),
        churn: churn.as_ref(),
        memory: daemon_memory.as_ref(),
        outage: outage.as_ref(),
        user_code: user_code.as_ref(),
        cross_host: cross_host.as_ref(),
        assembly: Some(&assembly),
    };
    let text = report.render();
    print!("{text}");
    if !options.replay_only {
        let output = options.output.unwrap_or_else(|| workspace_root().join("BENCHMARKS.md"));
        std::fs::write(&output, &text).with_context(|| format!("writing {}", output.display()))?;
        eprintln!("tango-bench: wrote {} after {:.0} s", output.display(), started.elapsed().as_secs_f64());
    }
    Ok(())
}
