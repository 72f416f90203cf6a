//! Benchmarks of tango-tracer, run by `cargo xtask bench` through the `tango-bench` binary:
//! round trips of a PyTango client untraced, traced, and with cppTango's native telemetry
//! ([`roundtrip`]); the same against a legacy (cppTango 9.3.4) server in a Tango database
//! ([`legacy`]); change events pushed to a subscriber ([`events`]); device log messages
//! ([`logs`]); the daemon's assembly
//! throughput on a recorded session ([`replay`]); over a thousand short-lived clients and
//! server restarts under one daemon ([`churn`]); a backend outage under steady load
//! ([`outage`]); what the user-level spans cost per attribute read ([`usercode`]); the daemon's
//! memory with a thousand traced devices ([`memory`]); and BENCHMARKS.md ([`report`]).

pub mod bpf;
pub mod churn;
pub mod crosshost;
pub mod events;
pub mod legacy;
pub mod logs;
pub mod memory;
pub mod outage;
pub mod procs;
pub mod replay;
pub mod report;
pub mod roundtrip;
pub mod usercode;

use std::path::{Path, PathBuf};

/// The workspace root (this crate lives one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or_else(|| manifest.to_path_buf())
}

/// The committed recorded session.
pub fn session_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/session.jsonl")
}
