//! The daemon's spans compared with what cppTango 10.3.3 exports natively for the same calls
//! (`tests/reference/`, see its README).
//!
//! Spans are compared as forests of [`Shape`]s: per span its kind, name, scope, status, event
//! names, resource and attributes, and its children (which span is whose parent). Two forests are
//! equal when every tree matches exactly: one span more, one less, a different parent or one key
//! more or less fails. Values are compared too, except where they differ per run or per machine:
//!
//! - [`PER_RUN`] keys are compared by presence only: ids of processes and threads, client
//!   locations (ports), the `TANGO_HOST` of the machine, event endpoints and counters;
//! - [`SDK_DESCRIPTION`] keys (`telemetry.sdk.*`) are present on both sides but describe different
//!   SDKs (opentelemetry-cpp natively, opentelemetry-rust here);
//! - ports inside `tango://host:port/…` values (`tango.operation.argument` of a `DeviceProxy`) are
//!   masked.
//!
//! Keys allowed on one side only:
//!
//! - [`NATIVE_ONLY_ATTRIBUTES`]: `code.filepath` and `code.lineno` name the C++ source line that
//!   made the span; nothing outside the process can know it (README, "Limitations").
//! - [`OURS_ONLY_RESOURCE`]: `telemetry.distro.name`/`.version` tell our spans from native ones,
//!   which matters when both run at once (a natively traced client calling a traced server).
//!
//! Span ids, trace ids, times and durations are never compared; the structure they encode is.
//! What the daemon adds beyond native telemetry (the `events` topic) is added to the expected
//! forest explicitly by the test, with [`Shape::add_child_where`] and
//! [`Shape::add_attributes_where`], never tolerated silently.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
    path::{Path, PathBuf},
};

use serde_json::Value;
use tracer_export::json::{Attributes, SpanJson};

/// cppTango 10.3.3's own spans of the reference client's steps.
pub const NATIVE: &str = "cpptango-10.3.3-native";
/// cppTango 10.3.3's spans of a `DeviceProxy` built through a database.
pub const NATIVE_DATABASE: &str = "cpptango-10.3.3-native-database";

/// Attribute keys only cppTango itself can set.
pub const NATIVE_ONLY_ATTRIBUTES: &[&str] = &["code.filepath", "code.lineno"];
/// Resource keys only the daemon sets.
pub const OURS_ONLY_RESOURCE: &[&str] = &["telemetry.distro.name", "telemetry.distro.version"];
/// Resource keys describing the OpenTelemetry SDK that exported the span.
pub const SDK_DESCRIPTION: &[&str] =
    &["telemetry.sdk.name", "telemetry.sdk.language", "telemetry.sdk.version"];
/// Keys whose values differ from run to run or machine to machine.
pub const PER_RUN: &[&str] = &[
    "tango.process.id",
    "tango.client_ident.pid",
    "tango.client_ident.location",
    "thread.id",
    "tango.host",
    "tango.event.endpoint",
    "tango.event.heartbeat_endpoint",
    "tango.event.counter",
    "tango.event.delay_us",
    "messaging.destination.name",
];

/// Stands for a value that is not compared.
pub const ANY: &str = "*";

fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("reference")
}

/// The spans of `tests/reference/<set>/<file>`.
///
/// # Panics
/// When the file is missing or not a JSON array of spans.
pub fn load(set: &str, file: &str) -> Vec<SpanJson> {
    let path = reference_dir().join(set).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One span as far as it is compared, with its children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    pub kind: String,
    pub name: String,
    /// `name version` of the instrumentation scope.
    pub scope: String,
    /// 0 unset, 1 ok, 2 error.
    pub status: i32,
    /// Names of the span's events, sorted.
    pub events: Vec<String>,
    /// Resource keys and their compared values ([`ANY`] when not compared).
    pub resource: BTreeMap<String, String>,
    /// Attribute keys and their compared values ([`ANY`] when not compared).
    pub attributes: BTreeMap<String, String>,
    pub children: Vec<Shape>,
}

fn compared_value(key: &str, value: &Value) -> String {
    if PER_RUN.contains(&key) || SDK_DESCRIPTION.contains(&key) {
        return ANY.to_owned();
    }
    match value {
        Value::String(text) => mask_tango_port(text),
        other => other.to_string(),
    }
}

/// `tango://127.0.0.1:47450/test/demo/1#dbase=no` → `tango://127.0.0.1:*/test/demo/1#dbase=no`.
fn mask_tango_port(text: &str) -> String {
    let Some(rest) = text.strip_prefix("tango://") else { return text.to_owned() };
    let Some((authority, path)) = rest.split_once('/') else { return text.to_owned() };
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => {
            format!("tango://{host}:{ANY}/{path}")
        }
        _ => text.to_owned(),
    }
}

fn compared(attributes: &Attributes, leave_out: &[&str]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .filter(|(key, _)| !leave_out.contains(key))
        .map(|(key, value)| (key.to_owned(), compared_value(key, value)))
        .collect()
}

impl Shape {
    /// The shape of one span, without children.
    pub fn of(span: &SpanJson) -> Shape {
        let mut events: Vec<String> = span.events.iter().map(|e| e.name.clone()).collect();
        events.sort();
        Shape {
            kind: span.kind.clone(),
            name: span.name.clone(),
            scope: format!("{} {}", span.scope.name, span.scope.version),
            status: span.status.code,
            events,
            resource: compared(&span.resource, OURS_ONLY_RESOURCE),
            attributes: compared(&span.attributes, NATIVE_ONLY_ATTRIBUTES),
            children: Vec::new(),
        }
    }

    /// A span of `kind` and `name` with the scope and resource of `like`, and these attributes
    /// (values [`ANY`] are not compared).
    pub fn like(like: &Shape, kind: &str, name: &str, attributes: &[(&str, &str)]) -> Shape {
        Shape {
            kind: kind.to_owned(),
            name: name.to_owned(),
            scope: like.scope.clone(),
            status: 0,
            events: Vec::new(),
            resource: like.resource.clone(),
            attributes: attributes.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            children: Vec::new(),
        }
    }

    /// Sets resource values (e.g. another device of the same process).
    pub fn with_resource(mut self, values: &[(&str, &str)]) -> Shape {
        for (key, value) in values {
            self.resource.insert((*key).to_owned(), (*value).to_owned());
        }
        self
    }

    /// Adds `child` (made from the matching span) under every span of the tree matching `matches`;
    /// returns how many spans matched.
    pub fn add_child_where(
        &mut self,
        matches: &impl Fn(&Shape) -> bool,
        child: &impl Fn(&Shape) -> Shape,
    ) -> usize {
        let mut count = self.children.iter_mut().map(|c| c.add_child_where(matches, child)).sum();
        if matches(self) {
            let made = child(self);
            self.children.push(made);
            count += 1;
        }
        count
    }

    /// Adds attributes to every span of the tree matching `matches`; returns how many matched.
    pub fn add_attributes_where(
        &mut self,
        matches: &impl Fn(&Shape) -> bool,
        attributes: &[(&str, &str)],
    ) -> usize {
        let mut count = self.children.iter_mut().map(|c| c.add_attributes_where(matches, attributes)).sum();
        if matches(self) {
            for (key, value) in attributes {
                self.attributes.insert((*key).to_owned(), (*value).to_owned());
            }
            count += 1;
        }
        count
    }

    /// Whether this span has attribute `key` = `value`.
    pub fn has(&self, key: &str, value: &str) -> bool {
        self.attributes.get(key).is_some_and(|v| v == value)
    }

    /// How many spans the tree holds.
    pub fn len(&self) -> usize {
        1 + self.children.iter().map(Shape::len).sum::<usize>()
    }

    /// Always false: a tree holds at least its root.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn line(&self) -> String {
        let pairs = |map: &BTreeMap<String, String>| {
            map.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
        };
        let mut line = format!("[{}] {}  scope={} status={}", self.kind, self.name, self.scope, self.status);
        if !self.events.is_empty() {
            let _ = write!(line, " events={:?}", self.events);
        }
        let _ = write!(
            line,
            "\n      resource {{{}}}\n      attributes {{{}}}",
            pairs(&self.resource),
            pairs(&self.attributes)
        );
        line
    }

    /// The tree as indented text, children in a canonical order.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(0, &mut out);
        out
    }

    fn render_into(&self, depth: usize, out: &mut String) {
        let indent = "    ".repeat(depth);
        for (n, line) in self.line().lines().enumerate() {
            let _ = writeln!(out, "{indent}{}{line}", if n == 0 { "- " } else { "  " });
        }
        let mut children: Vec<String> = self
            .children
            .iter()
            .map(|c| {
                let mut text = String::new();
                c.render_into(depth + 1, &mut text);
                text
            })
            .collect();
        children.sort();
        out.extend(children);
    }
}

/// Builds the trees of `spans`.
///
/// # Errors
/// A span id seen twice, a parent that is not among `spans`, a child in another trace than its
/// parent: each named.
pub fn forest(spans: &[SpanJson]) -> Result<Vec<Shape>, String> {
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    for span in spans {
        if !seen.insert(span.span_id.as_str()) {
            problems.push(format!("span id {} twice ({} {})", span.span_id, span.kind, span.name));
        }
    }
    let by_id: HashMap<&str, &SpanJson> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut children: HashMap<&str, Vec<&SpanJson>> = HashMap::new();
    let mut roots = Vec::new();
    for span in spans {
        if span.parent_span_id.is_empty() {
            roots.push(span);
            continue;
        }
        match by_id.get(span.parent_span_id.as_str()) {
            Some(parent) => {
                if parent.trace_id != span.trace_id {
                    problems.push(format!("{} {} is in another trace than its parent", span.kind, span.name));
                }
                children.entry(parent.span_id.as_str()).or_default().push(span);
            }
            None => {
                problems.push(format!("{} {}: parent {} missing", span.kind, span.name, span.parent_span_id));
                roots.push(span);
            }
        }
    }
    fn build(span: &SpanJson, children: &HashMap<&str, Vec<&SpanJson>>, depth: usize) -> Shape {
        let mut shape = Shape::of(span);
        if let Some(kids) = children.get(span.span_id.as_str()).filter(|_| depth < 64) {
            shape.children = kids.iter().map(|k| build(k, children, depth + 1)).collect();
        }
        shape
    }
    let trees = roots.iter().map(|r| build(r, &children, 0)).collect();
    if problems.is_empty() { Ok(trees) } else { Err(problems.join("\n")) }
}

/// The trees of `spans` whose root starts in `[start_ns, end_ns)`, with the spans they hold.
pub fn trees_in_window(spans: &[SpanJson], start_ns: u64, end_ns: u64) -> Vec<SpanJson> {
    let by_id: HashMap<&str, &SpanJson> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let root_of = |span: &SpanJson| {
        let mut current = span;
        for _ in 0..64 {
            match by_id.get(current.parent_span_id.as_str()) {
                Some(parent) => current = parent,
                None => break,
            }
        }
        current.start_ns
    };
    spans.iter().filter(|s| (start_ns..end_ns).contains(&root_of(s))).cloned().collect()
}

/// Every tree drawn, in canonical order.
pub fn render_forest(trees: &[Shape]) -> String {
    let mut rendered: Vec<String> = trees.iter().map(Shape::render).collect();
    rendered.sort();
    rendered.concat()
}

/// Compares two forests.
///
/// # Errors
/// Both drawn, with the trees found on one side only.
pub fn compare(expected: &[Shape], actual: &[Shape]) -> Result<(), String> {
    let mut want: Vec<String> = expected.iter().map(Shape::render).collect();
    let mut got: Vec<String> = actual.iter().map(Shape::render).collect();
    want.sort();
    got.sort();
    if want == got {
        return Ok(());
    }
    let mut only_expected = want.clone();
    let mut only_actual = Vec::new();
    for tree in &got {
        match only_expected.iter().position(|t| t == tree) {
            Some(at) => {
                only_expected.remove(at);
            }
            None => only_actual.push(tree.clone()),
        }
    }
    Err(format!(
        "expected {} span(s) in {} tree(s), got {} in {}\n--- expected only:\n{}--- got only:\n{}",
        expected.iter().map(Shape::len).sum::<usize>(),
        expected.len(),
        actual.iter().map(Shape::len).sum::<usize>(),
        actual.len(),
        only_expected.concat(),
        only_actual.concat()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_native_step_file_loads_into_trees() {
        for step in [
            "connect",
            "read_attribute",
            "write_attribute",
            "read_attribute_counter",
            "command_inout",
            "command_inout_echo",
            "read_attributes",
            "nested",
            "subscribe_event",
            "push_event",
            "unsubscribe_event",
            "outside-client-steps",
        ] {
            let spans = load(NATIVE, &format!("{step}.json"));
            let trees = forest(&spans).unwrap_or_else(|e| panic!("{step}: {e}"));
            assert_eq!(trees.iter().map(Shape::len).sum::<usize>(), spans.len(), "{step}");
        }
        let nested = forest(&load(NATIVE, "nested.json")).expect("nested");
        assert_eq!(nested.len(), 1, "one trace over three processes");
        assert_eq!(
            nested[0].children[0].children.len(),
            2,
            "DeviceProxy and read_attribute under the device"
        );
    }

    #[test]
    fn a_missing_key_a_moved_span_or_a_duplicate_fails_the_comparison() {
        let spans = load(NATIVE, "nested.json");
        let expected = forest(&spans).expect("nested");
        assert_eq!(compare(&expected, &forest(&spans).expect("again")), Ok(()));

        let mut no_thread = spans.clone();
        no_thread[0].attributes.0.retain(|(k, _)| k != "thread.id");
        assert!(compare(&expected, &forest(&no_thread).expect("trees")).is_err());

        let mut moved = spans.clone();
        moved[4].parent_span_id = moved[1].span_id.clone();
        assert!(compare(&expected, &forest(&moved).expect("trees")).is_err());

        let mut twice = spans.clone();
        twice.push(spans[2].clone());
        assert!(forest(&twice).is_err());

        // Values that differ per run do not count; those that mean something do.
        let mut other_run = spans.clone();
        other_run[0].resource.0.iter_mut().for_each(|(k, v)| {
            if k == "tango.process.id" {
                *v = Value::from(1);
            }
        });
        other_run[2].attributes.0.iter_mut().for_each(|(k, v)| {
            if k == "tango.operation.argument" {
                *v = Value::from("tango://127.0.0.1:1/test/demo/2#dbase=no");
            }
        });
        assert_eq!(compare(&expected, &forest(&other_run).expect("trees")), Ok(()));
        let mut other_argument = spans;
        other_argument[0].attributes.0.iter_mut().for_each(|(k, v)| {
            if k == "tango.operation.argument" {
                *v = Value::from("Echo");
            }
        });
        assert!(compare(&expected, &forest(&other_argument).expect("trees")).is_err());
    }

    #[test]
    fn tango_ports_are_masked_and_nothing_else() {
        assert_eq!(
            mask_tango_port("tango://127.0.0.1:47450/test/demo/1#dbase=no"),
            "tango://127.0.0.1:*/test/demo/1#dbase=no"
        );
        assert_eq!(mask_tango_port("test/demo/1"), "test/demo/1");
        assert_eq!(mask_tango_port("tango://h/x"), "tango://h/x");
    }
}
