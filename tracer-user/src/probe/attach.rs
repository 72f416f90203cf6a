//! Loading the eBPF programs, attaching them, and managing the set of target processes.
//!
//! Tracepoints are attached once, for the whole host; they filter by the `TARGETS` map in the
//! kernel (and its one-byte-per-pid copy `TARGET_PIDS`, see [`super::target_pids`]). A process joins that map either here (found by the daemon's scan) or in the kernel
//! itself the moment it opens an omniORB library.

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, Map, MapData, PerCpuArray, RingBuf},
    programs::{
        BtfTracePoint, TracePoint, UProbe,
        uprobe::{UProbeAttachLocation, UProbeScope},
    },
};
use log::{debug, info, warn};
use tracer_common::{MAX_CAPTURE, PendingCall, StreamKey, StreamState, TargetConfig, loss};

use super::{kernel_offsets, target_pids::TargetPids, uprobes, userspans};

/// Why a uprobe was not attached.
#[derive(Debug, thiserror::Error)]
pub enum UprobeAttachError {
    #[error(transparent)]
    Point(uprobes::UprobeError),
    #[error("attaching the uprobe failed: {}", error_chain(.0.as_ref()))]
    Attach(#[source] Box<aya::programs::ProgramError>),
}

/// `error: its source: …`, so that a log line says what the kernel answered (`EACCES`, …).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How this kernel takes uprobes. A BPF uprobe_multi link (Linux 6.6+) needs only CAP_BPF and
/// CAP_PERFMON; a uprobe made through `perf_event_open` (the only way before 6.6) needs
/// CAP_SYS_ADMIN since the kernel reverted uprobes to it (a probe in the middle of an
/// instruction can corrupt the traced program). Each uprobe program exists in both forms
/// (`NAME` and `NAME_perf`); the first is used where the kernel loads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UprobeLinks {
    /// Not tried yet.
    Unknown,
    /// uprobe_multi links.
    Multi,
    /// One perf event per point.
    Perf,
}

/// The uprobe program `name` loaded in the form this kernel takes (see [`UprobeLinks`]).
fn loaded_uprobe<'a>(
    ebpf: &'a mut Ebpf,
    links: &mut UprobeLinks,
    name: &str,
) -> Result<&'a mut UProbe, aya::programs::ProgramError> {
    if *links != UprobeLinks::Perf {
        let multi: Result<(), aya::programs::ProgramError> = ebpf
            .program_mut(name)
            .ok_or_else(|| missing_program(name))
            .and_then(<&mut UProbe>::try_from)
            .and_then(|uprobe| if uprobe.fd().is_ok() { Ok(()) } else { uprobe.load() });
        match multi {
            Ok(()) => *links = UprobeLinks::Multi,
            Err(e) => {
                info!(
                    "uprobes are attached one perf event per point (CAP_SYS_ADMIN needed): this kernel \
                     refused a uprobe_multi program ({})",
                    error_chain(&e)
                );
                *links = UprobeLinks::Perf;
            }
        }
    }
    let form = match *links {
        UprobeLinks::Perf => format!("{name}_perf"),
        UprobeLinks::Multi | UprobeLinks::Unknown => name.to_string(),
    };
    let uprobe: &mut UProbe = ebpf.program_mut(&form).ok_or_else(|| missing_program(&form))?.try_into()?;
    if uprobe.fd().is_err() {
        uprobe.load()?;
    }
    Ok(uprobe)
}

fn missing_program(name: &str) -> aya::programs::ProgramError {
    aya::programs::ProgramError::IOError(std::io::Error::other(format!(
        "the eBPF object has no program {name}"
    )))
}

/// The compiled eBPF object, built by `build.rs` with the pinned nightly.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

/// (program name, tracepoint category, tracepoint name), attached on every kernel.
const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("close_enter", "syscalls", "sys_enter_close"),
    ("openat_enter", "syscalls", "sys_enter_openat"),
    ("process_exec", "sched", "sched_process_exec"),
    ("process_exit", "sched", "sched_process_exit"),
];

/// The syscall tracepoints that read `sendto`/`recvfrom` where the kernel has no `sock:*`
/// tracepoints (before 6.3): an entry and an exit program per direction, with the syscall's
/// arguments kept in between.
const SYSCALL_TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("sendto_enter", "syscalls", "sys_enter_sendto"),
    ("sendto_exit", "syscalls", "sys_exit_sendto"),
    ("recvfrom_enter", "syscalls", "sys_enter_recvfrom"),
    ("recvfrom_exit", "syscalls", "sys_exit_recvfrom"),
];

/// Set (to anything but `0`) in the daemon's environment, makes it read sends and receives at
/// the syscall tracepoints even where the `sock:*` tracepoints exist: the path older kernels
/// take, for testing it on a newer one.
pub const SYSCALL_PROBES_ENV: &str = "TANGO_TRACER_SYSCALL_PROBES";

/// Where the GIOP call path is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferProbes {
    /// One BTF tracepoint program per direction (`sock:sock_send_length`/`sock_recv_length`),
    /// inside the transfer, with the socket: nothing runs for other syscalls.
    Socket,
    /// Entry and exit programs on the `sendto`/`recvfrom` syscall tracepoints (no socket: peers
    /// come from `/proc`, no TCP positions).
    Syscalls,
}

/// Errors of loading and attaching the probes.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The kernel refused the object or a map/program is missing from it.
    #[error("loading the eBPF programs failed (root, CAP_BPF and CAP_PERFMON are needed)")]
    Load(#[source] Box<aya::EbpfError>),
    /// A program could not be loaded or attached.
    #[error("attaching {program} to {category}:{name} failed")]
    Attach {
        program: &'static str,
        category: &'static str,
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A program or map named here is absent from the object.
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    /// A map operation failed.
    #[error("eBPF map operation failed")]
    Map(#[source] Box<aya::maps::MapError>),
    /// The kernel's BTF lacks what the process facts are read with.
    #[error(
        "tango-tracer cannot copy a process's environment, command line, user and namespaces in the \
         kernel on this kernel"
    )]
    Offsets(#[from] kernel_offsets::OffsetError),
    /// The target filter could not be mapped into the daemon.
    #[error("mapping the eBPF target filter failed")]
    TargetPids(#[source] std::io::Error),
    /// tracefs is not mounted and could not be mounted.
    #[error("tracefs is not available at /sys/kernel/tracing: {0}")]
    Tracefs(std::io::Error),
}

// Boxed: aya's errors are large and would bloat every `Result` of this module.
impl From<aya::EbpfError> for ProbeError {
    fn from(error: aya::EbpfError) -> Self {
        ProbeError::Load(Box::new(error))
    }
}

impl From<aya::maps::MapError> for ProbeError {
    fn from(error: aya::maps::MapError) -> Self {
        ProbeError::Map(Box::new(error))
    }
}

/// The loaded programs plus handles on the maps the daemon uses.
pub struct Probes {
    // Keeps programs and their links alive.
    ebpf: Ebpf,
    /// Library files (device, inode) whose functions are already probed.
    probed_files: std::collections::HashSet<(u64, u64)>,
    /// libtango files (device, inode) whose logging function is already probed.
    probed_tango: std::collections::HashSet<(u64, u64)>,
    /// libtango files (device, inode) and whether their `push_event` is probed (else the
    /// processes mapping them need `zmq_msg_send`).
    push_event_files: std::collections::HashMap<(u64, u64), bool>,
    /// libtango files (device, inode) and what their user-code points came to: what was
    /// attached, or why nothing was.
    user_code_files: std::collections::HashMap<(u64, u64), Result<String, String>>,
    /// Processes whose user-code probes were reported (once each).
    user_code_reported: std::collections::HashSet<u32>,
    targets: HashMap<MapData, u32, TargetConfig>,
    /// The same targets, one byte per pid, written next to `targets`.
    target_pids: TargetPids,
    /// Syscalls in flight (key: pid_tgid) and partly moved messages: entries a process leaves
    /// behind when it dies are removed by [`Probes::forget_process`].
    pending: HashMap<MapData, u64, PendingCall>,
    streams: HashMap<MapData, StreamKey, StreamState>,
    /// Socket fds (key: pid << 32 | fd) whose `close` is reported: a process that exits closes
    /// them without `close`, so [`Probes::forget_sockets`] removes its entries (the socket path
    /// notes an fd once, and an LRU map would evict untouched live entries before stale ones).
    sockets: HashMap<MapData, u64, [u8; 4]>,
    lost: PerCpuArray<MapData, u64>,
    capture_len: u32,
    /// Whether data records of TCP/IPv4 sockets carry their TCP position (both `sock:*`
    /// tracepoints attached, every offset found).
    tcp_positions: bool,
    /// How uprobes are attached on this kernel, found at the first.
    uprobe_links: UprobeLinks,
    /// Where sends and receives are read.
    transfer: TransferProbes,
}

/// Probe records and in-kernel state lost so far, by cause, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProbeLosses {
    /// Totals indexed by the `tracer_common::loss` slots.
    pub totals: [u64; loss::CAUSES as usize],
}

impl ProbeLosses {
    /// (cause, total) pairs, every cause included.
    pub fn by_cause(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        loss::NAMES.iter().copied().zip(self.totals.iter().copied())
    }

    /// Everything lost, all causes together.
    pub fn total(&self) -> u64 {
        self.totals.iter().sum()
    }
}

impl std::fmt::Display for ProbeLosses {
    /// `cause total, …` for the causes that occurred, or `none`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut any = false;
        for (cause, total) in self.by_cause().filter(|&(_, total)| total > 0) {
            if any {
                f.write_str(", ")?;
            }
            write!(f, "{cause} {total}")?;
            any = true;
        }
        if !any {
            f.write_str("none")?;
        }
        Ok(())
    }
}

impl Probes {
    /// Loads the programs and attaches every tracepoint. `capture_len` is clamped to
    /// [`MAX_CAPTURE`], `log_bytes` (bytes copied of each log message) to [`MAX_LOG_BYTES`]. Only
    /// processes of the network namespace with inode `net_ns` become targets in the kernel (0: any
    /// namespace).
    pub fn load(
        capture_len: u32,
        net_ns: u32,
        log_bytes: u32,
    ) -> Result<(Self, RingBuf<MapData>), ProbeError> {
        ensure_tracefs()?;
        let capture_len = capture_len.clamp(MIN_CAPTURE_BYTES, MAX_CAPTURE_BYTES);
        let log_bytes = log_bytes.clamp(MIN_LOG_BYTES, MAX_LOG_BYTES);
        let vmlinux = std::path::Path::new("/sys/kernel/btf/vmlinux");
        let (sock_offsets, tcp_offsets) = kernel_offsets::sock_offsets(vmlinux);
        let process_offsets = kernel_offsets::process_offsets(vmlinux)?;
        let target_pid_pages = super::target_pids::pages_for_pid_max();
        let mut ebpf = EbpfLoader::new()
            .override_global("DEFAULT_CAPTURE_LEN", &capture_len, true)
            .override_global("SOCK_OFFSETS", &sock_offsets, true)
            .override_global("PROCESS_OFFSETS", &process_offsets, true)
            .override_global("TARGET_NET_NS", &net_ns, true)
            .override_global("LOG_MESSAGE_LEN", &log_bytes, true)
            .map_max_entries("TARGET_PIDS", target_pid_pages)
            .load(EBPF_OBJECT)?;
        for &(program, category, name) in TRACEPOINTS {
            attach_tracepoint(&mut ebpf, program, category, name)?;
        }
        attach_fork_facts(&mut ebpf)?;
        let forced = std::env::var_os(SYSCALL_PROBES_ENV).is_some_and(|v| v != "0");
        let socket_probes = if forced {
            Err(format!("{SYSCALL_PROBES_ENV} is set"))
        } else {
            attach_sock_tracepoints(&mut ebpf)
        };
        let transfer = match &socket_probes {
            Ok(()) => {
                info!(
                    "sends and receives are read inside the transfer (BTF tracepoints \
                     sock:sock_send_length/sock_recv_length)"
                );
                TransferProbes::Socket
            }
            Err(e) => {
                for &(program, category, name) in SYSCALL_TRACEPOINTS {
                    attach_tracepoint(&mut ebpf, program, category, name)?;
                }
                info!("sends and receives are read at the syscall tracepoints sendto/recvfrom ({e})");
                warn!(
                    "peers of server connections are read from /proc (a connection that ends before the \
                     daemon looks keeps no tango.client_ident.location)"
                );
                TransferProbes::Syscalls
            }
        };
        let tcp_positions = match tcp_offsets.map_err(|e| e.to_string()).and(socket_probes) {
            Ok(()) if sock_offsets.valid == 1 => true,
            Ok(()) => {
                info!("cross-host keys are unavailable: the kernel's BTF lacks the socket address fields");
                false
            }
            Err(e) => {
                info!("cross-host keys are unavailable: {e}; probe records carry no TCP position");
                false
            }
        };
        let events = RingBuf::try_from(ebpf.take_map("EVENTS").ok_or(ProbeError::Missing("EVENTS"))?)?;
        let targets = HashMap::try_from(ebpf.take_map("TARGETS").ok_or(ProbeError::Missing("TARGETS"))?)?;
        let Some(Map::Array(target_pids)) = ebpf.take_map("TARGET_PIDS") else {
            return Err(ProbeError::Missing("TARGET_PIDS"));
        };
        let target_pids = TargetPids::map(target_pids, target_pid_pages).map_err(ProbeError::TargetPids)?;
        let lost = PerCpuArray::try_from(ebpf.take_map("LOST").ok_or(ProbeError::Missing("LOST"))?)?;
        let pending = HashMap::try_from(ebpf.take_map("PENDING").ok_or(ProbeError::Missing("PENDING"))?)?;
        let streams = HashMap::try_from(ebpf.take_map("STREAMS").ok_or(ProbeError::Missing("STREAMS"))?)?;
        let sockets = HashMap::try_from(ebpf.take_map("SOCKETS").ok_or(ProbeError::Missing("SOCKETS"))?)?;
        info!("probes attached, capturing up to {capture_len} bytes per message");
        let probes = Self {
            ebpf,
            probed_files: Default::default(),
            probed_tango: Default::default(),
            push_event_files: Default::default(),
            user_code_files: Default::default(),
            user_code_reported: Default::default(),
            targets,
            target_pids,
            pending,
            streams,
            sockets,
            lost,
            capture_len,
            tcp_positions,
            uprobe_links: UprobeLinks::Unknown,
            transfer,
        };
        Ok((probes, events))
    }

    /// Whether data records of TCP/IPv4 sockets carry their TCP position on this kernel.
    pub fn tcp_positions(&self) -> bool {
        self.tcp_positions
    }

    /// Where sends and receives are read.
    pub fn transfer_probes(&self) -> TransferProbes {
        self.transfer
    }

    /// Puts the uprobes of the ZMQ library `library` (a path valid in the daemon's namespace)
    /// once per file, for every process that maps it; the kernel keeps only targets' hits.
    /// Returns what was attached, for the log, or `None` when the file was done already.
    pub fn probe_zmq(&mut self, library: &std::path::Path) -> Result<Option<String>, UprobeAttachError> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(library).map_err(|e| {
            UprobeAttachError::Point(uprobes::UprobeError::Read { path: library.into(), source: e })
        })?;
        if !self.probed_files.insert((meta.dev(), meta.ino())) {
            return Ok(None);
        }
        let point = uprobes::probe_point(library, "zmq_msg_send").map_err(UprobeAttachError::Point)?;
        let program = loaded_uprobe(&mut self.ebpf, &mut self.uprobe_links, "zmq_msg_send")
            .map_err(|e| UprobeAttachError::Attach(Box::new(e)))?;
        program
            .attach(
                [UProbeAttachLocation::AbsoluteOffset(point.file_offset)],
                library,
                UProbeScope::AllProcesses,
            )
            .map_err(|e| UprobeAttachError::Attach(Box::new(e)))?;
        Ok(Some(format!(
            "uprobe zmq_msg_send at {}+{:#x} (first instruction {}, emulated)",
            library.display(),
            point.file_offset,
            point.first_instruction
        )))
    }

    /// Puts the uprobe on `ZmqEventSupplier::push_event` of the libtango `library` (a path valid
    /// in the daemon's namespace) once per file, for every process that maps it: one trap per
    /// push, where `zmq_msg_send` traps once per message part. Returns whether pushes of that
    /// file are seen, and what was attached or why not, for the log, the first time per file.
    pub fn probe_push_event(
        &mut self,
        library: &std::path::Path,
    ) -> (bool, Option<Result<String, UprobeAttachError>>) {
        use std::os::unix::fs::MetadataExt as _;
        let meta = match std::fs::metadata(library) {
            Ok(meta) => meta,
            Err(e) => {
                let error = uprobes::UprobeError::Read { path: library.into(), source: e };
                return (false, Some(Err(UprobeAttachError::Point(error))));
            }
        };
        let file = (meta.dev(), meta.ino());
        if let Some(&probed) = self.push_event_files.get(&file) {
            return (probed, None);
        }
        let outcome = self.attach_push_event(library);
        self.push_event_files.insert(file, outcome.is_ok());
        (outcome.is_ok(), Some(outcome))
    }

    fn attach_push_event(&mut self, library: &std::path::Path) -> Result<String, UprobeAttachError> {
        let point = uprobes::push_event_probe_point(library).map_err(UprobeAttachError::Point)?;
        let program = loaded_uprobe(&mut self.ebpf, &mut self.uprobe_links, "tango_push_event")
            .map_err(|e| UprobeAttachError::Attach(Box::new(e)))?;
        program
            .attach(
                [UProbeAttachLocation::AbsoluteOffset(point.file_offset)],
                library,
                UProbeScope::AllProcesses,
            )
            .map_err(|e| UprobeAttachError::Attach(Box::new(e)))?;
        Ok(format!(
            "uprobe Tango::ZmqEventSupplier::push_event at {}+{:#x} (first instruction {}, emulated)",
            library.display(),
            point.file_offset,
            point.first_instruction
        ))
    }

    /// Puts the uprobe on the logging function of the libtango `library` (a path valid in the
    /// daemon's namespace) once per file, for every process that maps it; the kernel keeps only
    /// targets' hits. Returns what was attached, for the log, or `None` when the file was done
    /// already.
    pub fn probe_tango(&mut self, library: &std::path::Path) -> Result<Option<String>, UprobeAttachError> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(library).map_err(|e| {
            UprobeAttachError::Point(uprobes::UprobeError::Read { path: library.into(), source: e })
        })?;
        if !self.probed_tango.insert((meta.dev(), meta.ino())) {
            return Ok(None);
        }
        let (program, point) = uprobes::log_probe_point(library).map_err(UprobeAttachError::Point)?;
        let uprobe = loaded_uprobe(&mut self.ebpf, &mut self.uprobe_links, program)
            .map_err(|e| UprobeAttachError::Attach(Box::new(e)))?;
        uprobe
            .attach(
                [UProbeAttachLocation::AbsoluteOffset(point.file_offset)],
                library,
                UProbeScope::AllProcesses,
            )
            .map_err(|e| UprobeAttachError::Attach(Box::new(e)))?;
        Ok(Some(format!(
            "uprobe log4tango::Logger::log_unconditionally at {}+{:#x} (first instruction {}, emulated)",
            library.display(),
            point.file_offset,
            point.first_instruction
        )))
    }

    /// Puts the probes around user code (see [`userspans`]) into the libtango `library` (a path
    /// valid in the daemon's namespace), once per file for every process that maps it. Returns
    /// the line to log for `pid` — what was attached, or why nothing was — the first time it is
    /// asked for that process, `None` after.
    pub fn probe_user_code(&mut self, pid: u32, library: &std::path::Path) -> Option<Result<String, String>> {
        use std::os::unix::fs::MetadataExt as _;
        let file = match std::fs::metadata(library) {
            Ok(meta) => (meta.dev(), meta.ino()),
            Err(e) => return Some(Err(format!("reading {}: {e}", library.display()))),
        };
        if !self.user_code_files.contains_key(&file) {
            let outcome = self.attach_user_code(library);
            self.user_code_files.insert(file, outcome);
        }
        if !self.user_code_reported.insert(pid) {
            return None;
        }
        let at = library.display();
        self.user_code_files.get(&file).map(|outcome| match outcome {
            Ok(summary) => Ok(format!("{summary} at {at}")),
            Err(why) => Err(format!("{why} ({at})")),
        })
    }

    /// Attaches the one user-code program at every point of `library`, each with its cookie;
    /// all or nothing.
    fn attach_user_code(&mut self, library: &std::path::Path) -> Result<String, String> {
        let plan = userspans::plan(library).map_err(|e| e.to_string())?;
        let program = loaded_uprobe(&mut self.ebpf, &mut self.uprobe_links, "libtango_point")
            .map_err(|e| format!("loading libtango_point: {}", error_chain(&e)))?;
        let mut links = Vec::with_capacity(plan.points.len());
        for point in &plan.points {
            let at = aya::programs::uprobe::UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(point.file_offset),
                cookie: Some(point.cookie),
            };
            match program.attach([at], library, UProbeScope::AllProcesses) {
                Ok(link) => links.push(link),
                Err(e) => {
                    // All or nothing: half the points would make spans that never end.
                    for link in links {
                        let _ = program.detach(link);
                    }
                    return Err(format!("attaching at {:#x}: {}", point.file_offset, error_chain(&e)));
                }
            }
        }
        Ok(plan.summary())
    }

    /// Makes `pid` a target (idempotent).
    pub fn add_target(&mut self, pid: u32) -> Result<(), ProbeError> {
        let config = TargetConfig { capture_len: self.capture_len, flags: 0 };
        self.targets.insert(&pid, &config, 0)?;
        self.target_pids.set(pid, true);
        Ok(())
    }

    /// Receives `pid`'s threads were already blocked in when the probes attached: their entry
    /// was not seen, so their exit would report nothing and the first request each one reads
    /// would be missed. `/proc/<pid>/task/<tid>/syscall` names the call and its arguments; each
    /// blocked `recvfrom` is noted as if its entry had been seen. Returns how many were noted.
    /// (Only the syscall tracepoints need this: the socket tracepoints read the registers of the
    /// receive when it completes.)
    pub fn adopt_blocked_receives(&mut self, proc_root: &std::path::Path, pid: u32) -> usize {
        if self.transfer == TransferProbes::Socket {
            return 0;
        }
        let Ok(tasks) = std::fs::read_dir(proc_root.join(pid.to_string()).join("task")) else {
            return 0;
        };
        let mut adopted = 0;
        for task in tasks.filter_map(Result::ok) {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(task.path().join("syscall")) else {
                continue;
            };
            let Some((fd, buf)) = blocked_recvfrom(&text) else {
                continue;
            };
            let pid_tgid = (u64::from(pid) << 32) | u64::from(tid);
            if self.pending.get(&pid_tgid, 0).is_ok() {
                continue;
            }
            let call = PendingCall {
                buf,
                ts_ns: 0,
                fd,
                capture_len: self.capture_len,
                direction: tracer_common::direction::RECV,
                ..PendingCall::default()
            };
            adopted += usize::from(self.pending.insert(&pid_tgid, &call, 0).is_ok());
        }
        adopted
    }

    /// Stops capturing for `pid` (idempotent).
    pub fn remove_target(&mut self, pid: u32) {
        self.target_pids.set(pid, false);
        let _ = self.targets.remove(&pid);
    }

    /// Whether the kernel currently captures for `pid`.
    pub fn is_target(&self, pid: u32) -> bool {
        self.targets.get(&pid, 0).is_ok()
    }

    /// Records of followed streams that never arrived: the ring buffer was full, a syscall or a
    /// partly moved message could not be remembered, a buffer could not be read. The streams they
    /// belong to have a hole. (Messages over the per-call limit and desyncs leave clean gaps at
    /// message boundaries: they are losses, not holes.)
    pub fn lost_records(&self) -> u64 {
        // Only these slots are read: each is a map lookup (a system call) every check.
        [loss::RING_FULL, loss::PENDING_FULL, loss::STREAM_FULL, loss::READ_FAILED]
            .iter()
            .map(|cause| self.lost.get(cause, 0).map(|per_cpu| per_cpu.iter().sum::<u64>()).unwrap_or(0))
            .sum()
    }

    /// Probe records and in-kernel state lost so far, by cause (a snapshot summed over CPUs).
    pub fn losses(&self) -> ProbeLosses {
        let mut losses = ProbeLosses::default();
        for (cause, total) in (0u32..).zip(losses.totals.iter_mut()) {
            *total = self.lost.get(&cause, 0).map(|per_cpu| per_cpu.iter().sum()).unwrap_or(0);
        }
        losses
    }

    /// Removes what the kernel still holds for `pid` (syscalls in flight, partly moved messages),
    /// once the process has exited or exec'd. Returns how many entries were removed. The maps
    /// hold only in-flight state, so walking them is short.
    pub fn forget_process(&mut self, pid: u32) -> usize {
        self.user_code_reported.remove(&pid);
        let calls: Vec<u64> = self
            .pending
            .keys()
            .filter_map(Result::ok)
            .filter(|pid_tgid| (pid_tgid >> 32) as u32 == pid)
            .collect();
        let streams: Vec<StreamKey> =
            self.streams.keys().filter_map(Result::ok).filter(|key| key.pid == pid).collect();
        let mut removed = 0;
        for call in &calls {
            removed += usize::from(self.pending.remove(call).is_ok());
        }
        for stream in &streams {
            removed += usize::from(self.streams.remove(stream).is_ok());
        }
        removed
    }

    /// Removes the socket fds the kernel noted for `pid` (see `sockets`), once it has exited: its
    /// fds were closed without `close`. Returns how many entries were removed.
    pub fn forget_sockets(&mut self, pid: u32) -> usize {
        let sockets: Vec<u64> =
            self.sockets.keys().filter_map(Result::ok).filter(|key| (key >> 32) as u32 == pid).collect();
        sockets.iter().filter(|key| self.sockets.remove(key).is_ok()).count()
    }

    /// Entries in the in-kernel maps of syscalls in flight and partly moved messages (for tests
    /// and `ctl`: both return to their baseline when traced processes are gone).
    pub fn in_flight(&self) -> (usize, usize) {
        (self.pending.keys().count(), self.streams.keys().count())
    }
}

/// `recvfrom`'s number on x86_64.
const SYS_RECVFROM: u64 = 45;

/// The fd and buffer of a thread blocked in `recvfrom`, from its `/proc/…/syscall` line
/// (`<nr> <arg0> <arg1> … <sp> <pc>`, arguments in hex); `None` for anything else (another
/// call, `running`).
fn blocked_recvfrom(text: &str) -> Option<(i32, u64)> {
    let mut fields = text.split_whitespace();
    let nr = fields.next()?.parse::<u64>().ok()?;
    if nr != SYS_RECVFROM {
        return None;
    }
    let hex = |field: &str| u64::from_str_radix(field.trim_start_matches("0x"), 16).ok();
    let fd = hex(fields.next()?)?;
    let buf = hex(fields.next()?)?;
    Some((i32::try_from(fd).ok()?, buf))
}

/// The BTF tracepoint that copies a forked child's facts (`sched_process_fork` hands over the
/// child's task; the classic tracepoint only its pid). Required: without it a short-lived child of
/// a target would be known only by what `/proc` still shows.
fn attach_fork_facts(ebpf: &mut Ebpf) -> Result<(), ProbeError> {
    const PROGRAM: &str = "fork_facts";
    let attach_error = |source| ProbeError::Attach {
        program: PROGRAM,
        category: "sched",
        name: "sched_process_fork",
        source: Box::new(source),
    };
    let btf = aya::Btf::from_sys_fs().map_err(|e| attach_error(aya::programs::ProgramError::Btf(e)))?;
    let program: &mut BtfTracePoint =
        ebpf.program_mut(PROGRAM).ok_or(ProbeError::Missing(PROGRAM))?.try_into().map_err(attach_error)?;
    program.load("sched_process_fork", &btf).map_err(attach_error)?;
    program.attach().map_err(attach_error)?;
    debug!("attached {PROGRAM} to BTF tracepoint sched:sched_process_fork");
    Ok(())
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    program: &'static str,
    category: &'static str,
    name: &'static str,
) -> Result<(), ProbeError> {
    let attach_error = |source| ProbeError::Attach { program, category, name, source: Box::new(source) };
    let tp: &mut TracePoint =
        ebpf.program_mut(program).ok_or(ProbeError::Missing(program))?.try_into().map_err(attach_error)?;
    tp.load().and_then(|()| tp.attach(category, name).map(|_| ())).map_err(attach_error)?;
    debug!("attached {program} to tracepoint {category}:{name}");
    Ok(())
}

/// The BTF tracepoints `sock:sock_send_length`/`sock_recv_length` (Linux ≥ 6.3), one program
/// each (of the same name), which read every `sendto`/`recvfrom` of a target inside the
/// transfer. Both or neither: with one only, its direction would be read twice once the syscall
/// tracepoints are attached.
fn attach_sock_tracepoints(ebpf: &mut Ebpf) -> Result<(), String> {
    let btf = aya::Btf::from_sys_fs().map_err(|e| format!("the kernel's BTF: {e}"))?;
    let mut attached = Vec::with_capacity(2);
    for tracepoint in kernel_offsets::SOCK_TRACEPOINTS {
        let outcome = (|| {
            let program = ebpf.program_mut(tracepoint).ok_or_else(|| format!("no program {tracepoint}"))?;
            let program: &mut BtfTracePoint = program.try_into().map_err(|e| format!("{tracepoint}: {e}"))?;
            program
                .load(tracepoint, &btf)
                .and_then(|()| program.attach())
                .map_err(|e| format!("attaching sock:{tracepoint}: {e}"))
        })();
        match outcome {
            Ok(link) => {
                debug!("attached {tracepoint} to BTF tracepoint sock:{tracepoint}");
                attached.push((tracepoint, link));
            }
            Err(e) => {
                for (tracepoint, link) in attached {
                    let program: Option<&mut BtfTracePoint> =
                        ebpf.program_mut(tracepoint).and_then(|p| p.try_into().ok());
                    if let Some(program) = program {
                        let _ = program.detach(link);
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Where tracefs is (mounted there by [`ensure_tracefs`] when it is not).
const TRACEFS: &str = "/sys/kernel/tracing";

/// Smallest `--capture-bytes`: the GIOP header and the Tango arguments the daemon reads must fit.
/// The largest such messages seen in real traffic: a `DbImportDevice` reply with its IOR
/// (805 bytes), an `info` reply naming the device class (542), a request carrying a W3C trace
/// context (up to 565).
pub const MIN_CAPTURE_BYTES: u32 = 1024;
/// Largest `--capture-bytes` (what one record holds).
pub const MAX_CAPTURE_BYTES: u32 = MAX_CAPTURE as u32;
/// Smallest `--log-bytes`: a Tango log line of one short sentence.
pub const MIN_LOG_BYTES: u32 = 64;
/// Largest `--log-bytes` (what one log record holds).
pub const MAX_LOG_BYTES: u32 = tracer_common::MAX_LOG_MESSAGE as u32;

fn ensure_tracefs() -> Result<(), ProbeError> {
    let events = std::path::Path::new(TRACEFS).join("events");
    if events.exists() {
        return Ok(());
    }
    if !crate::run::privileges::has_sys_admin() {
        return Err(ProbeError::Tracefs(std::io::Error::other(format!(
            "it is not mounted, and mounting it needs CAP_SYS_ADMIN: mount it before starting the daemon \
             (mount -t tracefs nodev {TRACEFS}; systemd mounts it by itself)"
        ))));
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", TRACEFS])
        .status()
        .map_err(ProbeError::Tracefs)?;
    if status.success() && events.exists() {
        Ok(())
    } else {
        Err(ProbeError::Tracefs(std::io::Error::other("mount -t tracefs failed")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        reason = "tests"
    )]

    use super::*;

    #[test]
    fn a_blocked_recvfrom_is_read_from_its_syscall_line() {
        // Lines as /proc/<pid>/task/<tid>/syscall gives them for an omniORB server thread.
        let blocked = "45 0x9 0x7f3c5c001c40 0x2000 0x0 0x0 0x0 0x7f3c6affc9d8 0x7f3c6d7ac7fc\n";
        assert_eq!(blocked_recvfrom(blocked), Some((9, 0x7f3c_5c00_1c40)));
        assert_eq!(blocked_recvfrom("7 0x7f3c5c000b70 0x2 0xffffffff 0x0 0x0 0x0 0x7f 0x7f\n"), None);
        assert_eq!(blocked_recvfrom("running\n"), None);
        assert_eq!(blocked_recvfrom(""), None);
    }

    #[test]
    fn minimum_capture_holds_every_captured_tango_message() {
        let fixtures =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tracer-wire/tests/fixtures/giop");
        let mut checked = 0;
        for entry in std::fs::read_dir(&fixtures).expect("the GIOP fixtures") {
            let path = entry.expect("a fixture").path();
            // Lengthened on purpose (to make omniORB fragment its answer): only its head is read.
            if path.to_string_lossy().contains("-20k") {
                continue;
            }
            let len = std::fs::metadata(&path).expect("fixture size").len();
            assert!(len <= u64::from(MIN_CAPTURE_BYTES), "{} is {len} bytes", path.display());
            checked += 1;
        }
        assert!(checked > 20, "only {checked} fixtures");
    }

    #[test]
    fn probes_and_parsers_believe_the_same_giop_lengths() {
        assert_eq!(tracer_common::MAX_GIOP_BODY_LEN, tracer_wire::giop::MAX_BODY_LEN);
    }

    #[test]
    fn losses_read_as_pairs_and_text() {
        let mut losses = ProbeLosses::default();
        assert_eq!(losses.to_string(), "none");
        losses.totals[loss::RING_FULL as usize] = 3;
        losses.totals[loss::OVER_LIMIT as usize] = 5;
        assert_eq!(losses.total(), 8);
        assert_eq!(losses.by_cause().count(), loss::CAUSES as usize);
        assert_eq!(losses.to_string(), "ring_buffer_full 3, messages_over_per_call_limit 5");
    }
}
