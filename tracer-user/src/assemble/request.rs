//! Tango requests as calls keep them. A client repeating a call sends the same argument bytes
//! each time (a read of the same attributes, a command without argument): each stream keeps its
//! latest requests parsed, so that a repeat is compared, not parsed again, and the argument its
//! spans carry is shared between them rather than copied per span.

use std::{borrow::Cow, sync::Arc};

use tracer_wire::{
    cdr::CdrReader,
    tango::{self, ClntIdent, TangoCall},
};

use super::naming;

/// Longest arguments kept for comparison (a read's names and `ClntIdent` take a few dozen bytes):
/// longer ones, such as written values, are parsed each time and the memory per stream stays small.
const MAX_KEPT_ARGS: usize = 256;

/// A request's decoded arguments, shared by the calls that sent the same bytes.
#[derive(Debug)]
pub struct ParsedRequest {
    pub call: TangoCall,
    pub client_ident: Option<ClntIdent>,
    /// `tango.operation.argument`: the one attribute, the command or the pipe the call names.
    pub argument: Option<Arc<str>>,
}

impl ParsedRequest {
    /// Decodes the arguments of `operation` from a request body (see [`tango::parse_request`]).
    pub fn parse(operation: &str, body: CdrReader<'_>) -> ParsedRequest {
        let request = tango::parse_request(operation, body);
        let argument = naming::argument(&request.call).map(Arc::from);
        ParsedRequest { call: request.call, client_ident: request.client_ident, argument }
    }
}

/// Requests of one stream kept for comparison: a client cycling through a few calls (a read,
/// a command, a write) repeats each.
const KEPT_PER_STREAM: usize = 8;

/// A request kept, with what its parse was a function of.
#[derive(Debug)]
struct Kept {
    operation: Cow<'static, str>,
    /// Byte order, alignment (CDR aligns to at most 8) and whether the bytes may be a cut capture.
    little_endian: bool,
    alignment: usize,
    may_be_truncated: bool,
    args: Vec<u8>,
    parsed: Arc<ParsedRequest>,
}

/// The latest requests of one stream, parsed, most recent last.
#[derive(Debug, Default)]
pub struct RecentRequests {
    kept: Vec<Kept>,
}

impl RecentRequests {
    /// The arguments of `operation` in `body`: a recent request's when its bytes are the same
    /// (parsing is a function of them), else parsed and kept.
    pub fn parse(&mut self, operation: &str, body: CdrReader<'_>) -> Arc<ParsedRequest> {
        let args = body.rest();
        let (little_endian, alignment, may_be_truncated) =
            (body.little_endian(), body.offset() % 8, body.may_be_truncated());
        let same = |kept: &Kept| {
            kept.args == args
                && kept.operation == operation
                && (kept.little_endian, kept.alignment, kept.may_be_truncated)
                    == (little_endian, alignment, may_be_truncated)
        };
        if let Some(at) = self.kept.iter().rposition(same) {
            let parsed = self.kept.get(at).map(|kept| Arc::clone(&kept.parsed));
            if let Some(parsed) = parsed {
                if at + 1 < self.kept.len() {
                    let kept = self.kept.remove(at);
                    self.kept.push(kept);
                }
                return parsed;
            }
        }
        let mut parsed = ParsedRequest::parse(operation, body);
        // An argument a recent request named (a written attribute, a command) shares its text.
        if let Some(argument) = &parsed.argument
            && let Some(recent) = self
                .kept
                .iter()
                .rev()
                .filter_map(|kept| kept.parsed.argument.as_ref())
                .find(|recent| ***recent == **argument)
        {
            parsed.argument = Some(Arc::clone(recent));
        }
        let parsed = Arc::new(parsed);
        if args.len() > MAX_KEPT_ARGS {
            return parsed;
        }
        // The least recent is reused (its bytes' room with it) once the stream keeps enough.
        let mut kept = if self.kept.len() >= KEPT_PER_STREAM {
            self.kept.remove(0)
        } else {
            Kept {
                operation: Cow::Borrowed(""),
                little_endian,
                alignment,
                may_be_truncated,
                args: Vec::new(),
                parsed: Arc::clone(&parsed),
            }
        };
        if kept.operation != operation {
            kept.operation = naming::operation_name(operation);
        }
        (kept.little_endian, kept.alignment, kept.may_be_truncated) =
            (little_endian, alignment, may_be_truncated);
        kept.args.clear();
        kept.args.extend_from_slice(args);
        kept.parsed = Arc::clone(&parsed);
        self.kept.push(kept);
        parsed
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        reason = "tests"
    )]

    use tracer_wire::giop::{self, Message};

    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../tracer-wire/tests/fixtures/giop/{name}.bin", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Parses the captured request `name` through `recent`, and on its own.
    fn parse(recent: &mut RecentRequests, bytes: &[u8]) -> (Arc<ParsedRequest>, ParsedRequest) {
        let Ok((_, Message::Request(request))) = giop::parse_message(bytes) else {
            panic!("not a request");
        };
        let kept = recent.parse(request.operation, request.body.clone());
        (kept, ParsedRequest::parse(request.operation, request.body))
    }

    fn same(a: &ParsedRequest, b: &ParsedRequest) -> bool {
        a.call == b.call && a.client_ident == b.client_ident && a.argument == b.argument
    }

    #[test]
    fn a_repeated_request_is_parsed_once_and_any_other_is_parsed_as_it_is() {
        let mut recent = RecentRequests::default();
        let read = fixture("demo-req-read_attributes_5");
        let (first, fresh) = parse(&mut recent, &read);
        assert!(same(&first, &fresh));
        assert_eq!(first.argument.as_deref(), Some("temperature"), "{first:?}");
        let (again, _) = parse(&mut recent, &read);
        assert!(Arc::ptr_eq(&first, &again), "the same bytes: the same parse");
        // Other requests on the stream, then the read again: each is what parsing it gives.
        for name in [
            "demo-req-read_attributes_5-two",
            "demo-req-write_attributes_4",
            "demo-req-command_inout_4-echo",
            "demo-req-command_inout_4-increment",
            "demo-req-ping",
            "giop12-req-read_attributes_5",
            "giop12-req-command_inout_4-echo-20k",
            "demo-req-read_attributes_5",
        ] {
            let (kept, fresh) = parse(&mut recent, &fixture(name));
            assert!(same(&kept, &fresh), "{name}: {kept:?} != {fresh:?}");
        }
        let (again, _) = parse(&mut recent, &read);
        assert!(Arc::ptr_eq(&first, &again), "kept while the stream has fewer other requests");
    }

    #[test]
    fn a_request_with_other_bytes_is_parsed_again_and_shares_an_equal_argument() {
        let mut recent = RecentRequests::default();
        let read = fixture("demo-req-read_attributes_5");
        let (first, _) = parse(&mut recent, &read);
        // The same names, another ClntIdent pid (at 0x60 in this capture): parsed again.
        let mut other = read.clone();
        other[0x60] ^= 1;
        let (second, fresh) = parse(&mut recent, &other);
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(same(&second, &fresh));
        assert_ne!(second.client_ident, first.client_ident);
        let (Some(a), Some(b)) = (&first.argument, &second.argument) else { panic!("arguments") };
        assert!(Arc::ptr_eq(a, b), "the attribute name is shared");
        // A cut capture of the same bytes is not the whole request.
        let cut = &read[..read.len() - 2];
        let (kept, fresh) = parse(&mut recent, cut);
        assert!(same(&kept, &fresh));
        assert!(!Arc::ptr_eq(&kept, &first));
    }
}
