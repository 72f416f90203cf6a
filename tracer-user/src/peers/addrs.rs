//! This network namespace's own IPv4 addresses: what a subscriber asks to hear about.

use std::net::Ipv4Addr;

/// Every IPv4 address of every interface except loopback, sorted, once each.
pub fn local_ipv4() -> std::io::Result<Vec<Ipv4Addr>> {
    let mut out: Vec<Ipv4Addr> = if_addrs::get_if_addrs()?
        .into_iter()
        .filter_map(|interface| match interface.ip() {
            std::net::IpAddr::V4(ip) if !ip.is_loopback() => Some(ip),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn loopback_is_left_out_and_every_other_address_is_in() {
        let addrs = local_ipv4().unwrap();
        assert!(addrs.iter().all(|a| !a.is_loopback()));
        // Cross-check with the kernel's own list of local addresses.
        let fib = std::fs::read_to_string("/proc/net/fib_trie").unwrap();
        let mut expected: Vec<Ipv4Addr> = Vec::new();
        let lines: Vec<&str> = fib.lines().collect();
        for pair in lines.windows(2) {
            if let [address, kind] = pair
                && kind.trim() == "/32 host LOCAL"
                && let Some(ip) = address.trim().strip_prefix("|-- ").and_then(|s| s.parse::<Ipv4Addr>().ok())
                && !ip.is_loopback()
            {
                expected.push(ip);
            }
        }
        expected.sort();
        expected.dedup();
        assert_eq!(addrs, expected);
    }
}
