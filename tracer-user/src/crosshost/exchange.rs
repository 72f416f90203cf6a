//! What daemons on different hosts tell each other about calls between their hosts, as the
//! pipeline hands it to the peer link (`Outgoing`) and gets it back from there (`Incoming`).
//!
//! The server's daemon subscribes to the daemon on the client's host (at the client's address).
//! The client's daemon then streams, for connections from its host to the subscriber's
//! addresses: the trace id of each call it could not leave to derivation (a call made inside a
//! trace), and per connection how far its calls have been announced. Calls that start a trace,
//! the common case, cost no message: both sides derive their ids from the [`LinkKey`].

use std::net::{Ipv4Addr, SocketAddrV4};

use opentelemetry::trace::TraceId;

use super::LinkKey;

/// From this daemon's pipeline to the daemons of other hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// A call of ours to a server on another host that continues a trace: the server's daemon
    /// cannot derive its trace id. `settled` is false while that trace id is itself provisional
    /// (it waits on the daemon of a host further up the chain); a [`Outgoing::Settled`] follows.
    Call { key: LinkKey, trace_id: TraceId, settled: bool },
    /// Every request on the connection `client` → `server` that starts before `next_seq` has
    /// been announced (its `Call`, if it needed one, was sent before this).
    Progress { client: SocketAddrV4, server: SocketAddrV4, next_seq: u32 },
    /// A trace id given out unsettled is now settled as `trace_id` (the same id when the call up
    /// the chain turned out to start the trace).
    Settled { provisional: TraceId, trace_id: TraceId },
    /// Server spans of requests from `ip` wait for the daemon there: subscribe to it.
    Want { ip: Ipv4Addr },
}

/// From the daemons of other hosts to this daemon's pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// See [`Outgoing::Call`].
    Call { key: LinkKey, trace_id: TraceId, settled: bool },
    /// See [`Outgoing::Progress`].
    Progress { client: SocketAddrV4, server: SocketAddrV4, next_seq: u32 },
    /// See [`Outgoing::Settled`].
    Settled { provisional: TraceId, trace_id: TraceId },
    /// The daemon at `ip` is linked: it proved the key and streams to us.
    Up { ip: Ipv4Addr },
    /// No daemon at `ip` will answer for now (none listens, it failed the key, or the link
    /// broke): server spans of its requests need not wait. Asked again after a while.
    Absent { ip: Ipv4Addr, why: Absence },
}

/// Why a peer is absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Absence {
    /// Nothing listens at its peer port, or it did not answer in time.
    NoDaemon,
    /// It could not prove the shared key (or refused ours).
    Refused,
    /// The link broke.
    Lost,
}
