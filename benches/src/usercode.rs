//! What the user-level spans cost: `read_attributes` of 1 and of 8 attributes that return at
//! once, against a PyTango 10.3.1 device (`tests/python/user_code_server.py`, polling off), each
//! untraced (no daemon) and traced, in alternating rounds. The libtango probe points' own eBPF
//! time comes from the kernel's `bpf_stats` (`run_time_ns`, `run_cnt` of the daemon's program
//! fds, switched on for the benchmark and back off after); CPU times from `/proc`. The cost of
//! one more attribute is the difference between the two workloads divided by the 7 attributes
//! that make it, so what every request costs anyway (GIOP, hook) cancels out.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context as _, bail};

use crate::{
    bpf::{self, BpfStats},
    procs::{self, Proc},
    roundtrip::{self, Daemon, MARKER, Programs, Receiver},
};

/// Attributes per call of the two workloads.
pub const WORKLOADS: [usize; 2] = [1, 8];
/// The device the benchmark's server serves.
pub const DEVICE: &str = "bench/usercode/1";

/// Sizes of the user-code benchmark.
#[derive(Clone, Copy, Debug)]
pub struct UserCodeSizes {
    pub rounds: usize,
    pub calls: usize,
    pub warmup: usize,
}

/// One client run.
#[derive(Clone, Debug)]
pub struct UserCodeSample {
    pub traced: bool,
    pub attributes: usize,
    pub calls: usize,
    pub calls_per_s: f64,
    /// CPU per call (warm-up included in the count): the server's, and the daemon's when traced.
    pub server_cpu_us: f64,
    pub daemon_cpu_us: Option<f64>,
    /// The uprobe programs' own time and runs per call (`bpf_stats`), when traced.
    pub uprobe_ns: Option<f64>,
    pub uprobe_runs: Option<f64>,
}

/// Everything the benchmark measured.
#[derive(Clone, Debug)]
pub struct UserCodeCost {
    pub sizes: UserCodeSizes,
    pub samples: Vec<UserCodeSample>,
    /// What the daemon logged for the server's libtango.
    pub probe_line: Option<String>,
}

impl UserCodeCost {
    pub fn of(&self, traced: bool, attributes: usize) -> impl Iterator<Item = &UserCodeSample> {
        self.samples.iter().filter(move |s| s.traced == traced && s.attributes == attributes)
    }
}

/// `run_time_ns` and `run_cnt` of a process's uprobe programs, summed. (Its tracepoint programs
/// run for every process of the machine: their time is not the traced requests' alone.)
#[derive(Clone, Copy, Debug, Default)]
struct BpfTimes {
    uprobe_ns: u64,
    uprobe_runs: u64,
}

fn bpf_times(pid: u32) -> BpfTimes {
    bpf::program_times(pid).values().filter(|p| p.kind == bpf::KPROBE).fold(BpfTimes::default(), |sum, p| {
        BpfTimes { uprobe_ns: sum.uprobe_ns + p.run_ns, uprobe_runs: sum.uprobe_runs + p.runs }
    })
}

#[derive(serde::Deserialize)]
struct LoopOutput {
    calls_per_s: f64,
}

/// Runs the benchmark; `dir` keeps logs.
pub fn run(programs: &Programs, sizes: UserCodeSizes, dir: &Path) -> anyhow::Result<UserCodeCost> {
    anyhow::ensure!(sizes.rounds >= 1 && sizes.calls >= 1, "nothing to run");
    let marker = format!("usercode-{}", std::process::id());
    let env = [
        (MARKER, marker.clone()),
        ("USER_CODE_POLLING", "off".to_string()),
        ("USER_CODE_HOOK_MS", "0".to_string()),
    ];
    let receiver = Receiver::start("usercode-receiver", programs, dir)?;
    let port = procs::free_port()?;
    let mut command = roundtrip::python_command(programs, &env);
    command.arg(&programs.user_code_server).arg("bench").arg(port.to_string()).arg(DEVICE);
    let mut server = Proc::spawn("usercode-server", command, dir)?;
    procs::wait_for_port(port, &mut server, Duration::from_secs(30))?;
    let url = format!("tango://127.0.0.1:{port}/{DEVICE}#dbase=no");
    let _stats = BpfStats::enable()?;
    let mut result = UserCodeCost { sizes, samples: Vec::new(), probe_line: None };
    for round in 0..sizes.rounds {
        let mut order = [false, true];
        if round % 2 == 1 {
            order.reverse();
        }
        for traced in order {
            let daemon = if traced {
                let name = format!("usercode-daemon-{round}");
                let on = ["--user-spans", "on"];
                Some(Daemon::start_with_args(&name, programs, dir, (&marker, &receiver), "info", &on)?.0)
            } else {
                None
            };
            for attributes in WORKLOADS {
                let sample =
                    run_one(programs, &env, &url, (server.pid(), daemon.as_ref()), attributes, sizes, dir)?;
                eprintln!(
                    "tango-bench: user code round {}/{} {:<8} {} attribute(s) {:>7.0} calls/s  eBPF {:>6} ns/call  daemon {:>6} us/call",
                    round + 1,
                    sizes.rounds,
                    if traced { "traced" } else { "untraced" },
                    attributes,
                    sample.calls_per_s,
                    sample.uprobe_ns.map_or("–".into(), |v| format!("{v:.0}")),
                    sample.daemon_cpu_us.map_or("–".into(), |v| format!("{v:.1}")),
                );
                result.samples.push(sample);
            }
            if let Some(daemon) = daemon {
                let log = daemon.proc.stderr();
                if result.probe_line.is_none() {
                    result.probe_line = log
                        .lines()
                        .find(|l| l.contains("user-level spans"))
                        .and_then(|l| l.split("] ").nth(1))
                        .map(|l| l.split(" at /").next().unwrap_or(l).to_string());
                }
                daemon.stop()?;
            }
        }
    }
    drop(server);
    let _ = receiver.finish();
    Ok(result)
}

fn run_one(
    programs: &Programs,
    env: &[(&str, String)],
    url: &str,
    (server_pid, daemon): (u32, Option<&Daemon>),
    attributes: usize,
    sizes: UserCodeSizes,
    dir: &Path,
) -> anyhow::Result<UserCodeSample> {
    let daemon_pid = daemon.map(|d| d.proc.pid());
    let cpu = |pid: u32| procs::cpu_time(pid).unwrap_or_default();
    let (server_before, daemon_before) = (cpu(server_pid), daemon_pid.map(cpu));
    let bpf_before = daemon_pid.map(bpf_times);
    let mut command: Command = roundtrip::python_command(programs, env);
    command
        .arg(&programs.user_code_client)
        .arg(url)
        .arg(attributes.to_string())
        .arg(sizes.calls.to_string())
        .arg("--warmup")
        .arg(sizes.warmup.to_string());
    let name = format!("usercode-client-{attributes}-{}", daemon.is_some());
    let mut client = Proc::spawn(&name, command, dir)?;
    let status = client.wait(Duration::from_secs(600))?;
    if !status.success() {
        bail!("{name} failed ({status}):\n{}", client.stderr_tail());
    }
    let output: LoopOutput = serde_json::from_str(client.stdout().lines().last().unwrap_or_default())
        .with_context(|| format!("{name} printed {:?}", client.stdout()))?;
    let all_calls = (sizes.calls + sizes.warmup) as f64;
    let per_call_us = |before: Duration, after: Duration| (after - before).as_secs_f64() * 1e6 / all_calls;
    let bpf = daemon_pid.map(bpf_times).zip(bpf_before).map(|(after, before)| BpfTimes {
        uprobe_ns: after.uprobe_ns - before.uprobe_ns,
        uprobe_runs: after.uprobe_runs - before.uprobe_runs,
    });
    Ok(UserCodeSample {
        traced: daemon.is_some(),
        attributes,
        calls: sizes.calls,
        calls_per_s: output.calls_per_s,
        server_cpu_us: per_call_us(server_before, cpu(server_pid)),
        daemon_cpu_us: daemon_pid.zip(daemon_before).map(|(pid, before)| per_call_us(before, cpu(pid))),
        uprobe_ns: bpf.map(|b| b.uprobe_ns as f64 / all_calls),
        uprobe_runs: bpf.map(|b| b.uprobe_runs as f64 / all_calls),
    })
}
