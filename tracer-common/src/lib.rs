//! Records that cross the ring buffer from the probes to the daemon.
//!
//! Every record starts with a [`RecordHeader`]; its `kind` says which struct follows.
//! All structs are `#[repr(C)]` and free of padding surprises so both sides agree.
#![no_std]

/// Largest number of payload bytes copied from one send/receive: ZMQ's batch size, so a Tango
/// event stream is copied whole. GIOP is copied up to the (smaller) configured capture length.
pub const MAX_CAPTURE: usize = 8192;

/// Largest GIOP body the probes and the daemon believe: cppTango raises omniORB's
/// `giopMaxMsgSize` to its `MAX_TRANSFER_SIZE`, 256 MiB, for clients and servers alike, so a Tango
/// peer refuses anything larger. A header claiming more is garbage (a desync), not a message to
/// follow for gigabytes.
pub const MAX_GIOP_BODY_LEN: u32 = 256 * 1024 * 1024;

/// GIOP messages whose start one syscall may report (one data record each). Further messages of
/// the same syscall are walked but not copied, and counted ([`loss::OVER_LIMIT`]). An omniORB
/// receive buffer (8 KiB) holds at most ~80 of the smallest Tango requests.
pub const MAX_MESSAGES_PER_CALL: u32 = 128;

/// Message headers one syscall's bytes are walked through. Past this, the rest of the syscall is
/// not looked at ([`loss::WALK_CUT`]) and its stream resynchronises on the next message start.
pub const MAX_HEADERS_PER_CALL: u32 = 1024;

/// Most processes traced at once: the size of the in-kernel `TARGETS` map and the cap of the
/// daemon's process table. One number for both, so the kernel never captures for a process the
/// daemon has no room to know, and the daemon never keeps a process the kernel cannot capture.
pub const MAX_TARGETS: u32 = 65_536;

/// Pids per page of the in-kernel `TARGET_PIDS` filter (one byte each: 1 for a target).
pub const TARGET_PIDS_PER_PAGE: usize = 4096;

/// Pages of `TARGET_PIDS` that cover every pid the kernel can hand out (`PID_MAX_LIMIT`,
/// 4,194,304, on 64-bit): the most the daemon sizes it to.
pub const MAX_TARGET_PID_PAGES: u32 = 1024;

/// Record kinds (the first field of every record).
pub mod kind {
    /// [`super::DataRecord`]: bytes a target process sent or received on a socket.
    pub const DATA: u32 = 1;
    /// [`super::ProcessRecord`]: a target process closed a socket fd it had used.
    pub const CLOSE: u32 = 2;
    /// [`super::ProcessRecord`]: a process opened a file whose name looks like omniORB.
    pub const LIB_OPENED: u32 = 3;
    /// [`super::ProcessRecord`]: a target process (thread group leader) exited.
    pub const EXIT: u32 = 4;
    /// [`super::ProcessRecord`]: a target process called exec.
    pub const EXEC: u32 = 5;
    // 6 was a fork record: a forked child now arrives as a `PROCESS_FACTS` record with its parent.
    /// [`super::ProcessRecord`]: an application thread finished queueing a ZMQ message
    /// (`zmq_msg_send` without `ZMQ_SNDMORE`); the ZMQ I/O thread sends it later.
    pub const ZMQ_SEND: u32 = 7;
    /// [`super::FactsRecord`]: what the daemon needs to know about a process that has just become
    /// a target (it opened omniORB, or a target forked it), copied while it cannot exit.
    pub const PROCESS_FACTS: u32 = 8;
    /// [`super::LibraryRecord`]: a path naming libomniORB4, libtango or libzmq that a target opened
    /// (or that a process opened just before it became a target).
    pub const LIBRARY_PATH: u32 = 9;
    /// [`super::LogRecord`]: a device log message that passed its logger's level check
    /// (`log4tango::Logger::log_unconditionally`).
    pub const LOG: u32 = 10;
    /// [`super::UserCodeRecord`]: a thread passed a probe point of libtango that brackets user
    /// code inside a request (`always_executed_hook`, an attribute read, a command).
    pub const USER_CODE: u32 = 11;
}

/// Causes of lost records or lost in-kernel state: the slots of the per-CPU `LOST` array.
pub mod loss {
    /// A record did not fit in the ring buffer (the daemon is behind).
    pub const RING_FULL: u32 = 0;
    /// The map of syscalls in flight was full: one send/receive was not seen.
    pub const PENDING_FULL: u32 = 1;
    /// The map of partly transferred messages was full: a message's rest was not followed.
    pub const STREAM_FULL: u32 = 2;
    /// Messages beyond [`super::MAX_MESSAGES_PER_CALL`] in one syscall (exact count).
    pub const OVER_LIMIT: u32 = 3;
    /// Syscalls whose bytes held more than [`super::MAX_HEADERS_PER_CALL`] headers: the rest
    /// was not walked (each hides at least one message).
    pub const WALK_CUT: u32 = 4;
    /// Bytes that are not GIOP where a message start was expected, and each syscall of a stream
    /// that lost track of message boundaries until one starts with `GIOP` again (a lower bound of
    /// the messages missed).
    pub const DESYNC: u32 = 5;
    /// A GIOP header claiming a body over [`super::MAX_GIOP_BODY_LEN`].
    pub const OVERSIZE: u32 = 6;
    /// The syscall's buffer could not be read.
    pub const READ_FAILED: u32 = 7;
    /// The target map was full ([`super::MAX_TARGETS`]): a process that opened omniORB, or a
    /// target's forked child, is not traced.
    pub const TARGETS_FULL: u32 = 8;
    /// Number of causes (length of the `LOST` array).
    pub const CAUSES: u32 = 9;

    /// Names of the causes, by slot, as the daemon reports them.
    pub const NAMES: [&str; CAUSES as usize] = [
        "ring_buffer_full",
        "pending_syscall_map_full",
        "stream_map_full",
        "messages_over_per_call_limit",
        "syscalls_not_walked_to_end",
        "desync_not_giop",
        "giop_length_over_maximum",
        "user_buffer_unreadable",
        "target_map_full",
    ];
}

/// Direction of a [`DataRecord`].
pub mod direction {
    pub const SEND: u8 = 0;
    pub const RECV: u8 = 1;
}

/// Fields common to every record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RecordHeader {
    pub kind: u32,
    /// Thread group id (the process id users see).
    pub pid: u32,
    /// Kernel thread id (what `gettid` returns).
    pub tid: u32,
    /// Socket fd for data and close records, the `zmq_msg_send` flags for ZMQ send records.
    pub fd: i32,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the syscall entered (send) or returned (receive);
    /// every chunk of one syscall carries the same time.
    pub ts_ns: u64,
}

/// One chunk of a send or receive of a target process: a GIOP message (or the part of it this
/// syscall moved), the continuation of a message an earlier syscall began, or a ZMTP frame
/// carrying a Tango event topic (`tango://…`). A syscall moving several GIOP messages gives one
/// record per message, in stream order.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DataRecord {
    pub header: RecordHeader,
    /// Bytes of the stream this chunk covers (moved by the syscall).
    pub total_len: u32,
    /// Bytes of `data` that are valid (a prefix of the chunk, at most the capture limit).
    pub captured_len: u32,
    pub direction: u8,
    /// [`chunk`] flags.
    pub flags: u8,
    /// Address family of the socket (`AF_INET` 2, `AF_UNIX` 1; 0 when unknown), read in the
    /// kernel during the syscall so the daemon need not race the connection's end.
    pub peer_family: u16,
    /// IPv4 address of the peer, network byte order.
    pub peer_addr: u32,
    /// Port of the peer, host byte order.
    pub peer_port: u16,
    /// Port of this end, host byte order (valid with [`chunk::TCP_POSITION`]).
    pub local_port: u16,
    /// IPv4 address of this end, network byte order (valid with [`chunk::TCP_POSITION`]).
    pub local_addr: u32,
    /// TCP sequence number of the chunk's first byte (valid with [`chunk::TCP_POSITION`]).
    pub tcp_seq: u32,
    pub _pad2: u32,
    pub data: [u8; MAX_CAPTURE],
}

/// Flags of a [`DataRecord`].
pub mod chunk {
    /// The chunk starts at a GIOP message header (else it continues a message or is ZMTP).
    pub const MESSAGE_START: u8 = 0x01;
    /// The chunk's TCP position (`local_*`, `peer_*`, `tcp_seq`) was read from a TCP/IPv4
    /// socket during the syscall.
    pub const TCP_POSITION: u8 = 0x02;
}

/// Offsets into `struct sock_common` and `struct tcp_sock`, read from the kernel's BTF by the
/// daemon.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOffsets {
    pub daddr: u32,
    pub dport: u32,
    pub family: u32,
    /// 1 when the three offsets above are valid (the peer of a socket).
    pub valid: u32,
    /// `sock_common.skc_rcv_saddr`: the local IPv4 address.
    pub rcv_saddr: u32,
    /// `sock_common.skc_num`: the local port, host byte order.
    pub num: u32,
    /// `tcp_sock.write_seq`: the sequence number after the last byte queued for sending.
    pub write_seq: u32,
    /// `tcp_sock.copied_seq`: the sequence number after the last byte read by the process.
    pub copied_seq: u32,
    /// 1 when the four offsets above are valid too (the TCP position of a chunk).
    pub tcp_valid: u32,
}

/// Longest path copied from an `openat`.
pub const MAX_PATH: usize = 256;
/// Bytes of the command line (`mm->arg_start..arg_end`) copied into a [`FactsRecord`].
pub const MAX_CMDLINE: usize = 2048;
/// Bytes of the environment block (`mm->env_start..env_end`) copied into a [`FactsRecord`].
pub const MAX_ENVIRON: usize = 8192;

/// Bits of [`FactsRecord::unreadable`]: facts the kernel could not read (left out, not guessed).
pub mod unreadable {
    /// `task->mm` (so neither the command line nor the environment).
    pub const MM: u32 = 1;
    pub const CMDLINE: u32 = 2;
    pub const ENVIRON: u32 = 4;
    /// `task->cred->euid`.
    pub const EUID: u32 = 8;
    /// `task->nsproxy->mnt_ns->ns.inum`.
    pub const MNT_NS: u32 = 16;
    /// `task->nsproxy->net_ns->ns.inum`.
    pub const NET_NS: u32 = 32;
}

/// A process that has just become a target, seen from inside the kernel while it is in a syscall
/// (or being forked) and so cannot exit: what the daemon would otherwise read from `/proc` later.
/// Only `FACTS_RECORD_HEADER_LEN + cmdline_captured + environ_captured` bytes cross the ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FactsRecord {
    pub header: RecordHeader,
    /// The target that forked this process; 0 when it became a target by opening omniORB (the
    /// path follows in a [`LibraryRecord`]).
    pub parent_pid: u32,
    pub euid: u32,
    /// Inode of the process's mount namespace (whether it sees the daemon's files).
    pub mnt_ns: u32,
    /// Inode of the process's network namespace (which host it is part of).
    pub net_ns: u32,
    /// [`unreadable`] bits.
    pub unreadable: u32,
    /// True length of the command line (`arg_end - arg_start`) and the bytes of it copied.
    pub cmdline_len: u32,
    pub cmdline_captured: u32,
    /// True length of the environment block and the bytes of it copied.
    pub environ_len: u32,
    pub environ_captured: u32,
    pub _pad: u32,
    /// `task->comm`, NUL-padded.
    pub comm: [u8; 16],
    /// The command line's `cmdline_captured` bytes, then the environment's `environ_captured`.
    pub blocks: [u8; MAX_CMDLINE + MAX_ENVIRON],
}

/// Size of a [`FactsRecord`] without its command line and environment.
pub const FACTS_RECORD_HEADER_LEN: usize = core::mem::size_of::<FactsRecord>() - MAX_CMDLINE - MAX_ENVIRON;

/// A library path opened by a process (see [`kind::LIBRARY_PATH`]). Only
/// `LIBRARY_RECORD_HEADER_LEN + path_len` bytes cross the ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LibraryRecord {
    pub header: RecordHeader,
    /// Valid bytes of `path` (without the NUL).
    pub path_len: u32,
    pub _pad: u32,
    pub path: [u8; MAX_PATH],
}

/// Size of a [`LibraryRecord`] without its path.
pub const LIBRARY_RECORD_HEADER_LEN: usize = core::mem::size_of::<LibraryRecord>() - MAX_PATH;

/// Largest `--log-bytes`: the bytes of one log message copied into a [`LogRecord`].
pub const MAX_LOG_MESSAGE: usize = 16384;
/// Bytes of a logger's name copied (a Tango device name, or `dserver/<server>/<instance>`).
pub const MAX_LOGGER_NAME: usize = 256;
/// Bytes of a log call's source file copied: its last ones, where the base name is.
pub const MAX_LOG_FILE: usize = 256;

/// Bits of [`LogRecord::flags`].
pub mod log_flags {
    /// The call carried a source file and line (cppTango ≥ 10).
    pub const HAS_LOCATION: u32 = 1;
    /// The logger's name could not be read.
    pub const LOGGER_UNREADABLE: u32 = 2;
    /// The source file could not be read.
    pub const FILE_UNREADABLE: u32 = 4;
    /// The message could not be read.
    pub const MESSAGE_UNREADABLE: u32 = 8;
}

/// One device log message, read at the entry of `log4tango::Logger::log_unconditionally` on the
/// thread that logged it. Only `LOG_RECORD_HEADER_LEN + logger_captured + file_captured +
/// message_captured` bytes cross the ring buffer: `text` holds the logger's name, then the
/// file's last bytes, then the message's first bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LogRecord {
    pub header: RecordHeader,
    /// log4tango's level of the message (200 FATAL, 300 ERROR, 400 WARN, 500 INFO, 600 DEBUG).
    pub level: i32,
    /// Source line (valid with [`log_flags::HAS_LOCATION`]).
    pub line: i32,
    /// [`log_flags`] bits.
    pub flags: u32,
    /// True lengths and the bytes of each copied into `text`.
    pub logger_len: u32,
    pub logger_captured: u32,
    pub file_len: u32,
    pub file_captured: u32,
    pub message_len: u32,
    pub message_captured: u32,
    pub _pad: u32,
    pub text: [u8; MAX_LOGGER_NAME + MAX_LOG_FILE + MAX_LOG_MESSAGE],
}

/// Size of a [`LogRecord`] without its text.
pub const LOG_RECORD_HEADER_LEN: usize =
    core::mem::size_of::<LogRecord>() - MAX_LOGGER_NAME - MAX_LOG_FILE - MAX_LOG_MESSAGE;

/// Probe points inside libtango that bracket user code: what each one is, how the program reads
/// it, and the record it sends. A point is an offset uprobe on a branch instruction (emulated by
/// the kernel, never single-stepped); its attach cookie ([`user_code::cookie`]) tells the one
/// program what the point is and where the objects are.
pub mod user_code {
    /// What a probe point marks (`UserCodeRecord::point`).
    pub mod point {
        /// `always_executed_hook` is about to be called (reading attributes or running a command).
        pub const HOOK_START: u8 = 1;
        /// `always_executed_hook` returned.
        pub const HOOK_END: u8 = 2;
        /// An attribute's read method is about to be called (class and attribute name read).
        pub const READ_START: u8 = 3;
        /// The attribute's read method returned.
        pub const READ_END: u8 = 4;
        /// A command's execute method is about to be called (class and command name read).
        pub const COMMAND_START: u8 = 5;
        /// The command's execute method returned.
        pub const COMMAND_END: u8 = 6;
    }

    /// When a point reports: a conditional branch is hit whether it is taken or not, and only
    /// one way leads to the user code.
    pub mod condition {
        /// Every hit.
        pub const ALWAYS: u8 = 0;
        /// Only when ZF is set (a `jne` falls through, a `je` is taken).
        pub const ZF_SET: u8 = 1;
        /// Only when ZF is clear (a `jne` is taken).
        pub const ZF_CLEAR: u8 = 2;
        /// Every hit, flagged [`super::flags::TAKEN`] when ZF is clear: the hook's `jne`, which
        /// every request passes (its record names the device's class once per request) and which
        /// is taken only when the device has a hook of its own.
        pub const FLAG_ZF_CLEAR: u8 = 3;
    }

    /// Bits of `UserCodeRecord::flags`.
    pub mod flags {
        /// The branch goes to the user code (see [`super::condition::FLAG_ZF_CLEAR`]).
        pub const TAKEN: u32 = 1;
    }

    /// Registers, numbered as the u64 slots of x86-64 `struct pt_regs`.
    pub mod reg {
        pub const R15: u8 = 0;
        pub const R14: u8 = 1;
        pub const R13: u8 = 2;
        pub const R12: u8 = 3;
        pub const RBP: u8 = 4;
        pub const RBX: u8 = 5;
        pub const R11: u8 = 6;
        pub const R10: u8 = 7;
        pub const R9: u8 = 8;
        pub const R8: u8 = 9;
        pub const RAX: u8 = 10;
        pub const RCX: u8 = 11;
        pub const RDX: u8 = 12;
        pub const RSI: u8 = 13;
        pub const RDI: u8 = 14;
        /// No register: nothing to read.
        pub const NONE: u8 = 0xff;
    }

    /// Bits of `UserCodeRecord::unreadable`.
    pub mod unreadable {
        pub const CLASS: u32 = 1;
        pub const NAME: u32 = 2;
    }

    /// Bytes of the device class name copied.
    pub const MAX_CLASS_NAME: usize = 128;
    /// Bytes of the attribute or command name copied.
    pub const MAX_MEMBER_NAME: usize = 128;

    /// Where the names are, beside the registers: the layouts of cppTango 9.3 and 10.3 alike.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Layout {
        /// Offset of the name `std::string` in the object the point's object register holds
        /// (`Attribute::name` 0x20, `Command::name` 0x8).
        pub name_offset: u8,
        /// Offset of the `DeviceClass*` in a `DeviceImpl` (0x88); 0: the point reads no class
        /// (an attribute read: the request's hook point named it).
        pub device_class_offset: u8,
        /// Offset of the class name `std::string` in a `DeviceClass` (0x8).
        pub class_name_offset: u8,
    }

    /// The attach cookie of a probe point: point, condition, device register, object register,
    /// then the [`Layout`] offsets, one byte each from the lowest.
    pub const fn cookie(point: u8, condition: u8, device_reg: u8, object_reg: u8, layout: Layout) -> u64 {
        point as u64
            | (condition as u64) << 8
            | (device_reg as u64) << 16
            | (object_reg as u64) << 24
            | (layout.name_offset as u64) << 32
            | (layout.device_class_offset as u64) << 40
            | (layout.class_name_offset as u64) << 48
    }

    /// Byte `n` of a cookie.
    pub const fn cookie_byte(cookie: u64, n: u32) -> u8 {
        (cookie >> (8 * n)) as u8
    }
}

/// A thread passed a libtango probe point (see [`user_code`]). Only
/// `USER_CODE_RECORD_HEADER_LEN + class_len + name_len` bytes cross the ring buffer; end points
/// carry no names.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UserCodeRecord {
    pub header: RecordHeader,
    /// [`user_code::point`].
    pub point: u32,
    /// [`user_code::unreadable`] bits.
    pub unreadable: u32,
    /// The `DeviceImpl*` of the device, 0 when the point reads none.
    pub device: u64,
    /// Bytes of `text` holding the class name, then the attribute or command name.
    pub class_len: u16,
    pub name_len: u16,
    /// [`user_code::flags`] bits.
    pub flags: u32,
    pub text: [u8; user_code::MAX_CLASS_NAME + user_code::MAX_MEMBER_NAME],
}

/// Size of a [`UserCodeRecord`] without its names.
pub const USER_CODE_RECORD_HEADER_LEN: usize =
    core::mem::size_of::<UserCodeRecord>() - user_code::MAX_CLASS_NAME - user_code::MAX_MEMBER_NAME;

/// Offsets into kernel structs the facts are read from, found in the kernel's BTF by the daemon.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessOffsets {
    pub task_mm: u32,
    pub task_cred: u32,
    pub task_nsproxy: u32,
    pub task_tgid: u32,
    pub task_pid: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub mm_env_start: u32,
    pub mm_env_end: u32,
    pub cred_euid: u32,
    pub nsproxy_mnt_ns: u32,
    /// `mnt_namespace.ns` plus `ns_common.inum`.
    pub mnt_ns_inum: u32,
    pub nsproxy_net_ns: u32,
    /// `net.ns` plus `ns_common.inum`.
    pub net_ns_inum: u32,
}

/// Size of a [`DataRecord`] without its payload.
pub const DATA_RECORD_HEADER_LEN: usize = core::mem::size_of::<DataRecord>() - MAX_CAPTURE;

// No padding surprises: the variable parts start where the fixed parts end, so the bytes that
// cross the ring buffer are exactly the fields and what was copied.
const _: () = assert!(core::mem::offset_of!(DataRecord, data) == DATA_RECORD_HEADER_LEN);
const _: () = assert!(core::mem::offset_of!(FactsRecord, blocks) == FACTS_RECORD_HEADER_LEN);
const _: () = assert!(core::mem::offset_of!(LibraryRecord, path) == LIBRARY_RECORD_HEADER_LEN);
const _: () = assert!(core::mem::size_of::<PendingCall>() == 48);

/// Process lifecycle records carry only the header.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessRecord {
    pub header: RecordHeader,
}

/// Per-target settings the daemon writes into the `TARGETS` map (key: pid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TargetConfig {
    /// How many payload bytes to copy per send/receive (≤ [`MAX_CAPTURE`]).
    pub capture_len: u32,
    pub flags: u32,
}

/// Key of the in-kernel map that follows a GIOP message across several syscalls.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamKey {
    pub pid: u32,
    pub fd: i32,
    pub direction: u32,
}

/// A `sendto`/`recvfrom` in flight on one thread (value of the in-kernel `PENDING` map, key:
/// pid_tgid), read back at syscall exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PendingCall {
    /// The syscall's buffer (user address).
    pub buf: u64,
    /// Entry time of a send (a client span starts when the request write starts); 0 for receives.
    pub ts_ns: u64,
    pub fd: i32,
    /// The target's capture length, read at entry so the exit need not look the target up again.
    pub capture_len: u32,
    /// Peer of the socket, noted by `sock:sock_send_length`/`sock_recv_length` while the
    /// syscall runs (0 when unknown).
    pub peer_addr: u32,
    pub peer_family: u16,
    pub peer_port: u16,
    /// This end of a TCP/IPv4 socket and the sequence number of the syscall's first byte, noted
    /// by the same tracepoints (valid when `tcp_valid` is 1).
    pub local_addr: u32,
    pub tcp_seq: u32,
    pub local_port: u16,
    pub direction: u8,
    pub tcp_valid: u8,
    pub _pad: [u8; 4],
}

/// What the probes remember of a stream direction between syscalls while a GIOP message is only
/// partly transferred (value of the in-kernel `STREAMS` map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamState {
    /// Bytes of the current message still to come (its header is whole).
    pub pending: u32,
    /// Bytes of the current message already moved, header included.
    pub seen: u32,
    /// Bytes 0..8 of a header split across syscalls, as a little-endian word (zero above
    /// `header_len`).
    pub header_lo: u64,
    /// Bytes 8..12 of that header, likewise.
    pub header_hi: u32,
    /// How many bytes of the split header are known (0 when no header is split).
    pub header_len: u8,
    /// 1 when the current message is over the per-call limit: its rest is not reported either.
    pub skip: u8,
    /// 1 when the stream lost track of message boundaries (a desync, or a syscall not walked to
    /// its end): each later syscall not starting with `GIOP` is counted as a desync, until one
    /// does.
    pub lost_sync: u8,
    pub _pad: u8,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all fields are plain integers or byte arrays, `#[repr(C)]`, no invalid bit patterns.
    unsafe impl aya::Pod for super::TargetConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StreamKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SockOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StreamState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PendingCall {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcessOffsets {}
}
