//! Tango's `Device_*` operations: request arguments, replies and exceptions.
//!
//! The layouts follow Tango's IDL (v6 for `ClntIdent`, `info_6`). Tango strings travel in
//! the ISO-8859-1 code set omniORB negotiates, so text that is not UTF-8 is read as Latin-1
//! rather than rejected.
//!
//! [`parse_request`] never fails: a capture cut in the middle of the arguments still yields
//! what was read before the cut (typically the command or attribute names), with
//! [`TangoRequest::args_complete`] false.

mod any;

pub use any::{ArgValue, parse_any};

pub use crate::giop::{CompletionStatus, SystemException, parse_system_exception};
use crate::{WireError, cdr::CdrReader};

/// Deepest nesting of pipe blobs followed.
const MAX_BLOB_DEPTH: u32 = 8;

/// Reads a `string` as text, taking bytes that are not UTF-8 as Latin-1.
pub(crate) fn text(r: &mut CdrReader<'_>) -> Result<String, WireError> {
    Ok(latin1_or_utf8(r.string_bytes()?))
}

fn latin1_or_utf8(raw: &[u8]) -> String {
    match std::str::from_utf8(raw) {
        Ok(s) => s.to_owned(),
        Err(_) => raw.iter().map(|&b| char::from(b)).collect(),
    }
}

/// `Tango::LockerLanguage`, the discriminant of `ClntIdent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockerLanguage {
    Cpp,
    Java,
    /// IDL 6: C++ with a trace context.
    Cpp6,
    /// IDL 6: Java with a trace context.
    Java6,
    Unknown(u32),
}

impl LockerLanguage {
    fn from_u32(v: u32) -> LockerLanguage {
        match v {
            0 => LockerLanguage::Cpp,
            1 => LockerLanguage::Java,
            2 => LockerLanguage::Cpp6,
            3 => LockerLanguage::Java6,
            v => LockerLanguage::Unknown(v),
        }
    }
}

/// The client identity a Device_4+ call carries; the only place a W3C trace context travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClntIdent {
    pub lang: LockerLanguage,
    pub pid: Option<u32>,
    pub java_main_class: Option<String>,
    pub java_uuid: Option<[u64; 2]>,
    /// W3C `traceparent` (`00-<32 hex>-<16 hex>-<flags>`); `None` when sent empty.
    pub trace_parent: Option<String>,
    /// W3C `tracestate`; `None` when sent empty.
    pub trace_state: Option<String>,
}

/// Reads a `string` as text, `None` when empty (no work for the empty strings clients send).
fn non_empty_text(r: &mut CdrReader<'_>) -> Result<Option<String>, WireError> {
    let raw = r.string_bytes()?;
    Ok((!raw.is_empty()).then(|| latin1_or_utf8(raw)))
}

/// Reads a `ClntIdent`.
pub fn parse_clnt_ident(r: &mut CdrReader<'_>) -> Result<ClntIdent, WireError> {
    // u32 LockerLanguage | CPP: u32 pid | JAVA: JavaClntIdent
    // | CPP_6: u32 pid, TraceContext | JAVA_6: JavaClntIdent, TraceContext
    let lang = LockerLanguage::from_u32(r.u32()?);
    let mut id = ClntIdent {
        lang,
        pid: None,
        java_main_class: None,
        java_uuid: None,
        trace_parent: None,
        trace_state: None,
    };
    match lang {
        LockerLanguage::Cpp | LockerLanguage::Cpp6 => id.pid = Some(r.u32()?),
        LockerLanguage::Java | LockerLanguage::Java6 => {
            // JavaClntIdent: string MainClass | u64 uuid[2]
            id.java_main_class = non_empty_text(r)?;
            id.java_uuid = Some([r.u64()?, r.u64()?]);
        }
        LockerLanguage::Unknown(_) => return Ok(id),
    }
    if matches!(lang, LockerLanguage::Cpp6 | LockerLanguage::Java6) {
        // TraceContext: u32 kind (0 = W3C_TC_V0) | string trace_parent | string trace_state
        if r.u32()? == 0 {
            id.trace_parent = non_empty_text(r)?;
            id.trace_state = non_empty_text(r)?;
        }
    }
    Ok(id)
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum TangoCall {
    /// `read_attributes`, `_2` … `_5`.
    ReadAttributes { names: Vec<String> },
    /// `write_attributes`, `_3`, `_4`.
    WriteAttributes { names: Vec<String> },
    /// `write_read_attributes_4` (reads what it writes) and `_5`.
    WriteReadAttributes { written: Vec<String>, read: Vec<String> },
    /// `command_inout`, `_2`, `_4`.
    CommandInout { command: String, argin: Option<ArgValue> },
    /// `set_attribute_config`, `_2` … `_5`.
    SetAttributeConfig { names: Vec<String> },
    /// `read_pipe_5`, `write_pipe_5`, `write_read_pipe_5`, `set_pipe_config_5` (first name).
    Pipe { name: String },
    /// Everything else (`ping`, `_get_state`, `info`, …): arguments not parsed.
    Other,
}

/// The decoded arguments of a Tango request.
#[derive(Debug, Clone, PartialEq)]
pub struct TangoRequest {
    pub call: TangoCall,
    pub client_ident: Option<ClntIdent>,
    /// False when the arguments could not all be read (truncated capture, odd data).
    pub args_complete: bool,
}

/// Decodes the arguments of `operation` from a request body. Never fails: it returns what
/// it could read.
pub fn parse_request(operation: &str, mut body: CdrReader<'_>) -> TangoRequest {
    let mut req = TangoRequest { call: TangoCall::Other, client_ident: None, args_complete: true };
    req.args_complete = read_args(operation, &mut body, &mut req).is_ok();
    req
}

fn read_args(op: &str, r: &mut CdrReader<'_>, req: &mut TangoRequest) -> Result<(), WireError> {
    // Each arm stores what it read before propagating an error, so a cut capture keeps it,
    // and says what follows the main arguments: (DevSource?, ClntIdent?).
    let (source, clnt_ident) = match op {
        "read_attributes" | "read_attributes_2" | "read_attributes_3" | "read_attributes_4"
        | "read_attributes_5" => {
            // DevVarStringArray names [| DevSource] [| ClntIdent]
            let mut names = Vec::new();
            let res = read_names(r, &mut names);
            req.call = TangoCall::ReadAttributes { names };
            res?;
            match op {
                "read_attributes" => (false, false),
                "read_attributes_2" | "read_attributes_3" => (true, false),
                _ => (true, true),
            }
        }
        "write_attributes" | "write_attributes_3" | "write_attributes_4" => {
            // AttributeValueList (or _4 | ClntIdent)
            let mut names = Vec::new();
            let res = if op == "write_attributes_4" {
                read_list(r, &mut names, attribute_value_4_name)
            } else {
                read_list(r, &mut names, attribute_value_name)
            };
            req.call = TangoCall::WriteAttributes { names };
            res?;
            if op == "write_attributes_4" { (false, true) } else { (false, false) }
        }
        "write_read_attributes_4" | "write_read_attributes_5" => {
            // AttributeValueList_4 [| DevVarStringArray r_names] | ClntIdent
            let mut written = Vec::new();
            let res = read_list(r, &mut written, attribute_value_4_name);
            let mut read = Vec::new();
            let res = res.and_then(|()| {
                if op == "write_read_attributes_4" {
                    read.clone_from(&written);
                    Ok(())
                } else {
                    read_names(r, &mut read)
                }
            });
            req.call = TangoCall::WriteReadAttributes { written, read };
            res?;
            (false, true)
        }
        "command_inout" | "command_inout_2" | "command_inout_4" => {
            // string command | any argin [| DevSource] [| ClntIdent]
            let command = text(r)?;
            let (argin, res) = match parse_any(r) {
                Ok(argin) => (Some(argin), Ok(())),
                Err(e) => (None, Err(e)),
            };
            req.call = TangoCall::CommandInout { command, argin };
            res?;
            match op {
                "command_inout" => (false, false),
                "command_inout_2" => (true, false),
                _ => (true, true),
            }
        }
        "set_attribute_config"
        | "set_attribute_config_2"
        | "set_attribute_config_3"
        | "set_attribute_config_4"
        | "set_attribute_config_5" => {
            // AttributeConfigList{,_2,_3,_5} [| ClntIdent]
            let mut names = Vec::new();
            let res = match op {
                "set_attribute_config" => read_list(r, &mut names, |r| attribute_config(r, 1)),
                "set_attribute_config_2" => read_list(r, &mut names, |r| attribute_config(r, 2)),
                "set_attribute_config_5" => read_list(r, &mut names, attribute_config_5),
                _ => read_list(r, &mut names, attribute_config_3),
            };
            req.call = TangoCall::SetAttributeConfig { names };
            res?;
            match op {
                "set_attribute_config_4" | "set_attribute_config_5" => (false, true),
                _ => (false, false),
            }
        }
        "read_pipe_5" => {
            // string name | ClntIdent
            req.call = TangoCall::Pipe { name: text(r)? };
            (false, true)
        }
        "write_pipe_5" | "write_read_pipe_5" => {
            // DevPipeData {string name | TimeVal | DevPipeBlob} | ClntIdent
            req.call = TangoCall::Pipe { name: text(r)? };
            skip_time_val(r)?;
            skip_pipe_blob(r, 0)?;
            (false, true)
        }
        "set_pipe_config_5" => {
            // PipeConfigList | ClntIdent
            let mut names = Vec::new();
            let res = read_list(r, &mut names, pipe_config);
            req.call = TangoCall::Pipe { name: names.into_iter().next().unwrap_or_default() };
            res?;
            (false, true)
        }
        _ => (false, false),
    };
    if source {
        // DevSource enum
        r.u32()?;
    }
    if clnt_ident {
        req.client_ident = Some(parse_clnt_ident(r)?);
    }
    Ok(())
}

/// Reads a `DevVarStringArray` into `out`, keeping the names read before an error.
fn read_names(r: &mut CdrReader<'_>, out: &mut Vec<String>) -> Result<(), WireError> {
    read_list(r, out, text)
}

/// Reads a sequence whose elements each yield a name, keeping those read before an error.
fn read_list(
    r: &mut CdrReader<'_>,
    out: &mut Vec<String>,
    mut elem: impl FnMut(&mut CdrReader<'_>) -> Result<String, WireError>,
) -> Result<(), WireError> {
    // Every element takes at least 4 bytes; the count is checked before reading.
    let count = r.seq_len(4)?;
    for _ in 0..count {
        out.push(elem(r)?);
    }
    Ok(())
}

fn skip_strings(r: &mut CdrReader<'_>, n: usize) -> Result<(), WireError> {
    for _ in 0..n {
        r.string_bytes()?;
    }
    Ok(())
}

fn skip_string_seq(r: &mut CdrReader<'_>) -> Result<(), WireError> {
    let count = r.seq_len(4)?;
    skip_strings(r, count)
}

fn skip_time_val(r: &mut CdrReader<'_>) -> Result<(), WireError> {
    // TimeVal: long tv_sec | long tv_usec | long tv_nsec
    r.skip_aligned(4, 3)
}

/// Skips an `AttrValUnion`: u32 `AttributeDataType` then that type's value.
fn skip_attr_val_union(r: &mut CdrReader<'_>) -> Result<(), WireError> {
    let fixed = |r: &mut CdrReader<'_>, size: usize| -> Result<(), WireError> {
        let count = r.seq_len(size)?;
        if count > 0 {
            r.skip_aligned(size, count)?;
        }
        Ok(())
    };
    match r.u32()? {
        // ATT_BOOL, ATT_UCHAR
        0 | 6 => fixed(r, 1),
        // ATT_SHORT, ATT_USHORT
        1 | 7 => fixed(r, 2),
        // ATT_LONG, ATT_FLOAT, ATT_ULONG, ATT_STATE
        2 | 4 | 8 | 11 => fixed(r, 4),
        // ATT_LONG64, ATT_DOUBLE, ATT_ULONG64
        3 | 5 | 9 => fixed(r, 8),
        // ATT_STRING
        10 => skip_string_seq(r),
        // DEVICE_STATE: one DevState
        12 => r.u32().map(drop),
        // ATT_ENCODED: sequence<DevEncoded {string format | octet seq data}>
        13 => {
            let count = r.seq_len(8)?;
            for _ in 0..count {
                r.string_bytes()?;
                r.octets()?;
            }
            Ok(())
        }
        // ATT_NO_DATA: boolean
        14 => r.u8().map(drop),
        _ => Err(r.fail(WireError::Malformed("unknown AttributeDataType"))),
    }
}

/// `AttributeValue` (IDL 1–3 writes): any value | quality | TimeVal | string name | dim_x | dim_y.
fn attribute_value_name(r: &mut CdrReader<'_>) -> Result<String, WireError> {
    any::skip_any(r)?;
    r.u32()?;
    skip_time_val(r)?;
    let name = text(r)?;
    r.skip_aligned(4, 2)?;
    Ok(name)
}

/// `AttributeValue_4`: AttrValUnion | quality | data_format | TimeVal | string name
/// | r_dim | w_dim | DevErrorList.
fn attribute_value_4_name(r: &mut CdrReader<'_>) -> Result<String, WireError> {
    Ok(attribute_value(r, AttrLayout::V4)?.name)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AttrLayout {
    /// `AttributeValue`: any-based, dims as two longs, no errors.
    V1,
    /// `AttributeValue_3`: any-based, AttributeDim pair and errors.
    V3,
    V4,
    /// `AttributeValue_5`: V4 plus `data_type` after `data_format`.
    V5,
}

/// One attribute of a read reply or an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrReading {
    pub name: String,
    /// `AttrQuality`: 0 VALID, 1 INVALID, 2 ALARM, 3 CHANGING, 4 WARNING.
    pub quality: u32,
    /// `AttrDataFormat` (IDL 4+): 0 SCALAR, 1 SPECTRUM, 2 IMAGE, 3 FMT_UNKNOWN.
    pub data_format: Option<u32>,
    /// Tango data type number (IDL 5+).
    pub data_type: Option<i32>,
    /// Errors reported for this attribute (IDL 3+).
    pub errors: Vec<DevError>,
}

fn attribute_value(r: &mut CdrReader<'_>, layout: AttrLayout) -> Result<AttrReading, WireError> {
    let (mut data_format, mut data_type) = (None, None);
    let quality;
    if matches!(layout, AttrLayout::V1 | AttrLayout::V3) {
        // any value | quality
        any::skip_any(r)?;
        quality = r.u32()?;
    } else {
        // AttrValUnion | quality | data_format [| data_type]
        skip_attr_val_union(r)?;
        quality = r.u32()?;
        data_format = Some(r.u32()?);
        if layout == AttrLayout::V5 {
            data_type = Some(r.i32()?);
        }
    }
    skip_time_val(r)?;
    let name = text(r)?;
    // dim_x | dim_y, or r_dim {x, y} | w_dim {x, y}
    r.skip_aligned(4, if layout == AttrLayout::V1 { 2 } else { 4 })?;
    let errors = if layout == AttrLayout::V1 { Vec::new() } else { read_dev_errors(r)? };
    Ok(AttrReading { name, quality, data_format, data_type, errors })
}

/// Reads one `AttributeValue_5`, as in `read_attributes_5` replies and ZMQ events.
pub fn parse_attribute_value_5(r: &mut CdrReader<'_>) -> Result<AttrReading, WireError> {
    attribute_value(r, AttrLayout::V5)
}

/// Decodes the reply of `read_attributes*` or `write_read_attributes*`.
pub fn parse_attributes_reply(
    operation: &str,
    mut body: CdrReader<'_>,
) -> Result<Vec<AttrReading>, WireError> {
    let layout = match operation {
        "read_attributes" | "read_attributes_2" => AttrLayout::V1,
        "read_attributes_3" => AttrLayout::V3,
        "read_attributes_4" | "write_read_attributes_4" => AttrLayout::V4,
        "read_attributes_5" | "write_read_attributes_5" => AttrLayout::V5,
        _ => return Err(WireError::Malformed("not an attribute-reading operation")),
    };
    let count = body.seq_len(4)?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(attribute_value(&mut body, layout)?);
    }
    Ok(out)
}

/// Skips an `AttributeAlarm` and an `EventProperties` (IDL 3+ attribute configuration).
fn skip_alarm_and_events(r: &mut CdrReader<'_>) -> Result<(), WireError> {
    // AttributeAlarm: 6 strings | extensions
    skip_strings(r, 6)?;
    skip_string_seq(r)?;
    // ChangeEventProp: 2 strings | ext; PeriodicEventProp: 1 | ext; ArchiveEventProp: 3 | ext
    for n in [2, 1, 3] {
        skip_strings(r, n)?;
        skip_string_seq(r)?;
    }
    Ok(())
}

/// `AttributeConfig` (`version` 1) or `AttributeConfig_2`: string name | writable
/// | data_format | data_type | max_dim_x | max_dim_y | 11 strings [| level] | extensions.
fn attribute_config(r: &mut CdrReader<'_>, version: u32) -> Result<String, WireError> {
    let name = text(r)?;
    r.skip_aligned(4, 5)?;
    skip_strings(r, 11)?;
    if version == 2 {
        r.u32()?;
    }
    skip_string_seq(r)?;
    Ok(name)
}

/// `AttributeConfig_3`: string name | writable | data_format | data_type | max_dim_x
/// | max_dim_y | 9 strings | level | AttributeAlarm | EventProperties | extensions
/// | sys_extensions.
fn attribute_config_3(r: &mut CdrReader<'_>) -> Result<String, WireError> {
    let name = text(r)?;
    r.skip_aligned(4, 5)?;
    skip_strings(r, 9)?;
    r.u32()?;
    skip_alarm_and_events(r)?;
    skip_string_seq(r)?;
    skip_string_seq(r)?;
    Ok(name)
}

/// `AttributeConfig_5`: string name | writable | data_format | data_type | boolean memorized
/// | boolean mem_init | max_dim_x | max_dim_y | 9 strings | level | string root_attr_name
/// | enum_labels | AttributeAlarm | EventProperties | extensions | sys_extensions.
fn attribute_config_5(r: &mut CdrReader<'_>) -> Result<String, WireError> {
    let name = text(r)?;
    r.skip_aligned(4, 3)?;
    r.skip(2)?;
    r.skip_aligned(4, 2)?;
    skip_strings(r, 9)?;
    r.u32()?;
    r.string_bytes()?;
    skip_string_seq(r)?;
    skip_alarm_and_events(r)?;
    skip_string_seq(r)?;
    skip_string_seq(r)?;
    Ok(name)
}

/// `PipeConfig`: string name | description | label | level | writable | extensions.
fn pipe_config(r: &mut CdrReader<'_>) -> Result<String, WireError> {
    let name = text(r)?;
    skip_strings(r, 2)?;
    r.skip_aligned(4, 2)?;
    skip_string_seq(r)?;
    Ok(name)
}

/// `DevPipeBlob`: string name | sequence<DevPipeDataElt>.
fn skip_pipe_blob(r: &mut CdrReader<'_>, depth: u32) -> Result<(), WireError> {
    r.string_bytes()?;
    skip_pipe_elts(r, depth)
}

/// sequence<DevPipeDataElt {string name | AttrValUnion | sequence<DevPipeDataElt> inner
/// | string inner_blob_name}>.
fn skip_pipe_elts(r: &mut CdrReader<'_>, depth: u32) -> Result<(), WireError> {
    if depth > MAX_BLOB_DEPTH {
        return Err(r.fail(WireError::Malformed("pipe blob nested too deep")));
    }
    let count = r.seq_len(16)?;
    for _ in 0..count {
        r.string_bytes()?;
        skip_attr_val_union(r)?;
        skip_pipe_elts(r, depth + 1)?;
        r.string_bytes()?;
    }
    Ok(())
}

/// One `Tango::DevError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevError {
    pub reason: String,
    /// `ErrSeverity`: 0 WARN, 1 ERR, 2 PANIC.
    pub severity: u32,
    pub desc: String,
    pub origin: String,
}

fn read_dev_error(r: &mut CdrReader<'_>) -> Result<DevError, WireError> {
    // string reason | u32 severity | string desc | string origin
    Ok(DevError { reason: text(r)?, severity: r.u32()?, desc: text(r)?, origin: text(r)? })
}

/// `DevErrorList`: u32 count | count × DevError.
fn read_dev_errors(r: &mut CdrReader<'_>) -> Result<Vec<DevError>, WireError> {
    let mut out = Vec::new();
    read_dev_errors_into(r, &mut out)?;
    Ok(out)
}

fn read_dev_errors_into(r: &mut CdrReader<'_>, out: &mut Vec<DevError>) -> Result<(), WireError> {
    let count = r.seq_len(16)?;
    for _ in 0..count {
        out.push(read_dev_error(r)?);
    }
    Ok(())
}

/// The body of a `USER_EXCEPTION` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserException {
    /// `IDL:Tango/DevFailed:1.0`, `IDL:Tango/MultiDevFailed:1.0`, …
    pub repository_id: String,
    /// The `DevFailed` errors; for `MultiDevFailed` the errors of every failed attribute.
    pub errors: Vec<DevError>,
    /// `MultiDevFailed`: the attributes that failed.
    pub failed_names: Vec<String>,
    /// False when the capture ended inside the errors (those read so far are kept).
    pub complete: bool,
}

/// Decodes a `USER_EXCEPTION` reply body. Only a missing repository id is an error; errors
/// cut by the end of the capture are returned as far as they were read.
pub fn parse_user_exception(mut body: CdrReader<'_>) -> Result<UserException, WireError> {
    // string repository id | exception members
    let mut ex = UserException {
        repository_id: text(&mut body)?,
        errors: Vec::new(),
        failed_names: Vec::new(),
        complete: true,
    };
    let res = match ex.repository_id.as_str() {
        // DevFailed: DevErrorList
        "IDL:Tango/DevFailed:1.0" => read_dev_errors_into(&mut body, &mut ex.errors),
        // MultiDevFailed: sequence<NamedDevError {string name | long index | DevErrorList}>
        "IDL:Tango/MultiDevFailed:1.0" => (|| {
            let count = body.seq_len(12)?;
            for _ in 0..count {
                ex.failed_names.push(text(&mut body)?);
                body.i32()?;
                read_dev_errors_into(&mut body, &mut ex.errors)?;
            }
            Ok(())
        })(),
        _ => Ok(()),
    };
    match res {
        Ok(()) => {}
        Err(WireError::Incomplete) => ex.complete = false,
        Err(e) => return Err(e),
    }
    Ok(ex)
}

/// `DevInfo`, `DevInfo_3` or `DevInfo_6`: what `info*` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevInfo {
    pub dev_class: String,
    pub server_id: String,
    pub server_host: String,
    pub server_version: i32,
    pub doc_url: String,
    /// `info_3`, `info_6`; empty for `info`.
    pub dev_type: String,
    /// `info_6`: library versions (`cppTango`, `omniORB`, `idl`, …).
    pub version_info: Vec<(String, String)>,
}

/// Decodes the reply of `info`, `info_3` or `info_6`.
pub fn parse_info_reply(operation: &str, mut body: CdrReader<'_>) -> Result<DevInfo, WireError> {
    let level = match operation {
        "info" => 1,
        "info_3" => 3,
        "info_6" => 6,
        _ => return Err(WireError::Malformed("not an info operation")),
    };
    // string dev_class | server_id | server_host | long server_version | string doc_url
    // [| string dev_type] [| sequence<{string key | string value}> version_info]
    let r = &mut body;
    let mut info = DevInfo {
        dev_class: text(r)?,
        server_id: text(r)?,
        server_host: text(r)?,
        server_version: r.i32()?,
        doc_url: text(r)?,
        dev_type: String::new(),
        version_info: Vec::new(),
    };
    if level >= 3 {
        info.dev_type = text(r)?;
    }
    if level >= 6 {
        let count = r.seq_len(8)?;
        info.version_info.reserve(count);
        for _ in 0..count {
            info.version_info.push((text(r)?, text(r)?));
        }
    }
    Ok(info)
}

/// Decodes the result of `command_inout*`: an `any`.
pub fn parse_command_reply(mut body: CdrReader<'_>) -> Result<ArgValue, WireError> {
    parse_any(&mut body)
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

    /// The `command_inout_4("Echo", "traced")` arguments from a PyTango 10.3.1 client with
    /// telemetry on: the W3C trace context rides in a CPP_6 `ClntIdent`.
    const ECHO_TRACED_ARGS: [u8; 113] = [
        0x05, 0x00, 0x00, 0x00, b'E', b'c', b'h', b'o', 0x00, // command "Echo"
        0x00, 0x00, 0x00, // padding
        0x12, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // any: tk_string, unbounded
        0x07, 0x00, 0x00, 0x00, b't', b'r', b'a', b'c', b'e', b'd', 0x00, // "traced"
        0x00, // padding
        0x02, 0x00, 0x00, 0x00, // DevSource CACHE_DEV
        0x02, 0x00, 0x00, 0x00, // ClntIdent: CPP_6
        0xbd, 0x18, 0x00, 0x00, // pid 6333
        0x00, 0x00, 0x00, 0x00, // TraceContext: W3C_TC_V0
        0x38, 0x00, 0x00, 0x00, b'0', b'0', b'-', b'4', b'8', b'e', b'5', b'b', b'8', b'9', b'5', b'0', b'1',
        b'0', b'7', b'3', b'a', b'4', b'b', b'f', b'5', b'0', b'f', b'1', b'd', b'0', b'8', b'd', b'8', b'8',
        b'd', b'5', b'7', b'0', b'9', b'-', b'9', b'd', b'3', b'6', b'5', b'1', b'1', b'8', b'a', b'b', b'4',
        b'3', b'6', b'e', b'1', b'8', b'-', b'0', b'3', 0x00, // trace_parent
        0x01, 0x00, 0x00, 0x00, 0x00, // trace_state ""
    ];

    #[test]
    fn command_with_trace_context() {
        // The arguments start at message offset 0x40 in the capture.
        let req = parse_request("command_inout_4", CdrReader::new(&ECHO_TRACED_ARGS, true, 0x40));
        assert!(req.args_complete);
        assert_eq!(
            req.call,
            TangoCall::CommandInout {
                command: "Echo".into(),
                argin: Some(ArgValue::String("traced".into())),
            }
        );
        let id = req.client_ident.expect("ClntIdent");
        assert_eq!(id.lang, LockerLanguage::Cpp6);
        assert_eq!(id.pid, Some(6333));
        assert_eq!(
            id.trace_parent.as_deref(),
            Some("00-48e5b89501073a4bf50f1d08d88d5709-9d365118ab436e18-03")
        );
        assert_eq!(id.trace_state, None);
    }

    #[test]
    fn truncated_command_keeps_name() {
        let req = parse_request("command_inout_4", CdrReader::new(&ECHO_TRACED_ARGS[..40], true, 0x40));
        assert!(!req.args_complete);
        assert!(matches!(req.call, TangoCall::CommandInout { ref command, .. } if command == "Echo"));
        assert_eq!(req.client_ident, None);
    }

    #[test]
    fn latin1_text() {
        let data = [4, 0, 0, 0, b'm', 0xb5, b'A', 0];
        let mut r = CdrReader::new(&data, true, 0);
        assert_eq!(text(&mut r).as_deref(), Ok("mµA"));
    }
}
