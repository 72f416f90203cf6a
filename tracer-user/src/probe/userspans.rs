//! Where a libtango runs user code inside a request, and whether it is safe to probe there.
//!
//! No exported function brackets a device's `always_executed_hook`, an attribute's read method
//! or a command's execute method, but two exported functions contain the calls:
//! `Tango::Device_3Impl::read_attributes_no_except` and `Tango::DeviceClass::command_handler`.
//! Inside them, branch instructions next to each call bracket it, and the kernel emulates branches
//! (~0.5 µs a hit, never single-stepped). The hook is compiled as "compare the vtable slot with
//! the default, `jne` to an out-of-line indirect call, `jmp` back"; a custom `is_allowed` the
//! same way, so the command starts at the `jne` when it falls through, or at the `jmp` back.
//!
//! The points of the builds we know are in [`KNOWN_BUILDS`], keyed by the library's build-id
//! with the bytes expected at each offset; any difference refuses the whole library. Other
//! builds are scanned: the two functions are decoded (bounded by their symbol sizes), the hook
//! and `is_allowed` compares found by the GOT slot they load (`DeviceImpl::always_executed_hook`,
//! `Command::is_allowed`), the read call by its shape (`mov %ATTR,%rdx` … `call *0x18(%rax)`), and
//! every point is checked to be a branch the kernel emulates, with the registers read there not
//! written between the point and the call. The data layouts (`Attribute` name at 0x20, `Command`
//! name at 0x8, `DeviceImpl` → `DeviceClass` at 0x88, its name at 0x8) are those of cppTango 9.3
//! and 10.3 alike.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, OpAccess, Register,
};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, ObjectSymbolTable as _};
use tracer_common::user_code::{Layout, condition, cookie, point, reg};

use super::uprobes::emulated_instruction;

/// `Tango::Device_3Impl::read_attributes_no_except(...)` (any signature).
const READ_FUNCTION: &str = "_ZN5Tango12Device_3Impl25read_attributes_no_exceptE";
/// `Tango::DeviceClass::command_handler(Tango::DeviceImpl*, ...)` (9.3 takes a `std::string&`,
/// 10.3 a `const std::string&`).
const COMMAND_FUNCTION: &str = "_ZN5Tango11DeviceClass15command_handlerEPNS_10DeviceImpl";
/// The defaults the vtable slots are compared with, through their GOT slots.
const DEFAULT_HOOK: &str = "_ZN5Tango10DeviceImpl20always_executed_hookEv";
const DEFAULT_IS_ALLOWED: &str = "_ZN5Tango7Command10is_allowedEPNS_10DeviceImplERKN5CORBA3AnyE";

/// `DeviceImpl::device_class`, `DeviceClass::name`: the hook and command points name the class.
const CLASS_LAYOUT: Layout = Layout { name_offset: 0, device_class_offset: 0x88, class_name_offset: 0x8 };
/// `Command::name`.
const COMMAND_LAYOUT: Layout = Layout { name_offset: 0x8, ..CLASS_LAYOUT };
/// `Attribute::name`; no class (the request's hook point named it).
const ATTRIBUTE_LAYOUT: Layout = Layout { name_offset: 0x20, device_class_offset: 0, class_name_offset: 0 };
/// End points read nothing.
const NO_LAYOUT: Layout = Layout { name_offset: 0, device_class_offset: 0, class_name_offset: 0 };

/// One probe point: where, what it marks (the attach cookie), and the instruction there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserCodePoint {
    pub file_offset: u64,
    pub cookie: u64,
    /// The instruction's bytes.
    pub bytes: Vec<u8>,
}

/// How the points of a library were found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// From [`KNOWN_BUILDS`], every expected byte checked.
    KnownBuild { version: &'static str },
    /// By decoding the two functions of a build we do not know.
    Scanned,
}

/// The probe points of one libtango file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserCodePlan {
    pub build_id: Option<String>,
    pub found: Found,
    pub points: Vec<UserCodePoint>,
}

impl UserCodePlan {
    /// What the points cover and how they were found, for the log.
    pub fn summary(&self) -> String {
        let has = |p: u8| self.points.iter().any(|x| x.cookie as u8 == p);
        let mut kinds = Vec::new();
        if has(point::HOOK_START) && has(point::HOOK_END) {
            kinds.push("always_executed_hook");
        }
        if has(point::READ_START) && has(point::READ_END) {
            kinds.push("attribute reads");
        }
        if has(point::COMMAND_START) && has(point::COMMAND_END) {
            kinds.push("commands");
        }
        let build = self.build_id.as_deref().map(|id| id.get(..8).unwrap_or(id)).unwrap_or("none");
        let how = match &self.found {
            Found::KnownBuild { version } => format!("known build {version}, build-id {build}"),
            Found::Scanned => format!("build-id {build} not known: found by decoding the functions"),
        };
        format!("{} ({how}; {} branch points, emulated)", kinds.join(", "), self.points.len())
    }
}

/// Why a library gets no user-level probes.
#[derive(Debug, thiserror::Error)]
pub enum UserCodeError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a readable ELF object: {reason}")]
    Elf { path: PathBuf, reason: String },
    /// A known build whose bytes are not what we verified: the file changed, probe nothing.
    #[error("build-id {build_id} ({version}): at {offset:#x} found {found:02x?}, expected {expected:02x?}")]
    Unexpected { build_id: String, version: &'static str, offset: u64, expected: Vec<u8>, found: Vec<u8> },
    /// The scan did not find what it needs.
    #[error("{0}")]
    NotFound(String),
}

/// A point of a known build: offset, the instruction's bytes, and what it marks.
struct KnownPoint {
    offset: u64,
    bytes: &'static [u8],
    point: u8,
    condition: u8,
    device: u8,
    object: u8,
    layout: Layout,
}

/// A build whose points were verified on running servers.
struct KnownBuild {
    build_id: &'static str,
    version: &'static str,
    points: &'static [KnownPoint],
}

const fn known(
    offset: u64,
    bytes: &'static [u8],
    point: u8,
    condition: u8,
    device: u8,
    object: u8,
) -> KnownPoint {
    let layout = match point {
        point::HOOK_START => CLASS_LAYOUT,
        point::READ_START => ATTRIBUTE_LAYOUT,
        point::COMMAND_START => COMMAND_LAYOUT,
        _ => NO_LAYOUT,
    };
    KnownPoint { offset, bytes, point, condition, device, object, layout }
}

use self::{
    condition::{ALWAYS, FLAG_ZF_CLEAR, ZF_SET},
    point::{COMMAND_END, COMMAND_START, HOOK_END, HOOK_START, READ_END, READ_START},
    reg::{NONE, R15, RBP, RBX, RDI},
};

/// The builds we know: Debian 12's `libtango.so.9.3.4` and the `libtango-*.so.10.3.3` PyTango
/// 10.3.1's wheel bundles. The hook and command sequences appear twice in each function: a second
/// copy serves a second path (the first taken by the notes' gdb sessions; the second has the same
/// shape, found by the scan, which the tests hold to this table).
const KNOWN_BUILDS: &[KnownBuild] = &[
    KnownBuild {
        build_id: "5af3102e6b1b506e5ca7c0c5d9fabc1a90a9db7f",
        version: "cppTango 9.3.4 (Debian)",
        points: &[
            known(0x39ec49, &[0x0f, 0x85, 0x0d, 0x15, 0x00, 0x00], HOOK_START, FLAG_ZF_CLEAR, R15, NONE),
            known(0x39ed4b, &[0x0f, 0x85, 0xc4, 0x1d, 0x00, 0x00], READ_START, ZF_SET, R15, RBX),
            known(0x39ed74, &[0x74, 0x12], READ_END, ALWAYS, NONE, NONE),
            known(0x3a0161, &[0xe9, 0xe9, 0xea, 0xff, 0xff], HOOK_END, ALWAYS, NONE, NONE),
            known(0x3a027c, &[0x0f, 0x85, 0x99, 0xfe, 0xff, 0xff], HOOK_START, FLAG_ZF_CLEAR, R15, NONE),
            known(0x3b7cc1, &[0x0f, 0x85, 0xa9, 0x02, 0x00, 0x00], HOOK_START, FLAG_ZF_CLEAR, RBP, NONE),
            known(0x3b7cd8, &[0x0f, 0x85, 0xa2, 0x02, 0x00, 0x00], COMMAND_START, ZF_SET, RBP, RDI),
            known(0x3b7cf9, &[0x74, 0x10], COMMAND_END, ALWAYS, NONE, NONE),
            known(0x3b7eeb, &[0x0f, 0x85, 0xac, 0x00, 0x00, 0x00], HOOK_START, FLAG_ZF_CLEAR, RBP, NONE),
            known(0x3b7eff, &[0x0f, 0x85, 0xa2, 0x00, 0x00, 0x00], COMMAND_START, ZF_SET, RBP, RBX),
            known(0x3b7f13, &[0xe9, 0xd1, 0xfd, 0xff, 0xff], COMMAND_END, ALWAYS, NONE, NONE),
            known(0x3b7f75, &[0xe9, 0x4d, 0xfd, 0xff, 0xff], HOOK_END, ALWAYS, NONE, NONE),
            known(0x3b7f98, &[0xe9, 0x41, 0xfd, 0xff, 0xff], COMMAND_START, ALWAYS, RBP, RDI),
            known(0x3b7fa2, &[0xe9, 0x4a, 0xff, 0xff, 0xff], HOOK_END, ALWAYS, NONE, NONE),
            known(0x3b7fbf, &[0xe9, 0x41, 0xff, 0xff, 0xff], COMMAND_START, ALWAYS, RBP, RBX),
        ],
    },
    KnownBuild {
        build_id: "74a6de257539aab3938884a35c88623371f16b0c",
        version: "cppTango 10.3.3 (PyTango 10.3.1 wheel)",
        points: &[
            known(0x54b01a, &[0x0f, 0x85, 0xa8, 0x12, 0x00, 0x00], HOOK_START, FLAG_ZF_CLEAR, RBP, NONE),
            known(0x54b1a5, &[0x0f, 0x85, 0xf5, 0x20, 0x00, 0x00], READ_START, ZF_SET, RBP, RBX),
            known(0x54b1c6, &[0xe8, 0x45, 0xee, 0xc4, 0xff], READ_END, ALWAYS, NONE, NONE),
            known(0x54c2cd, &[0xe9, 0x4e, 0xed, 0xff, 0xff], HOOK_END, ALWAYS, NONE, NONE),
            known(0x54c43b, &[0x0f, 0x85, 0x45, 0x07, 0x00, 0x00], HOOK_START, FLAG_ZF_CLEAR, RBP, NONE),
            known(0x54cbe6, &[0xe9, 0x80, 0xe8, 0xff, 0xff], HOOK_END, ALWAYS, NONE, NONE),
            known(0x572241, &[0x0f, 0x85, 0x59, 0x02, 0x00, 0x00], HOOK_START, FLAG_ZF_CLEAR, RBP, NONE),
            known(0x572258, &[0x0f, 0x85, 0x1a, 0x02, 0x00, 0x00], COMMAND_START, ZF_SET, RBP, RDI),
            known(0x57226c, &[0xe8, 0x9f, 0x7d, 0xc2, 0xff], COMMAND_END, ALWAYS, NONE, NONE),
            known(0x57244d, &[0x75, 0x5b], HOOK_START, FLAG_ZF_CLEAR, RBP, NONE),
            known(0x57245d, &[0x75, 0x52], COMMAND_START, ZF_SET, RBP, RBX),
            known(0x57246d, &[0xe9, 0xf7, 0xfd, 0xff, 0xff], COMMAND_END, ALWAYS, NONE, NONE),
            known(0x572491, &[0xe9, 0xc8, 0xfd, 0xff, 0xff], COMMAND_START, ALWAYS, RBP, RDI),
            known(0x5724a5, &[0xe9, 0x9d, 0xfd, 0xff, 0xff], HOOK_END, ALWAYS, NONE, NONE),
            known(0x5724af, &[0xeb, 0x9e], HOOK_END, ALWAYS, NONE, NONE),
            known(0x5724c9, &[0xeb, 0x94], COMMAND_START, ALWAYS, RBP, RBX),
        ],
    },
];

/// The probe points of the libtango at `path`: from [`KNOWN_BUILDS`] by build-id, else by
/// scanning. Every point is an instruction the kernel emulates.
pub fn plan(path: &Path) -> Result<UserCodePlan, UserCodeError> {
    let data =
        std::fs::read(path).map_err(|source| UserCodeError::Read { path: path.to_path_buf(), source })?;
    let file = object::File::parse(&*data)
        .map_err(|e| UserCodeError::Elf { path: path.to_path_buf(), reason: e.to_string() })?;
    let build_id = file.build_id().ok().flatten().map(hex::encode);
    if let Some(build) = build_id.as_deref().and_then(|id| KNOWN_BUILDS.iter().find(|b| b.build_id == id)) {
        return known_points(&data, build);
    }
    let points = scan(&file)?;
    Ok(UserCodePlan { build_id, found: Found::Scanned, points })
}

/// The points of a known build, each instruction's bytes compared with what was verified.
fn known_points(data: &[u8], build: &KnownBuild) -> Result<UserCodePlan, UserCodeError> {
    let mut points = Vec::with_capacity(build.points.len());
    for known in build.points {
        let at = usize::try_from(known.offset).ok();
        let found = at.and_then(|at| data.get(at..at + known.bytes.len())).unwrap_or_default();
        if found != known.bytes || emulated_instruction(found).is_none() {
            return Err(UserCodeError::Unexpected {
                build_id: build.build_id.to_string(),
                version: build.version,
                offset: known.offset,
                expected: known.bytes.to_vec(),
                found: found.to_vec(),
            });
        }
        points.push(UserCodePoint {
            file_offset: known.offset,
            cookie: cookie(known.point, known.condition, known.device, known.object, known.layout),
            bytes: known.bytes.to_vec(),
        });
    }
    Ok(UserCodePlan {
        build_id: Some(build.build_id.to_string()),
        found: Found::KnownBuild { version: build.version },
        points,
    })
}

/// Most instructions walked from a point to the call it brackets, or from a branch target.
const WINDOW: usize = 16;

/// The text a function lives in, decodable from any instruction start.
struct Text<'a> {
    bytes: &'a [u8],
    /// Virtual address of `bytes[0]`.
    address: u64,
    /// File offset of `bytes[0]`.
    file_offset: u64,
}

impl Text<'_> {
    /// Up to `max` instructions from `ip` (an instruction start: a function start, a branch
    /// target, or the end of a decoded instruction), stopping at the end of `end`.
    fn decode(&self, ip: u64, end: u64, max: usize) -> Vec<Instruction> {
        let (Some(from), Some(to)) = (ip.checked_sub(self.address), end.checked_sub(self.address)) else {
            return Vec::new();
        };
        let (Ok(from), Ok(to)) = (usize::try_from(from), usize::try_from(to)) else {
            return Vec::new();
        };
        let Some(bytes) = self.bytes.get(from..to.min(self.bytes.len())) else {
            return Vec::new();
        };
        let mut decoder = Decoder::with_ip(64, bytes, ip, DecoderOptions::NONE);
        let mut out = Vec::new();
        while decoder.can_decode() && out.len() < max {
            let instruction = decoder.decode();
            if instruction.is_invalid() {
                break;
            }
            out.push(instruction);
        }
        out
    }

    fn point(&self, instruction: &Instruction, cookie: u64) -> Result<UserCodePoint, UserCodeError> {
        let at = instruction.ip() - self.address;
        let bytes = usize::try_from(at)
            .ok()
            .and_then(|at| self.bytes.get(at..at + instruction.len()))
            .unwrap_or_default()
            .to_vec();
        if emulated_instruction(&bytes).is_none() {
            return Err(UserCodeError::NotFound(format!(
                "{:#x} ({:02x?}) is not a branch the kernel emulates",
                instruction.ip(),
                bytes
            )));
        }
        Ok(UserCodePoint { file_offset: self.file_offset + at, cookie, bytes })
    }
}

/// A function: its instructions, decoded from its start to its end, and the text around it.
struct Function<'a> {
    name: &'static str,
    text: Text<'a>,
    end: u64,
    instructions: Vec<Instruction>,
}

impl<'a> Function<'a> {
    fn find(file: &'a object::File<'a>, prefix: &'static str) -> Result<Function<'a>, UserCodeError> {
        let mut found = file
            .dynamic_symbols()
            .filter(|s| s.is_definition() && s.name().is_ok_and(|n| n.starts_with(prefix)));
        let symbol = found.next().ok_or_else(|| UserCodeError::NotFound(format!("no exported {prefix}…")))?;
        if found.next().is_some() {
            return Err(UserCodeError::NotFound(format!("more than one exported {prefix}…")));
        }
        let (address, size) = (symbol.address(), symbol.size());
        if size == 0 {
            return Err(UserCodeError::NotFound(format!("{prefix}… has no size")));
        }
        let section = symbol
            .section_index()
            .and_then(|index| file.section_by_index(index).ok())
            .ok_or_else(|| UserCodeError::NotFound(format!("{prefix}… is in no section")))?;
        let bytes = section.data().map_err(|e| UserCodeError::NotFound(e.to_string()))?;
        let (file_offset, _) = section
            .file_range()
            .ok_or_else(|| UserCodeError::NotFound(format!("{prefix}… is not in the file")))?;
        let text = Text { bytes, address: section.address(), file_offset };
        let end = address + size;
        let instructions = text.decode(address, end, usize::MAX);
        if instructions.last().is_none_or(|last| last.next_ip() != end) {
            return Err(UserCodeError::NotFound(format!("{prefix}… does not decode to its end")));
        }
        Ok(Function { name: prefix, text, end, instructions })
    }

    /// Instructions from a branch target: inside the function up to its end, else a window.
    fn from(&self, ip: u64) -> Vec<Instruction> {
        let start = self.instructions.first().map_or(0, Instruction::ip);
        let end = if (start..self.end).contains(&ip) { self.end } else { ip + 16 * WINDOW as u64 };
        self.text.decode(ip, end, WINDOW)
    }
}

/// The GOT slots of the two default methods (their `R_X86_64_GLOB_DAT` relocations).
fn got_slots(file: &object::File<'_>) -> HashMap<&'static str, u64> {
    let mut slots = HashMap::new();
    let (Some(relocations), Some(symbols)) = (file.dynamic_relocations(), file.dynamic_symbol_table()) else {
        return slots;
    };
    for (offset, relocation) in relocations {
        let object::RelocationTarget::Symbol(index) = relocation.target() else {
            continue;
        };
        let Ok(name) = symbols.symbol_by_index(index).and_then(|s| s.name()) else {
            continue;
        };
        for wanted in [DEFAULT_HOOK, DEFAULT_IS_ALLOWED] {
            if name == wanted {
                slots.insert(wanted, offset);
            }
        }
    }
    slots
}

/// Decodes both functions and finds every point.
fn scan(file: &object::File<'_>) -> Result<Vec<UserCodePoint>, UserCodeError> {
    let slots = got_slots(file);
    let slot = |name: &'static str| {
        slots.get(name).copied().ok_or_else(|| UserCodeError::NotFound(format!("no GOT slot of {name}")))
    };
    let (hook, is_allowed) = (slot(DEFAULT_HOOK)?, slot(DEFAULT_IS_ALLOWED)?);
    let read = Function::find(file, READ_FUNCTION)?;
    let command = Function::find(file, COMMAND_FUNCTION)?;
    let mut points = Vec::new();
    hook_points(&read, hook, &mut points)?;
    read_points(&read, &mut points)?;
    hook_points(&command, hook, &mut points)?;
    command_points(&command, is_allowed, &mut points)?;
    // Two hook compares may share their end.
    let mut seen = std::collections::HashSet::new();
    points.retain(|p| seen.insert(p.file_offset));
    Ok(points)
}

/// Whether `instruction` is `cmp %reg, slot(%rip)`.
fn compares_with_slot(instruction: &Instruction, slot: u64) -> bool {
    matches!(instruction.code(), Code::Cmp_r64_rm64)
        && instruction.memory_base() == Register::RIP
        && instruction.ip_rel_memory_address() == slot
}

fn is_jne(instruction: &Instruction) -> bool {
    matches!(instruction.code(), Code::Jne_rel32_64 | Code::Jne_rel8_64)
}

/// `mov %src,%dst` between 64-bit registers: the source.
fn moved_into(instruction: &Instruction, dst: Register) -> Option<Register> {
    let is_mov = matches!(instruction.code(), Code::Mov_r64_rm64 | Code::Mov_rm64_r64);
    (is_mov && instruction.op0_register() == dst && instruction.op1_register() != Register::None)
        .then(|| instruction.op1_register())
}

/// Whether any of `instructions` writes `register` (or part of it).
fn writes(instructions: &[Instruction], register: Register) -> bool {
    let mut info = InstructionInfoFactory::new();
    instructions.iter().any(|instruction| {
        info.info(instruction).used_registers().iter().any(|used| {
            used.register().full_register() == register
                && matches!(
                    used.access(),
                    OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
                )
        })
    })
}

fn is_control_flow(instruction: &Instruction) -> bool {
    instruction.flow_control() != FlowControl::Next
}

/// The first control-flow instruction after `instructions[..]`, when none before it is one.
fn next_branch(instructions: &[Instruction]) -> Option<&Instruction> {
    instructions.iter().take(WINDOW).find(|i| is_control_flow(i))
}

/// The `pt_regs` slot of a 64-bit general register.
fn slot_of(register: Register) -> Option<u8> {
    Some(match register {
        Register::R15 => reg::R15,
        Register::R14 => reg::R14,
        Register::R13 => reg::R13,
        Register::R12 => reg::R12,
        Register::RBP => reg::RBP,
        Register::RBX => reg::RBX,
        Register::R11 => reg::R11,
        Register::R10 => reg::R10,
        Register::R9 => reg::R9,
        Register::R8 => reg::R8,
        Register::RAX => reg::RAX,
        Register::RCX => reg::RCX,
        Register::RDX => reg::RDX,
        Register::RSI => reg::RSI,
        Register::RDI => reg::RDI,
        _ => return None,
    })
}

fn callee_saved(register: Register) -> bool {
    matches!(
        register,
        Register::RBX | Register::RBP | Register::R12 | Register::R13 | Register::R14 | Register::R15
    )
}

fn not_found(function: &Function<'_>, what: &str) -> UserCodeError {
    UserCodeError::NotFound(format!("no {what} in {}…", function.name))
}

/// `mov (%DEV),%rax; mov 0xb8(%rax),%rax; cmp %rax,hook@GOT(%rip); … jne HOOK` — start at the
/// `jne` (taken: the hook is the device's own); `HOOK: … mov %DEV,%rdi; call *%rax; … jmp back`
/// — end at the first branch after the call.
fn hook_points(
    function: &Function<'_>,
    slot: u64,
    out: &mut Vec<UserCodePoint>,
) -> Result<(), UserCodeError> {
    let code = &function.instructions;
    let mut found = 0;
    for (i, compare) in code.iter().enumerate() {
        if !compares_with_slot(compare, slot) {
            continue;
        }
        // The device: the base of the load of its vtable, just before.
        let first = i.saturating_sub(4);
        let Some(load) = (first..i).rev().find(|&l| {
            code.get(l).is_some_and(|load| {
                load.code() == Code::Mov_r64_rm64
                    && load.op0_register() == Register::RAX
                    && load.memory_index() == Register::None
                    && load.memory_displacement64() == 0
                    && !matches!(load.memory_base(), Register::RAX | Register::RIP | Register::None)
            })
        }) else {
            continue;
        };
        let Some(device) = code.get(load).map(Instruction::memory_base) else {
            continue;
        };
        let Some((j, jne)) = code.iter().enumerate().skip(i + 1).take(2).find(|(_, x)| is_control_flow(x))
        else {
            continue;
        };
        let Some(device_slot) = slot_of(device) else {
            continue;
        };
        // The device register still holds the device at the `jne`.
        if !is_jne(jne) || writes(code.get(load + 1..j).unwrap_or_default(), device) {
            continue;
        }
        // Out of line: the indirect call of the hook, then the branch back.
        let block = function.from(jne.near_branch_target());
        let Some(call) = block.iter().position(is_control_flow) else {
            continue;
        };
        let indirect = block
            .get(call)
            .is_some_and(|c| c.code() == Code::Call_rm64 && c.op0_register() != Register::None);
        let passes_device =
            call > 0 && block.get(call - 1).and_then(|m| moved_into(m, Register::RDI)) == Some(device);
        if !indirect || !passes_device {
            continue;
        }
        // The first branch after the call, past straight-line bookkeeping.
        let after = block.get(call).map(|c| function.from(c.next_ip())).unwrap_or_default();
        let Some(back) = next_branch(&after) else {
            continue;
        };
        out.push(function.text.point(
            jne,
            cookie(point::HOOK_START, condition::FLAG_ZF_CLEAR, device_slot, reg::NONE, CLASS_LAYOUT),
        )?);
        out.push(
            function
                .text
                .point(back, cookie(point::HOOK_END, condition::ALWAYS, reg::NONE, reg::NONE, NO_LAYOUT))?,
        );
        found += 1;
    }
    if found == 0 {
        return Err(not_found(function, "always_executed_hook compare"));
    }
    Ok(())
}

/// `jne ERR; … mov %DEV,%rsi; … mov %ATTR,%rdx; mov (%rdi),%rax; call *0x18(%rax)` (the
/// attribute's `Attr::read`) — start at the conditional branch the read falls through from, end
/// at the first branch after the call.
fn read_points(function: &Function<'_>, out: &mut Vec<UserCodePoint>) -> Result<(), UserCodeError> {
    let code = &function.instructions;
    let mut found = 0;
    for (c, call) in code.iter().enumerate() {
        let reads = call.code() == Code::Call_rm64
            && call.memory_base() == Register::RAX
            && call.memory_index() == Register::None
            && call.memory_displacement64() == 0x18;
        if !reads {
            continue;
        }
        // Back to the previous control-flow instruction: the straight line into the call.
        let Some(k) = (c.saturating_sub(WINDOW)..c).rev().find(|&k| code.get(k).is_some_and(is_control_flow))
        else {
            continue;
        };
        let line = code.get(k + 1..c).unwrap_or_default();
        let attribute = line.iter().rev().find_map(|m| moved_into(m, Register::RDX));
        let device = line.iter().rev().find_map(|m| moved_into(m, Register::RSI));
        let (Some(attribute), Some(device)) = (attribute, device) else {
            continue;
        };
        let Some(start) = code.get(k) else {
            continue;
        };
        let condition = match start.code() {
            Code::Jne_rel32_64 | Code::Jne_rel8_64 => condition::ZF_SET,
            Code::Je_rel32_64 | Code::Je_rel8_64 => condition::ZF_CLEAR,
            _ => continue,
        };
        let (Some(attribute_slot), Some(device_slot)) = (slot_of(attribute), slot_of(device)) else {
            continue;
        };
        // The registers read at the start must still hold the attribute and device at the call.
        if writes(line, attribute) || writes(line, device) {
            continue;
        }
        let Some(end) = next_branch(code.get(c + 1..).unwrap_or_default()) else {
            continue;
        };
        out.push(function.text.point(
            start,
            cookie(point::READ_START, condition, device_slot, attribute_slot, ATTRIBUTE_LAYOUT),
        )?);
        out.push(
            function
                .text
                .point(end, cookie(point::READ_END, condition::ALWAYS, reg::NONE, reg::NONE, NO_LAYOUT))?,
        );
        found += 1;
    }
    if found == 0 {
        return Err(not_found(function, "attribute read call"));
    }
    Ok(())
}

/// `cmp %reg,is_allowed@GOT(%rip); jne CUSTOM; … mov %DEV,%rsi; call *0x10(%rax)` (the command's
/// `execute`, `this` in %rdi) — start at the `jne` when it falls through, or at `CUSTOM: …
/// call *%reg; …; jmp back` after a custom `is_allowed`; end at the first branch after the call.
fn command_points(
    function: &Function<'_>,
    slot: u64,
    out: &mut Vec<UserCodePoint>,
) -> Result<(), UserCodeError> {
    let code = &function.instructions;
    let mut found = 0;
    for (i, compare) in code.iter().enumerate() {
        if !compares_with_slot(compare, slot) {
            continue;
        }
        let Some((j, jne)) = code.iter().enumerate().skip(i + 1).take(2).find(|(_, x)| is_control_flow(x))
        else {
            continue;
        };
        if !is_jne(jne) {
            continue;
        }
        // Falling through: straight to the execute call.
        let rest = code.get(j + 1..).unwrap_or_default();
        let Some(c) = rest.iter().take(WINDOW).position(is_control_flow) else {
            continue;
        };
        let Some(call) = rest.get(c) else {
            continue;
        };
        let executes = call.code() == Code::Call_rm64
            && call.memory_base() == Register::RAX
            && call.memory_index() == Register::None
            && call.memory_displacement64() == 0x10;
        let line = rest.get(..c).unwrap_or_default();
        let Some(device) = line.iter().rev().find_map(|m| moved_into(m, Register::RSI)) else {
            continue;
        };
        // `this` of the call: what is moved into %rdi on the way, else %rdi itself.
        let object = line.iter().rev().find_map(|m| moved_into(m, Register::RDI)).unwrap_or(Register::RDI);
        let (Some(device_slot), Some(object_slot)) = (slot_of(device), slot_of(object)) else {
            continue;
        };
        if !executes || !callee_saved(device) || writes(line, object) || writes(line, device) {
            continue;
        }
        let command_cookie =
            |condition| cookie(point::COMMAND_START, condition, device_slot, object_slot, COMMAND_LAYOUT);
        out.push(function.text.point(jne, command_cookie(condition::ZF_SET))?);
        // After a custom is_allowed: the jump back; the command survives the call in a
        // callee-saved register, or is reloaded after it.
        let block = function.from(jne.near_branch_target());
        let back = block.iter().position(|x| x.code() == Code::Jmp_rel32_64 || x.code() == Code::Jmp_rel8_64);
        let Some(back) =
            back.filter(|&b| block.get(b).is_some_and(|x| x.near_branch_target() == jne.next_ip()))
        else {
            return Err(not_found(function, "jump back after a custom is_allowed"));
        };
        let last_call = block
            .get(..back)
            .unwrap_or_default()
            .iter()
            .rposition(|x| x.flow_control() == FlowControl::IndirectCall);
        let after_call = block.get(last_call.map_or(0, |l| l + 1)..back).unwrap_or_default();
        if last_call.is_none()
            || !(callee_saved(object) || writes(after_call, object))
            || writes(after_call, device)
        {
            return Err(not_found(function, "the command kept across a custom is_allowed"));
        }
        if let Some(jmp) = block.get(back) {
            out.push(function.text.point(jmp, command_cookie(condition::ALWAYS))?);
        }
        let Some(end) = next_branch(rest.get(c + 1..).unwrap_or_default()) else {
            return Err(not_found(function, "branch after the execute call"));
        };
        out.push(
            function
                .text
                .point(end, cookie(point::COMMAND_END, condition::ALWAYS, reg::NONE, reg::NONE, NO_LAYOUT))?,
        );
        found += 1;
    }
    if found == 0 {
        return Err(not_found(function, "is_allowed compare before an execute call"));
    }
    Ok(())
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

    /// Debian's libtango 9.3.4 and the one PyTango 10.3.1's wheel bundles, where installed.
    fn libraries() -> Vec<PathBuf> {
        let mut out = Vec::new();
        let debian = Path::new("/usr/lib/x86_64-linux-gnu/libtango.so.9.3.4");
        if debian.exists() {
            out.push(debian.to_path_buf());
        }
        if let Some(venv) = std::env::var_os("TANGO_TRACER_VENV") {
            let lib = Path::new(&venv).join("lib");
            for python in std::fs::read_dir(&lib).into_iter().flatten().filter_map(Result::ok) {
                let libs = python.path().join("site-packages/pytango.libs");
                for entry in std::fs::read_dir(libs).into_iter().flatten().filter_map(Result::ok) {
                    if entry.file_name().to_string_lossy().starts_with("libtango-") {
                        out.push(entry.path());
                    }
                }
            }
        }
        assert!(
            !out.is_empty(),
            "neither Debian's libtango 9 nor PyTango's wheel (TANGO_TRACER_VENV) is installed"
        );
        out
    }

    fn sorted(mut points: Vec<UserCodePoint>) -> Vec<UserCodePoint> {
        points.sort_by_key(|p| p.file_offset);
        points
    }

    /// The scan of each real library finds exactly the verified points of its build: the table
    /// checks the scanner, and the scanner the table.
    #[test]
    fn the_scan_finds_the_verified_points_of_both_known_builds() {
        for path in libraries() {
            let known = plan(&path).unwrap();
            assert!(matches!(known.found, Found::KnownBuild { .. }), "{}: {:?}", path.display(), known.found);
            let data = std::fs::read(&path).unwrap();
            let file = object::File::parse(&*data).unwrap();
            let scanned = scan(&file).unwrap();
            assert_eq!(sorted(scanned), sorted(known.points.clone()), "{}", path.display());
            let summary = known.summary();
            assert!(
                summary.starts_with("always_executed_hook, attribute reads, commands (known build"),
                "{summary}"
            );
        }
    }

    #[test]
    fn a_known_build_with_other_bytes_is_refused() {
        let path = libraries().remove(0);
        let mut data = std::fs::read(&path).unwrap();
        let build = KNOWN_BUILDS
            .iter()
            .find(|b| plan(&path).unwrap().build_id.as_deref() == Some(b.build_id))
            .unwrap();
        let at = build.points[2].offset as usize;
        data[at] = 0x90;
        let err = known_points(&data, build).unwrap_err();
        assert!(matches!(err, UserCodeError::Unexpected { .. }), "{err}");
        assert!(err.to_string().contains("expected"), "{err}");
    }

    #[test]
    fn a_library_without_the_functions_is_refused_with_a_reason() {
        let libc = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .expect("a libc");
        let err = plan(libc).unwrap_err();
        assert!(matches!(err, UserCodeError::NotFound(_)), "{err}");
    }
}
