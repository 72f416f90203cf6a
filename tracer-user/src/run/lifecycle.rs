//! Which processes are traced, and when: adoption at start, at `openat` of omniORB and at fork;
//! libraries found later; uprobes where sockets are blind.

use std::path::Path;

use log::{info, warn};

use super::Daemon;
use crate::{
    discover::{
        self,
        procinfo::{MappedLibrary, ProcessInfo},
    },
    probe::record::Record,
};

impl Daemon {
    fn selected(&self, info: &ProcessInfo) -> bool {
        let by_env =
            self.options.select_env.as_ref().map(|(name, value)| info.environ.get(name) == Some(value));
        let by_pid =
            (!self.options.select_pids.is_empty()).then(|| self.options.select_pids.contains(&info.pid));
        match (by_env, by_pid) {
            (None, None) => true,
            (env, pid) => env.unwrap_or(false) || pid.unwrap_or(false),
        }
    }

    pub(super) fn scan_existing(&mut self) {
        for pid in discover::scan(&self.options.proc_root, self.own_pid) {
            self.adopt(pid);
        }
    }

    /// Handles the records that start or change a target; true when the record is done with.
    pub(super) fn on_lifecycle(&mut self, record: &Record) -> bool {
        match record {
            Record::LibOpened { pid, .. } => {
                self.adopt(*pid);
                true
            }
            Record::Fork { child, .. } => {
                // A new process (not a thread) inherits the parent's omniORB mapping.
                if is_process(&self.options.proc_root, *child) {
                    self.adopt(*child);
                }
                true
            }
            Record::Data { pid, .. } => {
                if let Some(info) = self.processes.refresh_libraries(*pid) {
                    self.pipeline.libraries_changed(info);
                    self.probe_libraries(*pid);
                }
                false
            }
            _ => false,
        }
    }

    /// Starts tracing `pid` if it is selected; otherwise makes sure the kernel ignores it.
    fn adopt(&mut self, pid: u32) {
        if self.processes.is_running(pid) {
            return;
        }
        let info = ProcessInfo::read(&self.options.proc_root, pid);
        if !self.selected(&info) {
            self.probes.remove_target(pid);
            return;
        }
        if let Err(e) = self.probes.add_target(pid) {
            warn!("cannot trace pid {pid}: {e}");
            return;
        }
        info!(
            "tracing pid {pid} ({}): omniORB {}, libtango {}; probes: syscalls sendto/recvfrom (GIOP over TCP and Unix sockets)",
            info.comm,
            lib_text(info.libraries.omniorb.as_ref()),
            lib_text(info.libraries.tango.as_ref()),
        );
        self.pipeline.adopt(&info);
        if !self.processes.insert(info) {
            warn!("pid {pid} not traced: too many processes traced at once");
            self.probes.remove_target(pid);
            return;
        }
        self.probe_libraries(pid);
    }

    /// Uprobes where sockets are blind: the ZMQ application thread pushing events.
    fn probe_libraries(&mut self, pid: u32) {
        let Some(zmq) = self.processes.info(pid).and_then(|p| p.libraries.zmq.clone()) else {
            return;
        };
        // The library as the process sees it, through its root (its mount namespace).
        let inside = zmq.path.strip_prefix("/").unwrap_or(&zmq.path);
        let path = self.options.proc_root.join(pid.to_string()).join("root").join(inside);
        match self.probes.probe_zmq(&path) {
            Ok(Some(what)) => info!("pid {pid}: {what}"),
            Ok(None) => {}
            Err(e) => warn!("pid {pid}: no ZMQ uprobe: {e}"),
        }
    }
}

pub(super) fn lib_text(lib: Option<&MappedLibrary>) -> String {
    match lib {
        Some(lib) => format!("{} ({})", lib.version.as_deref().unwrap_or("?"), lib.path.display()),
        None => "being loaded".to_string(),
    }
}

/// A task id is a process when it leads its thread group.
fn is_process(proc_root: &Path, pid: u32) -> bool {
    std::fs::read_to_string(proc_root.join(pid.to_string()).join("status")).ok().and_then(|status| {
        let line = status.lines().find(|l| l.starts_with("Tgid:"))?;
        line.split_whitespace().nth(1)?.parse::<u32>().ok()
    }) == Some(pid)
}
