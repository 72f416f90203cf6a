//! The embedded store: spans appended to a JSON-lines file, one [`SpanJson`] per line, and log
//! records to the file beside it ([`logs_path`]), one [`LogJson`] per line.
//!
//! It is the default sink when no backend is configured, and it keeps exactly what OTLP would
//! carry: every batch goes through the OTLP request ([`crate::otlp::build_request`],
//! [`crate::otlp::build_logs_request`]) and its JSON form. Lines are written whole at each
//! flush; a line torn by a crash is cut off when the file is next opened for writing and
//! skipped by [`read_store`] when it is the last one.
//!
//! Logs have a file of their own so that readers of spans (and the two writers, each rotating
//! its own file) never meet the other signal's lines.

use std::{
    fs::{File, OpenOptions},
    io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
};

use serde::de::DeserializeOwned;

use crate::{
    json::{LogJson, SpanJson},
    record::Exportable,
};

/// Why the store could not be written or read. Each message ends with the system's reason,
/// which is therefore not also a `source()` (it would be printed twice).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file or its directory could not be created or opened.
    #[error("cannot open span store {path}: {reason}")]
    Open {
        /// The store's file.
        path: PathBuf,
        /// The I/O error.
        reason: std::io::Error,
    },
    /// Appending or syncing failed.
    #[error("cannot write span store {path}: {reason}")]
    Write {
        /// The store's file.
        path: PathBuf,
        /// The I/O error.
        reason: std::io::Error,
    },
    /// Reading failed.
    #[error("cannot read span store {path}: {reason}")]
    Read {
        /// The store's file.
        path: PathBuf,
        /// The I/O error.
        reason: std::io::Error,
    },
    /// A complete line is not a span (or, in the logs' file, not a log record).
    #[error("span store {path} line {line} is not a {what}: {reason}")]
    BadLine {
        /// The store's file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What the line should have been: `span` or `log record`.
        what: &'static str,
        /// What the JSON parser objected to.
        reason: serde_json::Error,
    },
    /// The SQLite database refused an operation.
    #[error("span store {path}: {reason}")]
    Database {
        /// The store's file.
        path: PathBuf,
        /// SQLite's error.
        reason: rusqlite::Error,
    },
    /// A span or log record could not be turned into JSON.
    #[error("cannot encode a record for store {path}: {reason}")]
    Encode {
        /// The store's file.
        path: PathBuf,
        /// The serializer's error.
        reason: serde_json::Error,
    },
}

/// Reads every span of a store file, in file order. A torn last line (no newline, not valid
/// JSON: the writer was stopped mid-line) is skipped; any other bad line is an error.
pub fn read_store(path: impl AsRef<Path>) -> Result<Vec<SpanJson>, StoreError> {
    read_lines(path.as_ref(), "span")
}

/// Reads every log record of a store's logs file (the [`logs_path`] of the store), in file
/// order, as [`read_store`] reads spans.
pub fn read_log_store(path: impl AsRef<Path>) -> Result<Vec<LogJson>, StoreError> {
    read_lines(path.as_ref(), "log record")
}

/// The file beside the store `path` that holds its log records: `spans.jsonl` keeps its logs
/// in `spans.logs.jsonl`, a store without an extension `store` in `store.logs`.
pub fn logs_path(path: &Path) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default();
    let mut name = stem.to_owned();
    name.push(".logs");
    if let Some(extension) = path.extension() {
        name.push(".");
        name.push(extension);
    }
    path.with_file_name(name)
}

fn read_lines<T: DeserializeOwned>(path: &Path, what: &'static str) -> Result<Vec<T>, StoreError> {
    let read_error = |reason| StoreError::Read { path: path.to_owned(), reason };
    let file = File::open(path).map_err(read_error)?;
    let mut reader = BufReader::new(file);
    let mut spans = Vec::new();
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(read_error)? == 0 {
            return Ok(spans);
        }
        number += 1;
        let complete = line.ends_with('\n');
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_str(text) {
            Ok(span) => spans.push(span),
            Err(_) if !complete => return Ok(spans),
            Err(reason) => {
                return Err(StoreError::BadLine { path: path.to_owned(), line: number, what, reason });
            }
        }
    }
}

/// Appends batches to one store file. The file is opened on first use and reopened after an
/// error, so a store on a disk that was full or a directory that was missing recovers.
/// Size past which the store file is rotated.
pub const MAX_STORE_BYTES: u64 = 256 * 1024 * 1024;

/// Where the previous store file goes when the current one is full.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

pub(crate) struct StoreWriter {
    path: PathBuf,
    file: Option<File>,
    /// Written since the last sync: an idle store costs no syscalls at ticks.
    dirty: bool,
    /// Size past which the file is rotated.
    limit: u64,
}

impl StoreWriter {
    pub(crate) fn new(path: PathBuf) -> Self {
        StoreWriter { path, file: None, dirty: false, limit: MAX_STORE_BYTES }
    }

    /// Writes `batch` as whole lines; with `sync`, also asks the kernel to put it on disk.
    pub(crate) async fn write<R: Exportable>(&mut self, batch: Vec<R>, sync: bool) -> Result<(), StoreError> {
        let bytes =
            R::store_lines(batch).map_err(|reason| StoreError::Encode { path: self.path.clone(), reason })?;
        self.run_blocking(move |path, file| {
            file.write_all(&bytes)
                .and_then(|()| if sync { file.sync_data() } else { Ok(()) })
                .map_err(|reason| StoreError::Write { path: path.to_owned(), reason })
        })
        .await?;
        self.dirty = !sync;
        self.rotate_if_full();
        Ok(())
    }

    /// Keeps the store bounded: past [`MAX_STORE_BYTES`] the file becomes `<path>.1` (replacing
    /// the previous one) and a new file starts, so a daemon that runs for months keeps at most
    /// twice that on disk and loses only the oldest records.
    fn rotate_if_full(&mut self) {
        let full = std::fs::metadata(&self.path).is_ok_and(|m| m.len() > self.limit);
        if full {
            self.file = None;
            if let Err(e) = std::fs::rename(&self.path, rotated_path(&self.path)) {
                log::warn!("span store {}: cannot rotate: {e}", self.path.display());
            }
        }
    }

    /// Puts what was written on disk (at flush ticks and at shutdown).
    pub(crate) async fn sync(&mut self) -> Result<(), StoreError> {
        if self.file.is_none() || !self.dirty {
            return Ok(());
        }
        self.run_blocking(|path, file| {
            file.sync_data().map_err(|reason| StoreError::Write { path: path.to_owned(), reason })
        })
        .await?;
        self.dirty = false;
        Ok(())
    }

    /// Runs file I/O on the blocking pool, opening the file first if needed.
    async fn run_blocking(
        &mut self,
        work: impl FnOnce(&Path, &mut File) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let file = self.file.take();
        let task = tokio::task::spawn_blocking(move || {
            let mut file = match file {
                Some(file) => file,
                None => open_for_append(&path)?,
            };
            work(&path, &mut file)?;
            Ok(file)
        });
        match task.await {
            Ok(Ok(file)) => {
                self.file = Some(file);
                Ok(())
            }
            // The file is dropped: the next batch reopens it.
            Ok(Err(err)) => Err(err),
            Err(join) => Err(StoreError::Write {
                path: self.path.clone(),
                reason: std::io::Error::other(join.to_string()),
            }),
        }
    }
}

/// Checks that spans can be stored at `path` (a database, or JSON lines for a `.jsonl` path), as a daemon should before it starts: creates the
/// missing directories and opens the file for appending once, exactly as every write will.
pub fn check_store(path: impl AsRef<Path>) -> Result<(), StoreError> {
    if !crate::db::is_json_lines(path.as_ref()) {
        return crate::db::check_db(path.as_ref());
    }
    open_for_append(path.as_ref()).map(drop)
}

/// Opens (creating it and its directories) the store for appending, cutting off a torn last
/// line so that the next record starts on a line of its own.
fn open_for_append(path: &Path) -> Result<File, StoreError> {
    let open_error = |reason| StoreError::Open { path: path.to_owned(), reason };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|err| {
            // "File exists" would not say which one, nor that it is in the way.
            if err.kind() == std::io::ErrorKind::AlreadyExists && !dir.is_dir() {
                let text = format!("{} is not a directory", dir.display());
                open_error(std::io::Error::new(std::io::ErrorKind::NotADirectory, text))
            } else {
                open_error(err)
            }
        })?;
    }
    let mut file = OpenOptions::new().create(true).read(true).append(true).open(path).map_err(open_error)?;
    let len = file.metadata().map_err(open_error)?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1)).map_err(open_error)?;
        file.read_exact(&mut last).map_err(open_error)?;
        if last[0] != b'\n' {
            let keep = last_line_start(&mut file, len).map_err(open_error)?;
            file.set_len(keep).map_err(open_error)?;
            log::warn!("span store {}: cut off a torn last line ({} bytes)", path.display(), len - keep);
        }
    }
    Ok(file)
}

/// The offset just after the last newline before `len` (0 if there is none).
#[expect(clippy::indexing_slicing, reason = "`end - start` is at most CHUNK, the buffer's length")]
fn last_line_start(file: &mut File, len: u64) -> std::io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let mut end = len;
    let mut buf = vec![0u8; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(pos) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + pos as u64 + 1);
        }
        end = start;
    }
    Ok(0)
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
    use crate::testing::{TempDir, reference_command_inout};

    #[test]
    fn an_unwritable_store_is_refused_by_the_check() {
        let dir = TempDir::new("check");
        // A store that can be made: its directories are created, the file exists after.
        let good = dir.path().join("new/dir/spans.jsonl");
        check_store(&good).unwrap();
        assert!(good.is_file());
        // A directory in its place.
        let err = check_store(dir.path().join("new/dir")).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err}");
        // A directory that cannot be created (a file is in the way).
        let err = check_store(good.join("spans.jsonl")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot open span store {}: ", good.join("spans.jsonl").display())),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_none(), "the reason is said once");
    }

    #[test]
    fn the_rotated_file_sits_next_to_the_store() {
        assert_eq!(
            rotated_path(Path::new("/var/lib/x/spans.jsonl")),
            PathBuf::from("/var/lib/x/spans.jsonl.1")
        );
    }

    #[tokio::test]
    async fn a_full_store_rotates_and_keeps_the_previous_file() {
        let dir = TempDir::new("rotate");
        let path = dir.path().join("spans.jsonl");
        let mut writer = StoreWriter::new(path.clone());
        writer.limit = 100;
        writer.write(reference_command_inout(), true).await.unwrap();
        assert!(!path.exists() && rotated_path(&path).exists(), "rotated past the limit");
        writer.write(reference_command_inout(), true).await.unwrap();
        let mut all = read_store(rotated_path(&path)).unwrap();
        all.extend(read_store(&path).unwrap_or_default());
        assert_eq!(all.len(), 2, "the newest file rotated again; the previous one is replaced");
    }

    #[test]
    fn the_logs_file_sits_beside_the_store() {
        assert_eq!(
            logs_path(Path::new("/var/lib/x/spans.jsonl")),
            PathBuf::from("/var/lib/x/spans.logs.jsonl")
        );
        assert_eq!(logs_path(Path::new("store")), PathBuf::from("store.logs"));
        assert_eq!(logs_path(Path::new("a.b/s.json.gz")), PathBuf::from("a.b/s.json.logs.gz"));
        assert_eq!(rotated_path(&logs_path(Path::new("s.jsonl"))), PathBuf::from("s.logs.jsonl.1"));
    }

    /// Log records are stored as their OTLP form says, and read back; a spans reader never
    /// meets them.
    #[tokio::test]
    async fn log_records_round_trip() {
        let dir = TempDir::new("store-logs");
        let path = logs_path(&dir.path().join("spans.jsonl"));
        let mut writer = StoreWriter::new(path.clone());
        writer.write(crate::testing::reference_device_logs(), true).await.unwrap();
        let logs = read_log_store(&path).unwrap();
        assert_eq!(logs.len(), 3);
        let info = &logs[1];
        assert_eq!(info.body_text(), "hello 0");
        assert_eq!((info.severity_number, info.severity_text.as_str()), (9, "INFO"));
        assert_eq!(info.code_location().as_deref(), Some("pydev2.py:20"));
        assert_eq!(info.attributes.get_i64("code.lineno"), Some(20));
        assert_eq!(
            (info.trace_id.as_str(), info.span_id.as_str(), info.flags),
            ("1c7ec4378c562421f9fc46412b5514f8", "45d2abbade956bf8", 3)
        );
        assert_eq!((info.time_ns, info.observed_ns), (1_795_248_226_536_048_691, 1_795_248_226_536_058_830));
        assert_eq!(info.service(), "LogDev/test/logdev/1");
        assert_eq!(info.resource.get_i64("tango.process.id"), Some(15342));
        assert_eq!((info.scope.name.as_str(), info.scope.version.as_str()), ("cppTango", "10.3.3"));
        let warn = &logs[0];
        assert_eq!((warn.trace_id.as_str(), warn.span_id.as_str(), warn.flags), ("", "", 0));

        // The line has the documented keys, in order.
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap();
        let keys = [
            "resource",
            "scope",
            "time_ns",
            "observed_ns",
            "severity_number",
            "severity_text",
            "body",
            "attributes",
            "trace_id",
            "span_id",
            "flags",
        ];
        let at: Vec<usize> = keys.iter().map(|k| first.find(&format!("\"{k}\":")).unwrap()).collect();
        assert!(at.is_sorted(), "{first}");
        let line: serde_json::Value = serde_json::from_str(first).unwrap();
        assert_eq!(line.as_object().unwrap().len(), keys.len(), "{first}");
        // A log line is no span.
        let err = read_store(&path).unwrap_err();
        assert!(err.to_string().contains("line 1 is not a span"), "{err}");
    }

    #[tokio::test]
    async fn writes_reads_and_survives_a_torn_line() {
        let dir = TempDir::new("store");
        let path = dir.path().join("nested/dir/spans.jsonl");
        let mut writer = StoreWriter::new(path.clone());
        writer.write(reference_command_inout(), true).await.unwrap();
        let spans = read_store(&path).unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].name, "Tango::Connection::command_inout");

        // A crash mid-line: readers skip it, the next writer cuts it off.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"resource": {"service.na"#).unwrap();
        drop(file);
        assert_eq!(read_store(&path).unwrap().len(), 2);
        let mut writer = StoreWriter::new(path.clone());
        writer.write(reference_command_inout(), false).await.unwrap();
        writer.sync().await.unwrap();
        assert_eq!(read_store(&path).unwrap().len(), 4);

        // A bad line in the middle is reported with its number.
        std::fs::write(&path, "{}\n{\"x\": 1}\n").unwrap();
        assert!(matches!(read_store(&path), Err(StoreError::BadLine { line: 1, .. })));
        assert!(matches!(read_store(dir.path().join("missing.jsonl")), Err(StoreError::Read { .. })));
    }

    /// The store holds exactly the reference JSON form of cppTango's own spans.
    #[tokio::test]
    async fn matches_the_native_reference_captures() {
        let dir = TempDir::new("store-golden");
        let path = dir.path().join("spans.jsonl");
        let mut writer = StoreWriter::new(path.clone());
        let mut records = reference_command_inout();
        records.push(crate::testing::reference_command_inout_error());
        writer.write(records, true).await.unwrap();
        let stored = read_store(&path).unwrap();

        let mut expected: Vec<SpanJson> =
            serde_json::from_str(include_str!("../tests/fixtures/command_inout.json")).unwrap();
        expected.extend(
            serde_json::from_str::<Vec<SpanJson>>(include_str!("../tests/fixtures/command_inout_error.json"))
                .unwrap(),
        );
        assert_eq!(stored.len(), expected.len());
        for (mut got, mut want) in stored.into_iter().zip(expected) {
            // The captures name the transport they arrived by; resource order is a hash's.
            want.transport = None;
            got.resource.0.sort_by(|a, b| a.0.cmp(&b.0));
            want.resource.0.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(got, want);
        }
        // The raw line has the reference keys in the reference order.
        let first_line = std::fs::read_to_string(&path).unwrap();
        let mut keys: Vec<String> =
            serde_json::from_str::<serde_json::Value>(first_line.lines().next().unwrap())
                .unwrap()
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
        keys.sort_unstable();
        let mut sorted_expected = vec![
            "resource",
            "scope",
            "name",
            "kind",
            "trace_id",
            "span_id",
            "parent_span_id",
            "trace_state",
            "start_ns",
            "end_ns",
            "duration_us",
            "attributes",
            "events",
            "links",
            "status",
        ];
        sorted_expected.sort_unstable();
        assert_eq!(keys, sorted_expected);
    }
}
