//! Deltas built by hand for what our encoder never writes: near/same caches, VCD_TARGET,
//! several windows, open-vcdiff's checksum and interleaving, xdelta's app header; and refusals.

use vcdiff::Error;

/// Default code table opcodes (RFC 3284 §5.6).
const RUN: u8 = 0;
fn add(size: u8) -> u8 {
    1 + size
}
fn copy(size: u8, mode: u8) -> u8 {
    19 + 16 * mode + if size == 0 { 0 } else { size - 3 }
}

fn varint(out: &mut Vec<u8>, value: u64) {
    let mut digits = vec![(value & 0x7F) as u8];
    let mut rest = value >> 7;
    while rest > 0 {
        digits.push((rest & 0x7F) as u8 | 0x80);
        rest >>= 7;
    }
    out.extend(digits.iter().rev());
}

#[derive(Default)]
struct Window<'a> {
    indicator: u8,
    segment: Option<(u64, u64)>,
    checksum: Option<u64>,
    target_len: u64,
    data: &'a [u8],
    instructions: &'a [u8],
    addresses: &'a [u8],
}

fn delta(version: u8, windows: &[Window<'_>]) -> Vec<u8> {
    let mut out = vec![0xD6, 0xC3, 0xC4, version, 0];
    for window in windows {
        window_into(&mut out, window);
    }
    out
}

fn window_into(out: &mut Vec<u8>, window: &Window<'_>) {
    out.push(window.indicator);
    if let Some((len, position)) = window.segment {
        varint(out, len);
        varint(out, position);
    }
    let mut encoding = Vec::new();
    varint(&mut encoding, window.target_len);
    encoding.push(0);
    varint(&mut encoding, window.data.len() as u64);
    varint(&mut encoding, window.instructions.len() as u64);
    varint(&mut encoding, window.addresses.len() as u64);
    if let Some(checksum) = window.checksum {
        varint(&mut encoding, checksum);
    }
    encoding.extend_from_slice(window.data);
    encoding.extend_from_slice(window.instructions);
    encoding.extend_from_slice(window.addresses);
    varint(out, encoding.len() as u64);
    out.extend(encoding);
}

const SOURCE: &[u8] = b"abcdefghijklmnop";

#[test]
fn rfc_3284_section_4_3_example() {
    // COPY 4 @0, ADD "wxyz", COPY 4 @4, COPY 12 @24 (overlapping its own output), RUN 4 'z'.
    let delta = delta(
        0,
        &[Window {
            indicator: 0x01,
            segment: Some((16, 0)),
            target_len: 28,
            data: b"wxyzz",
            instructions: &[copy(4, 0), add(4), copy(4, 0), copy(12, 0), RUN, 4],
            addresses: &[0, 4, 24],
            ..Window::default()
        }],
    );
    assert_eq!(
        vcdiff::decode(SOURCE, &delta).unwrap(),
        b"abcdwxyzefghefghefghefghzzzz"
    );
}

#[test]
fn here_near_and_same_modes() {
    let source = b"0123456789abcdef";
    let delta = delta(
        0,
        &[Window {
            indicator: 0x01,
            segment: Some((16, 0)),
            target_len: 20,
            // SELF @2; near[0]=2 +6 -> @8; same[0][2] -> @2; near[1]=8 +4 -> @12; HERE 32-32 -> @0.
            instructions: &[copy(4, 0), copy(4, 2), copy(4, 6), copy(4, 3), copy(4, 1)],
            addresses: &[2, 6, 2, 4, 32],
            ..Window::default()
        }],
    );
    assert_eq!(
        vcdiff::decode(source, &delta).unwrap(),
        b"234589ab2345cdef0123"
    );
}

#[test]
fn target_segments_and_several_windows() {
    let source = b"XabcY";
    let delta = delta(
        0,
        &[
            Window {
                target_len: 11,
                data: b"hello world",
                instructions: &[add(11)],
                ..Window::default()
            },
            // Copies "world" from the target decoded so far.
            Window {
                indicator: 0x02,
                segment: Some((5, 6)),
                target_len: 6,
                data: b"!",
                instructions: &[copy(5, 0), add(1)],
                addresses: &[0],
                ..Window::default()
            },
            Window {
                indicator: 0x01,
                segment: Some((3, 1)),
                target_len: 7,
                instructions: &[copy(0, 0), 7],
                // Starts in the segment, runs on into its own output.
                addresses: &[0],
                ..Window::default()
            },
        ],
    );
    assert_eq!(
        vcdiff::decode(source, &delta).unwrap(),
        b"hello worldworld!abcabca"
    );
}

#[test]
fn adler32_checksum_as_open_vcdiff_writes_it() {
    let instructions = [add(11)];
    let window = |checksum| Window {
        indicator: 0x04,
        checksum: Some(checksum),
        target_len: 11,
        data: b"hello world",
        instructions: &instructions,
        ..Window::default()
    };
    let good = 0x1A0B_045D; // Adler-32 of "hello world"
    for version in [0, b'S'] {
        assert_eq!(
            vcdiff::decode(b"", &delta(version, &[window(good)])).unwrap(),
            b"hello world"
        );
        assert_eq!(
            vcdiff::decode(b"", &delta(version, &[window(good ^ 1)])),
            Err(Error::ChecksumMismatch)
        );
    }
}

#[test]
fn open_vcdiff_interleaved_sections() {
    let instructions = [&[add(5)][..], b"hello", &[copy(4, 0), 0], &[RUN, 3, b'!']].concat();
    let delta = delta(
        b'S',
        &[Window {
            target_len: 12,
            instructions: &instructions,
            ..Window::default()
        }],
    );
    assert_eq!(vcdiff::decode(b"", &delta).unwrap(), b"hellohell!!!");
}

#[test]
fn xdelta_application_header_is_skipped() {
    let mut with_header = vec![0xD6, 0xC3, 0xC4, 0, 0x04, 3, b'a', b'p', b'p'];
    window_into(
        &mut with_header,
        &Window {
            target_len: 2,
            data: b"hi",
            instructions: &[add(2)],
            ..Window::default()
        },
    );
    assert_eq!(vcdiff::decode(b"", &with_header).unwrap(), b"hi");
}

#[test]
fn header_only_is_an_empty_target() {
    assert_eq!(
        vcdiff::decode(b"x", &[0xD6, 0xC3, 0xC4, 0, 0]).unwrap(),
        b""
    );
}

#[test]
fn refusals() {
    let simple = Window {
        target_len: 2,
        data: b"hi",
        instructions: &[add(2)],
        ..Window::default()
    };
    let mut secondary = delta(0, &[]);
    secondary[4] = 0x01;
    let mut code_table = delta(0, &[]);
    code_table[4] = 0x02;
    let mut unknown_header_bit = delta(0, &[]);
    unknown_header_bit[4] = 0x08;
    let mut bad_magic = delta(0, &[]);
    bad_magic[1] = b'C';
    let mut delta_indicator = delta(0, &[simple]);
    delta_indicator[8] = 0x01; // Delta_Indicator: VCD_DATACOMP

    let cases: Vec<(&str, Vec<u8>, Error)> = vec![
        (
            "secondary compressor",
            secondary,
            Error::SecondaryCompression,
        ),
        ("custom code table", code_table, Error::CustomCodeTable),
        (
            "unknown Hdr_Indicator bit",
            unknown_header_bit,
            Error::UnknownIndicator(0x08),
        ),
        ("bad magic", bad_magic, Error::BadMagic),
        ("version 1", vec![0xD6, 0xC3, 0xC4, 1, 0], Error::BadMagic),
        (
            "Delta_Indicator",
            delta_indicator,
            Error::SecondaryCompression,
        ),
        ("too short", vec![0xD6, 0xC3], Error::Truncated),
        (
            "VCD_SOURCE and VCD_TARGET",
            delta(
                0,
                &[Window {
                    indicator: 0x03,
                    segment: Some((1, 0)),
                    ..Window::default()
                }],
            ),
            Error::UnknownIndicator(0x03),
        ),
        (
            "source segment past the source",
            delta(
                0,
                &[Window {
                    indicator: 0x01,
                    segment: Some((10, 10)),
                    ..Window::default()
                }],
            ),
            Error::BadSegment,
        ),
        (
            "target segment past the target so far",
            delta(
                0,
                &[Window {
                    indicator: 0x02,
                    segment: Some((1, 0)),
                    ..Window::default()
                }],
            ),
            Error::BadSegment,
        ),
        (
            "COPY at here",
            delta(
                0,
                &[Window {
                    target_len: 4,
                    instructions: &[copy(4, 0)],
                    addresses: &[0],
                    ..Window::default()
                }],
            ),
            Error::BadAddress,
        ),
        (
            "HERE mode before the start",
            delta(
                0,
                &[Window {
                    indicator: 0x01,
                    segment: Some((4, 0)),
                    target_len: 4,
                    instructions: &[copy(4, 1)],
                    addresses: &[5],
                    ..Window::default()
                }],
            ),
            Error::BadAddress,
        ),
        (
            "instructions make more than the window",
            delta(
                0,
                &[Window {
                    target_len: 1,
                    data: b"hi",
                    instructions: &[add(2)],
                    ..Window::default()
                }],
            ),
            Error::LengthMismatch,
        ),
        (
            "instructions make less than the window",
            delta(
                0,
                &[Window {
                    target_len: 3,
                    data: b"hi",
                    instructions: &[add(2)],
                    ..Window::default()
                }],
            ),
            Error::LengthMismatch,
        ),
        (
            "data left over",
            delta(
                0,
                &[Window {
                    target_len: 2,
                    data: b"hi!",
                    instructions: &[add(2)],
                    ..Window::default()
                }],
            ),
            Error::LengthMismatch,
        ),
        (
            "ADD past its data",
            delta(
                0,
                &[Window {
                    target_len: 4,
                    data: b"hi",
                    instructions: &[add(4)],
                    ..Window::default()
                }],
            ),
            Error::Truncated,
        ),
    ];
    for (name, delta, expected) in cases {
        assert_eq!(vcdiff::decode(b"abcd", &delta), Err(expected), "{name}");
    }
}

#[test]
fn target_limit_is_checked_before_allocating() {
    // Declares a 4 GiB - 1 window with no instructions.
    let huge = delta(
        0,
        &[Window {
            target_len: u64::from(u32::MAX),
            ..Window::default()
        }],
    );
    assert_eq!(
        vcdiff::decode(b"", &huge),
        Err(Error::TooLarge {
            limit: vcdiff::DEFAULT_MAX_TARGET_BYTES
        })
    );
    // The limit counts all windows together.
    let small = Window {
        target_len: 2,
        data: b"hi",
        instructions: &[add(2)],
        ..Window::default()
    };
    let two = delta(
        0,
        &[
            small,
            Window {
                target_len: 2,
                data: b"hi",
                instructions: &[add(2)],
                ..Window::default()
            },
        ],
    );
    assert_eq!(vcdiff::decode_with_limit(b"", &two, 4).unwrap(), b"hihi");
    assert_eq!(
        vcdiff::decode_with_limit(b"", &two, 3),
        Err(Error::TooLarge { limit: 3 })
    );
}
