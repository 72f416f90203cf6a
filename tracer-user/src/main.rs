//! `tango-tracer`: the host daemon and its companion commands.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use tango_tracer::{
    run as daemon,
    settings::{ConfigFile, DEFAULT_STORE, Loader, RunFlags, Settings, check_stores},
};

/// Zero-instrumentation tracing of Tango Controls device servers and clients.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Trace every Tango process on this host until SIGINT/SIGTERM (needs root); SIGHUP reloads
    /// the configuration file.
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
    /// Validate the configuration file and print the effective settings of `run` with the
    /// source of each (default, file, env, flag); takes the flags of `run` too.
    CheckConfig(Box<CheckConfigArgs>),
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

#[derive(Parser, Debug)]
struct RunArgs {
    /// Configuration file (TOML) [default: /etc/tango-tracer/config.toml, read if present;
    /// env TANGO_TRACER_CONFIG]. Its values give way to the environment and to these flags.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: RunFlags,
}

#[derive(Parser, Debug)]
struct CheckConfigArgs {
    /// Print the settings as one JSON list of {key, value, source}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    run: RunArgs,
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

/// The settings of `run` and `check-config`: the file, the environment, the command line.
fn settings(args: &RunArgs) -> anyhow::Result<(Loader, Settings)> {
    let env = |name: &str| std::env::var(name).ok();
    let loader = Loader { file: ConfigFile::choose(args.config.clone(), &env), flags: args.flags.clone() };
    let settings = loader.load()?;
    Ok((loader, settings))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    // Before anything touches the system (the store, sockets, probes): a missing capability is
    // named, not met as some later failure.
    daemon::privileges::check()?;
    let (loader, settings) = settings(&args)?;
    let env = |name: &str| std::env::var(name).ok();
    let options = settings.run_options(&env)?;
    check_stores(options.destinations.iter().chain(&options.log_destinations))?;
    match &settings.file {
        Some(path) => log::info!("configuration file {}", path.display()),
        None => log::info!("no configuration file at {}: built-in defaults", loader.file.path.display()),
    }
    daemon::run(options, Some(daemon::Reloader { loader, settings })).await
}

/// Validates the configuration and prints the effective settings with their sources.
fn check_config(args: CheckConfigArgs) -> anyhow::Result<()> {
    let (loader, settings) = settings(&args.run)?;
    let env = |name: &str| std::env::var(name).ok();
    let options = settings.run_options(&env)?;
    if args.json {
        let report = serde_json::json!({
            "file": loader.file.path,
            "file_read": settings.file.is_some(),
            "settings": settings.rows(),
            "span_destinations": options.destinations.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "log_destinations": options.log_destinations.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "metrics_destinations": options.metrics.destinations.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    match &settings.file {
        Some(path) => println!("# configuration file {} ({}): valid", path.display(), loader.file.source),
        None => println!("# no configuration file at {}: built-in defaults", loader.file.path.display()),
    }
    let rows = settings.rows();
    let width = rows.iter().map(|r| r.key.len() + r.value.len() + 3).max().unwrap_or(0);
    for row in rows {
        let setting = format!("{} = {}", row.key, row.value);
        println!("{setting:<width$}  # {}", row.source);
    }
    let list = |destinations: &[tracer_export::Destination]| {
        if destinations.is_empty() {
            "(none)".to_string()
        } else {
            destinations.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        }
    };
    println!("# spans go to: {}", list(&options.destinations));
    println!("# device logs go to: {}", list(&options.log_destinations));
    println!(
        "# metrics go to: {}{}",
        list(&options.metrics.destinations),
        match options.metrics.listen {
            Some(addr) => format!("; served at http://{addr}/metrics"),
            None => String::new(),
        }
    );
    Ok(())
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
    if matches!(cli.command, Command::Run(_)) {
        // A SIGHUP (a reload) before the daemon takes it must not end the daemon, its default
        // action: ignored (discarded, never pending) until the daemon's handler replaces this.
        // SAFETY: sets this process's disposition of one signal; no memory is touched.
        unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    }
    let result = match cli.command {
        // One thread: assembly and export hand nothing across threads, which on a busy host is
        // cheaper than any parallelism the daemon could use.
        Command::Run(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
            // Spawned rather than driven by `block_on`: a task woken on its own thread (a timer,
            // the ring buffer) is queued directly, where `block_on`'s waker writes the runtime's
            // eventfd and costs the loop a second `epoll_wait` at every wake-up.
            .and_then(|rt| {
                rt.block_on(async { tokio::spawn(run(*args)).await.context("the daemon's task panicked")? })
            }),
        Command::Show(args) => show(args),
        Command::Report(args) => report(args),
        Command::Compare(args) => compare(args),
        Command::Ctl(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
            .and_then(|rt| rt.block_on(ctl(args))),
        Command::Top(args) => top(args),
        Command::CheckConfig(args) => check_config(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tango_tracer::logging::fatal(&error);
            ExitCode::FAILURE
        }
    }
}
