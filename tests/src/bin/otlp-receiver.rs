//! A standalone OTLP receiver for benchmarks and humans.
//!
//! ```text
//! otlp-receiver --http 127.0.0.1:4318 --grpc 127.0.0.1:4317 --out spans.jsonl
//! ```
//! Accepts OTLP/HTTP (`POST /v1/traces`, `POST /v1/logs`) and OTLP/gRPC, appends every span to
//! `--out` as JSON lines (readable with `tracer_export::read_store`) and every log record to the
//! file beside it (`tracer_export::logs_path`), reports each request on standard error, and
//! prints all traces as trees, with their log records, when stopped with Ctrl-C or SIGTERM.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use integration_tests::otlp_receiver::{OtlpReceiver, ReceiverOptions};
use tracer_export::tree::{render_logs, render_trees_with_logs};

/// Receives OTLP traces and logs over HTTP and gRPC and keeps them as JSON lines.
#[derive(Parser, Debug)]
#[command(name = "otlp-receiver")]
struct Options {
    /// OTLP/HTTP listening address.
    #[arg(long, default_value = "127.0.0.1:4318")]
    http: SocketAddr,
    /// OTLP/gRPC listening address.
    #[arg(long, default_value = "127.0.0.1:4317")]
    grpc: SocketAddr,
    /// JSON-lines file every received span is appended to.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Do not print the trees of all received spans on exit.
    #[arg(long)]
    quiet: bool,
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let mut receiver = OtlpReceiver::start_with(ReceiverOptions {
        http: options.http,
        grpc: options.grpc,
        out: options.out.clone(),
    })?;
    eprintln!(
        "otlp-receiver: OTLP/HTTP {} OTLP/gRPC {}{}",
        receiver.http_endpoint(),
        receiver.grpc_endpoint(),
        options.out.as_ref().map(|p| format!(", spans to {}", p.display())).unwrap_or_default()
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let (mut reported, mut reported_logs) = (0, 0);
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                result = tokio::signal::ctrl_c() => { result?; break; }
                _ = terminate.recv() => break,
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            let log = receiver.request_log();
            for request in log.iter().skip(reported) {
                eprintln!(
                    "otlp-receiver: {} request: {} resource_spans, {} spans{}",
                    request.protocol.name(),
                    request.resource_spans,
                    request.spans,
                    if request.gzip { " (gzip)" } else { "" }
                );
            }
            reported = log.len();
            let log = receiver.log_request_log();
            for request in log.iter().skip(reported_logs) {
                eprintln!(
                    "otlp-receiver: {} logs request: {} resource_logs, {} records{}",
                    request.protocol.name(),
                    request.resource_logs,
                    request.records,
                    if request.gzip { " (gzip)" } else { "" }
                );
            }
            reported_logs = log.len();
        }
        anyhow::Ok(())
    })?;
    // Closed first: a request answered after the count would be delivered but never counted.
    receiver.close();
    let spans = receiver.spans();
    let logs = receiver.logs();
    eprintln!(
        "otlp-receiver: {} spans in {} requests, {} log records in {} requests",
        spans.len(),
        receiver.requests(),
        logs.len(),
        receiver.log_request_log().len()
    );
    if !options.quiet {
        print!("{}", render_trees_with_logs(&spans, &logs));
        let outside: Vec<_> = logs.into_iter().filter(|l| l.span_id.is_empty()).collect();
        if !outside.is_empty() {
            println!("log records outside any span:");
            print!("{}", render_logs(&outside));
        }
    }
    receiver.stop();
    Ok(())
}
