//! OTLP: one request for many resources, sent over HTTP or gRPC.
//!
//! The SDK's OTLP exporter wraps everything it sends into a single `ResourceSpans` because its
//! resource is fixed per provider. An eBPF tracer has one resource per traced process or device,
//! so [`build_request`] groups a batch by resource itself, converts each group with
//! `opentelemetry-proto`'s own `group_spans_by_resource_and_scope`, and concatenates the results:
//! one `ExportTraceServiceRequest`, one `ResourceSpans` per resource, whatever the number of
//! devices.
//!
//! Log records go the same way ([`build_logs_request`]): one `ExportLogsServiceRequest`, one
//! `ResourceLogs` per resource and one `ScopeLogs` per scope inside it, made of
//! `opentelemetry-proto`'s message types (the SDK's own conversion wants records made by an SDK
//! logger, which a tracer of other processes does not have).

use std::{
    borrow::Borrow,
    hash::{DefaultHasher, Hash as _, Hasher as _},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use opentelemetry::{InstrumentationScope, Value};
use opentelemetry_proto::{
    tonic::{
        collector::{
            logs::v1::{
                ExportLogsServiceRequest, ExportLogsServiceResponse, logs_service_client::LogsServiceClient,
            },
            trace::v1::{
                ExportTraceServiceRequest, ExportTraceServiceResponse,
                trace_service_client::TraceServiceClient,
            },
        },
        common::v1::{AnyValue, any_value},
        logs::v1::{LogRecord as ProtoLogRecord, ResourceLogs, ScopeLogs},
        resource::v1::Resource as ProtoResource,
        trace::v1::{ResourceSpans, ScopeSpans, Span as ProtoSpan},
    },
    transform::common::tonic::{Attributes, ResourceAttributesWithSchema},
};
use opentelemetry_sdk::Resource;
use prost::Message as _;
use reqwest::header::HeaderValue;
use tonic::{
    Code,
    codec::CompressionEncoding,
    transport::{Channel, ClientTlsConfig, Endpoint},
};

use crate::{LogRecord, Signal, SpanRecord};

/// Longest part of an error response body kept in an error message.
const MAX_ERROR_BODY: usize = 256;
/// Largest request a backend is asked to take; OTLP collectors accept 4 MiB by default for gRPC
/// and more over HTTP, and a batch of a few hundred spans is far below.
const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Why a request to an OTLP endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The HTTP request could not be made or got no answer (refused, timed out, TLS failed).
    #[error("OTLP/HTTP request to {endpoint} failed: {source}")]
    Http {
        /// The endpoint.
        endpoint: String,
        /// The client's error.
        source: reqwest::Error,
    },
    /// The HTTP client could not be built.
    #[error("OTLP/HTTP client for {endpoint} could not be built: {source}")]
    HttpClient {
        /// The endpoint.
        endpoint: String,
        /// The client's error.
        source: reqwest::Error,
    },
    /// The backend answered with an HTTP error status.
    #[error("OTLP/HTTP endpoint {endpoint} answered {status}: {body}")]
    HttpStatus {
        /// The endpoint.
        endpoint: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The gRPC call failed (including connection failures).
    #[error("OTLP/gRPC export to {endpoint} failed: {code:?}: {message}")]
    Grpc {
        /// The endpoint.
        endpoint: String,
        /// The gRPC status code.
        code: Code,
        /// The status message.
        message: String,
        /// The status was made by the client from a transport failure (the connection broke,
        /// was reset or refused), not sent by the backend.
        transport: bool,
    },
    /// The gRPC endpoint could not be turned into a channel.
    #[error("OTLP/gRPC endpoint {endpoint} is not usable: {source}")]
    GrpcEndpoint {
        /// The endpoint.
        endpoint: String,
        /// tonic's error.
        source: tonic::transport::Error,
    },
    /// The backend accepted the request but rejected some spans or log records.
    #[error("{endpoint} rejected {rejected} records: {message}")]
    PartialSuccess {
        /// The endpoint.
        endpoint: String,
        /// How many spans or log records were rejected.
        rejected: u64,
        /// The backend's explanation.
        message: String,
    },
    /// Compressing the request body failed.
    #[error("compressing a request for {endpoint} failed: {source}")]
    Compress {
        /// The endpoint.
        endpoint: String,
        /// The compressor's error.
        source: std::io::Error,
    },
}

impl OtlpError {
    /// Whether sending the same request again may succeed (the OTLP specification's list of
    /// retryable HTTP statuses and gRPC codes, and HTTP 408; transport failures are retried
    /// too).
    pub fn is_retryable(&self) -> bool {
        match self {
            // Refused, timed out, reset: the backend may be back later. A request that could
            // not even be built never will be.
            OtlpError::Http { source, .. } => !source.is_builder(),
            // The OTLP list (429, 502, 503, 504) and 408, a timeout on the backend's side; any
            // other 4xx says the request itself is wrong.
            OtlpError::HttpStatus { status, .. } => matches!(status, 408 | 429 | 502 | 503 | 504),
            // A broken connection may come back whatever code the client gave it.
            OtlpError::Grpc { transport: true, .. } => true,
            OtlpError::Grpc { code, .. } => matches!(
                code,
                Code::Cancelled
                    | Code::DeadlineExceeded
                    | Code::ResourceExhausted
                    | Code::Aborted
                    | Code::OutOfRange
                    | Code::Unavailable
                    | Code::DataLoss
            ),
            OtlpError::HttpClient { .. }
            | OtlpError::GrpcEndpoint { .. }
            | OtlpError::PartialSuccess { .. }
            | OtlpError::Compress { .. } => false,
        }
    }
}

/// Builds one request carrying every span of `records`, with one `ResourceSpans` per distinct
/// resource (in order of first appearance) and, inside it, one `ScopeSpans` per scope.
pub fn build_request(records: Vec<SpanRecord>) -> ExportTraceServiceRequest {
    let groups = group_by_resource(records.into_iter().map(|SpanRecord { resource, data }| (resource, data)));
    let resource_spans = groups
        .into_iter()
        .map(|(resource, spans)| {
            // One `ScopeSpans` per scope, in order of first appearance; a process's spans share
            // one scope, so comparing with the few seen beats hashing each span's scope.
            let mut scopes: Vec<(InstrumentationScope, Vec<ProtoSpan>)> = Vec::new();
            for mut span in spans {
                let scope = std::mem::take(&mut span.instrumentation_scope);
                let proto = ProtoSpan::from(span);
                match scopes.iter_mut().find(|(s, _)| *s == scope) {
                    Some((_, list)) => list.push(proto),
                    None => scopes.push((scope, vec![proto])),
                }
            }
            let resource = ResourceAttributesWithSchema::from(&resource);
            ResourceSpans {
                resource: Some(ProtoResource {
                    attributes: resource.attributes.0,
                    dropped_attributes_count: 0,
                    entity_refs: vec![],
                }),
                scope_spans: scopes
                    .into_iter()
                    .map(|(scope, spans)| ScopeSpans {
                        schema_url: scope.schema_url().unwrap_or_default().to_owned(),
                        scope: Some((scope, None).into()),
                        spans,
                    })
                    .collect(),
                schema_url: resource.schema_url.unwrap_or_default(),
            }
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

/// Builds one request carrying every log record of `records`, with one `ResourceLogs` per
/// distinct resource and, inside it, one `ScopeLogs` per scope, both in order of first
/// appearance; records keep their order within their group.
pub fn build_logs_request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    let groups = group_by_resource(records.into_iter().map(log_record_to_proto));
    let resource_logs = groups
        .into_iter()
        .map(|(resource, records)| {
            let mut scopes: Vec<(Arc<InstrumentationScope>, Vec<ProtoLogRecord>)> = Vec::new();
            for (scope, proto) in records {
                // Records of one process share one scope: the pointer check almost always decides.
                match scopes.iter_mut().find(|(s, _)| Arc::ptr_eq(s, &scope) || **s == *scope) {
                    Some((_, list)) => list.push(proto),
                    None => scopes.push((scope, vec![proto])),
                }
            }
            let resource = ResourceAttributesWithSchema::from(&resource);
            ResourceLogs {
                resource: Some(ProtoResource {
                    attributes: resource.attributes.0,
                    dropped_attributes_count: 0,
                    entity_refs: vec![],
                }),
                scope_logs: scopes
                    .into_iter()
                    .map(|(scope, log_records)| ScopeLogs {
                        schema_url: scope.schema_url().unwrap_or_default().to_owned(),
                        scope: Some((&*scope, None).into()),
                        log_records,
                    })
                    .collect(),
                schema_url: resource.schema_url.unwrap_or_default(),
            }
        })
        .collect();
    ExportLogsServiceRequest { resource_logs }
}

/// One log record in OTLP's form, with its resource and scope: the body as a string value, the
/// severity's number and text, the trace context when there is one (empty ids and flags 0
/// otherwise, as cppTango sends).
fn log_record_to_proto(record: LogRecord) -> (Resource, (Arc<InstrumentationScope>, ProtoLogRecord)) {
    let LogRecord {
        resource,
        scope,
        timestamp,
        observed_timestamp,
        severity,
        severity_text,
        body,
        attributes,
        trace,
    } = record;
    let (trace_id, span_id, flags) = match trace {
        Some(context) => (
            context.trace_id.to_bytes().to_vec(),
            context.span_id.to_bytes().to_vec(),
            u32::from(context.flags.to_u8()),
        ),
        None => (Vec::new(), Vec::new(), 0),
    };
    let proto = ProtoLogRecord {
        time_unix_nano: unix_nanos(timestamp),
        observed_time_unix_nano: unix_nanos(observed_timestamp),
        severity_number: severity as i32,
        severity_text: severity_text.into_owned(),
        body: Some(AnyValue { value: Some(any_value::Value::StringValue(body)) }),
        attributes: Attributes::from(attributes).0,
        dropped_attributes_count: 0,
        flags,
        trace_id,
        span_id,
        event_name: String::new(),
    };
    (resource, (scope, proto))
}

/// Nanoseconds since the Unix epoch; a time before it (a clock gone wrong) is the epoch.
fn unix_nanos(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
}

/// Groups items by resource, in order of first appearance.
#[expect(clippy::indexing_slicing, reason = "indices come from `groups` itself, pushed just before")]
pub(crate) fn group_by_resource<R: Borrow<Resource>, T>(
    items: impl Iterator<Item = (R, T)>,
) -> Vec<(R, Vec<T>)> {
    let mut groups: Vec<(R, Vec<T>)> = Vec::new();
    // The daemon clones one cached resource per device into all its spans: the identity of
    // the shared attribute table finds the group without hashing or comparing attributes.
    let mut by_identity: hashbrown::HashMap<usize, usize> = hashbrown::HashMap::new();
    // Resources are not `Hash`; a fingerprint narrows the equality checks to (almost always)
    // one candidate, so grouping stays linear in the batch size with thousands of devices.
    let mut by_fingerprint: hashbrown::HashMap<u64, Vec<usize>> = hashbrown::HashMap::new();
    for (resource, item) in items {
        let identity = identity(resource.borrow());
        if let Some(&i) = identity.and_then(|id| by_identity.get(&id)) {
            groups[i].1.push(item);
            continue;
        }
        let candidates = by_fingerprint.entry(fingerprint(resource.borrow())).or_default();
        let index = match candidates.iter().copied().find(|&i| groups[i].0.borrow() == resource.borrow()) {
            Some(i) => {
                groups[i].1.push(item);
                i
            }
            None => {
                candidates.push(groups.len());
                groups.push((resource, vec![item]));
                groups.len() - 1
            }
        };
        if let Some(id) = identity {
            by_identity.insert(id, index);
        }
    }
    groups
}

/// The address of a resource's first attribute: clones of one `Resource` share their attribute
/// table (it is reference-counted), distinct tables alive at once never share an address, and
/// every resource of a batch stays alive while it is grouped. `None` for a resource without
/// attributes.
fn identity(resource: &Resource) -> Option<usize> {
    resource.iter().next().map(|(key, _)| std::ptr::from_ref(key) as usize)
}

/// A hash of a resource's attributes and schema URL, independent of attribute order.
fn fingerprint(resource: &Resource) -> u64 {
    let mut sum = 0u64;
    for (key, value) in resource.iter() {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        match value {
            Value::Bool(b) => b.hash(&mut hasher),
            Value::I64(i) => i.hash(&mut hasher),
            Value::F64(f) => f.to_bits().hash(&mut hasher),
            Value::String(s) => s.as_str().hash(&mut hasher),
            // Arrays (and future kinds) are rare in resources: their text is good enough.
            other => other.to_string().hash(&mut hasher),
        }
        sum = sum.wrapping_add(hasher.finish());
    }
    let mut hasher = DefaultHasher::new();
    sum.hash(&mut hasher);
    resource.schema_url().hash(&mut hasher);
    hasher.finish()
}

/// How many spans a request carries.
#[cfg(test)]
fn span_count(request: &ExportTraceServiceRequest) -> u64 {
    request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len() as u64).sum()
}

/// The request of one batch, of either signal.
#[derive(Clone, Debug)]
pub(crate) enum OtlpRequest {
    /// A batch of spans not converted yet: an HTTP body is encoded straight from it, gRPC
    /// converts it to [`OtlpRequest::Traces`].
    Spans(Vec<SpanRecord>),
    Traces(ExportTraceServiceRequest),
    Logs(ExportLogsServiceRequest),
}

impl OtlpRequest {
    /// Appends the encoded request to `out`; `spans` encodes a batch of spans.
    fn encode(&self, spans: &mut crate::otlp_encode::Encoder, out: &mut Vec<u8>) {
        match self {
            OtlpRequest::Spans(records) => spans.encode(records, out),
            OtlpRequest::Traces(request) => request.encode_raw(out),
            OtlpRequest::Logs(request) => request.encode_raw(out),
        }
    }
}

/// Sends requests to one OTLP endpoint, over either protocol.
pub(crate) enum OtlpSender {
    Http(HttpSender),
    Grpc(GrpcSender),
}

/// A batch in the form it is sent in, built once and kept for its retries: the encoded (and
/// compressed) body for HTTP, the request for gRPC.
pub(crate) enum Prepared {
    Http(Bytes),
    Grpc(OtlpRequest),
}

/// What one successful attempt achieved.
pub(crate) struct Accepted {
    /// Spans or log records the backend said it rejected (OTLP partial success).
    pub rejected: u64,
    /// The backend's explanation of the rejection.
    pub message: String,
}

impl OtlpSender {
    /// Puts the request of a batch in the form it is sent in, once, so that retries repeat
    /// neither the conversion nor the encoding and compression.
    pub(crate) fn prepare(&self, request: OtlpRequest) -> Result<Prepared, OtlpError> {
        match self {
            OtlpSender::Http(http) => http.encode(&request).map(Prepared::Http),
            OtlpSender::Grpc(_) => Ok(Prepared::Grpc(match request {
                OtlpRequest::Spans(records) => OtlpRequest::Traces(build_request(records)),
                other => other,
            })),
        }
    }

    /// One attempt.
    pub(crate) async fn send(&mut self, prepared: &Prepared) -> Result<Accepted, OtlpError> {
        match (self, prepared) {
            (OtlpSender::Http(http), Prepared::Http(body)) => http.send(body.clone()).await,
            (OtlpSender::Grpc(grpc), Prepared::Grpc(request)) => grpc.send(request.clone()).await,
            // A sender prepares only its own kind.
            (OtlpSender::Http(http), Prepared::Grpc(request)) => {
                let body = http.encode(request)?;
                http.send(body).await
            }
            (OtlpSender::Grpc(grpc), Prepared::Http(_)) => Err(OtlpError::Grpc {
                endpoint: grpc.endpoint.clone(),
                code: Code::Internal,
                message: "an HTTP body cannot be sent over gRPC".to_owned(),
                transport: false,
            }),
        }
    }
}

/// The gzip header flate2's `GzEncoder` writes at the fast level: no name, no time, "fastest"
/// (XFL 4), unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255];

/// `raw` as a gzip member (RFC 1952): the header, `raw` deflated by `deflate` (reset first, its
/// tables kept), then the CRC-32 and length of `raw`. The deflate stream is written straight
/// into the body, with one reset per body.
/// zlib-rs's fast level (deflate_quick) is the cheapest gzip measured on span batches
/// (`benches/gzip.rs`): libdeflate's level 1 costs about 1.4x the CPU, C zlib-ng's fast level
/// about 1.1x, for bodies 0.9x and 1x as large.
fn gzip(deflate: &mut flate2::Compress, raw: &[u8]) -> std::io::Result<Vec<u8>> {
    deflate.reset();
    let mut out = Vec::with_capacity(raw.len() / 4 + GZIP_HEADER.len() + 8);
    out.extend_from_slice(&GZIP_HEADER);
    let mut consumed = 0;
    let mut flush = flate2::FlushCompress::None;
    loop {
        let before = deflate.total_in();
        let rest = raw.get(consumed..).unwrap_or_default();
        let status = deflate.compress_vec(rest, &mut out, flush).map_err(std::io::Error::other)?;
        consumed += usize::try_from(deflate.total_in() - before).unwrap_or(rest.len());
        match status {
            flate2::Status::StreamEnd => break,
            // Everything is in: what deflate holds comes out with the end of the stream.
            _ if consumed >= raw.len() => flush = flate2::FlushCompress::Finish,
            _ => {}
        }
        if out.len() == out.capacity() || status == flate2::Status::BufError {
            out.reserve(out.capacity().max(4096));
        }
    }
    let mut crc = flate2::Crc::new();
    crc.update(raw);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE: the length modulo 2^32.
    out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    Ok(out)
}

/// What an HTTP sender keeps between requests, so that encoding a batch reuses the memory of
/// the one before.
#[derive(Default)]
struct Kept {
    /// The deflate state of the gzip bodies: made anew for each one, its few hundred KiB of
    /// tables are allocated, cleared and freed at every batch.
    deflate: Option<flate2::Compress>,
    /// The span encoder's buffers.
    spans: crate::otlp_encode::Encoder,
    /// The uncompressed body of a gzip request.
    raw: Vec<u8>,
}

/// OTLP/HTTP with protobuf bodies, optionally gzip-compressed.
pub(crate) struct HttpSender {
    client: reqwest::Client,
    endpoint: String,
    /// The endpoint parsed once rather than at every request; `None` when it does not parse,
    /// and then each request fails as the client says.
    url: Option<reqwest::Url>,
    gzip: bool,
    /// What encoding keeps between requests (boxed: it is large, and used once per batch).
    kept: std::sync::Mutex<Box<Kept>>,
    /// What the endpoint takes, and so how its answers read.
    signal: Signal,
}

impl HttpSender {
    pub(crate) fn new(
        endpoint: &str,
        timeout: Duration,
        gzip: bool,
        signal: Signal,
    ) -> Result<Self, OtlpError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|source| OtlpError::HttpClient { endpoint: endpoint.to_owned(), source })?;
        let url = reqwest::Url::parse(endpoint).ok();
        Ok(HttpSender { client, endpoint: endpoint.to_owned(), url, gzip, kept: Default::default(), signal })
    }

    fn encode(&self, request: &OtlpRequest) -> Result<Bytes, OtlpError> {
        let mut kept = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Kept { deflate, spans, raw } = &mut **kept;
        if !self.gzip {
            let mut body = Vec::new();
            request.encode(spans, &mut body);
            return Ok(Bytes::from(body));
        }
        raw.clear();
        request.encode(spans, raw);
        let encoder =
            deflate.get_or_insert_with(|| flate2::Compress::new(flate2::Compression::fast(), false));
        gzip(encoder, raw)
            .map(Bytes::from)
            .map_err(|source| OtlpError::Compress { endpoint: self.endpoint.clone(), source })
    }

    async fn send(&self, body: Bytes) -> Result<Accepted, OtlpError> {
        let request = match &self.url {
            Some(url) => self.client.post(url.clone()),
            None => self.client.post(&self.endpoint),
        };
        let mut request = request
            .header(reqwest::header::CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"))
            .body(body);
        if self.gzip {
            request = request.header(reqwest::header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        let http_error = |source| OtlpError::Http { endpoint: self.endpoint.clone(), source };
        let response = request.send().await.map_err(http_error)?;
        let status = response.status();
        let body = response.bytes().await.map_err(http_error)?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let text: String = text.chars().take(MAX_ERROR_BODY).collect();
            return Err(OtlpError::HttpStatus {
                endpoint: self.endpoint.clone(),
                status: status.as_u16(),
                body: text,
            });
        }
        // A success body is the signal's export response; an empty or foreign one means all
        // records were accepted.
        Ok(match self.signal {
            Signal::Traces => accepted(ExportTraceServiceResponse::decode(body).unwrap_or_default()),
            Signal::Logs => accepted_logs(ExportLogsServiceResponse::decode(body).unwrap_or_default()),
        })
    }
}

/// The generated tonic client of a signal's service.
enum GrpcClient {
    Traces(TraceServiceClient<Channel>),
    Logs(LogsServiceClient<Channel>),
}

/// OTLP/gRPC through `opentelemetry-proto`'s generated tonic clients.
pub(crate) struct GrpcSender {
    client: GrpcClient,
    endpoint: String,
}

impl GrpcSender {
    /// Creates the channel lazily: a backend that is down now is connected to later.
    /// Must be called inside a tokio runtime.
    pub(crate) fn new(
        endpoint: &str,
        timeout: Duration,
        gzip: bool,
        signal: Signal,
    ) -> Result<Self, OtlpError> {
        let uri = grpc_uri(endpoint);
        let grpc_error = |source| OtlpError::GrpcEndpoint { endpoint: endpoint.to_owned(), source };
        let mut channel =
            Endpoint::from_shared(uri.clone()).map_err(grpc_error)?.connect_timeout(timeout).timeout(timeout);
        if uri.starts_with("https://") {
            channel = channel.tls_config(ClientTlsConfig::new().with_webpki_roots()).map_err(grpc_error)?;
        }
        let channel = channel.connect_lazy();
        let client = match signal {
            Signal::Traces => {
                let mut client = TraceServiceClient::new(channel)
                    .max_encoding_message_size(MAX_MESSAGE_SIZE)
                    .max_decoding_message_size(MAX_MESSAGE_SIZE);
                if gzip {
                    client = client
                        .send_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Gzip);
                }
                GrpcClient::Traces(client)
            }
            Signal::Logs => {
                let mut client = LogsServiceClient::new(channel)
                    .max_encoding_message_size(MAX_MESSAGE_SIZE)
                    .max_decoding_message_size(MAX_MESSAGE_SIZE);
                if gzip {
                    client = client
                        .send_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Gzip);
                }
                GrpcClient::Logs(client)
            }
        };
        Ok(GrpcSender { client, endpoint: endpoint.to_owned() })
    }

    async fn send(&mut self, request: OtlpRequest) -> Result<Accepted, OtlpError> {
        let request = match request {
            OtlpRequest::Spans(records) => OtlpRequest::Traces(build_request(records)),
            other => other,
        };
        let result = match (&mut self.client, request) {
            (GrpcClient::Traces(client), OtlpRequest::Traces(request)) => {
                client.export(request).await.map(|response| accepted(response.into_inner()))
            }
            (GrpcClient::Logs(client), OtlpRequest::Logs(request)) => {
                client.export(request).await.map(|response| accepted_logs(response.into_inner()))
            }
            // A worker prepares only its own signal.
            (GrpcClient::Traces(_), OtlpRequest::Logs(_))
            | (_, OtlpRequest::Spans(_))
            | (GrpcClient::Logs(_), OtlpRequest::Traces(_)) => {
                Err(tonic::Status::internal("a request of one signal cannot go to the other's service"))
            }
        };
        result.map_err(|status| OtlpError::Grpc {
            endpoint: self.endpoint.clone(),
            code: status.code(),
            message: status.message().to_owned(),
            transport: std::error::Error::source(&status).is_some(),
        })
    }
}

/// tonic wants `http(s)://`; Tango writes `grpc://`.
pub(crate) fn grpc_uri(endpoint: &str) -> String {
    if let Some(rest) = endpoint.strip_prefix("grpc://") {
        format!("http://{rest}")
    } else if let Some(rest) = endpoint.strip_prefix("grpcs://") {
        format!("https://{rest}")
    } else {
        endpoint.to_owned()
    }
}

fn accepted(response: ExportTraceServiceResponse) -> Accepted {
    match response.partial_success {
        Some(partial) => Accepted {
            rejected: u64::try_from(partial.rejected_spans).unwrap_or(0),
            message: partial.error_message,
        },
        None => Accepted { rejected: 0, message: String::new() },
    }
}

fn accepted_logs(response: ExportLogsServiceResponse) -> Accepted {
    match response.partial_success {
        Some(partial) => Accepted {
            rejected: u64::try_from(partial.rejected_log_records).unwrap_or(0),
            message: partial.error_message,
        },
        None => Accepted { rejected: 0, message: String::new() },
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        reason = "tests"
    )]

    use std::{
        io::Write as _,
        time::{Duration, SystemTime},
    };

    use opentelemetry::{
        InstrumentationScope, KeyValue,
        trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
    };
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

    use super::*;

    #[test]
    fn gzip_bodies_are_those_of_gz_encoder_and_decode_with_a_kept_encoder() {
        let mut encoder = flate2::Compress::new(flate2::Compression::fast(), false);
        for raw in [
            b"first body, first body, first body".to_vec(),
            crate::otlp_encode::encode_request(&crate::testing::tango_batch(2048)),
            (0..50_000u32).flat_map(u32::to_le_bytes).collect(),
            Vec::new(),
            // Incompressible: the body outgrows the room first reserved for it.
            (1..=30_000u64)
                .scan(0x9e37_79b9_7f4a_7c15u64, |x, _| {
                    *x ^= *x << 13;
                    *x ^= *x >> 7;
                    *x ^= *x << 17;
                    Some(*x)
                })
                .flat_map(u64::to_le_bytes)
                .collect(),
        ] {
            let body = gzip(&mut encoder, &raw).unwrap();
            let mut reference = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            reference.write_all(&raw).unwrap();
            assert_eq!(body, reference.finish().unwrap());
            let mut decoded = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body.as_slice()), &mut decoded)
                .unwrap();
            assert_eq!(decoded, raw);
        }
    }

    fn record(resource: &Resource, span_id: u64) -> SpanRecord {
        SpanRecord {
            resource: resource.clone(),
            data: SpanData {
                span_context: SpanContext::new(
                    TraceId::from(7u128),
                    SpanId::from(span_id),
                    TraceFlags::SAMPLED,
                    false,
                    TraceState::default(),
                ),
                parent_span_id: SpanId::INVALID,
                parent_span_is_remote: false,
                span_kind: SpanKind::Server,
                name: "op".into(),
                start_time: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
                end_time: SystemTime::UNIX_EPOCH + Duration::from_secs(2),
                attributes: vec![],
                dropped_attributes_count: 0,
                events: SpanEvents::default(),
                links: SpanLinks::default(),
                status: Status::Unset,
                instrumentation_scope: InstrumentationScope::builder("tango.cpp")
                    .with_version("10.3.3")
                    .build(),
            },
        }
    }

    fn device(name: &str, pid: i64) -> Resource {
        Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", "Demo"),
                KeyValue::new("service.instance.id", name.to_owned()),
                KeyValue::new("tango.process.id", pid),
            ])
            .build()
    }

    #[test]
    fn one_request_with_one_resource_spans_per_resource() {
        let a = device("test/demo/1", 1);
        let b = device("test/demo/2", 1);
        // Equal but separately built: must share a group.
        let a_again = device("test/demo/1", 1);
        let request = build_request(vec![record(&a, 1), record(&b, 2), record(&a_again, 3), record(&b, 4)]);
        assert_eq!(request.resource_spans.len(), 2);
        let ids: Vec<Vec<u8>> =
            request.resource_spans[0].scope_spans[0].spans.iter().map(|s| s.span_id.clone()).collect();
        assert_eq!(ids, vec![1u64.to_be_bytes().to_vec(), 3u64.to_be_bytes().to_vec()]);
        assert_eq!(request.resource_spans[1].scope_spans[0].spans.len(), 2);
        assert_eq!(span_count(&request), 4);
    }

    /// What cppTango 10.3.3 sent for the reference records, as the protobuf message: the
    /// capture's JSON (protobuf's JSON mapping) with the severity's enum name given as its
    /// number.
    fn native_logs_request() -> ExportLogsServiceRequest {
        let mut capture: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/device_logs.json")).unwrap();
        let mut records = capture["logRecords"].take();
        for record in records.as_array_mut().unwrap() {
            let record = record.as_object_mut().unwrap();
            let number = record.remove("severityNumber_int").unwrap();
            record.insert("severityNumber".into(), number);
        }
        let request = serde_json::json!({"resourceLogs": [{
            "resource": capture["resource"].take(),
            "scopeLogs": [{"scope": capture["scope"].take(), "logRecords": records}],
        }]});
        serde_json::from_value(request).unwrap()
    }

    /// Our encoding of the reference records is, field by field and byte for byte, what
    /// cppTango sends natively.
    #[test]
    fn log_records_encode_as_cpptango_sends_them() {
        let mut native = native_logs_request();
        let body = build_logs_request(crate::testing::reference_device_logs()).encode_to_vec();
        let mut ours = ExportLogsServiceRequest::decode(body.as_slice()).unwrap();
        // Resource attributes come in a hash's order, on both sides.
        for request in [&mut ours, &mut native] {
            for resource_logs in &mut request.resource_logs {
                resource_logs.resource.as_mut().unwrap().attributes.sort_by(|a, b| a.key.cmp(&b.key));
            }
        }

        assert_eq!(ours.resource_logs.len(), 1);
        let (ours_rl, native_rl) = (&ours.resource_logs[0], &native.resource_logs[0]);
        assert_eq!(ours_rl.resource, native_rl.resource, "resource");
        assert_eq!(ours_rl.scope_logs.len(), 1);
        let (ours_sl, native_sl) = (&ours_rl.scope_logs[0], &native_rl.scope_logs[0]);
        let scope = ours_sl.scope.as_ref().unwrap();
        assert_eq!((scope.name.as_str(), scope.version.as_str()), ("cppTango", "10.3.3"));
        assert_eq!(ours_sl.scope, native_sl.scope, "scope");
        assert_eq!(ours_sl.log_records.len(), 3);
        for (ours, native) in ours_sl.log_records.iter().zip(&native_sl.log_records) {
            let which = &native.severity_text;
            assert_eq!(ours.time_unix_nano, native.time_unix_nano, "{which}: time");
            assert_eq!(
                ours.observed_time_unix_nano, native.observed_time_unix_nano,
                "{which}: observed time"
            );
            assert_eq!(ours.severity_number, native.severity_number, "{which}: severity number");
            assert_eq!(ours.severity_text, native.severity_text, "{which}: severity text");
            assert_eq!(ours.body, native.body, "{which}: body");
            assert_eq!(ours.attributes, native.attributes, "{which}: attributes");
            assert_eq!(ours.trace_id, native.trace_id, "{which}: trace id");
            assert_eq!(ours.span_id, native.span_id, "{which}: span id");
            assert_eq!(ours.flags, native.flags, "{which}: flags");
            assert_eq!(ours.dropped_attributes_count, native.dropped_attributes_count, "{which}: dropped");
            assert_eq!(ours.event_name, native.event_name, "{which}: event name");
        }
        // The capture's facts, checked on their own so that a wrong capture cannot hide.
        let [warn, info, fatal] = &ours_sl.log_records[..] else { panic!("three records") };
        assert_eq!((warn.severity_number, warn.severity_text.as_str()), (13, "WARN"));
        assert_eq!((info.severity_number, fatal.severity_number), (9, 21));
        assert!(warn.trace_id.is_empty() && warn.span_id.is_empty() && warn.flags == 0);
        assert_eq!((info.trace_id.len(), info.span_id.len(), info.flags), (16, 8, 3));
        assert_eq!(
            info.attributes[1].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(20)),
            "code.lineno is an integer"
        );
        // Equal messages, equal bytes: nothing is set that native leaves out.
        assert_eq!(ours, native);
        assert_eq!(ours.encode_to_vec(), native.encode_to_vec());
    }

    #[test]
    fn log_records_of_many_devices_share_one_request() {
        let scope = crate::testing::logs_scope();
        let other_scope = Arc::new(InstrumentationScope::builder("cppTango").with_version("9.3.4").build());
        let a = device("test/demo/1", 1);
        let b = device("test/demo/2", 2);
        let mut records = crate::testing::many_logs(&a, 2, 1);
        records.extend(crate::testing::many_logs(&b, 1, 3));
        records.extend(crate::testing::many_logs(&device("test/demo/1", 1), 1, 4));
        let mut old = crate::testing::many_logs(&b, 1, 5);
        old[0].scope = other_scope;
        records.extend(old);
        // An equal scope built separately shares the group.
        let mut same = crate::testing::many_logs(&a, 1, 6);
        same[0].scope = Arc::new((*scope).clone());
        records.extend(same);

        let request = build_logs_request(records);
        let seqs = |logs: &ScopeLogs| -> Vec<i64> {
            logs.log_records
                .iter()
                .map(|r| match r.attributes.last().unwrap().value.as_ref().unwrap().value {
                    Some(any_value::Value::IntValue(i)) => i,
                    _ => -1,
                })
                .collect()
        };
        assert_eq!(request.resource_logs.len(), 2);
        let [first, second] = &request.resource_logs[..] else { panic!("two resources") };
        assert_eq!(first.scope_logs.len(), 1);
        assert_eq!(seqs(&first.scope_logs[0]), vec![1, 2, 4, 6]);
        assert_eq!(second.scope_logs.len(), 2, "two versions of libtango, two scopes");
        assert_eq!(seqs(&second.scope_logs[0]), vec![3]);
        assert_eq!(seqs(&second.scope_logs[1]), vec![5]);
        assert_eq!(second.scope_logs[1].scope.as_ref().unwrap().version, "9.3.4");
    }

    #[test]
    fn fingerprint_ignores_attribute_order() {
        let one = Resource::builder_empty()
            .with_attributes([KeyValue::new("a", 1), KeyValue::new("b", "x")])
            .build();
        let two = Resource::builder_empty()
            .with_attributes([KeyValue::new("b", "x"), KeyValue::new("a", 1)])
            .build();
        assert_eq!(fingerprint(&one), fingerprint(&two));
        assert_ne!(fingerprint(&one), fingerprint(&device("x", 1)));
    }

    #[test]
    fn retryable_statuses() {
        let status = |status| OtlpError::HttpStatus { endpoint: String::new(), status, body: String::new() };
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(status(408).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(!status(413).is_retryable());
        assert!(!status(500).is_retryable());
        assert!(!status(404).is_retryable());
        let grpc = |code| OtlpError::Grpc {
            endpoint: String::new(),
            code,
            message: String::new(),
            transport: false,
        };
        assert!(grpc(Code::Unavailable).is_retryable());
        assert!(!grpc(Code::InvalidArgument).is_retryable());
        let broken = OtlpError::Grpc {
            endpoint: String::new(),
            code: Code::Unknown,
            message: String::new(),
            transport: true,
        };
        assert!(broken.is_retryable());
        assert_eq!(grpc_uri("grpc://h:1"), "http://h:1");
        assert_eq!(grpc_uri("http://h:1"), "http://h:1");
    }
}
