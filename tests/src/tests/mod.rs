//! The integration tests, one module per feature.

mod export;
mod legacy;
mod pytango;
