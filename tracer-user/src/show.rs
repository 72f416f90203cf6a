//! `tango-tracer show`: the embedded store's traces as trees, each span with the device log
//! records logged inside it, or the log records alone (`--logs`).

use std::path::Path;

use anyhow::Context as _;
use tracer_export::{
    StoreError,
    json::{LogJson, SpanJson},
    logs_path, read_log_store, read_store, rotated_path,
    tree::{render_logs, render_trees_with_logs},
};

/// What to show.
#[derive(Clone, Debug, Default)]
pub struct ShowOptions {
    /// Only this trace (full or leading hex digits of the trace id).
    pub trace: Option<String>,
    /// Only the last N traces (with `logs`: the last N records).
    pub last: Option<usize>,
    /// The log records alone, one per line in order of time, those logged outside any span
    /// included.
    pub logs: bool,
}

/// Reads the store at `store` and renders what `options` ask for: a database store by its
/// indexes (one trace, the last traces), a JSON-lines store (its rotated file first) whole.
pub fn show(store: &Path, options: &ShowOptions) -> anyhow::Result<String> {
    if !tracer_export::is_json_lines(store) {
        return show_db(store, options);
    }
    let logs = read_logs(store)?;
    let spans = if options.logs { Vec::new() } else { read_spans(store)? };
    Ok(render(spans, logs, options))
}

fn show_db(store: &Path, options: &ShowOptions) -> anyhow::Result<String> {
    let reader = tracer_export::DbReader::open(store)
        .with_context(|| format!("reading the store {}", store.display()))?;
    let (spans, logs) = if let Some(prefix) = &options.trace {
        let prefix = prefix.to_ascii_lowercase();
        let spans = if options.logs { Vec::new() } else { reader.trace_spans(&prefix)? };
        (spans, reader.trace_logs(&prefix)?)
    } else if let (Some(last), false) = (options.last, options.logs) {
        let (mut spans, mut logs) = (Vec::new(), Vec::new());
        for id in reader.last_traces(last)?.iter().rev() {
            spans.extend(reader.trace_spans(id)?);
            logs.extend(reader.trace_logs(id)?);
        }
        (spans, logs)
    } else {
        let spans = if options.logs { Vec::new() } else { reader.all_spans()? };
        (spans, reader.all_logs()?)
    };
    Ok(render(spans, logs, options))
}

/// Renders spans and log records as `options` ask.
pub fn render(mut spans: Vec<SpanJson>, mut logs: Vec<LogJson>, options: &ShowOptions) -> String {
    if let Some(prefix) = &options.trace {
        let prefix = prefix.to_ascii_lowercase();
        spans.retain(|s| s.trace_id.starts_with(&prefix));
        logs.retain(|l| !l.trace_id.is_empty() && l.trace_id.starts_with(&prefix));
    }
    if options.logs {
        logs.sort_by_key(|l| l.time_ns);
        if let Some(last) = options.last {
            logs.drain(..logs.len().saturating_sub(last));
        }
        return render_logs(&logs);
    }
    if let Some(last) = options.last {
        let mut traces: Vec<(u64, String)> = Vec::new();
        for span in &spans {
            match traces.iter_mut().find(|(_, id)| *id == span.trace_id) {
                Some(entry) => entry.0 = entry.0.min(span.start_ns),
                None => traces.push((span.start_ns, span.trace_id.clone())),
            }
        }
        traces.sort();
        let keep: Vec<String> = traces.into_iter().rev().take(last).map(|(_, id)| id).collect();
        spans.retain(|s| keep.contains(&s.trace_id));
        logs.retain(|l| keep.contains(&l.trace_id));
    }
    render_trees_with_logs(&spans, &logs)
}

fn read_spans(store: &Path) -> anyhow::Result<Vec<SpanJson>> {
    // The rotated file holds the older spans; it may not exist.
    let mut spans = read_store(rotated_path(store)).unwrap_or_default();
    spans.extend(read_store(store).with_context(|| format!("reading the store {}", store.display()))?);
    Ok(spans)
}

/// The store's log records; none when it has no logs file (logs were never exported there).
fn read_logs(store: &Path) -> anyhow::Result<Vec<LogJson>> {
    let path = logs_path(store);
    let mut logs = read_log_store(rotated_path(&path)).unwrap_or_default();
    match read_log_store(&path) {
        Ok(more) => logs.extend(more),
        Err(StoreError::Read { reason, .. }) if reason.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("reading the store's logs {}", path.display())),
    }
    Ok(logs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

    use std::io::Write as _;

    use super::*;

    fn span(trace: &str, id: &str, start_ns: u64) -> String {
        format!(
            r#"{{"resource": {{"service.name": "LogDev", "service.instance.id": "test/logdev/1", "tango.process.kind": "server", "tango.process.id": 15342}}, "scope": {{"name": "tango.cpp", "version": "10.3.3"}}, "name": "Tango::Device_4Impl::command_inout_4", "kind": "SERVER", "trace_id": "{trace}", "span_id": "{id}", "parent_span_id": "", "trace_state": "", "start_ns": {start_ns}, "end_ns": {}, "duration_us": 1.0, "attributes": {{}}, "events": [], "links": [], "status": {{"code": 0, "message": ""}}}}"#,
            start_ns + 1000
        )
    }

    fn log(trace: &str, id: &str, time_ns: u64, body: &str) -> String {
        format!(
            r#"{{"resource": {{"service.name": "LogDev", "service.instance.id": "test/logdev/1"}}, "scope": {{"name": "cppTango", "version": "10.3.3"}}, "time_ns": {time_ns}, "observed_ns": {time_ns}, "severity_number": 9, "severity_text": "INFO", "body": "{body}", "attributes": {{"code.filepath": "pydev2.py", "code.lineno": 20}}, "trace_id": "{trace}", "span_id": "{id}", "flags": {}}}"#,
            if id.is_empty() { 0 } else { 3 }
        )
    }

    fn write_lines(path: &Path, lines: &[String]) {
        let mut file = std::fs::File::create(path).unwrap();
        for line in lines {
            writeln!(file, "{line}").unwrap();
        }
    }

    const A: &str = "1c7ec4378c562421f9fc46412b5514f8";
    const B: &str = "2222222222222222aaaaaaaaaaaaaaaa";

    #[test]
    fn trees_with_their_logs_and_logs_alone() {
        let dir = std::env::temp_dir().join(format!("tango-tracer-show-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = dir.join("spans.jsonl");
        write_lines(&store, &[span(A, "45d2abbade956bf8", 1_000), span(B, "0000000000000001", 5_000)]);
        // Spans alone: no logs file yet.
        let text = show(&store, &ShowOptions::default()).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");

        write_lines(
            &logs_path(&store),
            &[
                log(A, "45d2abbade956bf8", 1_500, "hello 0"),
                log("", "", 500, "background thread log"),
                log(B, "0000000000000001", 5_500, "of the second trace"),
            ],
        );
        let text = show(&store, &ShowOptions::default()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[0].starts_with("  - [SERVER] Tango::Device_4Impl::command_inout_4  trace=1c7ec437"),
            "{text}"
        );
        assert_eq!(lines[1], "    > 00:00:00.000001Z INFO hello 0 [pydev2.py:20]");
        assert!(lines[2].contains("trace=22222222"), "{text}");
        assert_eq!(lines[3], "    > 00:00:00.000005Z INFO of the second trace [pydev2.py:20]");

        // One trace: its spans and logs only.
        let one = ShowOptions { trace: Some("1C7E".into()), ..ShowOptions::default() };
        assert_eq!(show(&store, &one).unwrap().lines().count(), 2);
        let last = ShowOptions { last: Some(1), ..ShowOptions::default() };
        let text = show(&store, &last).unwrap();
        assert!(text.contains("of the second trace") && !text.contains("hello 0"), "{text}");

        // The records alone, those outside any span included, in time order.
        let logs = ShowOptions { logs: true, ..ShowOptions::default() };
        let text = show(&store, &logs).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[0],
            "1970-01-01T00:00:00.000000Z INFO svc=LogDev/test/logdev/1 trace=- span=- background thread log \
             [pydev2.py:20]"
        );
        assert!(lines[1].contains("trace=1c7ec437 span=45d2abba hello 0"), "{text}");
        let last_logs = ShowOptions { logs: true, last: Some(1), ..ShowOptions::default() };
        assert!(show(&store, &last_logs).unwrap().contains("of the second trace"));

        // A logs file that is not one is an error, named.
        write_lines(&logs_path(&store), &["{\"x\": 1}".to_owned(), "{}".to_owned()]);
        let err = show(&store, &ShowOptions::default()).unwrap_err();
        assert!(format!("{err:#}").contains("reading the store's logs"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
