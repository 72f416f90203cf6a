//! The device-logs section of BENCHMARKS.md.

use std::fmt::Write as _;

use super::{median, min_max, opt, paired_ratios_in, ratio_cells, thousands};
use crate::{
    logs::{self, LogSample, Logs, Workload},
    roundtrip::Config,
};

/// The daemon's CPU budget per device log record, µs.
pub const DAEMON_CPU_TARGET_US: f64 = 3.0;

pub(super) fn write(md: &mut String, l: &Logs) -> std::fmt::Result {
    writeln!(md, "## Device logs: messages untraced and traced")?;
    writeln!(md)?;
    writeln!(
        md,
        "A PyTango {} device without database{} (`tests/python/log_server.py`, its logging level \
         raised to DEBUG) logs INFO messages through `self.info_stream`: a **burst** of {} in a \
         tight loop (`LogBurst`), and {} **paced** at {} per second (`LogPaced`). {} rounds \
         alternate the order of the configurations; untraced runs have no daemon, traced ones a \
         fresh daemon per run whose log records (the uprobe on \
         `log4tango::Logger::log_unconditionally`) go to an OTLP receiver over OTLP/HTTP. \
         *Logged/s* is messages over the time the device's loop took; CPU per message is the \
         kernel's run time of all threads (`schedstat`) of the device's process and of the \
         daemon over the run (the daemon's until it had released every record of the run), \
         divided by the messages; medians over the rounds, with the range of single runs. *Busy* \
         leaves out what the daemon spends with nothing to do (its timers, and exporting its \
         spans), measured for a second before each traced run and subtracted for the run's length.",
        l.pytango,
        l.server_libtango.as_deref().map(|v| format!(" (cppTango {v})")).unwrap_or_default(),
        thousands(l.sizes.burst as f64),
        thousands(l.sizes.paced as f64),
        thousands(l.sizes.rate as f64),
        l.sizes.rounds,
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "| workload | configuration | logged/s (median) | ratio to untraced | per-round ratio min–max | device CPU per message | daemon CPU per record | of it, busy (target ≤ {DAEMON_CPU_TARGET_US} µs) | seen / logged | delivered | lost |"
    )?;
    writeln!(md, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")?;
    let key = |s: &LogSample| (s.round, s.config);
    for workload in Workload::ALL {
        let of_workload: Vec<LogSample> =
            l.samples.iter().filter(|s| s.workload == workload).cloned().collect();
        let rate = |config: Config| {
            let values: Vec<f64> = l.of(workload, config).map(|s| s.logged_per_s).collect();
            median(&values)
        };
        let base = rate(Config::Untraced);
        for config in logs::CONFIGS {
            let samples: Vec<&LogSample> = l.of(workload, config).collect();
            if samples.is_empty() {
                continue;
            }
            let ratios = paired_ratios_in(&of_workload, config, key, |s| Some(s.logged_per_s));
            let (ratio, spread) = ratio_cells(config, rate(config), base, &ratios);
            let cpu = |f: &dyn Fn(&LogSample) -> Option<f64>| {
                let values: Vec<f64> = samples.iter().filter_map(|s| f(s)).collect();
                (!values.is_empty()).then(|| median(&values))
            };
            let cell = |f: &dyn Fn(&LogSample) -> Option<f64>| match cpu(f) {
                Some(us) => {
                    let values: Vec<f64> = samples.iter().filter_map(|s| f(s)).collect();
                    let (lo, hi) = min_max(&values);
                    format!("{us:.2} µs ({lo:.2}–{hi:.2})")
                }
                None => "–".to_string(),
            };
            let (daemon_cpu, daemon_busy) = (cell(&|s| s.daemon_cpu_us), cell(&|s| s.daemon_busy_us));
            let logged: usize = samples.iter().map(|s| s.messages).sum();
            let (seen, delivered, lost) = if config == Config::Traced {
                let seen: u64 = samples.iter().filter_map(|s| s.seen).sum();
                let delivered: u64 =
                    samples.iter().filter_map(|s| s.daemon_totals.as_ref()?.logs.map(|t| t.delivered)).sum();
                let lost: u64 =
                    samples.iter().filter_map(|s| s.daemon_totals.as_ref().map(|t| t.lost_records)).sum();
                (
                    format!("{} / {}", thousands(seen as f64), thousands(logged as f64)),
                    thousands(delivered as f64),
                    thousands(lost as f64),
                )
            } else {
                ("–".into(), "–".into(), "–".into())
            };
            writeln!(
                md,
                "| {} | {} | {} | {ratio} | {spread} | {} µs | {daemon_cpu} | {daemon_busy} | {seen} | {delivered} | {lost} |",
                match workload {
                    Workload::Burst => format!("burst of {}", thousands(l.sizes.burst as f64)),
                    Workload::Paced =>
                        format!("{} at {}/s", thousands(l.sizes.paced as f64), thousands(l.sizes.rate as f64)),
                },
                config.label(),
                thousands(rate(config)),
                opt(cpu(&|s| s.server_cpu_us), 2),
            )?;
        }
    }
    writeln!(md)?;
    writeln!(
        md,
        "*Seen* is the daemon's count of log records (`logs.messages`, which also counts the few \
         messages of the admin device's own logger); *delivered* what its OTLP exporter delivered; \
         *lost* the probe records the kernel could not put into the ring buffer (all causes, the \
         `probe records lost` of the daemon's stop line)."
    )?;
    writeln!(md)
}

pub(super) fn write_commands(md: &mut String, l: &Logs) -> std::fmt::Result {
    writeln!(md)?;
    writeln!(md, "The device-log benchmark (the marker in the environment of both Python processes):")?;
    writeln!(md)?;
    writeln!(md, "```sh")?;
    writeln!(md, "otlp-receiver --http 127.0.0.1:0 --grpc 127.0.0.1:0 --quiet")?;
    writeln!(md, "python tests/python/log_server.py logbench <port> {}", logs::DEVICE)?;
    let url = format!("'tango://127.0.0.1:<port>/{}#dbase=no'", logs::DEVICE);
    writeln!(md, "python tests/python/bench_log_loop.py {url} {}                # burst", l.sizes.burst)?;
    writeln!(
        md,
        "python tests/python/bench_log_loop.py {url} {} --rate {}    # paced",
        l.sizes.paced, l.sizes.rate
    )?;
    writeln!(md, "```")
}
