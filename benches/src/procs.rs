//! Processes the benchmarks start: every one is stopped by its PID when its guard drops, also on
//! errors and panics, and dies with the benchmark if the benchmark itself is killed.

use std::{
    fs::File,
    net::TcpStream,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// How often waits look again.
const POLL: Duration = Duration::from_millis(20);

/// A child process, stopped by PID (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    child: Child,
    name: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proc {
    /// Starts `command` with its output in `<dir>/<name>.out` and `<dir>/<name>.err`.
    pub fn spawn(name: &str, mut command: Command, dir: &Path) -> anyhow::Result<Proc> {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        command
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).with_context(|| format!("creating {name}.out"))?)
            .stderr(File::create(&stderr).with_context(|| format!("creating {name}.err"))?);
        // SAFETY: prctl is async-signal-safe and touches only the child being set up.
        unsafe {
            command.pre_exec(|| {
                // A benchmark killed by SIGKILL cannot run its guards: take the children along.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child =
            command.spawn().with_context(|| format!("starting {name} ({:?})", command.get_program()))?;
        Ok(Proc { child, name: name.to_string(), stdout, stderr })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Everything it wrote on standard output so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Everything it wrote on standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The last lines of its standard error, for error messages.
    pub fn stderr_tail(&self) -> String {
        let text = self.stderr();
        let lines: Vec<&str> = text.lines().collect();
        lines.iter().skip(lines.len().saturating_sub(15)).copied().collect::<Vec<_>>().join("\n")
    }

    /// Waits for it to exit on its own; kills it after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.stop(Duration::from_secs(2));
                bail!("{} did not finish within {timeout:?}", self.name);
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        let Ok(pid) = i32::try_from(self.child.id()) else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            return;
        };
        // SAFETY: signalling our own child, which has not been reaped, by its PID.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(POLL);
        }
        eprintln!("tango-bench: {} ignored SIGTERM for {grace:?}; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, proc: &mut Proc, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = proc.exited() {
            bail!(
                "{} exited ({status}) before listening on port {port}:\n{}",
                proc.name(),
                proc.stderr_tail()
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not listen on port {port} within {timeout:?}:\n{}",
                proc.name(),
                proc.stderr_tail()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until `path` exists while `proc` runs.
pub fn wait_for_file(path: &Path, proc: &mut Proc, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if let Some(status) = proc.exited() {
            bail!("{} exited ({status}) before it was ready:\n{}", proc.name(), proc.stderr_tail());
        }
        if Instant::now() >= deadline {
            bail!("{} was not ready within {timeout:?}:\n{}", proc.name(), proc.stderr_tail());
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// Waits until `find` extracts something from the standard error of `proc`.
pub fn wait_for_stderr<T>(
    proc: &mut Proc,
    timeout: Duration,
    find: impl Fn(&str) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = find(&proc.stderr()) {
            return Ok(found);
        }
        if let Some(status) = proc.exited() {
            bail!("{} exited ({status}):\n{}", proc.name(), proc.stderr_tail());
        }
        if Instant::now() >= deadline {
            bail!("{} did not report in time:\n{}", proc.name(), proc.stderr_tail());
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until `find` extracts something from the standard output of `proc`.
pub fn wait_for_stdout<T>(
    proc: &mut Proc,
    timeout: Duration,
    find: impl Fn(&str) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = find(&proc.stdout()) {
            return Ok(found);
        }
        if let Some(status) = proc.exited() {
            bail!("{} exited ({status}):\n{}", proc.name(), proc.stderr_tail());
        }
        if Instant::now() >= deadline {
            bail!("{} did not report in time:\n{}", proc.name(), proc.stderr_tail());
        }
        std::thread::sleep(POLL);
    }
}

/// The version of the cppTango library a process has mapped (`libtango.so.9.3.4` → `9.3.4`,
/// `libtango-<hash>.so.10.3.3` → `10.3.3`).
pub fn libtango_version(pid: u32) -> Option<String> {
    libtango_version_in(&std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?)
}

/// [`libtango_version`] from the text of `/proc/<pid>/maps`.
fn libtango_version_in(maps: &str) -> Option<String> {
    maps.lines().find_map(|line| {
        let file = line.rsplit('/').next()?;
        if !file.starts_with("libtango") {
            return None;
        }
        let (_, version) = file.split_once(".so.")?;
        version.split('.').all(|part| part.parse::<u32>().is_ok()).then(|| version.to_string())
    })
}

/// A port of 127.0.0.1 that was free a moment ago (for device servers, which need it on their
/// command line).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Fails with a clear message unless running as root (loading eBPF programs needs it).
pub fn require_root(why: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        bail!("{why} loads eBPF programs and must run as root (effective uid is {euid})");
    }
    Ok(())
}

/// Resident memory of a process in KiB: (current `VmRSS`, peak `VmHWM`).
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user + system) a process has used so far, all its threads together (those that
/// ended too): its CPU-time clock, to the nanosecond; `/proc/PID/stat` (in clock ticks, 10 ms,
/// too coarse for a few µs per call over a few thousand calls) when that clock cannot be read.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    process_clock(pid).or_else(|| cpu_ticks(pid))
}

/// The CPU-time clock of another process (`clock_getcpuclockid`).
fn process_clock(pid: u32) -> Option<Duration> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid place for the clock id; the call only writes it.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return None;
    }
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec the call writes; a clock of an ended process fails.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return None;
    }
    Some(Duration::new(u64::try_from(now.tv_sec).ok()?, u32::try_from(now.tv_nsec).ok()?))
}

/// `utime + stime` of `/proc/PID/stat`.
fn cpu_ticks(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|&t| t > 0)?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / ticks as f64))
}

/// Context switches (voluntary and not) of all current threads of a process so far: about how
/// often it was woken up.
pub fn context_switches(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for task in tasks.flatten() {
        // A thread may end between listing and reading: skip it.
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        total += status
            .lines()
            .filter(|l| {
                l.starts_with("voluntary_ctxt_switches:") || l.starts_with("nonvoluntary_ctxt_switches:")
            })
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Some(total)
}

/// Busy CPU time of the whole machine so far, all cores together, from `/proc/stat`.
pub fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let [user, nice, system, _idle, _iowait, irq, softirq, steal, ..] = fields[..] else {
        return None;
    };
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|&t| t > 0)? as f64;
    Some(Duration::from_secs_f64((user + nice + system + irq + softirq + steal) as f64 / ticks))
}

/// CPU time used so far by children this process has waited for (exited clients).
pub fn reaped_children_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct we own; all-zero is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Duration::from_secs_f64(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

/// CPU counters at one moment, to tell the benchmark's own CPU use from everyone else's.
#[derive(Clone, Copy, Debug)]
pub struct CpuSnapshot {
    at: Instant,
    machine_busy: Duration,
    ours: Duration,
}

impl CpuSnapshot {
    /// `ours`: the benchmark's running processes; exited children are counted on their own.
    pub fn take(ours: &[u32]) -> Option<CpuSnapshot> {
        let machine_busy = machine_busy()?;
        let running: Duration = ours.iter().filter_map(|&p| cpu_time(p)).sum();
        Some(CpuSnapshot { at: Instant::now(), machine_busy, ours: running + reaped_children_cpu() })
    }

    /// Cores kept busy by anything but the benchmark between `self` and `later` (other users'
    /// builds, for instance), with the same `ours` list.
    pub fn foreign_cores(&self, later: &CpuSnapshot) -> Option<f64> {
        let elapsed = later.at.checked_duration_since(self.at)?.as_secs_f64();
        if elapsed <= 0.0 {
            return None;
        }
        let busy = later.machine_busy.checked_sub(self.machine_busy)?.as_secs_f64();
        let mine = later.ours.saturating_sub(self.ours).as_secs_f64();
        Some(((busy - mine) / elapsed).max(0.0))
    }
}

/// Processes named `comm` (as in `/proc/<pid>/comm`) that are not in `ours`.
pub fn others_named(comm: &str, ours: &[u32]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| !ours.contains(pid))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == comm)
        })
        .collect()
}

/// Waits, at most `budget`, until other processes keep less than `threshold` cores busy over
/// half a second and no other tango-tracer runs (its tracepoints would slow every process);
/// returns the last load seen.
pub fn wait_for_quiet(ours: &[u32], threshold: f64, budget: &mut Duration) -> Option<f64> {
    let window = Duration::from_millis(500);
    loop {
        let before = CpuSnapshot::take(ours)?;
        std::thread::sleep(window);
        let load = before.foreign_cores(&CpuSnapshot::take(ours)?)?;
        let quiet = load < threshold && others_named(TRACER_COMM, ours).is_empty();
        if quiet || *budget < window {
            return Some(load);
        }
        *budget -= window;
    }
}

/// The daemon's process name.
pub const TRACER_COMM: &str = "tango-tracer";

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
    fn finds_the_libtango_version() {
        let debian = "7f00-7f01 r--p 00000000 fe:01 42 /lib/libomniORB4.so.2.0\n\
                      7f02-7f03 r-xp 00000000 fe:01 43 /lib/libtango.so.9.3.4\n";
        assert_eq!(libtango_version_in(debian).as_deref(), Some("9.3.4"));
        let wheel = "7f02-7f03 r-xp 00000000 fe:01 43 /opt/pytango.libs/libtango-ddde0d83.so.10.3.3\n";
        assert_eq!(libtango_version_in(wheel).as_deref(), Some("10.3.3"));
        assert_eq!(libtango_version_in("7f02-7f03 r-xp 00000000 fe:01 43 /lib/libc.so.6\n"), None);
    }
}
