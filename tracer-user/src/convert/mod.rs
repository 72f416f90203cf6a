//! Assembled spans → export records: resources, scopes, SDK `SpanData`.

pub mod resources;
pub mod spandata;
