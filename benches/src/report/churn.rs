//! The churn section of BENCHMARKS.md.

use std::fmt::Write as _;

use super::{lost_cell, mib, thousands, without_ports};
use crate::{
    churn::{Churn, TABLES_WAIT},
    roundtrip::DEVICE,
};

pub(super) fn write(md: &mut String, c: &Churn) -> std::fmt::Result {
    writeln!(md, "## Churn: short-lived clients and server restarts under one daemon")?;
    writeln!(md)?;
    writeln!(
        md,
        "One daemon (selecting the benchmark's processes, exporting OTLP/HTTP to a receiver that \
         also writes every span to a file) traces {} short-lived PyTango client processes — {} to \
         warm up, then {} with at most {} running at a time — while, side by side, a demo server \
         is started {} times on a fresh port, called by one client of its own and stopped \
         (SIGTERM). `tests/python/churn.py` makes them cheaply: its parent imports tango once and \
         forks every process, which starts its own ORB, builds a `DeviceProxy`, runs `Increment` \
         and exits. Each client should give three spans, as cppTango 10.3.3 emits natively: its \
         `DeviceProxy` (INTERNAL), its `command_inout` (CLIENT) and the server's \
         `command_inout_4` (SERVER), child of the call. The clients and restarts took {:.1} s \
         ({:.0} processes/s); the spans are counted in the receiver's file after the daemon \
         stopped.",
        thousands(c.clients as f64),
        c.sizes.warmup_clients,
        thousands(c.sizes.clients as f64),
        c.sizes.parallel,
        c.servers,
        c.seconds,
        (c.clients.saturating_sub(c.sizes.warmup_clients) + c.servers) as f64 / c.seconds.max(1e-9),
    )?;
    writeln!(md)?;
    writeln!(md, "| span | kind | expected | received |")?;
    writeln!(md, "| --- | --- | ---: | ---: |")?;
    for kind in &c.spans.kinds {
        let mark = if kind.received == kind.expected { "" } else { " ✗" };
        writeln!(
            md,
            "| `{}` | {} | {} | {}{mark} |",
            kind.name,
            kind.kind,
            thousands(kind.expected as f64),
            thousands(kind.received as f64)
        )?;
    }
    for ((name, kind), count) in &c.spans.other {
        writeln!(
            md,
            "| `{name}`, not of a churned client's call | {kind} | 0 | {} ✗ |",
            thousands(*count as f64)
        )?;
    }
    let (expected, received) = (c.spans.expected(), c.spans.received);
    writeln!(
        md,
        "| **all** | | **{}** | **{}**{} |",
        thousands(expected as f64),
        thousands(received as f64),
        if expected == received { "" } else { " ✗" }
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "Clients with exactly their three spans: {} of {}; restarted servers that served their \
         client (one SERVER span each): {} of {}; spans received twice: {}; failed calls: {}.",
        thousands(c.spans.clients_complete as f64),
        thousands(c.clients as f64),
        c.spans.servers_complete,
        c.servers,
        c.spans.duplicates,
        c.failed,
    )?;
    writeln!(md)?;
    let growth = c.rss_end_kib as f64 - c.rss_warm_kib as f64;
    writeln!(md, "| daemon | value |")?;
    writeln!(md, "| --- | ---: |")?;
    writeln!(
        md,
        "| VmRSS after the warm-up ({} clients) | {} |",
        c.sizes.warmup_clients,
        mib(c.rss_warm_kib)
    )?;
    writeln!(
        md,
        "| VmRSS at the end (tables read) | {} ({:+.1} MiB) |",
        mib(c.rss_end_kib),
        growth / 1024.0
    )?;
    writeln!(md, "| VmHWM (peak RSS) at the end | {} |", mib(c.hwm_end_kib))?;
    let processes = (c.clients.saturating_sub(c.sizes.warmup_clients) + c.servers).max(1);
    writeln!(
        md,
        "| CPU time over the churn (warm-up's end to the last span) | {:.2} s ({:.0} µs per process) |",
        c.daemon_cpu_churn.as_secs_f64(),
        c.daemon_cpu_churn.as_secs_f64() * 1e6 / processes as f64
    )?;
    writeln!(md, "| CPU time, whole life until the end | {:.2} s |", c.daemon_cpu_total.as_secs_f64())?;
    writeln!(md, "| lost (`ctl stats`, at the end) | {} |", lost_cell(&c.lost))?;
    for e in &c.export {
        writeln!(
            md,
            "| export (`ctl stats`, at the end) | {} submitted, {} delivered, {} dropped, {} held |",
            thousands(e.submitted as f64),
            thousands(e.delivered as f64),
            thousands(e.dropped as f64),
            thousands(e.held as f64)
        )?;
    }
    if let Some(totals) = &c.totals {
        writeln!(
            md,
            "| stop line | {} GIOP messages, {} spans, {} unparsable, {} probe records lost{}; lost: {} |",
            thousands(totals.messages as f64),
            thousands(totals.spans as f64),
            thousands(totals.unparsable as f64),
            thousands(totals.lost_records as f64),
            totals.export.map_or(String::new(), |e| format!(
                "; export: {} submitted, {} delivered, {} dropped, {} held",
                thousands(e.submitted as f64),
                thousands(e.delivered as f64),
                thousands(e.dropped as f64),
                thousands(e.held as f64)
            )),
            totals.lost.as_deref().map_or_else(|| "–".to_string(), without_ports),
        )?;
    }
    writeln!(md)?;
    let grown = c.tables.values().filter(|t| t.grew()).count();
    writeln!(
        md,
        "The daemon's state tables (`ctl stats --json`, key `tables`): at the baseline (the \
         server running and having served one call of a client the daemon does not select, so \
         the server's own entries are in it), after the warm-up, and at the end. The daemon \
         keeps what it knows of an exited process a while, for spans still in flight, so the \
         benchmark reads them every second after the last span arrived until none is larger \
         than at the baseline, for at most {:.0} s: {}.",
        TABLES_WAIT.as_secs_f64(),
        match c.tables_back {
            Some(after) =>
                format!("no table was larger than at the baseline after {:.0} s", after.as_secs_f64()),
            None => format!("**{grown} still larger than at the baseline** (marked ✗)"),
        }
    )?;
    writeln!(md)?;
    writeln!(md, "| table | baseline | after the warm-up | at the end |")?;
    writeln!(md, "| --- | ---: | ---: | ---: |")?;
    let cell = |v: Option<u64>| v.map_or("–".to_string(), |v| thousands(v as f64));
    for (name, t) in &c.tables {
        let mark = if t.grew() { " ✗" } else { "" };
        writeln!(
            md,
            "| `{name}` | {} | {} | {}{mark} |",
            cell(t.baseline),
            cell(t.after_warmup),
            cell(t.end)
        )?;
    }
    writeln!(md)
}

/// The commands the churn benchmark runs, for the Commands section.
pub(super) fn write_commands(md: &mut String, c: &Churn) -> std::fmt::Result {
    writeln!(md)?;
    writeln!(
        md,
        "The churn benchmark (the marker in the environment of the server and every churned process; \
         the daemon as above):"
    )?;
    writeln!(md)?;
    writeln!(md, "```sh")?;
    writeln!(
        md,
        "otlp-receiver --http 127.0.0.1:0 --grpc 127.0.0.1:0 --quiet --out <dir>/churn-spans.jsonl"
    )?;
    writeln!(md, "python tests/python/demo_server.py <instance> <port> {}", DEVICE)?;
    let url = format!("'tango://127.0.0.1:<port>/{}#dbase=no'", DEVICE);
    writeln!(
        md,
        "python tests/python/churn.py clients {url} {} {}   # warm-up",
        c.sizes.warmup_clients, c.sizes.parallel
    )?;
    writeln!(
        md,
        "python tests/python/churn.py clients {url} {} {} & python tests/python/churn.py restarts {}",
        c.sizes.clients, c.sizes.parallel, c.sizes.restarts
    )?;
    writeln!(md, "tango-tracer ctl --socket <dir>/ctl.sock stats --json")?;
    writeln!(md, "```")?;
    Ok(())
}
