//! Linking calls across hosts: the key both ends of a connection see ([`key`]), what daemons
//! tell each other about it ([`exchange`]), and the pipeline stage that holds the spans of a
//! request from another host until its trace is known ([`linker`]).

pub mod exchange;
pub mod key;
pub mod linker;

pub use exchange::{Absence, Incoming, Outgoing};
pub use key::LinkKey;
pub use linker::Linker;
