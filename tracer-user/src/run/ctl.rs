//! `tango-tracer ctl`: talking to a running daemon over its control socket.
//!
//! One JSON request per connection, one JSON answer back. The daemon's main loop answers, so what
//! `ctl` shows is exactly what the daemon uses.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

pub use crate::stats::StageStat;
use crate::{run::losses::Loss, stats::StageStats};

/// `ctl stats`: the daemon's health in one answer.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StatsView {
    /// Entries of every state table, by `stage.table` (they return to their baseline size once
    /// what they track has ended).
    pub tables: std::collections::BTreeMap<String, u64>,
    /// Every other stage counter, by `stage.counter`.
    pub counters: std::collections::BTreeMap<String, u64>,
    /// Everything lost so far, by stage and cause.
    pub lost: Vec<Loss>,
    /// What happened to the spans of each destination.
    pub export: Vec<ExportView>,
    /// What happened to the log records of each destination of logs (counted apart from spans).
    #[serde(default)]
    pub export_logs: Vec<ExportView>,
}

/// One export destination's counters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ExportView {
    pub destination: String,
    pub submitted: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub held: u64,
    pub bytes_held: u64,
    /// The most bytes ever held (never above the budget).
    pub peak_bytes_held: u64,
    pub failing: bool,
    pub last_error: Option<String>,
    /// The drops by cause, those that happened only.
    #[serde(default)]
    pub dropped_by_cause: std::collections::BTreeMap<String, u64>,
}

impl ExportView {
    fn new(destination: &tracer_export::Destination, s: &tracer_export::DestinationStats) -> Self {
        ExportView {
            destination: destination.to_string(),
            submitted: s.spans_submitted,
            delivered: s.spans_delivered,
            dropped: s.dropped.total(),
            held: s.spans_held,
            bytes_held: s.bytes_held,
            peak_bytes_held: s.peak_bytes_held,
            failing: s.failing,
            last_error: s.last_error.clone(),
            dropped_by_cause: s
                .dropped
                .by_cause()
                .into_iter()
                .filter(|(_, count)| *count > 0)
                .map(|(cause, count)| (cause.to_owned(), count))
                .collect(),
        }
    }
}

impl StatsView {
    pub fn new(stats: &StageStats, lost: Vec<Loss>, export: &tracer_export::ExportStats) -> Self {
        let key = |stage: &str, name: &str| format!("{stage}.{name}");
        StatsView {
            tables: stats.tables().map(|(stage, name, value)| (key(stage, name), value)).collect(),
            counters: stats
                .iter()
                .filter(|(_, name, _)| !name.ends_with("_entries"))
                .map(|(stage, name, value)| (key(stage, name), value))
                .collect(),
            lost,
            export: export.destinations.iter().map(|(d, s)| ExportView::new(d, s)).collect(),
            export_logs: export.logs.iter().map(|(d, s)| ExportView::new(d, s)).collect(),
        }
    }
}

/// Default path of the control socket: in a directory of its own, so that the service, running
/// as its own user, can create it there (systemd's `RuntimeDirectory=tango-tracer`, which also
/// removes it when the service stops).
pub const DEFAULT_SOCKET: &str = "/run/tango-tracer/ctl.sock";

/// What `ctl` asks.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum CtlRequest {
    /// Traced processes and devices, with their effective configuration and its sources.
    List,
    /// Start (`enable: true`) or stop tracing the devices matching `pattern` (a wildcard).
    Enable { pattern: String, enable: bool },
    /// Send the matching devices' spans to these exporters/endpoints instead.
    Endpoints { pattern: String, exporters: Vec<String>, endpoints: Vec<String> },
    /// Export (`enable: true`) or not the device logs of the devices matching `pattern`
    /// (like `SetTelemetryLogging`).
    Logging { pattern: String, enable: bool },
    /// Send the matching devices' logs to these exporters/endpoints instead.
    LogEndpoints { pattern: String, exporters: Vec<String>, endpoints: Vec<String> },
    /// Forget runtime changes made with `ctl` for the matching devices.
    Reset { pattern: String },
    /// Every stage's counters and table sizes.
    Stats,
    /// The live view's sliding window (`tango-tracer top`).
    Live,
    /// Healthy or not, and why (`tango-tracer ctl health`).
    Health,
}

/// One setting with the source it came from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SettingView {
    pub value: String,
    pub source: String,
}

/// A device (or a process outside any device) as the daemon sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TargetView {
    pub pid: u32,
    pub process: String,
    /// Inode of the process's network namespace (the host it belongs to), when known.
    #[serde(default)]
    pub net_ns: Option<u32>,
    /// `None` for the process's own configuration (clients, a server's own threads).
    pub device: Option<String>,
    pub class: Option<String>,
    pub libraries: String,
    pub enable: SettingView,
    pub types: SettingView,
    pub topics: SettingView,
    pub tracing: SettingView,
    pub spans: u64,
    /// Where device logs go, and how many were exported.
    #[serde(default)]
    pub logging: Option<SettingView>,
    #[serde(default)]
    pub logs: u64,
}

/// The daemon's answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum CtlAnswer {
    Targets { targets: Vec<TargetView>, warnings: Vec<String> },
    Changed { devices: Vec<String> },
    Stats(StatsView),
    Live(Box<crate::live::LiveSnapshot>),
    Health(crate::run::health::HealthView),
    Error { message: String },
}

/// A request waiting for the main loop.
pub struct Pending {
    pub request: CtlRequest,
    pub reply: oneshot::Sender<CtlAnswer>,
}

/// Listens on `path` and forwards requests to the main loop. A stale socket file was reclaimed
/// by [`super::instance::Instance::acquire`]; another file there is an error.
pub fn serve(path: &Path, tx: mpsc::Sender<Pending>) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let listener = UnixListener::bind(path)?;
    // Only the daemon's user (and root) may change what is traced.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = handle(stream, tx).await;
            });
        }
    });
    Ok(())
}

async fn handle(stream: UnixStream, tx: mpsc::Sender<Pending>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let answer = match serde_json::from_str::<CtlRequest>(&line) {
        Ok(request) => {
            let (reply, wait) = oneshot::channel();
            if tx.send(Pending { request, reply }).await.is_err() {
                CtlAnswer::Error { message: "the daemon is stopping".into() }
            } else {
                wait.await.unwrap_or(CtlAnswer::Error { message: "the daemon is stopping".into() })
            }
        }
        Err(e) => CtlAnswer::Error { message: format!("not a request: {e}") },
    };
    let mut text = serde_json::to_string(&answer).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    write.write_all(text.as_bytes()).await
}

/// Sends one request to the daemon at `path` and returns its answer.
pub async fn request(path: &PathBuf, request: &CtlRequest) -> anyhow::Result<CtlAnswer> {
    use anyhow::Context as _;
    let stream = UnixStream::connect(path).await.with_context(|| {
        format!("connecting to the daemon at {} (is `tango-tracer run` running?)", path.display())
    })?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    serde_json::from_str(&line).context("reading the daemon's answer")
}

/// Renders a `stats` answer: losses first, then export, counters and tables.
pub fn render_stats(stats: &StatsView) -> String {
    let mut out = String::from("lost\n");
    let lost: Vec<&Loss> = stats.lost.iter().filter(|l| l.total > 0).collect();
    if lost.is_empty() {
        out.push_str("    nothing\n");
    }
    for loss in lost {
        out.push_str(&format!("    {:<40} {:<40} {}\n", loss.stage, loss.cause, loss.total));
    }
    render_export("export", &stats.export, &mut out);
    // Logs appear once a destination of logs was used.
    if !stats.export_logs.is_empty() {
        render_export("export of logs", &stats.export_logs, &mut out);
    }
    for (title, map) in [("counters", &stats.counters), ("tables", &stats.tables)] {
        out.push_str(title);
        out.push('\n');
        for (name, value) in map {
            out.push_str(&format!("    {name:<48} {value}\n"));
        }
    }
    out
}

fn render_export(title: &str, views: &[ExportView], out: &mut String) {
    out.push_str(title);
    out.push('\n');
    for e in views {
        out.push_str(&format!(
            "    {}: {} submitted, {} delivered, {} dropped, {} held ({} bytes){}\n",
            e.destination,
            e.submitted,
            e.delivered,
            e.dropped,
            e.held,
            e.bytes_held,
            match (&e.failing, &e.last_error) {
                (true, Some(error)) => format!(", failing: {error}"),
                _ => String::new(),
            }
        ));
        for (cause, count) in &e.dropped_by_cause {
            out.push_str(&format!("        dropped, {cause}: {count}\n"));
        }
    }
}

/// Renders a `list` answer as a table.
pub fn render_targets(targets: &[TargetView], warnings: &[String]) -> String {
    let mut out = String::new();
    for t in targets {
        let what = match &t.device {
            Some(device) => format!("{device} ({})", t.class.as_deref().unwrap_or("class unknown")),
            None => "(process)".to_string(),
        };
        out.push_str(&format!("pid {} {} — {what}\n", t.pid, t.process));
        out.push_str(&format!("    libraries: {}\n", t.libraries));
        if let Some(net_ns) = t.net_ns {
            out.push_str(&format!("    network namespace: net:[{net_ns}]\n"));
        }
        for (name, setting) in
            [("enable", &t.enable), ("types", &t.types), ("topics", &t.topics), ("tracing", &t.tracing)]
        {
            out.push_str(&format!("    {name:<8} {:<40} [{}]\n", setting.value, setting.source));
        }
        if let Some(logging) = &t.logging {
            out.push_str(&format!("    {:<8} {:<40} [{}]\n", "logging", logging.value, logging.source));
        }
        out.push_str(&format!("    spans    {}\n", t.spans));
        if t.device.is_some() {
            out.push_str(&format!("    logs     {}\n", t.logs));
        }
    }
    for warning in warnings {
        out.push_str(&format!("warning: {warning}\n"));
    }
    out
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
    fn stats_show_logs_apart_with_their_drops_by_cause() {
        let store = tracer_export::Destination::Store { path: "spans.jsonl".into() };
        let spans =
            tracer_export::DestinationStats { spans_submitted: 4, spans_delivered: 4, ..Default::default() };
        let mut logs = tracer_export::DestinationStats {
            spans_submitted: 25,
            spans_delivered: 10,
            ..Default::default()
        };
        logs.dropped.budget_oldest = 15;
        let export = tracer_export::ExportStats {
            destinations: vec![(store.clone(), spans)],
            logs: vec![(store, logs)],
        };
        let view = StatsView::new(&StageStats::default(), Vec::new(), &export);
        assert_eq!((view.export.len(), view.export_logs.len()), (1, 1));
        let text = render_stats(&view);
        assert!(
            text.contains(
                "export\n    store spans.jsonl: 4 submitted, 4 delivered, 0 dropped, 0 held (0 bytes)\n\
                 export of logs\n    store spans.jsonl: 25 submitted, 10 delivered, 15 dropped, 0 held (0 bytes)\n\
                 \x20       dropped, memory budget full (oldest dropped): 15\n"
            ),
            "{text}"
        );
        // An answer of a daemon without logs still reads.
        let mut json: serde_json::Value = serde_json::to_value(&view).unwrap();
        json.as_object_mut().unwrap().remove("export_logs");
        let old: StatsView = serde_json::from_value(json).unwrap();
        assert!(old.export_logs.is_empty());
        assert!(!render_stats(&old).contains("export of logs"));
    }

    #[test]
    fn requests_round_trip_as_json() {
        let request = CtlRequest::Endpoints {
            pattern: "test/*".into(),
            exporters: vec!["http".into()],
            endpoints: vec!["http://127.0.0.1:4318/v1/traces".into()],
        };
        let text = serde_json::to_string(&request).expect("serialise");
        assert!(text.contains("\"request\":\"endpoints\""), "{text}");
        assert_eq!(serde_json::from_str::<CtlRequest>(&text).expect("parse"), request);
    }
}
