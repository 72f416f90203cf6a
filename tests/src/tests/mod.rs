//! The integration tests, one module per feature.

mod events;
mod export;
mod legacy;
mod pytango;
