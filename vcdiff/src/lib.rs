//! VCDIFF (RFC 3284): the delta format Ably's `delta=vcdiff` channel param asks for, which
//! ably-js decodes with `@ably/vcdiff-decoder`.
//!
//! [`encode`] writes one window against the whole source, using the default code table and no
//! secondary compression, which is what that decoder reads. [`decode`] reads the whole RFC
//! (default code table, every address mode, `VCD_SOURCE` and `VCD_TARGET` windows, many windows)
//! plus open-vcdiff's extensions (its Adler-32 window checksum and its interleaved sections),
//! and refuses secondary compression and custom code tables. It is bounds-checked throughout:
//! malformed input is an [`Error`], never a panic, and output never grows past a limit.
//!
//! This crate is std only and does no I/O. Start at [`encode`] and [`decode`].

mod address_cache;
mod code_table;
mod decode;
mod encode;
mod error;
mod varint;

#[cfg(test)]
mod tests;

pub use decode::{decode, decode_with_limit, DEFAULT_MAX_TARGET_BYTES};
pub use encode::encode;
pub use error::Error;

/// The first four bytes of every delta: "VCD" with the high bits set, then version 0.
const MAGIC: [u8; 3] = [0xD6, 0xC3, 0xC4];
/// RFC 3284's version byte.
const VERSION_RFC: u8 = 0x00;
/// open-vcdiff's version byte for deltas using its extensions (checksum, interleaving).
const VERSION_OPEN_VCDIFF: u8 = b'S';

/// Hdr_Indicator bits.
const VCD_DECOMPRESS: u8 = 0x01;
const VCD_CODETABLE: u8 = 0x02;
/// xdelta3's application header: a length and opaque bytes, skipped.
const VCD_APPHEADER: u8 = 0x04;

/// Win_Indicator bits.
const VCD_SOURCE: u8 = 0x01;
const VCD_TARGET: u8 = 0x02;
/// open-vcdiff's Adler-32 of the window's target bytes, a varint after the section lengths.
const VCD_ADLER32: u8 = 0x04;
