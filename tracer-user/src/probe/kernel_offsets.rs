//! Field offsets of kernel structs, from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! Rust eBPF programs cannot carry CO-RE relocations yet, so the daemon looks the offsets up and
//! hands them to the programs as globals.

use btf_rs::{Btf, Type};
use tracer_common::SockOffsets;

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
}
