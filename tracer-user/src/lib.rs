//! tango-tracer: rebuilds Tango operations seen by eBPF probes as OpenTelemetry spans.
//!
//! Data flows one way, one folder per stage: [`discover`] → [`probe`] → wire parsers
//! (`tracer-wire`) → [`assemble`] → [`events`] → [`userspans`] → [`devices`] → [`configure`] →
//! [`convert`] → export (`tracer-export`). [`run`] wires them together with the [`settings`]; [`peers`] links it to the
//! daemons of other hosts.

pub mod assemble;
pub mod configure;
pub mod convert;
pub mod crosshost;
pub mod devices;
pub mod discover;
pub mod events;
pub mod live;
pub mod logging;
pub mod logs;
pub mod metrics;
pub mod peers;
pub mod probe;
pub mod report;
pub mod run;
pub mod sampling;
pub mod settings;
pub mod show;
pub mod stats;
pub mod top;
pub mod userspans;
