//! Counters and table sizes of every stage, in one list: for `tango-tracer ctl stats`, the stop
//! line and tests that check tables go back to their baseline size.

use serde::{Deserialize, Serialize};

/// One counter or table size of one stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageStat {
    pub stage: String,
    pub name: String,
    pub value: u64,
}

/// The stages' counters and table sizes, in pipeline order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageStats {
    entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    stage: &'static str,
    name: &'static str,
    value: u64,
    /// Counts state or data the stage could not keep (reported as a loss).
    loss: bool,
}

impl StageStats {
    /// A counter of work done or a table size.
    pub fn push(&mut self, stage: &'static str, name: &'static str, value: u64) {
        self.entries.push(Entry { stage, name, value, loss: false });
    }

    /// A counter of something lost: state or data the stage could not keep.
    pub fn loss(&mut self, stage: &'static str, name: &'static str, value: u64) {
        self.entries.push(Entry { stage, name, value, loss: true });
    }

    /// Table sizes are recorded as `usize`.
    pub fn size(&mut self, stage: &'static str, name: &'static str, len: usize) {
        self.push(stage, name, len as u64);
    }

    pub fn get(&self, stage: &str, name: &str) -> Option<u64> {
        self.entries.iter().find(|e| e.stage == stage && e.name == name).map(|e| e.value)
    }

    /// Every `(stage, name, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        self.entries.iter().map(|e| (e.stage, e.name, e.value))
    }

    /// The loss counters only (see [`StageStats::loss`]).
    pub fn losses(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        self.entries.iter().filter(|e| e.loss).map(|e| (e.stage, e.name, e.value))
    }

    /// Table sizes only (names ending in `_entries`), for baseline checks.
    pub fn tables(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        self.iter().filter(|(_, name, _)| name.ends_with("_entries"))
    }

    pub fn to_views(&self) -> Vec<StageStat> {
        self.iter()
            .map(|(stage, name, value)| StageStat { stage: stage.to_string(), name: name.to_string(), value })
            .collect()
    }
}

/// Whether a table of `len` entries capped at `cap` takes one more; a refusal is counted.
pub fn has_room(len: usize, cap: usize, refused: &mut u64) -> bool {
    if len < cap {
        true
    } else {
        *refused += 1;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_counters_recorded_as_losses_are_losses() {
        let mut stats = StageStats::default();
        stats.push("pipeline", "waiting_overflow", 3);
        stats.loss("discover", "refused_table_full", 2);
        stats.size("discover", "process_entries", 5);
        assert_eq!(stats.losses().collect::<Vec<_>>(), vec![("discover", "refused_table_full", 2)]);
        assert_eq!(stats.iter().count(), 3);
    }
}
