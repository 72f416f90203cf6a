#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "tests")]

use std::collections::HashMap;

use super::*;

/// The default configuration file the package installs.
const SHIPPED: &str = include_str!("../../debian/config.toml");

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> =
        pairs.iter().map(|(n, v)| ((*n).to_string(), (*v).to_string())).collect();
    move |name: &str| map.get(name).cloned()
}

fn resolve_text(text: &str, env: &[(&str, &str)], flags: &RunFlags) -> Result<Settings, SettingsError> {
    let file = file::parse(text).unwrap();
    resolve(Some((Path::new("/etc/tango-tracer/config.toml"), &file)), &env_of(env), flags)
}

fn row<'a>(rows: &'a [Row], key: &str) -> &'a Row {
    rows.iter().find(|r| r.key == key).unwrap_or_else(|| panic!("no row {key}"))
}

/// The shipped file with every `# key = value` line made a setting.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest.split_once(" = ").is_some_and(|(key, _)| {
                    !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                }) =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_shipped_file_as_shipped_changes_nothing() {
    let shipped = resolve_text(SHIPPED, &[], &RunFlags::default()).unwrap();
    let defaults = resolve(None, &env_of(&[]), &RunFlags::default()).unwrap();
    assert_eq!(shipped.rows(), defaults.rows());
    assert!(shipped.rows().iter().all(|r| r.source == "default"));
    // The documented default: everything to the store, nothing on the network.
    let (spans, logs) = shipped.destinations(&env_of(&[])).unwrap();
    let store = Destination::Store { path: PathBuf::from("/var/lib/tango-tracer/store.db") };
    assert_eq!((spans, logs), (vec![store.clone()], vec![store]));
    assert!(shipped.peer_key.value.is_none() && shipped.metrics_listen.value.is_none());
    assert!(
        shipped.select_env.value.is_none()
            && shipped.pids.value.is_empty()
            && shipped.default_telemetry.value
    );
}

#[test]
fn the_shipped_file_names_every_key_with_its_default() {
    let all = uncommented(SHIPPED);
    let settings = resolve_text(&all, &[], &RunFlags::default()).unwrap();
    let defaults = resolve(None, &env_of(&[]), &RunFlags::default()).unwrap();
    for (set, default) in settings.rows().iter().zip(defaults.rows()) {
        assert_eq!(
            set.source, "file /etc/tango-tracer/config.toml",
            "{} is not in the shipped file",
            set.key
        );
        // A key with a default shows that default; the others show an example.
        if !default.value.starts_with('(') {
            assert_eq!(set.value, default.value, "{}: the shipped file says another default", set.key);
        }
    }
}

#[test]
fn flags_beat_the_environment_which_beats_the_file() {
    let text = "[export]\ninterval = \"500ms\"\nmemory = \"32MiB\"\nshutdown_timeout = \"2s\"\n\
                endpoint = \"http://file:4318\"\n[capture]\ngiop_bytes = 4096\n";
    let env = [
        ("TANGO_TRACER_EXPORT_INTERVAL", "2s"),
        ("TANGO_TRACER_EXPORT_MEMORY", "16MiB"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
        // Empty counts as unset.
        ("TANGO_TRACER_CAPTURE_BYTES", " "),
    ];
    let flags = RunFlags { export_interval: Some(Duration::from_secs(3)), ..RunFlags::default() };
    let rows = resolve_text(text, &env, &flags).unwrap().rows();
    assert_eq!(
        row(&rows, "export.interval"),
        &Row { key: "export.interval", value: "\"3s\"".into(), source: "flag --export-interval".into() }
    );
    assert_eq!(row(&rows, "export.memory").value, "\"16MiB\"");
    assert_eq!(row(&rows, "export.memory").source, "env TANGO_TRACER_EXPORT_MEMORY");
    assert_eq!(row(&rows, "export.shutdown_timeout").source, "file /etc/tango-tracer/config.toml");
    assert_eq!(row(&rows, "export.endpoint").value, "\"http://env:4318\"");
    assert_eq!(row(&rows, "export.endpoint").source, "env OTEL_EXPORTER_OTLP_ENDPOINT");
    assert_eq!(row(&rows, "capture.giop_bytes").value, "4096");
    assert_eq!(row(&rows, "export.memory").source, "env TANGO_TRACER_EXPORT_MEMORY");
    assert_eq!(row(&rows, "store.max_size").source, "default");
}

#[test]
fn an_endpoint_of_the_file_exports_as_the_same_variable_would() {
    let from_file = resolve_text(
        "[export]\nendpoint = \"http://c:4318\"\nlogs_protocol = \"grpc\"\n",
        &[],
        &RunFlags::default(),
    )
    .unwrap();
    let env =
        [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc")];
    let from_env = resolve(None, &env_of(&env), &RunFlags::default()).unwrap();
    let spans = vec![Destination::OtlpHttp { endpoint: "http://c:4318/v1/traces".into() }];
    let logs = vec![Destination::OtlpGrpc { endpoint: "http://c:4318".into() }];
    assert_eq!(from_file.destinations(&env_of(&[])).unwrap(), (spans.clone(), logs.clone()));
    assert_eq!(from_env.destinations(&env_of(&env)).unwrap(), (spans, logs));
    // Variables the file has no key for still come from the environment.
    let none = env_of(&[("OTEL_TRACES_EXPORTER", "none")]);
    assert_eq!(from_file.destinations(&none).unwrap().0, Vec::<Destination>::new());
}

#[test]
fn the_nice_value_only_lowers_the_priority() {
    let rows = resolve_text("[control]\nnice = 15\n", &[], &RunFlags::default()).unwrap().rows();
    assert_eq!(row(&rows, "control.nice").value, "15");
    let rows = resolve_text("", &[("TANGO_TRACER_NICE", "0")], &RunFlags::default()).unwrap().rows();
    assert_eq!(
        (row(&rows, "control.nice").value.as_str(), row(&rows, "control.nice").source.as_str()),
        ("0", "env TANGO_TRACER_NICE")
    );
    let error = resolve_text("", &[("TANGO_TRACER_NICE", "-5")], &RunFlags::default()).unwrap_err();
    assert!(error.to_string().contains("must be between 0 and 19"), "{error}");
    let error = super::file::parse("[control]\nnice = 20\n").unwrap_err().to_string();
    assert!(error.contains("must be between 0 and 19") && error.contains("line 2"), "{error}");
}

#[test]
fn a_bad_environment_value_is_named() {
    let error = resolve_text("", &[("TANGO_TRACER_PEER_WAIT", "20s")], &RunFlags::default()).unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("TANGO_TRACER_PEER_WAIT=\"20s\": must be more than 0 and at most 10s"),
        "{message}"
    );
}

#[test]
fn peer_settings_without_a_key_are_refused_naming_where_they_were_given() {
    let error = resolve_text("[peers]\nlisten = \"0.0.0.0:5000\"\n", &[], &RunFlags::default()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "peers.listen in /etc/tango-tracer/config.toml needs a peer key (--peer-key, peers.key_file): \
         cross-host linking is off without one"
    );
    let flags = RunFlags { peer_key: Some(PathBuf::from("/k")), ..RunFlags::default() };
    assert!(resolve_text("[peers]\nlisten = \"0.0.0.0:5000\"\n", &[], &flags).is_ok());
}

#[test]
fn a_reload_applies_destinations_and_rules_and_names_what_needs_a_restart() {
    let before = "[export]\nendpoint = \"http://a:4318\"\n[sampling]\ntail = \"errors\"\n";
    let after = "[export]\nendpoint = \"http://b:4318\"\n[sampling]\ntail = \"errors,ratio=0.5\"\n\
                 [control]\nsocket = \"/run/other.sock\"\n[metrics]\ninterval = \"2s\"\n";
    let flags = RunFlags { export_interval: Some(Duration::from_millis(200)), ..RunFlags::default() };
    let running = resolve_text(before, &[], &flags).unwrap();
    let new = resolve_text(after, &[], &flags).unwrap();
    let plan = plan_reload(&running, &new);
    let summary: Vec<(&str, bool)> = plan.changes.iter().map(|c| (c.key, c.applied)).collect();
    assert_eq!(
        summary,
        vec![
            ("export.endpoint", true),
            ("metrics.interval", true),
            ("sampling.tail", true),
            ("control.socket", false),
        ]
    );
    assert_eq!(
        plan.changes[3].to_string(),
        "control.socket: \"/run/tango-tracer/ctl.sock\" → \"/run/other.sock\" (file /etc/tango-tracer/config.toml): \
         needs a restart (the running value stays)"
    );
    let rows = plan.settings.rows();
    assert_eq!(row(&rows, "export.endpoint").value, "\"http://b:4318\"");
    assert_eq!(row(&rows, "control.socket").value, "\"/run/tango-tracer/ctl.sock\"");
    // The flag still wins over the file after a reload.
    assert_eq!(row(&rows, "export.interval").source, "flag --export-interval");
    // Turning tail sampling off needs a restart: held traces would go undecided.
    let off = resolve_text("[export]\nendpoint = \"http://a:4318\"\n", &[], &flags).unwrap();
    let plan = plan_reload(&running, &off);
    assert_eq!(
        plan.changes.iter().map(|c| (c.key, c.applied)).collect::<Vec<_>>(),
        vec![("sampling.tail", false)]
    );
}

#[test]
fn the_config_file_is_chosen_by_flag_then_environment() {
    let env = env_of(&[(CONFIG_ENV, "/srv/t.toml")]);
    let chosen = ConfigFile::choose(Some(PathBuf::from("/x.toml")), &env);
    assert_eq!((chosen.path, chosen.source), (PathBuf::from("/x.toml"), Source::Flag("--config")));
    let chosen = ConfigFile::choose(None, &env);
    assert_eq!((chosen.path, chosen.source), (PathBuf::from("/srv/t.toml"), Source::Env(CONFIG_ENV)));
    let chosen = ConfigFile::choose(None, &env_of(&[]));
    assert_eq!(chosen.path, PathBuf::from(DEFAULT_PATH));
    // A default file that is absent is no error; a named one is.
    let absent = ConfigFile { path: PathBuf::from("/nonexistent/config.toml"), source: Source::Default };
    assert!(absent.read().unwrap().is_none());
    let named = ConfigFile { source: Source::Env(CONFIG_ENV), ..absent };
    assert!(named.read().unwrap_err().to_string().contains("/nonexistent/config.toml"));
}
