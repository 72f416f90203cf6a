//! Daemon throughput without the kernel: a recorded session of probe records (`tango-tracer run
//! --record`) replayed in a loop through the daemon's own [`Pipeline`] (assembly, events,
//! devices, routing, conversion to export records), and optionally on through the exporter's
//! OTLP request building (grouping by resource, encoding, gzip).

use std::{
    collections::HashMap,
    io::Write as _,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use opentelemetry::trace::SpanKind;
use tango_tracer::{
    configure::Policy,
    discover::{processes::Processes, procinfo::ProcessInfo},
    probe::record::Record,
    run::pipeline::{Pipeline, Routed},
};
use tracer_export::{Destination, SpanRecord};

use crate::{
    procs::{self, Proc},
    roundtrip::{DEVICE, MARKER, Programs},
};

/// The daemon's default capture length (`--capture-bytes`).
pub const CAPTURE_BYTES: usize = 2048;

/// Reads a session file: one [`Record`] per line, as `--record` writes them.
pub fn load(path: &Path) -> anyhow::Result<Vec<Record<'static>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut records = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: Record =
            serde_json::from_str(line).with_context(|| format!("{} line {}", path.display(), number + 1))?;
        records.push(record);
    }
    if records.is_empty() {
        bail!("{} holds no records", path.display());
    }
    Ok(records)
}

/// How far replay got.
#[derive(Clone, Debug, Default)]
pub struct ReplayRun {
    /// Timed passes over the session.
    pub passes: u64,
    /// Time spent in the timed passes.
    pub elapsed: Duration,
    pub records: u64,
    /// GIOP messages assembled.
    pub messages: u64,
    /// Spans of either kind.
    pub spans: u64,
    /// Exported client spans: one per Tango operation.
    pub client_spans: u64,
    /// Spans the daemon exports (its default configuration: user and database operations).
    pub exported_spans: u64,
    /// OTLP requests built and their gzip-compressed bytes (OTLP runs only).
    pub requests: u64,
    pub otlp_bytes: u64,
    /// Client spans one pass over the session yields.
    pub operations_per_pass: u64,
    /// How long each timed pass took.
    pub pass_times: Vec<Duration>,
}

impl ReplayRun {
    /// `count` (a total over all passes) per second over the whole run, interruptions by other
    /// processes included.
    pub fn per_second(&self, count: u64) -> f64 {
        count as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// `count` (a total over all passes) per second at the median pass: every pass does the
    /// same work, so this is the rate when the thread is not interrupted.
    pub fn per_second_median(&self, count: u64) -> f64 {
        let mut times = self.pass_times.clone();
        times.sort();
        let Some(median) = times.get(times.len() / 2) else {
            return 0.0;
        };
        count as f64 / self.passes.max(1) as f64 / median.as_secs_f64().max(1e-9)
    }
}

/// The timestamp of the kinds of record a session keeps (see [`normalise`]); others never
/// reach replay.
fn timestamp(record: &Record<'_>) -> Option<u64> {
    match record {
        Record::Data { ts_ns, .. } | Record::Close { ts_ns, .. } | Record::Exit { ts_ns, .. } => Some(*ts_ns),
        _ => None,
    }
}

fn shift(record: &mut Record, by: u64) {
    if let Record::Data { ts_ns, .. } | Record::Close { ts_ns, .. } | Record::Exit { ts_ns, .. } = record {
        *ts_ns += by;
    }
}

/// The daemon's per-record and per-span path, fed by a session instead of the ring buffer.
struct Replayer {
    pipeline: Pipeline,
    processes: Processes,
    /// The recorded processes, adopted again at each pass (the session ends with their exit).
    adopted: Vec<ProcessInfo>,
    routed: Vec<Routed>,
}

impl Replayer {
    fn new(session: &[Record]) -> Self {
        // The daemon's defaults: trace everything, native topics, one destination.
        let policy = Policy {
            trace_by_default: true,
            destinations: vec![Destination::Store { path: "replay".into() }],
            log_destinations: vec![Destination::Store { path: "replay".into() }],
            extended_operations: false,
        };
        let mut pids: Vec<u32> = session.iter().map(Record::pid).collect();
        pids.sort_unstable();
        pids.dedup();
        let adopted = pids
            .into_iter()
            .map(|pid| ProcessInfo { pid, comm: "replay".into(), ..Default::default() })
            .collect();
        Replayer {
            pipeline: Pipeline::new(CAPTURE_BYTES, policy),
            processes: Processes::new(None),
            adopted,
            routed: Vec::new(),
        }
    }

    fn adopt_all(&mut self) {
        for info in &self.adopted {
            self.pipeline.start_process(info.clone(), &mut self.processes);
        }
    }
}

/// Replays `session` through one [`Pipeline`] on this thread for at least `min_time`; with
/// `otlp`, the export records also go the exporter's way to a gzip-compressed OTLP request.
pub fn replay(session: &[Record], min_time: Duration, otlp: bool) -> anyhow::Result<ReplayRun> {
    let mut records = session.to_vec();
    let first = records.iter().filter_map(timestamp).min().unwrap_or(0);
    let last = records.iter().filter_map(timestamp).max().unwrap_or(0);
    // Each pass happens later than the one before, as a live session would.
    let pass_span = last - first + 1_000_000;
    let mut replayer = Replayer::new(&records);
    let mut run = ReplayRun::default();
    // An untimed first pass fills the maps and the device facts, as a running daemon has them.
    let warm = run_pass(&mut replayer, &records, otlp, &mut run);
    if warm.client_spans == 0 {
        bail!("the session produced no client spans: is it a recording of Tango traffic?");
    }
    run = ReplayRun { operations_per_pass: warm.client_spans, ..ReplayRun::default() };
    let started = Instant::now();
    while started.elapsed() < min_time {
        for record in &mut records {
            shift(record, pass_span);
        }
        let began = Instant::now();
        run_pass(&mut replayer, &records, otlp, &mut run);
        let took = began.elapsed();
        run.elapsed += took;
        run.pass_times.push(took);
        run.passes += 1;
    }
    Ok(run)
}

/// One pass; adds its counts to `total` and returns them.
fn run_pass(replayer: &mut Replayer, records: &[Record], otlp: bool, total: &mut ReplayRun) -> ReplayRun {
    let (messages_before, spans_before, _) = replayer.pipeline.totals();
    let mut this = ReplayRun::default();
    let mut last_ts = 0;
    replayer.adopt_all();
    for record in records {
        replayer.pipeline.push(record, &mut replayer.processes);
        last_ts = timestamp(record).unwrap_or(last_ts);
    }
    // The daemon releases after each ring-buffer wake-up and expires on its 100 ms tick; a pass
    // is a few hundred milliseconds of traffic, so once per pass is close to it.
    replayer.pipeline.release(&replayer.processes, false, &mut replayer.routed);
    replayer.pipeline.expire(last_ts);
    // No database to ask: the recorded servers run without one.
    replayer.pipeline.take_queries();
    let (messages, spans, _) = replayer.pipeline.totals();
    this.records = records.len() as u64;
    this.messages = messages - messages_before;
    this.spans = spans - spans_before;
    // Batches as large as the exporter's.
    let max_batch = tracer_export::ExportConfig::default().max_batch;
    let mut batch = Vec::new();
    for Routed { record, .. } in replayer.routed.drain(..) {
        this.exported_spans += 1;
        if record.data.span_kind == SpanKind::Client {
            this.client_spans += 1;
        }
        if otlp {
            batch.push(record);
            if batch.len() == max_batch {
                send(std::mem::take(&mut batch), &mut this);
            }
        }
    }
    if !batch.is_empty() {
        send(batch, &mut this);
    }
    total.records += this.records;
    total.messages += this.messages;
    total.spans += this.spans;
    total.client_spans += this.client_spans;
    total.exported_spans += this.exported_spans;
    total.requests += this.requests;
    total.otlp_bytes += this.otlp_bytes;
    this
}

/// Builds, encodes and compresses one request, as the OTLP/HTTP exporter does.
fn send(batch: Vec<SpanRecord>, run: &mut ReplayRun) {
    let raw = tracer_export::otlp_encode::encode_request(&batch);
    let mut gzip =
        flate2::write::GzEncoder::new(Vec::with_capacity(raw.len() / 4), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let bytes = gzip.write_all(&raw).and_then(|()| gzip.finish()).map_or(0, |v| v.len());
    run.requests += 1;
    run.otlp_bytes += bytes as u64;
}

/// Records a fresh session into `out`: a marked demo server, the daemon with `--record`, and a
/// client doing `operations` reads, writes and commands. Only the two demo processes' records
/// are kept, with their pids, thread ids and timestamps renumbered.
pub fn record_session(
    programs: &Programs,
    dir: &Path,
    operations: usize,
    out: &Path,
) -> anyhow::Result<usize> {
    procs::require_root("recording a session")?;
    let marker = format!("record-{}", std::process::id());
    let port = procs::free_port()?;
    let mut server = {
        let mut command = Command::new(&programs.python);
        command
            .arg(&programs.demo_server)
            .arg("record")
            .arg(port.to_string())
            .arg(DEVICE)
            .env(MARKER, &marker)
            .env_remove("TANGO_TELEMETRY_ENABLE");
        Proc::spawn("record-server", command, dir)?
    };
    procs::wait_for_port(port, &mut server, Duration::from_secs(60))?;
    let raw = dir.join("session-raw.jsonl");
    let ready = dir.join("record.ready");
    let mut daemon = {
        let mut command = Command::new(&programs.tracer);
        command
            .arg("run")
            .arg("--ready-file")
            .arg(&ready)
            .arg("--select-env")
            .arg(format!("{MARKER}={marker}"))
            .args(["--exporter", "store", "--record"])
            .arg(&raw)
            .env("TANGO_TRACER_STORE", dir.join("record-store.jsonl"))
            .env("RUST_LOG", "warn");
        Proc::spawn("record-daemon", command, dir)?
    };
    procs::wait_for_file(&ready, &mut daemon, Duration::from_secs(90))?;
    let mut client = {
        let mut command = Command::new(&programs.python);
        command
            .arg(&programs.client)
            .arg(format!("tango://127.0.0.1:{port}/{DEVICE}#dbase=no"))
            .arg(operations.to_string())
            .arg("--mix")
            .env(MARKER, &marker)
            .env_remove("TANGO_TELEMETRY_ENABLE");
        Proc::spawn("record-client", command, dir)?
    };
    let status = client.wait(Duration::from_secs(120))?;
    if !status.success() {
        bail!("the recording client failed ({status}):\n{}", client.stderr_tail());
    }
    // Let the server's side of the closed connection reach the daemon, then flush it.
    std::thread::sleep(Duration::from_secs(1));
    daemon.stop(Duration::from_secs(30));
    let pids = [server.pid(), client.pid()];
    server.stop(Duration::from_secs(10));

    let records = load(&raw)?;
    let kept = normalise(records, &pids);
    if kept.is_empty() {
        bail!("the daemon recorded nothing of the demo processes");
    }
    let mut text = String::new();
    for record in &kept {
        text.push_str(&serde_json::to_string(record)?);
        text.push('\n');
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    Ok(kept.len())
}

/// Keeps the GIOP records of `pids` and renumbers them: pids 1000, 2000, …, their threads
/// following, timestamps from 1 s, so the file says nothing about the machine it came from.
fn normalise(records: Vec<Record<'static>>, pids: &[u32]) -> Vec<Record<'static>> {
    let new_pid: HashMap<u32, u32> =
        pids.iter().enumerate().map(|(i, &pid)| (pid, 1000 * (i as u32 + 1))).collect();
    // Old thread id → new one; per new pid, how many threads it has so far.
    let mut tids: HashMap<u32, u32> = HashMap::new();
    let mut threads: HashMap<u32, u32> = HashMap::new();
    let first =
        records.iter().filter(|r| new_pid.contains_key(&r.pid())).filter_map(timestamp).min().unwrap_or(0);
    let rebase = |ts: u64| ts.saturating_sub(first) + 1_000_000_000;
    let mut kept = Vec::new();
    for mut record in records {
        let Some(&new) = new_pid.get(&record.pid()) else {
            continue;
        };
        // Changed in place, so fields added to records later are kept as recorded.
        match &mut record {
            Record::Data { pid, tid, ts_ns, .. } => {
                let old = *pid;
                *pid = new;
                *tid = if *tid == old {
                    new
                } else {
                    *tids.entry(*tid).or_insert_with(|| {
                        let count = threads.entry(new).or_insert(0);
                        *count += 1;
                        new + *count
                    })
                };
                *ts_ns = rebase(*ts_ns);
            }
            Record::Close { pid, ts_ns, .. } | Record::Exit { pid, ts_ns } => {
                *pid = new;
                *ts_ns = rebase(*ts_ns);
            }
            // Only GIOP data and the ends of connections and processes matter to assembly.
            _ => continue,
        }
        kept.push(record);
    }
    kept
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

    fn parse(lines: &str) -> Vec<Record<'static>> {
        lines.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    #[test]
    fn normalising_keeps_only_the_demo_processes_renumbered() {
        let records = parse(
            r#"{"Data":{"pid":77,"tid":77,"fd":7,"ts_ns":5000,"direction":"Send","total_len":4,"bytes":"47494f50"}}
{"Data":{"pid":55,"tid":58,"fd":9,"ts_ns":6000,"direction":"Recv","total_len":4,"bytes":"47494f50"}}
{"Data":{"pid":99,"tid":99,"fd":3,"ts_ns":6500,"direction":"Recv","total_len":4,"bytes":"47494f50"}}
{"LibOpened":{"pid":55,"ts_ns":6600}}
{"Exit":{"pid":77,"ts_ns":7000}}"#,
        );
        assert_eq!(records.len(), 5);
        let kept = normalise(records, &[55, 77]);
        assert_eq!(kept.len(), 3);
        assert!(matches!(kept[0], Record::Data { pid: 2000, tid: 2000, ts_ns: 1_000_000_000, .. }));
        assert!(matches!(kept[1], Record::Data { pid: 1000, tid: 1001, ts_ns: 1_000_001_000, .. }));
        assert!(matches!(kept[2], Record::Exit { pid: 2000, ts_ns: 1_000_002_000 }));
    }
}
