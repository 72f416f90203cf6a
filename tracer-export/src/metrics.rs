//! OTLP metrics: one `ExportMetricsServiceRequest` sent over HTTP (`/v1/metrics`) or gRPC
//! (`MetricsService`). Metrics are cumulative, so a failed request is not retried: the next
//! one carries everything again.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse, metrics_service_client::MetricsServiceClient,
};
use prost::Message as _;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::{Destination, OtlpError, otlp::grpc_uri};

/// Longest part of an error response body kept in an error message.
const MAX_ERROR_BODY: usize = 256;

/// Sends metrics requests to one OTLP endpoint.
pub enum MetricsSender {
    Http { client: reqwest::Client, endpoint: String },
    Grpc { client: MetricsServiceClient<Channel>, endpoint: String },
}

impl MetricsSender {
    /// A sender for an OTLP destination (`None` for the console and the store, which take no
    /// metrics). The gRPC channel connects lazily; must be called inside a tokio runtime.
    pub fn new(destination: &Destination, timeout: Duration) -> Option<Result<Self, OtlpError>> {
        match destination {
            Destination::OtlpHttp { endpoint } => Some(
                reqwest::Client::builder()
                    .timeout(timeout)
                    .connect_timeout(timeout)
                    .build()
                    .map(|client| MetricsSender::Http { client, endpoint: endpoint.clone() })
                    .map_err(|source| OtlpError::HttpClient { endpoint: endpoint.clone(), source }),
            ),
            Destination::OtlpGrpc { endpoint } => Some(grpc(endpoint, timeout)),
            Destination::Console { .. } | Destination::Store { .. } => None,
        }
    }

    /// One attempt; a partial success is an error naming the rejected data points.
    pub async fn send(&mut self, request: ExportMetricsServiceRequest) -> Result<(), OtlpError> {
        let (response, endpoint) = match self {
            MetricsSender::Http { client, endpoint } => {
                let http_error = |source| OtlpError::Http { endpoint: endpoint.clone(), source };
                let response = client
                    .post(endpoint.as_str())
                    .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
                    .body(request.encode_to_vec())
                    .send()
                    .await
                    .map_err(http_error)?;
                let status = response.status();
                let body = response.bytes().await.map_err(http_error)?;
                if !status.is_success() {
                    let text: String = String::from_utf8_lossy(&body).chars().take(MAX_ERROR_BODY).collect();
                    return Err(OtlpError::HttpStatus {
                        endpoint: endpoint.clone(),
                        status: status.as_u16(),
                        body: text,
                    });
                }
                (ExportMetricsServiceResponse::decode(body).unwrap_or_default(), &*endpoint)
            }
            MetricsSender::Grpc { client, endpoint } => {
                let response = client.export(request).await.map_err(|status| OtlpError::Grpc {
                    endpoint: endpoint.clone(),
                    code: status.code(),
                    message: status.message().to_owned(),
                    transport: std::error::Error::source(&status).is_some(),
                })?;
                (response.into_inner(), &*endpoint)
            }
        };
        match response.partial_success {
            Some(partial) if partial.rejected_data_points > 0 => Err(OtlpError::PartialSuccess {
                endpoint: endpoint.to_owned(),
                rejected: u64::try_from(partial.rejected_data_points).unwrap_or(0),
                message: partial.error_message,
            }),
            _ => Ok(()),
        }
    }
}

fn grpc(endpoint: &str, timeout: Duration) -> Result<MetricsSender, OtlpError> {
    let uri = grpc_uri(endpoint);
    let grpc_error = |source| OtlpError::GrpcEndpoint { endpoint: endpoint.to_owned(), source };
    let mut channel =
        Endpoint::from_shared(uri.clone()).map_err(grpc_error)?.connect_timeout(timeout).timeout(timeout);
    if uri.starts_with("https://") {
        channel = channel.tls_config(ClientTlsConfig::new().with_webpki_roots()).map_err(grpc_error)?;
    }
    let client = MetricsServiceClient::new(channel.connect_lazy());
    Ok(MetricsSender::Grpc { client, endpoint: endpoint.to_owned() })
}
