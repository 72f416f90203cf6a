//! One trace across hosts (issue "One trace across hosts, without touching the traffic"): simulated
//! hosts ([`crate::hosts`]), each with its own daemon inside it (`--netns` of its host, a shared
//! `--peer-key`, `--peer-wait 1500ms`), real PyTango and cppTango 9.3.4 processes, traffic only
//! between the hosts' addresses. Each daemon exports to a receiver of its own, so every span is
//! checked to come from the daemon of the host it ran on; spans are read after the daemons stopped
//! (flushed), and the daemons must end without loss.

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Ipv4Addr, TcpListener},
    path::Path,
    time::Duration,
};

use tracer_export::{json::SpanJson, tree::render_trees};

use crate::hosts::{Host, HostDaemon, Hosts, Scope, now_ns};

/// Longest wait for spans that must come.
const WAIT: Duration = Duration::from_secs(30);
/// What every daemon gets as `--peer-wait`.
const PEER_WAIT: &str = "1500ms";
const PEER_WAIT_NS: u64 = 1_500_000_000;
/// Beyond `--peer-wait`: the export interval (200 ms) and a loaded machine.
const EXPORT_MARGIN_NS: u64 = 2_000_000_000;
/// Longer than two export intervals (200 ms): see [`wait_settled`].
const SETTLE: Duration = Duration::from_millis(500);
/// A daemon that starts again is asked again within this (the issue: seconds, not minutes).
const RELINK_WITHIN: Duration = Duration::from_secs(10);
/// The attribute that carries the link key on both sides of a call that could not be linked.
const KEY_ATTRIBUTE: &str = "tango_tracer.link.key";
/// Where every daemon listens for its peers (the default of `--peer-listen`).
const PEER_PORT: u16 = 4320;

const READ_CLIENT: &str = "Tango::DeviceProxy::read_attribute";
const WRITE_CLIENT: &str = "Tango::DeviceProxy::write_attribute";
const COMMAND_CLIENT: &str = "Tango::Connection::command_inout";
const READ_SERVER: &str = "Tango::Device_5Impl::read_attributes_5";
const WRITE_SERVER: &str = "Tango::Device_4Impl::write_attributes_4";
const COMMAND_SERVER: &str = "Tango::Device_4Impl::command_inout_4";

/// `--peer-key <key> --peer-wait 1500ms`.
fn peer_args(key: &Path) -> Vec<String> {
    vec!["--peer-key".into(), key.display().to_string(), "--peer-wait".into(), PEER_WAIT.into()]
}

fn start_daemon(host: &Host, key: &Path) -> HostDaemon {
    let args = peer_args(key);
    host.start_daemon(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn argument(span: &SpanJson) -> Option<&str> {
    span.attributes.get_str("tango.operation.argument")
}

fn pid_of(span: &SpanJson) -> Option<i64> {
    span.resource.get_i64("tango.process.id")
}

fn is_root(span: &SpanJson) -> bool {
    span.parent_span_id.is_empty()
}

/// `render_trees` of `spans`, at most 40 lines (the rest counted), for failure messages.
fn excerpt(spans: &[SpanJson]) -> String {
    const LINES: usize = 40;
    let text = render_trees(spans);
    let total = text.lines().count();
    let mut out: String = text.lines().take(LINES).map(|l| format!("{l}\n")).collect();
    if total > LINES {
        out.push_str(&format!("… {} more lines\n", total - LINES));
    }
    out
}

/// The spans of the traces of `spans` among `all`, for failure messages.
fn traces_of(all: &[SpanJson], spans: &[&SpanJson]) -> String {
    let ids: HashSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    excerpt(&all.iter().filter(|s| ids.contains(s.trace_id.as_str())).cloned().collect::<Vec<_>>())
}

/// The spans of all daemons, for messages.
fn all_spans(daemons: &[&HostDaemon]) -> Vec<SpanJson> {
    daemons.iter().flat_map(|d| d.spans()).collect()
}

/// The only span of `spans` that `matches`, described by `what`.
fn only<'a>(
    spans: &'a [SpanJson],
    what: &str,
    matches: impl Fn(&SpanJson) -> bool,
    context: &[SpanJson],
) -> &'a SpanJson {
    let found: Vec<&SpanJson> = spans.iter().filter(|s| matches(s)).collect();
    assert_eq!(found.len(), 1, "expected exactly one {what}, found {}:\n{}", found.len(), excerpt(context));
    found[0]
}

/// A CLIENT span of process `pid` named `name` (with `argument`, if given).
fn client_span<'a>(
    spans: &'a [SpanJson],
    pid: i64,
    name: &str,
    arg: Option<&str>,
    context: &[SpanJson],
) -> &'a SpanJson {
    only(
        spans,
        &format!("CLIENT {name}({arg:?}) of pid {pid}"),
        |s| {
            s.kind == "CLIENT"
                && s.name == name
                && pid_of(s) == Some(pid)
                && arg.is_none_or(|a| argument(s) == Some(a))
        },
        context,
    )
}

/// The SERVER span named `name` (with `argument`, if given) of a request of client process
/// `client_pid` (its ClntIdent).
fn server_span<'a>(
    spans: &'a [SpanJson],
    client_pid: i64,
    name: &str,
    arg: Option<&str>,
    context: &[SpanJson],
) -> &'a SpanJson {
    only(
        spans,
        &format!("SERVER {name}({arg:?}) of a request of pid {client_pid}"),
        |s| {
            s.kind == "SERVER"
                && s.name == name
                && s.attributes.get_i64("tango.client_ident.pid") == Some(client_pid)
                && arg.is_none_or(|a| argument(s) == Some(a))
        },
        context,
    )
}

/// Fails unless `child` is a child of `parent` in the same trace.
fn assert_child_of(child: &SpanJson, parent: &SpanJson, what: &str, context: &[SpanJson]) {
    assert!(
        child.trace_id == parent.trace_id && child.parent_span_id == parent.span_id,
        "{what}: expected {} {} (trace {}, parent {:?}) to be the child of {} {} (trace {}, span {}):\n{}",
        child.kind,
        child.name,
        child.trace_id,
        child.parent_span_id,
        parent.kind,
        parent.name,
        parent.trace_id,
        parent.span_id,
        traces_of(context, &[child, parent])
    );
}

/// Fails unless the spans of `trace_id` among `spans` form one tree: one root, every other span's
/// parent present (no dangling parent), no span twice.
fn assert_one_tree(spans: &[SpanJson], trace_id: &str, what: &str) {
    let trace: Vec<&SpanJson> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let ids: HashSet<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();
    assert_eq!(ids.len(), trace.len(), "{what}: a span exported twice:\n{}", excerpt(spans));
    let roots = trace.iter().filter(|s| is_root(s)).count();
    let dangling: Vec<&&SpanJson> =
        trace.iter().filter(|s| !is_root(s) && !ids.contains(s.parent_span_id.as_str())).collect();
    assert!(
        roots == 1 && dangling.is_empty(),
        "{what}: expected trace {trace_id} to be one tree, found {roots} root(s) and {} span(s) whose \
         parent is missing:\n{}",
        dangling.len(),
        excerpt(spans)
    );
}

/// The client's port in a server span's `tango.client_ident.location` (`giop:tcp:<ip>:<port>`),
/// after checking that the request came from `client` over TCP.
fn client_port(server: &SpanJson, client: Ipv4Addr) -> i64 {
    let location = server.attributes.get_str("tango.client_ident.location").unwrap_or_default();
    location.strip_prefix(&format!("giop:tcp:{client}:")).and_then(|port| port.parse().ok()).unwrap_or_else(
        || panic!("expected the request to come from {client} over TCP: location {location:?}"),
    )
}

/// Fails unless `span` carries the link key of a request from `client` to `server`:
/// `<client ip>:<port>><server ip>:<port>#<seq>`, the client's port being `client_port` if known.
fn assert_key(
    span: &SpanJson,
    client: Ipv4Addr,
    client_port: Option<i64>,
    server: (Ipv4Addr, u16),
    what: &str,
) {
    let key = span.attributes.get_str(KEY_ATTRIBUTE).unwrap_or_else(|| {
        panic!("{what}: expected {} {} to carry {KEY_ATTRIBUTE}: {span:?}", span.kind, span.name)
    });
    let parsed = key.split_once('>').and_then(|(from, rest)| {
        let (to, seq) = rest.split_once('#')?;
        let (from_ip, from_port) = from.rsplit_once(':')?;
        Some((from_ip.to_owned(), from_port.parse::<i64>().ok()?, to.to_owned(), seq.parse::<u32>().ok()?))
    });
    let Some((from_ip, from_port, to, _seq)) = parsed else {
        panic!("{what}: {KEY_ATTRIBUTE} {key:?} is not <client ip>:<port>><server ip>:<port>#<seq>")
    };
    assert_eq!(from_ip, client.to_string(), "{what}: the key's client end: {key}");
    if let Some(port) = client_port {
        assert_eq!(from_port, port, "{what}: the key's client port: {key}");
    }
    assert_eq!(to, format!("{}:{}", server.0, server.1), "{what}: the key's server end: {key}");
}

/// Fails unless `server` is a root (no dangling parent) carrying the client's address and port and
/// the link key of the request, from `client` to `server_end`.
fn assert_unlinked_root(server: &SpanJson, client: Ipv4Addr, server_end: (Ipv4Addr, u16), what: &str) {
    assert!(
        is_root(server),
        "{what}: expected a root SERVER span (no daemon could link it), found parent {:?}: {server:?}",
        server.parent_span_id
    );
    let port = client_port(server, client);
    assert_eq!(
        server.attributes.get_str("client.address"),
        Some(client.to_string().as_str()),
        "{what}: expected client.address {client} on the unlinked root: {server:?}"
    );
    assert_eq!(
        server.attributes.get_i64("client.port"),
        Some(port),
        "{what}: expected client.port {port} (the connection's) on the unlinked root: {server:?}"
    );
    assert_key(server, client, Some(port), server_end, what);
}

/// Waits until `done` holds for `daemon`'s spans; the time it did (ns since the epoch).
fn wait_until(daemon: &HostDaemon, timeout: Duration, what: &str, done: impl Fn(&[SpanJson]) -> bool) -> u64 {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if done(&daemon.spans()) {
            return now_ns();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {timeout:?}; host {}'s daemon exported:\n{}",
            daemon.host,
            excerpt(&daemon.spans())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Remote ports of the TCP connections from `client` to `server_port` established in the network
/// namespace of process `server_pid` (`/proc/PID/net/tcp`).
fn connections_from(server_pid: u32, server_port: u16, client: Ipv4Addr) -> Vec<u16> {
    let table = std::fs::read_to_string(format!("/proc/{server_pid}/net/tcp")).unwrap_or_default();
    let client_hex = format!("{:08X}", u32::from_le_bytes(client.octets()));
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, state) = (fields.get(1)?, fields.get(2)?, fields.get(3)?);
            let local_port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
            let (remote_ip, remote_port) = remote.split_once(':')?;
            // 01: ESTABLISHED
            (*state == "01" && local_port == server_port && remote_ip == client_hex)
                .then(|| u16::from_str_radix(remote_port, 16).ok())
                .flatten()
        })
        .collect()
}

/// Closes a running script's stdin (it ends) and returns the JSON object it printed last.
fn finish_script(proc: &mut crate::harness::Proc) -> serde_json::Value {
    drop(proc.child.stdin.take());
    let mut stdout = String::new();
    if let Some(mut out) = proc.child.stdout.take() {
        out.read_to_string(&mut stdout).expect("reading the script's output");
    }
    let status = proc.child.wait().expect("waiting for the script");
    assert!(status.success(), "{} failed: {status}", proc.name);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{} output {stdout:?}: {e}", proc.name))
}

/// The counter `stage.name` of a `ctl stats --json` answer of host `host`'s daemon.
fn counter(stats: &serde_json::Value, host: &str, name: &str) -> u64 {
    stats["counters"][name].as_u64().unwrap_or_else(|| {
        panic!("expected a counter {name} in ctl stats of host {host}'s daemon, found {}", stats["counters"])
    })
}

/// `stepped_client.py` in a host: connected (one call made) when [`Stepped::start`] returns.
struct Stepped {
    proc: crate::harness::Proc,
    out: BufReader<std::process::ChildStdout>,
    /// Calls made so far.
    calls: usize,
}

impl Stepped {
    fn start(host: &Host, url: &str) -> Stepped {
        let mut proc = host.spawn_script("stepped_client.py", &[url], &[]);
        let out = BufReader::new(proc.child.stdout.take().expect("piped stdout"));
        let mut stepped = Stepped { proc, out, calls: 0 };
        stepped.read_calls();
        assert_eq!(stepped.calls, 1, "stepped_client.py connects with one call");
        stepped
    }

    fn read_calls(&mut self) {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("reading stepped_client.py");
        let out: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stepped_client.py printed {line:?} ({e}); did it fail?"));
        self.calls = out["calls"].as_u64().expect("calls") as usize;
    }

    /// `n` more calls, done when this returns.
    fn step(&mut self, n: usize) {
        let stdin = self.proc.child.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "{n}").and_then(|()| stdin.flush()).expect("writing to stepped_client.py");
        self.read_calls();
    }

    /// Ends it (stdin closed); its number of calls.
    fn finish(&mut self) -> usize {
        drop(self.proc.child.stdin.take());
        let status = self.proc.child.wait().expect("waiting for stepped_client.py");
        assert!(status.success(), "stepped_client.py failed: {status}");
        self.calls
    }
}

/// Waits until `done` holds for the spans of `daemons` (in their order), and still holds
/// [`SETTLE`] later: what a daemon exports comes in batches, so a moment when both sides have
/// exported as much of a finished exchange may precede the batch with the rest.
fn wait_settled(daemons: &[&HostDaemon], what: &str, done: impl Fn(&[Vec<SpanJson>]) -> bool) {
    let spans = || daemons.iter().map(|d| d.spans()).collect::<Vec<_>>();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if done(&spans()) {
            std::thread::sleep(SETTLE);
            if done(&spans()) {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}; the daemons exported:\n{}",
            excerpt(&spans().concat())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_call_from_host_a_to_a_device_on_host_b_is_one_trace() {
    let hosts = Hosts::new("xh-ab", &["a", "b"], Scope::Netns);
    let (a, b) = (hosts.get("a"), hosts.get("b"));
    let server = b.start_demo_server("xhab", &["test/hostb/1"]);
    let url = server.url("test/hostb/1");
    // A client whose connection was opened before either daemon started.
    let mut early = Stepped::start(a, &url);
    let early_ports = connections_from(server.proc.pid(), server.port, a.address);
    assert_eq!(early_ports.len(), 1, "the early client's one connection to b: {early_ports:?}");
    let mut daemon_a = start_daemon(a, hosts.key_file());
    let mut daemon_b = start_daemon(b, hosts.key_file());

    let out = a.run_script(
        "demo_client.py",
        &[&url, "read_attribute", "write_attribute", "command_inout", "fail"],
        &[],
    );
    assert_eq!(
        out["steps"],
        serde_json::json!({"read_attribute": "ok", "write_attribute": "ok", "command_inout": "ok",
                           "fail": "DevFailed:BoomReason"}),
        "{out}"
    );
    let pid = out["pid"].as_i64().expect("client pid");
    const EARLY_CALLS: usize = 10;
    early.step(EARLY_CALLS);
    let early_pid = i64::from(early.proc.pid());
    let early_done = early.finish();
    let of = |pid: i64| move |s: &&SpanJson| s.attributes.get_i64("tango.client_ident.pid") == Some(pid);
    wait_settled(&[&daemon_a, &daemon_b], "every call of both clients exported on both hosts", |spans| {
        let (spans_a, spans_b) = (&spans[0], &spans[1]);
        let clients = |p: i64| spans_a.iter().filter(|s| s.kind == "CLIENT" && pid_of(s) == Some(p)).count();
        spans_b.iter().filter(of(pid)).count() == 4
            && clients(pid) == 4
            // One short: told apart below, with its own message.
            && spans_b.iter().filter(of(early_pid)).count() >= EARLY_CALLS - 1
            && clients(early_pid) == EARLY_CALLS
    });
    let stats_b = daemon_b.stats();
    assert!(
        counter(&stats_b, "b", "crosshost.answered") > 0,
        "expected b's lookups answered by a's daemon counted in crosshost.answered:\n{}",
        stats_b["counters"]
    );
    daemon_a.stop();
    daemon_b.stop();
    let (spans_a, spans_b) = (daemon_a.spans(), daemon_b.spans());
    let all = all_spans(&[&daemon_a, &daemon_b]);

    for (client_name, server_name, arg) in [
        (READ_CLIENT, READ_SERVER, None),
        (WRITE_CLIENT, WRITE_SERVER, None),
        (COMMAND_CLIENT, COMMAND_SERVER, Some("Echo")),
        (COMMAND_CLIENT, COMMAND_SERVER, Some("Fail")),
    ] {
        let client = client_span(&spans_a, pid, client_name, arg, &all);
        let served = server_span(&spans_b, pid, server_name, arg, &all);
        // Over TCP from a's address (the premise: the call crossed hosts).
        client_port(served, a.address);
        assert_child_of(served, client, &format!("{server_name}({arg:?}) on b, called from a"), &all);
        assert_one_tree(&all, &client.trace_id, &format!("the call {client_name}({arg:?}) from a to b"));
    }
    let failed = server_span(&spans_b, pid, COMMAND_SERVER, Some("Fail"), &all);
    assert_eq!(failed.status.code, 2, "the failing command is an error on b: {failed:?}");

    // The calls on the connection opened before the daemons: each linked to its own client span.
    assert_eq!(early_done, 1 + EARLY_CALLS);
    let mut early_clients: Vec<&SpanJson> =
        spans_a.iter().filter(|s| s.kind == "CLIENT" && pid_of(s) == Some(early_pid)).collect();
    let mut early_served: Vec<&SpanJson> = spans_b.iter().filter(of(early_pid)).collect();
    early_clients.sort_by_key(|s| s.start_ns);
    early_served.sort_by_key(|s| s.start_ns);
    assert_eq!(
        early_served.len(),
        EARLY_CALLS,
        "expected b's daemon to trace all {EARLY_CALLS} calls made on a connection opened before it started \
         (the first one's receive was already pending in the server when the daemon started):\n{}",
        excerpt(&early_served.iter().map(|s| (*s).clone()).collect::<Vec<_>>())
    );
    for (client, served) in early_clients.iter().zip(&early_served) {
        assert_eq!(
            i64::from(early_ports[0]),
            client_port(served, a.address),
            "the premise: the early client's calls use the connection it opened before the daemons"
        );
        assert_child_of(served, client, "a call on a connection opened before the daemons started", &all);
    }
    daemon_a.assert_only_from(a);
    daemon_b.assert_only_from(b);
}

/// B's Demo device reads the `temperature` of a device on another host while serving
/// `ReadPeer`: A → B → C, and A → B → A.
#[test]
fn chains_over_three_hosts_and_back_are_one_trace_each() {
    let hosts = Hosts::new("xh-chain", &["a", "b", "c"], Scope::Netns);
    let (a, b, c) = (hosts.get("a"), hosts.get("b"), hosts.get("c"));
    let server_a = a.start_demo_server("xhchaina", &["test/hosta/1"]);
    let server_b = b.start_demo_server("xhchainb", &["test/hostb/1"]);
    let server_c = c.start_demo_server("xhchainc", &["test/hostc/1"]);
    let mut daemons: Vec<HostDaemon> = [a, b, c].iter().map(|h| start_daemon(h, hosts.key_file())).collect();

    let b_url = server_b.url("test/hostb/1");
    let to_c = a.run_script("demo_client.py", &[&b_url, &server_c.url("test/hostc/1"), "nested"], &[]);
    let back_to_a = a.run_script("demo_client.py", &[&b_url, &server_a.url("test/hosta/1"), "nested"], &[]);
    for out in [&to_c, &back_to_a] {
        assert_eq!(out["steps"]["nested"], "ok", "{out}");
    }
    let b_pid = i64::from(server_b.proc.pid());
    let client_pids = [to_c["pid"].as_i64(), back_to_a["pid"].as_i64()];
    let [spans_of_a, spans_of_b, spans_of_c] = [&daemons[0], &daemons[1], &daemons[2]];
    wait_settled(&[spans_of_a, spans_of_b, spans_of_c], "every span of both chains exported", |spans| {
        let count = |spans: &[SpanJson], kind: &str, pid: Option<i64>, ident: Option<i64>| {
            spans
                .iter()
                .filter(|s| {
                    s.kind == kind
                        && pid.is_none_or(|p| pid_of(s) == Some(p))
                        && ident.is_none_or(|p| s.attributes.get_i64("tango.client_ident.pid") == Some(p))
                })
                .count()
        };
        client_pids
            .iter()
            .all(|&p| count(&spans[0], "CLIENT", p, None) == 1 && count(&spans[1], "SERVER", None, p) == 1)
            && count(&spans[1], "CLIENT", Some(b_pid), None) >= 2
            && count(&spans[0], "SERVER", None, Some(b_pid)) == 1
            && count(&spans[2], "SERVER", None, Some(b_pid)) == 1
    });
    for daemon in &mut daemons {
        daemon.stop();
    }
    let [daemon_a, daemon_b, daemon_c] = &daemons[..] else { panic!("three daemons") };
    let all = all_spans(&[daemon_a, daemon_b, daemon_c]);
    let (spans_a, spans_b, spans_c) = (daemon_a.spans(), daemon_b.spans(), daemon_c.spans());

    for (out, last_host, last_spans, target) in
        [(&to_c, "c", &spans_c, "test/hostc/1"), (&back_to_a, "a", &spans_a, "test/hosta/1")]
    {
        let chain = format!("a → b → {last_host}");
        let pid = out["pid"].as_i64().expect("client pid");
        let client = client_span(&spans_a, pid, COMMAND_CLIENT, Some("ReadPeer"), &all);
        let served = server_span(&spans_b, pid, COMMAND_SERVER, Some("ReadPeer"), &all);
        assert_child_of(served, client, &format!("{chain}: ReadPeer on b"), &all);
        let nested = only(
            &spans_b,
            &format!("CLIENT {READ_CLIENT} of b's device to {target}"),
            |s| {
                s.kind == "CLIENT"
                    && s.name == READ_CLIENT
                    && pid_of(s) == Some(b_pid)
                    && s.attributes.get_str("tango.operation.target") == Some(target)
            },
            &all,
        );
        assert_child_of(nested, served, &format!("{chain}: b's nested read"), &all);
        let end = only(
            last_spans,
            &format!("SERVER {READ_SERVER} on {last_host} of b's request"),
            |s| {
                s.kind == "SERVER"
                    && s.name == READ_SERVER
                    && s.attributes.get_i64("tango.client_ident.pid") == Some(b_pid)
            },
            &all,
        );
        assert_child_of(end, nested, &format!("{chain}: the read served on {last_host}"), &all);
        assert!(is_root(client), "{chain}: the client's call starts the trace: {client:?}");
        assert_one_tree(&all, &client.trace_id, &chain);
    }
    daemon_a.assert_only_from(a);
    daemon_b.assert_only_from(b);
    daemon_c.assert_only_from(c);
}

/// Debian's DataBaseds and TangoTest 9.3.4 on B, a PyTango client on A with TANGO_HOST on B: the
/// database lookup and the device calls are each one trace across the hosts.
#[test]
fn tangotest_and_its_database_on_b_called_from_a_are_linked() {
    let hosts = Hosts::new("xh-db", &["a", "b"], Scope::Netns);
    let (a, b) = (hosts.get("a"), hosts.get("b"));
    let stack = b.start_db_stack();
    let tango_host = stack.tango_host();
    assert!(tango_host.starts_with(&format!("{}:", b.address)), "DataBaseds listens on b: {tango_host}");
    let tangotest = b.start_tangotest(&stack, "test");
    let mut daemon_a = start_daemon(a, hosts.key_file());
    let mut daemon_b = start_daemon(b, hosts.key_file());

    let out = a.run_script(
        "legacy_client.py",
        &[&tangotest.device, "read_attribute=double_scalar", "command_inout=DevString:abc"],
        &[("TANGO_HOST", &tango_host)],
    );
    assert_eq!(out["steps"]["read_attribute=double_scalar"], "ok", "{out}");
    assert_eq!(out["steps"]["command_inout=DevString:abc"], "ok", "{out}");
    let pid = out["pid"].as_i64().expect("client pid");
    wait_settled(&[&daemon_a, &daemon_b], "every call of the client exported on both hosts", |spans| {
        let clients = spans[0].iter().filter(|s| s.kind == "CLIENT" && pid_of(s) == Some(pid)).count();
        let served = spans[1]
            .iter()
            .filter(|s| s.kind == "SERVER" && s.attributes.get_i64("tango.client_ident.pid") == Some(pid))
            .count();
        // Two device calls and at least one database lookup.
        clients >= 3 && served == clients
    });
    daemon_a.stop();
    daemon_b.stop();
    let (spans_a, spans_b) = (daemon_a.spans(), daemon_b.spans());
    let all = all_spans(&[&daemon_a, &daemon_b]);

    // Every database call (DbImportDevice of the device and of its admin device, DbGetProperty),
    // one after the other on one thread: the n-th served is the child of the n-th made.
    let mut lookups: Vec<&SpanJson> = spans_a
        .iter()
        .filter(|s| {
            s.kind == "CLIENT"
                && pid_of(s) == Some(pid)
                && s.attributes.get_str("tango.operation.target") == Some("sys/database/2")
        })
        .collect();
    let mut served_lookups: Vec<&SpanJson> = spans_b
        .iter()
        .filter(|s| {
            s.kind == "SERVER"
                && s.resource.get_str("service.name") == Some("DataBase")
                && s.attributes.get_i64("tango.client_ident.pid") == Some(pid)
        })
        .collect();
    lookups.sort_by_key(|s| s.start_ns);
    served_lookups.sort_by_key(|s| s.start_ns);
    assert!(
        lookups.iter().any(|s| argument(s) == Some("DbImportDevice")),
        "a's client imported the device from the database on b:\n{}",
        excerpt(&all)
    );
    assert_eq!(
        lookups.len(),
        served_lookups.len(),
        "every database call from a served by DataBaseds on b:\n{}",
        excerpt(&all)
    );
    for (lookup, served) in lookups.iter().zip(&served_lookups) {
        assert_eq!(argument(served), argument(lookup), "the database calls in order:\n{}", excerpt(&all));
        let what = format!("{:?} from a, served by DataBaseds on b", argument(lookup));
        assert_child_of(served, lookup, &what, &all);
        assert_one_tree(&all, &lookup.trace_id, &what);
    }

    let read = client_span(&spans_a, pid, READ_CLIENT, Some("double_scalar"), &all);
    let served = server_span(&spans_b, pid, READ_SERVER, None, &all);
    assert_eq!(served.resource.get_str("service.name"), Some("TangoTest"));
    assert_eq!(served.scope.version, "9.3.4", "served by cppTango 9.3.4");
    assert_child_of(served, read, "read_attribute from a, served by TangoTest 9.3.4 on b", &all);
    assert_one_tree(&all, &read.trace_id, "the read from a");
    let command = client_span(&spans_a, pid, COMMAND_CLIENT, Some("DevString"), &all);
    let commanded = server_span(&spans_b, pid, COMMAND_SERVER, Some("DevString"), &all);
    assert_child_of(commanded, command, "command_inout from a, served by TangoTest 9.3.4 on b", &all);
    daemon_a.assert_only_from(a);
    daemon_b.assert_only_from(b);
}

/// No daemon on A (nothing on its peer port, then something there that never answers): B's server
/// span waits at most `--peer-wait` and is exported as a root with the client's address, port and
/// the key. Then a daemon on A and none on B: A's client span carries the key.
#[test]
fn without_a_daemon_on_the_other_host_spans_are_roots_carrying_the_key() {
    let hosts = Hosts::new("xh-alone", &["a", "b"], Scope::Netns);
    let (a, b) = (hosts.get("a"), hosts.get("b"));
    let server = b.start_demo_server("xhalone", &["test/hostb/1"]);
    let url = server.url("test/hostb/1");
    let server_end = (b.address, server.port);

    // A call from a with a new daemon on b only: b's server span must be an unlinked root and come
    // out within --peer-wait; b's counters then.
    let unlinked_call = |what: &str| -> serde_json::Value {
        let mut daemon_b = start_daemon(b, hosts.key_file());
        let out = a.run_script("demo_client.py", &[&url, "read_attribute"], &[]);
        let pid = out["pid"].as_i64().expect("client pid");
        let of_client =
            |s: &SpanJson| s.kind == "SERVER" && s.attributes.get_i64("tango.client_ident.pid") == Some(pid);
        let arrived_ns =
            wait_until(&daemon_b, WAIT, "b's server span of a's call", |s| s.iter().any(of_client));
        let first = daemon_b.spans().into_iter().find(of_client).expect("found above");
        let held_ns = arrived_ns.saturating_sub(first.end_ns);
        eprintln!("{what}: b's server span reached the receiver {} ms after it ended", held_ns / 1_000_000);
        assert!(
            held_ns <= PEER_WAIT_NS + EXPORT_MARGIN_NS,
            "{what}: b's server span must be exported after at most --peer-wait ({PEER_WAIT}) plus the \
             export ({} ms margin); it arrived {} ms after it ended",
            EXPORT_MARGIN_NS / 1_000_000,
            held_ns / 1_000_000
        );
        let stats = daemon_b.stats();
        daemon_b.stop();
        let spans_b = daemon_b.spans();
        let served = server_span(&spans_b, pid, READ_SERVER, None, &spans_b);
        assert_unlinked_root(served, a.address, server_end, what);
        daemon_b.assert_only_from(b);
        stats
    };

    let stats = unlinked_call("no daemon on a");
    assert!(
        counter(&stats, "b", "crosshost.no_daemon") > 0,
        "expected b's lookup of a (nothing listens there) counted in crosshost.no_daemon:\n{}",
        stats["counters"]
    );
    // Something on a's peer port that never answers: b gives up after --peer-wait.
    let silent = a.in_netns(|| TcpListener::bind((a.address, PEER_PORT)).expect("a silent peer port on a"));
    let stats = unlinked_call("a peer port on a that never answers");
    drop(silent);
    assert!(
        counter(&stats, "b", "peers.connect_timeouts") > 0,
        "expected b's link to the silent port on a counted in peers.connect_timeouts:\n{}",
        stats["counters"]
    );

    let mut daemon_a = start_daemon(a, hosts.key_file());
    let out = a.run_script("demo_client.py", &[&url, "read_attribute"], &[]);
    let pid = out["pid"].as_i64().expect("client pid");
    wait_until(&daemon_a, WAIT, "a's client span", |s| {
        s.iter().any(|x| x.kind == "CLIENT" && pid_of(x) == Some(pid))
    });
    daemon_a.stop();
    let spans_a = daemon_a.spans();
    let client = client_span(&spans_a, pid, READ_CLIENT, None, &spans_a);
    assert_key(client, a.address, None, server_end, "a daemon on a, none on b: a's client span");
    daemon_a.assert_only_from(a);
}

/// A's daemon has another key than B's: B's lookups are refused (and counted), B's spans are
/// roots; both sides carry the same key, so a backend can still join them.
#[test]
fn a_peer_with_the_wrong_key_is_refused_and_both_sides_carry_the_same_key() {
    let hosts = Hosts::new("xh-wrongkey", &["a", "b"], Scope::Netns);
    let (a, b) = (hosts.get("a"), hosts.get("b"));
    let server = b.start_demo_server("xhwrongkey", &["test/hostb/1"]);
    let server_end = (b.address, server.port);
    let mut daemon_a = start_daemon(a, &hosts.other_key_file("a"));
    let mut daemon_b = start_daemon(b, hosts.key_file());

    let out = a.run_script(
        "demo_client.py",
        &[&server.url("test/hostb/1"), "read_attribute", "command_inout"],
        &[],
    );
    let pid = out["pid"].as_i64().expect("client pid");
    wait_until(&daemon_b, WAIT, "b's two server spans of a's calls", |s| {
        s.iter()
            .filter(|x| x.kind == "SERVER" && x.attributes.get_i64("tango.client_ident.pid") == Some(pid))
            .count()
            >= 2
    });
    let stats = [daemon_a.stats(), daemon_b.stats()];
    daemon_a.stop();
    daemon_b.stop();
    let (spans_a, spans_b) = (daemon_a.spans(), daemon_b.spans());
    let all = all_spans(&[&daemon_a, &daemon_b]);

    let [stats_a, stats_b] = &stats;
    // b asked a and was refused: its lookups are counted refused, the link refused both ways.
    for (stats, host, name) in [
        (stats_b, "b", "crosshost.refused"),
        (stats_b, "b", "peers.refused_outbound"),
        (stats_a, "a", "peers.refused_inbound"),
    ] {
        assert!(
            counter(stats, host, name) > 0,
            "expected the wrong key counted in {name} of host {host}'s daemon:\n{}",
            stats["counters"]
        );
    }
    // Neither learnt anything from the other.
    for (stats, host, name) in [
        (stats_b, "b", "peers.linked_peers"),
        (stats_b, "b", "peers.received_calls"),
        (stats_b, "b", "peers.received_progress"),
        (stats_b, "b", "crosshost.answered"),
        (stats_a, "a", "peers.subscriptions_served"),
        (stats_a, "a", "peers.received_subscribes"),
    ] {
        assert_eq!(
            counter(stats, host, name),
            0,
            "a peer with the wrong key gets nothing and is not believed: {name} of host {host}'s daemon:\n{}",
            stats["counters"]
        );
    }
    for (client_name, server_name, arg) in
        [(READ_CLIENT, READ_SERVER, None), (COMMAND_CLIENT, COMMAND_SERVER, Some("Echo"))]
    {
        let what = format!("{server_name}({arg:?}) with the wrong key on a");
        let served = server_span(&spans_b, pid, server_name, arg, &all);
        assert_unlinked_root(served, a.address, server_end, &what);
        let client = client_span(&spans_a, pid, client_name, arg, &all);
        assert_key(client, a.address, Some(client_port(served, a.address)), server_end, &what);
        assert_eq!(
            client.attributes.get_str(KEY_ATTRIBUTE),
            served.attributes.get_str(KEY_ATTRIBUTE),
            "{what}: both sides must carry the same key"
        );
    }
    daemon_a.assert_only_from(a);
    daemon_b.assert_only_from(b);
}

/// A's daemon is killed while a client on A keeps calling B, then started again: meanwhile B's
/// spans are roots with the key (no dangling parent), and soon after the restart calls are
/// linked again (the client's connection predates the new daemon).
#[test]
fn a_daemon_killed_and_restarted_is_linked_again_within_seconds() {
    let hosts = Hosts::new("xh-restart", &["a", "b"], Scope::Netns);
    let (a, b) = (hosts.get("a"), hosts.get("b"));
    let server = b.start_demo_server("xhrestart", &["test/hostb/1"]);
    let server_end = (b.address, server.port);
    let mut daemon_b = start_daemon(b, hosts.key_file());
    let mut first_a = start_daemon(a, hosts.key_file());
    let mut client = a.spawn_script("paced_loop.py", &[&server.url("test/hostb/1"), "20", "stdin"], &[]);
    let client_pid = i64::from(client.pid());
    let of_client = |s: &&SpanJson| {
        s.kind == "SERVER" && s.attributes.get_i64("tango.client_ident.pid") == Some(client_pid)
    };
    let linked_to = |daemon: &HostDaemon, served: &[SpanJson], after_ns: u64| -> Vec<SpanJson> {
        let clients: HashSet<(String, String)> = daemon
            .spans()
            .into_iter()
            .filter(|s| s.kind == "CLIENT")
            .map(|s| (s.trace_id, s.span_id))
            .collect();
        served
            .iter()
            .filter(of_client)
            .filter(|s| {
                s.start_ns > after_ns && clients.contains(&(s.trace_id.clone(), s.parent_span_id.clone()))
            })
            .cloned()
            .collect()
    };

    wait_until(&daemon_b, WAIT, "three of the client's calls linked before the kill", |s| {
        linked_to(&first_a, s, 0).len() >= 3
    });
    first_a.kill();
    let killed_ns = now_ns();
    wait_until(&daemon_b, WAIT, "a root server span with the key while a has no daemon", |s| {
        s.iter().filter(of_client).any(|x| x.start_ns > killed_ns && is_root(x))
    });
    let mut second_a = start_daemon(a, hosts.key_file());
    let restarted_ns = second_a.ready_ns;
    wait_until(&daemon_b, RELINK_WITHIN, "calls linked again after a's daemon restarted", |s| {
        !linked_to(&second_a, s, restarted_ns).is_empty()
    });
    wait_until(&daemon_b, WAIT, "ten calls linked since the restart", |s| {
        linked_to(&second_a, s, restarted_ns).len() >= 10
    });
    let out = finish_script(&mut client);
    assert_eq!(out["failed"], 0, "{out}");
    // b ran throughout: it serves and exports every call the client made, linked or not.
    let calls = out["calls"].as_u64().expect("calls") as usize;
    wait_until(&daemon_b, WAIT, "a server span for every call of the client", |s| {
        s.iter().filter(of_client).count() == calls
    });
    second_a.stop();
    daemon_b.stop();
    let spans_b = daemon_b.spans();
    let all = all_spans(&[&first_a, &second_a, &daemon_b]);

    let relinked = linked_to(&second_a, &spans_b, restarted_ns);
    let first_relinked = relinked.iter().map(|s| s.start_ns).min().expect("waited for above");
    eprintln!(
        "the first call linked again started {} ms after a's new daemon was ready",
        first_relinked.saturating_sub(restarted_ns) / 1_000_000
    );
    assert!(
        first_relinked.saturating_sub(restarted_ns) <= RELINK_WITHIN.as_nanos() as u64,
        "expected calls to be linked again within {RELINK_WITHIN:?} of the restart, the first was {} ms after",
        (first_relinked - restarted_ns) / 1_000_000
    );
    let second_spans = second_a.spans();
    let second_clients: HashSet<&str> = second_spans.iter().map(|s| s.span_id.as_str()).collect();
    for served in spans_b.iter().filter(of_client).filter(|s| s.start_ns > killed_ns) {
        if is_root(served) {
            assert!(
                served.start_ns < first_relinked,
                "expected every call after the first relinked one ({first_relinked}) to be linked, this one is \
                 a root: {served:?}"
            );
            assert_unlinked_root(served, a.address, server_end, "a call while a had no daemon");
        } else {
            assert!(
                second_clients.contains(served.parent_span_id.as_str()),
                "no dangling parent: a call after a's daemon was killed is either a root or the child of a span \
                 of the new daemon on a, found parent {:?}:\n{}",
                served.parent_span_id,
                traces_of(&all, &[served])
            );
        }
    }
    second_a.assert_only_from(a);
    daemon_b.assert_only_from(b);
}

/// Several requests in flight at once, linked each to its own client span: 40 requests written in
/// one send on one connection (reads and failing commands, each failure with its own reason), and
/// PyTango asynchronous calls from one DeviceProxy.
#[test]
fn requests_in_flight_together_are_each_linked_to_their_own_client_span() {
    let hosts = Hosts::new("xh-inflight", &["a", "b"], Scope::Netns);
    let (a, b) = (hosts.get("a"), hosts.get("b"));
    let server = b.start_demo_server("xhinflight", &["test/hostb/1"]);
    let mut daemon_a = start_daemon(a, hosts.key_file());
    let mut daemon_b = start_daemon(b, hosts.key_file());
    let server_pid = i64::from(server.proc.pid());

    const PIPELINED: u64 = 40;
    let pipelined_start = now_ns();
    let pipelined = a.run_script(
        "pipelined_client.py",
        &[&format!("{}:{}", b.address, server.port), "test/hostb/1", &PIPELINED.to_string(), "--tag-reasons"],
        &[],
    );
    let pipelined_end = now_ns();
    assert_eq!(pipelined["replies"].as_u64(), Some(PIPELINED), "{pipelined}");
    assert_eq!(pipelined["wrong_status"].as_u64(), Some(0), "{pipelined}");
    assert_eq!(pipelined["sends"].as_u64(), Some(1), "all requests in one send: {pipelined}");

    const ROUNDS: usize = 8;
    let asynch = a.run_script(
        "asynch_client.py",
        &[&server.url("test/hostb/1"), &ROUNDS.to_string()],
        &[("ORBoneCallPerConnection", "0")],
    );
    let asynch_pid = asynch["pid"].as_i64().expect("client pid");
    let windows: Vec<(u64, u64)> = asynch["rounds"]
        .as_array()
        .expect("rounds")
        .iter()
        .map(|w| (w[0].as_u64().expect("start"), w[1].as_u64().expect("end")))
        .collect();
    assert_eq!(windows.len(), ROUNDS);
    let of_asynch = |s: &SpanJson| s.attributes.get_i64("tango.client_ident.pid") == Some(asynch_pid);
    wait_until(&daemon_b, WAIT, "every request served", |s| {
        s.iter().filter(|x| x.kind == "SERVER" && of_asynch(x)).count() >= 4 * ROUNDS
            && s.iter()
                .filter(|x| {
                    x.kind == "SERVER" && x.start_ns >= pipelined_start && x.start_ns <= pipelined_end
                })
                .count() as u64
                >= PIPELINED
    });
    daemon_a.stop();
    daemon_b.stop();
    let (spans_a, spans_b) = (daemon_a.spans(), daemon_b.spans());
    let all = all_spans(&[&daemon_a, &daemon_b]);

    // The pipelined requests: each server span is the child of its own client span.
    let pipelined_pid = pipelined["pid"].as_i64().expect("client pid");
    let clients: HashMap<&str, &SpanJson> = spans_a
        .iter()
        .filter(|s| s.kind == "CLIENT" && pid_of(s) == Some(pipelined_pid))
        .map(|s| (s.span_id.as_str(), s))
        .collect();
    assert_eq!(clients.len() as u64, PIPELINED, "a traced every request:\n{}", excerpt(&spans_a));
    let served: Vec<&SpanJson> = spans_b
        .iter()
        .filter(|s| {
            s.kind == "SERVER"
                && pid_of(s) == Some(server_pid)
                && s.start_ns >= pipelined_start
                && s.start_ns <= pipelined_end
        })
        .collect();
    assert_eq!(served.len() as u64, PIPELINED, "b traced every request:\n{}", excerpt(&spans_b));
    let locations: HashSet<&str> =
        served.iter().filter_map(|s| s.attributes.get_str("tango.client_ident.location")).collect();
    assert_eq!(locations.len(), 1, "the premise: one connection, found {locations:?}");
    let reason = |span: &SpanJson| -> Option<String> {
        span.events.iter().filter_map(|e| e.attributes.get_str("exception.message")).find_map(|m| {
            let at = m.find("REASON:B")?;
            m.get(at + 7..at + 11).map(str::to_owned)
        })
    };
    let mut parents = HashSet::new();
    for server_span in &served {
        let client = clients.get(server_span.parent_span_id.as_str()).unwrap_or_else(|| {
            panic!(
                "a pipelined request: expected its server span to be the child of one of the {PIPELINED} client \
                 spans on a, found parent {:?}:\n{}",
                server_span.parent_span_id,
                traces_of(&all, &[server_span])
            )
        });
        assert_child_of(server_span, client, "a pipelined request", &all);
        assert!(parents.insert(client.span_id.as_str()), "two server spans under one client span {client:?}");
        let kind = |name: &str| if name.contains("read_attribute") { "read" } else { "command" };
        assert_eq!(
            kind(&server_span.name),
            kind(&client.name),
            "a pipelined request linked to the client span of another request: {server_span:?}\n{client:?}"
        );
        assert_eq!(
            reason(server_span),
            reason(client),
            "a failing pipelined request linked to the client span of another one (reasons differ)"
        );
    }
    assert_eq!(
        served.iter().filter(|s| reason(s).is_some()).count() as u64,
        PIPELINED / 2,
        "every failing command carries its own reason on the server span"
    );

    // The asynchronous calls: within each round, each served request is the child of the client
    // span of the same operation.
    let mut shared_connection = false;
    for (round, &(start, end)) in windows.iter().enumerate() {
        let in_round = |s: &&SpanJson| s.start_ns >= start && s.start_ns <= end;
        let round_served: Vec<&SpanJson> =
            spans_b.iter().filter(|s| s.kind == "SERVER" && of_asynch(s)).filter(in_round).collect();
        let round_clients: Vec<SpanJson> = spans_a
            .iter()
            .filter(|s| s.kind == "CLIENT" && pid_of(s) == Some(asynch_pid))
            .filter(in_round)
            .cloned()
            .collect();
        assert_eq!(round_served.len(), 4, "round {round}: four requests served:\n{}", excerpt(&all));
        let mut by_location: HashMap<&str, usize> = HashMap::new();
        for served in &round_served {
            *by_location
                .entry(served.attributes.get_str("tango.client_ident.location").unwrap_or_default())
                .or_default() += 1;
            let (client_name, arg) = match served.name.as_str() {
                READ_SERVER => (READ_CLIENT, None),
                WRITE_SERVER => (WRITE_CLIENT, None),
                COMMAND_SERVER => (COMMAND_CLIENT, argument(served)),
                other => panic!("round {round}: unexpected server span {other}"),
            };
            let client = only(
                &round_clients,
                &format!("round {round}: CLIENT {client_name}({arg:?})"),
                |s| s.name == client_name && arg.is_none_or(|a| argument(s) == Some(a)),
                &all,
            );
            assert_child_of(
                served,
                client,
                &format!("round {round}: asynchronous {client_name}({arg:?})"),
                &all,
            );
        }
        shared_connection |= by_location.values().any(|&n| n > 1);
    }
    assert!(
        shared_connection,
        "the premise: with ORBoneCallPerConnection=0 some asynchronous requests of a round share a connection"
    );
    daemon_a.assert_only_from(a);
    daemon_b.assert_only_from(b);
}
