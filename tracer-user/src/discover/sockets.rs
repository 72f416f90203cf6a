//! Where the peer of a socket is, read from `/proc` (for `tango.client_ident.location`, and for
//! records whose probe could not read it).

use std::{fs, net::Ipv4Addr, path::Path};

use crate::probe::record::Peer;

/// `AF_INET6`: the family the socket probes report for an IPv6 socket.
const AF_INET6: u16 = 10;

/// The peer of socket `fd` as the socket probes would have read it from the socket: the address
/// of an IPv4 TCP peer, only the family otherwise; `Peer::Unknown` when `/proc` cannot tell.
pub fn peer(proc_root: &Path, pid: u32, fd: i32) -> Peer {
    let dir = proc_root.join(pid.to_string());
    let Some(inode) = socket_inode(&dir, fd) else {
        return Peer::Unknown;
    };
    let net = dir.join("net");
    let read = |table: &str| fs::read_to_string(net.join(table)).ok();
    if let Some(table) = read("tcp")
        && let Some((addr, port)) = tcp_remote(&table, inode)
    {
        return match u32::from_str_radix(addr, 16) {
            Ok(addr) => Peer::Inet(Ipv4Addr::from(addr.swap_bytes()), port),
            Err(_) => Peer::Unknown,
        };
    }
    if read("tcp6").is_some_and(|table| tcp_remote(&table, inode).is_some()) {
        return Peer::Other(AF_INET6);
    }
    if read("unix").is_some_and(|table| unix_row(&table, inode).is_some()) {
        return Peer::Unix;
    }
    Peer::Unknown
}

/// `giop:tcp:<ip>:<port>` of the remote end of TCP socket `fd`, or `giop:unix:<path>` for a Unix
/// socket, as omniORB names a connection's peer.
pub fn peer_location(proc_root: &Path, pid: u32, fd: i32) -> Option<String> {
    let dir = proc_root.join(pid.to_string());
    let inode = socket_inode(&dir, fd)?;
    let net = dir.join("net");
    for table in ["tcp", "tcp6"] {
        if let Some(location) = fs::read_to_string(net.join(table)).ok().and_then(|t| tcp_peer(&t, inode)) {
            return Some(location);
        }
    }
    fs::read_to_string(net.join("unix")).ok().and_then(|t| unix_path(&t, inode))
}

/// `giop:unix:<path>` of the Unix socket `pid` listens on (omniORB's `/tmp/omni-<user>/…`): the
/// address omniORB gives the server side of every Unix connection.
pub fn unix_listen_location(proc_root: &Path, pid: u32) -> Option<String> {
    let dir = proc_root.join(pid.to_string());
    let inodes: std::collections::HashSet<u64> = fs::read_dir(dir.join("fd"))
        .ok()?
        .filter_map(|entry| {
            let link = fs::read_link(entry.ok()?.path()).ok()?;
            link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect();
    let table = fs::read_to_string(dir.join("net/unix")).ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 = listening
        let flags = u32::from_str_radix(fields.get(3)?, 16).ok()?;
        let inode: u64 = fields.get(6)?.parse().ok()?;
        let path = fields.get(7)?;
        (flags & 0x1_0000 != 0 && inodes.contains(&inode) && path.starts_with('/'))
            .then(|| format!("giop:unix:{path}"))
    })
}

/// The inode of socket `fd` of the process whose `/proc` directory is `dir`.
fn socket_inode(dir: &Path, fd: i32) -> Option<u64> {
    let link = fs::read_link(dir.join("fd").join(fd.to_string())).ok()?;
    link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// Finds `inode` in a `/proc/net/tcp{,6}` table: its remote address (hexadecimal, as the table
/// prints it) and port.
fn tcp_remote(table: &str, inode: u64) -> Option<(&str, u16)> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(9)?.parse::<u64>().ok()? != inode {
            return None;
        }
        let (addr, port) = fields.get(2)?.split_once(':')?;
        Some((addr, u16::from_str_radix(port, 16).ok()?))
    })
}

/// Finds `inode` in a `/proc/net/tcp{,6}` table and formats its remote address.
fn tcp_peer(table: &str, inode: u64) -> Option<String> {
    let (addr, port) = tcp_remote(table, inode)?;
    let ip = match addr.len() {
        8 => Ipv4Addr::from(u32::from_str_radix(addr, 16).ok()?.swap_bytes()).to_string(),
        32 => ipv6_text(addr)?,
        _ => return None,
    };
    Some(format!("giop:tcp:{ip}:{port}"))
}

/// `/proc/net/tcp6` prints four host-order 32-bit words; IPv4-mapped addresses become dotted.
fn ipv6_text(hex: &str) -> Option<String> {
    let mut bytes = [0u8; 16];
    for (word, out) in bytes.chunks_exact_mut(4).enumerate() {
        let value = u32::from_str_radix(hex.get(word * 8..word * 8 + 8)?, 16).ok()?.swap_bytes();
        out.copy_from_slice(&value.to_be_bytes());
    }
    let ip = std::net::Ipv6Addr::from(bytes);
    Some(match ip.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => ip.to_string(),
    })
}

/// The fields of `inode`'s row of a `/proc/net/unix` table.
fn unix_row(table: &str, inode: u64) -> Option<Vec<&str>> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(6)?.parse::<u64>().ok()? == inode).then_some(fields)
    })
}

/// The path bound to a Unix socket (an accepted socket shows the listener's path).
fn unix_path(table: &str, inode: u64) -> Option<String> {
    Some(format!("giop:unix:{}", unix_row(table, inode)?.get(7)?))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        reason = "tests"
    )]
    use super::*;

    #[test]
    fn tcp_table_row() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:AFC3 0100007F:E47A 01 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 20 4 30 10 -1\n";
        assert_eq!(tcp_peer(table, 123456).as_deref(), Some("giop:tcp:127.0.0.1:58490"));
        assert_eq!(tcp_peer(table, 1), None);
    }

    #[test]
    fn unix_table_row() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 777 /tmp/omni-root/000123-1700000000\n";
        assert_eq!(unix_path(table, 777).as_deref(), Some("giop:unix:/tmp/omni-root/000123-1700000000"));
    }
}
