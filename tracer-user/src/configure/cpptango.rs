//! cppTango 10.3's telemetry configuration, read the way cppTango reads it.
//!
//! A process's telemetry settings come from several sources; a later one wins, setting by
//! setting:
//!
//! 1. the daemon's own defaults ([`Source::Daemon`]);
//! 2. `/etc/tangorc`, then `<home of the effective uid>/.tangorc`, then the environment;
//! 3. device properties, read once when the device is created;
//! 4. admin-device commands at run time (not persisted).
//!
//! What cppTango 10.3.3 does, measured by running its library (the one PyTango 10.3.1 bundles)
//! against each case; the unit tests below pin every rule:
//!
//! - **Variables** (environment or tangorc): `TANGO_TELEMETRY_ENABLE`, `_TYPES`, `_TOPICS`,
//!   `_TRACING_EXPORTERS`, `_TRACING_ENDPOINTS`, `_LOGGING_EXPORTERS`, `_LOGGING_ENDPOINTS`.
//!   Each is looked up on its own: the environment (a variable set to the empty string counts as
//!   set), else the home tangorc, else `/etc/tangorc`. So exporters may come from the
//!   environment and their endpoints from a file. The 10.0 names (`TANGO_TELEMETRY_TRACES_EXPORTER`,
//!   `_TRACES_ENDPOINT`, `_LOGS_EXPORTER`, `_LOGS_ENDPOINT`) are not read at all.
//! - **Lists** are split at commas with the whitespace around each comma (`\s*,\s*`); whitespace
//!   at either end of the whole value is kept, empty items are kept except a last one.
//! - **Booleans**: `on`/`true`/`1` and `off`/`false`/`0`, any case, nothing else (no `yes`, no
//!   surrounding spaces, not empty).
//! - **Types**: `tracing`, `logging`, `none` (lowercase only); `none` anywhere turns both off.
//!   Unset: both. **Topics**: `all`, `database`, `events`, `polling`, `user` (lowercase only;
//!   there is no `none` and no `event`). Unset: `all`.
//! - **Exporters**: `grpc`, `http`, `console`, any case in variables and properties but
//!   lowercase only in admin commands; `none` is refused. Unset or empty: `console`.
//! - **Endpoints** are positional, one per exporter; unset or empty: each exporter's default
//!   (`grpc://localhost:4317`; `http://localhost:4318/v1/traces` or `/v1/logs`; `cout`). Given
//!   endpoints are checked exactly, case-sensitively, with no default for an empty item:
//!   `grpc://host:port`, `http(s)://host:port[/path]` (used as is: no path is appended),
//!   `cout`/`cerr`.
//! - **Any invalid value** makes cppTango throw `API_InvalidArgs`: from a variable, the device
//!   server does not start; from a property, the device is not created. Here it becomes a
//!   [`ConfigWarning`] and the setting falls back to the next source down.
//! - **tangorc files**: each line is lowercased (the value too), the variable's name is found as a
//!   substring anywhere in the line (`MY_TANGO_TELEMETRY_ENABLE=on` matches), the line is skipped
//!   when a `#` comes before that match (a `#` after it is part of the value), the value is
//!   everything after the line's first `=` with the spaces (only spaces) removed, and the first
//!   such line wins. Lines are split at `\n` only, so a `\r` stays in the value.
//! - **Device properties** `telemetry_enable`, `telemetry_types`, `telemetry_topics`,
//!   `telemetry_tracing_exporters`, `telemetry_tracing_endpoints`, `telemetry_logging_exporters`,
//!   `telemetry_logging_endpoints`: only the first string of the value is read, split like a
//!   variable. A property replaces the variable; exporters from a property ignore endpoint
//!   variables; endpoints without an exporters property are an error.
//! - **Admin commands** on `dserver/<server>/<instance>`: see [`parse_admin_command`].

use std::{collections::HashMap, fmt};

use tracer_export::{ConsoleStream, Destination, DestinationError};
use tracer_wire::tango::ArgValue;

/// `TANGO_TELEMETRY_ENABLE`.
pub const ENV_ENABLE: &str = "TANGO_TELEMETRY_ENABLE";
/// `TANGO_TELEMETRY_TYPES`.
pub const ENV_TYPES: &str = "TANGO_TELEMETRY_TYPES";
/// `TANGO_TELEMETRY_TOPICS`.
pub const ENV_TOPICS: &str = "TANGO_TELEMETRY_TOPICS";
/// `TANGO_TELEMETRY_TRACING_EXPORTERS`.
pub const ENV_TRACING_EXPORTERS: &str = "TANGO_TELEMETRY_TRACING_EXPORTERS";
/// `TANGO_TELEMETRY_TRACING_ENDPOINTS`.
pub const ENV_TRACING_ENDPOINTS: &str = "TANGO_TELEMETRY_TRACING_ENDPOINTS";
/// `TANGO_TELEMETRY_LOGGING_EXPORTERS`.
pub const ENV_LOGGING_EXPORTERS: &str = "TANGO_TELEMETRY_LOGGING_EXPORTERS";
/// `TANGO_TELEMETRY_LOGGING_ENDPOINTS`.
pub const ENV_LOGGING_ENDPOINTS: &str = "TANGO_TELEMETRY_LOGGING_ENDPOINTS";

/// Names cppTango 10.0 read and 10.3 ignores, with their replacements.
const OLD_NAMES: [(&str, &str); 4] = [
    ("TANGO_TELEMETRY_TRACES_EXPORTER", ENV_TRACING_EXPORTERS),
    ("TANGO_TELEMETRY_TRACES_ENDPOINT", ENV_TRACING_ENDPOINTS),
    ("TANGO_TELEMETRY_LOGS_EXPORTER", ENV_LOGGING_EXPORTERS),
    ("TANGO_TELEMETRY_LOGS_ENDPOINT", ENV_LOGGING_ENDPOINTS),
];

/// The device properties, in the order of the variables above.
const PROPERTY_NAMES: Names = Names {
    enable: "telemetry_enable",
    types: "telemetry_types",
    topics: "telemetry_topics",
    tracing_exporters: "telemetry_tracing_exporters",
    tracing_endpoints: "telemetry_tracing_endpoints",
    logging_exporters: "telemetry_logging_exporters",
    logging_endpoints: "telemetry_logging_endpoints",
};

const ENV_NAMES: Names = Names {
    enable: ENV_ENABLE,
    types: ENV_TYPES,
    topics: ENV_TOPICS,
    tracing_exporters: ENV_TRACING_EXPORTERS,
    tracing_endpoints: ENV_TRACING_ENDPOINTS,
    logging_exporters: ENV_LOGGING_EXPORTERS,
    logging_endpoints: ENV_LOGGING_ENDPOINTS,
};

const DEFAULT_GRPC_ENDPOINT: &str = "grpc://localhost:4317";
const DEFAULT_HTTP_TRACES_ENDPOINT: &str = "http://localhost:4318/v1/traces";
const DEFAULT_HTTP_LOGS_ENDPOINT: &str = "http://localhost:4318/v1/logs";
const DEFAULT_CONSOLE_ENDPOINT: &str = "cout";

/// What cppTango does with an invalid value, per kind of source.
const REFUSED_AT_START: &str = "cppTango 10.3 refuses to start with it";
const REFUSED_DEVICE: &str = "cppTango 10.3 does not create the device with it";
const REFUSED_COMMAND: &str = "cppTango 10.3 rejects the command and changes nothing";

/// Where a setting came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The tracer's own defaults.
    Daemon,
    /// The process's environment.
    Environment,
    /// A tangorc file.
    Tangorc {
        /// The file as the process names it (`/etc/tangorc`).
        path: String,
    },
    /// The device's properties in the Tango database.
    DeviceProperty,
    /// An admin-device command seen at run time.
    AdminCommand {
        /// The command's name (`StartTelemetry`).
        command: String,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Daemon => f.write_str("daemon default"),
            Source::Environment => f.write_str("environment"),
            Source::Tangorc { path } => f.write_str(path),
            Source::DeviceProperty => f.write_str("device property"),
            Source::AdminCommand { command } => write!(f, "admin command {command}"),
        }
    }
}

/// Why a telemetry setting could not be understood; every variant is something cppTango 10.3
/// refuses too, except [`ConfigError::Unusable`].
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// Not one of cppTango's boolean spellings.
    #[error("{value:?} is not a boolean (expected on/off, true/false or 1/0)")]
    InvalidBoolean {
        /// The value as given.
        value: String,
    },
    /// Not a telemetry type.
    #[error("unknown telemetry type {value:?} (expected tracing, logging or none, in lowercase)")]
    UnknownType {
        /// The item as given.
        value: String,
    },
    /// Not a telemetry topic.
    #[error(
        "unknown telemetry topic {value:?} (expected all, database, events, polling or user, in lowercase)"
    )]
    UnknownTopic {
        /// The item as given.
        value: String,
    },
    /// Not an exporter cppTango has.
    #[error("unknown exporter {value:?} (expected grpc, http or console)")]
    UnknownExporter {
        /// The item as given.
        value: String,
    },
    /// An endpoint that does not fit its exporter.
    #[error("{exporter} endpoint {endpoint:?} is invalid (expected {})", .exporter.endpoint_form())]
    InvalidEndpoint {
        /// The exporter it was given for.
        exporter: Exporter,
        /// The endpoint as given.
        endpoint: String,
    },
    /// Positional lists of different lengths.
    #[error("{endpoints} endpoint(s) for {exporters} exporter(s); the lists must have the same length")]
    CountMismatch {
        /// How many exporters.
        exporters: usize,
        /// How many endpoints.
        endpoints: usize,
    },
    /// An endpoints property without the matching exporters property.
    #[error("{endpoints} is set without {exporters}")]
    EndpointsWithoutExporters {
        /// The endpoints property.
        endpoints: &'static str,
        /// The missing exporters property.
        exporters: &'static str,
    },
    /// cppTango accepts the endpoint, but the tracer cannot send to it.
    #[error("the tracer cannot export to {endpoint:?}: {source}")]
    Unusable {
        /// The endpoint as given.
        endpoint: String,
        /// Why the exporter refuses it.
        source: DestinationError,
    },
    /// The command's argument is not of the type the command takes.
    #[error("the argument is not a {expected}")]
    WrongArgumentType {
        /// The Tango type expected.
        expected: &'static str,
    },
    /// A group of a Set… command shorter than a pattern and a count.
    #[error("each entry needs a device pattern and a number of {what}")]
    MissingPatternAndCount {
        /// `topics` or `endpoints`.
        what: &'static str,
    },
    /// The count of a group is not an unsigned number.
    #[error("{value:?} is not an unsigned number")]
    InvalidCount {
        /// The count as given.
        value: String,
    },
    /// Fewer items follow a group's count than it announces.
    #[error("fewer entries for the pattern {pattern:?} than the expected number ({expected})")]
    EntryCountMismatch {
        /// The group's device pattern.
        pattern: String,
        /// The count it announced.
        expected: u32,
    },
    /// An Add/Remove argument whose length is not a multiple of three.
    #[error("{len} strings: there must be 3 per entry (device pattern, exporter, endpoint)")]
    NotTriplets {
        /// The number of strings.
        len: usize,
    },
    /// A `DevVarLongStringArray` whose two arrays differ in length.
    #[error("{longs} longs for {strings} strings; they must have the same length")]
    LengthMismatch {
        /// How many longs.
        longs: usize,
        /// How many strings.
        strings: usize,
    },
}

/// One problem with one setting, already resolved by falling back to another source.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigWarning {
    /// Where the value was found.
    pub source: Source,
    /// The variable, property or command.
    pub name: String,
    /// The value as found.
    pub value: String,
    /// What is wrong and what cppTango does about it.
    pub reason: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} = {:?} ignored: {}", self.source, self.name, self.value, self.reason)
    }
}

/// Which telemetry signals are on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Types {
    pub tracing: bool,
    pub logging: bool,
}

impl Types {
    /// Both signals: cppTango's default.
    pub fn both() -> Types {
        Types { tracing: true, logging: true }
    }

    /// Parses `tracing`, `logging` and `none` (exact, lowercase); `none` anywhere turns both
    /// off, whatever else the list says.
    pub fn parse_list(items: &[&str]) -> Result<Types, ConfigError> {
        let mut types = Types::default();
        let mut none = false;
        for item in items {
            match *item {
                "tracing" => types.tracing = true,
                "logging" => types.logging = true,
                "none" => none = true,
                other => return Err(ConfigError::UnknownType { value: other.to_owned() }),
            }
        }
        Ok(if none { Types::default() } else { types })
    }

    /// `tracing`, `logging`, or `none`.
    pub fn names(&self) -> Vec<&'static str> {
        let names: Vec<_> = [(self.tracing, "tracing"), (self.logging, "logging")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        if names.is_empty() { vec!["none"] } else { names }
    }
}

/// The topics cppTango keeps spans of (its `TopicSampler`).
///
/// `all` is cppTango's `all` topic, which is also its default: no topic filter, every span
/// native telemetry makes is kept. (Native telemetry never traces pings, state reads and other
/// operations outside its topics; whether the daemon traces those is its own policy: cppTango
/// gives no way to ask for them.) An empty set (`SetTelemetryTopics [dev, 0]`) keeps nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Topics {
    pub user: bool,
    pub database: bool,
    pub events: bool,
    pub polling: bool,
    pub all: bool,
}

impl Topics {
    /// What cppTango has when `TANGO_TELEMETRY_TOPICS` is unset: the `all` topic
    /// (`GetTelemetryTopics` answers `[dev, "1", "all"]`).
    pub fn native_default() -> Topics {
        Topics { all: true, ..Topics::default() }
    }

    /// Parses `all`, `database`, `events`, `polling` and `user` (exact, lowercase); duplicates
    /// are fine and an empty list is the empty set.
    pub fn parse_list(items: &[&str]) -> Result<Topics, ConfigError> {
        let mut topics = Topics::default();
        for item in items {
            match *item {
                "all" => topics.all = true,
                "database" => topics.database = true,
                "events" => topics.events = true,
                "polling" => topics.polling = true,
                "user" => topics.user = true,
                other => return Err(ConfigError::UnknownTopic { value: other.to_owned() }),
            }
        }
        Ok(topics)
    }

    /// The topics set, in cppTango's spelling and a fixed order.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.all, "all"),
            (self.database, "database"),
            (self.events, "events"),
            (self.polling, "polling"),
            (self.user, "user"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// A cppTango exporter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exporter {
    Grpc,
    Http,
    Console,
}

impl Exporter {
    /// cppTango's exact, lowercase names; `none` is not one.
    pub fn parse(name: &str) -> Result<Exporter, ConfigError> {
        match name {
            "grpc" => Ok(Exporter::Grpc),
            "http" => Ok(Exporter::Http),
            "console" => Ok(Exporter::Console),
            other => Err(ConfigError::UnknownExporter { value: other.to_owned() }),
        }
    }

    fn endpoint_form(self) -> &'static str {
        match self {
            Exporter::Grpc => "grpc://host:port",
            Exporter::Http => "http(s)://host:port[/path]",
            Exporter::Console => "cout or cerr",
        }
    }
}

impl fmt::Display for Exporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Exporter::Grpc => "grpc",
            Exporter::Http => "http",
            Exporter::Console => "console",
        })
    }
}

/// A telemetry signal: which defaults an endpoint list gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    Tracing,
    Logging,
}

impl Signal {
    fn default_endpoint(self, exporter: Exporter) -> &'static str {
        match (exporter, self) {
            (Exporter::Grpc, _) => DEFAULT_GRPC_ENDPOINT,
            (Exporter::Http, Signal::Tracing) => DEFAULT_HTTP_TRACES_ENDPOINT,
            (Exporter::Http, Signal::Logging) => DEFAULT_HTTP_LOGS_ENDPOINT,
            (Exporter::Console, _) => DEFAULT_CONSOLE_ENDPOINT,
        }
    }
}

/// cppTango's boolean spellings: `on`/`true`/`1` and `off`/`false`/`0`, any case, untrimmed.
pub fn parse_boolean(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "on" | "true" | "1" => Some(true),
        "off" | "false" | "0" => Some(false),
        _ => None,
    }
}

/// Splits a list as cppTango does (a `std::sregex_token_iterator` over `\s*,\s*`): the
/// whitespace around each comma goes, the whitespace at either end of the value stays, empty
/// items stay except a last one after a comma; a value without a comma is one item, even
/// when empty.
pub fn split_list(value: &str) -> Vec<&str> {
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r');
    let pieces: Vec<&str> = value.split(',').collect();
    let last = pieces.len() - 1;
    let mut items = Vec::with_capacity(pieces.len());
    for (i, piece) in pieces.into_iter().enumerate() {
        let piece = if i > 0 { piece.trim_start_matches(is_space) } else { piece };
        let piece = if i < last { piece.trim_end_matches(is_space) } else { piece };
        if i == last && i > 0 && piece.is_empty() {
            continue;
        }
        items.push(piece);
    }
    items
}

/// The value of `name` in a tangorc file's text, as cppTango's `get_env_var_from_file` finds it
/// (see the module documentation for the quirks). The value comes back lowercased.
pub fn tangorc_value(name: &str, text: &str) -> Option<String> {
    let name = name.to_ascii_lowercase();
    text.split('\n').find_map(|line| {
        let line = line.to_ascii_lowercase();
        let at = line.find(&name)?;
        if line.find('#').is_some_and(|comment| comment < at) {
            return None;
        }
        let (_, value) = line.split_once('=')?;
        Some(value.chars().filter(|c| *c != ' ').collect())
    })
}

/// What one source says; `None` = this source says nothing about that setting.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Layer {
    pub enable: Option<bool>,
    pub types: Option<Types>,
    pub topics: Option<Topics>,
    pub tracing: Option<Vec<Destination>>,
    pub logging: Option<Vec<Destination>>,
}

impl Layer {
    fn destinations_mut(&mut self, signal: Signal) -> &mut Option<Vec<Destination>> {
        match signal {
            Signal::Tracing => &mut self.tracing,
            Signal::Logging => &mut self.logging,
        }
    }
}

/// The names one kind of source uses for the seven settings.
struct Names {
    enable: &'static str,
    types: &'static str,
    topics: &'static str,
    tracing_exporters: &'static str,
    tracing_endpoints: &'static str,
    logging_exporters: &'static str,
    logging_endpoints: &'static str,
}

impl Names {
    fn pair(&self, signal: Signal) -> (&'static str, &'static str) {
        match signal {
            Signal::Tracing => (self.tracing_exporters, self.tracing_endpoints),
            Signal::Logging => (self.logging_exporters, self.logging_endpoints),
        }
    }
}

/// A value found for a name, and the index of the source it was found in.
type Found = (String, usize);

/// Which of an exporters/endpoints pair an error is about.
enum Culprit {
    Exporters,
    Endpoints,
}

/// Turns positional exporter and endpoint lists into destinations, with cppTango's defaults and
/// checks. `exporters`/`endpoints` are the raw values (`None` = unset); an empty value counts as
/// unset. With `lowercase`, exporter names are lowercased first (variables and properties).
fn destinations_from_values(
    signal: Signal,
    exporters: Option<&str>,
    endpoints: Option<&str>,
    lowercase: bool,
) -> Result<Vec<Destination>, (Culprit, ConfigError)> {
    let exporters = match exporters.filter(|e| !e.is_empty()) {
        None => vec![Exporter::Console],
        Some(value) => {
            let value = if lowercase { value.to_ascii_lowercase() } else { value.to_owned() };
            split_list(&value)
                .into_iter()
                .map(Exporter::parse)
                .collect::<Result<_, _>>()
                .map_err(|e| (Culprit::Exporters, e))?
        }
    };
    let endpoints: Vec<&str> = match endpoints.filter(|e| !e.is_empty()) {
        None => exporters.iter().map(|e| signal.default_endpoint(*e)).collect(),
        Some(value) => split_list(value),
    };
    if endpoints.len() != exporters.len() {
        return Err((
            Culprit::Endpoints,
            ConfigError::CountMismatch { exporters: exporters.len(), endpoints: endpoints.len() },
        ));
    }
    exporters
        .into_iter()
        .zip(endpoints)
        .map(|(exporter, endpoint)| destination(exporter, endpoint))
        .collect::<Result<_, _>>()
        .map_err(|e| (Culprit::Endpoints, e))
}

/// Checks an endpoint exactly as cppTango does, then makes the tracer's destination of it.
///
/// gRPC endpoints become `http://host:port` (the tracer's spelling of a plain-text gRPC
/// endpoint); HTTP endpoints are kept as given, since cppTango posts to them unchanged.
pub fn destination(exporter: Exporter, endpoint: &str) -> Result<Destination, ConfigError> {
    let invalid = || ConfigError::InvalidEndpoint { exporter, endpoint: endpoint.to_owned() };
    let unusable = |source| ConfigError::Unusable { endpoint: endpoint.to_owned(), source };
    match exporter {
        // ^grpc://[^/]+:\d+$
        Exporter::Grpc => {
            let rest = endpoint.strip_prefix("grpc://").ok_or_else(invalid)?;
            if rest.contains('/') || !is_host_port(rest) {
                return Err(invalid());
            }
            Destination::parse("grpc", endpoint).map_err(unusable)
        }
        // ^(http|https)://[^/]+:\d+(/.*)?$  (`.` matches anything but a line break)
        Exporter::Http => {
            let rest = endpoint
                .strip_prefix("http://")
                .or_else(|| endpoint.strip_prefix("https://"))
                .ok_or_else(invalid)?;
            let (authority, path) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
            if !is_host_port(authority) || path.contains(['\n', '\r']) {
                return Err(invalid());
            }
            Destination::parse("http", endpoint).map_err(unusable)?;
            Ok(Destination::OtlpHttp { endpoint: endpoint.to_owned() })
        }
        // ^(cout|cerr)$
        Exporter::Console => match endpoint {
            "cout" => Ok(Destination::Console { stream: ConsoleStream::Stdout }),
            "cerr" => Ok(Destination::Console { stream: ConsoleStream::Stderr }),
            _ => Err(invalid()),
        },
    }
}

/// `[^/]+:\d+` on a string without `/`: something, a colon, and digits to the end.
fn is_host_port(text: &str) -> bool {
    text.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Builds one layer per source from a per-name lookup that knows which source (by index, 0 being
/// the highest precedence) each value came from, the way cppTango reads its variables.
fn layers_from_lookup(
    sources: &[Source],
    lookup: impl Fn(&str) -> Option<Found>,
) -> (Vec<(Source, Layer)>, Vec<ConfigWarning>) {
    let mut layers = vec![Layer::default(); sources.len()];
    let mut warnings = Vec::new();
    let warn = |origin: usize, name: &str, value: &str, reason: String| ConfigWarning {
        source: sources.get(origin).cloned().unwrap_or(Source::Environment),
        name: name.to_owned(),
        value: value.to_owned(),
        reason,
    };
    let refused = |error: ConfigError| format!("{error}; {REFUSED_AT_START}");

    if let Some((value, origin)) = lookup(ENV_NAMES.enable) {
        match parse_boolean(&value) {
            Some(enable) => set(&mut layers, origin, |l| l.enable = Some(enable)),
            None => warnings.push(warn(
                origin,
                ENV_NAMES.enable,
                &value,
                refused(ConfigError::InvalidBoolean { value: value.clone() }),
            )),
        }
    }
    if let Some((value, origin)) = lookup(ENV_NAMES.types) {
        match Types::parse_list(&split_list(&value)) {
            Ok(types) => set(&mut layers, origin, |l| l.types = Some(types)),
            Err(e) => warnings.push(warn(origin, ENV_NAMES.types, &value, refused(e))),
        }
    }
    if let Some((value, origin)) = lookup(ENV_NAMES.topics) {
        match Topics::parse_list(&split_list(&value)) {
            Ok(topics) => set(&mut layers, origin, |l| l.topics = Some(topics)),
            Err(e) => warnings.push(warn(origin, ENV_NAMES.topics, &value, refused(e))),
        }
    }
    for signal in [Signal::Tracing, Signal::Logging] {
        let (exporters_name, endpoints_name) = ENV_NAMES.pair(signal);
        let exporters = lookup(exporters_name);
        let endpoints = lookup(endpoints_name);
        // The pair belongs to the highest-precedence source that set either of them.
        let Some(origin) = [&exporters, &endpoints].into_iter().flatten().map(|(_, o)| *o).min() else {
            continue;
        };
        let exporters_value = exporters.as_ref().map(|(v, _)| v.as_str());
        let endpoints_value = endpoints.as_ref().map(|(v, _)| v.as_str());
        match destinations_from_values(signal, exporters_value, endpoints_value, true) {
            Ok(list) => set(&mut layers, origin, |l| *l.destinations_mut(signal) = Some(list)),
            Err((culprit, error)) => {
                let (name, found) = match culprit {
                    Culprit::Exporters => (exporters_name, &exporters),
                    Culprit::Endpoints => (endpoints_name, &endpoints),
                };
                let (value, at) = found.clone().unwrap_or_else(|| (String::new(), origin));
                warnings.push(warn(at, name, &value, refused(error)));
            }
        }
    }
    for (old, new) in OLD_NAMES {
        if let Some((value, origin)) = lookup(old) {
            warnings.push(warn(origin, old, &value, format!("not read by cppTango 10.3 (renamed {new})")));
        }
    }
    (sources.iter().cloned().zip(layers).rev().collect(), warnings)
}

fn set(layers: &mut [Layer], origin: usize, apply: impl FnOnce(&mut Layer)) {
    if let Some(layer) = layers.get_mut(origin) {
        apply(layer);
    }
}

/// What the environment alone says (`TANGO_TELEMETRY_*`). A variable set to the empty string is
/// set: an empty exporters or endpoints list means cppTango's defaults, and hides the tangorc files.
pub fn layer_from_environment(env: &HashMap<String, String>) -> (Layer, Vec<ConfigWarning>) {
    let sources = [Source::Environment];
    let (mut layers, warnings) = layers_from_lookup(&sources, |name| env.get(name).map(|v| (v.clone(), 0)));
    (layers.pop().map(|(_, layer)| layer).unwrap_or_default(), warnings)
}

/// What one tangorc file alone says, read with cppTango's quirks (see [`tangorc_value`]).
pub fn layer_from_tangorc(path: &str, text: &str) -> (Layer, Vec<ConfigWarning>) {
    let sources = [Source::Tangorc { path: path.to_owned() }];
    let (mut layers, warnings) =
        layers_from_lookup(&sources, |name| tangorc_value(name, text).map(|v| (v, 0)));
    (layers.pop().map(|(_, layer)| layer).unwrap_or_default(), warnings)
}

/// Exactly what cppTango reads from a process's environment and tangorc files: each variable
/// separately from the environment, else the first file that has it. `files` are `(path, text)`
/// in cppTango's order: the home file (`<home of the effective uid>/.tangorc`) then
/// `/etc/tangorc`; leave out files that do not exist.
///
/// Returns one layer per source, lowest precedence first (files reversed, then the
/// environment), ready to follow the daemon's layer in [`resolve`]. Unlike layering
/// [`layer_from_environment`] over [`layer_from_tangorc`], this pairs exporters from one source
/// with endpoints from another, as cppTango does; the pair is credited to the higher source.
pub fn layers_from_process(
    env: &HashMap<String, String>,
    files: &[(&str, &str)],
) -> (Vec<(Source, Layer)>, Vec<ConfigWarning>) {
    let sources: Vec<Source> = std::iter::once(Source::Environment)
        .chain(files.iter().map(|(path, _)| Source::Tangorc { path: (*path).to_owned() }))
        .collect();
    layers_from_lookup(&sources, |name| {
        if let Some(value) = env.get(name) {
            return Some((value.clone(), 0));
        }
        files.iter().enumerate().find_map(|(i, (_, text))| tangorc_value(name, text).map(|v| (v, i + 1)))
    })
}

/// What a device's telemetry properties say. `props` are `(name, values)` as the database
/// returns them; names match case-insensitively and a property without values is unset.
///
/// cppTango reads only the first string of each property (several values go comma-separated
/// in it); more strings are ignored, with a warning here. Exporters from properties replace the
/// variables' exporters and endpoints together; an endpoints property without an exporters
/// property is an error.
pub fn layer_from_device_properties(props: &[(String, Vec<String>)]) -> (Layer, Vec<ConfigWarning>) {
    let mut layer = Layer::default();
    let mut warnings = Vec::new();
    let warn = |name: &str, value: &str, reason: String| ConfigWarning {
        source: Source::DeviceProperty,
        name: name.to_owned(),
        value: value.to_owned(),
        reason,
    };
    let refused = |error: ConfigError| format!("{error}; {REFUSED_DEVICE}");
    let mut first = |name: &'static str| -> Option<String> {
        let (_, values) =
            props.iter().find(|(n, values)| n.eq_ignore_ascii_case(name) && !values.is_empty())?;
        let (head, rest) = values.split_first()?;
        if !rest.is_empty() {
            warnings.push(warn(
                name,
                &rest.join(", "),
                "cppTango reads only the first string of the property; put several values in it, \
                 comma-separated"
                    .to_owned(),
            ));
        }
        Some(head.clone())
    };
    let enable = first(PROPERTY_NAMES.enable);
    let types = first(PROPERTY_NAMES.types);
    let topics = first(PROPERTY_NAMES.topics);
    let pairs = [Signal::Tracing, Signal::Logging].map(|signal| {
        let (exporters, endpoints) = PROPERTY_NAMES.pair(signal);
        (signal, first(exporters), first(endpoints))
    });

    if let Some(value) = enable {
        match parse_boolean(&value) {
            Some(enable) => layer.enable = Some(enable),
            None => warnings.push(warn(
                PROPERTY_NAMES.enable,
                &value,
                refused(ConfigError::InvalidBoolean { value: value.clone() }),
            )),
        }
    }
    if let Some(value) = types {
        match Types::parse_list(&split_list(&value)) {
            Ok(types) => layer.types = Some(types),
            Err(e) => warnings.push(warn(PROPERTY_NAMES.types, &value, refused(e))),
        }
    }
    if let Some(value) = topics {
        match Topics::parse_list(&split_list(&value)) {
            Ok(topics) => layer.topics = Some(topics),
            Err(e) => warnings.push(warn(PROPERTY_NAMES.topics, &value, refused(e))),
        }
    }
    for (signal, exporters, endpoints) in pairs {
        let (exporters_name, endpoints_name) = PROPERTY_NAMES.pair(signal);
        match (exporters, endpoints) {
            (None, None) => {}
            (None, Some(endpoints)) => warnings.push(warn(
                endpoints_name,
                &endpoints,
                refused(ConfigError::EndpointsWithoutExporters {
                    endpoints: endpoints_name,
                    exporters: exporters_name,
                }),
            )),
            (Some(exporters), endpoints) => {
                match destinations_from_values(signal, Some(&exporters), endpoints.as_deref(), true) {
                    Ok(list) => *layer.destinations_mut(signal) = Some(list),
                    Err((Culprit::Exporters, e)) => {
                        warnings.push(warn(exporters_name, &exporters, refused(e)));
                    }
                    Err((Culprit::Endpoints, e)) => {
                        let value = endpoints.unwrap_or_default();
                        warnings.push(warn(endpoints_name, &value, refused(e)));
                    }
                }
            }
        }
    }
    (layer, warnings)
}

/// Which devices of a server an admin command is about. Device names are compared without
/// regard to case, and without any `tango://host:port/` prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSelector {
    /// Every device. cppTango's commands never mean this by an empty list (an empty list
    /// selects no device); a `*` pattern selects every device, the admin device included.
    All,
    /// Any of these patterns (`StartTelemetry`, `StopTelemetry`); an empty list selects nothing.
    Names(Vec<String>),
    /// One pattern (one entry of a `Set…`/`Add…`/`Remove…` command).
    Pattern(String),
}

impl DeviceSelector {
    /// cppTango's device-name wildcard: the whole name must match, ignoring case; `*` stands for
    /// any run of characters (`/` included, or none), every other character stands for itself
    /// (`?`, `.`, `[` have no special meaning). A pattern matching no device makes cppTango
    /// answer `API_DeviceNotFound`, after applying the other patterns of the command.
    pub fn matches(&self, device: &str) -> bool {
        match self {
            DeviceSelector::All => true,
            DeviceSelector::Names(patterns) => patterns.iter().any(|p| wildcard_match(p, device)),
            DeviceSelector::Pattern(pattern) => wildcard_match(pattern, device),
        }
    }
}

/// Glob with `*` only, ASCII case-insensitive, on bytes.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    // The last `*` seen, and where in `text` its run currently ends.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match (pattern.get(p), text.get(t)) {
            (Some(b'*'), _) => {
                star = Some((p, t));
                p += 1;
            }
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern.get(p..).is_some_and(|rest| rest.iter().all(|c| *c == b'*'))
}

/// One change an admin-device command makes to the devices it selects.
#[derive(Clone, Debug, PartialEq)]
pub enum AdminChange {
    /// `StartTelemetry` / `StopTelemetry`.
    Enable(bool),
    /// `SetTelemetryTracing`.
    Tracing(bool),
    /// `SetTelemetryLogging`.
    Logging(bool),
    /// `SetTelemetryTopics`: replaces the topics.
    Topics(Topics),
    /// `SetTelemetryTracingEndpoints`: replaces the list (duplicates kept, as cppTango does).
    SetTracing(Vec<Destination>),
    /// `AddTelemetryTracingEndpoints`: appends what is not there yet.
    AddTracing(Vec<Destination>),
    /// `RemoveTelemetryTracingEndpoints`: removes every occurrence; absent ones are no error.
    RemoveTracing(Vec<Destination>),
    /// `SetTelemetryLoggingEndpoints`.
    SetLogging(Vec<Destination>),
    /// `AddTelemetryLoggingEndpoints`.
    AddLogging(Vec<Destination>),
    /// `RemoveTelemetryLoggingEndpoints`.
    RemoveLogging(Vec<Destination>),
}

/// One change of an admin-device command, with the devices it applies to.
#[derive(Clone, Debug, PartialEq)]
pub struct AdminCommand {
    /// The command's canonical name (`SetTelemetryTopics`).
    pub command: String,
    pub targets: DeviceSelector,
    pub change: AdminChange,
}

/// The admin-device commands that change telemetry, in cppTango's spelling.
const START: &str = "StartTelemetry";
const STOP: &str = "StopTelemetry";
const SET_TOPICS: &str = "SetTelemetryTopics";
const SET_TRACING: &str = "SetTelemetryTracing";
const SET_LOGGING: &str = "SetTelemetryLogging";
const SET_TRACING_ENDPOINTS: &str = "SetTelemetryTracingEndpoints";
const ADD_TRACING_ENDPOINTS: &str = "AddTelemetryTracingEndpoints";
const REMOVE_TRACING_ENDPOINTS: &str = "RemoveTelemetryTracingEndpoints";
const SET_LOGGING_ENDPOINTS: &str = "SetTelemetryLoggingEndpoints";
const ADD_LOGGING_ENDPOINTS: &str = "AddTelemetryLoggingEndpoints";
const REMOVE_LOGGING_ENDPOINTS: &str = "RemoveTelemetryLoggingEndpoints";
const CHANGING_COMMANDS: [&str; 11] = [
    START,
    STOP,
    SET_TOPICS,
    SET_TRACING,
    SET_LOGGING,
    SET_TRACING_ENDPOINTS,
    ADD_TRACING_ENDPOINTS,
    REMOVE_TRACING_ENDPOINTS,
    SET_LOGGING_ENDPOINTS,
    ADD_LOGGING_ENDPOINTS,
    REMOVE_LOGGING_ENDPOINTS,
];

/// Reads an admin-device command seen on the wire as the changes it makes, in order (a later
/// change to the same device wins). `None`: not a telemetry-changing command (the
/// `IsTelemetryEnabled`/`GetTelemetry…` queries, and everything else). Command names match
/// without regard to case, as Tango's do.
///
/// Argument layouts (cppTango 10.3.3; every device entry is a pattern, see
/// [`DeviceSelector::matches`]; an empty argument changes nothing):
/// - `StartTelemetry`/`StopTelemetry`: `DevVarStringArray [pattern…]`;
/// - `SetTelemetryTracing`/`SetTelemetryLogging`: `DevVarLongStringArray` with `longs[i]`
///   (0 = off, any other value = on) for `strings[i]`, both arrays of one length;
/// - `SetTelemetryTopics`: `[pattern, N, topic × N]` repeated;
/// - `SetTelemetry{Tracing,Logging}Endpoints`: `[pattern, N, (exporter, endpoint) × N]`
///   repeated; `N = 0` empties the list;
/// - `AddTelemetry…Endpoints`/`RemoveTelemetry…Endpoints`: `[pattern, exporter, endpoint]`
///   repeated.
///
/// Counts are unsigned decimal numbers; exporter names are lowercase only; endpoints are checked
/// as everywhere but have no defaults (an empty one is refused). cppTango checks the whole
/// argument before changing anything, so an `Err` here is a command it rejected without effect.
/// A reply `API_DeviceNotFound` (a pattern matched no device) still means the patterns that did
/// match were changed.
pub fn parse_admin_command(
    command: &str,
    argin: Option<&ArgValue>,
) -> Option<Result<Vec<AdminCommand>, ConfigWarning>> {
    let name = *CHANGING_COMMANDS.iter().find(|c| c.eq_ignore_ascii_case(command))?;
    let warning = |error: ConfigError| ConfigWarning {
        source: Source::AdminCommand { command: name.to_owned() },
        name: name.to_owned(),
        value: argin.map(render_argin).unwrap_or_default(),
        reason: format!("{error}; {REFUSED_COMMAND}"),
    };
    Some(admin_changes(name, argin).map_err(warning))
}

fn admin_changes(name: &'static str, argin: Option<&ArgValue>) -> Result<Vec<AdminCommand>, ConfigError> {
    let command = |targets: DeviceSelector, change: AdminChange| AdminCommand {
        command: name.to_owned(),
        targets,
        change,
    };
    if matches!(name, SET_TRACING | SET_LOGGING) {
        let Some(ArgValue::LongStringArray { longs, strings }) = argin else {
            return Err(ConfigError::WrongArgumentType { expected: "DevVarLongStringArray" });
        };
        if longs.len() != strings.len() {
            return Err(ConfigError::LengthMismatch { longs: longs.len(), strings: strings.len() });
        }
        return Ok(longs
            .iter()
            .zip(strings)
            .map(|(on, pattern)| {
                let change = if name == SET_TRACING {
                    AdminChange::Tracing(*on != 0)
                } else {
                    AdminChange::Logging(*on != 0)
                };
                command(DeviceSelector::Pattern(pattern.clone()), change)
            })
            .collect());
    }
    let Some(ArgValue::StringArray(args)) = argin else {
        return Err(ConfigError::WrongArgumentType { expected: "DevVarStringArray" });
    };
    match name {
        START | STOP => {
            Ok(vec![command(DeviceSelector::Names(args.clone()), AdminChange::Enable(name == START))])
        }
        SET_TOPICS => counted_groups(args, 1, "topics")?
            .into_iter()
            .map(|(pattern, items)| {
                let topics = Topics::parse_list(&items.iter().map(String::as_str).collect::<Vec<_>>())?;
                Ok(command(DeviceSelector::Pattern(pattern.clone()), AdminChange::Topics(topics)))
            })
            .collect(),
        SET_TRACING_ENDPOINTS | SET_LOGGING_ENDPOINTS => counted_groups(args, 2, "endpoints")?
            .into_iter()
            .map(|(pattern, items)| {
                let list = admin_destinations(items)?;
                let change = if name == SET_TRACING_ENDPOINTS {
                    AdminChange::SetTracing(list)
                } else {
                    AdminChange::SetLogging(list)
                };
                Ok(command(DeviceSelector::Pattern(pattern.clone()), change))
            })
            .collect(),
        _ => {
            if args.len() % 3 != 0 {
                return Err(ConfigError::NotTriplets { len: args.len() });
            }
            args.chunks(3)
                .map(|entry| {
                    let (pattern, pair) =
                        entry.split_first().ok_or(ConfigError::NotTriplets { len: args.len() })?;
                    let list = admin_destinations(pair)?;
                    let change = match name {
                        ADD_TRACING_ENDPOINTS => AdminChange::AddTracing(list),
                        REMOVE_TRACING_ENDPOINTS => AdminChange::RemoveTracing(list),
                        ADD_LOGGING_ENDPOINTS => AdminChange::AddLogging(list),
                        _ => AdminChange::RemoveLogging(list),
                    };
                    Ok(command(DeviceSelector::Pattern(pattern.clone()), change))
                })
                .collect()
        }
    }
}

/// Splits `[pattern, N, item × (N × width)]…` into `(pattern, items)` groups.
fn counted_groups<'a>(
    args: &'a [String],
    width: usize,
    what: &'static str,
) -> Result<Vec<(&'a String, &'a [String])>, ConfigError> {
    let mut groups = Vec::new();
    let mut rest = args;
    while !rest.is_empty() {
        let [pattern, count, tail @ ..] = rest else {
            return Err(ConfigError::MissingPatternAndCount { what });
        };
        let n = parse_count(count)?;
        let len = usize::try_from(n).ok().and_then(|n| n.checked_mul(width));
        let Some((items, after)) = len.and_then(|len| tail.split_at_checked(len)) else {
            return Err(ConfigError::EntryCountMismatch { pattern: pattern.clone(), expected: n });
        };
        groups.push((pattern, items));
        rest = after;
    }
    Ok(groups)
}

/// An unsigned count, all of the string (as `std::from_chars`: no sign, no spaces).
fn parse_count(value: &str) -> Result<u32, ConfigError> {
    let invalid = || ConfigError::InvalidCount { value: value.to_owned() };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    value.parse().map_err(|_| invalid())
}

/// `(exporter, endpoint)` pairs of an admin command: exact names, no default endpoints.
fn admin_destinations(pairs: &[String]) -> Result<Vec<Destination>, ConfigError> {
    pairs
        .chunks(2)
        .map(|pair| match pair {
            [exporter, endpoint] => destination(Exporter::parse(exporter)?, endpoint),
            _ => Err(ConfigError::NotTriplets { len: pairs.len() + 1 }),
        })
        .collect()
}

fn render_argin(argin: &ArgValue) -> String {
    match argin {
        ArgValue::StringArray(strings) => format!("[{}]", strings.join(", ")),
        ArgValue::LongStringArray { longs, strings } => {
            let longs: Vec<String> = longs.iter().map(i64::to_string).collect();
            format!("[{}] [{}]", longs.join(", "), strings.join(", "))
        }
        other => format!("{other:?}"),
    }
}

/// The effective configuration of one device (or client), with where each value came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Effective {
    pub enable: (bool, Source),
    pub types: (Types, Source),
    pub topics: (Topics, Source),
    pub tracing: (Vec<Destination>, Source),
    pub logging: (Vec<Destination>, Source),
}

/// Resolves layers, lowest precedence first: `layers[0]` is the daemon's defaults and should say
/// everything (what it leaves unset is: telemetry off, both types, [`Topics::native_default`], no
/// destinations). Then, for a server device: the layers of [`layers_from_process`] (or
/// `/etc/tangorc`, the home tangorc, the environment), then the device properties.
pub fn resolve(layers: &[(Source, &Layer)]) -> Effective {
    let mut effective = Effective {
        enable: (false, Source::Daemon),
        types: (Types::both(), Source::Daemon),
        topics: (Topics::native_default(), Source::Daemon),
        tracing: (Vec::new(), Source::Daemon),
        logging: (Vec::new(), Source::Daemon),
    };
    for (source, layer) in layers {
        if let Some(enable) = layer.enable {
            effective.enable = (enable, source.clone());
        }
        if let Some(types) = layer.types {
            effective.types = (types, source.clone());
        }
        if let Some(topics) = layer.topics {
            effective.topics = (topics, source.clone());
        }
        if let Some(tracing) = &layer.tracing {
            effective.tracing = (tracing.clone(), source.clone());
        }
        if let Some(logging) = &layer.logging {
            effective.logging = (logging.clone(), source.clone());
        }
    }
    effective
}

impl Effective {
    /// Applies one runtime change (the caller checks `cmd.targets` against the device first, or
    /// uses [`Effective::apply_admin_commands`]). The changed setting's source becomes the command.
    pub fn apply_admin(&mut self, cmd: &AdminCommand) {
        let source = Source::AdminCommand { command: cmd.command.clone() };
        match &cmd.change {
            AdminChange::Enable(on) => self.enable = (*on, source),
            AdminChange::Tracing(on) => {
                self.types.0.tracing = *on;
                self.types.1 = source;
            }
            AdminChange::Logging(on) => {
                self.types.0.logging = *on;
                self.types.1 = source;
            }
            AdminChange::Topics(topics) => self.topics = (*topics, source),
            AdminChange::SetTracing(list) => self.tracing = (list.clone(), source),
            AdminChange::SetLogging(list) => self.logging = (list.clone(), source),
            AdminChange::AddTracing(list) => add(&mut self.tracing, list, source),
            AdminChange::AddLogging(list) => add(&mut self.logging, list, source),
            AdminChange::RemoveTracing(list) => remove(&mut self.tracing, list, source),
            AdminChange::RemoveLogging(list) => remove(&mut self.logging, list, source),
        }
    }

    /// Applies, in order, the changes whose targets match `device`; true if any did.
    pub fn apply_admin_commands(&mut self, device: &str, cmds: &[AdminCommand]) -> bool {
        let mut any = false;
        for cmd in cmds.iter().filter(|c| c.targets.matches(device)) {
            self.apply_admin(cmd);
            any = true;
        }
        any
    }

    /// Whether spans are wanted: telemetry on with tracing among its types.
    pub fn tracing_active(&self) -> bool {
        self.enable.0 && self.types.0.tracing
    }

    /// Whether device logs are wanted: telemetry on with logging among its types.
    pub fn logging_active(&self) -> bool {
        self.enable.0 && self.types.0.logging
    }
}

fn add(current: &mut (Vec<Destination>, Source), list: &[Destination], source: Source) {
    for destination in list {
        if !current.0.contains(destination) {
            current.0.push(destination.clone());
        }
    }
    current.1 = source;
}

fn remove(current: &mut (Vec<Destination>, Source), list: &[Destination], source: Source) {
    current.0.retain(|d| !list.contains(d));
    current.1 = source;
}

impl fmt::Display for Effective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |destinations: &[Destination]| {
            destinations.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        };
        write!(
            f,
            "telemetry {} ({}); types {} ({}); topics {} ({}); tracing to [{}] ({}); logging to [{}] ({})",
            if self.enable.0 { "on" } else { "off" },
            self.enable.1,
            self.types.0.names().join(","),
            self.types.1,
            self.topics.0.names().join(","),
            self.topics.1,
            list(&self.tracing.0),
            self.tracing.1,
            list(&self.logging.0),
            self.logging.1,
        )
    }
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

    fn env(vars: &[(&str, &str)]) -> HashMap<String, String> {
        vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn grpc(endpoint: &str) -> Destination {
        Destination::OtlpGrpc { endpoint: endpoint.to_owned() }
    }

    fn http(endpoint: &str) -> Destination {
        Destination::OtlpHttp { endpoint: endpoint.to_owned() }
    }

    fn cout() -> Destination {
        Destination::Console { stream: ConsoleStream::Stdout }
    }

    fn cerr() -> Destination {
        Destination::Console { stream: ConsoleStream::Stderr }
    }

    fn strings(items: &[&str]) -> ArgValue {
        ArgValue::StringArray(items.iter().map(|s| (*s).to_owned()).collect())
    }

    fn long_strings(longs: &[i64], items: &[&str]) -> ArgValue {
        ArgValue::LongStringArray {
            longs: longs.to_vec(),
            strings: items.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn admin(command: &str, argin: &ArgValue) -> Vec<AdminCommand> {
        parse_admin_command(command, Some(argin)).unwrap().unwrap()
    }

    fn admin_err(command: &str, argin: &ArgValue) -> ConfigWarning {
        parse_admin_command(command, Some(argin)).unwrap().unwrap_err()
    }

    fn pattern(p: &str) -> DeviceSelector {
        DeviceSelector::Pattern(p.to_owned())
    }

    #[test]
    fn enable_spellings() {
        for value in ["on", "ON", "On", "1", "true", "True", "TRUE"] {
            let (layer, warnings) = layer_from_environment(&env(&[(ENV_ENABLE, value)]));
            assert_eq!(layer.enable, Some(true), "{value}");
            assert!(warnings.is_empty());
        }
        for value in ["off", "OFF", "0", "false", "False"] {
            assert_eq!(layer_from_environment(&env(&[(ENV_ENABLE, value)])).0.enable, Some(false), "{value}");
        }
        // PyTango's Python layer takes yes/y; cppTango refuses them, and blanks, and the empty string.
        for value in ["yes", "y", "maybe", "", " on", "on ", "2"] {
            let (layer, warnings) = layer_from_environment(&env(&[(ENV_ENABLE, value)]));
            assert_eq!(layer.enable, None, "{value:?}");
            assert_eq!(warnings.len(), 1, "{value:?}");
            assert_eq!(warnings[0].source, Source::Environment);
            assert_eq!(warnings[0].name, ENV_ENABLE);
            assert!(warnings[0].reason.contains("refuses to start"), "{}", warnings[0]);
        }
    }

    #[test]
    fn list_splitting_follows_the_regex_token_iterator() {
        assert_eq!(split_list("tracing,logging"), ["tracing", "logging"]);
        assert_eq!(split_list("tracing , \tlogging"), ["tracing", "logging"]);
        assert_eq!(split_list(" tracing "), [" tracing "]);
        assert_eq!(split_list(" a , b "), [" a", "b "]);
        assert_eq!(split_list(""), [""]);
        assert_eq!(split_list(","), [""]);
        assert_eq!(split_list("a,"), ["a"]);
        assert_eq!(split_list("a, "), ["a"]);
        assert_eq!(split_list(",a"), ["", "a"]);
        assert_eq!(split_list("a,,b"), ["a", "", "b"]);
        assert_eq!(split_list("a , , b"), ["a", "", "b"]);
    }

    #[test]
    fn types_lists() {
        let types = |v: &str| layer_from_environment(&env(&[(ENV_TYPES, v)])).0.types;
        assert_eq!(types("tracing"), Some(Types { tracing: true, logging: false }));
        assert_eq!(types("logging"), Some(Types { tracing: false, logging: true }));
        assert_eq!(types("tracing, logging"), Some(Types::both()));
        assert_eq!(types("logging,tracing,tracing"), Some(Types::both()));
        assert_eq!(types("none"), Some(Types::default()));
        // `none` wins wherever it stands.
        assert_eq!(types("tracing,none"), Some(Types::default()));
        assert_eq!(types("none,logging"), Some(Types::default()));
        for bad in ["TRACING", "Tracing", "", "trace", "tracing,,logging", ",tracing", " tracing", "tracing "]
        {
            let (layer, warnings) = layer_from_environment(&env(&[(ENV_TYPES, bad)]));
            assert_eq!(layer.types, None, "{bad:?}");
            assert_eq!(warnings.len(), 1, "{bad:?}");
        }
        assert_eq!(Types::both().names(), ["tracing", "logging"]);
        assert_eq!(Types::default().names(), ["none"]);
        assert!(Types::parse_list(&["Logging"]).is_err());
    }

    #[test]
    fn topics_lists() {
        let topics = |v: &str| layer_from_environment(&env(&[(ENV_TOPICS, v)])).0.topics;
        assert_eq!(topics("all"), Some(Topics::native_default()));
        assert_eq!(topics("user"), Some(Topics { user: true, ..Topics::default() }));
        assert_eq!(
            topics("user, events,polling,database"),
            Some(Topics { user: true, events: true, polling: true, database: true, all: false })
        );
        assert_eq!(topics("user,user"), Some(Topics { user: true, ..Topics::default() }));
        assert_eq!(topics("all,user").unwrap().names(), ["all", "user"]);
        // No `none` topic, no singular `event`, lowercase only.
        for bad in ["none", "event", "ALL", "User", "", "kernel"] {
            let (layer, warnings) = layer_from_environment(&env(&[(ENV_TOPICS, bad)]));
            assert_eq!(layer.topics, None, "{bad:?}");
            assert!(warnings[0].reason.contains("unknown telemetry topic"), "{}", warnings[0]);
        }
        assert_eq!(Topics::native_default().names(), ["all"]);
        assert_eq!(Topics::parse_list(&[]).unwrap(), Topics::default());
        assert!(Topics::default().names().is_empty());
    }

    #[test]
    fn exporters_and_endpoints_from_the_environment() {
        let tracing = |vars: &[(&str, &str)]| layer_from_environment(&env(vars));
        // Exporters alone: each exporter's default endpoint, logging defaults differ for http.
        assert_eq!(
            tracing(&[(ENV_TRACING_EXPORTERS, "grpc")]).0.tracing,
            Some(vec![grpc("http://localhost:4317")])
        );
        assert_eq!(
            tracing(&[(ENV_TRACING_EXPORTERS, "http")]).0.tracing,
            Some(vec![http("http://localhost:4318/v1/traces")])
        );
        assert_eq!(
            tracing(&[(ENV_LOGGING_EXPORTERS, "http")]).0.logging,
            Some(vec![http("http://localhost:4318/v1/logs")])
        );
        assert_eq!(tracing(&[(ENV_LOGGING_EXPORTERS, "console")]).0.logging, Some(vec![cout()]));
        // Exporter names are lowercased; lists are positional.
        assert_eq!(
            tracing(&[
                (ENV_TRACING_EXPORTERS, "GRPC, http"),
                (ENV_TRACING_ENDPOINTS, "grpc://h:1 , http://h:2/x")
            ])
            .0
            .tracing,
            Some(vec![grpc("http://h:1"), http("http://h:2/x")])
        );
        // Endpoints alone go with the default exporter, console.
        assert_eq!(tracing(&[(ENV_TRACING_ENDPOINTS, "cerr")]).0.tracing, Some(vec![cerr()]));
        // Empty values mean the defaults (and still hide the files).
        assert_eq!(tracing(&[(ENV_TRACING_EXPORTERS, "")]).0.tracing, Some(vec![cout()]));
        assert_eq!(
            tracing(&[(ENV_TRACING_EXPORTERS, "grpc"), (ENV_TRACING_ENDPOINTS, "")]).0.tracing,
            Some(vec![grpc("http://localhost:4317")])
        );
        // Duplicates are kept, as cppTango makes two exporters.
        assert_eq!(
            tracing(&[(ENV_TRACING_EXPORTERS, "console,console"), (ENV_TRACING_ENDPOINTS, "cout,cout")])
                .0
                .tracing,
            Some(vec![cout(), cout()])
        );
        // A trailing comma adds nothing.
        assert_eq!(
            tracing(&[(ENV_TRACING_EXPORTERS, "grpc,")]).0.tracing,
            Some(vec![grpc("http://localhost:4317")])
        );
        // IPv6 literals pass cppTango's check.
        assert_eq!(
            tracing(&[(ENV_TRACING_EXPORTERS, "grpc"), (ENV_TRACING_ENDPOINTS, "grpc://[::1]:4317")])
                .0
                .tracing,
            Some(vec![grpc("http://[::1]:4317")])
        );
    }

    #[test]
    fn invalid_exporters_and_endpoints_fall_back_with_a_warning() {
        let cases: [(&[(&str, &str)], &str); 16] = [
            (&[(ENV_TRACING_EXPORTERS, "none")], ENV_TRACING_EXPORTERS),
            (&[(ENV_TRACING_EXPORTERS, "zipkin")], ENV_TRACING_EXPORTERS),
            (&[(ENV_TRACING_EXPORTERS, " grpc")], ENV_TRACING_EXPORTERS),
            (&[(ENV_TRACING_EXPORTERS, ",grpc")], ENV_TRACING_EXPORTERS),
            (
                &[(ENV_TRACING_EXPORTERS, "grpc,http"), (ENV_TRACING_ENDPOINTS, "grpc://h:1")],
                ENV_TRACING_ENDPOINTS,
            ),
            (
                &[(ENV_TRACING_EXPORTERS, "grpc"), (ENV_TRACING_ENDPOINTS, "grpc://h:1,http://h:2")],
                ENV_TRACING_ENDPOINTS,
            ),
            (
                &[(ENV_TRACING_EXPORTERS, "grpc,http"), (ENV_TRACING_ENDPOINTS, ",http://h:2/x")],
                ENV_TRACING_ENDPOINTS,
            ),
            (&[(ENV_TRACING_ENDPOINTS, "grpc://h:1")], ENV_TRACING_ENDPOINTS),
            (&[(ENV_TRACING_EXPORTERS, "grpc"), (ENV_TRACING_ENDPOINTS, "h:1")], ENV_TRACING_ENDPOINTS),
            (
                &[(ENV_TRACING_EXPORTERS, "grpc"), (ENV_TRACING_ENDPOINTS, "http://h:1")],
                ENV_TRACING_ENDPOINTS,
            ),
            (
                &[(ENV_TRACING_EXPORTERS, "grpc"), (ENV_TRACING_ENDPOINTS, "GRPC://h:1")],
                ENV_TRACING_ENDPOINTS,
            ),
            (&[(ENV_TRACING_EXPORTERS, "grpc"), (ENV_TRACING_ENDPOINTS, "grpc://h")], ENV_TRACING_ENDPOINTS),
            (
                &[(ENV_TRACING_EXPORTERS, "grpc"), (ENV_TRACING_ENDPOINTS, "grpc://h:1/")],
                ENV_TRACING_ENDPOINTS,
            ),
            (&[(ENV_TRACING_EXPORTERS, "http"), (ENV_TRACING_ENDPOINTS, "ftp://x:1")], ENV_TRACING_ENDPOINTS),
            (&[(ENV_TRACING_EXPORTERS, "http"), (ENV_TRACING_ENDPOINTS, "http://h")], ENV_TRACING_ENDPOINTS),
            (&[(ENV_TRACING_EXPORTERS, "console"), (ENV_TRACING_ENDPOINTS, "stdout")], ENV_TRACING_ENDPOINTS),
        ];
        for (vars, culprit) in cases {
            let (layer, warnings) = layer_from_environment(&env(vars));
            assert_eq!(layer.tracing, None, "{vars:?}");
            assert_eq!(warnings.len(), 1, "{vars:?}");
            assert_eq!(warnings[0].name, culprit, "{vars:?}");
            assert!(warnings[0].reason.contains("refuses to start"), "{}", warnings[0]);
        }
        let warning = &layer_from_environment(&env(&[
            (ENV_LOGGING_EXPORTERS, "http"),
            (ENV_LOGGING_ENDPOINTS, "ftp://x:1"),
        ]))
        .1[0];
        assert_eq!(warning.value, "ftp://x:1");
        assert!(warning.to_string().contains("http endpoint \"ftp://x:1\" is invalid"), "{warning}");
        assert!(
            warning.to_string().starts_with("environment: TANGO_TELEMETRY_LOGGING_ENDPOINTS"),
            "{warning}"
        );
        // cppTango accepts any digits as a port; the tracer cannot use this one.
        let (layer, warnings) = layer_from_environment(&env(&[
            (ENV_TRACING_EXPORTERS, "grpc"),
            (ENV_TRACING_ENDPOINTS, "grpc://h:99999"),
        ]));
        assert_eq!(layer.tracing, None);
        assert!(warnings[0].reason.contains("cannot export"), "{}", warnings[0]);
    }

    #[test]
    fn endpoint_checks_are_cpptango_regexes() {
        for ok in ["http://h:1", "https://h:1/", "http://h:2/x/y?z", "http://[::1]:4318/v1/traces"] {
            assert_eq!(destination(Exporter::Http, ok).unwrap(), http(ok), "{ok}");
        }
        for bad in
            ["HTTP://h:1/v1/traces", "http://h", "http://:1", "http://h:/x", "http://h:1/x\ny", "h:1", ""]
        {
            assert!(destination(Exporter::Http, bad).is_err(), "{bad:?}");
        }
        // cppTango's `[^/]+:\d+` takes this; it is no URL the tracer can post to.
        assert!(matches!(destination(Exporter::Http, "http://a:b:1/p"), Err(ConfigError::Unusable { .. })));
        assert_eq!(destination(Exporter::Grpc, "grpc://h:01").unwrap(), grpc("http://h:1"));
        for bad in ["grpc://h:1/", "grpc://:1", "grpc://h:x", "grpcs://h:1", " grpc://h:1"] {
            assert!(destination(Exporter::Grpc, bad).is_err(), "{bad:?}");
        }
        assert_eq!(destination(Exporter::Console, "cerr").unwrap(), cerr());
        for bad in ["COUT", " cout", "stderr", ""] {
            assert!(destination(Exporter::Console, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn old_names_are_ignored_with_a_warning() {
        let (layer, warnings) = layer_from_environment(&env(&[
            ("TANGO_TELEMETRY_TRACES_EXPORTER", "grpc"),
            ("TANGO_TELEMETRY_TRACES_ENDPOINT", "grpc://h:1"),
            ("TANGO_TELEMETRY_LOGS_EXPORTER", "http"),
            ("TANGO_TELEMETRY_LOGS_ENDPOINT", "http://h:2"),
        ]));
        assert_eq!(layer, Layer::default());
        assert_eq!(warnings.len(), 4);
        assert!(warnings.iter().any(|w| w.name == "TANGO_TELEMETRY_TRACES_EXPORTER"
            && w.reason.contains("renamed TANGO_TELEMETRY_TRACING_EXPORTERS")));
    }

    #[test]
    fn tangorc_quirks() {
        let text = "# Config file\nTANGO_HOST=vm:10000\n";
        assert_eq!(tangorc_value("TANGO_HOST", text).as_deref(), Some("vm:10000"));
        assert_eq!(tangorc_value(ENV_ENABLE, text), None);
        // The line is lowercased, value included; spaces go, the name may be any substring.
        assert_eq!(tangorc_value(ENV_ENABLE, "tango_telemetry_enable = ON\n").as_deref(), Some("on"));
        assert_eq!(tangorc_value(ENV_ENABLE, "MY_TANGO_TELEMETRY_ENABLE=on").as_deref(), Some("on"));
        assert_eq!(tangorc_value(ENV_ENABLE, "TANGO_TELEMETRY_ENABLE_X=off").as_deref(), Some("off"));
        // A `#` before the name skips the line; after it, it is part of the value.
        assert_eq!(tangorc_value(ENV_ENABLE, "# TANGO_TELEMETRY_ENABLE=on"), None);
        assert_eq!(tangorc_value(ENV_ENABLE, "TANGO_TELEMETRY_ENABLE=on # c").as_deref(), Some("on#c"));
        // The value is after the line's first `=`, whatever stands before the name.
        assert_eq!(
            tangorc_value(ENV_ENABLE, "X=1 TANGO_TELEMETRY_ENABLE=on").as_deref(),
            Some("1tango_telemetry_enable=on")
        );
        // Lines without `=` are passed over; the first matching line wins.
        assert_eq!(
            tangorc_value(
                ENV_ENABLE,
                "TANGO_TELEMETRY_ENABLE\nTANGO_TELEMETRY_ENABLE=on\nTANGO_TELEMETRY_ENABLE=off"
            )
            .as_deref(),
            Some("on")
        );
        // Only spaces are removed: tabs and a CRLF's `\r` stay.
        assert_eq!(tangorc_value(ENV_ENABLE, "TANGO_TELEMETRY_ENABLE=on\r\n").as_deref(), Some("on\r"));
        assert_eq!(tangorc_value(ENV_ENABLE, "TANGO_TELEMETRY_ENABLE=\ton").as_deref(), Some("\ton"));

        let (layer, warnings) = layer_from_tangorc(
            "/etc/tangorc",
            "TANGO_HOST=vm:10000\nTANGO_TELEMETRY_ENABLE=On\nTANGO_TELEMETRY_TYPES=Tracing\n\
             TANGO_TELEMETRY_TRACING_EXPORTERS=GRPC,HTTP\n\
             TANGO_TELEMETRY_TRACING_ENDPOINTS=GRPC://H:1, HTTP://H:2/V1\n",
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(layer.enable, Some(true));
        // Uppercase works from a file because the whole line is lowercased.
        assert_eq!(layer.types, Some(Types { tracing: true, logging: false }));
        assert_eq!(layer.tracing, Some(vec![grpc("http://h:1"), http("http://h:2/v1")]));

        let (layer, warnings) = layer_from_tangorc("/root/.tangorc", "TANGO_TELEMETRY_ENABLE=on # comment\n");
        assert_eq!(layer.enable, None);
        assert_eq!(warnings[0].source, Source::Tangorc { path: "/root/.tangorc".into() });
        assert_eq!(warnings[0].value, "on#comment");
        assert_eq!(warnings[0].to_string().split(':').next(), Some("/root/.tangorc"));
    }

    #[test]
    fn process_lookup_is_per_variable() {
        let home = (
            "/home/op/.tangorc",
            "TANGO_TELEMETRY_TRACING_ENDPOINTS=grpc://H:1\nTANGO_TELEMETRY_TOPICS=User\n",
        );
        let etc = (
            "/etc/tangorc",
            "TANGO_TELEMETRY_TOPICS=database\nTANGO_TELEMETRY_TYPES=logging\nTANGO_TELEMETRY_ENABLE=on\n",
        );
        let vars = env(&[(ENV_TRACING_EXPORTERS, "grpc"), (ENV_ENABLE, "off")]);
        let (layers, warnings) = layers_from_process(&vars, &[home, etc]);
        assert!(warnings.is_empty(), "{warnings:?}");
        let sources: Vec<_> = layers.iter().map(|(s, _)| s.to_string()).collect();
        assert_eq!(sources, ["/etc/tangorc", "/home/op/.tangorc", "environment"]);
        // Exporters from the environment pair with endpoints from the home file.
        assert_eq!(layers[2].1.tracing, Some(vec![grpc("http://h:1")]));
        assert_eq!(layers[2].1.enable, Some(false));
        assert_eq!(layers[1].1.topics, Some(Topics { user: true, ..Topics::default() }));
        assert_eq!(layers[1].1.tracing, None);
        assert_eq!(layers[0].1.types, Some(Types { tracing: false, logging: true }));
        // /etc's topics are hidden by the home file's: nobody reports them.
        assert_eq!(layers[0].1.topics, None);

        let daemon = Layer { enable: Some(true), ..Layer::default() };
        let mut stack = vec![(Source::Daemon, &daemon)];
        stack.extend(layers.iter().map(|(s, l)| (s.clone(), l)));
        let effective = resolve(&stack);
        assert_eq!(effective.enable, (false, Source::Environment));
        assert_eq!(effective.types.1, Source::Tangorc { path: "/etc/tangorc".into() });
        assert_eq!(effective.topics.1, Source::Tangorc { path: "/home/op/.tangorc".into() });
        assert_eq!(effective.tracing, (vec![grpc("http://h:1")], Source::Environment));

        // An empty variable hides the files; an empty line in the home file hides /etc.
        let etc = ("/etc/tangorc", "TANGO_TELEMETRY_TRACING_EXPORTERS=grpc\n");
        let (layers, _) = layers_from_process(&env(&[(ENV_TRACING_EXPORTERS, "")]), &[etc]);
        assert_eq!(layers[1].1.tracing, Some(vec![cout()]));
        assert_eq!(layers[0].1.tracing, None);
        let home = ("/root/.tangorc", "TANGO_TELEMETRY_TRACING_EXPORTERS=\n");
        let (layers, _) = layers_from_process(&env(&[]), &[home, etc]);
        assert_eq!(layers[1].1.tracing, Some(vec![cout()]));
        assert_eq!(layers[0].1.tracing, None);
    }

    fn props(items: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        items.iter().map(|(n, v)| ((*n).to_owned(), v.iter().map(|s| (*s).to_owned()).collect())).collect()
    }

    #[test]
    fn device_properties() {
        for (value, expected) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("on", true),
            ("false", false),
            ("0", false),
            ("off", false),
        ] {
            assert_eq!(
                layer_from_device_properties(&props(&[("telemetry_enable", &[value])])).0.enable,
                Some(expected)
            );
        }
        for bad in ["yes", " true", ""] {
            let (layer, warnings) = layer_from_device_properties(&props(&[("telemetry_enable", &[bad])]));
            assert_eq!(layer.enable, None);
            assert_eq!(warnings[0].source, Source::DeviceProperty);
            assert!(warnings[0].reason.contains("does not create the device"), "{}", warnings[0]);
        }
        let (layer, warnings) = layer_from_device_properties(&props(&[
            ("Telemetry_Types", &["tracing, logging", "bogus"]),
            ("telemetry_topics", &["user, database"]),
            ("telemetry_tracing_exporters", &["GRPC, http"]),
            ("telemetry_tracing_endpoints", &["grpc://h:1, http://h:2"]),
            ("telemetry_logging_exporters", &["http"]),
            ("telemetry_enable", &[]),
        ]));
        assert_eq!(layer.enable, None);
        assert_eq!(layer.types, Some(Types::both()));
        assert_eq!(layer.topics, Some(Topics { user: true, database: true, ..Topics::default() }));
        assert_eq!(layer.tracing, Some(vec![grpc("http://h:1"), http("http://h:2")]));
        assert_eq!(layer.logging, Some(vec![http("http://localhost:4318/v1/logs")]));
        // Only the first string is read; the rest is reported.
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].value, "bogus");
        assert!(warnings[0].reason.contains("first string"));

        // Only the first string, even when it is the bad one.
        assert_eq!(
            layer_from_device_properties(&props(&[("telemetry_types", &["tracing", "bogus"])])).0.types,
            Some(Types { tracing: true, logging: false })
        );
        assert_eq!(
            layer_from_device_properties(&props(&[("telemetry_types", &["bogus", "tracing"])])).0.types,
            None
        );

        // Endpoints need the exporters property, whatever the variables say.
        let (layer, warnings) =
            layer_from_device_properties(&props(&[("telemetry_tracing_endpoints", &["cerr"])]));
        assert_eq!(layer.tracing, None);
        assert!(
            warnings[0]
                .reason
                .contains("telemetry_tracing_endpoints is set without telemetry_tracing_exporters")
        );

        let (layer, warnings) = layer_from_device_properties(&props(&[
            ("telemetry_tracing_exporters", &["grpc, http"]),
            ("telemetry_tracing_endpoints", &["grpc://h:1"]),
        ]));
        assert_eq!(layer.tracing, None);
        assert_eq!(warnings[0].name, "telemetry_tracing_endpoints");
        let (_, warnings) =
            layer_from_device_properties(&props(&[("telemetry_tracing_exporters", &["none"])]));
        assert_eq!(warnings[0].name, "telemetry_tracing_exporters");
    }

    #[test]
    fn device_selector_wildcards() {
        let p = |s: &str, device: &str| pattern(s).matches(device);
        assert!(p("test/a/1", "test/a/1"));
        assert!(p("TEST/A/1", "test/a/1"));
        assert!(p("test/a/1", "Test/A/1"));
        assert!(p("test/a/*", "test/a/10"));
        assert!(p("test/a/1*", "test/a/1"));
        assert!(p("test/*/1", "test/b/1"));
        assert!(p("*/*/2", "test/a/2"));
        assert!(p("*1", "x/a.b/1"));
        assert!(p("test/**", "test/a/1"));
        assert!(p("x/a*b/1", "x/a.b/1"));
        assert!(p("*", "dserver/Dev/Dev"));
        assert!(p("dserver/dev/dev", "dserver/Dev/Dev"));
        // Everything but `*` is literal, and the whole name must match.
        assert!(!p("test/a/?", "test/a/1"));
        assert!(!p("test/a/[12]", "test/a/1"));
        assert!(!p("test/a/1.*", "test/a/1"));
        assert!(!p("test.a.1", "test/a/1"));
        assert!(!p("test/a", "test/a/1"));
        assert!(!p("a/1", "test/a/1"));
        assert!(!p("test/a/1 ", "test/a/1"));
        assert!(!p("", "test/a/1"));
        assert!(!p("test/a/*", "test/b/1"));
        assert!(p("*a*a*", "banana"));
        assert!(!p("*a*z", "banana"));

        assert!(DeviceSelector::Names(vec!["test/a/1".into(), "test/b/*".into()]).matches("test/b/7"));
        assert!(!DeviceSelector::Names(vec![]).matches("test/a/1"));
        assert!(DeviceSelector::All.matches("anything"));
    }

    #[test]
    fn admin_start_and_stop() {
        let cmds = admin("StartTelemetry", &strings(&["test/a/*", "test/b/1"]));
        assert_eq!(
            cmds,
            [AdminCommand {
                command: "StartTelemetry".into(),
                targets: DeviceSelector::Names(vec!["test/a/*".into(), "test/b/1".into()]),
                change: AdminChange::Enable(true),
            }]
        );
        assert!(cmds[0].targets.matches("TEST/A/2"));
        // Case-insensitive command names; the canonical name is kept.
        let cmds = admin("stoptelemetry", &strings(&["*"]));
        assert_eq!(cmds[0].command, "StopTelemetry");
        assert_eq!(cmds[0].change, AdminChange::Enable(false));
        // An empty list selects no device.
        let cmds = admin("StartTelemetry", &strings(&[]));
        assert!(!cmds[0].targets.matches("test/a/1"));
        // Queries and other commands are not changes.
        assert_eq!(parse_admin_command("IsTelemetryEnabled", Some(&strings(&["*"]))), None);
        assert_eq!(parse_admin_command("GetTelemetryTopics", Some(&strings(&["*"]))), None);
        assert_eq!(parse_admin_command("GetTelemetryTracingEndpoints", None), None);
        assert_eq!(parse_admin_command("Init", None), None);
        // Wrong argument type.
        let warning =
            parse_admin_command("StartTelemetry", Some(&ArgValue::String("x".into()))).unwrap().unwrap_err();
        assert!(warning.reason.contains("DevVarStringArray"), "{warning}");
        assert!(parse_admin_command("StartTelemetry", None).unwrap().is_err());
    }

    #[test]
    fn admin_set_tracing_and_logging() {
        let cmds =
            admin("SetTelemetryTracing", &long_strings(&[1, 0, 2, -1], &["test/a/1", "test/b/*", "x", "y"]));
        let changes: Vec<_> = cmds.iter().map(|c| (c.targets.clone(), c.change.clone())).collect();
        assert_eq!(
            changes,
            [
                (pattern("test/a/1"), AdminChange::Tracing(true)),
                (pattern("test/b/*"), AdminChange::Tracing(false)),
                (pattern("x"), AdminChange::Tracing(true)),
                (pattern("y"), AdminChange::Tracing(true)),
            ]
        );
        assert_eq!(
            admin("SetTelemetryLogging", &long_strings(&[0], &["test/a/1"]))[0].change,
            AdminChange::Logging(false)
        );
        assert!(admin("SetTelemetryTracing", &long_strings(&[], &[])).is_empty());
        for bad in [long_strings(&[0], &["a", "b"]), long_strings(&[1, 1], &["a"]), long_strings(&[], &["a"])]
        {
            let warning = admin_err("SetTelemetryTracing", &bad);
            assert!(warning.reason.contains("same length"), "{warning}");
            assert!(warning.reason.contains("changes nothing"), "{warning}");
        }
        assert!(
            admin_err("SetTelemetryLogging", &strings(&["test/a/1"]))
                .reason
                .contains("DevVarLongStringArray")
        );
    }

    #[test]
    fn admin_set_topics() {
        let cmds = admin(
            "SetTelemetryTopics",
            &strings(&["test/a/1", "2", "user", "database", "test/b/1", "1", "polling", "test/c/1", "0"]),
        );
        let changes: Vec<_> = cmds.iter().map(|c| (c.targets.clone(), c.change.clone())).collect();
        assert_eq!(
            changes,
            [
                (
                    pattern("test/a/1"),
                    AdminChange::Topics(Topics { user: true, database: true, ..Topics::default() })
                ),
                (pattern("test/b/1"), AdminChange::Topics(Topics { polling: true, ..Topics::default() })),
                (pattern("test/c/1"), AdminChange::Topics(Topics::default())),
            ]
        );
        assert_eq!(
            admin("SetTelemetryTopics", &strings(&["d", "01", "all"]))[0].change,
            AdminChange::Topics(Topics::native_default())
        );
        assert!(admin("SetTelemetryTopics", &strings(&[])).is_empty());
        let bad: [(&[&str], &str); 8] = [
            (&["d", "1", "bogus"], "unknown telemetry topic"),
            (&["d", "1", "USER"], "unknown telemetry topic"),
            (&["d", "2", "user"], "expected number (2)"),
            (&["d", "x", "user"], "not an unsigned number"),
            (&["d", "-1", "user"], "not an unsigned number"),
            (&["d", "+1", "user"], "not an unsigned number"),
            (&["d"], "device pattern and a number of topics"),
            (&["d", "1", "user", "extra"], "device pattern and a number of topics"),
        ];
        for (args, reason) in bad {
            let warning = admin_err("SetTelemetryTopics", &strings(args));
            assert!(warning.reason.contains(reason), "{args:?}: {warning}");
        }
        // A bad later group rejects the whole command.
        let warning = admin_err("SetTelemetryTopics", &strings(&["a", "1", "events", "b", "1", "bogus"]));
        assert_eq!(warning.value, "[a, 1, events, b, 1, bogus]");
        assert_eq!(warning.source, Source::AdminCommand { command: "SetTelemetryTopics".into() });
    }

    #[test]
    fn admin_set_endpoints() {
        let cmds = admin(
            "SetTelemetryTracingEndpoints",
            &strings(&[
                "test/a/1",
                "2",
                "grpc",
                "grpc://h:1",
                "http",
                "http://h:2/x",
                "test/b/1",
                "1",
                "console",
                "cerr",
            ]),
        );
        assert_eq!(cmds.len(), 2);
        assert_eq!(cmds[0].change, AdminChange::SetTracing(vec![grpc("http://h:1"), http("http://h:2/x")]));
        assert_eq!(cmds[1].targets, pattern("test/b/1"));
        assert_eq!(cmds[1].change, AdminChange::SetTracing(vec![cerr()]));
        assert_eq!(
            admin("SetTelemetryTracingEndpoints", &strings(&["d", "0"]))[0].change,
            AdminChange::SetTracing(vec![])
        );
        assert_eq!(
            admin("SetTelemetryLoggingEndpoints", &strings(&["d", "1", "http", "http://h:2"]))[0].change,
            AdminChange::SetLogging(vec![http("http://h:2")])
        );
        let bad: [&[&str]; 8] = [
            &["d", "1", "grpc", ""],
            &["d", "1", "http", ""],
            &["d", "1", "GRPC", "grpc://h:3"],
            &["d", "1", "none", ""],
            &["d", "1", "grpc", "grpc://h"],
            &["d", "2", "grpc", "grpc://h:1"],
            &["d", "1", "grpc"],
            &["a", "1", "grpc", "grpc://h:5", "b", "1", "bogus", "x"],
        ];
        for args in bad {
            assert!(
                parse_admin_command("SetTelemetryTracingEndpoints", Some(&strings(args))).unwrap().is_err(),
                "{args:?}"
            );
        }
    }

    #[test]
    fn admin_add_and_remove_endpoints() {
        let cmds = admin(
            "AddTelemetryTracingEndpoints",
            &strings(&["test/*", "http", "http://h:2", "test/b/1", "console", "cerr"]),
        );
        assert_eq!(cmds[0].change, AdminChange::AddTracing(vec![http("http://h:2")]));
        assert_eq!(cmds[1].change, AdminChange::AddTracing(vec![cerr()]));
        assert_eq!(cmds[1].targets, pattern("test/b/1"));
        assert_eq!(
            admin("RemoveTelemetryLoggingEndpoints", &strings(&["d", "console", "cout"]))[0].change,
            AdminChange::RemoveLogging(vec![cout()])
        );
        assert_eq!(
            admin("AddTelemetryLoggingEndpoints", &strings(&["d", "grpc", "grpc://l:1"]))[0].change,
            AdminChange::AddLogging(vec![grpc("http://l:1")])
        );
        assert_eq!(
            admin("RemoveTelemetryTracingEndpoints", &strings(&["d", "grpc", "grpc://h:1"]))[0].change,
            AdminChange::RemoveTracing(vec![grpc("http://h:1")])
        );
        assert!(admin("AddTelemetryTracingEndpoints", &strings(&[])).is_empty());
        assert!(
            admin_err("AddTelemetryTracingEndpoints", &strings(&["d", "grpc"]))
                .reason
                .contains("3 per entry")
        );
        assert!(
            admin_err("RemoveTelemetryTracingEndpoints", &strings(&["d", "grpc", ""]))
                .reason
                .contains("is invalid")
        );
        assert!(
            admin_err("AddTelemetryTracingEndpoints", &strings(&["d", "GRPC", "grpc://h:9"]))
                .reason
                .contains("unknown exporter")
        );
    }

    fn daemon_layer() -> Layer {
        Layer {
            enable: Some(true),
            types: Some(Types::both()),
            topics: Some(Topics::native_default()),
            tracing: Some(vec![grpc("http://collector:4317")]),
            logging: Some(vec![]),
        }
    }

    #[test]
    fn resolve_precedence_and_sources() {
        let daemon = daemon_layer();
        let etc =
            layer_from_tangorc("/etc/tangorc", "TANGO_TELEMETRY_ENABLE=off\nTANGO_TELEMETRY_TOPICS=user\n").0;
        let home = layer_from_tangorc("/root/.tangorc", "TANGO_TELEMETRY_TOPICS=database\n").0;
        let environment =
            layer_from_environment(&env(&[(ENV_ENABLE, "on"), (ENV_TRACING_EXPORTERS, "http")])).0;
        let device = layer_from_device_properties(&props(&[("telemetry_types", &["logging"])])).0;

        let only_daemon = resolve(&[(Source::Daemon, &daemon)]);
        assert_eq!(only_daemon.enable, (true, Source::Daemon));
        assert_eq!(only_daemon.tracing, (vec![grpc("http://collector:4317")], Source::Daemon));
        assert_eq!(only_daemon.topics, (Topics::native_default(), Source::Daemon));

        let etc_source = Source::Tangorc { path: "/etc/tangorc".into() };
        let with_files = resolve(&[(Source::Daemon, &daemon), (etc_source.clone(), &etc)]);
        assert_eq!(with_files.enable, (false, etc_source.clone()));
        assert_eq!(with_files.topics.1, etc_source);

        let home_source = Source::Tangorc { path: "/root/.tangorc".into() };
        let all = resolve(&[
            (Source::Daemon, &daemon),
            (etc_source.clone(), &etc),
            (home_source.clone(), &home),
            (Source::Environment, &environment),
            (Source::DeviceProperty, &device),
        ]);
        assert_eq!(all.enable, (true, Source::Environment));
        assert_eq!(all.topics, (Topics { database: true, ..Topics::default() }, home_source));
        assert_eq!(all.tracing, (vec![http("http://localhost:4318/v1/traces")], Source::Environment));
        assert_eq!(all.types, (Types { tracing: false, logging: true }, Source::DeviceProperty));
        assert_eq!(all.logging, (vec![], Source::Daemon));
        assert!(!all.tracing_active());
        let line = all.to_string();
        assert!(line.contains("telemetry on (environment)"), "{line}");
        assert!(line.contains("types logging (device property)"), "{line}");
        assert!(line.contains("topics database (/root/.tangorc)"), "{line}");

        // A device property beats the environment.
        let device = layer_from_device_properties(&props(&[("telemetry_enable", &["false"])])).0;
        let effective = resolve(&[
            (Source::Daemon, &daemon),
            (Source::Environment, &environment),
            (Source::DeviceProperty, &device),
        ]);
        assert_eq!(effective.enable, (false, Source::DeviceProperty));

        // What the daemon leaves unset.
        let effective = resolve(&[(Source::Daemon, &Layer::default())]);
        assert_eq!(effective.enable, (false, Source::Daemon));
        assert_eq!(effective.types.0, Types::both());
        assert!(effective.tracing.0.is_empty());
    }

    #[test]
    fn admin_commands_change_the_effective_configuration() {
        let daemon = daemon_layer();
        let mut effective = resolve(&[(Source::Daemon, &daemon)]);
        let apply = |effective: &mut Effective, command: &str, argin: ArgValue| {
            effective.apply_admin_commands("test/a/1", &admin(command, &argin))
        };

        assert!(apply(&mut effective, "StopTelemetry", strings(&["test/*"])));
        assert_eq!(effective.enable, (false, Source::AdminCommand { command: "StopTelemetry".into() }));
        assert!(!apply(&mut effective, "StartTelemetry", strings(&["test/b/*"])));
        assert!(!effective.enable.0);
        assert_eq!(effective.enable.1.to_string(), "admin command StopTelemetry");

        apply(&mut effective, "SetTelemetryTracing", long_strings(&[0, 1], &["test/a/1", "test/b/1"]));
        assert_eq!(effective.types.0, Types { tracing: false, logging: true });
        apply(&mut effective, "SetTelemetryLogging", long_strings(&[0], &["*"]));
        assert_eq!(effective.types.0, Types::default());

        // Later groups win over earlier ones for the same device.
        apply(
            &mut effective,
            "SetTelemetryTopics",
            strings(&["test/a/1", "1", "user", "test/a/*", "1", "database"]),
        );
        assert_eq!(effective.topics.0, Topics { database: true, ..Topics::default() });

        apply(
            &mut effective,
            "SetTelemetryTracingEndpoints",
            strings(&["test/a/1", "3", "grpc", "grpc://h:1", "console", "cout", "grpc", "grpc://h:1"]),
        );
        assert_eq!(effective.tracing.0, [grpc("http://h:1"), cout(), grpc("http://h:1")]);
        // Remove takes every occurrence; removing what is absent is no error.
        apply(
            &mut effective,
            "RemoveTelemetryTracingEndpoints",
            strings(&["test/a/1", "grpc", "grpc://h:1", "test/a/1", "grpc", "grpc://nothere:1"]),
        );
        assert_eq!(effective.tracing.0, [cout()]);
        // Add skips what is there.
        apply(
            &mut effective,
            "AddTelemetryTracingEndpoints",
            strings(&["test/a/1", "console", "cout", "test/a/1", "http", "http://h:2"]),
        );
        assert_eq!(effective.tracing.0, [cout(), http("http://h:2")]);
        assert_eq!(
            effective.tracing.1,
            Source::AdminCommand { command: "AddTelemetryTracingEndpoints".into() }
        );

        apply(&mut effective, "AddTelemetryLoggingEndpoints", strings(&["test/a/1", "grpc", "grpc://l:1"]));
        assert_eq!(effective.logging.0, [grpc("http://l:1")]);
        apply(&mut effective, "SetTelemetryLoggingEndpoints", strings(&["test/a/1", "0"]));
        assert!(effective.logging.0.is_empty());

        apply(&mut effective, "StartTelemetry", strings(&["TEST/A/1"]));
        apply(&mut effective, "SetTelemetryTracing", long_strings(&[1], &["test/a/1"]));
        assert!(effective.tracing_active());
    }
}
