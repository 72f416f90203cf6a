//! The memory section of BENCHMARKS.md.

use std::fmt::Write as _;

use super::{mib, thousands};
use crate::memory::{Memory, MemorySnapshot, SETTLE};

/// The daemon's RSS target with a thousand traced devices.
const TARGET_MIB: u64 = 64;

pub(super) fn write(md: &mut String, m: &Memory) -> std::fmt::Result {
    writeln!(md, "## Daemon memory with {} traced devices", thousands(m.devices as f64))?;
    writeln!(md)?;
    writeln!(
        md,
        "One daemon (selecting the benchmark's processes, exporting OTLP/HTTP) while {} PyTango \
         device servers without database run {} devices each; one client process per server \
         calls every device of it once (`read_attribute`), so the daemon knows each device \
         (its name, class and server) and its process. `benches/python/many_servers.py` makes \
         them cheaply: its parent imports tango once and forks every process. Starting and \
         calling them took {:.0} s. Memory is read from `/proc/<pid>/status` (`VmRSS`, `VmHWM`) \
         and `/proc/<pid>/smaps` (resident size per mapping): once the daemon was ready with \
         nothing to trace, 3 s after the last span arrived with every server still running, and \
         {} s later (the daemon hands freed heap back to the kernel every 10 s).",
        m.sizes.servers,
        m.sizes.devices_per_server,
        m.seconds,
        SETTLE.as_secs()
    )?;
    writeln!(md)?;
    let highest_kib = m.loaded.rss_kib.max(m.settled.rss_kib);
    let verdict = if highest_kib <= TARGET_MIB * 1024 { "met" } else { "**not met**" };
    writeln!(
        md,
        "| daemon | ready, nothing traced | {} devices in {} processes | {} s later |",
        thousands(m.devices as f64),
        m.sizes.servers,
        SETTLE.as_secs()
    )?;
    writeln!(md, "| --- | ---: | ---: | ---: |")?;
    let row = |md: &mut String, name: &str, field: fn(&MemorySnapshot) -> u64| {
        writeln!(
            md,
            "| {name} | {} | {} | {} |",
            mib(field(&m.idle)),
            mib(field(&m.loaded)),
            mib(field(&m.settled))
        )
    };
    row(md, &format!("**VmRSS** (target ≤ {TARGET_MIB} MiB with the devices: {verdict})"), |s| s.rss_kib)?;
    row(md, "VmHWM (peak RSS, start-up included)", |s| s.hwm_kib)?;
    row(md, "of RSS: BPF maps mapped (the ring buffer's pages, mapped twice)", |s| s.bpf_maps_kib)?;
    row(md, "of RSS: heap, stacks and other anonymous memory", |s| s.anonymous_kib)?;
    row(md, "of RSS: the binary and shared libraries", |s| s.files_kib)?;
    writeln!(md)?;
    let table = |name: &str| m.tables.get(name).copied().unwrap_or(0);
    writeln!(
        md,
        "What the daemon held then: {} devices in its registry (`devices.device_entries`), {} \
         processes (`discover.process_entries`), {} resources (`convert.resource_entries`); the \
         receiver got {} spans (a `DeviceProxy`, a client and a server span per device call); \
         {} calls failed; the daemon lost {} records or spans.",
        thousands(table("devices.device_entries") as f64),
        thousands(table("discover.process_entries") as f64),
        thousands(table("convert.resource_entries") as f64),
        thousands(m.spans as f64),
        m.failed,
        m.lost
    )?;
    writeln!(md)
}

pub(super) fn write_commands(md: &mut String, m: &Memory) -> std::fmt::Result {
    writeln!(md)?;
    writeln!(
        md,
        "The memory benchmark (the marker in the environment of every server and client; the daemon as above):"
    )?;
    writeln!(md)?;
    writeln!(md, "```sh")?;
    writeln!(md, "otlp-receiver --http 127.0.0.1:0 --grpc 127.0.0.1:0 --quiet")?;
    writeln!(md, "python benches/python/many_servers.py {} {}", m.sizes.servers, m.sizes.devices_per_server)?;
    writeln!(md, "tango-tracer ctl --socket <dir>/ctl.sock stats --json")?;
    writeln!(md, "```")
}
