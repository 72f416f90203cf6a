//! Every loss reported promptly and completely.
//!
//! Each stage keeps monotonic counters of what it lost, by cause (probe records, in-kernel state,
//! unparsable bytes, incomplete calls, spans dropped on the way out). The run loop gathers them
//! into one list of [`Loss`] and [`LossReport`] logs what changed since its previous line, with the
//! exact counts since then and the totals so far: the numbers of all warnings add up to the
//! totals, and the stop line prints the totals. Nothing is held back by rate limiting — a line
//! waits at most [`LossReport::interval`] and carries everything that happened meanwhile.

use std::{
    borrow::Cow,
    collections::HashMap,
    fmt::Write as _,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// One monotonic loss counter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loss {
    /// Where it was lost: `probes`, `assembly`, `export to http://…`.
    pub stage: Cow<'static, str>,
    /// Why, in words (`ring buffer full`, `dropped over the memory budget`).
    pub cause: Cow<'static, str>,
    pub total: u64,
}

impl Loss {
    pub fn new(stage: impl Into<Cow<'static, str>>, cause: impl Into<Cow<'static, str>>, total: u64) -> Self {
        Loss { stage: stage.into(), cause: cause.into(), total }
    }
}

/// Remembers what was already reported.
#[derive(Debug)]
pub struct LossReport {
    reported: HashMap<(Cow<'static, str>, Cow<'static, str>), u64>,
    last_line: Option<Instant>,
    interval: Duration,
}

impl LossReport {
    /// At most one line per `interval`; the first loss is reported at the next check.
    pub fn new(interval: Duration) -> Self {
        LossReport { reported: HashMap::new(), last_line: None, interval }
    }

    /// The longest a loss waits before it is logged.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// A warning for what was lost since the previous one, if anything was and a line is due.
    pub fn check(&mut self, losses: &[Loss], now: Instant) -> Option<String> {
        if self.last_line.is_some_and(|t| now.duration_since(t) < self.interval) {
            return None;
        }
        let line = self.since_last(losses)?;
        self.last_line = Some(now);
        Some(line)
    }

    /// What changed since the last line, marking it reported, whether or not a line is due
    /// (the stop path logs it before the totals).
    pub fn since_last(&mut self, losses: &[Loss]) -> Option<String> {
        let mut changed = String::new();
        for loss in losses {
            let key = (loss.stage.clone(), loss.cause.clone());
            let before = self.reported.get(&key).copied().unwrap_or(0);
            if loss.total > before {
                let sep = if changed.is_empty() { "" } else { ", " };
                let _ = write!(changed, "{sep}{} {}: {}", loss.stage, loss.cause, loss.total - before);
                self.reported.insert(key, loss.total);
            }
        }
        if changed.is_empty() {
            return None;
        }
        Some(format!("lost since the last report: {changed}; totals: {}", totals(losses)))
    }
}

/// Every non-zero total, or `none`.
pub fn totals(losses: &[Loss]) -> String {
    let mut text = String::new();
    for loss in losses.iter().filter(|l| l.total > 0) {
        let sep = if text.is_empty() { "" } else { ", " };
        let _ = write!(text, "{sep}{} {}: {}", loss.stage, loss.cause, loss.total);
    }
    if text.is_empty() { "none".to_string() } else { text }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn every_count_appears_once_and_the_totals_add_up() {
        let mut report = LossReport::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(report.check(&[Loss::new("probes", "ring buffer full", 0)], t0), None);
        let line = report.check(&[Loss::new("probes", "ring buffer full", 7)], t0).unwrap();
        assert_eq!(
            line,
            "lost since the last report: probes ring buffer full: 7; totals: probes ring buffer full: 7"
        );
        // Within the interval nothing is logged, but nothing is forgotten either.
        let later = [Loss::new("probes", "ring buffer full", 10), Loss::new("export to x", "over budget", 3)];
        assert_eq!(report.check(&later, t0 + Duration::from_secs(1)), None);
        let line = report.check(&later, t0 + Duration::from_secs(6)).unwrap();
        assert_eq!(
            line,
            "lost since the last report: probes ring buffer full: 3, export to x over budget: 3; \
             totals: probes ring buffer full: 10, export to x over budget: 3"
        );
        assert_eq!(report.since_last(&later), None);
        assert_eq!(totals(&[]), "none");
    }
}
