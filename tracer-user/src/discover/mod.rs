//! Finding target processes: every process that maps an omniORB library.
//!
//! At start the daemon scans `/proc`; afterwards the kernel reports each process that opens an
//! omniORB library (`openat`), so a process loading `tango` by `dlopen` is traced at once.

use std::{fs, path::Path};

pub mod processes;
pub mod procinfo;
pub mod sockets;

use procinfo::TangoLibraries;

/// Pids of running processes that map omniORB, except `own_pid`.
pub fn scan(proc_root: &Path, own_pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != own_pid && maps_omniorb(proc_root, pid))
        .collect();
    pids.sort_unstable();
    pids
}

/// Whether `pid` maps an omniORB library now.
pub fn maps_omniorb(proc_root: &Path, pid: u32) -> bool {
    fs::read_to_string(proc_root.join(pid.to_string()).join("maps"))
        .map(|maps| TangoLibraries::from_maps(&maps).omniorb.is_some())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        reason = "tests"
    )]
    use super::*;

    #[test]
    fn scan_of_this_process_finds_nothing_of_ours() {
        // The test binary maps no omniORB; scanning the real /proc must not fail.
        let own = std::process::id();
        assert!(!scan(Path::new("/proc"), 0).contains(&own));
    }
}
