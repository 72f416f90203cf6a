//! The privileges the daemon needs, checked before anything is loaded, so that a missing one is
//! named instead of surfacing later as an obscure failure (a tracefs read, a map creation).
//!
//! The set was found by running the daemon as an unprivileged user with subsets of capabilities:
//! these four are enough for every probe on Linux 6.6 and later. `CAP_SYS_ADMIN` is needed only
//! on older kernels, for uprobes (see [`notes`]), and to mount tracefs when nothing has.

/// Capability numbers (`linux/capability.h`).
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// What each needed capability is for.
pub const NEEDED: [(u32, &str, &str); 4] = [
    (CAP_BPF, "CAP_BPF", "load the eBPF programs and create their maps"),
    (
        CAP_PERFMON,
        "CAP_PERFMON",
        "attach tracepoints and uprobes, and read kernel and process memory from the programs",
    ),
    (
        CAP_SYS_PTRACE,
        "CAP_SYS_PTRACE",
        "read other users' processes in /proc: environment, memory maps, blocked system calls, \
         libraries and tangorc files through /proc/<pid>/root",
    ),
    (
        CAP_DAC_READ_SEARCH,
        "CAP_DAC_READ_SEARCH",
        "read tracefs (root-only), those /proc files (owner-only) and tangorc files in other users' homes",
    ),
];

/// A needed capability the daemon does not have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub name: &'static str,
    pub purpose: &'static str,
}

/// The effective capability set in `status` (the text of `/proc/self/status`).
fn effective(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0)
}

/// The needed capabilities absent from `status` (the text of `/proc/self/status`).
/// `CAP_SYS_ADMIN` stands in for `CAP_BPF` and `CAP_PERFMON`, as on kernels before 5.8.
pub fn missing(status: &str) -> Vec<Missing> {
    let effective = effective(status);
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    NEEDED
        .iter()
        .filter(|(cap, _, _)| !has(*cap) && !((*cap == CAP_BPF || *cap == CAP_PERFMON) && has(CAP_SYS_ADMIN)))
        .map(|&(_, name, purpose)| Missing { name, purpose })
        .collect()
}

/// Whether this process may do what only `CAP_SYS_ADMIN` allows (mount tracefs, uprobes through
/// `perf_event_open`).
pub fn has_sys_admin() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    effective(&status) & (1u64 << CAP_SYS_ADMIN) != 0
}

/// What works only partly with these privileges on this kernel (`release`: `uname -r`), for the
/// log. Before Linux 6.6 the kernel has no uprobe_multi links, and its other way to make a
/// uprobe (`perf_event_open` of the uprobe PMU) needs `CAP_SYS_ADMIN` (the kernel reverted
/// uprobes from `CAP_PERFMON` to it: a probe placed inside an instruction can corrupt the
/// traced program).
pub fn notes(status: &str, release: &str) -> Vec<String> {
    let mut numbers = release.split(|c: char| !c.is_ascii_digit()).map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    let admin = effective(status) & (1u64 << CAP_SYS_ADMIN) != 0;
    if version < (6, 6) && !admin {
        vec![format!(
            "Linux {release} has no uprobe_multi links (6.6+), so uprobes need CAP_SYS_ADMIN here: without \
             it, no event push (PRODUCER) spans, device logs or user-level spans"
        )]
    } else {
        Vec::new()
    }
}

/// Fails with one message naming every missing capability and what it is for; logs what works
/// only partly.
pub fn check() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| anyhow::anyhow!("cannot read /proc/self/status to check privileges: {e}"))?;
    let missing = missing(&status);
    if missing.is_empty() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        for note in notes(&status, release.trim()) {
            log::warn!("{note}");
        }
        return Ok(());
    }
    let list: Vec<String> = missing.iter().map(|m| format!("{} (to {})", m.name, m.purpose)).collect();
    anyhow::bail!(
        "tango-tracer run needs more privileges: missing {}. Run it as root, or grant these capabilities \
         (e.g. systemd AmbientCapabilities=, or setpriv --ambient-caps)",
        list.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_missing() {
        let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert!(missing(root).is_empty());
        let nobody = "CapEff:\t0000000000000000\n";
        let names: Vec<_> = missing(nobody).iter().map(|m| m.name).collect();
        assert_eq!(names, ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"]);
        // BPF + PERFMON + PTRACE, no DAC_READ_SEARCH.
        let partial = format!("CapEff:\t{:016x}\n", (1u64 << 39) | (1 << 38) | (1 << 19));
        let names: Vec<_> = missing(&partial).iter().map(|m| m.name).collect();
        assert_eq!(names, ["CAP_DAC_READ_SEARCH"]);
        // An old kernel's CAP_SYS_ADMIN covers BPF and PERFMON.
        let admin = format!("CapEff:\t{:016x}\n", (1u64 << 21) | (1 << 19) | (1 << 2));
        assert!(missing(&admin).is_empty());
    }

    #[test]
    fn uprobes_need_sys_admin_only_before_6_6() {
        let four = format!("CapEff:\t{:016x}\n", (1u64 << 39) | (1 << 38) | (1 << 19) | (1 << 2));
        assert!(notes(&four, "6.18.44-fc-v857").is_empty());
        assert!(notes(&four, "6.6.0").is_empty());
        let old = notes(&four, "6.1.0-28-amd64");
        assert_eq!(old.len(), 1);
        assert!(old.iter().all(|n| n.contains("CAP_SYS_ADMIN")), "{old:?}");
        let admin = format!("CapEff:\t{:016x}\n", (1u64 << 21) | (1 << 19) | (1 << 2));
        assert!(notes(&admin, "6.1.0-28-amd64").is_empty());
    }
}
