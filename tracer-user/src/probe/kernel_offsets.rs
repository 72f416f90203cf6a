//! Field offsets of kernel structs, from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
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
}
