//! eBPF programs of tango-tracer. All of them only read: they never write to a traced process.
//!
//! - Syscall tracepoints on `sendto`/`recvfrom` copy GIOP messages (TCP and Unix sockets alike) of
//!   target processes into the ring buffer. Other processes pay one hash lookup.
//! - `openat` notices a process loading omniORB and makes it a target at once, in the kernel, so no
//!   request is missed while the daemon reacts; its facts (environment, command line, euid, mount
//!   namespace, library paths) are copied then, so a short-lived process is known even when it
//!   has exited before the daemon reads anything. A target's forked children inherit both.
//! - Scheduler tracepoints report fork, exec and exit of targets so the daemon can free state.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_user_buf, bpf_probe_read_user_str_bytes,
    },
    macros::{btf_tracepoint, map, tracepoint, uprobe},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, ProbeContext, TracePointContext},
};
use tracer_common::{
    DATA_RECORD_HEADER_LEN, DataRecord, FACTS_RECORD_HEADER_LEN, FactsRecord, LIBRARY_RECORD_HEADER_LEN,
    LibraryRecord, MAX_CAPTURE, MAX_CMDLINE, MAX_ENVIRON, MAX_PATH, ProcessOffsets, ProcessRecord,
    RecordHeader, SockOffsets, StreamKey, TargetConfig, direction, kind, unreadable,
};

/// Target processes (key: tgid), written by the daemon and by `openat` below.
#[map]
static TARGETS: HashMap<u32, TargetConfig> = HashMap::with_max_entries(8192, 0);

/// Arguments of a `recvfrom` in flight, per thread, read back when it returns.
#[map]
static PENDING_RECV: LruHashMap<u64, RecvArgs> = LruHashMap::with_max_entries(16384, 0);

/// Bytes still to come of a GIOP message that one syscall did not move whole.
#[map]
static STREAMS: LruHashMap<StreamKey, u64> = LruHashMap::with_max_entries(16384, 0);

/// Sockets (pid, fd, direction) carrying Tango events over ZMTP: every chunk is copied, whole,
/// because ZMQ batches several messages into one call and splits them across calls.
#[map]
static ZMTP_STREAMS: LruHashMap<StreamKey, u8> = LruHashMap::with_max_entries(4096, 0);

/// Socket fds on which a record was sent, so `close` reports only those.
#[map]
static SOCKETS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(65536, 0);

/// One record being built per CPU (too large for the 512-byte stack).
#[map]
static SCRATCH: PerCpuArray<DataRecord> = PerCpuArray::with_max_entries(1, 0);

/// Records lost because the ring buffer was full (index 0), read by the daemon.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Facts of a process being made a target, built per CPU (too large for the stack).
#[map]
static FACTS_SCRATCH: PerCpuArray<FactsRecord> = PerCpuArray::with_max_entries(1, 0);

/// A library path being classified, per CPU.
#[map]
static LIBRARY_SCRATCH: PerCpuArray<LibraryRecord> = PerCpuArray::with_max_entries(1, 0);

/// libtango/libzmq paths a process opened before omniORB (key: pid << 32 | slot), sent after its
/// facts; forgotten at exec and exit. LRU: processes that load libzmq without omniORB leave
/// entries behind.
#[map]
static EARLY_LIBRARIES: LruHashMap<u64, LibraryRecord> = LruHashMap::with_max_entries(2048, 0);

/// Where the facts of a process live in kernel structs (set by the daemon from BTF).
#[unsafe(no_mangle)]
static PROCESS_OFFSETS: ProcessOffsets = ProcessOffsets {
    task_mm: 0,
    task_cred: 0,
    task_nsproxy: 0,
    task_tgid: 0,
    task_pid: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    mm_env_start: 0,
    mm_env_end: 0,
    cred_euid: 0,
    nsproxy_mnt_ns: 0,
    mnt_ns_inum: 0,
};

/// Capture limit for processes made targets in the kernel (set by the daemon before attaching).
#[unsafe(no_mangle)]
static DEFAULT_CAPTURE_LEN: u32 = 1024;

#[repr(C)]
#[derive(Clone, Copy)]
struct RecvArgs {
    buf: u64,
    fd: i32,
    peer_family: u16,
    peer_port: u16,
    peer_addr: u32,
    _pad: u32,
}

/// Where the peer address lives in `struct sock_common` (set by the daemon from BTF).
#[unsafe(no_mangle)]
static SOCK_OFFSETS: SockOffsets = SockOffsets { daddr: 0, dport: 0, family: 0, valid: 0 };

const GIOP_HEADER_LEN: usize = 12;
/// `bpf_ringbuf_output` flag: do not wake the consumer.
const BPF_RB_NO_WAKEUP: u64 = 1;

// Offsets of the syscall tracepoint fields (see events/syscalls/*/format): args start at 16.
const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG2: usize = 32;
const RET: usize = 16;

#[tracepoint]
pub fn sendto_enter(ctx: TracePointContext) -> u32 {
    match try_sendto_enter(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

fn try_sendto_enter(ctx: &TracePointContext) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: a map lookup; the value is only read.
    let Some(target) = (unsafe { TARGETS.get(&pid) }) else {
        return Ok(());
    };
    let capture_len = target.capture_len;
    // SAFETY: offsets come from the tracepoint's format file.
    let (fd, buf, len) = unsafe {
        (
            ctx.read_at::<u64>(ARG0).map_err(|_| ())? as i32,
            ctx.read_at::<u64>(ARG1).map_err(|_| ())?,
            ctx.read_at::<u64>(ARG2).map_err(|_| ())?,
        )
    };
    let no_peer = RecvArgs { buf, fd, peer_family: 0, peer_port: 0, peer_addr: 0, _pad: 0 };
    emit_data(pid_tgid, fd, buf, len, direction::SEND, capture_len, &no_peer)
}

#[tracepoint]
pub fn recvfrom_enter(ctx: TracePointContext) -> u32 {
    match try_recvfrom_enter(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

fn try_recvfrom_enter(ctx: &TracePointContext) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: a map lookup; the value is only read.
    if unsafe { TARGETS.get(&pid) }.is_none() {
        return Ok(());
    }
    // SAFETY: offsets come from the tracepoint's format file.
    let args = unsafe {
        RecvArgs {
            fd: ctx.read_at::<u64>(ARG0).map_err(|_| ())? as i32,
            buf: ctx.read_at::<u64>(ARG1).map_err(|_| ())?,
            peer_family: 0,
            peer_port: 0,
            peer_addr: 0,
            _pad: 0,
        }
    };
    PENDING_RECV.insert(&pid_tgid, &args, 0).map_err(|_| ())
}

#[tracepoint]
pub fn recvfrom_exit(ctx: TracePointContext) -> u32 {
    match try_recvfrom_exit(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

fn try_recvfrom_exit(ctx: &TracePointContext) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: a map lookup; the value is copied out before the entry is removed.
    let Some(args) = (unsafe { PENDING_RECV.get(&pid_tgid) }).copied() else {
        return Ok(());
    };
    let _ = PENDING_RECV.remove(&pid_tgid);
    // SAFETY: offset comes from the tracepoint's format file.
    let ret = unsafe { ctx.read_at::<i64>(RET) }.map_err(|_| ())?;
    if ret <= 0 {
        return Ok(());
    }
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: a map lookup; the value is only read.
    let Some(target) = (unsafe { TARGETS.get(&pid) }) else {
        return Ok(());
    };
    let capture_len = target.capture_len;
    emit_data(pid_tgid, args.fd, args.buf, ret as u64, direction::RECV, capture_len, &args)
}

/// `sock:sock_recv_length` fires inside the receive, with the socket: its peer address is noted
/// for the `recvfrom` in flight on this thread.
#[btf_tracepoint(function = "sock_recv_length")]
pub fn sock_recv_length(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sock_recv_length(&ctx);
    0
}

fn try_sock_recv_length(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = PENDING_RECV.get_ptr_mut(&pid_tgid) else {
        return Ok(());
    };
    // SAFETY: a global the daemon sets before loading; read as volatile so it is not folded.
    let offsets = unsafe { core::ptr::read_volatile(&SOCK_OFFSETS) };
    if offsets.valid != 1 {
        return Ok(());
    }
    let sk: *const u8 = ctx.arg(0);
    // SAFETY: reading kernel memory of the socket the tracepoint hands us, at BTF offsets.
    let (family, dport, daddr) = unsafe {
        (
            bpf_probe_read_kernel(sk.add(offsets.family as usize).cast::<u16>()).map_err(|_| ())?,
            bpf_probe_read_kernel(sk.add(offsets.dport as usize).cast::<u16>()).map_err(|_| ())?,
            bpf_probe_read_kernel(sk.add(offsets.daddr as usize).cast::<u32>()).map_err(|_| ())?,
        )
    };
    // SAFETY: the entry belongs to this thread's recvfrom in flight.
    unsafe {
        (*args).peer_family = family;
        (*args).peer_port = u16::from_be(dport);
        (*args).peer_addr = daddr;
    }
    Ok(())
}

/// Copies the first bytes of a send/receive into the ring buffer when they start a GIOP message
/// or continue one that an earlier syscall began.
#[inline(always)]
#[expect(clippy::too_many_arguments, reason = "inlined: no BPF call, so no 5-argument limit")]
fn emit_data(
    pid_tgid: u64,
    fd: i32,
    buf: u64,
    len: u64,
    dir: u8,
    capture_len: u32,
    peer: &RecvArgs,
) -> Result<(), ()> {
    let pid = (pid_tgid >> 32) as u32;
    let key = StreamKey { pid, fd, direction: dir as u32 };
    // SAFETY: a map lookup; the value is copied out.
    let pending = unsafe { STREAMS.get(&key) }.copied().unwrap_or(0);
    if pending > 0 {
        if len >= pending {
            let _ = STREAMS.remove(&key);
        } else {
            let _ = STREAMS.insert(&key, &(pending - len), 0);
        }
    } else {
        // SAFETY: a map lookup; the value is not used.
        if unsafe { ZMTP_STREAMS.get(&key) }.is_some() {
            return emit_record(pid_tgid, fd, buf, len, dir, MAX_CAPTURE as u32, peer);
        }
        let mut head = [0u8; GIOP_HEADER_LEN];
        if len < 4 {
            return Ok(());
        }
        // SAFETY: reading user memory the syscall itself reads or wrote.
        unsafe { bpf_probe_read_user_buf(buf as *const u8, &mut head) }.map_err(|_| ())?;
        if &head[..4] != b"GIOP" {
            // A ZMTP short frame (flags, size) whose body is a Tango event topic.
            if len >= 10 && head[0] & 0x02 == 0 && &head[2..10] == b"tango://" {
                let _ = ZMTP_STREAMS.insert(&key, &1, 0);
                return emit_record(pid_tgid, fd, buf, len, dir, MAX_CAPTURE as u32, peer);
            }
            // A ZMTP CANCEL command (flags 0x04, size, name length 6, "CANCEL", topic): an
            // unsubscription leaving a client.
            if len >= 9 && head[0] == 0x04 && head[2] == 6 && &head[3..9] == b"CANCEL" {
                return emit_record(pid_tgid, fd, buf, len, dir, capture_len, peer);
            }
            return Ok(());
        }
        let body_len = if head[6] & 1 == 1 {
            u32::from_le_bytes([head[8], head[9], head[10], head[11]])
        } else {
            u32::from_be_bytes([head[8], head[9], head[10], head[11]])
        };
        let message_len = GIOP_HEADER_LEN as u64 + body_len as u64;
        if message_len > len {
            let _ = STREAMS.insert(&key, &(message_len - len), 0);
        }
    }

    emit_record(pid_tgid, fd, buf, len, dir, capture_len, peer)
}

/// Copies up to `capture_len` bytes of one send/receive into the ring buffer.
#[inline(always)]
#[expect(clippy::too_many_arguments, reason = "inlined: no BPF call, so no 5-argument limit")]
fn emit_record(
    pid_tgid: u64,
    fd: i32,
    buf: u64,
    len: u64,
    dir: u8,
    capture_len: u32,
    peer: &RecvArgs,
) -> Result<(), ()> {
    let pid = (pid_tgid >> 32) as u32;
    let record = SCRATCH.get_ptr_mut(0).ok_or(())?;
    // SAFETY: the per-CPU scratch entry is ours for the duration of this program.
    let record = unsafe { &mut *record };
    record.header = RecordHeader {
        kind: kind::DATA,
        pid,
        tid: pid_tgid as u32,
        fd,
        ts_ns: unsafe { bpf_ktime_get_ns() },
    };
    record.total_len = len.min(u32::MAX as u64) as u32;
    record.direction = dir;
    record.peer_family = peer.peer_family;
    record.peer_port = peer.peer_port;
    record.peer_addr = peer.peer_addr;
    let mut captured = len as usize;
    let limit = capture_len as usize;
    if captured > limit {
        captured = limit;
    }
    if captured > MAX_CAPTURE {
        captured = MAX_CAPTURE;
    }
    record.captured_len = captured as u32;
    if captured > 0 {
        // SAFETY: reading user memory the syscall itself reads or wrote.
        unsafe { bpf_probe_read_user_buf(buf as *const u8, &mut record.data[..captured]) }.map_err(|_| ())?;
    }
    let size = DATA_RECORD_HEADER_LEN + captured;
    // SAFETY: the record lives in a map value of exactly `size_of::<DataRecord>()` bytes.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            (record as *const DataRecord).cast::<u8>(),
            size.min(core::mem::size_of::<DataRecord>()),
        )
    };
    // No wake-up per message: the daemon drains the ring on a short timer (and whenever a
    // lifecycle record wakes it), which saves two context switches per Tango call.
    if EVENTS.output(bytes, BPF_RB_NO_WAKEUP).is_err() {
        count_lost();
    }
    // A lookup is cheaper than an LRU update, and the socket is known after its first message.
    let socket = socket_key(pid, fd);
    // SAFETY: a map lookup; the value is not used.
    if unsafe { SOCKETS.get(&socket) }.is_none() {
        let _ = SOCKETS.insert(&socket, &1, 0);
    }
    Ok(())
}

#[inline(always)]
fn socket_key(pid: u32, fd: i32) -> u64 {
    ((pid as u64) << 32) | fd as u32 as u64
}

fn count_lost() {
    if let Some(lost) = LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        unsafe { *lost += 1 };
    }
}

fn emit_process(kind: u32, pid: u32, tid: u32, fd: i32) {
    let record = ProcessRecord {
        header: RecordHeader {
            kind,
            pid,
            tid,
            fd,
            // SAFETY: helper without arguments.
            ts_ns: unsafe { bpf_ktime_get_ns() },
        },
    };
    if EVENTS.output(&record, 0).is_err() {
        count_lost();
    }
}

#[tracepoint]
pub fn close_enter(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: a map lookup; the value is only read.
    if unsafe { TARGETS.get(&pid) }.is_none() {
        return 0;
    }
    // SAFETY: offset comes from the tracepoint's format file.
    let Ok(fd) = (unsafe { ctx.read_at::<u64>(ARG0) }) else {
        return 0;
    };
    let fd = fd as i32;
    if SOCKETS.remove(&socket_key(pid, fd)).is_ok() {
        for dir in [direction::SEND, direction::RECV] {
            let _ = STREAMS.remove(&StreamKey { pid, fd, direction: dir as u32 });
            let _ = ZMTP_STREAMS.remove(&StreamKey { pid, fd, direction: dir as u32 });
        }
        emit_process(kind::CLOSE, pid, pid_tgid as u32, fd);
    }
    0
}

/// Which Tango library a path names (`lib` followed by one of these, anywhere in the path: the
/// wheel's hashed names and the system's alike). The daemon classifies again by file name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Library {
    OmniOrb,
    Tango,
    Zmq,
}

/// Slots of `EARLY_LIBRARIES` (omniORB is never early: opening it makes the target).
const EARLY_TANGO: u64 = 0;
const EARLY_ZMQ: u64 = 1;

#[tracepoint]
pub fn openat_enter(ctx: TracePointContext) -> u32 {
    let _ = try_openat_enter(&ctx);
    0
}

/// One string read and scan per `openat` of any process; only paths naming a Tango library go
/// further. A process that opens omniORB becomes a target here, and its facts are copied while it
/// is inside this syscall; the libtango/libzmq paths it opened before (the dynamic loader opens
/// them first) follow its facts.
fn try_openat_enter(ctx: &TracePointContext) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: offset comes from the tracepoint's format file.
    let filename = unsafe { ctx.read_at::<u64>(ARG1) }.map_err(|_| ())?;
    let record = LIBRARY_SCRATCH.get_ptr_mut(0).ok_or(())?;
    // SAFETY: the per-CPU scratch entry is ours for the duration of this program.
    let record = unsafe { &mut *record };
    // SAFETY: reading the path string the syscall itself reads.
    let path =
        unsafe { bpf_probe_read_user_str_bytes(filename as *const u8, &mut record.path) }.map_err(|_| ())?;
    let path_len = path.len();
    let Some(library) = tango_library(path) else {
        return Ok(());
    };
    record.header = RecordHeader {
        kind: kind::LIBRARY_PATH,
        pid,
        tid: pid_tgid as u32,
        fd: -1,
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    };
    record.path_len = path_len as u32;
    // SAFETY: a map lookup; the value is only read.
    if unsafe { TARGETS.get(&pid) }.is_some() {
        // The dynamic loader tries several directories: the last path of a name is the one
        // that opened.
        emit_library(record);
        return Ok(());
    }
    match library {
        Library::OmniOrb => become_target(pid_tgid, record),
        Library::Tango => EARLY_LIBRARIES.insert(&early_key(pid, EARLY_TANGO), record, 0).map_err(|_| ()),
        Library::Zmq => EARLY_LIBRARIES.insert(&early_key(pid, EARLY_ZMQ), record, 0).map_err(|_| ()),
    }
}

#[inline(always)]
fn early_key(pid: u32, slot: u64) -> u64 {
    ((pid as u64) << 32) | slot
}

/// Makes the current process a target and sends its facts, then the library paths it opened
/// before omniORB.
fn become_target(pid_tgid: u64, opened: &LibraryRecord) -> Result<(), ()> {
    let pid = (pid_tgid >> 32) as u32;
    let config = TargetConfig {
        // SAFETY: a global the daemon sets before loading; read as volatile so it is not folded.
        capture_len: unsafe { core::ptr::read_volatile(&DEFAULT_CAPTURE_LEN) },
        flags: 0,
    };
    let _ = TARGETS.insert(&pid, &config, 0);
    let Some(facts) = FACTS_SCRATCH.get_ptr_mut(0) else {
        // Never for a one-entry array; the daemon would then read /proc.
        emit_process(kind::LIB_OPENED, pid, pid_tgid as u32, -1);
        return Ok(());
    };
    // SAFETY: the per-CPU scratch entry is ours for the duration of this program.
    let facts = unsafe { &mut *facts };
    facts.header = opened.header;
    facts.header.kind = kind::PROCESS_FACTS;
    facts.parent_pid = 0;
    // SAFETY: helper without arguments; the current task is the process opening omniORB.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    read_facts(facts, task);
    emit_facts(facts);
    emit_library(opened);
    for slot in [EARLY_TANGO, EARLY_ZMQ] {
        let key = early_key(pid, slot);
        // SAFETY: a map lookup; the value is sent before the entry is removed.
        if let Some(early) = unsafe { EARLY_LIBRARIES.get(&key) } {
            emit_library(early);
            let _ = EARLY_LIBRARIES.remove(&key);
        }
    }
    Ok(())
}

/// Sends a library path without the rest of its buffer (which holds older, longer paths).
#[inline(always)]
fn emit_library(record: &LibraryRecord) {
    let size = LIBRARY_RECORD_HEADER_LEN + record.path_len as usize;
    // SAFETY: the record lives in a map value of exactly `size_of::<LibraryRecord>()` bytes.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            (record as *const LibraryRecord).cast::<u8>(),
            size.min(core::mem::size_of::<LibraryRecord>()),
        )
    };
    if EVENTS.output(bytes, 0).is_err() {
        count_lost();
    }
}

/// Fills everything but the header and the parent from `task` (the current task, or a
/// child being forked, whose memory is still the same as its parent's).
#[inline(always)]
fn read_facts(facts: &mut FactsRecord, task: *const u8) {
    // SAFETY: a global the daemon sets before loading; read as volatile so it is not folded.
    let offsets = unsafe { core::ptr::read_volatile(&PROCESS_OFFSETS) };
    facts.unreadable = 0;
    facts.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    facts.cmdline_len = 0;
    facts.cmdline_captured = 0;
    facts.environ_len = 0;
    facts.environ_captured = 0;
    // SAFETY (all reads below): kernel memory of a live task at BTF offsets, and user memory of
    // the current process, read with the fault-tolerant helpers.
    let mm = unsafe { bpf_probe_read_kernel(task.add(offsets.task_mm as usize).cast::<u64>()) }.unwrap_or(0);
    if mm == 0 {
        facts.unreadable |= unreadable::MM;
    } else {
        let mm = mm as *const u8;
        let field = |offset: u32| unsafe { bpf_probe_read_kernel(mm.add(offset as usize).cast::<u64>()) };
        // The command line first, then the environment right after what was copied of it.
        match (field(offsets.mm_arg_start), field(offsets.mm_arg_end)) {
            (Ok(start), Ok(end)) => {
                let len = end.saturating_sub(start).min(u32::MAX as u64) as u32;
                facts.cmdline_len = len;
                let mut captured = len as usize;
                if captured > MAX_CMDLINE {
                    captured = MAX_CMDLINE;
                }
                if captured > 0 {
                    let copied = match facts.blocks.get_mut(..captured) {
                        Some(dst) => unsafe { bpf_probe_read_user_buf(start as *const u8, dst) }.is_ok(),
                        None => false,
                    };
                    if copied {
                        facts.cmdline_captured = captured as u32;
                    } else {
                        facts.unreadable |= unreadable::CMDLINE;
                    }
                }
            }
            _ => facts.unreadable |= unreadable::CMDLINE,
        }
        let used = facts.cmdline_captured as usize;
        match (field(offsets.mm_env_start), field(offsets.mm_env_end)) {
            (Ok(start), Ok(end)) if used <= MAX_CMDLINE => {
                let len = end.saturating_sub(start).min(u32::MAX as u64) as u32;
                facts.environ_len = len;
                let mut captured = len as usize;
                if captured > MAX_ENVIRON {
                    captured = MAX_ENVIRON;
                }
                if captured > 0 {
                    let copied = match facts.blocks.get_mut(used..used + captured) {
                        Some(dst) => unsafe { bpf_probe_read_user_buf(start as *const u8, dst) }.is_ok(),
                        None => false,
                    };
                    if copied {
                        facts.environ_captured = captured as u32;
                    } else {
                        facts.unreadable |= unreadable::ENVIRON;
                    }
                }
            }
            _ => facts.unreadable |= unreadable::ENVIRON,
        }
    }
    let euid = unsafe { bpf_probe_read_kernel(task.add(offsets.task_cred as usize).cast::<u64>()) }.and_then(
        |cred| unsafe {
            bpf_probe_read_kernel((cred as *const u8).add(offsets.cred_euid as usize).cast::<u32>())
        },
    );
    match euid {
        Ok(euid) => facts.euid = euid,
        Err(_) => {
            facts.euid = 0;
            facts.unreadable |= unreadable::EUID;
        }
    }
    let mnt_ns = unsafe { bpf_probe_read_kernel(task.add(offsets.task_nsproxy as usize).cast::<u64>()) }
        .and_then(|nsproxy| unsafe {
            bpf_probe_read_kernel((nsproxy as *const u8).add(offsets.nsproxy_mnt_ns as usize).cast::<u64>())
        })
        .and_then(|mnt_ns| unsafe {
            bpf_probe_read_kernel((mnt_ns as *const u8).add(offsets.mnt_ns_inum as usize).cast::<u32>())
        });
    match mnt_ns {
        Ok(inum) => facts.mnt_ns = inum,
        Err(_) => {
            facts.mnt_ns = 0;
            facts.unreadable |= unreadable::MNT_NS;
        }
    }
}

/// Sends the facts without the unused tail of the blocks buffer.
#[inline(always)]
fn emit_facts(facts: &FactsRecord) {
    let size = FACTS_RECORD_HEADER_LEN + facts.cmdline_captured as usize + facts.environ_captured as usize;
    // SAFETY: the record lives in a map value of exactly `size_of::<FactsRecord>()` bytes.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            (facts as *const FactsRecord).cast::<u8>(),
            size.min(core::mem::size_of::<FactsRecord>()),
        )
    };
    // Wakes the daemon: a new target is worth reacting to at once.
    if EVENTS.output(bytes, 0).is_err() {
        count_lost();
    }
}

/// Finds `lib` + `omniORB4` / `tango` / `zmq` in a path.
#[inline(always)]
fn tango_library(path: &[u8]) -> Option<Library> {
    let n = path.len();
    let mut i = 0;
    while i < MAX_PATH - 6 {
        if i + 6 > n {
            return None;
        }
        if path.get(i) == Some(&b'l') && path.get(i + 1) == Some(&b'i') && path.get(i + 2) == Some(&b'b') {
            if starts_with_at(path, i + 3, b"omniORB4") {
                return Some(Library::OmniOrb);
            }
            if starts_with_at(path, i + 3, b"tango") {
                return Some(Library::Tango);
            }
            if starts_with_at(path, i + 3, b"zmq") {
                return Some(Library::Zmq);
            }
        }
        i += 1;
    }
    None
}

#[inline(always)]
fn starts_with_at(haystack: &[u8], at: usize, needle: &[u8]) -> bool {
    let mut j = 0;
    while j < needle.len() {
        if haystack.get(at + j) != needle.get(j) {
            return false;
        }
        j += 1;
    }
    true
}

/// A target forking a process (not a thread): the child is a target from its first instruction,
/// and inherits its parent's facts, copied now (its memory is still the parent's).
#[btf_tracepoint(function = "sched_process_fork")]
pub fn fork_facts(ctx: BtfTracePointContext) -> i32 {
    let _ = try_fork_facts(&ctx);
    0
}

fn try_fork_facts(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: a map lookup; the value is copied out.
    let Some(config) = (unsafe { TARGETS.get(&parent) }).copied() else {
        return Ok(());
    };
    // SAFETY: a global the daemon sets before loading; read as volatile so it is not folded.
    let offsets = unsafe { core::ptr::read_volatile(&PROCESS_OFFSETS) };
    let child: *const u8 = ctx.arg(1);
    // SAFETY: the child task the tracepoint hands us, at BTF offsets.
    let (child_pid, child_tgid) = unsafe {
        (
            bpf_probe_read_kernel(child.add(offsets.task_pid as usize).cast::<i32>()).map_err(|_| ())?,
            bpf_probe_read_kernel(child.add(offsets.task_tgid as usize).cast::<i32>()).map_err(|_| ())?,
        )
    };
    if child_pid != child_tgid {
        return Ok(());
    }
    let child_pid = child_pid as u32;
    let _ = TARGETS.insert(&child_pid, &config, 0);
    let facts = FACTS_SCRATCH.get_ptr_mut(0).ok_or(())?;
    // SAFETY: the per-CPU scratch entry is ours for the duration of this program.
    let facts = unsafe { &mut *facts };
    facts.header = RecordHeader {
        kind: kind::PROCESS_FACTS,
        pid: child_pid,
        tid: child_pid,
        fd: -1,
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    };
    facts.parent_pid = parent;
    read_facts(facts, child);
    emit_facts(facts);
    Ok(())
}

#[tracepoint]
pub fn process_fork(ctx: TracePointContext) -> u32 {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: a map lookup; the value is only read.
    if unsafe { TARGETS.get(&pid) }.is_none() {
        return 0;
    }
    // SAFETY: `child_pid` offset from sched/sched_process_fork/format.
    let Ok(child) = (unsafe { ctx.read_at::<i32>(20) }) else {
        return 0;
    };
    emit_process(kind::FORK, pid, bpf_get_current_pid_tgid() as u32, child);
    0
}

#[tracepoint]
pub fn process_exec(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    if TARGETS.remove(&pid).is_ok() {
        emit_process(kind::EXEC, pid, pid_tgid as u32, -1);
    }
    forget_early_libraries(pid);
    0
}

/// Library paths noted before a process became a target belong to its program image and pid.
#[inline(always)]
fn forget_early_libraries(pid: u32) {
    let _ = EARLY_LIBRARIES.remove(&early_key(pid, EARLY_TANGO));
    let _ = EARLY_LIBRARIES.remove(&early_key(pid, EARLY_ZMQ));
}

#[tracepoint]
pub fn process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    // The leader's exit ends the process for us; threads exiting do not.
    if pid != pid_tgid as u32 {
        return 0;
    }
    let _ = ctx.as_ptr();
    if TARGETS.remove(&pid).is_ok() {
        emit_process(kind::EXIT, pid, pid_tgid as u32, -1);
    }
    forget_early_libraries(pid);
    0
}

/// `zmq_msg_send(msg, socket, flags)`: the application thread hands ZMQ a message part. The last
/// part (no `ZMQ_SNDMORE`) marks when and on which thread an event was pushed.
#[uprobe]
pub fn zmq_msg_send(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: a map lookup; the value is only read.
    if unsafe { TARGETS.get(&pid) }.is_none() {
        return 0;
    }
    const ZMQ_SNDMORE: u64 = 2;
    let flags: u64 = ctx.arg(2).unwrap_or(0);
    if flags & ZMQ_SNDMORE == 0 {
        emit_process(kind::ZMQ_SEND, pid, pid_tgid as u32, flags as i32);
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
