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

/// Why `--netns PATH` names no network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open {}: {source}", path.display())]
    Open { path: std::path::PathBuf, source: std::io::Error },
    #[error("{} is not a network namespace (give /run/netns/NAME or /proc/PID/ns/net)", path.display())]
    NotNetwork { path: std::path::PathBuf },
}

/// Inode of the network namespace that `path` names (`/run/netns/NAME`, `/proc/PID/ns/net`): the
/// number `/proc/<pid>/ns/net` shows for its processes, and the kernel's `net.ns.inum`.
pub fn net_namespace_inode(path: &Path) -> Result<u32, NetnsError> {
    use std::os::{fd::AsRawFd as _, unix::fs::MetadataExt as _};
    let open_error = |source| NetnsError::Open { path: path.to_path_buf(), source };
    let file = fs::File::open(path).map_err(open_error)?;
    // SAFETY: NS_GET_NSTYPE takes no argument and only answers; the fd is open for the call.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), libc::NS_GET_NSTYPE) };
    if kind != libc::CLONE_NEWNET {
        return Err(NetnsError::NotNetwork { path: path.to_path_buf() });
    }
    let inode = file.metadata().map_err(open_error)?.ino();
    u32::try_from(inode).map_err(|_| NetnsError::NotNetwork { path: path.to_path_buf() })
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
    fn a_network_namespace_is_named_by_its_inode() {
        let own = procinfo::net_namespace(Path::new("/proc"), "self").expect("our network namespace");
        assert_eq!(net_namespace_inode(Path::new("/proc/self/ns/net")).expect("a namespace"), own);
        // Another kind of namespace, a plain file, nothing: each refused with its path.
        for path in ["/proc/self/ns/mnt", "/proc/self/status"] {
            let error = net_namespace_inode(Path::new(path)).expect_err(path).to_string();
            assert!(error.contains(path) && error.contains("not a network namespace"), "{error}");
        }
        let error = net_namespace_inode(Path::new("/nonexistent/netns")).expect_err("missing").to_string();
        assert!(error.contains("cannot open /nonexistent/netns"), "{error}");
    }

    #[test]
    fn scan_of_this_process_finds_nothing_of_ours() {
        // The test binary maps no omniORB; scanning the real /proc must not fail.
        let own = std::process::id();
        assert!(!scan(Path::new("/proc"), 0).contains(&own));
    }
}
