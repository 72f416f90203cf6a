//! This network namespace's own IPv4 addresses: what a subscriber asks to hear about.

use std::net::Ipv4Addr;

/// Every IPv4 address of every interface except loopback, sorted, once each.
pub fn local_ipv4() -> std::io::Result<Vec<Ipv4Addr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list it allocates; it is freed below, once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut entry = head;
    while !entry.is_null() {
        // SAFETY: `entry` is a non-null node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*entry };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: `ifa_addr` is non-null and points to a sockaddr of the list.
            let family = unsafe { (*ifa.ifa_addr).sa_family };
            if i32::from(family) == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in; read unaligned to be safe.
                let sin = unsafe { std::ptr::read_unaligned(ifa.ifa_addr.cast::<libc::sockaddr_in>()) };
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_loopback() {
                    out.push(ip);
                }
            }
        }
        entry = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once; no reference into it outlives this.
    unsafe { libc::freeifaddrs(head) };
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
