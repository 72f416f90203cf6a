//! The daemon's settings and where each comes from: built-in defaults < the configuration file
//! < the environment (`TANGO_TRACER_*`, and the `OTEL_EXPORTER_OTLP_*` endpoints and protocols)
//! < the command line.
//!
//! [`file`] reads the file, [`values`] parses every value the same way for all sources,
//! [`resolve`] layers them into [`Settings`], which [`Settings::run_options`] turns into what
//! the daemon runs with. On SIGHUP the daemon resolves again and [`plan_reload`] says which
//! changes it applies and which need a restart. The per-process Tango configuration
//! (`TANGO_TELEMETRY_*`, `OTEL_*` of the traced processes, tangorc files, device properties) is
//! not a setting of the daemon: it is read per process by [`crate::configure`], on top of these.

pub mod file;
pub mod values;

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tracer_export::{ConsoleStream, Destination, ExportConfig, Signal};

use self::file::FileSettings;
use crate::{
    metrics::MetricsOptions,
    peers::{PeerKey, PeerOptions},
    run::RunOptions,
    sampling::TailSampling,
};

/// The configuration file read when none is named.
pub const DEFAULT_PATH: &str = "/etc/tango-tracer/config.toml";
/// The variable that names another configuration file.
pub const CONFIG_ENV: &str = "TANGO_TRACER_CONFIG";
/// Where the embedded store is, unless told.
pub const DEFAULT_STORE: &str = "/var/lib/tango-tracer/store.db";
/// The control socket, unless told.
pub const DEFAULT_SOCKET: &str = crate::run::ctl::DEFAULT_SOCKET;
/// The daemon's nice value unless configured: below the traced processes, so that on busy cores
/// they run first.
pub const DEFAULT_NICE: i32 = 10;

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(&'static str),
    Flag(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Env(name) => write!(f, "env {name}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// A setting's name in the file, on the command line and in the environment.
#[derive(Debug)]
pub struct Key {
    /// `section.key` in the file.
    pub name: &'static str,
    pub flag: Option<&'static str>,
    pub env: Option<&'static str>,
}

/// A setting's value and where it came from.
#[derive(Clone, Debug)]
pub struct Sourced<T> {
    pub key: &'static Key,
    pub value: T,
    pub source: Source,
}

/// Where spans and device logs go (`--exporter`, `export.exporters`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exporter {
    /// OTLP to the endpoints of `export` (OTEL_EXPORTER_OTLP_[TRACES_|LOGS_]ENDPOINT).
    Otlp,
    /// One line per span on standard output, as spans finish.
    Console,
    /// The embedded store (an SQLite database; JSON lines for a `.jsonl` path), read back with
    /// `tango-tracer show` and `report`.
    Store,
}

impl Exporter {
    fn name(self) -> &'static str {
        match self {
            Exporter::Otlp => "otlp",
            Exporter::Console => "console",
            Exporter::Store => "store",
        }
    }

    fn parse(text: &str) -> Result<Exporter, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "otlp" => Ok(Exporter::Otlp),
            "console" => Ok(Exporter::Console),
            "store" => Ok(Exporter::Store),
            other => Err(format!("unknown exporter {other:?} (expected otlp, console or store)")),
        }
    }
}

/// A tail-sampling rule with the text it was given as.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "String")]
pub struct SamplingRule {
    pub text: String,
    pub rule: TailSampling,
}

impl SamplingRule {
    pub fn parse(text: &str) -> Result<SamplingRule, String> {
        if text.trim().is_empty() {
            return Err("empty rule (leave the setting out for no tail sampling)".to_string());
        }
        Ok(SamplingRule { text: text.trim().to_string(), rule: TailSampling::parse(text)? })
    }
}

impl TryFrom<String> for SamplingRule {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        SamplingRule::parse(&text)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// The options of `tango-tracer run` (and `check-config`). None has a default here: a value
/// not given comes from the environment, the configuration file or the built-in default, in
/// that order.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct RunFlags {
    /// Where spans and device logs go (repeatable). Default: otlp when an endpoint is configured
    /// (OTEL_EXPORTER_OTLP_[TRACES_|LOGS_]ENDPOINT, export.endpoint; a signal without one goes to
    /// the store), else store.
    #[arg(long = "exporter", value_enum)]
    pub exporters: Vec<Exporter>,
    /// File of the embedded store: an SQLite database, or JSON lines (no sessions) for a `.jsonl`
    /// path [default: /var/lib/tango-tracer/store.db].
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Name of what this run records in the store (default: the start time, UTC); a name given
    /// again adds to that session.
    #[arg(long)]
    pub session: Option<String>,
    /// Size limit of the database store (KiB, MiB, GiB); past it the oldest spans and log
    /// records are deleted first, and counted per session [default: 1GiB].
    #[arg(long, value_parser = values::bytes)]
    pub store_max_bytes: Option<u64>,
    /// Longest time a finished span waits before it is exported, at most 5s [default: 1s].
    #[arg(long, value_parser = values::export_interval)]
    pub export_interval: Option<Duration>,
    /// Memory for spans waiting to be exported, per destination (KiB, MiB, GiB); when it is full
    /// (a backend down), the oldest spans are dropped and counted. Each destination of device
    /// log records has as much again for its records [default: 64MiB].
    #[arg(long, value_parser = values::bytes)]
    pub export_memory: Option<u64>,
    /// Longest time the export takes at stop; what is not delivered by then is counted
    /// [default: 5s].
    #[arg(long, value_parser = values::duration)]
    pub shutdown_timeout: Option<Duration>,
    /// Bytes copied from each GIOP message (headers and Tango arguments fit in 1–2 KiB),
    /// 1024–8192 [default: 2048].
    #[arg(long, value_parser = values::capture_bytes)]
    pub capture_bytes: Option<u32>,
    /// Bytes copied of each device log message; longer messages are cut (and counted), 64–16384
    /// [default: 4096].
    #[arg(long, value_parser = values::log_bytes)]
    pub log_bytes: Option<u32>,
    /// File created once probes are attached to all current target processes.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Trace only processes whose environment contains NAME=VALUE.
    #[arg(long, value_parser = values::name_value)]
    pub select_env: Option<(String, String)>,
    /// Trace only these processes (repeatable; combines with --select-env).
    #[arg(long = "pid", value_parser = values::pid)]
    pub pids: Vec<u32>,
    /// Trace only processes in the network namespace of PATH (`/run/netns/NAME`,
    /// `/proc/PID/ns/net`): one simulated host of several on one machine, or a host without its
    /// containers. Default: every process of the host.
    #[arg(long, value_name = "PATH")]
    pub netns: Option<PathBuf>,
    /// Also trace operations native telemetry leaves out: ping, state, status, info, …
    #[arg(long)]
    pub all_operations: bool,
    /// Write every probe record to this file as JSON lines (for replay and benchmarks).
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Policy for processes whose Tango configuration says nothing: `on` traces them, `off` traces
    /// only processes and devices that enable telemetry themselves [default: on].
    #[arg(long, value_enum)]
    pub default_telemetry: Option<OnOff>,
    /// User code inside requests as spans of their own (always_executed_hook, each attribute
    /// read, each command; probes inside libtango): `off` attaches none of those probes
    /// [default: on].
    #[arg(long, value_enum)]
    pub user_spans: Option<OnOff>,
    /// Control socket for `tango-tracer ctl` [default: /run/tango-tracer/ctl.sock].
    #[arg(long)]
    pub control_socket: Option<PathBuf>,
    /// Scheduling priority of the daemon, as a nice value 0–19: the traced processes get the
    /// CPU first when the cores are busy, and the probes' ring buffer holds their records until
    /// the daemon catches up. Never raises a priority it was started with; 0 leaves it as
    /// started [default: 10].
    #[arg(long, value_parser = values::nice)]
    pub nice: Option<i32>,
    /// Shared key of the daemons of all hosts (at least 32 random bytes, e.g. 64 hex digits; a
    /// file only its owner can read). Given, calls between hosts become one trace.
    #[arg(long)]
    pub peer_key: Option<PathBuf>,
    /// Where to listen for the daemons of other hosts; every host's daemon uses the same port
    /// [default: 0.0.0.0:4320].
    #[arg(long, value_parser = values::socket_addr)]
    pub peer_listen: Option<SocketAddr>,
    /// Longest time a server span of a call from another host waits for that host's daemon,
    /// at most 10s [default: 1500ms].
    #[arg(long, value_parser = values::peer_wait)]
    pub peer_wait: Option<Duration>,
    /// How long a host whose daemon did not answer is left alone before it is asked again
    /// [default: 3s].
    #[arg(long, value_parser = values::peer_retry)]
    pub peer_retry: Option<Duration>,
    /// Tail sampling (off by default): whole traces are kept when a span is slower than the
    /// threshold or holds an error, and a fraction of the others by trace id (the same on every
    /// host), e.g. `slower-than=5ms,errors,ratio=0.05`; also `decision-wait=3s` (how long a
    /// trace waits for late spans after its last one) and `max-held=200000`.
    #[arg(long, value_parser = SamplingRule::parse)]
    pub tail_sampling: Option<SamplingRule>,
    /// Serve the metrics as Prometheus text at http://ADDR:PORT/metrics (turns the metrics on).
    #[arg(long, value_name = "ADDR:PORT", value_parser = values::socket_addr)]
    pub metrics_listen: Option<SocketAddr>,
    /// How often the metrics are pushed over OTLP (to OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, or
    /// OTEL_EXPORTER_OTLP_ENDPOINT + /v1/metrics; OTEL_METRICS_EXPORTER=none turns that off)
    /// [default: 10s].
    #[arg(long, value_parser = values::metrics_interval)]
    pub metrics_interval: Option<Duration>,
    /// Most metric series (device × operation × argument × outcome × side); points of further
    /// series fold into one overflow series per metric (`otel.metric.overflow=true`), counted
    /// [default: 10000].
    #[arg(long, value_parser = values::max_series)]
    pub metrics_max_series: Option<usize>,
}

macro_rules! keys {
    ($($ident:ident = $name:literal, $flag:expr, $env:expr;)*) => {
        $(static $ident: Key = Key { name: $name, flag: $flag, env: $env };)*
    };
}

keys! {
    EXPORTERS = "export.exporters", Some("--exporter"), Some("TANGO_TRACER_EXPORTER");
    ENDPOINT = "export.endpoint", None, Some("OTEL_EXPORTER_OTLP_ENDPOINT");
    PROTOCOL = "export.protocol", None, Some("OTEL_EXPORTER_OTLP_PROTOCOL");
    TRACES_ENDPOINT = "export.traces_endpoint", None, Some("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    TRACES_PROTOCOL = "export.traces_protocol", None, Some("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL");
    LOGS_ENDPOINT = "export.logs_endpoint", None, Some("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT");
    LOGS_PROTOCOL = "export.logs_protocol", None, Some("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL");
    EXPORT_INTERVAL = "export.interval", Some("--export-interval"), Some("TANGO_TRACER_EXPORT_INTERVAL");
    EXPORT_MEMORY = "export.memory", Some("--export-memory"), Some("TANGO_TRACER_EXPORT_MEMORY");
    SHUTDOWN_TIMEOUT = "export.shutdown_timeout", Some("--shutdown-timeout"), Some("TANGO_TRACER_SHUTDOWN_TIMEOUT");
    STORE = "store.path", Some("--store"), Some("TANGO_TRACER_STORE");
    STORE_MAX = "store.max_size", Some("--store-max-bytes"), Some("TANGO_TRACER_STORE_MAX_BYTES");
    SESSION = "store.session", Some("--session"), Some("TANGO_TRACER_SESSION");
    SELECT_ENV = "selection.env", Some("--select-env"), Some("TANGO_TRACER_SELECT_ENV");
    PIDS = "selection.pids", Some("--pid"), Some("TANGO_TRACER_PID");
    NETNS = "selection.netns", Some("--netns"), Some("TANGO_TRACER_NETNS");
    DEFAULT_TELEMETRY = "selection.default_telemetry", Some("--default-telemetry"), Some("TANGO_TRACER_DEFAULT_TELEMETRY");
    ALL_OPERATIONS = "selection.all_operations", Some("--all-operations"), Some("TANGO_TRACER_ALL_OPERATIONS");
    CAPTURE_BYTES = "capture.giop_bytes", Some("--capture-bytes"), Some("TANGO_TRACER_CAPTURE_BYTES");
    LOG_BYTES = "capture.log_bytes", Some("--log-bytes"), Some("TANGO_TRACER_LOG_BYTES");
    USER_SPANS = "capture.user_spans", Some("--user-spans"), Some("TANGO_TRACER_USER_SPANS");
    RECORD = "capture.record", Some("--record"), Some("TANGO_TRACER_RECORD");
    PEER_KEY = "peers.key_file", Some("--peer-key"), Some("TANGO_TRACER_PEER_KEY");
    PEER_LISTEN = "peers.listen", Some("--peer-listen"), Some("TANGO_TRACER_PEER_LISTEN");
    PEER_WAIT = "peers.wait", Some("--peer-wait"), Some("TANGO_TRACER_PEER_WAIT");
    PEER_RETRY = "peers.retry", Some("--peer-retry"), Some("TANGO_TRACER_PEER_RETRY");
    METRICS_LISTEN = "metrics.listen", Some("--metrics-listen"), Some("TANGO_TRACER_METRICS_LISTEN");
    METRICS_INTERVAL = "metrics.interval", Some("--metrics-interval"), Some("TANGO_TRACER_METRICS_INTERVAL");
    METRICS_MAX_SERIES = "metrics.max_series", Some("--metrics-max-series"), Some("TANGO_TRACER_METRICS_MAX_SERIES");
    METRICS_ENDPOINT = "metrics.endpoint", None, Some("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
    METRICS_PROTOCOL = "metrics.protocol", None, Some("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL");
    TAIL_SAMPLING = "sampling.tail", Some("--tail-sampling"), Some("TANGO_TRACER_TAIL_SAMPLING");
    CONTROL_SOCKET = "control.socket", Some("--control-socket"), Some("TANGO_TRACER_CONTROL_SOCKET");
    READY_FILE = "control.ready_file", Some("--ready-file"), Some("TANGO_TRACER_READY_FILE");
    NICE = "control.nice", Some("--nice"), Some("TANGO_TRACER_NICE");
}

/// The daemon's effective settings, each with its source.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The configuration file read, if one was.
    pub file: Option<PathBuf>,
    pub exporters: Sourced<Vec<Exporter>>,
    pub endpoint: Sourced<Option<String>>,
    pub protocol: Sourced<Option<String>>,
    pub traces_endpoint: Sourced<Option<String>>,
    pub traces_protocol: Sourced<Option<String>>,
    pub logs_endpoint: Sourced<Option<String>>,
    pub logs_protocol: Sourced<Option<String>>,
    pub export_interval: Sourced<Duration>,
    pub export_memory: Sourced<u64>,
    pub shutdown_timeout: Sourced<Duration>,
    pub store: Sourced<PathBuf>,
    pub store_max_bytes: Sourced<u64>,
    pub session: Sourced<Option<String>>,
    pub select_env: Sourced<Option<(String, String)>>,
    pub pids: Sourced<Vec<u32>>,
    pub netns: Sourced<Option<PathBuf>>,
    pub default_telemetry: Sourced<bool>,
    pub all_operations: Sourced<bool>,
    pub capture_bytes: Sourced<u32>,
    pub log_bytes: Sourced<u32>,
    pub user_spans: Sourced<bool>,
    pub record: Sourced<Option<PathBuf>>,
    pub peer_key: Sourced<Option<PathBuf>>,
    pub peer_listen: Sourced<SocketAddr>,
    pub peer_wait: Sourced<Duration>,
    pub peer_retry: Sourced<Duration>,
    pub metrics_listen: Sourced<Option<SocketAddr>>,
    pub metrics_interval: Sourced<Duration>,
    pub metrics_max_series: Sourced<usize>,
    pub metrics_endpoint: Sourced<Option<String>>,
    pub metrics_protocol: Sourced<Option<String>>,
    pub tail_sampling: Sourced<Option<SamplingRule>>,
    pub control_socket: Sourced<PathBuf>,
    pub nice: Sourced<i32>,
    pub ready_file: Sourced<Option<PathBuf>>,
}

/// Why the settings could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("reading the configuration file {path}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The file's syntax, an unknown key, a value of the wrong type or out of range (the
    /// message names the line, the column and the key).
    #[error("configuration file {path}{}: {message}", at(position))]
    Parse { path: PathBuf, position: Option<Position>, message: String },
    /// Values of the environment or combinations of settings that cannot be (one per line).
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// Which configuration file, and what named it.
#[derive(Clone, Debug)]
pub struct ConfigFile {
    pub path: PathBuf,
    /// [`Source::Default`], [`Source::Env`] of [`CONFIG_ENV`] or [`Source::Flag`] `--config`.
    pub source: Source,
}

impl ConfigFile {
    /// `--config`, else `TANGO_TRACER_CONFIG`, else [`DEFAULT_PATH`].
    pub fn choose(flag: Option<PathBuf>, env: &dyn Fn(&str) -> Option<String>) -> ConfigFile {
        match (flag, env(CONFIG_ENV).filter(|v| !v.trim().is_empty())) {
            (Some(path), _) => ConfigFile { path, source: Source::Flag("--config") },
            (None, Some(path)) => ConfigFile { path: PathBuf::from(path), source: Source::Env(CONFIG_ENV) },
            (None, None) => ConfigFile { path: PathBuf::from(DEFAULT_PATH), source: Source::Default },
        }
    }

    /// The file's settings; `None` when the default file is absent (a file named explicitly
    /// must exist).
    pub fn read(&self) -> Result<Option<FileSettings>, SettingsError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.source == Source::Default => {
                return Ok(None);
            }
            Err(source) => return Err(SettingsError::Read { path: self.path.clone(), source }),
        };
        file::parse(&text).map(Some).map_err(|e| SettingsError::Parse {
            path: self.path.clone(),
            position: e.span().map(|span| position(&text, span.start)),
            // serde's word for a key of the file.
            message: e.message().trim_end().replace("unknown field", "unknown key"),
        })
    }
}

/// Where in a file: line and column (from 1) of byte `offset` of `text`, and that line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
    pub text: String,
}

fn position(text: &str, offset: usize) -> Position {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count();
    let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
    let text = text.lines().nth(line).unwrap_or_default().trim().to_string();
    Position { line: line + 1, column, text }
}

/// `, line L, column C, at `TEXT`` when known.
fn at(position: &Option<Position>) -> String {
    match position {
        Some(Position { line, column, text }) if !text.is_empty() => {
            format!(", line {line}, column {column}, at `{text}`")
        }
        Some(Position { line, column, .. }) => format!(", line {line}, column {column}"),
        None => String::new(),
    }
}

/// What resolves the settings again on SIGHUP: the same file choice and command line, the
/// environment read again.
#[derive(Clone, Debug)]
pub struct Loader {
    pub file: ConfigFile,
    pub flags: RunFlags,
}

impl Loader {
    pub fn load(&self) -> Result<Settings, SettingsError> {
        let env = |name: &str| std::env::var(name).ok();
        let file = self.file.read()?;
        resolve(file.as_ref().map(|f| (self.file.path.as_path(), f)), &env, &self.flags)
    }
}

/// Layers one setting: flag, else environment, else file, else default.
struct Resolver<'a> {
    file: Option<&'a Path>,
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<String>,
}

impl Resolver<'_> {
    fn pick<T>(
        &mut self,
        key: &'static Key,
        default: T,
        file: Option<T>,
        parse: impl Fn(&str) -> Result<T, String>,
        flag: Option<T>,
    ) -> Sourced<T> {
        if let (Some(value), Some(name)) = (flag, key.flag) {
            return Sourced { key, value, source: Source::Flag(name) };
        }
        // An empty variable counts as unset, as in the OpenTelemetry SDKs.
        if let Some(name) = key.env
            && let Some(text) = (self.env)(name).filter(|t| !t.trim().is_empty())
        {
            match parse(&text) {
                Ok(value) => return Sourced { key, value, source: Source::Env(name) },
                Err(e) => self.errors.push(format!("{name}={text:?}: {e}")),
            }
        }
        match (file, self.file) {
            (Some(value), Some(path)) => Sourced { key, value, source: Source::File(path.to_path_buf()) },
            _ => Sourced { key, value: default, source: Source::Default },
        }
    }
}

/// A comma-separated list of the environment.
fn list<T>(text: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    text.split(',').map(str::trim).filter(|item| !item.is_empty()).map(parse).collect()
}

/// Taken as given: the exporters check the OpenTelemetry variables as they always did.
fn otel_text(text: &str) -> Result<Option<String>, String> {
    Ok(Some(text.trim().to_string()))
}

/// The settings from the file (if any), the environment (read through `env`) and the command line.
pub fn resolve(
    file: Option<(&Path, &FileSettings)>,
    env: &dyn Fn(&str) -> Option<String>,
    flags: &RunFlags,
) -> Result<Settings, SettingsError> {
    let empty = FileSettings::default();
    let (path, f) = match file {
        Some((path, settings)) => (Some(path), settings),
        None => (None, &empty),
    };
    let mut r = Resolver { file: path, env, errors: Vec::new() };
    let settings = Settings {
        file: path.map(Path::to_path_buf),
        exporters: r.pick(
            &EXPORTERS,
            Vec::new(),
            f.export.exporters.clone(),
            |t| list(t, Exporter::parse),
            Some(flags.exporters.clone()).filter(|list| !list.is_empty()),
        ),
        endpoint: r.pick(&ENDPOINT, None, f.export.endpoint.clone().map(|v| Some(v.0)), otel_text, None),
        protocol: r.pick(&PROTOCOL, None, f.export.protocol.clone().map(|v| Some(v.0)), otel_text, None),
        traces_endpoint: r.pick(
            &TRACES_ENDPOINT,
            None,
            f.export.traces_endpoint.clone().map(|v| Some(v.0)),
            otel_text,
            None,
        ),
        traces_protocol: r.pick(
            &TRACES_PROTOCOL,
            None,
            f.export.traces_protocol.clone().map(|v| Some(v.0)),
            otel_text,
            None,
        ),
        logs_endpoint: r.pick(
            &LOGS_ENDPOINT,
            None,
            f.export.logs_endpoint.clone().map(|v| Some(v.0)),
            otel_text,
            None,
        ),
        logs_protocol: r.pick(
            &LOGS_PROTOCOL,
            None,
            f.export.logs_protocol.clone().map(|v| Some(v.0)),
            otel_text,
            None,
        ),
        export_interval: r.pick(
            &EXPORT_INTERVAL,
            Duration::from_secs(1),
            f.export.interval.clone().map(|v| v.0),
            values::export_interval,
            flags.export_interval,
        ),
        export_memory: r.pick(
            &EXPORT_MEMORY,
            64 << 20,
            f.export.memory.clone().map(|v| v.0),
            values::bytes,
            flags.export_memory,
        ),
        shutdown_timeout: r.pick(
            &SHUTDOWN_TIMEOUT,
            Duration::from_secs(5),
            f.export.shutdown_timeout.clone().map(|v| v.0),
            values::duration,
            flags.shutdown_timeout,
        ),
        store: r.pick(
            &STORE,
            PathBuf::from(DEFAULT_STORE),
            f.store.path.clone().map(|v| v.0),
            values::path,
            flags.store.clone(),
        ),
        store_max_bytes: r.pick(
            &STORE_MAX,
            1 << 30,
            f.store.max_size.clone().map(|v| v.0),
            values::bytes,
            flags.store_max_bytes,
        ),
        session: r.pick(
            &SESSION,
            None,
            f.store.session.clone().filter(|s| !s.trim().is_empty()).map(Some),
            |t| Ok(Some(t.to_string())),
            flags.session.clone().map(Some),
        ),
        select_env: r.pick(
            &SELECT_ENV,
            None,
            f.selection.env.clone().map(|v| Some(v.0)),
            |t| values::name_value(t).map(Some),
            flags.select_env.clone().map(Some),
        ),
        pids: r.pick(
            &PIDS,
            Vec::new(),
            f.selection.pids.as_ref().map(|pids| pids.iter().map(|p| p.0).collect()),
            |t| list(t, values::pid),
            Some(flags.pids.clone()).filter(|list| !list.is_empty()),
        ),
        netns: r.pick(
            &NETNS,
            None,
            f.selection.netns.clone().map(|v| Some(v.0)),
            |t| values::path(t).map(Some),
            flags.netns.clone().map(Some),
        ),
        default_telemetry: r.pick(
            &DEFAULT_TELEMETRY,
            true,
            f.selection.default_telemetry,
            values::on_off,
            flags.default_telemetry.map(|v| v == OnOff::On),
        ),
        all_operations: r.pick(
            &ALL_OPERATIONS,
            false,
            f.selection.all_operations,
            values::on_off,
            flags.all_operations.then_some(true),
        ),
        capture_bytes: r.pick(
            &CAPTURE_BYTES,
            2048,
            f.capture.giop_bytes.clone().map(|v| v.0),
            values::capture_bytes,
            flags.capture_bytes,
        ),
        log_bytes: r.pick(
            &LOG_BYTES,
            4096,
            f.capture.log_bytes.clone().map(|v| v.0),
            values::log_bytes,
            flags.log_bytes,
        ),
        user_spans: r.pick(
            &USER_SPANS,
            true,
            f.capture.user_spans,
            values::on_off,
            flags.user_spans.map(|v| v == OnOff::On),
        ),
        record: r.pick(
            &RECORD,
            None,
            f.capture.record.clone().map(|v| Some(v.0)),
            |t| values::path(t).map(Some),
            flags.record.clone().map(Some),
        ),
        peer_key: r.pick(
            &PEER_KEY,
            None,
            f.peers.key_file.clone().map(|v| Some(v.0)),
            |t| values::path(t).map(Some),
            flags.peer_key.clone().map(Some),
        ),
        peer_listen: r.pick(
            &PEER_LISTEN,
            SocketAddr::from(([0, 0, 0, 0], 4320)),
            f.peers.listen.clone().map(|v| v.0),
            values::socket_addr,
            flags.peer_listen,
        ),
        peer_wait: r.pick(
            &PEER_WAIT,
            Duration::from_millis(1500),
            f.peers.wait.clone().map(|v| v.0),
            values::peer_wait,
            flags.peer_wait,
        ),
        peer_retry: r.pick(
            &PEER_RETRY,
            Duration::from_secs(3),
            f.peers.retry.clone().map(|v| v.0),
            values::peer_retry,
            flags.peer_retry,
        ),
        metrics_listen: r.pick(
            &METRICS_LISTEN,
            None,
            f.metrics.listen.clone().map(|v| Some(v.0)),
            |t| values::socket_addr(t).map(Some),
            flags.metrics_listen.map(Some),
        ),
        metrics_interval: r.pick(
            &METRICS_INTERVAL,
            Duration::from_secs(10),
            f.metrics.interval.clone().map(|v| v.0),
            values::metrics_interval,
            flags.metrics_interval,
        ),
        metrics_max_series: r.pick(
            &METRICS_MAX_SERIES,
            crate::metrics::DEFAULT_MAX_SERIES,
            f.metrics.max_series.clone().map(|v| v.0),
            values::max_series,
            flags.metrics_max_series,
        ),
        metrics_endpoint: r.pick(
            &METRICS_ENDPOINT,
            None,
            f.metrics.endpoint.clone().map(|v| Some(v.0)),
            otel_text,
            None,
        ),
        metrics_protocol: r.pick(
            &METRICS_PROTOCOL,
            None,
            f.metrics.protocol.clone().map(|v| Some(v.0)),
            otel_text,
            None,
        ),
        tail_sampling: r.pick(
            &TAIL_SAMPLING,
            None,
            f.sampling.tail.clone().map(Some),
            |t| SamplingRule::parse(t).map(Some),
            flags.tail_sampling.clone().map(Some),
        ),
        control_socket: r.pick(
            &CONTROL_SOCKET,
            PathBuf::from(DEFAULT_SOCKET),
            f.control.socket.clone().map(|v| v.0),
            values::path,
            flags.control_socket.clone(),
        ),
        ready_file: r.pick(
            &READY_FILE,
            None,
            f.control.ready_file.clone().map(|v| Some(v.0)),
            |t| values::path(t).map(Some),
            flags.ready_file.clone().map(Some),
        ),
        nice: r.pick(&NICE, DEFAULT_NICE, f.control.nice.clone().map(|v| v.0), values::nice, flags.nice),
    };
    let mut errors = r.errors;
    if settings.peer_key.value.is_none() {
        // Today's rule of the command line, for every source: no key, no cross-host linking.
        for origin in
            [settings.peer_listen.origin(), settings.peer_wait.origin(), settings.peer_retry.origin()]
                .into_iter()
                .flatten()
        {
            errors.push(format!(
                "{origin} needs a peer key (--peer-key, peers.key_file): cross-host linking is off without one"
            ));
        }
    }
    if errors.is_empty() { Ok(settings) } else { Err(SettingsError::Invalid(errors)) }
}

impl<T> Sourced<T> {
    /// How to name where the value was given, in an error; `None` for a default.
    pub fn origin(&self) -> Option<String> {
        match &self.source {
            Source::Default => None,
            Source::File(path) => Some(format!("{} in {}", self.key.name, path.display())),
            Source::Env(name) => Some((*name).to_string()),
            Source::Flag(flag) => Some((*flag).to_string()),
        }
    }
}

/// One line of `check-config`: a setting, its value as the file would write it, its source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    pub key: &'static str,
    pub value: String,
    pub source: String,
}

fn quoted(text: &str) -> String {
    format!("{text:?}")
}

fn unset() -> String {
    "(unset)".to_string()
}

/// `1500ms`, `2s`: as short as exact.
pub fn duration_text(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else if duration.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{}us", duration.as_micros())
    }
}

/// `64MiB`, `1GiB`: the largest unit that divides it.
pub fn bytes_text(bytes: u64) -> String {
    for (unit, name) in [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")] {
        if bytes.is_multiple_of(unit) {
            return format!("{}{name}", bytes / unit);
        }
    }
    bytes.to_string()
}

impl Settings {
    /// Every setting, in the file's order, with its value and source.
    pub fn rows(&self) -> Vec<Row> {
        fn row<T>(setting: &Sourced<T>, show: impl Fn(&T) -> String) -> Row {
            Row { key: setting.key.name, value: show(&setting.value), source: setting.source.to_string() }
        }
        let text = |v: &Option<String>| v.as_deref().map(quoted).unwrap_or_else(unset);
        let path = |v: &PathBuf| quoted(&v.display().to_string());
        let opt_path = |v: &Option<PathBuf>| v.as_ref().map(path).unwrap_or_else(unset);
        let dur = |v: &Duration| quoted(&duration_text(*v));
        let size = |v: &u64| quoted(&bytes_text(*v));
        let flag = |v: &bool| v.to_string();
        vec![
            row(&self.exporters, |v| {
                if v.is_empty() {
                    "(automatic: otlp when an endpoint is set, else store)".to_string()
                } else {
                    format!("[{}]", v.iter().map(|e| quoted(e.name())).collect::<Vec<_>>().join(", "))
                }
            }),
            row(&self.endpoint, text),
            row(&self.protocol, text),
            row(&self.traces_endpoint, text),
            row(&self.traces_protocol, text),
            row(&self.logs_endpoint, text),
            row(&self.logs_protocol, text),
            row(&self.export_interval, dur),
            row(&self.export_memory, size),
            row(&self.shutdown_timeout, dur),
            row(&self.store, path),
            row(&self.store_max_bytes, size),
            row(&self.session, |v| {
                v.as_deref().map(quoted).unwrap_or_else(|| "(the start time, UTC)".to_string())
            }),
            row(&self.select_env, |v| {
                v.as_ref()
                    .map(|(n, v)| quoted(&format!("{n}={v}")))
                    .unwrap_or_else(|| "(every process)".to_string())
            }),
            row(&self.pids, |v| {
                if v.is_empty() {
                    "(every process)".to_string()
                } else {
                    format!("[{}]", v.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))
                }
            }),
            row(&self.netns, |v| v.as_ref().map(path).unwrap_or_else(|| "(every namespace)".to_string())),
            row(&self.default_telemetry, flag),
            row(&self.all_operations, flag),
            row(&self.capture_bytes, u32::to_string),
            row(&self.log_bytes, u32::to_string),
            row(&self.user_spans, flag),
            row(&self.record, opt_path),
            row(&self.peer_key, |v| {
                v.as_ref().map(path).unwrap_or_else(|| "(unset: cross-host linking off)".into())
            }),
            row(&self.peer_listen, |v| quoted(&v.to_string())),
            row(&self.peer_wait, dur),
            row(&self.peer_retry, dur),
            row(&self.metrics_listen, |v| v.map(|a| quoted(&a.to_string())).unwrap_or_else(unset)),
            row(&self.metrics_interval, dur),
            row(&self.metrics_max_series, usize::to_string),
            row(&self.metrics_endpoint, text),
            row(&self.metrics_protocol, text),
            row(&self.tail_sampling, |v| {
                v.as_ref().map(|r| quoted(&r.text)).unwrap_or_else(|| "(off)".into())
            }),
            row(&self.control_socket, path),
            row(&self.ready_file, opt_path),
            row(&self.nice, i32::to_string),
        ]
    }

    /// The value of an OpenTelemetry variable as the daemon's exporters read it: the variables
    /// the file can give take their effective value, the others come from `env`.
    pub fn otel_var(&self, name: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
        let setting = [
            &self.endpoint,
            &self.protocol,
            &self.traces_endpoint,
            &self.traces_protocol,
            &self.logs_endpoint,
            &self.logs_protocol,
            &self.metrics_endpoint,
            &self.metrics_protocol,
        ]
        .into_iter()
        .find(|s| s.key.env == Some(name));
        match setting {
            Some(setting) => setting.value.clone(),
            None => env(name),
        }
    }

    /// Where spans and where device logs go: (spans, logs). Stores are not opened here
    /// ([`check_stores`]).
    pub fn destinations(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<(Vec<Destination>, Vec<Destination>)> {
        let otel = |name: &str| self.otel_var(name, env);
        let spans_env = tracer_export::destinations_from_otel_env(otel)
            .context("reading the export endpoints (OTEL_EXPORTER_OTLP_*, export.*)")?;
        let logs_env = tracer_export::otel_env_destinations(Signal::Logs, otel).context(
            "reading the device log endpoints (OTEL_LOGS_EXPORTER, OTEL_EXPORTER_OTLP_*, export.*)",
        )?;
        let defaulted = self.exporters.value.is_empty();
        let exporters = if defaulted {
            vec![if spans_env.is_some() || logs_env.is_some() { Exporter::Otlp } else { Exporter::Store }]
        } else {
            self.exporters.value.clone()
        };
        let store = Destination::Store { path: self.store.value.clone() };
        let (mut spans, mut logs) = (Vec::new(), Vec::new());
        for exporter in exporters {
            match exporter {
                Exporter::Otlp => {
                    if spans_env.is_none() && logs_env.is_none() {
                        let origin = self.exporters.origin().unwrap_or_else(|| "--exporter".to_string());
                        bail!(
                            "exporter otlp ({origin}) needs an endpoint: OTEL_EXPORTER_OTLP_ENDPOINT, \
                             OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, or \
                             export.endpoint in the configuration file"
                        );
                    }
                    // Left to their default, a signal the configuration says nothing about goes
                    // to the store.
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
        Ok((spans, logs))
    }

    /// The metrics' destinations and options.
    pub fn metrics_options(&self, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<MetricsOptions> {
        Ok(MetricsOptions {
            listen: self.metrics_listen.value,
            destinations: crate::metrics::otel_env_metrics_destinations(|name| self.otel_var(name, env))?,
            interval: self.metrics_interval.value,
            max_series: self.metrics_max_series.value,
        })
    }

    /// What `tango-tracer run` runs with. Reads the peer key and the network namespace; opens no
    /// store ([`check_stores`]).
    pub fn run_options(&self, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<RunOptions> {
        let (destinations, log_destinations) = self.destinations(env)?;
        let export = ExportConfig {
            flush_interval: self.export_interval.value,
            max_backlog_bytes: self.export_memory.value,
            shutdown_timeout: self.shutdown_timeout.value,
            store_session: self.session.value.clone().unwrap_or_else(default_session),
            store_max_bytes: self.store_max_bytes.value,
            ..ExportConfig::default()
        };
        let net_ns = match &self.netns.value {
            Some(path) => Some(
                crate::discover::net_namespace_inode(path)
                    .with_context(|| self.netns.origin().unwrap_or_else(|| "--netns".into()))?,
            ),
            None => None,
        };
        Ok(RunOptions {
            destinations,
            log_destinations,
            export,
            capture_bytes: self.capture_bytes.value,
            log_bytes: self.log_bytes.value,
            ready_file: self.ready_file.value.clone(),
            select_env: self.select_env.value.clone(),
            select_pids: self.pids.value.clone(),
            net_ns,
            extended_operations: self.all_operations.value,
            record_to: self.record.value.clone(),
            trace_by_default: self.default_telemetry.value,
            user_spans: self.user_spans.value,
            control_socket: Some(self.control_socket.value.clone()),
            nice: self.nice.value,
            proc_root: PathBuf::from("/proc"),
            peers: self.peer_options()?,
            tail_sampling: self.tail_sampling.value.as_ref().map(|r| r.rule.clone()),
            metrics: self.metrics_options(env)?,
        })
    }

    /// Cross-host linking: on when a key is given.
    fn peer_options(&self) -> anyhow::Result<Option<PeerOptions>> {
        let Some(path) = &self.peer_key.value else {
            return Ok(None);
        };
        let key = PeerKey::load(path)
            .with_context(|| self.peer_key.origin().unwrap_or_else(|| "--peer-key".to_string()))?;
        let mut options = PeerOptions::new(key);
        options.listen = self.peer_listen.value;
        options.wait = self.peer_wait.value;
        options.retry_pause = self.peer_retry.value;
        // A daemon that does not answer within the wait is no use to the spans waiting for it.
        options.connect_timeout = options.connect_timeout.min(self.peer_wait.value);
        Ok(Some(options))
    }
}

/// Refuses a store the daemon cannot write now rather than at the first write, spans lost.
pub fn check_stores<'a>(destinations: impl IntoIterator<Item = &'a Destination>) -> anyhow::Result<()> {
    for destination in destinations {
        if let Destination::Store { path } = destination {
            tracer_export::check_store(path).map_err(|err| {
                anyhow::anyhow!(
                    "{err}; give --store (or TANGO_TRACER_STORE, store.path) a file path the daemon can write"
                )
            })?;
        }
    }
    Ok(())
}

/// A session's default name: the daemon's start time, UTC, to the second.
pub fn default_session() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let stamp = tracer_export::json::utc_timestamp(now.as_secs() * 1_000_000_000);
    // `2026-11-21T08:03:46.000000Z` → `2026-11-21T08:03:46Z`.
    match stamp.split_once('.') {
        Some((seconds, _)) => format!("{seconds}Z"),
        None => stamp,
    }
}

/// One setting that a reload changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub key: &'static str,
    pub from: String,
    pub to: String,
    pub source: String,
    /// Applied now; else it needs a restart (the running value stays).
    pub applied: bool,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} → {} ({}): ", self.key, self.from, self.to, self.source)?;
        f.write_str(if self.applied { "applied" } else { "needs a restart (the running value stays)" })
    }
}

/// What a reload does: the settings the daemon runs with from now on (the running ones with
/// what can change while running taken from the new ones), and every change.
#[derive(Clone, Debug)]
pub struct ReloadPlan {
    pub settings: Settings,
    pub changes: Vec<Change>,
}

/// Compares the running settings with those just read. What can change without losing state:
/// the destinations of spans, device logs (exporters, endpoints, protocols), the policy for
/// processes that say nothing and the operations traced (the routing of spans from now on),
/// the tail-sampling rule while tail sampling stays on, and the metrics' interval and OTLP
/// destinations (those while the metrics are on: pushed or served since the start). Everything
/// else is held by the kernel, a socket or a stage built at start, and needs a restart.
pub fn plan_reload(running: &Settings, new: &Settings) -> ReloadPlan {
    let mut settings = running.clone();
    settings.exporters = new.exporters.clone();
    settings.endpoint = new.endpoint.clone();
    settings.protocol = new.protocol.clone();
    settings.traces_endpoint = new.traces_endpoint.clone();
    settings.traces_protocol = new.traces_protocol.clone();
    settings.logs_endpoint = new.logs_endpoint.clone();
    settings.logs_protocol = new.logs_protocol.clone();
    settings.default_telemetry = new.default_telemetry.clone();
    settings.all_operations = new.all_operations.clone();
    settings.metrics_interval = new.metrics_interval.clone();
    settings.metrics_endpoint = new.metrics_endpoint.clone();
    settings.metrics_protocol = new.metrics_protocol.clone();
    // Turning it on or off would start or drop the traces held undecided.
    if running.tail_sampling.value.is_some() && new.tail_sampling.value.is_some() {
        settings.tail_sampling = new.tail_sampling.clone();
    }
    let (before, after, wanted) = (running.rows(), settings.rows(), new.rows());
    let changes = before
        .iter()
        .zip(&after)
        .zip(&wanted)
        .filter(|((before, _), wanted)| before.value != wanted.value)
        .map(|((before, after), wanted)| Change {
            key: wanted.key,
            from: before.value.clone(),
            to: wanted.value.clone(),
            source: wanted.source.clone(),
            applied: after.value == wanted.value,
        })
        .collect();
    ReloadPlan { settings, changes }
}

#[cfg(test)]
mod tests;
