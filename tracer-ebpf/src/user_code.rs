//! User code inside a request: offset uprobes on branch instructions of libtango that bracket
//! `always_executed_hook`, each attribute's read method and each command's execute method (see
//! `tracer_common::user_code`). One program serves every point; its attach cookie says what the
//! point is, which way of a conditional branch leads to the user code, and in which registers the
//! device and the attribute or command are. Only targets' hits are reported; the program only
//! reads the traced thread's memory.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated},
    macros::{map, uprobe},
    maps::PerCpuArray,
    programs::ProbeContext,
};
use tracer_common::{
    RecordHeader, USER_CODE_RECORD_HEADER_LEN, UserCodeRecord, kind, loss,
    user_code::{MAX_CLASS_NAME, MAX_MEMBER_NAME, condition, cookie_byte, flags, point, reg, unreadable},
};

use crate::{BPF_RB_NO_WAKEUP, EVENTS, TARGETS, copy_text, count_lost, read_std_string};

/// A record being built, per CPU (kept off the 512-byte stack).
#[map]
static USER_CODE_SCRATCH: PerCpuArray<UserCodeRecord> = PerCpuArray::with_max_entries(1, 0);

/// ZF in `eflags`.
const ZERO_FLAG: u64 = 1 << 6;

#[uprobe(multi)]
pub fn libtango_point(ctx: ProbeContext) -> u32 {
    let _ = try_libtango_point(&ctx);
    0
}

/// [`libtango_point`] attached the legacy way, one perf event per point: kernels before 6.6 have
/// no uprobe_multi links (and need CAP_SYS_ADMIN for this way).
#[uprobe]
pub fn libtango_point_perf(ctx: ProbeContext) -> u32 {
    let _ = try_libtango_point(&ctx);
    0
}

fn try_libtango_point(ctx: &ProbeContext) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: a map lookup; the value is not used.
    if unsafe { TARGETS.get(&pid) }.is_none() {
        return Ok(());
    }
    // SAFETY: the helper reads the cookie the daemon attached this point with.
    let cookie = unsafe { generated::bpf_get_attach_cookie(ctx.as_ptr()) };
    let regs = ctx.regs;
    // The trap fires before the branch runs: its flags decide where it goes.
    // SAFETY: the context's registers, a constant offset.
    let zero = unsafe { (*regs).eflags } & ZERO_FLAG != 0;
    let taken = match cookie_byte(cookie, 1) {
        condition::ZF_SET if !zero => return Ok(()),
        condition::ZF_CLEAR if zero => return Ok(()),
        condition::FLAG_ZF_CLEAR => !zero,
        _ => true,
    };
    let what = cookie_byte(cookie, 0);
    let record = USER_CODE_SCRATCH.get_ptr_mut(0).ok_or(())?;
    // SAFETY: the per-CPU scratch entry is ours for the duration of this program.
    let record = unsafe { &mut *record };
    record.header = RecordHeader {
        kind: kind::USER_CODE,
        pid,
        tid: pid_tgid as u32,
        fd: -1,
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    };
    record.point = what as u32;
    record.unreadable = 0;
    record.device = 0;
    record.class_len = 0;
    record.name_len = 0;
    record.flags = if taken { flags::TAKEN } else { 0 };
    if matches!(what, point::HOOK_START | point::READ_START | point::COMMAND_START) {
        let device = register(ctx, cookie_byte(cookie, 2));
        record.device = device;
        // DeviceImpl → DeviceClass → its name; an attribute read leaves it to its request's hook
        // point (three reads fewer per attribute).
        let class_offset = cookie_byte(cookie, 5);
        if class_offset != 0 {
            let class = read_u64(device.wrapping_add(class_offset as u64))
                .and_then(|class| read_std_string(class.wrapping_add(cookie_byte(cookie, 6) as u64)))
                .and_then(|(ptr, len)| copy_text(&mut record.text, 0, ptr, len, MAX_CLASS_NAME));
            match class {
                Ok(n) => record.class_len = n as u16,
                Err(()) => record.unreadable |= unreadable::CLASS,
            }
        }
        let object_reg = cookie_byte(cookie, 3);
        if object_reg != reg::NONE {
            let object = register(ctx, object_reg);
            let mut used = record.class_len as usize;
            if used > MAX_CLASS_NAME {
                used = MAX_CLASS_NAME;
            }
            let name = read_std_string(object.wrapping_add(cookie_byte(cookie, 4) as u64))
                .and_then(|(ptr, len)| copy_text(&mut record.text, used, ptr, len, MAX_MEMBER_NAME));
            match name {
                Ok(n) => record.name_len = n as u16,
                Err(()) => record.unreadable |= unreadable::NAME,
            }
        }
    }
    let mut class_len = record.class_len as usize;
    if class_len > MAX_CLASS_NAME {
        class_len = MAX_CLASS_NAME;
    }
    let mut name_len = record.name_len as usize;
    if name_len > MAX_MEMBER_NAME {
        name_len = MAX_MEMBER_NAME;
    }
    let size = USER_CODE_RECORD_HEADER_LEN + class_len + name_len;
    // SAFETY: the record lives in a map value of exactly `size_of::<UserCodeRecord>()` bytes.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            (record as *const UserCodeRecord).cast::<u8>(),
            size.min(core::mem::size_of::<UserCodeRecord>()),
        )
    };
    // Like data records: the daemon drains the ring on its timer.
    if EVENTS.output(bytes, BPF_RB_NO_WAKEUP).is_err() {
        count_lost(loss::RING_FULL, 1);
    }
    Ok(())
}

/// A register of the trapped thread by its `pt_regs` slot (constant offsets only: the verifier
/// refuses a variable offset into the context).
#[inline(always)]
fn register(ctx: &ProbeContext, slot: u8) -> u64 {
    let regs = ctx.regs;
    // SAFETY: the context's registers, each at a constant offset.
    unsafe {
        match slot {
            reg::R15 => (*regs).r15,
            reg::R14 => (*regs).r14,
            reg::R13 => (*regs).r13,
            reg::R12 => (*regs).r12,
            reg::RBP => (*regs).rbp,
            reg::RBX => (*regs).rbx,
            reg::R11 => (*regs).r11,
            reg::R10 => (*regs).r10,
            reg::R9 => (*regs).r9,
            reg::R8 => (*regs).r8,
            reg::RAX => (*regs).rax,
            reg::RCX => (*regs).rcx,
            reg::RDX => (*regs).rdx,
            reg::RSI => (*regs).rsi,
            reg::RDI => (*regs).rdi,
            _ => 0,
        }
    }
}

/// A pointer-sized word of the traced thread's memory.
#[inline(always)]
fn read_u64(at: u64) -> Result<u64, ()> {
    let mut word = 0u64;
    // SAFETY: 8 bytes into an 8-byte buffer, from the traced thread's own memory.
    let ret = unsafe { generated::bpf_probe_read_user((&mut word as *mut u64).cast(), 8, at as *const _) };
    if ret != 0 {
        return Err(());
    }
    Ok(word)
}
