//! Span export.
