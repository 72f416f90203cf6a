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
    entries: Vec<(&'static str, &'static str, u64)>,
}

impl StageStats {
    pub fn push(&mut self, stage: &'static str, name: &'static str, value: u64) {
        self.entries.push((stage, name, value));
    }

    /// Table sizes are recorded as `usize`.
    pub fn size(&mut self, stage: &'static str, name: &'static str, len: usize) {
        self.push(stage, name, len as u64);
    }

    pub fn get(&self, stage: &str, name: &str) -> Option<u64> {
        self.entries.iter().find(|(s, n, _)| *s == stage && *n == name).map(|(_, _, v)| *v)
    }

    /// Every `(stage, name, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        self.entries.iter().copied()
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
