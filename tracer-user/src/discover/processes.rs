//! The traced processes and what the kernel copied or `/proc` said about them. A process's entry stays for a while
//! after it exits (spans of its last calls are still on their way), then it is forgotten and
//! every stage frees what it kept for it.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use hashbrown::HashMap;

use super::{
    procinfo::{FactReader, ProcessInfo},
    sockets,
};
use crate::{
    probe::record::{CapturedFacts, Peer},
    stats::{StageStats, has_room},
};

/// Most processes traced at once; beyond, new ones are refused and counted.
const MAX_PROCESSES: usize = tracer_common::MAX_TARGETS as usize;

struct TracedProcess {
    info: ProcessInfo,
    exited_at: Option<Instant>,
    /// `giop:unix:<path>` of the Unix socket the process serves on, once looked up.
    unix_location: Option<String>,
}

/// Traced processes by pid.
pub struct Processes {
    /// Where `/proc` is; `None` where there is none to read (replay of a recorded session).
    proc_root: Option<PathBuf>,
    table: HashMap<u32, TracedProcess>,
    /// Builds what is known about a process, and counts what could not be read.
    facts: FactReader,
    refused_full: u64,
}

impl Processes {
    pub fn new(proc_root: Option<PathBuf>) -> Self {
        let facts = FactReader::new(proc_root.as_deref());
        Processes { proc_root, table: HashMap::new(), facts, refused_full: 0 }
    }

    /// What a process the kernel has just made a target is: the kernel's copy first (a forked
    /// child inherits its parent's facts); `/proc` only for what the copy cannot carry.
    pub fn from_captured(&mut self, facts: &CapturedFacts) -> ProcessInfo {
        let parent = facts.parent.and_then(|p| self.table.get(&p)).map(|p| &p.info);
        self.facts.from_captured(facts, parent)
    }

    /// A library path the process opened; returns the process when its libraries changed.
    pub fn note_library(&mut self, pid: u32, path: &Path) -> Option<&ProcessInfo> {
        let process = self.table.get_mut(&pid)?;
        let before = process.info.libraries.clone();
        self.facts.note_library(&mut process.info, path);
        (process.info.libraries != before).then_some(&process.info)
    }

    /// `path` (as `pid` sees it) where the daemon can open it, while that is possible.
    pub fn path_in_view(&self, pid: u32, path: &Path) -> Option<PathBuf> {
        self.facts.path_in_view(&self.table.get(&pid)?.info, path)
    }

    /// Starts following a process (again, when its pid was reused); false when the table is full.
    pub fn insert(&mut self, info: ProcessInfo) -> bool {
        if !self.table.contains_key(&info.pid)
            && !has_room(self.table.len(), MAX_PROCESSES, &mut self.refused_full)
        {
            return false;
        }
        self.table.insert(info.pid, TracedProcess { info, exited_at: None, unix_location: None });
        true
    }

    /// Whether records of `pid` are followed (it is traced, or exited a moment ago).
    pub fn is_traced(&self, pid: u32) -> bool {
        self.table.contains_key(&pid)
    }

    /// Whether `pid` is traced and running.
    pub fn is_running(&self, pid: u32) -> bool {
        self.table.get(&pid).is_some_and(|p| p.exited_at.is_none())
    }

    pub fn info(&self, pid: u32) -> Option<&ProcessInfo> {
        self.table.get(&pid).map(|p| &p.info)
    }

    /// Running processes, by pid.
    pub fn running(&self) -> Vec<&ProcessInfo> {
        let mut list: Vec<&ProcessInfo> =
            self.table.values().filter(|p| p.exited_at.is_none()).map(|p| &p.info).collect();
        list.sort_by_key(|info| info.pid);
        list
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn mark_exited(&mut self, pid: u32) {
        if let Some(process) = self.table.get_mut(&pid) {
            process.exited_at = Some(Instant::now());
            self.facts.process_ended(&process.info);
        }
    }

    /// Forgets processes that exited more than `keep` ago and returns their pids.
    pub fn take_gone(&mut self, keep: Duration) -> Vec<u32> {
        let gone: Vec<u32> = self
            .table
            .iter()
            .filter(|(_, p)| p.exited_at.is_some_and(|t| t.elapsed() >= keep))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in &gone {
            self.table.remove(pid);
        }
        gone
    }

    /// The peer of a server-side connection: from the kernel when it could tell, else from
    /// `/proc` while the socket still exists.
    pub fn peer_location(&mut self, pid: u32, fd: i32, peer: &Peer) -> Option<String> {
        let from_kernel = match peer {
            Peer::Inet(ip, port) => Some(format!("giop:tcp:{ip}:{port}")),
            Peer::Unix => self.unix_location(pid),
            Peer::Unknown | Peer::Other(_) => None,
        };
        from_kernel.or_else(|| sockets::peer_location(self.proc_root.as_deref()?, pid, fd))
    }

    /// The Unix-socket address of a server (the same for all its Unix connections).
    fn unix_location(&mut self, pid: u32) -> Option<String> {
        let proc_root = self.proc_root.as_deref()?;
        let process = self.table.get_mut(&pid)?;
        if process.unix_location.is_none() {
            process.unix_location = sockets::unix_listen_location(proc_root, pid);
        }
        process.unix_location.clone()
    }

    pub fn report(&self, out: &mut StageStats) {
        out.loss("discover", "refused_table_full", self.refused_full);
        for (cause, total) in self.facts.losses() {
            out.loss("discover", cause, total);
        }
        out.size("discover", "process_entries", self.table.len());
    }
}
