//! `cargo xtask setup`: what `run` and `test` install before they build, on its own.

#[derive(clap::Args)]
pub struct Options {
    /// Also the test stack: MariaDB, Debian's Tango 9.3.4, the PyTango venv.
    #[arg(long)]
    test_stack: bool,
}

pub fn run(options: Options) -> anyhow::Result<()> {
    crate::bootstrap(options.test_stack)?;
    // Proves the pinned toolchain answers, whatever the machine's default is.
    crate::cargo(&["--version"])
}
