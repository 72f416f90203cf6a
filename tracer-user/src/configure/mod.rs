//! Which spans each traced process and device gets, and where they go: cppTango's configuration
//! sources resolved in cppTango's order, on top of the daemon's own policy.
//!
//! daemon defaults < `/etc/tangorc` < `~/.tangorc` < environment < device properties
//! < admin-device commands at run time (and `tango-tracer ctl`, which acts like one).
//!
//! Values are parsed by [`crate::configure::cpptango`]. An invalid value is reported once, naming the
//! process, device, source and value, and that setting falls back to the next lower source.

use std::sync::Arc;

use hashbrown::{HashMap, HashSet};
use log::warn;
use tracer_export::Destination;
use tracer_wire::tango::ArgValue;

pub mod cpptango;

use self::cpptango::{
    self as tc, AdminCommand, ConfigWarning, Effective, Layer, Source, Topics, Types, parse_admin_command,
};
use crate::{assemble::naming::OperationClass, discover::procinfo::ProcessInfo, stats::StageStats};

/// Most routing decisions cached; the cache starts again empty beyond.
const MAX_ROUTES: usize = 65_536;
/// Most devices whose properties are kept; beyond, new ones are refused and counted.
const MAX_DEVICES: usize = 65_536;

/// The operator's policy for processes that say nothing.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Trace processes whose configuration does not enable telemetry.
    pub trace_by_default: bool,
    /// The daemon's own destinations of spans.
    pub destinations: Vec<Destination>,
    /// The daemon's own destinations of device logs.
    pub log_destinations: Vec<Destination>,
    /// Also trace operations native telemetry leaves out, whatever the topics say.
    pub extended_operations: bool,
}

struct ProcessConfig {
    layers: Vec<(Source, Layer)>,
    /// libtango ≥ 10: the process's own telemetry exports the operations it traces.
    native_capable: bool,
    label: String,
}

/// Configuration state of all traced processes and devices.
pub struct Configuration {
    policy: Policy,
    daemon: Layer,
    processes: HashMap<u32, ProcessConfig>,
    /// Device properties by lowercase device name.
    properties: HashMap<String, Layer>,
    /// Admin-device commands seen at run time, per server process, in order.
    runtime: HashMap<u32, Vec<AdminCommand>>,
    /// Changes made with `tango-tracer ctl`, host-wide by pattern.
    ctl: Vec<AdminCommand>,
    /// Warnings already logged (each is logged once).
    reported: HashSet<String>,
    /// Routing decisions, valid until the next change of any source (one lookup per span).
    routes: std::cell::RefCell<HashMap<RouteKey, Routing>>,
    /// Routing decisions of device logs by (pid, logger), likewise (one lookup per message).
    log_routes: std::cell::RefCell<HashMap<(u32, Arc<str>), LogRouting>>,
    /// Device properties not kept because the table was full.
    refused_full: u64,
}

/// The lowest layer of every process's configuration: the daemon's policy.
fn daemon_layer(policy: &Policy) -> Layer {
    Layer {
        enable: Some(policy.trace_by_default),
        types: Some(Types::both()),
        topics: Some(Topics::native_default()),
        tracing: Some(policy.destinations.clone()),
        logging: Some(policy.log_destinations.clone()),
    }
}

/// (pid, device, operation class): what a routing decision depends on besides the sources.
type RouteKey = (u32, Option<String>, OperationClass);

/// A [`RouteKey`] with the device's name borrowed: the cache is asked once per span without
/// copying the name. Hashes as the owned key does (a `str` hashes as its `String`).
#[derive(Hash)]
struct RouteKeyRef<'a>(u32, Option<&'a str>, OperationClass);

impl hashbrown::Equivalent<RouteKey> for RouteKeyRef<'_> {
    fn equivalent(&self, key: &RouteKey) -> bool {
        self.0 == key.0 && self.1 == key.1.as_deref() && self.2 == key.2
    }
}

/// A device log message's routing decision; the destinations are shared by every message of the
/// logger until the configuration changes (no copy per message).
#[derive(Clone, Debug, PartialEq)]
pub enum LogRouting {
    Export(Arc<[Destination]>),
    /// Not wanted (telemetry off, logging not among the types).
    Drop,
    /// cppTango's own telemetry already exports it.
    Native,
}

/// A span's routing decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Routing {
    /// Export to these destinations (shared by every span routed alike: no copy per span).
    Export(Arc<[Destination]>),
    /// Not wanted (telemetry off, tracing not among the types, or the topic excluded).
    Drop,
    /// cppTango's own telemetry already exports this span.
    Native,
}

impl Configuration {
    pub fn new(policy: Policy) -> Self {
        Configuration {
            daemon: daemon_layer(&policy),
            policy,
            processes: HashMap::new(),
            properties: HashMap::new(),
            runtime: HashMap::new(),
            ctl: Vec::new(),
            reported: HashSet::new(),
            routes: Default::default(),
            log_routes: Default::default(),
            refused_full: 0,
        }
    }

    /// The daemon's own policy changed (SIGHUP): spans routed from now on follow it; spans
    /// already routed keep their destinations.
    pub fn set_policy(&mut self, policy: Policy) {
        self.sources_changed();
        self.daemon = daemon_layer(&policy);
        self.policy = policy;
    }

    /// Reads the process's environment and tangorc files (once, when it becomes a target).
    pub fn add_process(&mut self, info: &ProcessInfo) {
        self.sources_changed();
        let files: Vec<(&str, &str)> =
            info.tangorc_files.iter().map(|(path, text)| (path.as_str(), text.as_str())).collect();
        let (layers, warnings) = tc::layers_from_process(&info.environ, &files);
        let label = format!("pid {} ({})", info.pid, info.comm);
        self.report(&label, None, warnings);
        let native_capable = info.tango_major().is_some_and(|m| m >= 10);
        self.processes.insert(info.pid, ProcessConfig { layers, native_capable, label });
    }

    /// libtango may be mapped after the process became a target.
    pub fn set_native_capable(&mut self, pid: u32, capable: bool) {
        self.sources_changed();
        if let Some(process) = self.processes.get_mut(&pid) {
            process.native_capable = capable;
        }
    }

    /// The process restarted or exited: its runtime changes end with it, as natively.
    pub fn remove_process(&mut self, pid: u32) {
        self.sources_changed();
        self.processes.remove(&pid);
        self.runtime.remove(&pid);
    }

    /// The device's telemetry properties as the database holds them (read at device start-up).
    pub fn set_properties(&mut self, device: &str, properties: &[(String, Vec<String>)]) {
        self.sources_changed();
        let telemetry: Vec<(String, Vec<String>)> = properties
            .iter()
            .filter(|(name, values)| {
                name.starts_with("telemetry_") && values.iter().any(|v| !v.trim().is_empty())
            })
            .cloned()
            .collect();
        let (layer, warnings) = tc::layer_from_device_properties(&telemetry);
        self.report(device, Some(device), warnings);
        let device = device.to_ascii_lowercase();
        if self.properties.contains_key(&device)
            || crate::stats::has_room(self.properties.len(), MAX_DEVICES, &mut self.refused_full)
        {
            self.properties.insert(device, layer);
        }
    }

    /// A command reached an admin device of server process `pid`; telemetry-changing commands
    /// apply to the matching devices of that process from now on. Queries change nothing.
    pub fn admin_command(&mut self, pid: u32, command: &str, argin: Option<&ArgValue>) -> bool {
        self.sources_changed();
        match parse_admin_command(command, argin) {
            None => false,
            Some(Ok(commands)) => {
                self.runtime.entry(pid).or_default().extend(commands);
                true
            }
            Some(Err(warning)) => {
                let label =
                    self.processes.get(&pid).map(|p| p.label.clone()).unwrap_or_else(|| format!("pid {pid}"));
                self.report(&label, None, vec![warning]);
                false
            }
        }
    }

    /// `tango-tracer ctl` changes, host-wide.
    pub fn ctl_commands(&mut self, commands: Vec<AdminCommand>) {
        self.sources_changed();
        self.ctl.extend(commands);
    }

    /// Forgets `ctl` changes whose pattern is `pattern`.
    pub fn ctl_reset(&mut self, pattern: &str) {
        self.sources_changed();
        self.ctl.retain(
            |c| !matches!(&c.targets, tc::DeviceSelector::Pattern(p) if p.eq_ignore_ascii_case(pattern)),
        );
    }

    /// The effective configuration of a device of `pid` (or of the process itself).
    pub fn effective(&self, pid: u32, device: Option<&str>) -> Effective {
        let mut layers: Vec<(Source, &Layer)> = vec![(Source::Daemon, &self.daemon)];
        if let Some(process) = self.processes.get(&pid) {
            layers.extend(process.layers.iter().map(|(source, layer)| (source.clone(), layer)));
        }
        if let Some(layer) = device.and_then(|d| self.properties.get(&d.to_ascii_lowercase())) {
            layers.push((Source::DeviceProperty, layer));
        }
        let mut effective = tc::resolve(&layers);
        if let Some(device) = device {
            if let Some(commands) = self.runtime.get(&pid) {
                effective.apply_admin_commands(device, commands);
            }
            effective.apply_admin_commands(device, &self.ctl);
        }
        effective
    }

    /// Where a span of `class` from device `device` of `pid` goes.
    pub fn route(&self, pid: u32, device: Option<&str>, class: OperationClass) -> Routing {
        if let Some(routing) = self.routes.borrow().get(&RouteKeyRef(pid, device, class)) {
            return routing.clone();
        }
        let key = (pid, device.map(str::to_string), class);
        let routing = self.decide(pid, device, class);
        let mut routes = self.routes.borrow_mut();
        if routes.len() >= MAX_ROUTES {
            routes.clear();
        }
        routes.insert(key, routing.clone());
        routing
    }

    fn decide(&self, pid: u32, device: Option<&str>, class: OperationClass) -> Routing {
        let effective = self.effective(pid, device);
        if !effective.tracing_active() {
            return Routing::Drop;
        }
        let (topics, topics_source) = &effective.topics;
        let explicit_all = topics.all && *topics_source != Source::Daemon;
        let wanted = match class {
            // User code inside a request follows the request's own topic.
            OperationClass::User | OperationClass::UserCode => topics.all || topics.user,
            OperationClass::Database => topics.all || topics.database,
            OperationClass::Event => topics.all || topics.events,
            // `all` set explicitly (not cppTango's unset default) asks for everything.
            OperationClass::Extended => self.policy.extended_operations || explicit_all,
            OperationClass::Internal => false,
        };
        if !wanted {
            return Routing::Drop;
        }
        // A cppTango 10 process told to trace itself exports what it knows how to trace. Its
        // SERVER spans are its own then, with ids the daemon cannot know: user-code spans would
        // hang from nothing (PyTango's own telemetry makes them, when its SDK is there).
        let native = self.processes.get(&pid).is_some_and(|p| p.native_capable)
            && effective.enable.1 != Source::Daemon
            && matches!(class, OperationClass::User | OperationClass::Database | OperationClass::UserCode);
        if native {
            return Routing::Native;
        }
        Routing::Export(effective.tracing.0.into())
    }

    /// Where a log message of the logger `device` (the device's name) of `pid` goes: nowhere
    /// unless telemetry is on with `logging` among its types; nowhere either when the process's
    /// own cppTango 10 telemetry exports it (it was told to, by anything but the daemon's
    /// default); else to the device's logging destinations.
    pub fn route_log(&self, pid: u32, device: &Arc<str>) -> LogRouting {
        let key = (pid, Arc::clone(device));
        if let Some(routing) = self.log_routes.borrow().get(&key) {
            return routing.clone();
        }
        let effective = self.effective(pid, Some(device));
        let routing = if !effective.logging_active() || effective.logging.0.is_empty() {
            LogRouting::Drop
        } else if self.processes.get(&pid).is_some_and(|p| p.native_capable)
            && effective.enable.1 != Source::Daemon
        {
            LogRouting::Native
        } else {
            LogRouting::Export(effective.logging.0.into())
        };
        let mut routes = self.log_routes.borrow_mut();
        if routes.len() >= MAX_ROUTES {
            routes.clear();
        }
        routes.insert(key, routing.clone());
        routing
    }

    /// A source changed: every cached decision goes.
    fn sources_changed(&mut self) {
        self.routes.get_mut().clear();
        self.log_routes.get_mut().clear();
    }

    fn report(&mut self, process: &str, device: Option<&str>, warnings: Vec<ConfigWarning>) {
        for warning in warnings {
            let line = match device {
                Some(device) if device != process => format!("{process}, device {device}: {warning}"),
                _ => format!("{process}: {warning}"),
            };
            if self.reported.insert(line.clone()) {
                warn!("{line}");
            }
        }
    }

    /// Counters and table sizes.
    pub fn stats(&self, out: &mut StageStats) {
        const STAGE: &str = "configure";
        out.loss(STAGE, "refused_table_full", self.refused_full);
        out.size(STAGE, "process_entries", self.processes.len());
        out.size(STAGE, "runtime_command_entries", self.runtime.len());
        out.size(STAGE, "device_property_entries", self.properties.len());
        out.size(STAGE, "route_cache_entries", self.routes.borrow().len());
        out.size(STAGE, "log_route_cache_entries", self.log_routes.borrow().len());
    }

    /// Warnings reported so far (for `ctl list`).
    pub fn warnings(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.reported.iter().cloned().collect();
        lines.sort();
        lines
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        reason = "tests"
    )]
    use super::*;
    use crate::discover::procinfo::parse_environ;

    fn policy() -> Policy {
        Policy {
            trace_by_default: true,
            destinations: vec![Destination::Store { path: "/tmp/x".into() }],
            log_destinations: vec![Destination::Console { stream: tracer_export::ConsoleStream::Stdout }],
            extended_operations: false,
        }
    }

    fn process(pid: u32, env: &[u8], tango: &str) -> ProcessInfo {
        use crate::discover::procinfo::{MappedLibrary, TangoLibraries};
        ProcessInfo {
            pid,
            comm: "test".into(),
            environ: parse_environ(env),
            libraries: TangoLibraries {
                tango: Some(MappedLibrary { path: "libtango.so".into(), version: Some(tango.into()) }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn the_daemon_default_traces_to_its_destinations() {
        let mut config = Configuration::new(policy());
        config.add_process(&process(1, b"", "9.3.4"));
        assert_eq!(
            config.route(1, Some("a/b/c"), OperationClass::User),
            Routing::Export(policy().destinations.into())
        );
        assert_eq!(config.route(1, Some("a/b/c"), OperationClass::Extended), Routing::Drop);
    }

    #[test]
    fn a_route_asked_again_is_found_in_the_cache_by_its_borrowed_name() {
        let mut config = Configuration::new(policy());
        config.add_process(&process(1, b"", "9.3.4"));
        for _ in 0..3 {
            config.route(1, Some("a/b/c"), OperationClass::User);
            config.route(1, None, OperationClass::User);
            config.route(1, Some("a/b/c"), OperationClass::Database);
        }
        assert_eq!(config.routes.borrow().len(), 3, "one entry per key, however often asked");
    }

    #[test]
    fn environment_beats_default_property_beats_environment_admin_beats_property() {
        let mut config = Configuration::new(policy());
        config.add_process(&process(1, b"TANGO_TELEMETRY_ENABLE=off\0", "9.3.4"));
        assert_eq!(config.route(1, Some("a/b/c"), OperationClass::User), Routing::Drop);
        config.set_properties("A/B/C", &[("telemetry_enable".into(), vec!["true".into()])]);
        assert!(matches!(config.route(1, Some("a/b/c"), OperationClass::User), Routing::Export(_)));
        assert_eq!(
            config.route(1, Some("x/y/z"), OperationClass::User),
            Routing::Drop,
            "other devices keep the env"
        );
        let argin = ArgValue::StringArray(vec!["a/b/*".into()]);
        assert!(config.admin_command(1, "StopTelemetry", Some(&argin)));
        assert_eq!(config.route(1, Some("a/b/c"), OperationClass::User), Routing::Drop);
        // A restart forgets runtime changes.
        config.remove_process(1);
        config.add_process(&process(1, b"TANGO_TELEMETRY_ENABLE=off\0", "9.3.4"));
        assert!(matches!(config.route(1, Some("a/b/c"), OperationClass::User), Routing::Export(_)));
    }

    #[test]
    fn a_cpptango_10_process_that_enables_itself_is_traced_natively() {
        let mut config = Configuration::new(policy());
        config.add_process(&process(1, b"TANGO_TELEMETRY_ENABLE=on\0", "10.3.3"));
        assert_eq!(config.route(1, None, OperationClass::User), Routing::Native);
        // Events are ours: cppTango emits nothing for them.
        assert!(matches!(config.route(1, None, OperationClass::Event), Routing::Export(_)));
    }

    /// User code inside a request goes with the request: on with `user` (and `all`, the default),
    /// off without it; none for a process that exports its own spans.
    #[test]
    fn user_code_spans_follow_the_user_topic() {
        let mut config = Configuration::new(policy());
        config.add_process(&process(1, b"", "9.3.4"));
        assert!(matches!(config.route(1, Some("a/b/c"), OperationClass::UserCode), Routing::Export(_)));
        config.set_properties("a/b/db", &[("telemetry_topics".into(), vec!["database,events".into()])]);
        assert_eq!(config.route(1, Some("a/b/db"), OperationClass::UserCode), Routing::Drop);
        config.set_properties("a/b/user", &[("telemetry_topics".into(), vec!["user".into()])]);
        assert!(matches!(config.route(1, Some("a/b/user"), OperationClass::UserCode), Routing::Export(_)));
        config.add_process(&process(2, b"TANGO_TELEMETRY_ENABLE=on\0", "10.3.3"));
        assert_eq!(config.route(2, Some("a/b/c"), OperationClass::UserCode), Routing::Native);
    }

    #[test]
    fn the_events_topic_switches_event_spans_per_device() {
        let mut config = Configuration::new(policy());
        config.add_process(&process(1, b"", "9.3.4"));
        config.set_properties("a/b/quiet", &[("telemetry_topics".into(), vec!["user,database".into()])]);
        assert_eq!(config.route(1, Some("a/b/quiet"), OperationClass::Event), Routing::Drop);
        assert!(matches!(config.route(1, Some("a/b/quiet"), OperationClass::User), Routing::Export(_)));
        assert!(matches!(config.route(1, Some("a/b/loud"), OperationClass::Event), Routing::Export(_)));
        // Explicitly `all` adds what native telemetry leaves out; the unset default does not.
        config.set_properties("a/b/all", &[("telemetry_topics".into(), vec!["all".into()])]);
        assert!(matches!(config.route(1, Some("a/b/all"), OperationClass::Extended), Routing::Export(_)));
        assert_eq!(config.route(1, Some("a/b/loud"), OperationClass::Extended), Routing::Drop);
    }

    #[test]
    fn invalid_values_fall_back_and_endpoints_route_per_device() {
        let mut config = Configuration::new(policy());
        config.add_process(&process(1, b"TANGO_TELEMETRY_ENABLE=maybe\0", "9.3.4"));
        assert!(matches!(config.route(1, None, OperationClass::User), Routing::Export(_)));
        assert!(config.warnings().iter().any(|w| w.contains("maybe")), "{:?}", config.warnings());
        config.set_properties(
            "a/b/1",
            &[
                ("telemetry_tracing_exporters".into(), vec!["http".into()]),
                ("telemetry_tracing_endpoints".into(), vec!["http://127.0.0.1:1/v1/traces".into()]),
            ],
        );
        let Routing::Export(one) = config.route(1, Some("a/b/1"), OperationClass::User) else {
            panic!("exported");
        };
        assert_eq!(*one, [Destination::OtlpHttp { endpoint: "http://127.0.0.1:1/v1/traces".into() }]);
        assert_eq!(
            config.route(1, Some("a/b/2"), OperationClass::User),
            Routing::Export(policy().destinations.into())
        );
    }

    fn logger(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    #[test]
    fn logs_go_to_the_daemon_default_then_per_device_destinations() {
        let mut config = Configuration::new(policy());
        config.add_process(&process(1, b"", "9.3.4"));
        let device = logger("a/b/c");
        assert_eq!(config.route_log(1, &device), LogRouting::Export(policy().log_destinations.into()));
        config.set_properties(
            "A/B/C",
            &[
                ("telemetry_logging_exporters".into(), vec!["http,grpc".into()]),
                (
                    "telemetry_logging_endpoints".into(),
                    vec!["http://127.0.0.1:1/v1/logs,grpc://127.0.0.1:2".into()],
                ),
            ],
        );
        let LogRouting::Export(list) = config.route_log(1, &device) else { panic!("exported") };
        assert_eq!(
            list.to_vec(),
            vec![
                Destination::OtlpHttp { endpoint: "http://127.0.0.1:1/v1/logs".into() },
                Destination::OtlpGrpc { endpoint: "http://127.0.0.1:2".into() },
            ]
        );
        assert_eq!(
            config.route_log(1, &logger("x/y/z")),
            LogRouting::Export(policy().log_destinations.into())
        );
        // At run time: SetTelemetryLoggingEndpoints, then SetTelemetryLogging off for the device.
        let argin = ArgValue::StringArray(
            ["a/b/*", "1", "http", "http://127.0.0.1:3/v1/logs"].map(String::from).to_vec(),
        );
        assert!(config.admin_command(1, "SetTelemetryLoggingEndpoints", Some(&argin)));
        assert_eq!(
            config.route_log(1, &device),
            LogRouting::Export(
                vec![Destination::OtlpHttp { endpoint: "http://127.0.0.1:3/v1/logs".into() }].into()
            )
        );
        let off = ArgValue::LongStringArray { longs: vec![0], strings: vec!["a/b/c".into()] };
        assert!(config.admin_command(1, "SetTelemetryLogging", Some(&off)));
        assert_eq!(config.route_log(1, &device), LogRouting::Drop);
        assert!(
            matches!(config.route(1, Some("a/b/c"), OperationClass::User), Routing::Export(_)),
            "spans go on"
        );
    }

    #[test]
    fn the_logging_type_gates_logs_as_tracing_gates_spans() {
        let device = logger("a/b/c");
        let mut config = Configuration::new(policy());
        config.add_process(&process(1, b"TANGO_TELEMETRY_TYPES=tracing\0", "9.3.4"));
        assert_eq!(config.route_log(1, &device), LogRouting::Drop);
        assert!(matches!(config.route(1, Some("a/b/c"), OperationClass::User), Routing::Export(_)));
        config.add_process(&process(2, b"TANGO_TELEMETRY_TYPES=logging\0", "9.3.4"));
        assert!(matches!(config.route_log(2, &device), LogRouting::Export(_)));
        assert_eq!(config.route(2, Some("a/b/c"), OperationClass::User), Routing::Drop);
        // cppTango 10 exporting its own logs: not twice. Told nothing but the variables of
        // logging: the daemon's default enable decides, and cppTango exports nothing.
        config.add_process(&process(3, b"TANGO_TELEMETRY_ENABLE=on\0", "10.3.3"));
        assert_eq!(config.route_log(3, &device), LogRouting::Native);
        config.add_process(&process(4, b"TANGO_TELEMETRY_LOGGING_EXPORTERS=console\0", "10.3.3"));
        assert_eq!(
            config.route_log(4, &device),
            LogRouting::Export(
                vec![Destination::Console { stream: tracer_export::ConsoleStream::Stdout }].into()
            )
        );
        let off = Policy { trace_by_default: false, ..policy() };
        let mut config = Configuration::new(off);
        config.add_process(&process(4, b"TANGO_TELEMETRY_TYPES=logging\0", "10.3.3"));
        assert_eq!(config.route_log(4, &device), LogRouting::Drop, "the daemon's default enable is off");
    }
}
