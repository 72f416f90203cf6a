//! Daemon memory with many traced devices: one daemon, many PyTango device servers (no database)
//! of several devices each, every device called once so the daemon knows it; the daemon's
//! resident memory when idle and with all of them, and what its mappings hold.
//!
//! `benches/python/many_servers.py` makes the servers cheaply: its parent imports tango once and
//! forks every server and one client per server.

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::{Context as _, bail};

use crate::{
    churn::wait_for_spans,
    procs::{self, Proc},
    roundtrip::{self, Daemon, MARKER, Programs, Receiver},
};

/// How long after the first reading with every device the second is taken.
pub const SETTLE: Duration = Duration::from_secs(12);

/// Sizes of the memory benchmark.
#[derive(Clone, Copy, Debug)]
pub struct MemorySizes {
    pub servers: usize,
    pub devices_per_server: usize,
}

/// Resident memory of the daemon at one moment, in KiB, and where it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemorySnapshot {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    /// The eBPF ring buffer (and other BPF maps) mapped into the daemon.
    pub bpf_maps_kib: u64,
    /// Heap and other anonymous memory (allocator arenas, thread stacks).
    pub anonymous_kib: u64,
    /// The daemon's own binary and shared libraries.
    pub files_kib: u64,
}

/// Everything the memory benchmark measured.
#[derive(Clone, Debug)]
pub struct Memory {
    pub sizes: MemorySizes,
    /// Once the daemon was ready, with nothing to trace.
    pub idle: MemorySnapshot,
    /// With every server running and every device called once: 3 s after the last span
    /// arrived, and again [`SETTLE`] later (the daemon hands freed heap back every 10 s).
    pub loaded: MemorySnapshot,
    pub settled: MemorySnapshot,
    /// Devices the servers run, and calls that failed.
    pub devices: usize,
    pub failed: usize,
    /// Seconds the servers took to start and be called.
    pub seconds: f64,
    /// The daemon's tables with every server running (`stage.table` → entries).
    pub tables: BTreeMap<String, u64>,
    /// What the receiver got (one client span and one server span per device call, and each
    /// client's `DeviceProxy` spans).
    pub spans: usize,
    /// Probe records and spans the daemon lost (all causes).
    pub lost: u64,
}

/// The daemon's memory now: `VmRSS`/`VmHWM` and its mappings' resident sizes by kind.
pub fn snapshot(pid: u32) -> Option<MemorySnapshot> {
    let (rss_kib, hwm_kib) = procs::memory_kib(pid)?;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut shot = MemorySnapshot { rss_kib, hwm_kib, ..MemorySnapshot::default() };
    let mut current: Option<&str> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            // A mapping: range, perms, offset, dev, inode, then the name if any.
            current = Some(line.split_whitespace().nth(5).unwrap_or(""));
            continue;
        }
        if first != "Rss:" {
            continue;
        }
        let kib: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        match current.unwrap_or("") {
            name if name.starts_with("anon_inode:bpf") => shot.bpf_maps_kib += kib,
            name if name.starts_with('/') => shot.files_kib += kib,
            _ => shot.anonymous_kib += kib,
        }
    }
    Some(shot)
}

/// The JSON line of `many_servers.py`.
#[derive(serde::Deserialize)]
struct ManyOutput {
    servers: Vec<u32>,
    clients: Vec<u32>,
    devices: usize,
    failed: usize,
}

/// Runs the memory benchmark; `dir` keeps logs.
pub fn run(programs: &Programs, sizes: MemorySizes, dir: &Path) -> anyhow::Result<Memory> {
    anyhow::ensure!(sizes.servers >= 1 && sizes.devices_per_server >= 1, "nothing to run");
    let marker = format!("memory-{}", std::process::id());
    let receiver = Receiver::start_with("memory-receiver", programs, dir, None)?;
    let (daemon, _) =
        Daemon::start_with_args("memory-daemon", programs, dir, (&marker, &receiver), "info", &[])?;
    let daemon_pid = daemon.proc.pid();
    // What start-up leaves behind settles within the first ticks.
    std::thread::sleep(Duration::from_secs(2));
    let idle = snapshot(daemon_pid).context("reading the daemon's memory")?;

    eprintln!(
        "tango-bench: memory: {} servers × {} devices, each device called once",
        sizes.servers, sizes.devices_per_server
    );
    let started = std::time::Instant::now();
    let mut command = roundtrip::python_command(programs, &[(MARKER, marker.clone())]);
    command
        .arg(&programs.many_servers)
        .arg(sizes.servers.to_string())
        .arg(sizes.devices_per_server.to_string());
    let mut servers = Proc::spawn("memory-servers", command, dir)?;
    let timeout = Duration::from_secs(120 + sizes.servers as u64 * 5);
    let output: ManyOutput = procs::wait_for_stdout(&mut servers, timeout, |text| {
        text.lines().last().and_then(|line| serde_json::from_str(line).ok())
    })
    .with_context(|| format!("{}:\n{}", servers.name(), servers.stderr_tail()))?;
    let seconds = started.elapsed().as_secs_f64();
    // Each device call: a client span and a server span; each DeviceProxy: its own span.
    let expected = output.devices * 3;
    let spans = wait_for_spans(&receiver, expected, Duration::from_secs(5), Duration::from_secs(120));
    // Spans of servers still running stay; what start-up and the calls left behind is freed.
    std::thread::sleep(Duration::from_secs(3));
    let stats = daemon.stats(programs)?;
    let loaded = snapshot(daemon_pid).context("reading the daemon's memory")?;
    std::thread::sleep(SETTLE);
    let settled = snapshot(daemon_pid).context("reading the daemon's memory")?;
    eprintln!(
        "tango-bench: memory: {} devices in {} servers ({} clients) after {seconds:.0} s; daemon RSS {} → {} MiB",
        output.devices,
        output.servers.len(),
        output.clients.len(),
        idle.rss_kib / 1024,
        loaded.rss_kib / 1024
    );
    servers.stop(Duration::from_secs(120));
    let totals = daemon.stop()?;
    receiver.finish();
    if output.servers.len() != sizes.servers {
        bail!("{} servers started of {}", output.servers.len(), sizes.servers);
    }
    // The stop line counts what the daemon lost while the servers stopped, too.
    let lost = stats.lost.iter().map(|l| l.total).sum::<u64>().max(totals.map_or(0, |t| t.lost_records));
    Ok(Memory {
        sizes,
        idle,
        loaded,
        settled,
        devices: output.devices,
        failed: output.failed,
        seconds,
        tables: stats.tables,
        spans,
        lost,
    })
}
