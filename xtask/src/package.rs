//! `cargo xtask package`: the Debian package `target/debian/tango-tracer_<version>_<arch>.deb`,
//! made by cargo-deb from `[package.metadata.deb]` in `tracer-user/Cargo.toml` and the files of
//! `tracer-user/debian/` (the systemd unit, the maintainer scripts, the default configuration).

use std::path::PathBuf;

pub fn run() -> anyhow::Result<()> {
    crate::bootstrap_with(&["--package"])?;
    let deb = build()?;
    println!("{}", deb.display());
    Ok(())
}

/// Builds the release daemon (cargo-deb runs `cargo build --release` with the pinned toolchain)
/// and packs it; returns where the package is.
pub fn build() -> anyhow::Result<PathBuf> {
    let deb = deb_path()?;
    let _ = std::fs::remove_file(&deb);
    // `--strip`: the debug information of the release profile (for profiling) is not shipped;
    // `--locked`: the package holds exactly what Cargo.lock says.
    crate::cargo(&[
        "deb",
        "--package",
        "tango-tracer",
        "--strip",
        "--output",
        "target/debian/",
        "--",
        "--locked",
    ])?;
    anyhow::ensure!(deb.exists(), "cargo deb did not make {}", deb.display());
    Ok(deb)
}

/// `target/debian/tango-tracer_<version>_<arch>.deb` (the Debian architecture name).
pub fn deb_path() -> anyhow::Result<PathBuf> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => anyhow::bail!("no Debian architecture name known for {other}"),
    };
    let name = format!("tango-tracer_{}_{arch}.deb", env!("CARGO_PKG_VERSION"));
    Ok(crate::workspace_root().join("target/debian").join(name))
}
