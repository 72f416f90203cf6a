use which::which;

/// Re-runs the eBPF build when bpf-linker changes (a new LLVM may emit different code).
fn main() {
    if let Ok(bpf_linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", bpf_linker.display());
    }
}
