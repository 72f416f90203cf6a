//! The Debian package, installed and removed as an administrator would (`dpkg -i`, `dpkg
//! --purge`): its files where the unit expects them, the unit clean for `systemd-analyze verify`,
//! the daemon run as the unit runs it — its user, exactly its capabilities, no new privileges —
//! tracing a PyTango call end to end, refusing to start without any one of those capabilities,
//! and nothing of it left after the purge: files, user, process, eBPF programs, maps, links,
//! socket.
//!
//! The test machine has no running systemd, so the unit's `User=`, `AmbientCapabilities=`,
//! `CapabilityBoundingSet=` and `NoNewPrivileges=` are applied with `setpriv`, read from the
//! installed unit; its `RuntimeDirectory=` is made as systemd would make it, and its read-only
//! file system (`ProtectSystem=strict`, `ProtectKernelTunables=`) is approximated by a mount
//! namespace where everything but those directories is read-only.
//!
//! The package is `target/debian/tango-tracer_<version>_amd64.deb` (`cargo xtask package`, which
//! `cargo xtask test` runs first), or `TANGO_TRACER_DEB`. A package already installed when the
//! test starts is purged first; the test purges what it installed also when it fails.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use tracer_export::{json::SpanJson, tree::render_trees};

use crate::{
    harness::{
        DaemonLaunch, DemoServer, MARKER, ServiceLaunch, TracerDaemon, require_root, run_client,
        unique_marker,
    },
    otlp_receiver::OtlpReceiver,
};

const PACKAGE: &str = "tango-tracer";
const USER: &str = "tango-tracer";
const BINARY: &str = "/usr/bin/tango-tracer";
const CONFIG: &str = "/etc/tango-tracer/config.toml";
const STATE_DIR: &str = "/var/lib/tango-tracer";
const RUNTIME_DIR: &str = "/run/tango-tracer";
const README: &str = "/usr/share/doc/tango-tracer/README.md";
const ENABLED_LINK: &str = "/etc/systemd/system/multi-user.target.wants/tango-tracer.service";
const WAIT: Duration = Duration::from_secs(30);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The package under test.
fn deb() -> PathBuf {
    let deb = std::env::var_os("TANGO_TRACER_DEB").map(PathBuf::from).unwrap_or_else(|| {
        workspace_root().join(format!("target/debian/{PACKAGE}_{}_amd64.deb", env!("CARGO_PKG_VERSION")))
    });
    assert!(deb.exists(), "no package at {}: run `cargo xtask package` first", deb.display());
    deb
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{program} {args:?}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn installed() -> bool {
    let output = run("dpkg-query", &["-W", "-f=${Status}", PACKAGE]);
    String::from_utf8_lossy(&output.stdout).contains("install ok installed")
}

/// Purges the package when dropped, also when the test fails: the machine is left as found
/// (without the package).
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let output = run("dpkg", &["--purge", PACKAGE]);
        if !output.status.success() {
            eprintln!("dpkg --purge {PACKAGE}: {}", String::from_utf8_lossy(&output.stderr));
        }
    }
}

/// `getent passwd|group NAME`: its fields, if it exists.
fn getent(database: &str, name: &str) -> Option<Vec<String>> {
    let output = run("getent", &[database, name]);
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().split(':').map(str::to_owned).collect())
}

/// The settings of the unit's `[Service]` section, in order (a key may repeat).
fn service_settings(unit: &str) -> Vec<(String, String)> {
    let mut section = "";
    let mut settings = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section == "[Service]"
            && let Some((key, value)) = line.split_once('=')
        {
            settings.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    settings
}

fn setting<'a>(settings: &'a [(String, String)], key: &str) -> &'a str {
    let values: Vec<_> = settings.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect();
    assert_eq!(values.len(), 1, "the unit should set {key}= once: {values:?}");
    values[0]
}

/// A capability list of the unit (`CAP_BPF CAP_PERFMON`) as a set of names.
fn capabilities(list: &str) -> BTreeSet<String> {
    list.split_whitespace().map(str::to_owned).collect()
}

/// `CAP_SYS_PTRACE` → `sys_ptrace`, as setpriv names it.
fn setpriv_name(capability: &str) -> String {
    capability.trim_start_matches("CAP_").to_ascii_lowercase()
}

/// `setpriv` as the unit runs the service: its user and group, `capabilities` inheritable,
/// ambient and bounding (nothing else), no new privileges.
fn setpriv(capabilities: &BTreeSet<String>) -> Vec<String> {
    let list: String = capabilities.iter().map(|c| format!(",+{}", setpriv_name(c))).collect();
    vec![
        "setpriv".into(),
        format!("--reuid={USER}"),
        format!("--regid={USER}"),
        "--init-groups".into(),
        format!("--inh-caps=-all{list}"),
        format!("--ambient-caps=-all{list}"),
        format!("--bounding-set=-all{list}"),
        "--no-new-privs".into(),
        "--".into(),
    ]
}

/// What systemd's `ProtectSystem=strict` and `ProtectKernelTunables=` make of the file system,
/// approximated: a mount namespace of its own in which every mount (`/sys`, tracefs and `/proc`
/// included) is read-only but `writable` (the unit's state and runtime directories, the test's
/// directory). Put in front of [`setpriv`].
fn read_only_system(writable: &[&Path]) -> Vec<String> {
    let script = r#"set -e
for dir in "$@"; do [ "$dir" = -- ] && break; mount --bind "$dir" "$dir"; done
for point in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do
    mount -o remount,bind,ro "$point" 2>/dev/null || true
done
while [ "$1" != -- ]; do mount -o remount,bind,rw "$1" "$1"; shift; done
shift
exec "$@""#;
    let mut wrapper: Vec<String> =
        ["unshare", "--mount", "--propagation", "slave", "sh", "-c", script, "sh"].map(str::to_owned).into();
    wrapper.extend(writable.iter().map(|p| p.display().to_string()));
    wrapper.push("--".to_owned());
    wrapper
}

/// Runs `tango-tracer run` as the service with only `capabilities`: it must refuse to start;
/// returns what it said.
fn refused_start(exec_start: &[String], capabilities: &BTreeSet<String>) -> String {
    let wrapper = setpriv(capabilities);
    let mut child = Command::new(&wrapper[0])
        .args(&wrapper[1..])
        .args(exec_start)
        .args(["--select-env", &format!("{MARKER}=refused-start")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the daemon under setpriv");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("waiting for the daemon").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon with only {capabilities:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("reading the daemon's output");
    assert!(!output.status.success(), "the daemon with only {capabilities:?} exited successfully");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The capability names a refusal message lists as missing (`missing CAP_BPF (to …), …`).
fn named_missing(message: &str) -> BTreeSet<String> {
    let Some((_, after)) = message.split_once("missing ") else {
        panic!("the daemon's refusal names no missing capability: {message}");
    };
    // The list ends at the sentence's end; the advice after it names no capability.
    let list = after.split(". ").next().unwrap_or_default();
    list.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("CAP_"))
        .map(str::to_owned)
        .collect()
}

/// Ids of every eBPF object of one kind loaded in the kernel (`BPF_*_GET_NEXT_ID`).
fn bpf_ids(get_next_id: libc::c_long) -> BTreeSet<u32> {
    // `union bpf_attr` for the GET_NEXT_ID commands: start_id, next_id, open_flags.
    #[repr(C)]
    struct NextId {
        start_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    let mut ids = BTreeSet::new();
    let mut attr = NextId { start_id: 0, next_id: 0, open_flags: 0 };
    loop {
        // SAFETY: bpf(2) reads and writes `attr`, a live value of the size passed.
        let result = unsafe {
            libc::syscall(libc::SYS_bpf, get_next_id, &mut attr as *mut NextId, size_of::<NextId>() as u32)
        };
        if result != 0 {
            break;
        }
        ids.insert(attr.next_id);
        attr.start_id = attr.next_id;
    }
    ids
}

const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
const BPF_MAP_GET_NEXT_ID: libc::c_long = 12;
const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;

/// The eBPF programs, maps and links a process holds open: (kind, id) from `/proc/<pid>/fdinfo`.
fn bpf_objects_of(pid: u32) -> BTreeSet<(&'static str, u32)> {
    let mut objects = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return objects;
    };
    for entry in entries.flatten() {
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in info.lines() {
            for kind in ["prog_id", "map_id", "link_id"] {
                if let Some(id) = line.strip_prefix(kind).and_then(|rest| rest.strip_prefix(':'))
                    && let Ok(id) = id.trim().parse()
                {
                    objects.insert((kind, id));
                }
            }
        }
    }
    objects
}

/// Pids of the processes running as `uid`.
fn processes_of(uid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("reading /proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let real_uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next()?.parse::<u32>().ok());
        if real_uid == Some(uid) {
            pids.push(pid);
        }
    }
    pids
}

/// A `/proc/<pid>/status` capability mask as names, for the capabilities in `names`.
fn mask(names: &BTreeSet<String>) -> u64 {
    names
        .iter()
        .map(|name| match name.as_str() {
            "CAP_DAC_READ_SEARCH" => 1u64 << 2,
            "CAP_SYS_PTRACE" => 1 << 19,
            "CAP_SYS_ADMIN" => 1 << 21,
            "CAP_PERFMON" => 1 << 38,
            "CAP_BPF" => 1 << 39,
            other => panic!("the test knows no number for {other}: add it"),
        })
        .fold(0, |all, bit| all | bit)
}

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading the daemon's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|rest| rest.strip_prefix(':')))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {field} in the daemon's status"))
}

fn find<'a>(spans: &'a [SpanJson], name: &str, kind: &str) -> &'a SpanJson {
    spans
        .iter()
        .find(|s| s.name == name && s.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} span {name} in\n{}", render_trees(spans)))
}

#[test]
fn package_installs_runs_with_the_units_privileges_and_purges_without_a_trace() {
    require_root();
    let deb = deb();
    if installed() {
        run_ok("dpkg", &["--purge", PACKAGE]);
    }
    let _purge = Purge;
    run_ok("dpkg", &["-i", &deb.display().to_string()]);
    assert!(installed(), "dpkg -i left {PACKAGE} not installed");

    // Files where the unit expects them.
    let files = run_ok("dpkg", &["-L", PACKAGE]);
    let unit_path = files
        .lines()
        .find(|l| l.ends_with("/systemd/system/tango-tracer.service"))
        .unwrap_or_else(|| panic!("no systemd unit in the package:\n{files}"))
        .to_owned();
    assert!(
        Path::new("/lib/systemd/system/tango-tracer.service").exists(),
        "the unit is not where systemd looks: {unit_path}"
    );
    for file in [BINARY, CONFIG, README] {
        assert!(files.lines().any(|l| l == file), "{file} is not in the package:\n{files}");
        assert!(Path::new(file).is_file(), "{file} not installed");
    }
    let shared_dirs: BTreeSet<&str> =
        files.lines().filter(|l| Path::new(l).is_dir() && !l.contains("tango-tracer")).collect();
    let conffiles = run_ok("dpkg-query", &["-W", "-f=${Conffiles}", PACKAGE]);
    assert!(conffiles.contains(CONFIG), "{CONFIG} is not a conffile: {conffiles}");
    assert!(Path::new(ENABLED_LINK).is_symlink(), "the unit is not enabled ({ENABLED_LINK})");

    // The user and its state directory.
    let user = getent("passwd", USER).unwrap_or_else(|| panic!("no user {USER}"));
    let (uid, gid): (u32, u32) = (user[2].parse().unwrap(), user[3].parse().unwrap());
    assert!(uid < 1000, "{USER} is not a system user (uid {uid})");
    assert_eq!(user[5], STATE_DIR, "the user's home");
    assert!(user[6].ends_with("nologin"), "the user can log in: shell {}", user[6]);
    let group = getent("group", USER).unwrap_or_else(|| panic!("no group {USER}"));
    assert_eq!(group[2], gid.to_string(), "the user's primary group is {USER}");
    let state = std::fs::metadata(STATE_DIR).expect("the state directory");
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!((state.uid(), state.gid()), (uid, gid), "{STATE_DIR} belongs to {USER}");
    assert_eq!(state.mode() & 0o7777, 0o750, "{STATE_DIR} is open to others");
    // Installing started nothing here (no systemd running): the default is the unit's to start.
    assert!(processes_of(uid).is_empty(), "something runs as {USER} after dpkg -i: {:?}", processes_of(uid));

    // Installing again (an upgrade's path through the maintainer scripts) keeps the
    // administrator's configuration and the user.
    let edited = format!("{}# edited by the administrator\n", std::fs::read_to_string(CONFIG).unwrap());
    std::fs::write(CONFIG, &edited).unwrap();
    run_ok("dpkg", &["-i", &deb.display().to_string()]);
    assert_eq!(std::fs::read_to_string(CONFIG).unwrap(), edited, "installing again replaced {CONFIG}");
    assert_eq!(getent("passwd", USER), Some(user.clone()), "installing again changed the user");

    // The unit is clean for systemd.
    let verify = run("systemd-analyze", &["verify", &unit_path]);
    let said =
        format!("{}{}", String::from_utf8_lossy(&verify.stdout), String::from_utf8_lossy(&verify.stderr));
    let about_unit: Vec<_> = said.lines().filter(|l| l.contains("tango-tracer")).collect();
    assert!(verify.status.success() && about_unit.is_empty(), "systemd-analyze verify {unit_path}:\n{said}");

    // The unit's privileges: its user, and one capability set, ambient and bounding alike.
    let unit = std::fs::read_to_string(&unit_path).expect("reading the unit");
    let settings = service_settings(&unit);
    assert_eq!(setting(&settings, "User"), USER);
    assert_eq!(setting(&settings, "Group"), USER);
    assert_eq!(setting(&settings, "NoNewPrivileges"), "yes");
    assert_eq!(setting(&settings, "RuntimeDirectory"), "tango-tracer");
    assert_eq!(setting(&settings, "StateDirectory"), "tango-tracer");
    let granted = capabilities(setting(&settings, "AmbientCapabilities"));
    assert_eq!(
        granted,
        capabilities(setting(&settings, "CapabilityBoundingSet")),
        "ambient and bounding differ"
    );
    let exec_start: Vec<String> =
        setting(&settings, "ExecStart").split_whitespace().map(str::to_owned).collect();
    assert_eq!(exec_start[..2], [BINARY, "run"], "the unit runs something else");

    // The daemon's own list of what it needs, from its refusal with none: exactly the unit's.
    let refusal = refused_start(&exec_start, &BTreeSet::new());
    assert_eq!(
        named_missing(&refusal),
        granted,
        "the unit grants other capabilities than the daemon needs:\n{refusal}"
    );
    // Without any one of them it refuses to start, naming that one alone.
    for missing in &granted {
        let mut fewer = granted.clone();
        fewer.remove(missing);
        let refusal = refused_start(&exec_start, &fewer);
        assert_eq!(
            named_missing(&refusal),
            BTreeSet::from([missing.clone()]),
            "without {missing} the daemon should name it alone:\n{refusal}"
        );
    }

    // With exactly the unit's capabilities, as its user, on a read-only system, it traces a
    // PyTango call end to end. systemd makes the RuntimeDirectory= before the start; here the
    // test does, fresh as systemd makes it at each start (a lock file left by a daemon once run
    // by hand as root would otherwise be in the way).
    let _ = std::fs::remove_dir_all(RUNTIME_DIR);
    run_ok("install", &["-d", "-o", USER, "-g", USER, "-m", "0750", RUNTIME_DIR]);
    let receiver = OtlpReceiver::start_blocking();
    let marker = unique_marker("package");
    let server = DemoServer::start(&marker, "package", &["test/demo/1"]);
    let endpoint = receiver.http_endpoint().trim_end_matches("/v1/traces").to_owned();
    let dir_name = format!("tango-tracer-{marker}");
    let test_dir = std::env::temp_dir().join(&dir_name);
    let mut wrapper = read_only_system(&[Path::new(STATE_DIR), Path::new(RUNTIME_DIR), &test_dir]);
    wrapper.extend(setpriv(&granted));
    let mut daemon = TracerDaemon::launch(&DaemonLaunch {
        dir_name,
        select_marker: marker.clone(),
        env: vec![("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), endpoint)],
        // User-level spans are on by default: as the unit runs it.
        args: vec!["--user-spans".to_owned(), "on".to_owned()],
        service: Some(ServiceLaunch {
            wrapper,
            exec_start: exec_start.clone(),
            owner: (uid, gid),
            control_socket: Path::new(RUNTIME_DIR).join("ctl.sock"),
        }),
        ..Default::default()
    });
    let pid = daemon.proc.pid();
    assert_eq!(status_field(pid, "Uid").split_whitespace().next(), Some(uid.to_string().as_str()));
    for field in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        let value = u64::from_str_radix(&status_field(pid, field), 16).expect("a capability mask");
        assert_eq!(value, mask(&granted), "{field} of the daemon is not the unit's set");
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    let mut held = bpf_objects_of(pid);
    assert!(held.iter().any(|(kind, _)| *kind == "prog_id"), "the daemon holds no eBPF program: {held:?}");
    // The default control socket, in the runtime directory, answers.
    let stats = daemon.ctl(&["stats", "--json"]);
    assert!(stats.contains("\"lost\""), "ctl stats: {stats}");

    let out = run_client(&marker, &[&server.url("test/demo/1"), "read_attribute"], &[]);
    assert_eq!(out["steps"]["read_attribute"], "ok", "{out}");
    let spans = receiver.wait_for_blocking(
        |spans| {
            spans.iter().any(|s| s.name == "Tango::DeviceProxy::read_attribute")
                && spans.iter().any(|s| s.name == "Tango::Device_5Impl::read_attributes_5")
        },
        WAIT,
    );
    let client = find(&spans, "Tango::DeviceProxy::read_attribute", "CLIENT");
    let served = find(&spans, "Tango::Device_5Impl::read_attributes_5", "SERVER");
    assert_eq!(
        (&served.trace_id, &served.parent_span_id),
        (&client.trace_id, &client.span_id),
        "the server span is not the client span's child:\n{}",
        render_trees(&spans)
    );
    // Programs attached since the start (user-level probes) count too.
    held.extend(bpf_objects_of(pid));
    // The kernel's enumeration sees them while the daemon runs, so its silence after the purge
    // means they are gone (not that listing is broken).
    let listed = bpf_ids(BPF_PROG_GET_NEXT_ID);
    for (_, id) in held.iter().filter(|(kind, _)| *kind == "prog_id") {
        assert!(listed.contains(id), "program {id} of the running daemon not listed by bpf(): {listed:?}");
    }
    // Every probe attached with the unit's capabilities alone (uprobes included: the ZMQ, logging
    // and user-level ones).
    let log = daemon.log();
    let failures: Vec<_> = log.lines().filter(|l| l.contains("failed") || l.contains("ERROR")).collect();
    assert!(
        failures.is_empty(),
        "the daemon with only {granted:?} reported failures:\n{}",
        failures.join("\n")
    );
    daemon.stop();
    assert!(!Path::new(RUNTIME_DIR).join("ctl.sock").exists(), "the daemon left its control socket");
    drop(server);

    // Purge: nothing of the package left.
    run_ok("dpkg", &["--purge", PACKAGE]);
    assert!(!installed(), "{PACKAGE} still installed after the purge");
    // Every file of the package, and every directory of its own (the shared ones, /usr/bin, /etc,
    // stay).
    for path in files.lines().filter(|l| !shared_dirs.contains(*l)) {
        assert!(std::fs::symlink_metadata(path).is_err(), "{path} left after the purge");
    }
    for dir in [STATE_DIR, RUNTIME_DIR, "/etc/tango-tracer", "/usr/share/doc/tango-tracer", ENABLED_LINK] {
        assert!(std::fs::symlink_metadata(dir).is_err(), "{dir} left after the purge");
    }
    assert!(getent("passwd", USER).is_none(), "user {USER} left after the purge");
    assert!(getent("group", USER).is_none(), "group {USER} left after the purge");
    assert!(processes_of(uid).is_empty(), "processes of {USER} left: {:?}", processes_of(uid));
    let (programs, maps, links) =
        (bpf_ids(BPF_PROG_GET_NEXT_ID), bpf_ids(BPF_MAP_GET_NEXT_ID), bpf_ids(BPF_LINK_GET_NEXT_ID));
    for (kind, id) in &held {
        let alive = match *kind {
            "prog_id" => programs.contains(id),
            "map_id" => maps.contains(id),
            _ => links.contains(id),
        };
        assert!(!alive, "the daemon's eBPF {kind} {id} is still loaded after the purge");
    }
    let probes = std::fs::read_to_string("/sys/kernel/tracing/uprobe_events").unwrap_or_default();
    assert!(
        !probes.lines().any(|l| l.contains(&format!("aya_{pid}_"))),
        "uprobe events of the daemon left:\n{probes}"
    );
}
