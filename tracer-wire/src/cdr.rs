//! A panic-free CORBA CDR reader.
//!
//! CDR aligns every primitive on its own size, counted from an *origin*: the start of the
//! GIOP message for message bodies, the first octet of an encapsulation inside one. The
//! reader therefore carries its byte order and its offset from that origin explicitly.
//!
//! Like `object`'s `Bytes`, a [`CdrReader`] never indexes: every read checks the bytes
//! left, and a failed read empties the reader so a caller cannot go on reading garbage.
//! Running out of bytes is [`WireError::Incomplete`] while the data may be a truncated
//! capture, and [`WireError::Malformed`] once the reader knows it holds every byte
//! (see [`CdrReader::mark_complete`]).

use crate::WireError;

/// Cursor over CDR-encoded bytes.
#[derive(Debug, Clone)]
pub struct CdrReader<'a> {
    /// The whole backing slice; reads stay inside `start..end`.
    buf: &'a [u8],
    start: usize,
    pos: usize,
    end: usize,
    /// Alignment offset of `buf[i]` is `i.wrapping_add(shift)`; wrapping keeps it exact
    /// modulo every power of two, which is all alignment needs.
    shift: usize,
    little_endian: bool,
    /// True while bytes past `end` may exist on the wire but were not captured.
    truncated: bool,
}

/// Reads a fixed-size primitive aligned on its size, in the reader's byte order.
macro_rules! primitive {
    ($(#[$doc:meta] $name:ident -> $t:ty;)*) => {$(
        #[$doc]
        #[inline]
        pub fn $name(&mut self) -> Result<$t, WireError> {
            const N: usize = std::mem::size_of::<$t>();
            self.align(N)?;
            let raw = self.array::<N>()?;
            Ok(if self.little_endian { <$t>::from_le_bytes(raw) } else { <$t>::from_be_bytes(raw) })
        }
    )*};
}

impl<'a> CdrReader<'a> {
    /// A reader over `data`; `origin_offset` is where `data[0]` sits relative to the
    /// alignment origin (12 for the bytes right after a GIOP header).
    ///
    /// The reader assumes `data` may be a truncated capture: running out of bytes is
    /// [`WireError::Incomplete`].
    pub fn new(data: &'a [u8], little_endian: bool, origin_offset: usize) -> Self {
        CdrReader {
            buf: data,
            start: 0,
            pos: 0,
            end: data.len(),
            shift: origin_offset,
            little_endian,
            truncated: true,
        }
    }

    /// Declares that the reader holds every byte of its value, so that running out of
    /// bytes means a length on the wire was wrong ([`WireError::Malformed`]).
    pub fn mark_complete(mut self) -> Self {
        self.truncated = false;
        self
    }

    /// Whether running out of bytes is reported as [`WireError::Incomplete`].
    pub fn may_be_truncated(&self) -> bool {
        self.truncated
    }

    /// Bytes consumed since this reader was created.
    pub fn position(&self) -> usize {
        self.pos.saturating_sub(self.start)
    }

    /// Offset of the next byte from the alignment origin.
    #[inline]
    pub fn offset(&self) -> usize {
        self.pos.wrapping_add(self.shift)
    }

    /// Bytes left to read.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.end.saturating_sub(self.pos)
    }

    /// True when no bytes are left.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The byte order of the data.
    pub fn little_endian(&self) -> bool {
        self.little_endian
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..self.end).unwrap_or_default()
    }

    /// The same reader, its position counted from the next byte (alignment unchanged).
    pub(crate) fn rebased(mut self) -> Self {
        self.start = self.pos;
        self
    }

    /// Empties the reader and returns the error for "not enough bytes".
    fn short(&mut self) -> WireError {
        self.pos = self.end;
        if self.truncated {
            WireError::Incomplete
        } else {
            WireError::Malformed("CDR value longer than its data")
        }
    }

    /// Empties the reader and returns `err`.
    pub(crate) fn fail(&mut self, err: WireError) -> WireError {
        self.pos = self.end;
        err
    }

    /// Padding needed to reach a multiple of `n` (a power of two) from the origin.
    #[inline]
    fn padding(&self, n: usize) -> usize {
        if n.is_power_of_two() {
            // A mask, not a division: this runs for every primitive read.
            self.offset().wrapping_neg() & (n - 1)
        } else {
            let n = n.max(1);
            (n - self.offset() % n) % n
        }
    }

    /// Skips padding up to the next multiple of `n` (1, 2, 4 or 8) from the origin.
    #[inline]
    pub fn align(&mut self, n: usize) -> Result<(), WireError> {
        let pad = self.padding(n);
        self.skip(pad)
    }

    /// Skips `n` bytes.
    #[inline]
    pub fn skip(&mut self, n: usize) -> Result<(), WireError> {
        if n > self.remaining() {
            return Err(self.short());
        }
        self.pos += n;
        Ok(())
    }

    /// Skips `count` elements of `size` bytes, aligned on `size` (a fixed-size sequence body).
    pub fn skip_aligned(&mut self, size: usize, count: usize) -> Result<(), WireError> {
        self.align(size)?;
        match size.checked_mul(count) {
            Some(n) => self.skip(n),
            None => Err(self.short()),
        }
    }

    /// Takes the next `n` bytes.
    #[inline]
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.remaining() {
            return Err(self.short());
        }
        let out = self.buf.get(self.pos..self.pos + n).unwrap_or_default();
        self.pos += n;
        Ok(out)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let bytes = self.bytes(N)?;
        bytes.try_into().map_err(|_| WireError::Malformed("internal: slice length"))
    }

    /// `octet`.
    #[inline]
    pub fn u8(&mut self) -> Result<u8, WireError> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }

    /// `boolean`: one octet, 0 or 1.
    pub fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.fail(WireError::Malformed("boolean is neither 0 nor 1"))),
        }
    }

    primitive! {
        /// `unsigned short`.
        u16 -> u16;
        /// `short`.
        i16 -> i16;
        /// `unsigned long`.
        u32 -> u32;
        /// `long`.
        i32 -> i32;
        /// `unsigned long long`.
        u64 -> u64;
        /// `long long`.
        i64 -> i64;
        /// `float`.
        f32 -> f32;
        /// `double`.
        f64 -> f64;
    }

    /// A sequence length whose elements take at least `min_elem_size` bytes each, checked
    /// against the bytes present so a caller may allocate `count` elements.
    ///
    /// With `min_elem_size == 0` nothing bounds the count, so it must stay small.
    #[inline]
    pub fn seq_len(&mut self, min_elem_size: usize) -> Result<usize, WireError> {
        let count = self.u32()? as usize;
        let need = if min_elem_size == 0 {
            if count > 4096 {
                return Err(self.fail(WireError::Malformed("sequence of empty elements too long")));
            }
            0
        } else {
            count.saturating_mul(min_elem_size)
        };
        if need > self.remaining() {
            return Err(self.short());
        }
        Ok(count)
    }

    /// A `string` as raw bytes without its NUL: u32 length including the NUL, the bytes,
    /// the NUL. A zero length (sent by some ORBs for "") reads as empty.
    #[inline]
    pub fn string_bytes(&mut self) -> Result<&'a [u8], WireError> {
        // u32 length (including NUL) | bytes | NUL
        let len = self.u32()? as usize;
        if len == 0 {
            return Ok(&[]);
        }
        let raw = self.bytes(len)?;
        match raw.split_last() {
            Some((0, text)) => Ok(text),
            _ => Err(self.fail(WireError::Malformed("string not NUL-terminated"))),
        }
    }

    /// A `string`; text that is not UTF-8 is [`WireError::Malformed`].
    #[inline]
    pub fn string(&mut self) -> Result<&'a str, WireError> {
        let raw = self.string_bytes()?;
        std::str::from_utf8(raw).map_err(|_| self.fail(WireError::Malformed("string is not UTF-8")))
    }

    /// `sequence<octet>`.
    #[inline]
    pub fn octets(&mut self) -> Result<&'a [u8], WireError> {
        // u32 count | count octets
        let len = self.u32()? as usize;
        self.bytes(len)
    }

    /// `sequence<string>`.
    pub fn string_seq(&mut self) -> Result<Vec<&'a str>, WireError> {
        // u32 count | count × string (each at least a 4-byte length)
        let count = self.seq_len(4)?;
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(self.string()?);
        }
        Ok(out)
    }

    /// An encapsulation: a `sequence<octet>` whose first octet is its own byte order and
    /// whose alignment restarts at that octet. The returned reader is positioned after
    /// the byte-order octet.
    ///
    /// When the capture ends inside the encapsulation, the sub-reader gets the bytes that
    /// are present and reports [`WireError::Incomplete`] when they run out.
    pub fn encapsulation(&mut self) -> Result<CdrReader<'a>, WireError> {
        // u32 length | byte-order octet | length-1 octets of CDR
        let len = self.u32()? as usize;
        if len == 0 {
            return Err(self.fail(WireError::Malformed("empty encapsulation")));
        }
        let sub_start = self.pos;
        let (sub_end, truncated) = if len <= self.remaining() {
            (sub_start + len, false)
        } else if self.truncated {
            (self.end, true)
        } else {
            return Err(self.short());
        };
        self.pos = sub_end;
        let mut sub = CdrReader {
            buf: self.buf,
            start: sub_start,
            pos: sub_start,
            end: sub_end,
            shift: 0usize.wrapping_sub(sub_start),
            little_endian: false,
            truncated,
        };
        sub.little_endian = match sub.u8()? {
            0 => false,
            1 => true,
            _ => return Err(sub.fail(WireError::Malformed("encapsulation byte order not 0 or 1"))),
        };
        if truncated {
            // The parent cannot go on past a cut encapsulation.
            self.truncated = true;
        }
        Ok(sub)
    }

    /// A reader at `delta` bytes from the byte at position `from` (a position of this
    /// reader, as returned by [`position`](Self::position)), for TypeCode indirections.
    /// The target must lie before `from`, inside this reader.
    pub(crate) fn indirect(&self, from: usize, delta: i32) -> Result<CdrReader<'a>, WireError> {
        let target = (self.start + from) as i64 + i64::from(delta);
        if target < self.start as i64 || target >= (self.start + from) as i64 {
            return Err(WireError::Malformed("TypeCode indirection out of range"));
        }
        let mut out = self.clone();
        out.pos = target as usize;
        Ok(out)
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
    fn aligns_relative_to_origin() {
        // A GIOP 1.0 request body starts at offset 12; its first u32 (request id 2 after
        // an empty service-context list) is aligned already.
        let data = [
            0x00, 0x00, 0x00, 0x00, // service contexts: 0
            0x02, 0x00, 0x00, 0x00, // request id 2
            0x01, // response expected
            0x30, 0x30, 0x30, // padding: omniORB leaves garbage ('0') here
            0x0b, 0x00, 0x00, 0x00, // key length 11
            b't', b'e', b's', b't', b'/', b'd', b'e', b'm', b'o', b'/', b'1',
        ];
        let mut r = CdrReader::new(&data, true, 12);
        assert_eq!(r.u32(), Ok(0));
        assert_eq!(r.u32(), Ok(2));
        assert_eq!(r.bool(), Ok(true));
        assert_eq!(r.octets(), Ok(&b"test/demo/1"[..]));
        assert_eq!(r.position(), data.len());
        assert_eq!(r.u8(), Err(WireError::Incomplete));
    }

    #[test]
    fn big_endian_and_origin_shift() {
        // origin_offset 4: the u64 at data[4] is 8-aligned from the origin.
        let data = [0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 1, 0];
        let mut r = CdrReader::new(&data, false, 4);
        assert_eq!(r.u32(), Ok(7));
        assert_eq!(r.u64(), Ok(256));
    }

    #[test]
    fn complete_reader_reports_malformed() {
        let data = [9, 0, 0, 0, b'a'];
        let mut r = CdrReader::new(&data, true, 0).mark_complete();
        assert!(matches!(r.string(), Err(WireError::Malformed(_))));
        assert!(r.is_empty());
    }

    #[test]
    fn sequence_counts_bounded_by_bytes() {
        let data = [0xff, 0xff, 0xff, 0x7f, 1, 0, 0, 0];
        let mut r = CdrReader::new(&data, true, 0);
        assert_eq!(r.string_seq(), Err(WireError::Incomplete));
    }

    #[test]
    fn encapsulation_has_own_order_and_alignment() {
        // A big-endian parent holding the little-endian encapsulation of a
        // DevVarStringArray TypeCode: length 16, byte order 1 (LE), 3 pad bytes,
        // tk_string (0x12), bound 0, sequence bound 0.
        let data = [0, 0, 0, 0x10, 0x01, 0, 0, 0, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xaa];
        let mut r = CdrReader::new(&data, false, 0);
        let mut e = r.encapsulation().expect("encapsulation");
        assert!(e.little_endian());
        assert_eq!(e.u32(), Ok(0x12));
        assert_eq!(e.u32(), Ok(0));
        assert_eq!(e.u32(), Ok(0));
        assert!(e.is_empty());
        assert_eq!(r.u8(), Ok(0xaa));
    }
}
