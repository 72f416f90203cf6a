//! The `run` loop: probe records in, spans out.
//!
//! One task owns all state (processes, assembly, resources) and reads the ring buffer when the
//! kernel signals it; a timer tick expires stale state and releases spans that waited for device
//! facts. SIGINT/SIGTERM end every open call, flush the exporters and return.

use std::{
    collections::{HashMap, HashSet},
    io::Write as _,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use log::{info, warn};
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind, sync::mpsc};
use tracer_export::{Destination, ExportHub, SpanRecord};

pub use crate::spandata::{ClockOffset, monotonic_ns};
use crate::{
    assembly::{AssembledSpan, Assembler, DeviceFacts, Observation},
    configuration::{Configuration, Policy, Routing},
    ctl::{self, CtlAnswer, CtlRequest},
    dbclient, discovery,
    probes::Probes,
    procinfo::{FactReader, ProcessInfo},
    records::{CapturedFacts, Direction, Peer, Record},
    resources::{self, ResourceKey, Resources},
    sockets, spandata,
    telemetry_config::{self as tc, AdminChange, AdminCommand, DeviceSelector},
    topics::{DATABASE_DEVICE, DATABASE_KEY, OperationClass},
};

/// How long a server span may wait for its device's class before it goes out without it.
const DEVICE_FACTS_WAIT: Duration = Duration::from_secs(2);
/// How often the ring buffer is drained of records that did not wake the daemon.
const RING_DRAIN_INTERVAL: Duration = Duration::from_millis(20);
/// How long a span with an unknown opaque object key waits before the database is asked.
const IMPORT_AFTER: Duration = Duration::from_millis(300);
/// Least time between two imports from one database.
const IMPORT_INTERVAL: Duration = Duration::from_secs(10);
/// How long the facts of an exited process are kept for spans still in flight.
const EXITED_KEEP: Duration = Duration::from_secs(30);

/// Options of `tango-tracer run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub destinations: Vec<Destination>,
    pub export: tracer_export::ExportConfig,
    pub capture_bytes: u32,
    pub ready_file: Option<PathBuf>,
    /// Trace only processes whose environment has this `NAME=value` (tests, scoped sessions).
    pub select_env: Option<(String, String)>,
    /// Trace only these pids (and processes selected by `select_env`).
    pub select_pids: Vec<u32>,
    /// Also trace operations native telemetry leaves out (ping, state, info, …).
    pub extended_operations: bool,
    /// Trace processes whose own configuration says nothing (else only those that enable it).
    pub trace_by_default: bool,
    /// Where `tango-tracer ctl` reaches the daemon.
    pub control_socket: Option<PathBuf>,
    /// Write every probe record as a JSON line here (for replay and benchmarks).
    pub record_to: Option<PathBuf>,
    pub proc_root: PathBuf,
}

struct TracedProcess {
    info: ProcessInfo,
    exited_at: Option<Instant>,
    /// `giop:unix:<path>` of the Unix socket the process serves on, once looked up.
    unix_location: Option<String>,
    /// Object keys of the devices the process serves.
    served: HashSet<Vec<u8>>,
}

struct Daemon {
    options: RunOptions,
    probes: Probes,
    assembler: Assembler,
    resources: Resources,
    processes: HashMap<u32, TracedProcess>,
    /// Builds what is known about each process, and counts what could not be read.
    facts: FactReader,
    /// Server spans waiting for their device's class, with the time they started waiting.
    waiting: Vec<(Instant, AssembledSpan)>,
    hub: ExportHub,
    clock: ClockOffset,
    recorder: Option<std::io::BufWriter<std::fs::File>>,
    own_pid: u32,
    /// Local ports of the daemon's own database connections (their requests are not traced).
    own_ports: Arc<Mutex<HashSet<u16>>>,
    config: Configuration,
    /// When each TANGO_HOST was last asked for its devices.
    imports: HashMap<String, Instant>,
    imported_tx: mpsc::UnboundedSender<dbclient::Import>,
}

/// Runs until SIGINT or SIGTERM.
pub async fn run(options: RunOptions) -> anyhow::Result<()> {
    let (probes, ring) = Probes::load(options.capture_bytes)?;
    // SAFETY: the ring buffer owns its map fd and keeps it open for as long as the AsyncFd lives.
    let mut ring = unsafe { AsyncFd::register(ring) }.context("polling the ring buffer")?;
    let hub = ExportHub::start(options.export.clone());
    let recorder = match &options.record_to {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    let (imported_tx, mut imported_rx) = mpsc::unbounded_channel();
    let config = Configuration::new(Policy {
        trace_by_default: options.trace_by_default,
        destinations: options.destinations.clone(),
        extended_operations: options.extended_operations,
    });
    let mut daemon = Daemon {
        assembler: Assembler::new(options.capture_bytes as usize),
        facts: FactReader::new(&options.proc_root),
        options,
        probes,
        resources: Resources::default(),
        processes: HashMap::new(),
        waiting: Vec::new(),
        hub,
        clock: ClockOffset::now(),
        recorder,
        own_pid: std::process::id(),
        own_ports: Arc::default(),
        config,
        imports: HashMap::new(),
        imported_tx,
    };
    for destination in &daemon.options.destinations {
        info!("exporting spans to {destination:?}");
    }
    daemon.scan_existing();
    daemon.import_all_databases();
    if let Some(path) = &daemon.options.ready_file {
        std::fs::write(path, format!("{}\n", daemon.own_pid))
            .with_context(|| format!("writing the ready file {}", path.display()))?;
    }
    info!("tango-tracer ready: {} target process(es)", daemon.processes.len());

    let (ctl_tx, mut ctl_rx) = mpsc::channel::<ctl::Pending>(16);
    if let Some(path) = &daemon.options.control_socket {
        match ctl::serve(path, ctl_tx) {
            Ok(()) => info!("control socket {} (tango-tracer ctl)", path.display()),
            Err(e) => warn!("no control socket at {}: {e}", path.display()),
        }
    }
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut drain = tokio::time::interval(RING_DRAIN_INTERVAL);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    match Record::decode(&item) {
                        Ok(record) => daemon.on_record(record),
                        Err(e) => warn!("skipping a probe record: {e}"),
                    }
                }
                guard.clear_ready();
                daemon.release_spans(false);
            }
            _ = drain.tick() => {
                // Data records do not wake the daemon (see the probes); collect them here.
                let ring = ring.get_mut();
                while let Some(item) = ring.next() {
                    match Record::decode(&item) {
                        Ok(record) => daemon.on_record(record),
                        Err(e) => warn!("skipping a probe record: {e}"),
                    }
                }
                daemon.release_spans(false);
            }
            _ = tick.tick() => daemon.on_tick(),
            Some(import) = imported_rx.recv() => {
                for (key, facts) in import.devices {
                    daemon.assembler.learn_device(key, facts);
                }
                for (device, properties) in import.properties {
                    daemon.config.set_properties(&device, &properties);
                }
                daemon.release_spans(false);
            }
            Some(pending) = ctl_rx.recv() => {
                let answer = daemon.on_ctl(pending.request);
                let _ = pending.reply.send(answer);
                daemon.release_spans(false);
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    // Records already in the ring buffer belong to calls that happened before the signal.
    while let Some(item) = ring.get_mut().next() {
        match Record::decode(&item) {
            Ok(record) => daemon.on_record(record),
            Err(e) => warn!("skipping a probe record: {e}"),
        }
    }
    daemon.shutdown().await;
    Ok(())
}

impl Daemon {
    fn selected(&self, info: &ProcessInfo) -> bool {
        let by_env =
            self.options.select_env.as_ref().map(|(name, value)| info.environ.get(name) == Some(value));
        let by_pid =
            (!self.options.select_pids.is_empty()).then(|| self.options.select_pids.contains(&info.pid));
        match (by_env, by_pid) {
            (None, None) => true,
            (env, pid) => env.unwrap_or(false) || pid.unwrap_or(false),
        }
    }

    fn scan_existing(&mut self) {
        for pid in discovery::scan(&self.options.proc_root, self.own_pid) {
            self.adopt(pid);
        }
    }

    /// Starts tracing a running `pid` (read from /proc) if it is selected.
    fn adopt(&mut self, pid: u32) {
        if !self.is_traced(pid) {
            let info = self.facts.read_live(pid);
            self.trace(info);
        }
    }

    /// Starts tracing a process the kernel made a target, from what the kernel copied then.
    fn adopt_captured(&mut self, facts: &CapturedFacts) {
        if !self.is_traced(facts.pid) {
            let parent = facts.parent.and_then(|p| self.processes.get(&p)).map(|p| &p.info);
            let info = self.facts.from_captured(facts, parent);
            self.trace(info);
        }
    }

    fn is_traced(&self, pid: u32) -> bool {
        self.processes.get(&pid).is_some_and(|p| p.exited_at.is_none())
    }

    /// Starts tracing the process if it is selected; otherwise makes sure the kernel ignores it.
    fn trace(&mut self, info: ProcessInfo) {
        let pid = info.pid;
        if !self.selected(&info) {
            self.probes.remove_target(pid);
            return;
        }
        if let Err(e) = self.probes.add_target(pid) {
            warn!("cannot trace pid {pid}: {e}");
            return;
        }
        info!(
            "tracing pid {pid} ({}): omniORB {}, libtango {}; probes: syscalls sendto/recvfrom (GIOP over TCP and Unix sockets)",
            info.comm,
            lib_text(info.libraries.omniorb.as_ref()),
            lib_text(info.libraries.tango.as_ref()),
        );
        if let Some(facts) = database_server_facts(&info) {
            self.assembler.learn_device(DATABASE_KEY.to_vec(), facts);
        }
        self.config.add_process(&info);
        self.processes.insert(
            pid,
            TracedProcess { info, exited_at: None, unix_location: None, served: HashSet::new() },
        );
        self.probe_libraries(pid);
    }

    fn on_record(&mut self, record: Record) {
        if let Some(recorder) = &mut self.recorder
            && let Ok(line) = serde_json::to_string(&record)
        {
            let _ = writeln!(recorder, "{line}");
        }
        match &record {
            Record::LibOpened { pid, .. } => {
                self.adopt(*pid);
                return;
            }
            // A forked process (not a thread) comes with its own facts record.
            Record::Fork { .. } => return,
            Record::ProcessFacts(facts) => {
                self.adopt_captured(facts);
                return;
            }
            Record::LibraryPath { pid, path, .. } => {
                if let Some(process) = self.processes.get_mut(pid) {
                    self.facts.note_library(&mut process.info, path);
                    self.config.set_native_capable(*pid, process.info.tango_major().is_some_and(|m| m >= 10));
                    self.probe_libraries(*pid);
                }
                return;
            }
            _ => {}
        }
        let pid = record.pid();
        if !self.processes.contains_key(&pid) {
            return;
        }
        if let Record::Data { fd, direction: Direction::Recv, bytes, peer, .. } = &record
            && is_giop_request(bytes)
            && self.assembler.needs_location(pid, *fd)
        {
            // The peer of a server-side connection: from the kernel when it could tell, else
            // from /proc while the socket still exists.
            let location = match peer {
                Peer::Inet(ip, port) => Some(format!("giop:tcp:{ip}:{port}")),
                Peer::Unix => self.unix_location(pid),
                Peer::Unknown | Peer::Other(_) => None,
            }
            .or_else(|| sockets::peer_location(&self.options.proc_root, pid, *fd));
            if let Some(location) = location {
                if self.is_own_connection(&location) {
                    self.assembler.ignore_connection(pid, *fd);
                }
                self.assembler.set_location(pid, *fd, location);
            }
        }
        if let Record::Data { .. } = &record
            && let Some(process) = self.processes.get_mut(&pid)
            && process.info.libraries.tango.is_none()
        {
            process.info.refresh_libraries(&self.options.proc_root);
            let capable = process.info.tango_major().is_some_and(|m| m >= 10);
            self.config.set_native_capable(pid, capable);
            self.probe_libraries(pid);
        }
        self.assembler.push(&record);
        if let Record::Exit { .. } | Record::Exec { .. } = record {
            self.release_spans(false);
            if let Some(process) = self.processes.get_mut(&pid) {
                process.exited_at = Some(Instant::now());
                self.facts.process_ended(&process.info);
            }
            self.config.remove_process(pid);
        }
    }

    fn on_tick(&mut self) {
        self.assembler.expire(monotonic_ns());
        self.release_spans(false);
        self.processes.retain(|_, p| p.exited_at.is_none_or(|t| t.elapsed() < EXITED_KEEP));
        let lost = self.probes.lost_records();
        if lost > 0 {
            log::debug!("{lost} probe records lost to a full ring buffer so far");
        }
    }

    /// Sends finished spans to their destinations; server spans wait a little for their device's
    /// class (learnt from `info` replies) unless `force`.
    fn release_spans(&mut self, force: bool) {
        for observation in self.assembler.drain_observations() {
            self.on_observation(observation);
        }
        let now = Instant::now();
        let mut ready = Vec::new();
        for mut span in self.assembler.drain() {
            span.device_key = span.device_key.map(|key| self.served_key(span.pid, key));
            if span.operation != OperationClass::Internal {
                self.waiting.push((now, span));
            }
        }
        let mut unknown_hosts = Vec::new();
        for (since, span) in &self.waiting {
            let opaque_unknown = span
                .device_key
                .as_deref()
                .is_some_and(|k| self.device_name(k).is_none() && since.elapsed() >= IMPORT_AFTER);
            if opaque_unknown
                && let Some(host) = self.processes.get(&span.pid).and_then(|p| p.info.tango_host())
            {
                unknown_hosts.push(host);
            }
        }
        for host in unknown_hosts {
            self.import_database(&host);
        }
        let waiting = std::mem::take(&mut self.waiting);
        for (since, span) in waiting {
            let known = span.device_key.as_ref().is_none_or(|key| {
                self.assembler.device(key).is_some_and(|f| f.dev_class.is_some())
                    && self.device_name(key).is_some()
            });
            if known || force || since.elapsed() >= DEVICE_FACTS_WAIT {
                ready.push(span);
            } else {
                self.waiting.push((since, span));
            }
        }
        for span in ready {
            match self.route(&span) {
                Routing::Export(destinations) if !destinations.is_empty() => {
                    let record = self.span_record(span);
                    self.hub.submit(record, &destinations);
                }
                Routing::Export(_) | Routing::Drop | Routing::Native => {}
            }
        }
    }

    /// Answers `tango-tracer ctl`.
    fn on_ctl(&mut self, request: CtlRequest) -> CtlAnswer {
        let command = |change| AdminCommand {
            command: "tango-tracer ctl".to_string(),
            targets: DeviceSelector::Pattern(String::new()),
            change,
        };
        match request {
            CtlRequest::List => {
                CtlAnswer::Targets { targets: self.targets_view(), warnings: self.config.warnings() }
            }
            CtlRequest::Enable { pattern, enable } => {
                let mut cmd = command(AdminChange::Enable(enable));
                cmd.targets = DeviceSelector::Pattern(pattern.clone());
                self.config.ctl_commands(vec![cmd]);
                CtlAnswer::Changed { devices: self.devices_matching(&pattern) }
            }
            CtlRequest::Endpoints { pattern, exporters, endpoints } => {
                if exporters.len() != endpoints.len() {
                    return CtlAnswer::Error { message: "give as many endpoints as exporters".into() };
                }
                let mut list = Vec::new();
                for (exporter, endpoint) in exporters.iter().zip(&endpoints) {
                    let parsed = tc::Exporter::parse(exporter).and_then(|e| tc::destination(e, endpoint));
                    match parsed {
                        Ok(destination) => list.push(destination),
                        Err(e) => return CtlAnswer::Error { message: format!("{exporter} {endpoint}: {e}") },
                    }
                }
                let mut cmd = command(AdminChange::SetTracing(list));
                cmd.targets = DeviceSelector::Pattern(pattern.clone());
                self.config.ctl_commands(vec![cmd]);
                CtlAnswer::Changed { devices: self.devices_matching(&pattern) }
            }
            CtlRequest::Reset { pattern } => {
                self.config.ctl_reset(&pattern);
                CtlAnswer::Changed { devices: self.devices_matching(&pattern) }
            }
        }
    }

    fn devices_matching(&self, pattern: &str) -> Vec<String> {
        let selector = DeviceSelector::Pattern(pattern.to_string());
        let mut names: Vec<String> = self
            .processes
            .values()
            .flat_map(|p| p.served.iter().filter_map(|k| self.device_name(k)))
            .filter(|name| selector.matches(name))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn targets_view(&self) -> Vec<ctl::TargetView> {
        let mut views = Vec::new();
        let mut pids: Vec<&u32> = self.processes.keys().collect();
        pids.sort();
        for pid in pids {
            let Some(process) = self.processes.get(pid) else { continue };
            if process.exited_at.is_some() {
                continue;
            }
            let libraries = format!(
                "omniORB {}, libtango {}",
                lib_text(process.info.libraries.omniorb.as_ref()),
                lib_text(process.info.libraries.tango.as_ref())
            );
            let mut devices: Vec<(Option<String>, Option<String>)> = vec![(None, None)];
            for key in &process.served {
                let class = self.assembler.device(key).and_then(|f| f.dev_class.clone());
                devices.push((self.device_name(key), class));
            }
            devices.sort();
            devices.dedup();
            for (device, class) in devices {
                let effective = self.config.effective(*pid, device.as_deref());
                let setting = |value: String, source: &tc::Source| ctl::SettingView {
                    value,
                    source: source.to_string(),
                };
                let destinations: Vec<String> = effective.tracing.0.iter().map(|d| d.to_string()).collect();
                views.push(ctl::TargetView {
                    pid: *pid,
                    process: process.info.comm.clone(),
                    device,
                    class,
                    libraries: libraries.clone(),
                    enable: setting(effective.enable.0.to_string(), &effective.enable.1),
                    types: setting(effective.types.0.names().join(","), &effective.types.1),
                    topics: setting(effective.topics.0.names().join(","), &effective.topics.1),
                    tracing: setting(destinations.join(", "), &effective.tracing.1),
                    spans: 0,
                });
            }
        }
        views
    }

    /// Where a span goes, by the configuration of its device (or process).
    fn route(&self, span: &AssembledSpan) -> Routing {
        let device = span.device_key.as_deref().and_then(|k| self.device_name(k));
        self.config.route(span.pid, device.as_deref(), span.operation)
    }

    fn span_record(&mut self, span: AssembledSpan) -> SpanRecord {
        let process = self.processes.get(&span.pid).map(|p| &p.info);
        let is_server = self.assembler.is_server(span.pid);
        let key = match &span.device_key {
            Some(object_key) => ResourceKey::Device { pid: span.pid, object_key: object_key.clone() },
            None => ResourceKey::Process { pid: span.pid },
        };
        let facts = span.device_key.as_deref().and_then(|k| self.assembler.device(k));
        let device_name = span.device_key.as_deref().and_then(|k| self.device_name(k));
        let resource = self.resources.resolve(&key, process, is_server, device_name.as_deref(), facts);
        let scope = resources::scope_for(process);

        let target =
            span.target_key.as_deref().map(|t| self.device_name(t).unwrap_or_else(|| hex::encode(t)));
        let data = spandata::to_span_data(span, target, scope, &self.clock);
        SpanRecord { resource, data }
    }

    /// Asks every database the target processes use for its devices' object keys.
    fn import_all_databases(&mut self) {
        let hosts: HashSet<String> = self.processes.values().filter_map(|p| p.info.tango_host()).collect();
        for host in hosts {
            self.import_database(&host);
        }
    }

    /// Starts an import from the database at `tango_host` unless one ran recently.
    fn import_database(&mut self, tango_host: &str) {
        if self.imports.get(tango_host).is_some_and(|t| t.elapsed() < IMPORT_INTERVAL) {
            return;
        }
        self.imports.insert(tango_host.to_string(), Instant::now());
        let host = tango_host.to_string();
        let own_ports = Arc::clone(&self.own_ports);
        let tx = self.imported_tx.clone();
        tokio::spawn(async move {
            let register = |addr| remember_port(&own_ports, addr);
            match dbclient::import_exported(&host, register).await {
                Ok(import) => {
                    info!("database {host}: learnt {} device(s)", import.devices.len());
                    let _ = tx.send(import);
                }
                Err(e) => info!("database {host} not queried: {e}"),
            }
        });
    }

    fn on_observation(&mut self, observation: Observation) {
        match observation {
            Observation::Serves { pid, object_key } => {
                if let Some(process) = self.processes.get_mut(&pid) {
                    process.served.insert(object_key);
                }
            }
            Observation::DeviceProperties { device, properties } => {
                self.config.set_properties(&device, &properties);
            }
            Observation::Command { pid, object_key, command, argin } => {
                // Telemetry commands go to a server's admin device (`dserver/<server>/<instance>`);
                // they apply also when a 9.x server answers "command not found".
                let name = self.device_name(&object_key);
                log::debug!("pid {pid}: command {command} on {name:?}");
                if name.as_deref().is_some_and(|name| name.starts_with("dserver/"))
                    && self.config.admin_command(pid, &command, argin.as_ref())
                {
                    info!(
                        "pid {pid}: {command} on {} applied to the telemetry configuration",
                        name.unwrap_or_default()
                    );
                }
            }
            Observation::Exported { pid, device } => self.query_properties(pid, device),
        }
    }

    /// Event spans name their device; database servers know it by an opaque key.
    fn served_key(&self, pid: u32, key: Vec<u8>) -> Vec<u8> {
        if self.assembler.device(&key).is_some() {
            return key;
        }
        let Some(process) = self.processes.get(&pid) else {
            return key;
        };
        process
            .served
            .iter()
            .find(|served| self.device_name(served).is_some_and(|name| name.as_bytes() == key.as_slice()))
            .cloned()
            .unwrap_or(key)
    }

    /// Uprobes where sockets are blind: the ZMQ application thread pushing events.
    fn probe_libraries(&mut self, pid: u32) {
        let Some(process) = self.processes.get(&pid) else {
            return;
        };
        // The library as the process sees it (through its root while it lives).
        let Some(path) = process
            .info
            .libraries
            .zmq
            .as_ref()
            .and_then(|zmq| self.facts.path_in_view(&process.info, &zmq.path))
        else {
            return;
        };
        match self.probes.probe_zmq(&path) {
            Ok(Some(what)) => info!("pid {pid}: {what}"),
            Ok(None) => {}
            Err(e) => warn!("pid {pid}: no ZMQ uprobe: {e}"),
        }
    }

    /// The Unix-socket address of a server (the same for all its Unix connections).
    fn unix_location(&mut self, pid: u32) -> Option<String> {
        let process = self.processes.get_mut(&pid)?;
        if process.unix_location.is_none() {
            process.unix_location = sockets::unix_listen_location(&self.options.proc_root, pid);
        }
        process.unix_location.clone()
    }

    /// A device was exported (started): read its telemetry properties, as cppTango does at
    /// device start-up, from the database of the exporting process.
    fn query_properties(&mut self, pid: u32, device: String) {
        let Some(host) = self.processes.get(&pid).and_then(|p| p.info.tango_host()) else {
            return;
        };
        let own_ports = Arc::clone(&self.own_ports);
        let tx = self.imported_tx.clone();
        tokio::spawn(async move {
            let register = |addr| remember_port(&own_ports, addr);
            match dbclient::device_properties(&host, &device, register).await {
                Ok(properties) => {
                    let import =
                        dbclient::Import { devices: Vec::new(), properties: vec![(device, properties)] };
                    let _ = tx.send(import);
                }
                Err(e) => info!("database {host}: properties of {device} not read: {e}"),
            }
        });
    }

    /// Whether a server-side connection's client is one of the daemon's database connections.
    fn is_own_connection(&self, location: &str) -> bool {
        let Some(port) = location.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()) else {
            return false;
        };
        location.starts_with("giop:tcp:") && self.own_ports.lock().is_ok_and(|ports| ports.contains(&port))
    }

    /// The device behind an object key: learnt from the database, else the key itself (devices
    /// without a database), `sys/database/2` for the database.
    fn device_name(&self, object_key: &[u8]) -> Option<String> {
        if let Some(name) = self.assembler.device(object_key).and_then(|f| f.name.clone()) {
            return Some(name);
        }
        if object_key == DATABASE_KEY {
            return Some(DATABASE_DEVICE.to_string());
        }
        resources::device_name_from_key(object_key)
    }

    async fn shutdown(&mut self) {
        info!("stopping: ending open calls and flushing exporters");
        self.assembler.flush_all(monotonic_ns());
        self.release_spans(true);
        self.hub.shutdown(Duration::from_secs(10)).await;
        if let Some(recorder) = &mut self.recorder {
            let _ = recorder.flush();
        }
        let stats = self.assembler.stats();
        info!(
            "stopped: {} GIOP messages, {} spans, {} unparsable, {} probe records lost",
            stats.messages,
            stats.spans,
            stats.unparsable,
            self.probes.lost_records()
        );
        let missing: Vec<String> = self
            .facts
            .losses()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(cause, n)| format!("{n} {cause}"))
            .collect();
        if !missing.is_empty() {
            warn!("process facts left out: {}", missing.join(", "));
        }
    }
}

/// Notes the local port of one of the daemon's own database connections.
fn remember_port(own_ports: &Mutex<HashSet<u16>>, addr: Option<std::net::SocketAddr>) {
    if let (Some(addr), Ok(mut ports)) = (addr, own_ports.lock()) {
        ports.insert(addr.port());
    }
}

/// The database server (`DataBaseds <instance>`) serves `sys/database/2` of class `DataBase`.
fn database_server_facts(info: &ProcessInfo) -> Option<DeviceFacts> {
    let program = info.cmdline.first()?;
    if !program.ends_with("DataBaseds") {
        return None;
    }
    let instance = info.cmdline.get(1)?;
    Some(DeviceFacts {
        name: Some(DATABASE_DEVICE.to_string()),
        dev_class: Some("DataBase".to_string()),
        server_id: Some(format!("DataBaseds/{instance}")),
    })
}

fn lib_text(lib: Option<&crate::procinfo::MappedLibrary>) -> String {
    match lib {
        Some(lib) => format!("{} ({})", lib.version.as_deref().unwrap_or("?"), lib.path.display()),
        None => "being loaded".to_string(),
    }
}

fn is_giop_request(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && &bytes[..4] == b"GIOP" && bytes[7] == 0
}
