//! A real OTLP receiver for tests: OTLP/HTTP and OTLP/gRPC on 127.0.0.1, built on the official
//! protobuf definitions (`opentelemetry-proto`'s generated types and tonic service).
//!
//! - OTLP/HTTP: `POST /v1/traces` and `POST /v1/logs`, `application/x-protobuf` (or
//!   `application/json`), gzip or not.
//! - OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` and
//!   `opentelemetry.proto.collector.logs.v1.LogsService/Export`, gzip or not.
//!
//! Every span received is kept as a [`SpanJson`] with `transport` set to `http` or `grpc`, and
//! every request is logged with its number of `resource_spans`. Log records are kept apart, as
//! [`LogJson`]s ([`OtlpReceiver::logs`]), with a request log, a wait and refusals of their own,
//! so that tests of spans are not disturbed by logs arriving at the same receiver.
//!
//! The receiver runs on its own thread with its own tokio runtime, so it works the same from an
//! async test and from a plain `#[test]`, and a test's runtime never starves it:
//!
//! ```no_run
//! use std::time::Duration;
//! use integration_tests::otlp_receiver::OtlpReceiver;
//!
//! // From a plain #[test]: no runtime needed.
//! let receiver = OtlpReceiver::start_blocking();
//! let endpoint = receiver.http_endpoint(); // http://127.0.0.1:PORT/v1/traces
//! // ... point the exporter (or the daemon) at `endpoint` ...
//! let spans = receiver.wait_for_blocking(|spans| spans.len() >= 2, Duration::from_secs(10));
//!
//! // From a #[tokio::test]:
//! # async fn f() {
//! let receiver = OtlpReceiver::start().await;
//! let spans = receiver.wait_for(|spans| !spans.is_empty(), Duration::from_secs(10)).await;
//! # }
//! ```
//!
//! Dropping the receiver (or [`OtlpReceiver::stop`]) closes both ports, so a test can take a
//! backend down and, with [`ReceiverOptions`] naming the same addresses, bring it back.

use std::{
    convert::Infallible,
    fs::{File, OpenOptions},
    io::{self, BufWriter, Read as _, Write as _},
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU32, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::{
    logs::v1::{
        ExportLogsServiceRequest, ExportLogsServiceResponse,
        logs_service_server::{LogsService, LogsServiceServer},
    },
    metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_server::{MetricsService, MetricsServiceServer},
    },
    trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
};
use prost::Message as _;
use tokio::sync::oneshot;
use tonic::codec::CompressionEncoding;
use tracer_export::{
    json::{LogJson, SpanJson, logs_request_to_json, request_to_json},
    logs_path,
    tree::{render_logs, render_trees},
};

/// How long [`OtlpReceiver::wait_for`] sleeps between looks.
const POLL: Duration = Duration::from_millis(10);
const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Which OTLP transport a request came by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// OTLP/HTTP.
    Http,
    /// OTLP/gRPC.
    Grpc,
}

impl Protocol {
    /// `http` or `grpc`, as in [`SpanJson::transport`].
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }
}

/// One export request the receiver accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    /// How it came.
    pub protocol: Protocol,
    /// Its number of `resource_spans` entries.
    pub resource_spans: usize,
    /// Its number of spans.
    pub spans: usize,
    /// Whether its body was gzip-compressed.
    pub gzip: bool,
    /// When it was accepted, in ns since the Unix epoch (the clock of span timestamps).
    pub received_ns: u64,
}

/// One logs export request the receiver accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRequestInfo {
    /// How it came.
    pub protocol: Protocol,
    /// Its number of `resource_logs` entries.
    pub resource_logs: usize,
    /// Its number of log records.
    pub records: usize,
    /// Whether its body was gzip-compressed.
    pub gzip: bool,
}

/// Where the receiver listens and whether it keeps a file.
#[derive(Clone, Debug)]
pub struct ReceiverOptions {
    /// The OTLP/HTTP address (port 0: any free port).
    pub http: SocketAddr,
    /// The OTLP/gRPC address (port 0: any free port).
    pub grpc: SocketAddr,
    /// A JSON-lines file every received span is appended to (the store's form, plus
    /// `transport`); log records go to the file beside it ([`tracer_export::logs_path`]).
    pub out: Option<PathBuf>,
}

impl Default for ReceiverOptions {
    fn default() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        ReceiverOptions { http: any, grpc: any, out: None }
    }
}

/// A running receiver. Stops when dropped.
pub struct OtlpReceiver {
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    fail_next: AtomicU32,
    fail_next_logs: AtomicU32,
    out: Option<Mutex<BufWriter<File>>>,
    logs_out: Option<Mutex<BufWriter<File>>>,
}

#[derive(Default)]
struct State {
    spans: Vec<SpanJson>,
    requests: Vec<RequestInfo>,
    refused: usize,
    logs: Vec<LogJson>,
    logs_requests: Vec<LogRequestInfo>,
    logs_refused: usize,
    /// Metrics requests as received (`/v1/metrics`, `MetricsService`), in order.
    metrics: Vec<(Protocol, ExportMetricsServiceRequest)>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this request is to be refused (see [`OtlpReceiver::fail_next`]).
    fn take_failure(&self) -> bool {
        let refuse =
            self.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if refuse {
            self.lock().refused += 1;
        }
        refuse
    }

    /// Whether this logs request is to be refused (see [`OtlpReceiver::fail_next_logs`]).
    fn take_logs_failure(&self) -> bool {
        let refuse = self
            .fail_next_logs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refuse {
            self.lock().logs_refused += 1;
        }
        refuse
    }

    fn record(&self, protocol: Protocol, gzip: bool, request: &ExportTraceServiceRequest) {
        let mut spans = request_to_json(request);
        for span in &mut spans {
            span.transport = Some(protocol.name().to_owned());
        }
        append_lines(self.out.as_ref(), &spans, "spans");
        let info = RequestInfo {
            protocol,
            resource_spans: request.resource_spans.len(),
            spans: spans.len(),
            gzip,
            received_ns: crate::hosts::now_ns(),
        };
        let mut state = self.lock();
        state.requests.push(info);
        state.spans.extend(spans);
    }

    fn record_logs(&self, protocol: Protocol, gzip: bool, request: &ExportLogsServiceRequest) {
        let mut logs = logs_request_to_json(request);
        for log in &mut logs {
            log.transport = Some(protocol.name().to_owned());
        }
        append_lines(self.logs_out.as_ref(), &logs, "logs");
        let info = LogRequestInfo {
            protocol,
            resource_logs: request.resource_logs.len(),
            records: logs.len(),
            gzip,
        };
        let mut state = self.lock();
        state.logs_requests.push(info);
        state.logs.extend(logs);
    }
}

/// Appends `items` as JSON lines to `out`, if there is one.
fn append_lines<T: serde::Serialize>(out: Option<&Mutex<BufWriter<File>>>, items: &[T], what: &str) {
    let Some(out) = out else { return };
    let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
    let written: io::Result<()> = items.iter().try_for_each(|item| {
        serde_json::to_writer(&mut *out, item)?;
        out.write_all(b"\n")
    });
    if let Err(err) = written.and_then(|()| out.flush()) {
        eprintln!("otlp-receiver: cannot write {what}: {err}");
    }
}

impl OtlpReceiver {
    /// Starts on two free ports of 127.0.0.1.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start() -> OtlpReceiver {
        Self::start_blocking()
    }

    /// Like [`OtlpReceiver::start`], for code without a runtime (plain `#[test]`s).
    ///
    /// # Panics
    /// When no port can be bound.
    pub fn start_blocking() -> OtlpReceiver {
        match Self::start_with(ReceiverOptions::default()) {
            Ok(receiver) => receiver,
            Err(err) => panic!("cannot start the OTLP receiver: {err}"),
        }
    }

    /// Starts with explicit addresses and output file. Binding happens before this returns, so
    /// the ports accept connections as soon as it does. Callable with or without a runtime.
    pub fn start_with(options: ReceiverOptions) -> io::Result<OtlpReceiver> {
        let http = TcpListener::bind(options.http)?;
        let grpc = TcpListener::bind(options.grpc)?;
        http.set_nonblocking(true)?;
        grpc.set_nonblocking(true)?;
        let (http_addr, grpc_addr) = (http.local_addr()?, grpc.local_addr()?);
        let open = |path: &PathBuf| -> io::Result<Mutex<BufWriter<File>>> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            Ok(Mutex::new(BufWriter::new(file)))
        };
        let out = options.out.as_ref().map(open).transpose()?;
        let logs_out = options.out.as_ref().map(|path| open(&logs_path(path))).transpose()?;
        let shared = Arc::new(Shared { out, logs_out, ..Shared::default() });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-receiver")
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel();
        let serving = shared.clone();
        let thread = std::thread::Builder::new().name("otlp-receiver".into()).spawn(move || {
            runtime.block_on(serve(http, grpc, serving, stopped));
            // Dropping the runtime here closes the listeners and every open connection.
        })?;
        Ok(OtlpReceiver { http_addr, grpc_addr, shared, stop: Some(stop), thread: Some(thread) })
    }

    /// The OTLP/HTTP traces URL, `http://127.0.0.1:PORT/v1/traces`.
    pub fn http_endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.http_addr)
    }

    /// The metrics requests received so far, with the transport each came by.
    pub fn metrics_requests(&self) -> Vec<(Protocol, ExportMetricsServiceRequest)> {
        self.shared.lock().metrics.clone()
    }

    /// The OTLP/HTTP logs URL, `http://127.0.0.1:PORT/v1/logs`.
    pub fn http_logs_endpoint(&self) -> String {
        format!("http://{}/v1/logs", self.http_addr)
    }

    /// The OTLP/gRPC endpoint, `http://127.0.0.1:PORT` (spans and logs alike).
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// The OTLP/HTTP listening address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The OTLP/gRPC listening address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<SpanJson> {
        self.shared.lock().spans.clone()
    }

    /// Every span received so far with when its request was accepted (ns since the Unix epoch),
    /// in arrival order.
    pub fn spans_with_arrival(&self) -> Vec<(u64, SpanJson)> {
        let state = self.shared.lock();
        let arrivals = state.requests.iter().flat_map(|r| std::iter::repeat_n(r.received_ns, r.spans));
        arrivals.zip(state.spans.iter().cloned()).collect()
    }

    /// How many export requests were accepted, both protocols together.
    pub fn requests(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// How many export requests were accepted over `protocol`.
    pub fn requests_by(&self, protocol: Protocol) -> usize {
        self.shared.lock().requests.iter().filter(|r| r.protocol == protocol).count()
    }

    /// Every accepted request, in arrival order.
    pub fn request_log(&self) -> Vec<RequestInfo> {
        self.shared.lock().requests.clone()
    }

    /// The number of `resource_spans` of each accepted request, in arrival order.
    pub fn resource_spans_per_request(&self) -> Vec<usize> {
        self.shared.lock().requests.iter().map(|r| r.resource_spans).collect()
    }

    /// Refuses the next `n` export requests (HTTP 503, gRPC `UNAVAILABLE`: both retryable), as a
    /// backend that is overloaded would.
    pub fn fail_next(&self, n: u32) {
        self.shared.fail_next.store(n, Ordering::SeqCst);
    }

    /// How many requests were refused through [`OtlpReceiver::fail_next`].
    pub fn refused(&self) -> usize {
        self.shared.lock().refused
    }

    /// Every log record received so far, in arrival order.
    pub fn logs(&self) -> Vec<LogJson> {
        self.shared.lock().logs.clone()
    }

    /// Every accepted logs request, in arrival order.
    pub fn log_request_log(&self) -> Vec<LogRequestInfo> {
        self.shared.lock().logs_requests.clone()
    }

    /// How many logs requests were accepted over `protocol`.
    pub fn log_requests_by(&self, protocol: Protocol) -> usize {
        self.shared.lock().logs_requests.iter().filter(|r| r.protocol == protocol).count()
    }

    /// Refuses the next `n` logs requests (HTTP 503, gRPC `UNAVAILABLE`), as
    /// [`OtlpReceiver::fail_next`] does for spans.
    pub fn fail_next_logs(&self, n: u32) {
        self.shared.fail_next_logs.store(n, Ordering::SeqCst);
    }

    /// How many logs requests were refused through [`OtlpReceiver::fail_next_logs`].
    pub fn logs_refused(&self) -> usize {
        self.shared.lock().logs_refused
    }

    /// Forgets everything received so far, spans and logs.
    pub fn clear(&self) {
        let mut state = self.shared.lock();
        state.spans.clear();
        state.requests.clear();
        state.refused = 0;
        state.logs.clear();
        state.logs_requests.clear();
        state.logs_refused = 0;
    }

    /// Waits until `done(logs)` holds and returns the log records.
    ///
    /// # Panics
    /// On timeout, with every record and span received.
    pub async fn wait_for_logs(&self, done: impl Fn(&[LogJson]) -> bool, timeout: Duration) -> Vec<LogJson> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(logs) = self.check_logs(&done, deadline, timeout) {
                return logs;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Like [`OtlpReceiver::wait_for_logs`], for code without a runtime.
    ///
    /// # Panics
    /// On timeout, with every record and span received.
    pub fn wait_for_logs_blocking(
        &self,
        done: impl Fn(&[LogJson]) -> bool,
        timeout: Duration,
    ) -> Vec<LogJson> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(logs) = self.check_logs(&done, deadline, timeout) {
                return logs;
            }
            std::thread::sleep(POLL);
        }
    }

    fn check_logs(
        &self,
        done: &impl Fn(&[LogJson]) -> bool,
        deadline: Instant,
        timeout: Duration,
    ) -> Option<Vec<LogJson>> {
        let state = self.shared.lock();
        if done(&state.logs) {
            return Some(state.logs.clone());
        }
        if Instant::now() < deadline {
            return None;
        }
        let (count, requests) = (state.logs.len(), state.logs_requests.len());
        let dump = format!("{}spans:\n{}", render_logs(&state.logs), render_trees(&state.spans));
        drop(state);
        panic!(
            "OTLP receiver: condition on logs not met after {timeout:?}; {count} record(s) in \
             {requests} request(s) received:\n{dump}"
        );
    }

    /// Waits until `done(spans)` holds and returns the spans.
    ///
    /// # Panics
    /// On timeout, with every span received drawn as trees.
    pub async fn wait_for(&self, done: impl Fn(&[SpanJson]) -> bool, timeout: Duration) -> Vec<SpanJson> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(spans) = self.check(&done, deadline, timeout) {
                return spans;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Like [`OtlpReceiver::wait_for`], for code without a runtime.
    ///
    /// # Panics
    /// On timeout, with every span received drawn as trees.
    pub fn wait_for_blocking(&self, done: impl Fn(&[SpanJson]) -> bool, timeout: Duration) -> Vec<SpanJson> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(spans) = self.check(&done, deadline, timeout) {
                return spans;
            }
            std::thread::sleep(POLL);
        }
    }

    fn check(
        &self,
        done: &impl Fn(&[SpanJson]) -> bool,
        deadline: Instant,
        timeout: Duration,
    ) -> Option<Vec<SpanJson>> {
        let state = self.shared.lock();
        if done(&state.spans) {
            return Some(state.spans.clone());
        }
        if Instant::now() < deadline {
            return None;
        }
        let requests = state.requests.len();
        let dump = render_trees(&state.spans);
        let count = state.spans.len();
        drop(state);
        panic!(
            "OTLP receiver: condition not met after {timeout:?}; {count} span(s) in {requests} \
             request(s) received:\n{dump}"
        );
    }

    /// Stops serving and closes both ports (as dropping does).
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Stops serving and closes both ports, keeping what was received for the test to read (a
    /// backend going down; bring it back with [`OtlpReceiver::start_with`] on the same
    /// addresses).
    pub fn close(&mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn serve(http: TcpListener, grpc: TcpListener, shared: Arc<Shared>, stopped: oneshot::Receiver<()>) {
    let (http, grpc) =
        match (tokio::net::TcpListener::from_std(http), tokio::net::TcpListener::from_std(grpc)) {
            (Ok(http), Ok(grpc)) => (http, grpc),
            (Err(err), _) | (_, Err(err)) => {
                eprintln!("otlp-receiver: cannot listen: {err}");
                return;
            }
        };
    let traces_service = TraceServiceServer::new(GrpcReceiver { shared: shared.clone() })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(MAX_MESSAGE_SIZE);
    let logs_service = LogsServiceServer::new(GrpcReceiver { shared: shared.clone() })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(MAX_MESSAGE_SIZE);
    let metrics_service = MetricsServiceServer::new(GrpcReceiver { shared: shared.clone() })
        .max_decoding_message_size(MAX_MESSAGE_SIZE);
    let grpc_server = tonic::transport::Server::builder().serve_with_incoming(
        GrpcServices { traces: traces_service, logs: logs_service, metrics: metrics_service },
        tonic::transport::server::TcpIncoming::from(grpc),
    );
    tokio::select! {
        _ = stopped => {}
        () = serve_http(http, shared) => {}
        result = grpc_server => {
            if let Err(err) = result {
                eprintln!("otlp-receiver: gRPC server failed: {err}");
            }
        }
    }
}

async fn serve_http(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors and the like: pause rather than spin.
                eprintln!("otlp-receiver: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle_http(request, shared.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle_http(
    request: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let logs = match request.uri().path() {
        "/v1/traces" => false,
        "/v1/logs" => true,
        "/v1/metrics" => return Ok(handle_http_metrics(request, shared).await),
        _ => {
            return Ok(reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "only /v1/traces, /v1/logs and /v1/metrics are served",
            ));
        }
    };
    if request.method() != Method::POST {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "POST only"));
    }
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default()
    };
    let gzip = header("content-encoding") == "gzip";
    let json = header("content-type").starts_with("application/json");
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(err) => {
            return Ok(reply(StatusCode::BAD_REQUEST, "text/plain", err.to_string()));
        }
    };
    let refuse = if logs { shared.take_logs_failure() } else { shared.take_failure() };
    if refuse {
        return Ok(reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "refused for the test"));
    }
    let body = if gzip {
        let mut raw = Vec::new();
        if let Err(err) = flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut raw) {
            return Ok(reply(StatusCode::BAD_REQUEST, "text/plain", format!("bad gzip: {err}")));
        }
        Bytes::from(raw)
    } else {
        body
    };
    if logs {
        let decoded = if json {
            serde_json::from_slice::<ExportLogsServiceRequest>(&body).map_err(|e| e.to_string())
        } else {
            ExportLogsServiceRequest::decode(body).map_err(|e| e.to_string())
        };
        return Ok(match decoded {
            Ok(export) => {
                shared.record_logs(Protocol::Http, gzip, &export);
                let response = ExportLogsServiceResponse::default().encode_to_vec();
                reply(StatusCode::OK, "application/x-protobuf", response)
            }
            Err(err) => reply(StatusCode::BAD_REQUEST, "text/plain", err),
        });
    }
    let decoded = if json {
        serde_json::from_slice::<ExportTraceServiceRequest>(&body).map_err(|e| e.to_string())
    } else {
        ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string())
    };
    match decoded {
        Ok(export) => {
            shared.record(Protocol::Http, gzip, &export);
            let response = ExportTraceServiceResponse::default().encode_to_vec();
            Ok(reply(StatusCode::OK, "application/x-protobuf", response))
        }
        Err(err) => Ok(reply(StatusCode::BAD_REQUEST, "text/plain", err)),
    }
}

/// `POST /v1/metrics` with a protobuf body: kept as received.
async fn handle_http_metrics(request: Request<Incoming>, shared: Arc<Shared>) -> Response<Full<Bytes>> {
    if request.method() != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "POST only");
    }
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(err) => return reply(StatusCode::BAD_REQUEST, "text/plain", err.to_string()),
    };
    match ExportMetricsServiceRequest::decode(body) {
        Ok(export) => {
            shared.lock().metrics.push((Protocol::Http, export));
            reply(
                StatusCode::OK,
                "application/x-protobuf",
                ExportMetricsServiceResponse::default().encode_to_vec(),
            )
        }
        Err(err) => reply(StatusCode::BAD_REQUEST, "text/plain", err.to_string()),
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

struct GrpcReceiver {
    shared: Arc<Shared>,
}

/// Both OTLP services on one port, routed by the gRPC path's service name (tonic's own router
/// is left out of this build).
#[derive(Clone)]
struct GrpcServices {
    traces: TraceServiceServer<GrpcReceiver>,
    logs: LogsServiceServer<GrpcReceiver>,
    metrics: MetricsServiceServer<GrpcReceiver>,
}

/// The path prefix of the logs service's methods.
const LOGS_SERVICE_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/";
/// The path prefix of the metrics service's methods.
const METRICS_SERVICE_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/";

impl tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>> for GrpcServices {
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        // Both services are always ready.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path().starts_with(LOGS_SERVICE_PATH) {
            self.logs.call(request)
        } else if request.uri().path().starts_with(METRICS_SERVICE_PATH) {
            self.metrics.call(request)
        } else {
            // The traces service answers `UNIMPLEMENTED` to anything it does not know.
            self.traces.call(request)
        }
    }
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if self.shared.take_failure() {
            return Err(tonic::Status::unavailable("refused for the test"));
        }
        let gzip = grpc_gzip(&request);
        self.shared.record(Protocol::Grpc, gzip, request.get_ref());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        if self.shared.take_logs_failure() {
            return Err(tonic::Status::unavailable("refused for the test"));
        }
        let gzip = grpc_gzip(&request);
        self.shared.record_logs(Protocol::Grpc, gzip, request.get_ref());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.shared.lock().metrics.push((Protocol::Grpc, request.into_inner()));
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Whether a gRPC request came gzip-compressed.
fn grpc_gzip<T>(request: &tonic::Request<T>) -> bool {
    request.metadata().get("grpc-encoding").and_then(|v| v.to_str().ok()).is_some_and(|v| v == "gzip")
}

/// A free port on 127.0.0.1 right now, for a receiver to be started later on a known address
/// (a backend that comes up after the exporter). Another process may take it meanwhile, which
/// on a test machine is unlikely enough.
pub fn free_local_addr() -> io::Result<SocketAddr> {
    TcpListener::bind(("127.0.0.1", 0))?.local_addr()
}
