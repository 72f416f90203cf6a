//! Where to put a uprobe, and whether it is cheap there.
//!
//! A uprobe replaces an instruction with a breakpoint. x86-64 kernels emulate a few instructions
//! in the trap itself: `push`, `nop` (~0.8 µs a hit here) and the relative branches `jcc`, `jmp`
//! and `call rel32` (~0.5 µs); any other instruction is single-stepped out of line, which costs
//! 12–15 µs a hit. The daemon reads the
//! first bytes of every probed function from the ELF file and refuses to attach where it would
//! be expensive.

use std::path::{Path, PathBuf};

use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

/// Why a function cannot be probed cheaply.
#[derive(Debug, thiserror::Error)]
pub enum UprobeError {
    /// The library file cannot be read.
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not an ELF object we understand.
    #[error("{path} is not a readable ELF object: {reason}")]
    Elf { path: PathBuf, reason: String },
    /// The symbol is not exported.
    #[error("{path} exports no {symbol}")]
    NoSymbol { path: PathBuf, symbol: String },
    /// The first instruction would be single-stepped.
    #[error("{symbol} in {path} starts with {first:02x?}, which the kernel single-steps (12–15 µs a hit)")]
    Expensive { path: PathBuf, symbol: String, first: Vec<u8> },
}

/// A checked probe point: the file offset of a function whose first instruction is emulated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbePoint {
    pub symbol: String,
    pub file_offset: u64,
    /// The instruction the kernel will emulate, for the log.
    pub first_instruction: &'static str,
}

/// Finds `symbol` in the dynamic symbol table of `path` and checks its first instruction.
pub fn probe_point(path: &Path, symbol: &str) -> Result<ProbePoint, UprobeError> {
    let data =
        std::fs::read(path).map_err(|source| UprobeError::Read { path: path.to_path_buf(), source })?;
    let file = object::File::parse(&*data)
        .map_err(|e| UprobeError::Elf { path: path.to_path_buf(), reason: e.to_string() })?;
    let address = file
        .dynamic_symbols()
        .find(|s| s.name() == Ok(symbol) && s.is_definition())
        .map(|s| s.address())
        .ok_or_else(|| UprobeError::NoSymbol { path: path.to_path_buf(), symbol: symbol.to_string() })?;
    // Virtual address → file offset through the section that holds it.
    let (file_offset, bytes) = file
        .sections()
        .find_map(|section| {
            let start = section.address();
            if address < start || address >= start + section.size() {
                return None;
            }
            let (offset, _) = section.file_range()?;
            let body = section.data().ok()?;
            let at = usize::try_from(address - start).ok()?;
            Some((offset + (address - start), body.get(at..at + 4.min(body.len() - at))?.to_vec()))
        })
        .ok_or_else(|| UprobeError::Elf {
            path: path.to_path_buf(),
            reason: format!("{symbol} is in no section"),
        })?;
    match emulated_instruction(&bytes) {
        Some(first_instruction) => {
            Ok(ProbePoint { symbol: symbol.to_string(), file_offset, first_instruction })
        }
        None => {
            Err(UprobeError::Expensive { path: path.to_path_buf(), symbol: symbol.to_string(), first: bytes })
        }
    }
}

/// `log4tango::Logger::log_unconditionally(const std::string& file, int line, int level,
/// const std::string& message)` of cppTango 10.
pub const LOG_SYMBOL_10: &str =
    "_ZN9log4tango6Logger19log_unconditionallyERKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEEiiS8_";
/// `log4tango::Logger::log_unconditionally(int level, const std::string& message)` of cppTango 9.
pub const LOG_SYMBOL_9: &str =
    "_ZN9log4tango6Logger19log_unconditionallyEiRKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE";

/// The logging function of a libtango and the eBPF program that reads its arguments: the
/// cppTango 10 signature first, then cppTango 9's.
pub fn log_probe_point(library: &Path) -> Result<(&'static str, ProbePoint), UprobeError> {
    match probe_point(library, LOG_SYMBOL_10) {
        Ok(point) => Ok(("log_unconditionally_10", point)),
        Err(UprobeError::NoSymbol { .. }) => {
            probe_point(library, LOG_SYMBOL_9).map(|point| ("log_unconditionally_9", point))
        }
        Err(other) => Err(other),
    }
}

/// `Tango::ZmqEventSupplier::push_event(DeviceImpl*, std::string, const std::vector<std::string>&,
/// …, const SuppliedEventData&, const std::string&, DevFailed*, bool)` of cppTango 10.
pub const PUSH_EVENT_SYMBOL_10: &str = "_ZN5Tango16ZmqEventSupplier10push_eventEPNS_10DeviceImplENSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEERKSt6vectorIS8_SaIS8_EERKS9_IdSaIdEESD_RKS9_IlSaIlEERKNS_13EventSupplier17SuppliedEventDataERKS8_PNS_9DevFailedEb";
/// The same of cppTango 9 (non-const references).
pub const PUSH_EVENT_SYMBOL_9: &str = "_ZN5Tango16ZmqEventSupplier10push_eventEPNS_10DeviceImplENSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEERSt6vectorIS8_SaIS8_EERS9_IdSaIdEESC_RS9_IlSaIlEERNS_13EventSupplier17SuppliedEventDataERS8_PNS_9DevFailedEb";

/// The function of a libtango that hands one event message to ZMQ: the cppTango 10 signature
/// first, then cppTango 9's. One trap per push instead of one per message part.
pub fn push_event_probe_point(library: &Path) -> Result<ProbePoint, UprobeError> {
    match probe_point(library, PUSH_EVENT_SYMBOL_10) {
        Err(UprobeError::NoSymbol { .. }) => probe_point(library, PUSH_EVENT_SYMBOL_9),
        other => other,
    }
}

/// The x86-64 instructions a uprobe handles without single-stepping (the kernel's
/// `branch_setup_xol_ops` and `push_setup_xol_ops`); prefixed forms are left out.
pub fn emulated_instruction(bytes: &[u8]) -> Option<&'static str> {
    match bytes {
        [0x55, ..] => Some("push %rbp"),
        [0x50..=0x57, ..] => Some("push reg"),
        [0x41, 0x50..=0x57, ..] => Some("push %r8–%r15"),
        [0x90, ..] => Some("nop"),
        [0x70..=0x7f, ..] => Some("jcc rel8"),
        [0x0f, 0x80..=0x8f, ..] => Some("jcc rel32"),
        [0xeb, ..] => Some("jmp rel8"),
        [0xe9, ..] => Some("jmp rel32"),
        [0xe8, ..] => Some("call rel32"),
        _ => None,
    }
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
    fn first_instructions() {
        assert_eq!(emulated_instruction(&[0x41, 0x55, 0x41, 0x54]), Some("push %r8–%r15"));
        assert_eq!(emulated_instruction(&[0x55, 0x48]), Some("push %rbp"));
        // The branches libtango's user-code points sit on: jne rel32, je rel8, jmp rel32, call.
        assert_eq!(emulated_instruction(&[0x0f, 0x85, 0xa8, 0x12, 0, 0]), Some("jcc rel32"));
        assert_eq!(emulated_instruction(&[0x74, 0x12]), Some("jcc rel8"));
        assert_eq!(emulated_instruction(&[0xe9, 0xe9, 0xea, 0xff, 0xff]), Some("jmp rel32"));
        assert_eq!(emulated_instruction(&[0xe8, 0x45, 0xee, 0xc4, 0xff]), Some("call rel32"));
        // Indirect calls and a prefixed jcc are single-stepped.
        assert_eq!(emulated_instruction(&[0xff, 0x50, 0x18]), None);
        assert_eq!(emulated_instruction(&[0x2e, 0x74, 0x12]), None);
        // mov %rdi,%rax and endbr64 are single-stepped.
        assert_eq!(emulated_instruction(&[0x48, 0x89, 0xf8]), None);
        assert_eq!(emulated_instruction(&[0xf3, 0x0f, 0x1e, 0xfa]), None);
        assert_eq!(emulated_instruction(&[]), None);
    }

    /// Debian's libtango 9.3.4 and the one PyTango 10.3.1's wheel bundles, where installed.
    #[test]
    fn the_logging_and_event_functions_of_both_libtango_versions_start_with_an_emulated_push() {
        let debian = Path::new("/usr/lib/x86_64-linux-gnu/libtango.so.9");
        let wheel = std::env::var_os("TANGO_TRACER_VENV").and_then(|venv| {
            let lib = Path::new(&venv).join("lib");
            let python = std::fs::read_dir(&lib)
                .ok()?
                .filter_map(Result::ok)
                .find(|e| e.file_name().to_string_lossy().starts_with("python3"))?;
            let libs = python.path().join("site-packages/pytango.libs");
            std::fs::read_dir(libs)
                .ok()?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libtango-")))
        });
        let mut checked = 0;
        if debian.exists() {
            let (program, point) = log_probe_point(debian).unwrap();
            assert_eq!((program, point.symbol.as_str()), ("log_unconditionally_9", LOG_SYMBOL_9));
            assert_eq!(point.first_instruction, "push %rbp");
            let push = push_event_probe_point(debian).unwrap();
            assert_eq!(
                (push.symbol.as_str(), push.first_instruction),
                (PUSH_EVENT_SYMBOL_9, "push %r8–%r15")
            );
            checked += 1;
        }
        if let Some(wheel) = wheel {
            let (program, point) = log_probe_point(&wheel).unwrap();
            assert_eq!((program, point.symbol.as_str()), ("log_unconditionally_10", LOG_SYMBOL_10));
            assert_eq!(point.first_instruction, "push %rbp");
            let push = push_event_probe_point(&wheel).unwrap();
            assert_eq!(
                (push.symbol.as_str(), push.first_instruction),
                (PUSH_EVENT_SYMBOL_10, "push %r8–%r15")
            );
            checked += 1;
        }
        assert!(
            checked > 0,
            "neither Debian's libtango 9 nor PyTango's wheel (TANGO_TRACER_VENV) is installed"
        );
    }

    #[test]
    fn a_real_library_of_this_machine() {
        // libc's `getpid` is exported everywhere; whatever its prologue, the lookup must work.
        let libc = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .expect("a libc");
        match probe_point(libc, "getpid") {
            Ok(point) => assert!(point.file_offset > 0),
            Err(UprobeError::Expensive { first, .. }) => assert!(!first.is_empty()),
            Err(other) => panic!("{other}"),
        }
        assert!(matches!(probe_point(libc, "no_such_symbol_here"), Err(UprobeError::NoSymbol { .. })));
    }
}
