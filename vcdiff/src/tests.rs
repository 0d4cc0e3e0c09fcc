use crate::code_table::{tables, Kind};
use crate::decode::adler32;
use crate::varint::{self, Cursor};

#[test]
fn varints_round_trip_and_match_the_rfc_example() {
    // RFC 3284 §2's example: 123456789 is written BA EF 9A 15.
    let mut out = Vec::new();
    varint::write(&mut out, 123_456_789);
    assert_eq!(out, [0xBA, 0xEF, 0x9A, 0x15]);
    for value in [0u64, 1, 127, 128, 16_383, 16_384, u64::from(u32::MAX)] {
        let mut out = Vec::new();
        varint::write(&mut out, value);
        assert_eq!(out.len(), varint::len(value), "{value}");
        assert_eq!(u64::from(Cursor::new(&out).integer().unwrap()), value);
    }
    let mut too_big = Vec::new();
    varint::write(&mut too_big, u64::from(u32::MAX) + 1);
    assert!(Cursor::new(&too_big).integer().is_err());
}

#[test]
fn default_code_table_matches_rfc_landmarks() {
    let entries = &tables().entries;
    assert_eq!(entries[0][0].kind, Kind::Run);
    assert_eq!((entries[1][0].kind, entries[1][0].size), (Kind::Add, 0));
    assert_eq!((entries[18][0].kind, entries[18][0].size), (Kind::Add, 17));
    assert_eq!(
        (
            entries[19][0].kind,
            entries[19][0].size,
            entries[19][0].mode
        ),
        (Kind::Copy, 0, 0)
    );
    assert_eq!((entries[162][0].size, entries[162][0].mode), (18, 8));
    // 163: ADD 1 + COPY 4 mode 0; 174: ADD 4 + COPY 6 mode 0; 235: ADD 1 + COPY 4 mode 6.
    assert_eq!(
        (
            entries[163][0].size,
            entries[163][1].size,
            entries[163][1].mode
        ),
        (1, 4, 0)
    );
    assert_eq!(
        (
            entries[174][0].size,
            entries[174][1].size,
            entries[174][1].mode
        ),
        (4, 6, 0)
    );
    assert_eq!(
        (
            entries[235][0].size,
            entries[235][1].size,
            entries[235][1].mode
        ),
        (1, 4, 6)
    );
    // 255: COPY 4 mode 8 + ADD 1.
    assert_eq!(
        (
            entries[255][0].kind,
            entries[255][0].mode,
            entries[255][1].kind
        ),
        (Kind::Copy, 8, Kind::Add)
    );
}

#[test]
fn adler32_matches_known_values() {
    assert_eq!(adler32(b""), 1);
    assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    let long = vec![0xFFu8; 100_000];
    // Same value computed without chunking, in u64.
    let (mut a, mut b) = (1u64, 0u64);
    for &byte in &long {
        a = (a + u64::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    assert_eq!(u64::from(adler32(&long)), (b << 16) | a);
}
