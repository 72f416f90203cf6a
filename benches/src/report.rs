//! BENCHMARKS.md: the machine, the tables, and how they were made.

mod churn;
mod crosshost;
mod logs;
mod memory;
mod outage;
mod usercode;

use std::{fmt::Write as _, time::Duration};

use tango_tracer::run::losses::Loss;

use crate::{
    churn::Churn,
    events::{self, EventSample, Events, RunSpans, Workload},
    legacy::{self, Legacy},
    outage::Outage,
    replay::ReplayRun,
    roundtrip::{self, Config, RequestStats, RoundTrips, Sample},
};

/// Target of traced / untraced round trips.
pub const ROUND_TRIP_TARGET: f64 = 0.97;
/// Targets of the daemon's CPU and of the eBPF programs' time per traced call, µs.
pub const DAEMON_TARGET_US: f64 = 4.0;
pub const EBPF_TARGET_US: f64 = 1.2;
/// Target of the daemon's assembly throughput, Tango operations per second.
pub const ASSEMBLY_TARGET: f64 = 200_000.0;

/// The machine, without anything that changes from run to run.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub virtualised: bool,
    pub kernel: String,
    pub os: String,
    pub memory_gib: f64,
}

impl Machine {
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, model)| model.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let processors = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(processors);
        let virtualised = cpuinfo
            .lines()
            .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor"));
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let os = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                    .map(|v| v.trim_matches('"').to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|kib| kib.parse::<f64>().ok())
            })
            .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
        Machine { cpu_model, cores, virtualised, kernel, os, memory_gib }
    }
}

/// The assembly benchmark's results.
#[derive(Clone, Debug)]
pub struct Assembly {
    /// Records in the session file and the operations one pass holds.
    pub session_records: usize,
    pub session_operations: u64,
    pub assembly: ReplayRun,
    pub otlp: Option<ReplayRun>,
}

/// Everything one run produced.
pub struct Report<'a> {
    pub machine: &'a Machine,
    /// The arguments `tango-bench` ran with.
    pub arguments: &'a str,
    pub round_trips: Option<&'a RoundTrips>,
    /// Untraced and traced against TangoTest 9.3.4.
    pub legacy: Option<&'a Legacy>,
    /// Change events untraced and traced.
    pub events: Option<&'a Events>,
    /// Device log messages untraced and traced.
    pub logs: Option<&'a crate::logs::Logs>,
    /// Short-lived clients and server restarts under one daemon.
    pub churn: Option<&'a Churn>,
    /// Many traced devices under one daemon.
    pub memory: Option<&'a crate::memory::Memory>,
    /// The backend down under steady load.
    pub outage: Option<&'a Outage>,
    /// What the user-level spans cost per attribute read.
    pub user_code: Option<&'a crate::usercode::UserCodeCost>,
    /// Cross-host linking under steady load.
    pub cross_host: Option<&'a crate::crosshost::CrossHost>,
    pub assembly: Option<&'a Assembly>,
}

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match (sorted.get(n / 2), n.checked_sub(1).and_then(|_| sorted.get(n / 2 - 1))) {
        (None, _) => f64::NAN,
        (Some(middle), _) if n % 2 == 1 => *middle,
        (Some(upper), Some(lower)) => (lower + upper) / 2.0,
        (Some(middle), None) => *middle,
    }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// Thousands separated by a thin comma: 212345 → "212,345".
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// KiB as "65.7 MiB".
fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Non-zero losses as "stage cause: n, …", or "none".
fn lost_cell(lost: &[Loss]) -> String {
    let text: Vec<String> = lost
        .iter()
        .filter(|l| l.total > 0)
        .map(|l| format!("{} {}: {}", l.stage, l.cause, thousands(l.total as f64)))
        .collect();
    if text.is_empty() { "none".to_string() } else { without_ports(&text.join(", ")) }
}

/// `127.0.0.1:40123` as `127.0.0.1:<port>`: ephemeral ports change every run.
fn without_ports(text: &str) -> String {
    const HOST: &str = "127.0.0.1:";
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(HOST) {
        let (before, after) = rest.split_at(at + HOST.len());
        out.push_str(before);
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            out.push_str("<port>");
        }
        rest = after.get(digits..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

fn opt(value: Option<f64>, decimals: usize) -> String {
    value.filter(|v| v.is_finite()).map_or_else(|| "–".to_string(), |v| format!("{v:.decimals$}"))
}

/// Per-round ratios of `config` to the untraced run of the same round.
fn paired_ratios(rt: &RoundTrips, config: Config) -> Vec<f64> {
    (0..rt.sizes.rounds)
        .filter_map(|round| {
            let find = |c: Config| {
                rt.samples.iter().find(|s| s.round == round && s.config == c).map(|s| s.calls_per_s)
            };
            Some(find(config)? / find(Config::Untraced)?)
        })
        .collect()
}

fn medians(samples: &[&Sample], value: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    let values: Vec<f64> = samples.iter().filter_map(|s| value(s)).collect();
    (!values.is_empty()).then(|| median(&values))
}

impl Report<'_> {
    pub fn render(&self) -> String {
        let mut md = String::new();
        let _ = self.write(&mut md);
        md
    }

    fn write(&self, md: &mut String) -> std::fmt::Result {
        writeln!(md, "# Benchmarks")?;
        writeln!(md)?;
        writeln!(
            md,
            "Written by `cargo xtask bench` (the `tango-bench` binary of the `benches` crate) from \
             one run on the machine below; every number in this file comes from that run. \
             `cargo xtask bench -- --quick` is a shorter run of the same."
        )?;
        if self.arguments.split_whitespace().any(|a| a == "--quick") {
            writeln!(md)?;
            writeln!(
                md,
                "**This file comes from a quick run** (`--quick`: fewer rounds, calls and \
                 clients; see Commands), so its spreads are wider than a full run's."
            )?;
        }
        writeln!(md)?;
        self.write_machine(md)?;
        if let Some(rt) = self.round_trips {
            write_round_trips(md, rt)?;
        }
        if let Some(legacy) = self.legacy {
            write_legacy(md, legacy)?;
        }
        if let Some(events) = self.events {
            write_events(md, events)?;
        }
        if let Some(l) = self.logs {
            logs::write(md, l)?;
        }
        if let Some(assembly) = self.assembly {
            write_assembly(md, assembly)?;
        }
        if let Some(rt) = self.round_trips {
            write_costs(md, rt, self.assembly)?;
        }
        if let Some(rt) = self.round_trips {
            write_requests(md, rt)?;
            write_memory(md, rt)?;
        }
        if let Some(m) = self.memory {
            memory::write(md, m)?;
        }
        if let Some(c) = self.churn {
            churn::write(md, c)?;
        }
        if let Some(o) = self.outage {
            outage::write(md, o)?;
        }
        if let Some(u) = self.user_code {
            usercode::write(md, u)?;
        }
        if let Some(c) = self.cross_host {
            crosshost::write(md, c)?;
        }
        self.write_commands(md)
    }

    fn write_machine(&self, md: &mut String) -> std::fmt::Result {
        let m = self.machine;
        writeln!(md, "## Machine")?;
        writeln!(md)?;
        writeln!(
            md,
            "- CPU: {}, {} logical cores{}",
            m.cpu_model,
            m.cores,
            if m.virtualised { " (virtual machine)" } else { "" }
        )?;
        writeln!(md, "- Memory: {:.1} GiB", m.memory_gib)?;
        writeln!(md, "- Kernel: Linux {}; OS: {}", m.kernel, m.os)?;
        let pytango = self
            .round_trips
            .map(|rt| rt.pytango.as_str())
            .or(self.events.map(|e| e.pytango.as_str()))
            .or(self.legacy.map(|l| l.pytango.as_str()));
        if let Some(pytango) = pytango {
            let libtango = self
                .events
                .and_then(|e| e.server_libtango.as_deref())
                .map(|v| format!(" {v}"))
                .unwrap_or_default();
            writeln!(
                md,
                "- Tango: PyTango {pytango} from PyPI (its wheel bundles cppTango{libtango}, omniORB \
                 and libzmq), Python clients and device servers on 127.0.0.1",
            )?;
        }
        if let Some(legacy) = self.legacy {
            writeln!(
                md,
                "- Legacy server: Debian's TangoTest and DataBaseds (cppTango {}) with MariaDB, \
                 from the distribution's packages",
                legacy.server_libtango.as_deref().unwrap_or("9.3.4")
            )?;
        }
        writeln!(
            md,
            "- Everything (clients, servers, database, daemon, OTLP receiver) shares the same cores."
        )?;
        writeln!(md)
    }

    fn write_commands(&self, md: &mut String) -> std::fmt::Result {
        writeln!(md, "## Commands")?;
        writeln!(md)?;
        if self.arguments.is_empty() {
            writeln!(md, "This run: `tango-bench` with its defaults.")?;
        } else {
            writeln!(md, "This run: `tango-bench {}`.", self.arguments)?;
        }
        writeln!(md)?;
        writeln!(md, "```sh")?;
        writeln!(
            md,
            "cargo xtask bench                # bootstrap, release build, full run, writes BENCHMARKS.md"
        )?;
        writeln!(md, "cargo xtask bench -- --quick     # about 3 minutes")?;
        writeln!(md, "cargo xtask bench -- --replay-only   # assembly throughput only (no root needed)")?;
        writeln!(
            md,
            "cargo run --release -p benches --bin tango-bench -- --record-session   # re-record benches/data/session.jsonl (root)"
        )?;
        writeln!(md, "```")?;
        writeln!(md)?;
        writeln!(
            md,
            "What the round-trip benchmark starts (`<...>` are ephemeral ports, the run's \
             temporary directory and its marker):"
        )?;
        writeln!(md)?;
        writeln!(md, "```sh")?;
        writeln!(
            md,
            "otlp-receiver --http 127.0.0.1:0 --grpc 127.0.0.1:0 --quiet   # one for the daemon, one for native telemetry"
        )?;
        writeln!(
            md,
            "python tests/python/demo_server.py <instance> <port> {}       # three servers: marked, plain, native",
            roundtrip::DEVICE
        )?;
        if let Some(rt) = self.round_trips {
            writeln!(
                md,
                "python tests/python/bench_read_loop.py 'tango://127.0.0.1:<port>/{}#dbase=no' {} --warmup {}",
                roundtrip::DEVICE,
                rt.sizes.calls,
                rt.sizes.warmup
            )?;
        }
        writeln!(md, "{}", roundtrip::daemon_command_text())?;
        writeln!(md, "```")?;
        writeln!(md)?;
        writeln!(md, "What each daemon setup of the round trips adds to that command:")?;
        writeln!(md)?;
        for (config, setup) in [
            (Config::Traced, roundtrip::DaemonSetup::Spans),
            (Config::TracedMetrics, roundtrip::DaemonSetup::Metrics),
            (Config::TracedSampled, roundtrip::DaemonSetup::Sampling),
        ] {
            let also = if config == Config::Traced { " (and not selected)" } else { "" };
            writeln!(md, "- {}{also}: {}", config.label(), roundtrip::setup_text(setup))?;
        }
        writeln!(md)?;
        writeln!(
            md,
            "Marked processes (server and client of the untraced and traced runs) have \
             `{}=<marker>` in their environment. Native telemetry, on the native server and its \
             client only:",
            roundtrip::MARKER
        )?;
        writeln!(md)?;
        writeln!(md, "```sh")?;
        writeln!(md, "TANGO_TELEMETRY_ENABLE=on")?;
        writeln!(md, "TANGO_TELEMETRY_TRACING_EXPORTERS=http")?;
        writeln!(md, "TANGO_TELEMETRY_TRACING_ENDPOINTS=http://127.0.0.1:<port>/v1/traces")?;
        writeln!(md, "TANGO_TELEMETRY_LOGGING_EXPORTERS=console")?;
        writeln!(md, "TANGO_TELEMETRY_LOGGING_ENDPOINTS=cerr")?;
        writeln!(md, "```")?;
        if let Some(legacy) = self.legacy {
            writeln!(md)?;
            writeln!(
                md,
                "The legacy-server benchmark (`TANGO_HOST` of the private database and the marker \
                 in the environment of the server and every client):"
            )?;
            writeln!(md)?;
            writeln!(md, "```sh")?;
            writeln!(
                md,
                "scripts/tango-stack.sh start <dir>    # MariaDB + DataBaseds 9.3.4, prints TANGO_HOST=127.0.0.1:<port>; `stop <dir>` at the end"
            )?;
            writeln!(
                md,
                "python tests/python/db_register.py tangotest {} {}",
                legacy::INSTANCE,
                legacy::DEVICE
            )?;
            writeln!(
                md,
                "TangoTest {} -ORBendPoint giop:tcp:127.0.0.1:      # Debian's /usr/lib/tango/TangoTest",
                legacy::INSTANCE
            )?;
            writeln!(
                md,
                "python tests/python/bench_attribute_loop.py {} {} {} --warmup {}",
                legacy::DEVICE,
                legacy::ATTRIBUTE,
                legacy.sizes.calls,
                legacy.sizes.warmup
            )?;
            writeln!(md, "```")?;
        }
        if let Some(ev) = self.events {
            writeln!(md)?;
            writeln!(
                md,
                "The event benchmark (the marker in the environment of all three Python processes):"
            )?;
            writeln!(md)?;
            writeln!(md, "```sh")?;
            writeln!(
                md,
                "otlp-receiver --http 127.0.0.1:0 --grpc 127.0.0.1:0 --quiet --out <dir>/event-spans.jsonl"
            )?;
            writeln!(md, "python tests/python/demo_server.py <instance> <port> {}", roundtrip::DEVICE)?;
            let url = format!("'tango://127.0.0.1:<port>/{}#dbase=no'", roundtrip::DEVICE);
            writeln!(
                md,
                "python tests/python/bench_event_sink.py {url} {} <N> --idle {} --timeout <s>",
                events::ATTRIBUTE,
                events::IDLE_S
            )?;
            writeln!(
                md,
                "python tests/python/bench_event_push.py {url} {}              # burst",
                ev.sizes.burst
            )?;
            writeln!(
                md,
                "python tests/python/bench_event_push.py {url} {} --commands    # command loop",
                ev.sizes.commands
            )?;
            writeln!(md, "```")?;
        }
        if let Some(l) = self.logs {
            logs::write_commands(md, l)?;
        }
        if let Some(m) = self.memory {
            memory::write_commands(md, m)?;
        }
        if let Some(c) = self.churn {
            churn::write_commands(md, c)?;
        }
        if let Some(o) = self.outage {
            outage::write_commands(md, o)?;
        }
        if let Some(c) = self.cross_host {
            crosshost::write_commands(md, c)?;
        }
        Ok(())
    }
}

fn write_round_trips(md: &mut String, rt: &RoundTrips) -> std::fmt::Result {
    let untraced: Vec<f64> = rt.of(Config::Untraced).map(|s| s.calls_per_s).collect();
    let base = median(&untraced);
    writeln!(md, "## Round trips: `DeviceProxy.read_attribute` (headline)")?;
    writeln!(md)?;
    writeln!(
        md,
        "A Python loop of {} `read_attribute(\"temperature\")` calls (after {} untimed warm-up \
         calls) against a PyTango device server without database, in {} rounds. Rounds \
         alternate their order (untraced, native, traced + metrics, traced, not selected, \
         traced + tail sampling; then the reverse) so \
         drift of the machine hits every configuration alike. Calls/s are medians over the \
         rounds; the ratio is the ratio of the medians, and its spread is the range of the \
         per-round ratios (each run against the untraced run of its round).",
        rt.sizes.calls, rt.sizes.warmup, rt.sizes.rounds
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "| configuration | calls/s (median) | calls/s min–max | ratio to untraced | per-round ratio min–max | p50 µs | p99 µs |"
    )?;
    writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")?;
    for config in Config::ALL {
        let samples: Vec<&Sample> = rt.of(config).collect();
        if samples.is_empty() {
            continue;
        }
        let rates: Vec<f64> = samples.iter().map(|s| s.calls_per_s).collect();
        let (lo, hi) = min_max(&rates);
        let mid = median(&rates);
        let (ratio, spread) = if config == Config::Untraced {
            ("1".to_string(), "–".to_string())
        } else {
            let ratios = paired_ratios(rt, config);
            let (rlo, rhi) = min_max(&ratios);
            (format!("**{:.3}**", mid / base), format!("{rlo:.3}–{rhi:.3} (median {:.3})", median(&ratios)))
        };
        writeln!(
            md,
            "| {} | {} | {}–{} | {ratio} | {spread} | {} | {} |",
            config.label(),
            thousands(mid),
            thousands(lo),
            thousands(hi),
            opt(medians(&samples, |s| Some(s.p50_us)), 0),
            opt(medians(&samples, |s| Some(s.p99_us)), 0),
        )?;
    }
    writeln!(md)?;
    let traced = median(&rt.of(Config::Traced).map(|s| s.calls_per_s).collect::<Vec<_>>());
    let ratio = traced / base;
    writeln!(
        md,
        "Traced / untraced = **{ratio:.3}** (median of the per-round ratios {:.3}) against a \
         target of ≥ {ROUND_TRIP_TARGET}: {}.",
        median(&paired_ratios(rt, Config::Traced)),
        if ratio >= ROUND_TRIP_TARGET { "met" } else { "**not met**" }
    )?;
    writeln!(md)?;

    writeln!(
        md,
        "CPU per call (medians over the rounds). The client's is its own CPU time over the \
         timed calls; the server's and the daemon's are their CPU time over the whole client \
         run divided by all its calls, warm-up included; the daemon's wake-ups are the context \
         switches of its threads over the same run. The OTLP receiver (a stand-in for a \
         collector, which would usually run elsewhere) shares the machine too. The last column is the load of processes \
         outside the benchmark during the runs (machine busy time from `/proc/stat` minus the \
         benchmark's own processes): the machine is shared, and this is how much of it others \
         took:"
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "| configuration | client CPU µs/call | server CPU µs/call | daemon CPU µs/call | daemon wake-ups/call | OTLP receiver CPU µs/call | other processes (cores) |"
    )?;
    writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")?;
    for config in Config::ALL {
        let samples: Vec<&Sample> = rt.of(config).collect();
        if samples.is_empty() {
            continue;
        }
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            config.label(),
            opt(medians(&samples, |s| Some(s.client_cpu_us)), 1),
            opt(medians(&samples, |s| s.server_cpu_us), 1),
            opt(medians(&samples, |s| s.daemon_cpu_us), 1),
            opt(medians(&samples, |s| s.daemon_switches), 2),
            opt(medians(&samples, |s| s.receiver_cpu_us), 1),
            opt(medians(&samples, |s| s.foreign_cores), 2),
        )?;
    }
    writeln!(md)?;
    write_daemon_setups(md, rt)?;
    write_ebpf(md, rt)?;

    writeln!(md, "Every run, calls/s, in the order of its round:")?;
    writeln!(md)?;
    write!(md, "| round | order |")?;
    for config in Config::ALL {
        write!(md, " {} |", config.label())?;
    }
    writeln!(md, " other processes, highest (cores) |")?;
    write!(md, "| ---: | --- |")?;
    for _ in Config::ALL {
        write!(md, " ---: |")?;
    }
    writeln!(md, " ---: |")?;
    for round in 0..rt.sizes.rounds {
        let in_round: Vec<&Sample> = rt.samples.iter().filter(|s| s.round == round).collect();
        let order: Vec<&str> = in_round.iter().map(|s| s.config.short()).collect();
        write!(md, "| {} | {} |", round + 1, order.join(" "))?;
        for config in Config::ALL {
            match in_round.iter().find(|s| s.config == config) {
                Some(s) => {
                    let mark = if s.other_tracer { " †" } else { "" };
                    write!(md, " {}{mark} |", thousands(s.calls_per_s))?;
                }
                None => write!(md, " – |")?,
            }
        }
        let load = in_round.iter().filter_map(|s| s.foreign_cores).reduce(f64::max);
        writeln!(md, " {} |", opt(load, 2))?;
    }
    writeln!(md)?;
    writeln!(
        md,
        "U untraced, N native, T traced (spans only), TM traced + RED metrics, TS traced + tail \
         sampling, S daemon attached but process not selected."
    )?;
    if rt.samples.iter().any(|s| s.other_tracer) {
        writeln!(
            md,
            "† another tango-tracer (not the benchmark's) was running: its tracepoints were attached."
        )?;
    }
    writeln!(md)?;
    writeln!(
        md,
        "Before each run the benchmark waited until processes outside it kept fewer than {} \
         cores busy over half a second and no other tango-tracer ran, for at most {:.0} s over the whole benchmark; it waited \
         {:.1} s in all.",
        roundtrip::QUIET_THRESHOLD,
        rt.sizes.quiet_budget.as_secs_f64(),
        rt.quiet_waited.as_secs_f64()
    )?;
    writeln!(md)?;
    writeln!(md, "### How the configurations are set up, and why")?;
    writeln!(md)?;
    writeln!(
        md,
        "- **Untraced** runs have no daemon at all: the reference is a machine without \
         tango-tracer. They use the same server process as the traced runs, so untraced and \
         traced differ only by the daemon.\n\
         - **Traced** runs have the daemon running with `--select-env` matching the server and the \
         client, exporting OTLP/HTTP (protobuf, gzip, batches of up to 2,048 spans, every second) \
         to a real OTLP receiver on the same machine, with the RED metrics off \
         (`OTEL_METRICS_EXPORTER=none`): spans only.\n\
         - **Traced + RED metrics**: the same with the metrics on, as the OTLP environment turns \
         them on by default: aggregated for every call, pushed over OTLP/HTTP to \
         `/v1/metrics` of the daemon's receiver every 10 s and served as Prometheus text at \
         `--metrics-listen` (read once after each run, to check the count). A daemon of its own \
         per round, exporting to a receiver of its own.\n\
         - **Traced + tail sampling**: the spans-only daemon with `--tail-sampling` (see \
         Commands); a daemon and a receiver of their own per round.\n\
         - **Native** runs use a server started with cppTango's telemetry on (see Commands) and a \
         client with the same environment, exporting OTLP/HTTP to a second receiver; no daemon.\n\
         - **Daemon attached, process not selected**: the daemon runs, but the client and the \
         server (a third one, without the marker) are not selected. This is what every other \
         process on a traced host pays: the socket programs run inside every socket send and receive \
         on the machine (the syscall tracepoints, on kernels without `sock:*`) and the in-kernel \
         filter drops them, so nothing reaches the ring buffer.\n\
         - The spans-only daemon is started once per round and kept running for that round's traced and \
         not-selected runs, which come back to back (T S, or S T in reversed rounds), and is \
         stopped (SIGTERM: it flushes) before the other runs. Keeping one daemon \
         for the whole benchmark and taking not-selected processes as the untraced baseline would \
         measure the cost other processes pay, but not the cost of installing tango-tracer at all; \
         with the daemon stopped for untraced runs the table shows both: traced vs untraced is the \
         full cost for a traced process, not selected vs untraced the cost for everyone else. \
         Stopping and starting it every round also makes each traced run start from a fresh \
         daemon, as a first deployment would."
    )?;
    writeln!(md)
}

/// The daemon's CPU per call in its three setups, next to the throughput ratios.
fn write_daemon_setups(md: &mut String, rt: &RoundTrips) -> std::fmt::Result {
    const SETUPS: [Config; 3] = [Config::Traced, Config::TracedMetrics, Config::TracedSampled];
    if SETUPS.iter().any(|&c| rt.of(c).next().is_none()) {
        return Ok(());
    }
    let base = median(&rt.of(Config::Untraced).map(|s| s.calls_per_s).collect::<Vec<_>>());
    let spans_only = |round: usize| {
        rt.samples
            .iter()
            .find(|s| s.round == round && s.config == Config::Traced)
            .and_then(|s| s.daemon_cpu_us)
    };
    writeln!(md, "### Daemon CPU per call: spans only, with RED metrics, with tail sampling")?;
    writeln!(md)?;
    writeln!(
        md,
        "The daemon's CPU time over each client run divided by all its calls (medians over the \
         rounds, min–max next to them); \"added\" is the median, over the rounds, of each run \
         minus the spans-only run of its round. Exported spans per read call are what the \
         setup's own receiver got, divided by the calls of its runs."
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "| configuration | daemon CPU µs/call | min–max | added to spans only, µs/call | daemon wake-ups/call | calls/s ratio to untraced | per-round ratio min–max | exported spans per read call | target (≤ {DAEMON_TARGET_US} µs/call) |"
    )?;
    writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")?;
    for config in SETUPS {
        let samples: Vec<&Sample> = rt.of(config).collect();
        let cpu: Vec<f64> = samples.iter().filter_map(|s| s.daemon_cpu_us).collect();
        let (lo, hi) = min_max(&cpu);
        let added: Vec<f64> =
            samples.iter().filter_map(|s| Some(s.daemon_cpu_us? - spans_only(s.round)?)).collect();
        let added = match config {
            Config::Traced => "–".to_string(),
            _ => opt((!added.is_empty()).then(|| median(&added)), 1),
        };
        let rate = median(&samples.iter().map(|s| s.calls_per_s).collect::<Vec<_>>());
        let (ratio, spread) = ratio_cells(config, rate, base, &paired_ratios(rt, config));
        let requests = match config {
            Config::TracedMetrics => &rt.metrics_requests,
            Config::TracedSampled => &rt.sampled_requests,
            _ => &rt.traced_requests,
        };
        let calls = rt.calls_made(config);
        let per_call = (calls > 0).then(|| requests.spans() as f64 / calls as f64);
        let cpu_median = median(&cpu);
        let verdict = if !cpu_median.is_finite() {
            "–"
        } else if cpu_median <= DAEMON_TARGET_US {
            "met"
        } else {
            "**not met**"
        };
        writeln!(
            md,
            "| {} | **{}** | {}–{} | {added} | {} | {ratio} | {spread} | {} | {verdict} |",
            config.label(),
            opt(Some(cpu_median), 1),
            opt(Some(lo), 1),
            opt(Some(hi), 1),
            opt(medians(&samples, |s| s.daemon_switches), 2),
            opt(per_call, 3),
        )?;
    }
    writeln!(md)?;
    let calls_per_run = rt.sizes.calls + rt.sizes.warmup;
    let counted: Vec<u64> = rt.of(Config::TracedMetrics).filter_map(|s| s.metrics_counted).collect();
    if !counted.is_empty() {
        let exact = counted.iter().filter(|&&n| n as usize == calls_per_run).count();
        let (lo, hi) = counted.iter().fold((u64::MAX, 0), |(lo, hi), &n| (lo.min(n), hi.max(n)));
        writeln!(
            md,
            "With metrics on, `/metrics` counted {lo}–{hi} server reads of `{}/{}` in \
             `rpc_server_call_duration_seconds` after each run of {calls_per_run} reads (a fresh \
             daemon each run): exactly the reads made in {exact} of {} runs.",
            roundtrip::DEVICE,
            roundtrip::ATTRIBUTE,
            counted.len()
        )?;
    }
    let sampled = rt.sampled_requests.spans() as f64;
    let all = rt.calls_made(Config::TracedSampled) as f64 * 2.0;
    if all > 0.0 {
        writeln!(
            md,
            "Tail sampling (`{}`) exported {:.1}% of the spans the calls of its runs make (2 per \
             call): the traces chosen by trace id, those slower than 5 ms, and the spans of the \
             clients' `DeviceProxy` set-up.",
            roundtrip::TAIL_SAMPLING,
            100.0 * sampled / all
        )?;
    }
    writeln!(md)
}

/// The eBPF programs' own time per call during the traced runs.
fn write_ebpf(md: &mut String, rt: &RoundTrips) -> std::fmt::Result {
    let samples: Vec<&Sample> = rt.of(Config::Traced).filter(|s| !s.bpf.is_empty()).collect();
    if samples.is_empty() {
        return Ok(());
    }
    let mut names: Vec<&str> = samples.iter().flat_map(|s| s.bpf.iter().map(|p| p.0.as_str())).collect();
    names.sort_unstable();
    names.dedup();
    let of = |name: &str, pick: fn(&(String, f64, f64)) -> f64| {
        let values: Vec<f64> =
            samples.iter().filter_map(|s| s.bpf.iter().find(|p| p.0 == name).map(pick)).collect();
        median(&values)
    };
    let totals: Vec<f64> = samples.iter().map(|s| s.bpf.iter().map(|p| p.1).sum::<f64>()).collect();
    let runs: Vec<f64> = samples.iter().map(|s| s.bpf.iter().map(|p| p.2).sum::<f64>()).collect();
    let total = median(&totals);
    let (lo, hi) = min_max(&totals);
    writeln!(md, "### eBPF time per traced call")?;
    writeln!(md)?;
    writeln!(
        md,
        "The kernel's `bpf_stats` (`run_time_ns` and `run_cnt` of each program fd the daemon \
         holds, read from `/proc/<daemon>/fdinfo`), switched on during the traced runs only and \
         divided by the run's calls (warm-up included); medians over the rounds. Both ends of \
         each call are traced, so the programs run for the client and for the server. The \
         socket programs run for every process of the machine, so these figures also hold \
         what other processes' socket calls cost while filtered out (the receiver, the daemon's \
         own export, other users)."
    )?;
    writeln!(md)?;
    writeln!(md, "| program | ns per call | runs per call | ns per run |")?;
    writeln!(md, "| --- | ---: | ---: | ---: |")?;
    let mut rows: Vec<(&str, f64, f64)> =
        names.iter().map(|&name| (name, of(name, |p| p.1), of(name, |p| p.2))).collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (name, ns, per_call) in rows.iter().filter(|r| r.2 > 0.0) {
        writeln!(md, "| `{name}` | {ns:.0} | {per_call:.2} | {:.0} |", ns / per_call)?;
    }
    writeln!(md, "| **all programs** | **{total:.0}** ({lo:.0}–{hi:.0}) | {:.2} | – |", median(&runs))?;
    writeln!(md)?;
    writeln!(
        md,
        "eBPF per traced call: **{:.2} µs** against a target of ≤ {EBPF_TARGET_US} µs: {}.",
        total / 1e3,
        if total / 1e3 <= EBPF_TARGET_US { "met" } else { "**not met**" }
    )?;
    writeln!(md)
}

fn write_assembly(md: &mut String, assembly: &Assembly) -> std::fmt::Result {
    writeln!(md, "## Daemon assembly throughput")?;
    writeln!(md)?;
    writeln!(
        md,
        "A real session recorded with `tango-tracer run --record` ({} probe records of a PyTango \
         client doing reads, writes and commands against a demo server, and of that server; \
         `benches/data/session.jsonl`) is replayed in a loop on one thread: every pass pushes all \
         records through the daemon's own `Pipeline` (assembly, events, devices, routing by the \
         default configuration, conversion to the exporter's `SpanRecord`), then releases the \
         finished spans and expires stale state, as the daemon does. Timestamps move forward by \
         the session's length each pass. One Tango operation is one exported client span (its \
         server span is assembled too). One pass \
         holds {} operations. Rates are those of the median pass (every pass does the same work, \
         so this is the rate while no other process takes the core); the whole-run rate, \
         interruptions included, is next to it.",
        assembly.session_records, assembly.session_operations
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "| path | passes | seconds | records/s | GIOP messages/s | spans/s | Tango operations/s | operations/s, whole run | target (ops/s) |"
    )?;
    writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")?;
    let row = |md: &mut String, name: &str, run: &ReplayRun, target: bool| -> std::fmt::Result {
        let ops = run.per_second_median(run.client_spans);
        let target = if !target {
            "–".to_string()
        } else if ops >= ASSEMBLY_TARGET {
            format!("≥ {} (met)", thousands(ASSEMBLY_TARGET))
        } else {
            format!("≥ {} (**not met**)", thousands(ASSEMBLY_TARGET))
        };
        writeln!(
            md,
            "| {name} | {} | {:.2} | {} | {} | {} | **{}** | {} | {target} |",
            run.passes,
            run.elapsed.as_secs_f64(),
            thousands(run.per_second_median(run.records)),
            thousands(run.per_second_median(run.messages)),
            thousands(run.per_second_median(run.spans)),
            thousands(ops),
            thousands(run.per_second(run.client_spans)),
        )
    };
    row(md, "pipeline (push + release + expire)", &assembly.assembly, true)?;
    if let Some(otlp) = &assembly.otlp {
        row(md, "assembly + OTLP request (resource, protobuf, gzip)", otlp, false)?;
    }
    writeln!(md)?;
    if let Some(otlp) = &assembly.otlp {
        writeln!(
            md,
            "The second row also groups the pipeline's export records by resource and builds, \
             encodes and gzip-compresses OTLP requests \
             of up to 2,048 spans, as the daemon and its OTLP/HTTP exporter do; only the network is \
             left out. It exports {:.0}% of the assembled spans (the rest are operations native \
             telemetry does not trace either) in requests of {:.0} compressed bytes per span.",
            100.0 * otlp.exported_spans as f64 / otlp.spans.max(1) as f64,
            otlp.otlp_bytes as f64 / otlp.exported_spans.max(1) as f64
        )?;
        writeln!(md)?;
    }
    Ok(())
}

/// Where the traced run's cost goes, from this run's numbers.
fn write_costs(md: &mut String, rt: &RoundTrips, assembly: Option<&Assembly>) -> std::fmt::Result {
    let rate = |c: Config| median(&rt.of(c).map(|s| s.calls_per_s).collect::<Vec<_>>());
    let cpu = |c: Config, f: &dyn Fn(&Sample) -> Option<f64>| {
        medians(&rt.of(c).collect::<Vec<_>>(), f).unwrap_or(f64::NAN)
    };
    let processes = |c: Config| cpu(c, &|s| Some(s.client_cpu_us)) + cpu(c, &|s| s.server_cpu_us);
    let (untraced, traced, not_selected) =
        (rate(Config::Untraced), rate(Config::Traced), rate(Config::NotSelected));
    if !(untraced.is_finite() && traced.is_finite() && not_selected.is_finite()) {
        return Ok(());
    }
    let daemon = cpu(Config::Traced, &|s| s.daemon_cpu_us);
    let wakeups = cpu(Config::Traced, &|s| s.daemon_switches);
    writeln!(md, "## Where the traced run's cost goes")?;
    writeln!(md)?;
    writeln!(
        md,
        "From the tables above (medians; single runs on this shared machine vary by tens \
         of percent, so small differences are within noise):"
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "- **Tracepoints alone** (daemon attached, process not selected, against untraced): \
         {:.3} of the untraced rate; client + server CPU {:.0} → {:.0} µs per call. The kernel \
         runs the programs on every socket send and receive and drops the records of processes \
         not selected.",
        not_selected / untraced,
        processes(Config::Untraced),
        processes(Config::NotSelected),
    )?;
    writeln!(
        md,
        "- **Capture and the daemon** (traced against not selected): {:.3}; client + server CPU \
         {:.0} → {:.0} µs per call (copying each GIOP message into the ring buffer happens \
         inside their system calls), the daemon's own {:.0} µs of CPU per call and the OTLP \
         receiver's {:.0} µs, all on the same cores as the client and the server; p99 latency \
         {:.0} → {:.0} µs.",
        traced / not_selected,
        processes(Config::NotSelected),
        processes(Config::Traced),
        daemon,
        cpu(Config::Traced, &|s| s.receiver_cpu_us),
        cpu(Config::NotSelected, &|s| Some(s.p99_us)),
        cpu(Config::Traced, &|s| Some(s.p99_us)),
    )?;
    if let Some(assembly) = assembly {
        let per_op = 1e6 / assembly.assembly.per_second_median(assembly.assembly.client_spans);
        let with_otlp = assembly.otlp.as_ref().map(|run| 1e6 / run.per_second_median(run.client_spans));
        let work = with_otlp.unwrap_or(per_op);
        // Whether the daemon is still woken for (about) every record decides what the rest is.
        let rest = if wakeups >= 2.0 {
            format!(
                "it is woken for about every one of them ({wakeups:.1} wake-ups per call) and \
                 hands work between its threads"
            )
        } else {
            format!(
                "its wake-ups are batched ({wakeups:.2} per call), so this is the handling of \
                 records and spans outside assembly proper: reading and decoding the ring \
                 buffer, per-process bookkeeping, and the exporter's queue and HTTP client"
            )
        };
        writeln!(
            md,
            "- **Inside the daemon**: assembling one operation's spans costs {per_op:.1} µs{} on \
             an otherwise idle core (replay above). The other ~{:.0} µs of daemon CPU per call \
             are spent around it: each call makes 4 probe records (request and reply, each seen \
             by client and server), and {rest}.",
            with_otlp.map(|w| format!(" and {w:.1} µs with OTLP encoding")).unwrap_or_default(),
            (daemon - work).max(0.0),
        )?;
    }
    writeln!(
        md,
        "- **Native telemetry** for comparison: client + server CPU {:.0} µs per call against \
         {:.0} untraced; its cost stays inside the two processes.",
        processes(Config::Native),
        processes(Config::Untraced),
    )?;
    writeln!(md)
}

fn request_row(md: &mut String, name: &str, stats: &RequestStats, calls: usize) -> std::fmt::Result {
    let spans: Vec<f64> = stats.requests.iter().map(|r| r.1 as f64).collect();
    let resources: Vec<f64> = stats.requests.iter().map(|r| r.0 as f64).collect();
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let max = |v: &[f64]| v.iter().copied().reduce(f64::max);
    writeln!(
        md,
        "| {name} | {} | {} | {} | {} | {} | {} | {} |",
        stats.requests.len(),
        thousands(stats.spans() as f64),
        opt(mean(&spans), 1),
        opt(max(&spans), 0),
        opt(mean(&resources), 2),
        opt(max(&resources), 0),
        opt((calls > 0).then(|| stats.spans() as f64 / calls as f64), 2),
    )
}

fn write_requests(md: &mut String, rt: &RoundTrips) -> std::fmt::Result {
    writeln!(md, "## Spans per OTLP request")?;
    writeln!(md)?;
    writeln!(
        md,
        "What the OTLP receivers got during the round trips above (the daemon's receiver during \
         the traced runs; the native receiver during the native runs, for comparison). Spans per \
         read call should be about 2 (one client and one server span each); the daemon also \
         exports what it saw while being stopped."
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "| exporter | requests | spans | spans/request mean | spans/request max | resource_spans/request mean | resource_spans/request max | spans per read call |"
    )?;
    writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")?;
    request_row(md, "tango-tracer (OTLP/HTTP)", &rt.traced_requests, rt.calls_made(Config::Traced))?;
    if rt.of(Config::TracedMetrics).next().is_some() {
        let calls = rt.calls_made(Config::TracedMetrics);
        request_row(md, "tango-tracer + RED metrics (OTLP/HTTP)", &rt.metrics_requests, calls)?;
    }
    if rt.of(Config::TracedSampled).next().is_some() {
        let calls = rt.calls_made(Config::TracedSampled);
        request_row(md, "tango-tracer + tail sampling (OTLP/HTTP)", &rt.sampled_requests, calls)?;
    }
    request_row(md, "cppTango native (OTLP/HTTP)", &rt.native_requests, rt.calls_made(Config::Native))?;
    if let Some((spans, requests)) = rt.traced_requests.totals
        && requests != rt.traced_requests.requests.len()
    {
        writeln!(md)?;
        writeln!(
            md,
            "(The daemon's receiver counted {requests} requests with {spans} spans in all; \
             {} were reported one by one.)",
            rt.traced_requests.requests.len()
        )?;
    }
    writeln!(md)
}

fn write_memory(md: &mut String, rt: &RoundTrips) -> std::fmt::Result {
    writeln!(md, "## Daemon memory and start-up")?;
    writeln!(md)?;
    let rss: Vec<f64> = rt.daemon_memory_kib.iter().map(|m| m.0 as f64 / 1024.0).collect();
    let peak = rt.daemon_memory_kib.iter().map(|m| m.1 as f64 / 1024.0).fold(f64::NAN, f64::max);
    let starts: Vec<f64> = rt.daemon_start.iter().map(Duration::as_secs_f64).collect();
    writeln!(md, "| measure | value |")?;
    writeln!(md, "| --- | ---: |")?;
    if !rss.is_empty() {
        let (lo, hi) = min_max(&rss);
        writeln!(
            md,
            "| daemon VmRSS right after a traced run (median, min–max) | {:.1} MiB ({lo:.1}–{hi:.1}) |",
            median(&rss)
        )?;
        writeln!(md, "| daemon VmHWM (peak RSS), highest | {peak:.1} MiB |")?;
    }
    if !starts.is_empty() {
        let (lo, hi) = min_max(&starts);
        writeln!(
            md,
            "| daemon start until probes attached (median, min–max) | {:.2} s ({lo:.2}–{hi:.2}) |",
            median(&starts)
        )?;
    }
    writeln!(md)
}

/// Per-round ratios of `config`'s rate to the untraced run of the same round.
fn paired_ratios_in<T>(
    samples: &[T],
    config: Config,
    key: impl Fn(&T) -> (usize, Config),
    rate: impl Fn(&T) -> Option<f64>,
) -> Vec<f64> {
    let find = |round: usize, c: Config| samples.iter().find(|s| key(s) == (round, c)).and_then(&rate);
    let mut rounds: Vec<usize> = samples.iter().map(|s| key(s).0).collect();
    rounds.sort_unstable();
    rounds.dedup();
    rounds
        .into_iter()
        .filter_map(|round| Some(find(round, config)? / find(round, Config::Untraced)?))
        .collect()
}

/// "1" for the untraced row, else "**ratio of medians**" and "min–max (median …)" of the
/// per-round ratios.
fn ratio_cells(config: Config, mid: f64, base: f64, ratios: &[f64]) -> (String, String) {
    if config == Config::Untraced {
        return ("1".to_string(), "–".to_string());
    }
    if ratios.is_empty() || !base.is_finite() {
        return ("–".to_string(), "–".to_string());
    }
    let (lo, hi) = min_max(ratios);
    (format!("**{:.3}**", mid / base), format!("{lo:.3}–{hi:.3} (median {:.3})", median(ratios)))
}

fn write_legacy(md: &mut String, legacy: &Legacy) -> std::fmt::Result {
    let libtango = legacy.server_libtango.as_deref().unwrap_or("9.3.4");
    writeln!(md, "## Legacy server: TangoTest {libtango} in a Tango database")?;
    writeln!(md)?;
    writeln!(
        md,
        "A Python loop of {} `read_attribute(\"{}\")` calls (after {} untimed warm-up calls) with \
         PyTango {} against Debian's TangoTest, a C++ server built on cppTango {libtango}, \
         registered as `{}` in a private Tango database (MariaDB and DataBaseds 9.3.4 started by \
         `scripts/tango-stack.sh`, up in {:.1} s). The client finds the device through the \
         database; on the same host omniORB then talks to the server over its Unix socket. {} \
         rounds alternate their order (untraced, traced; then the reverse). Untraced runs have no \
         daemon; each traced run has a fresh one selecting the client and the server, exporting \
         to an OTLP receiver, as in the headline. Calls/s are medians over the rounds; ratios as \
         in the headline.",
        legacy.sizes.calls,
        legacy::ATTRIBUTE,
        legacy.sizes.warmup,
        legacy.pytango,
        legacy::DEVICE,
        legacy.stack_start.as_secs_f64(),
        legacy.sizes.rounds,
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "| configuration | calls/s (median) | calls/s min–max | ratio to untraced | per-round ratio min–max | p50 µs | p99 µs | client CPU µs/call | server CPU µs/call | daemon CPU µs/call |"
    )?;
    writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")?;
    let rate_of = |config: Config| median(&legacy.of(config).map(|s| s.calls_per_s).collect::<Vec<_>>());
    let base = rate_of(Config::Untraced);
    for config in legacy::CONFIGS {
        let samples: Vec<&Sample> = legacy.of(config).collect();
        if samples.is_empty() {
            continue;
        }
        let rates: Vec<f64> = samples.iter().map(|s| s.calls_per_s).collect();
        let (lo, hi) = min_max(&rates);
        let mid = median(&rates);
        let ratios =
            paired_ratios_in(&legacy.samples, config, |s| (s.round, s.config), |s| Some(s.calls_per_s));
        let (ratio, spread) = ratio_cells(config, mid, base, &ratios);
        writeln!(
            md,
            "| {} | {} | {}–{} | {ratio} | {spread} | {} | {} | {} | {} | {} |",
            config.label(),
            thousands(mid),
            thousands(lo),
            thousands(hi),
            opt(medians(&samples, |s| Some(s.p50_us)), 0),
            opt(medians(&samples, |s| Some(s.p99_us)), 0),
            opt(medians(&samples, |s| Some(s.client_cpu_us)), 1),
            opt(medians(&samples, |s| s.server_cpu_us), 1),
            opt(medians(&samples, |s| s.daemon_cpu_us), 1),
        )?;
    }
    writeln!(
        md,
        "| {} | not possible: cppTango {libtango} has no telemetry of its own (it came with cppTango 10) | – | – | – | – | – | – | – | – |",
        Config::Native.label()
    )?;
    writeln!(md)?;
    let spans = legacy.traced_requests.spans();
    writeln!(
        md,
        "The daemon's receiver got {} spans in {} requests over the traced runs: {} per read call \
         (one client span and one server span each, so both sides of the Unix socket are traced; \
         the client's database look-ups at start add a few){}.",
        thousands(spans as f64),
        legacy.traced_requests.requests.len(),
        opt((legacy.traced_calls > 0).then(|| spans as f64 / legacy.traced_calls as f64), 2),
        legacy.daemon_lost_records.map_or(String::new(), |lost| format!(
            "; the daemons reported {} probe records lost to a full ring buffer",
            thousands(lost as f64)
        )),
    )?;
    writeln!(md)?;
    writeln!(md, "Every run, calls/s, in the order of its round:")?;
    writeln!(md)?;
    writeln!(md, "| round | order | untraced | traced | other processes, highest (cores) |")?;
    writeln!(md, "| ---: | --- | ---: | ---: | ---: |")?;
    for round in 0..legacy.sizes.rounds {
        let in_round: Vec<&Sample> = legacy.samples.iter().filter(|s| s.round == round).collect();
        let order: Vec<&str> = in_round.iter().map(|s| s.config.short()).collect();
        write!(md, "| {} | {} |", round + 1, order.join(" "))?;
        for config in legacy::CONFIGS {
            match in_round.iter().find(|s| s.config == config) {
                Some(s) => {
                    write!(md, " {}{} |", thousands(s.calls_per_s), if s.other_tracer { " †" } else { "" })?
                }
                None => write!(md, " – |")?,
            }
        }
        let load = in_round.iter().filter_map(|s| s.foreign_cores).reduce(f64::max);
        writeln!(md, " {} |", opt(load, 2))?;
    }
    writeln!(md)?;
    if legacy.samples.iter().any(|s| s.other_tracer) {
        writeln!(md, "† another tango-tracer (not the benchmark's) was running.")?;
        writeln!(md)?;
    }
    writeln!(
        md,
        "The benchmark waited {:.1} s in all (at most {:.0} s) for a quiet machine before these runs.",
        legacy.quiet_waited.as_secs_f64(),
        legacy.sizes.quiet_budget.as_secs_f64()
    )?;
    writeln!(md)
}

fn sum_spans(samples: &[&EventSample], field: impl Fn(&events::RunSpans) -> usize) -> Option<(usize, usize)> {
    let traced: Vec<_> =
        samples.iter().filter_map(|s| s.spans.map(|spans| (field(&spans), s.pushes))).collect();
    (!traced.is_empty()).then(|| traced.iter().fold((0, 0), |(a, b), (x, y)| (a + x, b + y)))
}

/// "0.43 (0.40–0.45)": spans per push over all runs, and the range of single runs.
fn per_push_cell(samples: &[&EventSample], field: impl Fn(&events::RunSpans) -> usize + Copy) -> String {
    let Some((spans, pushes)) = sum_spans(samples, field) else {
        return "–".to_string();
    };
    let per_run: Vec<f64> =
        samples.iter().filter_map(|s| s.spans.map(|sp| field(&sp) as f64 / s.pushes.max(1) as f64)).collect();
    let (lo, hi) = min_max(&per_run);
    format!("{:.3} ({lo:.3}–{hi:.3})", spans as f64 / pushes.max(1) as f64)
}

fn write_events(md: &mut String, ev: &Events) -> std::fmt::Result {
    writeln!(md, "## Events: pushes untraced and traced")?;
    writeln!(md)?;
    writeln!(
        md,
        "A PyTango {} demo server without database{} pushes change events of `{}` to one \
         subscriber process (`bench_event_sink.py`, which counts them in its callback); once the \
         subscriber is subscribed, a driver process makes the server push N events, in one of two \
         workloads: a **burst**, one `PushBurst({})` command in which the server pushes {} events \
         in a tight loop, and a **command loop**, {} `PushTemperature` commands that push one \
         event each. {} rounds alternate their order (untraced, traced; then the reverse), each \
         configuration running the burst, then the command loop. Untraced runs have no daemon; \
         traced ones a fresh daemon per run selecting server, subscriber and driver, exporting to \
         an OTLP receiver that also writes every span to a file, from which the event spans of \
         each run are counted.",
        ev.pytango,
        ev.server_libtango.as_deref().map(|v| format!(" (cppTango {v})")).unwrap_or_default(),
        events::ATTRIBUTE,
        ev.sizes.burst,
        ev.sizes.burst,
        ev.sizes.commands,
        ev.sizes.rounds,
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "*Pushed/s* is the rate the pushing achieved: N over the time the server's loop took \
         (burst), or N over the driver's command loop (command loop). *Delivered/s* is events \
         counted by the subscriber over the time from the driver's start to the last event. \
         Medians over the rounds; ratios are of the medians, with the range of per-round ratios. \
         *Received* is what the subscriber counted of all pushes; *missed* the pushed values it saw \
         skipped (each push carries a new value)."
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "| workload | configuration | pushed/s (median) | ratio to untraced | delivered/s (median) | delivered/s min–max | ratio to untraced | per-round delivered ratio min–max | received / pushed | missed |"
    )?;
    writeln!(md, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")?;
    let key = |s: &EventSample| (s.round, s.config);
    for workload in Workload::ALL {
        let of_workload: Vec<EventSample> =
            ev.samples.iter().filter(|s| s.workload == workload).cloned().collect();
        let median_of = |config: Config, f: &dyn Fn(&EventSample) -> Option<f64>| {
            let values: Vec<f64> = ev.of(workload, config).filter_map(f).collect();
            median(&values)
        };
        let pushed_base = median_of(Config::Untraced, &|s| Some(s.pushed_per_s));
        let delivered_base = median_of(Config::Untraced, &|s| s.delivered_per_s);
        for config in events::CONFIGS {
            let samples: Vec<&EventSample> = ev.of(workload, config).collect();
            if samples.is_empty() {
                continue;
            }
            let pushed = median_of(config, &|s| Some(s.pushed_per_s));
            let delivered: Vec<f64> = samples.iter().filter_map(|s| s.delivered_per_s).collect();
            let (lo, hi) = min_max(&delivered);
            let pushed_ratios = paired_ratios_in(&of_workload, config, key, |s| Some(s.pushed_per_s));
            let delivered_ratios = paired_ratios_in(&of_workload, config, key, |s| s.delivered_per_s);
            let (pushed_ratio, _) = ratio_cells(config, pushed, pushed_base, &pushed_ratios);
            let (delivered_ratio, delivered_spread) =
                ratio_cells(config, median(&delivered), delivered_base, &delivered_ratios);
            let received: usize = samples.iter().map(|s| s.received).sum();
            let pushes: usize = samples.iter().map(|s| s.pushes).sum();
            let missed: usize = samples.iter().map(|s| s.missed).sum();
            writeln!(
                md,
                "| {} | {} | {} | {pushed_ratio} | {} | {}–{} | {delivered_ratio} | {delivered_spread} | {} / {} | {} |",
                workload.label(),
                config.label(),
                thousands(pushed),
                thousands(median(&delivered)),
                thousands(lo),
                thousands(hi),
                thousands(received as f64),
                thousands(pushes as f64),
                thousands(missed as f64),
            )?;
        }
    }
    writeln!(md)?;
    writeln!(
        md,
        "CPU per push (medians over the rounds: the server's and the daemon's over the whole run, the \
         subscriber's from its subscription on; in the command loop they include the commands; *busy* leaves out what the daemon spends \
         with nothing to do, its timers, measured for a second before each traced run and subtracted for the run's length, as in the \
         device-log section: the run also holds the driver's and subscriber's start and the subscriber's {}-s wait for late events) and the event spans the daemon's receiver got \
         (traced runs: the server's PRODUCER spans `{}` and the subscriber's CONSUMER spans `{}`, \
         per push over all runs, with the range of single runs):",
        events::IDLE_S,
        events::PUSH_SPAN,
        events::DELIVERY_SPAN
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "| workload | configuration | server CPU µs/push | subscriber CPU µs/push | daemon CPU µs/push | of it, busy (target ≤ 4 µs) | PRODUCER spans/push | CONSUMER spans/push | CONSUMER spans child of their PRODUCER | `tango.event.lost` reported | other processes (cores) |"
    )?;
    writeln!(md, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")?;
    for workload in Workload::ALL {
        for config in events::CONFIGS {
            let samples: Vec<&EventSample> = ev.of(workload, config).collect();
            if samples.is_empty() {
                continue;
            }
            let cpu = |f: &dyn Fn(&EventSample) -> Option<f64>| {
                let values: Vec<f64> = samples.iter().filter_map(|s| f(s)).collect();
                (!values.is_empty()).then(|| median(&values))
            };
            let linked = sum_spans(&samples, |s| s.linked).zip(sum_spans(&samples, |s| s.consumer)).map_or(
                "–".to_string(),
                |((linked, _), (consumers, _))| {
                    format!("{} of {}", thousands(linked as f64), thousands(consumers as f64))
                },
            );
            let lost: Option<i64> =
                samples.iter().filter_map(|s| s.spans.map(|sp| sp.lost_attribute)).reduce(|a, b| a + b);
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {linked} | {} | {} |",
                workload.label(),
                config.label(),
                opt(cpu(&|s| s.server_cpu_us), 1),
                opt(cpu(&|s| Some(s.subscriber_cpu_us)), 1),
                opt(cpu(&|s| s.daemon_cpu_us), 1),
                opt(cpu(&|s| s.daemon_busy_us), 1),
                per_push_cell(&samples, |s| s.producer),
                per_push_cell(&samples, |s| s.consumer),
                lost.map_or("–".to_string(), |l| thousands(l as f64)),
                opt(cpu(&|s| s.foreign_cores), 2),
            )?;
        }
    }
    writeln!(md)?;
    write_event_losses(md, ev)?;
    writeln!(md, "Every run, delivered/s, in the order of its round:")?;
    writeln!(md)?;
    writeln!(
        md,
        "| round | order | burst untraced | burst traced | command loop untraced | command loop traced | other processes, highest (cores) |"
    )?;
    writeln!(md, "| ---: | --- | ---: | ---: | ---: | ---: | ---: |")?;
    for round in 0..ev.sizes.rounds {
        let in_round: Vec<&EventSample> = ev.samples.iter().filter(|s| s.round == round).collect();
        let mut order: Vec<&str> = in_round.iter().map(|s| s.config.short()).collect();
        order.dedup();
        write!(md, "| {} | {} |", round + 1, order.join(" "))?;
        for workload in Workload::ALL {
            for config in events::CONFIGS {
                match in_round.iter().find(|s| s.workload == workload && s.config == config) {
                    Some(s) => write!(
                        md,
                        " {}{} |",
                        s.delivered_per_s.map_or("–".to_string(), thousands),
                        if s.other_tracer { " †" } else { "" }
                    )?,
                    None => write!(md, " – |")?,
                }
            }
        }
        let load = in_round.iter().filter_map(|s| s.foreign_cores).reduce(f64::max);
        writeln!(md, " {} |", opt(load, 2))?;
    }
    writeln!(md)?;
    if ev.samples.iter().any(|s| s.other_tracer) {
        writeln!(md, "† another tango-tracer (not the benchmark's) was running.")?;
        writeln!(md)?;
    }
    writeln!(
        md,
        "The benchmark waited {:.1} s in all (at most {:.0} s) for a quiet machine before these runs.",
        ev.quiet_waited.as_secs_f64(),
        ev.sizes.quiet_budget.as_secs_f64()
    )?;
    writeln!(md)
}

/// What the span counts say about losses, from this run's numbers.
fn write_event_losses(md: &mut String, ev: &Events) -> std::fmt::Result {
    let mut incomplete = false;
    for workload in Workload::ALL {
        let samples: Vec<&EventSample> = ev.of(workload, Config::Traced).collect();
        let (Some((producers, pushes)), Some((consumers, _))) =
            (sum_spans(&samples, |s| s.producer), sum_spans(&samples, |s| s.consumer))
        else {
            continue;
        };
        let received: usize = samples.iter().map(|s| s.received).sum();
        let lost_records: Option<u64> = samples
            .iter()
            .filter_map(|s| s.daemon_totals.as_ref().map(|t| t.lost_records))
            .reduce(|a, b| a + b);
        let (p, c) = (producers as f64 / pushes.max(1) as f64, consumers as f64 / received.max(1) as f64);
        let name = match workload {
            Workload::Burst => "Burst",
            Workload::Commands => "Command loop",
        };
        let tango = if received >= pushes {
            format!("the subscriber received all {} pushed events", thousands(pushes as f64))
        } else {
            format!(
                "the subscriber received {} of {} pushed events (Tango's own loss)",
                thousands(received as f64),
                thousands(pushes as f64)
            )
        };
        let ring = lost_records.map_or(String::new(), |lost| {
            format!(
                "; the daemons reported {} probe records lost to a full ring buffer",
                thousands(lost as f64)
            )
        });
        if p >= 0.995 && c >= 0.995 {
            writeln!(
                md,
                "- **{name}**: every push got its PRODUCER span and every delivery its CONSUMER span \
                 ({} and {} for {} pushes); {tango}{ring}.",
                thousands(producers as f64),
                thousands(consumers as f64),
                thousands(pushes as f64),
            )?;
            continue;
        }
        incomplete = true;
        let runs = |f: fn(&RunSpans) -> Option<f64>| {
            let values: Vec<f64> = samples.iter().filter_map(|s| s.spans.as_ref().and_then(f)).collect();
            (!values.is_empty()).then(|| median(&values))
        };
        writeln!(
            md,
            "- **{name}**: the spans cover {:.1}% of the pushes (PRODUCER) and {:.1}% of the \
             deliveries (CONSUMER); {tango}{ring}. The pushes seen come in runs of consecutive \
             event counters (median run {} pushes, median gap {}), the deliveries seen in runs of \
             median {} (median gap {}).",
            100.0 * p,
            100.0 * c,
            opt(runs(|s| s.producer_runs.map(|r| r.0)), 0),
            opt(runs(|s| s.producer_runs.map(|r| r.1)), 0),
            opt(runs(|s| s.consumer_runs.map(|r| r.0)), 0),
            opt(runs(|s| s.consumer_runs.map(|r| r.1)), 0),
        )?;
    }
    writeln!(md)?;
    if incomplete {
        writeln!(
            md,
            "Missing event spans are messages the daemon never parsed. An event message travels \
             through ZMQ's I/O threads, and when pushes come faster than the server's I/O thread \
             sends them one by one, it puts several messages into one `send` system call; the \
             subscriber's ZMQ reads up to 8 KiB (its batch size) per `recv`. The probes copy only \
             the first `--capture-bytes` of each call (2048 by default, at most 4096), and the \
             daemon parses ZMTP messages from the start of each copy: messages beyond the copy are \
             never seen, and where a call ends inside a message (the subscriber's 8 KiB reads \
             nearly always do), the following calls start inside one, so nothing of them is parsed \
             until a call happens to start on a message boundary again. \
             The daemon does not flag these as lost either: `tango.event.lost` counts counter gaps \
             only within what it parsed. One push per system call is seen in full; in the command \
             loop the server's I/O thread still falls behind now and then, and the calls that then \
             carry more than the copy holds lose the messages beyond it."
        )?;
        writeln!(md)?;
    }
    Ok(())
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
    use super::*;

    #[test]
    fn medians_and_numbers() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(thousands(212_345.4), "212,345");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(
            without_ports("export to http://127.0.0.1:40123/v1/traces: 5, 127.0.0.1: x"),
            "export to http://127.0.0.1:<port>/v1/traces: 5, 127.0.0.1: x"
        );
    }
}
