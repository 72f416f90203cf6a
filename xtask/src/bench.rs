//! `cargo xtask bench`: benchmarks side by side in one run, results in BENCHMARKS.md.
//!
//! Arguments after `--` go to `tango-bench` (`--quick`, `--rounds N`, `--replay-only`, …).

#[derive(clap::Args)]
pub struct Options {
    /// Extra arguments for the benchmark runner.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub fn run(options: Options) -> anyhow::Result<()> {
    crate::bootstrap(true)?;
    // tango-bench runs the daemon and the OTLP receiver from its own directory: build all three
    // in release mode, into the same target directory.
    crate::cargo(&[
        "build",
        "--release",
        "--package",
        "tango-tracer",
        "--package",
        "benches",
        "--package",
        "integration-tests",
        "--bin",
        "tango-tracer",
        "--bin",
        "tango-bench",
        "--bin",
        "otlp-receiver",
    ])?;
    let mut args = vec!["run", "--release", "--package", "benches", "--bin", "tango-bench", "--"];
    args.extend(options.args.iter().map(String::as_str));
    crate::cargo(&args)
}
