//! Which processes are traced, and when: adoption at start (from `/proc`), at `openat` of omniORB
//! and at fork (from what the kernel copied then); libraries found later; uprobes where sockets
//! are blind.

use log::{debug, info, warn};

use super::Daemon;
use crate::{
    discover::{
        self,
        procinfo::{self, MappedLibrary, ProcessInfo},
    },
    probe::{attach::TransferProbes, record::Record},
};

impl Daemon {
    fn selected(&self, info: &ProcessInfo) -> bool {
        // `--netns` bounds every other choice: a process of another host is never traced.
        if self.options.net_ns.is_some_and(|wanted| info.net_ns != Some(wanted)) {
            return false;
        }
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
            // Processes of other network namespaces are not even read.
            if let Some(wanted) = self.options.net_ns
                && procinfo::net_namespace(&self.options.proc_root, pid) != Some(wanted)
            {
                continue;
            }
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
            // A forked process (not a thread) comes with its own facts record.
            Record::Fork { .. } => true,
            Record::ProcessFacts(facts) => {
                if !self.processes.is_running(facts.pid) {
                    let info = self.processes.from_captured(facts);
                    self.trace(info);
                }
                true
            }
            Record::LibraryPath { pid, path, .. } => {
                if let Some(info) = self.processes.note_library(*pid, path) {
                    self.pipeline.libraries_changed(info);
                    self.probe_libraries(*pid);
                }
                true
            }
            Record::Exit { pid, .. } => {
                // What the kernel still holds for it (syscalls in flight, partly moved messages,
                // the sockets its exit closed).
                self.probes.forget_process(*pid);
                self.probes.forget_sockets(*pid);
                false
            }
            Record::Exec { pid, .. } => {
                // Its sockets may outlive the exec: their fds stay noted.
                self.probes.forget_process(*pid);
                false
            }
            _ => false,
        }
    }

    /// Starts tracing a running `pid` (read from `/proc`) if it is selected.
    fn adopt(&mut self, pid: u32) {
        if !self.processes.is_running(pid) {
            let info = ProcessInfo::read(&self.options.proc_root, pid);
            self.trace(info);
        }
    }

    /// Starts tracing the process if it is selected; otherwise makes sure the kernel ignores it.
    fn trace(&mut self, info: ProcessInfo) {
        let pid = info.pid;
        if !self.selected(&info) {
            self.probes.remove_target(pid);
            return;
        }
        if let Err(e) = self.probes.add_target(pid) {
            warn!("cannot trace pid {pid}: {e}");
            return;
        }
        // A process running before the daemon may have threads waiting in a receive already.
        let adopted = self.probes.adopt_blocked_receives(&self.options.proc_root, pid);
        if adopted > 0 {
            debug!("pid {pid}: {adopted} receive(s) already waiting followed");
        }
        let probes = match self.probes.transfer_probes() {
            TransferProbes::Socket => "sock:sock_send_length/sock_recv_length",
            TransferProbes::Syscalls => "syscalls sendto/recvfrom",
        };
        info!(
            "tracing pid {pid} ({}): omniORB {}, libtango {}; probes: {probes} (GIOP over TCP and Unix sockets)",
            info.comm,
            lib_text(info.libraries.omniorb.as_ref()),
            lib_text(info.libraries.tango.as_ref()),
        );
        if !self.pipeline.start_process(info, &mut self.processes) {
            warn!("pid {pid} not traced: too many processes traced at once");
            self.probes.remove_target(pid);
            return;
        }
        self.probe_libraries(pid);
    }

    /// Uprobes where sockets are blind: the application thread pushing events, and the
    /// function every device log message ends in.
    fn probe_libraries(&mut self, pid: u32) {
        let Some(libraries) = self.processes.info(pid).map(|p| p.libraries.clone()) else {
            return;
        };
        // Pushes are marked in libtango (`push_event`, one trap per push) where it can be
        // probed cheaply, else in libzmq (`zmq_msg_send`, one trap per message part). libtango
        // is known first (the loader opens it before its libzmq); until it is, libzmq waits.
        let mut pushes_seen = None;
        for (library, zmq) in [(libraries.tango, false), (libraries.zmq, true)] {
            let Some(library) = library else {
                continue;
            };
            if !zmq {
                pushes_seen = Some(false);
            }
            // The library as the process sees it (through its root while it lives).
            let Some(path) = self.processes.path_in_view(pid, &library.path) else {
                continue;
            };
            // The loader tries every directory of its search path in turn: an open that failed
            // names no library, and the one that succeeds follows.
            if !path.exists() {
                continue;
            }
            if !zmq && self.options.user_spans {
                // User code inside requests: the other spans go on whatever this says.
                match self.probes.probe_user_code(pid, &path) {
                    Some(Ok(what)) => info!("pid {pid}: user-level spans: {what}"),
                    Some(Err(why)) => {
                        warn!("pid {pid}: no user-level spans (hook, attribute reads, commands): {why}")
                    }
                    None => {}
                }
            }
            if zmq && pushes_seen.unwrap_or(true) {
                continue;
            }
            if !zmq {
                let (seen, outcome) = self.probes.probe_push_event(&path);
                pushes_seen = Some(seen);
                match outcome {
                    Some(Ok(what)) => info!("pid {pid}: {what}"),
                    Some(Err(e)) => info!("pid {pid}: event pushes marked in libzmq instead: {e}"),
                    None => {}
                }
            }
            let attached = if zmq { self.probes.probe_zmq(&path) } else { self.probes.probe_tango(&path) };
            match attached {
                Ok(Some(what)) => info!("pid {pid}: {what}"),
                Ok(None) => {}
                Err(e) if zmq => warn!("pid {pid}: no ZMQ uprobe: {e}"),
                Err(e) => warn!("pid {pid}: no logging uprobe, its device logs are not seen: {e}"),
            }
        }
    }
}

pub(super) fn lib_text(lib: Option<&MappedLibrary>) -> String {
    match lib {
        Some(lib) => format!("{} ({})", lib.version.as_deref().unwrap_or("?"), lib.path.display()),
        None => "being loaded".to_string(),
    }
}
