//! `cargo xtask bench`: benchmarks side by side in one run, results in BENCHMARKS.md.

#[derive(clap::Args)]
pub struct Options {
    /// Extra arguments for the benchmark runner.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub fn run(options: Options) -> anyhow::Result<()> {
    crate::bootstrap(true)?;
    crate::sh("cargo", &["build", "--release", "--package", "tango-tracer", "--package", "benches"], &[])?;
    let mut args = vec!["run", "--release", "--package", "benches", "--bin", "tango-bench", "--"];
    args.extend(options.args.iter().map(String::as_str));
    crate::sh("cargo", &args, &[])
}
