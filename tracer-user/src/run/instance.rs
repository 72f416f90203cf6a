//! One daemon per host: the control socket names the running daemon.
//!
//! A daemon holds an exclusive `flock` on `<control socket>.lock` for as long as it lives; the
//! kernel drops it when the process dies, however it dies, so a lock left by a killed daemon never
//! blocks the next one. The lock file holds the owner's pid, so a refused daemon can name it. The
//! socket file itself is only a rendezvous point: one found while we hold the lock was left behind
//! by a daemon that died, and is reclaimed. Removing the socket at exit is [`Instance`]'s drop.

use std::{
    fs::{File, OpenOptions},
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

/// Why this daemon may not run.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// Another daemon holds the lock.
    #[error(
        "another tango-tracer daemon is running (pid {pid}, control socket {socket}); stop it first \
         (`kill {pid}`), or give this one its own --control-socket"
    )]
    Running { pid: String, socket: PathBuf },
    #[error(
        "cannot use the lock file {path} (the daemon's user must be able to create files beside its \
         control socket: give --control-socket a path in a directory it owns, e.g. one systemd makes \
         with RuntimeDirectory=)"
    )]
    Lock { path: PathBuf, source: std::io::Error },
}

/// The lock of the running daemon; dropping it removes the control socket.
#[derive(Debug)]
pub struct Instance {
    socket: PathBuf,
    /// Held open: closing it releases the lock.
    _lock: File,
}

impl Instance {
    /// Takes the lock that belongs to `socket`, or says who holds it.
    pub fn acquire(socket: &Path) -> Result<Instance, InstanceError> {
        let path = lock_path(socket);
        let error = |source| InstanceError::Lock { path: path.clone(), source };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(error)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(error)?;
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let errno = std::io::Error::last_os_error();
            if errno.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(error(errno));
            }
            let mut owner = String::new();
            let _ = file.read_to_string(&mut owner);
            let pid = owner.trim();
            let pid = if pid.is_empty() { "unknown".to_string() } else { pid.to_string() };
            return Err(InstanceError::Running { pid, socket: socket.to_path_buf() });
        }
        file.set_len(0).map_err(error)?;
        file.seek(SeekFrom::Start(0)).map_err(error)?;
        writeln!(file, "{}", std::process::id()).map_err(error)?;
        // We hold the lock, so a socket file here is a dead daemon's.
        if socket.exists() {
            log::info!("reclaiming the control socket {} left by a daemon that died", socket.display());
            let _ = std::fs::remove_file(socket);
        }
        Ok(Instance { socket: socket.to_path_buf(), _lock: file })
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// `<socket>.lock`, beside the socket.
fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tango-tracer-instance-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_second_instance_is_refused_and_names_the_first() {
        let dir = scratch("second");
        let socket = dir.join("ctl.sock");
        let first = Instance::acquire(&socket).unwrap();
        match Instance::acquire(&socket) {
            Err(InstanceError::Running { pid, socket: named }) => {
                assert_eq!(pid, std::process::id().to_string());
                assert_eq!(named, socket);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        drop(first);
        // Released with its owner: the next one starts.
        Instance::acquire(&socket).unwrap();
    }

    #[test]
    fn a_stale_socket_is_reclaimed_and_removed_at_exit() {
        let dir = scratch("stale");
        let socket = dir.join("ctl.sock");
        std::fs::write(&socket, b"").unwrap();
        let instance = Instance::acquire(&socket).unwrap();
        assert!(!socket.exists(), "the stale socket file is reclaimed");
        std::fs::write(&socket, b"").unwrap();
        drop(instance);
        assert!(!socket.exists(), "the socket is removed at exit");
    }
}
