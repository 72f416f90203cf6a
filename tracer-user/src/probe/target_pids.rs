//! The daemon's side of the in-kernel `TARGET_PIDS` filter: one byte per pid (1: a target), the
//! first check of every socket transfer on the host. The daemon maps it into its own memory and
//! writes single bytes, as the programs do, so a pid the kernel makes a target at the same moment
//! (at an omniORB open, at fork) is never overwritten.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::{AtomicU8, Ordering},
};

use aya::maps::MapData;
use tracer_common::{MAX_TARGET_PID_PAGES, TARGET_PIDS_PER_PAGE};

/// Pages of the filter that cover the pids this kernel hands out now (`kernel.pid_max`); all
/// of them when it cannot be read. A pid beyond (`pid_max` raised later) is looked up in
/// `TARGETS` by the programs, so a smaller filter costs speed, never a target.
pub fn pages_for_pid_max() -> u32 {
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok());
    pid_max.map_or(MAX_TARGET_PID_PAGES, |pid_max| {
        u32::try_from(pid_max.div_ceil(TARGET_PIDS_PER_PAGE))
            .map_or(MAX_TARGET_PID_PAGES, |pages| pages.clamp(1, MAX_TARGET_PID_PAGES))
    })
}

/// `TARGET_PIDS` mapped into the daemon.
pub struct TargetPids {
    flags: NonNull<AtomicU8>,
    len: usize,
    /// Keeps the map's fd for as long as the mapping lives.
    _map: MapData,
}

// SAFETY: the mapping is shared memory written only through atomics; nothing in it is tied to
// the thread that made it.
unsafe impl Send for TargetPids {}
// SAFETY: as above.
unsafe impl Sync for TargetPids {}

impl TargetPids {
    /// Maps `map` (`pages` pages of `TARGET_PIDS_PER_PAGE` bytes, made `BPF_F_MMAPABLE`).
    pub fn map(map: MapData, pages: u32) -> std::io::Result<Self> {
        let len = pages as usize * TARGET_PIDS_PER_PAGE;
        // SAFETY: a new shared mapping of the map's fd, of exactly the map's size (array values
        // of a page each, laid out one after the other); nothing else refers to that memory yet.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if at == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let flags =
            NonNull::new(at.cast::<AtomicU8>()).ok_or_else(|| std::io::Error::other("mmap gave null"))?;
        Ok(Self { flags, len, _map: map })
    }

    /// Marks `pid` a target or not. A pid beyond the mapping needs nothing: the programs look it
    /// up in `TARGETS`.
    pub fn set(&self, pid: u32, target: bool) {
        let index = pid as usize;
        if index >= self.len {
            return;
        }
        // SAFETY: `index` is inside the mapping, which lives as long as `self`; a byte of it is
        // only ever accessed as one atomic byte (by the programs, as a plain byte store).
        let flag = unsafe { &*self.flags.as_ptr().add(index) };
        flag.store(u8::from(target), Ordering::Relaxed);
    }
}

impl Drop for TargetPids {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, of `len` bytes; no reference into it outlives `self`.
        unsafe { libc::munmap(self.flags.as_ptr().cast(), self.len) };
    }
}
