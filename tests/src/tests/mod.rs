//! The integration tests, one module per feature.

mod config;
mod events;
mod export;
mod faults;
mod legacy;
mod pytango;
mod setup;
