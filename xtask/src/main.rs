//! Developer and CI tasks: `cargo xtask run` (the daemon) and `cargo xtask test` (every test).
//!
//! Both first install what they need, idempotently, through `scripts/bootstrap.sh`.

mod bench;
mod run;
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
    /// Install what is missing (test stack included), build, and run every test.
    Test(test::Options),
    /// Run the benchmarks and write BENCHMARKS.md.
    Bench(bench::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(options) => run::run(options),
        Command::Test(options) => test::run(options),
        Command::Bench(options) => bench::run(options),
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(std::path::Path::to_path_buf).unwrap_or_else(|| manifest.to_path_buf())
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

/// Installs the toolchain pieces (and with `test_stack`, the Tango stacks and the venv).
pub fn bootstrap(test_stack: bool) -> anyhow::Result<()> {
    let args: &[&str] = if test_stack { &["--test-stack"] } else { &[] };
    sh("scripts/bootstrap.sh", args, &[])
}
