//! Simulated hosts on one machine: network namespaces on one Linux bridge, each with its own
//! Tango processes and its own tango-tracer daemon, as on the hosts of a facility.
//!
//! [`Hosts::new`] makes one network namespace per host (`tt-<pid>-<n>-<host>`), a bridge in the
//! root namespace (`tb<pid>_<n>`) holding the first address of a free `10.x.y.0/24` (the
//! management side: the test's OTLP receivers listen there, so daemons in the hosts export to
//! them), and one veth pair per host (`tv<pid>_<n><host>` in the bridge, `eth0` in the host with the
//! next address; `lo` up). The hosts are one L2 segment: no forwarding, no NAT. Everything is
//! removed on drop, also when the test panics: declare the [`Hosts`] before anything that runs in
//! them, so that those processes are stopped first. Leftovers of an earlier process that had this
//! process's pid are removed before the first set is made; names and subnets of other processes
//! are never touched (a subnet with any address or route of the root namespace is skipped).
//!
//! Inside a host everything runs under `nsenter --net=/run/netns/NAME` ([`Host::command`]): not
//! `ip netns exec`, which remounts `/sys` and hides tracefs from the daemon. Processes of a host
//! carry [`MARKER`] and `ORBclientTransportRule=* tcp`: every namespace shares the machine's
//! hostname and `/tmp`, so omniORB would otherwise take a server's Unix socket for a local one
//! and bypass the network; on real hosts the hostnames differ and TCP is what they use.
//!
//! How a host's daemon keeps to its host's processes is the [`Scope`]. Each daemon exports to an
//! OTLP receiver of its own ([`HostDaemon`]), so a test can tell which daemon made which span.

use std::{
    fs::File,
    io::Write as _,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener},
    os::{
        fd::AsRawFd as _,
        unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Mutex, Once, PoisonError,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tracer_export::json::SpanJson;

use crate::{
    dbstack::{DbStack, StackHost, TangoTestServer},
    harness::{
        DaemonExit, DaemonLaunch, DemoServer, MARKER, Proc, TracerDaemon, python, script, unique_marker,
        wait_for_address,
    },
    otlp_receiver::{OtlpReceiver, ReceiverOptions},
};

/// How long a server in a host gets to listen.
const SERVER_START: Duration = Duration::from_secs(30);

/// How each host's daemon is kept to its host's processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The daemon's own namespace filter, as on a real host: every host's processes carry the same
    /// marker, and each daemon gets `--netns /run/netns/<its host>` (it must leave the other
    /// hosts' processes out by itself).
    Netns,
    /// Each host's processes carry a marker of their own, which its daemon selects
    /// (`--select-env`); no `--netns`. For daemons without the namespace filter.
    MarkerPerHost,
}

/// A set of simulated hosts on one bridge, removed on drop.
pub struct Hosts {
    bridge: String,
    bridge_address: Ipv4Addr,
    /// Key files (see [`Hosts::key_file`]).
    dir: PathBuf,
    key: PathBuf,
    hosts: Vec<Host>,
}

/// One simulated host: a network namespace with one address on the bridge.
pub struct Host {
    /// Its name in the test (`a`, `b`, …).
    pub name: String,
    /// Its network namespace's name (`/run/netns/<netns>`).
    pub netns: String,
    /// Its address on the bridge.
    pub address: Ipv4Addr,
    veth: String,
    marker: String,
    scope: Scope,
    set_id: String,
    bridge_address: Ipv4Addr,
    daemons_started: AtomicU32,
    /// Processes started in it (servers, clients, DataBaseds): what its daemon may trace.
    pids: Mutex<Vec<u32>>,
}

/// Runs `ip <args>`; what it printed, or why it failed.
fn ip(args: &[&str]) -> Result<String, String> {
    let output = Command::new("ip").args(args).output().map_err(|e| format!("running ip {args:?}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

fn ip_checked(args: &[&str]) -> String {
    ip(args).unwrap_or_else(|e| panic!("setting up simulated hosts: {e}"))
}

/// Removes namespaces and links left by an earlier process with this process's pid (a test binary
/// that was killed): their names would clash. Others' are left alone.
fn remove_leftovers_of_this_pid() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let pid = std::process::id();
        let netns_prefix = format!("tt-{pid}-");
        for line in ip(&["netns", "list"]).unwrap_or_default().lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name.starts_with(&netns_prefix) {
                eprintln!("removing a leftover network namespace {name}");
                let _ = ip(&["netns", "del", name]);
            }
        }
        let link_prefixes = [format!("tb{pid}_"), format!("tv{pid}_")];
        for line in ip(&["-o", "link", "show"]).unwrap_or_default().lines() {
            // `7: name@peer: <FLAGS> …`
            let name = line.split(": ").nth(1).unwrap_or_default().split('@').next().unwrap_or_default();
            if link_prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                eprintln!("removing a leftover link {name}");
                let _ = ip(&["link", "del", name]);
            }
        }
    });
}

/// A `10.x.y.0/24` with no address or route of the root namespace in it, tried from a start
/// that differs per process and per set.
fn free_subnet(set: u32) -> (u8, u8) {
    const FIRST_X: u32 = 200;
    const SUBNETS: u32 = (255 - FIRST_X) * 256;
    let used = format!(
        "{}\n{}",
        ip(&["-4", "-o", "route", "show", "table", "all"]).unwrap_or_default(),
        ip(&["-4", "-o", "addr", "show"]).unwrap_or_default()
    );
    let words: Vec<&str> = used.split_whitespace().collect();
    let start = std::process::id().wrapping_mul(97).wrapping_add(set.wrapping_mul(13)) % SUBNETS;
    (0..SUBNETS)
        .map(|k| (start + k) % SUBNETS)
        .map(|i| ((FIRST_X + i / 256) as u8, (i % 256) as u8))
        .find(|(x, y)| {
            let prefix = format!("10.{x}.{y}.");
            !words.iter().any(|w| w.starts_with(&prefix))
        })
        .unwrap_or_else(|| panic!("no free 10.x.y.0/24 for simulated hosts"))
}

/// 64 random hex digits in a new file of mode 0600 (the daemons' `--peer-key`).
fn write_key(path: &Path) {
    let mut random = [0u8; 32];
    std::io::Read::read_exact(&mut File::open("/dev/urandom").expect("opening /dev/urandom"), &mut random)
        .expect("reading /dev/urandom");
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    writeln!(file, "{hex}").unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Now, in nanoseconds since the Unix epoch (the clock of span timestamps).
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or_default()
}

impl Hosts {
    /// Hosts named `names` (single lowercase letters), for the test `test`.
    pub fn new(test: &str, names: &[&str], scope: Scope) -> Hosts {
        static SETS: AtomicU32 = AtomicU32::new(0);
        // One set is made at a time in this process: subnets are chosen from what exists.
        static MAKING: Mutex<()> = Mutex::new(());
        crate::harness::require_root();
        remove_leftovers_of_this_pid();
        let _making = MAKING.lock().unwrap_or_else(PoisonError::into_inner);
        let pid = std::process::id();
        let set = SETS.fetch_add(1, Ordering::Relaxed);
        let set_id = format!("{pid}-{set}");
        let (x, y) = free_subnet(set);
        let bridge_address = Ipv4Addr::new(10, x, y, 1);
        let marker = unique_marker(test);
        let dir = std::env::temp_dir().join(format!("tango-hosts-{set_id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the hosts' directory");
        let mut hosts = Hosts {
            bridge: format!("tb{pid}_{set}"),
            bridge_address,
            key: dir.join("peer.key"),
            dir,
            hosts: Vec::new(),
        };
        write_key(&hosts.key);
        // From here on, Drop removes whatever was made.
        ip_checked(&["link", "add", &hosts.bridge, "type", "bridge"]);
        ip_checked(&["addr", "add", &format!("{bridge_address}/24"), "dev", &hosts.bridge]);
        ip_checked(&["link", "set", &hosts.bridge, "up"]);
        for (i, name) in names.iter().enumerate() {
            assert!(
                name.len() == 1 && name.chars().all(|c| c.is_ascii_lowercase()),
                "host names are single letters (interface names are short): {name}"
            );
            let host = Host {
                name: (*name).to_owned(),
                netns: format!("tt-{set_id}-{name}"),
                address: Ipv4Addr::new(10, x, y, 2 + i as u8),
                veth: format!("tv{pid}_{set}{name}"),
                marker: match scope {
                    Scope::Netns => marker.clone(),
                    Scope::MarkerPerHost => format!("{marker}-{name}"),
                },
                scope,
                set_id: set_id.clone(),
                bridge_address,
                daemons_started: AtomicU32::new(0),
                pids: Mutex::new(Vec::new()),
            };
            ip_checked(&["netns", "add", &host.netns]);
            hosts.hosts.push(host);
            let host = hosts.hosts.last().expect("just pushed");
            let ns = host.netns.as_str();
            ip_checked(&["link", "add", &host.veth, "type", "veth", "peer", "name", "eth0", "netns", ns]);
            ip_checked(&["link", "set", &host.veth, "master", &hosts.bridge, "up"]);
            ip_checked(&["-n", ns, "addr", "add", &format!("{}/24", host.address), "dev", "eth0"]);
            ip_checked(&["-n", ns, "link", "set", "eth0", "up"]);
            ip_checked(&["-n", ns, "link", "set", "lo", "up"]);
        }
        hosts
    }

    /// The host named `name`.
    pub fn get(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| panic!("no host {name}"))
    }

    /// Every host, in the order given.
    pub fn all(&self) -> &[Host] {
        &self.hosts
    }

    /// The bridge's address in the root namespace (reachable from every host).
    pub fn bridge_address(&self) -> Ipv4Addr {
        self.bridge_address
    }

    /// The key file all daemons of this set share (64 hex digits, mode 0600).
    pub fn key_file(&self) -> &Path {
        &self.key
    }

    /// Another key file (mode 0600) with a key of its own: a daemon that does not share the key.
    pub fn other_key_file(&self, name: &str) -> PathBuf {
        let path = self.dir.join(format!("{name}.key"));
        write_key(&path);
        path
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Removing one end of a veth pair removes both; a namespace goes with its last process.
        for host in &self.hosts {
            if let Err(e) = ip(&["link", "del", &host.veth]) {
                eprintln!("{e}");
            }
            if let Err(e) = ip(&["netns", "del", &host.netns]) {
                eprintln!("{e}");
            }
        }
        if let Err(e) = ip(&["link", "del", &self.bridge]) {
            eprintln!("{e}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Host {
    /// `/run/netns/<netns>`.
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }

    /// The marker value of this host's processes (see [`Scope`]).
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// The environment every process of this host gets.
    fn env(&self) -> Vec<(String, String)> {
        vec![
            (MARKER.to_owned(), self.marker.clone()),
            ("ORBclientTransportRule".to_owned(), "* tcp".to_owned()),
        ]
    }

    /// `program` run inside this host, with its marker and TCP as omniORB's transport; stdin closed.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.netns_path().display()))
            .arg("--")
            .arg(program)
            .env_remove("TANGO_TELEMETRY_ENABLE")
            .stdin(Stdio::null());
        for (name, value) in self.env() {
            command.env(name, value);
        }
        command
    }

    /// Runs `f` on a thread inside this host's network namespace.
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.netns_path();
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let ns = File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
                    // SAFETY: setns with a namespace file we hold open; it moves only this thread,
                    // which ends when `f` returns.
                    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns into {}: {}", path.display(), std::io::Error::last_os_error());
                    f()
                })
                .join()
                .unwrap_or_else(|_| panic!("the thread inside {} failed", path.display()))
        })
    }

    /// A port of this host's address that was free a moment ago.
    pub fn free_port(&self) -> u16 {
        let address = self.address;
        self.in_netns(move || {
            TcpListener::bind((address, 0))
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap_or_else(|e| panic!("binding an ephemeral port of {address}: {e}"))
        })
    }

    /// The inode of this host's network namespace (as `/proc/PID/ns/net` shows it).
    pub fn netns_inode(&self) -> u64 {
        std::fs::metadata(self.netns_path())
            .unwrap_or_else(|e| panic!("{}: {e}", self.netns_path().display()))
            .ino()
    }

    /// Notes a process of this host that it did not start itself (e.g. one a script started).
    pub fn note_pid(&self, pid: u32) {
        self.pids.lock().unwrap_or_else(PoisonError::into_inner).push(pid);
    }

    /// Every process noted as running in this host.
    pub fn pids(&self) -> Vec<u32> {
        self.pids.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn spawn(&self, mut command: Command, what: &str) -> Child {
        let child = command.spawn().unwrap_or_else(|e| panic!("starting {what} in host {}: {e}", self.name));
        self.note_pid(child.id());
        child
    }

    /// The PyTango `Demo` server (tests/python/demo_server.py) without database, listening on this
    /// host's address; waits until it accepts connections.
    pub fn start_demo_server(&self, instance: &str, devices: &[&str]) -> DemoServer {
        let port = self.free_port();
        let mut command = self.command(python());
        command
            .arg(script("demo_server.py"))
            .arg(instance)
            .arg(format!("{}:{port}", self.address))
            .args(devices)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = self.spawn(command, "demo_server.py");
        let mut proc = Proc { child, name: format!("demo server {instance} on host {}", self.name) };
        wait_for_address(SocketAddr::from((self.address, port)), &mut proc, SERVER_START);
        DemoServer { proc, address: self.address.into(), port }
    }

    /// Runs a script of `tests/python/` in this host to completion with extra `env`; returns the
    /// JSON object it printed last.
    pub fn run_script(&self, script_name: &str, args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
        let mut command = self.command(python());
        command.arg(script(script_name)).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let output = self
            .spawn(command, script_name)
            .wait_with_output()
            .unwrap_or_else(|e| panic!("running {script_name} in host {}: {e}", self.name));
        assert!(
            output.status.success(),
            "{script_name} {args:?} in host {} failed: {}\n{}",
            self.name,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{script_name} output {stdout:?}: {e}"))
    }

    /// Starts a script of `tests/python/` in this host with its stdin and stdout piped (for
    /// clients that run until told to stop); stopped by PID on drop.
    pub fn spawn_script(&self, script_name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut command = self.command(python());
        command
            .arg(script(script_name))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, value) in env {
            command.env(name, value);
        }
        let child = self.spawn(command, script_name);
        Proc { child, name: format!("{script_name} on host {}", self.name) }
    }

    /// A private MariaDB + DataBaseds 9.3.4 on this host: DataBaseds listens on its address
    /// (`TANGO_HOST=<address>:<port>`), MariaDB only on a Unix socket.
    pub fn start_db_stack(&self) -> DbStack {
        let stack =
            DbStack::start_on(StackHost { netns: self.netns_path(), address: self.address, env: self.env() });
        let pid_file = stack.dir().join("databaseds.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no DataBaseds pid in {}", pid_file.display()));
        self.note_pid(pid);
        stack
    }

    /// Debian's TangoTest 9.3.4 against `stack` (on this host), listening on this host's address.
    pub fn start_tangotest(&self, stack: &DbStack, instance: &str) -> TangoTestServer {
        let server = TangoTestServer::start(stack, &self.marker, instance);
        self.note_pid(server.proc.pid());
        server
    }

    /// Starts a tango-tracer daemon inside this host with `args` (e.g. `--peer-key`), exporting
    /// over OTLP/HTTP to a receiver of its own on the bridge. With [`Scope::Netns`] it also gets
    /// `--netns <this host>`.
    pub fn start_daemon(&self, args: &[&str]) -> HostDaemon {
        let any = SocketAddr::V4(SocketAddrV4::new(self.bridge_address, 0));
        let receiver = OtlpReceiver::start_with(ReceiverOptions { http: any, grpc: any, out: None })
            .unwrap_or_else(|e| panic!("starting an OTLP receiver on {}: {e}", self.bridge_address));
        let n = self.daemons_started.fetch_add(1, Ordering::Relaxed);
        let mut all_args = Vec::new();
        if self.scope == Scope::Netns {
            all_args.extend(["--netns".to_owned(), self.netns_path().display().to_string()]);
        }
        all_args.extend(args.iter().map(|a| (*a).to_owned()));
        let daemon = TracerDaemon::launch(&DaemonLaunch {
            dir_name: format!("tango-tracer-{}-{}{n}", self.set_id, self.name),
            select_marker: self.marker.clone(),
            env: vec![("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), format!("http://{}", receiver.http_addr()))],
            args: all_args,
            enter_netns: Some(self.netns_path()),
            log_prefix: format!("[{}{n}] ", self.name),
            ..Default::default()
        });
        HostDaemon { daemon, receiver, host: self.name.clone(), ready_ns: now_ns() }
    }
}

/// A host's daemon and the OTLP receiver only it exports to. Dropping it stops the daemon (with
/// the strict checks of [`TracerDaemon::stop`]) before the receiver.
pub struct HostDaemon {
    pub daemon: TracerDaemon,
    pub receiver: OtlpReceiver,
    /// The host's name.
    pub host: String,
    /// When it was ready (ns since the Unix epoch).
    pub ready_ns: u64,
}

impl HostDaemon {
    /// Every span this daemon exported so far.
    pub fn spans(&self) -> Vec<SpanJson> {
        self.receiver.spans()
    }

    /// SIGTERM: the daemon flushes; fails unless it ended cleanly and lost nothing.
    pub fn stop(&mut self) {
        self.daemon.stop();
    }

    /// SIGKILL: the daemon ends without flushing.
    pub fn kill(&mut self) -> DaemonExit {
        self.daemon.kill()
    }

    /// `ctl stats --json` of the daemon.
    pub fn stats(&self) -> serde_json::Value {
        let text = self.daemon.ctl(&["stats", "--json"]);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("ctl stats of host {}: {e}\n{text}", self.host))
    }

    /// Fails unless every span this daemon exported is of a process noted in `host`: a host's
    /// daemon traces its host's processes only.
    pub fn assert_only_from(&self, host: &Host) {
        let pids = host.pids();
        let foreign: Vec<String> = self
            .spans()
            .iter()
            .filter(|s| {
                s.resource
                    .get_i64("tango.process.id")
                    .is_none_or(|pid| !pids.iter().any(|&p| i64::from(p) == pid))
            })
            .map(|s| format!("{} {} of pid {:?}", s.kind, s.name, s.resource.get_i64("tango.process.id")))
            .collect();
        assert!(
            foreign.is_empty(),
            "the daemon of host {} exported spans of processes outside its host (its processes: {pids:?}):\n{}",
            host.name,
            foreign.join("\n")
        );
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Read as _, net::TcpStream};

    use tracer_export::tree::render_trees;

    use super::*;

    fn links_and_namespaces() -> String {
        format!(
            "{}\n{}",
            ip(&["netns", "list"]).unwrap_or_default(),
            ip(&["-o", "link", "show"]).unwrap_or_default()
        )
    }

    /// Hosts reach each other and the bridge over their own addresses, run commands inside with
    /// /sys intact, and leave nothing behind, also after a panic.
    #[test]
    fn hosts_are_one_segment_and_leave_nothing_behind() {
        let names: Vec<String>;
        {
            let hosts = Hosts::new("segment", &["a", "b"], Scope::Netns);
            let (a, b) = (hosts.get("a"), hosts.get("b"));
            names =
                vec![a.netns.clone(), b.netns.clone(), a.veth.clone(), b.veth.clone(), hosts.bridge.clone()];
            assert_ne!(a.netns_inode(), b.netns_inode());
            let key = std::fs::metadata(hosts.key_file()).expect("key file");
            assert_eq!(key.mode() & 0o777, 0o600);
            assert_eq!(std::fs::read_to_string(hosts.key_file()).expect("key").trim().len(), 64);

            // b listens on its address; a connects from its own; the bridge side sees both.
            let listener = b.in_netns(|| TcpListener::bind((b.address, 0)).expect("listening in b"));
            let port = listener.local_addr().expect("address").port();
            let peer = a.in_netns(|| {
                let mut stream = TcpStream::connect((b.address, port)).expect("a connects to b");
                stream.write_all(b"x").expect("writing");
                stream.local_addr().expect("a's end")
            });
            let (mut accepted, from) = listener.accept().expect("b accepts");
            let mut byte = [0u8; 1];
            accepted.read_exact(&mut byte).expect("reading");
            assert_eq!(from, peer);
            assert_eq!(from.ip(), std::net::IpAddr::V4(a.address), "traffic comes from a's address");
            let root = TcpListener::bind((hosts.bridge_address(), 0)).expect("listening on the bridge");
            let root_port = root.local_addr().expect("address").port();
            b.in_netns(|| {
                TcpStream::connect((hosts.bridge_address(), root_port)).expect("b reaches the bridge")
            });

            // nsenter keeps the machine's /sys (tracefs included); the network is the host's.
            let output = a
                .command("sh")
                .args([
                    "-c",
                    "ls /sys/kernel/tracing/events >/dev/null && readlink /proc/self/ns/net && ip -o -4 addr",
                ])
                .output()
                .expect("running sh in a");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
            assert!(stdout.contains(&format!("net:[{}]", a.netns_inode())), "{stdout}");
            assert!(stdout.contains(&format!("{}/24", a.address)), "{stdout}");
        }
        let left = links_and_namespaces();
        for name in &names {
            assert!(!left.contains(name.as_str()), "{name} left behind:\n{left}");
        }

        let mut made = Vec::new();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let hosts = Hosts::new("panic", &["a"], Scope::MarkerPerHost);
            made.extend([hosts.get("a").netns.clone(), hosts.bridge.clone()]);
            panic!("a test fails with its hosts up");
        }));
        assert!(outcome.is_err());
        let left = links_and_namespaces();
        for name in &made {
            assert!(!left.contains(name.as_str()), "{name} left behind after a panic:\n{left}");
        }
    }

    /// The harness end to end, with today's daemon: a daemon per host, each selecting its host's
    /// processes by marker; a client on a calls a PyTango device on b over the bridge; a's daemon
    /// exports the CLIENT span, b's the SERVER span, and neither the other host's.
    #[test]
    fn each_hosts_daemon_traces_its_own_side_of_a_call_between_hosts() {
        let hosts = Hosts::new("twohosts", &["a", "b"], Scope::MarkerPerHost);
        let (a, b) = (hosts.get("a"), hosts.get("b"));
        let server = b.start_demo_server("twohosts", &["test/demo/1"]);
        let mut daemon_a = a.start_daemon(&[]);
        let mut daemon_b = b.start_daemon(&[]);
        let out = a.run_script("demo_client.py", &[&server.url("test/demo/1"), "read_attribute"], &[]);
        assert_eq!(out["steps"]["read_attribute"], "ok", "{out}");
        let client_pid = out["pid"].as_i64().expect("client pid");
        daemon_b
            .receiver
            .wait_for_blocking(|s| s.iter().any(|x| x.kind == "SERVER"), Duration::from_secs(30));
        daemon_a.stop();
        daemon_b.stop();
        let (spans_a, spans_b) = (daemon_a.spans(), daemon_b.spans());
        let client = spans_a
            .iter()
            .find(|s| s.kind == "CLIENT" && s.name == "Tango::DeviceProxy::read_attribute")
            .unwrap_or_else(|| {
                panic!("a's daemon exported no CLIENT read_attribute:\n{}", render_trees(&spans_a))
            });
        assert_eq!(client.resource.get_i64("tango.process.id"), Some(client_pid));
        assert_eq!(client.attributes.get_str("tango.operation.target"), Some("test/demo/1"));
        let served = spans_b
            .iter()
            .find(|s| s.kind == "SERVER" && s.name == "Tango::Device_5Impl::read_attributes_5")
            .unwrap_or_else(|| {
                panic!("b's daemon exported no SERVER read_attributes_5:\n{}", render_trees(&spans_b))
            });
        assert_eq!(served.resource.get_i64("tango.process.id"), Some(i64::from(server.proc.pid())));
        let location = served.attributes.get_str("tango.client_ident.location").unwrap_or_default();
        assert!(
            location.starts_with(&format!("giop:tcp:{}:", a.address)),
            "the request came over the bridge from a's address: {location}"
        );
        daemon_a.assert_only_from(a);
        daemon_b.assert_only_from(b);
    }
}
