//! CORBA `any`: a TypeCode, then a value of that type.
//!
//! Tango commands carry their argument and result as an `any`. The TypeCode is parsed into
//! a small tree (bounded depth, sizes checked against the bytes present), then the value
//! is read into an [`ArgValue`] when it has a Tango shape, or skipped otherwise.

use super::text;
use crate::{WireError, cdr::CdrReader};

/// How deep TypeCodes and values may nest; Tango's go three levels deep.
const MAX_DEPTH: u32 = 16;
/// How many TypeCode nodes one `any` may expand to. Indirections copy earlier TypeCodes,
/// so without a budget a few bytes could describe an exponentially large tree.
const MAX_NODES: u32 = 2048;

/// A command argument or result, decoded from an `any`.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgValue {
    /// `tk_null`/`tk_void`: `DevVoid`.
    Void,
    Bool(bool),
    /// `short`, `long`, `long long`.
    Long(i64),
    /// `unsigned short/long/long long`, `octet`, `char`.
    ULong(u64),
    /// `float`, `double`.
    Double(f64),
    String(String),
    /// An enum such as `DevState`, with the member name when the TypeCode has it.
    Enum {
        type_id: String,
        value: u32,
        label: Option<String>,
    },
    StringArray(Vec<String>),
    LongArray(Vec<i64>),
    ULongArray(Vec<u64>),
    DoubleArray(Vec<f64>),
    BoolArray(Vec<bool>),
    /// `DevVarCharArray`.
    Bytes(Vec<u8>),
    LongStringArray {
        longs: Vec<i64>,
        strings: Vec<String>,
    },
    DoubleStringArray {
        doubles: Vec<f64>,
        strings: Vec<String>,
    },
    /// Any other type (e.g. `DevEncoded`); the value was skipped.
    Other {
        type_id: String,
    },
}

/// A parsed TypeCode.
#[derive(Debug, Clone, PartialEq)]
enum TypeCode<'a> {
    Void,
    Short,
    Long,
    LongLong,
    UShort,
    ULong,
    ULongLong,
    Float,
    Double,
    LongDouble,
    Boolean,
    Char,
    Octet,
    Any,
    String,
    Enum {
        id: &'a str,
        members: Vec<&'a str>,
    },
    Sequence(Box<TypeCode<'a>>),
    Array(Box<TypeCode<'a>>, u32),
    Alias(&'a str, Box<TypeCode<'a>>),
    Struct {
        id: &'a str,
        members: Vec<TypeCode<'a>>,
    },
    /// A kind whose values this module cannot skip (union, objref, wstring, …).
    Unsupported,
}

impl<'a> TypeCode<'a> {
    /// The type under any aliases.
    fn resolved(&self) -> &TypeCode<'a> {
        let mut tc = self;
        while let TypeCode::Alias(_, inner) = tc {
            tc = inner;
        }
        tc
    }

    /// Fewest bytes a value of this type takes, to bound sequence counts.
    fn min_size(&self) -> usize {
        match self {
            TypeCode::Void => 0,
            TypeCode::Boolean | TypeCode::Char | TypeCode::Octet => 1,
            TypeCode::Short | TypeCode::UShort => 2,
            TypeCode::Long
            | TypeCode::ULong
            | TypeCode::Float
            | TypeCode::String
            | TypeCode::Enum { .. }
            | TypeCode::Sequence(_)
            | TypeCode::Any => 4,
            TypeCode::LongLong | TypeCode::ULongLong | TypeCode::Double => 8,
            TypeCode::LongDouble => 16,
            TypeCode::Array(e, n) => e.min_size().saturating_mul(*n as usize),
            TypeCode::Alias(_, e) => e.min_size(),
            TypeCode::Struct { members, .. } => {
                members.iter().fold(0usize, |acc, m| acc.saturating_add(m.min_size()))
            }
            TypeCode::Unsupported => 0,
        }
    }

    /// The repository id of a named type, or the kind's IDL name.
    fn type_id(&self) -> String {
        match self {
            TypeCode::Enum { id, .. } | TypeCode::Alias(id, _) | TypeCode::Struct { id, .. } => {
                (*id).to_owned()
            }
            TypeCode::Sequence(e) => format!("sequence<{}>", e.type_id()),
            other => format!("{other:?}").to_lowercase(),
        }
    }
}

/// Reads a TypeCode; `budget` counts the nodes still allowed.
fn typecode<'a>(r: &mut CdrReader<'a>, depth: u32, budget: &mut u32) -> Result<TypeCode<'a>, WireError> {
    if depth > MAX_DEPTH {
        return Err(r.fail(WireError::Malformed("TypeCode nested too deep")));
    }
    *budget = match budget.checked_sub(1) {
        Some(b) => b,
        None => return Err(r.fail(WireError::Malformed("TypeCode too large"))),
    };
    // u32 kind | parameters (simple, or an encapsulation for complex kinds)
    r.align(4)?;
    let kind = r.u32()?;
    Ok(match kind {
        0 | 1 => TypeCode::Void,
        2 => TypeCode::Short,
        3 => TypeCode::Long,
        4 => TypeCode::UShort,
        5 => TypeCode::ULong,
        6 => TypeCode::Float,
        7 => TypeCode::Double,
        8 => TypeCode::Boolean,
        9 => TypeCode::Char,
        10 => TypeCode::Octet,
        11 => TypeCode::Any,
        23 => TypeCode::LongLong,
        24 => TypeCode::ULongLong,
        25 => TypeCode::LongDouble,
        // tk_TypeCode, tk_Principal, tk_wchar: no parameters, values not read here.
        12 | 13 | 26 => TypeCode::Unsupported,
        // tk_string: u32 bound
        18 => {
            r.u32()?;
            TypeCode::String
        }
        // tk_wstring: u32 bound
        27 => {
            r.u32()?;
            TypeCode::Unsupported
        }
        // tk_fixed: u16 digits | i16 scale
        28 => {
            r.u16()?;
            r.i16()?;
            TypeCode::Unsupported
        }
        // tk_struct, tk_except: {string id | string name | u32 count | count × (string name | TypeCode)}
        15 | 22 => {
            let mut e = r.encapsulation()?;
            let id = e.string()?;
            e.string_bytes()?;
            let count = e.seq_len(8)?;
            let mut members = Vec::with_capacity(count);
            for _ in 0..count {
                e.string_bytes()?;
                members.push(typecode(&mut e, depth + 1, budget)?);
            }
            TypeCode::Struct { id, members }
        }
        // tk_enum: {string id | string name | u32 count | count × string member}
        17 => {
            let mut e = r.encapsulation()?;
            let id = e.string()?;
            e.string_bytes()?;
            let count = e.seq_len(4)?;
            let mut members = Vec::with_capacity(count);
            for _ in 0..count {
                members.push(e.string()?);
            }
            TypeCode::Enum { id, members }
        }
        // tk_sequence: {TypeCode element | u32 bound}
        19 => {
            let mut e = r.encapsulation()?;
            TypeCode::Sequence(Box::new(typecode(&mut e, depth + 1, budget)?))
        }
        // tk_array: {TypeCode element | u32 length}
        20 => {
            let mut e = r.encapsulation()?;
            let elem = typecode(&mut e, depth + 1, budget)?;
            TypeCode::Array(Box::new(elem), e.u32()?)
        }
        // tk_alias: {string id | string name | TypeCode}
        21 => {
            let mut e = r.encapsulation()?;
            let id = e.string()?;
            e.string_bytes()?;
            TypeCode::Alias(id, Box::new(typecode(&mut e, depth + 1, budget)?))
        }
        // tk_objref, tk_union, tk_value, tk_value_box, tk_native, tk_abstract_interface,
        // tk_local_interface: an encapsulation we skip whole.
        14 | 16 | 29..=33 => {
            r.encapsulation()?;
            TypeCode::Unsupported
        }
        // Indirection: i32 offset from the offset itself back to an earlier TypeCode.
        0xffff_ffff => {
            let from = r.position();
            let delta = r.i32()?;
            let mut target = r.indirect(from, delta)?;
            typecode(&mut target, depth + 1, budget)?
        }
        _ => return Err(r.fail(WireError::Malformed("unknown TypeCode kind"))),
    })
}

/// Skips a value of type `tc`.
fn skip_value(tc: &TypeCode<'_>, r: &mut CdrReader<'_>, depth: u32) -> Result<(), WireError> {
    if depth > MAX_DEPTH {
        return Err(r.fail(WireError::Malformed("value nested too deep")));
    }
    match tc {
        TypeCode::Void => {}
        TypeCode::Boolean | TypeCode::Char | TypeCode::Octet => r.skip(1)?,
        TypeCode::Short | TypeCode::UShort => r.skip_aligned(2, 1)?,
        TypeCode::Long | TypeCode::ULong | TypeCode::Float | TypeCode::Enum { .. } => r.skip_aligned(4, 1)?,
        TypeCode::LongLong | TypeCode::ULongLong | TypeCode::Double => r.skip_aligned(8, 1)?,
        TypeCode::LongDouble => r.skip_aligned(8, 2)?,
        TypeCode::String => {
            r.string_bytes()?;
        }
        TypeCode::Any => {
            let mut budget = MAX_NODES;
            let inner = typecode(r, depth + 1, &mut budget)?;
            skip_value(&inner, r, depth + 1)?;
        }
        TypeCode::Sequence(elem) => {
            let count = r.seq_len(elem.min_size())?;
            skip_n(elem, count, r, depth)?;
        }
        TypeCode::Array(elem, n) => {
            if elem.min_size().saturating_mul(*n as usize) > r.remaining() {
                return Err(r.fail(if r.may_be_truncated() {
                    WireError::Incomplete
                } else {
                    WireError::Malformed("array longer than its data")
                }));
            }
            skip_n(elem, *n as usize, r, depth)?;
        }
        TypeCode::Alias(_, inner) => skip_value(inner, r, depth + 1)?,
        TypeCode::Struct { members, .. } => {
            for m in members {
                skip_value(m, r, depth + 1)?;
            }
        }
        TypeCode::Unsupported => {
            return Err(r.fail(WireError::Malformed("any holds a type that cannot be skipped")));
        }
    }
    Ok(())
}

fn skip_n(elem: &TypeCode<'_>, count: usize, r: &mut CdrReader<'_>, depth: u32) -> Result<(), WireError> {
    // Fixed-size primitives: one jump instead of a loop.
    let fixed = match elem.resolved() {
        TypeCode::Boolean | TypeCode::Char | TypeCode::Octet => Some(1),
        TypeCode::Short | TypeCode::UShort => Some(2),
        TypeCode::Long | TypeCode::ULong | TypeCode::Float | TypeCode::Enum { .. } => Some(4),
        TypeCode::LongLong | TypeCode::ULongLong | TypeCode::Double => Some(8),
        _ => None,
    };
    match fixed {
        Some(size) if count > 0 => r.skip_aligned(size, count),
        Some(_) => Ok(()),
        // A type that may take no bytes is empty (void, empty structs) or cannot be skipped:
        // one element tells which, and looping over a huge count would do no more.
        None if elem.min_size() == 0 && count > 0 => skip_value(elem, r, depth + 1),
        None => {
            for _ in 0..count {
                skip_value(elem, r, depth + 1)?;
            }
            Ok(())
        }
    }
}

/// Reads `count` elements with `read`, never reserving more than the bytes allow.
fn read_seq<T>(
    r: &mut CdrReader<'_>,
    min_size: usize,
    mut read: impl FnMut(&mut CdrReader<'_>) -> Result<T, WireError>,
) -> Result<Vec<T>, WireError> {
    let count = r.seq_len(min_size)?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(read(r)?);
    }
    Ok(out)
}

/// Reads a sequence whose element type is `elem` into an [`ArgValue`] array, if it is one.
fn read_array(elem: &TypeCode<'_>, r: &mut CdrReader<'_>) -> Result<Option<ArgValue>, WireError> {
    Ok(Some(match elem.resolved() {
        TypeCode::String => ArgValue::StringArray(read_seq(r, 4, text)?),
        TypeCode::Short => ArgValue::LongArray(read_seq(r, 2, |r| r.i16().map(i64::from))?),
        TypeCode::Long => ArgValue::LongArray(read_seq(r, 4, |r| r.i32().map(i64::from))?),
        TypeCode::LongLong => ArgValue::LongArray(read_seq(r, 8, |r| r.i64())?),
        TypeCode::UShort => ArgValue::ULongArray(read_seq(r, 2, |r| r.u16().map(u64::from))?),
        TypeCode::ULong => ArgValue::ULongArray(read_seq(r, 4, |r| r.u32().map(u64::from))?),
        TypeCode::ULongLong => ArgValue::ULongArray(read_seq(r, 8, |r| r.u64())?),
        TypeCode::Float => ArgValue::DoubleArray(read_seq(r, 4, |r| r.f32().map(f64::from))?),
        TypeCode::Double => ArgValue::DoubleArray(read_seq(r, 8, |r| r.f64())?),
        TypeCode::Boolean => ArgValue::BoolArray(read_seq(r, 1, |r| r.bool())?),
        TypeCode::Octet | TypeCode::Char => ArgValue::Bytes(r.octets()?.to_vec()),
        _ => return Ok(None),
    }))
}

/// Reads a value of type `tc`.
fn read_value(tc: &TypeCode<'_>, r: &mut CdrReader<'_>) -> Result<ArgValue, WireError> {
    Ok(match tc {
        TypeCode::Void => ArgValue::Void,
        TypeCode::Boolean => ArgValue::Bool(r.bool()?),
        TypeCode::Short => ArgValue::Long(r.i16()?.into()),
        TypeCode::Long => ArgValue::Long(r.i32()?.into()),
        TypeCode::LongLong => ArgValue::Long(r.i64()?),
        TypeCode::UShort => ArgValue::ULong(r.u16()?.into()),
        TypeCode::ULong => ArgValue::ULong(r.u32()?.into()),
        TypeCode::ULongLong => ArgValue::ULong(r.u64()?),
        TypeCode::Octet | TypeCode::Char => ArgValue::ULong(r.u8()?.into()),
        TypeCode::Float => ArgValue::Double(r.f32()?.into()),
        TypeCode::Double => ArgValue::Double(r.f64()?),
        TypeCode::String => ArgValue::String(text(r)?),
        TypeCode::Enum { id, members } => {
            let value = r.u32()?;
            ArgValue::Enum {
                type_id: (*id).to_owned(),
                value,
                label: members.get(value as usize).map(|m| (*m).to_owned()),
            }
        }
        TypeCode::Alias(id, inner) => match read_value(inner, r)? {
            ArgValue::Other { .. } => ArgValue::Other { type_id: (*id).to_owned() },
            v => v,
        },
        TypeCode::Sequence(elem) => match read_array(elem, r)? {
            Some(v) => v,
            None => {
                skip_value(tc, r, 0)?;
                ArgValue::Other { type_id: tc.type_id() }
            }
        },
        TypeCode::Struct { id, members } => read_struct(id, members, r)?,
        other => {
            skip_value(other, r, 0)?;
            ArgValue::Other { type_id: other.type_id() }
        }
    })
}

/// `DevVarLongStringArray` and `DevVarDoubleStringArray` by shape; other structs skipped.
fn read_struct(id: &str, members: &[TypeCode<'_>], r: &mut CdrReader<'_>) -> Result<ArgValue, WireError> {
    if let [first, second] = members
        && let (Some(numbers), Some(TypeCode::String)) = (first.seq_elem(), second.seq_elem())
    {
        let strings = |r: &mut CdrReader<'_>| read_seq(r, 4, text);
        match read_array(numbers, r)? {
            Some(ArgValue::LongArray(longs)) => {
                return Ok(ArgValue::LongStringArray { longs, strings: strings(r)? });
            }
            Some(ArgValue::DoubleArray(doubles)) => {
                return Ok(ArgValue::DoubleStringArray { doubles, strings: strings(r)? });
            }
            Some(_) => {
                // Another array type: its bytes are read; skip the strings.
                skip_value(second, r, 1)?;
                return Ok(ArgValue::Other { type_id: id.to_owned() });
            }
            None => {}
        }
    }
    for m in members {
        skip_value(m, r, 1)?;
    }
    Ok(ArgValue::Other { type_id: id.to_owned() })
}

impl<'a> TypeCode<'a> {
    /// The resolved element type of a (possibly aliased) sequence.
    fn seq_elem(&self) -> Option<&TypeCode<'a>> {
        match self.resolved() {
            TypeCode::Sequence(e) => Some(e.resolved()),
            _ => None,
        }
    }
}

/// Reads an `any`: a TypeCode, then the value.
pub fn parse_any(r: &mut CdrReader<'_>) -> Result<ArgValue, WireError> {
    let mut budget = MAX_NODES;
    let tc = typecode(r, 0, &mut budget)?;
    read_value(&tc, r)
}

/// Skips an `any` without building its value.
pub(crate) fn skip_any(r: &mut CdrReader<'_>) -> Result<(), WireError> {
    let mut budget = MAX_NODES;
    let tc = typecode(r, 0, &mut budget)?;
    skip_value(&tc, r, 0)
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
    fn string_any() {
        // From `command_inout_4("Echo", "hi")`: tk_string, bound 0, "hi".
        let data = [
            0x12, 0, 0, 0, // tk_string
            0, 0, 0, 0, // bound: unbounded
            3, 0, 0, 0, b'h', b'i', 0, // "hi"
        ];
        let mut r = CdrReader::new(&data, true, 0);
        assert_eq!(parse_any(&mut r), Ok(ArgValue::String("hi".into())));
    }

    #[test]
    fn string_array_alias() {
        // QueryDevice's reply any: tk_alias IDL:Tango/DevVarStringArray:1.0 of
        // tk_sequence<tk_string>, with the omniORB garbage padding left in.
        let data = [
            0x15, 0, 0, 0, // tk_alias
            0x58, 0, 0, 0, // encapsulation: 88 bytes
            0x01, 0xc8, 0xff, 0xf2, // little-endian, 3 padding bytes
            0x20, 0, 0, 0, b'I', b'D', b'L', b':', b'T', b'a', b'n', b'g', b'o', b'/', b'D', b'e', b'v',
            b'V', b'a', b'r', b'S', b't', b'r', b'i', b'n', b'g', b'A', b'r', b'r', b'a', b'y', b':', b'1',
            b'.', b'0', 0, // repository id
            0x12, 0, 0, 0, b'D', b'e', b'v', b'V', b'a', b'r', b'S', b't', b'r', b'i', b'n', b'g', b'A',
            b'r', b'r', b'a', b'y', 0, // name
            0x70, 0x75, // padding
            0x13, 0, 0, 0, // tk_sequence
            0x10, 0, 0, 0, 0x01, 0, 0, 0, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // <string>, 0
            0x01, 0, 0, 0, // one string
            0x03, 0, 0, 0, b'a', b'b', 0,
        ];
        let mut r = CdrReader::new(&data, true, 0);
        assert_eq!(parse_any(&mut r), Ok(ArgValue::StringArray(vec!["ab".into()])));
        assert!(r.is_empty());
    }

    #[test]
    fn indirections_cannot_explode() {
        // Nested structs whose members are the previous level once, then 30 times more by
        // indirection: 31^depth nodes from a few hundred bytes. The node budget stops it.
        fn wrap(inner: &[u8]) -> Vec<u8> {
            let mut enc = vec![0x01u8, 0, 0, 0];
            enc.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // id "", name ""
            enc.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
            enc.extend_from_slice(&31u32.to_le_bytes());
            enc.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // member name ""
            let first = enc.len();
            enc.extend_from_slice(inner);
            for _ in 0..30 {
                enc.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
                enc.extend_from_slice(&0xffff_ffffu32.to_le_bytes());
                let at = enc.len();
                enc.extend_from_slice(&(first as i32 - at as i32).to_le_bytes());
            }
            let mut tc = vec![0x0f, 0, 0, 0];
            tc.extend_from_slice(&(enc.len() as u32).to_le_bytes());
            tc.extend_from_slice(&enc);
            tc
        }
        let mut tc = vec![0x03, 0, 0, 0]; // tk_long
        for _ in 0..4 {
            tc = wrap(&tc);
        }
        assert!(tc.len() < 8192);
        let mut r = CdrReader::new(&tc, true, 0);
        assert_eq!(parse_any(&mut r), Err(WireError::Malformed("TypeCode too large")));
    }

    #[test]
    fn indirection() {
        // A struct of two members where the second repeats the first's TypeCode through
        // an indirection (omniORB does this for a repeated complex TypeCode).
        let mut enc = vec![0x01u8, 0, 0, 0];
        let name = |v: &mut Vec<u8>, s: &str| {
            v.extend_from_slice(&(s.len() as u32 + 1).to_le_bytes());
            v.extend_from_slice(s.as_bytes());
            v.push(0);
            while !v.len().is_multiple_of(4) {
                v.push(0);
            }
        };
        name(&mut enc, "IDL:Pair:1.0");
        name(&mut enc, "Pair");
        enc.extend_from_slice(&2u32.to_le_bytes());
        name(&mut enc, "a");
        let first = enc.len();
        enc.extend_from_slice(&[0x13, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]);
        name(&mut enc, "b");
        enc.extend_from_slice(&0xffff_ffffu32.to_le_bytes());
        let at = enc.len();
        enc.extend_from_slice(&(first as i32 - at as i32).to_le_bytes());
        let mut data = vec![0x0f, 0, 0, 0];
        data.extend_from_slice(&(enc.len() as u32).to_le_bytes());
        data.extend_from_slice(&enc);
        // Value: [7], [8, 9].
        for v in [1u32, 7, 2, 8, 9] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        let mut r = CdrReader::new(&data, true, 0);
        assert_eq!(parse_any(&mut r), Ok(ArgValue::Other { type_id: "IDL:Pair:1.0".into() }));
        assert!(r.is_empty());
    }
}
