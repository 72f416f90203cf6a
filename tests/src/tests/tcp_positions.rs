//! The TCP position of every probe record: both ends of a connection name the same bytes by the
//! same sequence number (the key that links a call across hosts without touching the traffic),
//! also on a connection opened before the daemon started.

use std::{
    collections::HashSet,
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::harness::{DemoServer, MARKER, Proc, TracerDaemon, python, script, unique_marker};

/// One data record of the daemon's `--record` file, with its TCP position.
#[derive(Clone, Debug)]
struct Chunk {
    pid: u32,
    send: bool,
    total_len: u32,
    /// The captured bytes, hex.
    bytes: String,
    local: String,
    remote: String,
    seq: u32,
}

impl Chunk {
    fn port(address: &str) -> u16 {
        address.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).expect("ADDRESS:PORT")
    }

    fn local_port(&self) -> u16 {
        Self::port(&self.local)
    }

    fn remote_port(&self) -> u16 {
        Self::port(&self.remote)
    }

    /// The GIOP message type when the chunk starts a message (0 request, 1 reply).
    fn giop_type(&self) -> Option<&str> {
        (self.bytes.starts_with("47494f50") && self.bytes.len() >= 16).then(|| &self.bytes[14..16])
    }
}

/// The data records of `pids` in the record file, in ring-buffer order; fails on any without a
/// TCP position (every socket of these processes is TCP/IPv4).
fn chunks(path: &std::path::Path, pids: &[u32]) -> Vec<Chunk> {
    let text = std::fs::read_to_string(path).expect("the record file");
    let mut chunks = Vec::new();
    for line in text.lines() {
        let record: serde_json::Value = serde_json::from_str(line).expect("a JSON record");
        let Some(data) = record.get("Data") else { continue };
        let pid = data["pid"].as_u64().expect("pid") as u32;
        if !pids.contains(&pid) {
            continue;
        }
        let tcp = &data["tcp"];
        assert!(tcp.is_object(), "a record without TCP position: {line}");
        chunks.push(Chunk {
            pid,
            send: data["direction"] == "Send",
            total_len: data["total_len"].as_u64().expect("total_len") as u32,
            bytes: data["bytes"].as_str().expect("bytes").to_owned(),
            local: tcp["local"].as_str().expect("local").to_owned(),
            remote: tcp["remote"].as_str().expect("remote").to_owned(),
            seq: tcp["seq"].as_u64().expect("seq") as u32,
        });
    }
    chunks
}

/// Local ports of `pid`'s established TCP connections to port `port`, as `/proc` shows them.
fn connections_to(pid: u32, port: u16) -> Vec<u16> {
    let sockets: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the client's fds")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| Some(link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned()))
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).expect("the TCP table");
    let hex_port = |address: &str| u16::from_str_radix(address.rsplit(':').next().unwrap_or_default(), 16);
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let fields: Vec<&str> = row.split_whitespace().collect();
            let established = fields.get(3) == Some(&"01");
            let ours = fields.get(9).is_some_and(|inode| sockets.contains(*inode));
            let to_port = fields.get(2).and_then(|a| hex_port(a).ok()) == Some(port);
            (established && ours && to_port).then(|| fields.get(1).and_then(|a| hex_port(a).ok()))?
        })
        .collect()
}

/// Every byte of one direction of a connection is accounted for: each chunk starts where the one
/// before ended.
fn assert_contiguous(chunks: &[&Chunk], what: &str) {
    for pair in chunks.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq.wrapping_add(pair[0].total_len), "{what}: {pair:?}");
    }
}

#[test]
fn both_ends_of_a_connection_name_each_message_by_the_same_sequence_number() {
    const BEFORE: usize = 3;
    const AFTER: usize = 20;
    let marker = unique_marker("tcppos");
    let server = DemoServer::start(&marker, "tcppos", &["test/demo/1"]);
    let mut child = Command::new(python())
        .arg(script("tcp_position_client.py"))
        .arg(server.url("test/demo/1"))
        .arg(BEFORE.to_string())
        .arg(AFTER.to_string())
        .env(MARKER, &marker)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting tcp_position_client.py");
    let mut stdin = child.stdin.take().expect("the client's stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("the client's stdout"));
    let mut client = Proc { child, name: "tcp_position_client.py".into() };
    let mut line = String::new();
    stdout.read_line(&mut line).expect("the client's first line");
    assert!(line.contains("\"connected\": true"), "{line}");
    // The connection exists before the daemon does.
    let ports = connections_to(client.pid(), server.port);
    assert_eq!(ports.len(), 1, "one connection to the server: {ports:?}");
    let client_port = ports[0];

    let records = std::env::temp_dir().join(format!("{marker}-records.jsonl"));
    let mut daemon = TracerDaemon::start(&marker, &[], &["--record", records.to_str().expect("a path")]);
    writeln!(stdin, "go").expect("waking the client");
    line.clear();
    stdout.read_line(&mut line).expect("the client's last line");
    assert!(line.contains(&format!("\"calls\": {AFTER}")), "{line}");
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        match client.child.try_wait().expect("waiting for the client") {
            Some(status) => break status,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            None => panic!("the client did not exit"),
        }
    };
    assert!(status.success(), "the client failed: {status}");
    daemon.stop();
    let chunks = chunks(&records, &[client.pid(), server.proc.pid()]);
    let _ = std::fs::remove_file(&records);

    let select = |pid: u32, send: bool, local: u16, remote: u16| -> Vec<&Chunk> {
        chunks
            .iter()
            .filter(|c| {
                c.pid == pid && c.send == send && c.local_port() == local && c.remote_port() == remote
            })
            .collect()
    };
    let (client_pid, server_pid) = (client.pid(), server.proc.pid());
    let client_sends = select(client_pid, true, client_port, server.port);
    let client_receives = select(client_pid, false, client_port, server.port);
    let server_receives = select(server_pid, false, server.port, client_port);
    let server_sends = select(server_pid, true, server.port, client_port);
    // The connection opened before the daemon carries positions; nothing else was recorded.
    assert_eq!(
        client_sends.len() + client_receives.len() + server_receives.len() + server_sends.len(),
        chunks.len(),
        "records of another connection: {chunks:?}"
    );
    for (side, list) in [
        ("client sends", &client_sends),
        ("client receives", &client_receives),
        ("server receives", &server_receives),
        ("server sends", &server_sends),
    ] {
        assert_contiguous(list, side);
    }

    // Each message as its sender and its receiver saw it: same sequence number, ends mirrored,
    // same bytes.
    let requests: Vec<&Chunk> =
        client_sends.iter().copied().filter(|c| c.giop_type() == Some("00")).collect();
    let replies: Vec<&Chunk> = server_sends.iter().copied().filter(|c| c.giop_type() == Some("01")).collect();
    assert!(requests.len() >= AFTER, "{} requests recorded, {AFTER} made", requests.len());
    assert_eq!(replies.len(), requests.len(), "a reply for each request");
    // The server's thread was already waiting in a receive when the probes were attached: the
    // daemon follows that receive too (from /proc), so every message is seen at both ends.
    for (sent, received) in [(&requests, &server_receives), (&replies, &client_receives)] {
        for message in sent.iter() {
            let seen: Vec<&&Chunk> = received.iter().filter(|r| r.seq == message.seq).collect();
            assert_eq!(seen.len(), 1, "{message:?} received as {seen:?}");
            let seen = seen[0];
            assert_eq!((&seen.local, &seen.remote), (&message.remote, &message.local));
            assert_eq!(seen.bytes, message.bytes);
        }
    }
    // Consecutive requests: each starts where the one before ended.
    for pair in requests.windows(2) {
        assert_eq!(pair[1].seq.wrapping_sub(pair[0].seq), pair[0].total_len, "{pair:?}");
    }
}
