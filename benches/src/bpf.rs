//! The eBPF programs' own time from the kernel's `bpf_stats`: `run_time_ns` and `run_cnt` in the
//! `fdinfo` of the daemon's program fds, counted while `kernel.bpf_stats_enabled` is on.

use std::collections::BTreeMap;

use anyhow::Context as _;

/// `prog_type` of kprobe and uprobe programs in `fdinfo` (`BPF_PROG_TYPE_KPROBE`).
pub const KPROBE: u32 = 2;

/// One program of a process, as its `fdinfo` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramTime {
    pub id: u32,
    pub kind: u32,
    pub run_ns: u64,
    pub runs: u64,
}

/// Every eBPF program whose fd `pid` holds, by program id (one program may have several fds).
pub fn program_times(pid: u32) -> BTreeMap<u32, ProgramTime> {
    let mut times = BTreeMap::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return times;
    };
    for fd in fds.flatten() {
        let Ok(text) = std::fs::read_to_string(fd.path()) else {
            continue;
        };
        let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok());
        let (Some(kind), Some(id), Some(run_ns), Some(runs)) =
            (field("prog_type:"), field("prog_id:"), field("run_time_ns:"), field("run_cnt:"))
        else {
            continue;
        };
        let (Ok(id), Ok(kind)) = (u32::try_from(id), u32::try_from(kind)) else {
            continue;
        };
        times.insert(id, ProgramTime { id, kind, run_ns, runs });
    }
    times
}

/// What each program (by name) ran between two readings: (name, ns, runs), sorted by name.
/// Programs of the same name are added up.
pub fn ran_between(
    before: &BTreeMap<u32, ProgramTime>,
    after: &BTreeMap<u32, ProgramTime>,
) -> Vec<(String, u64, u64)> {
    let names = program_names();
    let mut by_name: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (id, later) in after {
        let earlier = before.get(id);
        let ns = later.run_ns.saturating_sub(earlier.map_or(0, |e| e.run_ns));
        let runs = later.runs.saturating_sub(earlier.map_or(0, |e| e.runs));
        let name = names.get(id).cloned().unwrap_or_else(|| format!("program {id}"));
        let entry = by_name.entry(name).or_default();
        entry.0 += ns;
        entry.1 += runs;
    }
    by_name.into_iter().map(|(name, (ns, runs))| (name, ns, runs)).collect()
}

/// Names of the programs loaded on the machine, by id (the kernel keeps 15 characters).
fn program_names() -> BTreeMap<u32, String> {
    aya::programs::loaded_programs()
        .flatten()
        .filter_map(|info| Some((info.id(), info.name_as_str()?.to_string())))
        .collect()
}

/// `kernel.bpf_stats_enabled` on for as long as it lives, then back to what it was (the
/// statistics cost a little themselves).
pub struct BpfStats {
    before: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub fn enable() -> anyhow::Result<BpfStats> {
        let before = std::fs::read_to_string(BPF_STATS).context("reading kernel.bpf_stats_enabled")?;
        std::fs::write(BPF_STATS, "1").context("enabling kernel.bpf_stats_enabled")?;
        Ok(BpfStats { before: before.trim().to_string() })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, &self.before);
    }
}
