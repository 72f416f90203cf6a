//! Traces as indented trees, for humans and for test failure messages.
//!
//! One line per span, in the form of the reference summaries of cppTango's own telemetry, with
//! the duration and an ERROR status added at the end:
//!
//! ```text
//!   - [CLIENT] Tango::Connection::command_inout  trace=b2a1fcf8 span=5d5c1211 parent=- svc=tango.telemetry.default client:17915 scope=tango.cpp {"tango.operation.argument": "Increment", …} dur=503.861us
//!     - [SERVER] Tango::Device_4Impl::command_inout_4  trace=b2a1fcf8 span=9621b4e8 parent=5d5c1211 svc=Demo/test/demo/1 server:17811 scope=tango.cpp {…} dur=238.205us
//! ```
//!
//! Roots come in order of start time, children under their parent in order of start time. A
//! span whose parent is not among the spans given is shown as a root marked
//! `(parent not seen)`. Among two or more siblings, the one that took longest (strictly) ends
//! with `<< slowest, N% of its parent`: where a request spent its time shows at a glance.
//! Source-location attributes (`code.*`) are left out, as in the summaries.
//!
//! With log records ([`render_trees_with_logs`]), each record logged inside a span is shown
//! under it, among its children in order of time, as `> time SEVERITY message [file:line]`:
//!
//! ```text
//!   - [SERVER] Tango::Device_4Impl::command_inout_4  trace=1c7ec437 span=45d2abba parent=- svc=LogDev/test/logdev/1 server:15342 scope=tango.cpp {…} dur=366.293us
//!     > 08:03:46.536048Z INFO hello 0 [pydev2.py:20]
//!     > 08:03:46.536117Z FATAL fatal hello 0 [pydev2.py:23]
//! ```
//!
//! Records of a span that is not among the spans given follow the trees, marked
//! `(span not seen)`. [`render_logs`] lists records on their own, one line each.

use std::{collections::HashMap, fmt::Write as _};

use crate::{
    console::one_line,
    json::{LogJson, SpanJson, utc_timestamp, value_text},
};

/// Renders every trace among `spans` as an indented tree, one line per span.
pub fn render_trees(spans: &[SpanJson]) -> String {
    render_trees_with_logs(spans, &[])
}

/// Renders every trace among `spans` as an indented tree, one line per span, with the log
/// records of `logs` that were logged inside a span under it. Records of no span are left
/// out (see [`render_logs`]).
#[expect(clippy::indexing_slicing, reason = "every index is below `spans.len()` by construction")]
pub fn render_trees_with_logs(spans: &[SpanJson], logs: &[LogJson]) -> String {
    let mut by_id: HashMap<(&str, &str), usize> = HashMap::with_capacity(spans.len());
    for (i, span) in spans.iter().enumerate() {
        // A span reported twice is shown once.
        by_id.entry((span.trace_id.as_str(), span.span_id.as_str())).or_insert(i);
    }
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut roots: Vec<(usize, bool)> = Vec::new();
    for (i, span) in spans.iter().enumerate() {
        if by_id.get(&(span.trace_id.as_str(), span.span_id.as_str())) != Some(&i) {
            continue;
        }
        if span.parent_span_id.is_empty() {
            roots.push((i, false));
            continue;
        }
        match by_id.get(&(span.trace_id.as_str(), span.parent_span_id.as_str())) {
            Some(&parent) if parent != i => children.entry(parent).or_default().push(i),
            _ => roots.push((i, true)),
        }
    }
    let by_start = |&a: &usize, &b: &usize| {
        (spans[a].start_ns, &spans[a].span_id).cmp(&(spans[b].start_ns, &spans[b].span_id))
    };
    roots.sort_by(|a, b| by_start(&a.0, &b.0));
    for list in children.values_mut() {
        list.sort_by(by_start);
    }
    // Each record under its span, in order of time; those of spans not given, apart.
    let mut logs_of: HashMap<usize, Vec<&LogJson>> = HashMap::new();
    let mut unseen: Vec<&LogJson> = Vec::new();
    for log in logs.iter().filter(|l| !l.span_id.is_empty()) {
        match by_id.get(&(log.trace_id.as_str(), log.span_id.as_str())) {
            Some(&span) => logs_of.entry(span).or_default().push(log),
            None => unseen.push(log),
        }
    }
    for list in logs_of.values_mut() {
        list.sort_by_key(|l| l.time_ns);
    }
    unseen.sort_by(|a, b| (&a.trace_id, a.time_ns).cmp(&(&b.trace_id, b.time_ns)));
    let tree = Tree { spans, children: &children, logs_of: &logs_of };

    let mut out = String::new();
    let mut shown = vec![false; spans.len()];
    for &(root, orphan) in &roots {
        tree.render(root, 0, orphan, &mut shown, &mut out);
    }
    // Spans in a parent cycle are reachable from no root: still show them.
    let mut rest: Vec<usize> = (0..spans.len())
        .filter(|&i| {
            !shown[i] && by_id.get(&(spans[i].trace_id.as_str(), spans[i].span_id.as_str())) == Some(&i)
        })
        .collect();
    rest.sort_by(by_start);
    for i in rest {
        if !shown[i] {
            tree.render(i, 0, true, &mut shown, &mut out);
        }
    }
    for log in unseen {
        log_line(log, 0, " (span not seen)", &mut out);
    }
    out
}

/// Lists log records one per line, in order of time: UTC time, severity, device, trace and
/// span (`-` outside any span), the message and its source location.
///
/// ```text
/// 2026-11-21T08:03:42.411517Z WARN svc=LogDev/test/logdev/1 trace=- span=- background thread log tid=15370 [pydev2.py:15]
/// ```
pub fn render_logs(logs: &[LogJson]) -> String {
    let mut sorted: Vec<&LogJson> = logs.iter().collect();
    sorted.sort_by_key(|l| l.time_ns);
    let mut out = String::new();
    let short = |id: &str| if id.is_empty() { "-".to_owned() } else { id.get(..8).unwrap_or(id).to_owned() };
    for log in sorted {
        let _ = write!(
            out,
            "{} {} svc={} trace={} span={} {}",
            utc_timestamp(log.time_ns),
            log.severity_text,
            log.service(),
            short(&log.trace_id),
            short(&log.span_id),
            one_line(&log.body_text()),
        );
        if let Some(at) = log.code_location() {
            let _ = write!(out, " [{at}]");
        }
        out.push('\n');
    }
    out
}

/// What one rendering walks: the spans, each span's children and each span's log records.
struct Tree<'a> {
    spans: &'a [SpanJson],
    children: &'a HashMap<usize, Vec<usize>>,
    logs_of: &'a HashMap<usize, Vec<&'a LogJson>>,
}

/// One line to come.
enum Item<'a> {
    Span { index: usize, depth: usize, orphan: bool, share: Option<u32> },
    Log { log: &'a LogJson, depth: usize },
}

impl Tree<'_> {
    #[expect(clippy::indexing_slicing, reason = "`children` holds indices of `spans`, `shown` is as long")]
    fn render(&self, start: usize, start_depth: usize, orphan: bool, shown: &mut [bool], out: &mut String) {
        // Iterative, so a pathologically deep trace cannot overflow the stack.
        let mut stack = vec![Item::Span { index: start, depth: start_depth, orphan, share: None }];
        while let Some(item) = stack.pop() {
            let (i, depth, orphan, share) = match item {
                Item::Log { log, depth } => {
                    log_line(log, depth, "", out);
                    continue;
                }
                Item::Span { index, depth, orphan, share } => (index, depth, orphan, share),
            };
            if std::mem::replace(&mut shown[i], true) {
                continue;
            }
            line(&self.spans[i], depth, orphan, share, out);
            // Children and records in order of time (a record first on a tie: it was logged
            // before the call it precedes could start).
            let mut next: Vec<(u64, Item<'_>)> = Vec::new();
            let siblings = self.children.get(&i).map(Vec::as_slice).unwrap_or_default();
            let slowest = slowest(self.spans, siblings);
            let parent_us = self.spans[i].duration_us;
            for &child in siblings {
                let share =
                    (Some(child) == slowest).then(|| share_of(self.spans[child].duration_us, parent_us));
                next.push((
                    self.spans[child].start_ns,
                    Item::Span { index: child, depth: depth + 1, orphan: false, share },
                ));
            }
            for &log in self.logs_of.get(&i).into_iter().flatten() {
                next.push((log.time_ns, Item::Log { log, depth: depth + 1 }));
            }
            // Stable: children keep their order among equal times.
            next.sort_by_key(|(t, item)| (*t, matches!(item, Item::Span { .. })));
            stack.extend(next.into_iter().rev().map(|(_, item)| item));
        }
    }
}

fn log_line(log: &LogJson, depth: usize, note: &str, out: &mut String) {
    let time = utc_timestamp(log.time_ns);
    let _ = write!(
        out,
        "{:indent$}> {} {} {}",
        "",
        time.get(11..).unwrap_or(&time),
        log.severity_text,
        one_line(&log.body_text()),
        indent = 2 * (depth + 1),
    );
    if let Some(at) = log.code_location() {
        let _ = write!(out, " [{at}]");
    }
    if !note.is_empty() {
        let short = |id: &str| id.get(..8).unwrap_or(id).to_owned();
        let _ = write!(out, "{note} trace={} span={}", short(&log.trace_id), short(&log.span_id));
    }
    out.push('\n');
}

/// The sibling that took strictly longest of two or more, if any.
#[expect(clippy::indexing_slicing, reason = "`siblings` holds indices of `spans`")]
fn slowest(spans: &[SpanJson], siblings: &[usize]) -> Option<usize> {
    if siblings.len() < 2 {
        return None;
    }
    let mut by_duration: Vec<usize> = siblings.to_vec();
    by_duration.sort_by(|&a, &b| spans[b].duration_us.total_cmp(&spans[a].duration_us));
    match by_duration.as_slice() {
        [first, second, ..] if spans[*first].duration_us > spans[*second].duration_us => Some(*first),
        _ => None,
    }
}

/// A child's duration as a whole percentage of its parent's (0 when the parent took no time).
fn share_of(child_us: f64, parent_us: f64) -> u32 {
    if parent_us > 0.0 { (100.0 * child_us / parent_us).round().clamp(0.0, 999.0) as u32 } else { 0 }
}

fn line(span: &SpanJson, depth: usize, orphan: bool, slowest_share: Option<u32>, out: &mut String) {
    let short = |id: &str| id.get(..8).unwrap_or(id).to_owned();
    let parent = if span.parent_span_id.is_empty() { "-".to_owned() } else { short(&span.parent_span_id) };
    let process = |key| span.resource.get(key).map(value_text).unwrap_or_default();
    let _ = write!(
        out,
        "{:indent$}- [{}] {}  trace={} span={} parent={}{} svc={} {}:{} scope={} {} dur={}us",
        "",
        span.kind,
        span.name,
        short(&span.trace_id),
        short(&span.span_id),
        parent,
        if orphan { " (parent not seen)" } else { "" },
        span.service(),
        process("tango.process.kind"),
        process("tango.process.id"),
        span.scope.name,
        span.attributes.to_compact_json(|k| k.starts_with("code.")),
        span.duration_us,
        indent = 2 * (depth + 1),
    );
    if span.is_error() {
        let _ = write!(out, " status=ERROR({:?})", span.status.message);
    }
    if let Some(share) = slowest_share {
        let _ = write!(out, "  << slowest, {share}% of its parent");
    }
    out.push('\n');
}

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
    use crate::json::{Attributes, LogJson, ScopeJson, StatusJson};

    fn span(trace: &str, id: &str, parent: &str, start: u64, name: &str) -> SpanJson {
        SpanJson {
            transport: None,
            resource: [("service.name", "Demo".into()), ("service.instance.id", "test/demo/1".into())]
                .into_iter()
                .collect(),
            scope: ScopeJson { name: "tango.cpp".into(), version: "10.3.3".into() },
            name: name.into(),
            kind: "SERVER".into(),
            trace_id: trace.into(),
            span_id: id.into(),
            parent_span_id: parent.into(),
            trace_state: String::new(),
            start_ns: start,
            end_ns: start + 1500,
            duration_us: 1.5,
            attributes: Attributes::default(),
            events: vec![],
            links: vec![],
            status: StatusJson::default(),
        }
    }

    #[test]
    fn nests_orders_and_marks_orphans() {
        let t = "de19b7e0aaaaaaaaaaaaaaaaaaaaaaaa";
        let mut error = span(t, "6e5316640000000a", "a8613fc70000000a", 30, "read");
        error.status = StatusJson { code: 2, message: "boom".into() };
        let spans = vec![
            error,
            span(t, "a8613fc70000000a", "dc8c9b4c0000000a", 10, "server"),
            span(t, "990bfa420000000a", "a8613fc70000000a", 20, "connect"),
            span(t, "dc8c9b4c0000000a", "", 5, "client"),
            span("11111111bbbbbbbbbbbbbbbbbbbbbbbb", "d51762130000000a", "ffffffff0000000a", 1, "lost"),
        ];
        let text = render_trees(&spans);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].starts_with("  - [SERVER] lost  trace=11111111 span=d5176213 parent=ffffffff (parent not seen) svc=Demo/test/demo/1 :"), "{text}");
        assert!(
            lines[1].starts_with("  - [SERVER] client  trace=de19b7e0 span=dc8c9b4c parent=- "),
            "{text}"
        );
        assert!(lines[2].starts_with("    - [SERVER] server "), "{text}");
        assert!(lines[3].starts_with("      - [SERVER] connect "), "{text}");
        assert!(lines[4].starts_with("      - [SERVER] read "), "{text}");
        assert!(lines[4].ends_with("scope=tango.cpp {} dur=1.5us status=ERROR(\"boom\")"), "{text}");
    }

    fn log(trace: &str, span: &str, time_ns: u64, severity: &str, body: &str) -> LogJson {
        LogJson {
            transport: None,
            resource: [("service.name", "Demo".into()), ("service.instance.id", "test/demo/1".into())]
                .into_iter()
                .collect(),
            scope: ScopeJson { name: "cppTango".into(), version: "10.3.3".into() },
            time_ns,
            observed_ns: time_ns + 1,
            severity_number: 9,
            severity_text: severity.into(),
            body: body.into(),
            attributes: [("code.filepath", "dev.py".into()), ("code.lineno", 7.into())].into_iter().collect(),
            trace_id: trace.into(),
            span_id: span.into(),
            flags: if span.is_empty() { 0 } else { 3 },
        }
    }

    #[test]
    fn logs_go_under_their_span_among_its_children_in_time() {
        let t = "de19b7e0aaaaaaaaaaaaaaaaaaaaaaaa";
        let spans = vec![
            span(t, "a8613fc70000000a", "", 10, "server"),
            span(t, "990bfa420000000a", "a8613fc70000000a", 20, "nested"),
        ];
        let logs = vec![
            log(t, "a8613fc70000000a", 25, "INFO", "after the nested call started"),
            log(t, "a8613fc70000000a", 15, "DEBUG", "before"),
            log(t, "990bfa420000000a", 21, "WARN", "inside the nested call\nsecond line"),
            log("", "", 5, "INFO", "outside any request"),
            log(t, "ffffffff0000000a", 30, "ERROR", "of a span not stored"),
        ];
        let text = render_trees_with_logs(&spans, &logs);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert!(lines[0].starts_with("  - [SERVER] server "), "{text}");
        assert_eq!(lines[1], "    > 00:00:00.000000Z DEBUG before [dev.py:7]");
        assert!(lines[2].starts_with("    - [SERVER] nested "), "{text}");
        assert_eq!(lines[3], "      > 00:00:00.000000Z WARN inside the nested call\\nsecond line [dev.py:7]");
        assert_eq!(lines[4], "    > 00:00:00.000000Z INFO after the nested call started [dev.py:7]");
        assert_eq!(
            lines[5],
            "  > 00:00:00.000000Z ERROR of a span not stored [dev.py:7] (span not seen) trace=de19b7e0 \
             span=ffffffff"
        );
        // Without logs, the same trees as ever.
        assert_eq!(render_trees_with_logs(&spans, &[]), render_trees(&spans));

        let listed = render_logs(&logs);
        let lines: Vec<&str> = listed.lines().collect();
        assert_eq!(lines.len(), 5, "{listed}");
        assert_eq!(
            lines[0],
            "1970-01-01T00:00:00.000000Z INFO svc=Demo/test/demo/1 trace=- span=- outside any request [dev.py:7]"
        );
        assert_eq!(
            lines[1],
            "1970-01-01T00:00:00.000000Z DEBUG svc=Demo/test/demo/1 trace=de19b7e0 span=a8613fc7 before [dev.py:7]"
        );
    }

    #[test]
    fn the_slowest_of_several_children_is_marked_with_its_share() {
        let t = "00000000000000000000000000000002";
        let mut parent = span(t, "000000000000000a", "", 0, "read_attributes_5");
        parent.duration_us = 30_000.0;
        let mut children = Vec::new();
        for (i, (name, us)) in
            [("hook", 2_000.0), ("fast", 1_000.0), ("slow", 20_000.0)].into_iter().enumerate()
        {
            let mut child = span(t, &format!("00000000000000b{i}"), "000000000000000a", 10 + i as u64, name);
            child.duration_us = us;
            children.push(child);
        }
        let mut spans = vec![parent];
        spans.extend(children);
        let text = render_trees(&spans);
        let marked: Vec<&str> = text.lines().filter(|l| l.contains("<< slowest")).collect();
        assert_eq!(marked.len(), 1, "{text}");
        assert!(
            marked[0].contains("] slow ") && marked[0].ends_with("<< slowest, 67% of its parent"),
            "{text}"
        );
        // An only child, or a tie, is not marked.
        spans.truncate(2);
        assert!(!render_trees(&spans).contains("slowest"));
    }

    #[test]
    fn survives_cycles_and_duplicates() {
        let t = "00000000000000000000000000000001";
        let spans = vec![
            span(t, "000000000000000a", "000000000000000b", 1, "a"),
            span(t, "000000000000000b", "000000000000000a", 2, "b"),
            span(t, "000000000000000b", "000000000000000a", 2, "b again"),
        ];
        let text = render_trees(&spans);
        assert_eq!(text.lines().count(), 2, "{text}");
    }
}
