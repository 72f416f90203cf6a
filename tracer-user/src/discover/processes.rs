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
/// Most connections whose peer is kept at once; beyond, new ones are refused and counted.
const MAX_CONNECTION_PEERS: usize = 65_536;

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
    /// Peers of connections whose records carry none (the syscall probes have no socket), by
    /// (pid, fd): read from `/proc` once per connection, freed when it closes or its process exits.
    connection_peers: HashMap<(u32, i32), Peer>,
    refused_full: u64,
}

impl Processes {
    pub fn new(proc_root: Option<PathBuf>) -> Self {
        let facts = FactReader::new(proc_root.as_deref());
        Processes {
            proc_root,
            table: HashMap::new(),
            facts,
            connection_peers: HashMap::new(),
            refused_full: 0,
        }
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
        self.connection_peers.retain(|&(p, _), _| p != pid);
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
        if !gone.is_empty() {
            self.connection_peers.retain(|(pid, _), _| !gone.contains(pid));
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

    /// The peer of socket `fd` of a running process whose records carry none: read from `/proc`
    /// on the connection's first such record, then kept until [`Processes::connection_closed`].
    pub fn connection_peer(&mut self, pid: u32, fd: i32) -> Peer {
        if let Some(peer) = self.connection_peers.get(&(pid, fd)) {
            return *peer;
        }
        let Some(proc_root) = self.proc_root.as_deref() else {
            return Peer::Unknown;
        };
        if !self.is_running(pid) {
            return Peer::Unknown;
        }
        // Kept even when unknown: `/proc` is read once per connection, not once per record.
        let peer = sockets::peer(proc_root, pid, fd);
        log::debug!("peer of fd {fd} of pid {pid}, from /proc: {peer:?}");
        if has_room(self.connection_peers.len(), MAX_CONNECTION_PEERS, &mut self.refused_full) {
            self.connection_peers.insert((pid, fd), peer);
        }
        peer
    }

    /// Socket `fd` of `pid` closed: its fd number may name another connection next.
    pub fn connection_closed(&mut self, pid: u32, fd: i32) {
        self.connection_peers.remove(&(pid, fd));
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
        out.size("discover", "connection_peer_entries", self.connection_peers.len());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use std::{fs, net::Ipv4Addr, path::PathBuf};

    use super::*;

    const PID: u32 = 4242;
    /// A row of `/proc/net/tcp`: 127.0.0.1:45000 connected to 127.0.0.1:58490, inode 123456.
    const TCP_TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:AFC8 0100007F:E47A 01 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 20 4 30 10 -1\n";
    const UNIX_TABLE: &str = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 777\n";

    /// A `/proc` with one process: fd 7 a TCP socket, fd 8 a Unix socket, fd 9 a file.
    fn proc_root(test: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("tango-tracer-processes-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let dir = root.join(PID.to_string());
        fs::create_dir_all(dir.join("fd")).unwrap();
        fs::create_dir_all(dir.join("net")).unwrap();
        std::os::unix::fs::symlink("socket:[123456]", dir.join("fd/7")).unwrap();
        std::os::unix::fs::symlink("socket:[777]", dir.join("fd/8")).unwrap();
        std::os::unix::fs::symlink("/dev/null", dir.join("fd/9")).unwrap();
        fs::write(dir.join("net/tcp"), TCP_TABLE).unwrap();
        fs::write(dir.join("net/tcp6"), "").unwrap();
        fs::write(dir.join("net/unix"), UNIX_TABLE).unwrap();
        root
    }

    #[test]
    fn a_connection_peer_is_read_from_proc_once_and_forgotten_at_close_and_exit() {
        let root = proc_root("peer");
        let mut processes = Processes::new(Some(root.clone()));
        assert_eq!(processes.connection_peer(PID, 7), Peer::Unknown, "not traced: not looked up");
        assert!(processes.insert(ProcessInfo { pid: PID, ..ProcessInfo::default() }));
        let tcp = Peer::Inet(Ipv4Addr::LOCALHOST, 58490);
        assert_eq!(processes.connection_peer(PID, 7), tcp);
        assert_eq!(processes.connection_peer(PID, 8), Peer::Unix);
        assert_eq!(processes.connection_peer(PID, 9), Peer::Unknown);
        // Kept: the table is not read again while the connection lasts.
        fs::write(root.join(format!("{PID}/net/tcp")), "").unwrap();
        assert_eq!(processes.connection_peer(PID, 7), tcp);
        // Its fd closed: the next connection on that number is looked up again.
        processes.connection_closed(PID, 7);
        assert_eq!(processes.connection_peer(PID, 7), Peer::Unknown);
        assert_eq!(processes.connection_peers.len(), 3);
        processes.mark_exited(PID);
        assert!(processes.connection_peers.is_empty());
        assert_eq!(processes.connection_peer(PID, 8), Peer::Unknown, "exited: not looked up");
        let _ = fs::remove_dir_all(root);
    }
}
