//! The user-code section of BENCHMARKS.md.

use std::fmt::Write as _;

use super::median;
use crate::usercode::{UserCodeCost, UserCodeSample, WORKLOADS};

/// The eBPF time the user-level probes may take per attribute read.
pub const TARGET_EBPF_NS_PER_ATTRIBUTE: f64 = 1_500.0;

fn med(samples: &[&UserCodeSample], field: impl Fn(&UserCodeSample) -> Option<f64>) -> Option<f64> {
    let values: Vec<f64> = samples.iter().filter_map(|s| field(s)).collect();
    (!values.is_empty()).then(|| median(&values))
}

fn cell(value: Option<f64>, digits: usize) -> String {
    value.map_or("–".to_string(), |v| format!("{v:.digits$}"))
}

pub fn write(md: &mut String, cost: &UserCodeCost) -> std::fmt::Result {
    let sizes = cost.sizes;
    writeln!(md, "## User-level spans: cost per attribute read")?;
    writeln!(md)?;
    writeln!(
        md,
        "A Python loop of {} `read_attributes` calls (after {} untimed warm-up calls) of 1, then 8 \
         attributes that return at once, against a PyTango 10.3.1 device without database \
         (`tests/python/user_code_server.py`, no polling, a hook that returns at once), in {} rounds alternating untraced (no \
         daemon) and traced. Each attribute read passes two libtango probe points (its read \
         method's start and end), each request two more (`always_executed_hook`). The probes' own \
         eBPF time is the kernel's `bpf_stats` (`run_time_ns` and `run_cnt` of the daemon's uprobe \
         programs); it does not include the trap into the kernel and back, which shows in the \
         server's CPU. CPU times are per call, warm-up included in the count. Medians over the rounds.",
        sizes.calls, sizes.warmup, sizes.rounds
    )?;
    writeln!(md)?;
    if let Some(line) = &cost.probe_line {
        writeln!(md, "The daemon's line for the server: `{line}`.")?;
        writeln!(md)?;
    }
    writeln!(
        md,
        "| attributes per call | calls/s untraced | calls/s traced | probe hits per call | uprobe eBPF ns/call | server CPU µs/call untraced | server CPU µs/call traced | daemon CPU µs/call |"
    )?;
    writeln!(md, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")?;
    let mut per_workload = Vec::new();
    for attributes in WORKLOADS {
        let untraced: Vec<&UserCodeSample> = cost.of(false, attributes).collect();
        let traced: Vec<&UserCodeSample> = cost.of(true, attributes).collect();
        let row = (
            med(&traced, |s| s.uprobe_ns),
            med(&traced, |s| s.daemon_cpu_us),
            med(&untraced, |s| Some(s.server_cpu_us)),
            med(&traced, |s| Some(s.server_cpu_us)),
        );
        writeln!(
            md,
            "| {attributes} | {} | {} | {} | {} | {} | {} | {} |",
            cell(med(&untraced, |s| Some(s.calls_per_s)), 0),
            cell(med(&traced, |s| Some(s.calls_per_s)), 0),
            cell(med(&traced, |s| s.uprobe_runs), 2),
            cell(row.0, 0),
            cell(row.2, 1),
            cell(row.3, 1),
            cell(row.1, 1),
        )?;
        per_workload.push(row);
    }
    writeln!(md)?;
    let (Some(one), Some(eight)) = (per_workload.first(), per_workload.get(1)) else {
        return Ok(());
    };
    let extra = (WORKLOADS[1] - WORKLOADS[0]) as f64;
    let per_attribute = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(one, eight)| (eight - one) / extra);
    let ebpf = per_attribute(one.0, eight.0);
    let daemon = per_attribute(one.1, eight.1);
    let server_untraced = per_attribute(one.2, eight.2);
    let server_traced = per_attribute(one.3, eight.3);
    writeln!(
        md,
        "One more attribute in a call (8-attribute row minus 1-attribute row, over 7): **{} ns** of \
         uprobe eBPF time, {} µs of daemon CPU, {} µs of server CPU traced against {} µs untraced \
         (the difference, {} µs, is the two traps with their eBPF programs).",
        cell(ebpf, 0),
        cell(daemon, 2),
        cell(server_traced, 2),
        cell(server_untraced, 2),
        cell(server_traced.zip(server_untraced).map(|(t, u)| t - u), 2),
    )?;
    writeln!(md)?;
    let verdict = match ebpf {
        Some(ns) if ns <= TARGET_EBPF_NS_PER_ATTRIBUTE => "met",
        Some(_) => "**not met**",
        None => "not measured",
    };
    writeln!(
        md,
        "Target: at most {:.1} µs of eBPF time per attribute read: {verdict}.",
        TARGET_EBPF_NS_PER_ATTRIBUTE / 1_000.0
    )?;
    writeln!(md)
}
