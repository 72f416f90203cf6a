//! The daemon's scheduling priority: below the processes it traces unless told otherwise, never
//! above what it was started with, and it traces as before at that priority.

use std::time::Duration;

use crate::{
    harness::{DaemonLaunch, DemoServer, TracerDaemon, run_client, unique_marker},
    otlp_receiver::OtlpReceiver,
    tests::pytango::wait_for_count,
};

const WAIT: Duration = Duration::from_secs(30);
/// What the daemon logs when it lowers its priority.
const LOWERED_LOG: &str = "running at nice";

/// The nice value of this test's thread.
fn our_nice() -> i32 {
    nice_of_threads(std::process::id()).into_iter().min().expect("a thread of ours")
}

/// The nice value of every thread of process `pid` (field 19 of `/proc/<pid>/task/<tid>/stat`).
fn nice_of_threads(pid: u32) -> Vec<i32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("listing the threads");
    let mut nice = Vec::new();
    for task in tasks {
        let stat =
            std::fs::read_to_string(task.expect("a thread").path().join("stat")).expect("a thread's stat");
        // After the command name in parentheses: the state is field 3, the nice value field 19.
        let (_, fields) = stat.rsplit_once(')').expect("a stat line");
        let value = fields.split_whitespace().nth(16).expect("the nice field");
        nice.push(value.parse().expect("a nice value"));
    }
    nice
}

#[test]
fn the_daemon_runs_below_the_processes_it_traces_and_traces_them() {
    let marker = unique_marker("priority");
    let receiver = OtlpReceiver::start_blocking();
    let endpoint = receiver.http_endpoint().trim_end_matches("/v1/traces").to_string();
    let server = DemoServer::start(&marker, "priority", &["test/priority/1"]);
    let mut daemon = TracerDaemon::start(&marker, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)], &[]);
    let ours = our_nice();
    let threads = nice_of_threads(daemon.proc.pid());
    let want = ours.max(10);
    assert!(!threads.is_empty() && threads.iter().all(|&n| n == want), "daemon threads at nice {threads:?}");
    assert_eq!(daemon.log().contains("running at nice 10"), ours < 10, "{}", daemon.log());
    // The traced processes are read, never touched: the server keeps its own priority.
    let server_threads = nice_of_threads(server.proc.pid());
    assert!(
        server_threads.iter().all(|&n| n == ours),
        "server threads at nice {server_threads:?}, ours {ours}"
    );

    let out = run_client(&marker, &[&server.url("test/priority/1"), "read_attribute"], &[]);
    assert_eq!(out["steps"]["read_attribute"], "ok", "{out}");
    // The DeviceProxy, the read's client span and its server span.
    wait_for_count(&receiver, 3, WAIT);
    daemon.stop();
}

#[test]
fn a_lower_priority_it_was_started_with_stays_and_zero_leaves_it_as_started() {
    let marker = unique_marker("priority-kept");
    let launch = |dir: &str, wrapper: &[&str], args: &[&str]| DaemonLaunch {
        dir_name: format!("tango-tracer-{marker}-{dir}"),
        select_marker: marker.clone(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        wrapper: wrapper.iter().map(|a| (*a).to_owned()).collect(),
        ..DaemonLaunch::default()
    };

    // Started lower than its setting (systemd's Nice=15): it stays there.
    let mut daemon = TracerDaemon::launch(&launch("nice15", &["nice", "-n", "15"], &[]));
    let ours = our_nice();
    let threads = nice_of_threads(daemon.proc.pid());
    assert!(threads.iter().all(|&n| n == ours.max(15)), "daemon threads at nice {threads:?}");
    assert!(!daemon.log().contains(LOWERED_LOG), "{}", daemon.log());
    daemon.stop();

    // --nice 0: the priority it was started with, ours.
    let mut daemon = TracerDaemon::launch(&launch("nice0", &[], &["--nice", "0"]));
    let threads = nice_of_threads(daemon.proc.pid());
    assert!(threads.iter().all(|&n| n == ours), "daemon threads at nice {threads:?}, ours {ours}");
    assert!(!daemon.log().contains(LOWERED_LOG), "{}", daemon.log());
    daemon.stop();
}
