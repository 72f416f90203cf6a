//! The integration tests, one module per feature.

mod churn;
mod config;
mod events;
mod export;
mod facts;
mod faults;
mod legacy;
mod probes;
mod pytango;
mod setup;
mod userspans;
