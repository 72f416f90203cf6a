use anyhow::{Context as _, anyhow};
use aya_build::{Toolchain, cargo_metadata};

/// Builds the eBPF programs with the pinned nightly (its LLVM must match bpf-linker's).
/// `AYA_BUILD_SKIP=1` skips it where bpf-linker is absent (docs, clippy of userspace only).
fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf_package = packages
        .into_iter()
        .find(|cargo_metadata::Package { name, .. }| name.as_str() == "tracer-ebpf")
        .ok_or_else(|| anyhow!("tracer-ebpf package not found"))?;
    let toolchain = Toolchain::Custom(env!("TANGO_TRACER_EBPF_TOOLCHAIN"));
    aya_build::build_ebpf([ebpf_package], toolchain)
}
