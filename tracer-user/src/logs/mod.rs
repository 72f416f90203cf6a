//! Device logs: the messages the logging probe read, as log records joined to the span they were
//! logged under.
//!
//! Every device log message, C++ or PyTango, ends in `log4tango::Logger::log_unconditionally` on
//! the thread that logged it, after the logger's level check: the probe sees exactly what the
//! device emits. A message logged while its thread serves a request belongs to that request's
//! SERVER span (the innermost one, in nested calls); one logged outside any request (polling,
//! device threads, start-up) carries no trace context. The logger names the device (its name in
//! lowercase; `dserver/<server>/<instance>` for the admin device's core logger): the pipeline
//! resolves it to the same device, and so the same resource, as the device's spans.
//!
//! This stage owns the messages waiting to be released, and per process the names it has seen
//! (interned: a name is allocated once per process, not once per message) and the device each
//! logger resolved to. All of it goes when the process is forgotten.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    assemble::SpanContextLite,
    probe::record::LogMessage,
    stats::{StageStats, has_room},
};

/// How long a message logged inside a request waits before it is released: a server span whose
/// client's write is reported after the server's read takes its client's trace id within
/// 200 ms (see the assembly's linking); the message follows it.
pub const CONTEXT_SETTLE: Duration = Duration::from_millis(250);
/// Longest time a message waits for its device's facts (as long as a span waits for them).
pub const MAX_WAIT: Duration = Duration::from_secs(2);
/// Most messages waiting; beyond, the oldest goes out at once (counted).
const MAX_WAITING: usize = 65_536;
/// Most processes with interned names, and most names per process.
const MAX_PROCESSES: usize = 65_536;
const MAX_NAMES_PER_PROCESS: usize = 4_096;

/// OpenTelemetry's severity of a log4tango level, as cppTango 10.3 exports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    Fatal,
    Error,
    Warn,
    Info,
    Debug,
}

impl Severity {
    /// log4tango's levels: 200 FATAL, 300 ERROR, 400 WARN, 500 INFO, 600 DEBUG (a level between
    /// two counts as the more severe one).
    pub fn from_log4tango(level: i32) -> Severity {
        match level {
            ..=200 => Severity::Fatal,
            201..=300 => Severity::Error,
            301..=400 => Severity::Warn,
            401..=500 => Severity::Info,
            _ => Severity::Debug,
        }
    }

    /// OTLP's `SeverityNumber`.
    pub fn number(self) -> i32 {
        match self {
            Severity::Fatal => 21,
            Severity::Error => 17,
            Severity::Warn => 13,
            Severity::Info => 9,
            Severity::Debug => 5,
        }
    }

    /// The severity text cppTango writes (its level's name).
    pub fn text(self) -> &'static str {
        match self {
            Severity::Fatal => "FATAL",
            Severity::Error => "ERROR",
            Severity::Warn => "WARN",
            Severity::Info => "INFO",
            Severity::Debug => "DEBUG",
        }
    }
}

/// A device log message ready for the later stages; timestamps are kernel monotonic
/// nanoseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct AssembledLog {
    pub pid: u32,
    pub tid: u32,
    pub ts_ns: u64,
    pub severity: Severity,
    /// The message; bytes that are not UTF-8 are replacement characters.
    pub body: String,
    /// The source file's base name, when the call carried one (cppTango ≥ 10).
    pub file: Option<Arc<str>>,
    pub line: Option<i64>,
    /// The SERVER span the thread was serving when it logged.
    pub context: Option<SpanContextLite>,
    /// The logger's name (the device's, lowercase).
    pub logger: Arc<str>,
}

/// Counters of the log stage.
#[derive(Clone, Copy, Debug, Default)]
struct LogStats {
    messages: u64,
    /// Messages longer than `--log-bytes`, cut.
    cut: u64,
    /// Messages with bytes that are not UTF-8 (kept as replacement characters).
    not_utf8: u64,
    /// Messages the probe could not read some field of (the logger's name, file or message).
    unreadable: u64,
    /// Messages logged while their thread served a request.
    in_request: u64,
    /// Server spans renamed (their client found late) after messages were logged under them.
    renamed: u64,
    /// Messages released before they settled because too many waited.
    waiting_overflow: u64,
    /// Names not interned because a table was full (the message still goes, with its own copy).
    refused_full: u64,
}

/// Names one process's messages carry, each allocated once.
#[derive(Default)]
struct ProcessNames {
    loggers: HashMap<Box<[u8]>, Arc<str>>,
    files: HashMap<Box<[u8]>, Arc<str>>,
    /// The object key of the device each logger resolved to.
    devices: HashMap<Arc<str>, Vec<u8>>,
}

/// The log stage.
#[derive(Default)]
pub struct Logs {
    waiting: VecDeque<(Instant, AssembledLog)>,
    /// Messages pushed out of `waiting` by newer ones, released first.
    overflow: Vec<AssembledLog>,
    names: HashMap<u32, ProcessNames>,
    stats: LogStats,
}

impl Logs {
    /// One message from the probe; `serving` is the SERVER span its thread was serving.
    pub fn push(&mut self, message: &LogMessage<'_>, serving: Option<SpanContextLite>, now: Instant) {
        self.stats.messages += 1;
        if message.truncated() {
            self.stats.cut += 1;
        }
        if message.unreadable != 0 {
            self.stats.unreadable += 1;
        }
        if serving.is_some() {
            self.stats.in_request += 1;
        }
        let body = match std::str::from_utf8(&message.message) {
            Ok(text) => text.to_owned(),
            Err(_) => {
                self.stats.not_utf8 += 1;
                String::from_utf8_lossy(&message.message).into_owned()
            }
        };
        let logger = self.intern(message.pid, &message.logger, Interned::Logger);
        let file = (message.line.is_some() && !message.file.is_empty())
            .then(|| self.intern(message.pid, base_name(&message.file), Interned::File));
        let log = AssembledLog {
            pid: message.pid,
            tid: message.tid,
            ts_ns: message.ts_ns,
            severity: Severity::from_log4tango(message.level),
            body,
            file,
            line: message.line.map(i64::from),
            context: serving,
            logger,
        };
        if self.waiting.len() >= MAX_WAITING
            && let Some((_, oldest)) = self.waiting.pop_front()
        {
            // Goes out at the next release with what is known by then.
            self.stats.waiting_overflow += 1;
            self.overflow.push(oldest);
        }
        self.waiting.push_back((now, log));
    }

    /// A server span took its client's trace id after messages were logged under it.
    pub fn rename(&mut self, old: SpanContextLite, new: SpanContextLite) {
        for (_, log) in &mut self.waiting {
            if log.context == Some(old) {
                log.context = Some(new);
                self.stats.renamed += 1;
            }
        }
    }

    /// Messages waiting, oldest first, with the time each started waiting.
    pub fn waiting(&self) -> impl Iterator<Item = &(Instant, AssembledLog)> + '_ {
        self.waiting.iter()
    }

    /// Takes every message `ready` accepts (given how long it waited), and every message that
    /// waited [`MAX_WAIT`], in order, into `out`.
    pub fn take_ready(
        &mut self,
        mut ready: impl FnMut(&AssembledLog, Duration) -> bool,
        out: &mut Vec<AssembledLog>,
    ) {
        out.append(&mut self.overflow);
        let now = Instant::now();
        for (since, log) in std::mem::take(&mut self.waiting) {
            let waited = now.saturating_duration_since(since);
            if waited >= MAX_WAIT || ready(&log, waited) {
                out.push(log);
            } else {
                self.waiting.push_back((since, log));
            }
        }
    }

    /// The object key `logger` of `pid` resolved to, once known.
    pub fn device_of(&self, pid: u32, logger: &Arc<str>) -> Option<&[u8]> {
        self.names.get(&pid)?.devices.get(logger).map(Vec::as_slice)
    }

    /// `logger` of `pid` is the device behind `object_key` (asked once per logger).
    pub fn resolved(&mut self, pid: u32, logger: &Arc<str>, object_key: &[u8]) {
        if let Some(names) = self.names.get_mut(&pid)
            && (names.devices.contains_key(logger)
                || has_room(names.devices.len(), MAX_NAMES_PER_PROCESS, &mut self.stats.refused_full))
        {
            names.devices.insert(Arc::clone(logger), object_key.to_vec());
        }
    }

    /// A process is gone for good: its names go; messages it left are released by then.
    pub fn forget_process(&mut self, pid: u32) {
        self.names.remove(&pid);
    }

    /// Counters and table sizes.
    pub fn report(&self, out: &mut StageStats) {
        const STAGE: &str = "logs";
        let stats = &self.stats;
        out.push(STAGE, "messages", stats.messages);
        out.push(STAGE, "cut_messages", stats.cut);
        out.push(STAGE, "not_utf8_messages", stats.not_utf8);
        out.push(STAGE, "unreadable_messages", stats.unreadable);
        out.push(STAGE, "in_request_messages", stats.in_request);
        out.push(STAGE, "renamed_contexts", stats.renamed);
        out.push(STAGE, "waiting_overflow", stats.waiting_overflow);
        out.loss(STAGE, "refused_table_full", stats.refused_full);
        out.size(STAGE, "waiting_log_entries", self.waiting.len() + self.overflow.len());
        out.size(STAGE, "log_process_entries", self.names.len());
    }

    fn intern(&mut self, pid: u32, bytes: &[u8], which: Interned) -> Arc<str> {
        let stats = &mut self.stats;
        let names = if self.names.contains_key(&pid)
            || has_room(self.names.len(), MAX_PROCESSES, &mut stats.refused_full)
        {
            Some(self.names.entry(pid).or_default())
        } else {
            None
        };
        let Some(names) = names else {
            return Arc::from(String::from_utf8_lossy(bytes));
        };
        let table = match which {
            Interned::Logger => &mut names.loggers,
            Interned::File => &mut names.files,
        };
        if let Some(name) = table.get(bytes) {
            return Arc::clone(name);
        }
        let name: Arc<str> = Arc::from(String::from_utf8_lossy(bytes));
        if has_room(table.len(), MAX_NAMES_PER_PROCESS, &mut stats.refused_full) {
            table.insert(bytes.into(), Arc::clone(&name));
        }
        name
    }
}

#[derive(Clone, Copy)]
enum Interned {
    Logger,
    File,
}

/// The file name without its directories (cppTango exports `code.filepath` so).
fn base_name(path: &[u8]) -> &[u8] {
    path.rsplit(|b| *b == b'/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic, reason = "tests")]

    use std::borrow::Cow;

    use opentelemetry::trace::{SpanId, TraceId};

    use super::*;

    fn message<'a>(logger: &'a [u8], file: &'a [u8], line: Option<i32>, text: &'a [u8]) -> LogMessage<'a> {
        LogMessage {
            pid: 7,
            tid: 8,
            ts_ns: 100,
            level: 400,
            line,
            logger: Cow::Borrowed(logger),
            file: Cow::Borrowed(file),
            message: Cow::Borrowed(text),
            message_len: text.len() as u32,
            unreadable: 0,
        }
    }

    fn context(trace: u128, span: u64) -> SpanContextLite {
        SpanContextLite { trace_id: TraceId::from(trace), span_id: SpanId::from(span) }
    }

    #[test]
    fn severities_are_cpptangos() {
        let levels: Vec<(i32, &str)> = [200, 300, 400, 500, 600]
            .into_iter()
            .map(|level| {
                let severity = Severity::from_log4tango(level);
                (severity.number(), severity.text())
            })
            .collect();
        assert_eq!(levels, vec![(21, "FATAL"), (17, "ERROR"), (13, "WARN"), (9, "INFO"), (5, "DEBUG")]);
    }

    #[test]
    fn names_are_interned_per_process_and_files_lose_their_directories() {
        let mut logs = Logs::default();
        let now = Instant::now();
        logs.push(&message(b"test/log/1", b"/srv/dev/pydev2.py", Some(20), b"hello"), None, now);
        logs.push(&message(b"test/log/1", b"/srv/dev/pydev2.py", Some(21), b"again"), None, now);
        let mut out = Vec::new();
        logs.take_ready(|_, _| true, &mut out);
        assert_eq!(out.len(), 2);
        assert!(Arc::ptr_eq(&out[0].logger, &out[1].logger), "one allocation per logger and process");
        assert_eq!(out[0].file.as_deref(), Some("pydev2.py"));
        assert_eq!((out[0].line, out[1].line), (Some(20), Some(21)));
        assert_eq!(out[0].severity, Severity::Warn);
        logs.forget_process(7);
        let mut report = StageStats::default();
        logs.report(&mut report);
        assert_eq!(report.get("logs", "log_process_entries"), Some(0));
        assert_eq!(report.get("logs", "waiting_log_entries"), Some(0));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_kept_visible_and_cuts_counted() {
        let mut logs = Logs::default();
        let mut cut = message(b"a/b/c", b"", None, b"caf\xe9 \xff!");
        cut.message_len = 100;
        logs.push(&cut, None, Instant::now());
        let mut out = Vec::new();
        logs.take_ready(|_, _| true, &mut out);
        assert_eq!(out[0].body, "caf\u{fffd} \u{fffd}!");
        assert_eq!(out[0].file, None, "9.x calls carry no location");
        let mut report = StageStats::default();
        logs.report(&mut report);
        assert_eq!(report.get("logs", "not_utf8_messages"), Some(1));
        assert_eq!(report.get("logs", "cut_messages"), Some(1));
    }

    #[test]
    fn a_renamed_server_span_takes_its_messages_along() {
        let mut logs = Logs::default();
        let (old, new, other) = (context(1, 5), context(2, 5), context(3, 6));
        logs.push(&message(b"a/b/c", b"", None, b"one"), Some(old), Instant::now());
        logs.push(&message(b"a/b/c", b"", None, b"two"), Some(other), Instant::now());
        logs.rename(old, new);
        let mut out = Vec::new();
        logs.take_ready(|_, _| true, &mut out);
        assert_eq!(out.iter().map(|l| l.context).collect::<Vec<_>>(), vec![Some(new), Some(other)]);
    }
}
