//! The cross-host section of BENCHMARKS.md.

use std::fmt::Write as _;

use crate::crosshost::{CrossHost, Delays, PEER_WAIT};

fn per_call(value: u64, calls: u64) -> String {
    if calls == 0 { "–".to_string() } else { format!("{:.2}", value as f64 / calls as f64) }
}

fn delays_cell(d: &Delays) -> String {
    if d.count == 0 { "–".to_string() } else { format!("{:.0} / {:.0} / {:.0}", d.p50, d.p99, d.max) }
}

pub(super) fn write(md: &mut String, ch: &CrossHost) -> std::fmt::Result {
    let sizes = ch.sizes;
    writeln!(md, "## Cross-host linking: how long server spans wait, what the daemons exchange")?;
    writeln!(md)?;
    writeln!(
        md,
        "Three simulated hosts A, B, C (network namespaces on one bridge), a PyTango `Demo` device on B \
         and on C (no database), and a tango-tracer daemon in each host (`--netns` of its host, one \
         shared 0600 key, `--peer-wait {PEER_WAIT}`, `--export-interval 1s`), each exporting over \
         OTLP/HTTP to an OTLP receiver of its own on the bridge. A paced client on A \
         (`benches/python/paced_read_loop.py`) makes two workloads, each with freshly started daemons: \
         `read_attribute` on B at {} calls/s for {:.0} s (a root call: B's daemon derives the \
         client span id from the connection and TCP position, and waits only for A's progress); \
         then B's `ReadPeer` command at {} calls/s for {:.0} s, which reads C's attribute while \
         serving (a call inside a trace: B's daemon announces it to C's with a `Call` message).",
        sizes.rate,
        sizes.seconds.as_secs_f64(),
        sizes.nested_rate,
        sizes.nested_seconds.as_secs_f64()
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "Answers and their wait are each daemon's own counters (`ctl stats --json`: `crosshost.answered`, \
         `answer_wait_total_us` / `answered`, `answer_wait_max_us`; `unanswered` = no answer within \
         the wait, `no_daemon`, `refused`, `late`); messages and bytes are the peer links' counters \
         (`peers.sent_frames`, `sent_bytes`, `received_*`; `sent_calls`, `sent_progress`, \
         `sent_settled`, `sent_beats` by kind) divided by the calls the client made."
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "| workload | calls (/s achieved) | host | GIOP requests from other hosts | answered | unanswered / no daemon / refused / late | mean wait ms | max wait ms |"
    )?;
    writeln!(md, "| --- | ---: | --- | ---: | ---: | --- | ---: | ---: |")?;
    for run in &ch.runs {
        let achieved = if run.client_seconds > 0.0 { run.calls as f64 / run.client_seconds } else { 0.0 };
        for c in &run.counters {
            let received = c.get("crosshost.requests_received");
            if received == 0 {
                continue;
            }
            let answered = c.get("crosshost.answered");
            let mean = if answered == 0 {
                "–".to_string()
            } else {
                format!("{:.1}", c.get("crosshost.answer_wait_total_us") as f64 / answered as f64 / 1e3)
            };
            writeln!(
                md,
                "| {} | {} ({achieved:.0}) | {} | {received} | {answered} | {} / {} / {} / {} | {mean} | {:.1} |",
                run.workload.label(),
                run.calls,
                c.host.to_uppercase(),
                c.get("crosshost.unanswered"),
                c.get("crosshost.no_daemon"),
                c.get("crosshost.refused"),
                c.get("crosshost.late"),
                c.get("crosshost.answer_wait_max_us") as f64 / 1e3,
            )?;
        }
    }
    writeln!(md)?;
    writeln!(md, "Per call the client made (every daemon of the run; beats are the links' keep-alives):")?;
    writeln!(md)?;
    writeln!(
        md,
        "| workload | host | frames sent | bytes sent | frames received | bytes received | Call sent | Progress sent | Settled sent | beats sent |"
    )?;
    writeln!(md, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")?;
    for run in &ch.runs {
        for c in &run.counters {
            let n = |name: &str| per_call(c.get(name), run.calls);
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                run.workload.label(),
                c.host.to_uppercase(),
                n("peers.sent_frames"),
                n("peers.sent_bytes"),
                n("peers.received_frames"),
                n("peers.received_bytes"),
                n("peers.sent_calls"),
                n("peers.sent_progress"),
                n("peers.sent_settled"),
                n("peers.sent_beats"),
            )?;
        }
    }
    writeln!(md)?;
    writeln!(
        md,
        "Export delay: each span's arrival at its receiver minus its end time, in ms (p50 / p99 / max), \
         for the server spans whose parent is a client span another host's daemon exported, for \
         those client spans (not held: the export interval and the OTLP request alone), and per pair \
         the server span's delay minus its client span's (what waiting for the peer added). Taken \
         before the daemons were stopped (a stop flushes at once)."
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "| workload | server host ← client host | server spans | linked | server span delay | client span delay | extra wait per pair |"
    )?;
    writeln!(md, "| --- | --- | ---: | ---: | ---: | ---: | ---: |")?;
    for run in &ch.runs {
        for d in &run.delays {
            writeln!(
                md,
                "| {} | {} ← {} | {} | {} | {} | {} | {} |",
                run.workload.label(),
                d.host.to_uppercase(),
                if d.client_host.is_empty() { "–".to_string() } else { d.client_host.to_uppercase() },
                d.server_spans,
                d.linked,
                delays_cell(&d.server),
                delays_cell(&d.client),
                delays_cell(&d.extra),
            )?;
        }
    }
    writeln!(md)?;
    Ok(())
}

pub(super) fn write_commands(md: &mut String, ch: &CrossHost) -> std::fmt::Result {
    writeln!(md)?;
    writeln!(
        md,
        "The cross-host benchmark (`<X>` is host X's address on the bridge, `<netns X>` its network \
         namespace; every process of a host runs under `nsenter --net=<netns X>` with the marker and \
         `ORBclientTransportRule=* tcp`; each workload starts its three daemons afresh):"
    )?;
    writeln!(md)?;
    writeln!(md, "```sh")?;
    writeln!(md, "otlp-receiver on <bridge>:<port>        # one per daemon, in the benchmark's process")?;
    writeln!(md, "python tests/python/demo_server.py crosshostb <B>:<port> test/benchb/1")?;
    writeln!(md, "python tests/python/demo_server.py crosshostc <C>:<port> test/benchc/1")?;
    writeln!(
        md,
        "tango-tracer run --netns <netns X> --peer-key <dir>/peer.key --peer-wait {PEER_WAIT} --select-env TANGO_BENCH=<marker> --export-interval 1s --exporter otlp --user-spans off   # on A, B and C"
    )?;
    writeln!(
        md,
        "python benches/python/paced_read_loop.py 'tango://<B>:<port>/test/benchb/1#dbase=no' {}          # on A, SIGTERM after {:.0} s",
        ch.sizes.rate,
        ch.sizes.seconds.as_secs_f64()
    )?;
    writeln!(
        md,
        "python benches/python/paced_read_loop.py 'tango://<B>:<port>/test/benchb/1#dbase=no' {} 'tango://<C>:<port>/test/benchc/1#dbase=no'   # ReadPeer, SIGTERM after {:.0} s",
        ch.sizes.nested_rate,
        ch.sizes.nested_seconds.as_secs_f64()
    )?;
    writeln!(md, "```")
}
