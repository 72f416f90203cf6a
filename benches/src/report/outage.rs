//! The backend-outage section of BENCHMARKS.md.

use std::fmt::Write as _;

use super::{lost_cell, mib, opt, thousands, without_ports};
use crate::{
    outage::{self, Outage},
    roundtrip::DEVICE,
};

fn seconds(value: Option<std::time::Duration>) -> String {
    value.map_or_else(|| "not within the wait".to_string(), |d| format!("{:.1} s", d.as_secs_f64()))
}

pub(super) fn write(md: &mut String, o: &Outage) -> std::fmt::Result {
    let s = &o.sizes;
    writeln!(md, "## Backend outage: the receiver down under steady load")?;
    writeln!(md)?;
    writeln!(
        md,
        "One daemon started with `--export-memory {}MiB` exports OTLP/HTTP to a receiver while \
         one PyTango client (`benches/python/paced_read_loop.py`) reads `temperature` from a \
         demo server at {} calls/s (it made {} calls in {:.1} s, {:.0} calls/s, and started a \
         call at worst {:.0} ms after its time). After {:.0} s the receiver is stopped (SIGTERM); \
         {:.0} s later a new one starts on the same port. Once the outage's backlog is settled \
         and {:.0} s more, the receiver is stopped again for good; {:.0} s later the client stops \
         and the daemon gets SIGTERM with the backend down and `--shutdown-timeout` at its \
         default (5 s). The daemon's export counters come from `tango-tracer ctl stats --json`, \
         polled twice a second; every call gives {} spans (client and server), the client's \
         `DeviceProxy` one more.",
        s.budget_mib,
        thousands(f64::from(s.rate)),
        thousands(o.calls as f64),
        o.client_seconds,
        o.calls as f64 / o.client_seconds.max(1e-9),
        o.behind_max_ms,
        s.steady.as_secs_f64(),
        s.outage.as_secs_f64(),
        s.after.as_secs_f64(),
        s.final_outage.as_secs_f64(),
        outage::SPANS_PER_CALL,
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "| moment | s after the backend went down | submitted | delivered | dropped | held | bytes held | daemon VmRSS |"
    )?;
    writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")?;
    for c in &o.checkpoints {
        writeln!(
            md,
            "| {} | {:.1} | {} | {} | {} | {} | {} | {} |",
            c.label,
            c.at_s,
            thousands(c.export.submitted as f64),
            thousands(c.export.delivered as f64),
            thousands(c.export.dropped as f64),
            thousands(c.export.held as f64),
            mib(c.export.bytes_held / 1024),
            mib(c.rss_kib),
        )?;
    }
    writeln!(md)?;
    let before = o.checkpoint(outage::BEFORE);
    let restarted = o.checkpoint(outage::RESTARTED);
    let received: usize = o.received.iter().sum();
    writeln!(md, "| measure | value |")?;
    writeln!(md, "| --- | ---: |")?;
    writeln!(
        md,
        "| spans expected (calls × {} + 1) | {} |",
        outage::SPANS_PER_CALL,
        thousands(o.expected as f64)
    )?;
    writeln!(
        md,
        "| spans received (first receiver + second) | {} ({} + {}) |",
        thousands(received as f64),
        thousands(o.received[0] as f64),
        thousands(o.received[1] as f64)
    )?;
    if let (Some(before), Some(restarted)) = (before, restarted) {
        let submitted = restarted.export.submitted.saturating_sub(before.export.submitted);
        let dropped = restarted.export.dropped.saturating_sub(before.export.dropped);
        writeln!(
            md,
            "| spans submitted while the backend was down; dropped meanwhile | {}; {} |",
            thousands(submitted as f64),
            thousands(dropped as f64)
        )?;
        let per_span = (restarted.export.held > 0)
            .then(|| restarted.export.bytes_held as f64 / restarted.export.held as f64);
        writeln!(
            md,
            "| held when the backend came back | {} spans, {} ({} bytes per span) |",
            thousands(restarted.export.held as f64),
            mib(restarted.export.bytes_held / 1024),
            opt(per_span, 0)
        )?;
    }
    writeln!(
        md,
        "| export memory held at most (`peak_bytes_held`; spans held at most, polled) | {} of {} MiB ({} spans) |",
        mib(o.peak_bytes_held / 1024),
        s.budget_mib,
        thousands(o.peak_held as f64)
    )?;
    writeln!(md, "| daemon peak RSS (VmHWM) | {} |", mib(o.hwm_kib))?;
    writeln!(md, "| first delivery after the backend came back | {} |", seconds(o.first_delivery))?;
    let drain_rate = restarted
        .zip(o.drained)
        .and_then(|(r, d)| (d.as_secs_f64() > 0.0).then(|| r.export.held as f64 / d.as_secs_f64()));
    writeln!(
        md,
        "| backlog held at the restart settled (delivered or dropped) after | {}{} |",
        seconds(o.drained),
        drain_rate.map_or(String::new(), |r| format!(" ({} spans/s on top of the load)", thousands(r)))
    )?;
    writeln!(md, "| lost before the second outage (`ctl stats`) | {} |", lost_cell(&o.lost_after_recovery))?;
    writeln!(
        md,
        "| SIGTERM with the backend down, until the daemon exited | **{:.2} s** |",
        o.sigterm.as_secs_f64()
    )?;
    if let Some(totals) = &o.totals {
        if let Some(e) = totals.export {
            writeln!(
                md,
                "| stop line: export | {} submitted, {} delivered, {} dropped, {} held |",
                thousands(e.submitted as f64),
                thousands(e.delivered as f64),
                thousands(e.dropped as f64),
                thousands(e.held as f64)
            )?;
        }
        writeln!(
            md,
            "| stop line: lost | {} |",
            totals.lost.as_deref().map_or_else(|| "–".to_string(), without_ports)
        )?;
        writeln!(md, "| stop line: probe records lost | {} |", thousands(totals.lost_records as f64))?;
    }
    writeln!(md, "| daemon CPU time, whole run | {:.2} s |", o.daemon_cpu.as_secs_f64())?;
    writeln!(md)?;
    write_reading(md, o, received)?;
    writeln!(md)
}

/// What the figures say, in words computed from them.
fn write_reading(md: &mut String, o: &Outage, received: usize) -> std::fmt::Result {
    let budget_bytes = o.sizes.budget_mib * 1024 * 1024;
    let overflowed = o
        .checkpoint(outage::RESTARTED)
        .zip(o.checkpoint(outage::BEFORE))
        .is_some_and(|(r, b)| r.export.dropped > b.export.dropped);
    if let Some(r) = o.checkpoint(outage::RESTARTED).filter(|r| r.export.held > 0) {
        let per_span = r.export.bytes_held as f64 / r.export.held as f64;
        let spans_per_s = f64::from(o.sizes.rate) * outage::SPANS_PER_CALL as f64;
        writeln!(
            md,
            "- At {} calls/s the daemon submits {} spans/s, each counted as {:.0} bytes of the \
             budget: {} MiB hold about {:.0} s of outage.",
            thousands(f64::from(o.sizes.rate)),
            thousands(spans_per_s),
            per_span,
            o.sizes.budget_mib,
            budget_bytes as f64 / (per_span * spans_per_s)
        )?;
    }
    writeln!(
        md,
        "- The outage {} the {} MiB budget{}.",
        if overflowed { "overflowed" } else { "fit in" },
        o.sizes.budget_mib,
        if overflowed {
            format!(
                ": the backlog stayed at or under it ({} at most) and the oldest spans were \
                 dropped and counted to make room for new ones",
                mib(o.peak_bytes_held / 1024)
            )
        } else {
            format!(" ({} held at most of {})", mib(o.peak_bytes_held / 1024), mib(budget_bytes / 1024))
        }
    )?;
    if let Some(e) = o.totals.as_ref().and_then(|t| t.export) {
        let accounted = e.delivered + e.dropped + e.held;
        writeln!(
            md,
            "- Every span is accounted for: expected {}, submitted {}, of which delivered {} + \
             dropped {} + held {} = {}{}; the receivers got {}{}.",
            thousands(o.expected as f64),
            thousands(e.submitted as f64),
            thousands(e.delivered as f64),
            thousands(e.dropped as f64),
            thousands(e.held as f64),
            thousands(accounted as f64),
            if accounted == e.submitted && e.submitted == o.expected { "" } else { " ✗" },
            thousands(received as f64),
            if received as u64 == e.delivered {
                ""
            } else {
                " ✗ (not what the daemon counts as delivered)"
            },
        )?;
    }
    Ok(())
}

/// The commands the outage benchmark runs, for the Commands section.
pub(super) fn write_commands(md: &mut String, o: &Outage) -> std::fmt::Result {
    writeln!(md)?;
    writeln!(md, "The outage benchmark (the marker in the environment of the server and the client):")?;
    writeln!(md)?;
    writeln!(md, "```sh")?;
    writeln!(md, "otlp-receiver --http 127.0.0.1:0 --grpc 127.0.0.1:0 --quiet       # stopped, then again:")?;
    writeln!(md, "otlp-receiver --http 127.0.0.1:<same port> --grpc 127.0.0.1:0 --quiet")?;
    writeln!(
        md,
        "tango-tracer run … --export-memory {}MiB                          # otherwise as above",
        o.sizes.budget_mib
    )?;
    writeln!(md, "python tests/python/demo_server.py <instance> <port> {DEVICE}")?;
    writeln!(
        md,
        "python benches/python/paced_read_loop.py 'tango://127.0.0.1:<port>/{DEVICE}#dbase=no' {}",
        o.sizes.rate
    )?;
    writeln!(md, "tango-tracer ctl --socket <dir>/ctl.sock stats --json             # twice a second")?;
    writeln!(md, "```")
}
