use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Builds the eBPF programs with the pinned nightly (its LLVM must match bpf-linker's).
/// `AYA_BUILD_SKIP=1` skips it where bpf-linker is absent (docs, clippy of userspace only).
fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } =
        cargo_metadata::MetadataCommand::new().no_deps().exec().context("MetadataCommand::exec")?;
    let ebpf = packages
        .iter()
        .find(|package| package.name.as_str() == "tracer-ebpf")
        .ok_or_else(|| anyhow!("tracer-ebpf package not found"))?;
    let root_dir =
        ebpf.manifest_path.parent().ok_or_else(|| anyhow!("tracer-ebpf manifest has no parent directory"))?;
    let package = Package { name: ebpf.name.as_str(), root_dir: root_dir.as_str(), ..Default::default() };
    aya_build::build_ebpf([package], Toolchain::Custom(env!("TANGO_TRACER_TOOLCHAIN")))
}
