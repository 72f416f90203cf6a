//! Where the snapshots go: the Prometheus endpoint (`GET /metrics`) and the periodic OTLP push.
//! Both read the last snapshot the run loop published; neither touches the pipeline.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode, body::Incoming, header, server::conn::http1, service::service_fn,
};
use hyper_util::rt::TokioIo;
use log::{debug, info, warn};
use tokio::{sync::watch, task::JoinHandle};
use tracer_export::{Destination, metrics::MetricsSender};

use super::{ExportCounters, Snapshot, otlp, prometheus};
use crate::run::health::HealthView;

/// The last snapshot, as the run loop publishes it.
pub type Latest = watch::Receiver<Option<Arc<Snapshot>>>;
/// The daemon's last health verdict, as the run loop publishes it.
pub type LatestHealth = watch::Receiver<HealthView>;

/// Longest time one OTLP metrics request takes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Listens at `addr` now (an address taken is an error at start) and answers `GET /metrics`
/// with the last snapshot and `GET /healthz` with the last health verdict (200 healthy, 503
/// not); returns the address bound (port 0 picks one).
pub fn listen(addr: SocketAddr, latest: Latest, health: LatestHealth) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("--metrics-listen {addr}"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: try again in a moment.
                    debug!("metrics endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let latest = latest.clone();
            let health = health.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| answer(request, latest.clone(), health.clone()));
                if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                    debug!("metrics endpoint: connection ended: {e}");
                }
            });
        }
    });
    Ok(bound)
}

async fn answer(
    request: Request<Incoming>,
    latest: Latest,
    health: LatestHealth,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status, content_type, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = header::HeaderValue::from_str(content_type) {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        Ok(response)
    };
    if request.method() == Method::GET && request.uri().path() == "/healthz" {
        let view = health.borrow().clone();
        let status = if view.healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        return reply(status, "text/plain", view.text());
    }
    if request.method() != Method::GET || request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "only GET /metrics and /healthz are served\n".to_owned(),
        );
    }
    let snapshot = latest.borrow().clone();
    match snapshot {
        Some(snapshot) => reply(StatusCode::OK, prometheus::CONTENT_TYPE, prometheus::render(&snapshot)),
        None => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "no metrics yet\n".to_owned()),
    }
}

/// Pushes the last snapshot to every destination every `interval`, and once more when `stop`
/// is set (after the run loop published its last snapshot). A failed request is counted and
/// logged (the first and then every tenth); metrics are cumulative, the next request repairs it.
pub fn push(
    destinations: &[Destination],
    mut interval: watch::Receiver<Duration>,
    mut latest: Latest,
    counters: Arc<ExportCounters>,
    mut stop: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    let mut senders = Vec::new();
    for destination in destinations {
        match MetricsSender::new(destination, REQUEST_TIMEOUT) {
            Some(Ok(sender)) => {
                info!("exporting metrics to {destination} every {:?}", *interval.borrow());
                senders.push(sender);
            }
            Some(Err(e)) => warn!("no metrics to {destination}: {e}"),
            None => {}
        }
    }
    if senders.is_empty() {
        return None;
    }
    Some(tokio::spawn(async move {
        let every = |period: Duration| {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        };
        let mut tick = every(*interval.borrow_and_update());
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                _ = stop.changed() => true,
                Ok(()) = interval.changed() => {
                    // A new interval (SIGHUP): the next push one new interval from now.
                    tick = every(*interval.borrow_and_update());
                    continue;
                }
            };
            let snapshot = latest.borrow_and_update().clone();
            if let Some(snapshot) = snapshot {
                let request = otlp::request(&snapshot);
                for sender in &mut senders {
                    counters.requests.fetch_add(1, Relaxed);
                    if let Err(e) = sender.send(request.clone()).await {
                        let failed = counters.failed.fetch_add(1, Relaxed);
                        if failed.is_multiple_of(10) {
                            warn!("metrics export failed ({} so far): {e}", failed + 1);
                        }
                    }
                }
            }
            if last {
                return;
            }
        }
    }))
}

/// How often the run loop publishes a snapshot.
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// The run loop's end of the metrics: publishes snapshots to the endpoint and the OTLP push.
pub struct Publisher {
    latest: watch::Sender<Option<Arc<Snapshot>>>,
    health: watch::Sender<HealthView>,
    stop: watch::Sender<bool>,
    interval: watch::Sender<Duration>,
    push: Option<JoinHandle<()>>,
    counters: Arc<ExportCounters>,
    last: Option<std::time::Instant>,
}

impl Publisher {
    /// Starts the endpoint (when `options.listen`) and the OTLP push (when destinations).
    pub fn start(options: &super::MetricsOptions) -> anyhow::Result<Publisher> {
        let (latest, receiver) = watch::channel(None);
        let starting = HealthView {
            healthy: false,
            reasons: vec!["starting: probes not attached yet".to_owned()],
            status: String::new(),
        };
        let (health, health_receiver) = watch::channel(starting);
        if let Some(addr) = options.listen {
            let bound = listen(addr, receiver.clone(), health_receiver)?;
            info!("metrics at http://{bound}/metrics, health at http://{bound}/healthz");
        }
        let (stop, stop_rx) = watch::channel(false);
        let counters = Arc::new(ExportCounters::default());
        let (interval, interval_rx) = watch::channel(options.interval);
        let push = push(&options.destinations, interval_rx, receiver, Arc::clone(&counters), stop_rx);
        Ok(Publisher { latest, health, stop, interval, push, counters, last: None })
    }

    /// How often the metrics are pushed over OTLP, from now on.
    pub fn set_interval(&self, interval: Duration) {
        self.interval.send_replace(interval);
    }

    /// Pushes to `destinations` from now on (SIGHUP): the push to the old ones sends the last
    /// snapshot once more and ends (metrics are cumulative: the new ones miss nothing).
    pub fn set_destinations(&mut self, destinations: &[Destination]) {
        let (stop, stop_rx) = watch::channel(false);
        std::mem::replace(&mut self.stop, stop).send_replace(true);
        self.push = push(
            destinations,
            self.interval.subscribe(),
            self.latest.subscribe(),
            Arc::clone(&self.counters),
            stop_rx,
        );
    }

    /// Whether a snapshot is due.
    pub fn due(&self) -> bool {
        self.last.is_none_or(|last| last.elapsed() >= PUBLISH_INTERVAL)
    }

    pub fn publish(&mut self, snapshot: Snapshot) {
        self.last = Some(std::time::Instant::now());
        self.latest.send_replace(Some(Arc::new(snapshot)));
    }

    /// What `GET /healthz` answers from now on.
    pub fn set_health(&self, view: HealthView) {
        self.health.send_replace(view);
    }

    pub fn counters(&self) -> &ExportCounters {
        &self.counters
    }

    /// Sends the last published snapshot once more and waits for it, at most `timeout`.
    pub async fn finish(&mut self, timeout: Duration) {
        self.stop.send_replace(true);
        if let Some(push) = self.push.take()
            && tokio::time::timeout(timeout, push).await.is_err()
        {
            warn!("the last metrics were not delivered within {timeout:?}");
        }
    }
}
