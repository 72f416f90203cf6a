//! Cross-host linking under steady load: three simulated hosts (network namespaces on one bridge,
//! `integration_tests::hosts`), a PyTango `Demo` device on B and on C, a paced client on A, and a
//! tango-tracer daemon in each host with `--netns`, one shared key and `--peer-wait 1500ms`, each
//! exporting to an OTLP receiver of its own on the bridge.
//!
//! Two workloads, each with fresh daemons and receivers: A reads B's attribute (a client call
//! that is a root: nothing but progress needs to cross), and A calls B's `ReadPeer`, which reads
//! C's attribute while serving (a call made inside a trace: B announces it to C with a `Call`).
//! The daemons' own counters (`ctl stats --json`) say how many server spans waited for an answer,
//! how long, and what the daemons exchanged; the receivers' arrival times say how much later a
//! server span of another host's call arrives than a client span, which is not held.

use std::{
    collections::{BTreeMap, HashMap},
    net::{SocketAddr, SocketAddrV4, TcpStream},
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use integration_tests::{
    hosts::{Host, Hosts, Scope},
    otlp_receiver::{OtlpReceiver, ReceiverOptions},
};
use tango_tracer::run::ctl::StatsView;

use crate::{
    procs::{self, Proc},
    roundtrip::{Daemon, MARKER, Programs},
};

/// What every daemon gets as `--peer-wait`.
pub const PEER_WAIT: &str = "1500ms";

/// Sizes of the cross-host benchmark.
#[derive(Clone, Copy, Debug)]
pub struct CrossHostSizes {
    /// Read calls per second A → B, and for how long.
    pub rate: u32,
    pub seconds: Duration,
    /// `ReadPeer` calls per second A → B → C (each builds a `DeviceProxy`), and for how long.
    pub nested_rate: u32,
    pub nested_seconds: Duration,
}

/// One workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// `read_attribute` A → B.
    Direct,
    /// `ReadPeer` A → B, which reads C while serving.
    Nested,
}

impl Workload {
    pub fn label(self) -> &'static str {
        match self {
            Workload::Direct => "read_attribute A → B",
            Workload::Nested => "ReadPeer A → B → C",
        }
    }
}

/// One daemon's cross-host and peer counters at the end of a workload.
#[derive(Clone, Debug)]
pub struct HostCounters {
    pub host: String,
    /// `crosshost.*` and `peers.*` of `ctl stats --json`, by full name.
    pub counters: BTreeMap<String, u64>,
}

impl HostCounters {
    pub fn get(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or_default()
    }
}

/// How long after their end spans arrived at their receiver, in ms: p50, p99, max, count.
#[derive(Clone, Copy, Debug, Default)]
pub struct Delays {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Delays {
    /// Of `values` in ms (all zero when there are none).
    pub fn of(mut values: Vec<f64>) -> Delays {
        values.sort_by(f64::total_cmp);
        let last = values.len().saturating_sub(1);
        let at = |q: f64| values.get((last as f64 * q).round() as usize).copied().unwrap_or_default();
        Delays { count: values.len(), p50: at(0.5), p99: at(0.99), max: at(1.0) }
    }
}

/// The server spans one host exported during a workload, against their client spans.
#[derive(Clone, Debug)]
pub struct ServerDelays {
    /// The server's host (`b`, `c`) and the client's.
    pub host: String,
    pub client_host: String,
    pub server_spans: usize,
    /// Server spans whose parent is a client span another host's daemon exported.
    pub linked: usize,
    /// Arrival minus end of the linked server spans, and of their client spans.
    pub server: Delays,
    pub client: Delays,
    /// Per linked pair: the server span's delay minus its client span's (what holding added).
    pub extra: Delays,
}

/// One workload's results.
#[derive(Clone, Debug)]
pub struct CrossHostRun {
    pub workload: Workload,
    pub rate: u32,
    pub calls: u64,
    pub client_seconds: f64,
    pub behind_max_ms: f64,
    pub counters: Vec<HostCounters>,
    pub delays: Vec<ServerDelays>,
}

/// Everything the cross-host benchmark measured.
#[derive(Clone, Debug)]
pub struct CrossHost {
    pub sizes: CrossHostSizes,
    pub runs: Vec<CrossHostRun>,
}

/// The paced client's JSON line.
#[derive(serde::Deserialize)]
struct ClientOutput {
    calls: u64,
    seconds: f64,
    behind_max_ms: f64,
}

const DEVICE_B: &str = "test/benchb/1";
const DEVICE_C: &str = "test/benchc/1";

/// A daemon of one host and its receiver.
struct HostDaemon {
    host: String,
    daemon: Daemon,
    receiver: OtlpReceiver,
}

/// A demo server in `host` listening on the host's address; its device URL.
fn start_server(
    host: &Host,
    programs: &Programs,
    dir: &Path,
    marker: &str,
    device: &str,
) -> anyhow::Result<(Proc, String)> {
    let port = host.free_port();
    let mut command = host.command(&programs.python);
    command
        .env(MARKER, marker)
        .env_remove("TANGO_HOST")
        .arg(&programs.demo_server)
        .arg(format!("crosshost{}", host.name))
        .arg(format!("{}:{port}", host.address))
        .arg(device);
    let mut proc = Proc::spawn(&format!("crosshost-server-{}", host.name), command, dir)?;
    let address = SocketAddr::V4(SocketAddrV4::new(host.address, port));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !host.in_netns(|| TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()) {
        if let Some(status) = proc.exited() {
            bail!("{} exited ({status}) before listening:\n{}", proc.name(), proc.stderr_tail());
        }
        if Instant::now() >= deadline {
            bail!("{} did not listen on {address} within 60 s", proc.name());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((proc, format!("tango://{address}/{device}#dbase=no")))
}

fn start_daemons(
    hosts: &Hosts,
    programs: &Programs,
    dir: &Path,
    marker: &str,
    run: &str,
) -> anyhow::Result<Vec<HostDaemon>> {
    let key = hosts.key_file().display().to_string();
    let mut daemons = Vec::new();
    for host in hosts.all() {
        let any = SocketAddr::V4(SocketAddrV4::new(hosts.bridge_address(), 0));
        let receiver = OtlpReceiver::start_with(ReceiverOptions { http: any, grpc: any, out: None })
            .context("starting an OTLP receiver on the bridge")?;
        let netns = host.netns_path();
        let netns_arg = netns.display().to_string();
        let (daemon, _) = Daemon::launch(
            &format!("crosshost-{run}-daemon-{}", host.name),
            programs,
            dir,
            (marker, &format!("http://{}", receiver.http_addr())),
            ("info", &[]),
            &["--netns", &netns_arg, "--peer-key", &key, "--peer-wait", PEER_WAIT],
            Some(&netns),
        )?;
        daemons.push(HostDaemon { host: host.name.clone(), daemon, receiver });
    }
    Ok(daemons)
}

/// Arrival minus end, in ms.
fn delay_ms(arrival_ns: u64, end_ns: u64) -> f64 {
    (arrival_ns as f64 - end_ns as f64) / 1e6
}

/// Server spans of each host against the client spans (of any host) that are their parents.
fn server_delays(daemons: &[HostDaemon]) -> Vec<ServerDelays> {
    let spans: Vec<(String, Vec<(u64, tracer_export::json::SpanJson)>)> =
        daemons.iter().map(|d| (d.host.clone(), d.receiver.spans_with_arrival())).collect();
    let clients: HashMap<&str, (&str, f64)> = spans
        .iter()
        .flat_map(|(host, spans)| {
            spans
                .iter()
                .filter(|(_, s)| s.kind == "CLIENT")
                .map(move |(arrival, s)| (s.span_id.as_str(), (host.as_str(), delay_ms(*arrival, s.end_ns))))
        })
        .collect();
    let mut out = Vec::new();
    for (host, spans) in &spans {
        let servers: Vec<&(u64, tracer_export::json::SpanJson)> =
            spans.iter().filter(|(_, s)| s.kind == "SERVER").collect();
        if servers.is_empty() {
            continue;
        }
        let (mut server, mut client, mut extra) = (Vec::new(), Vec::new(), Vec::new());
        let mut client_host = String::new();
        for (arrival, span) in &servers {
            let Some((from, client_delay)) = clients.get(span.parent_span_id.as_str()) else {
                continue;
            };
            if *from == host.as_str() {
                continue;
            }
            client_host = (*from).to_owned();
            let server_delay = delay_ms(*arrival, span.end_ns);
            server.push(server_delay);
            client.push(*client_delay);
            extra.push(server_delay - client_delay);
        }
        out.push(ServerDelays {
            host: host.clone(),
            client_host,
            server_spans: servers.len(),
            linked: server.len(),
            server: Delays::of(server),
            client: Delays::of(client),
            extra: Delays::of(extra),
        });
    }
    out
}

fn cross_host_counters(stats: &StatsView) -> BTreeMap<String, u64> {
    stats
        .counters
        .iter()
        .filter(|(name, _)| name.starts_with("crosshost.") || name.starts_with("peers."))
        .map(|(name, value)| (name.clone(), *value))
        .collect()
}

/// One workload with fresh daemons: the client on A at `rate` for `seconds`.
fn run_workload(
    hosts: &Hosts,
    programs: &Programs,
    dir: &Path,
    marker: &str,
    (workload, rate, seconds): (Workload, u32, Duration),
    (url_b, url_c): (&str, &str),
) -> anyhow::Result<CrossHostRun> {
    let name = match workload {
        Workload::Direct => "direct",
        Workload::Nested => "nested",
    };
    let daemons = start_daemons(hosts, programs, dir, marker, name)?;
    let a = hosts.get("a");
    let mut command = a.command(&programs.python);
    command
        .env(MARKER, marker)
        .env_remove("TANGO_HOST")
        .arg(&programs.paced_client)
        .arg(url_b)
        .arg(rate.to_string())
        .stdout(Stdio::piped());
    if workload == Workload::Nested {
        command.arg(url_c);
    }
    let mut client = Proc::spawn(&format!("crosshost-{name}-client"), command, dir)?;
    procs::wait_for_stdout(&mut client, Duration::from_secs(60), |out| out.contains("ready").then_some(()))?;
    eprintln!(
        "tango-bench: cross-host: {} at {rate} calls/s for {:.0} s",
        workload.label(),
        seconds.as_secs_f64()
    );
    std::thread::sleep(seconds);
    client.stop(Duration::from_secs(10));
    let output: ClientOutput = {
        let stdout = client.stdout();
        let line = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line)
            .with_context(|| format!("the cross-host client printed {stdout:?}, not its JSON result"))?
    };
    // The last server spans wait at most --peer-wait, then the export interval (1 s).
    std::thread::sleep(Duration::from_millis(1500 + 2500));
    let mut counters = Vec::new();
    for d in &daemons {
        let stats = d.daemon.stats(programs)?;
        counters.push(HostCounters { host: d.host.clone(), counters: cross_host_counters(&stats) });
    }
    // Before the daemons stop: their stop flushes whatever they still hold, at once.
    let delays = server_delays(&daemons);
    for d in daemons {
        d.daemon.stop().with_context(|| format!("the daemon of host {}", d.host))?;
    }
    Ok(CrossHostRun {
        workload,
        rate,
        calls: output.calls,
        client_seconds: output.seconds,
        behind_max_ms: output.behind_max_ms,
        counters,
        delays,
    })
}

/// Runs the cross-host benchmark; `dir` keeps logs.
pub fn run(programs: &Programs, sizes: CrossHostSizes, dir: &Path) -> anyhow::Result<CrossHost> {
    anyhow::ensure!(sizes.rate >= 1 && sizes.nested_rate >= 1, "nothing to run");
    let marker = format!("crosshost-{}", std::process::id());
    // Declared first: dropped last, after every process that runs in the hosts.
    let hosts = Hosts::new("crosshost-bench", &["a", "b", "c"], Scope::Netns);
    let (_server_b, url_b) = start_server(hosts.get("b"), programs, dir, &marker, DEVICE_B)?;
    let (_server_c, url_c) = start_server(hosts.get("c"), programs, dir, &marker, DEVICE_C)?;
    let mut runs = Vec::new();
    for (workload, rate, seconds) in [
        (Workload::Direct, sizes.rate, sizes.seconds),
        (Workload::Nested, sizes.nested_rate, sizes.nested_seconds),
    ] {
        let run = run_workload(&hosts, programs, dir, &marker, (workload, rate, seconds), (&url_b, &url_c))
            .with_context(|| workload.label())?;
        runs.push(run);
    }
    Ok(CrossHost { sizes, runs })
}

#[cfg(test)]
mod tests {
    use super::Delays;

    #[test]
    fn delays_are_nearest_rank_percentiles_of_any_order() {
        let d = Delays::of((1..=200).rev().map(f64::from).collect());
        assert_eq!((d.count, d.p50, d.p99, d.max), (200, 101.0, 198.0, 200.0));
        let none = Delays::of(Vec::new());
        assert_eq!((none.count, none.max), (0, 0.0));
    }
}
