//! Spans and helpers for tests of this crate and of the integration tests (feature `testing`).
//!
//! The spans mirror cppTango 10.3.3's own telemetry for one `command_inout` (client span in the
//! client process, server span in the device server) and for a failed call (status ERROR and an
//! `exception caught` event), as captured in the reference files kept under `tests/fixtures/`.
//! The log records mirror cppTango 10.3.3's own log records of a PyTango device
//! (`device_logs.json`): one logged from a thread of the device's own, two inside a command.

use std::{
    borrow::Cow,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use opentelemetry::{
    InstrumentationScope, KeyValue,
    trace::{Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_sdk::{
    Resource,
    trace::{SpanData, SpanEvents, SpanLinks},
};

use crate::{LogRecord, LogTraceContext, Severity, SpanRecord};

/// The scope cppTango 10.3.3 uses.
pub fn tango_scope() -> InstrumentationScope {
    InstrumentationScope::builder("tango.cpp").with_version("10.3.3").build()
}

/// The resource of a Tango client process (no device).
pub fn client_resource(pid: i64) -> Resource {
    process_resource("client", pid)
}

/// The resource of a Tango process's client side: `kind` is `client`, or `server` for calls a
/// device server makes outside any device.
pub fn process_resource(kind: &'static str, pid: i64) -> Resource {
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new("telemetry.sdk.version", "1.27.0"),
            KeyValue::new("telemetry.sdk.name", "opentelemetry"),
            KeyValue::new("telemetry.sdk.language", "cpp"),
            KeyValue::new("tango.host", "vm:10000"),
            KeyValue::new("tango.process.kind", kind),
            KeyValue::new("tango.process.id", pid),
            KeyValue::new("service.name", "tango.telemetry.default"),
            KeyValue::new("service.namespace", "tango"),
        ])
        .build()
}

/// The resource of one device of a Tango device server.
pub fn device_resource(class: &str, device: &str, server: &str, pid: i64) -> Resource {
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new("telemetry.sdk.version", "1.27.0"),
            KeyValue::new("telemetry.sdk.language", "cpp"),
            KeyValue::new("tango.process.kind", "server"),
            KeyValue::new("telemetry.sdk.name", "opentelemetry"),
            KeyValue::new("service.instance.id", device.to_owned()),
            KeyValue::new("tango.process.id", pid),
            KeyValue::new("service.name", class.to_owned()),
            KeyValue::new("tango.server.name", server.to_owned()),
            KeyValue::new("service.namespace", "tango"),
        ])
        .build()
}

/// The parts of a span that vary between tests.
#[derive(Clone, Debug)]
pub struct SpanSpec {
    /// The trace, as 32 hex digits.
    pub trace_id: &'static str,
    /// The span, as 16 hex digits.
    pub span_id: &'static str,
    /// The parent, as 16 hex digits, or empty for a root.
    pub parent_span_id: &'static str,
    /// The span's kind.
    pub kind: SpanKind,
    /// The span's name.
    pub name: &'static str,
    /// Start, ns since the epoch.
    pub start_ns: u64,
    /// End, ns since the epoch.
    pub end_ns: u64,
    /// The span's attributes.
    pub attributes: Vec<KeyValue>,
}

/// Builds SDK span data from a spec, with the Tango scope.
pub fn span_data(spec: SpanSpec) -> SpanData {
    let trace_id = TraceId::from_hex(spec.trace_id).unwrap_or(TraceId::INVALID);
    let span_id = SpanId::from_hex(spec.span_id).unwrap_or(SpanId::INVALID);
    let parent = if spec.parent_span_id.is_empty() {
        SpanId::INVALID
    } else {
        SpanId::from_hex(spec.parent_span_id).unwrap_or(SpanId::INVALID)
    };
    SpanData {
        span_context: SpanContext::new(trace_id, span_id, TraceFlags::SAMPLED, false, TraceState::default()),
        parent_span_id: parent,
        parent_span_is_remote: false,
        span_kind: spec.kind,
        name: Cow::Borrowed(spec.name),
        start_time: at_ns(spec.start_ns),
        end_time: at_ns(spec.end_ns),
        attributes: spec.attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: tango_scope(),
    }
}

/// A time `ns` nanoseconds after the Unix epoch.
pub fn at_ns(ns: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(ns)
}

/// The client and server span of one `command_inout("Increment")` (reference
/// `command_inout.json`).
pub fn reference_command_inout() -> Vec<SpanRecord> {
    let client = span_data(SpanSpec {
        trace_id: "b2a1fcf8dbcb987a87fc0305c3fe9fde",
        span_id: "5d5c121137108f77",
        parent_span_id: "",
        kind: SpanKind::Client,
        name: "Tango::Connection::command_inout",
        start_ns: 1_795_245_243_497_905_958,
        end_ns: 1_795_245_243_498_409_819,
        attributes: vec![
            KeyValue::new("tango.operation.argument", "Increment"),
            KeyValue::new("tango.operation.target", "test/demo/1"),
            KeyValue::new("code.filepath", "Connection.cpp"),
            KeyValue::new("code.lineno", "1219"),
            KeyValue::new("thread.id", "139831653333888"),
        ],
    });
    let server = span_data(SpanSpec {
        trace_id: "b2a1fcf8dbcb987a87fc0305c3fe9fde",
        span_id: "9621b4e802d9b75d",
        parent_span_id: "5d5c121137108f77",
        kind: SpanKind::Server,
        name: "Tango::Device_4Impl::command_inout_4",
        start_ns: 1_795_245_243_498_110_550,
        end_ns: 1_795_245_243_498_348_755,
        attributes: vec![
            KeyValue::new("tango.client_ident.lang", "CPP"),
            KeyValue::new("tango.client_ident.location", "giop:tcp:127.0.0.1:58618"),
            KeyValue::new("tango.client_ident.pid", 17915),
            KeyValue::new("tango.operation.argument", "Increment"),
        ],
    });
    vec![
        SpanRecord { resource: client_resource(17915), data: client },
        SpanRecord { resource: device_resource("Demo", "test/demo/1", "Demo/Demo", 17811), data: server },
    ]
}

/// A failed `command_inout("Kill")`: status ERROR and an `exception caught` event (reference
/// `command_inout_error.json`).
pub fn reference_command_inout_error() -> SpanRecord {
    let mut data = span_data(SpanSpec {
        trace_id: "d73ff5135a28554bb87a33ea2bd64e2f",
        span_id: "4e3b64c1db11e738",
        parent_span_id: "",
        kind: SpanKind::Client,
        name: "Tango::Connection::command_inout",
        start_ns: 1_795_245_252_978_358_145,
        end_ns: 1_795_245_252_978_528_342,
        attributes: vec![
            KeyValue::new("tango.operation.argument", "Kill"),
            KeyValue::new("tango.operation.target", "dserver/demo/demo"),
            KeyValue::new("code.filepath", "Connection.cpp"),
            KeyValue::new("code.lineno", "1219"),
            KeyValue::new("thread.id", "140207104490368"),
        ],
    });
    data.events.events.push(Event::new(
        "exception caught",
        at_ns(1_795_245_252_978_503_135),
        vec![
            KeyValue::new(
                "exception.message",
                "REASON:API_CorbaException;DESC:BAD_INV_ORDER CORBA system exception: \
                 BAD_INV_ORDER_ORBHasShutdown;ORIGIN:virtual Tango::DeviceData \
                 Tango::Connection::command_inout(const std::string&, const Tango::DeviceData&) \
                 at (/src/cppTango/src/client/Connection.cpp:1416)",
            ),
            KeyValue::new("exception.type", "Tango::DevFailed"),
        ],
        0,
    ));
    data.status = Status::error("exception caught (see associated event)");
    // The caller was a device server's own process, outside any device.
    SpanRecord { resource: process_resource("server", 17811), data }
}

/// `n` root spans of one resource with distinct ids, for volume tests.
pub fn many_spans(resource: &Resource, n: u64, first_id: u64) -> Vec<SpanRecord> {
    (0..n)
        .map(|i| {
            let id = first_id + i;
            let mut data = span_data(SpanSpec {
                trace_id: "0af7651916cd43dd8448eb211c80319c",
                span_id: "0000000000000001",
                parent_span_id: "",
                kind: SpanKind::Server,
                name: "Tango::Device_5Impl::read_attributes_5",
                start_ns: 1_000_000 + id * 1000,
                end_ns: 1_000_500 + id * 1000,
                attributes: vec![KeyValue::new("seq", id as i64)],
            });
            data.span_context = SpanContext::new(
                data.span_context.trace_id(),
                SpanId::from(id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            );
            SpanRecord { resource: resource.clone(), data }
        })
        .collect()
}

/// A batch of `n` spans as a busy Tango control system sends them: the client and server
/// spans of calls from 8 client processes to 32 devices of 8 servers (the references' names and
/// attributes), random trace and span ids, times that advance. For compression measurements.
pub fn tango_batch(n: usize) -> Vec<SpanRecord> {
    // (client span, server span, client file, client line, arguments)
    const OPERATIONS: [(&str, &str, &str, &str, [&str; 3]); 4] = [
        (
            "Tango::DeviceProxy::read_attribute",
            "Tango::Device_5Impl::read_attributes_5",
            "DeviceProxy.cpp",
            "4575",
            ["temperature", "pressure", "State"],
        ),
        (
            "Tango::Connection::command_inout",
            "Tango::Device_4Impl::command_inout_4",
            "Connection.cpp",
            "1219",
            ["Increment", "Reset", "Status"],
        ),
        (
            "Tango::DeviceProxy::write_attribute",
            "Tango::Device_4Impl::write_attributes_4",
            "DeviceProxy.cpp",
            "5208",
            ["setpoint", "current", "voltage"],
        ),
        (
            "Tango::DeviceProxy::read_attribute",
            "Tango::Device_5Impl::read_attributes_5",
            "DeviceProxy.cpp",
            "4575",
            ["position", "velocity", "Status"],
        ),
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let clients: Vec<Resource> = (0..8).map(|i| client_resource(20_000 + i)).collect();
    let devices: Vec<(String, Resource)> = (0..32)
        .map(|i| {
            let device = format!("test/bench/{i}");
            let server = format!("Bench/{}", i / 4);
            let resource = device_resource("Bench", &device, &server, 30_000 + i / 4);
            (device, resource)
        })
        .collect();
    let mut start_ns = 1_795_245_242_594_098_044u64;
    let mut spans = Vec::with_capacity(n);
    for call in 0..n.div_ceil(2) as u64 {
        let client = (call % 8) as usize;
        // Each pick is in range (an index modulo the length).
        let (
            Some(&(client_name, server_name, filepath, lineno, arguments)),
            Some(client_resource),
            Some((device, device_resource)),
        ) = (
            OPERATIONS.get((random() % 4) as usize),
            clients.get(client),
            devices.get((random() % 32) as usize),
        )
        else {
            continue;
        };
        let argument = arguments.get((random() % 3) as usize).copied().unwrap_or_default();
        let trace_id = TraceId::from(u128::from(random()) << 64 | u128::from(random()));
        let (client_id, server_id) = (SpanId::from(random()), SpanId::from(random()));
        start_ns += 20_000 + random() % 200_000;
        let context = |id| SpanContext::new(trace_id, id, TraceFlags::SAMPLED, false, TraceState::default());
        let mut client_span = span_data(SpanSpec {
            trace_id: "",
            span_id: "",
            parent_span_id: "",
            kind: SpanKind::Client,
            name: client_name,
            start_ns,
            end_ns: start_ns + 500_000 + random() % 600_000,
            attributes: vec![
                KeyValue::new("tango.operation.argument", argument),
                KeyValue::new("tango.operation.target", device.clone()),
                KeyValue::new("code.filepath", filepath),
                KeyValue::new("code.lineno", lineno),
                KeyValue::new("thread.id", (139_831_653_333_888 + client as u64 * 4096).to_string()),
            ],
        });
        client_span.span_context = context(client_id);
        let mut server_span = span_data(SpanSpec {
            trace_id: "",
            span_id: "",
            parent_span_id: "",
            kind: SpanKind::Server,
            name: server_name,
            start_ns: start_ns + 200_000 + random() % 100_000,
            end_ns: start_ns + 450_000 + random() % 50_000,
            attributes: vec![
                KeyValue::new("tango.client_ident.lang", "CPP"),
                KeyValue::new(
                    "tango.client_ident.location",
                    format!("giop:tcp:127.0.0.1:{}", 40_000 + client),
                ),
                KeyValue::new("tango.client_ident.pid", 20_000 + client as i64),
                KeyValue::new("tango.operation.argument", argument),
            ],
        });
        server_span.span_context = context(server_id);
        server_span.parent_span_id = client_id;
        spans.push(SpanRecord { resource: client_resource.clone(), data: client_span });
        spans.push(SpanRecord { resource: device_resource.clone(), data: server_span });
    }
    spans.truncate(n);
    spans
}

/// The scope of cppTango 10.3.3's log records.
pub fn logs_scope() -> Arc<InstrumentationScope> {
    Arc::new(InstrumentationScope::builder("cppTango").with_version("10.3.3").build())
}

/// The resource of the device of the reference log records (PyTango's `test/logdev/1`).
pub fn logdev_resource() -> Resource {
    device_resource("LogDev", "test/logdev/1", "LogDev/LogDev", 15342)
}

/// The parts of a log record that vary between tests.
#[derive(Clone, Debug)]
pub struct LogSpec {
    /// When it was logged, ns since the epoch.
    pub time_ns: u64,
    /// When it was observed, ns since the epoch.
    pub observed_ns: u64,
    /// The severity; its text is the severity's name.
    pub severity: Severity,
    /// The message.
    pub body: &'static str,
    /// `code.filepath` and `code.lineno`, if known.
    pub code: Option<(&'static str, i64)>,
    /// The trace and span (hex), if logged inside a span.
    pub span: Option<(&'static str, &'static str)>,
}

/// Builds a log record of `resource` from a spec, with cppTango's log scope and the flags 3
/// cppTango gives records logged inside a span.
pub fn log_record(resource: &Resource, scope: &Arc<InstrumentationScope>, spec: LogSpec) -> LogRecord {
    LogRecord {
        resource: resource.clone(),
        scope: scope.clone(),
        timestamp: at_ns(spec.time_ns),
        observed_timestamp: at_ns(spec.observed_ns),
        severity: spec.severity,
        severity_text: Cow::Borrowed(spec.severity.name()),
        body: spec.body.to_owned(),
        attributes: spec
            .code
            .map(|(file, line)| {
                vec![KeyValue::new("code.filepath", file), KeyValue::new("code.lineno", line)]
            })
            .unwrap_or_default(),
        trace: spec.span.map(|(trace, span)| LogTraceContext {
            trace_id: TraceId::from_hex(trace).unwrap_or(TraceId::INVALID),
            span_id: SpanId::from_hex(span).unwrap_or(SpanId::INVALID),
            flags: TraceFlags::new(3),
        }),
    }
}

/// The three log records of the reference capture (`device_logs.json`): a WARN from a thread
/// of the device's own (no span), then an INFO and a FATAL inside the SERVER span of
/// `command_inout("Hello")`.
pub fn reference_device_logs() -> Vec<LogRecord> {
    let resource = logdev_resource();
    let scope = logs_scope();
    let span = Some(("1c7ec4378c562421f9fc46412b5514f8", "45d2abbade956bf8"));
    [
        LogSpec {
            time_ns: 1_795_248_222_411_517_035,
            observed_ns: 1_795_248_222_411_641_317,
            severity: Severity::Warn,
            body: "background thread log tid=15370",
            code: Some(("pydev2.py", 15)),
            span: None,
        },
        LogSpec {
            time_ns: 1_795_248_226_536_048_691,
            observed_ns: 1_795_248_226_536_058_830,
            severity: Severity::Info,
            body: "hello 0",
            code: Some(("pydev2.py", 20)),
            span,
        },
        LogSpec {
            time_ns: 1_795_248_226_536_117_660,
            observed_ns: 1_795_248_226_536_124_343,
            severity: Severity::Fatal,
            body: "fatal hello 0",
            code: Some(("pydev2.py", 23)),
            span,
        },
    ]
    .into_iter()
    .map(|spec| log_record(&resource, &scope, spec))
    .collect()
}

/// The SERVER span the reference log records were logged under (`command_inout("Hello")` of
/// `test/logdev/1`).
pub fn reference_logged_span() -> SpanRecord {
    let data = span_data(SpanSpec {
        trace_id: "1c7ec4378c562421f9fc46412b5514f8",
        span_id: "45d2abbade956bf8",
        parent_span_id: "",
        kind: SpanKind::Server,
        name: "Tango::Device_4Impl::command_inout_4",
        start_ns: 1_795_248_226_535_773_858,
        end_ns: 1_795_248_226_536_140_151,
        attributes: vec![
            KeyValue::new("tango.client_ident.lang", "CPP"),
            KeyValue::new("tango.client_ident.location", "giop:tcp:127.0.0.1:44850"),
            KeyValue::new("tango.client_ident.pid", 15381),
            KeyValue::new("tango.operation.argument", "Hello"),
        ],
    });
    SpanRecord { resource: logdev_resource(), data }
}

/// `n` INFO records of one resource, numbered by an attribute `seq` from `first`, for volume
/// tests.
pub fn many_logs(resource: &Resource, n: u64, first: u64) -> Vec<LogRecord> {
    let scope = logs_scope();
    (first..first + n)
        .map(|seq| {
            let mut record = log_record(
                resource,
                &scope,
                LogSpec {
                    time_ns: 1_000_000 + seq * 1000,
                    observed_ns: 1_000_100 + seq * 1000,
                    severity: Severity::Info,
                    body: "a message of some length, as devices log them",
                    code: None,
                    span: None,
                },
            );
            record.attributes.push(KeyValue::new("seq", seq as i64));
            record
        })
        .collect()
}

/// A fresh directory under the system's temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/tracer-export-<label>-<pid>-<n>`.
    ///
    /// # Panics
    /// When the directory cannot be created (tests only).
    #[expect(clippy::panic, reason = "a test helper: a test without its directory cannot run")]
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("tracer-export-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        if let Err(err) = std::fs::create_dir_all(&path) {
            panic!("cannot create {}: {err}", path.display());
        }
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
