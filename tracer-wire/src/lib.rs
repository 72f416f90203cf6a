//! Pure parsers over bytes.
