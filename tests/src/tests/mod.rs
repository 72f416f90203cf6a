//! The integration tests, one module per feature.

mod config;
mod events;
mod export;
mod facts;
mod legacy;
mod pytango;
