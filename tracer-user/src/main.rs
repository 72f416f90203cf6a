//! `tango-tracer`: the host daemon and its companion commands.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use tango_tracer::{
    peers::{PeerKey, PeerOptions},
    run::{self as daemon, RunOptions},
    sampling::TailSampling,
};
use tracer_export::{ConsoleStream, Destination, ExportConfig, Signal};

/// Zero-instrumentation tracing of Tango Controls device servers and clients.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Trace every Tango process on this host until SIGINT/SIGTERM (needs root).
    Run(Box<RunArgs>),
    /// Print the traces kept in the embedded store as trees, with their device log records.
    Show(ShowArgs),
    /// Ask or change a running daemon: traced processes and devices, their configuration.
    Ctl(CtlArgs),
    /// Live view of a running daemon: per device and operation rates, errors and latency over
    /// the last seconds, processes, events and the daemon's health.
    Top(TopArgs),
    /// Per device, operation and argument of a session in the store: count, rate, errors,
    /// percentiles; the slowest traces with their critical path; event delivery delays.
    Report(ReportArgs),
    /// What got faster or slower from session A to session B.
    Compare(CompareArgs),
}

#[derive(Parser, Debug)]
struct TopArgs {
    /// The daemon's control socket.
    #[arg(long, default_value = tango_tracer::run::ctl::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print one snapshot as text and exit.
    #[arg(long)]
    once: bool,
    /// Print one snapshot as JSON and exit (rows in the order of --sort).
    #[arg(long)]
    json: bool,
    /// What the rows are ordered by, largest first (keys t, r, p, e in the view).
    #[arg(long, value_enum, default_value = "p99")]
    sort: tango_tracer::top::SortKey,
}

#[derive(Parser, Debug)]
struct ReportArgs {
    /// File of the embedded store (an SQLite database).
    #[arg(long, env = "TANGO_TRACER_STORE", default_value = DEFAULT_STORE)]
    store: PathBuf,
    /// The session (default: the newest).
    #[arg(long)]
    session: Option<String>,
    /// Print the rows as one JSON list, in the text's order.
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML page with a latency histogram per row.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

#[derive(Parser, Debug)]
struct CompareArgs {
    /// The session before.
    a: String,
    /// The session after.
    b: String,
    /// File of the embedded store (an SQLite database).
    #[arg(long, env = "TANGO_TRACER_STORE", default_value = DEFAULT_STORE)]
    store: PathBuf,
    /// Print the rows as one JSON list.
    #[arg(long)]
    json: bool,
    /// Smallest shift of the median that counts as a change, relative to A's median.
    #[arg(long, default_value_t = 0.2)]
    min_shift_ratio: f64,
    /// Smallest shift of the median that counts as a change, in ms (the larger of the two applies).
    #[arg(long, default_value_t = 0.2)]
    min_shift_ms: f64,
}

/// Where the embedded store is, unless told.
const DEFAULT_STORE: &str = "/var/lib/tango-tracer/store.db";

#[derive(Parser, Debug)]
struct CtlArgs {
    /// The daemon's control socket.
    #[arg(long, default_value = tango_tracer::run::ctl::DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    action: CtlAction,
}

#[derive(Subcommand, Debug)]
enum CtlAction {
    /// Traced processes and devices with their effective configuration and where each value came from.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Start tracing the devices matching PATTERN (`*` matches anything, `test/*`).
    Start { pattern: String },
    /// Stop tracing the devices matching PATTERN.
    Stop { pattern: String },
    /// Send the matching devices' spans to EXPORTER ENDPOINT pairs (`http http://h:4318/v1/traces`).
    Endpoints {
        pattern: String,
        #[arg(num_args = 2.., required = true)]
        pairs: Vec<String>,
    },
    /// Export the device logs of the devices matching PATTERN, or not (like SetTelemetryLogging).
    Logging {
        pattern: String,
        #[arg(value_enum)]
        state: OnOff,
    },
    /// Send the matching devices' logs to EXPORTER ENDPOINT pairs (`http http://h:4318/v1/logs`).
    LogEndpoints {
        pattern: String,
        #[arg(num_args = 2.., required = true)]
        pairs: Vec<String>,
    },
    /// Forget what `ctl` changed for PATTERN.
    Reset { pattern: String },
    /// Whether the daemon is healthy (exit status 0) or not (1, with the reasons): probes
    /// attached, no export destination failing for long, no probe records lost lately.
    Health {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Counters and table sizes of every stage of the daemon.
    Stats {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Exporter {
    /// OTLP to OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT with OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL;
    /// device logs to OTEL_EXPORTER_OTLP_[LOGS_]ENDPOINT (`/v1/logs`).
    Otlp,
    /// One line per span on standard output, as spans finish.
    Console,
    /// The embedded store (an SQLite database; JSON lines for a `.jsonl` path), read back with
    /// `tango-tracer show` and `report`.
    Store,
}

#[derive(Parser, Debug)]
struct RunArgs {
    /// Where spans and device logs go. Default: OTLP when OTEL_EXPORTER_OTLP_[TRACES_|LOGS_]ENDPOINT
    /// is set (a signal without an endpoint goes to the store), else the store.
    #[arg(long = "exporter", value_enum)]
    exporters: Vec<Exporter>,
    /// File of the embedded store: an SQLite database, or JSON lines (no sessions) for a `.jsonl` path.
    #[arg(long, env = "TANGO_TRACER_STORE", default_value = DEFAULT_STORE)]
    store: PathBuf,
    /// Name of what this run records in the store (default: the start time, UTC); a name given
    /// again adds to that session.
    #[arg(long)]
    session: Option<String>,
    /// Size limit of the database store (KiB, MiB, GiB); past it the oldest spans and log
    /// records are deleted first, and counted per session.
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    store_max_bytes: u64,
    /// Longest time a finished span waits before it is exported.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    export_interval: Duration,
    /// Memory for spans waiting to be exported, per destination (KiB, MiB, GiB); when it is full
    /// (a backend down), the oldest spans are dropped and counted. Each destination of device
    /// log records has as much again for its records.
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    export_memory: u64,
    /// Longest time the export takes at stop; what is not delivered by then is counted.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    shutdown_timeout: Duration,
    /// Bytes copied from each GIOP message (headers and Tango arguments fit in 1–2 KiB).
    #[arg(long, default_value_t = 2048)]
    capture_bytes: u32,
    /// Bytes copied of each device log message; longer messages are cut (and counted).
    #[arg(long, default_value_t = 4096)]
    log_bytes: u32,
    /// File created once probes are attached to all current target processes.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Trace only processes whose environment contains NAME=VALUE.
    #[arg(long, value_parser = parse_name_value)]
    select_env: Option<(String, String)>,
    /// Trace only these processes (repeatable; combines with --select-env).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Trace only processes in the network namespace of PATH (`/run/netns/NAME`,
    /// `/proc/PID/ns/net`): one simulated host of several on one machine, or a host without its
    /// containers. Default: every process of the host.
    #[arg(long, value_name = "PATH")]
    netns: Option<PathBuf>,
    /// Also trace operations native telemetry leaves out: ping, state, status, info, …
    #[arg(long)]
    all_operations: bool,
    /// Write every probe record to this file as JSON lines (for replay and benchmarks).
    #[arg(long)]
    record: Option<PathBuf>,
    /// Policy for processes whose Tango configuration says nothing: `on` traces them, `off` traces
    /// only processes and devices that enable telemetry themselves.
    #[arg(long, value_enum, default_value = "on")]
    default_telemetry: OnOff,
    /// User code inside requests as spans of their own (always_executed_hook, each attribute
    /// read, each command; probes inside libtango): `off` attaches none of those probes.
    #[arg(long, value_enum, default_value = "on")]
    user_spans: OnOff,
    /// Control socket for `tango-tracer ctl`.
    #[arg(long, default_value = tango_tracer::run::ctl::DEFAULT_SOCKET)]
    control_socket: PathBuf,
    /// Shared key of the daemons of all hosts (at least 32 random bytes, e.g. 64 hex digits; a
    /// file only its owner can read). Given, calls between hosts become one trace.
    #[arg(long)]
    peer_key: Option<PathBuf>,
    /// Where to listen for the daemons of other hosts; every host's daemon uses the same port.
    #[arg(long, default_value = "0.0.0.0:4320", requires = "peer_key")]
    peer_listen: std::net::SocketAddr,
    /// Longest time a server span of a call from another host waits for that host's daemon.
    #[arg(long, default_value = "1500ms", value_parser = parse_duration, requires = "peer_key")]
    peer_wait: Duration,
    /// How long a host whose daemon did not answer is left alone before it is asked again.
    #[arg(long, default_value = "3s", value_parser = parse_duration, requires = "peer_key")]
    peer_retry: Duration,
    /// Tail sampling (off by default): whole traces are kept when a span is slower than the
    /// threshold or holds an error, and a fraction of the others by trace id (the same on every
    /// host), e.g. `slower-than=5ms,errors,ratio=0.05`; also `decision-wait=3s` (how long a
    /// trace waits for late spans after its last one) and `max-held=200000`.
    #[arg(long, env = "TANGO_TRACER_TAIL_SAMPLING", value_parser = TailSampling::parse)]
    tail_sampling: Option<TailSampling>,
    #[command(flatten)]
    metrics: tango_tracer::metrics::MetricsArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Parser, Debug)]
struct ShowArgs {
    /// File of the embedded store.
    #[arg(long, env = "TANGO_TRACER_STORE", default_value = DEFAULT_STORE)]
    store: PathBuf,
    /// Only this trace (full or leading hex digits of the trace id).
    #[arg(long)]
    trace: Option<String>,
    /// Only the last N traces (with --logs: the last N log records).
    #[arg(long)]
    last: Option<usize>,
    /// List the device log records alone, one per line in order of time, those logged outside
    /// any request included (without it, each record is shown under the span it was logged in).
    #[arg(long)]
    logs: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) =
        text.find(|c: char| !c.is_ascii_digit() && c != '.').map(|i| text.split_at(i)).unwrap_or((text, "s"));
    let value: f64 = number.parse().map_err(|_| format!("not a duration: {text}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit in {text} (use ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| format!("not a size: {text} (e.g. 64MiB)"))?;
    let unit = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        _ => return Err(format!("unknown unit in {text} (use KiB, MiB or GiB)")),
    };
    value.checked_mul(unit).filter(|&bytes| bytes > 0).ok_or_else(|| format!("size out of range: {text}"))
}

fn parse_name_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {text}"))
}

/// Where spans and where device logs go: (spans, logs).
fn destinations(args: &RunArgs) -> anyhow::Result<(Vec<Destination>, Vec<Destination>)> {
    let env = |name: &str| std::env::var(name).ok();
    let spans_env = tracer_export::destinations_from_otel_env(env)
        .context("reading the OTEL_EXPORTER_OTLP_* environment")?;
    let logs_env = tracer_export::otel_env_destinations(Signal::Logs, env)
        .context("reading the OTEL_LOGS_EXPORTER and OTEL_EXPORTER_OTLP_* environment")?;
    let defaulted = args.exporters.is_empty();
    let exporters = if defaulted {
        vec![if spans_env.is_some() || logs_env.is_some() { Exporter::Otlp } else { Exporter::Store }]
    } else {
        args.exporters.clone()
    };
    let store = Destination::Store { path: args.store.clone() };
    let (mut spans, mut logs) = (Vec::new(), Vec::new());
    for exporter in exporters {
        match exporter {
            Exporter::Otlp => {
                if spans_env.is_none() && logs_env.is_none() {
                    bail!(
                        "--exporter otlp needs OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT \
                         or OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"
                    );
                }
                // Left to their default, a signal the environment says nothing about goes to
                // the store.
                match &spans_env {
                    Some(list) => spans.extend(list.iter().cloned()),
                    None if defaulted => spans.push(store.clone()),
                    None => {}
                }
                match &logs_env {
                    Some(list) => logs.extend(list.iter().cloned()),
                    None if defaulted => logs.push(store.clone()),
                    None => {}
                }
            }
            Exporter::Console => {
                spans.push(Destination::Console { stream: ConsoleStream::Stdout });
                logs.push(Destination::Console { stream: ConsoleStream::Stdout });
            }
            Exporter::Store => {
                spans.push(store.clone());
                logs.push(store.clone());
            }
        }
    }
    spans.dedup();
    logs.dedup();
    for destination in spans.iter().chain(&logs) {
        if let Destination::Store { path } = destination {
            // Refused now rather than found out at the first write, spans lost.
            tracer_export::check_store(path).map_err(|err| {
                anyhow::anyhow!(
                    "{err}; give --store (or TANGO_TRACER_STORE) a file path the daemon can write"
                )
            })?;
        }
    }
    Ok((spans, logs))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    // Before anything touches the system (the store, sockets, probes): a missing capability is
    // named, not met as some later failure.
    daemon::privileges::check()?;
    let (min, max) =
        (tango_tracer::probe::attach::MIN_CAPTURE_BYTES, tango_tracer::probe::attach::MAX_CAPTURE_BYTES);
    if !(min..=max).contains(&args.capture_bytes) {
        bail!(
            "--capture-bytes must be between {min} and {max}: a GIOP header and the Tango arguments need {min}"
        );
    }
    let (min, max) = (tango_tracer::probe::attach::MIN_LOG_BYTES, tango_tracer::probe::attach::MAX_LOG_BYTES);
    if !(min..=max).contains(&args.log_bytes) {
        bail!("--log-bytes must be between {min} and {max}");
    }
    if args.export_interval > Duration::from_secs(5) {
        bail!("--export-interval must be at most 5s so traces show up promptly");
    }
    let export = ExportConfig {
        flush_interval: args.export_interval,
        max_backlog_bytes: args.export_memory,
        shutdown_timeout: args.shutdown_timeout,
        store_session: args.session.clone().unwrap_or_else(default_session),
        store_max_bytes: args.store_max_bytes,
        ..ExportConfig::default()
    };
    let peers = peer_options(&args)?;
    let net_ns = match &args.netns {
        Some(path) => Some(tango_tracer::discover::net_namespace_inode(path).context("--netns")?),
        None => None,
    };
    let (destinations, log_destinations) = destinations(&args)?;
    let options = RunOptions {
        destinations,
        log_destinations,
        export,
        capture_bytes: args.capture_bytes,
        log_bytes: args.log_bytes,
        ready_file: args.ready_file,
        select_env: args.select_env,
        select_pids: args.pids,
        net_ns,
        extended_operations: args.all_operations,
        record_to: args.record,
        trace_by_default: args.default_telemetry == OnOff::On,
        user_spans: args.user_spans == OnOff::On,
        control_socket: Some(args.control_socket),
        proc_root: PathBuf::from("/proc"),
        peers,
        tail_sampling: args.tail_sampling,
        metrics: tango_tracer::metrics::MetricsOptions::from_args(&args.metrics, |name| {
            std::env::var(name).ok()
        })?,
    };
    daemon::run(options).await
}

/// A session's default name: the daemon's start time, UTC, to the second.
fn default_session() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let stamp = tracer_export::json::utc_timestamp(now.as_secs() * 1_000_000_000);
    // `2026-11-21T08:03:46.000000Z` → `2026-11-21T08:03:46Z`.
    match stamp.split_once('.') {
        Some((seconds, _)) => format!("{seconds}Z"),
        None => stamp,
    }
}

fn report(args: ReportArgs) -> anyhow::Result<()> {
    use tango_tracer::report;
    let reader = report::open_store(&args.store)?;
    let built = report::build(&reader, args.session.as_deref())?;
    if let Some(path) = &args.html {
        std::fs::write(path, report::render_html(&built))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&built.rows)?);
    } else {
        print!("{}", report::render_text(&built));
    }
    Ok(())
}

fn compare(args: CompareArgs) -> anyhow::Result<()> {
    use tango_tracer::report::{self, compare};
    let reader = report::open_store(&args.store)?;
    let a = report::build(&reader, Some(&args.a))?;
    let b = report::build(&reader, Some(&args.b))?;
    let threshold = compare::Threshold {
        relative: args.min_shift_ratio,
        absolute_ms: args.min_shift_ms,
        ..compare::Threshold::default()
    };
    let rows = compare::compare(&a, &b, threshold);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", compare::render_text(&args.a, &args.b, &rows));
    }
    Ok(())
}

/// Cross-host linking: on when a key is given.
fn peer_options(args: &RunArgs) -> anyhow::Result<Option<PeerOptions>> {
    let Some(path) = &args.peer_key else {
        return Ok(None);
    };
    if args.peer_wait.is_zero() || args.peer_wait > Duration::from_secs(10) {
        bail!("--peer-wait must be more than 0 and at most 10s: server spans are held that long");
    }
    if args.peer_retry < Duration::from_millis(100) || args.peer_retry > Duration::from_secs(300) {
        bail!("--peer-retry must be between 100ms and 300s");
    }
    let mut options = PeerOptions::new(PeerKey::load(path)?);
    options.listen = args.peer_listen;
    options.wait = args.peer_wait;
    options.retry_pause = args.peer_retry;
    // A daemon that does not answer within the wait is no use to the spans waiting for it.
    options.connect_timeout = options.connect_timeout.min(args.peer_wait);
    Ok(Some(options))
}

fn show(args: ShowArgs) -> anyhow::Result<()> {
    let options = tango_tracer::show::ShowOptions { trace: args.trace, last: args.last, logs: args.logs };
    print!("{}", tango_tracer::show::show(&args.store, &options)?);
    Ok(())
}

async fn ctl(args: CtlArgs) -> anyhow::Result<()> {
    use tango_tracer::run::ctl::{CtlAnswer, CtlRequest, render_stats, render_targets, request};
    let (req, json) = match args.action {
        CtlAction::List { json } => (CtlRequest::List, json),
        CtlAction::Start { pattern } => (CtlRequest::Enable { pattern, enable: true }, false),
        CtlAction::Stop { pattern } => (CtlRequest::Enable { pattern, enable: false }, false),
        CtlAction::Endpoints { pattern, pairs } => {
            if pairs.len() % 2 != 0 {
                bail!("give EXPORTER ENDPOINT pairs");
            }
            let exporters = pairs.iter().step_by(2).cloned().collect();
            let endpoints = pairs.iter().skip(1).step_by(2).cloned().collect();
            (CtlRequest::Endpoints { pattern, exporters, endpoints }, false)
        }
        CtlAction::Logging { pattern, state } => {
            (CtlRequest::Logging { pattern, enable: state == OnOff::On }, false)
        }
        CtlAction::LogEndpoints { pattern, pairs } => {
            if pairs.len() % 2 != 0 {
                bail!("give EXPORTER ENDPOINT pairs");
            }
            let exporters = pairs.iter().step_by(2).cloned().collect();
            let endpoints = pairs.iter().skip(1).step_by(2).cloned().collect();
            (CtlRequest::LogEndpoints { pattern, exporters, endpoints }, false)
        }
        CtlAction::Reset { pattern } => (CtlRequest::Reset { pattern }, false),
        CtlAction::Stats { json } => (CtlRequest::Stats, json),
        CtlAction::Health { json } => (CtlRequest::Health, json),
    };
    let answer = request(&args.socket, &req).await?;
    if let CtlAnswer::Health(view) = &answer {
        if json {
            println!("{}", serde_json::to_string_pretty(view)?);
        } else {
            print!("{}", view.text());
        }
        if !view.healthy {
            bail!("unhealthy: {}", view.reasons.join("; "));
        }
        return Ok(());
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    match answer {
        CtlAnswer::Targets { targets, warnings } => print!("{}", render_targets(&targets, &warnings)),
        CtlAnswer::Changed { devices } if devices.is_empty() => {
            println!("no traced device matches yet; the change applies to matching devices when they appear")
        }
        CtlAnswer::Changed { devices } => println!("changed: {}", devices.join(", ")),
        CtlAnswer::Stats(stats) => print!("{}", render_stats(&stats)),
        CtlAnswer::Live(snapshot) => {
            print!("{}", tango_tracer::top::render_text(&snapshot, Default::default()))
        }
        CtlAnswer::Health(_) => {}
        CtlAnswer::Error { message } => bail!("{message}"),
    }
    Ok(())
}

fn top(args: TopArgs) -> anyhow::Result<()> {
    use tango_tracer::top;
    if !args.once && !args.json {
        return top::run_interactive(&args.socket, args.sort);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut snapshot = rt.block_on(top::fetch(&args.socket))?;
    if args.json {
        top::sort_rows(&mut snapshot.rows, args.sort);
        println!("{}", serde_json::to_string_pretty(&snapshot)?);
    } else {
        print!("{}", top::render_text(&snapshot, top::TextOptions { sort: args.sort }));
    }
    Ok(())
}

fn main() -> ExitCode {
    tango_tracer::logging::init();
    let cli = Cli::parse();
    let result = match cli.command {
        // One thread: assembly and export hand nothing across threads, which on a busy host is
        // cheaper than any parallelism the daemon could use.
        Command::Run(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
            .and_then(|rt| rt.block_on(run(*args))),
        Command::Show(args) => show(args),
        Command::Report(args) => report(args),
        Command::Compare(args) => compare(args),
        Command::Ctl(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
            .and_then(|rt| rt.block_on(ctl(args))),
        Command::Top(args) => top(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tango_tracer::logging::fatal(&error);
            ExitCode::FAILURE
        }
    }
}
