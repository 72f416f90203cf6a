//! The daemon's health, for the service manager and for whoever asks (`ctl health`, `GET
//! /healthz`).
//!
//! Healthy means: the probes are attached and the start-up scan is done, no export destination
//! has been failing for [`EXPORT_FAILING_LIMIT`] or more, and no probe record was lost in the last
//! [`LOSS_WINDOW`]. Under systemd (`NOTIFY_SOCKET`) the daemon also says `READY=1` once ready, a
//! `STATUS=` line every [`STATUS_INTERVAL`], `WATCHDOG=1` every half `WATCHDOG_USEC` from the main
//! loop (a stuck loop stops it), `STOPPING=1` when it stops, and `RELOADING=1` … `READY=1` around a
//! reload ([`notify_reloading`], [`notify_reloaded`]).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// An export destination failing this long makes the daemon unhealthy (a backend restart, a
/// network blip, are shorter).
pub const EXPORT_FAILING_LIMIT: Duration = Duration::from_secs(10);
/// Probe records lost within this window make the daemon unhealthy.
pub const LOSS_WINDOW: Duration = Duration::from_secs(60);
/// How often the `STATUS=` line is renewed.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(5);
/// How often health is worked out again (it reads every export counter).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What health is worked out from, read from the daemon's counters.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    pub traced_processes: usize,
    pub spans_exported: u64,
    /// Everything lost so far, every stage and cause (as `ctl stats` lists it).
    pub lost_total: u64,
    /// Probe records lost so far (ring buffer full, in-kernel maps full, …).
    pub records_lost: u64,
    /// Destinations failing now, with their last error.
    pub failing: Vec<String>,
}

/// The answer of `ctl health` and `GET /healthz`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HealthView {
    pub healthy: bool,
    /// Why not, one line per reason.
    pub reasons: Vec<String>,
    /// `<n> processes traced, <m> spans exported, <k> lost`.
    pub status: String,
}

impl HealthView {
    /// The text `GET /healthz` answers and `ctl health` prints.
    pub fn text(&self) -> String {
        let mut out = format!("{}: {}\n", if self.healthy { "healthy" } else { "unhealthy" }, self.status);
        for reason in &self.reasons {
            out.push_str(&format!("    {reason}\n"));
        }
        out
    }
}

/// Health as the run loop keeps it.
#[derive(Debug)]
pub struct Health {
    ready: bool,
    last: Observation,
    failing_since: Option<Instant>,
    /// When probe records were last seen lost.
    last_loss: Option<Instant>,
    last_check: Option<Instant>,
    last_status: Option<Instant>,
    watchdog: Option<Duration>,
    last_watchdog: Option<Instant>,
}

impl Health {
    /// `watchdog`: systemd's `WATCHDOG_USEC`, when set for this process.
    pub fn new(watchdog: Option<Duration>) -> Health {
        Health {
            ready: false,
            last: Observation::default(),
            failing_since: None,
            last_loss: None,
            last_check: None,
            last_status: None,
            watchdog,
            last_watchdog: None,
        }
    }

    /// Health from the process's environment (`WATCHDOG_USEC`, `WATCHDOG_PID`).
    pub fn from_env() -> Health {
        Health::new(sd_notify::watchdog_enabled())
    }

    /// Probes attached, start-up scan done.
    pub fn set_ready(&mut self) {
        self.ready = true;
    }

    /// Whether it is time to [`Health::observe`] again.
    pub fn check_due(&self, now: Instant) -> bool {
        self.last_check.is_none_or(|at| now.duration_since(at) >= CHECK_INTERVAL)
    }

    /// Takes in the counters of `now`.
    pub fn observe(&mut self, observation: Observation, now: Instant) {
        if observation.records_lost > self.last.records_lost {
            self.last_loss = Some(now);
        }
        self.failing_since = match (observation.failing.is_empty(), self.failing_since) {
            (true, _) => None,
            (false, Some(since)) => Some(since),
            (false, None) => Some(now),
        };
        self.last = observation;
        self.last_check = Some(now);
    }

    /// The verdict as of `now`.
    pub fn view(&self, now: Instant) -> HealthView {
        let mut reasons = Vec::new();
        if !self.ready {
            reasons.push("starting: probes not attached yet".to_owned());
        }
        if let Some(since) = self.failing_since {
            let failing_for = now.duration_since(since);
            if failing_for >= EXPORT_FAILING_LIMIT {
                for destination in &self.last.failing {
                    reasons.push(format!("export failing for {} s: {destination}", failing_for.as_secs()));
                }
            }
        }
        if let Some(at) = self.last_loss
            && now.duration_since(at) < LOSS_WINDOW
        {
            reasons.push(format!(
                "probe records lost in the last {} s ({} lost since start)",
                LOSS_WINDOW.as_secs(),
                self.last.records_lost
            ));
        }
        HealthView { healthy: reasons.is_empty(), reasons, status: self.status_line() }
    }

    fn status_line(&self) -> String {
        format!(
            "{} processes traced, {} spans exported, {} lost",
            self.last.traced_processes, self.last.spans_exported, self.last.lost_total
        )
    }

    /// The notifications due at `now` (`STATUS=`, `WATCHDOG=1`), sent; call from the main loop.
    pub fn notify_due(&mut self, now: Instant) {
        let mut states = Vec::new();
        let status;
        if self.ready && self.last_status.is_none_or(|at| now.duration_since(at) >= STATUS_INTERVAL) {
            self.last_status = Some(now);
            let view = self.view(now);
            status = match view.reasons.as_slice() {
                [] => view.status,
                reasons => format!("{}; unhealthy: {}", view.status, reasons.join("; ")),
            };
            states.push(sd_notify::NotifyState::Status(&status));
        }
        if let Some(interval) = self.watchdog
            && self.last_watchdog.is_none_or(|at| now.duration_since(at) >= interval / 2)
        {
            self.last_watchdog = Some(now);
            states.push(sd_notify::NotifyState::Watchdog);
        }
        if !states.is_empty() {
            send(&states);
        }
    }
}

/// `READY=1`: probes attached, start-up scan done.
pub fn notify_ready(status: &str) {
    send(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(status)]);
}

/// `STOPPING=1`: the daemon ends open calls and flushes.
pub fn notify_stopping() {
    send(&[sd_notify::NotifyState::Stopping, sd_notify::NotifyState::Status("stopping: flushing exporters")]);
}

/// `RELOADING=1` (with the monotonic time systemd 253 and later require): a reload starts.
pub fn notify_reloading() {
    match sd_notify::NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[sd_notify::NotifyState::Reloading, now]),
        Err(_) => send(&[sd_notify::NotifyState::Reloading]),
    }
}

/// `READY=1` after a reload.
pub fn notify_reloaded() {
    send(&[sd_notify::NotifyState::Ready]);
}

fn send(states: &[sd_notify::NotifyState]) {
    // Nothing to do without NOTIFY_SOCKET; a manager that went away is not the daemon's problem.
    if let Err(e) = sd_notify::notify(states) {
        log::debug!("notifying the service manager: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(records_lost: u64, failing: &[&str]) -> Observation {
        Observation {
            traced_processes: 3,
            spans_exported: 120,
            lost_total: records_lost,
            records_lost,
            failing: failing.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    #[test]
    fn unhealthy_until_ready_then_while_export_fails_long_or_records_are_lost() {
        let start = Instant::now();
        let mut health = Health::new(None);
        health.observe(observation(0, &[]), start);
        assert_eq!(health.view(start).reasons, ["starting: probes not attached yet"]);
        health.set_ready();
        let view = health.view(start);
        assert!(view.healthy, "{view:?}");
        assert_eq!(view.status, "3 processes traced, 120 spans exported, 0 lost");

        // A destination failing for a moment is no reason; for the limit it is.
        health.observe(observation(0, &["otlp http://c:4318: connection refused"]), start);
        let soon = start + Duration::from_secs(2);
        health.observe(observation(0, &["otlp http://c:4318: connection refused"]), soon);
        assert!(health.view(soon).healthy);
        let later = start + EXPORT_FAILING_LIMIT + Duration::from_secs(1);
        health.observe(observation(0, &["otlp http://c:4318: connection refused"]), later);
        let view = health.view(later);
        assert!(!view.healthy);
        assert_eq!(view.reasons, ["export failing for 11 s: otlp http://c:4318: connection refused"]);
        // Delivered again: healthy at once.
        health.observe(observation(0, &[]), later);
        assert!(health.view(later).healthy);

        // Records lost: unhealthy for the window after the last loss.
        health.observe(observation(5, &[]), later);
        let view = health.view(later);
        assert_eq!(view.reasons, ["probe records lost in the last 60 s (5 lost since start)"]);
        assert!(view.text().starts_with("unhealthy: 3 processes traced, 120 spans exported, 5 lost\n"));
        let quiet = later + LOSS_WINDOW;
        health.observe(observation(5, &[]), quiet);
        assert!(health.view(quiet).healthy);
    }
}
