//! The privileges the daemon needs, checked before anything is loaded, so that a missing one is
//! named instead of surfacing later as an obscure failure (a tracefs mount, a map creation).

/// Capability numbers (`linux/capability.h`).
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// What each needed capability is for.
const NEEDED: [(u32, &str, &str); 4] = [
    (CAP_BPF, "CAP_BPF", "load the eBPF programs and maps"),
    (CAP_PERFMON, "CAP_PERFMON", "attach tracepoints and uprobes"),
    (CAP_SYS_PTRACE, "CAP_SYS_PTRACE", "read the environment and memory maps of other users' processes"),
    (CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH", "read tangorc files and libraries through /proc/<pid>/root"),
];

/// A needed capability the daemon does not have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub name: &'static str,
    pub purpose: &'static str,
}

/// The needed capabilities absent from `status` (the text of `/proc/self/status`).
/// `CAP_SYS_ADMIN` stands in for `CAP_BPF` and `CAP_PERFMON`, as on kernels before 5.8.
pub fn missing(status: &str) -> Vec<Missing> {
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    NEEDED
        .iter()
        .filter(|(cap, _, _)| !has(*cap) && !((*cap == CAP_BPF || *cap == CAP_PERFMON) && has(CAP_SYS_ADMIN)))
        .map(|&(_, name, purpose)| Missing { name, purpose })
        .collect()
}

/// Fails with one message naming every missing capability and what it is for.
pub fn check() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| anyhow::anyhow!("cannot read /proc/self/status to check privileges: {e}"))?;
    let missing = missing(&status);
    if missing.is_empty() {
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
}
