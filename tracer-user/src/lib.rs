//! tango-tracer: rebuilds Tango operations seen by eBPF probes as OpenTelemetry spans.
//!
//! Data flows one way: [`probes`] → [`records`] → wire parsers (`tracer-wire`) →
//! [`assembly`] → [`resources`] → export (`tracer-export`). [`daemon`] wires them together.

pub mod assembly;
pub mod configuration;
pub mod ctl;
pub mod daemon;
pub mod dbclient;
pub mod discovery;
pub mod events;
pub mod kernel_offsets;
pub mod probes;
pub mod procinfo;
pub mod records;
pub mod resources;
pub mod sockets;
pub mod spandata;
pub mod telemetry_config;
pub mod topics;
pub mod uprobes;
