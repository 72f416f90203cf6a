//! The configuration file from outside: `tango-tracer check-config` on good and broken files,
//! and a running daemon told by SIGHUP that its file now exports elsewhere.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use tracer_export::json::SpanJson;

use crate::{
    harness::{DemoServer, MARKER, Proc, TracerDaemon, run_client, tracer_binary, unique_marker},
    otlp_receiver::OtlpReceiver,
};

/// A directory of this test's own, emptied first.
fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_marker(name));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the test directory");
    dir
}

/// `tango-tracer check-config ARGS` with only `env` as its environment.
fn check_config(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(tracer_binary())
        .arg("check-config")
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("running tango-tracer check-config")
}

/// `key = value  # source` lines of check-config, by key.
fn settings_of(stdout: &str) -> HashMap<String, (String, String)> {
    stdout
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (setting, source) = line.split_once("  # ")?;
            let (key, value) = setting.split_once(" = ")?;
            Some((key.trim().to_owned(), (value.trim().to_owned(), source.trim().to_owned())))
        })
        .collect()
}

#[test]
fn check_config_prints_every_setting_with_its_source_env_and_flags_over_the_file() {
    let dir = test_dir("check-config-good");
    let file = dir.join("config.toml");
    let file_source = format!("file {}", file.display());
    std::fs::write(
        &file,
        "# a comment\n[export]\nexporters = [\"otlp\", \"store\"]\nendpoint = \"http://collector:4318\"\n\
         interval = \"500ms\"\nmemory = \"32MiB\"\n[store]\npath = \"/srv/tt/store.db\"\n\
         [selection]\nenv = \"BEAMLINE=id00\"\n[sampling]\ntail = \"slower-than=5ms,errors\"\n",
    )
    .expect("writing the configuration file");
    let output = check_config(
        &["--config", file.to_str().expect("a UTF-8 path"), "--export-interval", "2s", "--pid", "42"],
        &[
            ("TANGO_TRACER_EXPORT_MEMORY", "16MiB"),
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://logs:4318/v1/logs"),
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    let settings = settings_of(&stdout);
    let expect = |key: &str, value: &str, source: &str| {
        assert_eq!(settings.get(key), Some(&(value.to_owned(), source.to_owned())), "{key} in\n{stdout}");
    };
    expect("export.exporters", "[\"otlp\", \"store\"]", &file_source);
    expect("export.endpoint", "\"http://collector:4318\"", &file_source);
    expect("export.interval", "\"2s\"", "flag --export-interval");
    expect("export.memory", "\"16MiB\"", "env TANGO_TRACER_EXPORT_MEMORY");
    expect("export.logs_endpoint", "\"http://logs:4318/v1/logs\"", "env OTEL_EXPORTER_OTLP_LOGS_ENDPOINT");
    expect("export.shutdown_timeout", "\"5s\"", "default");
    expect("store.path", "\"/srv/tt/store.db\"", &file_source);
    expect("selection.env", "\"BEAMLINE=id00\"", &file_source);
    expect("selection.pids", "[42]", "flag --pid");
    expect("sampling.tail", "\"slower-than=5ms,errors\"", &file_source);
    expect("control.socket", "\"/run/tango-tracer/ctl.sock\"", "default");
    expect("control.nice", "10", "default");
    // Every setting of `run` is listed.
    assert_eq!(settings.len(), 35, "{stdout}");
    assert!(
        stdout.contains(
            "# spans go to: OTLP/HTTP http://collector:4318/v1/traces, store /srv/tt/store.db\n\
             # device logs go to: OTLP/HTTP http://logs:4318/v1/logs, store /srv/tt/store.db\n"
        ),
        "{stdout}"
    );

    // The same as JSON.
    let output = check_config(&["--json", "--config", file.to_str().expect("a UTF-8 path")], &[]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("check-config --json");
    let rows = json["settings"].as_array().expect("settings");
    let interval = rows.iter().find(|r| r["key"] == "export.interval").expect("export.interval");
    assert_eq!(
        (interval["value"].as_str(), interval["source"].as_str()),
        (Some("\"500ms\""), Some(&*file_source))
    );
    assert_eq!(json["span_destinations"][0], "OTLP/HTTP http://collector:4318/v1/traces");

    // No file named and none at the default path's place: built-in defaults, no error.
    let output = check_config(&[], &[("TANGO_TRACER_CONFIG", "")]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !Path::new("/etc/tango-tracer/config.toml").exists() {
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.starts_with("# no configuration file at /etc/tango-tracer/config.toml"), "{stdout}");
        assert!(settings_of(&stdout).values().all(|(_, source)| source == "default"), "{stdout}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_config_refuses_a_broken_file_naming_the_problem() {
    let dir = test_dir("check-config-broken");
    // (what, file, what the error says after "configuration file PATH")
    let cases: &[(&str, &str, &str)] = &[
        (
            "syntax",
            "[export]\ninterval = \"1s\"\n[store\n",
            ", line 3, column 7, at `[store`: unclosed table, expected `]`",
        ),
        (
            "unknown key",
            "[export]\nendpoints = \"http://a:4318\"\n",
            ", line 2, column 1, at `endpoints = \"http://a:4318\"`: unknown key `endpoints`, expected one of `exporters`, \
             `endpoint`,",
        ),
        (
            "unknown section",
            "[exporters]\n",
            ", line 1, column 2, at `[exporters]`: unknown key `exporters`, expected one of `export`,",
        ),
        (
            "wrong type",
            "[capture]\ngiop_bytes = \"2048\"\n",
            ", line 2, column 14, at `giop_bytes = \"2048\"`: invalid type: string \"2048\", expected u32",
        ),
        (
            "bad duration",
            "[peers]\nwait = \"2 fortnights\"\n",
            ", line 2, column 8, at `wait = \"2 fortnights\"`: unknown unit in \"2 fortnights\" (use ms, s or m)",
        ),
        (
            "out of range",
            "[store]\n[peers]\nwait = \"20s\"\n",
            ", line 3, column 8, at `wait = \"20s\"`: must be more than 0 and at most 10s",
        ),
        (
            "endpoint without scheme",
            "[export]\nendpoint = \"collector:4318\"\n",
            ", line 2, column 12, at `endpoint = \"collector:4318\"`: endpoint \"collector:4318\" has no scheme: \
             add http:// or https:// in front",
        ),
        (
            "bad exporter",
            "[export]\nexporters = [\"jaeger\"]\n",
            ", line 2, column 14, at `exporters = [\"jaeger\"]`: unknown variant `jaeger`, expected one of `otlp`",
        ),
    ];
    for (what, text, expected) in cases {
        let file = dir.join(format!("{}.toml", what.replace(' ', "-")));
        std::fs::write(&file, text).expect("writing the configuration file");
        let output = check_config(&["--config", file.to_str().expect("a UTF-8 path")], &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{what}: accepted\n{}", String::from_utf8_lossy(&output.stdout));
        assert!(output.stdout.is_empty(), "{what}: printed settings of a broken file");
        let expected = format!("tango-tracer: configuration file {}{expected}", file.display());
        assert!(stderr.starts_with(&expected), "{what}: {expected:?} not in\n{stderr}");
    }
    // Settings that are valid alone but not together, named where they were given.
    let file = dir.join("peers.toml");
    std::fs::write(&file, "[peers]\nlisten = \"0.0.0.0:4999\"\n").expect("writing the configuration file");
    let output = check_config(&["--config", file.to_str().expect("a UTF-8 path")], &[]);
    assert!(!output.status.success());
    let expected = format!(
        "tango-tracer: peers.listen in {} needs a peer key (--peer-key, peers.key_file): cross-host linking \
         is off without one\n",
        file.display()
    );
    assert_eq!(String::from_utf8_lossy(&output.stderr), expected);
    // A file named explicitly must exist (the default one may be absent).
    let missing = dir.join("missing.toml");
    let output = check_config(&[], &[("TANGO_TRACER_CONFIG", missing.to_str().expect("a UTF-8 path"))]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains(&format!("reading the configuration file {}", missing.display())), "{stderr}");
    assert!(stderr.contains("No such file or directory"), "{stderr}");
    // A bad value in the environment is named too.
    let output = check_config(&[], &[("TANGO_TRACER_CONFIG", ""), ("TANGO_TRACER_CAPTURE_BYTES", "99")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("TANGO_TRACER_CAPTURE_BYTES=\"99\": must be between 1024 and 8192"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn config_exporting_to(receiver: &OtlpReceiver) -> String {
    let endpoint = receiver.http_endpoint().trim_end_matches("/v1/traces").to_owned();
    format!("[export]\nexporters = [\"otlp\"]\nendpoint = \"{endpoint}\"\n[metrics]\ninterval = \"300ms\"\n")
}

/// Every span of the traces the processes `pids` took part in.
fn spans_of_traces<'a>(spans: &'a [SpanJson], pids: &[i64]) -> Vec<&'a SpanJson> {
    let traces: HashSet<&str> = spans
        .iter()
        .filter(|s| s.resource.get_i64("tango.process.id").is_some_and(|pid| pids.contains(&pid)))
        .map(|s| s.trace_id.as_str())
        .collect();
    spans.iter().filter(|s| traces.contains(s.trace_id.as_str())).collect()
}

/// `(trace, CLIENT span)` pairs of `read_attribute` calls made by `pids`, and whether each has
/// its SERVER span in the same trace.
fn calls_of(spans: &[&SpanJson], pids: &[i64]) -> Vec<(String, bool)> {
    spans
        .iter()
        .filter(|s| s.kind == "CLIENT" && s.name == "Tango::DeviceProxy::read_attribute")
        .filter(|s| s.resource.get_i64("tango.process.id").is_some_and(|pid| pids.contains(&pid)))
        .map(|client| {
            let served = spans.iter().any(|s| {
                s.kind == "SERVER" && s.trace_id == client.trace_id && s.parent_span_id == client.span_id
            });
            (client.span_id.clone(), served)
        })
        .collect()
}

/// Sends SIGHUP to the daemon; the first line it logs next that contains `wanted`.
fn sighup_and_wait(daemon: &TracerDaemon, wanted: &str) -> String {
    let logged = daemon.log().len();
    // SAFETY: signalling our own child by its PID.
    unsafe { libc::kill(daemon.proc.pid() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = daemon.log();
        if let Some(line) = log.get(logged..).and_then(|new| new.lines().find(|l| l.contains(wanted))) {
            return line.to_owned();
        }
        assert!(Instant::now() < deadline, "SIGHUP: nothing logged with {wanted:?}:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether one call of each of `pids` arrived with its SERVER span.
fn all_served(spans: &[SpanJson], pids: &[i64]) -> bool {
    let calls = calls_of(&spans.iter().collect::<Vec<_>>(), pids);
    calls.len() == pids.len() && calls.iter().all(|(_, served)| *served)
}

#[test]
fn sighup_moves_export_to_the_new_endpoint_without_a_restart_or_a_lost_span() {
    let (a, b) = (OtlpReceiver::start_blocking(), OtlpReceiver::start_blocking());
    let dir = test_dir("sighup-config");
    let file = dir.join("config.toml");
    std::fs::write(&file, config_exporting_to(&a)).expect("writing the configuration file");
    let marker = unique_marker("sighup");
    let mut daemon =
        TracerDaemon::start(&marker, &[("TANGO_TRACER_CONFIG", file.to_str().expect("a UTF-8 path"))], &[]);
    let daemon_pid = daemon.proc.pid();
    let server = DemoServer::start(&marker, "sighup", &["test/reload/1"]);
    let url = server.url("test/reload/1");
    let client_pid = |out: serde_json::Value| out["pid"].as_i64().expect("client pid");

    // Before: the first call delivered to A, then one more whose spans may still be on their way.
    let mut before = vec![client_pid(run_client(&marker, &[&url, "read_attribute"], &[]))];
    a.wait_for_blocking(|spans| all_served(spans, &before), Duration::from_secs(30));
    before.push(client_pid(run_client(&marker, &[&url, "read_attribute"], &[])));

    // A broken file: reported, nothing changes.
    std::fs::write(&file, "[export]\nendpoint = \"nowhere:4318\"\n")
        .expect("rewriting the configuration file");
    let line = sighup_and_wait(&daemon, "the running settings stay");
    let expected = format!(
        "SIGHUP: configuration file {}, line 2, column 12, at `endpoint = \"nowhere:4318\"`: endpoint \
         \"nowhere:4318\" has no scheme",
        file.display()
    );
    assert!(line.contains(&expected), "{line}");

    // The file now points to B, and asks for larger captures; SIGHUP.
    let config_b = format!("{}[capture]\ngiop_bytes = 4096\n", config_exporting_to(&b));
    std::fs::write(&file, config_b).expect("rewriting the configuration file");
    let line = sighup_and_wait(&daemon, "SIGHUP: export.endpoint:");
    assert!(line.ends_with(&format!("(file {}): applied", file.display())), "{line}");
    assert!(line.contains(&b.http_endpoint().trim_end_matches("/v1/traces").to_owned()), "{line}");
    let log = daemon.log();
    let line = log.lines().find(|l| l.contains("SIGHUP: capture.giop_bytes:")).unwrap_or_default();
    let expected =
        format!("2048 → 4096 (file {}): needs a restart (the running value stays)", file.display());
    assert!(line.ends_with(&expected), "{log}");

    // After: calls go to B only, while the same daemon keeps running.
    let after: Vec<i64> =
        (0..3).map(|_| client_pid(run_client(&marker, &[&url, "read_attribute"], &[]))).collect();
    b.wait_for_blocking(|spans| all_served(spans, &after), Duration::from_secs(30));
    // The metrics, pushed to the same endpoint, moved too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.metrics_requests().is_empty() {
        assert!(Instant::now() < deadline, "no metrics at B after the reload");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!a.metrics_requests().is_empty(), "metrics went to A before the reload");
    assert!(matches!(daemon.proc.child.try_wait(), Ok(None)), "the daemon ended");
    assert_eq!(daemon.proc.pid(), daemon_pid);
    // No restart: the daemon was ready once.
    assert_eq!(daemon.log().matches("tango-tracer ready:").count(), 1, "{}", daemon.log());
    let stats = daemon.ctl(&["stats", "--json"]);
    daemon.stop();
    drop(server);

    let (at_a, at_b) = (a.spans(), b.spans());
    let all: Vec<SpanJson> = at_a.iter().chain(&at_b).cloned().collect();
    // Exactly once across A and B.
    let mut ids = HashSet::new();
    for span in &all {
        assert!(ids.insert(span.span_id.clone()), "span {} {} received twice", span.name, span.span_id);
    }
    let all_refs: Vec<&SpanJson> = all.iter().collect();
    // Every call before the reload arrived whole, at A or B.
    let calls_before = calls_of(&all_refs, &before);
    assert_eq!(calls_before.len(), before.len(), "calls before the reload: {calls_before:?}");
    assert!(calls_before.iter().all(|(_, served)| *served), "{calls_before:?}");
    assert!(!calls_of(&at_a.iter().collect::<Vec<_>>(), &before[..1]).is_empty(), "A got the first call");
    // Every call after the reload arrived whole at B and nothing of theirs at A.
    let b_refs: Vec<&SpanJson> = at_b.iter().collect();
    let calls_after = calls_of(&b_refs, &after);
    assert_eq!(calls_after.len(), after.len(), "{calls_after:?}");
    assert!(calls_after.iter().all(|(_, served)| *served), "{calls_after:?}");
    assert!(spans_of_traces(&at_a, &after).is_empty(), "spans of calls after the reload reached A");
    // Nothing dropped by either destination.
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("ctl stats --json");
    let text = stats.to_string();
    assert!(text.contains(&a.http_endpoint()) && text.contains(&b.http_endpoint()), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether process `pid` ignores or catches SIGHUP (`SigIgn`/`SigCgt` of `/proc/PID/status`).
fn sighup_taken(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().any(|line| {
        let mask = line.strip_prefix("SigIgn:").or_else(|| line.strip_prefix("SigCgt:"));
        mask.and_then(|m| u64::from_str_radix(m.trim(), 16).ok()).is_some_and(|m| m & 1 != 0)
    })
}

#[test]
fn sighup_while_the_daemon_starts_does_not_end_it() {
    crate::harness::require_root();
    let dir = test_dir("sighup-start");
    let ready = dir.join("ready");
    let child = Command::new(tracer_binary())
        .args(["run", "--user-spans", "off", "--select-env"])
        .arg(format!("{MARKER}={}", unique_marker("sighup-start")))
        .arg("--ready-file")
        .arg(&ready)
        .arg("--control-socket")
        .arg(dir.join("ctl.sock"))
        .arg("--store")
        .arg(dir.join("store.db"))
        .env("TANGO_TRACER_CONFIG", "")
        .spawn()
        .expect("starting tango-tracer run");
    let mut daemon = Proc { child, name: "tango-tracer".into() };
    // Before its `main` runs (exec, dynamic loading) SIGHUP's default action still applies, as
    // for any program: from the moment the process ignores or catches it (its first statement)
    // until it is ready (loading the probes takes a while), a SIGHUP every 2 ms.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sighup_taken(daemon.pid()) {
        assert!(
            Instant::now() < deadline && matches!(daemon.child.try_wait(), Ok(None)),
            "SIGHUP never taken"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut sent = 0;
    while !ready.exists() {
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(daemon.pid() as i32, libc::SIGHUP) };
        sent += 1;
        if let Ok(Some(status)) = daemon.child.try_wait() {
            panic!("the daemon ended ({status}) after {sent} SIGHUP(s)");
        }
        assert!(Instant::now() < deadline, "not ready within 60 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(sent > 10, "only {sent} SIGHUP(s) sent before it was ready");
    let status = daemon.stop_status(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A signal caught while the kernel verifies a program fails the load with EAGAIN (aya retries
/// it a few times): reloads, 50 a second, while the first Tango process makes the daemon load
/// its uprobe programs, cost none of them.
#[test]
fn sighup_while_probes_are_loaded_for_a_new_process_loses_none() {
    let marker = unique_marker("sighup-attach");
    let daemon = TracerDaemon::start(&marker, &[("TANGO_TRACER_CONFIG", "")], &["--user-spans", "on"]);
    let pid = daemon.proc.pid();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spammer = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: signalling our own child by its PID.
                unsafe { libc::kill(pid as i32, libc::SIGHUP) };
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // The first Tango process makes the daemon load its uprobe programs (events, log4tango, user code).
    let server = DemoServer::start(&marker, "sighup-attach", &["test/attach/1"]);
    run_client(&marker, &[&server.url("test/attach/1"), "read_attribute"], &[]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = spammer.join();
    let log = daemon.log();
    // Event pushes are marked on libtango's push_event (zmq_msg_send only where it cannot be).
    assert!(
        log.contains("uprobe Tango::ZmqEventSupplier::push_event at")
            || log.contains("uprobe zmq_msg_send at"),
        "{log}"
    );
    assert!(log.contains("uprobe log4tango::Logger::log_unconditionally at"), "{log}");
    assert!(!log.contains("failed"), "{log}");
    assert!(log.matches("SIGHUP: no configuration file at").count() > 10, "{log}");
    drop(server);
}
