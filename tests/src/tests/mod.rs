//! The integration tests, one module per feature.

mod churn;
mod config;
mod crosshost;
mod events;
mod export;
mod facts;
mod faults;
mod legacy;
mod log_export;
mod logs;
mod metrics;
mod netns;
mod package;
mod priority;
mod privileges;
mod probes;
mod pytango;
mod sampling;
mod service;
mod sessions;
mod settings;
mod setup;
mod syscall_probes;
mod tcp_positions;
mod top;
mod userspans;
