//! Where spans and logs go, and how that is spelled in Tango's and OpenTelemetry's
//! configuration.
//!
//! Tango names an exporter (`http`, `grpc`, `console`) and an endpoint
//! (`http(s)://host:port[/path]`, `grpc://host:port`, `cout`/`cerr`); the OpenTelemetry SDKs read
//! `OTEL_TRACES_EXPORTER`, `OTEL_LOGS_EXPORTER` and the `OTEL_EXPORTER_OTLP_*` variables. Both end
//! up as a [`Destination`], normalised so that two spellings of one endpoint share one exporter.
//!
//! A [`Destination`] does not say which [`Signal`] it carries: Tango configures tracing and
//! logging endpoints separately, and the export hub keeps the destinations of each signal apart
//! (its own backlog, worker and counters per signal and destination), so a logging endpoint is
//! never merged into a tracing one, even when both are spelled alike (one gRPC collector for
//! both, the console). Only the defaults differ: an OTLP/HTTP endpoint without a path gets the
//! signal's path (`/v1/traces` or `/v1/logs`), see [`Destination::parse_for`].

use std::{fmt, path::PathBuf};

use url::Url;

/// Tango's and OpenTelemetry's default OTLP/HTTP origin; the signal's path follows.
const DEFAULT_HTTP_ORIGIN: &str = "http://localhost:4318";
/// Tango's and OpenTelemetry's default OTLP/gRPC endpoint.
const DEFAULT_GRPC_ENDPOINT: &str = "http://localhost:4317";
const DEFAULT_GRPC_PORT: u16 = 4317;

/// What an exporter carries: spans or log records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    /// Spans (`/v1/traces`, `TraceService`).
    Traces,
    /// Log records (`/v1/logs`, `LogsService`).
    Logs,
}

impl Signal {
    /// The OTLP/HTTP path of the signal, appended to a base endpoint.
    pub fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Logs => "/v1/logs",
        }
    }

    /// The signal's word in OpenTelemetry's variable names (`TRACES`, `LOGS`).
    fn env_word(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES",
            Signal::Logs => "LOGS",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Traces => "spans",
            Signal::Logs => "logs",
        })
    }
}

/// One place finished spans or log records are sent to. Each distinct value gets its own
/// exporter, per signal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Destination {
    /// OTLP/HTTP with protobuf bodies; `endpoint` is the full URL including the path,
    /// e.g. `http://127.0.0.1:4318/v1/traces`.
    OtlpHttp {
        /// The URL spans are POSTed to.
        endpoint: String,
    },
    /// OTLP/gRPC; `endpoint` is `http://host:port` or `https://host:port` (a `grpc://` spelling
    /// is accepted and means plain text).
    OtlpGrpc {
        /// The server's origin.
        endpoint: String,
    },
    /// One line of text per span, as it finishes.
    Console {
        /// Which standard stream the lines go to.
        stream: ConsoleStream,
    },
    /// The embedded store: a JSON-lines file, one span per line (see [`crate::json`]); log
    /// records go to the file beside it ([`crate::logs_path`]).
    Store {
        /// The file spans are appended to; missing parent directories are created.
        path: PathBuf,
    },
}

/// A standard output stream of the tracer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConsoleStream {
    /// Standard output (Tango's `cout`).
    Stdout,
    /// Standard error (Tango's `cerr`).
    Stderr,
}

/// Why an exporter or endpoint could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// The exporter name is none of those this tracer knows.
    #[error("unknown exporter {exporter:?} (expected http, grpc, console or store)")]
    UnknownExporter {
        /// The exporter as configured.
        exporter: String,
    },
    /// The endpoint has no scheme (`127.0.0.1:4318`, `collector:4317`).
    #[error(
        "{setting} {endpoint:?} has no scheme: add http:// or https:// in front \
         (for example \"http://{endpoint}\")"
    )]
    MissingScheme {
        /// The exporter or variable the endpoint was given for.
        setting: String,
        /// The endpoint as configured.
        endpoint: String,
    },
    /// The endpoint is not a URL at all.
    #[error("{exporter} endpoint {endpoint:?} is not a valid URL: {reason}")]
    InvalidUrl {
        /// The exporter the endpoint was given for.
        exporter: &'static str,
        /// The endpoint as configured.
        endpoint: String,
        /// What the URL parser objected to; part of this error's message, not a cause of its
        /// own, so that it is not printed twice.
        reason: url::ParseError,
    },
    /// The endpoint's scheme does not fit the exporter.
    #[error("{exporter} endpoint {endpoint:?} has scheme {scheme:?}, expected {expected}")]
    UnsupportedScheme {
        /// The exporter the endpoint was given for.
        exporter: &'static str,
        /// The endpoint as configured.
        endpoint: String,
        /// The scheme found.
        scheme: String,
        /// The schemes this exporter accepts.
        expected: &'static str,
    },
    /// The endpoint names no host.
    #[error("{exporter} endpoint {endpoint:?} names no host")]
    MissingHost {
        /// The exporter the endpoint was given for.
        exporter: &'static str,
        /// The endpoint as configured.
        endpoint: String,
    },
    /// A gRPC endpoint with a path, query or fragment; gRPC needs only scheme, host and port.
    #[error("grpc endpoint {endpoint:?} has a path; expected grpc://host:port or http://host:port")]
    GrpcPath {
        /// The endpoint as configured.
        endpoint: String,
    },
    /// The console exporter's endpoint names no stream.
    #[error("unknown console stream {endpoint:?} (expected cout, cerr, stdout or stderr)")]
    UnknownConsoleStream {
        /// The endpoint as configured.
        endpoint: String,
    },
    /// The store exporter was given no file.
    #[error("the store exporter needs a file path as its endpoint")]
    MissingStorePath,
    /// An OTLP protocol this tracer does not send.
    #[error("{variable}={value:?} is not supported (expected http/protobuf or grpc)")]
    UnsupportedProtocol {
        /// The environment variable that named it.
        variable: &'static str,
        /// Its value.
        value: String,
    },
    /// An `OTEL_TRACES_EXPORTER` entry this tracer does not support.
    #[error("OTEL_TRACES_EXPORTER names {value:?}; supported are otlp, console and none")]
    UnknownTracesExporter {
        /// The unsupported entry.
        value: String,
    },
    /// An `OTEL_LOGS_EXPORTER` entry this tracer does not support.
    #[error("OTEL_LOGS_EXPORTER names {value:?}; supported are otlp, console and none")]
    UnknownLogsExporter {
        /// The unsupported entry.
        value: String,
    },
}

impl Destination {
    /// Parses Tango's spelling of a tracing exporter and its endpoint
    /// ([`Destination::parse_for`] of [`Signal::Traces`]).
    pub fn parse(exporter: &str, endpoint: &str) -> Result<Destination, DestinationError> {
        Destination::parse_for(Signal::Traces, exporter, endpoint)
    }

    /// Parses Tango's spelling of an exporter and its endpoint for `signal`.
    ///
    /// - `http`: `http(s)://host:port[/path]`; without a path, the signal's (`/v1/traces`,
    ///   `/v1/logs`) is used.
    /// - `grpc`: `grpc://host:port` or `http(s)://host:port` (a missing port is 4317).
    /// - `console`: `cout`/`stdout` or `cerr`/`stderr`.
    /// - `store`: a file path (the spans' file; logs go beside it).
    ///
    /// An empty endpoint means Tango's default for that exporter.
    pub fn parse_for(
        signal: Signal,
        exporter: &str,
        endpoint: &str,
    ) -> Result<Destination, DestinationError> {
        let endpoint = endpoint.trim();
        match exporter.trim().to_ascii_lowercase().as_str() {
            "http" => http_destination(signal, endpoint, true),
            "grpc" => grpc_destination(endpoint),
            "console" => console_destination(endpoint),
            "store" => {
                if endpoint.is_empty() {
                    Err(DestinationError::MissingStorePath)
                } else {
                    Ok(Destination::Store { path: PathBuf::from(endpoint) })
                }
            }
            _ => Err(DestinationError::UnknownExporter { exporter: exporter.to_owned() }),
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::OtlpHttp { endpoint } => write!(f, "OTLP/HTTP {endpoint}"),
            Destination::OtlpGrpc { endpoint } => write!(f, "OTLP/gRPC {endpoint}"),
            Destination::Console { stream: ConsoleStream::Stdout } => f.write_str("console (stdout)"),
            Destination::Console { stream: ConsoleStream::Stderr } => f.write_str("console (stderr)"),
            Destination::Store { path } => write!(f, "store {}", path.display()),
        }
    }
}

/// Validates an OTLP/HTTP endpoint; with `default_path`, an endpoint without a path gets
/// the signal's path (Tango's rule), otherwise it is used as given (OpenTelemetry's rule for
/// the signal-specific variable).
fn http_destination(
    signal: Signal,
    endpoint: &str,
    default_path: bool,
) -> Result<Destination, DestinationError> {
    if endpoint.is_empty() {
        return Ok(Destination::OtlpHttp {
            endpoint: format!("{DEFAULT_HTTP_ORIGIN}{}", signal.http_path()),
        });
    }
    let mut url = parse_url("http", endpoint)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(DestinationError::UnsupportedScheme {
            exporter: "http",
            endpoint: endpoint.to_owned(),
            scheme: url.scheme().to_owned(),
            expected: "http or https",
        });
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(DestinationError::MissingHost { exporter: "http", endpoint: endpoint.to_owned() });
    }
    if default_path && matches!(url.path(), "" | "/") {
        url.set_path(signal.http_path());
    }
    Ok(Destination::OtlpHttp { endpoint: url.to_string() })
}

fn grpc_destination(endpoint: &str) -> Result<Destination, DestinationError> {
    if endpoint.is_empty() {
        return Ok(Destination::OtlpGrpc { endpoint: DEFAULT_GRPC_ENDPOINT.to_owned() });
    }
    let url = parse_url("grpc", endpoint)?;
    let scheme = match url.scheme() {
        "grpc" | "http" => "http",
        "grpcs" | "https" => "https",
        other => {
            return Err(DestinationError::UnsupportedScheme {
                exporter: "grpc",
                endpoint: endpoint.to_owned(),
                scheme: other.to_owned(),
                expected: "grpc, http, grpcs or https",
            });
        }
    };
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(DestinationError::MissingHost { exporter: "grpc", endpoint: endpoint.to_owned() });
    };
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(DestinationError::GrpcPath { endpoint: endpoint.to_owned() });
    }
    // `grpc` is no scheme the URL parser knows a default port for; http(s) keep theirs.
    let port = url.port_or_known_default().unwrap_or(DEFAULT_GRPC_PORT);
    Ok(Destination::OtlpGrpc { endpoint: format!("{scheme}://{host}:{port}") })
}

fn console_destination(endpoint: &str) -> Result<Destination, DestinationError> {
    let stream = match endpoint.to_ascii_lowercase().as_str() {
        "" | "cout" | "stdout" => ConsoleStream::Stdout,
        "cerr" | "stderr" => ConsoleStream::Stderr,
        _ => {
            return Err(DestinationError::UnknownConsoleStream { endpoint: endpoint.to_owned() });
        }
    };
    Ok(Destination::Console { stream })
}

fn parse_url(exporter: &'static str, endpoint: &str) -> Result<Url, DestinationError> {
    // `host:port` would parse as a URL of scheme `host`: catch the missing scheme first.
    if !endpoint.contains("://") {
        return Err(DestinationError::MissingScheme {
            setting: format!("{exporter} endpoint"),
            endpoint: endpoint.to_owned(),
        });
    }
    Url::parse(endpoint).map_err(|reason| DestinationError::InvalidUrl {
        exporter,
        endpoint: endpoint.to_owned(),
        reason,
    })
}

/// Refuses an endpoint variable without a scheme, naming the variable (the base endpoint
/// would otherwise be reported with the signal's path appended).
fn require_scheme(variable: &str, endpoint: &str) -> Result<(), DestinationError> {
    if endpoint.contains("://") {
        Ok(())
    } else {
        Err(DestinationError::MissingScheme { setting: variable.to_owned(), endpoint: endpoint.to_owned() })
    }
}

/// The destinations of spans the standard OpenTelemetry environment variables ask for
/// ([`otel_env_destinations`] of [`Signal::Traces`]).
pub fn destinations_from_otel_env(
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Vec<Destination>>, DestinationError> {
    otel_env_destinations(Signal::Traces, env)
}

/// The destinations of `signal` the standard OpenTelemetry environment variables ask for.
///
/// Reads (through `env`, so callers and tests choose the source), with `<S>` = `TRACES` or
/// `LOGS`:
/// - `OTEL_SDK_DISABLED=true`: no export at all;
/// - `OTEL_<S>_EXPORTER`: a comma-separated list of `otlp`, `console` (alias `logging`),
///   `none`;
/// - `OTEL_EXPORTER_OTLP_<S>_ENDPOINT` (used as given), else `OTEL_EXPORTER_OTLP_ENDPOINT`
///   (a base to which `/v1/traces` or `/v1/logs` is appended for OTLP/HTTP);
/// - `OTEL_EXPORTER_OTLP_<S>_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`
///   (the default) or `grpc`; `http/json` is refused.
///
/// Returns `None` when none of the exporter or endpoint variables is set (a protocol alone does
/// not ask for export), and `Some(vec![])` when export is explicitly off.
pub fn otel_env_destinations(
    signal: Signal,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Vec<Destination>>, DestinationError> {
    // An empty variable counts as unset, as in the SDKs.
    let var = |name: &str| env(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let word = signal.env_word();
    let exporters_variable = format!("OTEL_{word}_EXPORTER");
    let endpoint_variable = format!("OTEL_EXPORTER_OTLP_{word}_ENDPOINT");

    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(Some(Vec::new()));
    }
    let exporters = var(&exporters_variable);
    let signal_endpoint = var(&endpoint_variable);
    let base_endpoint = var("OTEL_EXPORTER_OTLP_ENDPOINT");
    if let Some(endpoint) = &signal_endpoint {
        require_scheme(&endpoint_variable, endpoint)?;
    }
    if let Some(endpoint) = &base_endpoint {
        require_scheme("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)?;
    }
    if exporters.is_none() && signal_endpoint.is_none() && base_endpoint.is_none() {
        return Ok(None);
    }

    let mut destinations: Vec<Destination> = Vec::new();
    let exporters = exporters.unwrap_or_else(|| "otlp".to_owned());
    for name in exporters.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let destination = match name.to_ascii_lowercase().as_str() {
            "none" => return Ok(Some(Vec::new())),
            "console" | "logging" => Destination::Console { stream: ConsoleStream::Stdout },
            "otlp" => otlp_from_env(signal, &var, signal_endpoint.as_deref(), base_endpoint.as_deref())?,
            _ => {
                let value = name.to_owned();
                return Err(match signal {
                    Signal::Traces => DestinationError::UnknownTracesExporter { value },
                    Signal::Logs => DestinationError::UnknownLogsExporter { value },
                });
            }
        };
        if !destinations.contains(&destination) {
            destinations.push(destination);
        }
    }
    Ok(Some(destinations))
}

fn otlp_from_env(
    signal: Signal,
    var: &impl Fn(&str) -> Option<String>,
    signal_endpoint: Option<&str>,
    base_endpoint: Option<&str>,
) -> Result<Destination, DestinationError> {
    let signal_protocol: &'static str = match signal {
        Signal::Traces => "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        Signal::Logs => "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
    };
    let (variable, protocol) = match var(signal_protocol) {
        Some(p) => (signal_protocol, Some(p)),
        None => ("OTEL_EXPORTER_OTLP_PROTOCOL", var("OTEL_EXPORTER_OTLP_PROTOCOL")),
    };
    let grpc = match protocol.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("http/protobuf") => false,
        Some("grpc") => true,
        Some(_) => {
            return Err(DestinationError::UnsupportedProtocol {
                variable,
                value: protocol.unwrap_or_default(),
            });
        }
    };
    match (grpc, signal_endpoint, base_endpoint) {
        (true, Some(endpoint), _) | (true, None, Some(endpoint)) => grpc_destination(endpoint),
        (true, None, None) => grpc_destination(""),
        (false, Some(endpoint), _) => http_destination(signal, endpoint, false),
        (false, None, Some(base)) => {
            let endpoint = format!("{}{}", base.trim_end_matches('/'), signal.http_path());
            http_destination(signal, &endpoint, false)
        }
        (false, None, None) => http_destination(signal, "", false),
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

    use std::collections::HashMap;

    use super::*;

    fn http(endpoint: &str) -> Destination {
        Destination::OtlpHttp { endpoint: endpoint.to_owned() }
    }

    fn grpc(endpoint: &str) -> Destination {
        Destination::OtlpGrpc { endpoint: endpoint.to_owned() }
    }

    #[test]
    fn parses_tango_http_endpoints() {
        let cases = [
            ("http://127.0.0.1:4318/v1/traces", "http://127.0.0.1:4318/v1/traces"),
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
            ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"),
            ("https://collector.example:443/custom/path", "https://collector.example/custom/path"),
            ("http://[::1]:4318", "http://[::1]:4318/v1/traces"),
            ("", "http://localhost:4318/v1/traces"),
        ];
        for (endpoint, expected) in cases {
            assert_eq!(Destination::parse("http", endpoint).unwrap(), http(expected), "{endpoint}");
        }
        assert_eq!(Destination::parse(" HTTP ", "http://h:1").unwrap(), http("http://h:1/v1/traces"));
    }

    #[test]
    fn parses_grpc_in_both_spellings() {
        let cases = [
            ("grpc://127.0.0.1:4317", "http://127.0.0.1:4317"),
            ("http://127.0.0.1:4317", "http://127.0.0.1:4317"),
            ("http://127.0.0.1:4317/", "http://127.0.0.1:4317"),
            ("grpc://collector", "http://collector:4317"),
            ("https://collector.example:4317", "https://collector.example:4317"),
            ("grpcs://collector.example:4317", "https://collector.example:4317"),
            ("grpc://[::1]:4317", "http://[::1]:4317"),
            ("", DEFAULT_GRPC_ENDPOINT),
        ];
        for (endpoint, expected) in cases {
            assert_eq!(Destination::parse("grpc", endpoint).unwrap(), grpc(expected), "{endpoint}");
        }
    }

    #[test]
    fn parses_console_and_store() {
        let out = Destination::Console { stream: ConsoleStream::Stdout };
        let err = Destination::Console { stream: ConsoleStream::Stderr };
        for (endpoint, expected) in
            [("cout", &out), ("stdout", &out), ("", &out), ("cerr", &err), ("STDERR", &err)]
        {
            assert_eq!(&Destination::parse("console", endpoint).unwrap(), expected);
        }
        assert_eq!(
            Destination::parse("store", "spans/out.jsonl").unwrap(),
            Destination::Store { path: PathBuf::from("spans/out.jsonl") }
        );
    }

    #[test]
    fn rejects_bad_configuration_clearly() {
        let err = Destination::parse("zipkin", "http://h:1").unwrap_err();
        assert_eq!(err, DestinationError::UnknownExporter { exporter: "zipkin".into() });
        assert!(err.to_string().contains("expected http, grpc, console or store"), "{err}");

        for endpoint in ["localhost:4318", "127.0.0.1:4318", "not a url"] {
            let err = Destination::parse("http", endpoint).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "http endpoint \"{endpoint}\" has no scheme: add http:// or https:// in front \
                     (for example \"http://{endpoint}\")"
                )
            );
        }
        // The parser's reason is said once, and is not also a cause of its own.
        let err = Destination::parse("grpc", "grpc://h:99999").unwrap_err();
        assert_eq!(
            err.to_string(),
            "grpc endpoint \"grpc://h:99999\" is not a valid URL: invalid port number"
        );
        assert!(std::error::Error::source(&err).is_none());
        assert!(matches!(
            Destination::parse("http", "grpc://h:4317").unwrap_err(),
            DestinationError::UnsupportedScheme { exporter: "http", .. }
        ));
        assert!(matches!(
            Destination::parse("http", "http://:4318/v1/traces").unwrap_err(),
            DestinationError::InvalidUrl { .. } | DestinationError::MissingHost { .. }
        ));
        assert!(matches!(
            Destination::parse("grpc", "ftp://h:1").unwrap_err(),
            DestinationError::UnsupportedScheme { exporter: "grpc", .. }
        ));
        assert!(matches!(
            Destination::parse("grpc", "grpc://h:4317/v1/traces").unwrap_err(),
            DestinationError::GrpcPath { .. }
        ));
        assert!(matches!(
            Destination::parse("grpc", "collector:4317").unwrap_err(),
            DestinationError::MissingScheme { .. }
        ));
        let err = Destination::parse("console", "clog").unwrap_err();
        assert_eq!(err, DestinationError::UnknownConsoleStream { endpoint: "clog".into() });
        assert!(err.to_string().contains("cout, cerr"), "{err}");
        assert_eq!(Destination::parse("store", " ").unwrap_err(), DestinationError::MissingStorePath);
    }

    fn from_env(vars: &[(&str, &str)]) -> Result<Option<Vec<Destination>>, DestinationError> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        destinations_from_otel_env(|name| vars.get(name).cloned())
    }

    #[test]
    fn otel_env_nothing_configured() {
        assert_eq!(from_env(&[]).unwrap(), None);
        assert_eq!(from_env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]).unwrap(), None);
        // A protocol alone does not ask for export.
        assert_eq!(from_env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap(), None);
    }

    #[test]
    fn otel_env_endpoints_and_protocols() {
        assert_eq!(
            from_env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]).unwrap(),
            Some(vec![http("http://c:4318/v1/traces")])
        );
        assert_eq!(
            from_env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/prefix/")]).unwrap(),
            Some(vec![http("http://c:4318/prefix/v1/traces")])
        );
        // The signal-specific endpoint is used as is and wins over the base.
        assert_eq!(
            from_env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9999/custom"),
            ])
            .unwrap(),
            Some(vec![http("http://t:9999/custom")])
        );
        assert_eq!(
            from_env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ])
            .unwrap(),
            Some(vec![grpc("http://c:4317")])
        );
        // The traces protocol wins over the general one.
        assert_eq!(
            from_env(&[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ])
            .unwrap(),
            Some(vec![grpc("http://c:4317")])
        );
        assert_eq!(
            from_env(&[("OTEL_TRACES_EXPORTER", "otlp")]).unwrap(),
            Some(vec![http("http://localhost:4318/v1/traces")])
        );
        assert_eq!(
            from_env(&[("OTEL_TRACES_EXPORTER", "otlp"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap(),
            Some(vec![grpc(DEFAULT_GRPC_ENDPOINT)])
        );
    }

    #[test]
    fn otel_env_exporter_lists() {
        assert_eq!(
            from_env(&[
                ("OTEL_TRACES_EXPORTER", "otlp, console,otlp"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ])
            .unwrap(),
            Some(vec![
                http("http://c:4318/v1/traces"),
                Destination::Console { stream: ConsoleStream::Stdout }
            ])
        );
        assert_eq!(
            from_env(&[("OTEL_TRACES_EXPORTER", "none"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c")])
                .unwrap(),
            Some(vec![])
        );
        assert_eq!(
            from_env(&[("OTEL_SDK_DISABLED", "TRUE"), ("OTEL_TRACES_EXPORTER", "console")]).unwrap(),
            Some(vec![])
        );
    }

    #[test]
    fn logs_get_their_own_path_and_variables() {
        // Tango's logging endpoints: `/v1/logs` when no path is given, as cppTango does.
        let logs = |exporter, endpoint| Destination::parse_for(Signal::Logs, exporter, endpoint).unwrap();
        assert_eq!(logs("http", ""), http("http://localhost:4318/v1/logs"));
        assert_eq!(logs("http", "http://c:4318"), http("http://c:4318/v1/logs"));
        assert_eq!(logs("http", "http://c:4318/custom"), http("http://c:4318/custom"));
        assert_eq!(logs("grpc", "grpc://c:4317"), grpc("http://c:4317"));
        assert_eq!(Destination::parse("http", "http://c:4318").unwrap(), http("http://c:4318/v1/traces"));

        let logs_env = |vars: &[(&str, &str)]| {
            let vars: HashMap<String, String> =
                vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            otel_env_destinations(Signal::Logs, |name| vars.get(name).cloned())
        };
        assert_eq!(logs_env(&[]).unwrap(), None);
        // Traces' variables say nothing about logs.
        assert_eq!(logs_env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1")]).unwrap(), None);
        assert_eq!(
            logs_env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]).unwrap(),
            Some(vec![http("http://c:4318/v1/logs")])
        );
        assert_eq!(
            logs_env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://l:9999/x"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ])
            .unwrap(),
            Some(vec![http("http://l:9999/x")])
        );
        assert_eq!(
            logs_env(&[("OTEL_LOGS_EXPORTER", "otlp,console"), ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc")])
                .unwrap(),
            Some(vec![grpc(DEFAULT_GRPC_ENDPOINT), Destination::Console { stream: ConsoleStream::Stdout }])
        );
        assert_eq!(
            logs_env(&[("OTEL_LOGS_EXPORTER", "none"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c")]).unwrap(),
            Some(vec![])
        );
        let err = logs_env(&[("OTEL_LOGS_EXPORTER", "loki")]).unwrap_err();
        assert_eq!(err, DestinationError::UnknownLogsExporter { value: "loki".into() });
        assert!(err.to_string().starts_with("OTEL_LOGS_EXPORTER names \"loki\""), "{err}");
        let err = logs_env(&[("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "c:4318")]).unwrap_err();
        assert!(err.to_string().starts_with("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT \"c:4318\" has no scheme"));
    }

    #[test]
    fn otel_env_errors() {
        assert_eq!(
            from_env(&[("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err(),
            DestinationError::UnknownTracesExporter { value: "zipkin".into() }
        );
        let err = from_env(&[("OTEL_TRACES_EXPORTER", "otlp"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")])
            .unwrap_err();
        assert_eq!(
            err,
            DestinationError::UnsupportedProtocol {
                variable: "OTEL_EXPORTER_OTLP_PROTOCOL",
                value: "http/json".into()
            }
        );
        assert!(err.to_string().contains("http/json"), "{err}");
        // The variable is named, the endpoint shown as given (no `/v1/traces` appended), and
        // the message says what to do, once.
        let err = from_env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4318")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "OTEL_EXPORTER_OTLP_ENDPOINT \"127.0.0.1:4318\" has no scheme: add http:// or https:// \
             in front (for example \"http://127.0.0.1:4318\")"
        );
        assert!(std::error::Error::source(&err).is_none());
        let err = from_env(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ])
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT \"collector:4317\" has no scheme")
        );
    }
}
