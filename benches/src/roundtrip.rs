//! Round trips of a PyTango client against a PyTango device server, side by side in one run:
//! untraced, traced by tango-tracer (spans only; with RED metrics on; with tail sampling on),
//! cppTango's native telemetry, and the daemon attached while the process is not selected.
//!
//! Rounds alternate their order (U N TM T S TS, then the reverse) so slow drift of the machine
//! hits every configuration alike. A daemon is started for each daemon setup of a round; the
//! plain one serves the traced and the not-selected runs, which come back to back. The eBPF
//! programs' own time is counted (`bpf_stats`) during the traced runs only.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tango_tracer::run::ctl::{CtlAnswer, StatsView};

use crate::{
    bpf::{self, BpfStats},
    procs::{self, Proc},
};

/// Environment variable that marks the processes the daemon selects.
pub const MARKER: &str = "TANGO_BENCH";
/// The device every server serves.
pub const DEVICE: &str = "test/bench/1";
/// The attribute the client reads.
pub const ATTRIBUTE: &str = "temperature";

/// One way of running the same client loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    /// No daemon running.
    Untraced,
    /// The daemon running and selecting the client and the server.
    Traced,
    /// cppTango's own telemetry in client and server; no daemon.
    Native,
    /// The daemon running, but the client and server are not selected.
    NotSelected,
    /// Traced, with the RED metrics on: served at `--metrics-listen` and pushed over OTLP.
    TracedMetrics,
    /// Traced, with tail sampling on ([`TAIL_SAMPLING`]).
    TracedSampled,
}

/// The tail-sampling rule of [`Config::TracedSampled`].
pub const TAIL_SAMPLING: &str = "slower-than=5ms,errors,ratio=0.05";

/// How a configuration's daemon is started; one daemon per setup and round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DaemonSetup {
    /// Spans only (`OTEL_METRICS_EXPORTER=none`).
    Spans,
    /// Spans and the RED metrics (OTLP `/v1/metrics` and `--metrics-listen`).
    Metrics,
    /// Spans through tail sampling, metrics off.
    Sampling,
}

impl Config {
    pub const ALL: [Config; 6] = [
        Config::Untraced,
        Config::Traced,
        Config::TracedMetrics,
        Config::TracedSampled,
        Config::Native,
        Config::NotSelected,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Config::Untraced => "untraced (no daemon)",
            Config::Traced => "traced by tango-tracer",
            Config::Native => "cppTango native telemetry (OTLP/HTTP)",
            Config::NotSelected => "daemon attached, process not selected",
            Config::TracedMetrics => "traced + RED metrics",
            Config::TracedSampled => "traced + tail sampling",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Config::Untraced => "U",
            Config::Traced => "T",
            Config::Native => "N",
            Config::NotSelected => "S",
            Config::TracedMetrics => "TM",
            Config::TracedSampled => "TS",
        }
    }

    pub fn daemon_setup(self) -> Option<DaemonSetup> {
        match self {
            Config::Untraced | Config::Native => None,
            Config::Traced | Config::NotSelected => Some(DaemonSetup::Spans),
            Config::TracedMetrics => Some(DaemonSetup::Metrics),
            Config::TracedSampled => Some(DaemonSetup::Sampling),
        }
    }
}

/// Sizes of the round-trip benchmark.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub rounds: usize,
    pub calls: usize,
    pub warmup: usize,
    /// Longest time, all runs together, spent waiting for other processes to calm down.
    pub quiet_budget: Duration,
}

/// Other processes' load (cores) under which a run starts at once.
pub const QUIET_THRESHOLD: f64 = 0.2;

/// Programs and scripts the benchmark runs.
#[derive(Clone, Debug)]
pub struct Programs {
    pub python: PathBuf,
    pub demo_server: PathBuf,
    pub client: PathBuf,
    pub tracer: PathBuf,
    pub receiver: PathBuf,
    /// `scripts/tango-stack.sh` and `tests/python/db_register.py` (legacy-server row).
    pub stack_script: PathBuf,
    pub db_register: PathBuf,
    /// Debian's TangoTest 9.3.4.
    pub tangotest: PathBuf,
    /// `tests/python/bench_attribute_loop.py` (legacy-server row).
    pub attribute_client: PathBuf,
    /// `tests/python/bench_event_sink.py` and `bench_event_push.py` (events row).
    pub event_sink: PathBuf,
    pub event_driver: PathBuf,
    /// `tests/python/churn.py` (churn row) and `benches/python/paced_read_loop.py` (outage row).
    pub churn: PathBuf,
    pub paced_client: PathBuf,
    /// `tests/python/log_server.py` and `bench_log_loop.py` (device-logs row).
    pub log_server: PathBuf,
    pub log_driver: PathBuf,
    /// `tests/python/user_code_server.py` and `benches/python/user_code_loop.py` (user-code row).
    pub user_code_server: PathBuf,
    pub user_code_client: PathBuf,
    /// `benches/python/many_servers.py` (memory row).
    pub many_servers: PathBuf,
}

/// One client run.
#[derive(Clone, Debug)]
pub struct Sample {
    pub config: Config,
    pub round: usize,
    pub calls_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Client CPU per timed call.
    pub client_cpu_us: f64,
    /// Server CPU per call (warm-up calls included in the count).
    pub server_cpu_us: Option<f64>,
    /// Daemon CPU per call (warm-up calls included in the count), when it runs.
    pub daemon_cpu_us: Option<f64>,
    /// Daemon context switches (wake-ups) per call, when it runs.
    pub daemon_switches: Option<f64>,
    /// CPU per call of the OTLP receiver the run exports to (traced and native runs).
    pub receiver_cpu_us: Option<f64>,
    /// Cores kept busy by processes not of the benchmark during the client's run.
    pub foreign_cores: Option<f64>,
    /// The daemon's eBPF programs during the run, by name: (name, ns per call, runs per call);
    /// traced runs only.
    pub bpf: Vec<(String, f64, f64)>,
    /// Server calls the daemon's `/metrics` counted in `rpc.server.call.duration` after the run
    /// (metrics runs only; a fresh daemon each, so all of the run's calls).
    pub metrics_counted: Option<u64>,
    /// Whether another tango-tracer (someone else's) ran when the client started.
    pub other_tracer: bool,
}

/// What one receiver saw.
#[derive(Clone, Debug, Default)]
pub struct RequestStats {
    /// (resource_spans, spans) of every request, in arrival order.
    pub requests: Vec<(usize, usize)>,
    /// The receiver's own totals on exit: (spans, requests).
    pub totals: Option<(usize, usize)>,
}

impl RequestStats {
    pub fn spans(&self) -> usize {
        self.totals.map(|(spans, _)| spans).unwrap_or_else(|| self.requests.iter().map(|r| r.1).sum())
    }
}

/// Everything the round-trip benchmark measured.
#[derive(Clone, Debug)]
pub struct RoundTrips {
    pub sizes: Sizes,
    pub samples: Vec<Sample>,
    pub pytango: String,
    pub traced_requests: RequestStats,
    pub native_requests: RequestStats,
    /// What the receivers of the metrics and of the sampling daemons got.
    pub metrics_requests: RequestStats,
    pub sampled_requests: RequestStats,
    /// Daemon (VmRSS, VmHWM) in KiB after each traced run.
    pub daemon_memory_kib: Vec<(u64, u64)>,
    /// Time from starting the daemon to its ready file, per start.
    pub daemon_start: Vec<Duration>,
    /// Read calls (warm-up included) made in each configuration.
    pub calls_made: Vec<(Config, usize)>,
    /// Time spent waiting for a quiet machine before runs.
    pub quiet_waited: Duration,
}

impl RoundTrips {
    pub fn of(&self, config: Config) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(move |s| s.config == config)
    }

    pub fn calls_made(&self, config: Config) -> usize {
        self.calls_made.iter().filter(|(c, _)| *c == config).map(|(_, n)| n).sum()
    }
}

/// `OTLP/HTTP http://127.0.0.1:PORT/v1/traces` from the receiver's first line.
fn receiver_endpoint(stderr: &str) -> Option<String> {
    let rest = stderr.split("OTLP/HTTP ").nth(1)?;
    let url = rest.split_whitespace().next()?;
    url.ends_with("/v1/traces").then(|| url.to_string())
}

/// An `otlp-receiver` process on ephemeral ports.
pub(crate) struct Receiver {
    pub(crate) proc: Proc,
    /// `http://127.0.0.1:PORT/v1/traces`
    traces_url: String,
}

impl Receiver {
    pub(crate) fn start(name: &str, programs: &Programs, dir: &Path) -> anyhow::Result<Receiver> {
        Self::start_with(name, programs, dir, None)
    }

    /// With `out`, every span received is also appended to that file as a JSON line (readable
    /// with `tracer_export::read_store`).
    pub(crate) fn start_with(
        name: &str,
        programs: &Programs,
        dir: &Path,
        out: Option<&Path>,
    ) -> anyhow::Result<Receiver> {
        Self::start_on(name, programs, dir, "127.0.0.1:0", out)
    }

    /// With OTLP/HTTP on `http` (`127.0.0.1:0` for an ephemeral port; a port a stopped receiver
    /// had, to bring a backend back).
    pub(crate) fn start_on(
        name: &str,
        programs: &Programs,
        dir: &Path,
        http: &str,
        out: Option<&Path>,
    ) -> anyhow::Result<Receiver> {
        let mut command = Command::new(&programs.receiver);
        command.args(["--http", http, "--grpc", "127.0.0.1:0", "--quiet"]);
        if let Some(out) = out {
            command.arg("--out").arg(out);
        }
        let mut proc = Proc::spawn(name, command, dir)?;
        let traces_url = procs::wait_for_stderr(&mut proc, Duration::from_secs(30), receiver_endpoint)?;
        Ok(Receiver { proc, traces_url })
    }

    /// `http://127.0.0.1:PORT`, the base the OTEL_EXPORTER_OTLP_ENDPOINT convention wants.
    fn base_url(&self) -> &str {
        self.traces_url.strip_suffix("/v1/traces").unwrap_or(&self.traces_url)
    }

    /// `127.0.0.1:PORT` of its OTLP/HTTP listener.
    pub(crate) fn http_address(&self) -> &str {
        self.base_url().strip_prefix("http://").unwrap_or(self.base_url())
    }

    /// Spans received so far, from the requests it has logged (every 200 ms).
    pub(crate) fn spans_so_far(&self) -> usize {
        parse_receiver_log(&self.proc.stderr()).spans()
    }

    /// Stops it and reads what it reported about every request.
    pub(crate) fn finish(mut self) -> RequestStats {
        // It reports requests every 200 ms: let the last ones be written before stopping it.
        std::thread::sleep(Duration::from_millis(500));
        self.proc.stop(Duration::from_secs(10));
        parse_receiver_log(&self.proc.stderr())
    }
}

/// Reads `otlp-receiver: http request: R resource_spans, S spans` and the closing
/// `otlp-receiver: S spans in R requests`.
pub fn parse_receiver_log(text: &str) -> RequestStats {
    let mut stats = RequestStats::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("otlp-receiver: ") else {
            continue;
        };
        let numbers: Vec<usize> =
            rest.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
        if rest.contains(" request: ") && rest.contains("resource_spans") {
            if let [resource_spans, spans, ..] = numbers[..] {
                stats.requests.push((resource_spans, spans));
            }
        } else if rest.contains(" spans in ")
            && rest.ends_with("requests")
            && let [spans, requests] = numbers[..]
        {
            stats.totals = Some((spans, requests));
        }
    }
    stats
}

/// A demo device server without database.
pub(crate) struct Server {
    pub(crate) proc: Proc,
    pub(crate) url: String,
}

/// Environment that turns on cppTango's native telemetry towards `traces_url`.
fn native_env(traces_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("TANGO_TELEMETRY_ENABLE", "on".into()),
        ("TANGO_TELEMETRY_TRACING_EXPORTERS", "http".into()),
        ("TANGO_TELEMETRY_TRACING_ENDPOINTS", traces_url.into()),
        ("TANGO_TELEMETRY_LOGGING_EXPORTERS", "console".into()),
        ("TANGO_TELEMETRY_LOGGING_ENDPOINTS", "cerr".into()),
    ]
}

/// A Python command with a clean slate: no telemetry, no OTLP settings, no marker inherited.
pub(crate) fn python_command(programs: &Programs, env: &[(&str, String)]) -> Command {
    clean_command(&programs.python, env)
}

/// `program` with a clean slate: no telemetry, no OTLP settings, no marker, no Tango database or
/// transport choice inherited; then `env`.
pub(crate) fn clean_command(program: &Path, env: &[(&str, String)]) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("TANGO_TELEMETRY_")
            || name.starts_with("PYTANGO_TELEMETRY")
            || name.starts_with("OTEL_")
            || name == MARKER
            || name == "TANGO_HOST"
            || name == "ORBclientTransportRule"
        {
            command.env_remove(&*name);
        }
    }
    command.envs(env.iter().map(|(n, v)| (n, v)));
    command
}

impl Server {
    pub(crate) fn start(
        name: &str,
        programs: &Programs,
        dir: &Path,
        env: &[(&str, String)],
    ) -> anyhow::Result<Server> {
        let port = procs::free_port()?;
        let mut command = python_command(programs, env);
        command.arg(&programs.demo_server).arg(name).arg(port.to_string()).arg(DEVICE);
        let mut proc = Proc::spawn(name, command, dir)?;
        procs::wait_for_port(port, &mut proc, Duration::from_secs(60))?;
        Ok(Server { proc, url: format!("tango://127.0.0.1:{port}/{DEVICE}#dbase=no") })
    }
}

/// The tango-tracer daemon selecting processes marked with `marker`.
pub(crate) struct Daemon {
    pub(crate) proc: Proc,
    /// Its control socket, for `tango-tracer ctl`.
    socket: PathBuf,
}

/// The daemon's command line, as BENCHMARKS.md shows it (placeholders in angle brackets).
pub fn daemon_command_text() -> String {
    format!(
        "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:<port> OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf \
         tango-tracer run --ready-file <dir>/ready --select-env {MARKER}=<marker> \
         --export-interval 1s --exporter otlp --control-socket <dir>/ctl.sock --user-spans off"
    )
}

/// What each daemon setup of the headline adds to [`daemon_command_text`].
pub fn setup_text(setup: DaemonSetup) -> String {
    match setup {
        DaemonSetup::Spans => "OTEL_METRICS_EXPORTER=none (environment)".to_string(),
        DaemonSetup::Metrics => {
            "--metrics-listen 127.0.0.1:<port> (and the default OTLP push to <endpoint>/v1/metrics every 10 s)"
                .to_string()
        }
        DaemonSetup::Sampling => {
            format!("--tail-sampling '{TAIL_SAMPLING}', OTEL_METRICS_EXPORTER=none (environment)")
        }
    }
}

impl Daemon {
    /// Starts `tango-tracer run` as `name` (its logs and ready file are named after it) with
    /// `RUST_LOG=rust_log` and waits until its probes are attached; returns it and how long that
    /// took. `info` makes it report on exit what it handled and lost ([`DaemonTotals`]).
    pub(crate) fn start_logging(
        name: &str,
        programs: &Programs,
        dir: &Path,
        marker: &str,
        receiver: &Receiver,
        rust_log: &str,
    ) -> anyhow::Result<(Daemon, Duration)> {
        Self::start_with_args(name, programs, dir, (marker, receiver), rust_log, &[])
    }

    /// Like [`start_logging`](Self::start_logging) with more arguments of `tango-tracer run`.
    pub(crate) fn start_with_args(
        name: &str,
        programs: &Programs,
        dir: &Path,
        (marker, receiver): (&str, &Receiver),
        rust_log: &str,
        extra_args: &[&str],
    ) -> anyhow::Result<(Daemon, Duration)> {
        Self::launch(name, programs, dir, (marker, receiver.base_url()), (rust_log, &[]), extra_args, None)
    }

    /// The daemon of one setup of the headline round trips; with metrics, also the address of
    /// its `/metrics`.
    pub(crate) fn start_setup(
        name: &str,
        programs: &Programs,
        dir: &Path,
        (marker, receiver): (&str, &Receiver),
        setup: DaemonSetup,
    ) -> anyhow::Result<(Daemon, Duration, Option<String>)> {
        let metrics_off = [("OTEL_METRICS_EXPORTER", "none")];
        let endpoint = (marker, receiver.base_url());
        match setup {
            DaemonSetup::Spans => {
                let (daemon, took) =
                    Self::launch(name, programs, dir, endpoint, ("warn", &metrics_off), &[], None)?;
                Ok((daemon, took, None))
            }
            DaemonSetup::Metrics => {
                let listen = format!("127.0.0.1:{}", procs::free_port()?);
                let args = ["--metrics-listen", listen.as_str()];
                let (daemon, took) = Self::launch(name, programs, dir, endpoint, ("warn", &[]), &args, None)?;
                Ok((daemon, took, Some(listen)))
            }
            DaemonSetup::Sampling => {
                let args = ["--tail-sampling", TAIL_SAMPLING];
                let (daemon, took) =
                    Self::launch(name, programs, dir, endpoint, ("warn", &metrics_off), &args, None)?;
                Ok((daemon, took, None))
            }
        }
    }

    /// Like [`start_with_args`](Self::start_with_args), exporting to the OTLP/HTTP `endpoint`
    /// (`http://ADDRESS:PORT`), with `env` added to its environment, and run inside the network
    /// namespace `netns` when given (not `ip netns exec`, which remounts `/sys` and hides
    /// tracefs).
    pub(crate) fn launch(
        name: &str,
        programs: &Programs,
        dir: &Path,
        (marker, endpoint): (&str, &str),
        (rust_log, env): (&str, &[(&str, &str)]),
        extra_args: &[&str],
        netns: Option<&Path>,
    ) -> anyhow::Result<(Daemon, Duration)> {
        let ready = dir.join(format!("{name}.ready"));
        let socket = dir.join(format!("{name}.sock"));
        let mut command = match netns {
            Some(netns) => {
                // nsenter execs the daemon (no fork for a network namespace): its pid is ours.
                let mut command = Command::new("nsenter");
                command.arg(format!("--net={}", netns.display())).arg("--").arg(&programs.tracer);
                command
            }
            None => Command::new(&programs.tracer),
        };
        command
            .arg("run")
            .arg("--ready-file")
            .arg(&ready)
            .arg("--select-env")
            .arg(format!("{MARKER}={marker}"))
            .args(["--export-interval", "1s", "--exporter", "otlp"])
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .env_remove("OTEL_TRACES_EXPORTER")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            // Never the system-wide default store: nothing should be written there.
            .env("TANGO_TRACER_STORE", dir.join("store.jsonl"))
            // Nor the system-wide control socket, which another daemon may own.
            .arg("--control-socket")
            .arg(&socket)
            // The other sections compare with native telemetry, which has no user-level spans;
            // the user-code section turns them on and measures what they add.
            .args(if extra_args.contains(&"--user-spans") { &[][..] } else { &["--user-spans", "off"][..] })
            .args(extra_args)
            .env_remove("OTEL_METRICS_EXPORTER")
            .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
            .envs(env.iter().copied())
            .env("RUST_LOG", rust_log);
        let started = Instant::now();
        let mut proc = Proc::spawn(name, command, dir)?;
        procs::wait_for_file(&ready, &mut proc, Duration::from_secs(90))?;
        Ok((Daemon { proc, socket }, started.elapsed()))
    }

    /// Its counters, table sizes, losses and export state (`tango-tracer ctl stats --json`).
    pub(crate) fn stats(&self, programs: &Programs) -> anyhow::Result<StatsView> {
        let output = Command::new(&programs.tracer)
            .arg("ctl")
            .arg("--socket")
            .arg(&self.socket)
            .args(["stats", "--json"])
            .env("RUST_LOG", "warn")
            .output()
            .context("running tango-tracer ctl stats")?;
        let text = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!("tango-tracer ctl stats: {}: {}", output.status, String::from_utf8_lossy(&output.stderr));
        }
        match serde_json::from_str::<CtlAnswer>(&text) {
            Ok(CtlAnswer::Stats(stats)) => Ok(stats),
            Ok(other) => bail!("tango-tracer ctl stats answered {other:?}"),
            Err(error) => bail!("tango-tracer ctl stats printed {text:?}: {error}"),
        }
    }

    /// Stops it (SIGTERM: it flushes) and reads its totals, when it logged them.
    pub(crate) fn stop(self) -> anyhow::Result<Option<DaemonTotals>> {
        Ok(self.stop_timed()?.0)
    }

    /// Like [`stop`](Self::stop), also returning how long it took from SIGTERM to its exit.
    pub(crate) fn stop_timed(mut self) -> anyhow::Result<(Option<DaemonTotals>, Duration)> {
        let sent = Instant::now();
        self.proc.stop(Duration::from_secs(60));
        let took = sent.elapsed();
        match self.proc.exited() {
            Some(status) if status.success() => Ok((DaemonTotals::parse(&self.proc.stderr()), took)),
            status => bail!("tango-tracer ended with {status:?}:\n{}", self.proc.stderr_tail()),
        }
    }
}

/// What a daemon logged on exit (at `info`): `stopped: M GIOP messages, S spans, U unparsable,
/// L probe records lost; export: A submitted, B delivered, C dropped, D held; lost: …`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DaemonTotals {
    pub messages: u64,
    pub spans: u64,
    pub unparsable: u64,
    /// Probe records the kernel could not put into the full ring buffer.
    pub lost_records: u64,
    /// Spans of all destinations together, when the line has them.
    pub export: Option<ExportTotals>,
    /// Device log records of all destinations together, when the line has them.
    pub logs: Option<ExportTotals>,
    /// Everything lost, by stage and cause, as the line words it (`none` when nothing was).
    pub lost: Option<String>,
}

/// The export part of the stop line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportTotals {
    pub submitted: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub held: u64,
}

fn numbers_in(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect()
}

impl DaemonTotals {
    pub fn parse(log: &str) -> Option<DaemonTotals> {
        let line = log.lines().rev().find(|l| l.contains("stopped: ") && l.contains("probe records lost"))?;
        let rest = line.split("stopped: ").nth(1)?;
        // The lost causes name destinations (URLs with ports): split them off before counting.
        let (counts, lost) = match rest.split_once("; lost: ") {
            Some((counts, lost)) => (counts, Some(lost.trim().to_string())),
            None => (rest, None),
        };
        let (counts, logs) = match counts.split_once("; logs export: ") {
            Some((counts, logs)) => (counts, Some(logs)),
            None => (counts, None),
        };
        let (pipeline, export) = match counts.split_once("; export: ") {
            Some((pipeline, export)) => (pipeline, Some(export)),
            None => (counts, None),
        };
        let [messages, spans, unparsable, lost_records] = numbers_in(pipeline)[..] else {
            return None;
        };
        let totals = |part: Option<&str>| match part.map(numbers_in).as_deref() {
            Some(&[submitted, delivered, dropped, held]) => {
                Ok(Some(ExportTotals { submitted, delivered, dropped, held }))
            }
            Some(_) => Err(()),
            None => Ok(None),
        };
        let (export, logs) = (totals(export).ok()?, totals(logs).ok()?);
        Some(DaemonTotals { messages, spans, unparsable, lost_records, export, logs, lost })
    }
}

/// The client's JSON line.
#[derive(serde::Deserialize)]
pub(crate) struct ClientOutput {
    pytango: String,
    calls_per_s: f64,
    cpu_s: f64,
    p50_us: f64,
    p99_us: f64,
}

/// Runs the whole round-trip benchmark; `dir` keeps logs.
pub fn run(programs: &Programs, sizes: Sizes, dir: &Path) -> anyhow::Result<RoundTrips> {
    anyhow::ensure!(sizes.rounds >= 1 && sizes.calls >= 1, "nothing to run");
    let marker = format!("bench-{}", std::process::id());
    let marked = [(MARKER, marker.clone())];
    // One receiver per daemon setup, so each one's spans per call can be told apart.
    let traced_receiver = Receiver::start("receiver-traced", programs, dir)?;
    let metrics_receiver = Receiver::start("receiver-metrics", programs, dir)?;
    let sampled_receiver = Receiver::start("receiver-sampled", programs, dir)?;
    let native_receiver = Receiver::start("receiver-native", programs, dir)?;
    let native = native_env(&native_receiver.traces_url);
    let receiver_of = |setup: DaemonSetup| match setup {
        DaemonSetup::Spans => &traced_receiver,
        DaemonSetup::Metrics => &metrics_receiver,
        DaemonSetup::Sampling => &sampled_receiver,
    };

    // Untraced and traced runs use the same marked server: they differ only by the daemon.
    let marked_server = Server::start("server-marked", programs, dir, &marked)?;
    let plain_server = Server::start("server-plain", programs, dir, &[])?;
    let native_server = Server::start("server-native", programs, dir, &native)?;

    let mut result = RoundTrips {
        sizes,
        samples: Vec::new(),
        pytango: String::new(),
        traced_requests: RequestStats::default(),
        native_requests: RequestStats::default(),
        metrics_requests: RequestStats::default(),
        sampled_requests: RequestStats::default(),
        daemon_memory_kib: Vec::new(),
        daemon_start: Vec::new(),
        calls_made: Vec::new(),
        quiet_waited: Duration::ZERO,
    };
    let mut quiet_budget = sizes.quiet_budget;
    let mut daemons = 0;
    for round in 0..sizes.rounds {
        let mut order = [
            Config::Untraced,
            Config::Native,
            Config::TracedMetrics,
            Config::Traced,
            Config::NotSelected,
            Config::TracedSampled,
        ];
        if round % 2 == 1 {
            order.reverse();
        }
        // The running daemon, its setup and its `/metrics` address.
        let mut daemon: Option<(Daemon, DaemonSetup, Option<String>)> = None;
        for config in order {
            let setup = config.daemon_setup();
            if daemon.as_ref().map(|d| d.1) != setup
                && let Some((running, _, _)) = daemon.take()
            {
                let _ = running.stop()?;
            }
            if let Some(setup) = setup
                && daemon.is_none()
            {
                let name = format!("daemon-{daemons}");
                let (started, took, metrics) =
                    Daemon::start_setup(&name, programs, dir, (&marker, receiver_of(setup)), setup)?;
                daemons += 1;
                if setup == DaemonSetup::Spans {
                    result.daemon_start.push(took);
                }
                daemon = Some((started, setup, metrics));
            }
            let (server, env): (&Server, &[(&str, String)]) = match config {
                Config::Untraced | Config::Traced | Config::TracedMetrics | Config::TracedSampled => {
                    (&marked_server, &marked)
                }
                Config::Native => (&native_server, &native),
                Config::NotSelected => (&plain_server, &[]),
            };
            let daemon_pid = daemon.as_ref().map(|d| d.0.proc.pid());
            let ours: Vec<u32> = [
                &traced_receiver.proc,
                &metrics_receiver.proc,
                &sampled_receiver.proc,
                &native_receiver.proc,
                &marked_server.proc,
                &plain_server.proc,
                &native_server.proc,
            ]
            .iter()
            .map(|p| p.pid())
            .chain(daemon_pid)
            .chain([std::process::id()])
            .collect();
            // Other users of a shared machine (builds) disturb runs: wait a little for calm.
            let budget_before = quiet_budget;
            procs::wait_for_quiet(&ours, QUIET_THRESHOLD, &mut quiet_budget);
            result.quiet_waited += budget_before - quiet_budget;
            let receiver = match (config, setup) {
                (Config::Native, _) => Some(native_receiver.proc.pid()),
                (Config::NotSelected, _) | (_, None) => None,
                (_, Some(setup)) => Some(receiver_of(setup).proc.pid()),
            };
            let pids = Pids { daemon: daemon_pid, receiver, ours: &ours };
            let mut command = python_command(programs, env);
            command
                .arg(&programs.client)
                .arg(&server.url)
                .arg(sizes.calls.to_string())
                .arg("--warmup")
                .arg(sizes.warmup.to_string());
            let job = ClientJob {
                name: format!("client-{round}-{}", config.short()),
                command,
                server_pid: server.proc.pid(),
                calls: sizes.calls,
                warmup: sizes.warmup,
            };
            // The programs' own time, counted in the traced runs only: the statistics cost a
            // little themselves.
            let bpf_before = match (config, daemon_pid) {
                (Config::Traced, Some(pid)) => Some((BpfStats::enable()?, bpf::program_times(pid))),
                _ => None,
            };
            let mut sample = run_client(dir, job, (round, config), &pids)?;
            if let (Some((stats, before)), Some(pid)) = (bpf_before, daemon_pid) {
                let after = bpf::program_times(pid);
                drop(stats);
                let calls_run = (sizes.calls + sizes.warmup) as f64;
                sample.0.bpf = bpf::ran_between(&before, &after)
                    .into_iter()
                    .map(|(name, ns, runs)| (name, ns as f64 / calls_run, runs as f64 / calls_run))
                    .collect();
            }
            if let Some((_, _, Some(listen))) = &daemon {
                // The snapshot is published every second: let the run's last calls be in it.
                std::thread::sleep(Duration::from_millis(1500));
                sample.0.metrics_counted = Some(server_calls_counted(listen)?);
            }
            let bpf_us: f64 = sample.0.bpf.iter().map(|(_, ns, _)| ns).sum::<f64>() / 1e3;
            eprintln!(
                "tango-bench: round {}/{} {:<38} {:>8.0} calls/s  p50 {:>6.1} us  p99 {:>7.1} us  daemon {:>5} us/call{}  other load {:.2}",
                round + 1,
                sizes.rounds,
                config.label(),
                sample.0.calls_per_s,
                sample.0.p50_us,
                sample.0.p99_us,
                sample.0.daemon_cpu_us.map_or("–".into(), |v| format!("{v:.1}")),
                if sample.0.bpf.is_empty() { String::new() } else { format!("  eBPF {bpf_us:.2} us/call") },
                sample.0.foreign_cores.unwrap_or(f64::NAN),
            );
            if config == Config::Traced
                && let Some(memory) = daemon_pid.and_then(procs::memory_kib)
            {
                result.daemon_memory_kib.push(memory);
            }
            result.pytango = sample.1;
            result.samples.push(sample.0);
            result.calls_made.push((config, sizes.calls + sizes.warmup));
        }
        if let Some((running, _, _)) = daemon.take() {
            let _ = running.stop()?;
        }
    }
    // Native servers export on a timer: stopping them flushes what they hold.
    drop(native_server);
    drop(marked_server);
    drop(plain_server);
    result.traced_requests = traced_receiver.finish();
    result.metrics_requests = metrics_receiver.finish();
    result.sampled_requests = sampled_receiver.finish();
    result.native_requests = native_receiver.finish();
    Ok(result)
}

/// The count of every `rpc_server_call_duration_seconds` series of the client's reads of
/// [`ATTRIBUTE`] at `http://listen/metrics` (each outcome), added up.
fn server_calls_counted(listen: &str) -> anyhow::Result<u64> {
    use std::io::{Read as _, Write as _};
    let mut stream =
        std::net::TcpStream::connect(listen).with_context(|| format!("connecting to {listen}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {listen}\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text).with_context(|| format!("reading http://{listen}/metrics"))?;
    // The server side's operation is the IDL method (`read_attributes_5`).
    let (device, argument) = (format!("device=\"{DEVICE}\""), format!("argument=\"{ATTRIBUTE}\""));
    Ok(text
        .lines()
        .filter(|l| l.starts_with("rpc_server_call_duration_seconds_count{"))
        .filter(|l| l.contains(&device) && l.contains("operation=\"read_attributes") && l.contains(&argument))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

/// Processes whose CPU a client run accounts for.
pub(crate) struct Pids<'a> {
    pub(crate) daemon: Option<u32>,
    pub(crate) receiver: Option<u32>,
    /// Every process of the benchmark, idle or not.
    pub(crate) ours: &'a [u32],
}

/// One run of a read-loop client (`bench_read_loop.py` or `bench_attribute_loop.py`), which
/// prints [`ClientOutput`].
pub(crate) struct ClientJob {
    /// Names its log files.
    pub(crate) name: String,
    pub(crate) command: Command,
    pub(crate) server_pid: u32,
    /// Timed calls and untimed calls before them.
    pub(crate) calls: usize,
    pub(crate) warmup: usize,
}

/// Runs one client to completion; `(round, config)` name the run.
pub(crate) fn run_client(
    dir: &Path,
    job: ClientJob,
    (round, config): (usize, Config),
    pids: &Pids<'_>,
) -> anyhow::Result<(Sample, String)> {
    let ClientJob { name, command, server_pid, calls, warmup } = job;
    let server_pid = Some(server_pid);
    let cpu_of = |pid: Option<u32>| pid.and_then(procs::cpu_time);
    let before = (cpu_of(server_pid), cpu_of(pids.daemon), cpu_of(pids.receiver));
    let switches_before = pids.daemon.and_then(procs::context_switches);
    let machine_before = procs::CpuSnapshot::take(pids.ours);
    let other_tracer = !procs::others_named(procs::TRACER_COMM, pids.ours).is_empty();

    let mut client = Proc::spawn(&name, command, dir)?;
    // Generous: a round trip takes well under 2 ms even on a loaded 2-core machine.
    let timeout = Duration::from_secs(60) + Duration::from_millis(2 * (calls + warmup) as u64);
    let status = client.wait(timeout)?;

    let foreign_cores = machine_before
        .zip(procs::CpuSnapshot::take(pids.ours))
        .and_then(|(before, after)| before.foreign_cores(&after));
    let calls_run = (calls + warmup) as f64;
    let per_call = |before: Option<Duration>, pid: Option<u32>| -> Option<f64> {
        let used = cpu_of(pid)?.checked_sub(before?)?;
        Some(used.as_secs_f64() * 1e6 / calls_run)
    };
    let server_cpu_us = per_call(before.0, server_pid);
    let daemon_cpu_us = per_call(before.1, pids.daemon);
    let receiver_cpu_us = per_call(before.2, pids.receiver);
    let daemon_switches = pids
        .daemon
        .and_then(procs::context_switches)
        .zip(switches_before)
        .map(|(after, before)| after.saturating_sub(before) as f64 / calls_run);

    if !status.success() {
        bail!("{name} failed ({status}):\n{}", client.stderr_tail());
    }
    let stdout = client.stdout();
    let line = stdout.lines().last().unwrap_or_default();
    let output: ClientOutput = serde_json::from_str(line)
        .with_context(|| format!("{name} printed {stdout:?}, not its JSON result"))?;
    let sample = Sample {
        config,
        round,
        calls_per_s: output.calls_per_s,
        p50_us: output.p50_us,
        p99_us: output.p99_us,
        client_cpu_us: output.cpu_s * 1e6 / calls as f64,
        server_cpu_us,
        daemon_cpu_us,
        daemon_switches,
        receiver_cpu_us,
        foreign_cores,
        other_tracer,
        bpf: Vec::new(),
        metrics_counted: None,
    };
    Ok((sample, output.pytango))
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
    fn reads_the_receiver_log() {
        let log = "otlp-receiver: OTLP/HTTP http://127.0.0.1:40001/v1/traces OTLP/gRPC http://127.0.0.1:40002\n\
                   otlp-receiver: http request: 3 resource_spans, 512 spans (gzip)\n\
                   otlp-receiver: http request: 2 resource_spans, 17 spans\n\
                   otlp-receiver: 529 spans in 2 requests\n";
        assert_eq!(receiver_endpoint(log).as_deref(), Some("http://127.0.0.1:40001/v1/traces"));
        let stats = parse_receiver_log(log);
        assert_eq!(stats.requests, vec![(3, 512), (2, 17)]);
        assert_eq!(stats.totals, Some((529, 2)));
        assert_eq!(stats.spans(), 529);
    }

    #[test]
    fn reads_the_daemon_totals() {
        let log = "[INFO] stopping: ending open calls and flushing exporters\n\
                   [2025-01-01T00:00:00Z INFO tango_tracer::daemon] stopped: 120 GIOP messages, 61 spans, 0 unparsable, 7 probe records lost\n";
        let totals = DaemonTotals::parse(log);
        let old =
            DaemonTotals { messages: 120, spans: 61, unparsable: 0, lost_records: 7, ..Default::default() };
        assert_eq!(totals, Some(old));
        assert_eq!(DaemonTotals::parse("nothing"), None);
        let log = "[2026-01-01T00:00:00Z INFO  tango_tracer::run] stopped: 2400 GIOP messages, 1200 spans, \
                   0 unparsable, 0 probe records lost; export: 1200 submitted, 700 delivered, 500 dropped, 0 held; \
                   lost: export to http://127.0.0.1:40001/v1/traces not delivered at shutdown: 500\n";
        let totals = DaemonTotals::parse(log).unwrap();
        assert_eq!(
            (totals.messages, totals.spans, totals.unparsable, totals.lost_records),
            (2400, 1200, 0, 0)
        );
        let export = ExportTotals { submitted: 1200, delivered: 700, dropped: 500, held: 0 };
        assert_eq!(totals.export, Some(export));
        assert_eq!(
            totals.lost.as_deref(),
            Some("export to http://127.0.0.1:40001/v1/traces not delivered at shutdown: 500")
        );
        let log = "[2026-01-01T00:00:00Z INFO  tango_tracer::run] stopped: 20 GIOP messages, 10 spans, \
                   0 unparsable, 0 probe records lost; export: 10 submitted, 10 delivered, 0 dropped, 0 held; \
                   logs export: 5000 submitted, 4990 delivered, 0 dropped, 10 held; lost: none\n";
        let totals = DaemonTotals::parse(log).unwrap();
        assert_eq!(totals.export, Some(ExportTotals { submitted: 10, delivered: 10, dropped: 0, held: 0 }));
        assert_eq!(
            totals.logs,
            Some(ExportTotals { submitted: 5000, delivered: 4990, dropped: 0, held: 10 })
        );
    }
}
