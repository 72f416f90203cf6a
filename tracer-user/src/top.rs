//! `tango-tracer top`: the daemon's live view (see [`crate::live`]) in a terminal, refreshed
//! every second, or one snapshot as text or JSON.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use ratatui::{
    Frame,
    crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Cell, Paragraph, Row, Table},
};

use crate::{
    live::{LiveSnapshot, OperationRow},
    run::ctl::{CtlAnswer, CtlRequest, request},
};

/// How often the view is refreshed.
const REFRESH: Duration = Duration::from_secs(1);

/// What the rows are ordered by, largest first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    /// Time spent in the calls over the window (rate × mean latency).
    Total,
    /// Calls per second.
    Rate,
    /// 99th percentile of the latency.
    #[default]
    P99,
    /// Errors over the window.
    Errors,
}

impl SortKey {
    fn name(self) -> &'static str {
        match self {
            SortKey::Total => "total time",
            SortKey::Rate => "rate",
            SortKey::P99 => "p99",
            SortKey::Errors => "errors",
        }
    }
}

/// Options of the text rendering.
#[derive(Clone, Copy, Debug, Default)]
pub struct TextOptions {
    pub sort: SortKey,
}

/// Orders `rows` by `key`, largest first; ties by device, operation, argument, side.
pub fn sort_rows(rows: &mut [OperationRow], key: SortKey) {
    let value = |r: &OperationRow| match key {
        SortKey::Total => r.total_ms,
        SortKey::Rate => r.calls_per_s,
        SortKey::P99 => r.p99_ms,
        SortKey::Errors => r.errors as f64,
    };
    rows.sort_by(|a, b| {
        value(b).total_cmp(&value(a)).then_with(|| b.calls_per_s.total_cmp(&a.calls_per_s)).then_with(|| {
            (&a.device, &a.operation, &a.argument, &a.side).cmp(&(
                &b.device,
                &b.operation,
                &b.argument,
                &b.side,
            ))
        })
    });
}

fn events_line(s: &LiveSnapshot) -> String {
    let e = &s.events;
    format!(
        "events: {:.1} pushed/s, {:.1} delivered/s, delay p50 {:.1} ms p99 {:.1} ms max {:.1} ms, {} lost",
        e.pushes_per_s, e.deliveries_per_s, e.delay_p50_ms, e.delay_p99_ms, e.delay_max_ms, e.lost
    )
}

fn health_line(s: &LiveSnapshot) -> String {
    let h = &s.health;
    let export =
        if h.export_errors.is_empty() { "export ok".to_string() } else { h.export_errors.join("; ") };
    format!(
        "daemon: {} processes, {} records lost, {} lost in all, {} spans dropped, {} exported, {export}",
        h.traced_processes, h.records_lost, h.lost_total, h.spans_dropped, h.spans_exported
    )
}

fn operation_text(r: &OperationRow) -> String {
    if r.argument.is_empty() { r.operation.clone() } else { format!("{} {}", r.operation, r.argument) }
}

/// One snapshot as plain text: a header, every row by `options.sort`, the processes, the
/// events and the daemon's health.
pub fn render_text(snapshot: &LiveSnapshot, options: TextOptions) -> String {
    let mut rows = snapshot.rows.clone();
    sort_rows(&mut rows, options.sort);
    let mut out = format!(
        "tango-tracer top: last {:.0} s, by {}, {} rows{}\n",
        snapshot.window_s,
        options.sort.name(),
        rows.len(),
        if snapshot.rows_overflowed > 0 {
            format!(" ({} spans in the overflow row since start)", snapshot.rows_overflowed)
        } else {
            String::new()
        }
    );
    out.push_str(&format!(
        "{:<28} {:<40} {:<6} {:>8} {:>7} {:>8} {:>8} {:>8} {:>9} {:>7}\n",
        "DEVICE", "OPERATION", "SIDE", "CALLS/S", "ERR/S", "P50 ms", "P99 ms", "MAX ms", "TOTAL ms", "COUNT"
    ));
    for r in &rows {
        out.push_str(&format!(
            "{:<28} {:<40} {:<6} {:>8.1} {:>7.1} {:>8.2} {:>8.2} {:>8.2} {:>9.1} {:>7}\n",
            r.device,
            operation_text(r),
            r.side,
            r.calls_per_s,
            r.errors_per_s,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.total_ms,
            r.count
        ));
    }
    out.push_str(&format!(
        "\n{:>8} {:<24} {:>8} {:>8} {:>7} {:>8} {:>7}\n",
        "PID", "PROCESS", "CALLS/S", "SPANS/S", "ERR/S", "SPANS", "ERRORS"
    ));
    for p in &snapshot.processes {
        out.push_str(&format!(
            "{:>8} {:<24} {:>8.1} {:>8.1} {:>7.1} {:>8} {:>7}\n",
            p.pid, p.process, p.calls_per_s, p.spans_per_s, p.errors_per_s, p.spans, p.errors
        ));
    }
    out.push('\n');
    out.push_str(&events_line(snapshot));
    out.push('\n');
    out.push_str(&health_line(snapshot));
    out.push('\n');
    out
}

/// Asks the daemon at `socket` for its live view.
pub async fn fetch(socket: &PathBuf) -> anyhow::Result<LiveSnapshot> {
    match request(socket, &CtlRequest::Live).await? {
        CtlAnswer::Live(snapshot) => Ok(*snapshot),
        CtlAnswer::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
}

/// The terminal UI's state.
struct Screen {
    snapshot: LiveSnapshot,
    sort: SortKey,
    processes: bool,
    /// Why the last refresh failed, shown until one succeeds.
    error: Option<String>,
}

/// Runs the terminal UI until `q`, Esc or Ctrl-C.
pub fn run_interactive(socket: &PathBuf, sort: SortKey) -> anyhow::Result<()> {
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    // The daemon must answer once before the screen is taken over.
    let snapshot = rt.block_on(fetch(socket))?;
    let mut screen = Screen { snapshot, sort, processes: false, error: None };
    let mut terminal = ratatui::init();
    let result = (|| -> anyhow::Result<()> {
        let mut fetched = Instant::now();
        loop {
            terminal.draw(|frame| draw(frame, &screen))?;
            let wait = REFRESH.saturating_sub(fetched.elapsed());
            if event::poll(wait)?
                && let Event::Key(key) = event::read()?
                && key.kind == KeyEventKind::Press
            {
                match key.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
                    KeyCode::Char('t') => screen.sort = SortKey::Total,
                    KeyCode::Char('r') => screen.sort = SortKey::Rate,
                    KeyCode::Char('p') => screen.sort = SortKey::P99,
                    KeyCode::Char('e') => screen.sort = SortKey::Errors,
                    KeyCode::Char('v') => screen.processes = !screen.processes,
                    _ => {}
                }
            }
            if fetched.elapsed() >= REFRESH {
                fetched = Instant::now();
                match rt.block_on(fetch(socket)) {
                    Ok(snapshot) => {
                        screen.snapshot = snapshot;
                        screen.error = None;
                    }
                    Err(e) => screen.error = Some(format!("{e:#}")),
                }
            }
        }
    })();
    ratatui::restore();
    result
}

fn draw(frame: &mut Frame, screen: &Screen) {
    let [title, events, health, body, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let s = &screen.snapshot;
    let heading = match &screen.error {
        Some(error) => format!("tango-tracer top: {error}"),
        None => format!(
            "tango-tracer top: last {:.0} s, {} rows, by {}{}",
            s.window_s,
            s.rows.len(),
            screen.sort.name(),
            if s.rows_overflowed > 0 { format!(", {} overflowed", s.rows_overflowed) } else { String::new() }
        ),
    };
    let bold = Style::default().add_modifier(Modifier::BOLD);
    frame.render_widget(Paragraph::new(Line::styled(heading, bold)), title);
    frame.render_widget(Paragraph::new(events_line(s)), events);
    frame.render_widget(Paragraph::new(health_line(s)), health);
    let header_style = Style::default().add_modifier(Modifier::REVERSED);
    if screen.processes {
        let header = Row::new(["PID", "PROCESS", "CALLS/S", "SPANS/S", "ERR/S", "SPANS", "ERRORS"])
            .style(header_style);
        let rows = s.processes.iter().map(|p| {
            Row::new([
                Cell::from(p.pid.to_string()),
                Cell::from(p.process.clone()),
                Cell::from(format!("{:.1}", p.calls_per_s)),
                Cell::from(format!("{:.1}", p.spans_per_s)),
                Cell::from(format!("{:.1}", p.errors_per_s)),
                Cell::from(p.spans.to_string()),
                Cell::from(p.errors.to_string()),
            ])
        });
        let widths = [
            Constraint::Length(8),
            Constraint::Fill(1),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Length(8),
            Constraint::Length(7),
        ];
        frame.render_widget(Table::new(rows, widths).header(header), body);
    } else {
        let mut rows = s.rows.clone();
        sort_rows(&mut rows, screen.sort);
        let header =
            Row::new(["DEVICE", "OPERATION", "SIDE", "CALLS/S", "ERR/S", "P50 ms", "P99 ms", "MAX ms"])
                .style(header_style);
        let rows = rows.iter().map(|r| {
            Row::new([
                Cell::from(r.device.clone()),
                Cell::from(operation_text(r)),
                Cell::from(if r.side == "server" { "srv" } else { "cli" }),
                Cell::from(format!("{:.1}", r.calls_per_s)),
                Cell::from(format!("{:.1}", r.errors_per_s)),
                Cell::from(format!("{:.2}", r.p50_ms)),
                Cell::from(format!("{:.2}", r.p99_ms)),
                Cell::from(format!("{:.2}", r.max_ms)),
            ])
        });
        let widths = [
            Constraint::Fill(1),
            Constraint::Fill(1),
            Constraint::Length(4),
            Constraint::Length(7),
            Constraint::Length(5),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(7),
        ];
        frame.render_widget(Table::new(rows, widths).header(header).column_spacing(1), body);
    }
    let help = format!(
        "sort: t total  r rate  p p99  e errors | v {} | q quit",
        if screen.processes { "operations" } else { "processes" }
    );
    frame.render_widget(Paragraph::new(Line::styled(help, header_style)), keys);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;

    fn row(device: &str, argument: &str, rate: f64, p99: f64, errors: u64) -> OperationRow {
        OperationRow {
            device: device.into(),
            operation: "read_attribute".into(),
            argument: argument.into(),
            side: "client".into(),
            count: (rate * 10.0) as u64,
            errors,
            calls_per_s: rate,
            errors_per_s: errors as f64 / 10.0,
            p50_ms: p99 / 2.0,
            p99_ms: p99,
            max_ms: p99,
            total_ms: rate * 10.0 * p99 / 2.0,
        }
    }

    fn snapshot() -> LiveSnapshot {
        LiveSnapshot {
            window_s: 10.0,
            rows: vec![
                row("test/top/fast", "quick", 100.0, 0.5, 0),
                row("test/top/slow", "sluggish", 5.0, 20.0, 0),
                row("test/top/fast", "broken", 1.0, 0.3, 7),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn each_key_orders_the_rows() {
        let mut rows = snapshot().rows;
        let first = |rows: &[OperationRow]| rows[0].argument.clone();
        sort_rows(&mut rows, SortKey::P99);
        assert_eq!(first(&rows), "sluggish");
        sort_rows(&mut rows, SortKey::Rate);
        assert_eq!(first(&rows), "quick");
        sort_rows(&mut rows, SortKey::Errors);
        assert_eq!(first(&rows), "broken");
        // 50 calls of 10 ms on average outweigh 1000 of 0.25 ms.
        sort_rows(&mut rows, SortKey::Total);
        assert_eq!(first(&rows), "sluggish");
    }

    #[test]
    fn the_screen_fits_80_by_24_with_the_slowest_row_first() {
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        let screen = Screen { snapshot: snapshot(), sort: SortKey::P99, processes: false, error: None };
        terminal.draw(|f| draw(f, &screen)).unwrap();
        let buffer = terminal.backend().buffer();
        let lines: Vec<String> = (0..24)
            .map(|y| (0..80).map(|x| buffer[(x, y)].symbol().to_string()).collect::<String>())
            .collect();
        assert!(lines[3].starts_with("DEVICE"), "{lines:#?}");
        assert!(lines[4].contains("test/top/slow") && lines[4].contains("20.00"), "{lines:#?}");
        assert!(lines[23].contains("q quit"), "{lines:#?}");
    }
}
