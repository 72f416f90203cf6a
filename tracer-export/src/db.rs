//! The embedded store as an SQLite database: spans and device log records of named sessions,
//! indexed for reports and for finding one trace.
//!
//! Each span is one row: the columns a report groups and measures by (session, side, device,
//! operation, argument, start, duration, error, event delay) and the span itself in its JSON form
//! ([`SpanJson`], what OTLP would carry), which only `show` reads. Indexes: trace id, session and
//! start time, session and device/operation/argument, start time. Log records are rows of their
//! own (session, trace id, time, JSON).
//!
//! Writes come from the export hub's workers, one transaction per batch on the blocking pool,
//! never on the daemon's assembly path. The database is bounded: past its size limit the oldest
//! spans and log records are deleted first (a tenth of them at a time, so the freed pages are
//! reused and the file stops growing), and each session counts how many of its own were deleted.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, TransactionBehavior, params};

use crate::{
    StoreError,
    json::{LogJson, SpanJson},
};

/// The default size limit of the database (`--store-max-bytes`).
pub const DEFAULT_STORE_MAX_BYTES: u64 = 1 << 30;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions(
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, started_ns INTEGER NOT NULL,
    evicted_spans INTEGER NOT NULL DEFAULT 0, evicted_logs INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS spans(
    id INTEGER PRIMARY KEY, session INTEGER NOT NULL, trace_id TEXT NOT NULL,
    span_id INTEGER NOT NULL, parent_span_id INTEGER NOT NULL, side TEXT NOT NULL,
    device TEXT NOT NULL, operation TEXT NOT NULL, argument TEXT NOT NULL,
    start_ns INTEGER NOT NULL, duration_ns INTEGER NOT NULL, error INTEGER NOT NULL,
    event_delay_us INTEGER, span TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS spans_trace ON spans(trace_id);
CREATE INDEX IF NOT EXISTS spans_session_start ON spans(session, start_ns);
CREATE INDEX IF NOT EXISTS spans_operation ON spans(session, device, operation, argument);
CREATE INDEX IF NOT EXISTS spans_start ON spans(start_ns);
CREATE TABLE IF NOT EXISTS logs(
    id INTEGER PRIMARY KEY, session INTEGER NOT NULL, trace_id TEXT NOT NULL,
    time_ns INTEGER NOT NULL, log TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS logs_trace ON logs(trace_id);
CREATE INDEX IF NOT EXISTS logs_session_time ON logs(session, time_ns);
";

/// Whether the store at `path` is the older JSON-lines form (a `.jsonl` file), which `show` still
/// reads and writes; any other path is an SQLite database.
pub fn is_json_lines(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "jsonl")
}

fn db_error(path: &Path, reason: rusqlite::Error) -> StoreError {
    StoreError::Database { path: path.to_owned(), reason }
}

/// Opens (creating it, its directories and its tables) the database for writing.
fn open_for_writing(path: &Path) -> Result<Connection, StoreError> {
    if path.is_dir() {
        let reason = std::io::Error::new(std::io::ErrorKind::IsADirectory, "a directory is in the way");
        return Err(StoreError::Open { path: path.to_owned(), reason });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|reason| StoreError::Open { path: path.to_owned(), reason })?;
    }
    // The span and log writers may open a new database at the same moment: switching it to
    // WAL needs the database to itself and fails at once (no busy handler) while the other
    // connection holds it, so that step is retried for as long as the busy timeout.
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match open_connection(path) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            result => return result.map_err(|e| db_error(path, e)),
        }
    }
}

/// How long a writer waits for the other writer's lock.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: readers (`report`, `show`) never block the daemon's writes; NORMAL: a commit is
    // not an fsync (a crash loses at most the last batches, never the database).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// Checks that a database store can be written at `path`, as the daemon does before it starts.
pub fn check_db(path: &Path) -> Result<(), StoreError> {
    open_for_writing(path).map(drop)
}

/// The session's row id, created if the name is new (a name given again adds to its session).
fn session_id(conn: &Connection, path: &Path, name: &str) -> Result<i64, StoreError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    conn.execute("INSERT OR IGNORE INTO sessions(name, started_ns) VALUES (?1, ?2)", params![name, now])
        .map_err(|e| db_error(path, e))?;
    conn.query_row("SELECT id FROM sessions WHERE name = ?1", [name], |r| r.get(0))
        .map_err(|e| db_error(path, e))
}

/// What a report groups a span by and measures of it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpanKey {
    /// `server` (the device's side: SERVER spans, user code inside them, event pushes) or
    /// `client`.
    pub side: &'static str,
    /// The device called (client) or serving (server); for events, the event's device.
    pub device: String,
    /// The operation: the last `::` part of the span's name (`read_attribute`,
    /// `read_attributes_5`, `command_inout`), or the user code span's name (`Slow.slow`).
    pub operation: String,
    /// The attribute, command or event attribute (`tango.operation.argument`,
    /// `tango.event.attribute`); empty when the span has none.
    pub argument: String,
}

/// The report's key of a span.
pub fn span_key(span: &SpanJson) -> SpanKey {
    let attr = |k: &str| span.attributes.get_str(k).unwrap_or_default().to_owned();
    let instance = span.resource.get_str("service.instance.id").unwrap_or_default().to_owned();
    let server_process = span.resource.get_str("tango.process.kind") == Some("server");
    // `std::vector<Tango::DeviceAttribute>* Tango::DeviceProxy::read_attributes` → `read_attributes`.
    let operation = span.name.rsplit("::").next().unwrap_or(&span.name).to_owned();
    match span.kind.as_str() {
        "CLIENT" => SpanKey {
            side: "client",
            device: attr("tango.operation.target"),
            operation,
            argument: attr("tango.operation.argument"),
        },
        "PRODUCER" | "CONSUMER" => SpanKey {
            side: if span.kind == "PRODUCER" { "server" } else { "client" },
            device: span.attributes.get_str("tango.event.device").map_or(instance, str::to_owned),
            operation,
            argument: attr("tango.event.attribute"),
        },
        _ => SpanKey {
            side: if span.kind == "SERVER" || server_process { "server" } else { "client" },
            device: instance,
            operation,
            argument: attr("tango.operation.argument"),
        },
    }
}

/// A span id's 64 bits as SQLite's integer (0 for none).
fn span_id_int(hex: &str) -> i64 {
    u64::from_str_radix(hex, 16).map_or(0, |v| v as i64)
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The records the database store writes: spans or log records in their JSON form.
pub(crate) enum DbRows {
    Spans(Vec<SpanJson>),
    Logs(Vec<LogJson>),
}

/// Writes batches to the database, one transaction each, on the blocking pool. The connection
/// is opened on first use and again after an error.
pub(crate) struct DbWriter {
    path: PathBuf,
    session: String,
    max_bytes: u64,
    conn: Option<(Connection, i64)>,
}

impl DbWriter {
    pub(crate) fn new(path: PathBuf, session: String, max_bytes: u64) -> Self {
        DbWriter { path, session, max_bytes, conn: None }
    }

    pub(crate) async fn write(&mut self, rows: DbRows) -> Result<(), StoreError> {
        let (path, session, max_bytes) = (self.path.clone(), self.session.clone(), self.max_bytes);
        let conn = self.conn.take();
        let task = tokio::task::spawn_blocking(move || {
            let (mut conn, session_id) = match conn {
                Some(open) => open,
                None => {
                    let conn = open_for_writing(&path)?;
                    let id = session_id(&conn, &path, &session)?;
                    (conn, id)
                }
            };
            insert(&mut conn, session_id, rows).map_err(|e| db_error(&path, e))?;
            enforce_limit(&mut conn, max_bytes).map_err(|e| db_error(&path, e))?;
            Ok((conn, session_id))
        });
        match task.await {
            Ok(Ok(open)) => {
                self.conn = Some(open);
                Ok(())
            }
            Ok(Err(err)) => Err(err),
            Err(join) => Err(StoreError::Write {
                path: self.path.clone(),
                reason: std::io::Error::other(join.to_string()),
            }),
        }
    }
}

fn insert(conn: &mut Connection, session: i64, rows: DbRows) -> rusqlite::Result<()> {
    // IMMEDIATE: the write lock is taken (waiting for the other writer) at BEGIN; a deferred
    // transaction upgrading from its read would fail at once when the other writer committed.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    match rows {
        DbRows::Spans(spans) => {
            let mut statement = tx.prepare_cached(
                "INSERT INTO spans(session, trace_id, span_id, parent_span_id, side, device, operation, \
                 argument, start_ns, duration_ns, error, event_delay_us, span) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?;
            for span in spans {
                let key = span_key(&span);
                let json = serde_json::to_string(&span)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                statement.execute(params![
                    session,
                    span.trace_id,
                    span_id_int(&span.span_id),
                    span_id_int(&span.parent_span_id),
                    key.side,
                    key.device,
                    key.operation,
                    key.argument,
                    as_i64(span.start_ns),
                    as_i64(span.end_ns.saturating_sub(span.start_ns)),
                    span.is_error(),
                    span.attributes.get_i64("tango.event.delay_us"),
                    json,
                ])?;
            }
        }
        DbRows::Logs(logs) => {
            let mut statement = tx.prepare_cached(
                "INSERT INTO logs(session, trace_id, time_ns, log) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for log in logs {
                let json = serde_json::to_string(&log)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                statement.execute(params![session, log.trace_id, as_i64(log.time_ns), json])?;
            }
        }
    }
    tx.commit()
}

/// Bytes the database's live pages take (free pages are reused, not counted).
fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(u64::try_from((pages - free).max(0) * size).unwrap_or(0))
}

/// Deletes the oldest tenth of spans and of log records until the database is within
/// `max_bytes`, counting what each session lost.
fn enforce_limit(conn: &mut Connection, max_bytes: u64) -> rusqlite::Result<()> {
    for _ in 0..10 {
        if used_bytes(conn)? <= max_bytes {
            return Ok(());
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut deleted = 0;
        for (table, counter) in [("spans", "evicted_spans"), ("logs", "evicted_logs")] {
            let rows: i64 = tx.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
            let cut = (rows / 10).max(1);
            let Some(last): Option<i64> = tx
                .query_row(&format!("SELECT id FROM {table} ORDER BY id LIMIT 1 OFFSET ?1"), [cut - 1], |r| {
                    r.get(0)
                })
                .optional()?
            else {
                continue;
            };
            tx.execute(
                &format!(
                    "UPDATE sessions SET {counter} = {counter} + (SELECT count(*) FROM {table} t \
                     WHERE t.session = sessions.id AND t.id <= ?1)"
                ),
                [last],
            )?;
            deleted += tx.execute(&format!("DELETE FROM {table} WHERE id <= ?1"), [last])?;
        }
        tx.commit()?;
        if deleted == 0 {
            return Ok(());
        }
        log::info!(
            "span store: deleted {deleted} oldest spans and log records to stay within {max_bytes} bytes"
        );
    }
    Ok(())
}

/// A session of the store.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SessionInfo {
    /// Its name.
    pub name: String,
    /// When a daemon first wrote to it, in nanoseconds since the Unix epoch.
    pub started_ns: u64,
    /// Spans of it deleted to keep the store within its size.
    pub evicted_spans: u64,
    /// Log records of it deleted to keep the store within its size.
    pub evicted_logs: u64,
}

/// One span as a report measures it.
#[derive(Clone, Debug)]
pub struct CallRow {
    /// What it is grouped by.
    pub key: SpanKey,
    /// Its trace, 32 hex digits.
    pub trace_id: String,
    /// Its id and its parent's (0 for a root), as integers.
    pub span_id: i64,
    /// Its parent (0 for a root).
    pub parent_span_id: i64,
    /// Start, ns since the epoch.
    pub start_ns: u64,
    /// Duration in ns.
    pub duration_ns: u64,
    /// Status ERROR.
    pub error: bool,
    /// `tango.event.delay_us` of an event delivery.
    pub event_delay_us: Option<i64>,
}

/// A database store opened for reading.
pub struct DbReader {
    path: PathBuf,
    conn: Connection,
}

impl DbReader {
    /// Opens the database at `path` read-only; a missing file or one that is not a store is an
    /// error that says so.
    pub fn open(path: &Path) -> Result<DbReader, StoreError> {
        if !path.is_file() {
            let reason = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
            return Err(StoreError::Read { path: path.to_owned(), reason });
        }
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| db_error(path, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| db_error(path, e))?;
        conn.query_row("SELECT count(*) FROM sessions", [], |r| r.get::<_, i64>(0))
            .map_err(|e| db_error(path, e))?;
        Ok(DbReader { path: path.to_owned(), conn })
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        db_error(&self.path, e)
    }

    /// Every session, oldest first.
    pub fn sessions(&self) -> Result<Vec<SessionInfo>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT name, started_ns, evicted_spans, evicted_logs FROM sessions ORDER BY started_ns, id",
            )
            .map_err(|e| self.err(e))?;
        let rows = statement
            .query_map([], |r| {
                Ok(SessionInfo {
                    name: r.get(0)?,
                    started_ns: r.get::<_, i64>(1)? as u64,
                    evicted_spans: r.get::<_, i64>(2)? as u64,
                    evicted_logs: r.get::<_, i64>(3)? as u64,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The spans of the traces whose id starts with `prefix` (lowercase hex), by the index.
    pub fn trace_spans(&self, prefix: &str) -> Result<Vec<SpanJson>, StoreError> {
        self.json_rows(
            "SELECT span FROM spans WHERE trace_id >= ?1 AND trace_id < ?2 ORDER BY start_ns",
            prefix,
        )
    }

    /// The log records of the traces whose id starts with `prefix`.
    pub fn trace_logs(&self, prefix: &str) -> Result<Vec<LogJson>, StoreError> {
        if prefix.is_empty() {
            return Ok(Vec::new());
        }
        self.json_rows("SELECT log FROM logs WHERE trace_id >= ?1 AND trace_id < ?2 ORDER BY time_ns", prefix)
    }

    fn json_rows<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        prefix: &str,
    ) -> Result<Vec<T>, StoreError> {
        // Every id starting with `prefix` sorts between it and it followed by a character past
        // the hex digits.
        let end = format!("{prefix}~");
        let mut statement = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let texts = statement
            .query_map([prefix, end.as_str()], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        self.parse(texts)
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, texts: Vec<String>) -> Result<Vec<T>, StoreError> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                serde_json::from_str(t).map_err(|reason| StoreError::BadLine {
                    path: self.path.clone(),
                    line: i + 1,
                    what: "span or log record",
                    reason,
                })
            })
            .collect()
    }

    /// The ids of the last `n` traces to start (newest first), by the start-time index.
    pub fn last_traces(&self, n: usize) -> Result<Vec<String>, StoreError> {
        let mut statement = self
            .conn
            .prepare("SELECT trace_id FROM spans ORDER BY start_ns DESC")
            .map_err(|e| self.err(e))?;
        let mut rows = statement.query([]).map_err(|e| self.err(e))?;
        let mut ids: Vec<String> = Vec::new();
        while ids.len() < n {
            let Some(row) = rows.next().map_err(|e| self.err(e))? else { break };
            let id: String = row.get(0).map_err(|e| self.err(e))?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Every span, in order of start.
    pub fn all_spans(&self) -> Result<Vec<SpanJson>, StoreError> {
        self.all("SELECT span FROM spans ORDER BY start_ns")
    }

    /// Every log record, in order of time.
    pub fn all_logs(&self) -> Result<Vec<LogJson>, StoreError> {
        self.all("SELECT log FROM logs ORDER BY time_ns")
    }

    fn all<T: serde::de::DeserializeOwned>(&self, sql: &str) -> Result<Vec<T>, StoreError> {
        let mut statement = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let texts = statement
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        self.parse(texts)
    }

    /// The calls of one session, as reports measure them (the spans' JSON is not read).
    pub fn session_calls(&self, session: &str) -> Result<Vec<CallRow>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT side, device, operation, argument, trace_id, span_id, parent_span_id, start_ns, \
                 duration_ns, error, event_delay_us FROM spans \
                 WHERE session = (SELECT id FROM sessions WHERE name = ?1)",
            )
            .map_err(|e| self.err(e))?;
        let rows = statement
            .query_map([session], |r| {
                let side: String = r.get(0)?;
                Ok(CallRow {
                    key: SpanKey {
                        side: if side == "server" { "server" } else { "client" },
                        device: r.get(1)?,
                        operation: r.get(2)?,
                        argument: r.get(3)?,
                    },
                    trace_id: r.get(4)?,
                    span_id: r.get(5)?,
                    parent_span_id: r.get(6)?,
                    start_ns: r.get::<_, i64>(7)? as u64,
                    duration_ns: r.get::<_, i64>(8)? as u64,
                    error: r.get(9)?,
                    event_delay_us: r.get(10)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }
}

/// Writes `spans` into session `session` of the database at `path` in one transaction, as the
/// daemon's writer does (for tools and tests that make stores of their own).
pub fn write_spans(
    path: &Path,
    session: &str,
    max_bytes: u64,
    spans: Vec<SpanJson>,
) -> Result<(), StoreError> {
    let mut conn = open_for_writing(path)?;
    let id = session_id(&conn, path, session)?;
    insert(&mut conn, id, DbRows::Spans(spans)).map_err(|e| db_error(path, e))?;
    enforce_limit(&mut conn, max_bytes).map_err(|e| db_error(path, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

    use super::*;
    use crate::{
        Destination, ExportConfig, ExportHub,
        testing::{TempDir, reference_command_inout, reference_device_logs},
    };

    fn span(trace: u32, id: u32, parent: u32, start_ns: u64, duration_ns: u64) -> SpanJson {
        let mut span: SpanJson = serde_json::from_str(&format!(
            r#"{{"resource": {{"service.name": "Demo", "service.instance.id": "test/demo/1", "tango.process.kind": "server"}}, "scope": {{"name": "tango.cpp", "version": "10.3.3"}}, "name": "Tango::Device_4Impl::command_inout_4", "kind": "SERVER", "trace_id": "{trace:032x}", "span_id": "{id:016x}", "parent_span_id": "", "trace_state": "", "start_ns": {start_ns}, "end_ns": {}, "duration_us": 1.0, "attributes": {{"tango.operation.argument": "Work"}}, "events": [], "links": [], "status": {{"code": 0, "message": ""}}}}"#,
            start_ns + duration_ns
        ))
        .unwrap();
        if parent != 0 {
            span.parent_span_id = format!("{parent:016x}");
        }
        span
    }

    /// Spans and logs from the hub land in the session named by the configuration, keyed for
    /// reports, and one trace is found by its id's prefix.
    #[tokio::test]
    async fn the_hub_writes_sessions_and_show_finds_a_trace() {
        let dir = TempDir::new("db-hub");
        let path = dir.path().join("store.db");
        let store = Destination::Store { path: path.clone() };
        let config = ExportConfig { store_session: "first".into(), ..ExportConfig::default() };
        let hub = ExportHub::start(config);
        for span in reference_command_inout() {
            hub.submit(span, std::slice::from_ref(&store));
        }
        for log in reference_device_logs() {
            hub.submit_log(log, std::slice::from_ref(&store));
        }
        let stats = hub.shutdown().await;
        assert_eq!(stats.get(&store).unwrap().spans_delivered, 2, "{stats:?}");

        let reader = DbReader::open(&path).unwrap();
        let sessions = reader.sessions().unwrap();
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[0].name, "first");
        let calls = reader.session_calls("first").unwrap();
        assert_eq!(calls.len(), 2);
        let client = calls.iter().find(|c| c.key.side == "client").unwrap();
        assert_eq!(client.key.operation, "command_inout");
        let server = calls.iter().find(|c| c.key.side == "server").unwrap();
        assert_eq!(server.parent_span_id, client.span_id, "the server span is the client's child");
        let trace = &client.trace_id;
        assert_eq!(reader.trace_spans(&trace[..6]).unwrap().len(), 2);
        assert!(reader.trace_spans("ffff").unwrap().is_empty());
        assert_eq!(reader.all_logs().unwrap().len(), 3, "{stats:?}");
        assert_eq!(reader.last_traces(5).unwrap(), vec![trace.clone()]);
        // The trace index is used, not a scan.
        let plan: String = reader
            .conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT span FROM spans WHERE trace_id >= 'a' AND trace_id < 'a~'",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("spans_trace"), "{plan}");
    }

    /// Past its size the store deletes its oldest spans, counts them per session, and stays
    /// near its limit.
    #[test]
    fn the_store_stays_within_its_size_and_counts_what_it_deleted() {
        let dir = TempDir::new("db-limit");
        let path = dir.path().join("store.db");
        let limit = 2 << 20;
        for round in 0..20u32 {
            let spans = (0..1000u32)
                .map(|i| span(round * 1000 + i + 1, i + 1, 0, u64::from(round * 1000 + i), 1000))
                .collect();
            write_spans(&path, if round < 10 { "old" } else { "new" }, limit, spans).unwrap();
        }
        let reader = DbReader::open(&path).unwrap();
        let sessions = reader.sessions().unwrap();
        let old = sessions.iter().find(|s| s.name == "old").unwrap();
        let kept_old = reader.session_calls("old").unwrap().len() as u64;
        let kept_new = reader.session_calls("new").unwrap().len() as u64;
        assert!(old.evicted_spans > 0, "{sessions:?}");
        assert_eq!(kept_old + old.evicted_spans + kept_new + sessions[1].evicted_spans, 20_000);
        assert!(kept_new > kept_old, "the oldest went first");
        let conn = Connection::open(&path).unwrap();
        assert!(used_bytes(&conn).unwrap() <= limit);
        let file = std::fs::metadata(&path).unwrap().len();
        assert!(file < 2 * limit + (1 << 20), "the file stays near its limit: {file}");
    }

    #[test]
    fn a_missing_or_foreign_file_is_a_clear_error() {
        let dir = TempDir::new("db-errors");
        let err = DbReader::open(&dir.path().join("none.db")).err().unwrap();
        assert!(err.to_string().contains("none.db"), "{err}");
        let text = dir.path().join("text.db");
        std::fs::write(&text, "not a database at all, just some text that is long enough").unwrap();
        let err = DbReader::open(&text).err().unwrap();
        assert!(err.to_string().starts_with(&format!("span store {}", text.display())), "{err}");
    }
}
