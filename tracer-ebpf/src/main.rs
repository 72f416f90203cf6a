//! eBPF programs of tango-tracer. All of them only read: they never write to a traced process.
//!
//! - BTF tracepoints `sock:sock_send_length`/`sock_recv_length` fire inside every socket transfer,
//!   after the bytes moved, with the socket and the byte count: for a `sendto`/`recvfrom` of a
//!   target process (the syscall read from its saved registers) they copy the GIOP messages (TCP
//!   and Unix sockets alike) into the ring buffer, one record per message when a syscall moves
//!   several, with the socket's peer and, for TCP/IPv4, its local end and the TCP sequence number
//!   of each message's first byte, which both hosts of a connection see for the same bytes. Other
//!   processes pay one load from a byte-per-pid array per socket transfer, and nothing for other
//!   syscalls.
//! - Kernels without those tracepoints (before 6.3) read the same calls at the `sendto`/`recvfrom`
//!   syscall tracepoints instead: arguments kept at entry (`PENDING`), bytes reported at exit.
//! - Nothing is lost silently: every record or piece of state that cannot be kept is counted by
//!   cause in `LOST` (see `tracer_common::loss`).
//! - `openat` notices a process loading omniORB and makes it a target at once, in the kernel, so no
//!   request is missed while the daemon reacts; its facts (environment, command line, euid, mount
//!   namespace, library paths) are copied then, so a short-lived process is known even when it
//!   has exited before the daemon reads anything. A target's forked children inherit both.
//! - Offset uprobes inside libtango (`user_code`) mark where user code runs inside a request:
//!   `always_executed_hook`, each attribute read, each command.
//! - Scheduler tracepoints report exec and exit of targets so the daemon can free state; a BTF
//!   `sched_process_fork` program makes a target's forked children targets.
//! - With a network namespace chosen (`--netns`), only its processes become targets, at the
//!   omniORB open and at fork alike.
#![no_std]
#![no_main]

mod user_code;

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    btf_maps::SkStorage,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, bpf_loop,
        bpf_probe_read_kernel, bpf_probe_read_user_buf, bpf_probe_read_user_str_bytes, generated,
    },
    macros::{btf_map, btf_tracepoint, map, tracepoint, uprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, ProbeContext, TracePointContext},
};
use tracer_common::{
    DATA_RECORD_HEADER_LEN, DataRecord, FACTS_RECORD_HEADER_LEN, FactsRecord, LIBRARY_RECORD_HEADER_LEN,
    LOG_RECORD_HEADER_LEN, LibraryRecord, LogRecord, MAX_CAPTURE, MAX_CMDLINE, MAX_ENVIRON,
    MAX_GIOP_BODY_LEN, MAX_HEADERS_PER_CALL, MAX_LOG_FILE, MAX_LOG_MESSAGE, MAX_LOGGER_NAME,
    MAX_MESSAGES_PER_CALL, MAX_PATH, MAX_TARGET_PID_PAGES, MAX_TARGETS, PendingCall, ProcessOffsets,
    ProcessRecord, RecordHeader, SockOffsets, StreamKey, StreamState, TARGET_PIDS_PER_PAGE, TargetConfig,
    chunk, direction, kind, log_flags, loss, unreadable,
};

/// Target processes (key: tgid), written by the daemon and by `openat` below. A plain hash map:
/// a full map fails the insert, which is counted, where an LRU map would silently drop a target.
#[map]
static TARGETS: HashMap<u32, TargetConfig> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// The same targets as one byte per pid (1: a target), in pages of `TARGET_PIDS_PER_PAGE` pids:
/// the first check of every socket transfer and `close` on the host, an indexed load where a hash
/// lookup cost ~70 ns here. Written wherever `TARGETS` is (by the programs, and by the daemon
/// through a shared mapping), one byte store at a time, so no writer overwrites another's pid.
/// The daemon sizes it to `pid_max` before loading; a pid beyond it is looked up in `TARGETS`.
#[map]
static TARGET_PIDS: Array<[u8; TARGET_PIDS_PER_PAGE]> =
    Array::with_max_entries(MAX_TARGET_PID_PAGES, BPF_F_MMAPABLE);

/// `BPF_F_MMAPABLE`: the daemon maps `TARGET_PIDS` into its memory.
const BPF_F_MMAPABLE: u32 = 1024;

/// Whether `pid` is a target: one load from `TARGET_PIDS`, or `TARGETS` beyond its pages.
#[inline(always)]
fn is_target(pid: u32) -> bool {
    let page = pid / TARGET_PIDS_PER_PAGE as u32;
    let slot = pid as usize % TARGET_PIDS_PER_PAGE;
    match TARGET_PIDS.get(page) {
        Some(page) => page.get(slot).is_some_and(|&flag| flag == 1),
        // SAFETY: a map lookup; the value is not read.
        None => unsafe { TARGETS.get(&pid) }.is_some(),
    }
}

/// Makes `pid` a target in `TARGETS` and `TARGET_PIDS`; a full `TARGETS` refuses it (counted).
#[inline(always)]
fn add_target(pid: u32, config: &TargetConfig) {
    if TARGETS.insert(&pid, config, 0).is_err() {
        count_lost(loss::TARGETS_FULL, 1);
        return;
    }
    set_target_flag(pid, 1);
}

/// Stops capturing for `pid`; whether it was a target.
#[inline(always)]
fn remove_target(pid: u32) -> bool {
    set_target_flag(pid, 0);
    TARGETS.remove(&pid).is_ok()
}

#[inline(always)]
fn set_target_flag(pid: u32, flag: u8) {
    let slot = pid as usize % TARGET_PIDS_PER_PAGE;
    if let Some(page) = TARGET_PIDS.get_ptr_mut(pid / TARGET_PIDS_PER_PAGE as u32)
        // SAFETY: one byte of the page, written in place (see `TARGET_PIDS`).
        && let Some(flag_at) = unsafe { (*page).get_mut(slot) }
    {
        *flag_at = flag;
    }
}

/// Arguments of a `sendto`/`recvfrom` in flight, per thread (key: pid_tgid), read back when it
/// returns (the syscall-tracepoint path only). A plain hash map, not an LRU one: a full map fails the insert, which is counted,
/// where an LRU map would evict another thread's call without a trace. Entries leave at syscall
/// exit; the daemon removes those of a process that exited.
#[map]
static PENDING: HashMap<u64, PendingCall> = HashMap::with_max_entries(16384, 0);

/// GIOP messages that one syscall did not move whole: what is still to come. A plain hash map for
/// the same reason as `PENDING`; entries leave when the message is complete, at `close`, or when
/// the daemon sees the process exit.
#[map]
static STREAMS: HashMap<StreamKey, StreamState> = HashMap::with_max_entries(16384, 0);

/// Socket fds of targets (key: pid << 32 | fd) that sent a record, so `close` (which knows only
/// the fd) reports only those. On the syscall path it also says which directions carry Tango
/// events over ZMTP (every chunk of those is copied, whole, because ZMQ batches several messages
/// into one call and splits them across calls): one lookup per transfer answers both. The socket
/// path keeps those marks in `SOCKET_STATES` and writes here once per socket and fd.
#[map]
static SOCKETS: LruHashMap<u64, SocketMarks> = LruHashMap::with_max_entries(65536, 0);

/// The socket path's state of each socket a target reported from, in the socket's own storage:
/// found from the tracepoint's socket without a hash lookup, and freed by the kernel with the
/// socket (a new connection that reuses an fd number starts clean).
#[btf_map]
static SOCKET_STATES: SkStorage<SocketState> = SkStorage::new();

/// What `SOCKET_STATES` keeps of a socket. Each direction's fields are written by that
/// direction's thread only.
#[repr(C)]
#[derive(Clone, Copy)]
struct SocketState {
    /// Each direction's stream between syscalls (index `direction::SEND`, `RECV`): all zero when
    /// no message is partly moved (as when `STREAMS` has no entry).
    streams: [StreamState; 2],
    /// The `SOCKETS` key (pid << 32 | fd) this socket's record was noted under, so its `close`
    /// is reported; 0 before its first record. Another process or fd sharing the socket (fork,
    /// `dup`) is noted again under its own key.
    reported_as: u64,
    /// 1 when that direction carries a ZMTP event stream.
    zmtp: [u8; 2],
    _pad: [u8; 6],
}

/// `BPF_SK_STORAGE_GET_F_CREATE`: create the socket's storage (zeroed) when it has none.
const SK_STORAGE_CREATE: u64 = 1;

/// What `SOCKETS` knows of a socket. One byte per fact, each written by one direction's thread
/// in place (a byte store never clobbers the others); a new entry is inserted only if absent.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SocketMarks {
    /// 1 once a record of this socket was sent.
    reported: u8,
    /// 1 when that direction (`direction::SEND`, `RECV`) carries a ZMTP event stream.
    zmtp: [u8; 2],
    _pad: u8,
}

/// `BPF_NOEXIST`: insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;

/// One record being built per CPU (too large for the 512-byte stack).
#[map]
static SCRATCH: PerCpuArray<DataRecord> = PerCpuArray::with_max_entries(1, 0);

/// The syscall being walked message by message, per CPU (see `emit_data`).
#[map]
static WALKS: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

/// Records and in-kernel state lost, by cause (`tracer_common::loss`), read by the daemon.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(loss::CAUSES, 0);

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
    nsproxy_net_ns: 0,
    net_ns_inum: 0,
};

/// A log record being built, per CPU (too large for the stack).
#[map]
static LOG_SCRATCH: PerCpuArray<LogRecord> = PerCpuArray::with_max_entries(1, 0);

/// Bytes of each log message copied (`--log-bytes`, set by the daemon before loading).
#[unsafe(no_mangle)]
static LOG_MESSAGE_LEN: u32 = 4096;

/// Capture limit for processes made targets in the kernel (set by the daemon before attaching).
#[unsafe(no_mangle)]
static DEFAULT_CAPTURE_LEN: u32 = 1024;

/// Bytes copied of each message: the daemon's `--capture-bytes`, the same for every target.
#[inline(always)]
fn capture_len() -> u32 {
    // SAFETY: a global the daemon sets before loading; read as volatile so it is not folded.
    unsafe { core::ptr::read_volatile(&DEFAULT_CAPTURE_LEN) }
}

/// Where the peer address, the local address and the TCP sequence numbers live in a socket (set
/// by the daemon from BTF).
#[unsafe(no_mangle)]
static SOCK_OFFSETS: SockOffsets = SockOffsets {
    daddr: 0,
    dport: 0,
    family: 0,
    valid: 0,
    rcv_saddr: 0,
    num: 0,
    write_seq: 0,
    copied_seq: 0,
    tcp_valid: 0,
};

/// Inode of the only network namespace whose processes become targets; 0 for every namespace
/// (set by the daemon before loading).
#[unsafe(no_mangle)]
static TARGET_NET_NS: u32 = 0;

const GIOP_HEADER_LEN: usize = 12;
/// `bpf_ringbuf_output` flag: do not wake the consumer.
const BPF_RB_NO_WAKEUP: u64 = 1;
/// `bpf_ringbuf_output` flag: wake the consumer.
const BPF_RB_FORCE_WAKEUP: u64 = 2;

// Offsets of the syscall tracepoint fields (see events/syscalls/*/format): args start at 16.
const ARG0: usize = 16;
const ARG1: usize = 24;
const RET: usize = 16;

#[tracepoint]
pub fn sendto_enter(ctx: TracePointContext) -> u32 {
    match stash_call(&ctx, direction::SEND) {
        Ok(()) | Err(()) => 0,
    }
}

#[tracepoint]
pub fn sendto_exit(ctx: TracePointContext) -> u32 {
    match finish_call(&ctx, direction::SEND) {
        Ok(()) | Err(()) => 0,
    }
}

#[tracepoint]
pub fn recvfrom_enter(ctx: TracePointContext) -> u32 {
    match stash_call(&ctx, direction::RECV) {
        Ok(()) | Err(()) => 0,
    }
}

#[tracepoint]
pub fn recvfrom_exit(ctx: TracePointContext) -> u32 {
    match finish_call(&ctx, direction::RECV) {
        Ok(()) | Err(()) => 0,
    }
}

/// At syscall entry: remembers (fd, buffer, entry time) for the exit, which alone knows how many
/// bytes moved.
#[inline(always)]
fn stash_call(ctx: &TracePointContext, dir: u8) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    if !is_target(pid) {
        return Ok(());
    }
    let capture_len = capture_len();
    // SAFETY: offsets come from the tracepoint's format file.
    let call = unsafe {
        PendingCall {
            buf: ctx.read_at::<u64>(ARG1).map_err(|_| ())?,
            ts_ns: if dir == direction::SEND { bpf_ktime_get_ns() } else { 0 },
            fd: ctx.read_at::<u64>(ARG0).map_err(|_| ())? as i32,
            capture_len,
            peer_addr: 0,
            peer_family: 0,
            peer_port: 0,
            local_addr: 0,
            tcp_seq: 0,
            local_port: 0,
            direction: dir,
            tcp_valid: 0,
            _pad: [0; 4],
        }
    };
    if PENDING.insert(&pid_tgid, &call, 0).is_err() {
        count_lost(loss::PENDING_FULL, 1);
    }
    Ok(())
}

/// At syscall exit: reports the bytes that moved (`ret`); nothing for errors such as EAGAIN.
#[inline(always)]
fn finish_call(ctx: &TracePointContext, dir: u8) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: a map lookup; the value is copied out before the entry is removed.
    let Some(mut call) = (unsafe { PENDING.get(&pid_tgid) }).copied() else {
        return Ok(());
    };
    let _ = PENDING.remove(&pid_tgid);
    if call.direction != dir {
        return Ok(());
    }
    // SAFETY: offset comes from the tracepoint's format file.
    let ret = unsafe { ctx.read_at::<i64>(RET) }.map_err(|_| ())?;
    if ret <= 0 {
        return Ok(());
    }
    // The target was looked up at entry (its capture length is in `call`); a process the daemon
    // dropped meanwhile gives records the daemon ignores. No socket here: peers come from `/proc`.
    let capture_len = call.capture_len;
    if dir == direction::RECV {
        // A receive's bytes exist once it returns.
        // SAFETY: helper without arguments.
        call.ts_ns = unsafe { bpf_ktime_get_ns() };
    }
    transfer_keyed(pid_tgid, &call, ret as u64, capture_len)
}

/// `sock:sock_send_length` fires inside every socket send, after the bytes were queued, with the
/// socket and the byte count: for a `sendto` of a target, the whole send is reported from here
/// (the user buffer is intact), with no entry program and no state between programs.
#[btf_tracepoint(function = "sock_send_length")]
pub fn sock_send_length(ctx: BtfTracePointContext) -> i32 {
    let _ = sock_transfer(&ctx, direction::SEND, SYS_SENDTO);
    0
}

/// `sock:sock_recv_length` fires inside every socket receive, after the bytes were copied to the
/// user buffer: a `recvfrom` of a target is reported from here.
#[btf_tracepoint(function = "sock_recv_length")]
pub fn sock_recv_length(ctx: BtfTracePointContext) -> i32 {
    let _ = sock_transfer(&ctx, direction::RECV, SYS_RECVFROM);
    0
}

const AF_INET: u16 = 2;
const MSG_PEEK: i32 = 2;
/// x86_64 syscall numbers of the calls omniORB and ZMQ move their bytes with (`send`/`recv`
/// are these syscalls too).
const SYS_SENDTO: u64 = 44;
const SYS_RECVFROM: u64 = 45;
/// Offsets in x86_64 `struct pt_regs` (a fixed layout): the syscall number and its first two
/// arguments as the task entered the kernel.
const REGS_SI: usize = 13 * 8;
const REGS_DI: usize = 14 * 8;
const REGS_ORIG_AX: usize = 15 * 8;

/// Reports the bytes one `sendto`/`recvfrom` of a target moved, from inside the transfer: the
/// syscall's fd and buffer are the task's saved user registers, the socket is the tracepoint's.
/// Other processes pay one map lookup; failed transfers (EAGAIN) and other syscalls that reach
/// a socket (`sendmsg`, `write`, io_uring, the kernel's own sends) nothing more.
///
/// The socket and the registers are read with plain loads, not helper calls: the verifier knows
/// both types from BTF and the offsets (read-only globals set before loading, or fixed) as
/// constants, checks each load against the struct, and makes it fault-tolerant.
#[inline(always)]
fn sock_transfer(ctx: &BtfTracePointContext, dir: u8, syscall: u64) -> Result<(), ()> {
    // TP_PROTO(struct sock *sk, int ret, int flags)
    let ret: i32 = ctx.arg(1);
    if ret <= 0 {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    if !is_target(pid) {
        return Ok(());
    }
    let capture_len = capture_len();
    // SAFETY: helpers of tracing programs; the result is the current task's saved user registers
    // (a BTF pointer the verifier checks every load against).
    let regs = unsafe { generated::bpf_task_pt_regs(generated::bpf_get_current_task_btf()) } as *const u8;
    if regs.is_null() {
        return Ok(());
    }
    // SAFETY (the loads): fields of `struct pt_regs` at its fixed x86_64 offsets.
    if unsafe { regs.add(REGS_ORIG_AX).cast::<u64>().read_volatile() } != syscall {
        return Ok(());
    }
    let fd = unsafe { regs.add(REGS_DI).cast::<u64>().read_volatile() } as i32;
    let buf = unsafe { regs.add(REGS_SI).cast::<u64>().read_volatile() };
    let mut call = PendingCall {
        buf,
        // A send is stamped once its bytes are queued (a few microseconds after it entered on
        // loopback), a receive once they are copied.
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        fd,
        capture_len,
        direction: dir,
        ..PendingCall::default()
    };
    let sk: *const u8 = ctx.arg(0);
    if sk.is_null() {
        // Not seen in practice (a transfer has its socket); the keyed maps serve then.
        return transfer_keyed(pid_tgid, &call, ret as u64, capture_len);
    }
    let flags: i32 = ctx.arg(2);
    note_socket(&mut call, sk, ret, flags);
    transfer_on_socket(pid_tgid, &call, ret as u64, capture_len, sk)
}

/// Notes the peer of the socket (any family) and, for TCP/IPv4, the local end and the sequence
/// number of the transfer's first byte.
#[inline(always)]
fn note_socket(call: &mut PendingCall, sk: *const u8, ret: i32, flags: i32) {
    // SAFETY (the offsets): globals the daemon sets before loading; read one by one as volatile
    // so each stays a load the verifier resolves to a constant.
    let offset = |field: &u32| unsafe { core::ptr::read_volatile(field) } as usize;
    if offset(&SOCK_OFFSETS.valid) != 1 {
        return;
    }
    // SAFETY (the loads): fields of the socket the tracepoint hands us, at BTF offsets.
    let family = unsafe { sk.add(offset(&SOCK_OFFSETS.family)).cast::<u16>().read_volatile() };
    let dport = unsafe { sk.add(offset(&SOCK_OFFSETS.dport)).cast::<u16>().read_volatile() };
    let daddr = unsafe { sk.add(offset(&SOCK_OFFSETS.daddr)).cast::<u32>().read_volatile() };
    call.peer_family = family;
    call.peer_port = u16::from_be(dport);
    call.peer_addr = daddr;
    if offset(&SOCK_OFFSETS.tcp_valid) != 1 || family != AF_INET {
        return;
    }
    // The kernel's own check (full socket, IPPROTO_TCP, SOCK_STREAM): only then is it a
    // `tcp_sock` whose sequence numbers may be read.
    // SAFETY: the helper only inspects the socket.
    let tp = unsafe { generated::bpf_skc_to_tcp_sock(sk as *mut c_void) } as *const u8;
    if tp.is_null() {
        return;
    }
    // The transfer's bytes end where the socket's counter now stands (it moved by `ret`), except
    // for a peek, which moves nothing. (A second thread moving bytes on the same socket between
    // the transfer and this tracepoint would shift the counter; omniORB and ZMQ give a connection
    // one writer and one reader at a time.)
    // SAFETY (the loads): fields of the TCP socket the kernel just checked, at BTF offsets.
    let seq = if call.direction == direction::SEND {
        unsafe { tp.add(offset(&SOCK_OFFSETS.write_seq)).cast::<u32>().read_volatile() }
            .wrapping_sub(ret as u32)
    } else if flags & MSG_PEEK != 0 {
        unsafe { tp.add(offset(&SOCK_OFFSETS.copied_seq)).cast::<u32>().read_volatile() }
    } else {
        unsafe { tp.add(offset(&SOCK_OFFSETS.copied_seq)).cast::<u32>().read_volatile() }
            .wrapping_sub(ret as u32)
    };
    call.local_addr = unsafe { sk.add(offset(&SOCK_OFFSETS.rcv_saddr)).cast::<u32>().read_volatile() };
    call.local_port = unsafe { sk.add(offset(&SOCK_OFFSETS.num)).cast::<u16>().read_volatile() };
    call.tcp_seq = seq;
    call.tcp_valid = 1;
}

/// What the store of a stream knew before a transfer: the stream's state (when `had_state`: a
/// message partly moved), whether this socket and fd sent a record, whether this direction
/// carries ZMTP. (Plain fields, no `Option`s: the verifier refuses to copy the undefined payload
/// of a `None`.)
#[derive(Clone, Copy, Default)]
struct Known {
    state: StreamState,
    had_state: bool,
    reported: bool,
    zmtp: bool,
    /// The first record of the socket wakes the daemon (the syscall path: the daemon reads the
    /// connection's peer from `/proc`, which tells it only while the connection exists).
    wake_first: bool,
}

/// A stream's state after a transfer: `state` when `changed` (an inactive one: nothing partly
/// moved any more), else as it was.
#[derive(Clone, Copy)]
struct Next {
    changed: bool,
    state: StreamState,
}

/// The stream's state did not change.
const UNCHANGED: Next = Next { changed: false, state: NO_STREAM };

/// Nothing partly moved (`StreamState::default()` as a constant).
const NO_STREAM: StreamState = StreamState {
    pending: 0,
    seen: 0,
    header_lo: 0,
    header_hi: 0,
    header_len: 0,
    skip: 0,
    lost_sync: 0,
    _pad: 0,
};

/// The stream's state is now `state`.
#[inline(always)]
fn changed_to(state: StreamState) -> Next {
    Next { changed: true, state }
}

/// What a transfer changed, for the store of its stream to keep.
#[derive(Clone, Copy)]
struct Transfer {
    next: Next,
    /// A record of the transfer was sent (or `Known::reported` already said so).
    sent: bool,
    /// The transfer showed that its direction carries a ZMTP event stream.
    zmtp: bool,
}

/// Whether `state` holds anything to keep: a message partly moved, or lost track of.
#[inline(always)]
fn is_active(state: &StreamState) -> bool {
    state.pending > 0 || state.header_len > 0 || state.lost_sync == 1
}

/// The socket path's store: the socket's own storage (`SOCKET_STATES`), found from the
/// tracepoint's socket without a hash lookup, and created only when there is something to keep
/// (its first record, a partly moved message, a ZMTP mark).
#[inline(always)]
fn transfer_on_socket(
    pid_tgid: u64,
    call: &PendingCall,
    len: u64,
    capture_len: u32,
    sk: *const u8,
) -> Result<(), ()> {
    let dir = call.direction as usize;
    let socket = socket_key((pid_tgid >> 32) as u32, call.fd);
    let states = core::ptr::from_ref(&SOCKET_STATES).cast_mut().cast::<c_void>();
    // SAFETY: a helper returning the storage of the tracepoint's socket, or null when it has none.
    let mut stored =
        unsafe { generated::bpf_sk_storage_get(states, sk as *mut c_void, core::ptr::null_mut(), 0) }
            .cast::<SocketState>();
    let known = if stored.is_null() {
        Known::default()
    } else {
        // SAFETY: the storage the helper returned, valid for this run.
        let socket_state = unsafe { &*stored };
        let state = socket_state.streams.get(dir).copied().unwrap_or(NO_STREAM);
        Known {
            state,
            had_state: is_active(&state),
            reported: socket_state.reported_as == socket,
            zmtp: socket_state.zmtp.get(dir) == Some(&1),
            wake_first: false,
        }
    };
    let transfer = emit_data(pid_tgid, call, len, capture_len, &known);
    // An unchanged or still empty stream needs no storage.
    let keep = transfer.next.changed && (is_active(&transfer.next.state) || known.had_state);
    let note_reported = transfer.sent && !known.reported;
    let note_zmtp = transfer.zmtp && !known.zmtp;
    if !keep && !note_reported && !note_zmtp {
        return Ok(());
    }
    if note_reported {
        // `close` knows only the fd: it learns from `SOCKETS` that this one is to be reported.
        mark_reported(socket);
    }
    if stored.is_null() {
        // SAFETY: as above; the kernel allocates the socket's storage, zeroed.
        stored = unsafe {
            generated::bpf_sk_storage_get(states, sk as *mut c_void, core::ptr::null_mut(), SK_STORAGE_CREATE)
        }
        .cast::<SocketState>();
        if stored.is_null() {
            if keep {
                count_lost(loss::STREAM_FULL, 1);
            }
            return Ok(());
        }
    }
    // SAFETY: the socket's storage, valid for this run; this direction's fields are written by
    // this direction's thread only.
    let socket_state = unsafe { &mut *stored };
    if keep && let Some(slot) = socket_state.streams.get_mut(dir) {
        let next = transfer.next.state;
        *slot = if is_active(&next) { next } else { NO_STREAM };
    }
    if note_reported {
        socket_state.reported_as = socket;
    }
    if note_zmtp && let Some(mark) = socket_state.zmtp.get_mut(dir) {
        *mark = 1;
    }
    Ok(())
}

/// The syscall path's store (no socket there): `STREAMS` and `SOCKETS`, keyed by pid and fd.
#[inline(always)]
fn transfer_keyed(pid_tgid: u64, call: &PendingCall, len: u64, capture_len: u32) -> Result<(), ()> {
    let pid = (pid_tgid >> 32) as u32;
    let key = StreamKey { pid, fd: call.fd, direction: call.direction as u32 };
    // SAFETY: a map lookup; the value is copied out.
    let state = unsafe { STREAMS.get(&key) }.copied();
    let socket = socket_key(pid, call.fd);
    // SAFETY: a map lookup; the value is copied out.
    let marks = unsafe { SOCKETS.get(&socket) }.copied();
    let known = Known {
        state: state.unwrap_or(NO_STREAM),
        had_state: state.is_some(),
        reported: marks.is_some_and(|m| m.reported == 1),
        zmtp: marks.is_some_and(|m| m.zmtp.get(call.direction as usize) == Some(&1)),
        wake_first: true,
    };
    let transfer = emit_data(pid_tgid, call, len, capture_len, &known);
    if transfer.next.changed {
        if is_active(&transfer.next.state) {
            if STREAMS.insert(&key, &transfer.next.state, 0).is_err() {
                count_lost(loss::STREAM_FULL, 1);
            }
        } else if known.had_state {
            let _ = STREAMS.remove(&key);
        }
    }
    if transfer.zmtp && !known.zmtp {
        mark_zmtp(socket, call.direction);
    }
    if transfer.sent && !known.reported {
        mark_reported(socket);
    }
    Ok(())
}

/// Reports the `len` bytes one syscall moved: the rest of a message an earlier syscall began,
/// then each GIOP message that starts in them (one record per message, up to
/// `MAX_MESSAGES_PER_CALL`), or a ZMTP frame of a Tango event stream. Reads and writes no store:
/// the caller gives what its store knows and keeps what this returns, so both paths share it.
#[inline(always)]
fn emit_data(pid_tgid: u64, call: &PendingCall, len: u64, capture_len: u32, known: &Known) -> Transfer {
    let unchanged = Transfer { next: UNCHANGED, sent: known.reported, zmtp: false };
    if !known.had_state && !known.zmtp {
        // The usual case: one whole GIOP message, or the start of one, copied by one read of the
        // user buffer into the record, and no loop.
        let wake = if known.wake_first && !known.reported { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
        let fast = emit_whole_message(pid_tgid, call, len, capture_len, wake);
        if fast.sent {
            return Transfer { next: fast.next, sent: true, zmtp: false };
        }
        if fast.taken {
            return unchanged;
        }
    }
    // The walk lives in a per-CPU map, not on the stack: the verifier then sees its fields as
    // unknown at every loop step and proves the step once, instead of following `off` growing.
    let Some(walk) = WALKS.get_ptr_mut(0) else {
        return unchanged;
    };
    // SAFETY: the per-CPU entry is ours for the duration of this program.
    let walk = unsafe { &mut *walk };
    *walk = Walk {
        pid_tgid,
        buf: call.buf,
        len,
        off: 0,
        ts_ns: call.ts_ns,
        fd: call.fd,
        capture_len,
        steps_before_messages: 0,
        peer_addr: call.peer_addr,
        local_addr: call.local_addr,
        tcp_seq: call.tcp_seq,
        peer_family: call.peer_family,
        peer_port: call.peer_port,
        local_port: call.local_port,
        direction: call.direction,
        tcp_valid: call.tcp_valid,
        in_stream: 0,
        finished: 0,
        reported: known.reported as u8,
        zmtp: 0,
        wake_first: known.wake_first as u8,
        _pad: [0; 3],
        state: known.state,
    };
    let next = walk_data(walk, call, len, capture_len, known).unwrap_or(UNCHANGED);
    Transfer { next, sent: walk.reported == 1, zmtp: walk.zmtp == 1 }
}

/// [`emit_data`] beyond the usual case: the stream's state in `walk.state`, the bytes walked
/// message by message. Returns the stream's next state.
#[inline(always)]
fn walk_data(
    walk: &mut Walk,
    call: &PendingCall,
    len: u64,
    capture_len: u32,
    known: &Known,
) -> Result<Next, ()> {
    let had_state = known.had_state;
    let lost_sync = had_state && known.state.lost_sync == 1;
    if lost_sync {
        // Only a syscall starting a message brings the stream back.
        let (lo, _) = read_words(call.buf, len.min(4))?;
        if len < 4 || lo as u32 != GIOP_MAGIC {
            count_lost(loss::DESYNC, 1);
            return Ok(UNCHANGED);
        }
        walk.state = StreamState::default();
    }
    if !had_state || lost_sync {
        if known.zmtp {
            emit_chunk(walk, 0, len, MAX_CAPTURE as u32, 0)?;
            return Ok(UNCHANGED);
        }
        if len < 4 {
            return Ok(UNCHANGED);
        }
        let (lo, hi) = read_words(call.buf, len.min(GIOP_HEADER_LEN as u64))?;
        if lo as u32 != GIOP_MAGIC {
            let (b0, b2) = (lo as u8, (lo >> 16) as u8);
            // A ZMTP short frame (flags, size) whose body is a Tango event topic.
            if len >= 10 && b0 & 0x02 == 0 && ((lo >> 16) | (hi << 48)) == u64::from_le_bytes(*b"tango://") {
                walk.zmtp = 1;
                emit_chunk(walk, 0, len, MAX_CAPTURE as u32, 0)?;
                return Ok(UNCHANGED);
            }
            // A ZMTP CANCEL command (flags 0x04, size, name length 6, "CANCEL", topic): an
            // unsubscription leaving a client.
            let cancel = u64::from_le_bytes(*b"CANCEL\0\0");
            if len >= 9 && b0 == 0x04 && b2 == 6 && ((lo >> 24) | (hi << 40)) & 0xffff_ffff_ffff == cancel {
                emit_chunk(walk, 0, len, capture_len, 0)?;
            }
            return Ok(UNCHANGED);
        }
        if len >= GIOP_HEADER_LEN as u64 {
            // One message or the start of one, after a desync: no loop.
            let message_len = giop_message_len(lo, hi).ok_or(())? as u64;
            if message_len >= len {
                emit_chunk(walk, 0, len, capture_len, chunk::MESSAGE_START)?;
                if message_len > len {
                    return Ok(changed_to(StreamState {
                        pending: (message_len - len) as u32,
                        seen: len as u32,
                        ..StreamState::default()
                    }));
                }
                return Ok(changed_to(NO_STREAM));
            }
        }
    }
    // SAFETY: `walk_step` is a BPF function; it finds the walk in `WALKS` itself.
    unsafe {
        bpf_loop(MAX_HEADERS_PER_CALL + 2, walk_step as *const () as *mut c_void, core::ptr::null_mut(), 0)
    };
    if walk.finished == 0 {
        count_lost(loss::WALK_CUT, 1);
        walk.state = StreamState { lost_sync: 1, ..StreamState::default() };
    }
    Ok(changed_to(walk.state))
}

/// One syscall's bytes being walked message by message (`bpf_loop` context).
#[repr(C)]
struct Walk {
    pid_tgid: u64,
    buf: u64,
    /// Bytes the syscall moved.
    len: u64,
    /// How far the walk has come in `buf`.
    off: u64,
    ts_ns: u64,
    fd: i32,
    capture_len: u32,
    /// Loop steps spent on the message an earlier syscall began (at most 2: its header, its rest).
    steps_before_messages: u32,
    peer_addr: u32,
    local_addr: u32,
    /// Sequence number of the syscall's first byte (valid when `tcp_valid` is 1).
    tcp_seq: u32,
    peer_family: u16,
    peer_port: u16,
    local_port: u16,
    direction: u8,
    tcp_valid: u8,
    /// 1 once a message ended inside these bytes: what follows must be a message start.
    in_stream: u8,
    /// 1 when the walk reached the end of the bytes (or stopped on purpose).
    finished: u8,
    /// 1 once this socket and fd sent a record (its store said so, or the walk sent one).
    reported: u8,
    /// 1 when the walk found its direction carries a ZMTP event stream.
    zmtp: u8,
    /// 1 when the socket's first record wakes the daemon (see [`Known::wake_first`]).
    wake_first: u8,
    _pad: [u8; 3],
    /// The stream between syscalls: kept when the walk ends inside a message.
    state: StreamState,
}

/// `"GIOP"` as a little-endian word.
const GIOP_MAGIC: u32 = u32::from_le_bytes(*b"GIOP");

/// One step of the walk: finishes a split header, or reports the rest of the current message, or
/// the message starting at `walk.off`. Returns 1 to stop the loop. Verified once by the kernel
/// (a `bpf_loop` callback), however many steps run.
#[inline(never)]
extern "C" fn walk_step(index: u64, _ctx: *mut c_void) -> i64 {
    let Some(walk) = WALKS.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: the per-CPU walk `emit_data` set up; nothing else runs on this CPU meanwhile.
    let walk = unsafe { &mut *walk };
    if walk.off >= walk.len {
        walk.finished = 1;
        return 1;
    }
    let rem = walk.len - walk.off;
    let start = walk.buf.wrapping_add(walk.off);
    if walk.state.header_len > 0 {
        walk.steps_before_messages += 1;
        return complete_header(walk, start, rem);
    }
    if walk.state.pending > 0 {
        walk.steps_before_messages += 1;
        // The rest of a message begun earlier: only its first `capture_len` bytes matter.
        let state = walk.state;
        let n = (state.pending as u64).min(rem);
        if state.skip == 0 {
            let budget = walk.capture_len.saturating_sub(state.seen);
            let _ = emit_chunk(walk, walk.off, n, budget, 0);
        }
        walk.off += n;
        walk.state.pending = state.pending - n as u32;
        walk.state.seen = state.seen.saturating_add(n as u32);
        if walk.state.pending > 0 {
            walk.finished = 1;
            return 1;
        }
        walk.state = StreamState::default();
        walk.in_stream = 1;
        return 0;
    }
    // A message starts here.
    let Ok((lo, hi)) = read_words(start, rem.min(GIOP_HEADER_LEN as u64)) else {
        walk.finished = 1;
        return 1;
    };
    if rem < GIOP_HEADER_LEN as u64 {
        // A header split across syscalls: keep its first bytes for the next one.
        walk.finished = 1;
        let magic_bytes = rem.min(4) as u32;
        let mask = (1u64 << (8 * magic_bytes)) - 1;
        if lo & mask != GIOP_MAGIC as u64 & mask {
            if walk.in_stream == 1 {
                count_lost(loss::DESYNC, 1);
                walk.state = StreamState { lost_sync: 1, ..StreamState::default() };
            }
            return 1;
        }
        let skip = take_message_slot(walk, index);
        if skip == 0 {
            let _ = emit_chunk(walk, walk.off, rem, rem as u32, chunk::MESSAGE_START);
        }
        walk.state = StreamState {
            header_lo: lo,
            header_hi: hi as u32,
            header_len: rem as u8,
            skip,
            ..StreamState::default()
        };
        walk.off = walk.len;
        return 1;
    }
    if walk.in_stream == 0 && lo as u32 != GIOP_MAGIC {
        // Not GIOP at the start of a syscall: some other protocol, not a loss.
        walk.finished = 1;
        return 1;
    }
    let Some(message_len) = giop_message_len(lo, hi) else {
        // Counted by giop_message_len.
        walk.state = StreamState { lost_sync: 1, ..StreamState::default() };
        walk.finished = 1;
        return 1;
    };
    let n = (message_len as u64).min(rem);
    let skip = take_message_slot(walk, index);
    if skip == 0 {
        let _ = emit_chunk(walk, walk.off, n, walk.capture_len, chunk::MESSAGE_START);
    }
    walk.off += n;
    walk.in_stream = 1;
    if n < message_len as u64 {
        // The rest comes with later syscalls.
        walk.state =
            StreamState { pending: message_len - n as u32, seen: n as u32, skip, ..StreamState::default() };
        walk.finished = 1;
        return 1;
    }
    if walk.off >= walk.len {
        walk.finished = 1;
        return 1;
    }
    0
}

/// Completes a header split across syscalls with the first bytes of this one; the bytes stay
/// in the stream (the next step reports them as the rest of the message).
#[inline(always)]
fn complete_header(walk: &mut Walk, start: u64, rem: u64) -> i64 {
    let state = walk.state;
    let have = (state.header_len as u64).min(GIOP_HEADER_LEN as u64 - 1);
    let take = (GIOP_HEADER_LEN as u64 - have).min(rem);
    let Ok((new_lo, new_hi)) = read_words(start, take) else {
        walk.state = StreamState::default();
        walk.finished = 1;
        return 1;
    };
    // Append the new bytes after the `have` known ones (little-endian words, zero-extended).
    let (lo, hi) = if have < 8 {
        let shift = 8 * have;
        (
            state.header_lo | (new_lo << shift),
            state.header_hi as u64 | (new_lo >> (64 - shift)) | (new_hi << shift),
        )
    } else {
        (state.header_lo, state.header_hi as u64 | (new_lo << (8 * (have - 8))))
    };
    if have + take < GIOP_HEADER_LEN as u64 {
        // Still not whole (a syscall of a few bytes): these bytes are part of the header.
        if state.skip == 0 {
            let _ = emit_chunk(walk, walk.off, take, take as u32, 0);
        }
        walk.state.header_lo = lo;
        walk.state.header_hi = hi as u32;
        walk.state.header_len = (have + take) as u8;
        walk.off = walk.len;
        walk.finished = 1;
        return 1;
    }
    let Some(message_len) = giop_message_len(lo, hi) else {
        // Counted by giop_message_len; resynchronise on a later message start.
        walk.state = StreamState { lost_sync: 1, ..StreamState::default() };
        walk.finished = 1;
        return 1;
    };
    walk.state = StreamState {
        pending: message_len - have as u32,
        seen: have as u32,
        skip: state.skip,
        ..StreamState::default()
    };
    0
}

/// Reads `n` (≤ 12) bytes of user memory as two little-endian words, zero-extended.
#[inline(always)]
fn read_words(src: u64, n: u64) -> Result<(u64, u64), ()> {
    let mut words = [0u64; 2];
    let n = n.min(GIOP_HEADER_LEN as u64) as u32;
    if n == 0 {
        return Ok((0, 0));
    }
    // SAFETY: at most 12 bytes into a 16-byte buffer; reading user memory the syscall itself
    // read or wrote.
    let ret = unsafe { generated::bpf_probe_read_user(words.as_mut_ptr().cast(), n, src as *const c_void) };
    if ret != 0 {
        count_lost(loss::READ_FAILED, 1);
        return Err(());
    }
    Ok((words[0], words[1]))
}

/// Length of the message whose 12-byte header these words hold, or `None` (counted) when it is
/// not GIOP 1.x or claims more than `MAX_GIOP_BODY_LEN`.
#[inline(always)]
fn giop_message_len(lo: u64, hi: u64) -> Option<u32> {
    // "GIOP" | major | minor | flags | type || u32 body length in the flags' byte order
    if lo as u32 != GIOP_MAGIC || (lo >> 32) as u8 != 1 {
        count_lost(loss::DESYNC, 1);
        return None;
    }
    let little_endian = (lo >> 48) as u8 & 1 == 1;
    let body_len = if little_endian { hi as u32 } else { (hi as u32).swap_bytes() };
    if body_len > MAX_GIOP_BODY_LEN {
        count_lost(loss::OVERSIZE, 1);
        return None;
    }
    Some(GIOP_HEADER_LEN as u32 + body_len)
}

/// Whether the message starting at loop step `index` may be reported: 0 when it may, 1 when it
/// is over `MAX_MESSAGES_PER_CALL` (then counted as missed). Counted from the loop index, which
/// the verifier treats as unknown: a counter of our own would be a new constant each step and keep
/// the verifier from seeing that the steps converge.
#[inline(always)]
fn take_message_slot(walk: &Walk, index: u64) -> u8 {
    if index.saturating_sub(walk.steps_before_messages as u64) < MAX_MESSAGES_PER_CALL as u64 {
        0
    } else {
        count_lost(loss::OVER_LIMIT, 1);
        1
    }
}

/// Copies one chunk (`len` bytes at `off` of the syscall's buffer, at most `capture_len` of them)
/// into the ring buffer.
#[inline(always)]
fn emit_chunk(walk: &mut Walk, off: u64, len: u64, capture_len: u32, flags: u8) -> Result<(), ()> {
    let pid = (walk.pid_tgid >> 32) as u32;
    let record = SCRATCH.get_ptr_mut(0).ok_or(())?;
    // SAFETY: the per-CPU scratch entry is ours for the duration of this program.
    let record = unsafe { &mut *record };
    record.header =
        RecordHeader { kind: kind::DATA, pid, tid: walk.pid_tgid as u32, fd: walk.fd, ts_ns: walk.ts_ns };
    record.total_len = len.min(u32::MAX as u64) as u32;
    record.direction = walk.direction;
    record.flags = if walk.tcp_valid == 1 { flags | chunk::TCP_POSITION } else { flags };
    record.peer_family = walk.peer_family;
    record.peer_port = walk.peer_port;
    record.peer_addr = walk.peer_addr;
    record.local_port = walk.local_port;
    record.local_addr = walk.local_addr;
    // Each chunk starts `off` bytes into the syscall.
    record.tcp_seq = walk.tcp_seq.wrapping_add(off as u32);
    record._pad2 = 0;
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
        let src = walk.buf.wrapping_add(off) as *const u8;
        // SAFETY: reading user memory the syscall itself read or wrote.
        if unsafe { bpf_probe_read_user_buf(src, &mut record.data[..captured]) }.is_err() {
            count_lost(loss::READ_FAILED, 1);
            return Err(());
        }
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
    // lifecycle record wakes it), which saves two context switches per Tango call. A socket's
    // first record on the syscall path wakes it: once per connection.
    let wake =
        if walk.wake_first == 1 && walk.reported == 0 { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
    if EVENTS.output(bytes, wake).is_err() {
        count_lost(loss::RING_FULL, 1);
    }
    // The caller notes it in its store, so the socket's `close` is reported.
    walk.reported = 1;
    Ok(())
}

/// Notes that `socket` sent a record (so its `close` is reported).
#[inline(always)]
fn mark_reported(socket: u64) {
    let marks = SocketMarks { reported: 1, ..SocketMarks::default() };
    if SOCKETS.insert(&socket, &marks, BPF_NOEXIST).is_err()
        && let Some(marks) = SOCKETS.get_ptr_mut(&socket)
    {
        // SAFETY: one byte of the entry, written in place (see `SocketMarks`).
        unsafe { (*marks).reported = 1 };
    }
}

/// Notes that direction `dir` of `socket` carries a ZMTP event stream.
#[inline(always)]
fn mark_zmtp(socket: u64, dir: u8) {
    let mut marks = SocketMarks::default();
    if let Some(mark) = marks.zmtp.get_mut(dir as usize) {
        *mark = 1;
    }
    if SOCKETS.insert(&socket, &marks, BPF_NOEXIST).is_err()
        && let Some(marks) = SOCKETS.get_ptr_mut(&socket)
        // SAFETY: one byte of the entry, written in place (see `SocketMarks`).
        && let Some(mark) = unsafe { (*marks).zmtp.get_mut(dir as usize) }
    {
        *mark = 1;
    }
}

/// The fast path of [`emit_data`]: a syscall with no stream state that starts with a GIOP header
/// and moves that message whole or its start only. The first `capture_len` bytes are read once,
/// straight into the record, and the header is taken from there. `None` when the bytes are
/// anything else: the general path reads them again.
///
/// A record of up to `SMALL_CAPTURE` bytes (most Tango calls) is built in the ring buffer itself,
/// in a reservation of that constant size, so its bytes are copied once; a longer one in
/// `SCRATCH`, then copied into the ring at its exact size.
#[inline(always)]
fn emit_whole_message(pid_tgid: u64, call: &PendingCall, len: u64, capture_len: u32, wake: u64) -> Fast {
    if len < GIOP_HEADER_LEN as u64 {
        return NOT_TAKEN;
    }
    let mut captured = len as usize;
    if captured > capture_len as usize {
        captured = capture_len as usize;
    }
    if captured > MAX_CAPTURE {
        captured = MAX_CAPTURE;
    }
    if captured < GIOP_HEADER_LEN {
        return NOT_TAKEN;
    }
    if captured <= SMALL_CAPTURE
        && let Some(mut entry) = EVENTS.reserve_bytes(DATA_RECORD_HEADER_LEN + SMALL_CAPTURE, 0)
    {
        let base = entry.as_mut_ptr();
        // SAFETY: the reservation holds the record's fixed part, then `SMALL_CAPTURE` ≥ `captured`
        // data bytes; both are built from `base` alone.
        let written = unsafe {
            let data = core::slice::from_raw_parts_mut(base.add(DATA_RECORD_HEADER_LEN), captured);
            fill_whole_message(base.cast::<DataRecord>(), data, pid_tgid, call, len)
        };
        if written.sent {
            // Wake-up as in `emit_chunk`.
            entry.submit(wake);
        } else {
            entry.discard(BPF_RB_NO_WAKEUP);
        }
        return written;
    }
    // Longer, or the ring is full (then counted below, as for any record).
    let Some(record) = SCRATCH.get_ptr_mut(0) else {
        return NOT_TAKEN;
    };
    // SAFETY: the per-CPU scratch entry is ours for the duration of this program.
    let Some(data) = (unsafe { (*record).data.get_mut(..captured) }) else {
        return NOT_TAKEN;
    };
    // SAFETY: `record` is the whole scratch record.
    let written = unsafe { fill_whole_message(record, data, pid_tgid, call, len) };
    if written.sent {
        let size = DATA_RECORD_HEADER_LEN + captured;
        // SAFETY: the record lives in a map value of exactly `size_of::<DataRecord>()` bytes.
        let bytes = unsafe {
            core::slice::from_raw_parts(record.cast::<u8>(), size.min(core::mem::size_of::<DataRecord>()))
        };
        // Wake-up as in `emit_chunk`.
        if EVENTS.output(bytes, wake).is_err() {
            count_lost(loss::RING_FULL, 1);
        }
    }
    written
}

/// Data bytes of the records the fast path builds in the ring buffer itself.
const SMALL_CAPTURE: usize = 512;

/// Reads the syscall's first `data.len()` bytes into `data`, the data of `record`, and when they
/// start a GIOP message that the syscall moved whole or the start of, fills the record's fixed
/// part. What [`emit_whole_message`] returns.
///
/// # Safety
/// `record` must point to writable memory holding at least the record's fixed part
/// (`DATA_RECORD_HEADER_LEN` bytes), which `data` does not overlap.
#[inline(always)]
unsafe fn fill_whole_message(
    record: *mut DataRecord,
    data: &mut [u8],
    pid_tgid: u64,
    call: &PendingCall,
    len: u64,
) -> Fast {
    let captured = data.len();
    // SAFETY: reading user memory the syscall itself read or wrote.
    if unsafe { bpf_probe_read_user_buf(call.buf as *const u8, data) }.is_err() {
        return NOT_TAKEN;
    }
    // SAFETY: the first 12 bytes of the data, just copied (the caller gives at least 12).
    let (lo, hi) = unsafe {
        let at = data.as_ptr();
        (at.cast::<u64>().read_unaligned(), at.add(8).cast::<u32>().read_unaligned() as u64)
    };
    if lo as u32 != GIOP_MAGIC {
        return NOT_TAKEN;
    }
    // A bad header is counted once, here, and ends the syscall as on the general path.
    let Some(message_len) = giop_message_len(lo, hi) else {
        return Fast { taken: true, sent: false, next: UNCHANGED };
    };
    let message_len = message_len as u64;
    if message_len < len {
        // Several messages: the walk.
        return NOT_TAKEN;
    }
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: fields of the fixed part, which the caller guarantees is there (written through
    // the raw pointer: a ring reservation holds only part of the data array).
    unsafe {
        use core::ptr::addr_of_mut;
        addr_of_mut!((*record).header).write(RecordHeader {
            kind: kind::DATA,
            pid,
            tid: pid_tgid as u32,
            fd: call.fd,
            ts_ns: call.ts_ns,
        });
        addr_of_mut!((*record).total_len).write(len.min(u32::MAX as u64) as u32);
        addr_of_mut!((*record).captured_len).write(captured as u32);
        addr_of_mut!((*record).direction).write(call.direction);
        addr_of_mut!((*record).flags).write(if call.tcp_valid == 1 {
            chunk::MESSAGE_START | chunk::TCP_POSITION
        } else {
            chunk::MESSAGE_START
        });
        addr_of_mut!((*record).peer_family).write(call.peer_family);
        addr_of_mut!((*record).peer_port).write(call.peer_port);
        addr_of_mut!((*record).peer_addr).write(call.peer_addr);
        addr_of_mut!((*record).local_port).write(call.local_port);
        addr_of_mut!((*record).local_addr).write(call.local_addr);
        addr_of_mut!((*record).tcp_seq).write(call.tcp_seq);
        addr_of_mut!((*record)._pad2).write(0);
    }
    let next = if message_len > len {
        changed_to(StreamState { pending: (message_len - len) as u32, seen: len as u32, ..NO_STREAM })
    } else {
        UNCHANGED
    };
    Fast { taken: true, sent: true, next }
}

/// What the fast path did: nothing (`taken` false: the general path takes the bytes), or
/// ended the syscall, having sent its record or not, leaving the stream's state `next`.
#[derive(Clone, Copy)]
struct Fast {
    taken: bool,
    sent: bool,
    next: Next,
}

/// The fast path does not take the syscall.
const NOT_TAKEN: Fast = Fast { taken: false, sent: false, next: UNCHANGED };

#[inline(always)]
fn socket_key(pid: u32, fd: i32) -> u64 {
    ((pid as u64) << 32) | fd as u32 as u64
}

#[inline(always)]
fn count_lost(cause: u32, n: u64) {
    if let Some(lost) = LOST.get_ptr_mut(cause) {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        unsafe { *lost += n };
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
        count_lost(loss::RING_FULL, 1);
    }
}

#[tracepoint]
pub fn close_enter(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    if !is_target(pid) {
        return 0;
    }
    // SAFETY: offset comes from the tracepoint's format file.
    let Ok(fd) = (unsafe { ctx.read_at::<u64>(ARG0) }) else {
        return 0;
    };
    let fd = fd as i32;
    // Stream state goes whatever `SOCKETS` says: an LRU eviction of a long-lived connection must
    // not leave a partial message for the next connection that gets this fd number.
    for dir in [direction::SEND, direction::RECV] {
        let _ = STREAMS.remove(&StreamKey { pid, fd, direction: dir as u32 });
    }
    // `SOCKETS` says whether the fd carried a record, so other closes are not reported; its ZMTP
    // marks go with it.
    let socket = socket_key(pid, fd);
    // SAFETY: a map lookup; the value is copied out.
    let reported = unsafe { SOCKETS.get(&socket) }.is_some_and(|marks| marks.reported == 1);
    if SOCKETS.remove(&socket).is_ok() && reported {
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
/// before omniORB; nothing when it is outside the traced network namespace.
fn become_target(pid_tgid: u64, opened: &LibraryRecord) -> Result<(), ()> {
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: helper without arguments; the current task is the process opening omniORB.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let net_ns = net_ns_of(task);
    if !in_traced_net_ns(net_ns) {
        return Ok(());
    }
    let config = TargetConfig { capture_len: capture_len(), flags: 0 };
    add_target(pid, &config);
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
    read_facts(facts, task, net_ns);
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
        count_lost(loss::RING_FULL, 1);
    }
}

/// Inode of the network namespace of `task` (a live task: the current one, or a child being
/// forked).
#[inline(always)]
fn net_ns_of(task: *const u8) -> Result<u32, ()> {
    // SAFETY: a global the daemon sets before loading; read as volatile so it is not folded.
    let offsets = unsafe { core::ptr::read_volatile(&PROCESS_OFFSETS) };
    // SAFETY (the reads): kernel memory of a live task at BTF offsets, fault-tolerant helper.
    let nsproxy = unsafe { bpf_probe_read_kernel(task.add(offsets.task_nsproxy as usize).cast::<u64>()) }
        .map_err(|_| ())?;
    let net = unsafe {
        bpf_probe_read_kernel((nsproxy as *const u8).add(offsets.nsproxy_net_ns as usize).cast::<u64>())
    }
    .map_err(|_| ())?;
    unsafe { bpf_probe_read_kernel((net as *const u8).add(offsets.net_ns_inum as usize).cast::<u32>()) }
        .map_err(|_| ())
}

/// Whether a process in network namespace `net_ns` may become a target (`--netns`). When a
/// namespace is chosen, a process whose namespace cannot be read is left out.
#[inline(always)]
fn in_traced_net_ns(net_ns: Result<u32, ()>) -> bool {
    // SAFETY: a global the daemon sets before loading; read as volatile so it is not folded.
    let wanted = unsafe { core::ptr::read_volatile(&TARGET_NET_NS) };
    wanted == 0 || net_ns == Ok(wanted)
}

/// Fills everything but the header and the parent from `task` (the current task, or a
/// child being forked, whose memory is still the same as its parent's); `net_ns` was read from
/// it already.
#[inline(always)]
fn read_facts(facts: &mut FactsRecord, task: *const u8, net_ns: Result<u32, ()>) {
    // SAFETY: a global the daemon sets before loading; read as volatile so it is not folded.
    let offsets = unsafe { core::ptr::read_volatile(&PROCESS_OFFSETS) };
    facts.unreadable = 0;
    facts._pad = 0;
    match net_ns {
        Ok(inum) => facts.net_ns = inum,
        Err(()) => {
            facts.net_ns = 0;
            facts.unreadable |= unreadable::NET_NS;
        }
    }
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
        count_lost(loss::RING_FULL, 1);
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
    // A child cloned into another network namespace belongs to another host.
    let net_ns = net_ns_of(child);
    if !in_traced_net_ns(net_ns) {
        return Ok(());
    }
    add_target(child_pid, &config);
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
    read_facts(facts, child, net_ns);
    emit_facts(facts);
    Ok(())
}

#[tracepoint]
pub fn process_exec(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    if remove_target(pid) {
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
    if remove_target(pid) {
        emit_process(kind::EXIT, pid, pid_tgid as u32, -1);
    }
    forget_early_libraries(pid);
    0
}

/// `zmq_msg_send(msg, socket, flags)`: the application thread hands ZMQ a message part. The last
/// part (no `ZMQ_SNDMORE`) marks when and on which thread an event was pushed.
#[uprobe(multi)]
pub fn zmq_msg_send(ctx: ProbeContext) -> u32 {
    on_zmq_msg_send(&ctx)
}

/// [`zmq_msg_send`] attached the legacy way, one perf event per point: kernels before 6.6 have no
/// uprobe_multi links (and need CAP_SYS_ADMIN for this way).
#[uprobe]
pub fn zmq_msg_send_perf(ctx: ProbeContext) -> u32 {
    on_zmq_msg_send(&ctx)
}

#[inline(always)]
fn on_zmq_msg_send(ctx: &ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: a map lookup; the value is only read.
    if unsafe { TARGETS.get(&pid) }.is_none() {
        return 0;
    }
    const ZMQ_SNDMORE: u64 = 2;
    let flags: u64 = ctx.arg(2).unwrap_or(0);
    if flags & ZMQ_SNDMORE == 0 {
        emit_push(pid, pid_tgid as u32, flags as i32);
    }
    0
}

/// An application thread pushed an event (`kind::ZMQ_SEND`). No wake-up: the push is paired
/// with the ZMTP frames that follow it in the ring, which the daemon drains on its timer, so a
/// wake-up per push would only cost the pushing thread and the daemon a context switch each.
#[inline(always)]
fn emit_push(pid: u32, tid: u32, flags: i32) {
    let record = ProcessRecord {
        header: RecordHeader {
            kind: kind::ZMQ_SEND,
            pid,
            tid,
            fd: flags,
            // SAFETY: helper without arguments.
            ts_ns: unsafe { bpf_ktime_get_ns() },
        },
    };
    if EVENTS.output(&record, BPF_RB_NO_WAKEUP).is_err() {
        count_lost(loss::RING_FULL, 1);
    }
}

/// `Tango::ZmqEventSupplier::push_event(...)`: cppTango hands one event message to ZMQ. One trap
/// per push, where `zmq_msg_send` traps once per message part (four per event); it marks when
/// and on which thread an event was pushed, as the last part's `zmq_msg_send` does.
#[uprobe(multi)]
pub fn tango_push_event(ctx: ProbeContext) -> u32 {
    on_push_event(&ctx)
}

/// [`tango_push_event`] attached the legacy way, one perf event per point (kernels before 6.6).
#[uprobe]
pub fn tango_push_event_perf(ctx: ProbeContext) -> u32 {
    on_push_event(&ctx)
}

#[inline(always)]
fn on_push_event(ctx: &ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    let _ = ctx.as_ptr();
    // SAFETY: a map lookup; the value is only read.
    if unsafe { TARGETS.get(&pid) }.is_none() {
        return 0;
    }
    emit_push(pid, pid_tgid as u32, 0);
    0
}

/// cppTango 10: `log4tango::Logger::log_unconditionally(const std::string& file, int line,
/// int level, const std::string& message)`; rdi = the logger, rsi = &file, edx = line,
/// ecx = level, r8 = &message. Every device log message that passed its level check ends here,
/// on the thread that logged it.
#[uprobe(multi)]
pub fn log_unconditionally_10(ctx: ProbeContext) -> u32 {
    on_log_unconditionally_10(&ctx)
}

/// [`log_unconditionally_10`] attached the legacy way, one perf event per point: kernels before 6.6 have no
/// uprobe_multi links (and need CAP_SYS_ADMIN for this way).
#[uprobe]
pub fn log_unconditionally_10_perf(ctx: ProbeContext) -> u32 {
    on_log_unconditionally_10(&ctx)
}

#[inline(always)]
fn on_log_unconditionally_10(ctx: &ProbeContext) -> u32 {
    let logger: u64 = ctx.arg(0).unwrap_or(0);
    let file: u64 = ctx.arg(1).unwrap_or(0);
    let line: u64 = ctx.arg(2).unwrap_or(0);
    let level: u64 = ctx.arg(3).unwrap_or(0);
    let message: u64 = ctx.arg(4).unwrap_or(0);
    let _ = emit_log(logger, Some((file, line as i32)), level as i32, message);
    0
}

/// cppTango 9: `log4tango::Logger::log_unconditionally(int level, const std::string& message)`;
/// rdi = the logger, esi = level, rdx = &message. No source location.
#[uprobe(multi)]
pub fn log_unconditionally_9(ctx: ProbeContext) -> u32 {
    on_log_unconditionally_9(&ctx)
}

/// [`log_unconditionally_9`] attached the legacy way, one perf event per point: kernels before 6.6 have no
/// uprobe_multi links (and need CAP_SYS_ADMIN for this way).
#[uprobe]
pub fn log_unconditionally_9_perf(ctx: ProbeContext) -> u32 {
    on_log_unconditionally_9(&ctx)
}

#[inline(always)]
fn on_log_unconditionally_9(ctx: &ProbeContext) -> u32 {
    let logger: u64 = ctx.arg(0).unwrap_or(0);
    let level: u64 = ctx.arg(1).unwrap_or(0);
    let message: u64 = ctx.arg(2).unwrap_or(0);
    let _ = emit_log(logger, None, level as i32, message);
    0
}

/// `log4tango::Logger`: its name (a `std::string`) at +0x60, in cppTango 9.3 and 10.3 alike.
const LOGGER_NAME_OFFSET: u64 = 0x60;

/// A `std::string` (C++11 ABI): data pointer at +0, length at +8.
#[inline(always)]
fn read_std_string(at: u64) -> Result<(u64, u64), ()> {
    let mut words = [0u64; 2];
    // SAFETY: 16 bytes into a 16-byte buffer, from the traced thread's own memory.
    let ret = unsafe { generated::bpf_probe_read_user(words.as_mut_ptr().cast(), 16, at as *const c_void) };
    if ret != 0 {
        return Err(());
    }
    Ok((words[0], words[1]))
}

/// Copies `len` bytes (≤ `limit`) at `src` into `text[at..]`; the bytes copied (0 on failure).
#[inline(always)]
fn copy_text(text: &mut [u8], at: usize, src: u64, len: u64, limit: usize) -> Result<u32, ()> {
    let mut n = len as usize;
    if n > limit {
        n = limit;
    }
    if n == 0 {
        return Ok(0);
    }
    let Some(dst) = text.get_mut(at..at + n) else {
        return Err(());
    };
    // SAFETY: reading the traced thread's own memory with the fault-tolerant helper.
    unsafe { bpf_probe_read_user_buf(src as *const u8, dst) }.map_err(|_| ())?;
    Ok(n as u32)
}

/// Sends one log message of a target: its logger's name, its source location (the file's last
/// bytes, where the base name is), its level and the first `LOG_MESSAGE_LEN` bytes of the message.
/// A field that cannot be read is flagged, not guessed; the record still goes.
#[inline(always)]
fn emit_log(logger: u64, location: Option<(u64, i32)>, level: i32, message: u64) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: a map lookup; the value is not used.
    if unsafe { TARGETS.get(&pid) }.is_none() {
        return Ok(());
    }
    let record = LOG_SCRATCH.get_ptr_mut(0).ok_or(())?;
    // SAFETY: the per-CPU scratch entry is ours for the duration of this program.
    let record = unsafe { &mut *record };
    record.header = RecordHeader {
        kind: kind::LOG,
        pid,
        tid: pid_tgid as u32,
        fd: -1,
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    };
    record.level = level;
    record.flags = 0;
    record.line = 0;
    record.logger_len = 0;
    record.logger_captured = 0;
    record.file_len = 0;
    record.file_captured = 0;
    record.message_len = 0;
    record.message_captured = 0;
    record._pad = 0;

    match read_std_string(logger.wrapping_add(LOGGER_NAME_OFFSET)) {
        Ok((ptr, len)) => {
            record.logger_len = len.min(u32::MAX as u64) as u32;
            match copy_text(&mut record.text, 0, ptr, len, MAX_LOGGER_NAME) {
                Ok(n) => record.logger_captured = n,
                Err(()) => record.flags |= log_flags::LOGGER_UNREADABLE,
            }
        }
        Err(()) => record.flags |= log_flags::LOGGER_UNREADABLE,
    }
    let mut used = record.logger_captured as usize;
    if used > MAX_LOGGER_NAME {
        used = MAX_LOGGER_NAME;
    }
    if let Some((file, line)) = location {
        record.flags |= log_flags::HAS_LOCATION;
        record.line = line;
        match read_std_string(file) {
            Ok((ptr, len)) => {
                record.file_len = len.min(u32::MAX as u64) as u32;
                // The last bytes: the base name is at the end of the path.
                let skip = len.saturating_sub(MAX_LOG_FILE as u64);
                match copy_text(&mut record.text, used, ptr.wrapping_add(skip), len - skip, MAX_LOG_FILE) {
                    Ok(n) => record.file_captured = n,
                    Err(()) => record.flags |= log_flags::FILE_UNREADABLE,
                }
            }
            Err(()) => record.flags |= log_flags::FILE_UNREADABLE,
        }
    }
    let mut file_used = record.file_captured as usize;
    if file_used > MAX_LOG_FILE {
        file_used = MAX_LOG_FILE;
    }
    used += file_used;
    // SAFETY: a global the daemon sets before loading; read as volatile so it is not folded.
    let mut limit = unsafe { core::ptr::read_volatile(&LOG_MESSAGE_LEN) } as usize;
    if limit > MAX_LOG_MESSAGE {
        limit = MAX_LOG_MESSAGE;
    }
    match read_std_string(message) {
        Ok((ptr, len)) => {
            record.message_len = len.min(u32::MAX as u64) as u32;
            match copy_text(&mut record.text, used, ptr, len, limit) {
                Ok(n) => record.message_captured = n,
                Err(()) => record.flags |= log_flags::MESSAGE_UNREADABLE,
            }
        }
        Err(()) => record.flags |= log_flags::MESSAGE_UNREADABLE,
    }
    let mut message_used = record.message_captured as usize;
    if message_used > MAX_LOG_MESSAGE {
        message_used = MAX_LOG_MESSAGE;
    }
    let size = LOG_RECORD_HEADER_LEN + used + message_used;
    // SAFETY: the record lives in a map value of exactly `size_of::<LogRecord>()` bytes.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            (record as *const LogRecord).cast::<u8>(),
            size.min(core::mem::size_of::<LogRecord>()),
        )
    };
    // Like data records: the daemon drains the ring on its timer.
    if EVENTS.output(bytes, BPF_RB_NO_WAKEUP).is_err() {
        count_lost(loss::RING_FULL, 1);
    }
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
