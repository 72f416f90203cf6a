//! This host's IPv4 addresses: a TCP peer at any other address is another host.

use std::net::{IpAddr, Ipv4Addr};

/// The IPv4 addresses of every interface of the daemon's network namespace, loopback excluded.
pub fn ipv4_addresses() -> std::io::Result<Vec<Ipv4Addr>> {
    let mut out: Vec<Ipv4Addr> = if_addrs::get_if_addrs()?
        .into_iter()
        .filter_map(|interface| match interface.ip() {
            IpAddr::V4(ip) if !ip.is_loopback() => Some(ip),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}
