//! The decoder: header, then windows until the delta ends.
//!
//! Output is written straight into the target: a window's "U" (RFC 3284 §3, its source segment
//! followed by the window being built) is never materialised, only addressed. Every length is
//! checked against the bytes actually present and against the caller's limit before anything is
//! allocated or copied.

use crate::address_cache::AddressCache;
use crate::code_table::{tables, Kind};
use crate::varint::Cursor;
use crate::{
    Error, MAGIC, VCD_ADLER32, VCD_APPHEADER, VCD_CODETABLE, VCD_DECOMPRESS, VCD_SOURCE,
    VCD_TARGET, VERSION_OPEN_VCDIFF, VERSION_RFC,
};

/// The target limit [`decode`] applies: far above any message the gateway accepts, low enough
/// that a hostile delta cannot claim gigabytes.
pub const DEFAULT_MAX_TARGET_BYTES: usize = 64 * 1024 * 1024;

/// Applies `delta` to `source`, refusing targets over [`DEFAULT_MAX_TARGET_BYTES`].
pub fn decode(source: &[u8], delta: &[u8]) -> Result<Vec<u8>, Error> {
    decode_with_limit(source, delta, DEFAULT_MAX_TARGET_BYTES)
}

/// Applies `delta` to `source`. The whole target, over all windows, is at most
/// `max_target_bytes`; a delta declaring more is refused before its bytes are allocated.
pub fn decode_with_limit(
    source: &[u8],
    delta: &[u8],
    max_target_bytes: usize,
) -> Result<Vec<u8>, Error> {
    let mut input = Cursor::new(delta);
    if input.take(MAGIC.len())? != MAGIC {
        return Err(Error::BadMagic);
    }
    let version = input.byte()?;
    if version != VERSION_RFC && version != VERSION_OPEN_VCDIFF {
        return Err(Error::BadMagic);
    }
    let header_indicator = input.byte()?;
    if header_indicator & VCD_DECOMPRESS != 0 {
        return Err(Error::SecondaryCompression);
    }
    if header_indicator & VCD_CODETABLE != 0 {
        return Err(Error::CustomCodeTable);
    }
    if header_indicator & !VCD_APPHEADER != 0 {
        return Err(Error::UnknownIndicator(header_indicator));
    }
    if header_indicator & VCD_APPHEADER != 0 {
        let length = input.size()?;
        input.take(length)?;
    }

    let mut target = Vec::new();
    let allow_interleaved = version == VERSION_OPEN_VCDIFF;
    while !input.is_empty() {
        decode_window(
            &mut input,
            source,
            &mut target,
            max_target_bytes,
            allow_interleaved,
        )?;
    }
    Ok(target)
}

/// Where a window's COPYs below the segment length read from.
#[derive(Clone, Copy)]
enum Segment<'a> {
    Source(&'a [u8]),
    /// A range of the target decoded by earlier windows.
    Target {
        start: usize,
        len: usize,
    },
}

impl Segment<'_> {
    fn len(&self) -> usize {
        match self {
            Segment::Source(bytes) => bytes.len(),
            Segment::Target { len, .. } => *len,
        }
    }
}

fn decode_window(
    input: &mut Cursor<'_>,
    source: &[u8],
    target: &mut Vec<u8>,
    max_target_bytes: usize,
    allow_interleaved: bool,
) -> Result<(), Error> {
    let indicator = input.byte()?;
    if indicator & !(VCD_SOURCE | VCD_TARGET | VCD_ADLER32) != 0 {
        return Err(Error::UnknownIndicator(indicator));
    }
    let segment = match indicator & (VCD_SOURCE | VCD_TARGET) {
        0 => Segment::Source(&[]),
        VCD_SOURCE => {
            let len = input.size()?;
            let start = input.size()?;
            let end = start.checked_add(len).ok_or(Error::BadSegment)?;
            Segment::Source(source.get(start..end).ok_or(Error::BadSegment)?)
        }
        VCD_TARGET => {
            let len = input.size()?;
            let start = input.size()?;
            match start.checked_add(len) {
                Some(end) if end <= target.len() => Segment::Target { start, len },
                _ => return Err(Error::BadSegment),
            }
        }
        _ => return Err(Error::UnknownIndicator(indicator)),
    };

    let encoding_len = input.size()?;
    let mut encoding = Cursor::new(input.take(encoding_len)?);
    let window_len = encoding.size()?;
    match target.len().checked_add(window_len) {
        Some(total) if total <= max_target_bytes => {}
        _ => {
            return Err(Error::TooLarge {
                limit: max_target_bytes,
            })
        }
    }
    let delta_indicator = encoding.byte()?;
    if delta_indicator & 0x07 != 0 {
        return Err(Error::SecondaryCompression);
    }
    if delta_indicator != 0 {
        return Err(Error::UnknownIndicator(delta_indicator));
    }
    let data_len = encoding.size()?;
    let instructions_len = encoding.size()?;
    let addresses_len = encoding.size()?;
    let checksum = if indicator & VCD_ADLER32 != 0 {
        Some(encoding.integer()?)
    } else {
        None
    };
    let data = encoding.take(data_len)?;
    let instructions = encoding.take(instructions_len)?;
    let addresses = encoding.take(addresses_len)?;
    if !encoding.is_empty() {
        return Err(Error::LengthMismatch);
    }

    // open-vcdiff's interleaved form puts sizes, data and addresses all in the instructions.
    let interleaved = allow_interleaved && data_len == 0 && addresses_len == 0;
    let mut sections = Sections {
        instructions: Cursor::new(instructions),
        data: Cursor::new(data),
        addresses: Cursor::new(addresses),
        interleaved,
    };
    let window_start = target.len();
    target.reserve(window_len);
    run_instructions(&mut sections, segment, target, window_start, window_len)?;

    if target.len() - window_start != window_len
        || !sections.data.is_empty()
        || !sections.addresses.is_empty()
    {
        return Err(Error::LengthMismatch);
    }
    if let Some(expected) = checksum {
        if adler32(&target[window_start..]) != expected {
            return Err(Error::ChecksumMismatch);
        }
    }
    Ok(())
}

struct Sections<'a> {
    instructions: Cursor<'a>,
    data: Cursor<'a>,
    addresses: Cursor<'a>,
    interleaved: bool,
}

impl<'a> Sections<'a> {
    fn data(&mut self) -> &mut Cursor<'a> {
        if self.interleaved {
            &mut self.instructions
        } else {
            &mut self.data
        }
    }

    fn addresses(&mut self) -> &mut Cursor<'a> {
        if self.interleaved {
            &mut self.instructions
        } else {
            &mut self.addresses
        }
    }
}

fn run_instructions(
    sections: &mut Sections<'_>,
    segment: Segment<'_>,
    target: &mut Vec<u8>,
    window_start: usize,
    window_len: usize,
) -> Result<(), Error> {
    let table = &tables().entries;
    let mut cache = AddressCache::new();
    while !sections.instructions.is_empty() {
        let opcode = sections.instructions.byte()?;
        for half in table[usize::from(opcode)] {
            if half.kind == Kind::Noop {
                continue;
            }
            let size = match half.size {
                0 => sections.instructions.size()?,
                fixed => usize::from(fixed),
            };
            let produced = target.len() - window_start;
            if size > window_len - produced {
                return Err(Error::LengthMismatch);
            }
            match half.kind {
                Kind::Noop => {}
                Kind::Add => target.extend_from_slice(sections.data().take(size)?),
                Kind::Run => {
                    let byte = sections.data().byte()?;
                    target.resize(target.len() + size, byte);
                }
                Kind::Copy => {
                    let here = (segment.len() + produced) as u64;
                    let operand = if AddressCache::reads_byte(half.mode) {
                        u64::from(sections.addresses().byte()?)
                    } else {
                        u64::from(sections.addresses().integer()?)
                    };
                    let address = cache
                        .resolve(half.mode, operand, here)
                        .ok_or(Error::BadAddress)?;
                    cache.update(address);
                    if address >= here {
                        return Err(Error::BadAddress);
                    }
                    copy(target, segment, window_start, address as usize, size);
                }
            }
        }
    }
    Ok(())
}

/// Appends `size` bytes of U from `address` (already checked to be below "here"). The part in the
/// window may overlap what it writes, as RFC 3284 §5.3 allows: it is copied in growing chunks.
fn copy(
    target: &mut Vec<u8>,
    segment: Segment<'_>,
    window_start: usize,
    address: usize,
    size: usize,
) {
    let segment_len = segment.len();
    let mut address = address;
    let mut remaining = size;
    if address < segment_len {
        let n = remaining.min(segment_len - address);
        match segment {
            Segment::Source(bytes) => target.extend_from_slice(&bytes[address..address + n]),
            Segment::Target { start, .. } => {
                target.extend_from_within(start + address..start + address + n);
            }
        }
        address += n;
        remaining -= n;
    }
    if remaining == 0 {
        return;
    }
    let mut from = window_start + (address - segment_len);
    while remaining > 0 {
        let n = remaining.min(target.len() - from);
        target.extend_from_within(from..from + n);
        from += n;
        remaining -= n;
    }
}

/// Adler-32 (RFC 1950), as open-vcdiff puts in a window's checksum.
pub(crate) fn adler32(bytes: &[u8]) -> u32 {
    const MODULUS: u32 = 65521;
    // Largest run of bytes whose sums cannot overflow a u32 before reducing (zlib's NMAX).
    const CHUNK: usize = 5552;
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in bytes.chunks(CHUNK) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= MODULUS;
        b %= MODULUS;
    }
    (b << 16) | a
}
