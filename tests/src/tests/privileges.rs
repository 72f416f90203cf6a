//! The daemon as an unprivileged user with only the capabilities it needs (what the service
//! unit grants): it traces calls and events end to end; without any one of them it refuses to
//! start, naming it, before it loads anything.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use tracer_export::tree::render_trees;

use super::events::{event_client, of_pid};
use crate::{
    harness::{DaemonLaunch, DemoServer, MARKER, TracerDaemon, run_client, tracer_binary, unique_marker},
    otlp_receiver::OtlpReceiver,
};

/// The capabilities the daemon needs (setpriv's names), and no other.
pub(super) const NEEDED: [&str; 4] = ["bpf", "perfmon", "sys_ptrace", "dac_read_search"];
/// Their bits in `CapEff`.
const NEEDED_MASK: u64 = (1 << 39) | (1 << 38) | (1 << 19) | (1 << 2);

const WAIT: Duration = Duration::from_secs(30);

/// `setpriv … --`: user `nobody`, no groups, no new privileges, and exactly `caps` as ambient,
/// inheritable and bounding sets (what `User=`, `AmbientCapabilities=`,
/// `CapabilityBoundingSet=` and `NoNewPrivileges=` make of a service).
pub(super) fn as_nobody_with(caps: &[&str]) -> Vec<String> {
    let plus: Vec<String> = caps.iter().map(|c| format!("+{c}")).collect();
    let only = std::iter::once("-all".to_owned()).chain(plus.iter().cloned()).collect::<Vec<_>>().join(",");
    let mut command: Vec<String> =
        ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "--no-new-privs"]
            .map(str::to_owned)
            .into();
    command.extend(["--inh-caps".to_owned(), only.clone(), "--bounding-set".to_owned(), only]);
    if !plus.is_empty() {
        command.extend(["--ambient-caps".to_owned(), plus.join(",")]);
    }
    command.push("--".to_owned());
    command
}

/// The daemon binary where `nobody` may run it: the build's own when every directory above it
/// lets others in, else a copy (mode 0755) in a directory of the test's.
pub(super) fn binary_for_nobody(test: &str) -> PathBuf {
    let binary = tracer_binary();
    let runnable = Command::new("setpriv")
        .args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "test", "-x"])
        .arg(&binary)
        .status()
        .expect("running setpriv")
        .success();
    if runnable {
        return binary;
    }
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("tango-tracer-bin-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a directory for the binary");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let copy = dir.join("tango-tracer");
    std::fs::copy(&binary, &copy).expect("copying the daemon binary");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    copy
}

fn endpoint(receiver: &OtlpReceiver) -> String {
    receiver.http_endpoint().trim_end_matches("/v1/traces").to_string()
}

#[test]
fn as_nobody_with_the_needed_capabilities_calls_and_events_are_traced() {
    crate::harness::require_root();
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("privileges");
    let server = DemoServer::start(&marker, "priv", &["test/demo/1"]);
    let mut daemon = TracerDaemon::launch(&DaemonLaunch {
        dir_name: format!("tango-tracer-{marker}"),
        select_marker: marker.clone(),
        env: vec![("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), endpoint(&receiver))],
        args: vec!["--user-spans".to_owned(), "on".to_owned()],
        wrapper: as_nobody_with(&NEEDED),
        binary: Some(binary_for_nobody("privileges")),
        ..Default::default()
    });
    // It really is nobody, with these capabilities and no other.
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.proc.pid())).expect("status");
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_default().to_owned()
    };
    assert!(field("Uid:").starts_with("65534"), "{status}");
    assert_eq!(u64::from_str_radix(&field("CapEff:"), 16), Ok(NEEDED_MASK), "{status}");

    let url = server.url("test/demo/1");
    let out = run_client(&marker, &[&url, "read_attribute"], &[]);
    assert_eq!(out["steps"]["read_attribute"], "ok");
    let (pusher, got) = event_client(&marker, &[&url, "temperature", "2", "--push", "PushTemperature"]);
    assert_eq!(got, 3, "initial value and two pushes");
    let server_pid = i64::from(server.proc.pid());
    let client_pid = out["pid"].as_i64().expect("pid");
    let spans = receiver.wait_for_blocking(
        |s| {
            !of_pid(s, client_pid, "Tango::DeviceProxy::read_attribute").is_empty()
                && of_pid(s, server_pid, "Tango::ZmqEventSupplier::push_event").len() >= 2
                && of_pid(s, pusher, "Tango::ZmqEventConsumer::push_zmq_event").len() >= 2
                && !of_pid(s, server_pid, "Demo.temperature").is_empty()
        },
        WAIT,
    );
    daemon.stop();
    let dump = render_trees(&spans);
    let log = daemon.log();

    // The call: client and server spans, one trace.
    let client = of_pid(&spans, client_pid, "Tango::DeviceProxy::read_attribute")[0];
    assert_eq!(client.kind, "CLIENT");
    let server_span = spans
        .iter()
        .find(|s| s.parent_span_id == client.span_id && s.kind == "SERVER")
        .unwrap_or_else(|| panic!("no server span under the client's read_attribute:\n{dump}"));
    assert_eq!(server_span.name, "Tango::Device_5Impl::read_attributes_5");
    assert_eq!(server_span.trace_id, client.trace_id);
    // User code inside the request (uprobes on libtango's branches).
    assert!(!of_pid(&spans, server_pid, "Demo.temperature").is_empty(), "{dump}");

    // The events: the ZMQ uprobe marks each push (PRODUCER); each delivery (CONSUMER) is linked
    // to its push.
    let pushes = of_pid(&spans, server_pid, "Tango::ZmqEventSupplier::push_event");
    for push in &pushes {
        assert_eq!(push.kind, "PRODUCER", "{dump}");
    }
    for delivery in of_pid(&spans, pusher, "Tango::ZmqEventConsumer::push_zmq_event") {
        assert_eq!(delivery.kind, "CONSUMER");
        let linked = delivery.links.first().map(|l| l.span_id.as_str()).unwrap_or_default();
        assert!(pushes.iter().any(|p| p.span_id == linked), "delivery not linked to a push:\n{dump}");
    }
    // Every uprobe attached, and nothing was refused. Pushes are marked on libtango's
    // push_event (zmq_msg_send only where that cannot be probed cheaply, not with this libtango).
    for what in [
        "uprobe Tango::ZmqEventSupplier::push_event at",
        "uprobe log4tango::Logger::log_unconditionally at",
        "user-level spans:",
    ] {
        assert!(log.contains(what), "no `{what}` in the log:\n{log}");
    }
    for line in log.lines() {
        assert!(!line.contains(" WARN ") && !line.contains(" ERROR "), "{line}");
    }
}

#[test]
fn without_any_one_needed_capability_the_daemon_refuses_to_start_naming_it() {
    crate::harness::require_root();
    let binary = binary_for_nobody("privileges-missing");
    let dir = std::env::temp_dir().join(format!("tango-tracer-privileges-missing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the test directory");
    for missing in NEEDED {
        let caps: Vec<&str> = NEEDED.iter().copied().filter(|c| *c != missing).collect();
        let wrapper = as_nobody_with(&caps);
        let output = Command::new(&wrapper[0])
            .args(&wrapper[1..])
            .arg(&binary)
            .args(["run", "--select-env", &format!("{MARKER}=none"), "--exporter", "store"])
            .arg("--ready-file")
            .arg(dir.join("ready"))
            .arg("--control-socket")
            .arg(dir.join("ctl.sock"))
            .env("TANGO_TRACER_STORE", dir.join("spans.jsonl"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .output()
            .expect("running the daemon");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "started without {missing}:\n{stderr}");
        let name = format!("CAP_{}", missing.to_ascii_uppercase());
        assert!(stderr.contains(&format!("missing {name} (to ")), "without {missing}:\n{stderr}");
        for other in caps {
            assert!(!stderr.contains(&format!("CAP_{} (to", other.to_ascii_uppercase())), "{stderr}");
        }
        // Refused before anything was loaded or created.
        assert!(!stderr.contains("probes attached"), "{stderr}");
        assert!(!dir.join("ready").exists() && !dir.join("ctl.sock").exists());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
