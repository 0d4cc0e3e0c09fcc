//! RFC 3284 §2 integers: base 128, most significant digit first, high bit set on all but the last.

use crate::Error;

/// Appends `value` in the RFC's variable-length form.
pub(crate) fn write(out: &mut Vec<u8>, value: u64) {
    let mut digits = [0u8; 10];
    let mut n = 0;
    let mut rest = value;
    loop {
        digits[n] = (rest & 0x7F) as u8;
        n += 1;
        rest >>= 7;
        if rest == 0 {
            break;
        }
    }
    for i in (0..n).rev() {
        let continuation = if i == 0 { 0 } else { 0x80 };
        out.push(digits[i] | continuation);
    }
}

/// Bytes `write` takes for `value`.
pub(crate) fn len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// A read position in one section of a delta.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    pub(crate) fn byte(&mut self) -> Result<u8, Error> {
        let byte = *self.bytes.get(self.pos).ok_or(Error::Truncated)?;
        self.pos += 1;
        Ok(byte)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.pos.checked_add(n).ok_or(Error::Truncated)?;
        let bytes = self.bytes.get(self.pos..end).ok_or(Error::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    /// An integer no larger than `u32::MAX`: every length and address in a delta is one, and
    /// open-vcdiff and ably's decoder refuse anything bigger.
    pub(crate) fn integer(&mut self) -> Result<u32, Error> {
        let mut value: u64 = 0;
        loop {
            let byte = self.byte()?;
            value = (value << 7) | u64::from(byte & 0x7F);
            if value > u64::from(u32::MAX) {
                return Err(Error::IntegerOverflow);
            }
            if byte & 0x80 == 0 {
                return Ok(value as u32);
            }
        }
    }

    pub(crate) fn size(&mut self) -> Result<usize, Error> {
        usize::try_from(self.integer()?).map_err(|_| Error::IntegerOverflow)
    }
}
