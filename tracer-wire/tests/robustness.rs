//! No parser panics on any input, truncations of real messages degrade gracefully, and the
//! assembler cuts real streams back into the exact messages whatever the chunking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "tests")]

mod common;

use proptest::prelude::*;
use tracer_wire::{
    WireError,
    cdr::CdrReader,
    giop::{self, AssembledMessage, Message, MessageAssembler},
    tango::{self, TangoCall},
    zmtp,
};

/// Operations whose arguments or replies the parsers know.
const OPERATIONS: &[&str] = &[
    "read_attributes",
    "read_attributes_2",
    "read_attributes_3",
    "read_attributes_4",
    "read_attributes_5",
    "write_attributes",
    "write_attributes_3",
    "write_attributes_4",
    "write_read_attributes_4",
    "write_read_attributes_5",
    "command_inout",
    "command_inout_2",
    "command_inout_4",
    "set_attribute_config",
    "set_attribute_config_2",
    "set_attribute_config_3",
    "set_attribute_config_4",
    "set_attribute_config_5",
    "read_pipe_5",
    "write_pipe_5",
    "write_read_pipe_5",
    "set_pipe_config_5",
    "info",
    "info_3",
    "info_6",
    "ping",
];

/// Runs every body parser over `body`; only panics matter.
fn exercise_body(op: &str, body: &CdrReader<'_>) {
    let _ = tango::parse_request(op, body.clone());
    let _ = tango::parse_command_reply(body.clone());
    let _ = tango::parse_user_exception(body.clone());
    let _ = tango::parse_system_exception(body.clone());
    let _ = tango::parse_info_reply(op, body.clone());
    let _ = tango::parse_attributes_reply(op, body.clone());
    let _ = tango::parse_clnt_ident(&mut body.clone());
    let _ = tango::parse_attribute_value_5(&mut body.clone());
    let mut r = body.clone();
    let _ = tango::parse_any(&mut r);
}

/// Runs every parser over raw bytes.
fn exercise(bytes: &[u8], op: &str, origin: usize) {
    let _ = giop::check_payload(bytes);
    let _ = giop::parse_header(bytes);
    if let Ok((_, msg)) = giop::parse_message(bytes) {
        match msg {
            Message::Request(r) => exercise_body(r.operation, &r.body),
            Message::Reply(r) => exercise_body(op, &r.body),
            _ => {}
        }
    }
    for le in [false, true] {
        exercise_body(op, &CdrReader::new(bytes, le, origin));
        exercise_body(op, &CdrReader::new(bytes, le, origin).mark_complete());
    }
    let _ = zmtp::check_payload(bytes);
    let _ = zmtp::parse_greeting(bytes);
    if let Ok((messages, _)) = zmtp::split_messages(bytes) {
        for frames in &messages {
            if let Ok(ev) = zmtp::parse_event(frames) {
                let _ = tango::parse_attribute_value_5(&mut ev.value_reader());
            }
            for f in frames {
                let _ = f.as_command();
            }
        }
    }
    let _ = zmtp::parse_call_info(bytes, true);
    let _ = zmtp::parse_topic(&String::from_utf8_lossy(bytes));
}

/// Every CDR read in sequence, driven by `ops`.
fn exercise_cdr(bytes: &[u8], ops: &[u8], le: bool, origin: usize) {
    let mut r = CdrReader::new(bytes, le, origin);
    for op in ops {
        let _ = match op % 16 {
            0 => r.u8().map(drop),
            1 => r.bool().map(drop),
            2 => r.u16().map(drop),
            3 => r.i32().map(drop),
            4 => r.u64().map(drop),
            5 => r.f64().map(drop),
            6 => r.string().map(drop),
            7 => r.octets().map(drop),
            8 => r.string_seq().map(drop),
            9 => r.encapsulation().map(|mut e| {
                let _ = e.string();
                let _ = e.u32();
            }),
            10 => r.align(usize::from(*op >> 4)),
            11 => r.skip(usize::from(*op)),
            12 => r.seq_len(usize::from(*op >> 4)).map(drop),
            13 => r.i64().map(drop),
            14 => r.skip_aligned(8, usize::from(*op)),
            _ => r.string_bytes().map(drop),
        };
        assert!(r.position() <= bytes.len());
    }
}

fn fixtures() -> Vec<(String, Vec<u8>)> {
    common::all_giop()
}

/// The operation of the request a reply fixture answers (same name after `-rep-`).
fn op_of(name: &str) -> &'static str {
    OPERATIONS
        .iter()
        .copied()
        .filter(|op| name.contains(op))
        .max_by_key(|op| op.len())
        .unwrap_or("command_inout_4")
}

#[test]
fn every_truncation_of_every_fixture() {
    for (name, bytes) in fixtures() {
        let op = op_of(&name);
        let (_, full) = giop::parse_message(&bytes).expect("fixture parses");
        for cut in 0..=bytes.len() {
            let prefix = &bytes[..cut];
            exercise(prefix, op, 0);
            let Ok((_, msg)) = giop::parse_message(prefix) else {
                continue;
            };
            match (&full, msg) {
                (Message::Request(f), Message::Request(t)) => {
                    assert_eq!((f.request_id, f.operation), (t.request_id, t.operation));
                    assert_eq!(f.object_key, t.object_key);
                    let full_req = tango::parse_request(f.operation, f.body.clone());
                    let part = tango::parse_request(t.operation, t.body);
                    if part.args_complete {
                        assert_eq!(part, full_req, "{name} cut at {cut}");
                    }
                    // A command name, once read, is the right one.
                    if let (
                        TangoCall::CommandInout { command: a, .. },
                        TangoCall::CommandInout { command: b, .. },
                    ) = (&full_req.call, &part.call)
                    {
                        assert_eq!(a, b, "{name} cut at {cut}");
                    }
                }
                (Message::Reply(f), Message::Reply(t)) => {
                    assert_eq!((f.request_id, f.status), (t.request_id, t.status));
                    if let Ok(v) = tango::parse_command_reply(t.body.clone()) {
                        assert_eq!(Ok(v), tango::parse_command_reply(f.body.clone()));
                    }
                    if let Ok(ex) = tango::parse_user_exception(t.body.clone()) {
                        let full_ex = tango::parse_user_exception(f.body.clone()).expect("full");
                        assert!(full_ex.errors.starts_with(&ex.errors), "{name} cut at {cut}");
                    }
                    if let Ok(info) = tango::parse_info_reply(op, t.body) {
                        assert_eq!(Ok(info), tango::parse_info_reply(op, f.body.clone()));
                    }
                }
                (f, t) => panic!("{name} cut at {cut}: {f:?} vs {t:?}"),
            }
        }
        // Cut right after the header: the header fields are still there.
        assert_eq!(giop::parse_header(&bytes[..giop::HEADER_LEN]).map(|h| h.message_len()), Ok(bytes.len()));
    }
}

#[test]
fn every_truncation_of_zmtp_fixtures() {
    for name in ["srv-send-event-temperature-x2", "client-send-greeting", "client-send-subscribe"] {
        let bytes = common::zmtp(name);
        for cut in 0..=bytes.len() {
            exercise(&bytes[..cut], "command_inout_4", 0);
            if let Ok((messages, rest)) = zmtp::split_messages(&bytes[..cut]) {
                let used: usize = cut - rest.len();
                assert!(used <= cut);
                assert!(messages.len() <= 2);
            }
        }
    }
}

/// All fixtures as one stream, with the message boundaries.
fn stream() -> (Vec<u8>, Vec<Vec<u8>>) {
    let messages: Vec<Vec<u8>> = fixtures().into_iter().map(|(_, b)| b).collect();
    (messages.concat(), messages)
}

fn assemble(
    stream: &[u8],
    cuts: &[usize],
    captured_of: impl Fn(usize, usize) -> usize,
    max_keep: usize,
) -> (Vec<AssembledMessage>, MessageAssembler) {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    points.push(0);
    points.push(stream.len());
    points.sort_unstable();
    points.dedup();
    let mut a = MessageAssembler::new(max_keep);
    let mut out = Vec::new();
    for (i, w) in points.windows(2).enumerate() {
        let chunk = &stream[w[0]..w[1]];
        let captured = captured_of(i, chunk.len()).min(chunk.len());
        a.push(&chunk[..captured], chunk.len(), &mut out);
    }
    (out, a)
}

fn corpus() -> impl Strategy<Value = (String, Vec<u8>)> {
    let all = fixtures();
    (0..all.len()).prop_map(move |i| all[i].clone())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        op in proptest::sample::select(OPERATIONS),
        origin in 0usize..16,
    ) {
        exercise(&bytes, op, origin);
    }

    #[test]
    fn random_giop_bodies_never_panic(
        minor in 0u8..3,
        flags in 0u8..2,
        msg_type in 0u8..8,
        body in proptest::collection::vec(any::<u8>(), 0..600),
        op in proptest::sample::select(OPERATIONS),
    ) {
        let mut msg = b"GIOP".to_vec();
        msg.extend_from_slice(&[1, minor, flags, msg_type]);
        let len = body.len() as u32;
        msg.extend_from_slice(&if flags & 1 == 1 { len.to_le_bytes() } else { len.to_be_bytes() });
        msg.extend_from_slice(&body);
        exercise(&msg, op, 0);
    }

    #[test]
    fn random_cdr_reads_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ops in proptest::collection::vec(any::<u8>(), 0..40),
        le in any::<bool>(),
        origin in 0usize..16,
    ) {
        exercise_cdr(&bytes, &ops, le, origin);
    }

    #[test]
    fn mutated_real_messages_never_panic(
        (name, mut bytes) in corpus(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        for (at, v) in flips {
            let len = bytes.len();
            bytes[at % len] = v;
        }
        let cut = cut % (bytes.len() + 1);
        exercise(&bytes[..cut], op_of(&name), 0);
        exercise(&bytes, op_of(&name), 0);
    }

    #[test]
    fn mutated_real_bodies_never_panic(
        (name, mut bytes) in corpus(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        // Keep the GIOP header intact so the mutations reach the Tango parsers.
        for (at, v) in flips {
            let len = bytes.len() - giop::HEADER_LEN;
            if len > 0 {
                bytes[giop::HEADER_LEN + at % len] = v;
            }
        }
        exercise(&bytes, op_of(&name), 0);
    }

    #[test]
    fn mutated_events_never_panic(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = common::zmtp("srv-send-event-temperature-x2");
        for (at, v) in flips {
            let len = bytes.len();
            bytes[at % len] = v;
        }
        exercise(&bytes, "command_inout_4", 0);
    }

    #[test]
    fn any_chunking_reassembles_exactly(cuts in proptest::collection::vec(any::<usize>(), 0..200)) {
        let (stream, messages) = stream();
        let (out, a) = assemble(&stream, &cuts, |_, n| n, usize::MAX);
        let got: Vec<Vec<u8>> = out.iter().map(|m| m.bytes.clone()).collect();
        prop_assert_eq!(&got, &messages);
        prop_assert!(out.iter().all(|m| m.complete_capture && m.total_len == m.bytes.len()));
        prop_assert_eq!(a.stats().missing_bytes, 0);
        prop_assert!(!a.in_message());
    }

    #[test]
    fn chunking_with_max_keep(
        cuts in proptest::collection::vec(any::<usize>(), 0..200),
        max_keep in 0usize..300,
    ) {
        let (stream, messages) = stream();
        let (out, _) = assemble(&stream, &cuts, |_, n| n, max_keep);
        prop_assert_eq!(out.len(), messages.len());
        for (m, orig) in out.iter().zip(&messages) {
            prop_assert_eq!(m.total_len, orig.len());
            prop_assert_eq!(&m.bytes[..], &orig[..orig.len().min(max_keep)]);
            prop_assert!(m.complete_capture);
        }
    }

    #[test]
    fn uncaptured_tails_keep_boundaries(
        cuts in proptest::collection::vec(any::<usize>(), 0..200),
        keeps in proptest::collection::vec(any::<usize>(), 200),
    ) {
        // Each chunk keeps a random prefix; boundaries stay right as long as every header
        // start was captured, and every kept byte is a true prefix of its message.
        let (stream, messages) = stream();
        let keep = |i: usize, n: usize| if n == 0 { 0 } else { keeps[i % keeps.len()] % (n + 1) };
        let (out, a) = assemble(&stream, &cuts, keep, usize::MAX);
        let total: usize = out.iter().map(|m| m.total_len).sum();
        prop_assert!(total <= stream.len());
        for m in &out {
            let orig = messages.iter().find(|o| o.len() == m.total_len && o.starts_with(&m.bytes));
            prop_assert!(orig.is_some(), "kept bytes are not a prefix of a real message");
            prop_assert_eq!(m.complete_capture, m.bytes.len() == m.total_len);
        }
        if a.stats().resyncs == 0 {
            prop_assert_eq!(out.len(), messages.len());
            let lost: usize = out.iter().map(|m| m.total_len - m.bytes.len()).sum();
            // Bytes after a gap are dropped too, so a message loses at least what was missed.
            prop_assert!(lost as u64 >= a.stats().missing_bytes);
            prop_assert_eq!(lost == 0, a.stats().missing_bytes == 0);
        }
    }

    #[test]
    fn garbage_between_messages_resyncs(
        garbage in proptest::collection::vec(any::<u8>(), 1..64),
        at in any::<usize>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..100),
    ) {
        let (_, messages) = stream();
        let at = at % messages.len();
        let mut s = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            if i == at {
                s.extend_from_slice(&garbage);
            }
            s.extend_from_slice(m);
        }
        let (out, _) = assemble(&s, &cuts, |_, n| n, usize::MAX);
        // Whatever was dropped, what comes out are real messages.
        for m in &out {
            if m.complete_capture {
                prop_assert!(messages.contains(&m.bytes));
            }
        }
        // The messages before the garbage come out whole.
        prop_assert!(out.len() >= at);
        for (m, orig) in out.iter().zip(&messages[..at]) {
            prop_assert_eq!(&m.bytes, orig);
        }
    }

    #[test]
    fn message_per_chunk_after_garbage_resyncs(garbage in proptest::collection::vec(any::<u8>(), 1..64)) {
        // One message per send, as omniORB writes them: a garbage send costs nothing else.
        prop_assume!(!garbage.starts_with(b"GIOP"));
        let (_, messages) = stream();
        let mut a = MessageAssembler::new(usize::MAX);
        let mut out = Vec::new();
        a.push(&garbage, garbage.len(), &mut out);
        for m in &messages {
            a.push(m, m.len(), &mut out);
        }
        // The garbage may look like a partial header that swallows bytes of the next message;
        // from the one after on, every message is back.
        prop_assert!(out.len() + 1 >= messages.len());
        prop_assert_eq!(out.last().map(|m| &m.bytes), messages.last());
    }
}

#[test]
fn incomplete_versus_not_giop() {
    let bytes = common::giop("demo-req-ping");
    assert_eq!(giop::parse_header(&bytes[..7]), Err(WireError::Incomplete));
    assert_eq!(giop::parse_header(b"\x16\x03\x01TLS"), Err(WireError::NotThisProtocol));
}
