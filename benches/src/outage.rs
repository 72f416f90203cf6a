//! A backend outage under steady load: one daemon exports to an OTLP receiver while a client
//! reads at a fixed rate; the receiver is stopped for a while and started again on the same
//! port; at the end it is stopped once more and the daemon is sent SIGTERM with the backend down.
//!
//! The daemon's own counters (`tango-tracer ctl stats --json`, polled) say what it held, delivered
//! and dropped and when; the receivers' logs say what arrived.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tango_tracer::run::{ctl::ExportView, losses::Loss};

use crate::{
    procs::{self, Proc},
    roundtrip::{self, Daemon, DaemonTotals, MARKER, Programs, Receiver, Server},
};

/// Spans of one read call (the client's and the server's), and of the client's `DeviceProxy`.
pub const SPANS_PER_CALL: u64 = 2;
pub const SPANS_PER_CLIENT: u64 = 1;

/// Sizes of the outage benchmark.
#[derive(Clone, Copy, Debug)]
pub struct OutageSizes {
    /// Read calls per second of the client.
    pub rate: u32,
    /// Load with the backend up before the outage.
    pub steady: Duration,
    /// How long the backend is down.
    pub outage: Duration,
    /// Longest wait for the outage's backlog once the backend is back.
    pub drain_timeout: Duration,
    /// Load after the backlog is delivered, before the second outage.
    pub after: Duration,
    /// Load with the backend down before SIGTERM.
    pub final_outage: Duration,
    /// `--export-memory` of the daemon, in MiB.
    pub budget_mib: u64,
}

/// The daemon's export and memory at one moment.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub label: &'static str,
    /// Seconds since the backend went down (negative before).
    pub at_s: f64,
    pub export: ExportView,
    pub rss_kib: u64,
}

/// Everything the outage benchmark measured.
#[derive(Clone, Debug)]
pub struct Outage {
    pub sizes: OutageSizes,
    /// Calls the client made, over how long, and how late it ever fell behind its schedule.
    pub calls: u64,
    pub client_seconds: f64,
    pub behind_max_ms: f64,
    /// Spans the calls and the client's proxy should give.
    pub expected: u64,
    /// Spans each receiver got: before the outage, and after it until the second outage.
    pub received: [usize; 2],
    pub checkpoints: Vec<Checkpoint>,
    /// After the backend came back: until the first delivery, and until the backlog held at the
    /// restart was settled (delivered or dropped).
    pub first_delivery: Option<Duration>,
    pub drained: Option<Duration>,
    /// The most bytes held (the daemon's own `peak_bytes_held`) and the most spans held seen
    /// (polled twice a second), and the daemon's peak RSS.
    pub peak_bytes_held: u64,
    pub peak_held: u64,
    pub hwm_kib: u64,
    /// Losses before the second outage (`ctl stats`).
    pub lost_after_recovery: Vec<Loss>,
    /// SIGTERM with the backend down: how long until the daemon exited, and its stop line.
    pub sigterm: Duration,
    pub totals: Option<DaemonTotals>,
    pub daemon_cpu: Duration,
}

impl Outage {
    pub fn checkpoint(&self, label: &str) -> Option<&Checkpoint> {
        self.checkpoints.iter().find(|c| c.label == label)
    }
}

/// Checkpoint labels.
pub const BEFORE: &str = "backend stopped";
pub const RESTARTED: &str = "backend started again";
pub const DRAINED: &str = "outage's backlog settled";
pub const RECOVERED: &str = "backend stopped again";
pub const AT_SIGTERM: &str = "SIGTERM sent";

/// The paced client's JSON line.
#[derive(serde::Deserialize)]
struct ClientOutput {
    calls: u64,
    seconds: f64,
    behind_max_ms: f64,
}

/// Polls the daemon and keeps the peaks.
struct Watch<'a> {
    programs: &'a Programs,
    daemon: &'a Daemon,
    down_at: Option<Instant>,
    peak_bytes_held: u64,
    peak_held: u64,
    checkpoints: Vec<Checkpoint>,
}

impl Watch<'_> {
    fn export(&mut self) -> anyhow::Result<ExportView> {
        let stats = self.daemon.stats(self.programs)?;
        let export = stats.export.into_iter().next().context("the daemon has no export destination")?;
        self.peak_bytes_held = self.peak_bytes_held.max(export.bytes_held).max(export.peak_bytes_held);
        self.peak_held = self.peak_held.max(export.held);
        Ok(export)
    }

    /// Polls for `duration`, twice a second.
    fn poll_for(&mut self, duration: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(500).min(end.saturating_duration_since(Instant::now())));
            self.export()?;
            if self.daemon_exited() {
                bail!("tango-tracer exited during the outage benchmark");
            }
        }
        Ok(())
    }

    fn daemon_exited(&self) -> bool {
        procs::memory_kib(self.daemon.proc.pid()).is_none()
    }

    fn checkpoint(&mut self, label: &'static str) -> anyhow::Result<ExportView> {
        let export = self.export()?;
        let at_s = match self.down_at {
            Some(down) => down.elapsed().as_secs_f64(),
            None => 0.0,
        };
        let rss_kib = procs::memory_kib(self.daemon.proc.pid()).map_or(0, |(rss, _)| rss);
        self.checkpoints.push(Checkpoint { label, at_s, export: export.clone(), rss_kib });
        Ok(export)
    }
}

fn settled(export: &ExportView) -> u64 {
    export.delivered + export.dropped
}

/// Runs the outage benchmark; `dir` keeps logs.
pub fn run(programs: &Programs, sizes: OutageSizes, dir: &Path) -> anyhow::Result<Outage> {
    anyhow::ensure!(sizes.rate >= 1, "nothing to run");
    let marker = format!("outage-{}", std::process::id());
    let marked = [(MARKER, marker.clone())];
    let receiver = Receiver::start("outage-receiver-1", programs, dir)?;
    let address = receiver.http_address().to_string();
    let budget = format!("{}MiB", sizes.budget_mib);
    let (daemon, _) = Daemon::start_with_args(
        "outage-daemon",
        programs,
        dir,
        (&marker, &receiver),
        "info",
        &["--export-memory", &budget],
    )?;
    let daemon_pid = daemon.proc.pid();
    let server = Server::start("outage-server", programs, dir, &marked)?;
    let mut command = roundtrip::python_command(programs, &marked);
    command.arg(&programs.paced_client).arg(&server.url).arg(sizes.rate.to_string());
    let mut client = Proc::spawn("outage-client", command, dir)?;
    procs::wait_for_stdout(&mut client, Duration::from_secs(60), |out| out.contains("ready").then_some(()))?;

    let mut watch = Watch {
        programs,
        daemon: &daemon,
        down_at: None,
        peak_bytes_held: 0,
        peak_held: 0,
        checkpoints: Vec::new(),
    };
    eprintln!(
        "tango-bench: outage: {} calls/s; backend down for {:.0} s; export memory {budget}",
        sizes.rate,
        sizes.outage.as_secs_f64()
    );
    watch.poll_for(sizes.steady)?;
    let first = receiver.finish();
    watch.down_at = Some(Instant::now());
    watch.checkpoint(BEFORE)?;
    watch.poll_for(sizes.outage)?;

    let receiver = Receiver::start_on("outage-receiver-2", programs, dir, &address, None)?;
    let restarted = Instant::now();
    let at_restart = watch.checkpoint(RESTARTED)?;
    let (mut first_delivery, mut drained) = (None, None);
    while restarted.elapsed() < sizes.drain_timeout {
        let export = watch.export()?;
        if first_delivery.is_none() && export.delivered > at_restart.delivered {
            first_delivery = Some(restarted.elapsed());
        }
        // Batches leave oldest first: once as many spans settled as were held at the restart,
        // the outage's backlog is gone.
        if settled(&export).saturating_sub(settled(&at_restart)) >= at_restart.held {
            drained = Some(restarted.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    watch.checkpoint(DRAINED)?;
    eprintln!(
        "tango-bench: outage: delivery resumed after {:.1} s, backlog of {} spans settled after {}",
        first_delivery.map_or(f64::NAN, |d| d.as_secs_f64()),
        at_restart.held,
        drained.map_or("(not within the wait)".to_string(), |d| format!("{:.1} s", d.as_secs_f64()))
    );
    watch.poll_for(sizes.after)?;
    let lost_after_recovery = daemon.stats(programs)?.lost;

    // A second outage, ended by SIGTERM: what the shutdown does with the backend down.
    let second = receiver.finish();
    watch.checkpoint(RECOVERED)?;
    watch.poll_for(sizes.final_outage)?;
    client.stop(Duration::from_secs(10));
    let output: ClientOutput = {
        let stdout = client.stdout();
        let line = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line)
            .with_context(|| format!("outage-client printed {stdout:?}, not its JSON result"))?
    };
    // The spans of the last calls reach the exporter within the export interval.
    std::thread::sleep(Duration::from_millis(1500));
    watch.checkpoint(AT_SIGTERM)?;
    let hwm_kib = procs::memory_kib(daemon_pid).map_or(0, |(_, hwm)| hwm);
    let daemon_cpu = procs::cpu_time(daemon_pid).unwrap_or_default();
    let (peak_bytes_held, peak_held, checkpoints) =
        (watch.peak_bytes_held, watch.peak_held, watch.checkpoints);
    let (totals, sigterm) = daemon.stop_timed()?;
    drop(server);
    eprintln!("tango-bench: outage: SIGTERM with the backend down took {:.2} s", sigterm.as_secs_f64());
    Ok(Outage {
        sizes,
        calls: output.calls,
        client_seconds: output.seconds,
        behind_max_ms: output.behind_max_ms,
        expected: output.calls * SPANS_PER_CALL + SPANS_PER_CLIENT,
        received: [first.spans(), second.spans()],
        checkpoints,
        first_delivery,
        drained,
        peak_bytes_held,
        peak_held,
        hwm_kib,
        lost_after_recovery,
        sigterm,
        totals,
        daemon_cpu,
    })
}
