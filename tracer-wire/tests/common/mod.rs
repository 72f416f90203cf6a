//! Loading the captured fixtures.
//!
//! `fixtures/giop/*.bin` are whole GIOP messages captured with `strace` from PyTango 10.3.1
//! clients talking to a PyTango device server (`demo-*`, `admin-*`, `tele-*` with client
//! telemetry on, `srv-*` seen from the server), to Debian's TangoTest 9.3.4 (`tt-*`), to a
//! device registered in a database (`giop12-*`, `dbclient-*`), and to a missing device
//! (`nodev-*`). `fixtures/zmtp/*.bin` are ZeroMQ sends of the event channel.
#![allow(dead_code, reason = "each test crate uses a subset")]

use std::path::PathBuf;

use tracer_wire::{
    cdr::CdrReader,
    giop::{self, Message, Reply, Request},
};

fn dir(kind: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(kind)
}

/// The bytes of `fixtures/giop/<name>.bin`.
pub fn giop(name: &str) -> Vec<u8> {
    let path = dir("giop").join(format!("{name}.bin"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The bytes of `fixtures/zmtp/<name>.bin`.
pub fn zmtp(name: &str) -> Vec<u8> {
    let path = dir("zmtp").join(format!("{name}.bin"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every GIOP fixture, sorted by name.
pub fn all_giop() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir("giop"))
        .expect("fixture dir")
        .map(|e| {
            let path = e.expect("dir entry").path();
            let name = path.file_stem().expect("stem").to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("fixture"))
        })
        .collect();
    out.sort();
    out
}

/// Parses a fixture that must be a Request.
pub fn request(bytes: &[u8]) -> Request<'_> {
    match giop::parse_message(bytes) {
        Ok((_, Message::Request(r))) => r,
        other => panic!("not a request: {other:?}"),
    }
}

/// Parses a fixture that must be a Reply.
pub fn reply(bytes: &[u8]) -> Reply<'_> {
    match giop::parse_message(bytes) {
        Ok((_, Message::Reply(r))) => r,
        other => panic!("not a reply: {other:?}"),
    }
}

/// The body reader of a Reply fixture.
pub fn reply_body(bytes: &[u8]) -> CdrReader<'_> {
    reply(bytes).body
}
