//! Assembled spans and logs → export records: resources, scopes, SDK `SpanData`, log records.

pub mod logdata;
pub mod resources;
pub mod spandata;
