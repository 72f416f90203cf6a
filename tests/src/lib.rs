//! Integration tests of tango-tracer, and the test peers they need.
//!
//! - [`otlp_receiver`]: a real OTLP/HTTP + OTLP/gRPC receiver on 127.0.0.1 (also the
//!   `otlp-receiver` binary, for benchmarks and humans).
//! - [`reference`]: the daemon's spans compared with cppTango's own (`tests/reference/`).
//! - [`harness`]: real servers, clients and the daemon, stopped by PID; the daemon's end checked.
//! - [`dbstack`]: a private MariaDB + DataBaseds 9.3.4 stack and TangoTest 9.3.4.
//! - [`hosts`]: simulated hosts (network namespaces on a bridge), each with its processes and daemon.
//!
//! The tests themselves live in `src/tests/`, one file per feature.
// Test code: a failure panics with its message and backtrace.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests and their harness"
)]

pub mod dbstack;
pub mod harness;
pub mod hosts;
pub mod otlp_receiver;
pub mod reference;

#[cfg(test)]
mod tests;
