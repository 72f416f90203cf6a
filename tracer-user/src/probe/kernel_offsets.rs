//! Field offsets of kernel structs, from the running kernel's BTF (`/sys/kernel/btf/vmlinux`), and
//! of tracepoint records, from their tracefs format files.
//!
//! Rust eBPF programs cannot carry CO-RE relocations yet, so the daemon looks the offsets up and
//! hands them to the programs as globals.

use btf_rs::{Btf, Type};
use tracer_common::{ProcessOffsets, SockOffsets};

/// Why the offsets the process facts need could not be found.
#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    #[error("cannot read the kernel's BTF at {path} (the tracer needs a kernel with BTF): {reason}")]
    Btf { path: std::path::PathBuf, reason: String },
    #[error(
        "the kernel's BTF has no field {0}: tango-tracer cannot copy a process's environment, command \
         line, user and mount namespace in the kernel on this kernel"
    )]
    MissingField(&'static str),
}

/// Offsets of the `task_struct`, `mm_struct`, `cred`, `nsproxy` and `mnt_namespace` fields the
/// process facts are read from. Every one is required.
pub fn process_offsets(vmlinux: &std::path::Path) -> Result<ProcessOffsets, OffsetError> {
    let btf = Btf::from_file(vmlinux)
        .map_err(|e| OffsetError::Btf { path: vmlinux.to_path_buf(), reason: e.to_string() })?;
    let field = |name: &'static str, structure: &str, member: &str| {
        member_offset(&btf, structure, member).ok_or(OffsetError::MissingField(name))
    };
    Ok(ProcessOffsets {
        task_mm: field("task_struct.mm", "task_struct", "mm")?,
        task_cred: field("task_struct.cred", "task_struct", "cred")?,
        task_nsproxy: field("task_struct.nsproxy", "task_struct", "nsproxy")?,
        task_tgid: field("task_struct.tgid", "task_struct", "tgid")?,
        task_pid: field("task_struct.pid", "task_struct", "pid")?,
        mm_arg_start: field("mm_struct.arg_start", "mm_struct", "arg_start")?,
        mm_arg_end: field("mm_struct.arg_end", "mm_struct", "arg_end")?,
        mm_env_start: field("mm_struct.env_start", "mm_struct", "env_start")?,
        mm_env_end: field("mm_struct.env_end", "mm_struct", "env_end")?,
        cred_euid: field("cred.euid", "cred", "euid")?,
        nsproxy_mnt_ns: field("nsproxy.mnt_ns", "nsproxy", "mnt_ns")?,
        mnt_ns_inum: field("mnt_namespace.ns", "mnt_namespace", "ns")?
            + field("ns_common.inum", "ns_common", "inum")?,
    })
}

/// Offsets of the peer address fields in `struct sock_common`; `valid == 0` when unknown.
pub fn sock_offsets(vmlinux: &std::path::Path) -> SockOffsets {
    let Ok(btf) = Btf::from_file(vmlinux) else {
        return SockOffsets::default();
    };
    let lookup = |field: &str| member_offset(&btf, "sock_common", field);
    match (lookup("skc_daddr"), lookup("skc_dport"), lookup("skc_family")) {
        (Some(daddr), Some(dport), Some(family)) => SockOffsets { daddr, dport, family, valid: 1 },
        _ => SockOffsets::default(),
    }
}

/// Why a tracepoint field's offset is unknown.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("reading the tracepoint format {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the tracepoint format {path} has no field {field}")]
    NoField { path: std::path::PathBuf, field: &'static str },
}

/// Offset of `child_pid` in the record of `sched:sched_process_fork` (it moved when the comm
/// fields became `__data_loc` strings), read from `<tracefs>/events/sched/sched_process_fork/format`.
pub fn fork_child_pid_offset(tracefs: &std::path::Path) -> Result<u32, FormatError> {
    let path = tracefs.join("events/sched/sched_process_fork/format");
    let text =
        std::fs::read_to_string(&path).map_err(|source| FormatError::Read { path: path.clone(), source })?;
    field_offset(&text, "child_pid").ok_or(FormatError::NoField { path, field: "child_pid" })
}

/// Offset of `field` in a tracepoint format text: a line
/// `field:<type> <name>[array];\toffset:<n>;\tsize:<n>;\tsigned:<n>;`.
pub fn field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let declaration = parts.next()?.strip_prefix("field:")?;
        let name = declaration.rsplit(' ').next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        parts.find_map(|part| part.strip_prefix("offset:"))?.parse().ok()
    })
}

/// Byte offset of `field` in struct `name`, looking through anonymous unions and structs.
fn member_offset(btf: &Btf, name: &str, field: &str) -> Option<u32> {
    let types = btf.resolve_types_by_name(name).ok()?;
    types.iter().find_map(|t| match t {
        Type::Struct(s) => find_in(btf, s, field, 0),
        _ => None,
    })
}

fn find_in(btf: &Btf, s: &btf_rs::Struct, field: &str, base_bits: u32) -> Option<u32> {
    for member in &s.members {
        let bits = base_bits + member.bit_offset();
        let member_name = btf.resolve_name(member).unwrap_or_default();
        if member_name == field {
            return bits.is_multiple_of(8).then_some(bits / 8);
        }
        if member_name.is_empty() {
            let inner = btf.resolve_chained_type(member).ok()?;
            let found = match &inner {
                Type::Struct(inner) | Type::Union(inner) => find_in(btf, inner, field, bits),
                _ => None,
            };
            if found.is_some() {
                return found;
            }
        }
    }
    None
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
    fn offsets_of_this_kernel() {
        let path = std::path::Path::new("/sys/kernel/btf/vmlinux");
        assert!(path.exists(), "this kernel has no BTF: the tracer needs /sys/kernel/btf/vmlinux");
        let offsets = sock_offsets(path);
        assert_eq!(offsets.valid, 1, "{offsets:?}");
        // The layout of sock_common has been the same on x86_64 for many years.
        assert_eq!((offsets.daddr, offsets.dport, offsets.family), (0, 12, 16));
    }

    #[test]
    fn process_offsets_of_this_kernel() {
        let offsets = process_offsets(std::path::Path::new("/sys/kernel/btf/vmlinux")).expect("offsets");
        // Pairs that are declared next to each other in every kernel since 2.6.
        assert_eq!(offsets.mm_arg_end, offsets.mm_arg_start + 8, "{offsets:?}");
        assert_eq!(offsets.mm_env_start, offsets.mm_arg_end + 8, "{offsets:?}");
        assert_eq!(offsets.mm_env_end, offsets.mm_env_start + 8, "{offsets:?}");
        assert_eq!(offsets.task_tgid, offsets.task_pid + 4, "{offsets:?}");
        assert!(offsets.task_mm > 0 && offsets.task_cred > 0 && offsets.task_nsproxy > 0, "{offsets:?}");
    }

    #[test]
    fn a_missing_field_is_named() {
        let path = std::path::Path::new("/sys/kernel/btf/vmlinux");
        let btf = Btf::from_file(path).expect("BTF");
        assert_eq!(member_offset(&btf, "task_struct", "no_such_field"), None);
        let error = process_offsets(std::path::Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/vmlinux"), "{error}");
        assert!(OffsetError::MissingField("cred.euid").to_string().contains("cred.euid"));
    }

    /// `sched_process_fork/format` of Linux 6.18 (this machine): comms are `__data_loc` strings.
    const FORK_FORMAT_6_18: &str = "name: sched_process_fork\nID: 366\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
        \tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
        \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
        \tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\
        \tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\
        \tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n\
        \tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n\n\
        print fmt: \"comm=%s pid=%d child_comm=%s child_pid=%d\", __get_str(parent_comm), \
        REC->parent_pid, __get_str(child_comm), REC->child_pid\n";

    /// The same tracepoint on older kernels (Debian 12's 6.1 among them): fixed 16-byte comms.
    const FORK_FORMAT_6_1: &str = "name: sched_process_fork\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
        \tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
        \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
        \tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
        \tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
        \tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;\n\
        \tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";

    #[test]
    fn fork_child_pid_offset_follows_the_format() {
        assert_eq!(field_offset(FORK_FORMAT_6_18, "child_pid"), Some(20));
        assert_eq!(field_offset(FORK_FORMAT_6_1, "child_pid"), Some(44));
        assert_eq!(field_offset(FORK_FORMAT_6_1, "child_comm"), Some(28));
        assert_eq!(field_offset(FORK_FORMAT_6_1, "pid"), None);
        assert_eq!(field_offset("garbage", "child_pid"), None);
    }

    #[test]
    fn fork_format_of_this_kernel() {
        let tracefs = std::path::Path::new("/sys/kernel/tracing");
        if !tracefs.join("events").exists() {
            // Unprivileged runs cannot mount tracefs; the error must say which file.
            let error = fork_child_pid_offset(tracefs).expect_err("no tracefs");
            assert!(error.to_string().contains("sched_process_fork/format"), "{error}");
            return;
        }
        let offset = fork_child_pid_offset(tracefs).expect("reading the fork format");
        assert!(offset >= 8, "{offset}");
        let missing = fork_child_pid_offset(std::path::Path::new("/nonexistent")).expect_err("no file");
        assert!(matches!(missing, FormatError::Read { .. }), "{missing}");
    }
}
