//! `cargo xtask test`: every check and test, unit and integration (the latter need root and eBPF).

#[derive(clap::Args)]
pub struct Options {
    /// Extra arguments for `cargo test` (e.g. a test name filter).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub fn run(options: Options) -> anyhow::Result<()> {
    crate::bootstrap_with(&["--test-stack", "--package"])?;
    check()?;
    crate::cargo(&["build", "--package", "tango-tracer", "--package", "integration-tests"])?;
    // The package tests install what ships: the release daemon in its package.
    crate::package::build()?;
    let mut args = vec!["test", "--workspace", "--exclude", "tracer-ebpf", "--no-fail-fast"];
    args.extend(options.args.iter().map(String::as_str));
    // Integration tests start real servers and the daemon: one at a time keeps them clear.
    args.extend(["--", "--test-threads=1"]);
    crate::cargo(&args)
}

/// Formatting and lints, as the project keeps them: any finding fails.
pub fn check() -> anyhow::Result<()> {
    crate::cargo(&["fmt", "--all", "--check"])?;
    crate::cargo(&[
        "clippy",
        "--workspace",
        "--exclude",
        "tracer-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])
}
