use std::fmt;

/// Why a delta could not be decoded. Every variant is the delta's fault (or the source's, for a
/// window that reaches past it); none is a bug of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The first bytes are not `D6 C3 C4` followed by version 0 or open-vcdiff's `S`.
    BadMagic,
    /// The delta ends inside a header, a section or an instruction.
    Truncated,
    /// An integer is longer than 32 bits.
    IntegerOverflow,
    /// Secondary compression (Hdr_Indicator `VCD_DECOMPRESS` or a non-zero Delta_Indicator).
    SecondaryCompression,
    /// A custom code table (Hdr_Indicator `VCD_CODETABLE`).
    CustomCodeTable,
    /// An indicator byte has bits this decoder does not know.
    UnknownIndicator(u8),
    /// A window's source or target segment lies outside the data it refers to.
    BadSegment,
    /// The declared lengths disagree with each other or with what the instructions produce.
    LengthMismatch,
    /// A COPY addresses a byte at or past the current position, or a cache slot never filled.
    BadAddress,
    /// The target would exceed the decoder's limit.
    TooLarge { limit: usize },
    /// A window's Adler-32 does not match its decoded bytes.
    ChecksumMismatch,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadMagic => f.write_str("not a VCDIFF delta (bad magic or version)"),
            Error::Truncated => f.write_str("delta ends early"),
            Error::IntegerOverflow => f.write_str("integer larger than 32 bits"),
            Error::SecondaryCompression => f.write_str("secondary compression is not supported"),
            Error::CustomCodeTable => f.write_str("custom code tables are not supported"),
            Error::UnknownIndicator(byte) => write!(f, "unknown indicator bits {byte:#04x}"),
            Error::BadSegment => f.write_str("window segment outside its data"),
            Error::LengthMismatch => f.write_str("declared lengths do not match the contents"),
            Error::BadAddress => f.write_str("COPY address out of range"),
            Error::TooLarge { limit } => write!(f, "target larger than the limit of {limit} bytes"),
            Error::ChecksumMismatch => f.write_str("window Adler-32 mismatch"),
        }
    }
}

impl std::error::Error for Error {}
