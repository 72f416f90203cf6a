//! Churn under one daemon: many short-lived PyTango clients, each its own process making one
//! call, while a device server is started and stopped over and over; what arrives at the
//! receiver, what the daemon keeps (memory, state tables) and what it reports lost.
//!
//! `tests/python/churn.py` makes the processes cheap: its parent imports tango once and forks
//! them; each child starts its own ORB, builds one `DeviceProxy`, runs `Increment` and exits.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tango_tracer::run::{ctl::ExportView, losses::Loss};
use tracer_export::json::SpanJson;

use crate::{
    procs::{self, Proc},
    roundtrip::{self, Daemon, DaemonTotals, MARKER, Programs, Receiver, Server},
};

/// The spans of one client (as cppTango 10.3.3 emits them natively, `tests/reference`): its
/// `DeviceProxy`, its call, and the server's span of that call.
pub const PROXY_SPAN: &str = "Tango::DeviceProxy::DeviceProxy";
pub const CALL_SPAN: &str = "Tango::Connection::command_inout";
pub const SERVED_SPAN: &str = "Tango::Device_4Impl::command_inout_4";
const SPANS_PER_CLIENT: usize = 3;
/// Longest wait, after the last span arrived, for the state tables to be back to their baseline
/// (the daemon keeps an exited process's facts a few seconds for spans still in flight).
pub const TABLES_WAIT: Duration = Duration::from_secs(30);

/// Sizes of the churn benchmark.
#[derive(Clone, Copy, Debug)]
pub struct ChurnSizes {
    /// Clients before the memory and tables are first read.
    pub warmup_clients: usize,
    /// Clients of the churn itself, at most `parallel` at a time.
    pub clients: usize,
    pub parallel: usize,
    /// Server restarts during the churn, each with one client of its own.
    pub restarts: usize,
}

/// Spans of one kind: expected and received.
#[derive(Clone, Debug, Default)]
pub struct SpanCount {
    pub name: &'static str,
    pub kind: &'static str,
    pub expected: usize,
    pub received: usize,
}

/// What the receiver got.
#[derive(Clone, Debug, Default)]
pub struct ChurnSpans {
    /// One row per kind of span a client causes.
    pub kinds: Vec<SpanCount>,
    /// Spans of no expected kind, by (name, kind).
    pub other: BTreeMap<(String, String), usize>,
    /// All spans received, and how many of them repeated a span id already seen.
    pub received: usize,
    pub duplicates: usize,
    /// Clients with exactly their spans (one of each kind), of all clients.
    pub clients_complete: usize,
    /// Restarted servers that served their client (one SERVER span each).
    pub servers_complete: usize,
}

impl ChurnSpans {
    pub fn expected(&self) -> usize {
        self.kinds.iter().map(|k| k.expected).sum()
    }
}

/// Everything the churn benchmark measured.
#[derive(Clone, Debug)]
pub struct Churn {
    pub sizes: ChurnSizes,
    /// Client processes run (warm-up, churn and the restarts' own), and servers restarted.
    pub clients: usize,
    pub servers: usize,
    /// Calls that failed in the clients (they would have no spans to expect).
    pub failed: usize,
    /// Wall time of the churn (clients and restarts, side by side).
    pub seconds: f64,
    pub spans: ChurnSpans,
    /// Daemon VmRSS (KiB) after the warm-up and at the end, and its VmHWM at the end.
    pub rss_warm_kib: u64,
    pub rss_end_kib: u64,
    pub hwm_end_kib: u64,
    /// Daemon CPU time over the churn (from the warm-up's end until every span arrived), and
    /// over its whole life.
    pub daemon_cpu_churn: Duration,
    pub daemon_cpu_total: Duration,
    /// How long after the last span arrived every table was back to its baseline size, if it was.
    pub tables_back: Option<Duration>,
    /// Every state table by `stage.table`.
    pub tables: BTreeMap<String, TableSizes>,
    /// Losses and the export of the daemon at the end (`ctl stats`), and its stop line.
    pub lost: Vec<Loss>,
    pub export: Vec<ExportView>,
    pub totals: Option<DaemonTotals>,
}

/// Entries of one state table, where the daemon listed it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableSizes {
    /// Once the server had served one call of a client not selected, before any churned client.
    pub baseline: Option<u64>,
    pub after_warmup: Option<u64>,
    pub end: Option<u64>,
}

/// The JSON line of `churn.py`.
#[derive(serde::Deserialize)]
struct ChurnOutput {
    clients: Vec<u32>,
    servers: Vec<u32>,
    failed: usize,
}

/// Starts `churn.py ARGS` with the marker in its environment.
fn start_churn(
    programs: &Programs,
    dir: &Path,
    name: &str,
    env: &[(&str, String)],
    args: &[&str],
) -> anyhow::Result<Proc> {
    let mut command = roundtrip::python_command(programs, env);
    command.arg(&programs.churn).args(args);
    // `restarts` imports the demo device class from next to the script.
    if let Some(scripts) = programs.churn.parent() {
        command.current_dir(scripts);
    }
    Proc::spawn(name, command, dir)
}

fn finish_churn(mut proc: Proc, timeout: Duration) -> anyhow::Result<ChurnOutput> {
    let status = proc.wait(timeout)?;
    if !status.success() {
        bail!("{} failed ({status}):\n{}", proc.name(), proc.stderr_tail());
    }
    let stdout = proc.stdout();
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .with_context(|| format!("{} printed {stdout:?}, not its JSON result", proc.name()))
}

/// Waits until the receiver has `expected` spans, or got none for `settle` (some never come).
pub(crate) fn wait_for_spans(
    receiver: &Receiver,
    expected: usize,
    settle: Duration,
    timeout: Duration,
) -> usize {
    let deadline = Instant::now() + timeout;
    let (mut seen, mut since) = (receiver.spans_so_far(), Instant::now());
    loop {
        if seen >= expected || since.elapsed() >= settle || Instant::now() >= deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(200));
        let now = receiver.spans_so_far();
        if now != seen {
            (seen, since) = (now, Instant::now());
        }
    }
}

/// Counts the spans of `clients` and of the restarted `servers`.
fn count_spans(spans: &[SpanJson], clients: &[u32], servers: &[u32]) -> ChurnSpans {
    let pid = |s: &SpanJson| s.resource.get_i64("tango.process.id").and_then(|p| u32::try_from(p).ok());
    let client_set: HashSet<u32> = clients.iter().copied().collect();
    let of_client = |s: &SpanJson| pid(s).is_some_and(|p| client_set.contains(&p));
    let mut kinds = vec![
        SpanCount { name: PROXY_SPAN, kind: "INTERNAL", expected: clients.len(), received: 0 },
        SpanCount { name: CALL_SPAN, kind: "CLIENT", expected: clients.len(), received: 0 },
        SpanCount { name: SERVED_SPAN, kind: "SERVER", expected: clients.len(), received: 0 },
    ];
    let mut other = BTreeMap::new();
    let mut per_client: BTreeMap<u32, [usize; 3]> = BTreeMap::new();
    let mut served_by: BTreeMap<u32, usize> = BTreeMap::new();
    // Each client's call by span id: a SERVER span counts for the client whose call is its parent.
    let calls: HashMap<&str, u32> = spans
        .iter()
        .filter(|s| s.name == CALL_SPAN && s.kind == "CLIENT" && of_client(s))
        .filter_map(|s| Some((s.span_id.as_str(), pid(s)?)))
        .collect();
    for span in spans {
        let slot = match (span.name.as_str(), span.kind.as_str()) {
            (PROXY_SPAN, "INTERNAL") if of_client(span) => Some(0),
            (CALL_SPAN, "CLIENT") if of_client(span) => Some(1),
            (SERVED_SPAN, "SERVER") if calls.contains_key(span.parent_span_id.as_str()) => Some(2),
            _ => None,
        };
        let Some(slot) = slot else {
            *other.entry((span.name.clone(), span.kind.clone())).or_insert(0) += 1;
            continue;
        };
        if let Some(kind) = kinds.get_mut(slot) {
            kind.received += 1;
        }
        let client = if slot == 2 {
            if let Some(server) = pid(span) {
                *served_by.entry(server).or_insert(0) += 1;
            }
            calls.get(span.parent_span_id.as_str()).copied()
        } else {
            pid(span)
        };
        if let Some(count) = client.and_then(|c| per_client.entry(c).or_default().get_mut(slot)) {
            *count += 1;
        }
    }
    let mut ids = HashSet::new();
    let duplicates = spans.iter().filter(|s| !ids.insert(s.span_id.as_str())).count();
    ChurnSpans {
        kinds,
        other,
        received: spans.len(),
        duplicates,
        clients_complete: clients.iter().filter(|c| per_client.get(c) == Some(&[1, 1, 1])).count(),
        servers_complete: servers.iter().filter(|s| served_by.get(s) == Some(&1)).count(),
    }
}

/// Whether no table holds more entries than at the baseline (caches may hold fewer).
fn within(tables: &BTreeMap<String, u64>, baseline: &BTreeMap<String, u64>) -> bool {
    tables.iter().all(|(name, &size)| size <= baseline.get(name).copied().unwrap_or(0))
}

impl TableSizes {
    /// More entries at the end than at the baseline.
    pub fn grew(&self) -> bool {
        self.end.unwrap_or(0) > self.baseline.unwrap_or(0)
    }
}

/// Runs the churn benchmark; `dir` keeps logs.
pub fn run(programs: &Programs, sizes: ChurnSizes, dir: &Path) -> anyhow::Result<Churn> {
    anyhow::ensure!(sizes.clients >= 1 && sizes.parallel >= 1, "nothing to run");
    let marker = format!("churn-{}", std::process::id());
    let marked = [(MARKER, marker.clone())];
    let spans_file = dir.join("churn-spans.jsonl");
    let receiver = Receiver::start_with("churn-receiver", programs, dir, Some(&spans_file))?;
    let (daemon, _) =
        Daemon::start_with_args("churn-daemon", programs, dir, (&marker, &receiver), "info", &[])?;
    let server = Server::start("churn-server", programs, dir, &marked)?;
    let daemon_pid = daemon.proc.pid();
    // One call from a client the daemon does not select: the server's own entries (its process,
    // device and resource) are in the baseline, and no client's.
    let primer = start_churn(programs, dir, "churn-primer", &[], &["clients", &server.url, "1", "1"])?;
    finish_churn(primer, Duration::from_secs(60))?;
    wait_for_spans(&receiver, 1, Duration::from_secs(5), Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let primed = receiver.spans_so_far();
    let baseline = daemon.stats(programs)?;

    let parallel = sizes.parallel.to_string();
    let timeout = |clients: usize| Duration::from_secs(60 + clients as u64 / 2);
    let warm_up = start_churn(
        programs,
        dir,
        "churn-warmup",
        &marked,
        &["clients", &server.url, &sizes.warmup_clients.to_string(), &parallel],
    )?;
    let warm_up = finish_churn(warm_up, timeout(sizes.warmup_clients))?;
    wait_for_spans(
        &receiver,
        warm_up.clients.len() * SPANS_PER_CLIENT,
        Duration::from_secs(5),
        Duration::from_secs(60),
    );
    let rss_warm_kib = procs::memory_kib(daemon_pid).map_or(0, |(rss, _)| rss);
    let warm = daemon.stats(programs)?;
    let cpu_warm = procs::cpu_time(daemon_pid).unwrap_or_default();

    eprintln!(
        "tango-bench: churn: {} clients ({} at a time) and {} server restarts side by side",
        sizes.clients, sizes.parallel, sizes.restarts
    );
    let started = Instant::now();
    // Clients and restarts at the same time, as on a busy host.
    let restarts =
        start_churn(programs, dir, "churn-restarts", &marked, &["restarts", &sizes.restarts.to_string()])?;
    let clients = start_churn(
        programs,
        dir,
        "churn-clients",
        &marked,
        &["clients", &server.url, &sizes.clients.to_string(), &parallel],
    )?;
    let clients = finish_churn(clients, timeout(sizes.clients))?;
    let restarts = finish_churn(restarts, timeout(sizes.restarts * 4))?;
    let seconds = started.elapsed().as_secs_f64();

    let all_clients: Vec<u32> =
        warm_up.clients.iter().chain(&clients.clients).chain(&restarts.clients).copied().collect();
    let failed = warm_up.failed + clients.failed + restarts.failed;
    let expected = all_clients.len() * SPANS_PER_CLIENT;
    let seen = wait_for_spans(&receiver, expected, Duration::from_secs(5), Duration::from_secs(180));
    let daemon_cpu_churn = procs::cpu_time(daemon_pid).unwrap_or_default().saturating_sub(cpu_warm);
    // The daemon keeps what it knows of an exited process a while, for spans still in flight:
    // wait for the tables to shrink back.
    let ended = Instant::now();
    let mut end = daemon.stats(programs)?;
    while !within(&end.tables, &baseline.tables) && ended.elapsed() < TABLES_WAIT {
        std::thread::sleep(Duration::from_secs(1));
        end = daemon.stats(programs)?;
    }
    let tables_back = within(&end.tables, &baseline.tables).then(|| ended.elapsed());
    let (rss_end_kib, hwm_end_kib) = procs::memory_kib(daemon_pid).unwrap_or_default();
    let daemon_cpu_total = procs::cpu_time(daemon_pid).unwrap_or_default();
    eprintln!(
        "tango-bench: churn took {seconds:.1} s; {seen} of {expected} spans; daemon RSS {} → {} MiB",
        rss_warm_kib / 1024,
        rss_end_kib / 1024
    );

    let totals = daemon.stop()?;
    drop(server);
    receiver.finish();
    let mut spans = tracer_export::read_store(&spans_file)
        .with_context(|| format!("reading the spans the receiver kept in {}", spans_file.display()))?;
    // The file is in order of arrival: the primer's span came first.
    spans.drain(..primed.min(spans.len()));
    let mut tables: BTreeMap<String, TableSizes> = BTreeMap::new();
    for (name, &size) in &baseline.tables {
        tables.entry(name.clone()).or_default().baseline = Some(size);
    }
    for (name, &size) in &warm.tables {
        tables.entry(name.clone()).or_default().after_warmup = Some(size);
    }
    for (name, &size) in &end.tables {
        tables.entry(name.clone()).or_default().end = Some(size);
    }
    Ok(Churn {
        sizes,
        clients: all_clients.len(),
        servers: restarts.servers.len(),
        failed,
        seconds,
        spans: count_spans(&spans, &all_clients, &restarts.servers),
        rss_warm_kib,
        rss_end_kib,
        hwm_end_kib,
        daemon_cpu_churn,
        daemon_cpu_total,
        tables_back,
        tables,
        lost: end.lost,
        export: end.export,
        totals,
    })
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

    fn span(name: &str, kind: &str, pid: u32, id: &str, parent: &str) -> SpanJson {
        let json = format!(
            r#"{{"resource": {{"tango.process.id": {pid}}}, "scope": {{"name": "t", "version": ""}},
                "name": "{name}", "kind": "{kind}", "trace_id": "", "span_id": "{id}",
                "parent_span_id": "{parent}", "trace_state": "", "start_ns": 0, "end_ns": 0,
                "duration_us": 0.0, "attributes": {{}}, "events": [], "links": [],
                "status": {{"code": 0, "message": ""}}}}"#
        );
        serde_json::from_str(&json).expect("a span")
    }

    #[test]
    fn counts_each_clients_spans_by_kind() {
        let spans = vec![
            // Client 10: complete, served by the restarted server 90.
            span(PROXY_SPAN, "INTERNAL", 10, "a1", ""),
            span(CALL_SPAN, "CLIENT", 10, "a2", ""),
            span(SERVED_SPAN, "SERVER", 90, "a3", "a2"),
            // Client 11: its proxy only; the server answered a call not traced.
            span(PROXY_SPAN, "INTERNAL", 11, "b1", ""),
            span(SERVED_SPAN, "SERVER", 80, "b3", "b2"),
            // Client 10's call again: a duplicate.
            span(CALL_SPAN, "CLIENT", 10, "a2", ""),
        ];
        let counted = count_spans(&spans, &[10, 11], &[90, 91]);
        let received: Vec<usize> = counted.kinds.iter().map(|k| k.received).collect();
        assert_eq!(received, [2, 2, 1]);
        assert_eq!(counted.expected(), 6);
        assert_eq!(counted.received, 6);
        assert_eq!(counted.duplicates, 1);
        // Client 10 has two calls: not exactly its spans; client 11 lacks two.
        assert_eq!(counted.clients_complete, 0);
        assert_eq!(counted.servers_complete, 1);
        let other: Vec<_> = counted.other.into_iter().collect();
        assert_eq!(other, [((SERVED_SPAN.to_string(), "SERVER".to_string()), 1)]);
    }

    #[test]
    fn tables_within_their_baseline() {
        let table = |entries: &[(&str, u64)]| entries.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        let baseline = table(&[("discover.process_entries", 1), ("configure.route_cache_entries", 2)]);
        assert!(within(
            &table(&[("discover.process_entries", 1), ("configure.route_cache_entries", 0)]),
            &baseline
        ));
        assert!(!within(&table(&[("discover.process_entries", 2)]), &baseline));
        assert!(!within(&table(&[("events.push_entries", 1)]), &baseline));
    }
}
