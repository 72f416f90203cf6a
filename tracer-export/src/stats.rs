//! What happened to the spans of each destination: exact, monotonic counters.
//!
//! Every span handed to [`crate::ExportHub::submit`] for a destination ends in exactly one place:
//! delivered, dropped for one of the causes of [`DropCounts`], or still held. So, at any time,
//! `spans_submitted == spans_delivered + dropped.total() + spans_held`. The hub logs no counts
//! itself: whoever runs it reads these counters (and logs their deltas, see
//! [`DropCounts::since`]), so no loss is ever missing from a report.
//!
//! Log records are counted the same way, apart ([`ExportStats::logs`]): there the `spans_*`
//! counters of [`DestinationStats`] count log records.

use crate::destination::Destination;

/// Spans a destination did not deliver, one counter per cause. Every counter only grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// The memory budget was full: the **oldest** spans held were dropped to make room for a new
    /// one (see [`crate::ExportConfig::max_backlog_bytes`]).
    pub budget_oldest: u64,
    /// The memory budget was full of spans that cannot be dropped (the batch whose request is
    /// out: its outcome decides how it counts), or one span is larger than the whole budget: the
    /// **new** span was dropped on arrival.
    pub budget_newest: u64,
    /// The backend took the request but rejected these spans (OTLP partial success).
    pub rejected: u64,
    /// The request failed with an error that retrying cannot fix (HTTP 4xx other than 408 and
    /// 429, gRPC `InvalidArgument` and the like, an endpoint that cannot be used).
    pub non_retryable: u64,
    /// Writing to the console or the store failed.
    pub write_failed: u64,
    /// Still held, or in a request cut off, when the shutdown's time ran out.
    pub at_shutdown: u64,
    /// Submitted after shutdown began.
    pub after_shutdown: u64,
}

impl DropCounts {
    /// Every dropped span, whatever the cause.
    pub fn total(&self) -> u64 {
        self.by_cause().iter().map(|(_, n)| n).sum()
    }

    /// Each counter with a short description of its cause, in a fixed order.
    pub fn by_cause(&self) -> [(&'static str, u64); 7] {
        [
            ("memory budget full (oldest dropped)", self.budget_oldest),
            ("memory budget full (newest dropped)", self.budget_newest),
            ("rejected by the backend", self.rejected),
            ("non-retryable error", self.non_retryable),
            ("write failed", self.write_failed),
            ("not delivered at shutdown", self.at_shutdown),
            ("submitted after shutdown", self.after_shutdown),
        ]
    }

    /// What was dropped since `earlier` (a previous reading of the same counters).
    pub fn since(&self, earlier: &DropCounts) -> DropCounts {
        DropCounts {
            budget_oldest: self.budget_oldest.saturating_sub(earlier.budget_oldest),
            budget_newest: self.budget_newest.saturating_sub(earlier.budget_newest),
            rejected: self.rejected.saturating_sub(earlier.rejected),
            non_retryable: self.non_retryable.saturating_sub(earlier.non_retryable),
            write_failed: self.write_failed.saturating_sub(earlier.write_failed),
            at_shutdown: self.at_shutdown.saturating_sub(earlier.at_shutdown),
            after_shutdown: self.after_shutdown.saturating_sub(earlier.after_shutdown),
        }
    }

    fn add(&mut self, other: &DropCounts) {
        self.budget_oldest += other.budget_oldest;
        self.budget_newest += other.budget_newest;
        self.rejected += other.rejected;
        self.non_retryable += other.non_retryable;
        self.write_failed += other.write_failed;
        self.at_shutdown += other.at_shutdown;
        self.after_shutdown += other.after_shutdown;
    }
}

/// What happened to the spans of one destination so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestinationStats {
    /// Spans submitted for this destination (those refused after shutdown included).
    pub spans_submitted: u64,
    /// Spans the destination accepted: the backend answered success, or the line was written.
    pub spans_delivered: u64,
    /// Spans dropped, by cause.
    pub dropped: DropCounts,
    /// Spans held now: waiting, waiting for a retry, or in a request that is out.
    pub spans_held: u64,
    /// The estimated bytes of the spans held now (see [`crate::span_bytes`]); never above the
    /// budget.
    pub bytes_held: u64,
    /// The most `bytes_held` ever was.
    pub peak_bytes_held: u64,
    /// Requests (OTLP) or writes (console, store) attempted, retries included.
    pub requests_sent: u64,
    /// Attempts that failed.
    pub requests_failed: u64,
    /// Whether the last attempt failed; cleared only when spans are actually delivered again.
    pub failing: bool,
    /// The last error, as text.
    pub last_error: Option<String>,
}

impl DestinationStats {
    /// Spans neither delivered, dropped nor held: always zero (a check for tests and reports).
    pub fn unaccounted(&self) -> i128 {
        i128::from(self.spans_submitted)
            - i128::from(self.spans_delivered)
            - i128::from(self.dropped.total())
            - i128::from(self.spans_held)
    }
}

/// Statistics of every destination used so far, in order of first use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// One entry per destination of spans.
    pub destinations: Vec<(Destination, DestinationStats)>,
    /// One entry per destination of log records (the `spans_*` counters count log records).
    pub logs: Vec<(Destination, DestinationStats)>,
}

impl ExportStats {
    /// The statistics of one destination of spans, if it was ever used.
    pub fn get(&self, destination: &Destination) -> Option<&DestinationStats> {
        self.destinations.iter().find(|(d, _)| d == destination).map(|(_, s)| s)
    }

    /// The statistics of one destination of log records, if it was ever used.
    pub fn get_logs(&self, destination: &Destination) -> Option<&DestinationStats> {
        self.logs.iter().find(|(d, _)| d == destination).map(|(_, s)| s)
    }

    /// The sums over all destinations of spans (`failing` if any is; `last_error` is the last
    /// listed one that is set).
    pub fn total(&self) -> DestinationStats {
        sum(&self.destinations)
    }

    /// The sums over all destinations of log records, as [`ExportStats::total`].
    pub fn logs_total(&self) -> DestinationStats {
        sum(&self.logs)
    }
}

fn sum(destinations: &[(Destination, DestinationStats)]) -> DestinationStats {
    let mut total = DestinationStats::default();
    for (_, s) in destinations {
        total.spans_submitted += s.spans_submitted;
        total.spans_delivered += s.spans_delivered;
        total.dropped.add(&s.dropped);
        total.spans_held += s.spans_held;
        total.bytes_held += s.bytes_held;
        total.peak_bytes_held += s.peak_bytes_held;
        total.requests_sent += s.requests_sent;
        total.requests_failed += s.requests_failed;
        total.failing |= s.failing;
        if s.last_error.is_some() {
            total.last_error.clone_from(&s.last_error);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_deltas_cover_every_cause() {
        let counts = DropCounts {
            budget_oldest: 1,
            budget_newest: 2,
            rejected: 4,
            non_retryable: 8,
            write_failed: 16,
            at_shutdown: 32,
            after_shutdown: 64,
        };
        assert_eq!(counts.total(), 127);
        assert_eq!(counts.since(&DropCounts::default()), counts);
        let later = DropCounts { rejected: 10, ..counts };
        assert_eq!(later.since(&counts), DropCounts { rejected: 6, ..DropCounts::default() });
        let names: Vec<&str> = counts.by_cause().iter().map(|(name, _)| *name).collect();
        assert_eq!(names.len(), 7);
        assert!(names.iter().all(|n| !n.is_empty()));
    }
}
