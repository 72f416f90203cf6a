//! `cargo xtask run`: the main job — the daemon in the foreground.

use std::os::unix::process::CommandExt as _;

/// Options after `--` go to `tango-tracer run`.
#[derive(clap::Args)]
pub struct Options {
    /// Arguments for `tango-tracer run` (e.g. `-- --exporter console`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub fn run(options: Options) -> anyhow::Result<()> {
    crate::bootstrap(false)?;
    crate::cargo(&["build", "--release", "--package", "tango-tracer"])?;
    let binary = crate::workspace_root().join("target/release/tango-tracer");
    let error = std::process::Command::new(&binary).arg("run").args(&options.args).exec();
    Err(anyhow::anyhow!("starting {}: {error}", binary.display()))
}
