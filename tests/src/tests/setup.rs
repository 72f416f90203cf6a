//! The README's commands work as the first commands on a fresh machine: only the machine's own
//! default Rust toolchain, and rustup not installing a missing toolchain by itself
//! (`RUSTUP_AUTO_INSTALL=0`, as on managed hosts and CI).
//!
//! `cargo xtask setup` is the first step of both `cargo xtask run` and `cargo xtask test`; run here
//! against a rustup home that holds only the default toolchain, it must build xtask with that
//! toolchain, install the pinned one itself, and prove it answers.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Runs `rustup` as a user would, outside any toolchain override set by the test's own cargo.
fn rustup(args: &[&str]) -> String {
    let output = Command::new("rustup")
        .args(args)
        .env_remove("RUSTUP_TOOLCHAIN")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("running rustup");
    assert!(output.status.success(), "rustup {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn readme_commands_start_with_only_the_default_toolchain() {
    let real_home = PathBuf::from(rustup(&["show", "home"]));
    // `stable-x86_64-unknown-linux-gnu (default)`
    let default = rustup(&["default"]).split_whitespace().next().expect("a default toolchain").to_string();

    let scratch = std::env::temp_dir().join(format!("tango-tracer-fresh-rustup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let fresh_home = scratch.join("rustup");
    std::fs::create_dir_all(fresh_home.join("toolchains")).expect("creating the fresh rustup home");
    std::os::unix::fs::symlink(
        real_home.join("toolchains").join(&default),
        fresh_home.join("toolchains").join(&default),
    )
    .expect("linking the default toolchain");
    std::fs::write(
        fresh_home.join("settings.toml"),
        format!("version = \"12\"\ndefault_toolchain = \"{default}\"\nprofile = \"minimal\"\n"),
    )
    .expect("writing the fresh rustup settings");

    // A clean environment: nothing inherited from the cargo running this test.
    let mut command = Command::new("cargo");
    command.env_clear();
    for name in ["PATH", "HOME", "CARGO_HOME", "USER", "LANG", "CI", "TANGO_TRACER_VENV"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    let output = command
        .args(["xtask", "setup"])
        .env("RUSTUP_HOME", &fresh_home)
        .env("RUSTUP_AUTO_INSTALL", "0")
        .env("CARGO_TARGET_DIR", scratch.join("target"))
        .current_dir(workspace_root())
        .output()
        .expect("running cargo xtask setup");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "`cargo xtask setup` on a fresh rustup home failed:\n{stdout}\n{stderr}"
    );

    // The pinned toolchain was installed into the fresh home by the command, and answered.
    let pinned = std::fs::read_to_string(workspace_root().join(".cargo/config.toml"))
        .expect("reading .cargo/config.toml")
        .lines()
        .find_map(|l| l.strip_prefix("TANGO_TRACER_TOOLCHAIN = \"")?.strip_suffix('"').map(str::to_string))
        .expect("the pinned toolchain in .cargo/config.toml");
    let installed = std::fs::read_dir(fresh_home.join("toolchains"))
        .expect("listing the fresh toolchains")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect::<Vec<_>>();
    assert!(installed.iter().any(|t| t.starts_with(&pinned)), "{pinned} not installed: {installed:?}");
    assert!(stdout.contains("cargo 1."), "the pinned cargo did not answer: {stdout}");

    // The README's test command is exactly what CI runs.
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("reading README.md");
    let ci = std::fs::read_to_string(workspace_root().join(".ci/run")).expect("reading .ci/run");
    assert!(readme.contains("cargo xtask test"), "README lost its test command");
    assert!(
        ci.lines().any(|l| l.trim() == "exec cargo xtask test"),
        ".ci/run must run `cargo xtask test`:\n{ci}"
    );
    assert!(
        !workspace_root().join("rust-toolchain.toml").exists(),
        "a rust-toolchain.toml stops the first command"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}
