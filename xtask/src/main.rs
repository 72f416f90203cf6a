//! Developer and CI tasks: `cargo xtask run` (the daemon) and `cargo xtask test` (every test).
//!
//! xtask itself builds with whatever Rust the machine has by default (it needs nothing newer),
//! so it can run on a fresh machine. It then installs what the project needs, idempotently — the
//! pinned nightly included, since a missing toolchain is not installed by rustup on its own
//! everywhere (`RUSTUP_AUTO_INSTALL=0`) — and runs every build with that nightly.

mod bench;
mod package;
mod run;
mod setup;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing, build the daemon and run it in the foreground (root).
    Run(run::Options),
    /// Install what is missing (test stack included), build, check and run every test.
    Test(test::Options),
    /// Build the Debian package target/debian/tango-tracer_<version>_amd64.deb (cargo-deb).
    Package,
    /// Run the benchmarks and write BENCHMARKS.md.
    Bench(bench::Options),
    /// Only install what is missing (the pinned toolchain, bpf-linker, packages).
    Setup(setup::Options),
    /// rustfmt and clippy with the pinned toolchain, as `test` runs them.
    Check,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(options) => run::run(options),
        Command::Test(options) => test::run(options),
        Command::Package => package::run(),
        Command::Bench(options) => bench::run(options),
        Command::Setup(options) => setup::run(options),
        Command::Check => test::check(),
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(std::path::Path::to_path_buf).unwrap_or_else(|| manifest.to_path_buf())
}

/// The pinned nightly that builds everything: aya 0.16 needs Rust ≥ 1.98, and the eBPF object
/// needs an LLVM no newer than bpf-linker's. Set once, in `.cargo/config.toml`, which cargo
/// passes to `cargo xtask` and to `tracer-user`'s build script alike.
pub fn pinned_toolchain() -> anyhow::Result<String> {
    std::env::var("TANGO_TRACER_TOOLCHAIN").map_err(|_| {
        anyhow::anyhow!("TANGO_TRACER_TOOLCHAIN is not set: run xtask as `cargo xtask …` from the workspace")
    })
}

/// Runs a command in the workspace root, failing on a non-zero exit.
pub fn sh(program: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let status = std::process::Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(workspace_root())
        .status()
        .map_err(|e| anyhow::anyhow!("starting {program}: {e}"))?;
    anyhow::ensure!(status.success(), "{program} {} failed: {status}", args.join(" "));
    Ok(())
}

/// Runs `cargo` with the pinned toolchain (rustup's `RUSTUP_TOOLCHAIN` wins over any default).
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let toolchain = pinned_toolchain()?;
    sh("cargo", args, &[("RUSTUP_TOOLCHAIN", &toolchain)])
}

/// Installs the toolchain pieces (and with `test_stack`, the Tango stacks and the venv).
pub fn bootstrap(test_stack: bool) -> anyhow::Result<()> {
    bootstrap_with(if test_stack { &["--test-stack"] } else { &[] })
}

/// Installs the toolchain pieces and the `parts` named (`--test-stack`, `--package`: cargo-deb).
pub fn bootstrap_with(parts: &[&str]) -> anyhow::Result<()> {
    let toolchain = pinned_toolchain()?;
    sh("scripts/bootstrap.sh", parts, &[("TANGO_TRACER_TOOLCHAIN", &toolchain)])
}
