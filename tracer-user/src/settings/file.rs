//! The configuration file's schema: one section per concern, every key optional, unknown keys
//! and sections refused. Values are checked while the file is read, so an error names the key's
//! line and column.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{Exporter, SamplingRule, values};

/// What a configuration file says; `None` where it says nothing.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    #[serde(default)]
    pub export: ExportSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub selection: SelectionSection,
    #[serde(default)]
    pub capture: CaptureSection,
    #[serde(default)]
    pub peers: PeersSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub sampling: SamplingSection,
    #[serde(default)]
    pub control: ControlSection,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSection {
    pub exporters: Option<Vec<Exporter>>,
    pub endpoint: Option<Endpoint>,
    pub protocol: Option<Protocol>,
    pub traces_endpoint: Option<Endpoint>,
    pub traces_protocol: Option<Protocol>,
    pub logs_endpoint: Option<Endpoint>,
    pub logs_protocol: Option<Protocol>,
    pub interval: Option<ExportInterval>,
    pub memory: Option<Size>,
    pub shutdown_timeout: Option<Dur>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub path: Option<FilePath>,
    pub max_size: Option<Size>,
    pub session: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectionSection {
    pub env: Option<NameValue>,
    pub pids: Option<Vec<Pid>>,
    pub netns: Option<FilePath>,
    pub default_telemetry: Option<bool>,
    pub all_operations: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSection {
    pub giop_bytes: Option<GiopBytes>,
    pub log_bytes: Option<LogBytes>,
    pub user_spans: Option<bool>,
    pub record: Option<FilePath>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeersSection {
    pub key_file: Option<FilePath>,
    pub listen: Option<Address>,
    pub wait: Option<PeerWait>,
    pub retry: Option<PeerRetry>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    pub listen: Option<Address>,
    pub interval: Option<MetricsInterval>,
    pub max_series: Option<MaxSeries>,
    pub endpoint: Option<Endpoint>,
    pub protocol: Option<Protocol>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingSection {
    pub tail: Option<SamplingRule>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    pub socket: Option<FilePath>,
    pub ready_file: Option<FilePath>,
    pub nice: Option<Nice>,
}

/// A value written as a string in the file, checked by the parser every source shares.
macro_rules! text_value {
    ($(#[$doc:meta])* $name:ident($inner:ty) = $parse:path) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(pub $inner);

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(text: String) -> Result<Self, String> {
                $parse(&text).map($name)
            }
        }
    };
}

/// A value written as an integer in the file, checked likewise.
macro_rules! number_value {
    ($(#[$doc:meta])* $name:ident($inner:ty, $inner_name:literal) = $check:path) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Deserialize)]
        #[serde(try_from = $inner_name)]
        pub struct $name(pub $inner);

        impl TryFrom<$inner> for $name {
            type Error = String;
            fn try_from(value: $inner) -> Result<Self, String> {
                $check(value).map($name)
            }
        }
    };
}

text_value!(Endpoint(String) = values::endpoint);
text_value!(Protocol(String) = values::protocol);
text_value!(ExportInterval(Duration) = values::export_interval);
text_value!(Dur(Duration) = values::duration);
text_value!(Size(u64) = values::bytes);
text_value!(FilePath(PathBuf) = values::path);
text_value!(NameValue((String, String)) = values::name_value);
text_value!(Address(SocketAddr) = values::socket_addr);
text_value!(PeerWait(Duration) = values::peer_wait);
text_value!(PeerRetry(Duration) = values::peer_retry);
text_value!(MetricsInterval(Duration) = values::metrics_interval);
number_value!(GiopBytes(u32, "u32") = values::check_capture_bytes);
number_value!(LogBytes(u32, "u32") = values::check_log_bytes);
number_value!(MaxSeries(usize, "usize") = values::check_max_series);
number_value!(Nice(i32, "i32") = values::check_nice);

/// A process id: a positive integer.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(try_from = "i64")]
pub struct Pid(pub u32);

impl TryFrom<i64> for Pid {
    type Error = String;
    fn try_from(value: i64) -> Result<Self, String> {
        u32::try_from(value)
            .ok()
            .filter(|&pid| pid > 0)
            .map(Pid)
            .ok_or_else(|| format!("not a process id: {value}"))
    }
}

/// Parses a configuration file's text; the error names the line, the column and the key.
pub fn parse(text: &str) -> Result<FileSettings, toml::de::Error> {
    toml::from_str(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let error =
            parse("[export]\ninterval = \"1s\"\nendpoints = \"http://a:4318\"\n").unwrap_err().to_string();
        assert!(error.contains("line 3"), "{error}");
        assert!(error.contains("unknown field `endpoints`"), "{error}");
        let error = parse("[exporter]\n").unwrap_err().to_string();
        assert!(error.contains("unknown field `exporter`"), "{error}");
    }

    #[test]
    fn a_bad_value_is_named_with_its_line_and_reason() {
        let error = parse("[store]\n\n[export]\ninterval = \"5x\"\n").unwrap_err().to_string();
        assert!(error.contains("line 4"), "{error}");
        assert!(error.contains("unknown unit in \"5x\""), "{error}");
        let error = parse("[export]\nendpoint = \"collector:4318\"\n").unwrap_err().to_string();
        assert!(error.contains("has no scheme"), "{error}");
        let error = parse("[capture]\ngiop_bytes = 16\n").unwrap_err().to_string();
        assert!(error.contains("between 1024 and 8192"), "{error}");
        let error = parse("[capture]\ngiop_bytes = \"2048\"\n").unwrap_err().to_string();
        assert!(error.contains("invalid type"), "{error}");
        let error = parse("[export]\nexporters = [\"jaeger\"]\n").unwrap_err().to_string();
        assert!(error.contains("unknown variant `jaeger`"), "{error}");
    }

    #[test]
    fn a_syntax_error_has_line_and_column() {
        let error = parse("[export\n").unwrap_err().to_string();
        assert!(error.contains("line 1, column"), "{error}");
    }
}
