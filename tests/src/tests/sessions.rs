//! Sessions in the database store, read back by `tango-tracer report` and `compare`: a device
//! with one slow attribute (20 ms) among fast ones under a paced read loop, recorded as session
//! "slow", then with the same attribute fast as session "fast". The report puts the slow
//! attribute first with the calls made and its percentiles; the comparison finds that change and
//! no other; the HTML report renders its plots in headless Chromium.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::harness::{
    MARKER, Proc, TracerDaemon, free_port, python, script, tracer_binary, unique_marker, wait_for_port,
};

const DEVICE: &str = "test/sessionslow/1";
const SLOW_ATTRIBUTE: &str = "lagging";
/// Rounds of the read loop (each reads every attribute once) per session.
const ROUNDS: u64 = 150;
/// One round every PERIOD_MS in both sessions, so the machine is loaded alike in both.
const PERIOD_MS: u64 = 30;

/// A row of `report --json` (the keys are its documented contract).
#[derive(Debug, Deserialize)]
struct ReportRow {
    device: String,
    operation: String,
    argument: String,
    side: String,
    count: u64,
    errors: u64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// A row of `compare --json`.
#[derive(Debug, Deserialize)]
struct CompareRow {
    device: String,
    operation: String,
    argument: String,
    side: String,
    verdict: String,
    a: Option<CompareSide>,
    b: Option<CompareSide>,
}

#[derive(Debug, Deserialize)]
struct CompareSide {
    count: u64,
    p50_ms: f64,
}

/// A directory of the test's own for the store (the daemon's own directory is made anew at
/// each start, so it cannot hold a store two daemons write to).
fn store_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tango-tracer-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the store's directory");
    dir
}

/// Records one session: a daemon with `--store store --session name`, the device server with
/// the slow attribute taking `lagging_ms`, and the read loop run to its end. Returns how many
/// times the loop read each attribute.
fn record_session(store: &Path, name: &str, lagging_ms: u64) -> serde_json::Value {
    let marker = unique_marker(&format!("session-{name}"));
    let store_arg = store.to_str().expect("a UTF-8 temp path");
    let mut daemon = TracerDaemon::start(&marker, &[], &["--store", store_arg, "--session", name]);
    let port = free_port();
    let child = Command::new(python())
        .arg(script("top_server.py"))
        .args(["sessions", &port.to_string(), DEVICE])
        .env(MARKER, &marker)
        .env("TOP_LAGGING_MS", lagging_ms.to_string())
        .env_remove("TANGO_TELEMETRY_ENABLE")
        .stdout(Stdio::null())
        .spawn()
        .expect("starting top_server.py");
    let mut server = Proc { child, name: "top_server.py".into() };
    wait_for_port(port, &mut server, Duration::from_secs(30));
    let output = Command::new(python())
        .arg(script("session_loop.py"))
        .arg(format!("tango://127.0.0.1:{port}/{DEVICE}#dbase=no"))
        .arg(ROUNDS.to_string())
        .arg(PERIOD_MS.to_string())
        .env(MARKER, &marker)
        .output()
        .expect("running session_loop.py");
    assert!(
        output.status.success(),
        "session_loop.py failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let reads: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("session_loop.py printed {stdout:?}: {e}"));
    server.stop(Duration::from_secs(5));
    // SIGTERM: the daemon ends the calls it holds and writes everything to the store.
    daemon.stop();
    reads
}

/// Runs `tango-tracer <args>` to success; its standard output.
fn tracer(args: &[&str]) -> String {
    let output = Command::new(tracer_binary()).args(args).output().expect("running tango-tracer");
    assert!(
        output.status.success(),
        "tango-tracer {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn report_rows(store: &str, session: &str) -> Vec<ReportRow> {
    let json = tracer(&["report", "--store", store, "--session", session, "--json"]);
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("report --json is a list of rows: {e}\n{json}"))
}

fn is_slow_attribute(device: &str, argument: &str) -> bool {
    device == DEVICE && argument == SLOW_ATTRIBUTE
}

#[test]
fn report_puts_the_slow_attribute_first_and_compare_finds_only_its_change() {
    let dir = store_dir("sessions");
    let store = dir.join("sessions.db");
    let store_arg = store.to_str().expect("a UTF-8 temp path");
    let slow_reads = record_session(&store, "slow", 20);
    let fast_reads = record_session(&store, "fast", 0);
    for reads in [&slow_reads, &fast_reads] {
        assert_eq!(reads["reads"][SLOW_ATTRIBUTE].as_u64(), Some(ROUNDS), "the loop's reads: {reads}");
    }

    // The text report and comparison in the test's output, for whoever reads a failure.
    eprintln!("{}", tracer(&["report", "--store", store_arg, "--session", "slow"]));
    eprintln!("{}", tracer(&["compare", "slow", "fast", "--store", store_arg]));

    // report: the slow attribute's rows (the client's read and the server's read_attributes_5,
    // which takes the attribute from its client) come first, each with every call made.
    let rows = report_rows(store_arg, "slow");
    let listing = || rows.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>().join("\n");
    let [first, second, ..] = &rows[..] else {
        panic!("at least the slow attribute's client and server rows expected, got:\n{}", listing());
    };
    let mut sides = Vec::new();
    for row in [first, second] {
        assert!(
            is_slow_attribute(&row.device, &row.argument),
            "the slow attribute's rows ({DEVICE} {SLOW_ATTRIBUTE}) expected first, got:\n{}",
            listing()
        );
        assert_eq!((row.count, row.errors), (ROUNDS, 0), "{ROUNDS} calls without error expected in {row:?}");
        assert!(
            (19.5..=30.0).contains(&row.p50_ms),
            "p50 of a 20 ms attribute expected within 19.5..30 ms: {row:?}"
        );
        assert!(
            row.p50_ms <= row.p90_ms && row.p90_ms <= row.p99_ms && row.p99_ms <= row.max_ms,
            "percentiles expected in order p50 <= p90 <= p99 <= max: {row:?}"
        );
        sides.push((row.side.as_str(), row.operation.as_str()));
    }
    sides.sort_unstable();
    assert_eq!(
        sides,
        [("client", "read_attribute"), ("server", "read_attributes_5")],
        "one client and one server row expected for the slow attribute:\n{}",
        listing()
    );
    for fast in ["fast_a", "fast_b"] {
        for side in ["client", "server"] {
            let row = rows
                .iter()
                .find(|r| r.device == DEVICE && r.argument == fast && r.side == side)
                .unwrap_or_else(|| panic!("a {side} row of {fast} expected:\n{}", listing()));
            assert_eq!(row.count, ROUNDS, "{ROUNDS} calls expected in {row:?}");
            assert!(row.p50_ms < 10.0, "a fast attribute expected fast (p50 < 10 ms): {row:?}");
        }
    }

    // compare: the slow attribute's rows got faster, every other row is unchanged.
    let json = tracer(&["compare", "slow", "fast", "--store", store_arg, "--json"]);
    let compared: Vec<CompareRow> = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("compare --json is a list of rows: {e}\n{json}"));
    let listing = || compared.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>().join("\n");
    let faster: Vec<_> = compared.iter().filter(|r| is_slow_attribute(&r.device, &r.argument)).collect();
    assert_eq!(faster.len(), 2, "the slow attribute's client and server rows expected:\n{}", listing());
    for row in &compared {
        let want = if is_slow_attribute(&row.device, &row.argument) { "faster" } else { "unchanged" };
        assert_eq!(
            row.verdict,
            want,
            "{} {} {} {}: {want} expected:\n{}",
            row.side,
            row.device,
            row.operation,
            row.argument,
            listing()
        );
    }
    for row in faster {
        let (a, b) = (row.a.as_ref(), row.b.as_ref());
        assert!(
            a.zip(b).is_some_and(|(a, b)| a.count == ROUNDS && b.count == ROUNDS && b.p50_ms < 10.0),
            "{ROUNDS} calls in each session and a fast median in \"fast\" expected: {row:?}"
        );
    }
    std::fs::remove_dir_all(&dir).expect("removing the store's directory");
}

/// Bars of the histograms: `fill="#3465a4"` in the page.
const BAR: [u8; 3] = [0x34, 0x65, 0xa4];

#[test]
fn the_html_report_is_self_contained_and_renders_its_plots_in_chromium() {
    let dir = store_dir("sessions-html");
    let store = dir.join("sessions.db");
    let store_arg = store.to_str().expect("a UTF-8 temp path");
    record_session(&store, "slow", 20);
    let page = dir.join("report.html");
    let rows = report_rows(store_arg, "slow");
    tracer(&["report", "--store", store_arg, "--session", "slow", "--html", page.to_str().expect("UTF-8")]);
    let html = std::fs::read_to_string(&page).expect("report --html writes its file");

    // Self-contained: no script, stylesheet, image or anything else fetched; the only URL is
    // the SVG namespace, which names and fetches nothing.
    let without_namespace = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    for reference in ["http://", "https://", "src=", "<link", "<script", "url(", "@import"] {
        assert!(
            !without_namespace.contains(reference),
            "a self-contained page expected, found {reference:?} in it"
        );
    }
    assert_eq!(
        html.matches("<svg").count(),
        rows.len(),
        "one SVG histogram per report row ({} rows) expected",
        rows.len()
    );

    // Headless Chromium renders it; its screenshot shows the bars of the plots.
    let screenshot = dir.join("report.png");
    let profile = dir.join("chromium-profile");
    let mut chromium = Proc {
        child: Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--screenshot={}", screenshot.display()))
            .arg("--window-size=1200,900")
            .arg(format!("file://{}", page.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting chromium (Debian's chromium package)"),
        name: "chromium".into(),
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = chromium.child.try_wait().expect("waiting for chromium") {
            break status;
        }
        assert!(Instant::now() < deadline, "chromium did not take its screenshot within 120 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut log = String::new();
    if let Some(mut stderr) = chromium.child.stderr.take() {
        use std::io::Read as _;
        let _ = stderr.read_to_string(&mut log);
    }
    assert!(status.success() && screenshot.exists(), "chromium's screenshot expected ({status}):\n{log}");

    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&screenshot).expect("opening the screenshot"),
    ));
    let mut reader = decoder.read_info().expect("the screenshot is a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().expect("a screenshot of a sane size")];
    let frame = reader.next_frame(&mut pixels).expect("decoding the screenshot");
    let channels = frame.color_type.samples();
    assert_eq!(frame.bit_depth, png::BitDepth::Eight, "an 8-bit screenshot expected");
    let (width, height) = (frame.width as usize, frame.height as usize);
    let pixel = |x: usize, y: usize| {
        let at = (y * width + x) * channels;
        [pixels[at], pixels[at + 1], pixels[at + 2]]
    };
    // Where the bars are drawn: pixels of their colour (antialiased edges aside), in columns
    // that make several separate bars.
    let mut bar_pixels = 0;
    let mut bar_columns = vec![false; width];
    let (mut top, mut bottom) = (height, 0);
    for y in 0..height {
        for (x, bar_column) in bar_columns.iter_mut().enumerate() {
            if pixel(x, y) == BAR {
                bar_pixels += 1;
                *bar_column = true;
                top = top.min(y);
                bottom = bottom.max(y);
            }
        }
    }
    let bars = bar_columns.windows(2).filter(|w| !w[0] && w[1]).count();
    assert!(
        bar_pixels >= 500 && bars >= 2,
        "the histograms' bars (#3465a4) expected in the screenshot: {bar_pixels} pixels of that colour in \
         {bars} separate bars"
    );
    // The plot area is drawn, not blank: its background, axis and labels make several colours.
    let mut colours = std::collections::HashSet::new();
    for y in top..=bottom {
        for x in 0..width {
            colours.insert(pixel(x, y));
        }
    }
    assert!(
        colours.len() >= 4,
        "several colours expected in the plot area (rows {top}..={bottom}), found {}",
        colours.len()
    );
    std::fs::remove_dir_all(&dir).expect("removing the test's directory");
}
