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
    #[error("the kernel's BTF has no field {0} of the expected type")]
    MissingField(&'static str),
    #[error("the kernel has no BTF tracepoint sock:{0} (Linux 6.3 added it)")]
    MissingTracepoint(&'static str),
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
        nsproxy_net_ns: field("nsproxy.net_ns", "nsproxy", "net_ns")?,
        net_ns_inum: field("net.ns", "net", "ns")? + field("ns_common.inum", "ns_common", "inum")?,
    })
}

/// BTF tracepoints whose arguments carry the socket of a send or a receive (Linux ≥ 6.3).
pub const SOCK_TRACEPOINTS: [&str; 2] = ["sock_send_length", "sock_recv_length"];

/// Offsets of the socket fields the probes read: the peer (`valid`), then the local end, the
/// protocol and the TCP sequence numbers (`tcp_valid`). The error says why TCP positions (the
/// keys that link calls across hosts) cannot be read on this kernel.
pub fn sock_offsets(vmlinux: &std::path::Path) -> (SockOffsets, Result<(), OffsetError>) {
    let btf = match Btf::from_file(vmlinux) {
        Ok(btf) => btf,
        Err(e) => {
            let error = OffsetError::Btf { path: vmlinux.to_path_buf(), reason: e.to_string() };
            return (SockOffsets::default(), Err(error));
        }
    };
    // Every field is read as an integer of its exact size: a bitfield or another width is refused.
    let field = |name: &'static str, structure: &str, member: &str, size: usize| {
        scalar_offset(&btf, structure, member, size).ok_or(OffsetError::MissingField(name))
    };
    let mut offsets = SockOffsets::default();
    let peer = (|| {
        offsets.daddr = field("sock_common.skc_daddr", "sock_common", "skc_daddr", 4)?;
        offsets.dport = field("sock_common.skc_dport", "sock_common", "skc_dport", 2)?;
        offsets.family = field("sock_common.skc_family", "sock_common", "skc_family", 2)?;
        offsets.valid = 1;
        Ok(())
    })();
    if let Err(e) = peer {
        return (SockOffsets::default(), Err(e));
    }
    let tcp = (|| {
        for tracepoint in SOCK_TRACEPOINTS {
            let found =
                btf.resolve_ids_by_name(&format!("btf_trace_{tracepoint}")).is_ok_and(|ids| !ids.is_empty());
            if !found {
                return Err(OffsetError::MissingTracepoint(tracepoint));
            }
        }
        offsets.rcv_saddr = field("sock_common.skc_rcv_saddr", "sock_common", "skc_rcv_saddr", 4)?;
        offsets.num = field("sock_common.skc_num", "sock_common", "skc_num", 2)?;
        offsets.write_seq = field("tcp_sock.write_seq", "tcp_sock", "write_seq", 4)?;
        offsets.copied_seq = field("tcp_sock.copied_seq", "tcp_sock", "copied_seq", 4)?;
        offsets.tcp_valid = 1;
        Ok(())
    })();
    if tcp.is_err() {
        offsets = SockOffsets {
            daddr: offsets.daddr,
            dport: offsets.dport,
            family: offsets.family,
            valid: 1,
            ..SockOffsets::default()
        };
    }
    (offsets, tcp)
}

/// Byte offset of `field` in struct `name`, looking through anonymous unions and structs.
fn member_offset(btf: &Btf, name: &str, field: &str) -> Option<u32> {
    struct_member(btf, name, field, None)
}

/// Byte offset of `field` in struct `name` when it is a whole integer of `size` bytes.
fn scalar_offset(btf: &Btf, name: &str, field: &str, size: usize) -> Option<u32> {
    struct_member(btf, name, field, Some(size))
}

fn struct_member(btf: &Btf, name: &str, field: &str, size: Option<usize>) -> Option<u32> {
    let types = btf.resolve_types_by_name(name).ok()?;
    types.iter().find_map(|t| match t {
        Type::Struct(s) => find_in(btf, s, field, 0, size),
        _ => None,
    })
}

/// Size of an integer member (through typedefs and qualifiers); `None` for a bitfield or any
/// other type.
fn integer_size(btf: &Btf, member: &btf_rs::Member) -> Option<usize> {
    if member.bitfield_size().is_some_and(|bits| bits != 0) {
        return None;
    }
    let mut t = btf.resolve_chained_type(member).ok()?;
    // Typedef chains are short (`__be32` → `__u32` → `unsigned int`).
    for _ in 0..8 {
        t = match &t {
            Type::Int(int) => return Some(int.size()),
            Type::Typedef(next) => btf.resolve_chained_type(next).ok()?,
            Type::Volatile(next) => btf.resolve_chained_type(next).ok()?,
            Type::Const(next) => btf.resolve_chained_type(next).ok()?,
            _ => return None,
        };
    }
    None
}

fn find_in(btf: &Btf, s: &btf_rs::Struct, field: &str, base_bits: u32, size: Option<usize>) -> Option<u32> {
    for member in &s.members {
        let bits = base_bits + member.bit_offset();
        let member_name = btf.resolve_name(member).unwrap_or_default();
        if member_name == field {
            if size.is_some() && integer_size(btf, member) != size {
                return None;
            }
            return bits.is_multiple_of(8).then_some(bits / 8);
        }
        if member_name.is_empty() {
            let inner = btf.resolve_chained_type(member).ok()?;
            let found = match &inner {
                Type::Struct(inner) | Type::Union(inner) => find_in(btf, inner, field, bits, size),
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
        let (offsets, tcp) = sock_offsets(path);
        assert_eq!(offsets.valid, 1, "{offsets:?}");
        // The layout of sock_common has been the same on x86_64 for many years.
        assert_eq!((offsets.daddr, offsets.dport, offsets.family), (0, 12, 16));
        // This kernel (6.18) has the sock:* tracepoints and every field of a TCP position.
        tcp.expect("TCP positions on this kernel");
        assert_eq!(offsets.tcp_valid, 1, "{offsets:?}");
        // The address pair and the port pair are declared together in sock_common.
        assert_eq!((offsets.rcv_saddr, offsets.num), (offsets.daddr + 4, offsets.dport + 2));
        // struct sock starts with its sock_common; tcp_sock starts with a struct sock.
        let btf = Btf::from_file(path).expect("BTF");
        let size_of = |name: &str| match btf.resolve_types_by_name(name).expect(name).first() {
            Some(Type::Struct(s)) => s.size() as u32,
            other => panic!("{name}: {other:?}"),
        };
        for seq in [offsets.write_seq, offsets.copied_seq] {
            assert!(seq >= size_of("sock") && seq + 4 <= size_of("tcp_sock"), "{offsets:?}");
        }
    }

    #[test]
    fn fields_of_another_width_or_bitfields_are_refused() {
        let btf = Btf::from_file(std::path::Path::new("/sys/kernel/btf/vmlinux")).expect("BTF");
        assert_eq!(scalar_offset(&btf, "sock_common", "skc_family", 2), Some(16));
        assert_eq!(scalar_offset(&btf, "sock_common", "skc_family", 4), None);
        // `nonagle` is a 4-bit field of tcp_sock (`u8 nonagle : 4`), its byte aligned.
        assert!(member_offset(&btf, "tcp_sock", "nonagle").is_some());
        assert_eq!(scalar_offset(&btf, "tcp_sock", "nonagle", 1), None);
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
