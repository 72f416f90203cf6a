//! Tail sampling: which whole local traces go to export, decided once their spans are final.
//!
//! A trace (every span this daemon has of one trace id) is kept when one of its spans is slower
//! than a threshold or holds an error, or when its trace id falls in the kept fraction — the same
//! test as OpenTelemetry's `TraceIdRatioBased` sampler on the low 8 bytes of the id, so the
//! daemons of every host keep the same traces. A trace not kept at once is held until it has
//! been quiet for the decision wait (its late spans may still keep it), then dropped. Memory is
//! bounded: beyond the most traces or held items, the trace whose decision is due first is
//! decided early (dropped; counted). Device logs of a trace follow its spans; logs outside any
//! trace pass. Dropping by sampling is intended: counted, never reported as a loss.
//!
//! This stage owns the held items and the decisions still remembered; both empty when traffic
//! stops for longer than the decision wait.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    time::{Duration, Instant},
};

use opentelemetry::trace::TraceId;

use crate::stats::StageStats;

/// Default time a trace not yet kept waits for late spans after its last one: longer than a
/// server span waits for its device's facts (2 s), so a call's two spans are decided together.
pub const DEFAULT_DECISION_WAIT: Duration = Duration::from_secs(3);
/// Default most spans and logs held undecided, and most traces remembered; beyond, the trace
/// due first is decided early.
pub const DEFAULT_MAX_HELD: usize = 200_000;

/// The operator's rule (`--tail-sampling`).
#[derive(Clone, Debug, PartialEq)]
pub struct TailSampling {
    /// Keep a trace with a span slower than this.
    pub slower_than: Option<Duration>,
    /// Keep a trace with a span that holds an error.
    pub errors: bool,
    /// Fraction of the other traces kept, by trace id.
    pub ratio: f64,
    /// How long a trace not kept waits for late spans after its last one.
    pub decision_wait: Duration,
    /// Most spans and logs held undecided.
    pub max_held: usize,
}

impl TailSampling {
    /// Parses `slower-than=5ms,errors,ratio=0.05[,decision-wait=3s][,max-held=200000]`.
    pub fn parse(text: &str) -> Result<TailSampling, String> {
        let mut rule = TailSampling {
            slower_than: None,
            errors: false,
            ratio: 0.0,
            decision_wait: DEFAULT_DECISION_WAIT,
            max_held: DEFAULT_MAX_HELD,
        };
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((key, value)) => (key.trim(), Some(value.trim())),
                None => (item, None),
            };
            let need = || value.ok_or_else(|| format!("{key} needs a value ({key}=…)"));
            match key {
                "slower-than" => rule.slower_than = Some(parse_duration(need()?)?),
                "errors" if value.is_none() => rule.errors = true,
                "ratio" => {
                    let ratio: f64 = need()?.parse().map_err(|_| format!("not a number: {item}"))?;
                    if !(0.0..=1.0).contains(&ratio) {
                        return Err(format!("ratio must be between 0 and 1: {item}"));
                    }
                    rule.ratio = ratio;
                }
                "decision-wait" => {
                    let wait = parse_duration(need()?)?;
                    if wait.is_zero() || wait > Duration::from_secs(60) {
                        return Err(format!("decision-wait must be more than 0 and at most 60s: {item}"));
                    }
                    rule.decision_wait = wait;
                }
                "max-held" => {
                    let max: usize = need()?.parse().map_err(|_| format!("not a count: {item}"))?;
                    if max == 0 {
                        return Err(format!("max-held must be at least 1: {item}"));
                    }
                    rule.max_held = max;
                }
                _ => {
                    return Err(format!(
                        "unknown item {item:?} (use slower-than=DURATION, errors, ratio=FRACTION, \
                         decision-wait=DURATION, max-held=COUNT)"
                    ));
                }
            }
        }
        Ok(rule)
    }

    /// Whether the trace id alone keeps the trace: OpenTelemetry's `TraceIdRatioBased` test,
    /// the low 8 bytes (big-endian, shifted right once) below ratio × 2^63.
    pub fn ratio_keeps(&self, trace_id: TraceId) -> bool {
        ratio_keeps(self.ratio, trace_id)
    }
}

/// OpenTelemetry's `TraceIdRatioBased` decision for `ratio`.
pub fn ratio_keeps(ratio: f64, trace_id: TraceId) -> bool {
    let upper_bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    let bytes = trace_id.to_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..]);
    (u64::from_be_bytes(low) >> 1) < upper_bound
}

/// `5ms`, `250us`, `1.5s`, `100ns`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("not a duration: {text} (e.g. 5ms)"))?;
    let seconds = match unit {
        "ns" => value / 1e9,
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        _ => return Err(format!("unknown unit in {text} (use ns, us, ms or s)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("duration out of range: {text}"))
}

/// What the decision needs of one span.
#[derive(Clone, Copy, Debug)]
pub struct SpanFacts {
    /// Its final trace id (after any cross-host rename).
    pub trace_id: TraceId,
    pub duration: Duration,
    /// Error status or an exception.
    pub error: bool,
}

/// What the decision needs of a span in its export form: an error is an error status or an
/// exception event (OpenTelemetry's `exception`, or the tracer's `exception caught`).
pub fn span_facts(data: &opentelemetry_sdk::trace::SpanData) -> SpanFacts {
    let error = matches!(data.status, opentelemetry::trace::Status::Error { .. })
        || data.events.events.iter().any(|e| e.name == "exception" || e.name == "exception caught");
    SpanFacts {
        trace_id: data.span_context.trace_id(),
        duration: data.end_time.duration_since(data.start_time).unwrap_or_default(),
        error,
    }
}

/// Why a trace was kept (for the counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kept {
    Ratio,
    Slow,
    Error,
}

/// A trace the sampler remembers.
enum TraceState<S, L> {
    /// Not kept so far: its spans and logs wait for the decision.
    Held { spans: Vec<S>, logs: Vec<L> },
    /// Kept: late spans and logs pass at once.
    Kept,
}

struct Trace<S, L> {
    state: TraceState<S, L>,
    /// When its last span or log came.
    last_seen: Instant,
}

#[derive(Clone, Copy, Debug, Default)]
struct SamplingStats {
    traces_kept_ratio: u64,
    traces_kept_slow: u64,
    traces_kept_error: u64,
    traces_sampled_out: u64,
    spans_kept: u64,
    spans_sampled_out: u64,
    logs_kept: u64,
    logs_sampled_out: u64,
    /// Traces decided before their wait ended because too much was held.
    early_decisions: u64,
}

/// The tail sampler over spans `S` and logs `L` already routed for export.
pub struct Sampler<S, L> {
    rule: TailSampling,
    traces: HashMap<TraceId, Trace<S, L>>,
    /// One entry per remembered trace: (due, trace id as a number), earliest first.
    deadlines: BinaryHeap<Reverse<(Instant, u128)>>,
    /// Spans and logs held undecided.
    held: usize,
    /// Logs of traces kept since the last [`Sampler::take_logs`].
    ready_logs: Vec<L>,
    stats: SamplingStats,
}

impl<S, L> Sampler<S, L> {
    pub fn new(rule: TailSampling) -> Self {
        Sampler {
            rule,
            traces: HashMap::new(),
            deadlines: BinaryHeap::new(),
            held: 0,
            ready_logs: Vec::new(),
            stats: SamplingStats::default(),
        }
    }

    pub fn rule(&self) -> &TailSampling {
        &self.rule
    }

    /// A new rule (SIGHUP): traces decided from now on follow it; those held stay held, to be
    /// decided by it when they are due.
    pub fn set_rule(&mut self, rule: TailSampling) {
        self.rule = rule;
    }

    /// A span routed for export: to `out` when its trace is kept (after every span of the
    /// trace held so far), else held.
    pub fn offer_span(&mut self, facts: SpanFacts, span: S, now: Instant, out: &mut Vec<S>) {
        let reason = if self.rule.errors && facts.error {
            Some(Kept::Error)
        } else if self.rule.slower_than.is_some_and(|limit| facts.duration > limit) {
            Some(Kept::Slow)
        } else {
            None
        };
        if self.place(facts.trace_id, now, reason, out) {
            self.stats.spans_kept += 1;
            out.push(span);
        } else if let Some(Trace { state: TraceState::Held { spans, .. }, .. }) =
            self.traces.get_mut(&facts.trace_id)
        {
            spans.push(span);
            self.held += 1;
        }
        self.bound();
    }

    /// A device log routed for export: passes when it is outside any trace or its trace is kept,
    /// else waits for its trace's decision.
    pub fn offer_log(&mut self, trace_id: Option<TraceId>, log: L, now: Instant, out: &mut Vec<L>) {
        let Some(trace_id) = trace_id else {
            out.push(log);
            return;
        };
        let mut no_spans = Vec::new();
        if self.place(trace_id, now, None, &mut no_spans) {
            self.stats.logs_kept += 1;
            out.push(log);
        } else if let Some(Trace { state: TraceState::Held { logs, .. }, .. }) =
            self.traces.get_mut(&trace_id)
        {
            logs.push(log);
            self.held += 1;
        }
        debug_assert!(no_spans.is_empty(), "a log never keeps a trace held");
        self.bound();
    }

    /// Logs of traces kept since the last call, in the order their traces were kept.
    pub fn take_logs(&mut self, out: &mut Vec<L>) {
        out.append(&mut self.ready_logs);
    }

    /// Whether an item of `trace_id`, seen `now`, passes: the trace is kept already, or `reason`
    /// or its id keeps it now (what it held goes to `out` and to the ready logs). Otherwise the
    /// trace is held (made if new) and the caller holds the item.
    fn place(&mut self, trace_id: TraceId, now: Instant, reason: Option<Kept>, out: &mut Vec<S>) -> bool {
        let wait = self.rule.decision_wait;
        let trace = match self.traces.entry(trace_id) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let due = now + wait;
                self.deadlines.push(Reverse((due, trace_key(trace_id))));
                let state = TraceState::Held { spans: Vec::new(), logs: Vec::new() };
                // The id decides once, when the trace is first seen.
                let reason = reason.or_else(|| self.rule.ratio_keeps(trace_id).then_some(Kept::Ratio));
                let trace = entry.insert(Trace { state, last_seen: now });
                if let Some(reason) = reason {
                    trace.state = TraceState::Kept;
                    count_kept(&mut self.stats, reason);
                    return true;
                }
                return false;
            }
        };
        trace.last_seen = now;
        let TraceState::Held { spans, logs } = &mut trace.state else {
            return true;
        };
        let Some(reason) = reason else {
            return false;
        };
        self.held -= spans.len() + logs.len();
        self.stats.spans_kept += spans.len() as u64;
        self.stats.logs_kept += logs.len() as u64;
        out.append(spans);
        self.ready_logs.append(logs);
        trace.state = TraceState::Kept;
        count_kept(&mut self.stats, reason);
        true
    }

    /// Decides the traces whose wait is over (every trace when `force`): a trace still held is
    /// dropped with what it held; a kept trace is forgotten (its later spans are a new trace).
    pub fn expire(&mut self, now: Instant, force: bool) {
        while let Some(&Reverse((due, key))) = self.deadlines.peek() {
            if due > now && !force {
                break;
            }
            self.deadlines.pop();
            let trace_id = TraceId::from_bytes(key.to_be_bytes());
            let Some(trace) = self.traces.get_mut(&trace_id) else { continue };
            let quiet_until = trace.last_seen + self.rule.decision_wait;
            if !force && quiet_until > now {
                // A span came since: wait again from it.
                self.deadlines.push(Reverse((quiet_until, key)));
                continue;
            }
            self.decide(trace_id);
        }
    }

    /// Keeps the sampler within its caps: the trace due first is decided early.
    fn bound(&mut self) {
        let cap = self.rule.max_held;
        while self.held > cap || self.traces.len() > cap {
            let Some(Reverse((_, key))) = self.deadlines.pop() else { break };
            let trace_id = TraceId::from_bytes(key.to_be_bytes());
            if self.traces.contains_key(&trace_id) {
                self.stats.early_decisions += 1;
                self.decide(trace_id);
            }
        }
    }

    /// The end of a trace's wait: dropped when still held.
    fn decide(&mut self, trace_id: TraceId) {
        let Some(trace) = self.traces.remove(&trace_id) else { return };
        if let TraceState::Held { spans, logs } = trace.state {
            self.held -= spans.len() + logs.len();
            self.stats.traces_sampled_out += 1;
            self.stats.spans_sampled_out += spans.len() as u64;
            self.stats.logs_sampled_out += logs.len() as u64;
        }
    }

    /// Counters and table sizes (stage `sampling`); none is a loss: dropping is the point, and
    /// the counters say "sampled out" so no log line reads as a loss.
    pub fn report(&self, out: &mut StageStats) {
        const STAGE: &str = "sampling";
        let stats = &self.stats;
        out.push(STAGE, "traces_kept_ratio", stats.traces_kept_ratio);
        out.push(STAGE, "traces_kept_slow", stats.traces_kept_slow);
        out.push(STAGE, "traces_kept_error", stats.traces_kept_error);
        out.push(STAGE, "traces_sampled_out", stats.traces_sampled_out);
        out.push(STAGE, "spans_kept", stats.spans_kept);
        out.push(STAGE, "spans_sampled_out", stats.spans_sampled_out);
        out.push(STAGE, "logs_kept", stats.logs_kept);
        out.push(STAGE, "logs_sampled_out", stats.logs_sampled_out);
        out.push(STAGE, "early_decisions", stats.early_decisions);
        out.size(STAGE, "trace_entries", self.traces.len());
        out.size(STAGE, "held_entries", self.held);
        out.size(STAGE, "ready_log_entries", self.ready_logs.len());
    }
}

fn count_kept(stats: &mut SamplingStats, reason: Kept) {
    match reason {
        Kept::Ratio => stats.traces_kept_ratio += 1,
        Kept::Slow => stats.traces_kept_slow += 1,
        Kept::Error => stats.traces_kept_error += 1,
    }
}

/// The trace id as a heap key.
fn trace_key(trace_id: TraceId) -> u128 {
    u128::from_be_bytes(trace_id.to_bytes())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic, reason = "tests")]
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn rule(text: &str) -> TailSampling {
        TailSampling::parse(text).unwrap()
    }

    /// A trace id whose low 8 bytes are `low` (the part the ratio reads).
    fn id(high: u64, low: u64) -> TraceId {
        TraceId::from_bytes(((u128::from(high) << 64) | u128::from(low)).to_be_bytes())
    }

    /// An id the ratio never keeps (below 1.0).
    fn unlucky(n: u64) -> TraceId {
        id(n, u64::MAX)
    }

    fn span(trace_id: TraceId, ms: u64, error: bool) -> SpanFacts {
        SpanFacts { trace_id, duration: Duration::from_millis(ms), error }
    }

    fn stat(sampler: &Sampler<u32, u32>, name: &str) -> u64 {
        let mut stats = StageStats::default();
        sampler.report(&mut stats);
        stats.get("sampling", name).unwrap()
    }

    #[test]
    fn the_option_reads_its_grammar_and_refuses_the_rest() {
        let parsed = rule("slower-than=5ms, errors ,ratio=0.05,decision-wait=2s,max-held=10");
        assert_eq!(parsed.slower_than, Some(5 * MS));
        assert!(parsed.errors);
        assert_eq!(parsed.ratio, 0.05);
        assert_eq!(parsed.decision_wait, Duration::from_secs(2));
        assert_eq!(parsed.max_held, 10);
        let defaults = rule("ratio=0.1");
        assert_eq!((defaults.slower_than, defaults.errors), (None, false));
        assert_eq!(defaults.decision_wait, DEFAULT_DECISION_WAIT);
        assert_eq!(rule("slower-than=250us").slower_than, Some(Duration::from_micros(250)));
        for bad in
            ["ratio=2", "ratio=x", "slower-than=5", "slower-than", "errors=yes", "fast", "decision-wait=0s"]
        {
            assert!(TailSampling::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn the_ratio_is_opentelemetry_trace_id_ratio_based_on_the_low_8_bytes() {
        // ratio × 2^63 against the low 8 bytes shifted right once; the high bytes do not count.
        let half = 0.5;
        assert!(ratio_keeps(half, id(u64::MAX, (1 << 63) - 2)));
        assert!(!ratio_keeps(half, id(0, 1 << 63)));
        assert!(ratio_keeps(1.0, id(0, u64::MAX)));
        assert!(!ratio_keeps(0.0, id(0, 0)));
        // The same ids, on any host, whatever else it saw: about the ratio of random ids.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut kept = 0;
        for _ in 0..100_000 {
            // xorshift64*: a fixed pseudo-random sequence of ids.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let low = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            kept += usize::from(ratio_keeps(0.05, id(low.rotate_left(7), low)));
        }
        assert!((4_700..=5_300).contains(&kept), "{kept} of 100000 kept at 5%");
    }

    #[test]
    fn a_slow_span_keeps_its_whole_trace_and_its_late_spans() {
        let mut sampler: Sampler<u32, u32> = Sampler::new(rule("slower-than=5ms,errors"));
        let (t0, mut out) = (Instant::now(), Vec::new());
        let trace = unlucky(1);
        sampler.offer_span(span(trace, 1, false), 1, t0, &mut out);
        sampler.offer_log(Some(trace.to_owned()), 100, t0, &mut Vec::new());
        assert!(out.is_empty(), "held until something keeps the trace");
        // Exactly the threshold is not slower than it.
        sampler.offer_span(span(trace, 5, false), 2, t0 + MS, &mut out);
        assert!(out.is_empty());
        sampler.offer_span(span(trace, 6, false), 3, t0 + 2 * MS, &mut out);
        assert_eq!(out, [1, 2, 3], "the held spans first, then the slow one");
        sampler.offer_span(span(trace, 1, false), 4, t0 + 3 * MS, &mut out);
        assert_eq!(out, [1, 2, 3, 4], "a late span of a kept trace passes");
        let mut logs = Vec::new();
        sampler.take_logs(&mut logs);
        assert_eq!(logs, [100], "its held log goes with it");
        assert_eq!(stat(&sampler, "traces_kept_slow"), 1);
        assert_eq!(stat(&sampler, "spans_kept"), 4);
        assert_eq!(stat(&sampler, "held_entries"), 0);
    }

    #[test]
    fn an_error_keeps_its_trace_only_when_errors_are_asked_for() {
        let (t0, mut out) = (Instant::now(), Vec::new());
        let mut with_errors: Sampler<u32, u32> = Sampler::new(rule("errors"));
        with_errors.offer_span(span(unlucky(1), 1, false), 1, t0, &mut out);
        with_errors.offer_span(span(unlucky(1), 1, true), 2, t0, &mut out);
        assert_eq!(out, [1, 2]);
        assert_eq!(stat(&with_errors, "traces_kept_error"), 1);
        let mut without: Sampler<u32, u32> = Sampler::new(rule("slower-than=5ms"));
        out.clear();
        without.offer_span(span(unlucky(2), 1, true), 1, t0, &mut out);
        without.expire(t0 + DEFAULT_DECISION_WAIT, false);
        assert!(out.is_empty());
        assert_eq!(stat(&without, "traces_sampled_out"), 1);
    }

    #[test]
    fn a_trace_not_kept_is_dropped_after_its_wait_and_a_late_slow_span_within_it_keeps_it() {
        let mut sampler: Sampler<u32, u32> = Sampler::new(rule("slower-than=5ms,decision-wait=100ms"));
        let (t0, mut out) = (Instant::now(), Vec::new());
        let (late, quiet) = (unlucky(1), unlucky(2));
        sampler.offer_span(span(late, 1, false), 1, t0, &mut out);
        sampler.offer_span(span(quiet, 1, false), 2, t0, &mut out);
        sampler.offer_log(Some(quiet), 200, t0, &mut Vec::new());
        // A span of `late` 90 ms on restarts its wait; `quiet` is due at 100 ms.
        sampler.offer_span(span(late, 1, false), 3, t0 + 90 * MS, &mut out);
        sampler.expire(t0 + 99 * MS, false);
        assert_eq!(stat(&sampler, "traces_sampled_out"), 0, "nothing is due before its wait");
        sampler.expire(t0 + 100 * MS, false);
        assert_eq!(stat(&sampler, "traces_sampled_out"), 1, "quiet is dropped");
        assert_eq!(stat(&sampler, "logs_sampled_out"), 1, "with its log");
        sampler.offer_span(span(late, 30, false), 4, t0 + 180 * MS, &mut out);
        assert_eq!(out, [1, 3, 4], "the slow span came within the wait after the last one");
        sampler.expire(t0 + 300 * MS, false);
        assert_eq!(stat(&sampler, "trace_entries"), 0, "every decision forgotten when traffic stops");
        assert_eq!(stat(&sampler, "spans_sampled_out"), 1);
        let mut logs = Vec::new();
        sampler.take_logs(&mut logs);
        assert!(logs.is_empty());
    }

    #[test]
    fn the_ratio_keeps_a_trace_at_its_first_span_and_logs_outside_traces_pass() {
        let mut sampler: Sampler<u32, u32> = Sampler::new(rule("ratio=0.5"));
        let (t0, mut out, mut logs) = (Instant::now(), Vec::new(), Vec::new());
        let lucky = id(7, 0);
        sampler.offer_log(Some(lucky), 100, t0, &mut logs);
        sampler.offer_span(span(lucky, 1, false), 1, t0, &mut out);
        sampler.offer_log(None, 101, t0, &mut logs);
        assert_eq!((out.as_slice(), logs.as_slice()), (&[1][..], &[100, 101][..]));
        assert_eq!(stat(&sampler, "traces_kept_ratio"), 1);
        assert_eq!(stat(&sampler, "held_entries"), 0);
    }

    #[test]
    fn overflow_decides_the_trace_due_first_early_and_force_decides_all() {
        let mut sampler: Sampler<u32, u32> = Sampler::new(rule("slower-than=5ms,max-held=3"));
        let (t0, mut out) = (Instant::now(), Vec::new());
        for n in 0..3 {
            sampler.offer_span(span(unlucky(n), 1, false), n as u32, t0 + n as u32 * MS, &mut out);
        }
        assert_eq!(stat(&sampler, "early_decisions"), 0);
        sampler.offer_span(span(unlucky(3), 1, false), 3, t0 + 3 * MS, &mut out);
        assert_eq!(stat(&sampler, "early_decisions"), 1);
        assert_eq!(stat(&sampler, "held_entries"), 3);
        // The oldest went (dropped); the second is still held whole.
        sampler.offer_span(span(unlucky(1), 9, false), 4, t0 + 4 * MS, &mut out);
        assert_eq!(out, [1, 4]);
        // A slow span of the dropped one now is a new trace, kept alone.
        sampler.offer_span(span(unlucky(0), 9, false), 5, t0 + 5 * MS, &mut out);
        assert_eq!(out, [1, 4, 5]);
        sampler.expire(t0, true);
        assert_eq!(stat(&sampler, "trace_entries"), 0);
        assert_eq!(stat(&sampler, "held_entries"), 0);
        assert_eq!(stat(&sampler, "traces_sampled_out"), 3, "the early one, then 2 and 3 at the end");
        assert_eq!(stat(&sampler, "spans_sampled_out"), 3);
    }
}
