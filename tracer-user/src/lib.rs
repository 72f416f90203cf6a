//! tango-tracer: rebuilds Tango operations seen by eBPF probes as OpenTelemetry spans.
//!
//! Data flows one way: [`probes`] → [`records`] → wire parsers (`tracer-wire`) → assembly →
//! configuration → export (`tracer-export`).

pub mod probes;
pub mod records;
