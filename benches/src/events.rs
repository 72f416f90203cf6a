//! The events row: change events pushed by a PyTango demo server to one subscriber process,
//! untraced and traced in alternating rounds, and the PRODUCER and CONSUMER spans the daemon
//! exported for them.
//!
//! Each run starts a subscriber (`bench_event_sink.py`), waits until it is subscribed, and starts a
//! driver (`bench_event_push.py`) that makes the server push N events: in one `PushBurst(N)`
//! command (the server pushes them in a tight loop), or with N `PushTemperature` commands (one push
//! per command round trip). The subscriber counts what arrives and which pushed values it missed.

use std::{
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use tracer_export::json::SpanJson;

use crate::{
    procs::{self, Proc},
    roundtrip::{self, Config, Daemon, DaemonTotals, MARKER, Programs, Receiver, Server},
};

/// The span of one push, in the server.
pub const PUSH_SPAN: &str = "Tango::ZmqEventSupplier::push_event";
/// The span of one delivery, in a subscriber.
pub const DELIVERY_SPAN: &str = "Tango::ZmqEventConsumer::push_zmq_event";
/// The attribute whose change events are pushed.
pub const ATTRIBUTE: &str = "temperature";
/// Seconds without events after which the subscriber stops waiting for missing ones.
pub const IDLE_S: f64 = 2.0;

/// How the driver makes the server push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// One `PushBurst(N)` command: N pushes in a tight loop in the server.
    Burst,
    /// N `PushTemperature` commands, one push each.
    Commands,
}

impl Workload {
    pub const ALL: [Workload; 2] = [Workload::Burst, Workload::Commands];

    pub fn label(self) -> &'static str {
        match self {
            Workload::Burst => "burst: `PushBurst(N)`, N pushes in a loop",
            Workload::Commands => "one `PushTemperature` command per push",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Workload::Burst => "B",
            Workload::Commands => "C",
        }
    }
}

/// The configurations of this row, in the order of even rounds.
pub const CONFIGS: [Config; 2] = [Config::Untraced, Config::Traced];

/// Sizes of the event benchmark.
#[derive(Clone, Copy, Debug)]
pub struct EventSizes {
    pub rounds: usize,
    /// Pushes of one burst run.
    pub burst: usize,
    /// Pushes (commands) of one command-loop run.
    pub commands: usize,
    pub quiet_budget: Duration,
}

impl EventSizes {
    pub fn pushes(&self, workload: Workload) -> usize {
        match workload {
            Workload::Burst => self.burst,
            Workload::Commands => self.commands,
        }
    }
}

/// One run: N pushes, one subscriber.
#[derive(Clone, Debug)]
pub struct EventSample {
    pub workload: Workload,
    pub config: Config,
    pub round: usize,
    pub pushes: usize,
    /// Pushes per second the server's loop achieved (burst), or the driver's command loop did.
    pub pushed_per_s: f64,
    /// Events per second that reached the subscriber's callback, from the driver's start to the
    /// last event.
    pub delivered_per_s: Option<f64>,
    /// Events the subscriber counted, pushed values it saw skipped, and error events.
    pub received: usize,
    pub missed: usize,
    pub errors: usize,
    /// CPU per push of the server and the daemon over the whole run, and of the subscriber from
    /// its subscription on.
    pub server_cpu_us: Option<f64>,
    pub subscriber_cpu_us: f64,
    pub daemon_cpu_us: Option<f64>,
    /// The daemon's CPU per push without what it spends idle (its timers, measured for a second
    /// before the run and taken off for the run's length), as the device-log section reports it.
    pub daemon_busy_us: Option<f64>,
    pub foreign_cores: Option<f64>,
    pub other_tracer: bool,
    /// Spans the receiver got for this run (traced runs).
    pub spans: Option<RunSpans>,
    /// What the run's daemon reported on exit (traced runs).
    pub daemon_totals: Option<DaemonTotals>,
    /// Wall-clock window of the run (ns since the epoch) and the processes, to find its spans.
    window_ns: (u64, u64),
    server_pid: u32,
    subscriber_pid: u32,
}

/// The event spans of one traced run.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunSpans {
    /// PRODUCER spans of the server.
    pub producer: usize,
    /// CONSUMER spans of the subscriber.
    pub consumer: usize,
    /// Sum of `tango.event.lost` over the subscriber's CONSUMER spans.
    pub lost_attribute: i64,
    /// CONSUMER spans linked to a PRODUCER span (same trace, push as parent).
    pub linked: usize,
    /// Median length of the runs of consecutive event counters among the PRODUCER spans, and of
    /// the gaps between them.
    pub producer_runs: Option<(f64, f64)>,
    /// The same among the CONSUMER spans.
    pub consumer_runs: Option<(f64, f64)>,
}

/// Everything the event benchmark measured.
#[derive(Clone, Debug)]
pub struct Events {
    pub sizes: EventSizes,
    pub samples: Vec<EventSample>,
    pub pytango: String,
    pub server_libtango: Option<String>,
    pub quiet_waited: Duration,
}

impl Events {
    pub fn of(&self, workload: Workload, config: Config) -> impl Iterator<Item = &EventSample> {
        self.samples.iter().filter(move |s| s.workload == workload && s.config == config)
    }
}

/// The subscriber's JSON line.
#[derive(serde::Deserialize)]
struct SinkOutput {
    pytango: String,
    received: usize,
    missed: usize,
    errors: usize,
    last: Option<f64>,
    cpu_s: f64,
}

/// The driver's JSON line.
#[derive(serde::Deserialize)]
struct DriverOutput {
    start: f64,
    end: f64,
    server_seconds: Option<f64>,
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn last_json<T: serde::de::DeserializeOwned>(proc: &Proc) -> anyhow::Result<T> {
    let stdout = proc.stdout();
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .with_context(|| format!("{} printed {stdout:?}, not its JSON result", proc.name()))
}

/// Runs the event benchmark; `dir` keeps logs.
pub fn run(programs: &Programs, sizes: EventSizes, dir: &Path) -> anyhow::Result<Events> {
    anyhow::ensure!(sizes.rounds >= 1 && sizes.burst >= 1 && sizes.commands >= 1, "nothing to run");
    let marker = format!("events-{}", std::process::id());
    let marked = [(MARKER, marker.clone())];
    let spans_file = dir.join("event-spans.jsonl");
    let receiver = Receiver::start_with("event-receiver", programs, dir, Some(&spans_file))?;
    let server = Server::start("event-server", programs, dir, &marked)?;
    let mut result = Events {
        sizes,
        samples: Vec::new(),
        pytango: String::new(),
        server_libtango: procs::libtango_version(server.proc.pid()),
        quiet_waited: Duration::ZERO,
    };
    let mut quiet_budget = sizes.quiet_budget;
    for round in 0..sizes.rounds {
        let mut order = CONFIGS;
        if round % 2 == 1 {
            order.reverse();
        }
        for config in order {
            for workload in Workload::ALL {
                // A fresh daemon for every traced run: its totals on exit are that run's.
                let daemon = if config == Config::Traced {
                    let name = format!("event-daemon-{round}-{}", workload.short());
                    Some(Daemon::start_logging(&name, programs, dir, &marker, &receiver, "info")?.0)
                } else {
                    None
                };
                let run = Run { programs, dir, server: &server, receiver: &receiver, env: &marked };
                let (mut sample, pytango) =
                    run.one(sizes, (round, config, workload), daemon.as_ref(), &mut quiet_budget)?;
                if let Some(daemon) = daemon {
                    sample.daemon_totals = daemon.stop()?;
                }
                eprintln!(
                    "tango-bench: events round {}/{} {:<24} {} {:>6} pushes: {:>8.0} pushed/s {:>8.0} delivered/s, {} received, {} missed",
                    round + 1,
                    sizes.rounds,
                    config.label(),
                    workload.short(),
                    sample.pushes,
                    sample.pushed_per_s,
                    sample.delivered_per_s.unwrap_or(f64::NAN),
                    sample.received,
                    sample.missed,
                );
                result.pytango = pytango;
                result.samples.push(sample);
            }
        }
    }
    result.quiet_waited = sizes.quiet_budget.saturating_sub(quiet_budget);
    drop(server);
    receiver.finish();
    let spans = tracer_export::read_store(&spans_file)
        .with_context(|| format!("reading the spans the receiver kept in {}", spans_file.display()))?;
    for sample in &mut result.samples {
        if sample.config == Config::Traced {
            sample.spans = Some(run_spans(&spans, sample));
        }
    }
    Ok(result)
}

/// What one run needs.
struct Run<'a> {
    programs: &'a Programs,
    dir: &'a Path,
    server: &'a Server,
    receiver: &'a Receiver,
    env: &'a [(&'a str, String)],
}

impl Run<'_> {
    fn one(
        &self,
        sizes: EventSizes,
        (round, config, workload): (usize, Config, Workload),
        daemon: Option<&Daemon>,
        quiet_budget: &mut Duration,
    ) -> anyhow::Result<(EventSample, String)> {
        let pushes = sizes.pushes(workload);
        let name = format!("{round}-{}{}", workload.short(), config.short());
        let server_pid = self.server.proc.pid();
        let daemon_pid = daemon.map(|d| d.proc.pid());
        let mut ours: Vec<u32> = [self.receiver.proc.pid(), server_pid, std::process::id()]
            .into_iter()
            .chain(daemon_pid)
            .collect();
        procs::wait_for_quiet(&ours, roundtrip::QUIET_THRESHOLD, quiet_budget);
        let idle_per_s = daemon_pid.and_then(|pid| {
            let start = (procs::cpu_time(pid)?, Instant::now());
            std::thread::sleep(Duration::from_secs(1));
            Some(procs::cpu_time(pid)?.checked_sub(start.0)?.as_secs_f64() / start.1.elapsed().as_secs_f64())
        });

        let window_start = now_ns();
        // Generous: even traced, a push and its delivery take well under 1 ms.
        let timeout = Duration::from_secs(60) + Duration::from_millis(pushes as u64);
        let mut command = roundtrip::python_command(self.programs, self.env);
        command
            .arg(&self.programs.event_sink)
            .arg(&self.server.url)
            .arg(ATTRIBUTE)
            .arg(pushes.to_string())
            .arg("--idle")
            .arg(IDLE_S.to_string())
            .arg("--timeout")
            .arg(timeout.as_secs().to_string());
        let mut sink = Proc::spawn(&format!("event-sink-{name}"), command, self.dir)?;
        procs::wait_for_stdout(&mut sink, Duration::from_secs(60), |out| {
            out.lines().any(|l| l.trim() == "subscribed").then_some(())
        })?;
        ours.push(sink.pid());

        let cpu_of = |pid: Option<u32>| pid.and_then(procs::cpu_time);
        let started = Instant::now();
        let before = (cpu_of(Some(server_pid)), cpu_of(daemon_pid));
        let machine_before = procs::CpuSnapshot::take(&ours);
        let other_tracer = !procs::others_named(procs::TRACER_COMM, &ours).is_empty();

        let mut command = roundtrip::python_command(self.programs, self.env);
        command.arg(&self.programs.event_driver).arg(&self.server.url).arg(pushes.to_string());
        if workload == Workload::Commands {
            command.arg("--commands");
        }
        let mut driver = Proc::spawn(&format!("event-driver-{name}"), command, self.dir)?;
        let status = driver.wait(timeout)?;
        if !status.success() {
            bail!("{} failed ({status}):\n{}", driver.name(), driver.stderr_tail());
        }
        let status = sink.wait(timeout + Duration::from_secs(10))?;
        if !status.success() {
            bail!("{} failed ({status}):\n{}", sink.name(), sink.stderr_tail());
        }
        let foreign_cores = machine_before
            .zip(procs::CpuSnapshot::take(&ours))
            .and_then(|(before, after)| before.foreign_cores(&after));
        let per_push = |before: Option<Duration>, pid: Option<u32>| -> Option<f64> {
            let used = cpu_of(pid)?.checked_sub(before?)?;
            Some(used.as_secs_f64() * 1e6 / pushes as f64)
        };
        let server_cpu_us = per_push(before.0, Some(server_pid));
        let daemon_cpu_us = per_push(before.1, daemon_pid);
        let idle_us = idle_per_s.map(|idle| idle * started.elapsed().as_secs_f64() * 1e6 / pushes as f64);
        let daemon_busy_us = daemon_cpu_us.zip(idle_us).map(|(cpu, idle)| (cpu - idle).max(0.0));
        let window_end = now_ns();

        let driven: DriverOutput = last_json(&driver)?;
        let sunk: SinkOutput = last_json(&sink)?;
        let pushed_seconds = driven.server_seconds.unwrap_or(driven.end - driven.start);
        let delivered_per_s = sunk
            .last
            .map(|last| last - driven.start)
            .filter(|&seconds| seconds > 0.0 && sunk.received > 0)
            .map(|seconds| sunk.received as f64 / seconds);
        let sample = EventSample {
            workload,
            config,
            round,
            pushes,
            pushed_per_s: pushes as f64 / pushed_seconds.max(1e-9),
            delivered_per_s,
            received: sunk.received,
            missed: sunk.missed,
            errors: sunk.errors,
            server_cpu_us,
            subscriber_cpu_us: sunk.cpu_s * 1e6 / pushes as f64,
            daemon_cpu_us,
            daemon_busy_us,
            foreign_cores,
            other_tracer,
            spans: None,
            daemon_totals: None,
            window_ns: (window_start, window_end),
            server_pid,
            subscriber_pid: sink.pid(),
        };
        Ok((sample, sunk.pytango))
    }
}

fn process_id(span: &SpanJson) -> Option<u32> {
    span.resource.get_i64("tango.process.id").and_then(|p| u32::try_from(p).ok())
}

/// The event spans of one traced run: the server's pushes inside its window, the deliveries of its
/// subscriber (a process of its own).
fn run_spans(spans: &[SpanJson], sample: &EventSample) -> RunSpans {
    let (from, to) = sample.window_ns;
    let producers: Vec<&SpanJson> = spans
        .iter()
        .filter(|s| s.name == PUSH_SPAN && s.kind == "PRODUCER")
        .filter(|s| process_id(s) == Some(sample.server_pid) && (from..=to).contains(&s.start_ns))
        .collect();
    let consumers: Vec<&SpanJson> = spans
        .iter()
        .filter(|s| s.name == DELIVERY_SPAN && s.kind == "CONSUMER")
        .filter(|s| process_id(s) == Some(sample.subscriber_pid))
        .collect();
    let push_ids: std::collections::HashSet<&str> = producers.iter().map(|s| s.span_id.as_str()).collect();
    RunSpans {
        producer: producers.len(),
        consumer: consumers.len(),
        lost_attribute: consumers.iter().filter_map(|s| s.attributes.get_i64("tango.event.lost")).sum(),
        linked: consumers.iter().filter(|s| push_ids.contains(s.parent_span_id.as_str())).count(),
        producer_runs: counter_runs(&producers),
        consumer_runs: counter_runs(&consumers),
    }
}

/// Median length of the runs of consecutive `tango.event.counter` values among `spans`, and of
/// the gaps between them (None without gaps).
fn counter_runs(spans: &[&SpanJson]) -> Option<(f64, f64)> {
    let mut counters: Vec<i64> =
        spans.iter().filter_map(|s| s.attributes.get_i64("tango.event.counter")).collect();
    counters.sort_unstable();
    counters.dedup();
    let (mut runs, mut gaps) = (Vec::new(), Vec::new());
    let mut length = 0.0;
    let mut previous: Option<i64> = None;
    for counter in &counters {
        if let Some(previous) = previous
            && *counter != previous + 1
        {
            runs.push(length);
            gaps.push((counter - previous - 1) as f64);
            length = 0.0;
        }
        previous = Some(*counter);
        length += 1.0;
    }
    runs.push(length);
    let median = crate::report::median;
    (!gaps.is_empty()).then(|| (median(&runs), median(&gaps)))
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

    fn span(counter: i64) -> SpanJson {
        let json = format!(
            r#"{{"resource": {{}}, "scope": {{"name": "t", "version": ""}}, "name": "{PUSH_SPAN}",
                "kind": "PRODUCER", "trace_id": "", "span_id": "", "parent_span_id": "",
                "trace_state": "", "start_ns": 0, "end_ns": 0, "duration_us": 0.0,
                "attributes": {{"tango.event.counter": {counter}}}, "events": [], "links": [],
                "status": {{"code": 0, "message": ""}}}}"#
        );
        serde_json::from_str(&json).expect("a span")
    }

    #[test]
    fn runs_of_consecutive_counters() {
        let spans: Vec<SpanJson> = [1, 2, 3, 10, 11, 12, 13, 20].into_iter().map(span).collect();
        let refs: Vec<&SpanJson> = spans.iter().collect();
        // Runs 3, 4, 1; gaps 6, 6.
        assert_eq!(counter_runs(&refs), Some((3.0, 6.0)));
        assert_eq!(counter_runs(&refs[..3]), None);
    }
}
