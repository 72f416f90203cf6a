//! `report --html`: one self-contained page (inline CSS and SVG, no script, no external asset)
//! with the report's table and a latency histogram per row.

use std::fmt::Write as _;

use super::{Report, stats::histogram};

const BINS: usize = 30;
const W: f64 = 480.0;
const H: f64 = 140.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The page of `report`.
pub fn render_html(report: &Report) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>tango-tracer report {}</title><style>\
         body{{font-family:sans-serif;margin:16px;background:#fff;color:#222}}\
         table{{border-collapse:collapse}}td,th{{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}}\
         td.l,th.l{{text-align:left}}.plot{{display:inline-block;margin:8px;vertical-align:top}}\
         </style></head><body><h1>Session {}</h1><p>{} spans over {:.1} s</p><table><tr>\
         <th class=l>side</th><th class=l>device</th><th class=l>operation</th><th class=l>argument</th>\
         <th>count</th><th>rate/s</th><th>errors</th><th>total ms</th><th>p50 ms</th><th>p90 ms</th>\
         <th>p99 ms</th><th>max ms</th></tr>",
        escape(&report.session),
        escape(&report.session),
        report.spans,
        report.seconds
    );
    for r in &report.rows {
        let _ = write!(
            out,
            "<tr><td class=l>{}</td><td class=l>{}</td><td class=l>{}</td><td class=l>{}</td><td>{}</td>\
             <td>{:.1}</td><td>{}</td><td>{:.1}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>",
            r.side,
            escape(&r.device),
            escape(&r.operation),
            escape(&r.argument),
            r.count,
            r.rate_per_s,
            r.errors,
            r.total_ms,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.max_ms
        );
    }
    out.push_str("</table><h2>Latency histograms</h2>");
    for r in &report.rows {
        let title = format!("{} {} {} {}", r.side, r.device, r.operation, r.argument);
        let _ = write!(out, "<div class=plot><div>{}</div>{}</div>", escape(&title), svg(&r.durations_ns));
    }
    if !report.slowest.is_empty() {
        out.push_str("<h2>Slowest traces</h2>");
        for t in &report.slowest {
            let _ = write!(out, "<h3>trace {} ({:.3} ms)</h3><ul>", t.trace_id, t.duration_ms);
            for (i, step) in t.path.iter().enumerate() {
                let mark = if i == t.dominant { " <b>&lt;&lt; own time dominates</b>" } else { "" };
                let _ = write!(
                    out,
                    "<li style=\"margin-left:{}px\">{} {:.3} ms (own {:.3} ms){mark}</li>",
                    i * 16,
                    escape(&step.span),
                    step.duration_ms,
                    step.self_ms
                );
            }
            out.push_str("</ul>");
        }
    }
    out.push_str("</body></html>\n");
    out
}

/// A histogram of durations (log-spaced bins) as an inline SVG, axis labelled in ms.
fn svg(sorted_ns: &[u64]) -> String {
    let bins = histogram(sorted_ns, BINS);
    let top = bins.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64;
    let (left, bottom) = (40.0, 20.0);
    let bar_w = (W - left) / BINS as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\">\
         <rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#f8f8f8\"/>"
    );
    for (i, (_, count)) in bins.iter().enumerate() {
        let h = (H - bottom - 10.0) * *count as f64 / top;
        let _ = write!(
            svg,
            "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"#3465a4\"><title>{count}</title></rect>",
            left + i as f64 * bar_w,
            H - bottom - h,
            (bar_w - 1.0).max(1.0)
        );
    }
    let low = bins.first().map_or(0.0, |b| b.0 / 1e6);
    let high = sorted_ns.last().map_or(0.0, |&v| v as f64 / 1e6);
    let _ = write!(
        svg,
        "<line x1=\"{left}\" y1=\"{y}\" x2=\"{W}\" y2=\"{y}\" stroke=\"#222\"/>\
         <text x=\"{left}\" y=\"{H2}\" font-size=\"11\">{low:.3} ms</text>\
         <text x=\"{W}\" y=\"{H2}\" font-size=\"11\" text-anchor=\"end\">{high:.3} ms (log scale)</text>\
         <text x=\"2\" y=\"14\" font-size=\"11\">{top}</text></svg>",
        y = H - bottom,
        H2 = H - 5.0
    );
    svg
}
