//! Linking calls across hosts: the key both ends of a connection see ([`key`]) and what daemons
//! tell each other about it ([`exchange`]).

pub mod exchange;
pub mod key;

pub use exchange::{Absence, Incoming, Outgoing};
pub use key::LinkKey;
