//! Stringified CORBA object references (`IOR:<hex>`), as the Tango database hands them out.
//!
//! Only what the tracer needs: the object key a server's requests will carry, and where the
//! server listens (IIOP host/port, omniORB's Unix socket path).

use crate::{WireError, cdr::CdrReader};

/// IIOP profile tag.
const TAG_INTERNET_IOP: u32 = 0;
/// omniORB's component naming the server's Unix socket.
const TAG_OMNIORB_UNIX_TRANS: u32 = 0x4154_5402;

/// The useful parts of an IOR.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ior {
    pub type_id: String,
    pub host: String,
    pub port: u16,
    pub object_key: Vec<u8>,
    /// `/tmp/omni-<user>/<pid>-<ts>` when the server also listens on a Unix socket.
    pub unix_path: Option<String>,
}

/// Decodes `IOR:0100…` (the first IIOP profile).
pub fn parse_ior(text: &str) -> Result<Ior, WireError> {
    let hex = text.trim().strip_prefix("IOR:").ok_or(WireError::NotThisProtocol)?;
    let bytes = decode_hex(hex).ok_or(WireError::Malformed("IOR is not hex"))?;
    // byte-order octet | type_id string | sequence<TaggedProfile{u32 tag; octets data}>
    let little_endian = match bytes.first() {
        Some(0) => false,
        Some(1) => true,
        _ => return Err(WireError::Malformed("IOR byte order")),
    };
    let mut r = CdrReader::new(bytes.get(1..).unwrap_or_default(), little_endian, 1).mark_complete();
    let type_id = r.string()?.to_string();
    let profiles = r.seq_len(8)?;
    for _ in 0..profiles {
        let tag = r.u32()?;
        let data = r.octets()?;
        if tag == TAG_INTERNET_IOP {
            let mut ior = parse_iiop_profile(data)?;
            ior.type_id = type_id;
            return Ok(ior);
        }
    }
    Err(WireError::Malformed("IOR has no IIOP profile"))
}

// encapsulation: byte order | version{u8,u8} | host string | port u16 | key octets | [components]
fn parse_iiop_profile(data: &[u8]) -> Result<Ior, WireError> {
    let little_endian = match data.first() {
        Some(0) => false,
        Some(1) => true,
        _ => return Err(WireError::Malformed("IIOP profile byte order")),
    };
    let mut r = CdrReader::new(data.get(1..).unwrap_or_default(), little_endian, 1).mark_complete();
    let _major = r.u8()?;
    let minor = r.u8()?;
    let host = r.string()?.to_string();
    let port = r.u16()?;
    let object_key = r.octets()?.to_vec();
    let mut unix_path = None;
    if minor >= 1 && !r.is_empty() {
        let components = r.seq_len(8)?;
        for _ in 0..components {
            let tag = r.u32()?;
            let body = r.octets()?;
            if tag == TAG_OMNIORB_UNIX_TRANS {
                unix_path = parse_unix_component(body).ok();
            }
        }
    }
    Ok(Ior { type_id: String::new(), host, port, object_key, unix_path })
}

// encapsulation: byte order | host string | path string
fn parse_unix_component(body: &[u8]) -> Result<String, WireError> {
    let little_endian = body.first() == Some(&1);
    let mut r = CdrReader::new(body.get(1..).unwrap_or_default(), little_endian, 1).mark_complete();
    let _host = r.string()?;
    Ok(r.string()?.to_string())
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let digits = hex.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(text, 16).ok()
        })
        .collect()
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
    use crate::{giop, tango};

    #[test]
    fn ior_from_a_real_dbimportdevice_reply() {
        let bytes = include_bytes!("../tests/fixtures/giop/dbclient-rep-command_inout_4-dbimportdevice.bin");
        let Ok((_, giop::Message::Reply(reply))) = giop::parse_message(bytes) else {
            panic!("fixture is a reply");
        };
        let Ok(tango::ArgValue::LongStringArray { strings, .. }) = tango::parse_command_reply(reply.body)
        else {
            panic!("DbImportDevice answers a DevVarLongStringArray");
        };
        let ior = parse_ior(&strings[1]).expect("valid IOR");
        assert_eq!(ior.type_id, "IDL:Tango/Device_6:1.0");
        assert_eq!(ior.host, "127.0.0.1");
        assert_eq!(ior.object_key.len(), 14);
        assert_eq!(&ior.object_key[..4], &[0xfe, 0x52, 0x53, 0x01]);
        assert!(ior.unix_path.as_deref().is_some_and(|p| p.starts_with("/tmp/omni-")), "{ior:?}");
    }

    #[test]
    fn rejects_what_is_not_an_ior() {
        assert_eq!(parse_ior("corbaloc:iiop:h:1/x"), Err(WireError::NotThisProtocol));
        assert!(parse_ior("IOR:0").is_err());
        assert!(parse_ior("IOR:01000000ffffffff").is_err());
        assert!(parse_ior("IOR:zz").is_err());
    }
}
