//! The daemon's scheduling priority.
//!
//! A burst of calls or events can keep every core busy. The daemon's work for it can wait (the
//! probes' ring buffer holds the records, and a full ring is counted), the traced processes'
//! cannot, so the daemon runs below them: on busy cores they run first, and the daemon catches
//! up when a core goes idle. It only ever lowers its priority: a nice value it was started with
//! (by systemd's `Nice=`, or `nice`) that is already lower stays.

use anyhow::Context as _;

/// Sets every thread of the daemon to nice `target` when it runs at a higher priority. Returns
/// the nice value set, `None` when nothing changed (`target` 0, or already as low).
pub fn lower_to(target: i32) -> anyhow::Result<Option<i32>> {
    if target == 0 {
        return Ok(None);
    }
    let current = nice_of(0).context("reading the daemon's nice value")?;
    if current >= target {
        return Ok(None);
    }
    // Linux keeps a nice value per thread, and threads inherit the value of the thread that
    // makes them: every thread alive now is set, later ones inherit it.
    let tasks = std::fs::read_dir("/proc/self/task").context("listing the daemon's threads")?;
    for task in tasks {
        let Some(tid) = task.ok().and_then(|t| t.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        else {
            continue;
        };
        set_nice(tid, target).with_context(|| format!("setting thread {tid} to nice {target}"))?;
    }
    Ok(Some(target))
}

/// The nice value of thread `tid` (0: the calling thread).
fn nice_of(tid: u32) -> std::io::Result<i32> {
    // getpriority may return -1 as a value: errno, cleared first, tells an error apart.
    // SAFETY: errno is this thread's own; getpriority only reads the scheduler's state.
    unsafe {
        *libc::__errno_location() = 0;
        let value = libc::getpriority(libc::PRIO_PROCESS, tid);
        let error = std::io::Error::last_os_error();
        if value == -1 && error.raw_os_error() != Some(0) { Err(error) } else { Ok(value) }
    }
}

fn set_nice(tid: u32, nice: i32) -> std::io::Result<()> {
    // SAFETY: changes only the scheduling priority of one of the daemon's own threads.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn zero_leaves_the_priority_alone() {
        assert_eq!(lower_to(0).unwrap(), None);
    }

    #[test]
    fn a_thread_reads_its_own_nice_value() {
        // Whatever the test runner was started with, it is a valid nice value.
        let nice = nice_of(0).unwrap();
        assert!((-20..=19).contains(&nice), "{nice}");
    }
}
