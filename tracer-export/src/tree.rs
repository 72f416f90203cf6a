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
//! with `<< slowest, N% of its parent`: where a request spent its time shows at a glance. Source-location attributes (`code.*`) are left out, as in the summaries.

use std::{collections::HashMap, fmt::Write as _};

use crate::json::{SpanJson, value_text};

/// Renders every trace among `spans` as an indented tree, one line per span.
#[expect(clippy::indexing_slicing, reason = "every index is below `spans.len()` by construction")]
pub fn render_trees(spans: &[SpanJson]) -> String {
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

    let mut out = String::new();
    let mut shown = vec![false; spans.len()];
    for &(root, orphan) in &roots {
        render(spans, &children, root, 0, orphan, &mut shown, &mut out);
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
            render(spans, &children, i, 0, true, &mut shown, &mut out);
        }
    }
    out
}

#[expect(clippy::indexing_slicing, reason = "`children` holds indices of `spans`, `shown` is as long")]
fn render(
    spans: &[SpanJson],
    children: &HashMap<usize, Vec<usize>>,
    start: usize,
    start_depth: usize,
    orphan: bool,
    shown: &mut [bool],
    out: &mut String,
) {
    // Iterative, so a pathologically deep trace cannot overflow the stack.
    let mut stack = vec![(start, start_depth, orphan, None)];
    while let Some((i, depth, orphan, share)) = stack.pop() {
        if std::mem::replace(&mut shown[i], true) {
            continue;
        }
        line(&spans[i], depth, orphan, share, out);
        if let Some(list) = children.get(&i) {
            let slowest = slowest(spans, list);
            let parent_us = spans[i].duration_us;
            stack.extend(list.iter().rev().map(|&c| {
                let share = (Some(c) == slowest).then(|| share_of(spans[c].duration_us, parent_us));
                (c, depth + 1, false, share)
            }));
        }
    }
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
    use crate::json::{Attributes, ScopeJson, StatusJson};

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
